//! The bridge's way out: the `out` topics' entries into the stream, exactly once and in
//! order per origin (see [`super`] for how).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::IntoFuture as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use bytes::Bytes;

use super::{Report, headers, millis};
use crate::config::BridgeSettings;
use crate::entry::{Offset, Record, TopicName};
use crate::log::{ConsumerName, Store, Txn};

/// The consumer whose cursor in each topic is the bridge's floor.
pub(super) const CONSUMER: &str = "_bridge-out";

/// How often acknowledged positions are committed while entries flow.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// How often the lag is measured.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Entries read from a topic at once.
const READ_BATCH: usize = 256;

type AckFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
            > + Send,
    >,
>;

/// What the stream holds last on a subject: its stream sequence, and the Tether sequence
/// it carries (0: none).
#[derive(Debug, Clone, Copy)]
pub(super) struct Last {
    pub(super) stream_seq: u64,
    pub(super) tether_seq: u64,
}

/// An entry on its way: published (with the sequence the stream should give it), or
/// found in the stream already.
struct Pending {
    topic: usize,
    /// The offset after it.
    after: Offset,
    published: Option<(u64, AckFuture)>,
}

/// One topic's positions.
struct Topic {
    name: TopicName,
    /// The next offset to read.
    read: Offset,
    /// Read, not yet sent.
    buffer: VecDeque<Record>,
    /// Everything below is in the stream.
    acked: Offset,
    /// The cursor as committed.
    committed: Offset,
    /// Entries carried and not yet counted in the status.
    carried: u64,
}

/// One session: from the committed cursors and the stream as it is, until a failure.
pub(super) async fn run(
    js: jetstream::Context,
    store: Store,
    settings: Arc<BridgeSettings>,
    report: Report,
) -> Result<Infallible, String> {
    let subjects = format!("{}.>", settings.subject_prefix);
    let mut stream = super::stream(&js, &settings, &settings.stream, subjects).await?;
    let consumer = ConsumerName::new(CONSUMER).map_err(|e| e.to_string())?;
    let mut topics = Vec::new();
    for name in &settings.out {
        if store.topic(name).is_none() {
            return Err(format!(
                "topic {name} (bridge.out) does not exist on this node: add it to [[topics]]"
            ));
        }
        let committed = store.cursor(&consumer, name).map_err(|e| e.to_string())?;
        topics.push(Topic {
            name: name.clone(),
            read: committed,
            buffer: VecDeque::new(),
            acked: committed,
            committed,
            carried: 0,
        });
    }
    let info = stream
        .info()
        .await
        .map_err(|e| format!("stream {}: {e}", settings.stream))?;
    let mut next_seq = info.state.last_sequence + 1;
    let mut last: HashMap<String, Last> = HashMap::new();
    let mut in_flight: VecDeque<Pending> = VecDeque::new();
    // Each out topic's tail: the loop wakes for a new entry of its own topics only.
    let mut tails = Vec::new();
    for topic in &topics {
        tails.push(store.subscribe(&topic.name).map_err(|e| e.to_string())?);
    }
    let mut turn = 0usize;
    let mut committed_at = tokio::time::Instant::now();
    let mut status_at = None::<tokio::time::Instant>;
    for topic in &topics {
        report.update(topic.name.as_str(), |m| {
            m.state = "running";
        });
    }
    loop {
        // Seen before reading: an entry appended after the reads below wakes the wait.
        for tail in &mut tails {
            tail.borrow_and_update();
        }
        // Fill the pipeline, one topic after the other.
        while in_flight.len() < settings.in_flight {
            let Some((index, record)) = next_record(&store, &mut topics, &mut turn)? else {
                break;
            };
            let topic = &topics[index];
            let entry = &record.entry;
            let subject = format!(
                "{}.{}.{}",
                settings.subject_prefix, topic.name, entry.id.origin
            );
            let before = match last.get(&subject) {
                Some(known) => *known,
                None => {
                    let known = last_on(&stream, &subject).await?;
                    last.insert(subject.clone(), known);
                    known
                }
            };
            let after = Offset(record.offset.0 + 1);
            if entry.id.seq.0 <= before.tether_seq {
                // In the stream already (sent before a failure or a crash).
                in_flight.push_back(Pending {
                    topic: index,
                    after,
                    published: None,
                });
                continue;
            }
            let mut map = HeaderMap::new();
            for (name, value) in headers::of_entry(&topic.name, entry) {
                map.append(name, value);
            }
            map.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                before.stream_seq.to_string().as_str(),
            );
            let ack = js
                .publish_with_headers(subject.clone(), map, Bytes::copy_from_slice(&entry.payload))
                .await
                .map_err(|e| format!("publish to {subject}: {e}"))?;
            last.insert(
                subject,
                Last {
                    stream_seq: next_seq,
                    tether_seq: entry.id.seq.0,
                },
            );
            in_flight.push_back(Pending {
                topic: index,
                after,
                published: Some((next_seq, ack.into_future())),
            });
            next_seq += 1;
        }

        let now = tokio::time::Instant::now();
        if in_flight.is_empty() || now.duration_since(committed_at) >= COMMIT_EVERY {
            commit(&store, &consumer, &mut topics).await?;
            committed_at = now;
            for topic in topics.iter_mut().filter(|t| t.carried > 0) {
                let carried = std::mem::take(&mut topic.carried);
                report.update(topic.name.as_str(), |m| m.carried += carried);
            }
        }
        if status_at.is_none_or(|at| now.duration_since(at) >= STATUS_EVERY) {
            measure(&store, &topics, &report);
            status_at = Some(now);
        }
        let Some(front) = in_flight.pop_front() else {
            // Caught up: wait for a new entry in one of the topics, or the next status.
            let waits = tails.iter_mut().map(|tail| Box::pin(tail.changed()));
            let _ =
                tokio::time::timeout(STATUS_EVERY, futures_util::future::select_all(waits)).await;
            continue;
        };
        if let Some((expected, ack)) = front.published {
            let ack = ack
                .await
                .map_err(|e| format!("JetStream did not take a message: {e}"))?;
            if ack.duplicate || ack.sequence != expected {
                return Err(format!(
                    "stream {} gave sequence {} where the bridge expected {expected}{}: another \
                     publisher writes to it; the bridge reads it again and goes on",
                    settings.stream,
                    ack.sequence,
                    if ack.duplicate { " (a duplicate)" } else { "" }
                ));
            }
            topics[front.topic].carried += 1;
        }
        topics[front.topic].acked = front.after;
    }
}

