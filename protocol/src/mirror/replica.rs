//! The edge's mirror of a volume: versions built aside and swapped in at once, the spool
//! of received chunks, and the mirror in progress.
//!
//! Layout under the mirror directory:
//! - `current` → `versions/v<N>`: a relative symlink. **Readers read through it**; it
//!   always names a complete, verified version (an empty `v0` before the first mirror).
//! - `versions/v<N>/`: one version's tree. Files are read-only (`a-w`) because versions
//!   share unchanged files as hard links; directories keep their mode plus `u+rwx` so the
//!   node can build and delete them. `versions/v<N>.manifest`: its manifest.
//! - `staging/`: versions being built; never visible, emptied at open.
//! - `spool/`: verified chunks of the mirror in progress ([`super::Spool`]).
//! - `target.manifest`: the manifest being mirrored, so a restart resumes it.
//!
//! Apply, in order (a kill at any point leaves `current` on the old or the new version,
//! each complete):
//! 1. build `staging/v<N+1>` in manifest order: directories; files unchanged in content,
//!    mode and mtime are hard-linked from `v<N>`; others are assembled from spool and local
//!    chunks, each chunk checked against its hash and the whole file against its hash,
//!    then mode and mtime, without a sync; symlinks. A file of one spooled chunk (the
//!    first such file of that chunk, readable by its owner) is the chunk's spool file,
//!    checked and hard-linked rather than copied: no second inode to allocate, no copy;
//!    its bytes are durable since the spool's sync (an apply syncs the spool first), and
//!    its new mode and mtime are synced as a written file's. Written files are kept open
//!    and fsynced in batches of [`SYNC_EVERY`] (on a few threads at once, [`sync_files`]):
//!    when a batch is full, and the last one once the tree is built;
//! 2. fsync every directory of the new tree, deepest first (every file in it is durable
//!    by then: written ones by step 1, hard-linked ones since their own version);
//! 3. write `versions/v<N+1>.manifest` (temp, fsync, rename);
//! 4. rename `staging/v<N+1>` to `versions/v<N+1>`, fsync `versions/`;
//! 5. **commit**: symlink `current.tmp` → `versions/v<N+1>`, rename it over `current`,
//!    fsync the mirror directory;
//! 6. delete versions older than `v<N>` (kept one round for readers that resolved
//!    `current` just before the swap), clear the spool, remove `target.manifest`.
//!
//! At open: `current.tmp` and `staging/` are removed, versions newer than `current` are
//! removed (built but not committed: rebuilt from the spool), and a target equal to the
//! current version (committed, not cleaned) is finished. An error at any step before 5,
//! a full disk included, removes the staging tree and leaves everything else as it was.
//! Files hard-linked from `v<N>` are not re-read: they were verified when first written
//! and are read-only. Known cost: a changed file is rewritten whole (no reflinks yet).
//!
//! IO: reads and writes under the mirror directory.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, FileTimes};
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::RelPath;
use super::spool::{SYNC_EVERY, Spool, SpoolError, sync_dir, sync_files};
use super::{ChunkParams, Hash};
use super::{FileNode, Limits, Manifest, ManifestError, Node};
use super::{Plan, Prefix, plan};

/// The edge's mirror of one volume.
#[derive(Debug)]
pub struct ReplicaVolume {
    dir: PathBuf,
    limits: Limits,
    spool: Spool,
    seq: u64,
    current: Manifest,
    target: Option<Manifest>,
    /// Chunks of the target still to receive.
    wanted: HashSet<Hash>,
    /// Those of them that begin with a chunk of the current version (the plan's).
    prefixes: HashMap<Hash, Prefix>,
    /// Chunks of the current version found damaged on disk: fetched, never reused.
    bad_local: HashSet<Hash>,
}

