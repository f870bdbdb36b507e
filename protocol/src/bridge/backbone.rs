//! The backbone: the cores of an HQ on several machines share their entries and their
//! fleet decisions through JetStream (`bridge.backbone`), each serving some of the edges.
//!
//! - **Entries out.** Every core publishes the entries of its topics that cross links
//!   (scope `core` or `all`) on `<backbone_prefix>.<topic>.<origin>` in the stream
//!   `backbone_stream`, as runs of one origin's entries (a [`wire::Batch`] per message,
//!   its last sequence in `Tether-Seq`). Several cores may hold the same origin's entries
//!   (an edge that failed over, entries another core published): each publish names the
//!   message it follows on its subject (`Nats-Expected-Last-Subject-Sequence`) and
//!   carries only entries after the ones that message holds. So the stream holds each
//!   entry once and in order per origin, whoever publishes it; a core that loses the race
//!   reads the subject's last message and goes on after it. No time window is involved.
//! - **Entries in.** Every core reads the whole stream through a durable pull consumer,
//!   made again at each session from the stream sequence it stored in the same
//!   transaction as the entries (as the bridge's way in does), and inserts them by
//!   identity: what it already holds (from its own link, or its own) is ignored.
//! - **Acknowledgements.** A core tells an edge that it holds the edge's entries (the
//!   `Have` frames) only once the backbone holds them: [`Backbone::held`] caps the edge's
//!   own sequence in every `Have` (`link::session`). A core that dies has lost nothing its
//!   edges were told was safe; an edge that fails over sends the rest again to the next
//!   core, which ignores what it already holds.
//! - **Fleet.** Each decision about an edge (listing, certificates and revocations,
//!   release; `crate::edges`) is published as the edge's whole document on
//!   `<backbone_prefix>-fleet.<edge>.<core>` in `<backbone_stream>_FLEET` (each core's
//!   last one per edge kept, so that a core holding an old document cannot overwrite
//!   another's decision). Every core merges the others' into its own: revocations and
//!   certificates add up, the newest listing decision wins. A core publishes all its
//!   documents again at each session, so a decision taken while NATS was away goes out.
//!
//! IO: NATS (async-nats), the store.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::{Notify, mpsc, watch};

use super::out::{Last, last_on};
use super::{REQUEST_TIMEOUT, Report, durable, headers};
use crate::config::BridgeSettings;
use crate::entry::{Entry, NodeName, Offset, Scope, Seq, TopicName};
use crate::log::{ConsumerName, Store, Txn};
use crate::wire;

/// The consumer whose cursor in each topic is the backbone's floor on the way out.
const CONSUMER: &str = "_backbone-out";

/// Entries read from a topic at once on the way out.
const READ_BATCH: usize = 2048;

/// Entries in one backbone message at most.
const MAX_MESSAGE_ENTRIES: usize = 1024;

/// Entry bytes in one backbone message at most (NATS refuses more than its
/// `max_payload`, 1 MiB by default).
const MAX_MESSAGE_BYTES: u64 = 256 << 10;

/// A backbone message's payload at most: a larger one (one large entry) goes in parts,
/// each within NATS's default `max_payload` (1 MiB).
const MAX_PART_BYTES: usize = 512 << 10;

/// Parts of one message at most (what the largest entry needs, with room).
const MAX_PARTS: usize = 64;

/// Runs in parts gathered at once on the way in, at most.
const MAX_PARTIAL: usize = 16;

/// The header of a part: `<i>/<n>`.
const PART: &str = "Tether-Part";

/// A fleet document larger than this is refused.
const MAX_FLEET_DOC: usize = 64 << 10;

/// Messages asked for at once on the way in.
const FETCH_BATCH: usize = 256;

/// How long one fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// The header naming the core that published a message.
const CORE: &str = "Tether-Core";

/// Tries in a row a publish may lose to another core's before the session fails.
const MAX_RACES: usize = 16;

/// The backbone's shared state: what this core knows the stream holds, and the fleet
/// documents on their way. Cheap to clone.
#[derive(Clone)]
pub struct Backbone(Arc<Shared>);

