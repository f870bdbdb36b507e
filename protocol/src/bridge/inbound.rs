//! The bridge's way in: messages on `<in_prefix>.<topic>[.<edge>]` appended to the `in`
//! topics, exactly once (see [`super`] for how).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use super::{Report, durable, headers};
use crate::config::BridgeSettings;
use crate::entry::{Append, NodeName, TopicName, entry_size};
use crate::log::{Store, Txn};

/// Messages asked for at once.
const BATCH: usize = 256;

/// How long one fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_secs(2);

/// One session: the consumer, then batches until a failure.
pub(super) async fn run(
    js: jetstream::Context,
    store: Store,
    node: NodeName,
    settings: Arc<BridgeSettings>,
    max_entry_bytes: u64,
    report: Report,
) -> Result<Infallible, String> {
    let filter = format!("{}.>", settings.in_prefix);
    let stream = super::stream(&js, &settings, &settings.in_stream, filter.clone()).await?;
    for topic in &settings.inbound {
        if store.topic(topic).is_none() {
            return Err(format!(
                "topic {topic} (bridge.in) does not exist on this node: add it to [[topics]]"
            ));
        }
    }
    let key = settings.in_stream.as_str();
    let mut position = durable::taken_through(&store, key)?;
    // The consumer is made again at each session, from what this node holds: messages
    // a previous session fetched and never acknowledged would otherwise come again only
    // after the acknowledgement wait, behind newer ones, and be skipped as appended.
    let name = format!("tether-{node}");
    let consumer = durable::consumer_after(&stream, &name, filter, position, BATCH)
        .await
        .map_err(|e| format!("{e} (stream {})", settings.in_stream))?;
    for topic in &settings.inbound {
        report.update(topic.as_str(), |m| m.state = "running");
    }
    loop {
        let messages = durable::fetch(&consumer, BATCH, FETCH_WAIT)
            .await
            .map_err(|e| format!("{} {e}", settings.in_stream))?;
        let Some(last) = messages.last() else {
            continue;
        };
        let mut txn = Txn::new();
        let mut through = position;
        let mut carried: Vec<TopicName> = Vec::new();
        for message in &messages {
            let info = message.info().map_err(|e| e.to_string())?;
            let seq = info.stream_sequence;
            if seq <= position {
                continue; // Appended before: delivered again.
            }
            through = through.max(seq);
            match take(&settings, max_entry_bytes, message) {
                Ok((topic, append)) => {
                    txn.append(&topic, append);
                    carried.push(topic);
                }
                Err(why) => {
                    tracing::warn!(subject = %message.subject, seq, %why, "bridge: a message from JetStream is refused");
                    // Counted against its topic; a subject of no topic, against the first.
                    let topic = topic_of(&settings, message.subject.as_str())
                        .map(|(t, _)| t)
                        .or(settings.inbound.first());
                    report.update(topic.map_or("", |t| t.as_str()), |m| {
                        m.refused += 1;
                        m.last_error = Some(format!("{}: {why}", message.subject));
                        m.last_error_ms = Some(super::millis(std::time::SystemTime::now()));
                    });
                }
            }
        }
        if through > position {
            durable::take_through(&mut txn, key, through)?;
            store
                .commit(txn)
                .await
                .map_err(|e| format!("appending messages from {}: {e}", settings.in_stream))?;
            position = through;
            // One status update per topic and batch, not per message.
            for topic in &settings.inbound {
                let n = carried.iter().filter(|t| *t == topic).count() as u64;
                if n > 0 {
                    report.update(topic.as_str(), |m| m.carried += n);
                }
            }
        }
        // Durable here: JetStream may forget them (an acknowledgement of the last one is
        // one of all before it).
        last.ack()
            .await
            .map_err(|e| format!("acknowledging to {}: {e}", settings.in_stream))?;
    }
}

/// The topic and the edge a subject names: `<in_prefix>.<topic>` or
/// `<in_prefix>.<topic>.<edge>`, for a topic in `in` (the longest that fits, as a topic
/// name may hold dots).
fn topic_of<'a, 's>(
    settings: &'a BridgeSettings,
    subject: &'s str,
) -> Option<(&'a TopicName, Option<&'s str>)> {
    let rest = subject
        .strip_prefix(settings.in_prefix.as_str())?
        .strip_prefix('.')?;
    settings
        .inbound
        .iter()
        .filter_map(|topic| {
            let after = rest.strip_prefix(topic.as_str())?;
            match after {
                "" => Some((topic, None)),
                _ => after.strip_prefix('.').map(|edge| (topic, Some(edge))),
            }
        })
        .max_by_key(|(topic, _)| topic.as_str().len())
}

/// What a message becomes: its topic, and the append.
fn take(
    settings: &BridgeSettings,
    max_entry_bytes: u64,
    message: &jetstream::Message,
) -> Result<(TopicName, Append), String> {
    let pairs: Vec<(String, String)> = message
        .headers
        .iter()
        .flat_map(|map| map.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    decode(
        settings,
        max_entry_bytes,
        message.subject.as_str(),
        &pairs,
        message.payload.to_vec(),
    )
}

/// What a message from JetStream becomes, from its subject, headers and payload: the
/// topic of `in` its subject names and the append, or why it is refused (no such topic,
/// a subject edge that is not a node name, malformed headers, too large for the store).
pub fn decode(
    settings: &BridgeSettings,
    max_entry_bytes: u64,
    subject: &str,
    pairs: &[(String, String)],
    payload: Vec<u8>,
) -> Result<(TopicName, Append), String> {
    let (topic, edge) = topic_of(settings, subject).ok_or_else(|| {
        format!(
            "no topic of bridge.in ({}) for this subject: expected {}.<topic> or \
             {}.<topic>.<edge>",
            settings
                .inbound
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            settings.in_prefix,
            settings.in_prefix
        )
    })?;
    let to = match edge {
        Some(edge) => Some(NodeName::new(edge).map_err(|e| format!("the subject's edge: {e}"))?),
        None => None,
    };
    let append = headers::to_append(pairs, to, payload)?;
    let size = entry_size(append.key.as_deref(), &append.headers, &append.payload);
    if size > max_entry_bytes {
        return Err(format!(
            "an entry of {size} bytes, over this node's store.max_entry_bytes ({max_entry_bytes})"
        ));
    }
    Ok((topic.clone(), append))
}