/// A point in [`ReplicaVolume::apply_with`], handed to its hook before the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyStep<'a> {
    /// About to write `bytes` into `path` of the new version.
    Write {
        /// The file.
        path: &'a RelPath,
        /// The bytes.
        bytes: u64,
    },
    /// The entry at this path is about to be placed.
    Entry(&'a RelPath),
    /// The tree is complete; about to sync its last written files, its directories, and
    /// write its manifest.
    Built,
    /// About to move the tree from staging into `versions/`.
    Publish,
    /// About to swap `current` (the commit).
    Swap,
    /// Committed; about to delete old versions and the spool.
    Clean,
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The new version's number at this edge (`versions/v<seq>`).
    pub seq: u64,
    /// Files hard-linked from the previous version.
    pub linked: u64,
    /// Files assembled from chunks.
    pub written: u64,
    /// Bytes written into assembled files.
    pub bytes: u64,
}

/// The mirror directory cannot be opened, or a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The target manifest breaks a rule; nothing was changed.
    #[error("manifest refused: {0}")]
    Manifest(#[from] ManifestError),
    /// One of the mirror's own files is damaged.
    #[error("mirror file {path} is damaged: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A file operation on the mirror (its spool, versions, `current` or target) failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// A received chunk was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// No mirror is in progress, or its plan does not need this chunk (a peer sending
    /// what was not asked for).
    #[error("chunk {0} was not asked for")]
    NotWanted(Hash),
    /// Its rest was received, but it has no prefix in the plan (a peer sending what was
    /// not asked for).
    #[error("chunk {0} has no prefix at this edge: only its whole bytes are taken")]
    NoPrefix(Hash),
    /// Its prefix, a chunk of the current version, cannot be read back intact: fetch the
    /// chunk whole.
    #[error("the start of chunk {hash}, chunk {prefix} of {path:?}, cannot be read back intact")]
    Prefix {
        /// The chunk being rebuilt.
        hash: Hash,
        /// Its prefix.
        prefix: Hash,
        /// The current version's file it was read from.
        path: String,
    },
    /// It does not match its hash (fetch it again), or the disk failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// An apply failed; `current` is as it was (unless the step was after the commit).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// No mirror is in progress.
    #[error("no target to apply")]
    NoTarget,
    /// Chunks are still missing.
    #[error("{chunks} chunks ({bytes} bytes) still to fetch")]
    Missing {
        /// How many.
        chunks: usize,
        /// Their bytes.
        bytes: u64,
    },
    /// A held chunk was found damaged on disk; the next plan fetches it.
    #[error("chunk {hash} for {path:?} is damaged on disk; it will be fetched again")]
    Chunk {
        /// The chunk.
        hash: Hash,
        /// The file being assembled.
        path: String,
    },
    /// An assembled file does not match its whole-content hash.
    #[error("file {path:?} does not match its hash")]
    FileHash {
        /// The file.
        path: String,
    },
    /// The disk is full (or over quota); the previous version is kept.
    #[error("disk full while writing {path}; the previous version is kept")]
    DiskFull {
        /// What was being written.
        path: PathBuf,
    },
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
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

impl ReplicaVolume {
    /// Opens (or creates) the mirror in `dir`, recovering from any interruption (see the
    /// module doc). `limits` applies to targets given to [`ReplicaVolume::begin`].
    pub fn open(dir: &Path, limits: Limits) -> Result<ReplicaVolume, ReplicaError> {
        let versions = dir.join("versions");
        let staging = dir.join("staging");
        for d in [dir, &versions, &staging] {
            fs::create_dir_all(d).map_err(spool_io("create", d))?;
        }
        remove_children(&staging).map_err(spool_io("empty", &staging))?;
        let tmp = dir.join("current.tmp");
        if fs::symlink_metadata(&tmp).is_ok() {
            fs::remove_file(&tmp).map_err(spool_io("remove", &tmp))?;
        }
        let link = dir.join("current");
        let (seq, current) = match fs::read_link(&link) {
            Ok(target) => {
                let seq = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("versions/v"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| ReplicaError::Damaged {
                        path: link.clone(),
                        why: format!("points at {}", target.display()),
                    })?;
                let path = manifest_path(dir, seq);
                let bytes = fs::read(&path).map_err(|e| ReplicaError::Damaged {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
                let manifest = Manifest::decode(&bytes, &stored_limits()).map_err(|e| {
                    ReplicaError::Damaged {
                        path,
                        why: e.to_string(),
                    }
                })?;
                (seq, manifest)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // First open: an empty version 0, so `current` always exists.
                let empty = Manifest::empty(ChunkParams::default());
                let v0 = version_dir(dir, 0);
                if !v0.exists() {
                    fs::create_dir(&v0).map_err(spool_io("create", &v0))?;
                }
                write_atomic(&manifest_path(dir, 0), &empty.encode())?;
                sync_dir(&versions)?;
                swap_current(dir, 0)?;
                (0, empty)
            }
            Err(e) => return Err(spool_io("read", &link)(e).into()),
        };
        let mut replica = ReplicaVolume {
            spool: Spool::open(&dir.join("spool"))?,
            dir: dir.to_path_buf(),
            limits,
            seq,
            current,
            target: None,
            wanted: HashSet::new(),
            prefixes: HashMap::new(),
            bad_local: HashSet::new(),
        };
        replica.remove_old_versions(replica.newest_below(seq))?;
        let target_path = dir.join("target.manifest");
        match fs::read(&target_path) {
            Ok(bytes) => {
                let target = Manifest::decode(&bytes, &stored_limits()).map_err(|e| {
                    ReplicaError::Damaged {
                        path: target_path.clone(),
                        why: e.to_string(),
                    }
                })?;
                if target.root() == replica.current.root() {
                    replica.finish()?;
                } else {
                    replica.target = Some(target);
                    replica.replan();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(spool_io("read", &target_path)(e).into()),
        }
        Ok(replica)
    }

    /// The directory readers use: `current`, a symlink to the current version.
    pub fn current_dir(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// The manifest of the current version.
    pub fn current(&self) -> &Manifest {
        &self.current
    }

    /// The manifest being mirrored, if any (kept across restarts).
    pub fn target(&self) -> Option<&Manifest> {
        self.target.as_ref()
    }

    /// Starts (or switches) a mirror to `target`, which is validated first: a refused
    /// manifest changes nothing. Chunks already spooled still count. Returns the plan.
    pub fn begin(&mut self, target: Manifest) -> Result<Plan, ReplicaError> {
        target.validate(&self.limits)?;
        write_atomic(&self.dir.join("target.manifest"), &target.encode())?;
        sync_dir(&self.dir)?;
        let plan = plan(&self.base(), &target, &|h| self.spool.holds(h));
        self.target = Some(target);
        self.replan();
        Ok(plan)
    }

    /// The plan of the mirror in progress: what is still to fetch (after a restart, what
    /// the spool does not hold), and what the apply will do.
    pub fn plan(&self) -> Option<Plan> {
        let target = self.target.as_ref()?;
        let base = self.base();
        Some(plan(&base, target, &|h| self.spool.holds(h)))
    }

    /// Chunks of the target still to receive.
    pub fn missing(&self) -> usize {
        self.wanted.len()
    }

    /// Takes a received chunk: checked against its hash, then spooled. A chunk received
    /// twice (a request repeated after a reconnect) is taken once.
    pub fn receive(&mut self, hash: &Hash, bytes: &[u8]) -> Result<(), ReceiveError> {
        if self.spool.holds(hash) {
            return Ok(());
        }
        if !self.wanted.contains(hash) {
            return Err(ReceiveError::NotWanted(*hash));
        }
        self.spool.insert(hash, bytes)?;
        self.wanted.remove(hash);
        Ok(())
    }

    /// Takes the `rest` of a chunk that begins with a chunk the edge holds (the plan's
    /// [`Prefix`], read back from the current version and checked): the chunk is rebuilt,
    /// checked against `hash` and spooled as by [`ReplicaVolume::receive`]. A mismatch
    /// (the prefix was not the chunk's start after all) or an unreadable prefix leaves
    /// the chunk wanted: the caller fetches it whole.
    pub fn receive_rest(&mut self, hash: &Hash, rest: &[u8]) -> Result<(), ReceiveError> {
        if self.spool.holds(hash) {
            return Ok(());
        }
        if !self.wanted.contains(hash) {
            return Err(ReceiveError::NotWanted(*hash));
        }
        let prefix = self
            .prefixes
            .get(hash)
            .ok_or(ReceiveError::NoPrefix(*hash))?;
        let from = prefix.path.under(&version_dir(&self.dir, self.seq));
        let mut bytes = match super::read_at(&from, prefix.offset, prefix.chunk.len) {
            Ok(bytes) if Hash::of(&bytes) == prefix.chunk.hash => bytes,
            _ => {
                return Err(ReceiveError::Prefix {
                    hash: *hash,
                    prefix: prefix.chunk.hash,
                    path: prefix.path.to_string(),
                });
            }
        };
        bytes.extend_from_slice(rest);
        self.spool.insert(hash, &bytes)?;
        self.wanted.remove(hash);
        Ok(())
    }

    /// Makes received chunks durable (the transfer calls it before acknowledging them).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.spool.sync()
    }

    /// Drops the mirror in progress and its spooled chunks; `current` is untouched.
    pub fn abandon(&mut self) -> Result<(), SpoolError> {
        self.finish()
    }

    /// Builds the target aside and swaps it in (see the module doc).
    pub fn apply(&mut self) -> Result<Applied, ApplyError> {
        self.apply_with(&mut |_| Ok(()))
    }

    /// [`ReplicaVolume::apply`], calling `hook` before each step; an error from the hook
    /// fails that step as an IO error would (tests inject a full disk or a crash there).
    pub fn apply_with(
        &mut self,
        hook: &mut dyn FnMut(ApplyStep<'_>) -> io::Result<()>,
    ) -> Result<Applied, ApplyError> {
        let target = self.target.clone().ok_or(ApplyError::NoTarget)?;
        if target.root() == self.current.root() {
            // Already in place (a stop after the commit, or a target equal to it).
            self.finish()?;
            return Ok(Applied {
                seq: self.seq,
                linked: 0,
                written: 0,
                bytes: 0,
            });
        }
        self.spool.sync()?;
        let base = self.base().into_owned();
        let todo = plan(&base, &target, &|h| self.spool.holds(h));
        if !todo.fetch.is_empty() {
            return Err(ApplyError::Missing {
                chunks: todo.fetch.len(),
                bytes: todo.fetch_bytes,
            });
        }
        let seq = self.seq + 1;
        let staged = self.dir.join("staging").join(format!("v{seq}"));
        let mut applied = Applied {
            seq,
            linked: 0,
            written: 0,
            bytes: 0,
        };
        let built = self.build(&target, &base, &staged, &mut applied, hook);
        if let Err(e) = built {
            let _ = remove_tree(&staged);
            // A damaged chunk is wanted again.
            self.replan();
            return Err(e);
        }
        self.commit(&target, seq, &staged, hook)?;
        Ok(applied)
    }

    /// Steps 1 to 4: the new version, complete and durable in `versions/`.
    fn build(
        &mut self,
        target: &Manifest,
        base: &Manifest,
        staged: &Path,
        applied: &mut Applied,
        hook: &mut dyn FnMut(ApplyStep<'_>) -> io::Result<()>,
    ) -> Result<(), ApplyError> {
        remove_tree(staged).map_err(apply_io("remove", staged))?;
        fs::create_dir(staged).map_err(apply_io("create", staged))?;
        let old = version_dir(&self.dir, self.seq);
        let mut local: HashMap<Hash, (&RelPath, u64)> = HashMap::new();
        let mut same: HashMap<&FileNode, &RelPath> = HashMap::new();
        for (path, file) in base.files() {
            let mut offset = 0;
            for chunk in &file.chunks {
                local.entry(chunk.hash).or_insert((path, offset));
                offset += u64::from(chunk.len);
            }
            same.entry(file).or_insert(path);
        }
        let mut dirs = vec![(staged.to_path_buf(), 0o755)];
        // Written files not yet synced, at most SYNC_EVERY (each holds a descriptor).
        let mut unsynced: Vec<(PathBuf, File)> = Vec::new();
        // Spooled chunks already linked as a file of this version (an inode has one mode
        // and mtime: a second file of the same bytes is copied).
        let mut linked_chunks: HashSet<Hash> = HashSet::new();
        for entry in &target.entries {
            step(hook, ApplyStep::Entry(&entry.path), staged)?;
            let abs = entry.path.under(staged);
            match &entry.node {
                Node::Dir { mode } => {
                    fs::create_dir(&abs).map_err(apply_io("create", &abs))?;
                    dirs.push((abs, *mode));
                }
                Node::Symlink { target } => {
                    symlink(target, &abs).map_err(apply_io("create symlink", &abs))?;
                }
                Node::File(file) => {
                    let linked = match same.get(file) {
                        Some(src) => fs::hard_link(src.under(&old), &abs).is_ok(),
                        None => false,
                    };
                    if linked {
                        applied.linked += 1;
                    } else {
                        let spooled = !linked_chunks.contains(&file.hash());
                        let link = if spooled {
                            self.link_chunk(&entry.path, file, &abs, hook)?
                        } else {
                            None
                        };
                        let out = match link {
                            Some(out) => {
                                linked_chunks.insert(file.hash());
                                out
                            }
                            None => self.assemble(&entry.path, file, &abs, &old, &local, hook)?,
                        };
                        applied.written += 1;
                        applied.bytes += file.size;
                        unsynced.push((abs, out));
                        if unsynced.len() >= SYNC_EVERY {
                            sync_written(&mut unsynced)?;
                        }
                    }
                }
            }
        }
        step(hook, ApplyStep::Built, staged)?;
        sync_written(&mut unsynced)?;
        for (dir, mode) in dirs.iter().rev() {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))
                .map_err(apply_io("set the mode of", dir))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(apply_io("sync", dir))?;
            #[cfg(test)]
            super::spool::trace::record(super::spool::trace::Event::Synced(dir.clone()));
        }
        write_atomic(&manifest_path(&self.dir, self.seq + 1), &target.encode())?;
        step(hook, ApplyStep::Publish, staged)?;
        let published = version_dir(&self.dir, self.seq + 1);
        remove_tree(&published).map_err(apply_io("remove", &published))?;
        fs::rename(staged, &published).map_err(apply_io("publish", staged))?;
        sync_dir(&self.dir.join("versions"))?;
        Ok(())
    }

    /// A file of one spooled chunk, readable by its owner: the chunk checked, then its
    /// spool file hard-linked at `abs`, its mtime and mode set. Returns it open and not
    /// yet synced, or `None` if the file is not such a one or the link fails (the caller
    /// assembles it).
    fn link_chunk(
        &mut self,
        path: &RelPath,
        file: &FileNode,
        abs: &Path,
        hook: &mut dyn FnMut(ApplyStep<'_>) -> io::Result<()>,
    ) -> Result<Option<File>, ApplyError> {
        let [chunk] = file.chunks.as_slice() else {
            return Ok(None);
        };
        if file.mode & 0o400 == 0 || !self.spool.holds(&chunk.hash) {
            return Ok(None);
        }
        let bytes = match self.spool.read(&chunk.hash) {
            Ok(bytes) => bytes,
            Err(SpoolError::HashMismatch { .. }) => {
                self.spool.remove(&chunk.hash);
                return Err(damaged(chunk.hash, path));
            }
            Err(e) => return Err(e.into()),
        };
        if Hash::of(&bytes) != file.hash() {
            return Err(ApplyError::FileHash {
                path: path.to_string(),
            });
        }
        let write = ApplyStep::Write {
            path,
            bytes: bytes.len() as u64,
        };
        step(hook, write, abs)?;
        if fs::hard_link(self.spool.path(&chunk.hash), abs).is_err() {
            // Too many links, or anything else: a copy does without.
            return Ok(None);
        }
        let out = File::open(abs).map_err(apply_io("open", abs))?;
        set_meta(&out, file, abs)?;
        Ok(Some(out))
    }

    /// Writes one file from chunks, checking each chunk and the whole; sets its mtime and
    /// mode. Returns it open and not yet synced (the caller syncs it, step 1).
    fn assemble(
        &mut self,
        path: &RelPath,
        file: &FileNode,
        abs: &Path,
        old: &Path,
        local: &HashMap<Hash, (&RelPath, u64)>,
        hook: &mut dyn FnMut(ApplyStep<'_>) -> io::Result<()>,
    ) -> Result<File, ApplyError> {
        let mut out = File::create_new(abs).map_err(apply_io("create", abs))?;
        let mut whole = blake3::Hasher::new();
        for chunk in &file.chunks {
            let bytes = if self.spool.holds(&chunk.hash) {
                match self.spool.read(&chunk.hash) {
                    Ok(bytes) => bytes,
                    Err(SpoolError::HashMismatch { .. }) => {
                        self.spool.remove(&chunk.hash);
                        return Err(damaged(chunk.hash, path));
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let Some((src, offset)) = local.get(&chunk.hash) else {
                    return Err(ApplyError::Missing {
                        chunks: 1,
                        bytes: u64::from(chunk.len),
                    });
                };
                let from = src.under(old);
                let bytes =
                    super::read_at(&from, *offset, chunk.len).map_err(apply_io("read", &from))?;
                if Hash::of(&bytes) != chunk.hash {
                    self.bad_local.insert(chunk.hash);
                    return Err(damaged(chunk.hash, path));
                }
                bytes
            };
            let write = ApplyStep::Write {
                path,
                bytes: bytes.len() as u64,
            };
            step(hook, write, abs)?;
            out.write_all(&bytes).map_err(apply_io("write", abs))?;
            whole.update(&bytes);
        }
        if Hash::from_bytes(*whole.finalize().as_bytes()) != file.hash() {
            return Err(ApplyError::FileHash {
                path: path.to_string(),
            });
        }
        set_meta(&out, file, abs)?;
        Ok(out)
    }

    /// Steps 5 and 6.
    fn commit(
        &mut self,
        target: &Manifest,
        seq: u64,
        staged: &Path,
        hook: &mut dyn FnMut(ApplyStep<'_>) -> io::Result<()>,
    ) -> Result<(), ApplyError> {
        step(hook, ApplyStep::Swap, staged)?;
        swap_current(&self.dir, seq)?;
        let previous = self.seq;
        self.seq = seq;
        self.current = target.clone();
        self.bad_local.clear();
        step(hook, ApplyStep::Clean, staged)?;
        self.remove_old_versions(Some(previous))?;
        self.finish()?;
        Ok(())
    }

    /// The current manifest without files whose chunks were found damaged (so they are
    /// neither linked nor used as a chunk source).
    fn base(&self) -> Cow<'_, Manifest> {
        if self.bad_local.is_empty() {
            return Cow::Borrowed(&self.current);
        }
        let mut base = self.current.clone();
        base.entries.retain(|e| match &e.node {
            Node::File(f) => !f.chunks.iter().any(|c| self.bad_local.contains(&c.hash)),
            _ => true,
        });
        Cow::Owned(base)
    }

    /// Recomputes the chunks still wanted, and their prefixes.
    fn replan(&mut self) {
        let plan = self.plan();
        self.wanted = plan
            .as_ref()
            .map(|p| p.fetch.iter().map(|c| c.hash).collect())
            .unwrap_or_default();
        self.prefixes = plan.map(|p| p.prefixes).unwrap_or_default();
    }

    /// Removes the target and the spool (the target is in place, or abandoned).
    fn finish(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join("target.manifest");
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(spool_io("remove", &path)(e));
            }
            _ => {}
        }
        sync_dir(&self.dir)?;
        self.spool.clear()?;
        self.target = None;
        self.wanted.clear();
        self.prefixes.clear();
        Ok(())
    }

    /// Deletes every version but the current one and `keep`.
    fn remove_old_versions(&self, keep: Option<u64>) -> Result<(), SpoolError> {
        let versions = self.dir.join("versions");
        let listing = fs::read_dir(&versions).map_err(spool_io("list", &versions))?;
        for item in listing {
            let item = item.map_err(spool_io("list", &versions))?;
            let name = item.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix('v'))
                .map(|n| n.strip_suffix(".manifest").unwrap_or(n))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if seq != self.seq && Some(seq) != keep {
                let path = item.path();
                remove_tree(&path).map_err(spool_io("remove", &path))?;
            }
        }
        sync_dir(&versions)?;
        Ok(())
    }

    /// The newest version below `seq` that exists.
    fn newest_below(&self, seq: u64) -> Option<u64> {
        let listing = fs::read_dir(self.dir.join("versions")).ok()?;
        listing
            .filter_map(|i| i.ok())
            .filter_map(|i| {
                i.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .filter(|s| *s < seq)
            .max()
    }
}

/// The checks for manifests the mirror stored itself: every structural rule, and no size
/// limit (they passed the limits in force when they were received; lowering a limit later
/// must not make the mirror unreadable).
fn stored_limits() -> Limits {
    Limits {
        max_manifest_bytes: usize::MAX,
        max_entries: usize::MAX,
        max_file_size: u64::MAX,
        max_total_size: u64::MAX,
        max_chunk: u32::MAX,
        case_collisions: false,
    }
}

fn step(
    hook: &mut dyn FnMut(ApplyStep<'_>) -> io::Result<()>,
    at: ApplyStep<'_>,
    path: &Path,
) -> Result<(), ApplyError> {
    hook(at).map_err(apply_io("write", path))
}

fn damaged(hash: Hash, path: &RelPath) -> ApplyError {
    ApplyError::Chunk {
        hash,
        path: path.to_string(),
    }
}

fn version_dir(dir: &Path, seq: u64) -> PathBuf {
    dir.join("versions").join(format!("v{seq}"))
}

fn manifest_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join("versions").join(format!("v{seq}.manifest"))
}

/// Sets a written file's mtime and mode (read-only: versions share files).
fn set_meta(out: &File, file: &FileNode, abs: &Path) -> Result<(), ApplyError> {
    let mtime = if file.mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(file.mtime_ns as u64)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(file.mtime_ns.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    };
    out.set_times(FileTimes::new().set_modified(mtime))
        .map_err(apply_io("set the mtime of", abs))?;
    out.set_permissions(fs::Permissions::from_mode(file.mode & 0o555))
        .map_err(apply_io("set the mode of", abs))
}

/// Fsyncs the written files of an apply (data, mode and mtime), and closes them.
fn sync_written(files: &mut Vec<(PathBuf, File)>) -> Result<(), ApplyError> {
    sync_files(files, true).map_err(|(path, source)| apply_io("sync", &path)(source))?;
    files.clear();
    Ok(())
}

/// Points `current` at `versions/v<seq>` in one rename, durably.
fn swap_current(dir: &Path, seq: u64) -> Result<(), SpoolError> {
    let tmp = dir.join("current.tmp");
    let _ = fs::remove_file(&tmp);
    symlink(format!("versions/v{seq}"), &tmp).map_err(spool_io("create", &tmp))?;
    fs::rename(&tmp, dir.join("current")).map_err(spool_io("swap", &tmp))?;
    sync_dir(dir)?;
    #[cfg(test)]
    super::spool::trace::record(super::spool::trace::Event::Swapped(version_dir(dir, seq)));
    Ok(())
}

/// Writes a file whole or not at all: temp, fsync, rename (the caller syncs the dir).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(spool_io("create", &tmp))?;
    file.write_all(bytes).map_err(spool_io("write", &tmp))?;
    file.sync_all().map_err(spool_io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(spool_io("rename", &tmp))
}

/// Removes a file or a tree, if present.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

fn remove_children(dir: &Path) -> io::Result<()> {
    for item in fs::read_dir(dir)? {
        remove_tree(&item?.path())?;
    }
    Ok(())
}

fn spool_io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    super::spool::io_err(op, path)
}

fn apply_io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ApplyError {
    let path = path.to_path_buf();
    move |source| match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ApplyError::DiskFull { path },
        _ => ApplyError::Io { op, path, source },
    }
}

#[cfg(test)]
mod tests;
