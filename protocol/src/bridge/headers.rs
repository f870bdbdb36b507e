//! An entry as NATS headers and back: what the bridge puts on each message it publishes
//! (identity, time, key, destination, the entry's own headers) and what it takes from a
//! message an HQ application published (key, destination, headers). NATS header values
//! are text on one line, so bytes that are not printable ASCII travel in base64. No IO.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::entry::{Append, Entry, NodeName, TopicName, check_headers};

/// The entry's origin.
pub const ORIGIN: &str = "Tether-Origin";
/// Its sequence at its origin.
pub const SEQ: &str = "Tether-Seq";
/// Its origin's clock when appended, in milliseconds since the Unix epoch.
pub const TIME: &str = "Tether-Time";
/// The topic it was appended to.
pub const TOPIC: &str = "Tether-Topic";
/// The one node it is for.
pub const TO: &str = "Tether-To";
/// Its key, as text.
pub const KEY: &str = "Tether-Key";
/// Its key, in base64 (a key that is not printable ASCII).
pub const KEY_B64: &str = "Tether-Key-Base64";
/// One of its headers, `name=value` (both printable ASCII, the name without `=`).
pub const HEADER: &str = "Tether-Header";
/// One of its headers, `base64(name):base64(value)` (`:` is not in base64's alphabet).
pub const HEADER_B64: &str = "Tether-Header-Base64";

/// The most header lines taken from one message.
const MAX_HEADERS: usize = 64;

/// Whether `bytes` travel as they are: printable ASCII, no leading or trailing space.
fn printable(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
}

/// The headers a bridged entry of `topic` carries, in order.
pub fn of_entry(topic: &TopicName, entry: &Entry) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (ORIGIN, entry.id.origin.to_string()),
        (SEQ, entry.id.seq.0.to_string()),
        (TIME, entry.timestamp.0.to_string()),
        (TOPIC, topic.to_string()),
    ];
    if let Some(to) = &entry.to {
        out.push((TO, to.to_string()));
    }
    if let Some(key) = &entry.key {
        match printable(key) {
            true => out.push((KEY, String::from_utf8_lossy(key).into_owned())),
            false => out.push((KEY_B64, B64.encode(key))),
        }
    }
    for (name, value) in &entry.headers {
        if printable(name.as_bytes()) && !name.contains('=') && printable(value) {
            out.push((HEADER, format!("{name}={}", String::from_utf8_lossy(value))));
        } else {
            out.push((
                HEADER_B64,
                format!("{}:{}", B64.encode(name), B64.encode(value)),
            ));
        }
    }
    out
}

/// An append from a message an application published: `payload`, and its headers
/// (`Tether-Key` or `Tether-Key-Base64`, `Tether-To`, `Tether-Header` and
/// `Tether-Header-Base64`; others are ignored). `to` from the subject wins over
/// `Tether-To`. Refused with a reason: a malformed value, a `to` that is not a node
/// name, too many headers, or headers the store would refuse.
pub fn to_append(
    headers: &[(String, String)],
    to: Option<NodeName>,
    payload: Vec<u8>,
) -> Result<Append, String> {
    let mut append = Append::new(payload);
    append.to = to;
    let mut taken = 0usize;
    for (name, value) in headers {
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        if is(KEY) {
            append.key = Some(value.as_bytes().to_vec());
        } else if is(KEY_B64) {
            append.key = Some(
                B64.decode(value.trim())
                    .map_err(|e| format!("{KEY_B64}: not base64 ({e})"))?,
            );
        } else if is(TO) {
            if append.to.is_none() {
                append.to = Some(NodeName::new(value.trim()).map_err(|e| format!("{TO}: {e}"))?);
            }
        } else if is(HEADER) || is(HEADER_B64) {
            taken += 1;
            if taken > MAX_HEADERS {
                return Err(format!("more than {MAX_HEADERS} {HEADER} lines"));
            }
            let separator = if is(HEADER) { '=' } else { ':' };
            let (n, v) = value
                .split_once(separator)
                .ok_or_else(|| format!("{name}: expected name{separator}value"))?;
            let pair = if is(HEADER) {
                (n.to_owned(), v.as_bytes().to_vec())
            } else {
                let name = B64
                    .decode(n.trim())
                    .ok()
                    .and_then(|n| String::from_utf8(n).ok())
                    .ok_or_else(|| format!("{HEADER_B64}: the name is not base64 of UTF-8"))?;
                let value = B64
                    .decode(v.trim())
                    .map_err(|e| format!("{HEADER_B64}: the value is not base64 ({e})"))?;
                (name, value)
            };
            append.headers.push(pair);
        }
    }
    check_headers(&append.headers)?;
    Ok(append)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryId, Seq, Timestamp};

    fn owned(headers: Vec<(&'static str, String)>) -> Vec<(String, String)> {
        headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect()
    }

    #[test]
    fn an_entry_round_trips_through_the_headers_whatever_its_bytes() {
        let topic = TopicName::new("NEWS").unwrap();
        for (key, headers) in [
            (
                Some(b"plain key".to_vec()),
                vec![("kind".to_owned(), b"report".to_vec())],
            ),
            (
                Some(vec![0, 159, b' ', b'\n']),
                vec![
                    ("a=b".to_owned(), b"x".to_vec()),
                    ("line".to_owned(), b"two\r\nlines".to_vec()),
                    ("sp".to_owned(), b" lead".to_vec()),
                ],
            ),
            (None, vec![]),
        ] {
            let entry = Entry {
                id: EntryId {
                    origin: NodeName::new("alpha").unwrap(),
                    seq: Seq(42),
                },
                timestamp: Timestamp(1_700_000_000_000),
                key: key.clone(),
                to: Some(NodeName::new("bravo").unwrap()),
                headers: headers.clone(),
                payload: b"payload".to_vec(),
            };
            let sent = owned(of_entry(&topic, &entry));
            for (_, value) in &sent {
                assert!(
                    value.bytes().all(|b| (0x20..0x7f).contains(&b)),
                    "{value:?}"
                );
            }
            assert!(
                sent.contains(&(SEQ.to_owned(), "42".to_owned())),
                "{sent:?}"
            );
            let back = to_append(&sent, None, entry.payload.clone()).unwrap();
            assert_eq!(back.key, key);
            assert_eq!(back.headers, headers);
            assert_eq!(back.to, entry.to);
        }
    }

    #[test]
    fn bad_headers_from_an_application_are_refused_with_the_reason() {
        let one = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        for (headers, says) in [
            (one(KEY_B64, "***"), "not base64"),
            (one(TO, "Not A Node"), "Tether-To"),
            (one(HEADER, "no-equals"), "name=value"),
            (one(HEADER_B64, "!!:AA=="), "not base64"),
            (one(HEADER_B64, "AA=="), "name:value"),
            (
                (0..65)
                    .map(|i| (HEADER.to_owned(), format!("h{i}=v")))
                    .collect(),
                "more than 64",
            ),
        ] {
            let error = to_append(&headers, None, vec![]).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
        // The subject's edge wins over Tether-To; other headers are not the entry's.
        let to = NodeName::new("alpha").unwrap();
        let append = to_append(
            &[
                (TO.to_owned(), "bravo".to_owned()),
                ("Nats-Msg-Id".to_owned(), "x".to_owned()),
            ],
            Some(to.clone()),
            vec![],
        )
        .unwrap();
        assert_eq!(append.to, Some(to));
        assert!(append.headers.is_empty());
    }
}
