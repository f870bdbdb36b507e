//! Volume mirroring, the file side: chunking, manifests, plans, the core's scanner and
//! watcher, the edge's spool and atomic apply, and the status model.
//!
//! Data flow (the transfer over the link is `link/mirror.rs`, see "Frames" below):
//!
//! - **Core.** [`SourceVolume`] watches the mission volume (notify) and keeps a
//!   [`Manifest`] current, re-hashing only paths that changed (`scan`: a stat cache and
//!   stable reads). It serves chunks by hash, re-reading them from the files and checking
//!   them again ([`SourceVolume::read_chunk`]); a file that changed since the manifest
//!   makes that chunk fail with [`ServeError::Changed`], and the edge re-plans.
//! - **Edge.** [`ReplicaVolume`] holds the mirror: `current -> versions/v<N>` plus a
//!   spool of verified chunks and the persisted target. [`ReplicaVolume::begin`] takes a
//!   validated target manifest and returns the [`Plan`]; [`ReplicaVolume::receive`]
//!   verifies and spools chunks; [`ReplicaVolume::apply`] builds the new version aside and
//!   swaps `current` in one rename.
//! - Between them, [`Delta`] carries a target as changes to the manifest the edge holds,
//!   and [`MirrorStatus`] is what operators see.
//!
//! The sans-IO parts (`chunk`, `path`, `manifest`, `plan`, `pace`, `status`, `wire`) are
//! `machines::mirror`'s, re-exported here: they never touch the file system or the
//! clock. `scan` and `source` read the core's volume; `spool` and `replica` write under
//! the edge's mirror directory.
//!
//! # Frames (as built: [`MirrorFrame`] in `mirror/wire.rs`, numbered there)
//!
//! Mirror frames travel on their own low-priority QUIC stream pair (a third traffic class
//! below control and entries), opened by the edge for each mirror run:
//!
//! | frame | way | body | size |
//! | --- | --- | --- | --- |
//! | `Start` | edge → core | root and version the edge holds; target root if resuming | ~80 B |
//! | `Manifest` | core → edge | a [`Delta`] from the edge's root if the core still knows it, else the full [`Manifest`], in parts of at most 1 MiB (`part`, `last`) | a change: ~100 B + ~100 B per changed file (a changed large file: only its changed chunk range); none: < 100 B |
//! | `Fetch` | edge → core | up to 4096 chunks from [`Plan::batches`], about 1 MiB of payload each, a few outstanding, by position in the manifest ([`ChunkTable`]) as runs | a few bytes per run |
//! | `FetchFrom` | edge → core | a `Fetch` in which some chunks are asked for from a byte offset on: an append's extended last chunk, whose start ([`Prefix`]) the edge holds | a few bytes more per such chunk |
//! | `Data` | core → edge | the next chunk's bytes (≤ the chunker's maximum, 256 KiB), or the rest of it after the offset asked for, paced ([`Pace`]) | payload + ~5 B |
//! | `Gone` | core → edge | a requested hash the core can no longer serve (file changed): the edge re-plans | ~40 B |
//! | `Received`, `ReportEvery` | edge → core, core → edge | bytes the edge has read, for the core's pacing; how often to say so | a few bytes, every eighth of a window |
//! | `Done` | either | the operator stopped it, or the edge applied the target | a few bytes |
//!
//! The edge never trusts these: a manifest is checked by [`Manifest::decode`] (or
//! [`Delta::apply`]), a chunk by its hash in [`ReplicaVolume::receive`] (or, rebuilt
//! from its prefix and the rest received, in [`ReplicaVolume::receive_rest`]).

mod replica;
mod scan;
mod source;
mod spool;

// The sans-IO parts are the `machines` crate's: the same paths as before.
pub use machines::mirror::*;
pub use replica::{Applied, ApplyError, ApplyStep, ReceiveError, ReplicaError, ReplicaVolume};
pub use scan::{Problem, ScanStats, Scanner};
pub use source::{ServeError, Snapshot, SourceError, SourceVolume};
pub use spool::{Spool, SpoolError};

/// The `len` bytes at `offset` of the file at `path`: one chunk, read back to be served
/// (core) or reused (edge). The caller verifies its hash.
fn read_at(path: &std::path::Path, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; len as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}
