//! The core's side of a volume: a manifest kept current by watching, and chunks served by
//! hash.
//!
//! - [`SourceVolume::open`] starts a notify watcher on the volume (recursive inotify on
//!   Linux, notify's recommended watcher) **before** the first full scan, so a change
//!   during that scan is not lost. The watcher's callback only records which paths changed
//!   (a bounded set; past [`MAX_DIRTY`] paths, or when the kernel queue overflowed, it asks
//!   for one full rescan instead). No debouncer: nothing is done per event, the paths are
//!   looked at only when a manifest is asked for (when an edge presses "Mirror"), which
//!   coalesces any burst of events for free, without a timer thread or another crate.
//! - [`SourceVolume::manifest`] re-stats and, where the stat moved, re-hashes only the
//!   recorded paths ([`super::Scanner::refresh`]). With no event since the last call it
//!   returns the same snapshot at once: no walk, no stat, whatever the volume's size.
//!   Without a watcher (inotify's watch limit reached) every call walks the volume with
//!   the stat cache: a stat per path, no read of unchanged files.
//! - **Files being written** (a write event not yet followed by a close-after-write) keep
//!   their previous description, wholly old, until the writer closes them (or is quiet for
//!   [`WRITING_TIMEOUT`]). Writers that write a temp file and rename it are seen only once
//!   complete anyway.
//! - **Serving.** Chunks are not copied into a store at the core: that would double the
//!   volume's disk use and write everything twice for a race that is rare in a mission
//!   volume (files are written once). [`SourceVolume::read_chunk`] reads a chunk back
//!   from the file at the offset a recent snapshot recorded and checks its hash; if the
//!   file changed since, the chunk is refused with [`ServeError::Changed`], the path is
//!   marked for rescan, and the edge re-plans against the next manifest (chunks it already
//!   holds still count). Limit: a file rewritten in place faster than it can be sent never
//!   completes; the edge bounds its re-plans and reports the path.
//! - **Versions** are `max(previous + 1, now in ms)`: they increase across core restarts
//!   without being stored, as long as the clock does not go back.
//!
//! IO: reads the volume; the watcher's thread (notify's) reads inotify events.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use super::RelPath;
use super::scan::{Problem, ScanStats, Scanner};
use super::{ChunkParams, Hash};
use super::{Entry, MANIFEST_FORMAT, Manifest, Node};

/// Changed paths recorded before the watcher gives up on them and asks for a full rescan.
pub(crate) const MAX_DIRTY: usize = 100_000;

/// A file with a write event and no close for this long is taken as written.
pub(crate) const WRITING_TIMEOUT: Duration = Duration::from_secs(600);

/// Snapshots kept after a newer one: an edge may be planning against one of them (for a
/// delta, or chunks still to serve).
const KEEP_SNAPSHOTS: usize = 4;

/// The volume at the core.
#[derive(Debug)]
pub struct SourceVolume {
    scanner: Scanner,
    entries: BTreeMap<RelPath, Node>,
    shared: Arc<Shared>,
    watcher: Option<notify::RecommendedWatcher>,
    /// Newest first.
    snapshots: VecDeque<Arc<Snapshot>>,
    problems: Vec<Problem>,
    stats: ScanStats,
}

/// A manifest the core built, with where its chunks are.
#[derive(Debug)]
pub struct Snapshot {
    /// The manifest.
    pub manifest: Manifest,
    /// Its root.
    pub root: Hash,
    /// Each chunk's first place: path, offset, length.
    index: HashMap<Hash, (RelPath, u64, u32)>,
}

/// The core's volume cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The volume's directory cannot be read.
    #[error("cannot read the volume {path}: {source}")]
    Root {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The chunker's sizes are invalid.
    #[error("invalid chunker sizes: {0}")]
    Chunking(&'static str),
}

/// A chunk that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No recent snapshot has it.
    #[error("chunk {0} is in no recent manifest")]
    Unknown(Hash),
    /// The file changed since the manifest: the edge must re-plan.
    #[error("chunk {hash} of {path:?} changed since the manifest")]
    Changed {
        /// The chunk.
        hash: Hash,
        /// The file it was in.
        path: String,
    },
}

