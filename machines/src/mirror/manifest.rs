//! The manifest: what a volume held at one instant, deterministically encoded, and the
//! checks an edge runs on one it receives.
//!
//! A manifest is a header (format, version, creation time, chunker sizes) and the
//! volume's entries in path order (component by component, see [`RelPath`]): directories,
//! files (size, mode, mtime, chunks, whole-content hash) and symlinks that stay inside.
//! Its encoding in the project's codec is canonical (one value, one encoding: sorted
//! entries, no maps, no floats), so its BLAKE3 hash, the **root**, names it.
//!
//! What a manifest holds, and why:
//! - Directories are entries, so empty ones are mirrored; every entry's parent must be a
//!   listed directory (the top of the volume is implicit), so nothing is ever written
//!   through a symlink or under a file.
//! - Mode is the permission bits only (`0o777`): no setuid, setgid or sticky bit
//!   crosses; the edge makes files read-only (`a-w`) since versions share them.
//! - Symlinks only in the one form whose resolution provably stays inside (see
//!   [`super::path::check_target`]); the core skips others with a problem report.
//! - Names that differ only in case are refused by default ([`Limits::case_collisions`]):
//!   an edge whose data sits on a case-insensitive file system (exFAT or NTFS media, ext4
//!   with casefold) would silently merge them. Unicode normalisation (NFC vs NFD) is not
//!   compared.
//!
//! IO: none.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::chunk::{ChunkParams, ChunkRef, Hash};
use super::path::{self, PathRule, RelPath};
use crate::codec::{self, DecodeError};

/// The manifest format this build writes and reads. A change of meaning bumps it.
pub const MANIFEST_FORMAT: u32 = 1;

/// A volume at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] when written.
    pub format: u32,
    /// The core's counter for this volume, higher for later states.
    pub version: u64,
    /// When the core built it, in milliseconds since the Unix epoch (the core's clock).
    pub created_ms: u64,
    /// The chunker's sizes that cut its files.
    pub chunking: ChunkParams,
    /// The entries, in path order, each path once.
    pub entries: Vec<Entry>,
}

/// One path in a volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Where it is.
    pub path: RelPath,
    /// What it is.
    pub node: Node,
}

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Node {
    /// A directory, with its permission bits.
    Dir {
        /// Permission bits (at most `0o777`).
        mode: u32,
    },
    /// A regular file.
    File(FileNode),
    /// A symlink whose target stays inside the volume.
    Symlink {
        /// The target, relative to the link's directory.
        target: String,
    },
}

/// A regular file's content and metadata.
///
/// The whole-content hash is stored only for files of two or more chunks: for one chunk it
/// is that chunk's hash, for none the hash of nothing. That saves 32 bytes per small file
/// on the link (most files of a volume of images are one chunk).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileNode {
    /// Size in bytes: the sum of the chunks' lengths.
    pub size: u64,
    /// Permission bits (at most `0o777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The chunks in file order.
    pub chunks: Vec<ChunkRef>,
    whole: Option<Hash>,
}

/// Limits an edge puts on a manifest from the core. `Default` suits a field node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded manifest accepted (also bounds what a transfer buffers for it).
    pub max_manifest_bytes: usize,
    /// Most entries (files, directories, symlinks).
    pub max_entries: usize,
    /// Largest single file.
    pub max_file_size: u64,
    /// Largest sum of file sizes.
    pub max_total_size: u64,
    /// Largest chunk (the manifest's chunker maximum may not exceed it): bounds the
    /// memory one chunk takes in transfer and assembly.
    pub max_chunk: u32,
    /// Refuse two paths equal but for case (see the module doc). `true` by default.
    pub case_collisions: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 256 << 20,
            max_entries: 1_000_000,
            max_file_size: 64 << 30,
            max_total_size: 4 << 40,
            max_chunk: 1 << 20,
            case_collisions: true,
        }
    }
}