struct Shared {
    node: NodeName,
    prefix: String,
    /// Per topic and origin: the last message on its subject, as far as known.
    known: Mutex<HashMap<(TopicName, NodeName), Last>>,
    /// Bumped when `known` moves (or a lookup becomes possible).
    moved: watch::Sender<u64>,
    /// The entries' stream, once a session found it: lookups of subjects not yet known.
    stream: Mutex<Option<jetstream::stream::Stream>>,
    /// Fleet documents to publish, by edge.
    fleet_out: Mutex<BTreeMap<NodeName, serde_json::Value>>,
    fleet_wake: Notify,
    /// Where the other cores' fleet documents go (`crate::edges`).
    fleet_in: Mutex<Option<mpsc::UnboundedSender<(NodeName, serde_json::Value)>>>,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("node", &self.0.node)
            .finish_non_exhaustive()
    }
}

impl Backbone {
    /// The backbone of core `node`, as `settings` name its subjects.
    pub fn new(node: NodeName, settings: &BridgeSettings) -> Backbone {
        Backbone(Arc::new(Shared {
            node,
            prefix: settings.backbone_prefix.clone(),
            known: Mutex::default(),
            moved: watch::Sender::new(0),
            stream: Mutex::default(),
            fleet_out: Mutex::default(),
            fleet_wake: Notify::new(),
            fleet_in: Mutex::default(),
        }))
    }

    /// Through which sequence the backbone holds `origin`'s entries of `topic`, as far
    /// as this core knows (`None`: not known yet; see [`Backbone::look_up`]).
    pub fn held(&self, topic: &TopicName, origin: &NodeName) -> Option<u64> {
        lock(&self.0.known)
            .get(&(topic.clone(), origin.clone()))
            .map(|last| last.tether_seq)
    }

    /// [`Backbone::held`], asking the stream when it is not known (`None`: the stream
    /// cannot be asked now).
    pub async fn look_up(&self, topic: &TopicName, origin: &NodeName) -> Option<u64> {
        if let Some(held) = self.held(topic, origin) {
            return Some(held);
        }
        let stream = lock(&self.0.stream).clone()?;
        let subject = self.subject(topic, origin);
        match tokio::time::timeout(REQUEST_TIMEOUT, last_on(&stream, &subject)).await {
            Ok(Ok(last)) => {
                self.learn(topic, origin, last);
                Some(last.tether_seq)
            }
            _ => None,
        }
    }

    /// Changes whenever what the backbone is known to hold moves.
    pub fn moved(&self) -> watch::Receiver<u64> {
        self.0.moved.subscribe()
    }

    /// Publishes `edge`'s fleet document to the other cores (now, or once NATS is back).
    pub fn share_fleet(&self, edge: &NodeName, doc: serde_json::Value) {
        lock(&self.0.fleet_out).insert(edge.clone(), doc);
        self.0.fleet_wake.notify_one();
    }

    /// The other cores' fleet documents as they come (one receiver: the last call's).
    pub fn fleet_updates(&self) -> mpsc::UnboundedReceiver<(NodeName, serde_json::Value)> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.0.fleet_in) = Some(tx);
        rx
    }

    fn subject(&self, topic: &TopicName, origin: &NodeName) -> String {
        format!("{}.{topic}.{origin}", self.0.prefix)
    }

    /// Records the last message on a subject, if it is newer than the one known.
    fn learn(&self, topic: &TopicName, origin: &NodeName, last: Last) {
        let moved = {
            let mut known = lock(&self.0.known);
            let slot = known
                .entry((topic.clone(), origin.clone()))
                .or_insert(Last {
                    stream_seq: 0,
                    tether_seq: 0,
                });
            let newer = last.stream_seq > slot.stream_seq
                || (last.stream_seq == slot.stream_seq && last.tether_seq > slot.tether_seq);
            if newer {
                *slot = last;
            }
            newer
        };
        if moved {
            self.0.moved.send_modify(|n| *n += 1);
        }
    }

    /// Forgets what is known of a subject (another core published there meanwhile).
    fn forget(&self, topic: &TopicName, origin: &NodeName) {
        lock(&self.0.known).remove(&(topic.clone(), origin.clone()));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topics the backbone carries: those that cross links, but the node's own.
pub fn carried(store: &Store) -> Vec<TopicName> {
    store
        .topics()
        .into_iter()
        .filter(|t| carries(&t.config))
        .map(|t| t.config.name)
        .collect()
}

/// Whether the backbone carries a topic so defined (and so whether a core acknowledges
/// an edge's entries of it only once the backbone holds them).
pub fn carries(topic: &crate::entry::TopicConfig) -> bool {
    topic.scope != Scope::Local && !topic.name.is_system()
}

/// A backbone message checked: its topic and origin from the subject, and its entries,
/// all of that origin, in rising order. Refuses anything else with the reason.
pub fn decode(
    prefix: &str,
    subject: &str,
    payload: &[u8],
) -> Result<(TopicName, NodeName, Vec<Entry>), String> {
    let (topic, origin) = names(prefix, subject)?;
    let batch: wire::Batch =
        crate::codec::decode(payload, "backbone message").map_err(|e| e.to_string())?;
    if batch.topic != topic {
        return Err(format!("its entries are of topic {}", batch.topic));
    }
    let entries = batch.into_entries().map_err(|e| e.to_string())?;
    let mut previous = 0;
    for entry in &entries {
        if entry.id.origin != origin {
            return Err(format!("it holds an entry of {}", entry.id.origin));
        }
        if entry.id.seq.0 <= previous {
            return Err("its sequences do not rise".into());
        }
        previous = entry.id.seq.0;
    }
    Ok((topic, origin, entries))
}

/// The topic and the origin a backbone subject names: `<prefix>.<topic>.<origin>`.
fn names(prefix: &str, subject: &str) -> Result<(TopicName, NodeName), String> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or("not a backbone subject")?;
    let (topic, origin) = rest.rsplit_once('.').ok_or("the subject names no origin")?;
    let topic = TopicName::new(topic.to_owned()).map_err(|e| e.to_string())?;
    let origin = NodeName::new(origin.to_owned()).map_err(|e| e.to_string())?;
    Ok((topic, origin))
}

