//! What a mirror must do: the [`Plan`] (chunks to fetch, paths to create, replace and
//! delete) from the edge's current manifest to a target one, and the [`Delta`] that
//! carries a target manifest as changes to one the edge already holds.
//!
//! Chunks are deduplicated across the whole volume: a chunk the edge holds anywhere (in
//! any file of its current version, or already in its spool) is never fetched, so a
//! rename or a move costs no chunk, and a chunk shared by many files crosses once.
//!
//! IO: none.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::chunk::{ChunkParams, ChunkRef, Hash};
use super::manifest::{Entry, Limits, MANIFEST_FORMAT, Manifest, ManifestError, Node};
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
    /// Sum of `fetch` lengths: the payload that must cross the link.
    pub fetch_bytes: u64,
    /// Bytes of new or changed files that come from chunks already held.
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
        if old.get(&entry.path) == Some(&&entry.node) {
            continue;
        }
        for chunk in &file.chunks {
            if local.contains(&chunk.hash) || held(&chunk.hash) {
                out.reuse_bytes += u64::from(chunk.len);
            } else if queued.insert(chunk.hash) {
                out.fetch.push(*chunk);
                out.fetch_bytes += u64::from(chunk.len);
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

impl Plan {
    /// Whether the edge already has the target.
    pub fn is_empty(&self) -> bool {
        self.fetch.is_empty()
            && self.create.is_empty()
            && self.replace.is_empty()
            && self.delete.is_empty()
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
                let len = u64::from(rest[n].len);
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
    pub put: Vec<Entry>,
}

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
            put: Vec::new(),
        };
        for e in &target.entries {
            if old.get(&e.path) == Some(&&e.node) {
                continue;
            }
            match sources.get(&e.node) {
                Some(from) => delta.copied.push(((*from).clone(), e.path.clone())),
                None => delta.put.push(e.clone()),
            }
        }
        delta
    }

    /// Rebuilds the target from `base`, validates it against `limits`, and checks its
    /// root. Nothing of `base` is changed.
    pub fn apply(&self, base: &Manifest, limits: &Limits) -> Result<Manifest, ManifestError> {
        let base_root = base.root();
        if base_root != self.base {
            return Err(ManifestError::Root {
                expected: self.base,
                found: base_root,
            });
        }
        let growth = self.copied.len().saturating_add(self.put.len());
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
        let mut copies = Vec::with_capacity(self.copied.len());
        for (from, to) in &self.copied {
            let Some(Node::File(file)) = base.entry(from).map(|e| &e.node) else {
                return Err(ManifestError::CopySource {
                    from: from.as_str().to_owned(),
                });
            };
            copies.push((to.clone(), Node::File(file.clone())));
        }
        for path in &self.removed {
            entries.remove(path);
        }
        entries.extend(copies);
        entries.extend(self.put.iter().map(|e| (e.path.clone(), e.node.clone())));
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
    use crate::mirror::manifest::FileNode;
    use crate::mirror::scan::tests::random;

    fn p(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    /// A manifest of `files` (path, content); directories are added as needed.
    fn manifest(version: u64, files: &[(&str, &[u8])]) -> Manifest {
        let mut entries = BTreeMap::new();
        for (path, content) in files {
            let path = p(path);
            let mut parent = path.parent();
            while let Some(dir) = parent {
                parent = dir.parent();
                entries.insert(dir, Node::Dir { mode: 0o755 });
            }
            let c = chunk_bytes(content, ChunkParams::default()).unwrap();
            entries.insert(path, Node::File(FileNode::new(0o644, 7, c.chunks, c.hash)));
        }
        Manifest {
            version,
            entries: entries
                .into_iter()
                .map(|(path, node)| Entry { path, node })
                .collect(),
            ..Manifest::empty(ChunkParams::default())
        }
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
        let mut forged = delta.clone();
        forged.put.push(Entry {
            path: p("evil"),
            node: Node::Dir { mode: 0o755 },
        });
        assert!(matches!(
            forged.apply(&before, &Limits::default()),
            Err(ManifestError::Root { .. })
        ));
        let mut escaping = delta;
        escaping.put.push(Entry {
            path: codec::decode(&codec::encode("../evil"), "path").unwrap(),
            node: Node::Dir { mode: 0o755 },
        });
        assert!(matches!(
            escaping.apply(&before, &Limits::default()),
            Err(ManifestError::Path { .. })
        ));
    }
}
