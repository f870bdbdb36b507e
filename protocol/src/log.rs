//! The durable log store: topics of entries (in entry files of its own), version vectors, consumers and tables (on sled).
//!
//! Data flow:
//! - Writers ([`Store::append`], [`Store::commit`], topic and peer changes) send a request
//!   to the one **owner** thread through a bounded inbox, and wait for its reply.
//! - The owner drains what is waiting (up to `max_group` requests) into a **group**; while
//!   other writers are still on their way it waits for them, up to `commit_delay`. It
//!   applies each request to its in-memory state (a refused transaction is rolled back
//!   alone), appends the group's writes to the **write-ahead log** as one record and
//!   syncs it once, hands them to sled (the log record's LSN last), then **publishes** the new state and
//!   replies. This is group commit: concurrent writers share one record and one
//!   `fdatasync`.
//! - Readers ([`Store::read`] and friends) run on any thread, concurrently: a block's
//!   location from sled, its bytes from its entry file. sled is handed a group (and the
//!   files its blocks) only once it is durable in the log, and readers see only what is
//!   published, so never an entry that is not yet durable.
//! - Tailers wait on a per-topic watch channel that the owner updates on publish.
//!
//! The durable write path, in order:
//! 1. the group's entries of each topic become blocks (up to 64 KiB), each placed in the
//!    topic's current **entry file** (`entries/<topic>-<first offset>.ent`, a new one
//!    once it holds 4 MiB); the block's `BLOCK` key gets its location (file, position,
//!    length, checksum), its `TIME` index key its timestamps, and the topic's `STATE`
//!    its head, next offset, bytes and version vector;
//! 2. table documents, cursors, interned names and topic definitions join the same
//!    group's writes (absolute puts and removes);
//! 3. sled's writes and the blocks' bytes are encoded as one record (length, LSN,
//!    checksum, payload) and appended to the current segment of the write-ahead log
//!    (`wal/<first LSN>.wal`), then one `fdatasync` of that file: the group commit's
//!    only device sync. A segment file and its name are synced when it is begun, before
//!    any record in it counts;
//! 4. the blocks are written to their entry files (page cache, not synced), then the
//!    writes are handed to sled one by one and the record's LSN (`META_LSN`) last, in
//!    sled's memory: no flush, and no `apply_batch`, which makes sled 0.34 write its
//!    buffer out (`sync_file_range`) twice per group;
//! 5. only then: publish to readers, wake tailers, acknowledge the writers; retention's
//!    removals that emptied an entry file remove the file;
//! 6. at most every 5 s, and at close: the checkpoint (each topic's next offset) is
//!    replaced atomically beside sled's files;
//! 7. off the commit path: every 256 KiB written to entry files, the flusher thread
//!    syncs them (so that the device writes them in steps, not all at a fold, ahead of
//!    the log's syncs); once a segment holds a quarter of the next spare's size (what
//!    the last segment held, 64 KiB to 8 MiB), the flusher writes and syncs that spare
//!    segment of zeros; once the segment holds 8 MiB (or 30 s of writes) the owner
//!    begins a new one (renamed from the spare: a record's `fdatasync` then writes data
//!    only, no file growth) and the flusher syncs the entry files written since (and
//!    their directory, for new ones), flushes sled, `fsync`s new blob files and their
//!    directory, then `fdatasync`s sled's log (the syncs sled 0.34 leaves out), and only
//!    then removes the segments that the entry files and sled now hold. `close` does
//!    the same for all, and removes the spare.
//!
//! A failed write or sync **poisons** the store: every later write is refused with the
//! cause, and the node must restart (reopen) to go on. Nothing acknowledged is lost.
//!
//! On open, in order:
//! 1. the format version is checked (a version this build does not read is refused
//!    before anything is touched);
//! 2. recovery: every valid record of the log writes its blocks to their entry files
//!    again (those sled holds too: the files may have lost them, as they are synced
//!    only when the log's segments go), and the records past the LSN sled holds are
//!    applied to sled in LSN order (consecutive LSNs checked); zeros after the last
//!    record (a segment renamed from the spare) are the clean end; a torn tail (an
//!    invalid record that no later record proves durable: each record carries the LSN
//!    through which the log was durable when it was written) is a group never synced,
//!    so never acknowledged, and is cut with a warning naming the file, the offset and
//!    the bytes; an invalid record that a later one proves durable, a hole in the LSNs
//!    or an undecodable record is an `OpenError` naming the file and the offset. Then
//!    the entry files written, and sled, are synced and the log removed;
//! 3. a store of format 1 (no log) or 2 (blocks in sled) is converted: the format 3
//!    marker is durable in sled before the log holds any record, so an older build
//!    never opens a store whose log or blocks it would not read; blocks kept in sled
//!    are read where they are, until retention removes them;
//! 4. the store must belong to this node and hold at least what its checkpoint recorded;
//!    the catalog (topics, names, peers, counters) is loaded and the `_gaps` system topic
//!    created; entry files no block points at (after a cut tail, or removed by retention
//!    and written again by the replay) are removed, with a log line.
//!
//! A block read back is checked against its location's checksum: a damaged entry file
//! is a [`ReadError::Corrupt`] naming the file and the offset, never wrong entries.

mod checkpoint;
mod entries;
mod error;
mod format;
pub(crate) mod fuzzing;
mod owner;
mod space;
mod txn;
mod wal;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::codec;
use crate::entry::{Entry, EntryId, NodeName, Offset, Record, Seq, Timestamp};
use crate::entry::{TopicConfig, TopicName};
use format::{StoredEntry, block_key, doc_key, doc_prefix};
use owner::Request;

