//! The owner thread: the one writer of the store.
//!
//! - It takes requests from the bounded inbox, as many as are waiting (up to
//!   `max_group`, or [`GROUP_BYTES`] of entries), into one **group**.
//! - Commit delay: while other writers still have a request on its way (the count of
//!   requests sent and not answered is above the group's), it waits for them, up to
//!   `commit_delay`, so that one sync serves them all. A lone writer never waits.
//! - Each request is applied to a working copy of the topics it touches; a refused
//!   transaction drops its copy and leaves the group as it was.
//! - The group's writes (and its blocks of entries) become one record of the
//!   write-ahead log ([`super::wal`]), appended and `fdatasync`ed: the one device sync
//!   of a group commit. Only then are the blocks written to their entry files
//!   ([`super::entries`], page cache only) and the writes handed to sled (the LSN last)
//!   (in memory, no flush; a block's key holds its location), the new counters
//!   published to readers, tailers woken and every writer answered.
//! - The entry files and sled are made durable off the commit path: when the log's
//!   segment is full (or old), the owner begins a new one and the **flusher** thread
//!   syncs the entry files written since, flushes sled, syncs what sled leaves out
//!   ([`DiskSync`]) and only then removes the segments they now hold.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Checkpoint;
use super::entries::{self, Files, Location};
use super::error::{OpenError, WriteError};
use super::format::{self, ForgottenRecord, PeerRecord, StateRecord, StoredEntry, TopicRecord};
use super::txn::{Appended, Committed, Op, TableName, Txn};
use super::wal::{self, DiskFs, Wal, WalFs};
use super::{
    Catalog, GAPS_TOPIC, PeerConfig, RetentionReport, Shared, StoreConfig, TopicView, VersionVector,
};
use crate::codec;
use crate::entry::{
    Append, NodeName, Offset, Retention, Scope, Seq, Timestamp, TopicConfig, TopicName,
    check_headers,
};

/// A group stops taking requests once it holds this many entry bytes, so that one flush
/// (and the latency of everyone in it) stays bounded even with large entries.
const GROUP_BYTES: u64 = 8 << 20;
/// A block holds the entries of one topic from one group, cut at this many entries or
/// bytes, so that a read decodes little more than it returns. Each block costs sled a
/// key, its location and a time index key: a group of 64 entries of 256 bytes is one
/// block, not two.
const BLOCK_ENTRIES: usize = 1024;
const BLOCK_BYTES: u64 = 64 << 10;

mod retention;