/// The entries' stream, made when the settings say so.
async fn entries_stream(
    js: &jetstream::Context,
    settings: &BridgeSettings,
) -> Result<jetstream::stream::Stream, String> {
    let subjects = format!("{}.>", settings.backbone_prefix);
    super::stream(js, settings, &settings.backbone_stream, subjects).await
}

/// One session of the way out: the carried topics from the stored cursors on, each
/// origin's run published after what the stream holds, until a failure.
pub(super) async fn run_out(
    js: jetstream::Context,
    store: Store,
    backbone: Backbone,
    settings: Arc<BridgeSettings>,
    report: Report,
) -> Result<Infallible, String> {
    let stream = entries_stream(&js, &settings).await?;
    *lock(&backbone.0.stream) = Some(stream.clone());
    // Sessions waiting to acknowledge can now look up what they do not know.
    backbone.0.moved.send_modify(|n| *n += 1);
    let consumer = ConsumerName::new(CONSUMER).map_err(|e| e.to_string())?;
    let mut topics = Vec::new();
    for name in carried(&store) {
        let read = store.cursor(&consumer, &name).map_err(|e| e.to_string())?;
        let tail = store.subscribe(&name).map_err(|e| e.to_string())?;
        report.update(name.as_str(), |m| m.state = "running");
        topics.push((name, read, tail));
    }
    if topics.is_empty() {
        return std::future::pending().await;
    }
    loop {
        let mut moved = false;
        for (name, read, tail) in &mut topics {
            tail.borrow_and_update();
            let records = store
                .read(name, *read, READ_BATCH)
                .map_err(|e| format!("reading {name}: {e}"))?;
            let Some(last) = records.last() else {
                report.update(name.as_str(), |m| {
                    m.lag_entries = 0;
                    m.lag_ms = 0;
                });
                continue;
            };
            let next = Offset(last.offset.0 + 1);
            let mut runs: BTreeMap<NodeName, Vec<Entry>> = BTreeMap::new();
            for record in records {
                runs.entry(record.entry.id.origin.clone())
                    .or_default()
                    .push(record.entry);
            }
            let jobs = runs.iter().map(|(origin, entries)| {
                publish_run(&js, &stream, &backbone, name, origin, entries)
            });
            let mut carried = 0;
            for result in futures_util::future::join_all(jobs).await {
                carried += result?;
            }
            let mut txn = Txn::new();
            txn.cursor(&consumer, name, next);
            store
                .commit(txn)
                .await
                .map_err(|e| format!("storing the backbone's position: {e}"))?;
            *read = next;
            moved = true;
            let lag = store
                .topic(name)
                .map_or(0, |t| t.next.0.saturating_sub(next.0));
            let lag_ms = match lag {
                0 => 0,
                _ => store
                    .read(name, next, 1)
                    .ok()
                    .and_then(|r| r.first().map(|r| r.entry.timestamp.0))
                    .map_or(0, |at| {
                        super::millis(std::time::SystemTime::now()).saturating_sub(at)
                    }),
            };
            report.update(name.as_str(), |m| {
                m.carried += carried;
                m.lag_entries = lag;
                m.lag_ms = lag_ms;
            });
        }
        if !moved {
            let waits = topics
                .iter_mut()
                .map(|(_, _, tail)| Box::pin(tail.changed()));
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                futures_util::future::select_all(waits),
            )
            .await;
        }
    }
}