pub use crate::entry::VersionVector;
pub use error::{OpenError, ReadError, WriteError};
pub use space::default_budget;
pub use txn::{Appended, Committed, ConsumerName, TableName, Txn};

/// The system topic where gaps (entries lost to the disk budget) are recorded.
pub const GAPS_TOPIC: &str = "_gaps";

/// The free space a store keeps on its disk by default ([`StoreConfig::min_free`]).
pub const MIN_FREE: u64 = 256 << 20;

/// How a store behaves; `Default` suits a local demo.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The node that owns the store: the origin of its appends.
    pub node: NodeName,
    /// Largest entry (or table document) accepted, in bytes as [`Entry::size`] counts.
    pub max_entry_bytes: u64,
    /// Total entry bytes the node may hold. Past it, retention removes the oldest entries
    /// even if a peer still needs them, and records a gap. `None`: no budget.
    pub disk_budget: Option<u64>,
    /// Free space the disk under the store keeps: under it, entries are refused
    /// ([`WriteError::DiskFull`]) until space is freed. 0: no minimum.
    pub min_free: u64,
    /// sled's page cache, in bytes: more is faster reads, and more resident memory.
    pub cache_bytes: u64,
    /// Most requests one group commit takes: bounds the latency of one flush.
    pub max_group: usize,
    /// Requests that may wait for the owner; a full inbox makes writers wait.
    pub inbox: usize,
    /// Longest a flush waits for writers still on their way, so that one fsync serves
    /// more of them: more throughput under concurrency, at most this much latency. A
    /// lone writer never waits.
    pub commit_delay: Duration,
    /// Size at which the write-ahead log begins a new segment and sled is flushed in the
    /// background, after which the old segments go: more is fewer flushes, more disk
    /// for the log and a longer replay after a crash.
    pub wal_segment_bytes: u64,
}

impl StoreConfig {
    /// The defaults, for a node of this name.
    pub fn new(node: NodeName) -> Self {
        Self {
            node,
            max_entry_bytes: 1 << 20,
            disk_budget: None,
            min_free: MIN_FREE,
            cache_bytes: 32 << 20,
            max_group: 1024,
            inbox: 4096,
            commit_delay: Duration::from_micros(200),
            wal_segment_bytes: wal::SEGMENT_BYTES,
        }
    }
}

/// A topic as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its definition.
    pub config: TopicConfig,
    /// The oldest offset held.
    pub first: Offset,
    /// The offset the next entry gets.
    pub next: Offset,
    /// Entry bytes held.
    pub bytes: u64,
}

/// A peer this node replicates to, for retention: an entry it has not received is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's name.
    pub name: NodeName,
    /// Whether it is the core (it receives entries addressed to any node).
    pub core: bool,
    /// The topics it receives from this node.
    pub topics: Vec<TopicName>,
}

/// What a node holds that one peer has not acknowledged ([`Store::held_for`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Entries of the topics it receives from this node, past what it acknowledged
    /// (its own entries aside; some may be addressed to other nodes).
    pub entries: u64,
    /// Their bytes, estimated from each topic's mean entry size.
    pub bytes: u64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Entries removed.
    pub removed: u64,
    /// Gaps recorded (ranges a peer will never receive from this node).
    pub gaps: Vec<Gap>,
}

/// Entries lost before a peer received them: recorded in [`GAPS_TOPIC`] as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// The topic.
    pub topic: TopicName,
    /// The origin of the lost entries.
    pub origin: NodeName,
    /// First lost sequence.
    pub first: Seq,
    /// Last lost sequence.
    pub last: Seq,
    /// Why they were removed.
    pub reason: String,
    /// The peers that had not received them.
    pub peers: Vec<NodeName>,
}

/// A handle to an open store. Cheap to clone; the store closes when the last handle
/// drops (or at [`Store::close`]).
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<Request>,
}

/// What readers and the owner share. Only the owner changes the catalog and publishes.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    node: NodeName,
    /// The store directory's `lock` file, locked for as long as the store is open.
    _lock: std::fs::File,
    db: sled::Db,
    tree: sled::Tree,
    catalog: RwLock<Catalog>,
    /// Set by the first failed write or flush; every later write is refused with it.
    poisoned: Mutex<Option<String>>,
    /// Write requests sent and not yet answered: the owner's commit delay waits for
    /// them, up to `commit_delay`.
    writers: AtomicUsize,
    /// Counts published groups: one wake-up for "something changed in any topic".
    changes: watch::Sender<u64>,
    /// Counts published groups that may concern every peer's sender: entries of a
    /// topic that crosses links addressed to no one, a topic's counters, a new topic.
    sends: watch::Sender<u64>,
    /// Per peer, the wake-up of its sender for entries addressed to it (and, at an
    /// edge, to anyone: the core relays them): a core's thousand senders are not all
    /// woken for an answer to one edge. A watch: each of a link's send loops (one per
    /// priority class) sees it.
    directed: Mutex<HashMap<NodeName, watch::Sender<u64>>>,
    /// The store's incarnation, set once by the owner as it opens the store.
    incarnation: std::sync::atomic::AtomicU64,
    /// The disk's free space, against `min_free`.
    space: space::Space,
    /// The entry files' layer (`entries/`): the owner writes blocks there, readers read
    /// them.
    entries: Arc<dyn wal::WalFs>,
    /// Held by the owner while it hands a group's writes to sled (one by one), and by
    /// readers of documents, cursors and acknowledgements: they see a group whole.
    /// (Entry readers need not: they stop at the published next offset.)
    applying: RwLock<()>,
}

