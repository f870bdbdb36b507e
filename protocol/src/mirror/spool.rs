//! The edge's chunk spool: chunks received for a mirror, verified, content-addressed, and
//! a journal that says which ones are durable, so a restart neither re-hashes nor
//! re-fetches them.
//!
//! Layout under the spool directory:
//! - `chunks/<hash in hex>`: one verified chunk per file, never written again once held
//!   (an apply may hard-link it into a version as a file of one chunk; [`Spool::insert`]
//!   always creates a new inode, so such a version's file is never overwritten);
//! - `journal`: 36-byte records, each a chunk hash and 4 check bytes (the first bytes of
//!   the hash's own BLAKE3), appended in order.
//!
//! The durable write path of a chunk, in order:
//! 1. check its BLAKE3 against the name it was sent under (a mismatch never touches disk);
//! 2. write `chunks/<hex>`, without a sync (the page cache takes it at once, so the link
//!    is not kept waiting on the disk chunk by chunk);
//! 3. at [`Spool::sync`] (every [`SYNC_EVERY`] chunks, and when the transfer asks), for
//!    the batch written since the last one: fdatasync every chunk file (on a few threads
//!    at once, [`sync_files`]), then fsync `chunks/`, then append the batch's records to
//!    `journal` and fdatasync it.
//!
//! **Promise: the journal never names a chunk whose bytes and name are not durable**
//! (a record is appended only after its file and `chunks/` were synced). At
//! [`Spool::open`], a chunk is held without being read if the journal lists it and its
//! file exists. Files that the journal does not list (the last batch before a crash,
//! possibly torn or empty after a power loss) are hashed and kept if they match (synced
//! and journaled as step 3 says, as they may have been only in the page cache), removed
//! if not: at most one batch is read again. Any other name (a `.tmp` of an older
//! version's write path) is removed. A journal's torn last record is cut off.
//!
//! IO: reads and writes under the spool directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Hash;

/// Chunks written between two journal syncs, at most; also the most files
/// [`Spool::sync`] and an apply hold open to sync at once.
pub(crate) const SYNC_EVERY: usize = 256;

/// Threads that sync one batch of files ([`sync_files`]): concurrent syncs on one
/// filesystem share its journal commits (ext4's jbd2 batches them), where syncs one after
/// another each wait for one. Measured on this project's 2-core test machine (ext4 on a
/// virtual disk), 1,000 new files of 4 KiB: 0.29 s one after another, 0.22 s on 4
/// threads, 0.14 s on 16; the threads mostly wait on the disk, not on a core.
const SYNC_THREADS: usize = 8;

const RECORD: usize = 36;