/// Publishes `origin`'s entries of `topic` that the stream does not hold yet, in
/// messages that each follow the subject's last one. Returns how many it published.
async fn publish_run(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    backbone: &Backbone,
    topic: &TopicName,
    origin: &NodeName,
    entries: &[Entry],
) -> Result<u64, String> {
    let subject = backbone.subject(topic, origin);
    let mut published = 0;
    let mut races = 0;
    loop {
        let known = lock(&backbone.0.known)
            .get(&(topic.clone(), origin.clone()))
            .copied();
        let last = match known {
            Some(last) => last,
            None => {
                let last = last_on(stream, &subject).await?;
                backbone.learn(topic, origin, last);
                last
            }
        };
        let start = entries.partition_point(|e| e.id.seq.0 <= last.tether_seq);
        let rest = &entries[start..];
        if rest.is_empty() {
            return Ok(published);
        }
        let mut count = 0;
        let mut bytes = 0;
        for entry in rest.iter().take(MAX_MESSAGE_ENTRIES) {
            if count > 0 && bytes + entry.size() > MAX_MESSAGE_BYTES {
                break;
            }
            bytes += entry.size();
            count += 1;
        }
        let run = &rest[..count];
        let through = run.last().map_or(0, |e| e.id.seq.0);
        let payload = crate::codec::encode(&wire::Batch::new(topic.clone(), run));
        // A message larger than a part (one large entry) goes in parts, in a row on the
        // subject; only the last carries the run's sequence, so a run cut off by a crash
        // reads as not there and is sent again whole.
        let parts: Vec<&[u8]> = payload.chunks(MAX_PART_BYTES).collect();
        let mut after = last.stream_seq;
        let mut sent = Ok(());
        for (i, part) in parts.iter().enumerate() {
            let mut map = HeaderMap::new();
            let last_part = i + 1 == parts.len();
            let seq = if last_part { through } else { last.tether_seq };
            map.insert(headers::SEQ, seq.to_string().as_str());
            map.insert(CORE, backbone.0.node.as_str());
            if parts.len() > 1 {
                map.insert(PART, format!("{}/{}", i + 1, parts.len()).as_str());
            }
            map.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                after.to_string().as_str(),
            );
            let ack = js
                .publish_with_headers(subject.clone(), map, Bytes::copy_from_slice(part))
                .await
                .map_err(|e| format!("publish to {subject}: {e}"))?
                .await;
            match ack {
                Ok(ack) => after = ack.sequence,
                Err(e) => {
                    sent = Err(e);
                    break;
                }
            }
        }
        match sent {
            Ok(()) => {
                backbone.learn(
                    topic,
                    origin,
                    Last {
                        stream_seq: after,
                        tether_seq: through,
                    },
                );
                published += count as u64;
            }
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                // Another core published on this subject meanwhile: read it again.
                races += 1;
                if races > MAX_RACES {
                    return Err(format!("{subject}: other cores keep publishing there"));
                }
                backbone.forget(topic, origin);
            }
            Err(e) => {
                return Err(format!(
                    "JetStream did not take a message on {subject}: {e}"
                ));
            }
        }
    }
}

/// Adds to `txn` the entries of `origin` in `topic` after `held` (which it moves on), in
/// runs of consecutive sequences, each after a skip of what is missing before it: the
/// origin's own gaps (its disk budget), or what the stream lost (its limits). Recorded as
/// gaps, never silent; the store takes nothing out of order. Returns how many it added.
fn take_run(
    txn: &mut Txn,
    topic: &TopicName,
    origin: &NodeName,
    held: &mut u64,
    entries: Vec<Entry>,
) -> u64 {
    let mut run: Vec<Entry> = Vec::new();
    let mut taken = 0;
    for entry in entries {
        let seq = entry.id.seq.0;
        if seq <= *held {
            continue; // Held already.
        }
        if seq > *held + 1 {
            if !run.is_empty() {
                txn.insert(topic, std::mem::take(&mut run));
            }
            tracing::warn!(%topic, %origin, from = *held + 1, to = seq - 1, "backbone: entries that will never come are skipped (lost to a disk budget, or superseded in a latest-value topic)");
            txn.skip(topic, origin, Seq(seq - 1));
        }
        *held = seq;
        taken += 1;
        run.push(entry);
    }
    if !run.is_empty() {
        txn.insert(topic, run);
    }
    taken
}

