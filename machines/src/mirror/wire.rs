//! The mirror stream's frames, and the edge's checks on what the core sends.
//!
//! A mirror run is one bidirectional QUIC stream, opened by the edge at the lowest
//! priority (below entries and control, see `link/mirror.rs`). Frames are framed like the
//! link's ([`crate::wire::encode_value`]: a varint length, then the value in the codec,
//! at most [`crate::wire::MAX_FRAME`]), but they are their own enum: a mirror frame on a
//! replication stream, or the reverse, cannot even decode as the wrong kind.
//!
//! Frame numbers (postcard encodes the variant's index, so the order below is the
//! number; numbers are never reused):
//!
//! | # | frame | way | meaning |
//! | --- | --- | --- | --- |
//! | 0 | `Start` | edge → core | the roots the edge holds (current, and the target it is resuming) and its rate cap: send the current manifest |
//! | 1 | `Manifest` | core → edge | one part (≤ [`MANIFEST_PART`]) of the encoded target: a [`Delta`] from `base`, or the whole [`Manifest`] when `base` is `None` |
//! | 2 | `Request` | edge → core | retired (chunks by hash): refused; `Fetch` replaced it |
//! | 3 | `Chunk` | core → edge | retired (a chunk with its hash): refused; `Data` replaced it |
//! | 4 | `Gone` | core → edge | a requested chunk the core can no longer serve (its file changed): the edge re-plans |
//! | 5 | `Done` | edge → core | the edge applied the target (or stops): the core may end the stream |
//! | 6 | `Refused` | core → edge | the core cannot serve a mirror (no volume, volume unreadable), with why |
//! | 7 | `Fetch` | edge → core | up to [`MAX_REQUEST`] chunks, by their [`position`](ChunkTable) in the last manifest sent on the stream, as runs; the core answers each, in order |
//! | 8 | `Data` | core → edge | the next chunk asked for: its bytes only, as the edge knows which chunk is due and checks its hash |
//! | 9 | `Received` | edge → core | the stream bytes the edge has read so far: the core's pacing (`mirror/pace.rs`) |
//! | 10 | `ReportEvery` | core → edge | how many bytes the edge should read between two `Received` |
//! | 11 | `FetchFrom` | edge → core | a `Fetch` in which some chunks, named by their index in it, are asked for from a byte offset on: their `Data` holds the bytes after it (the edge holds the start, see [`super::Prefix`]) |
//!
//! Why positions and no hashes on the way: the manifest already names every chunk with
//! its hash; a request by position costs a few bytes for a whole run of chunks instead of
//! 32 bytes each, and a chunk needs no name to be checked against the one asked for.
//! For 4 KiB files that is 64 bytes, 1.5 %, less on the link per file.
//!
//! Nothing from the core is trusted: [`ManifestAssembly`] bounds the bytes it buffers
//! before taking them, and checks the result with [`Manifest::decode`] or
//! [`Delta::apply`] and the announced root; chunks are checked by the transfer (asked for,
//! at most `max_chunk` bytes) and by their hash in [`super::ReplicaVolume::receive`].
//! Nothing from the edge is trusted either: [`ChunkTable::resolve`] refuses a `Fetch`
//! of more than [`MAX_REQUEST`] chunks, an empty run or a position outside the manifest,
//! [`ChunkTable::resolve_from`] also an offset at or past its chunk's end or naming no
//! chunk of the request, and a `Received` that goes back or past what was written ends
//! the stream.
//!
//! IO: none.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::chunk::{ChunkRef, Hash};
use super::manifest::{Limits, Manifest, ManifestError};
use super::plan::Delta;
use crate::codec;

/// Largest manifest part in one frame.
pub const MANIFEST_PART: usize = 1 << 20;

/// Most chunks in one [`MirrorFrame::Fetch`].
pub const MAX_REQUEST: usize = 4096;