/// What the watcher callback records, under one mutex.
#[derive(Debug, Default)]
struct Dirty {
    paths: HashSet<RelPath>,
    /// Rescan everything (overflow, unknown path, watcher error).
    all: bool,
    /// Files with a write event and no close-after-write yet, with their last write.
    writing: HashMap<RelPath, Instant>,
    /// Events seen (to wake [`SourceVolume::wait_change`]).
    events: u64,
    /// Events already looked at by `manifest`.
    consumed: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    dirty: Mutex<Dirty>,
    changed: Condvar,
}

impl SourceVolume {
    /// Watches the volume at `root` and scans it once.
    pub fn open(
        root: impl Into<PathBuf>,
        params: ChunkParams,
    ) -> Result<SourceVolume, SourceError> {
        let mut volume = SourceVolume::unwatched(root, params)?;
        let shared = volume.shared.clone();
        let root = volume.scanner.root().to_path_buf();
        let handler = move |event: notify::Result<notify::Event>| shared.record(&root, event);
        match notify::recommended_watcher(handler) {
            Ok(mut watcher) => match watcher.watch(volume.scanner.root(), RecursiveMode::Recursive)
            {
                Ok(()) => volume.watcher = Some(watcher),
                Err(e) => volume.problems.push(Problem {
                    path: String::new(),
                    error: format!("cannot watch the volume, rescanning on each mirror: {e}"),
                }),
            },
            Err(e) => volume.problems.push(Problem {
                path: String::new(),
                error: format!("cannot start a watcher, rescanning on each mirror: {e}"),
            }),
        }
        volume.refresh(true)?;
        Ok(volume)
    }

    /// A volume without a watcher: each [`SourceVolume::manifest`] walks it with the stat
    /// cache. Nothing is scanned until then.
    pub fn unwatched(
        root: impl Into<PathBuf>,
        params: ChunkParams,
    ) -> Result<SourceVolume, SourceError> {
        params.check().map_err(SourceError::Chunking)?;
        Ok(SourceVolume {
            scanner: Scanner::new(root, params),
            entries: BTreeMap::new(),
            shared: Arc::default(),
            watcher: None,
            snapshots: VecDeque::new(),
            problems: Vec::new(),
            stats: ScanStats::default(),
        })
    }

    /// The volume's directory.
    pub fn root(&self) -> &Path {
        self.scanner.root()
    }

    /// Whether a watcher keeps the manifest current.
    pub fn watching(&self) -> bool {
        self.watcher.is_some()
    }

    /// The current manifest, brought up to date with what changed since the last call.
    pub fn manifest(&mut self) -> Result<Arc<Snapshot>, SourceError> {
        self.refresh(self.watcher.is_none())?;
        // `refresh` always leaves a snapshot.
        self.snapshots
            .front()
            .cloned()
            .ok_or_else(|| SourceError::Root {
                path: self.scanner.root().to_path_buf(),
                source: io::Error::other("no snapshot"),
            })
    }

    /// A recent snapshot by its root (an edge's base for a delta, or a pinned target).
    pub fn snapshot(&self, root: &Hash) -> Option<Arc<Snapshot>> {
        self.snapshots.iter().find(|s| s.root == *root).cloned()
    }

    /// Paths the last update skipped, and why.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// What the last update cost.
    pub fn last_stats(&self) -> ScanStats {
        self.stats
    }

