//! Content-defined chunking and the BLAKE3 names of chunks, files and manifests.
//!
//! A file is cut with FastCDC (the 2020 variant, normalisation level 1) at boundaries
//! chosen by its content, so an insert or an edit moves only the boundaries near it and
//! every other chunk keeps its name. A chunk is named by the BLAKE3-256 hash of its bytes;
//! a whole file by the BLAKE3 hash of its content. A file shorter than the minimum chunk
//! size is one chunk; an empty file has none.
//!
//! IO: none of its own; [`chunk_reader`] reads the reader it is handed.

use std::fmt;
use std::io::{self, Read};

use fastcdc::v2020::{self, StreamCDC};
use serde::{Deserialize, Serialize};

/// A BLAKE3-256 hash: the name of a chunk, a file's content, or a manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash([u8; 32]);

/// One chunk of a file: its name and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub hash: Hash,
    /// Its length in bytes (at most the chunker's maximum).
    pub len: u32,
}

/// The chunker's sizes, frozen in every manifest: changing them re-chunks everything.
///
/// Why 16/64/256 KiB (research notes §6.3): a 4 KiB edit costs about 80 kB on the link,
/// against about 455 kB at a 256 KiB average; a smaller average would quadruple the
/// manifest (~36 bytes per chunk) for a gain only on tiny scattered edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkParams {
    /// No chunk is shorter, except a file's last (or only) one.
    pub min: u32,
    /// The average the chunker aims at.
    pub avg: u32,
    /// No chunk is longer.
    pub max: u32,
}

/// A file's content as chunks, with its size and whole-content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    /// The chunks, in file order.
    pub chunks: Vec<ChunkRef>,
    /// Bytes read.
    pub size: u64,
    /// BLAKE3 of all the bytes read.
    pub hash: Hash,
}

impl Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// A hash from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    /// Its 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex digits (the form [`fmt::Display`] writes, and the spool's
    /// file names); anything else is `None`.
    pub fn from_hex(text: &str) -> Option<Hash> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = nibble(digits[2 * i])? << 4 | nibble(digits[2 * i + 1])?;
        }
        Some(Hash(out))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes tell hashes apart in logs and test output.
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl ChunkParams {
    /// Whether FastCDC accepts these sizes: even, in its ranges, `min <= avg <= max`.
    pub fn check(&self) -> Result<(), &'static str> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        if !(min <= avg && avg <= max) {
            return Err("sizes must satisfy min <= avg <= max");
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return Err("sizes must be even");
        }
        let in_range = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max);
        if !in_range {
            return Err("sizes outside FastCDC's ranges");
        }
        Ok(())
    }
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

/// Cuts what `reader` yields into chunks, handing each chunk's bytes to `on_chunk` as it
/// is cut (to copy it, or to compare it). Memory: one buffer of `params.max` bytes.
///
/// `params` must pass [`ChunkParams::check`]; sizes that do not are an `InvalidInput`
/// error, never a panic.
pub fn chunk_reader(
    reader: impl Read,
    params: ChunkParams,
    on_chunk: &mut dyn FnMut(&ChunkRef, &[u8]) -> io::Result<()>,
) -> io::Result<Chunked> {
    params
        .check()
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let cdc = StreamCDC::new(
        reader,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    );
    for piece in cdc {
        let piece = piece.map_err(io::Error::from)?;
        whole.update(&piece.data);
        // `piece.length <= params.max`, which is a u32.
        let chunk = ChunkRef {
            hash: Hash::of(&piece.data),
            len: piece.length as u32,
        };
        on_chunk(&chunk, &piece.data)?;
        size += piece.length as u64;
        chunks.push(chunk);
    }
    Ok(Chunked {
        chunks,
        size,
        hash: Hash(*whole.finalize().as_bytes()),
    })
}

/// Cuts `data` into chunks (for data already in memory).
pub fn chunk_bytes(data: &[u8], params: ChunkParams) -> io::Result<Chunked> {
    chunk_reader(data, params, &mut |_, _| Ok(()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::mirror::testing::random;

    /// Bytes of `new`'s chunks that `old` does not have: what would cross the link.
    fn new_bytes(old: &Chunked, new: &Chunked) -> u64 {
        let have: HashSet<Hash> = old.chunks.iter().map(|c| c.hash).collect();
        let mut sent = HashSet::new();
        new.chunks
            .iter()
            .filter(|c| !have.contains(&c.hash) && sent.insert(c.hash))
            .map(|c| u64::from(c.len))
            .sum()
    }

    #[test]
    fn small_files_are_one_chunk_and_empty_files_none() {
        let p = ChunkParams::default();
        let empty = chunk_bytes(b"", p).unwrap();
        assert!(empty.chunks.is_empty());
        assert_eq!(empty.hash, Hash::of(b""));
        let small = random(10_000, 1);
        let c = chunk_bytes(&small, p).unwrap();
        assert_eq!(c.chunks.len(), 1);
        assert_eq!(c.chunks[0].hash, Hash::of(&small));
        assert_eq!(c.hash, c.chunks[0].hash);
        assert_eq!(c.size, 10_000);
    }

    #[test]
    fn chunks_respect_the_sizes_and_cover_the_file() {
        let p = ChunkParams::default();
        let data = random(8 << 20, 2);
        let c = chunk_bytes(&data, p).unwrap();
        assert_eq!(
            c.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(),
            8 << 20
        );
        let (last, rest) = c.chunks.split_last().unwrap();
        assert!(rest.iter().all(|c| c.len >= p.min && c.len <= p.max));
        assert!(last.len <= p.max);
        // Around 64 KiB on average (random data): 8 MiB is roughly 100 to 160 chunks.
        assert!((80..=200).contains(&c.chunks.len()), "{}", c.chunks.len());
        assert_eq!(c.hash, Hash::of(&data));
    }

    #[test]
    fn an_insert_edit_or_append_changes_only_a_few_chunks() {
        let p = ChunkParams::default();
        let old = random(16 << 20, 3);
        let base = chunk_bytes(&old, p).unwrap();
        let mid = old.len() / 2;

        let mut insert = old.clone();
        insert.splice(mid..mid, random(1024, 4));
        let mut edit = old.clone();
        edit[mid..mid + 4096].copy_from_slice(&random(4096, 5));
        let mut append = old.clone();
        append.extend(random(1 << 20, 6));

        for (what, new, most) in [
            ("1 KiB insert", &insert, 3 * u64::from(p.max)),
            ("4 KiB edit", &edit, 3 * u64::from(p.max)),
            ("1 MiB append", &append, (1 << 20) + u64::from(p.max)),
        ] {
            let bytes = new_bytes(&base, &chunk_bytes(new, p).unwrap());
            assert!(bytes <= most, "{what}: {bytes} new bytes");
            assert!(bytes > 0, "{what}: nothing changed");
        }
    }

    #[test]
    fn hashes_print_and_parse_as_hex() {
        let h = Hash::of(b"tether");
        let text = h.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(Hash::from_hex(&text), Some(h));
        assert_eq!(Hash::from_hex(&text[1..]), None);
        assert_eq!(Hash::from_hex(&text.to_uppercase()), None);
    }

    #[test]
    fn bad_sizes_are_an_error_not_a_panic() {
        let odd = ChunkParams {
            min: 16385,
            avg: 65536,
            max: 262144,
        };
        assert!(chunk_bytes(b"x", odd).is_err());
        let inverted = ChunkParams {
            min: 65536,
            avg: 16384,
            max: 262144,
        };
        assert!(chunk_bytes(b"x", inverted).is_err());
    }
}
