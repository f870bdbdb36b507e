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
//! | 2 | `Request` | edge → core | up to [`MAX_REQUEST`] chunk hashes; the core answers each, in order |
//! | 3 | `Chunk` | core → edge | one requested chunk |
//! | 4 | `Gone` | core → edge | a requested chunk the core can no longer serve (its file changed): the edge re-plans |
//! | 5 | `Done` | edge → core | the edge applied the target (or stops): the core may end the stream |
//! | 6 | `Refused` | core → edge | the core cannot serve a mirror (no volume, volume unreadable), with why |
//!
//! Nothing from the core is trusted: [`ManifestAssembly`] bounds the bytes it buffers
//! before taking them, and checks the result with [`Manifest::decode`] or
//! [`Delta::apply`] and the announced root; chunks are checked by the transfer (asked for,
//! at most `max_chunk` bytes) and by their hash in [`super::ReplicaVolume::receive`].
//!
//! IO: none.

use serde::{Deserialize, Serialize};

use super::chunk::Hash;
use super::manifest::{Limits, Manifest, ManifestError};
use super::plan::Delta;
use crate::codec;

/// Largest manifest part in one frame.
pub const MANIFEST_PART: usize = 1 << 20;

/// Most hashes in one [`MirrorFrame::Request`].
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
    /// 2: edge → core: send these chunks.
    Request {
        /// The chunks, at most [`MAX_REQUEST`].
        hashes: Vec<Hash>,
    },
    /// 3: core → edge: a requested chunk.
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
        }
    }
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
}