/// Verified chunks on the edge's disk.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    held: HashSet<Hash>,
    journal: File,
    unsynced: Vec<Hash>,
}

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A chunk's bytes do not hash to the name it came under: fetch it again.
    #[error("chunk {expected} does not match its hash (got {found})")]
    HashMismatch {
        /// The name it was sent under.
        expected: Hash,
        /// The hash of the bytes.
        found: Hash,
    },
    /// The spool does not hold it.
    #[error("chunk {0} is not in the spool")]
    Missing(Hash),
    /// A file operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering as the module doc says.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let chunks = dir.join("chunks");
        fs::create_dir_all(&chunks).map_err(io_err("create", &chunks))?;
        let journal_path = dir.join("journal");
        let mut journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&journal_path)
            .map_err(io_err("open", &journal_path))?;
        let mut bytes = Vec::new();
        journal
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &journal_path))?;
        let mut journaled = HashSet::new();
        let mut good = 0;
        for record in bytes.chunks_exact(RECORD) {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&record[..32]);
            let hash = Hash::from_bytes(hash);
            if record[32..] != check_bytes(&hash) {
                break;
            }
            journaled.insert(hash);
            good += RECORD;
        }
        if good < bytes.len() {
            journal
                .set_len(good as u64)
                .map_err(io_err("truncate", &journal_path))?;
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            held: HashSet::new(),
            journal,
            unsynced: Vec::new(),
        };
        let listing = fs::read_dir(&chunks).map_err(io_err("list", &chunks))?;
        for item in listing {
            let item = item.map_err(io_err("list", &chunks))?;
            let name = item.file_name();
            let Some(hash) = name.to_str().and_then(Hash::from_hex) else {
                // A temp file of an interrupted write, or something that is not ours.
                let _ = fs::remove_file(item.path());
                continue;
            };
            if journaled.contains(&hash) {
                spool.held.insert(hash);
                continue;
            }
            let path = item.path();
            match fs::read(&path) {
                Ok(bytes) if Hash::of(&bytes) == hash => {
                    spool.held.insert(hash);
                    spool.unsynced.push(hash);
                }
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        spool.sync()?;
        Ok(spool)
    }

    /// Whether it holds `hash`.
    pub fn holds(&self, hash: &Hash) -> bool {
        self.held.contains(hash)
    }

    /// How many chunks it holds.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Verifies `bytes` against `hash` and stores them. Storing a held chunk again is a
    /// no-op.
    pub fn insert(&mut self, hash: &Hash, bytes: &[u8]) -> Result<(), SpoolError> {
        let found = Hash::of(bytes);
        if found != *hash {
            return Err(SpoolError::HashMismatch {
                expected: *hash,
                found,
            });
        }
        if self.held.contains(hash) {
            return Ok(());
        }
        let path = self.path(hash);
        // Not synced here: [`Spool::sync`] syncs the batch before journaling it. Always a
        // new inode: a name left from before may be hard-linked into a version.
        let create = || OpenOptions::new().write(true).create_new(true).open(&path);
        let created = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&path).and_then(|()| create())
            }
            other => other,
        };
        let written = created.and_then(|mut file| file.write_all(bytes));
        if let Err(e) = written {
            // Not held: a partial file must not linger until the next open.
            let _ = fs::remove_file(&path);
            return Err(io_err("write", &path)(e));
        }
        self.held.insert(*hash);
        self.unsynced.push(*hash);
        if self.unsynced.len() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes every chunk stored so far durable, then journals it (the module doc's step 3:
    /// files, then `chunks/`, then the journal).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let chunks = self.dir.join("chunks");
        // At most SYNC_EVERY files open at once (the batch found at open may be larger).
        for batch in self.unsynced.chunks(SYNC_EVERY) {
            let mut files = Vec::with_capacity(batch.len());
            for hash in batch {
                let path = self.path(hash);
                let file = File::open(&path).map_err(io_err("open", &path))?;
                files.push((path, file));
            }
            sync_files(&files, false).map_err(|(path, source)| SpoolError::Io {
                op: "sync",
                path,
                source,
            })?;
        }
        sync_dir(&chunks)?;
        let mut records = Vec::with_capacity(self.unsynced.len() * RECORD);
        for hash in &self.unsynced {
            records.extend_from_slice(hash.as_bytes());
            records.extend_from_slice(&check_bytes(hash));
        }
        let journal = self.dir.join("journal");
        self.journal
            .write_all(&records)
            .map_err(io_err("append to", &journal))?;
        self.journal.sync_data().map_err(io_err("sync", &journal))?;
        #[cfg(test)]
        for hash in &self.unsynced {
            trace::record(trace::Event::Journaled(self.path(hash)));
        }
        self.unsynced.clear();
        Ok(())
    }

    /// A chunk's bytes, checked against its hash again (the disk may have rotted).
    pub fn read(&self, hash: &Hash) -> Result<Vec<u8>, SpoolError> {
        if !self.held.contains(hash) {
            return Err(SpoolError::Missing(*hash));
        }
        let path = self.path(hash);
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let found = Hash::of(&bytes);
        if found != *hash {
            return Err(SpoolError::HashMismatch {
                expected: *hash,
                found,
            });
        }
        Ok(bytes)
    }

    /// Forgets a chunk (found bad on read) and removes its file.
    pub fn remove(&mut self, hash: &Hash) {
        self.held.remove(hash);
        self.unsynced.retain(|h| h != hash);
        let _ = fs::remove_file(self.path(hash));
    }

    /// Removes every chunk and the journal (after a version was applied).
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        let chunks = self.dir.join("chunks");
        // Journal first: a crash midway leaves files the next open checks, never
        // journal records for missing files that would be taken as held.
        let journal = self.dir.join("journal");
        self.journal
            .set_len(0)
            .map_err(io_err("truncate", &journal))?;
        self.journal.sync_data().map_err(io_err("sync", &journal))?;
        for hash in self.held.drain() {
            let path = chunks.join(hash.to_string());
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(SpoolError::Io {
                        op: "remove",
                        path,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        self.unsynced.clear();
        Ok(())
    }

    /// Where a chunk's file is (held or not). An apply may hard-link it into a new version
    /// (a file of one chunk): the spool never writes to a chunk's file once it is held.
    pub(super) fn path(&self, hash: &Hash) -> PathBuf {
        self.dir.join("chunks").join(hash.to_string())
    }
}

fn check_bytes(hash: &Hash) -> [u8; 4] {
    let h = Hash::of(hash.as_bytes());
    let b = h.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// Fsyncs a directory, so that the renames and creations in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))?;
    #[cfg(test)]
    trace::record(trace::Event::Synced(dir.to_path_buf()));
    Ok(())
}

/// Syncs every file of `files`: fsync (`all`: data and metadata such as mode and mtime)
/// or fdatasync (data, and the size that reads need), on up to [`SYNC_THREADS`] threads
/// that take the files in turn. Returns when all are synced, or with the first failure
/// (the other threads stop at their next file). If no thread can be started, the files
/// are synced on this one.
pub(super) fn sync_files(files: &[(PathBuf, File)], all: bool) -> Result<(), (PathBuf, io::Error)> {
    let sync = |(path, file): &(PathBuf, File)| -> Result<(), (PathBuf, io::Error)> {
        let synced = if all {
            file.sync_all()
        } else {
            file.sync_data()
        };
        synced.map_err(|e| (path.clone(), e))?;
        #[cfg(test)]
        trace::record(trace::Event::Synced(path.clone()));
        Ok(())
    };
    let threads = SYNC_THREADS.min(files.len());
    if threads <= 1 {
        return files.iter().try_for_each(sync);
    }
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || -> Result<(), (PathBuf, io::Error)> {
        while !failed.load(Ordering::Relaxed) {
            let Some(item) = files.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(());
            };
            if let Err(e) = sync(item) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            match std::thread::Builder::new().spawn_scoped(scope, work) {
                Ok(worker) => workers.push(worker),
                // Out of threads: the ones started (or this one) do the rest.
                Err(_) => break,
            }
        }
        let mut result = if workers.is_empty() { work() } else { Ok(()) };
        for worker in workers {
            let done = worker.join().unwrap_or_else(|_| {
                Err((PathBuf::new(), io::Error::other("a sync thread panicked")))
            });
            if result.is_ok() {
                result = done;
            }
        }
        result
    })
}

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
}

