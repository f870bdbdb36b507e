//! The edge's chunk spool: chunks received for a mirror, verified, content-addressed, and
//! a journal that says which ones are durable, so a restart neither re-hashes nor
//! re-fetches them.
//!
//! Layout under the spool directory:
//! - `chunks/<hash in hex>`: one verified chunk per file;
//! - `chunks/<hash in hex>.tmp`: a chunk being written (removed at open);
//! - `journal`: 36-byte records, each a chunk hash and 4 check bytes (the first bytes of
//!   the hash's own BLAKE3), appended in order.
//!
//! The durable write path of a chunk, in order:
//! 1. check its BLAKE3 against the name it was sent under (a mismatch never touches disk);
//! 2. write `<hex>.tmp`, fsync it, rename it to `<hex>`;
//! 3. at [`Spool::sync`] (every [`SYNC_EVERY`] chunks, and when the transfer asks): fsync
//!    `chunks/`, then append the batch's records to `journal` and fsync it.
//!
//! At [`Spool::open`], a chunk is held without being read if the journal lists it and its
//! file exists. Files that the journal does not list (the last batch before a crash) are
//! hashed and kept if they match, removed if not: at most one batch is read again. A
//! journal's torn last record is cut off.
//!
//! IO: reads and writes under the spool directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::Hash;

/// Chunks written between two journal syncs, at most.
pub(crate) const SYNC_EVERY: usize = 256;

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
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        self.held.insert(*hash);
        self.unsynced.push(*hash);
        if self.unsynced.len() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Makes every chunk stored so far durable and journaled.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let chunks = self.dir.join("chunks");
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

    fn path(&self, hash: &Hash) -> PathBuf {
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
        .map_err(io_err("sync", dir))
}

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
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
}