/// A manifest refused: each variant names the rule and, where there is one, the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Its encoding is larger than [`Limits::max_manifest_bytes`].
    #[error("manifest of {bytes} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes do not decode.
    #[error("{0}")]
    Decode(String),
    /// Another format.
    #[error("manifest format {found} is not understood; this node reads format {MANIFEST_FORMAT}")]
    Format {
        /// The format it says it has.
        found: u32,
    },
    /// The chunker sizes are invalid, or their maximum is over [`Limits::max_chunk`].
    #[error("chunker sizes {min}/{avg}/{max}: {rule}")]
    Chunking {
        /// Minimum.
        min: u32,
        /// Average.
        avg: u32,
        /// Maximum.
        max: u32,
        /// What is wrong.
        rule: String,
    },
    /// More entries than [`Limits::max_entries`].
    #[error("{count} entries is over the limit of {limit}")]
    TooManyEntries {
        /// How many it has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A path breaks a path rule.
    #[error("path {path:?}: {rule}")]
    Path {
        /// The path.
        path: String,
        /// The rule.
        rule: PathRule,
    },
    /// A path is listed twice.
    #[error("path {path:?}: listed twice")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// Entries out of path order (the encoding would not be canonical).
    #[error("path {path:?}: out of order")]
    Unsorted {
        /// The first path out of place.
        path: String,
    },
    /// Two paths equal but for case.
    #[error("path {path:?}: collides with {other:?} on a case-insensitive file system")]
    CaseCollision {
        /// The later path.
        path: String,
        /// The earlier path it collides with.
        other: String,
    },
    /// An entry's parent is not a directory of the manifest.
    #[error("path {path:?}: its parent {parent:?} is not a directory of the manifest")]
    Parent {
        /// The path.
        path: String,
        /// Its parent.
        parent: String,
    },
    /// Mode bits beyond `0o777`.
    #[error("path {path:?}: mode {mode:#o} has bits beyond 0o777")]
    Mode {
        /// The path.
        path: String,
        /// The mode.
        mode: u32,
    },
    /// A symlink's target breaks a rule (absolute, escaping, ...).
    #[error("symlink {path:?} -> {target:?}: {rule}")]
    SymlinkTarget {
        /// The link.
        path: String,
        /// Its target.
        target: String,
        /// The rule.
        rule: PathRule,
    },
    /// A file over [`Limits::max_file_size`].
    #[error("file {path:?} of {size} bytes is over the limit of {limit} bytes")]
    FileTooLarge {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Files summing to more than [`Limits::max_total_size`].
    #[error("files total over the limit of {limit} bytes")]
    TotalTooLarge {
        /// The limit.
        limit: u64,
    },
    /// A file's chunk list does not fit its size, or a chunk is empty or over the
    /// chunker's maximum, or its whole-content hash is missing or superfluous.
    #[error("file {path:?}: {rule}")]
    Chunks {
        /// The path.
        path: String,
        /// What is wrong.
        rule: &'static str,
    },
    /// A delta copies a path that is not a file of its base.
    #[error("delta copies {from:?}, which is not a file of its base")]
    CopySource {
        /// The copy's source.
        from: String,
    },
    /// A delta's copies add up to more file bytes than [`Limits::max_total_size`], or to
    /// more chunk references than a manifest within [`Limits::max_manifest_bytes`] holds.
    #[error(
        "delta copies files of {bytes} bytes in {chunks} chunks, over the limit of \
         {max_bytes} bytes or {max_chunks} chunks"
    )]
    CopiesTooLarge {
        /// File bytes copied so far, when the limit was passed.
        bytes: u64,
        /// Their chunk references.
        chunks: u64,
        /// The limit on bytes.
        max_bytes: u64,
        /// The limit on chunk references.
        max_chunks: u64,
    },
    /// A delta edits the chunk list of a path that is not a file of its base, keeps
    /// more chunks than the base's file has, or lists an edited path twice or out of
    /// order.
    #[error("delta edits the chunk list of {path:?}: {rule}")]
    ChunkEdit {
        /// The edited path.
        path: String,
        /// What is wrong.
        rule: String,
    },
    /// A manifest rebuilt from a delta does not have the root it should.
    #[error("manifest root {found} differs from the expected {expected}")]
    Root {
        /// The root announced.
        expected: Hash,
        /// The root computed.
        found: Hash,
    },
}