type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// A request to the owner; each carries the sender of its reply.
#[derive(Debug)]
pub(crate) enum Request {
    Commit {
        txn: Txn,
        reply: Reply<Committed>,
    },
    CreateTopic {
        config: TopicConfig,
        reply: Reply<()>,
    },
    SetPeer {
        peer: PeerConfig,
        reply: Reply<()>,
    },
    PeerAcked {
        peer: NodeName,
        topic: TopicName,
        vector: VersionVector,
        reply: Reply<()>,
    },
    ForgetPeer {
        peer: NodeName,
        reply: Reply<bool>,
    },
    Retain {
        reply: Reply<RetentionReport>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// Loads the catalog, then starts the owner thread; returns its inbox.
///
/// Before the catalog is read, the write-ahead log is replayed into sled (see
/// [`recover`]); `fs` is the log's file layer (`None`: the store's `wal` directory).
pub(crate) fn start(
    shared: Arc<Shared>,
    config: StoreConfig,
    fs: Option<Arc<dyn WalFs>>,
) -> Result<mpsc::Sender<Request>, OpenError> {
    let (tx, rx) = mpsc::channel(config.inbox.max(1));
    let io_error = |source| OpenError::Io {
        path: shared.path.clone(),
        source,
    };
    let format = stored_format(&shared)?;
    wal::DiskFs::at(&shared.path.join(entries::DIR))
        .make_dir()
        .map_err(io_error)?;
    let mut disk = DiskSync::open(&shared.path.join("sled")).map_err(io_error)?;
    let fs = match fs {
        Some(fs) => fs,
        None => Arc::new(DiskFs::open(&shared.path.join(wal::DIR)).map_err(io_error)?),
    };
    let last = recover(&shared, format, &*fs, &mut disk)?;
    let disk = Arc::new(Mutex::new(disk));
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel(1);
    let wal = Wal::start(fs.clone(), last + 1, config.wal_segment_bytes).map_err(io_error)?;
    let mut owner = Owner::load(shared.clone(), config, disk.clone(), wal)?;
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("tether-store-flush".into())
            .spawn(move || flush_loop(&shared, &disk, &*fs, flush_rx))
            .map_err(io_error)?
    };
    owner.flusher = Some(Flusher {
        tx: flush_tx,
        spare_asked: false,
        thread: flusher,
    });
    std::thread::Builder::new()
        .name("tether-store".into())
        .spawn(move || owner.run(rx))
        .map_err(io_error)?;
    Ok(tx)
}

/// Replays the write-ahead log into sled: every record past the LSN sled holds, in order
/// (a torn tail cut, damage an error); then makes sled durable and removes the log.
/// Returns the last LSN, which the log goes on from.
///
/// Only a store of this format has a log to replay. One of the previous format (1, no
/// log) opens and is converted by [`Owner::load`]; a new store has none yet.
fn recover(
    shared: &Shared,
    format: Option<u32>,
    fs: &dyn WalFs,
    disk: &mut DiskSync,
) -> Result<u64, OpenError> {
    let path = &shared.path;
    let corrupt = |detail: String| OpenError::Corrupt {
        path: path.clone(),
        detail,
    };
    let tree = &shared.tree;
    let sled_err = |e: sled::Error| corrupt(e.to_string());
    let applied = match tree.get(format::META_LSN).map_err(sled_err)? {
        Some(v) => {
            format::u64_value(&v).ok_or_else(|| corrupt("unreadable log position".into()))?
        }
        None => 0,
    };
    // Every record's blocks are written again, those sled holds included: the entry
    // files are made durable only when the log's segments go.
    let entries = &*shared.entries;
    let mut rewritten = entries::Dirty::default();
    let recovery = match format {
        Some(format::FORMAT_VERSION) => wal::recover(fs, applied, |lsn, payload, past| {
            let record: wal::Payload =
                codec::decode(payload, "write-ahead log record").map_err(|e| e.to_string())?;
            for block in &record.files {
                rewritten.files.push(entries::write_block(entries, block)?);
                rewritten.created = true;
            }
            if !past {
                return Ok(());
            }
            apply_writes(tree, record.writes, lsn).map_err(|e| e.to_string())
        }),
        // The previous format's log: sled's writes alone, its blocks in place.
        Some(format::FORMAT_LOGGED) => wal::recover(fs, applied, |lsn, payload, past| {
            if !past {
                return Ok(());
            }
            let writes: Vec<wal::Write> =
                codec::decode(payload, "write-ahead log record").map_err(|e| e.to_string())?;
            apply_writes(tree, writes, lsn).map_err(|e| e.to_string())
        }),
        found => wal::recover(fs, applied, |lsn, _, _| {
            Err(match found {
                Some(v) => {
                    format!("record {lsn} in the log of a store of format {v}, which has none")
                }
                None => format!("record {lsn} in the log of a store without a format marker"),
            })
        }),
    }
    .map_err(corrupt)?;
    if recovery.replayed > 0 {
        tracing::info!(path = %path.display(), records = recovery.replayed, last = recovery.last, "write-ahead log replayed into the store");
    }
    if recovery.segments > 0 {
        // What sled recovered by itself after a kill may be only in the page cache: it
        // is made durable, after the entry files it points into, before the log that
        // also holds them goes.
        rewritten.files.sort_unstable();
        rewritten.files.dedup();
        entries::sync(entries, &rewritten)
            .map_err(|e| corrupt(format!("cannot sync the entry files: {e}")))?;
        shared.db.flush().map_err(sled_err)?;
        disk.sync()
            .map_err(|e| corrupt(format!("cannot sync the store: {e}")))?;
        wal::remove_before(fs, u64::MAX)
            .map_err(|e| corrupt(format!("cannot remove the replayed log: {e}")))?;
    }
    Ok(recovery.last)
}

/// The store's format marker: `None` for a new store; a version this build does not
/// read is refused here, before anything (the log included) is touched.
fn stored_format(shared: &Shared) -> Result<Option<u32>, OpenError> {
    let path = shared.path.clone();
    let corrupt = |detail: String| OpenError::Corrupt {
        path: path.clone(),
        detail,
    };
    let Some(v) = shared
        .tree
        .get(format::META_FORMAT)
        .map_err(|e| corrupt(e.to_string()))?
    else {
        return Ok(None);
    };
    let found = format::u32_value(&v).ok_or_else(|| corrupt("unreadable format marker".into()))?;
    if !(format::FORMAT_UNLOGGED..=format::FORMAT_VERSION).contains(&found) {
        let supported = format::FORMAT_VERSION;
        return Err(OpenError::UnknownFormat {
            path,
            found,
            supported,
        });
    }
    Ok(Some(found))
}

/// Hands a group's writes to sled one by one, then the LSN of the log record that holds
/// them, last: sled recovers a prefix of its operations (its log is read up to the first
/// damaged message), so a sled that holds this LSN holds every write before it, and one
/// that holds part of a group holds the previous LSN, from which the replay redoes the
/// group whole (its writes are absolute). Not `apply_batch`: sled 0.34 writes its IO
/// buffer out twice per batch, each with a synchronous `sync_file_range`, so every group
/// commit cost device writes beside the log's own sync; the log already makes a group
/// atomic. Readers of documents, cursors and acknowledgements see a group whole through
/// [`Shared::applying`](super::Shared).
fn apply_writes(tree: &sled::Tree, writes: Vec<wal::Write>, lsn: u64) -> sled::Result<()> {
    for w in writes {
        match w.value {
            Some(v) => drop(tree.insert(w.key, v)?),
            None => drop(tree.remove(w.key)?),
        }
    }
    tree.insert(format::META_LSN, &lsn.to_be_bytes())?;
    Ok(())
}

/// The flusher's work.
enum Job {
    /// A segment was closed: the first LSN of its successor, and the entry files
    /// written before it.
    Fold(u64, entries::Dirty),
    /// Make a spare of this many bytes ready for the next segment.
    Spare(u64),
    /// Sync these entry files early ([`entries::EARLY_SYNC`]).
    Sync(entries::Dirty),
}

/// The flusher thread: for each closed segment, makes the entry files written and sled
/// durable through it and removes the segments they made redundant; makes spares ready.
fn flush_loop(
    shared: &Shared,
    disk: &Mutex<DiskSync>,
    fs: &dyn WalFs,
    rx: std::sync::mpsc::Receiver<Job>,
) {
    for job in rx {
        // Once a write or sync failed, nothing more is made durable here, and above all
        // no log segment goes: a failed `fsync` may have dropped pages it reports clean
        // after, so the log may hold the only durable copy of what it covered.
        if shared.poisoned().is_some() {
            continue;
        }
        let (before, dirty) = match job {
            Job::Fold(before, dirty) => (before, dirty),
            Job::Sync(dirty) => {
                if let Err(err) = entries::sync(&*shared.entries, &dirty) {
                    shared.poison(&format!("background sync of the entry files: {err}"));
                }
                continue;
            }
            Job::Spare(len) => {
                // Only an optimisation: without one, the next segment is a new file.
                if let Err(err) = fs.prepare_spare(len) {
                    tracing::warn!(path = %shared.path.display(), %err, "cannot prepare the write-ahead log's spare segment");
                }
                continue;
            }
        };
        let started = Instant::now();
        // The entry files first: sled points into them.
        let flushed = entries::sync(&*shared.entries, &dirty)
            .map_err(|e| format!("entry files: {e}"))
            .and_then(|()| shared.db.flush().map_err(|e| e.to_string()))
            .and_then(|_| {
                let mut disk = disk.lock().unwrap_or_else(|p| p.into_inner());
                disk.sync().map_err(|e| e.to_string())
            })
            .and_then(|_| wal::remove_before(fs, before).map_err(|e| e.to_string()));
        match flushed {
            Ok(removed) => {
                let ms = started.elapsed().as_millis();
                tracing::debug!(
                    before,
                    removed,
                    ms,
                    "store flushed; write-ahead log segments removed"
                );
            }
            Err(err) => drop(shared.poison(&format!("background flush: {err}"))),
        }
    }
}

/// The owner's end of the flusher thread.
struct Flusher {
    /// Folds (bounded, so that a flusher behind makes the owner wait rather than the
    /// log grow) and spares.
    tx: std::sync::mpsc::SyncSender<Job>,
    /// A spare was asked for since the segment began.
    spare_asked: bool,
    thread: std::thread::JoinHandle<()>,
}

struct Owner {
    shared: Arc<Shared>,
    config: StoreConfig,
    topics: HashMap<u32, TopicState>,
    by_name: HashMap<TopicName, u32>,
    names: HashMap<NodeName, u32>,
    self_id: u32,
    peers: BTreeMap<NodeName, Peer>,
    /// Peers an operator forgot: retention does not wait for them, and records what it
    /// removes that they lacked (`owed`), which becomes gaps if they return.
    forgotten: BTreeMap<NodeName, Forgotten>,
    /// Shared with the flusher thread.
    disk: Arc<Mutex<DiskSync>>,
    wal: Wal,
    /// The entry files: where each topic's next block goes.
    files: Files,
    flusher: Option<Flusher>,
    checkpoint: Checkpoint,
}

struct TopicState {
    view: Arc<TopicView>,
    config: TopicConfig,
    counters: Counters,
}

/// A topic's counters as the owner works on them (the vector as a map).
#[derive(Debug, Clone, Default)]
struct Counters {
    first: u64,
    next: u64,
    bytes: u64,
    vector: BTreeMap<u32, u64>,
}

struct Peer {
    core: bool,
    id: u32,
    topics: HashSet<u32>,
    acked: HashMap<(u32, u32), u64>,
}

struct Forgotten {
    peer: Peer,
    forgotten_ms: u64,
    /// Per (topic id, origin id): first and last sequence removed that it lacked.
    owed: BTreeMap<(u32, u32), (u64, u64)>,
    /// `owed` changed since it was last written.
    changed: bool,
}

/// One group commit in the making.
#[derive(Default)]
struct Group {
    /// Topics touched, with their new counters and new entries.
    pending: HashMap<u32, Pending>,
    /// Other writes: documents, cursors, names, topic and peer records. `None` removes.
    kv: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Replies to send once the group is durable.
    done: Vec<Done>,
    /// A topic was created (readers of [`Store::changes`](super::Store::changes) may
    /// wait for one).
    created: bool,
}

struct Pending {
    counters: Counters,
    /// The offset of the first entry in `new`.
    new_first: u64,
    new: Vec<StoredEntry>,
}

enum Done {
    Commit(Reply<Committed>, Committed),
    Unit(Reply<()>),
    Retain(Reply<RetentionReport>, RetentionReport),
    Flag(Reply<bool>, bool),
}

impl Owner {
    fn load(
        shared: Arc<Shared>,
        config: StoreConfig,
        disk: Arc<Mutex<DiskSync>>,
        wal: Wal,
    ) -> Result<Owner, OpenError> {
        let tree = &shared.tree.clone();
        let path = shared.path.clone();
        let corrupt = |detail: String| OpenError::Corrupt {
            path: path.clone(),
            detail,
        };
        let sled_err = |e: sled::Error| corrupt(e.to_string());
        let mut init = sled::Batch::default();
        match tree.get(format::META_FORMAT).map_err(sled_err)? {
            Some(v) => {
                let found = format::u32_value(&v)
                    .ok_or_else(|| corrupt("unreadable format marker".into()))?;
                if found == format::FORMAT_UNLOGGED || found == format::FORMAT_LOGGED {
                    // Converted: from here on writes go through the log, and blocks to
                    // entry files, which a build of format 1 or 2 would not replay or
                    // read; the new marker is durable (below) before the log holds a
                    // record. Blocks the old format kept in sled are read where they
                    // are, until retention removes them.
                    tracing::info!(path = %path.display(), from = found, to = format::FORMAT_VERSION, "store format converted");
                    init.insert(format::META_FORMAT, &format::FORMAT_VERSION.to_be_bytes());
                } else if found != format::FORMAT_VERSION {
                    let (path, supported) = (shared.path.clone(), format::FORMAT_VERSION);
                    return Err(OpenError::UnknownFormat {
                        path,
                        found,
                        supported,
                    });
                }
                let node = tree
                    .get(format::META_NODE)
                    .map_err(sled_err)?
                    .unwrap_or_default();
                if node.as_ref() != config.node.as_str().as_bytes() {
                    let found = String::from_utf8_lossy(&node).into_owned();
                    return Err(OpenError::WrongNode {
                        path: shared.path.clone(),
                        found,
                        expected: config.node.clone(),
                    });
                }
            }
            None if tree.is_empty() => {
                init.insert(format::META_FORMAT, &format::FORMAT_VERSION.to_be_bytes());
                init.insert(format::META_NODE, config.node.as_str().as_bytes());
            }
            None => {
                return Err(corrupt(
                    "no format marker: not a tether store, or its first write was lost".into(),
                ));
            }
        }

        let stored = tree.get(format::META_INCARNATION).map_err(sled_err)?;
        let incarnation = match stored.as_deref().map(<[u8; 8]>::try_from) {
            Some(Ok(bytes)) => u64::from_be_bytes(bytes),
            Some(Err(_)) => return Err(corrupt("unreadable incarnation".into())),
            None => {
                let drawn = draw_incarnation(&shared.path);
                init.insert(format::META_INCARNATION, &drawn.to_be_bytes());
                drawn
            }
        };
        shared.incarnation.store(incarnation, Ordering::Relaxed);

        let mut names = HashMap::new();
        let mut interned = Vec::new();
        for kv in tree.scan_prefix([format::NAME]) {
            let (k, v) = kv.map_err(sled_err)?;
            let text = String::from_utf8_lossy(&k[1..]).into_owned();
            let name = NodeName::new(text).map_err(|e| corrupt(format!("interned name: {e}")))?;
            let id = format::u32_value(&v).ok_or_else(|| corrupt(format!("id of name {name}")))?;
            names.insert(name.clone(), id);
            interned.push((id, name));
        }
        let by_id = format::names_by_id(interned).map_err(corrupt)?;

        let mut topics = HashMap::new();
        let mut by_name = HashMap::new();
        let mut views = HashMap::new();
        for kv in tree.scan_prefix([format::TOPIC]) {
            let (k, v) = kv.map_err(sled_err)?;
            let text = String::from_utf8_lossy(&k[1..]).into_owned();
            let name = TopicName::new(text).map_err(|e| corrupt(format!("topic record: {e}")))?;
            let record: TopicRecord = codec::decode(&v, "topic record")
                .map_err(|e| corrupt(format!("topic {name}: {e}")))?;
            let state: StateRecord =
                match tree.get(format::state_key(record.id)).map_err(sled_err)? {
                    Some(v) => codec::decode(&v, "topic state")
                        .map_err(|e| corrupt(format!("topic {name}: {e}")))?,
                    None => StateRecord::default(),
                };
            if state.first > state.next {
                return Err(corrupt(format!(
                    "topic {name}: head {} past end {}",
                    state.first, state.next
                )));
            }
            let config = TopicConfig {
                name: name.clone(),
                scope: record.scope,
                retention: record.retention(),
            };
            let view = TopicView::new(record.id, config.clone(), state.clone());
            views.insert(name.clone(), view.clone());
            by_name.insert(name, record.id);
            topics.insert(
                record.id,
                TopicState {
                    view,
                    config,
                    counters: Counters::from(state),
                },
            );
        }

        let mut peers = BTreeMap::new();
        for kv in tree.scan_prefix([format::PEER]) {
            let (k, v) = kv.map_err(sled_err)?;
            let text = String::from_utf8_lossy(&k[1..]).into_owned();
            let name = NodeName::new(text).map_err(|e| corrupt(format!("peer record: {e}")))?;
            let record: PeerRecord = codec::decode(&v, "peer record")
                .map_err(|e| corrupt(format!("peer {name}: {e}")))?;
            let id = *names
                .get(&name)
                .ok_or_else(|| corrupt(format!("peer {name} has no id")))?;
            let topics = record.topics.into_iter().collect();
            peers.insert(
                name,
                Peer {
                    core: record.core,
                    id,
                    topics,
                    acked: HashMap::new(),
                },
            );
        }
        let mut forgotten = BTreeMap::new();
        for kv in tree.scan_prefix([format::FORGOTTEN]) {
            let (k, v) = kv.map_err(sled_err)?;
            let text = String::from_utf8_lossy(&k[1..]).into_owned();
            let name = NodeName::new(text).map_err(|e| corrupt(format!("forgotten peer: {e}")))?;
            let record: ForgottenRecord = codec::decode(&v, "forgotten peer")
                .map_err(|e| corrupt(format!("forgotten peer {name}: {e}")))?;
            let id = *names
                .get(&name)
                .ok_or_else(|| corrupt(format!("forgotten peer {name} has no id")))?;
            let peer = Peer {
                core: record.core,
                id,
                topics: record.topics.into_iter().collect(),
                acked: HashMap::new(),
            };
            let owed = record
                .owed
                .into_iter()
                .map(|(t, o, first, last)| ((t, o), (first, last)))
                .collect();
            let forgotten_ms = record.forgotten_ms;
            let entry = Forgotten {
                peer,
                forgotten_ms,
                owed,
                changed: false,
            };
            forgotten.insert(name, entry);
        }
        let every_peer = peers
            .iter_mut()
            .chain(forgotten.iter_mut().map(|(n, f)| (n, &mut f.peer)));
        for (name, peer) in every_peer {
            let prefix = format::ack_key(name.as_str(), 0, 0);
            let prefix = &prefix[..prefix.len() - 8];
            for kv in tree.scan_prefix(prefix) {
                let (k, v) = kv.map_err(sled_err)?;
                let ids = &k[prefix.len()..];
                let (Some(t), Some(o), Some(seq)) = (
                    format::u32_value(&ids[..4.min(ids.len())]),
                    format::u32_value(ids.get(4..).unwrap_or_default()),
                    format::u64_value(&v),
                ) else {
                    return Err(corrupt(format!("acknowledgement of peer {name}")));
                };
                peer.acked.insert((t, o), seq);
            }
        }

        // Each topic's head and last block, for the entry files (those no block points
        // at are removed).
        let mut lasts = BTreeMap::new();
        for (&t, state) in &topics {
            let prefix = &format::block_key(t, 0)[..5];
            let last = match tree.scan_prefix(prefix).next_back() {
                Some(kv) => {
                    let (_, v) = kv.map_err(sled_err)?;
                    Location::decode(&v)
                        .map_err(|e| corrupt(format!("topic {}: {e}", state.config.name)))?
                }
                None => None,
            };
            lasts.insert(t, (state.counters.first, last));
        }
        let files = Files::open(&*shared.entries, &lasts).map_err(|e| {
            corrupt(format!(
                "entry files in {}: {e}",
                shared.entries.path("").display()
            ))
        })?;

        let checkpoint = Checkpoint::new(&path);
        checkpoint
            .verify(|name| {
                let id = by_name.get(&TopicName::new(name).ok()?)?;
                topics.get(id).map(|t: &TopicState| t.counters.next)
            })
            .map_err(corrupt)?;

        *shared.catalog.write().unwrap_or_else(|p| p.into_inner()) = Catalog {
            topics: views,
            names: by_id,
        };
        let mut owner = Owner {
            shared,
            config,
            topics,
            by_name,
            names,
            self_id: 0,
            peers,
            forgotten,
            disk,
            wal,
            files,
            flusher: None,
            checkpoint,
        };

        // First use: intern this node's name and create the gaps topic, durably.
        let mut g = Group::default();
        owner.self_id = owner.intern(&owner.config.node.clone(), &mut g);
        let gaps = TopicConfig {
            name: TopicName::new(GAPS_TOPIC).map_err(|e| corrupt(e.to_string()))?,
            scope: Scope::All,
            retention: Retention {
                max_entries: Some(100_000),
                ..Retention::default()
            },
        };
        if !owner.by_name.contains_key(&gaps.name) {
            owner
                .define_topic(&gaps, &mut g)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        for (k, v) in g.kv {
            if let Some(v) = v {
                init.insert(k, v);
            }
        }
        tree.apply_batch(init).map_err(sled_err)?;
        owner.shared.db.flush().map_err(sled_err)?;
        owner
            .disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync()
            .map_err(|e| corrupt(format!("cannot sync the store: {e}")))?;
        Ok(owner)
    }

    fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        // A timer for the commit delay's timed wait on the inbox; this thread runs nothing
        // else on it. Without one, groups are flushed without waiting.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        if let Err(err) = &timer {
            tracing::warn!(%err, "no timer for the commit delay: flushing without it");
        }
        while let Some(first) = inbox.blocking_recv() {
            let mut g = Group::default();
            let mut close = None;
            let (mut taken, mut weight) = (0, 0);
            let mut next = Some(first);
            let deadline = Instant::now() + self.config.commit_delay;
            loop {
                while let Some(request) = next.take().or_else(|| inbox.try_recv().ok()) {
                    taken += 1;
                    weight += request.weight();
                    match request {
                        Request::Close { reply } => close = Some(reply),
                        _ if close.is_some() => request.refuse(WriteError::Closed),
                        request => self.handle(request, &mut g),
                    }
                    if taken >= self.config.max_group || weight >= GROUP_BYTES {
                        break;
                    }
                }
                let full = taken >= self.config.max_group || weight >= GROUP_BYTES;
                let everyone = g.done.len() >= self.shared.writers.load(Ordering::Relaxed);
                let now = Instant::now();
                let (false, false, None, Ok(timer)) = (full, everyone, &close, &timer) else {
                    break;
                };
                if now >= deadline {
                    break;
                }
                let wait = async { tokio::time::timeout(deadline - now, inbox.recv()).await };
                match timer.block_on(wait) {
                    Ok(Some(request)) => next = Some(request),
                    _ => break, // the delay is over, or every handle is gone
                }
            }
            self.write(g);
            if let Some(reply) = close {
                let flushed = self.stop().map_err(WriteError::Poisoned);
                // The database is let go before replying, so that once the last handle
                // drops after `close`, the files are free to be opened again.
                let _ = reply.send(flushed);
                return;
            }
        }
        // Every handle is gone: make sure the last writes are on disk.
        if let Err(err) = self.stop() {
            tracing::error!(%err, "final flush of the store failed");
        }
    }