/// One frame of the mirror stream; see the module doc for the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MirrorFrame {
    /// 0: edge → core: what the edge holds; asks for the current manifest.
    Start {
        /// Root of the edge's current version.
        have_root: Hash,
        /// Its version.
        have_version: u64,
        /// Root of the target the edge is part way through, if any.
        target_root: Option<Hash>,
        /// The edge operator's cap on the mirror's chunk bytes per second, if any.
        max_rate: Option<u64>,
    },
    /// 1: core → edge: one part of the target manifest.
    Manifest {
        /// The target's root (the same in every part).
        root: Hash,
        /// `Some(b)`: the parts form a [`Delta`] from the manifest with root `b` (one the
        /// edge said it holds); `None`: the whole [`Manifest`].
        base: Option<Hash>,
        /// Total encoded bytes of all parts (the same in every part).
        total: u64,
        /// Whether this is the last part.
        last: bool,
        /// This part's bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// 2: retired (edge → core: chunks by hash); refused.
    Request {
        /// The chunks, at most [`MAX_REQUEST`].
        hashes: Vec<Hash>,
    },
    /// 3: retired (core → edge: a chunk and its hash); refused.
    Chunk {
        /// Its name.
        hash: Hash,
        /// Its bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// 4: core → edge: a requested chunk that cannot be served any more.
    Gone {
        /// Its name.
        hash: Hash,
    },
    /// 5: edge → core: the run is over.
    Done,
    /// 6: core → edge: no mirror can be served; why.
    Refused {
        /// For the operator.
        reason: String,
    },
    /// 7: edge → core: send these chunks of the last manifest sent on the stream.
    Fetch {
        /// The chunks' positions ([`ChunkTable`]) as runs: `(gap, count)` is `count`
        /// positions starting `gap` after the end of the previous run (the first run
        /// starts at `gap`). At most [`MAX_REQUEST`] chunks in all.
        runs: Vec<(u64, u32)>,
    },
    /// 8: core → edge: the next chunk asked for.
    Data {
        /// Its bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// 9: edge → core: the bytes of the stream the edge has read so far.
    Received {
        /// Every byte of the core's frames on this stream, headers included.
        bytes: u64,
    },
    /// 10: core → edge: send `Received` after about this many bytes read.
    ReportEvery {
        /// The interval in bytes.
        bytes: u64,
    },
    /// 11: edge → core: as `Fetch`, with some chunks from a byte offset on.
    FetchFrom {
        /// As in `Fetch`.
        runs: Vec<(u64, u32)>,
        /// `(index, offset)`: the chunk asked for `index`-th (from 0, in the order of
        /// `runs`) is sent from byte `offset` on, which is inside it. Indexes increase.
        from: Vec<(u32, u32)>,
    },
}

impl MirrorFrame {
    /// The frame's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            MirrorFrame::Start { .. } => "mirror start",
            MirrorFrame::Manifest { .. } => "manifest part",
            MirrorFrame::Request { .. } => "chunk request",
            MirrorFrame::Chunk { .. } => "chunk",
            MirrorFrame::Gone { .. } => "chunk gone",
            MirrorFrame::Done => "mirror done",
            MirrorFrame::Refused { .. } => "mirror refused",
            MirrorFrame::Fetch { .. } => "chunk fetch",
            MirrorFrame::Data { .. } => "chunk data",
            MirrorFrame::Received { .. } => "received report",
            MirrorFrame::ReportEvery { .. } => "report interval",
            MirrorFrame::FetchFrom { .. } => "chunk fetch from offsets",
        }
    }
}

/// The chunks of a manifest by position: every file's chunk references in entry order,
/// counted from 0 (a chunk used twice has two positions). Both ends compute it from the
/// same manifest, so a position names a chunk without its hash.
#[derive(Debug, Clone, Default)]
pub struct ChunkTable {
    /// For each file with chunks: its first position and its entry's index.
    starts: Vec<(u64, usize)>,
    len: u64,
}

