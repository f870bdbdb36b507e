//! The core's scanner: walks the volume and describes each path, hashing only files whose
//! stat changed since it last read them.
//!
//! **Stat cache.** Per file (device and inode): size, mtime and ctime (nanoseconds) when
//! it was last hashed, and its chunks. A file whose five values are unchanged keeps its
//! chunks without being read, under whatever path it now has: a moved directory costs no
//! read (renaming a file itself changes its ctime, so a renamed file is read once). Size and mtime alone can miss an edit that keeps both (rsync
//! `-c`'s lesson); ctime cannot be set by a writer, so adding it (and the inode, which
//! changes on a rename-over) closes that gap, except for one case: a file written within
//! the timestamp granularity right after it was hashed. Such a file is **racy** (its mtime
//! is within [`RACY`] of the moment it was read) and is hashed again at the next scan, as
//! git does with its index.
//!
//! **Stable reads (point in time, per file).** A file is hashed from one open descriptor,
//! and its stat is taken before and after, through the descriptor and through the path. If
//! any of the five values moved (a write, a truncation, a rename-over), the read is thrown
//! away and retried, up to [`STABLE_TRIES`] times; a file still changing is reported as a
//! [`Problem`] and keeps its previous description (wholly old) if it had one. So a
//! manifest describes each file wholly old or wholly new. Limits: a write that changes
//! neither size nor timestamps (same-tick in-place overwrite, or a writer that restores
//! mtime) is not seen here; it is caught when the chunk is served, which re-hashes the
//! bytes ([`super::SourceVolume::read_chunk`]). Across files the manifest is not one
//! instant of the whole volume (that needs a file-system snapshot): each file is one
//! instant of itself, taken during the scan.
//!
//! What is skipped, each with a [`Problem`] (partial success is a value): names that are
//! not UTF-8 or break a path rule, symlinks whose target would leave the volume, sockets,
//! FIFOs and devices, unreadable files and directories.
//!
//! IO: reads (never writes) the volume.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use machines::mirror::path;

use super::{ChunkParams, ChunkRef, FileNode, Hash, Node, RelPath, chunk_reader};

/// A file modified this close to its read is hashed again at the next scan.
pub(crate) const RACY: Duration = Duration::from_secs(2);

/// Reads of a file that keeps changing before it is reported and skipped.
pub(crate) const STABLE_TRIES: usize = 3;

/// Walks a volume and keeps the stat cache.
#[derive(Debug)]
pub struct Scanner {
    root: PathBuf,
    params: ChunkParams,
    /// By device and inode number.
    cache: HashMap<(u64, u64), Cached>,
    /// Each file path's device and inode number.
    inodes: HashMap<RelPath, (u64, u64)>,
    /// Inodes whose path went away in a refresh: dropped by [`Scanner::forget_unused`]
    /// unless a path (a moved file) refers to them again.
    orphans: Vec<(u64, u64)>,
}

/// A path the scan skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path, relative to the volume (lossy for names that are not UTF-8).
    pub path: String,
    /// What is wrong.
    pub error: String,
}

/// What a scan cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanStats {
    /// Paths stat'ed.
    pub stated: u64,
    /// Files read and hashed.
    pub hashed_files: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Files whose chunks came from the stat cache.
    pub cached_files: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    key: StatKey,
    racy: bool,
    chunks: Vec<ChunkRef>,
    hash: Hash,
}