/// The next record to send, taking the topics in turn.
fn next_record(
    store: &Store,
    topics: &mut [Topic],
    turn: &mut usize,
) -> Result<Option<(usize, Record)>, String> {
    for _ in 0..topics.len() {
        let index = *turn % topics.len();
        *turn = turn.wrapping_add(1);
        let topic = &mut topics[index];
        if topic.buffer.is_empty() {
            let records = store
                .read(&topic.name, topic.read, READ_BATCH)
                .map_err(|e| format!("reading {}: {e}", topic.name))?;
            if let Some(first) = records.first()
                && first.offset > topic.read
            {
                tracing::warn!(
                    topic = %topic.name,
                    lost = first.offset.0 - topic.read.0,
                    "bridge: retention removed entries before they went to JetStream"
                );
            }
            if let Some(last) = records.last() {
                topic.read = Offset(last.offset.0 + 1);
            }
            topic.buffer.extend(records);
        }
        if let Some(record) = topic.buffer.pop_front() {
            return Ok(Some((index, record)));
        }
    }
    Ok(None)
}

/// What the stream holds last on `subject`.
pub(super) async fn last_on(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Last, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let tether_seq = message
                .headers
                .get(headers::SEQ)
                .and_then(|v| v.as_str().trim().parse().ok());
            if tether_seq.is_none() {
                tracing::warn!(%subject, "bridge: the last message on a bridged subject is not the bridge's (no Tether-Seq)");
            }
            Ok(Last {
                stream_seq: message.sequence,
                tether_seq: tether_seq.unwrap_or(0),
            })
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Last {
            stream_seq: 0,
            tether_seq: 0,
        }),
        Err(e) => Err(format!("the last message on {subject}: {e}")),
    }
}

/// Commits the acknowledged positions that moved.
async fn commit(
    store: &Store,
    consumer: &ConsumerName,
    topics: &mut [Topic],
) -> Result<(), String> {
    let mut txn = Txn::new();
    let mut any = false;
    for topic in topics.iter().filter(|t| t.acked > t.committed) {
        txn.cursor(consumer, &topic.name, topic.acked);
        any = true;
    }
    if !any {
        return Ok(());
    }
    store
        .commit(txn)
        .await
        .map_err(|e| format!("storing the bridge's positions: {e}"))?;
    for topic in topics.iter_mut() {
        topic.committed = topic.acked;
    }
    Ok(())
}

/// Updates each topic's lag: entries not yet in the stream, and the oldest one's age.
fn measure(store: &Store, topics: &[Topic], report: &Report) {
    let now = millis(SystemTime::now());
    for topic in topics {
        let next = store.topic(&topic.name).map_or(topic.acked, |t| t.next);
        let lag_entries = next.0.saturating_sub(topic.acked.0);
        let lag_ms = match lag_entries {
            0 => 0,
            _ => store
                .read(&topic.name, topic.acked, 1)
                .ok()
                .and_then(|r| r.first().map(|r| now.saturating_sub(r.entry.timestamp.0)))
                .unwrap_or(0),
        };
        report.update(topic.name.as_str(), |m| {
            m.state = "running";
            m.lag_entries = lag_entries;
            m.lag_ms = lag_ms;
        });
    }
}
