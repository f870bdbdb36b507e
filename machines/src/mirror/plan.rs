//! What a mirror must do: the [`Plan`] (chunks to fetch, paths to create, replace and
//! delete) from the edge's current manifest to a target one, and the [`Delta`] that
//! carries a target manifest as changes to one the edge already holds (a changed large
//! file as a [`FileEdit`] of its chunk list: only the changed range).
//!
//! Chunks are deduplicated across the whole volume: a chunk the edge holds anywhere (in
//! any file of its current version, or already in its spool) is never fetched, so a
//! rename or a move costs no chunk, and a chunk shared by many files crosses once.
//!
//! An append crosses as the appended bytes only. FastCDC cut the current version's last
//! chunk of a file at the end of the file, not at a boundary of its content, so after an
//! append the target's chunk at that offset is a new, longer chunk that begins with the
//! old one. The plan names the old chunk as that chunk's [`Prefix`]: the edge asks for
//! the bytes after it only and rebuilds the chunk, which is checked against its hash like
//! any other (and fetched whole if it does not match).
//!
//! IO: none.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::chunk::{ChunkParams, ChunkRef, Hash};
use super::manifest::{Entry, FileNode, Limits, MANIFEST_FORMAT, Manifest, ManifestError, Node};
use super::path::RelPath;

/// The work from one manifest to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The target's version.
    pub target_version: u64,
    /// The target's root.
    pub target_root: Hash,
    /// Chunks to fetch, each once, in the order the target first uses them (so files
    /// complete one after another and small files' chunks sit side by side, ready to be
    /// packed many to a request by [`Plan::batches`]).
    pub fetch: Vec<ChunkRef>,
    /// Chunks of `fetch` that begin with a chunk the edge holds (an append's), by hash:
    /// only the bytes after the prefix are fetched.
    pub prefixes: HashMap<Hash, Prefix>,
    /// Sum of `fetch` lengths less their prefixes: the payload that must cross the link.
    pub fetch_bytes: u64,
    /// Bytes of new or changed files that come from chunks already held (prefixes
    /// included).
    pub reuse_bytes: u64,
    /// Paths new in the target.
    pub create: Vec<RelPath>,
    /// Paths in both whose entry differs (content, mode, mtime, kind, link target).
    pub replace: Vec<RelPath>,
    /// Paths gone from the target.
    pub delete: Vec<RelPath>,
    /// Entries equal in both.
    pub unchanged: usize,
    /// Files in the target.
    pub files: usize,
    /// Sum of the target's file sizes.
    pub bytes: u64,
}

/// The first bytes of a chunk to fetch that the edge holds: the current version's last
/// chunk of the same file, which an append extended (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// The held chunk; its length is where the fetch starts.
    pub chunk: ChunkRef,
    /// The current version's file that ends with it.
    pub path: RelPath,
    /// Its offset in that file.
    pub offset: u64,
}

/// Computes the plan from `current` to `target`. `held` says whether a chunk is held
/// outside `current` (in the spool); every chunk of `current` counts as held.
pub fn plan(current: &Manifest, target: &Manifest, held: &dyn Fn(&Hash) -> bool) -> Plan {
    let local: HashSet<Hash> = current
        .files()
        .flat_map(|(_, f)| f.chunks.iter().map(|c| c.hash))
        .collect();
    let old: HashMap<&RelPath, &Node> =
        current.entries.iter().map(|e| (&e.path, &e.node)).collect();
    let mut out = Plan {
        target_version: target.version,
        target_root: target.root(),
        fetch: Vec::new(),
        prefixes: HashMap::new(),
        fetch_bytes: 0,
        reuse_bytes: 0,
        create: Vec::new(),
        replace: Vec::new(),
        delete: Vec::new(),
        unchanged: 0,
        files: 0,
        bytes: 0,
    };
    let mut queued = HashSet::new();
    for entry in &target.entries {
        match old.get(&entry.path) {
            Some(node) if **node == entry.node => out.unchanged += 1,
            Some(_) => out.replace.push(entry.path.clone()),
            None => out.create.push(entry.path.clone()),
        }
        let Node::File(file) = &entry.node else {
            continue;
        };
        out.files += 1;
        out.bytes += file.size;
        let was = match old.get(&entry.path) {
            Some(node) if **node == entry.node => continue,
            Some(Node::File(was)) => Some(was),
            _ => None,
        };
        let extended = was.and_then(|was| extended_chunk(was, file));
        for (i, chunk) in file.chunks.iter().enumerate() {
            if local.contains(&chunk.hash) || held(&chunk.hash) {
                out.reuse_bytes += u64::from(chunk.len);
            } else if queued.insert(chunk.hash) {
                out.fetch.push(*chunk);
                match extended {
                    // `extended_chunk` took the prefix from `current`: it is held.
                    Some((at, prefix, offset)) if at == i => {
                        out.fetch_bytes += u64::from(chunk.len - prefix.len);
                        out.reuse_bytes += u64::from(prefix.len);
                        let path = entry.path.clone();
                        let prefix = Prefix {
                            chunk: prefix,
                            path,
                            offset,
                        };
                        out.prefixes.insert(chunk.hash, prefix);
                    }
                    _ => out.fetch_bytes += u64::from(chunk.len),
                }
            }
        }
    }
    let new: HashSet<&RelPath> = target.entries.iter().map(|e| &e.path).collect();
    out.delete = current
        .entries
        .iter()
        .filter(|e| !new.contains(&e.path))
        .map(|e| e.path.clone())
        .collect();
    out
}