/// The stat values that say a file is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Scanner {
    /// A scanner of the volume at `root`, cutting files with `params`.
    pub fn new(root: impl Into<PathBuf>, params: ChunkParams) -> Scanner {
        Scanner {
            root: root.into(),
            params,
            cache: HashMap::new(),
            inodes: HashMap::new(),
            orphans: Vec::new(),
        }
    }

    /// The volume's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The chunker's sizes.
    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Describes the whole volume into `out` (cleared first). An error only if the
    /// volume's directory itself cannot be read; everything below is a [`Problem`].
    pub fn scan(
        &mut self,
        out: &mut BTreeMap<RelPath, Node>,
        problems: &mut Vec<Problem>,
    ) -> io::Result<ScanStats> {
        let mut stats = ScanStats::default();
        fs::read_dir(&self.root)?;
        out.clear();
        self.walk(None, out, problems, &mut stats);
        self.inodes
            .retain(|path, _| matches!(out.get(path), Some(Node::File(_))));
        let live: std::collections::HashSet<(u64, u64)> = self.inodes.values().copied().collect();
        self.cache.retain(|inode, _| live.contains(inode));
        Ok(stats)
    }

    /// Describes `path` and what it holds again, replacing what `out` had for them; a path
    /// gone from disk is removed with everything under it. If `path`'s parent is not a
    /// directory in `out`, the nearest ancestor that is one is refreshed instead.
    pub fn refresh(
        &mut self,
        path: &RelPath,
        out: &mut BTreeMap<RelPath, Node>,
        problems: &mut Vec<Problem>,
        stats: &mut ScanStats,
    ) {
        let mut target = path.clone();
        while let Some(parent) = target.parent() {
            if matches!(out.get(&parent), Some(Node::Dir { .. })) {
                break;
            }
            target = parent;
        }
        let stale: Vec<RelPath> = out
            .range(target.clone()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(&target))
            .cloned()
            .collect();
        for p in &stale {
            out.remove(p);
        }
        let abs = target.under(&self.root);
        match fs::symlink_metadata(&abs) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(problem(&target, format!("cannot stat: {e}"))),
            Ok(meta) => {
                stats.stated += 1;
                if self.visit(&target, &abs, &meta, out, problems, stats) {
                    self.walk(Some(target.clone()), out, problems, stats);
                }
            }
        }
        for p in stale {
            if !matches!(out.get(&p), Some(Node::File(_)))
                && let Some(inode) = self.inodes.remove(&p)
            {
                self.orphans.push(inode);
            }
        }
    }

    /// Drops what the cache holds for files no path refers to any more. Called after a
    /// batch of [`Scanner::refresh`]es, so that a file moved from one refreshed path to
    /// another keeps its chunks.
    pub fn forget_unused(&mut self) {
        if self.orphans.is_empty() {
            return;
        }
        let live: std::collections::HashSet<(u64, u64)> = self.inodes.values().copied().collect();
        for inode in self.orphans.drain(..) {
            if !live.contains(&inode) {
                self.cache.remove(&inode);
            }
        }
    }

    /// Walks the directory `top` (the volume when `None`) and everything under it.
    fn walk(
        &mut self,
        top: Option<RelPath>,
        out: &mut BTreeMap<RelPath, Node>,
        problems: &mut Vec<Problem>,
        stats: &mut ScanStats,
    ) {
        // An explicit stack: a deep tree cannot overflow the thread's stack.
        let mut dirs = vec![top];
        while let Some(dir) = dirs.pop() {
            let abs = dir
                .as_ref()
                .map_or_else(|| self.root.clone(), |d| d.under(&self.root));
            let listing = match fs::read_dir(&abs) {
                Ok(listing) => listing,
                Err(e) => {
                    problems.push(Problem {
                        path: dir.as_ref().map_or_else(String::new, |d| d.to_string()),
                        error: format!("cannot list: {e}"),
                    });
                    continue;
                }
            };
            for item in listing {
                let item = match item {
                    Ok(item) => item,
                    Err(e) => {
                        problems.push(Problem {
                            path: dir.as_ref().map_or_else(String::new, |d| d.to_string()),
                            error: format!("cannot list: {e}"),
                        });
                        continue;
                    }
                };
                let name = item.file_name();
                let lossy = || match &dir {
                    Some(d) => format!("{d}/{}", name.to_string_lossy()),
                    None => name.to_string_lossy().into_owned(),
                };
                let Some(name_str) = name.to_str() else {
                    problems.push(Problem {
                        path: lossy(),
                        error: "name is not UTF-8: skipped".into(),
                    });
                    continue;
                };
                let rel = match &dir {
                    Some(d) => d.join(name_str),
                    None => RelPath::new(name_str),
                };
                let rel = match rel {
                    Ok(rel) => rel,
                    Err(e) => {
                        problems.push(Problem {
                            path: lossy(),
                            error: format!("{}: skipped", e.rule),
                        });
                        continue;
                    }
                };
                // `DirEntry::metadata` does not follow symlinks.
                let meta = match item.metadata() {
                    Ok(meta) => meta,
                    Err(e) => {
                        problems.push(problem(&rel, format!("cannot stat: {e}")));
                        continue;
                    }
                };
                stats.stated += 1;
                let abs = item.path();
                if self.visit(&rel, &abs, &meta, out, problems, stats) {
                    dirs.push(Some(rel));
                }
            }
        }
    }

    /// Describes one path into `out`; `true` if it is a directory to walk.
    fn visit(
        &mut self,
        rel: &RelPath,
        abs: &Path,
        meta: &Metadata,
        out: &mut BTreeMap<RelPath, Node>,
        problems: &mut Vec<Problem>,
        stats: &mut ScanStats,
    ) -> bool {
        let kind = meta.file_type();
        if kind.is_dir() {
            out.insert(
                rel.clone(),
                Node::Dir {
                    mode: meta.mode() & 0o777,
                },
            );
            return true;
        }
        if kind.is_symlink() {
            match symlink(rel, abs) {
                Ok(node) => {
                    out.insert(rel.clone(), node);
                }
                Err(error) => problems.push(problem(rel, error)),
            }
            return false;
        }
        if !kind.is_file() {
            problems.push(problem(rel, "not a file, directory or symlink: skipped"));
            return false;
        }
        let key = StatKey::of(meta);
        let inode = (key.dev, key.ino);
        let cached = self
            .cache
            .get(&inode)
            .filter(|c| c.key == key && !c.racy)
            .cloned();
        let cached = match cached {
            Some(c) => {
                stats.cached_files += 1;
                c
            }
            None => match read_stable(abs, self.params) {
                Ok((key, chunks, hash)) => {
                    stats.hashed_files += 1;
                    stats.hashed_bytes += key.size;
                    let c = Cached {
                        key,
                        racy: is_racy(key, SystemTime::now()),
                        chunks,
                        hash,
                    };
                    self.cache.insert((key.dev, key.ino), c.clone());
                    c
                }
                Err(error) => {
                    problems.push(problem(rel, error));
                    // Keep the last good description, if any: wholly old.
                    let old = self.inodes.get(rel).and_then(|i| self.cache.get(i));
                    if let Some(old) = old {
                        let node = FileNode::new(
                            meta.mode() & 0o777,
                            old.key.mtime_ns,
                            old.chunks.clone(),
                            old.hash,
                        );
                        out.insert(rel.clone(), Node::File(node));
                    }
                    return false;
                }
            },
        };
        self.inodes
            .insert(rel.clone(), (cached.key.dev, cached.key.ino));
        let node = FileNode::new(
            meta.mode() & 0o777,
            cached.key.mtime_ns,
            cached.chunks,
            cached.hash,
        );
        out.insert(rel.clone(), Node::File(node));
        false
    }
}

