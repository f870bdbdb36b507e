//! Entries and the names that identify them: what a topic holds, the same on every node.
//!
//! An entry's identity is `(origin node, origin sequence)`; each node that stores it also
//! gives it a local [`Offset`] in arrival order. Names are validated when they are built,
//! so a [`NodeName`] or [`TopicName`] in hand is always well formed. A [`VersionVector`]
//! says, per origin, how much of a topic a node holds.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A node's name, such as `hq` or `alpha`: 1 to 63 of `a-z`, `0-9` and `-`, starting with
/// a letter or digit (it becomes a DNS label and a certificate name later).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

/// A topic's name: 1 to 128 of `A-Z`, `a-z`, `0-9`, `_`, `-` and `.`. Names that start
/// with `_` belong to the system (gaps, table change feeds).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

/// A name that breaks the rules of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {rule}")]
pub struct NameError {
    /// What was being named: "node", "topic", "table" or "consumer".
    pub kind: &'static str,
    /// The rejected name.
    pub name: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl NodeName {
    /// Checks and wraps a node name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let rule = "1 to 63 of a-z, 0-9 and '-', starting with a letter or digit";
        let ok = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if ok {
            Ok(Self(name))
        } else {
            Err(NameError {
                kind: "node",
                name,
                rule,
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TopicName {
    /// Checks and wraps a topic name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check_symbol("topic", name, 128).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the system owns this topic (its name starts with `_`).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('_')
    }
}

/// Checks a symbol-like name (topic, table, consumer): `A-Z a-z 0-9 _ - .`, bounded length.
pub fn check_symbol(kind: &'static str, name: String, max: usize) -> Result<String, NameError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(name)
    } else {
        let rule = "1 to 128 of A-Z, a-z, 0-9, '_', '-' and '.'";
        Err(NameError { kind, name, rule })
    }
}

macro_rules! name_impls {
    ($ty:ident) => {
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }
        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(name: &str) -> Result<Self, NameError> {
                Self::new(name)
            }
        }
        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}
name_impls!(NodeName);
name_impls!(TopicName);

/// A position in one topic on one node, in arrival order, starting at 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Offset(pub u64);

/// An origin's sequence number in one topic, starting at 1 (0 means "nothing yet").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

/// Milliseconds since the Unix epoch, as the origin's clock read it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time (a clock before 1970 reads as 0).
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// This time moved back by `age`, saturating at the epoch.
    pub fn minus(self, age: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A per origin map of the highest sequence held without a hole: what this node has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector(pub BTreeMap<NodeName, Seq>);

impl VersionVector {
    /// The highest sequence held from `origin` (0 if none).
    pub fn get(&self, origin: &NodeName) -> Seq {
        self.0.get(origin).copied().unwrap_or_default()
    }
}

/// Where a topic's entries live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Never leaves the node.
    Local,
    /// Appended anywhere, stored at the core.
    Core,
    /// Appended anywhere, stored on every node that subscribes.
    All,
}

impl Scope {
    /// Whether entries of this scope ever cross a link.
    pub fn leaves_node(self) -> bool {
        self != Scope::Local
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Local => "local",
            Scope::Core => "core",
            Scope::All => "all",
        })
    }
}

/// A topic's priority class on a link: a class never waits behind a lower one (its own
/// entry stream, sent first by QUIC, and an in-flight window that does not count lower
/// classes). Control frames go above all of them, mirror transfers below.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Sent before everything else: contact reports, alerts.
    Urgent,
    /// The default.
    #[default]
    Normal,
    /// Sent when nothing else waits: bulk feeds, logs.
    Bulk,
}

impl Priority {
    /// Every class, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Bulk];
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Bulk => "bulk",
        })
    }
}

/// How long a topic keeps entries; `None` means no limit of that kind.
///
/// Retention removes the oldest entries first, and never an entry that a peer in scope
/// has not yet received, unless the node's disk budget forces it (then it records a gap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Entries whose origin timestamp is older than this may go.
    pub max_age: Option<Duration>,
    /// The topic keeps at most this many entry bytes (payload, key and headers).
    pub max_bytes: Option<u64>,
    /// The topic keeps at most this many entries.
    pub max_entries: Option<u64>,
}

impl Retention {
    /// Whether it sets no limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none() && self.max_entries.is_none()
    }
}