/// The append pattern: `new` keeps every chunk of `old` but the last, and its chunk at
/// the offset of `old`'s last chunk is longer than that chunk. Returns that chunk's index
/// in `new`, `old`'s last chunk (its likely prefix) and its offset.
fn extended_chunk(old: &FileNode, new: &FileNode) -> Option<(usize, ChunkRef, u64)> {
    let (last, kept) = old.chunks.split_last()?;
    let at = kept.len();
    let chunk = new.chunks.get(at)?;
    if chunk.len <= last.len || new.chunks[..at] != *kept {
        return None;
    }
    Some((at, *last, old.size - u64::from(last.len)))
}

impl Plan {
    /// Whether the edge already has the target.
    pub fn is_empty(&self) -> bool {
        self.fetch.is_empty()
            && self.create.is_empty()
            && self.replace.is_empty()
            && self.delete.is_empty()
    }

    /// The bytes of `chunk` that cross the link: less its prefix, if it has one.
    pub fn fetched_len(&self, chunk: &ChunkRef) -> u64 {
        let prefix = self.prefixes.get(&chunk.hash).map_or(0, |p| p.chunk.len);
        u64::from(chunk.len.saturating_sub(prefix))
    }

    /// `fetch` cut into consecutive requests of at most `max_bytes` of payload (but at
    /// least one chunk) and at most `max_chunks` chunks: many small files' chunks share
    /// one request instead of a round trip each.
    pub fn batches(&self, max_bytes: u64, max_chunks: usize) -> impl Iterator<Item = &[ChunkRef]> {
        let mut rest = self.fetch.as_slice();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut bytes = 0u64;
            let mut n = 0;
            while n < rest.len() && n < max_chunks.max(1) {
                let len = self.fetched_len(&rest[n]);
                if n > 0 && bytes + len > max_bytes {
                    break;
                }
                bytes += len;
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            Some(batch)
        })
    }
}

/// A target manifest expressed as changes to a base manifest the edge holds: for a small
/// change to a large volume, a few hundred bytes instead of the whole manifest.
///
/// The edge rebuilds the target with [`Delta::apply`], which validates the result and
/// checks that its root is `target`: a delta needs no more trust than a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Root of the manifest it applies to.
    pub base: Hash,
    /// Root of the manifest it produces.
    pub target: Hash,
    /// The target's version.
    pub version: u64,
    /// The target's creation time.
    pub created_ms: u64,
    /// The target's chunker sizes.
    pub chunking: ChunkParams,
    /// Paths of the base that the target lacks (including the sources of moves).
    pub removed: Vec<RelPath>,
    /// `(from, to)`: the base's file at `from` appears, unchanged, at `to` (a rename, a
    /// move or a copy: a path instead of a chunk list).
    pub copied: Vec<(RelPath, RelPath)>,
    /// Entries new or changed in the target.
    pub put: PackedEntries,
    /// Files changed in place whose chunk lists share a start or an end with the base's
    /// file at the same path (an edit, an insert, an append): only the changed range of
    /// the list crosses, in path order, each path once.
    pub edited: Vec<(RelPath, FileEdit)>,
}

/// Entries as a delta carries them: in path order, each path without the prefix it
/// shares with the previous one, each file's modification time as a step from the
/// previous file's, its size implied by its chunks. For many files written together
/// that is about 25 bytes less per file than the manifest's form.
///
/// Unpacked only by [`Delta::apply`], which bounds the bytes the paths grow to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedEntries(Vec<PackedEntry>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PackedEntry {
    /// Bytes shared with the previous path.
    shared: u32,
    /// The rest of the path.
    suffix: String,
    node: PackedNode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PackedNode {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        /// The mtime minus the previous file's (wrapping; the first: minus 0).
        mtime_step: i64,
        chunks: Vec<ChunkRef>,
        /// The whole-content hash, for two chunks or more.
        whole: Option<Hash>,
    },
    Symlink {
        target: String,
    },
}