/// A run of one message in parts, as it comes in.
struct Parts {
    /// The stream sequence of its first part: the position stays below it until the run
    /// is whole.
    first: u64,
    /// The next part's number, and how many there are.
    next: usize,
    of: usize,
    bytes: Vec<u8>,
}

/// What a message from the backbone stream adds to the runs in parts (`partial`, by
/// subject): the whole payload when it is a message of its own or the last part of a
/// run, else `None`. A part out of turn (a run cut off by a publisher's crash, sent
/// again from its first part) drops what was gathered.
fn assemble(
    partial: &mut HashMap<String, Parts>,
    subject: &str,
    seq: u64,
    part: Option<&str>,
    payload: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let Some(part) = part else {
        partial.remove(subject);
        return Ok(Some(payload.to_vec()));
    };
    let (i, of) = part
        .split_once('/')
        .and_then(|(i, n)| {
            Some((
                i.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        })
        .filter(|(i, of)| (1..=*of).contains(i) && *of <= MAX_PARTS)
        .ok_or_else(|| format!("a bad {PART} header {part:?}"))?;
    if payload.len() > MAX_PART_BYTES {
        return Err(format!("a part larger than {MAX_PART_BYTES} bytes"));
    }
    if i == 1 {
        if partial.len() >= MAX_PARTIAL && !partial.contains_key(subject) {
            return Err("too many runs in parts at once".into());
        }
        partial.insert(
            subject.to_owned(),
            Parts {
                first: seq,
                next: 1,
                of,
                bytes: Vec::new(),
            },
        );
    }
    let Some(run) = partial
        .get_mut(subject)
        .filter(|r| r.next == i && r.of == of)
    else {
        partial.remove(subject);
        tracing::warn!(%subject, seq, part, "backbone: a part out of turn (a run cut off); waiting for it again from its first part");
        return Ok(None);
    };
    run.bytes.extend_from_slice(payload);
    run.next += 1;
    if i < of {
        return Ok(None);
    }
    Ok(partial.remove(subject).map(|r| r.bytes))
}

/// One session of the way in: the whole stream, from the stored position, inserted by
/// identity with that position in the same transaction, acknowledged after.
pub(super) async fn run_in(
    js: jetstream::Context,
    store: Store,
    backbone: Backbone,
    settings: Arc<BridgeSettings>,
    report: Report,
) -> Result<Infallible, String> {
    let stream = entries_stream(&js, &settings).await?;
    let key = settings.backbone_stream.as_str();
    let mut position = durable::taken_through(&store, key)?;
    let last = stream
        .get_info()
        .await
        .map_err(|e| format!("stream {}: {e}", settings.backbone_stream))?
        .state
        .last_sequence;
    if position > last {
        // The stream was made again (its sequences start over): read it all again; what
        // this core holds already is ignored.
        tracing::warn!(stream = %settings.backbone_stream, position, last, "backbone: the stream is behind this core's position (made again?): reading it from the start");
        position = 0;
    }
    let name = format!("backbone-{}", backbone.0.node);
    let filter = format!("{}.>", settings.backbone_prefix);
    let consumer = durable::consumer_after(&stream, &name, filter, position, FETCH_BATCH)
        .await
        .map_err(|e| format!("{e} (stream {})", settings.backbone_stream))?;
    let carried = carried(&store);
    for topic in &carried {
        report.update(topic.as_str(), |m| m.state = "running");
    }
    let mut partial: HashMap<String, Parts> = HashMap::new();
    loop {
        let messages = durable::fetch(&consumer, FETCH_BATCH, FETCH_WAIT)
            .await
            .map_err(|e| format!("{} {e}", settings.backbone_stream))?;
        let Some(last) = messages.last() else {
            continue;
        };
        let mut txn = Txn::new();
        let mut through = position;
        // Per topic and origin: the sequence held once this transaction is in.
        let mut held: HashMap<(TopicName, NodeName), u64> = HashMap::new();
        let mut counts: HashMap<TopicName, u64> = HashMap::new();
        for message in &messages {
            let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
            if seq <= position {
                continue; // Inserted before: delivered again.
            }
            through = through.max(seq);
            let part = message
                .headers
                .as_ref()
                .and_then(|h| h.get(PART))
                .map(|v| v.as_str().to_owned());
            let whole = assemble(
                &mut partial,
                message.subject.as_str(),
                seq,
                part.as_deref(),
                &message.payload,
            );
            let payload = match whole {
                Ok(Some(payload)) => payload,
                Ok(None) => {
                    // A part: the last message on its subject for now, for this core's
                    // own publishes there.
                    let tether_seq = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(headers::SEQ))
                        .and_then(|v| v.as_str().parse().ok());
                    if let (Ok((topic, origin)), Some(tether_seq)) = (
                        names(&settings.backbone_prefix, message.subject.as_str()),
                        tether_seq,
                    ) {
                        backbone.learn(
                            &topic,
                            &origin,
                            Last {
                                stream_seq: seq,
                                tether_seq,
                            },
                        );
                    }
                    continue;
                }
                Err(why) => {
                    tracing::warn!(subject = %message.subject, seq, %why, "backbone: a message is refused");
                    continue;
                }
            };
            let decoded = decode(
                &settings.backbone_prefix,
                message.subject.as_str(),
                &payload,
            )
            .and_then(|(topic, origin, entries)| {
                if carried.contains(&topic) {
                    Ok((topic, origin, entries))
                } else {
                    Err(format!("topic {topic} is not one this core shares"))
                }
            });
            let (topic, origin, entries) = match decoded {
                Ok(found) => found,
                Err(why) => {
                    tracing::warn!(subject = %message.subject, seq, %why, "backbone: a message is refused");
                    if let Some(topic) = carried.first() {
                        report.update(topic.as_str(), |m| {
                            m.refused += 1;
                            m.last_error = Some(format!("{}: {why}", message.subject));
                        });
                    }
                    continue;
                }
            };
            let Some(last_seq) = entries.last().map(|e| e.id.seq.0) else {
                continue;
            };
            let slot = match held.entry((topic.clone(), origin.clone())) {
                std::collections::hash_map::Entry::Occupied(slot) => slot.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let vector = store.vector(&topic).map_err(|e| e.to_string())?;
                    slot.insert(vector.get(&origin).0)
                }
            };
            let taken = take_run(&mut txn, &topic, &origin, slot, entries);
            *counts.entry(topic.clone()).or_default() += taken;
            backbone.learn(
                &topic,
                &origin,
                Last {
                    stream_seq: seq,
                    tether_seq: last_seq,
                },
            );
        }
        // A run still in parts is read again from its first part after a restart.
        if let Some(first) = partial.values().map(|r| r.first).min() {
            through = through.min(first - 1);
        }
        if through > position {
            durable::take_through(&mut txn, key, through)?;
            store
                .commit(txn)
                .await
                .map_err(|e| format!("inserting from {}: {e}", settings.backbone_stream))?;
            position = through;
        }
        for (topic, n) in counts {
            report.update(topic.as_str(), |m| m.carried += n);
        }
        last.ack()
            .await
            .map_err(|e| format!("acknowledging to {}: {e}", settings.backbone_stream))?;
    }
}