/// Hashes a file from one descriptor, retrying while its stat moves under the read.
fn read_stable(abs: &Path, params: ChunkParams) -> Result<(StatKey, Vec<ChunkRef>, Hash), String> {
    for _ in 0..STABLE_TRIES {
        let file = File::open(abs).map_err(|e| format!("cannot open: {e}"))?;
        let stat = |f: &File| f.metadata().map(|m| StatKey::of(&m));
        let before = stat(&file).map_err(|e| format!("cannot stat: {e}"))?;
        let chunked = chunk_reader(&file, params, &mut |_, _| Ok(()))
            .map_err(|e| format!("cannot read: {e}"))?;
        let after = stat(&file).map_err(|e| format!("cannot stat: {e}"))?;
        let at_path = fs::symlink_metadata(abs).map(|m| StatKey::of(&m));
        if before == after && at_path.ok() == Some(after) && chunked.size == after.size {
            return Ok((after, chunked.chunks, chunked.hash));
        }
    }
    Err(format!(
        "kept changing while being read ({STABLE_TRIES} tries): skipped"
    ))
}

fn symlink(rel: &RelPath, abs: &Path) -> Result<Node, String> {
    let target = fs::read_link(abs).map_err(|e| format!("cannot read symlink: {e}"))?;
    let Some(target) = target.to_str() else {
        return Err("symlink target is not UTF-8: skipped".into());
    };
    path::check_target(rel, target)
        .map_err(|rule| format!("symlink target {target:?}: {rule}: skipped"))?;
    Ok(Node::Symlink {
        target: target.to_owned(),
    })
}

fn problem(rel: &RelPath, error: impl Into<String>) -> Problem {
    Problem {
        path: rel.to_string(),
        error: error.into(),
    }
}

fn is_racy(key: StatKey, now: SystemTime) -> bool {
    let now_ns = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    key.mtime_ns > now_ns - RACY.as_nanos() as i64
}