impl PackedEntries {
    /// Packs `entries` (in path order).
    pub fn pack(entries: &[Entry]) -> PackedEntries {
        let mut out = Vec::with_capacity(entries.len());
        let mut previous = "";
        let mut mtime = 0i64;
        for e in entries {
            let path = e.path.as_str();
            let mut shared = previous
                .bytes()
                .zip(path.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            while !path.is_char_boundary(shared) {
                shared -= 1;
            }
            let node = match &e.node {
                Node::Dir { mode } => PackedNode::Dir { mode: *mode },
                Node::Symlink { target } => PackedNode::Symlink {
                    target: target.clone(),
                },
                Node::File(f) => {
                    let step = f.mtime_ns.wrapping_sub(mtime);
                    mtime = f.mtime_ns;
                    PackedNode::File {
                        mode: f.mode,
                        mtime_step: step,
                        chunks: f.chunks.clone(),
                        whole: (f.chunks.len() > 1).then(|| f.hash()),
                    }
                }
            };
            out.push(PackedEntry {
                shared: shared as u32,
                suffix: path[shared..].to_owned(),
                node,
            });
            previous = path;
        }
        PackedEntries(out)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, their paths growing to at most `max_bytes` in all (the paths are
    /// checked with the manifest they go into).
    pub fn unpack(&self, max_bytes: usize) -> Result<Vec<Entry>, ManifestError> {
        let mut out: Vec<Entry> = Vec::with_capacity(self.0.len());
        let mut total = 0usize;
        let mut mtime = 0i64;
        for p in &self.0 {
            let previous = out.last().map_or("", |e| e.path.as_str());
            let shared = p.shared as usize;
            if shared > previous.len() || !previous.is_char_boundary(shared) {
                return Err(ManifestError::Decode(format!(
                    "a packed path shares {shared} bytes with {previous:?}"
                )));
            }
            let path = format!("{}{}", &previous[..shared], p.suffix);
            total = total.saturating_add(path.len());
            if total > max_bytes {
                return Err(ManifestError::TooLarge {
                    bytes: total,
                    limit: max_bytes,
                });
            }
            let path = RelPath::unchecked(path);
            let node = match &p.node {
                PackedNode::Dir { mode } => Node::Dir { mode: *mode },
                PackedNode::Symlink { target } => Node::Symlink {
                    target: target.clone(),
                },
                PackedNode::File {
                    mode,
                    mtime_step,
                    chunks,
                    whole,
                } => {
                    mtime = mtime.wrapping_add(*mtime_step);
                    let whole = match (chunks.len() > 1, whole) {
                        (true, Some(h)) => *h,
                        (false, None) => Hash::of(b""),
                        _ => {
                            return Err(ManifestError::Chunks {
                                path: path.as_str().to_owned(),
                                rule: "whole-content hash present for fewer than two chunks, \
                                       or missing",
                            });
                        }
                    };
                    Node::File(FileNode::new(*mode, mtime, chunks.clone(), whole))
                }
            };
            out.push(Entry { path, node });
        }
        Ok(out)
    }
}

/// A file's new chunk list as an edit of the base's list at the same path: the first
/// `head` and the last `tail` chunks of the base's list, with `middle` between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdit {
    /// Permission bits of the target's file.
    pub mode: u32,
    /// Its modification time.
    pub mtime_ns: i64,
    /// Chunks kept from the start of the base's list.
    pub head: u32,
    /// Chunks kept from its end.
    pub tail: u32,
    /// The chunks between.
    pub middle: Vec<ChunkRef>,
    /// The target's whole-content hash.
    pub hash: Hash,
}

impl FileEdit {
    /// The edit from `old` to `new`, if the two lists share a start or an end and the
    /// edit is shorter than the new list.
    pub fn between(old: &FileNode, new: &FileNode) -> Option<FileEdit> {
        let (a, b) = (old.chunks.as_slice(), new.chunks.as_slice());
        let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let tail = a[head..]
            .iter()
            .rev()
            .zip(b[head..].iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        let middle = &b[head..b.len() - tail];
        // One chunk or none: a plain entry is as short.
        if head + tail == 0 || b.len() < 2 {
            return None;
        }
        Some(FileEdit {
            mode: new.mode,
            mtime_ns: new.mtime_ns,
            head: u32::try_from(head).ok()?,
            tail: u32::try_from(tail).ok()?,
            middle: middle.to_vec(),
            hash: new.hash(),
        })
    }

    /// The target's file, from the base's file `old` at `path`.
    pub fn apply(&self, path: &RelPath, old: &FileNode) -> Result<FileNode, ManifestError> {
        let (head, tail) = (self.head as usize, self.tail as usize);
        let len = old.chunks.len();
        if head.saturating_add(tail) > len {
            return Err(ManifestError::ChunkEdit {
                path: path.as_str().to_owned(),
                rule: format!(
                    "keeps {head} chunks from the start and {tail} from the end of a list of {len}"
                ),
            });
        }
        let mut chunks = Vec::with_capacity(head + self.middle.len() + tail);
        chunks.extend_from_slice(&old.chunks[..head]);
        chunks.extend_from_slice(&self.middle);
        chunks.extend_from_slice(&old.chunks[len - tail..]);
        Ok(FileNode::new(self.mode, self.mtime_ns, chunks, self.hash))
    }
}

/// The fewest bytes a chunk reference takes in an encoded manifest: its 32-byte hash and
/// a length of at least one byte. A manifest within [`Limits::max_manifest_bytes`] holds
/// at most that limit over this many chunk references.
const MIN_CHUNK_ENCODING: usize = 33;

impl Delta {
    /// The changes from `base` to `target`.
    pub fn between(base: &Manifest, target: &Manifest) -> Delta {
        let old: HashMap<&RelPath, &Node> =
            base.entries.iter().map(|e| (&e.path, &e.node)).collect();
        let new: HashSet<&RelPath> = target.entries.iter().map(|e| &e.path).collect();
        // Files the base holds, by content and metadata: candidates for `copied`.
        let mut sources: HashMap<&Node, &RelPath> = HashMap::new();
        for e in &base.entries {
            if matches!(e.node, Node::File(_)) {
                sources.entry(&e.node).or_insert(&e.path);
            }
        }
        let mut delta = Delta {
            base: base.root(),
            target: target.root(),
            version: target.version,
            created_ms: target.created_ms,
            chunking: target.chunking,
            removed: base
                .entries
                .iter()
                .filter(|e| !new.contains(&e.path))
                .map(|e| e.path.clone())
                .collect(),
            copied: Vec::new(),
            put: PackedEntries::default(),
            edited: Vec::new(),
        };
        let mut put = Vec::new();
        for e in &target.entries {
            let before = old.get(&e.path);
            if before == Some(&&e.node) {
                continue;
            }
            if let Some(from) = sources.get(&e.node) {
                delta.copied.push(((*from).clone(), e.path.clone()));
                continue;
            }
            if let (Some(Node::File(was)), Node::File(now)) = (before, &e.node)
                && let Some(edit) = FileEdit::between(was, now)
            {
                delta.edited.push((e.path.clone(), edit));
                continue;
            }
            put.push(e.clone());
        }
        delta.put = PackedEntries::pack(&put);
        delta
    }

    /// Rebuilds the target from `base`, validates it against `limits`, and checks its
    /// root. Nothing of `base` is changed.
    ///
    /// Copies are bounded before they are made: their files may not add up to more than
    /// [`Limits::max_total_size`] (the bound on the target's file bytes, which holds
    /// every copy), nor to more chunk references than a whole manifest within
    /// [`Limits::max_manifest_bytes`] could carry. So a delta makes the edge build no
    /// more than the manifest it stands for would have.
    pub fn apply(&self, base: &Manifest, limits: &Limits) -> Result<Manifest, ManifestError> {
        let base_root = base.root();
        if base_root != self.base {
            return Err(ManifestError::Root {
                expected: self.base,
                found: base_root,
            });
        }
        let growth = self
            .copied
            .len()
            .saturating_add(self.put.len())
            .saturating_add(self.edited.len());
        if base.entries.len().saturating_add(growth) > limits.max_entries.saturating_mul(2) {
            return Err(ManifestError::TooManyEntries {
                count: base.entries.len().saturating_add(growth),
                limit: limits.max_entries,
            });
        }
        let mut entries: BTreeMap<RelPath, Node> = base
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.node.clone()))
            .collect();
        // What the copies add is bounded before any is made: a few bytes of delta must
        // not make the edge rebuild one huge base file many times over.
        let (mut bytes, mut chunks) = (0u64, 0u64);
        let max_chunks = (limits.max_manifest_bytes / MIN_CHUNK_ENCODING) as u64;
        let mut copies = Vec::with_capacity(self.copied.len());
        for (from, to) in &self.copied {
            let Some(Node::File(file)) = base.entry(from).map(|e| &e.node) else {
                return Err(ManifestError::CopySource {
                    from: from.as_str().to_owned(),
                });
            };
            bytes = bytes.saturating_add(file.size);
            chunks = chunks.saturating_add(file.chunks.len() as u64);
            if bytes > limits.max_total_size || chunks > max_chunks {
                return Err(ManifestError::CopiesTooLarge {
                    bytes,
                    chunks,
                    max_bytes: limits.max_total_size,
                    max_chunks,
                });
            }
            copies.push((to.clone(), Node::File(file.clone())));
        }
        // Each edited path once, in order: no base file is rebuilt twice.
        let mut edits = Vec::with_capacity(self.edited.len());
        let mut previous: Option<&RelPath> = None;
        for (path, edit) in &self.edited {
            if previous.is_some_and(|p| p >= path) {
                return Err(ManifestError::ChunkEdit {
                    path: path.as_str().to_owned(),
                    rule: "listed twice or out of order".into(),
                });
            }
            previous = Some(path);
            let Some(Node::File(file)) = base.entry(path).map(|e| &e.node) else {
                return Err(ManifestError::ChunkEdit {
                    path: path.as_str().to_owned(),
                    rule: "not a file of the base".into(),
                });
            };
            edits.push((path.clone(), Node::File(edit.apply(path, file)?)));
        }
        for path in &self.removed {
            entries.remove(path);
        }
        entries.extend(copies);
        entries.extend(edits);
        let put = self.put.unpack(limits.max_manifest_bytes)?;
        entries.extend(put.into_iter().map(|e| (e.path, e.node)));
        let target = Manifest {
            format: MANIFEST_FORMAT,
            version: self.version,
            created_ms: self.created_ms,
            chunking: self.chunking,
            entries: entries
                .into_iter()
                .map(|(path, node)| Entry { path, node })
                .collect(),
        };
        target.validate(limits)?;
        let root = target.root();
        if root != self.target {
            return Err(ManifestError::Root {
                expected: self.target,
                found: root,
            });
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::mirror::chunk::chunk_bytes;
    use crate::mirror::testing::{manifest, random};

    fn p(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    fn none(_: &Hash) -> bool {
        false
    }

    #[test]
    fn a_rename_or_move_costs_no_chunk() {
        let big = random(3 << 20, 1);
        let small = random(5000, 2);
        let before = manifest(1, &[("a/big", &big), ("a/small", &small)]);
        let after = manifest(2, &[("b/c/big2", &big), ("small", &small)]);
        let plan = plan(&before, &after, &none);
        assert_eq!(plan.fetch_bytes, 0);
        assert!(plan.fetch.is_empty());
        assert_eq!(plan.reuse_bytes, (3 << 20) + 5000);
        let paths = |v: &[RelPath]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(paths(&plan.create), ["b", "b/c", "b/c/big2", "small"]);
        assert_eq!(paths(&plan.delete), ["a", "a/big", "a/small"]);
        assert!(plan.replace.is_empty());
    }

    #[test]
    fn an_edit_fetches_a_few_chunks_and_duplicates_cross_once() {
        let old = random(4 << 20, 3);
        let mut new = old.clone();
        new[2 << 20..(2 << 20) + 4096].copy_from_slice(&random(4096, 4));
        let extra = random(100_000, 5);
        let before = manifest(1, &[("f", &old)]);
        let after = manifest(2, &[("f", &new), ("x1", &extra), ("x2", &extra)]);
        let plan = plan(&before, &after, &none);
        assert!(plan.fetch_bytes >= 4096 + 100_000);
        assert!(
            plan.fetch_bytes <= 100_000 + 3 * (256 << 10),
            "{}",
            plan.fetch_bytes
        );
        assert_eq!(plan.replace, [p("f")]);
        // x2 is x1's content: its chunks are queued once.
        let x1 = chunk_bytes(&extra, ChunkParams::default()).unwrap();
        let queued = |h: &Hash| plan.fetch.iter().filter(|c| c.hash == *h).count();
        assert!(x1.chunks.iter().all(|c| queued(&c.hash) == 1));

        // Chunks already in the spool are not fetched again.
        let spooled: HashSet<Hash> = plan.fetch.iter().map(|c| c.hash).collect();
        let resumed = super::plan(&before, &after, &|h| spooled.contains(h));
        assert!(resumed.fetch.is_empty());
        assert!(!resumed.is_empty(), "files still to write");
    }

    #[test]
    fn deletions_and_no_change() {
        let a = random(1000, 6);
        let before = manifest(1, &[("d/a", &a), ("d/b", b"bb")]);
        let after = manifest(2, &[("d/a", &a)]);
        let plan1 = plan(&before, &after, &none);
        assert_eq!(plan1.delete, [p("d/b")]);
        assert_eq!(plan1.unchanged, 2);
        let same = plan(&after, &after, &none);
        assert!(same.is_empty());
    }

    #[test]
    fn an_append_fetches_only_the_bytes_after_the_old_last_chunk() {
        let old = random(4 << 20, 60);
        let mut big = old.clone();
        big.extend_from_slice(&random(1 << 20, 61));
        let small = random(5000, 62);
        let mut small_appended = small.clone();
        small_appended.extend_from_slice(b"one more line\n");
        let before = manifest(1, &[("big", &old), ("log", &small)]);
        let after = manifest(2, &[("big", &big), ("log", &small_appended)]);
        let plan = plan(&before, &after, &none);
        // Exactly the appended bytes cross; every byte of the old files is reused.
        assert_eq!(plan.fetch_bytes, (1 << 20) + 14);
        assert_eq!(plan.reuse_bytes, (4 << 20) + 5000);
        assert_eq!(plan.prefixes.len(), 2);
        let file = |m: &Manifest, path: &str| match &m.entry(&p(path)).unwrap().node {
            Node::File(f) => f.clone(),
            _ => unreachable!(),
        };
        let (was, now) = (file(&before, "big"), file(&after, "big"));
        let last = *was.chunks.last().unwrap();
        let extended = now.chunks[was.chunks.len() - 1];
        assert_eq!(
            plan.prefixes[&extended.hash],
            Prefix {
                chunk: last,
                path: p("big"),
                offset: was.size - u64::from(last.len),
            }
        );
        assert_eq!(
            plan.fetched_len(&extended),
            u64::from(extended.len - last.len)
        );
        // The one-chunk log grew within its chunk: its prefix is the whole old file.
        let log = file(&after, "log").chunks[0];
        assert_eq!(plan.prefixes[&log.hash].offset, 0);
        assert_eq!(plan.fetched_len(&log), 14);
        // Requests are cut by the bytes that cross.
        let asked: u64 = plan
            .batches(1 << 20, 4096)
            .flatten()
            .map(|c| plan.fetched_len(c))
            .sum();
        assert_eq!(asked, plan.fetch_bytes);

        // Resumed with the extended chunk spooled: nothing of it is asked for.
        let resumed = super::plan(&before, &after, &|h| *h == extended.hash);
        assert!(!resumed.prefixes.contains_key(&extended.hash));
        assert!(resumed.fetch.iter().all(|c| c.hash != extended.hash));
    }

    #[test]
    fn an_edit_in_the_middle_or_a_new_file_has_no_prefix() {
        let old = random(4 << 20, 63);
        let mut edited = old.clone();
        edited[2 << 20..(2 << 20) + 4096].copy_from_slice(&random(4096, 64));
        // Edited in the middle and appended to: the chunks before the old last one
        // differ, so it is not the append pattern.
        let mut both = edited.clone();
        both.extend_from_slice(&random(100_000, 65));
        let before = manifest(1, &[("a", &old), ("b", &old)]);
        let after = manifest(2, &[("a", &edited), ("b", &both), ("c", &random(9000, 66))]);
        let plan = plan(&before, &after, &none);
        assert!(plan.prefixes.is_empty(), "{:?}", plan.prefixes);
        assert_eq!(
            plan.fetch_bytes,
            plan.fetch.iter().map(|c| u64::from(c.len)).sum::<u64>()
        );
        // A file cut shorter, or replaced by a shorter one: no prefix either.
        let cut = manifest(3, &[("a", &old[..1 << 20]), ("b", b"tiny")]);
        assert!(super::plan(&before, &cut, &none).prefixes.is_empty());
    }

    #[test]
    fn many_small_files_pack_many_chunks_per_request() {
        let contents: Vec<Vec<u8>> = (0..1000).map(|i| random(4096, 100 + i)).collect();
        let names: Vec<String> = (0..1000).map(|i| format!("d{}/f{i}", i % 10)).collect();
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .zip(&contents)
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        let target = manifest(1, &files);
        let plan = plan(&Manifest::empty(ChunkParams::default()), &target, &none);
        assert_eq!(plan.fetch.len(), 1000);
        assert_eq!(plan.fetch_bytes, 4096 * 1000);
        let batches: Vec<&[ChunkRef]> = plan.batches(1 << 20, 4096).collect();
        assert_eq!(batches.len(), 4); // 256 files of 4 KiB per MiB
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 1000);
        // A chunk larger than a request still goes, alone.
        let big = manifest(1, &[("big", &random(1 << 20, 9))]);
        let big_plan = super::plan(&Manifest::empty(ChunkParams::default()), &big, &none);
        assert!(big_plan.batches(1000, 10).all(|b| b.len() == 1));
    }

    #[test]
    fn a_delta_rebuilds_the_target_and_is_small_for_a_move() {
        let contents: Vec<Vec<u8>> = (0..200).map(|i| random(3000, 500 + i)).collect();
        let names: Vec<(String, String)> = (0..200)
            .map(|i| (format!("old/f{i}"), format!("new/deeper/f{i}")))
            .collect();
        let files = |new: bool| -> Vec<(&str, &[u8])> {
            names
                .iter()
                .zip(&contents)
                .map(|((o, n), c)| (if new { n.as_str() } else { o.as_str() }, c.as_slice()))
                .collect()
        };
        let mut after_files = files(true);
        after_files.push(("added", b"new file"));
        let (before, after) = (manifest(1, &files(false)), manifest(2, &after_files));
        let delta = Delta::between(&before, &after);
        assert_eq!(delta.copied.len(), 200);
        assert_eq!(delta.put.len(), 3); // "added", "new", "new/deeper"
        let rebuilt = delta.apply(&before, &Limits::default()).unwrap();
        assert_eq!(rebuilt, after);
        let (delta_bytes, full) = (codec::encode(&delta).len(), after.encode().len());
        assert!(delta_bytes < full, "delta {delta_bytes} vs manifest {full}");

        // No change: a delta of a few dozen bytes.
        let none = Delta::between(&after, &after);
        assert!(codec::encode(&none).len() < 100);

        // Applied to another base, or tampered with, it is refused.
        assert!(matches!(
            delta.apply(&after, &Limits::default()),
            Err(ManifestError::Root { .. })
        ));
        let with = |d: &Delta, e: Entry| {
            let mut put = d.put.unpack(usize::MAX).unwrap();
            put.push(e);
            Delta {
                put: PackedEntries::pack(&put),
                ..d.clone()
            }
        };
        let forged = with(
            &delta,
            Entry {
                path: p("evil"),
                node: Node::Dir { mode: 0o755 },
            },
        );
        assert!(matches!(
            forged.apply(&before, &Limits::default()),
            Err(ManifestError::Root { .. })
        ));
        let escaping = with(
            &delta,
            Entry {
                path: codec::decode(&codec::encode("../evil"), "path").unwrap(),
                node: Node::Dir { mode: 0o755 },
            },
        );
        assert!(matches!(
            escaping.apply(&before, &Limits::default()),
            Err(ManifestError::Path { .. })
        ));
    }

    #[test]
    fn a_changed_large_file_crosses_as_its_changed_chunk_range() {
        let old = random(6 << 20, 40);
        let mut appended = old.clone();
        appended.extend_from_slice(&random(1 << 20, 41));
        let mut edited = old.clone();
        edited[3 << 20..(3 << 20) + 4096].copy_from_slice(&random(4096, 42));
        let before = manifest(1, &[("big", &old), ("other", b"x")]);
        for (name, new) in [("append", &appended), ("edit", &edited)] {
            let after = manifest(2, &[("big", new), ("other", b"x")]);
            let delta = Delta::between(&before, &after);
            assert_eq!(delta.edited.len(), 1, "{name}");
            assert!(delta.put.is_empty(), "{name}");
            let full = codec::encode(&Delta {
                edited: Vec::new(),
                put: PackedEntries::pack(&after.entries[..1]),
                ..delta.clone()
            })
            .len();
            let sent = codec::encode(&delta).len();
            assert!(sent * 4 < full, "{name}: {sent} bytes against {full}");
            assert_eq!(delta.apply(&before, &Limits::default()).unwrap(), after);
        }
    }

    #[test]
    fn a_chunk_list_edit_outside_the_base_is_refused() {
        let old = random(2 << 20, 43);
        let mut new = old.clone();
        new.extend_from_slice(&random(300_000, 44));
        let before = manifest(1, &[("big", &old), ("dir/f", b"y")]);
        let after = manifest(2, &[("big", &new), ("dir/f", b"y")]);
        let delta = Delta::between(&before, &after);
        let (path, edit) = delta.edited[0].clone();
        let base_len = match &before.entry(&path).unwrap().node {
            Node::File(f) => f.chunks.len() as u32,
            _ => unreachable!(),
        };
        let refused = |d: &Delta| match d.apply(&before, &Limits::default()) {
            Err(ManifestError::ChunkEdit { path, rule }) => format!("{path}: {rule}"),
            other => panic!("not refused: {other:?}"),
        };
        // Keeps more chunks than the base's file has.
        let mut outside = delta.clone();
        outside.edited[0].1.tail = base_len;
        assert!(refused(&outside).contains("from the end of a list of"));
        let mut overflow = delta.clone();
        overflow.edited[0].1.head = u32::MAX;
        overflow.edited[0].1.tail = u32::MAX;
        assert!(refused(&overflow).contains("list of"));
        // Edits a directory, or a path the base lacks.
        let mut not_file = delta.clone();
        not_file.edited[0].0 = p("dir");
        assert!(refused(&not_file).contains("not a file of the base"));
        let mut missing = delta.clone();
        missing.edited[0].0 = p("nope");
        assert!(refused(&missing).contains("not a file of the base"));
        // The same path twice.
        let mut twice = delta.clone();
        twice.edited.push((path, edit));
        assert!(refused(&twice).contains("twice or out of order"));
        // A plausible edit that does not give the announced target.
        let mut wrong = delta;
        wrong.edited[0].1.head -= 1;
        assert!(matches!(
            wrong.apply(&before, &Limits::default()),
            Err(ManifestError::Chunks { .. } | ManifestError::Root { .. })
        ));
    }

    #[test]
    fn a_delta_copying_a_base_file_past_the_limits_is_refused() {
        let big = random(3 << 20, 70);
        let before = manifest(1, &[("big", &big)]);
        // A hostile core: a few bytes of delta that copy the 3 MiB file a thousand times.
        let mut hostile = Delta::between(&before, &before);
        hostile.copied = (0..1000)
            .map(|i| (p("big"), p(&format!("copy-{i:04}"))))
            .collect();
        let refused = |limits: &Limits| match hostile.apply(&before, limits) {
            Err(e @ ManifestError::CopiesTooLarge { .. }) => e,
            other => panic!("not refused: {other:?}"),
        };
        let bytes = Limits {
            max_total_size: 1 << 30,
            ..Limits::default()
        };
        let ManifestError::CopiesTooLarge { bytes: copied, .. } = refused(&bytes) else {
            unreachable!()
        };
        assert!(
            copied > 1 << 30 && copied <= (1 << 30) + (3 << 20),
            "{copied}"
        );
        // Under the byte limit, over the chunk references a manifest of the size limit
        // carries.
        let chunks = Limits {
            max_manifest_bytes: 64 << 10,
            ..Limits::default()
        };
        let message = refused(&chunks).to_string();
        assert!(
            message.contains("chunks") && message.contains("delta copies"),
            "{message}"
        );
        // A delta within the limits still applies (and is then checked for its root).
        hostile.copied.truncate(3);
        assert!(matches!(
            hostile.apply(&before, &Limits::default()),
            Err(ManifestError::Root { .. })
        ));
    }

    #[test]
    fn packed_entries_round_trip_and_are_smaller() {
        let contents: Vec<Vec<u8>> = (0..300).map(|i| random(4096, 700 + i)).collect();
        let mut names: Vec<String> = (0..300)
            .map(|i| format!("cards/d{:03}/f-{i:05}.bin", i / 100))
            .collect();
        names.push("cards/é/ü".into());
        names.push("cards/é/üx".into());
        let mut files: Vec<(&str, &[u8])> = names
            .iter()
            .zip(&contents)
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        let big = random(600_000, 9);
        files.push(("cards/big", &big));
        let mut m = manifest(1, &files);
        for (i, e) in m.entries.iter_mut().enumerate() {
            if let Node::File(f) = &mut e.node {
                f.mtime_ns = 1_700_000_000_000_000_000 + i as i64 * 1_000_000 - 5_000_000;
            }
        }
        m.entries.push(Entry {
            path: p("link"),
            node: Node::Symlink {
                target: "cards/big".into(),
            },
        });
        let packed = PackedEntries::pack(&m.entries);
        assert_eq!(packed.len(), m.entries.len());
        assert_eq!(packed.unpack(usize::MAX).unwrap(), m.entries);
        let (plain, small) = (
            codec::encode(&m.entries).len(),
            codec::encode(&packed).len(),
        );
        assert!(
            small + 300 * 20 < plain,
            "packed {small} bytes against {plain}"
        );
    }

    #[test]
    fn bad_packed_entries_are_refused() {
        let m = manifest(1, &[("dir/a", b"one"), ("dir/b", b"two")]);
        let packed = PackedEntries::pack(&m.entries);
        // Paths growing past the bound.
        assert!(matches!(
            packed.unpack(8),
            Err(ManifestError::TooLarge { limit: 8, .. })
        ));
        // A path sharing more than the previous one has, or half a character.
        let mut more = packed.clone();
        more.0[1].shared = 100;
        assert!(matches!(
            more.unpack(usize::MAX),
            Err(ManifestError::Decode(_))
        ));
        let accented = PackedEntries::pack(&manifest(1, &[("é", b"x")]).entries);
        let mut split = accented.clone();
        split.0.push(PackedEntry {
            shared: 1,
            suffix: "x".into(),
            node: PackedNode::Dir { mode: 0o755 },
        });
        assert!(matches!(
            split.unpack(usize::MAX),
            Err(ManifestError::Decode(_))
        ));
        // A whole-content hash where a one-chunk file has none.
        let mut whole = packed;
        if let PackedNode::File { whole, .. } = &mut whole.0[1].node {
            *whole = Some(Hash::of(b"x"));
        }
        assert!(matches!(
            whole.unpack(usize::MAX),
            Err(ManifestError::Chunks { .. })
        ));
    }
}