/// A [`MirrorFrame::Fetch`] the core refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// More chunks than [`MAX_REQUEST`].
    #[error("a fetch of more than {MAX_REQUEST} chunks")]
    TooMany,
    /// A run of no chunk.
    #[error("a fetch with an empty run")]
    EmptyRun,
    /// A position past the manifest's last chunk.
    #[error("a fetch of chunk position {position}, outside the manifest's {len} chunks")]
    Outside {
        /// The position asked for.
        position: u64,
        /// Chunks in the manifest.
        len: u64,
    },
    /// An offset for a chunk the request does not have, or out of order.
    #[error(
        "a fetch with an offset for its chunk {index}, not after the last one and among its {count}"
    )]
    FromIndex {
        /// The index given.
        index: u32,
        /// Chunks in the request.
        count: usize,
    },
    /// An offset at or past the end of its chunk.
    #[error(
        "a fetch of chunk position {position} from byte {offset}, at or past its end ({len} bytes)"
    )]
    FromOutside {
        /// The chunk's position.
        position: u64,
        /// The offset asked for.
        offset: u32,
        /// The chunk's length.
        len: u32,
    },
}

impl ChunkTable {
    /// The table of `manifest`.
    pub fn new(manifest: &Manifest) -> ChunkTable {
        let mut table = ChunkTable::default();
        for (i, entry) in manifest.entries.iter().enumerate() {
            if let super::manifest::Node::File(file) = &entry.node
                && !file.chunks.is_empty()
            {
                table.starts.push((table.len, i));
                table.len += file.chunks.len() as u64;
            }
        }
        table
    }

    /// Chunk positions in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the manifest has no chunk.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk at `position` of `manifest` (the one the table was built from).
    pub fn get(&self, manifest: &Manifest, position: u64) -> Option<ChunkRef> {
        let at = self.starts.partition_point(|(start, _)| *start <= position);
        let (start, entry) = *self.starts.get(at.checked_sub(1)?)?;
        match &manifest.entries.get(entry)?.node {
            super::manifest::Node::File(file) => file
                .chunks
                .get(usize::try_from(position - start).ok()?)
                .copied(),
            _ => None,
        }
    }

    /// The chunks a `FetchFrom` asks for, in order, each with the offset to send it from
    /// (0: whole): checked as by [`ChunkTable::resolve`], and each offset against its
    /// chunk (inside it) and the request (a chunk of it, indexes increasing).
    pub fn resolve_from(
        &self,
        manifest: &Manifest,
        runs: &[(u64, u32)],
        from: &[(u32, u32)],
    ) -> Result<Vec<(ChunkRef, u32)>, FetchError> {
        let chunks = self.resolve(manifest, runs)?;
        let mut out: Vec<(ChunkRef, u32)> = chunks.into_iter().map(|c| (c, 0)).collect();
        let mut next = 0usize;
        let count = out.len();
        for &(index, offset) in from {
            let i = index as usize;
            let Some((chunk, at)) = out.get_mut(i).filter(|_| i >= next) else {
                return Err(FetchError::FromIndex { index, count });
            };
            if offset >= chunk.len {
                // The position, for the error: counted again through the runs.
                let position = positions(runs).nth(i).unwrap_or(u64::MAX);
                return Err(FetchError::FromOutside {
                    position,
                    offset,
                    len: chunk.len,
                });
            }
            *at = offset;
            next = i + 1;
        }
        Ok(out)
    }

    /// The chunks a `Fetch` asks for, in order: checked against [`MAX_REQUEST`] and the
    /// manifest before anything is read.
    pub fn resolve(
        &self,
        manifest: &Manifest,
        runs: &[(u64, u32)],
    ) -> Result<Vec<ChunkRef>, FetchError> {
        let mut total = 0usize;
        for (_, count) in runs {
            if *count == 0 {
                return Err(FetchError::EmptyRun);
            }
            total = total.saturating_add(*count as usize);
            if total > MAX_REQUEST {
                return Err(FetchError::TooMany);
            }
        }
        let mut out = Vec::with_capacity(total);
        let mut next = 0u64;
        for (gap, count) in runs {
            let outside = |position| FetchError::Outside {
                position,
                len: self.len,
            };
            let start = next.checked_add(*gap).ok_or(outside(u64::MAX))?;
            let end = start
                .checked_add(u64::from(*count))
                .ok_or(outside(u64::MAX))?;
            if end > self.len {
                return Err(outside(end - 1));
            }
            for position in start..end {
                out.push(self.get(manifest, position).ok_or(outside(position))?);
            }
            next = end;
        }
        Ok(out)
    }