/// One session of the fleet: every document waiting goes out (all of them at the
/// first session), the other cores' come in.
pub(super) async fn run_fleet(
    js: jetstream::Context,
    backbone: Backbone,
    settings: Arc<BridgeSettings>,
) -> Result<Infallible, String> {
    let name = format!("{}_FLEET", settings.backbone_stream);
    let prefix = format!("{}-fleet", settings.backbone_prefix);
    // `<prefix>.<edge>.<core>`: each core's last document of each edge, kept, so that a
    // core with an old document cannot overwrite another's newer decision.
    let subjects = format!("{prefix}.*.*");
    let stream = if settings.create_streams {
        js.get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subjects.clone()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: settings.replicas,
            max_messages_per_subject: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {name}: {e}"))?
    } else {
        js.get_stream(&name)
            .await
            .map_err(|e| format!("stream {name}: {e} (an operator creates it, for {subjects})"))?
    };
    // An ephemeral consumer from the start of the stream (the last document per edge),
    // made again at each session; it goes when unused.
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: subjects,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading {name}: {e}"))?;
    loop {
        publish_fleet(&js, &backbone, &prefix).await?;
        let mut batch = consumer
            .fetch()
            .max_messages(FETCH_BATCH)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(|e| format!("reading {name}: {e}"))?;
        loop {
            // A decision taken here goes out without waiting for the fetch to end.
            let message = tokio::select! {
                message = batch.next() => match message {
                    Some(message) => message.map_err(|e| format!("reading {name}: {e}"))?,
                    None => break,
                },
                () = backbone.0.fleet_wake.notified() => {
                    publish_fleet(&js, &backbone, &prefix).await?;
                    continue;
                }
            };
            match fleet_doc(&prefix, message.subject.as_str(), &message.payload) {
                Ok((_, core, _)) if core == backbone.0.node => {}
                Ok((edge, _, doc)) => {
                    if let Some(tx) = lock(&backbone.0.fleet_in).as_ref() {
                        let _ = tx.send((edge, doc));
                    }
                }
                Err(why) => {
                    tracing::warn!(subject = %message.subject, %why, "backbone: a fleet document is refused");
                }
            }
        }
    }
}