impl Manifest {
    /// An empty volume (what an edge holds before its first mirror).
    pub fn empty(chunking: ChunkParams) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            version: 0,
            created_ms: 0,
            chunking,
            entries: Vec::new(),
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The root: BLAKE3 of the canonical encoding.
    pub fn root(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Decodes and validates a manifest from an untrusted peer or file.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Manifest, ManifestError> {
        if bytes.len() > limits.max_manifest_bytes {
            return Err(ManifestError::TooLarge {
                bytes: bytes.len(),
                limit: limits.max_manifest_bytes,
            });
        }
        let manifest: Manifest = codec::decode(bytes, "manifest")
            .map_err(|e: DecodeError| ManifestError::Decode(e.to_string()))?;
        manifest.validate(limits)?;
        Ok(manifest)
    }

    /// Checks every rule of the module doc and of `limits`; the first broken one is the
    /// error.
    pub fn validate(&self, limits: &Limits) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format { found: self.format });
        }
        let ChunkParams { min, avg, max } = self.chunking;
        let chunking = |rule: &str| ManifestError::Chunking {
            min,
            avg,
            max,
            rule: rule.to_owned(),
        };
        self.chunking.check().map_err(chunking)?;
        if max > limits.max_chunk {
            return Err(chunking(&format!(
                "maximum over the limit of {} bytes",
                limits.max_chunk
            )));
        }
        if self.entries.len() > limits.max_entries {
            return Err(ManifestError::TooManyEntries {
                count: self.entries.len(),
                limit: limits.max_entries,
            });
        }
        let mut dirs: HashSet<&RelPath> = HashSet::new();
        let mut folded: HashMap<String, &RelPath> = HashMap::new();
        let mut total = 0u64;
        let mut previous: Option<&RelPath> = None;
        for entry in &self.entries {
            let path = &entry.path;
            let name = || path.as_str().to_owned();
            path.check().map_err(|e| ManifestError::Path {
                path: e.path,
                rule: e.rule,
            })?;
            if let Some(prev) = previous {
                if prev == path {
                    return Err(ManifestError::Duplicate { path: name() });
                }
                if prev > path {
                    return Err(ManifestError::Unsorted { path: name() });
                }
            }
            previous = Some(path);
            if limits.case_collisions
                && let Some(other) = folded.insert(path.as_str().to_lowercase(), path)
            {
                return Err(ManifestError::CaseCollision {
                    path: name(),
                    other: other.as_str().to_owned(),
                });
            }
            if let Some(parent) = path.parent()
                && !dirs.contains(&parent)
            {
                return Err(ManifestError::Parent {
                    path: name(),
                    parent: parent.as_str().to_owned(),
                });
            }
            match &entry.node {
                Node::Dir { mode } => {
                    check_mode(path, *mode)?;
                    dirs.insert(path);
                }
                Node::Symlink { target } => {
                    path::check_target(path, target).map_err(|rule| {
                        ManifestError::SymlinkTarget {
                            path: name(),
                            target: target.clone(),
                            rule,
                        }
                    })?;
                }
                Node::File(file) => {
                    check_mode(path, file.mode)?;
                    if file.size > limits.max_file_size {
                        return Err(ManifestError::FileTooLarge {
                            path: name(),
                            size: file.size,
                            limit: limits.max_file_size,
                        });
                    }
                    total = total.saturating_add(file.size);
                    if total > limits.max_total_size {
                        return Err(ManifestError::TotalTooLarge {
                            limit: limits.max_total_size,
                        });
                    }
                    file.check(max)
                        .map_err(|rule| ManifestError::Chunks { path: name(), rule })?;
                }
            }
        }
        Ok(())
    }

    /// The entry at `path`.
    pub fn entry(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The files, with their paths.
    pub fn files(&self) -> impl Iterator<Item = (&RelPath, &FileNode)> {
        self.entries.iter().filter_map(|e| match &e.node {
            Node::File(f) => Some((&e.path, f)),
            _ => None,
        })
    }

    /// Sum of the file sizes.
    pub fn total_size(&self) -> u64 {
        self.files().map(|(_, f)| f.size).sum()
    }
}

impl FileNode {
    /// A file of these chunks; `whole` is the BLAKE3 of its content.
    pub fn new(mode: u32, mtime_ns: i64, chunks: Vec<ChunkRef>, whole: Hash) -> FileNode {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        let whole = (chunks.len() > 1).then_some(whole);
        FileNode {
            size,
            mode,
            mtime_ns,
            chunks,
            whole,
        }
    }

