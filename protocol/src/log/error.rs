//! The store's errors, one enum per operation family.

use std::path::PathBuf;

use crate::entry::{NameError, NodeName, Offset, Seq, TopicName};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created or read.
    #[error("cannot open store at {path}: {source}")]
    Io {
        /// The store directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process (or another handle in this one) has the store open.
    #[error("store at {path} is in use by another process")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The files are damaged or truncated.
    #[error("store at {path} is corrupt: {detail}")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What is wrong, as precisely as known.
        detail: String,
    },
    /// The store was written by a build with another on-disk format.
    #[error(
        "store at {path} has format version {found}; this build reads versions 1 to {supported} (a newer build wrote it, or its format marker is damaged)"
    )]
    UnknownFormat {
        /// The store directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads (and writes).
        supported: u32,
    },
    /// The store belongs to another node.
    #[error("store at {path} belongs to node {found}, not {expected}")]
    WrongNode {
        /// The store directory.
        path: PathBuf,
        /// The node that owns it.
        found: String,
        /// The node that tried to open it.
        expected: NodeName,
    },
}

/// Why a write (append, commit, topic or peer change) was refused.
///
/// A refused transaction leaves nothing behind: none of its operations are applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The topic does not exist on this node.
    #[error("unknown topic {0}")]
    UnknownTopic(TopicName),
    /// An entry or document is over the size limit.
    #[error("entry of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size, as [`crate::entry::Entry::size`] counts it.
        size: u64,
        /// The store's `max_entry_bytes`.
        limit: u64,
    },
    /// An entry's headers are over the limits ([`crate::entry::MAX_HEADERS`],
    /// [`crate::entry::MAX_HEADER_NAME`]).
    #[error("entry refused: {0}")]
    Headers(String),
    /// An entry from a peer skips sequences: per-origin order would break.
    #[error(
        "topic {topic}: entry {origin}:{got} arrived out of order, expected {origin}:{expected}"
    )]
    OutOfOrder {
        /// The topic.
        topic: TopicName,
        /// The entry's origin.
        origin: NodeName,
        /// The next sequence this node can take from that origin.
        expected: Seq,
        /// The sequence that arrived.
        got: Seq,
    },
    /// A peer sent an entry of this node's own origin that this node never wrote.
    #[error(
        "topic {topic}: a peer sent {seq} of this node's own origin, which this node never wrote"
    )]
    OwnOrigin {
        /// The topic.
        topic: TopicName,
        /// The sequence.
        seq: Seq,
    },
    /// A consumer cursor past the end of its topic.
    #[error("topic {topic}: cursor {offset} is past the end ({next})")]
    BeyondEnd {
        /// The topic.
        topic: TopicName,
        /// The requested cursor.
        offset: Offset,
        /// The topic's next offset.
        next: Offset,
    },
    /// A topic exists with another scope; scopes never change.
    #[error("topic {topic} exists with scope {existing}, not {requested}")]
    ScopeConflict {
        /// The topic.
        topic: TopicName,
        /// Its scope.
        existing: crate::entry::Scope,
        /// The scope asked for.
        requested: crate::entry::Scope,
    },
    /// A system topic (name starting with `_`) cannot be written directly.
    #[error("topic {0} belongs to the system")]
    SystemTopic(TopicName),
    /// A bad name or identifier.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A document id that is empty or longer than 256 bytes.
    #[error("invalid document id {0:?}: 1 to 256 bytes")]
    DocumentId(String),
    /// The disk under the store has less free space than `min_free`: entries and
    /// documents are refused until space is freed; nothing was written.
    #[error(
        "the disk under {path} has {free} bytes free, under store.min_free ({min_free}): \
         entries are refused until space is freed (retention, a smaller store.disk_budget, \
         or more disk)"
    )]
    DiskFull {
        /// The store directory.
        path: PathBuf,
        /// Bytes free for the store's user.
        free: u64,
        /// The store's `min_free`.
        min_free: u64,
    },
    /// A write to disk failed earlier; the store refuses writes until it is reopened.
    #[error("store is poisoned after a failed write: {0}")]
    Poisoned(String),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The topic does not exist on this node.
    #[error("unknown topic {0}")]
    UnknownTopic(TopicName),
    /// A stored record could not be decoded.
    #[error("store at {path} is corrupt: {detail}")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// Which record, and what is wrong.
        detail: String,
    },
}
