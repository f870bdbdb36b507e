//! Volume mirroring's decisions without IO: chunks and their hashes, validated paths,
//! manifests and their checks, plans and deltas, the core's pacing, the status model,
//! the mirror stream's frames, and a run's two ends as state machines: the edge's
//! ([`Fetch`]: fetch, refetch, re-plan) and the core's ([`Serve`]: what the edge may ask,
//! which chunk next, how fast).
//!
//! `protocol::mirror` re-exports all of it beside the parts that read and write files
//! (the core's scanner and source, the edge's spool and replica); `protocol::link`
//! carries the frames. Nothing here touches the file system or reads the clock: the
//! chunker reads from a reader it is handed, and the pacing and status are handed the
//! time.

mod chunk;
mod fetch;
mod manifest;
mod pace;
pub mod path;
mod plan;
mod serve;
mod status;
mod wire;

pub use chunk::{ChunkParams, ChunkRef, Chunked, Hash, chunk_bytes, chunk_reader};
pub use fetch::{Again, Arrived, Due, Fetch, MAX_REFETCH, MAX_REPLANS, RunFailed, Target, Verdict};
pub use manifest::{Entry, FileNode, Limits, MANIFEST_FORMAT, Manifest, ManifestError, Node};
pub use pace::{
    INITIAL_WINDOW, MAX_REPORT, MAX_WINDOW, MIN_REPORT, MIN_WINDOW, Pace, PaceError, PathNow,
    TARGET_QUEUE, target_queue,
};
pub use path::{MAX_NAME, MAX_PATH, PathError, PathRule, RelPath};
pub use plan::{Delta, FileEdit, PackedEntries, Plan, Prefix, plan};
pub use serve::{Asked, Ready, Serve};
pub use status::{MirrorState, MirrorStatus};
pub use wire::{
    ChunkTable, FetchError, MANIFEST_PART, MAX_REQUEST, ManifestAssembly, MirrorFrame,
    RefusedManifest, fetch_runs, manifest_frames,
};

/// Test data for the modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    /// `len` bytes of seeded noise (xorshift), which the chunker cuts as it would real data.
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

    /// A manifest of `files` (path, content); directories are added as needed.
    pub(crate) fn manifest(version: u64, files: &[(&str, &[u8])]) -> super::Manifest {
        use super::{ChunkParams, Entry, FileNode, Manifest, Node, RelPath, chunk_bytes};
        let mut entries = std::collections::BTreeMap::new();
        for (path, content) in files {
            let path = RelPath::new(*path).unwrap();
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
}