    /// Waits until the watcher saw a change not yet in a manifest, or `timeout` passes;
    /// `true` if there is one.
    pub fn wait_change(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut dirty = self.shared.lock();
        while dirty.events == dirty.consumed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            dirty = match self.shared.changed.wait_timeout(dirty, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Reads a chunk back from its file and checks it, for sending.
    pub fn read_chunk(&self, hash: &Hash) -> Result<Vec<u8>, ServeError> {
        self.read_chunk_of(None, hash)
    }

    /// [`SourceVolume::read_chunk`], looking first in `pinned` (the manifest a mirror
    /// run is fetching, which newer snapshots may have pushed out of the recent ones).
    pub fn read_chunk_of(
        &self,
        pinned: Option<&Snapshot>,
        hash: &Hash,
    ) -> Result<Vec<u8>, ServeError> {
        let found = pinned
            .and_then(|s| s.index.get(hash))
            .or_else(|| self.snapshots.iter().find_map(|s| s.index.get(hash)));
        let Some((path, offset, len)) = found else {
            return Err(ServeError::Unknown(*hash));
        };
        match super::read_at(&path.under(self.scanner.root()), *offset, *len) {
            Ok(bytes) if Hash::of(&bytes) == *hash => Ok(bytes),
            // Changed, truncated, gone or unreadable: rescan it; the edge re-plans.
            _ => {
                self.shared.mark(path.clone());
                Err(ServeError::Changed {
                    hash: *hash,
                    path: path.to_string(),
                })
            }
        }
    }

    /// Brings the entries up to date and pushes a new snapshot if they changed.
    fn refresh(&mut self, full: bool) -> Result<(), SourceError> {
        let (paths, all, writing) = {
            let mut dirty = self.shared.lock();
            dirty.consumed = dirty.events;
            let now = Instant::now();
            dirty
                .writing
                .retain(|_, last| now.duration_since(*last) < WRITING_TIMEOUT);
            let all = std::mem::take(&mut dirty.all);
            if all {
                dirty.writing.clear();
            }
            if let Some(error) = dirty.error.take() {
                self.problems.push(Problem {
                    path: String::new(),
                    error: format!("watcher: {error}"),
                });
            }
            let writing: HashSet<RelPath> = dirty.writing.keys().cloned().collect();
            (std::mem::take(&mut dirty.paths), all, writing)
        };
        let first = self.snapshots.is_empty();
        if !(full || all || first) && paths.is_empty() {
            self.stats = ScanStats::default();
            return Ok(());
        }
        self.problems.clear();
        let before = self.entries.clone();
        if full || all || first {
            self.stats = self
                .scanner
                .scan(&mut self.entries, &mut self.problems)
                .map_err(|source| SourceError::Root {
                    path: self.scanner.root().to_path_buf(),
                    source,
                })?;
        } else {
            let mut stats = ScanStats::default();
            let mut paths: Vec<RelPath> = paths.into_iter().collect();
            paths.sort();
            let mut done: Option<RelPath> = None;
            for path in paths {
                // A refreshed directory covered what it holds.
                if done.as_ref().is_some_and(|d| path.starts_with(d)) {
                    continue;
                }
                self.scanner
                    .refresh(&path, &mut self.entries, &mut self.problems, &mut stats);
                done = Some(path);
            }
            self.scanner.forget_unused();
            self.stats = stats;
        }
        // Files being written stay as they were (or absent if they are new).
        for path in &writing {
            match before.get(path) {
                Some(node) => self.entries.insert(path.clone(), node.clone()),
                None => self.entries.remove(path),
            };
            self.problems.push(Problem {
                path: path.to_string(),
                error: "being written: previous state kept".into(),
            });
        }
        if !first && self.entries == before {
            return Ok(());
        }
        let previous = self.snapshots.front().map_or(0, |s| s.manifest.version);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            version: (previous + 1).max(now),
            created_ms: now,
            chunking: self.scanner.params(),
            entries: self
                .entries
                .iter()
                .map(|(path, node)| Entry {
                    path: path.clone(),
                    node: node.clone(),
                })
                .collect(),
        };
        self.snapshots.push_front(Arc::new(Snapshot::new(manifest)));
        self.snapshots.truncate(KEEP_SNAPSHOTS + 1);
        Ok(())
    }
}

impl Snapshot {
    fn new(manifest: Manifest) -> Snapshot {
        let mut index = HashMap::new();
        for (path, file) in manifest.files() {
            let mut offset = 0;
            for chunk in &file.chunks {
                index
                    .entry(chunk.hash)
                    .or_insert_with(|| (path.clone(), offset, chunk.len));
                offset += u64::from(chunk.len);
            }
        }
        Snapshot {
            root: manifest.root(),
            manifest,
            index,
        }
    }