    /// Waits for the flusher, makes sled durable, removes the log (sled holds all of it
    /// now), and drops the database.
    fn stop(mut self) -> Result<(), String> {
        if let Some(flusher) = self.flusher.take() {
            drop(flusher.tx);
            if flusher.thread.join().is_err() {
                self.shared.poison(&"the store's flusher thread panicked");
            }
        }
        if let Some(cause) = self.shared.poisoned() {
            return Err(cause);
        }
        entries::sync(&*self.shared.entries, &self.files.take_dirty())
            .map_err(|e| format!("entry files: {e}"))?;
        self.shared.db.flush().map_err(|e| e.to_string())?;
        let mut disk = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        disk.sync().map_err(|e| e.to_string())?;
        drop(disk);
        wal::remove_before(&**self.wal.fs(), u64::MAX).map_err(|e| e.to_string())?;
        // A closed store keeps no spare: the next one is made once a segment fills.
        match self.wal.fs().remove(wal::SPARE) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.shared.path.display(), %e, "cannot remove the write-ahead log's spare segment");
            }
            _ => {}
        }
        self.write_checkpoint();
        tracing::debug!(path = %self.shared.path.display(), "store closed");
        Ok(())
    }

    fn handle(&mut self, request: Request, g: &mut Group) {
        if let Some(cause) = self.shared.poisoned() {
            return request.refuse(WriteError::Poisoned(cause));
        }
        match request {
            Request::Commit { txn, reply } if txn.has_entries() => {
                match self.shared.space.check(Instant::now()) {
                    Ok(()) => match self.apply(txn, g) {
                        Ok(done) => g.done.push(Done::Commit(reply, done)),
                        Err(e) => drop(reply.send(Err(e))),
                    },
                    Err(e) => drop(reply.send(Err(e))),
                }
            }
            Request::Commit { txn, reply } => match self.apply(txn, g) {
                Ok(done) => g.done.push(Done::Commit(reply, done)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::CreateTopic { config, reply } => match self.define_topic(&config, g) {
                Ok(_) => g.done.push(Done::Unit(reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::SetPeer { peer, reply } => match self.set_peer(peer, g) {
                Ok(()) => g.done.push(Done::Unit(reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::PeerAcked {
                peer,
                topic,
                vector,
                reply,
            } => match self.peer_acked(&peer, &topic, vector, g) {
                Ok(()) => g.done.push(Done::Unit(reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            Request::ForgetPeer { peer, reply } => {
                let known = self.forget_peer(&peer, g);
                g.done.push(Done::Flag(reply, known));
            }
            Request::Retain { reply } => {
                let report = self.retain(g);
                g.done.push(Done::Retain(reply, report));
            }
            Request::Close { .. } => unreachable!("close is taken out by run"),
        }
    }

    /// Applies one transaction to the group, or nothing of it.
    fn apply(&mut self, txn: Txn, g: &mut Group) -> Result<Committed, WriteError> {
        let mut work: HashMap<u32, Pending> = HashMap::new();
        let mut kv = Vec::new();
        let mut done = Committed::default();
        for op in txn.ops {
            match op {
                Op::Append { topic, append } => {
                    if topic.is_system() {
                        return Err(WriteError::SystemTopic(topic));
                    }
                    let t = self.topic_id(&topic)?;
                    let (offset, seq) = self.append_own(&mut work, g, t, append)?;
                    done.appended.push(Appended { topic, offset, seq });
                }
                Op::Insert { topic, entries } => {
                    let t = self.topic_id(&topic)?;
                    // The previous entry's origin and its id, if interned: a batch is
                    // mostly runs of one origin, so most entries skip the name lookup.
                    let mut last: Option<(NodeName, Option<u32>)> = None;
                    for e in entries {
                        self.check_size(e.size())?;
                        check_headers(&e.headers).map_err(WriteError::Headers)?;
                        let known = match &last {
                            Some((name, id)) if *name == e.id.origin => *id,
                            _ => {
                                let id = self.names.get(&e.id.origin).copied();
                                last = Some((e.id.origin.clone(), id));
                                id
                            }
                        };
                        let w = work_for(&mut work, g, &self.topics, t);
                        let held = known
                            .and_then(|o| w.counters.vector.get(&o).copied())
                            .unwrap_or(0);
                        if e.id.seq.0 <= held {
                            done.duplicates += 1;
                            continue;
                        }
                        if known == Some(self.self_id) {
                            return Err(WriteError::OwnOrigin {
                                topic,
                                seq: e.id.seq,
                            });
                        }
                        if e.id.seq.0 != held + 1 {
                            let (expected, got) = (Seq(held + 1), e.id.seq);
                            return Err(WriteError::OutOfOrder {
                                topic,
                                origin: e.id.origin,
                                expected,
                                got,
                            });
                        }
                        // Names are interned only for entries that are stored: a peer's
                        // duplicates and refusals leave nothing behind.
                        let origin = match known {
                            Some(id) => id,
                            None => {
                                let id = self.intern(&e.id.origin, g);
                                last = Some((e.id.origin.clone(), Some(id)));
                                id
                            }
                        };
                        let to = e.to.as_ref().map(|n| self.intern(n, g));
                        let stored = StoredEntry {
                            origin,
                            seq: e.id.seq.0,
                            ts: e.timestamp.0,
                            key: e.key,
                            to,
                            headers: e.headers,
                            payload: e.payload,
                        };
                        w.push(stored);
                        done.inserted += 1;
                    }
                }
                Op::Skip {
                    topic,
                    origin,
                    through,
                } => {
                    let t = self.topic_id(&topic)?;
                    if origin == self.config.node {
                        return Err(WriteError::OwnOrigin {
                            topic,
                            seq: through,
                        });
                    }
                    let origin = self.intern(&origin, g);
                    let w = work_for(&mut work, g, &self.topics, t);
                    let held = w.counters.vector.entry(origin).or_default();
                    *held = (*held).max(through.0);
                }
                Op::Put { table, id, doc } => {
                    check_doc_id(&id)?;
                    // A `Value` always serializes: its map keys are strings.
                    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                    self.check_size(bytes.len() as u64)?;
                    kv.push((format::doc_key(table.as_str(), &id), Some(bytes.clone())));
                    let t = self.table_feed(&table, g)?;
                    let change = Append::new(bytes).key(id).header("op", *b"put");
                    self.append_own(&mut work, g, t, change)?;
                }
                Op::Delete { table, id } => {
                    check_doc_id(&id)?;
                    kv.push((format::doc_key(table.as_str(), &id), None));
                    let t = self.table_feed(&table, g)?;
                    let change = Append::new(Vec::new()).key(id).header("op", *b"delete");
                    self.append_own(&mut work, g, t, change)?;
                }
                Op::Cursor {
                    consumer,
                    topic,
                    next,
                } => {
                    let t = self.topic_id(&topic)?;
                    let end = work_for(&mut work, g, &self.topics, t).counters.next;
                    if next.0 > end {
                        return Err(WriteError::BeyondEnd {
                            topic,
                            offset: next,
                            next: Offset(end),
                        });
                    }
                    kv.push((
                        format::cursor_key(consumer.as_str(), t),
                        Some(next.0.to_be_bytes().to_vec()),
                    ));
                }
            }
        }
        g.merge(work);
        g.kv.extend(kv);
        Ok(done)
    }

    fn append_own(
        &mut self,
        work: &mut HashMap<u32, Pending>,
        g: &mut Group,
        t: u32,
        append: Append,
    ) -> Result<(Offset, Seq), WriteError> {
        self.check_size(append.size())?;
        check_headers(&append.headers).map_err(WriteError::Headers)?;
        let to = append.to.as_ref().map(|n| self.intern(n, g));
        let w = work_for(work, g, &self.topics, t);
        let seq = w.counters.vector.get(&self.self_id).copied().unwrap_or(0) + 1;
        let offset = w.counters.next;
        w.push(StoredEntry {
            origin: self.self_id,
            seq,
            ts: Timestamp::now().0,
            key: append.key,
            to,
            headers: append.headers,
            payload: append.payload,
        });
        Ok((Offset(offset), Seq(seq)))
    }

    /// Writes the group to the log and syncs it (the one device sync), hands it to sled
    /// one by one (the LSN last), then publishes and replies.
    fn write(&mut self, g: Group) {
        if g.done.is_empty() && g.kv.is_empty() && g.pending.is_empty() {
            return;
        }
        let mut writes: Vec<wal::Write> =
            g.kv.into_iter()
                .map(|(key, value)| wal::Write { key, value })
                .collect();
        let mut placed: Vec<wal::FileWrite> = Vec::new();
        for (&t, p) in &g.pending {
            let mut first = p.new_first;
            for block in blocks(&p.new) {
                let (min, max) = block
                    .iter()
                    .fold((u64::MAX, 0), |(lo, hi), e| (lo.min(e.ts), hi.max(e.ts)));
                let bytes = codec::encode(block);
                let (_, at) = self.files.place(t, first, &bytes);
                writes.push(wal::Write {
                    key: format::block_key(t, first).to_vec(),
                    value: Some(at.encode()),
                });
                placed.push(wal::FileWrite {
                    topic: t,
                    file: at.file,
                    pos: at.pos,
                    bytes,
                });
                writes.push(wal::Write {
                    key: format::time_key(t, max, first).to_vec(),
                    value: Some(min.to_be_bytes().to_vec()),
                });
                first += block.len() as u64;
            }
            writes.push(wal::Write {
                key: format::state_key(t).to_vec(),
                value: Some(codec::encode(&p.counters.record())),
            });
        }
        let shared = &self.shared;
        let written = match shared.poisoned() {
            Some(cause) => Err(cause),
            // Nothing to write (acknowledgements already known, nothing to retain): what
            // the replies rest on is published, so durable already.
            None if writes.is_empty() => Ok(()),
            // Durable first (append, `fdatasync`), then the blocks in their files, then
            // visible in sled: a reader, a table read included, never sees a write a
            // crash could take back.
            None => {
                let record = codec::encode(&wal::PayloadRef {
                    writes: &writes,
                    files: &placed,
                });
                shared.space.wrote(record.len() as u64);
                let entries = &*shared.entries;
                self.wal
                    .append(&record)
                    .and_then(|lsn| self.wal.sync().map(|()| lsn))
                    .map_err(|err| shared.poison(&format!("write-ahead log: {err}")))
                    .and_then(|lsn| {
                        for block in &placed {
                            entries::write_block(entries, block)
                                .map_err(|err| shared.poison(&err))?;
                        }
                        Ok(lsn)
                    })
                    .and_then(|lsn| {
                        let _whole = shared.applying.write().unwrap_or_else(|p| p.into_inner());
                        apply_writes(&shared.tree, writes, lsn).map_err(|err| shared.poison(&err))
                    })
            }
        };
        if let Err(cause) = written {
            for done in g.done {
                done.refuse(WriteError::Poisoned(cause.clone()));
            }
            return;
        }
        // Only groups with entries (or a new topic) wake the readers of any topic: a
        // group of cursors, documents or peer records alone would wake every link's
        // sender for nothing, and each of a core's thousand links writes cursors.
        let wake = !g.pending.is_empty() || g.created;
        let senders = self.senders_to_wake(&g.pending, g.created);
        let mut emptied = Vec::new();
        for (&t, p) in &g.pending {
            emptied.extend(self.files.below(t, p.counters.first, p.counters.next));
        }
        for (t, p) in g.pending {
            if let Some(state) = self.topics.get_mut(&t) {
                // Only topics that cross links have many readers at their tail.
                if state.config.scope != crate::entry::Scope::Local {
                    state.view.remember(p.new_first, p.new);
                }
                state.view.publish(p.counters.record());
                state.counters = p.counters;
            }
        }
        // Retention moved a head past whole files: they go, once the new head is
        // published (a reader that finds a file gone sees the head past it) and the
        // removal of their blocks' keys is durable (in the record just synced).
        for name in emptied {
            if let Err(err) = self.shared.entries.remove(&name) {
                let path = self.shared.entries.path(&name);
                tracing::warn!(path = %path.display(), %err, "cannot remove an entry file retention emptied (it goes at the next open)");
            }
        }
        if wake {
            self.shared.changes.send_modify(|n| *n += 1);
        }
        match senders {
            Wake::None => {}
            Wake::All => self.shared.sends.send_modify(|n| *n += 1),
            Wake::Only(names) => {
                let directed = self
                    .shared
                    .directed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for name in &names {
                    if let Some(wake) = directed.get(name) {
                        wake.send_modify(|n| *n += 1);
                    }
                }
            }
        }
        for done in g.done {
            done.accept();
        }
        if self.checkpoint.due() {
            self.write_checkpoint();
        }
        if self.wal.due() {
            self.rotate();
        } else if let Some(flusher) = self.flusher.as_mut()
            && self.files.sync_due()
        {
            // Never waits: a busy flusher gets them with the next group (a gone one
            // poisons the store at the next rotation; until then they stay dirty).
            let dirty = self.files.take_dirty();
            if let Err(
                std::sync::mpsc::TrySendError::Full(Job::Sync(dirty))
                | std::sync::mpsc::TrySendError::Disconnected(Job::Sync(dirty)),
            ) = flusher.tx.try_send(Job::Sync(dirty))
            {
                self.files.restore(dirty);
            }
        } else if let Some(flusher) = self.flusher.as_mut().filter(|f| !f.spare_asked)
            && self.wal.wants_spare()
        {
            // Never waits: a busy flusher is asked again after the next group.
            flusher.spare_asked = flusher
                .tx
                .try_send(Job::Spare(self.wal.spare_len()))
                .is_ok();
        }
    }

    /// Begins a new log segment and has the flusher fold the old ones into sled.
    fn rotate(&mut self) {
        let before = match self.wal.rotate() {
            Ok(before) => before,
            Err(err) => {
                self.shared
                    .poison(&format!("write-ahead log: new segment: {err}"));
                return;
            }
        };
        if let Some(flusher) = &mut self.flusher {
            flusher.spare_asked = false;
            // Waits while a flush is under way and another is queued.
            let dirty = self.files.take_dirty();
            if flusher.tx.send(Job::Fold(before, dirty)).is_err() {
                self.shared.poison(&"the store's flusher thread is gone");
            }
        }
    }

    /// Records every topic's (durable) next offset in the checkpoint file.
    fn write_checkpoint(&mut self) {
        let topics = self
            .topics
            .values()
            .map(|t| (t.config.name.to_string(), t.counters.next))
            .collect();
        if let Err(err) = self.checkpoint.write(format::FORMAT_VERSION, topics) {
            tracing::error!(path = %self.shared.path.display(), %err, "cannot write the store checkpoint");
        }
    }

    /// Creates a topic (or updates its retention); returns its id.
    fn define_topic(&mut self, config: &TopicConfig, g: &mut Group) -> Result<u32, WriteError> {
        if let Some(&t) = self.by_name.get(&config.name) {
            let state = self
                .topics
                .get_mut(&t)
                .ok_or(WriteError::UnknownTopic(config.name.clone()))?;
            if state.config.scope != config.scope {
                let (existing, requested) = (state.config.scope, config.scope);
                return Err(WriteError::ScopeConflict {
                    topic: config.name.clone(),
                    existing,
                    requested,
                });
            }
            if state.config.retention != config.retention {
                state.config.retention = config.retention;
                *state.view.config.lock().unwrap_or_else(|p| p.into_inner()) = config.clone();
                g.kv.push((
                    format::topic_key(config.name.as_str()),
                    Some(codec::encode(&TopicRecord::new(t, config))),
                ));
            }
            return Ok(t);
        }
        let t = self.topics.keys().max().map_or(0, |m| m + 1);
        g.kv.push((
            format::topic_key(config.name.as_str()),
            Some(codec::encode(&TopicRecord::new(t, config))),
        ));
        g.kv.push((
            format::state_key(t).to_vec(),
            Some(codec::encode(&StateRecord::default())),
        ));
        let view = TopicView::new(t, config.clone(), StateRecord::default());
        let mut catalog = self
            .shared
            .catalog
            .write()
            .unwrap_or_else(|p| p.into_inner());
        catalog.topics.insert(config.name.clone(), view.clone());
        drop(catalog);
        self.by_name.insert(config.name.clone(), t);
        self.topics.insert(
            t,
            TopicState {
                view,
                config: config.clone(),
                counters: Counters::default(),
            },
        );
        g.created = true;
        tracing::info!(topic = %config.name, scope = %config.scope, "topic created");
        Ok(t)
    }

    fn table_feed(&mut self, table: &TableName, g: &mut Group) -> Result<u32, WriteError> {
        let name = table.feed();
        match self.by_name.get(&name) {
            Some(&t) => Ok(t),
            None => {
                let retention = Retention {
                    max_entries: Some(100_000),
                    ..Retention::default()
                };
                self.define_topic(
                    &TopicConfig {
                        name,
                        scope: Scope::Local,
                        retention,
                    },
                    g,
                )
            }
        }
    }

    fn set_peer(&mut self, peer: PeerConfig, g: &mut Group) -> Result<(), WriteError> {
        let topics = peer
            .topics
            .iter()
            .map(|t| self.topic_id(t))
            .collect::<Result<HashSet<_>, _>>()?;
        let id = self.intern(&peer.name, g);
        let mut record_topics: Vec<u32> = topics.iter().copied().collect();
        record_topics.sort_unstable();
        let record = PeerRecord {
            core: peer.core,
            topics: record_topics,
        };
        g.kv.push((
            format::peer_key(peer.name.as_str()),
            Some(codec::encode(&record)),
        ));
        let mut acked = self
            .peers
            .remove(&peer.name)
            .map(|p| p.acked)
            .unwrap_or_default();
        if let Some(returned) = self.forgotten.remove(&peer.name) {
            // It returns: what retention removed while it was forgotten, and it lacked,
            // it will never receive from here. Recorded, never silently skipped.
            g.kv.push((format::forgotten_key(peer.name.as_str()), None));
            let lost = returned
                .owed
                .iter()
                .map(|(&key, &(first, last))| (key, (first, last, [peer.name.clone()].into())))
                .collect();
            let reason = format!(
                "removed while {} was forgotten or released (the core kept nothing for it)",
                peer.name
            );
            self.record_gaps(lost, &reason, g, &mut RetentionReport::default());
            tracing::warn!(peer = %peer.name, forgotten_ms = returned.forgotten_ms, gaps = returned.owed.len(), "a forgotten peer returned");
            acked = returned.peer.acked;
        }
        self.peers.insert(
            peer.name,
            Peer {
                core: peer.core,
                id,
                topics,
                acked,
            },
        );
        Ok(())
    }

    /// Stops keeping entries for `peer`; returns whether it was a peer (or forgotten).
    fn forget_peer(&mut self, peer: &NodeName, g: &mut Group) -> bool {
        if self.forgotten.contains_key(peer) {
            return true;
        }
        let Some(removed) = self.peers.remove(peer) else {
            return false;
        };
        g.kv.push((format::peer_key(peer.as_str()), None));
        let forgotten_ms = crate::tls::millis(std::time::SystemTime::now());
        let entry = Forgotten {
            peer: removed,
            forgotten_ms,
            owed: BTreeMap::new(),
            changed: true,
        };
        self.forgotten.insert(peer.clone(), entry);
        self.write_forgotten(g);
        true
    }

    /// Writes the records of forgotten peers whose `owed` changed.
    fn write_forgotten(&mut self, g: &mut Group) {
        for (name, f) in self.forgotten.iter_mut().filter(|(_, f)| f.changed) {
            let mut topics: Vec<u32> = f.peer.topics.iter().copied().collect();
            topics.sort_unstable();
            let record = ForgottenRecord {
                forgotten_ms: f.forgotten_ms,
                core: f.peer.core,
                topics,
                owed: f
                    .owed
                    .iter()
                    .map(|(&(t, o), &(first, last))| (t, o, first, last))
                    .collect(),
            };
            g.kv.push((
                format::forgotten_key(name.as_str()),
                Some(codec::encode(&record)),
            ));
            f.changed = false;
        }
    }

    fn peer_acked(
        &mut self,
        peer: &NodeName,
        topic: &TopicName,
        vector: VersionVector,
        g: &mut Group,
    ) -> Result<(), WriteError> {
        let t = self.topic_id(topic)?;
        let origins: Vec<(u32, u64)> = vector
            .0
            .iter()
            .map(|(o, s)| (self.intern(o, g), s.0))
            .collect();
        let Some(p) = self.peers.get_mut(peer) else {
            return Ok(()); // not a peer that retention waits for
        };
        for (o, seq) in origins {
            let held = p.acked.entry((t, o)).or_default();
            if seq > *held {
                *held = seq;
                g.kv.push((
                    format::ack_key(peer.as_str(), t, o),
                    Some(seq.to_be_bytes().to_vec()),
                ));
            }
        }
        Ok(())
    }

    fn topic_id(&self, topic: &TopicName) -> Result<u32, WriteError> {
        self.by_name
            .get(topic)
            .copied()
            .ok_or_else(|| WriteError::UnknownTopic(topic.clone()))
    }

    fn check_size(&self, size: u64) -> Result<(), WriteError> {
        let limit = self.config.max_entry_bytes;
        if size > limit {
            Err(WriteError::TooLarge { size, limit })
        } else {
            Ok(())
        }
    }

    /// The id of a node name, interning it (durably, with the group) if new.
    fn intern(&mut self, name: &NodeName, g: &mut Group) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let mut catalog = self
            .shared
            .catalog
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let id = catalog.names.len() as u32;
        catalog.names.push(name.clone());
        drop(catalog);
        self.names.insert(name.clone(), id);
        g.kv.push((
            format::name_key(name.as_str()),
            Some(id.to_be_bytes().to_vec()),
        ));
        id
    }
}

impl Request {
    fn weight(&self) -> u64 {
        match self {
            Request::Commit { txn, .. } => txn
                .ops
                .iter()
                .map(|op| match op {
                    Op::Append { append, .. } => append.size(),
                    Op::Insert { entries, .. } => entries.iter().map(|e| e.size()).sum(),
                    _ => 64,
                })
                .sum(),
            _ => 64,
        }
    }

    fn refuse(self, e: WriteError) {
        match self {
            Request::Commit { reply, .. } => drop(reply.send(Err(e))),
            Request::Retain { reply } => drop(reply.send(Err(e))),
            Request::CreateTopic { reply, .. }
            | Request::SetPeer { reply, .. }
            | Request::PeerAcked { reply, .. }
            | Request::Close { reply } => drop(reply.send(Err(e))),
            Request::ForgetPeer { reply, .. } => drop(reply.send(Err(e))),
        }
    }
}

impl Done {
    fn accept(self) {
        match self {
            Done::Commit(reply, c) => drop(reply.send(Ok(c))),
            Done::Unit(reply) => drop(reply.send(Ok(()))),
            Done::Retain(reply, r) => drop(reply.send(Ok(r))),
            Done::Flag(reply, f) => drop(reply.send(Ok(f))),
        }
    }

    fn refuse(self, e: WriteError) {
        match self {
            Done::Commit(reply, _) => drop(reply.send(Err(e))),
            Done::Unit(reply) => drop(reply.send(Err(e))),
            Done::Retain(reply, _) => drop(reply.send(Err(e))),
            Done::Flag(reply, _) => drop(reply.send(Err(e))),
        }
    }
}

impl Group {
    /// Takes a transaction's working copies as the group's new state.
    fn merge(&mut self, work: HashMap<u32, Pending>) {
        for (t, w) in work {
            match self.pending.get_mut(&t) {
                Some(p) => {
                    p.counters = w.counters;
                    p.new.extend(w.new);
                }
                None => drop(self.pending.insert(t, w)),
            }
        }
    }
}

impl Pending {
    fn push(&mut self, e: StoredEntry) {
        let held = self.counters.vector.entry(e.origin).or_default();
        *held = (*held).max(e.seq);
        self.counters.next += 1;
        self.counters.bytes += e.size();
        self.new.push(e);
    }
}

/// What sled's `flush` leaves out, for durability across power loss: sled 0.34 only
/// calls `sync_file_range` on its log (which neither flushes the disk's cache nor the
/// file's size), and never syncs its blob files (values, and consolidated tree pages,
/// over a quarter of a segment). This syncs both.
struct DiskSync {
    log: std::fs::File,
    blobs: PathBuf,
    synced: HashSet<(std::ffi::OsString, u64)>,
}

impl DiskSync {
    fn open(sled_dir: &Path) -> std::io::Result<DiskSync> {
        let log = std::fs::File::open(sled_dir.join("db"))?;
        let blobs = sled_dir.join("blobs");
        let mut disk = DiskSync {
            log,
            blobs,
            synced: HashSet::new(),
        };
        disk.sync()?; // blobs written before a crash may not have been synced
        Ok(disk)
    }

    /// `fsync` of every blob file not yet synced and, if there was one, of the blob
    /// directory (new names); then `fdatasync` of sled's log. Blob files never change
    /// once written, so each is synced once.
    ///
    /// Order: sled writes a blob file before the log record that points at it, and its
    /// `flush` has already started the log's write-back, so the blobs are synced first
    /// and the log's `fdatasync` comes last: when it returns, sled is durable through
    /// everything flushed, and only then does the flusher remove log segments.
    fn sync(&mut self) -> std::io::Result<()> {
        let mut fresh = false;
        let mut present = HashSet::new();
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        for entry in entries.into_iter().flatten() {
            let entry = entry?;
            // Keyed by name and length taken before the sync: a blob sled is still
            // writing is synced again once it has grown. One sled removed since the
            // listing (replaced) needs no sync.
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = (entry.file_name(), len);
            if !self.synced.contains(&name) {
                match std::fs::File::open(entry.path()) {
                    Ok(file) => file.sync_all()?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                fresh = true;
            }
            present.insert(name);
        }
        if fresh {
            std::fs::File::open(&self.blobs)?.sync_all()?;
        }
        self.synced = present;
        self.log.sync_data()
    }
}

/// The transaction's working copy of topic `t`, made from the group's (or the owner's).
fn work_for<'a>(
    work: &'a mut HashMap<u32, Pending>,
    g: &Group,
    topics: &HashMap<u32, TopicState>,
    t: u32,
) -> &'a mut Pending {
    work.entry(t).or_insert_with(|| {
        let counters = match g.pending.get(&t) {
            Some(p) => p.counters.clone(),
            None => topics
                .get(&t)
                .map(|s| s.counters.clone())
                .unwrap_or_default(),
        };
        Pending {
            new_first: counters.next,
            counters,
            new: Vec::new(),
        }
    })
}

fn work_for_group<'a>(g: &'a mut Group, topics: &HashMap<u32, TopicState>, t: u32) -> &'a Pending {
    work_for_group_mut(g, topics, t)
}

fn work_for_group_mut<'a>(
    g: &'a mut Group,
    topics: &HashMap<u32, TopicState>,
    t: u32,
) -> &'a mut Pending {
    g.pending.entry(t).or_insert_with(|| {
        let counters = topics
            .get(&t)
            .map(|s| s.counters.clone())
            .unwrap_or_default();
        Pending {
            new_first: counters.next,
            counters,
            new: Vec::new(),
        }
    })
}

/// A new store's incarnation: unique with overwhelming odds (the clock to the
/// nanosecond, the process, the path, hashed), never 0.
fn draw_incarnation(path: &Path) -> u64 {
    let mut hasher = blake3::Hasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(path.as_os_str().as_encoded_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first).max(1)
}

/// Which links' senders a group concerns.
enum Wake {
    None,
    /// Every peer's: an entry of a crossing topic for no one in particular, a topic's
    /// counters that changed without new entries, a new topic.
    All,
    /// Only these peers': entries addressed to them, and the core, which relays them.
    Only(BTreeSet<NodeName>),
}

impl Owner {
    /// Which senders a group concerns (its new entries by topic, `created`: it made a
    /// topic), by the entries' topics and destinations.
    fn senders_to_wake(&self, pending: &HashMap<u32, Pending>, created: bool) -> Wake {
        if created {
            return Wake::All;
        }
        let mut to = BTreeSet::new();
        for (t, p) in pending {
            let crosses = self
                .topics
                .get(t)
                .is_some_and(|s| s.config.scope != crate::entry::Scope::Local);
            if !crosses {
                continue;
            }
            if p.new.is_empty() {
                return Wake::All;
            }
            for e in &p.new {
                match e.to {
                    None => return Wake::All,
                    Some(id) => {
                        to.insert(id);
                    }
                }
            }
        }
        if to.is_empty() {
            return Wake::None;
        }
        let catalog = self
            .shared
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut names = BTreeSet::new();
        for id in to {
            match catalog.names.get(id as usize) {
                Some(name) => names.insert(name.clone()),
                // A name this group interns: no link to it can be up yet, but wake all
                // rather than reason about when the catalog learns it.
                None => return Wake::All,
            };
        }
        names.extend(
            self.peers
                .iter()
                .filter(|(_, p)| p.core)
                .map(|(n, _)| n.clone()),
        );
        Wake::Only(names)
    }
}

/// Cuts one topic's new entries into blocks of bounded size.
fn blocks(entries: &[StoredEntry]) -> impl Iterator<Item = &[StoredEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len()
            && n < BLOCK_ENTRIES
            && (n == 0 || bytes + rest[n].size() <= BLOCK_BYTES)
        {
            bytes += rest[n].size();
            n += 1;
        }
        let (block, tail) = rest.split_at(n);
        rest = tail;
        Some(block)
    })
}

fn check_doc_id(id: &str) -> Result<(), WriteError> {
    if id.is_empty() || id.len() > 256 {
        Err(WriteError::DocumentId(id.to_owned()))
    } else {
        Ok(())
    }
}

impl TopicView {
    fn new(id: u32, config: TopicConfig, state: StateRecord) -> Arc<TopicView> {
        let (tail, _) = watch::channel(Offset(state.next));
        Arc::new(TopicView {
            id,
            config: Mutex::new(config),
            published: Mutex::new(state),
            tail,
            recent: Mutex::default(),
            latest: Mutex::default(),
        })
    }

    /// Keeps a group's new entries (from offset `first`), in the blocks they were
    /// written as, for readers at the tail.
    fn remember(&self, mut first: u64, mut entries: Vec<StoredEntry>) {
        let sizes: Vec<usize> = blocks(&entries).map(<[StoredEntry]>::len).collect();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for n in sizes {
            let block: Arc<[StoredEntry]> = entries.drain(..n).collect();
            recent.keep(first, block);
            first += n as u64;
        }
    }

    fn publish(&self, state: StateRecord) {
        let next = Offset(state.next);
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.tail.send_replace(next);
    }
}

impl TopicRecord {
    fn new(id: u32, config: &TopicConfig) -> Self {
        let r = config.retention;
        TopicRecord {
            id,
            scope: config.scope,
            max_age_ms: r
                .max_age
                .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
            max_bytes: r.max_bytes,
            max_entries: r.max_entries,
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            max_age: self.max_age_ms.map(std::time::Duration::from_millis),
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
        }
    }
}

impl Counters {
    fn record(&self) -> StateRecord {
        StateRecord {
            first: self.first,
            next: self.next,
            bytes: self.bytes,
            vector: self.vector.iter().map(|(&o, &s)| (o, s)).collect(),
        }
    }
}

impl From<StateRecord> for Counters {
    fn from(s: StateRecord) -> Self {
        Counters {
            first: s.first,
            next: s.next,
            bytes: s.bytes,
            vector: s.vector.into_iter().collect(),
        }
    }
}