impl StatKey {
    fn of(meta: &Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            // Saturating: a timestamp past 2262 (a broken clock) must not panic.
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    /// A scratch directory removed when dropped.
    #[derive(Debug)]
    pub(crate) struct Scratch(pub(crate) PathBuf);

    impl Scratch {
        pub(crate) fn new(what: &str) -> Scratch {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("tether-mirror-{what}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Read-only directories left by a replica would stop the removal.
            let _ = make_writable(&self.0);
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn make_writable(dir: &Path) -> io::Result<()> {
        for item in fs::read_dir(dir)? {
            let item = item?;
            if item.file_type()?.is_dir() {
                fs::set_permissions(item.path(), fs::Permissions::from_mode(0o755))?;
                make_writable(&item.path())?;
            }
        }
        Ok(())
    }

    pub(crate) fn random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Writes `content` at `root/rel` (parents created) with an mtime an hour ago, so the
    /// file is not racy.
    pub(crate) fn write_old(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    fn p(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    #[test]
    fn scans_files_dirs_and_inside_symlinks_and_reports_the_rest() {
        let dir = Scratch::new("scan");
        let root = &dir.0;
        write_old(root, "a/one", b"1");
        write_old(root, "a/b/two", &random(300_000, 1));
        fs::create_dir(root.join("empty")).unwrap();
        fs::set_permissions(root.join("a/one"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("b/two", root.join("a/link")).unwrap();
        symlink("../../etc/passwd", root.join("a/escape")).unwrap();
        symlink("/etc/passwd", root.join("absolute")).unwrap();
        write_old(root, "back\\slash", b"x");

        let mut scanner = Scanner::new(root, ChunkParams::default());
        let (mut out, mut problems) = (BTreeMap::new(), Vec::new());
        let stats = scanner.scan(&mut out, &mut problems).unwrap();
        let paths: Vec<&str> = out.keys().map(RelPath::as_str).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/two", "a/link", "a/one", "empty"]);
        let Some(Node::File(one)) = out.get(&p("a/one")) else {
            panic!()
        };
        assert_eq!(one.mode, 0o750);
        let Some(Node::File(two)) = out.get(&p("a/b/two")) else {
            panic!()
        };
        assert!(two.chunks.len() > 1);
        assert_eq!(two.hash(), Hash::of(&random(300_000, 1)));
        assert_eq!(
            out.get(&p("a/link")),
            Some(&Node::Symlink {
                target: "b/two".into()
            })
        );
        let mut skipped: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        skipped.sort();
        assert_eq!(
            skipped,
            ["a/escape", "absolute", "back\\slash"],
            "{problems:?}"
        );
        assert_eq!(stats.hashed_files, 2);
    }

    #[test]
    fn unchanged_files_are_not_read_again_and_changes_are_seen() {
        let dir = Scratch::new("rescan");
        let root = &dir.0;
        for i in 0..50 {
            write_old(root, &format!("d{}/f{i}", i % 5), &random(2000, i));
        }
        let mut scanner = Scanner::new(root, ChunkParams::default());
        let (mut out, mut problems) = (BTreeMap::new(), Vec::new());
        let first = scanner.scan(&mut out, &mut problems).unwrap();
        assert_eq!(first.hashed_files, 50);
        let second = scanner.scan(&mut out, &mut problems).unwrap();
        assert_eq!((second.hashed_files, second.cached_files), (0, 50));

        // Same size, same mtime, new content: ctime (and the racy rule) still see it.
        let path = root.join("d0/f0");
        let (mtime, ctime) = fs::metadata(&path)
            .map(|m| (m.modified().unwrap(), m.ctime_nsec()))
            .unwrap();
        // Until the clock ticks (the file system's timestamps are coarse).
        for _ in 0..100 {
            fs::write(&path, random(2000, 999)).unwrap();
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
            if fs::metadata(&path).unwrap().ctime_nsec() != ctime {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let third = scanner.scan(&mut out, &mut problems).unwrap();
        assert_eq!(third.hashed_files, 1);
        let Some(Node::File(f)) = out.get(&p("d0/f0")) else {
            panic!()
        };
        assert_eq!(f.hash(), Hash::of(&random(2000, 999)));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn refresh_updates_one_subtree() {
        let dir = Scratch::new("refresh");
        let root = &dir.0;
        write_old(root, "keep/a", b"a");
        write_old(root, "gone/b", b"b");
        write_old(root, "gone/deeper/c", b"c");
        let mut scanner = Scanner::new(root, ChunkParams::default());
        let (mut out, mut problems) = (BTreeMap::new(), Vec::new());
        scanner.scan(&mut out, &mut problems).unwrap();
        fs::rename(root.join("gone"), root.join("moved")).unwrap();
        write_old(root, "new/sub/d", b"d");
        let mut stats = ScanStats::default();
        for changed in ["gone", "moved", "new/sub/d"] {
            scanner.refresh(&p(changed), &mut out, &mut problems, &mut stats);
        }
        let paths: Vec<&str> = out.keys().map(RelPath::as_str).collect();
        assert_eq!(
            paths,
            [
                "keep",
                "keep/a",
                "moved",
                "moved/b",
                "moved/deeper",
                "moved/deeper/c",
                "new",
                "new/sub",
                "new/sub/d"
            ]
        );
        // The moved files kept their inode and stat: no re-read.
        assert_eq!(stats.hashed_files, 1);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