/// A topic's definition: its name, scope and retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// The topic's name.
    pub name: TopicName,
    /// Where its entries live.
    pub scope: Scope,
    /// How long it keeps them.
    pub retention: Retention,
}

/// An entry's identity everywhere: who appended it first, and its number there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryId {
    /// The node that appended the entry.
    pub origin: NodeName,
    /// Its sequence in the topic at the origin.
    pub seq: Seq,
}

/// One entry, as every node that holds it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Identity: origin and sequence.
    pub id: EntryId,
    /// The origin's clock when it was appended.
    pub timestamp: Timestamp,
    /// An optional key, for the application (idempotency, compaction, lookup).
    pub key: Option<Vec<u8>>,
    /// The one node this entry is for, if any: then only it and the core receive it.
    pub to: Option<NodeName>,
    /// Application headers: name and value.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Entry {
    /// The bytes an entry counts for in size limits and retention: payload, key, headers
    /// (names and values), and a fixed allowance for its identity and timestamp.
    pub fn size(&self) -> u64 {
        entry_size(self.key.as_deref(), &self.headers, &self.payload)
    }
}

/// What an entry of these parts counts for: see [`Entry::size`].
pub fn entry_size(key: Option<&[u8]>, headers: &[(String, Vec<u8>)], payload: &[u8]) -> u64 {
    /// Identity, timestamp and destination, as stored (varints and interned names).
    const FIXED: usize = 16;
    let headers: usize = headers
        .iter()
        .map(|(n, v)| HEADER_OVERHEAD + n.len() + v.len())
        .sum();
    (FIXED + key.map_or(0, <[u8]>::len) + headers + payload.len()) as u64
}

/// Most headers one entry may carry; more are refused (by the store, and while decoding
/// a peer's batch), so that an entry's cost is never hidden in millions of empty ones.
pub const MAX_HEADERS: usize = 64;

/// Longest header name, in bytes.
pub const MAX_HEADER_NAME: usize = 128;

/// What each header adds to an entry's size beyond its name and value: what it costs to
/// hold (two lengths on disk, two allocations in memory), so that `max_entry_bytes`
/// bounds an entry of many empty headers too.
pub const HEADER_OVERHEAD: usize = 16;

/// Why an entry's headers are refused: too many, or a name too long.
pub fn check_headers(headers: &[(String, Vec<u8>)]) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!(
            "{} headers, more than the {MAX_HEADERS} an entry may carry",
            headers.len()
        ));
    }
    if let Some((name, _)) = headers.iter().find(|(n, _)| n.len() > MAX_HEADER_NAME) {
        return Err(format!(
            "a header name of {} bytes, longer than {MAX_HEADER_NAME}",
            name.len()
        ));
    }
    Ok(())
}

/// What a producer hands in: the store gives it its identity, timestamp and offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Append {
    /// See [`Entry::key`].
    pub key: Option<Vec<u8>>,
    /// See [`Entry::to`].
    pub to: Option<NodeName>,
    /// See [`Entry::headers`].
    pub headers: Vec<(String, Vec<u8>)>,
    /// See [`Entry::payload`].
    pub payload: Vec<u8>,
}

impl Append {
    /// An append of this payload, with no key, destination or headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the destination node.
    pub fn to(mut self, node: NodeName) -> Self {
        self.to = Some(node);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// See [`Entry::size`].
    pub fn size(&self) -> u64 {
        entry_size(self.key.as_deref(), &self.headers, &self.payload)
    }
}

/// An entry as one node stores it: with its local offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the topic on this node.
    pub offset: Offset,
    /// The entry.
    pub entry: Entry,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["hq", "alpha", "edge-7", "0"] {
            assert!(NodeName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "HQ", "-a", "a_b", "a b", &"x".repeat(64)] {
            let err = NodeName::new(bad).unwrap_err();
            assert_eq!(err.kind, "node");
        }
        for ok in ["IMAGE_FEED", "_gaps", "a.b-c", &"x".repeat(128)] {
            assert!(TopicName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(TopicName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn size_counts_every_part() {
        let a = Append::new(vec![0; 100]).key(*b"k").header("h", *b"vv");
        assert_eq!(a.size() as usize, 16 + 1 + (HEADER_OVERHEAD + 3) + 100);
    }
}