impl Shared {
    /// The entries of the block whose `BLOCK` value (of topic `topic`) is `value`, read
    /// from its entry file or in place; `Ok(None)`: its file is gone.
    fn block(&self, topic: u32, value: &[u8]) -> Result<Option<Vec<StoredEntry>>, String> {
        let Some(bytes) = entries::block_bytes(&*self.entries, topic, value)? else {
            return Ok(None);
        };
        codec::decode(&bytes, "entry block")
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a failed write or flush; returns the cause to report.
    fn poison(&self, err: &dyn std::fmt::Display) -> String {
        let cause = err.to_string();
        tracing::error!(path = %self.path.display(), %err, "store write failed; refusing writes until restart");
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(cause)
            .clone()
    }
}

#[derive(Debug, Default)]
struct Catalog {
    topics: HashMap<TopicName, Arc<TopicView>>,
    /// Interned node names, by id.
    names: Vec<NodeName>,
}

/// A topic's published state: what readers may see.
#[derive(Debug)]
struct TopicView {
    id: u32,
    config: Mutex<TopicConfig>,
    published: Mutex<format::StateRecord>,
    tail: watch::Sender<Offset>,
    /// The newest blocks of a topic that crosses links, as the owner wrote them, so that
    /// readers at the tail (a core's thousand link senders after one broadcast) read
    /// them from memory: an entry is read from its file once at most, not once per
    /// reader.
    recent: Mutex<Recent>,
    /// Of a latest-value topic, once a sender asked ([`Store::superseded`]).
    latest: Mutex<Option<Latest>>,
}

/// Most keys (origin and key) a latest-value topic's index holds: past it, the topic is
/// no longer conflated. Each costs its key, its origin's name and an offset.
pub const LATEST_KEYS: usize = 65_536;

/// Most bytes of keys and origins' names a latest-value topic's index holds (keys may
/// be long): past it, the topic is no longer conflated.
pub const LATEST_KEY_BYTES: usize = 8 << 20;

/// Most entry bytes one read of a latest-value topic's index takes in.
pub const INDEX_READ_BYTES: u64 = 4 << 20;

/// A latest-value topic's index: the offset of the latest entry per origin and key.
#[derive(Debug, Default)]
struct Latest {
    by_key: HashMap<(NodeName, Vec<u8>), u64>,
    /// The bytes of the keys and origins' names in `by_key`.
    key_bytes: usize,
    /// Entries below this offset are indexed.
    indexed: u64,
    /// Too many keys: the index is dropped and nothing is superseded.
    overflowed: bool,
}

impl Latest {
    fn add(&mut self, origin: NodeName, key: Vec<u8>, offset: u64) {
        let bytes = origin.as_str().len() + key.len();
        if self.by_key.insert((origin, key), offset).is_none() {
            self.key_bytes += bytes;
        }
    }
}

/// What wakes one link's sender ([`Store::sender_wakes`]).
#[derive(Debug)]
pub struct SenderWakes {
    all: watch::Receiver<u64>,
    mine: watch::Receiver<u64>,
}

impl SenderWakes {
    /// Marks everything published so far as seen: [`SenderWakes::changed`] waits for
    /// what comes after.
    pub fn seen(&mut self) {
        self.all.borrow_and_update();
        self.mine.borrow_and_update();
    }

    /// Waits for new entries the peer may need; `Err` when the store is closed.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        tokio::select! {
            r = self.all.changed() => r,
            r = self.mine.changed() => r,
        }
    }
}

/// A topic's newest blocks, contiguous, at most [`RECENT_BYTES`] of entries.
#[derive(Debug, Default)]
struct Recent {
    /// Each block: its first offset, its entries, their bytes.
    blocks: std::collections::VecDeque<(u64, Arc<[format::StoredEntry]>, u64)>,
    bytes: u64,
}

/// How many bytes of entries (by [`Entry::size`]) each topic that crosses links keeps
/// in [`Recent`]: a burst's worth of small entries, little on an edge's small box.
const RECENT_BYTES: u64 = 64 << 10;

impl Recent {
    /// Keeps `block` (entries from offset `first`), dropping the oldest past the bound.
    /// A block that does not follow the last one (there is none after a restart)
    /// starts the cache afresh; one larger than the bound empties it.
    fn keep(&mut self, first: u64, block: Arc<[format::StoredEntry]>) {
        let bytes: u64 = block.iter().map(format::StoredEntry::size).sum();
        let follows = self
            .blocks
            .back()
            .is_none_or(|(f, b, _)| f + b.len() as u64 == first);
        if !follows || bytes > RECENT_BYTES {
            self.blocks.clear();
            self.bytes = 0;
            if bytes > RECENT_BYTES {
                return;
            }
        }
        self.blocks.push_back((first, block, bytes));
        self.bytes += bytes;
        while self.bytes > RECENT_BYTES {
            let Some((_, _, old)) = self.blocks.pop_front() else {
                break;
            };
            self.bytes -= old;
        }
    }