    /// Each chunk's first position in `manifest`, by hash (the edge's side).
    pub fn first_positions(manifest: &Manifest) -> HashMap<Hash, u64> {
        let mut out = HashMap::new();
        let mut position = 0u64;
        for (_, file) in manifest.files() {
            for chunk in &file.chunks {
                out.entry(chunk.hash).or_insert(position);
                position += 1;
            }
        }
        out
    }
}

/// The positions `runs` name (runs already resolved: no overflow).
fn positions(runs: &[(u64, u32)]) -> impl Iterator<Item = u64> + '_ {
    let mut next = 0u64;
    runs.iter().flat_map(move |(gap, count)| {
        let start = next.saturating_add(*gap);
        next = start.saturating_add(u64::from(*count));
        start..next
    })
}

/// `positions` (increasing, each once) as the runs of a [`MirrorFrame::Fetch`].
pub fn fetch_runs(positions: &[u64]) -> Vec<(u64, u32)> {
    let mut runs: Vec<(u64, u32)> = Vec::new();
    let mut next = 0u64;
    for &p in positions {
        match runs.last_mut() {
            Some((_, count)) if p == next && *count < u32::MAX => *count += 1,
            _ => runs.push((p.saturating_sub(next), 1)),
        }
        next = p + 1;
    }
    runs
}

/// Cuts a target for the link: a delta from `base` if given, else the whole manifest,
/// in parts of at most [`MANIFEST_PART`] bytes (at least one part).
pub fn manifest_frames(target: &Manifest, base: Option<&Manifest>) -> Vec<MirrorFrame> {
    let root = target.root();
    let (base_root, bytes) = match base {
        Some(base) => (
            Some(base.root()),
            codec::encode(&Delta::between(base, target)),
        ),
        None => (None, target.encode()),
    };
    let total = bytes.len() as u64;
    let mut parts: Vec<&[u8]> = bytes.chunks(MANIFEST_PART).collect();
    if parts.is_empty() {
        parts.push(&[]);
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| MirrorFrame::Manifest {
            root,
            base: base_root,
            total,
            last: i + 1 == n,
            bytes: part.to_vec(),
        })
        .collect()
}