/// What the syncs did, in order, for tests that check the crash-safety order: recorded
/// where each sync succeeded (in the thread that made it).
#[cfg(test)]
pub(crate) mod trace {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// One durable step.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Event {
        /// A file or directory was synced.
        Synced(PathBuf),
        /// The journal's record of this chunk file is durable.
        Journaled(PathBuf),
        /// `current` was swapped to this version directory, durably.
        Swapped(PathBuf),
    }

    static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

    pub(crate) fn record(event: Event) {
        EVENTS.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }

    /// The events on paths under `dir` (tests run in parallel, each in its directory).
    pub(crate) fn under(dir: &Path) -> Vec<Event> {
        let events = EVENTS.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|e| match e {
                Event::Synced(p) | Event::Journaled(p) | Event::Swapped(p) => p.starts_with(dir),
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::scan::tests::{Scratch, random};

    #[test]
    fn chunks_survive_a_reopen_without_being_read_again() {
        let dir = Scratch::new("spool");
        let chunks: Vec<Vec<u8>> = (0..10).map(|i| random(1000 + i, i as u64)).collect();
        let mut spool = Spool::open(&dir.0).unwrap();
        for c in &chunks[..6] {
            spool.insert(&Hash::of(c), c).unwrap();
        }
        spool.sync().unwrap();
        for c in &chunks[6..] {
            spool.insert(&Hash::of(c), c).unwrap();
        }
        // A bad chunk never lands.
        let err = spool.insert(&Hash::of(b"other"), &chunks[0]).unwrap_err();
        assert!(matches!(err, SpoolError::HashMismatch { .. }));
        drop(spool); // "crash": the last four are not journaled

        // Corrupt one journaled chunk on disk: it is still held (not re-read at open) but
        // reading it finds the damage.
        let victim = Hash::of(&chunks[0]);
        fs::write(dir.0.join("chunks").join(victim.to_string()), b"rot").unwrap();
        // Corrupt an unjournaled one: open re-hashes those and drops it.
        let unjournaled = Hash::of(&chunks[9]);
        fs::write(dir.0.join("chunks").join(unjournaled.to_string()), b"torn").unwrap();
        fs::write(dir.0.join("chunks").join("junk.tmp"), b"half").unwrap();
        // A torn journal record at the end.
        let mut j = OpenOptions::new()
            .append(true)
            .open(dir.0.join("journal"))
            .unwrap();
        j.write_all(&[1, 2, 3]).unwrap();
        drop(j);

        let mut spool = Spool::open(&dir.0).unwrap();
        assert_eq!(spool.len(), 9);
        assert!(!spool.holds(&unjournaled));
        assert!(matches!(
            spool.read(&victim),
            Err(SpoolError::HashMismatch { .. })
        ));
        assert_eq!(spool.read(&Hash::of(&chunks[5])).unwrap(), chunks[5]);
        assert!(!dir.0.join("chunks").join("junk.tmp").exists());
        assert_eq!(fs::metadata(dir.0.join("journal")).unwrap().len(), 9 * 36);

        spool.clear().unwrap();
        assert!(spool.is_empty());
        assert_eq!(Spool::open(&dir.0).unwrap().len(), 0);
    }

    /// The module doc's promise, checked on the order of the syncs themselves: a journal
    /// record is durable only after its chunk file was synced and, after that, `chunks/`
    /// (for batches synced on request, when full, and found at open).
    #[test]
    fn the_journal_never_names_a_chunk_not_yet_durable() {
        let dir = Scratch::new("spool-order");
        let chunks: Vec<Vec<u8>> = (0..SYNC_EVERY + 40)
            .map(|i| random(100 + i, i as u64))
            .collect();
        let mut spool = Spool::open(&dir.0).unwrap();
        for c in &chunks[..SYNC_EVERY + 10] {
            spool.insert(&Hash::of(c), c).unwrap(); // one batch synced when full
        }
        spool.sync().unwrap(); // one on request
        for c in &chunks[SYNC_EVERY + 10..] {
            spool.insert(&Hash::of(c), c).unwrap();
        }
        drop(spool); // a "crash": the last 30 are found at open
        let spool = Spool::open(&dir.0).unwrap();
        assert_eq!(spool.len(), chunks.len());

        let events = trace::under(&dir.0);
        let chunks_dir = dir.0.join("chunks");
        let mut journaled = HashSet::new();
        for (k, event) in events.iter().enumerate() {
            let trace::Event::Journaled(path) = event else {
                continue;
            };
            let synced = events[..k]
                .iter()
                .rposition(|e| *e == trace::Event::Synced(path.clone()));
            let Some(i) = synced else {
                panic!("{} journaled before its file was synced", path.display());
            };
            assert!(
                events[i..k].contains(&trace::Event::Synced(chunks_dir.clone())),
                "{} journaled before chunks/ was synced after it",
                path.display()
            );
            journaled.insert(path.clone());
        }
        assert_eq!(journaled.len(), chunks.len());
    }
}