    /// Where a chunk is: path, offset, length.
    pub fn locate(&self, hash: &Hash) -> Option<(&RelPath, u64, u32)> {
        self.index.get(hash).map(|(p, o, l)| (p, *o, *l))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Dirty> {
        // A panic while holding it cannot leave `Dirty` inconsistent (plain inserts).
        self.dirty
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn mark(&self, path: RelPath) {
        let mut dirty = self.lock();
        dirty.insert(path);
        dirty.events += 1;
        self.changed.notify_all();
    }

    /// The watcher's callback (notify's thread).
    fn record(&self, root: &Path, event: notify::Result<notify::Event>) {
        let mut dirty = self.lock();
        dirty.events += 1;
        match event {
            Err(e) => {
                dirty.all = true;
                dirty.error = Some(e.to_string());
            }
            Ok(event) => {
                // Opens and closes without writing are not changes (our own reads make
                // them).
                let writing = match event.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(false),
                    EventKind::Access(_) => {
                        dirty.events -= 1;
                        return;
                    }
                    EventKind::Create(CreateKind::File)
                    | EventKind::Modify(ModifyKind::Data(_)) => Some(true),
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => Some(false),
                    _ => None,
                };
                if event.need_rescan() {
                    dirty.all = true;
                }
                for path in &event.paths {
                    let rel = path
                        .strip_prefix(root)
                        .ok()
                        .and_then(|p| p.to_str())
                        .and_then(|p| RelPath::new(p).ok());
                    let Some(rel) = rel else {
                        // The root itself, or a name a manifest cannot hold.
                        dirty.all = true;
                        continue;
                    };
                    // inotify reports a new symlink (or hard link) as a created file,
                    // and no close-after-write ever follows: only a regular file with one
                    // link is being written.
                    let written = || {
                        std::fs::symlink_metadata(path).is_ok_and(|m| {
                            use std::os::unix::fs::MetadataExt as _;
                            m.file_type().is_file() && m.nlink() == 1
                        })
                    };
                    match writing {
                        Some(true)
                            if event.kind == EventKind::Create(CreateKind::File) && !written() => {}
                        Some(true) => {
                            dirty.writing.insert(rel.clone(), Instant::now());
                        }
                        Some(false) => {
                            dirty.writing.remove(&rel);
                        }
                        None => {}
                    }
                    dirty.insert(rel);
                }
            }
        }
        self.changed.notify_all();
    }
}

impl Dirty {
    fn insert(&mut self, path: RelPath) {
        if self.all {
            return;
        }
        self.paths.insert(path);
        if self.paths.len() > MAX_DIRTY || self.writing.len() > MAX_DIRTY {
            self.paths.clear();
            self.all = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::mirror::scan::tests::{Scratch, random, write_old};

    fn p(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    /// Calls `manifest` until `done` holds for it, waking on watcher events (10 s at most).
    fn until(volume: &mut SourceVolume, done: impl Fn(&Manifest) -> bool) -> Arc<Snapshot> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let snapshot = volume.manifest().unwrap();
            if done(&snapshot.manifest) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "no such manifest: {:?}",
                snapshot.manifest.entries
            );
            volume.wait_change(Duration::from_millis(200));
        }
    }