/// Publishes the fleet documents waiting, each removed once JetStream holds it (unless
/// it changed meanwhile).
async fn publish_fleet(
    js: &jetstream::Context,
    backbone: &Backbone,
    prefix: &str,
) -> Result<(), String> {
    let waiting: Vec<(NodeName, serde_json::Value)> = lock(&backbone.0.fleet_out)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (edge, doc) in waiting {
        let mut map = HeaderMap::new();
        map.insert(CORE, backbone.0.node.as_str());
        let payload = Bytes::from(doc.to_string());
        js.publish_with_headers(format!("{prefix}.{edge}.{}", backbone.0.node), map, payload)
            .await
            .map_err(|e| format!("publishing edge {edge}'s fleet document: {e}"))?
            .await
            .map_err(|e| format!("publishing edge {edge}'s fleet document: {e}"))?;
        let mut out = lock(&backbone.0.fleet_out);
        if out.get(&edge) == Some(&doc) {
            out.remove(&edge);
        }
    }
    Ok(())
}

/// A fleet message checked: the edge and the core its subject names
/// (`<prefix>.<edge>.<core>`), and its JSON document.
fn fleet_doc(
    prefix: &str,
    subject: &str,
    payload: &[u8],
) -> Result<(NodeName, NodeName, serde_json::Value), String> {
    let (edge, core) = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.split_once('.'))
        .ok_or("not a fleet subject")?;
    let edge = NodeName::new(edge.to_owned()).map_err(|e| e.to_string())?;
    let core = NodeName::new(core.to_owned()).map_err(|e| e.to_string())?;
    if payload.len() > MAX_FLEET_DOC {
        return Err(format!("larger than {MAX_FLEET_DOC} bytes"));
    }
    let doc = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    Ok((edge, core, doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{EntryId, Timestamp};

    fn entry(origin: &str, seq: u64) -> Entry {
        Entry {
            id: EntryId {
                origin: NodeName::new(origin.to_owned()).unwrap(),
                seq: Seq(seq),
            },
            timestamp: Timestamp(1_700_000_000_000 + seq),
            key: None,
            to: None,
            headers: Vec::new(),
            payload: vec![1, 2, 3],
        }
    }

    fn message(topic: &str, entries: &[Entry]) -> Vec<u8> {
        crate::codec::encode(&wire::Batch::new(
            TopicName::new(topic.to_owned()).unwrap(),
            entries,
        ))
    }

    #[test]
    fn a_backbone_message_is_checked_against_its_subject() {
        let run = [entry("e1", 4), entry("e1", 5)];
        let (topic, origin, entries) = decode(
            "tether-bb",
            "tether-bb.NEWS.v2.e1",
            &message("NEWS.v2", &run),
        )
        .unwrap();
        assert_eq!((topic.as_str(), origin.as_str()), ("NEWS.v2", "e1"));
        assert_eq!(entries, run);
        for (subject, payload, says) in [
            (
                "other.NEWS.e1",
                message("NEWS", &run),
                "not a backbone subject",
            ),
            ("tether-bb.NEWS", message("NEWS", &run), "names no origin"),
            ("tether-bb.NEWS.e2", message("NEWS", &run), "an entry of e1"),
            (
                "tether-bb.ALERTS.e1",
                message("NEWS", &run),
                "of topic NEWS",
            ),
            (
                "tether-bb.NEWS.e1",
                message("NEWS", &[entry("e1", 4), entry("e1", 4)]),
                "do not rise",
            ),
            ("tether-bb.NEWS.e1", vec![0xff, 0xff, 0xff], "cannot decode"),
        ] {
            let err = decode("tether-bb", subject, &payload).unwrap_err();
            assert!(err.contains(says), "{subject}: {err} (expected {says:?})");
        }
    }
}

#[cfg(test)]
mod parts_tests {
    use super::*;
    use crate::entry::{EntryId, Timestamp, TopicConfig};
    use crate::log::StoreConfig;

    #[tokio::test]
    async fn a_run_with_its_origins_gaps_is_taken_whole_with_the_gaps_recorded() {
        let dir = tempfile_dir();
        let store = Store::open(
            &dir,
            StoreConfig::new(NodeName::new("hq".to_owned()).unwrap()),
        )
        .unwrap();
        let topic = TopicName::new("NEWS".to_owned()).unwrap();
        store
            .create_topic(TopicConfig {
                name: topic.clone(),
                scope: Scope::All,
                retention: Default::default(),
            })
            .await
            .unwrap();
        let origin = NodeName::new("e1".to_owned()).unwrap();
        let entry = |seq: u64| Entry {
            id: EntryId {
                origin: origin.clone(),
                seq: Seq(seq),
            },
            timestamp: Timestamp(seq),
            key: None,
            to: None,
            headers: Vec::new(),
            payload: vec![seq as u8],
        };
        // Held through 2; the run brings 1 to 4 (1 and 2 again), then 7 and 8, then 10.
        let mut txn = Txn::new();
        txn.insert(&topic, vec![entry(1), entry(2)]);
        store.commit(txn).await.unwrap();
        let mut held = 2;
        let mut txn = Txn::new();
        let run = [1, 2, 3, 4, 7, 8, 10].map(entry).to_vec();
        assert_eq!(take_run(&mut txn, &topic, &origin, &mut held, run), 5);
        store.commit(txn).await.unwrap();
        assert_eq!(held, 10);
        assert_eq!(store.vector(&topic).unwrap().get(&origin), Seq(10));
        let seqs: Vec<u64> = store
            .read(&topic, crate::entry::Offset(0), 100)
            .unwrap()
            .iter()
            .map(|r| r.entry.id.seq.0)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 7, 8, 10]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tether-backbone-take-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_run_in_parts_is_whole_only_when_every_part_came_in_turn() {
        let mut partial = HashMap::new();
        let s = "tether-bb.NEWS.e1";
        // A message of its own.
        assert_eq!(
            assemble(&mut partial, s, 1, None, b"one").unwrap(),
            Some(b"one".to_vec())
        );
        // Parts 1 and 2 of 3, then a publisher's crash: part 1 of the run again.
        assert_eq!(
            assemble(&mut partial, s, 2, Some("1/3"), b"a").unwrap(),
            None
        );
        assert_eq!(
            assemble(&mut partial, s, 3, Some("2/3"), b"b").unwrap(),
            None
        );
        assert_eq!(
            partial[s].first, 2,
            "the position stays below the run's first part"
        );
        assert_eq!(
            assemble(&mut partial, s, 4, Some("1/3"), b"A").unwrap(),
            None
        );
        assert_eq!(partial[s].first, 4);
        assert_eq!(
            assemble(&mut partial, s, 5, Some("2/3"), b"B").unwrap(),
            None
        );
        assert_eq!(
            assemble(&mut partial, s, 6, Some("3/3"), b"C").unwrap(),
            Some(b"ABC".to_vec())
        );
        assert!(partial.is_empty());
        // A part out of turn is dropped with what was gathered.
        assert_eq!(
            assemble(&mut partial, s, 7, Some("2/2"), b"x").unwrap(),
            None
        );
        assert!(partial.is_empty());
        for bad in ["0/2", "3/2", "1/x", "1", "1/1000"] {
            assert!(
                assemble(&mut partial, s, 8, Some(bad), b"x").is_err(),
                "{bad}"
            );
        }
        let big = vec![0; MAX_PART_BYTES + 1];
        assert!(assemble(&mut partial, s, 9, Some("1/2"), &big).is_err());
    }
}