/// A manifest from the core that breaks the rules: the mirror fails, nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedManifest {
    /// It says it is larger than [`Limits::max_manifest_bytes`].
    #[error("the core's manifest of {total} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The size announced.
        total: u64,
        /// The limit.
        limit: usize,
    },
    /// Its parts do not add up: a root, base or total that changes, more bytes than
    /// announced, or a last part short of the total.
    #[error("the core's manifest parts are inconsistent: {0}")]
    Parts(&'static str),
    /// A delta from a manifest the edge does not hold.
    #[error("the core sent a delta from {0}, which this edge does not hold")]
    UnknownBase(Hash),
    /// The manifest (or the delta) breaks a rule.
    #[error("the core's manifest is refused: {0}")]
    Invalid(#[from] ManifestError),
    /// The manifest is valid but its root is not the one announced.
    #[error("the core's manifest has root {found}, not the {announced} it announced")]
    Root {
        /// Announced in the frames.
        announced: Hash,
        /// Computed.
        found: Hash,
    },
}

/// The edge's assembly of a target manifest from [`MirrorFrame::Manifest`] parts.
#[derive(Debug, Default)]
pub struct ManifestAssembly {
    head: Option<(Hash, Option<Hash>, u64)>,
    bytes: Vec<u8>,
}

impl ManifestAssembly {
    /// Takes one part; `Ok(true)` once the last one is in. The size is checked against
    /// `limits` before anything is buffered.
    pub fn push(
        &mut self,
        root: Hash,
        base: Option<Hash>,
        total: u64,
        last: bool,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<bool, RefusedManifest> {
        if total > limits.max_manifest_bytes as u64 {
            return Err(RefusedManifest::TooLarge {
                total,
                limit: limits.max_manifest_bytes,
            });
        }
        match self.head {
            None => self.head = Some((root, base, total)),
            Some(head) if head != (root, base, total) => {
                return Err(RefusedManifest::Parts("root, base or total changed"));
            }
            Some(_) => {}
        }
        if self.bytes.len() as u64 + bytes.len() as u64 > total {
            return Err(RefusedManifest::Parts("more bytes than announced"));
        }
        self.bytes.extend_from_slice(bytes);
        if last && self.bytes.len() as u64 != total {
            return Err(RefusedManifest::Parts("fewer bytes than announced"));
        }
        Ok(last)
    }

    /// The target, once complete: decoded, rebuilt from `holds` (the manifests the edge
    /// holds, for a delta), validated against `limits`, its root checked.
    pub fn finish(self, holds: &[&Manifest], limits: &Limits) -> Result<Manifest, RefusedManifest> {
        let Some((root, base, _)) = self.head else {
            return Err(RefusedManifest::Parts("no part"));
        };
        let manifest = match base {
            None => Manifest::decode(&self.bytes, limits)?,
            Some(base) => {
                let from = holds
                    .iter()
                    .find(|m| m.root() == base)
                    .ok_or(RefusedManifest::UnknownBase(base))?;
                let delta: Delta = codec::decode(&self.bytes, "manifest delta")
                    .map_err(|e| ManifestError::Decode(e.to_string()))?;
                if delta.target != root {
                    return Err(RefusedManifest::Root {
                        announced: root,
                        found: delta.target,
                    });
                }
                delta.apply(from, limits)?
            }
        };
        let found = manifest.root();
        if found != root {
            return Err(RefusedManifest::Root {
                announced: root,
                found,
            });
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::{ChunkParams, ChunkRef, Entry, FileNode, Node, RelPath};
    use crate::wire::{FrameReader, encode_value};

    fn manifest(files: &[(&str, &[u8])]) -> Manifest {
        let mut m = Manifest::empty(ChunkParams::default());
        m.version = 7;
        for (path, content) in files {
            let hash = Hash::of(content);
            let chunk = ChunkRef {
                hash,
                len: content.len() as u32,
            };
            m.entries.push(Entry {
                path: RelPath::new(*path).unwrap(),
                node: Node::File(FileNode::new(0o644, 0, vec![chunk], hash)),
            });
        }
        m
    }

    fn assemble(
        frames: Vec<MirrorFrame>,
        holds: &[&Manifest],
    ) -> Result<Manifest, RefusedManifest> {
        let limits = Limits::default();
        let mut assembly = ManifestAssembly::default();
        for frame in frames {
            let MirrorFrame::Manifest {
                root,
                base,
                total,
                last,
                bytes,
            } = frame
            else {
                panic!("not a manifest part");
            };
            if assembly.push(root, base, total, last, &bytes, &limits)? {
                return assembly.finish(holds, &limits);
            }
        }
        panic!("no last part")
    }

    #[test]
    fn frames_round_trip_through_the_link_framing() {
        let frames = vec![
            MirrorFrame::Start {
                have_root: Hash::of(b"a"),
                have_version: 3,
                target_root: None,
                max_rate: Some(1000),
            },
            MirrorFrame::Request {
                hashes: vec![Hash::of(b"x"), Hash::of(b"y")],
            },
            MirrorFrame::Chunk {
                hash: Hash::of(b"x"),
                bytes: b"x".to_vec(),
            },
            MirrorFrame::Gone {
                hash: Hash::of(b"y"),
            },
            MirrorFrame::Done,
            MirrorFrame::Fetch {
                runs: vec![(0, 3), (10, 1)],
            },
            MirrorFrame::Data {
                bytes: b"chunk".to_vec(),
            },
            MirrorFrame::Received { bytes: 1 << 40 },
            MirrorFrame::ReportEvery { bytes: 4096 },
            MirrorFrame::FetchFrom {
                runs: vec![(0, 3)],
                from: vec![(2, 70_000)],
            },
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            encode_value(f, &mut bytes);
        }
        let mut reader = FrameReader::default();
        reader.push(&bytes);
        for f in &frames {
            assert_eq!(
                reader.next_value::<MirrorFrame>().unwrap().as_ref(),
                Some(f)
            );
        }
    }

    #[test]
    fn full_and_delta_manifests_assemble() {
        let old = manifest(&[("a", b"one"), ("b", b"two")]);
        let mut new = manifest(&[("a", b"one"), ("c", b"two")]);
        new.version = 8;
        assert_eq!(assemble(manifest_frames(&new, None), &[]).unwrap(), new);
        let delta = manifest_frames(&new, Some(&old));
        assert_eq!(assemble(delta.clone(), &[&old]).unwrap(), new);
        assert!(matches!(
            assemble(delta, &[&new]),
            Err(RefusedManifest::UnknownBase(_))
        ));
    }

    #[test]
    fn bad_parts_are_refused_before_buffering() {
        let limits = Limits {
            max_manifest_bytes: 100,
            ..Limits::default()
        };
        let root = Hash::of(b"r");
        let mut a = ManifestAssembly::default();
        assert!(matches!(
            a.push(root, None, 1 << 40, false, b"", &limits),
            Err(RefusedManifest::TooLarge { .. })
        ));
        let mut a = ManifestAssembly::default();
        a.push(root, None, 10, false, b"12345", &limits).unwrap();
        assert!(matches!(
            a.push(root, None, 10, false, b"123456", &limits),
            Err(RefusedManifest::Parts(_))
        ));
        let mut a = ManifestAssembly::default();
        a.push(root, None, 10, false, b"12345", &limits).unwrap();
        assert!(matches!(
            a.push(Hash::of(b"other"), None, 10, true, b"12345", &limits),
            Err(RefusedManifest::Parts(_))
        ));
        // A valid manifest announced under another root.
        let m = manifest(&[("a", b"one")]);
        let mut frames = manifest_frames(&m, None);
        if let MirrorFrame::Manifest { root, .. } = &mut frames[0] {
            *root = Hash::of(b"lie");
        }
        assert!(matches!(
            assemble(frames, &[]),
            Err(RefusedManifest::Root { .. })
        ));
    }

    #[test]
    fn chunks_are_fetched_by_position_in_runs() {
        let m = manifest(&[("a", b"one"), ("b", b"two"), ("c", b"three"), ("d", b"one")]);
        let table = ChunkTable::new(&m);
        assert_eq!(table.len(), 4);
        let hashes: Vec<Hash> = (0..4).map(|p| table.get(&m, p).unwrap().hash).collect();
        assert_eq!(hashes[1], Hash::of(b"two"));
        assert_eq!(table.get(&m, 4), None);
        // "one" is at 0 and 3: its first position names it.
        let first = ChunkTable::first_positions(&m);
        assert_eq!(first[&Hash::of(b"one")], 0);
        assert_eq!(first[&Hash::of(b"three")], 2);

        let runs = fetch_runs(&[1, 2, 3]);
        assert_eq!(runs, [(1, 3)]);
        let runs = fetch_runs(&[0, 2, 3]);
        assert_eq!(runs, [(0, 1), (1, 2)]);
        let got: Vec<Hash> = table
            .resolve(&m, &runs)
            .unwrap()
            .iter()
            .map(|c| c.hash)
            .collect();
        assert_eq!(got, [hashes[0], hashes[2], hashes[3]]);

        // A run of 10,000 contiguous chunks costs a few bytes.
        assert!(
            codec::encode(&MirrorFrame::Fetch {
                runs: fetch_runs(&(5..4101).collect::<Vec<_>>())
            })
            .len()
                < 10
        );
    }

    #[test]
    fn a_fetch_outside_the_manifest_or_too_large_is_refused() {
        let m = manifest(&[("a", b"one"), ("b", b"two")]);
        let table = ChunkTable::new(&m);
        assert_eq!(
            table.resolve(&m, &[(2, 1)]),
            Err(FetchError::Outside {
                position: 2,
                len: 2
            })
        );
        assert_eq!(
            table.resolve(&m, &[(1, 1), (0, 1)]),
            Err(FetchError::Outside {
                position: 2,
                len: 2
            })
        );
        assert!(matches!(
            table.resolve(&m, &[(u64::MAX, 1)]),
            Err(FetchError::Outside { .. })
        ));
        assert!(matches!(
            table.resolve(&m, &[(0, 1), (u64::MAX, 2)]),
            Err(FetchError::Outside { .. })
        ));
        assert_eq!(table.resolve(&m, &[(0, 0)]), Err(FetchError::EmptyRun));
        assert_eq!(
            table.resolve(&m, &[(0, MAX_REQUEST as u32), (0, 1)]),
            Err(FetchError::TooMany)
        );
        assert_eq!(
            table.resolve(&m, &[(0, u32::MAX), (0, u32::MAX)]),
            Err(FetchError::TooMany)
        );
        // An empty manifest has no position at all (from an offset or not).
        let empty = Manifest::empty(ChunkParams::default());
        assert!(ChunkTable::new(&empty).is_empty());
        assert!(matches!(
            ChunkTable::new(&empty).resolve(&empty, &[(0, 1)]),
            Err(FetchError::Outside { .. })
        ));
        assert!(matches!(
            ChunkTable::new(&empty).resolve_from(&empty, &[(0, 1)], &[(0, 1)]),
            Err(FetchError::Outside { .. })
        ));
    }

    #[test]
    fn chunks_are_fetched_from_an_offset_inside_them() {
        let m = manifest(&[("a", b"one"), ("b", b"two!"), ("c", b"three")]);
        let table = ChunkTable::new(&m);
        let got = table
            .resolve_from(&m, &[(1, 2)], &[(0, 3), (1, 1)])
            .unwrap();
        let sizes: Vec<(u32, u32)> = got.iter().map(|(c, from)| (c.len, *from)).collect();
        assert_eq!(sizes, [(4, 3), (5, 1)]);
        // No offsets: whole chunks, as `resolve` gives them.
        let whole = table.resolve_from(&m, &[(0, 3)], &[]).unwrap();
        assert!(whole.iter().all(|(_, from)| *from == 0));
        assert_eq!(
            whole.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            table.resolve(&m, &[(0, 3)]).unwrap()
        );
    }

    #[test]
    fn a_fetch_from_a_bad_offset_is_refused() {
        let m = manifest(&[("a", b"one"), ("b", b"two!"), ("c", b"three")]);
        let table = ChunkTable::new(&m);
        // At or beyond the chunk's end: the message names the position and the length.
        for offset in [4, 5, u32::MAX] {
            let err = table
                .resolve_from(&m, &[(0, 1), (0, 2)], &[(1, offset)])
                .unwrap_err();
            assert_eq!(
                err,
                FetchError::FromOutside {
                    position: 1,
                    offset,
                    len: 4
                }
            );
            assert!(
                err.to_string().contains(&format!(
                    "position 1 from byte {offset}, at or past its end"
                )),
                "{err}"
            );
        }
        // An index past the request's chunks, twice the same, or going back.
        for from in [&[(2, 1)][..], &[(0, 1), (0, 1)], &[(1, 1), (0, 1)]] {
            assert!(
                matches!(
                    table.resolve_from(&m, &[(0, 2)], from),
                    Err(FetchError::FromIndex { count: 2, .. })
                ),
                "{from:?}"
            );
        }
        // The runs are checked as in a `Fetch`.
        assert_eq!(
            table.resolve_from(&m, &[(0, 0)], &[(0, 1)]),
            Err(FetchError::EmptyRun)
        );
    }
}