    /// The blocks holding offset `start` and after, if the cache reaches back to it.
    fn from(&self, start: u64) -> Option<Vec<(u64, Arc<[format::StoredEntry]>)>> {
        let (first, _, _) = self.blocks.front()?;
        if start < *first {
            return None;
        }
        Some(
            self.blocks
                .iter()
                .filter(|(f, b, _)| f + b.len() as u64 > start)
                .map(|(f, b, _)| (*f, b.clone()))
                .collect(),
        )
    }
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, OpenError> {
        Store::open_on(path, config, None, None)
    }

    /// [`Store::open`] with the write-ahead log's files behind `fs`, and the entry files
    /// behind `entries` (`None`: the store's `wal` and `entries` directories); tests put
    /// a simulated power cut there.
    fn open_on(
        path: impl AsRef<Path>,
        config: StoreConfig,
        fs: Option<Arc<dyn wal::WalFs>>,
        entries: Option<Arc<dyn wal::WalFs>>,
    ) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let io_error = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&path).map_err(io_error)?;
        let lock = lock_dir(&path)?;
        let entries: Arc<dyn wal::WalFs> = match entries {
            Some(entries) => entries,
            // Made by the owner once the store's format is known to be one it reads.
            None => Arc::new(wal::DiskFs::at(&path.join(entries::DIR))),
        };
        let db = open_sled(&path, config.cache_bytes)?;
        let tree = db
            .open_tree("tether")
            .map_err(|e| sled_open_error(&path, e))?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            node: config.node.clone(),
            _lock: lock,
            db,
            tree,
            catalog: RwLock::new(Catalog::default()),
            poisoned: Mutex::new(None),
            writers: AtomicUsize::new(0),
            changes: watch::Sender::new(0),
            sends: watch::Sender::new(0),
            directed: Mutex::default(),
            incarnation: std::sync::atomic::AtomicU64::new(0),
            space: space::Space::new(path.clone(), config.min_free),
            entries,
            applying: RwLock::new(()),
        });
        let inbox = owner::start(shared.clone(), config, fs)?;
        Ok(Store { shared, inbox })
    }

    /// The node that owns this store.
    pub fn node(&self) -> &NodeName {
        &self.shared.node
    }

    /// The store's incarnation: a number drawn when the store was made, which tells this
    /// store's entries from those of another store under the same node name (a new
    /// device, a wiped data directory). Peers learn it in the hello.
    pub fn incarnation(&self) -> u64 {
        self.shared
            .incarnation
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Creates a topic, or updates the retention of an existing one. Its scope never
    /// changes: asking for another scope is an error.
    pub async fn create_topic(&self, config: TopicConfig) -> Result<(), WriteError> {
        self.request(|reply| Request::CreateTopic { config, reply })
            .await
    }

    /// Appends one entry of this node's origin; returns once it is durable.
    pub async fn append(
        &self,
        topic: &TopicName,
        append: crate::entry::Append,
    ) -> Result<Appended, WriteError> {
        let mut txn = Txn::new();
        txn.append(topic, append);
        let mut done = self.commit(txn).await?;
        done.appended.pop().ok_or(WriteError::Closed)
    }

    /// Commits a transaction; returns once all of it is durable, or an error and nothing.
    pub async fn commit(&self, txn: Txn) -> Result<Committed, WriteError> {
        self.request(|reply| Request::Commit { txn, reply }).await
    }

    /// Records (or replaces) a peer and the topics it receives from this node. A peer
    /// that was forgotten ([`Store::forget_peer`]) returns: what retention removed
    /// meanwhile that it lacked is recorded as gaps.
    pub async fn set_peer(&self, peer: PeerConfig) -> Result<(), WriteError> {
        self.request(|reply| Request::SetPeer { peer, reply }).await
    }

    /// Records that `peer` durably holds `vector` of `topic`: retention may now remove
    /// what it covers.
    pub async fn peer_acked(
        &self,
        peer: &NodeName,
        topic: &TopicName,
        vector: VersionVector,
    ) -> Result<(), WriteError> {
        let (peer, topic) = (peer.clone(), topic.clone());
        self.request(|reply| Request::PeerAcked {
            peer,
            topic,
            vector,
            reply,
        })
        .await
    }

    /// Stops keeping entries for `peer` (an operator forgot it): retention no longer
    /// waits for it. What retention then removes that the peer lacked is noted, and if
    /// the peer returns ([`Store::set_peer`]) it is recorded as gaps in [`GAPS_TOPIC`].
    /// Returns whether `peer` was a peer here.
    pub async fn forget_peer(&self, peer: &NodeName) -> Result<bool, WriteError> {
        let peer = peer.clone();
        self.request(|reply| Request::ForgetPeer { peer, reply })
            .await
    }

    /// Applies retention now. The node calls this on a timer; tests call it directly.
    pub async fn enforce_retention(&self) -> Result<RetentionReport, WriteError> {
        self.request(|reply| Request::Retain { reply }).await
    }

    /// Finishes the writes already queued, flushes, and stops the owner. Later writes
    /// fail with [`WriteError::Closed`]; reads go on working.
    pub async fn close(&self) -> Result<(), WriteError> {
        self.request(|reply| Request::Close { reply }).await
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, WriteError>>) -> Request,
    ) -> Result<T, WriteError> {
        let (reply, rx) = oneshot::channel();
        let _writing = Writing::start(&self.shared.writers);
        self.inbox
            .send(make(reply))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let views: Vec<_> = self.catalog().topics.values().cloned().collect();
        let mut infos: Vec<_> = views.iter().map(|v| v.info()).collect();
        infos.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        infos
    }

    /// One topic, if it exists.
    pub fn topic(&self, name: &TopicName) -> Option<TopicInfo> {
        self.view(name).ok().map(|v| v.info())
    }

    /// For records of `topic` as read: whether each is superseded, a later entry of the
    /// same origin and key being in the topic (entries without a key, or addressed to
    /// one node, never are, nor supersede). This is what a latest-value topic's senders
    /// pass over. The topic's index of the latest entry per origin and key is built on
    /// the first call and kept up to date by each call (reading the entries appended
    /// since, in reads of at most [`INDEX_READ_BYTES`], the index's lock let go between
    /// them), once for all readers. Past [`LATEST_KEYS`] keys, or [`LATEST_KEY_BYTES`] of
    /// them, the topic is no longer conflated (every record reads as not superseded),
    /// with a warning.
    pub fn superseded(
        &self,
        topic: &TopicName,
        records: &[Record],
    ) -> Result<Vec<bool>, ReadError> {
        let view = self.view(topic)?;
        let lock = || view.latest.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let info = view.info();
            let from = {
                let mut guard = lock();
                let latest = guard.get_or_insert_with(Latest::default);
                latest.indexed = latest.indexed.max(info.first.0);
                if latest.overflowed || latest.indexed >= info.next.0 {
                    break;
                }
                latest.indexed
            };
            let read = self.read_within(topic, Offset(from), 4096, INDEX_READ_BYTES)?;
            let Some(last) = read.last().map(|r| r.offset.0) else {
                break;
            };
            let mut guard = lock();
            let latest = guard.get_or_insert_with(Latest::default);
            if latest.indexed != from {
                continue; // another reader indexed these meanwhile
            }
            latest.indexed = last + 1;
            for r in read {
                if let (None, Some(key)) = (&r.entry.to, r.entry.key) {
                    latest.add(r.entry.id.origin, key, r.offset.0);
                }
            }
            if latest.by_key.len() > LATEST_KEYS || latest.key_bytes > LATEST_KEY_BYTES {
                latest.overflowed = true;
                latest.by_key = HashMap::new();
                tracing::warn!(%topic, keys = LATEST_KEYS, key_bytes = LATEST_KEY_BYTES, "a latest-value topic holds more keys than its index keeps: it is no longer conflated (every entry crosses)");
            }
        }
        let guard = lock();
        let by_key = guard.as_ref().map(|l| &l.by_key);
        Ok(records
            .iter()
            .map(|r| match (&r.entry.to, &r.entry.key, by_key) {
                (None, Some(key), Some(by_key)) => by_key
                    .get(&(r.entry.id.origin.clone(), key.clone()))
                    .is_some_and(|&at| at > r.offset.0),
                _ => false,
            })
            .collect())
    }

    /// Up to `max` records from offset `from` on, in offset order. Offsets below the
    /// topic's head (removed by retention) are skipped.
    pub fn read(
        &self,
        topic: &TopicName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Record>, ReadError> {
        self.read_within(topic, from, max, u64::MAX)
    }

    /// Like [`Store::read`], and stops once the records hold `max_bytes` (by
    /// [`Entry::size`]); the first record comes whatever its size. For readers from
    /// outside, whose answers must stay bounded in memory.
    pub fn read_within(
        &self,
        topic: &TopicName,
        from: Offset,
        max: usize,
        max_bytes: u64,
    ) -> Result<Vec<Record>, ReadError> {
        let mut bytes = 0u64;
        let view = self.view(topic)?;
        let (first, next) = view.window();
        let start = from.0.max(first);
        let mut out = Vec::new();
        if start >= next || max == 0 {
            return Ok(out);
        }
        let recent = view
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .from(start);
        if let Some(blocks) = recent {
            for (block_first, block) in blocks {
                for (offset, e) in (block_first..).zip(block.iter()) {
                    if offset >= start && offset < next {
                        let record = self.record(Offset(offset), e.clone())?;
                        bytes = bytes.saturating_add(record.entry.size());
                        out.push(record);
                        if out.len() == max || bytes >= max_bytes {
                            return Ok(out);
                        }
                    }
                }
            }
            return Ok(out);
        }
        // The block holding `start` is the last one that begins at or before it.
        let tree = &self.shared.tree;
        let lo = block_key(view.id, 0);
        let begin = match tree.range(lo..=block_key(view.id, start)).next_back() {
            Some(kv) => kv.map_err(|e| self.corrupt(e))?.0,
            None => block_key(view.id, start).as_slice().into(),
        };
        let end: sled::IVec = block_key(view.id + 1, 0).as_slice().into();
        for kv in tree.range(begin..end) {
            let (key, value) = kv.map_err(|e| self.corrupt(e))?;
            let block_first =
                format::block_first(&key).ok_or_else(|| self.corrupt("bad block key"))?;
            if block_first >= next {
                break;
            }
            let Some(block) = self.block(view.id, &value, block_first)? else {
                continue; // its file went with retention since the key was read
            };
            for (offset, e) in (block_first..).zip(block) {
                if offset >= start && offset < next {
                    let record = self.record(Offset(offset), e)?;
                    bytes = bytes.saturating_add(record.entry.size());
                    out.push(record);
                    if out.len() == max || bytes >= max_bytes {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Up to `max` records at offset `at` or later whose origin timestamp lies in
    /// `[from, to)`, in offset order, stopping once they hold `max_bytes` (the first one
    /// comes whatever its size). Blocks wholly before `at` are not read, and the read
    /// stops at `max` or `max_bytes`, whatever the time range holds: its work is bounded
    /// by them and the blocks it skips.
    pub fn read_time(
        &self,
        topic: &TopicName,
        at: Offset,
        from: Timestamp,
        to: Timestamp,
        max: usize,
        max_bytes: u64,
    ) -> Result<Vec<Record>, ReadError> {
        let mut bytes = 0u64;
        let view = self.view(topic)?;
        let (first, next) = view.window();
        let first = first.max(at.0);
        // The time index is keyed by each block's newest timestamp: every block with an
        // entry at or after `from` is at or after (from, 0).
        let mut blocks = Vec::new();
        let range = format::time_key(view.id, from.0, 0)..format::time_key(view.id + 1, 0, 0);
        for kv in self.shared.tree.range(range) {
            let (key, value) = kv.map_err(|e| self.corrupt(e))?;
            let (_, block_first) =
                format::time_parts(&key).ok_or_else(|| self.corrupt("bad time key"))?;
            let min_ts = format::u64_value(&value).ok_or_else(|| self.corrupt("bad time value"))?;
            if min_ts < to.0 && block_first < next {
                blocks.push(block_first);
            }
        }
        blocks.sort_unstable();
        // A block ends where the next one starts: skip those that end at or before `at`.
        let starts = blocks.clone();
        let mut out = Vec::new();
        for (i, block_first) in blocks.into_iter().enumerate() {
            if starts.get(i + 1).is_some_and(|&end| end <= first) {
                continue;
            }
            let Some(value) = self
                .shared
                .tree
                .get(block_key(view.id, block_first))
                .map_err(|e| self.corrupt(e))?
            else {
                continue; // removed by retention since the index was read
            };
            let Some(block) = self.block(view.id, &value, block_first)? else {
                continue; // its file went with retention since the key was read
            };
            for (offset, e) in (block_first..).zip(block) {
                if offset >= first && offset < next && e.ts >= from.0 && e.ts < to.0 {
                    let record = self.record(Offset(offset), e)?;
                    bytes = bytes.saturating_add(record.entry.size());
                    out.push(record);
                    if out.len() == max || bytes >= max_bytes {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The topic's version vector, as durable.
    pub fn vector(&self, topic: &TopicName) -> Result<VersionVector, ReadError> {
        let view = self.view(topic)?;
        let ids = view.published().vector;
        let catalog = self.catalog();
        let mut vector = BTreeMap::new();
        for (id, seq) in ids {
            let name = catalog
                .names
                .get(id as usize)
                .ok_or_else(|| self.corrupt("unknown origin id"))?;
            vector.insert(name.clone(), Seq(seq));
        }
        Ok(VersionVector(vector))
    }

    /// A watch of the topic's next offset: it changes when new entries are durable.
    pub fn subscribe(&self, topic: &TopicName) -> Result<watch::Receiver<Offset>, ReadError> {
        Ok(self.view(topic)?.tail.subscribe())
    }

    /// A watch that changes whenever new writes of any topic become visible.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// What wakes the sender of a link to `peer`: new entries it may need. Entries
    /// addressed to other nodes do not (unless `peer` is the core, which relays them),
    /// nor do topics that never cross a link.
    pub fn sender_wakes(&self, peer: &NodeName) -> SenderWakes {
        let mine = self
            .shared
            .directed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        SenderWakes {
            all: self.shared.sends.subscribe(),
            mine,
        }
    }

    /// Waits until the topic holds an entry at `offset` (or later), without polling.
    pub async fn wait(&self, topic: &TopicName, offset: Offset) -> Result<(), ReadError> {
        let mut rx = self.subscribe(topic)?;
        // The sender lives in the catalog for the store's life, so `wait_for` only fails
        // once the store is gone; then there is nothing more to wait for.
        let _ = rx.wait_for(|next| *next > offset).await;
        Ok(())
    }

    /// A consumer's cursor: the first offset it has not processed (0 if new).
    pub fn cursor(&self, consumer: &ConsumerName, topic: &TopicName) -> Result<Offset, ReadError> {
        let view = self.view(topic)?;
        let _whole = self.whole();
        let key = format::cursor_key(consumer.as_str(), view.id);
        match self.shared.tree.get(key).map_err(|e| self.corrupt(e))? {
            Some(v) => format::u64_value(&v)
                .map(Offset)
                .ok_or_else(|| self.corrupt("bad cursor value")),
            None => Ok(Offset(0)),
        }
    }

    /// What `peer` has acknowledged holding of `topic` (see [`Store::peer_acked`]).
    pub fn peer_vector(
        &self,
        peer: &NodeName,
        topic: &TopicName,
    ) -> Result<VersionVector, ReadError> {
        let view = self.view(topic)?;
        let _whole = self.whole();
        let full = format::ack_key(peer.as_str(), view.id, 0);
        let prefix = &full[..full.len() - 4];
        let catalog = self.catalog();
        let mut vector = BTreeMap::new();
        for kv in self.shared.tree.scan_prefix(prefix) {
            let (key, value) = kv.map_err(|e| self.corrupt(e))?;
            let origin = key.get(prefix.len()..).and_then(format::u32_value);
            let seq = format::u64_value(&value);
            let (Some(origin), Some(seq)) = (origin, seq) else {
                return Err(self.corrupt(format!("acknowledgement of peer {peer}")));
            };
            let name = catalog
                .names
                .get(origin as usize)
                .ok_or_else(|| self.corrupt("unknown origin id"))?;
            vector.insert(name.clone(), Seq(seq));
        }
        Ok(VersionVector(vector))
    }

    /// What this node holds that `peer` has not acknowledged, over the topics it sends
    /// it; `None` when `peer` is not a peer here (never linked, or forgotten). Cheap: the
    /// acknowledgements and the topics' counters, no entry is read.
    pub fn held_for(&self, peer: &NodeName) -> Result<Option<Held>, ReadError> {
        let _whole = self.whole();
        let Some(record) = self
            .shared
            .tree
            .get(format::peer_key(peer.as_str()))
            .map_err(|e| self.corrupt(e))?
        else {
            return Ok(None);
        };
        let record: format::PeerRecord =
            codec::decode(&record, "peer record").map_err(|e| self.corrupt(e))?;
        let catalog = self.catalog();
        let own = catalog.names.iter().position(|n| n == peer);
        let mut held = Held::default();
        for view in catalog.topics.values() {
            if !record.topics.contains(&view.id) {
                continue;
            }
            let state = view.published();
            let full = format::ack_key(peer.as_str(), view.id, 0);
            let prefix = &full[..full.len() - 4];
            let mut acked = HashMap::new();
            for kv in self.shared.tree.scan_prefix(prefix) {
                let (key, value) = kv.map_err(|e| self.corrupt(e))?;
                let origin = key.get(prefix.len()..).and_then(format::u32_value);
                if let (Some(origin), Some(seq)) = (origin, format::u64_value(&value)) {
                    acked.insert(origin, seq);
                }
            }
            let count = state.next - state.first;
            let behind: u64 = state
                .vector
                .iter()
                .filter(|(origin, _)| Some(*origin as usize) != own)
                .map(|(origin, seq)| seq.saturating_sub(acked.get(origin).copied().unwrap_or(0)))
                .sum::<u64>()
                .min(count);
            held.entries += behind;
            if count > 0 {
                held.bytes += (u128::from(state.bytes) * u128::from(behind) / u128::from(count))
                    .try_into()
                    .unwrap_or(u64::MAX);
            }
        }
        Ok(Some(held))
    }

    /// A durable consumer of `topic`, starting at its committed cursor.
    pub fn consumer(&self, name: ConsumerName, topic: TopicName) -> Result<Consumer, ReadError> {
        let position = self.cursor(&name, &topic)?;
        Ok(Consumer {
            store: self.clone(),
            name,
            topic,
            position,
        })
    }

    /// A document of a table.
    pub fn doc(&self, table: &TableName, id: &str) -> Result<Option<serde_json::Value>, ReadError> {
        let key = doc_key(table.as_str(), id);
        let _whole = self.whole();
        let Some(bytes) = self.shared.tree.get(key).map_err(|e| self.corrupt(e))? else {
            return Ok(None);
        };
        let doc = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("document {table:?}/{id}: {e}")))?;
        Ok(Some(doc))
    }

    /// All documents of a table, by id.
    pub fn docs(&self, table: &TableName) -> Result<Vec<(String, serde_json::Value)>, ReadError> {
        let prefix = doc_prefix(table.as_str());
        let mut out = Vec::new();
        let _whole = self.whole();
        for kv in self.shared.tree.scan_prefix(&prefix) {
            let (key, value) = kv.map_err(|e| self.corrupt(e))?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let doc = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(format!("document {table:?}/{id}: {e}")))?;
            out.push((id, doc));
        }
        Ok(out)
    }

    /// Refuses with [`WriteError::DiskFull`] while the disk under the store has less
    /// free space than [`StoreConfig::min_free`] (appends would be refused now).
    pub fn check_space(&self) -> Result<(), WriteError> {
        self.shared.space.check(std::time::Instant::now())
    }

    /// Returns once the disk under the store has room for entries again (at once if it
    /// has); asks the disk once a second meanwhile. A link's receiver waits here instead
    /// of failing its session while the disk is full.
    pub async fn wait_for_space(&self) {
        while self.check_space().is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Bytes the store's files take on disk now: sled's count (garbage included) and the
    /// entry files.
    pub fn disk_bytes(&self) -> u64 {
        let sled = self.shared.db.size_on_disk().unwrap_or(0);
        let entries = std::fs::read_dir(self.shared.path.join(entries::DIR))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>();
        sled + entries
    }

    /// Holds off the owner's next group while sled's documents, cursors or
    /// acknowledgements are read, so that a group is seen whole or not at all.
    fn whole(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.shared
            .applying
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        // The owner never panics while holding the lock (it only inserts into maps), so a
        // poisoned lock still holds a consistent catalog.
        self.shared
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn view(&self, topic: &TopicName) -> Result<Arc<TopicView>, ReadError> {
        self.catalog()
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| ReadError::UnknownTopic(topic.clone()))
    }

    /// The entries of the block whose `BLOCK` value is `value`; `None` if retention
    /// removed it (and its file) since the key was read.
    fn block(
        &self,
        topic: u32,
        value: &[u8],
        block_first: u64,
    ) -> Result<Option<Vec<StoredEntry>>, ReadError> {
        match self.shared.block(topic, value) {
            Ok(Some(entries)) => Ok(Some(entries)),
            // Its file is gone: retention moved the head past it (files go only once
            // the head is past their last block, and after it is published), or the
            // store is damaged.
            Ok(None) => {
                let (head, next) = self
                    .catalog()
                    .topics
                    .values()
                    .find(|v| v.id == topic)
                    .map_or((0, 0), |v| v.window());
                // The block ends where the next one begins (the last one, at `next`).
                let after = format::block_key(topic, block_first.saturating_add(1));
                let prefix = &after[..5];
                let end = match self.shared.tree.range(after..).next() {
                    Some(Ok((k, _))) if k.starts_with(prefix) => format::block_first(&k),
                    _ => Some(next),
                };
                if end.is_some_and(|end| head >= end && end > block_first) {
                    Ok(None)
                } else {
                    Err(self.corrupt(format!(
                        "the entry file of topic {topic}'s block at offset {block_first} is missing"
                    )))
                }
            }
            Err(e) => Err(self.corrupt(e)),
        }
    }

    fn record(&self, offset: Offset, e: StoredEntry) -> Result<Record, ReadError> {
        let catalog = self.catalog();
        let name = |id: u32| {
            catalog
                .names
                .get(id as usize)
                .cloned()
                .ok_or_else(|| self.corrupt(format!("unknown node id {id}")))
        };
        let entry = Entry {
            id: EntryId {
                origin: name(e.origin)?,
                seq: Seq(e.seq),
            },
            timestamp: Timestamp(e.ts),
            key: e.key,
            to: e.to.map(name).transpose()?,
            headers: e.headers,
            payload: e.payload,
        };
        Ok(Record { offset, entry })
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> ReadError {
        ReadError::Corrupt {
            path: self.shared.path.clone(),
            detail: detail.to_string(),
        }
    }
}

/// Counts a write request in flight, until its reply arrives or its future is dropped.
struct Writing<'a>(&'a AtomicUsize);

impl<'a> Writing<'a> {
    fn start(writers: &'a AtomicUsize) -> Self {
        writers.fetch_add(1, Ordering::Relaxed);
        Writing(writers)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TopicView {
    fn published(&self) -> format::StateRecord {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `(first, next)`: the offsets readers may see.
    fn window(&self) -> (u64, u64) {
        let p = self.published.lock().unwrap_or_else(|p| p.into_inner());
        (p.first, p.next)
    }

    fn info(&self) -> TopicInfo {
        let config = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let p = self.published();
        TopicInfo {
            config,
            first: Offset(p.first),
            next: Offset(p.next),
            bytes: p.bytes,
        }
    }
}

/// A durable, named cursor over one topic.
///
/// Read with [`Consumer::poll`], do the work, then [`Consumer::commit`] the results and
/// the new position in one transaction: a crash in between repeats nothing and skips
/// nothing.
#[derive(Debug)]
pub struct Consumer {
    store: Store,
    name: ConsumerName,
    topic: TopicName,
    position: Offset,
}

impl Consumer {
    /// The first offset not yet committed.
    pub fn position(&self) -> Offset {
        self.position
    }

    /// Waits until there is at least one entry at the position, then returns up to `max`.
    pub async fn poll(&mut self, max: usize) -> Result<Vec<Record>, ReadError> {
        loop {
            self.store.wait(&self.topic, self.position).await?;
            let records = self.store.read(&self.topic, self.position, max)?;
            if !records.is_empty() {
                return Ok(records);
            }
            // Retention moved the head past the position: go on from the head.
            if let Some(info) = self.store.topic(&self.topic) {
                self.position = self.position.max(info.first);
            }
        }
    }

    /// Commits `txn` together with the cursor moved to `next`.
    pub async fn commit(&mut self, mut txn: Txn, next: Offset) -> Result<Committed, WriteError> {
        txn.cursor(&self.name, &self.topic, next);
        let done = self.store.commit(txn).await?;
        self.position = next;
        Ok(done)
    }
}

/// Locks the store directory for this process, so that nothing below touches files a
/// running node is using.
fn lock_dir(path: &Path) -> Result<std::fs::File, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join("lock"))
        .map_err(io)?;
    // A holder that is letting go (a process exiting, a handle in this one whose owner
    // thread is still closing the store) gets a moment; one that keeps it is an error.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
    }
}

/// How long opening a store waits for another holder of its lock to let go.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, OpenError> {
    remove_unfinished_snapshots(&path.join("sled")).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config = sled_config(path, cache_bytes);
    // sled may panic on some damaged files instead of returning an error; a damaged store
    // must give an error that names the path, so the panic is caught and reported.
    match std::panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(sled_open_error(path, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("sled panicked");
            Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                detail: what.to_owned(),
            })
        }
    }
}

/// Removes the snapshots sled was writing when its process died. sled writes a snapshot
/// to `snap.<lsn>.generating`, syncs it and renames it to `snap.<lsn>`, the rename being
/// the commit; but 0.34 reads the `.generating` name at open as well, so a kill during
/// the write left a store that sled refused as corrupt. The finished snapshot before it
/// is still there (sled removes old ones only after the rename), and sled replays its
/// log from that one.
fn remove_unfinished_snapshots(sled_dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(sled_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing a snapshot the store's last process did not finish");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// sled's settings for a store in `path`; the segment size is part of the format.
fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path.join("sled"))
        .cache_capacity(cache_bytes)
        .segment_size(format::SLED_SEGMENT)
        .flush_every_ms(None)
}

fn sled_open_error(path: &Path, e: sled::Error) -> OpenError {
    let path = path.to_path_buf();
    match e {
        sled::Error::Io(source) if source.kind() == std::io::ErrorKind::WouldBlock => {
            OpenError::Locked { path }
        }
        sled::Error::Io(source) if source.to_string().contains("lock") => {
            OpenError::Locked { path }
        }
        sled::Error::Io(source) => OpenError::Io { path, source },
        other => OpenError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}