    #[test]
    fn no_change_costs_nothing_and_changes_are_watched() {
        let dir = Scratch::new("source");
        let root = &dir.0;
        for i in 0..2000 {
            write_old(
                root,
                &format!("d{:02}/f{i}", i % 40),
                &random(100 + i, i as u64),
            );
        }
        write_old(root, "big", &random(1 << 20, 7));
        let mut volume = SourceVolume::open(root, ChunkParams::default()).unwrap();
        assert!(volume.watching());
        let first = volume.manifest().unwrap();
        assert_eq!(first.manifest.files().count(), 2001);

        // Nothing changed: the same snapshot, not one stat.
        let again = volume.manifest().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(volume.last_stats(), ScanStats::default());

        // An edit in the big file: only it is read again.
        let mut big = random(1 << 20, 7);
        big[500_000] ^= 1;
        fs::write(root.join("big"), &big).unwrap();
        fs::remove_file(root.join("d00/f0")).unwrap();
        fs::rename(root.join("d01"), root.join("moved")).unwrap();
        let now = until(&mut volume, |m| {
            m.entry(&p("d00/f0")).is_none()
                && m.entry(&p("moved/f1")).is_some()
                && m.files()
                    .any(|(path, f)| path.as_str() == "big" && f.hash() == Hash::of(&big))
        });
        assert!(now.manifest.version > first.manifest.version);
        assert!(now.manifest.entry(&p("d01")).is_none());
        assert!(volume.problems().is_empty(), "{:?}", volume.problems());
    }

    #[test]
    fn chunks_are_served_verified_and_a_changed_file_is_refused() {
        let dir = Scratch::new("serve");
        let root = &dir.0;
        let content = random(500_000, 3);
        write_old(root, "f", &content);
        let mut volume = SourceVolume::unwatched(root, ChunkParams::default()).unwrap();
        let snapshot = volume.manifest().unwrap();
        let (_, file) = snapshot.manifest.files().next().unwrap();
        let mut offset = 0;
        for chunk in &file.chunks {
            let bytes = volume.read_chunk(&chunk.hash).unwrap();
            assert_eq!(bytes, content[offset..offset + chunk.len as usize]);
            offset += chunk.len as usize;
        }
        assert!(matches!(
            volume.read_chunk(&Hash::of(b"nope")),
            Err(ServeError::Unknown(_))
        ));

        // Rewritten in place, same size: the served chunk is checked and refused.
        fs::write(root.join("f"), random(500_000, 4)).unwrap();
        let err = volume.read_chunk(&file.chunks[0].hash).unwrap_err();
        assert!(
            err.to_string().contains("changed since the manifest"),
            "{err}"
        );
        let next = volume.manifest().unwrap();
        assert_ne!(next.root, snapshot.root);
        assert!(volume.snapshot(&snapshot.root).is_some());
    }

    #[test]
    fn a_file_being_written_keeps_its_previous_state() {
        let dir = Scratch::new("writing");
        let root = &dir.0;
        write_old(root, "f", b"old content");
        let mut volume = SourceVolume::open(root, ChunkParams::default()).unwrap();
        volume.manifest().unwrap();
        let old_hash = Hash::of(b"old content");

        // Open for writing, write half: no close yet.
        use std::io::Write;
        let mut writer = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(root.join("f"))
            .unwrap();
        writer.write_all(b"half").unwrap();
        writer.flush().unwrap();
        assert!(
            volume.wait_change(Duration::from_secs(10)),
            "no write event"
        );
        let during = volume.manifest().unwrap();
        let during = during.manifest.files().next().map(|(_, f)| f.hash());
        assert_eq!(during, Some(old_hash), "a half-written file was described");
        assert!(
            volume
                .problems()
                .iter()
                .any(|p| p.error.contains("being written"))
        );

        writer.write_all(b" and the rest").unwrap();
        drop(writer);
        let after = until(&mut volume, |m| {
            m.files()
                .next()
                .is_some_and(|(_, f)| f.hash() == Hash::of(b"half and the rest"))
        });
        assert_eq!(after.manifest.files().count(), 1);
    }
}