    /// BLAKE3 of the whole content.
    pub fn hash(&self) -> Hash {
        match (&self.whole, self.chunks.as_slice()) {
            (Some(whole), _) => *whole,
            (None, [one]) => one.hash,
            // No chunk (or a malformed node, which validation refuses): the empty content.
            (None, _) => Hash::of(b""),
        }
    }

    /// Whether `other` has the same content (size, chunks and whole hash).
    pub fn same_content(&self, other: &FileNode) -> bool {
        self.size == other.size && self.chunks == other.chunks && self.hash() == other.hash()
    }

    fn check(&self, max_chunk: u32) -> Result<(), &'static str> {
        if self.chunks.iter().any(|c| c.len == 0 || c.len > max_chunk) {
            return Err("a chunk is empty or longer than the chunker's maximum");
        }
        let sum: u64 = self.chunks.iter().map(|c| u64::from(c.len)).sum();
        if sum != self.size {
            return Err("chunk lengths do not add up to the file size");
        }
        if self.whole.is_some() != (self.chunks.len() > 1) {
            return Err("whole-content hash present for fewer than two chunks, or missing");
        }
        Ok(())
    }
}

fn check_mode(path: &RelPath, mode: u32) -> Result<(), ManifestError> {
    if mode & !0o777 != 0 {
        return Err(ManifestError::Mode {
            path: path.as_str().to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: p(path),
            node: Node::Dir { mode: 0o755 },
        }
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        let chunks = if content.is_empty() {
            vec![]
        } else {
            vec![ChunkRef {
                hash: Hash::of(content),
                len: content.len() as u32,
            }]
        };
        Entry {
            path: p(path),
            node: Node::File(FileNode::new(0o644, 0, chunks, Hash::of(content))),
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: p(path),
            node: Node::Symlink {
                target: target.into(),
            },
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            entries,
            ..Manifest::empty(ChunkParams::default())
        }
    }

    /// Validates `entries` (as given, unsorted if so) and checks the error's rule and text.
    fn check(entries: Vec<Entry>, expected: Option<&str>) {
        let m = manifest(entries);
        let bytes = m.encode();
        let got = Manifest::decode(&bytes, &Limits::default());
        match (got, expected) {
            (Ok(back), None) => assert_eq!(back, m),
            (Err(e), Some(text)) => assert!(e.to_string().contains(text), "{e} lacks {text}"),
            (got, _) => panic!("expected {expected:?}, got {got:?}"),
        }
    }

    /// A path that `RelPath::new` would refuse, as a peer could send it.
    fn raw(path: &str, node: Node) -> Entry {
        Entry {
            path: codec::decode(&codec::encode(path), "path").unwrap(),
            node,
        }
    }

    #[test]
    fn a_good_manifest_round_trips_with_a_stable_root() {
        let m = manifest(vec![
            dir("a"),
            file("a/b", b"hello"),
            link("a/c", "b"),
            file("a/e", b""),
            file("z", b"zz"),
        ]);
        m.validate(&Limits::default()).unwrap();
        let back = Manifest::decode(&m.encode(), &Limits::default()).unwrap();
        assert_eq!(back.root(), m.root());
        let mut later = m.clone();
        later.version += 1;
        assert_ne!(later.root(), m.root());
        let Node::File(f) = &m.entry(&p("a/b")).unwrap().node else {
            panic!()
        };
        assert_eq!(f.hash(), Hash::of(b"hello"));
    }

    #[test]
    fn bad_paths_are_refused_naming_path_and_rule() {
        let f = |path: &str| raw(path, Node::Dir { mode: 0o755 });
        check(vec![f("../x")], Some("\"../x\": `.` or `..` component"));
        check(vec![f("/etc")], Some("\"/etc\": absolute path"));
        check(vec![f("a//b")], Some("empty component"));
        check(vec![f("")], Some("empty path"));
        check(vec![f("a\0")], Some("NUL byte"));
        check(vec![f("..\\x")], Some("backslash"));
        check(vec![f(&"n".repeat(256))], Some("longer than 255"));
        let long = ["n"; 2100].join("/");
        check(vec![f(&long)], Some("longer than 4095 bytes"));
    }

    #[test]
    fn collisions_and_structure_are_refused() {
        check(vec![dir("a"), dir("a")], Some("\"a\": listed twice"));
        check(vec![dir("b"), dir("a")], Some("\"a\": out of order"));
        check(
            vec![file("README", b"1"), file("readme", b"2")],
            Some("\"readme\": collides with \"README\""),
        );
        check(vec![file("a/b", b"1")], Some("\"a/b\": its parent \"a\""));
        check(
            vec![file("a", b"1"), file("a/b", b"1")],
            Some("its parent \"a\" is not a directory"),
        );
        check(
            vec![link("a", "x"), file("a/b", b"1")],
            Some("its parent \"a\" is not a directory"),
        );
        let mut setuid = dir("s");
        setuid.node = Node::Dir { mode: 0o4755 };
        check(vec![setuid], Some("mode 0o4755"));
        // Case collisions may be allowed.
        let m = manifest(vec![file("README", b"1"), file("readme", b"2")]);
        let lenient = Limits {
            case_collisions: false,
            ..Limits::default()
        };
        m.validate(&lenient).unwrap();
    }

    #[test]
    fn escaping_symlinks_are_refused() {
        check(
            vec![link("l", "../etc")],
            Some("\"l\" -> \"../etc\": target escapes"),
        );
        check(vec![link("l", "/etc/passwd")], Some("absolute path"));
        check(
            vec![dir("d"), link("d/l", "x/../../..")],
            Some("target escapes"),
        );
        check(vec![dir("d"), link("d/l", "../x")], None);
    }

    #[test]
    fn sizes_and_chunks_are_checked() {
        let limits = Limits {
            max_file_size: 100,
            max_total_size: 150,
            max_entries: 3,
            ..Limits::default()
        };
        let check_with = |entries: Vec<Entry>, text: &str| {
            let e = manifest(entries).validate(&limits).unwrap_err().to_string();
            assert!(e.contains(text), "{e} lacks {text}");
        };
        check_with(
            vec![file("a", &[0; 101])],
            "\"a\" of 101 bytes is over the limit of 100",
        );
        check_with(
            vec![file("a", &[0; 80]), file("b", &[1; 80])],
            "files total over the limit of 150",
        );
        check_with(
            vec![dir("a"), dir("b"), dir("c"), dir("d")],
            "4 entries is over the limit of 3",
        );

        let mut wrong_size = file("a", b"abc");
        if let Node::File(f) = &mut wrong_size.node {
            f.size = 4;
        }
        check(vec![wrong_size], Some("do not add up to the file size"));
        let mut empty_chunk = file("a", b"abc");
        if let Node::File(f) = &mut empty_chunk.node {
            f.chunks.push(ChunkRef {
                hash: Hash::of(b""),
                len: 0,
            });
        }
        check(vec![empty_chunk], Some("a chunk is empty"));
        let mut huge_chunk = file("a", b"abc");
        if let Node::File(f) = &mut huge_chunk.node {
            f.chunks[0].len = 300 << 10;
            f.size = 300 << 10;
        }
        check(vec![huge_chunk], Some("longer than the chunker's maximum"));

        let mut m = manifest(vec![]);
        m.chunking.max = 2 << 20;
        let e = m.validate(&Limits::default()).unwrap_err().to_string();
        assert!(e.contains("maximum over the limit"), "{e}");
        m.format = 9;
        let e = m.validate(&Limits::default()).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
    }

    #[test]
    fn oversized_and_garbage_bytes_are_errors() {
        let limits = Limits {
            max_manifest_bytes: 10,
            ..Limits::default()
        };
        let m = manifest(vec![dir("a-long-directory-name")]);
        assert!(matches!(
            Manifest::decode(&m.encode(), &limits),
            Err(ManifestError::TooLarge { .. })
        ));
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 7, 64, 1000] {
            let mut garbage = vec![0u8; len];
            for b in &mut garbage {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng as u8;
            }
            assert!(Manifest::decode(&garbage, &Limits::default()).is_err());
        }
    }
}
