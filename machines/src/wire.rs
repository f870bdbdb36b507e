//! The wire format between two nodes: frames, their encoding, and the compressed stream.
//!
//! A link carries two kinds of QUIC stream. The **control** stream (bidirectional, opened
//! by the edge) carries small frames as they are: `Hello`, `Have`, `Pause`, `Resume`. Each
//! **entry** stream (unidirectional, one per direction) carries `Batch` and `Skip` frames
//! through one zstd stream whose context lasts as long as the QUIC stream, so that small,
//! similar entries cost a fraction of their size; the sender flushes zstd whenever it has
//! nothing more to send at once, so nothing waits in the compressor.
//!
//! On both, a frame is its length (an unsigned LEB128 varint) followed by the frame in
//! the project's codec ([`crate::codec`], postcard). A frame longer than [`MAX_FRAME`] is
//! refused before it is read, and decompression never runs more than 64 KiB ahead of the
//! frame being assembled, so a peer cannot make a node buffer without bound.
//!
//! Frame numbers (postcard encodes the variant's index, so the order below is the
//! number). Numbers are never reused; a retired frame keeps its place with a note.
//!
//! | # | frame | stream | meaning |
//! | --- | --- | --- | --- |
//! | 0 | `Hello` | control | first frame each way: version, node, incarnation, role, topics held, topics the peer may not send |
//! | 1 | `Have` | control | what the sender durably holds of a topic: sent at start, and after every durable insert (the acknowledgement) |
//! | 2 | `Batch` | entry | entries of one topic, in the sender's order |
//! | 3 | `Skip` | entry | the sender will not send an origin's entries up to a sequence: lost to its disk budget (a gap, recorded where it happened), or superseded in a latest-value topic; account for them |
//! | 4 | `Pause` | control | an operator paused the link at the sender: stop sending entries |
//! | 5 | `Resume` | control | the link is resumed |
//! | 6 | `Backlog` | control | what the sender holds for the receiver and has not had acknowledged (an edge's, for HQ's fleet table): sent when it changes |
//! | 7 | `Rules` | control | the core's rules for the topics it shares with the edge (priority classes, latest-value topics), right after its hello (version 6) |
//!
//! This module does no IO and never reads the clock.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::entry::{Entry, EntryId, NodeName, Priority, Scope, Seq, Timestamp, TopicName};

/// The protocol version this build speaks, checked in the hello (the ALPN carries the
/// major version). 2: the mirror fetches chunks by position, paces them, and sends
/// packed deltas; a peer of version 1 is closed with a clear "version" reason. 3: the
/// mirror fetches an appended file's extended chunk from an offset (`FetchFrom`); a peer
/// of version 2 is closed the same way. 4: the hello carries the node's incarnation and
/// the topics the peer may not send; batches are bounded in entries and headers. 5: the
/// hello carries the sender's clock; `Backlog`. 6: an entry stream per priority class
/// (up to three each way, each its own zstd stream); the core answers an edge's hello
/// with the version the edge speaks, so that it serves edges of version 5 as before.
pub const VERSION: u32 = 6;

/// The oldest version a core still serves: edges are upgraded one by one, over months.
pub const PREVIOUS_VERSION: u32 = 5;

/// Largest encoded frame accepted: a batch of entries at the size limit fits.
pub const MAX_FRAME: usize = 4 << 20;

/// Output produced per decompression step: how far decompression may run ahead.
const INFLATE_STEP: usize = 64 << 10;

/// The largest zstd window (as a power of two) a peer's entry stream may ask for: 4 MiB.
/// Our senders use levels 1 to 3 (windows of 512 KiB to 2 MiB); zstd's decoder would
/// otherwise accept 128 MiB, and allocate it, on a peer's say-so.
pub const INFLATE_WINDOW_LOG: u32 = 22;

/// Most entries in one batch. Our senders put at most `batch_entries` (1,024) in one;
/// the bound keeps what a 4 MiB frame decodes into within a small multiple of its size
/// (an empty entry is 5 bytes on the wire and ~100 in memory).
pub const MAX_BATCH_ENTRIES: usize = 4096;

/// One message between two nodes; see the module doc for the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// 0: the first frame on the control stream, each way.
    Hello(Hello),
    /// 1: the highest sequence per origin that the sender durably holds of a topic.
    Have {
        /// The topic.
        topic: TopicName,
        /// Origin and sequence.
        vector: Vec<(NodeName, u64)>,
    },
    /// 2: entries of one topic.
    Batch(Batch),
    /// 3: the sender will not send `origin`'s entries of `topic` up to `through`: they
    /// were lost to its disk budget (recorded there as a gap), or superseded in a
    /// latest-value topic; the receiver accounts for them and goes on.
    Skip {
        /// The topic.
        topic: TopicName,
        /// The origin whose entries were lost.
        origin: NodeName,
        /// The last lost sequence.
        through: u64,
    },
    /// 4: stop sending entries until `Resume`.
    Pause,
    /// 5: sending may go on.
    Resume,
    /// 6: what the sender holds for the receiver, in all topics, that the receiver has
    /// not acknowledged: an edge tells HQ what waits to cross to it.
    Backlog {
        /// Entries.
        entries: u64,
        /// Their bytes (an estimate from each topic's mean entry size).
        bytes: u64,
    },
    /// 7: the core's rules for the topics it shares with the edge, sent right after its
    /// hello to an edge of version 6 or later.
    Rules {
        /// The priority classes that are not normal (`[[topics]] priority`): the edge
        /// sends those topics in the higher of this class and its own config's.
        classes: Vec<(TopicName, Priority)>,
        /// The latest-value topics (`[[topics]] latest_value`): the edge sends only the
        /// latest entry per key of those that wait, as its own config may say too.
        latest_value: Vec<TopicName>,
    },
}

impl Frame {
    /// The frame's name, for errors and logs: `hello`, `have`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Have { .. } => "have",
            Frame::Batch(_) => "batch",
            Frame::Skip { .. } => "skip",
            Frame::Pause => "pause",
            Frame::Resume => "resume",
            Frame::Backlog { .. } => "backlog",
            Frame::Rules { .. } => "rules",
        }
    }
}

/// Who a node is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version it speaks.
    pub version: u32,
    /// Its name (also in its certificate; the two must agree).
    pub node: NodeName,
    /// Which store it speaks from: a number drawn when its store was made. A node that
    /// presents a known name with another incarnation (a new device, a wiped store) would
    /// reuse sequences its peers already hold; see [`crate::replication::Incarnations`].
    pub incarnation: u64,
    /// Whether it is the core.
    pub core: bool,
    /// The topics it holds that may cross a link (scope `core` or `all`).
    pub topics: Vec<(TopicName, Scope)>,
    /// Topics the receiver holds but may not send to the sender (from the core: the
    /// topics only other nodes may write, `[[topics]] writers`).
    pub closed: Vec<TopicName>,
    /// The sender's clock when it sent the hello (ms since the Unix epoch): each side
    /// learns how far the other's clock is from its own (field edges often have no time
    /// source).
    pub clock_ms: u64,
}

/// Entries of one topic, compactly: node names once per batch, sequences and timestamps
/// as differences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The topic.
    pub topic: TopicName,
    names: Vec<NodeName>,
    base_ts: u64,
    #[serde(deserialize_with = "bounded_entries")]
    entries: Vec<WireEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireEntry {
    /// Index of the origin in `names`.
    origin: u32,
    /// Sequence minus the previous sequence of the same origin in this batch (or 0).
    seq_delta: u64,
    /// Timestamp minus the batch's `base_ts`.
    ts_delta: i64,
    /// Key, destination and headers, which most entries lack: one byte when absent.
    extras: Option<Box<Extras>>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Extras {
    #[serde(with = "serde_bytes")]
    key: Option<Vec<u8>>,
    /// Index of the destination in `names`.
    to: Option<u32>,
    /// At most [`crate::entry::MAX_HEADERS`], refused while decoding past that.
    #[serde(deserialize_with = "bounded_headers")]
    headers: Vec<(String, Vec<u8>)>,
}

/// Wire entries: past [`MAX_BATCH_ENTRIES`] + 1, the rest are read and dropped (see
/// [`bounded_seq`]).
fn bounded_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WireEntry>, D::Error> {
    bounded_seq(d, MAX_BATCH_ENTRIES)
}

/// Headers: past [`crate::entry::MAX_HEADERS`] + 1, the rest are read and dropped.
fn bounded_headers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
    bounded_seq(d, crate::entry::MAX_HEADERS)
}

/// A sequence kept to at most `max` + 1 items: the ones past that are decoded and dropped
/// at once, so a frame of millions of tiny items never becomes millions of allocations
/// held, and [`Batch::into_entries`] can still say what was over which limit (the codec
/// keeps no message of a decoder's own error).
fn bounded_seq<'de, D, T>(d: D, max: usize) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T> {
        max: usize,
        item: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(64));
            while let Some(item) = seq.next_element()? {
                if out.len() <= self.max {
                    out.push(item);
                }
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded {
        max,
        item: std::marker::PhantomData,
    })
}

/// Bytes from a peer that are not a valid frame or stream.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame says it is longer than [`MAX_FRAME`].
    #[error("frame of {size} bytes is over the limit of {MAX_FRAME} bytes")]
    TooLarge {
        /// The length it announced.
        size: u64,
    },
    /// A length prefix that is not a valid varint.
    #[error("bad frame length")]
    BadLength,
    /// The frame's bytes do not decode.
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    /// A batch refers to a name it does not carry, its sequences overflow, or it is over
    /// a limit ([`MAX_BATCH_ENTRIES`], [`crate::entry::MAX_HEADERS`]).
    #[error("malformed batch of topic {topic}: {why}")]
    BadBatch {
        /// The batch's topic.
        topic: TopicName,
        /// What is wrong.
        why: String,
    },
    /// The compressed stream is corrupt.
    #[error("corrupt compressed stream: {0}")]
    Inflate(std::io::Error),
}

impl Batch {
    /// A batch of `entries` of `topic`, in the order given.
    pub fn new(topic: TopicName, entries: &[Entry]) -> Batch {
        let base_ts = entries.first().map_or(0, |e| e.timestamp.0);
        let mut names: Vec<NodeName> = Vec::new();
        let mut index = |name: &NodeName| match names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                names.push(name.clone());
                names.len() as u32 - 1
            }
        };
        let mut last_seq: Vec<u64> = Vec::new();
        let mut wire = Vec::with_capacity(entries.len());
        for e in entries {
            let origin = index(&e.id.origin);
            if last_seq.len() <= origin as usize {
                last_seq.resize(origin as usize + 1, 0);
            }
            let seq_delta = e.id.seq.0.wrapping_sub(last_seq[origin as usize]);
            last_seq[origin as usize] = e.id.seq.0;
            let plain = e.key.is_none() && e.to.is_none() && e.headers.is_empty();
            let extras = (!plain).then(|| {
                let (key, headers) = (e.key.clone(), e.headers.clone());
                Box::new(Extras {
                    key,
                    to: e.to.as_ref().map(&mut index),
                    headers,
                })
            });
            wire.push(WireEntry {
                origin,
                seq_delta,
                ts_delta: e.timestamp.0.wrapping_sub(base_ts) as i64,
                extras,
                payload: e.payload.clone(),
            });
        }
        Batch {
            topic,
            names,
            base_ts,
            entries: wire,
        }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Its entries' sizes, as [`Entry::size`] counts them.
    pub fn size(&self) -> u64 {
        let entry = |w: &WireEntry| match &w.extras {
            Some(x) => crate::entry::entry_size(x.key.as_deref(), &x.headers, &w.payload),
            None => crate::entry::entry_size(None, &[], &w.payload),
        };
        self.entries.iter().map(entry).sum()
    }

    /// The entries, checked: every index refers to a carried name.
    pub fn into_entries(self) -> Result<Vec<Entry>, WireError> {
        let bad_batch = |why: String| WireError::BadBatch {
            topic: self.topic.clone(),
            why,
        };
        if self.entries.len() > MAX_BATCH_ENTRIES {
            return Err(bad_batch(format!(
                "more than {MAX_BATCH_ENTRIES} entries in one batch"
            )));
        }
        let bad = || bad_batch("an index names no carried node, or a sequence overflows".into());
        let name = |i: u32| self.names.get(i as usize).cloned().ok_or_else(bad);
        let mut last_seq = vec![0u64; self.names.len()];
        let mut out = Vec::with_capacity(self.entries.len());
        for w in self.entries.iter() {
            let origin = name(w.origin)?;
            let last = &mut last_seq[w.origin as usize];
            let seq = last.checked_add(w.seq_delta).ok_or_else(bad)?;
            *last = seq;
            let (key, to, headers) = match &w.extras {
                Some(x) if x.headers.len() > crate::entry::MAX_HEADERS => {
                    return Err(bad_batch(format!(
                        "an entry with more than {} headers",
                        crate::entry::MAX_HEADERS
                    )));
                }
                Some(x) => (
                    x.key.clone(),
                    x.to.map(name).transpose()?,
                    x.headers.clone(),
                ),
                None => (None, None, Vec::new()),
            };
            out.push(Entry {
                id: EntryId {
                    origin,
                    seq: Seq(seq),
                },
                timestamp: Timestamp(self.base_ts.wrapping_add(w.ts_delta as u64)),
                key,
                to,
                headers,
                payload: w.payload.clone(),
            });
        }
        Ok(out)
    }
}

/// Appends one frame, length-prefixed, to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    encode_value(frame, out);
}

/// Appends any value in the codec, length-prefixed like a frame: the framing of the other
/// stream kinds (the mirror stream's `MirrorFrame`, in `protocol::mirror`).
pub fn encode_value<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    let body = codec::encode(value);
    let mut len = body.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
}

/// Assembles frames from bytes as they arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        self.next_value()
    }

    /// The next complete length-prefixed value of type `T` (see [`encode_value`]), under
    /// the same size limit as a frame; `Ok(None)` when more bytes are needed.
    pub fn next_value<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        let pending = &self.buf[self.start..];
        let mut len: u64 = 0;
        let mut header = None;
        for (i, &byte) in pending.iter().enumerate().take(10) {
            len |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                header = Some(i + 1);
                break;
            }
        }
        let Some(header) = header else {
            return if pending.len() >= 10 {
                Err(WireError::BadLength)
            } else {
                Ok(None)
            };
        };
        if len > MAX_FRAME as u64 {
            return Err(WireError::TooLarge { size: len });
        }
        let end = header + len as usize;
        if pending.len() < end {
            return Ok(None);
        }
        let frame = codec::decode(&pending[header..end], "frame")?;
        self.start += end;
        // Keep the buffer from growing with consumed bytes.
        if self.start > 64 << 10 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The zstd window of a link's entry stream, as a power of two: 64 KiB. A context's
/// memory follows its window (the window, a block as large, the tables); a core holds one
/// per busy link, so a thousand busy links hold ~0.2 GB at this size where zstd's
/// default for level 1 (512 KiB) would hold ~0.7 GB. Entries of one topic resemble their
/// recent neighbours, which a 64 KiB window holds (`bench wire` measures the cost).
pub const DEFLATE_WINDOW_LOG: u32 = 16;

/// The sending end of a compressed entry stream. Its zstd context is made when there is
/// something to send and dropped by [`Deflate::release`] (when the link goes quiet): an
/// idle link holds no compression memory, and the next entry starts a fresh zstd frame.
pub struct Deflate {
    level: i32,
    zstd: Option<zstd::stream::raw::Encoder<'static>>,
    frame: Vec<u8>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("live", &self.zstd.is_some())
            .finish_non_exhaustive()
    }
}

impl Deflate {
    /// A compressor at zstd level `level` (1 to 3 suit a link: fast, and most of the
    /// gain); its context is made at the first write.
    pub fn new(level: i32) -> std::io::Result<Self> {
        // Made once here so that a level zstd refuses is an error now, not at the
        // first entry.
        Self::context(level)?;
        Ok(Deflate {
            level,
            zstd: None,
            frame: Vec::new(),
        })
    }

    fn context(level: i32) -> std::io::Result<zstd::stream::raw::Encoder<'static>> {
        use zstd::stream::raw::CParameter;
        let mut zstd = zstd::stream::raw::Encoder::new(level)?;
        zstd.set_parameter(CParameter::WindowLog(DEFLATE_WINDOW_LOG))?;
        Ok(zstd)
    }

    /// Whether a zstd context is held (something was written since the last release).
    pub fn is_live(&self) -> bool {
        self.zstd.is_some()
    }

    /// Compresses one frame, appending what zstd emits to `out`.
    pub fn write(&mut self, frame: &Frame, out: &mut Vec<u8>) -> std::io::Result<()> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let zstd = match &mut self.zstd {
            Some(zstd) => zstd,
            none => none.insert(Self::context(self.level)?),
        };
        self.frame.clear();
        encode(frame, &mut self.frame);
        let mut input = InBuffer::around(&self.frame);
        while input.pos() < self.frame.len() {
            out.reserve(self.frame.len() / 2 + 1024);
            let mut output = OutBuffer::around_pos(out, out.len());
            zstd.run(&mut input, &mut output)?;
        }
        Ok(())
    }

    /// Emits everything compressed so far (the context is kept for what follows).
    pub fn flush(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        use zstd::stream::raw::{Operation, OutBuffer};
        let Some(zstd) = &mut self.zstd else {
            return Ok(());
        };
        loop {
            out.reserve(16 << 10);
            let mut output = OutBuffer::around_pos(out, out.len());
            if zstd.flush(&mut output)? == 0 {
                return Ok(());
            }
        }
    }

    /// Ends the zstd frame (appending its last bytes to `out`) and drops the context and
    /// the frame buffer: what a quiet link keeps is nothing. The receiver's [`Inflate`]
    /// drops its own at the frame's end. The next [`Deflate::write`] begins a new frame.
    pub fn release(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        use zstd::stream::raw::{Operation, OutBuffer};
        let Some(mut zstd) = self.zstd.take() else {
            return Ok(());
        };
        loop {
            out.reserve(1 << 10);
            let mut output = OutBuffer::around_pos(out, out.len());
            if zstd.finish(&mut output, true)? == 0 {
                break;
            }
        }
        self.frame = Vec::new();
        Ok(())
    }
}

/// The receiving end of a compressed entry stream: bytes in, frames out. Its zstd
/// context and step buffer exist only while a zstd frame is open: a sender that goes
/// quiet ends its frame ([`Deflate::release`]), and this end then holds no buffers.
pub struct Inflate {
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
    input: Vec<u8>,
    used: usize,
    /// The decoder filled its last output: it may hold more without new input.
    more: bool,
    /// Where each step's output lands: allocated (and zeroed) once per zstd frame, not
    /// per call, which cost more instructions than decompression itself.
    step: Vec<u8>,
    frames: FrameReader,
}

impl std::fmt::Debug for Inflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflate")
            .field("buffered", &self.frames.buffered())
            .field("live", &self.zstd.is_some())
            .finish_non_exhaustive()
    }
}

impl Inflate {
    /// A decompressor for one stream; its context is made when bytes arrive.
    pub fn new() -> std::io::Result<Self> {
        // Made once here so that a failure is an error now, not at the first bytes.
        Self::context()?;
        Ok(Inflate {
            zstd: None,
            input: Vec::new(),
            used: 0,
            more: false,
            step: Vec::new(),
            frames: FrameReader::default(),
        })
    }

    fn context() -> std::io::Result<zstd::stream::raw::Decoder<'static>> {
        let mut zstd = zstd::stream::raw::Decoder::new()?;
        zstd.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
            INFLATE_WINDOW_LOG,
        ))?;
        Ok(zstd)
    }

    /// Whether a zstd context is held (a zstd frame is open).
    pub fn is_live(&self) -> bool {
        self.zstd.is_some()
    }

    /// Adds compressed bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.used == self.input.len() {
            self.input.clear();
            self.used = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next complete frame; `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        loop {
            if let Some(frame) = self.frames.next_frame()? {
                return Ok(Some(frame));
            }
            if self.used == self.input.len() && !self.more {
                return Ok(None);
            }
            let zstd = match &mut self.zstd {
                Some(zstd) => zstd,
                none => {
                    self.step = vec![0; INFLATE_STEP];
                    none.insert(Self::context().map_err(WireError::Inflate)?)
                }
            };
            let mut input = InBuffer::around(&self.input[self.used..]);
            let mut output = OutBuffer::around(&mut self.step[..]);
            let hint = zstd
                .run(&mut input, &mut output)
                .map_err(WireError::Inflate)?;
            let (read, written) = (input.pos(), output.pos());
            self.used += read;
            self.more = written == INFLATE_STEP;
            self.frames.push(&self.step[..written]);
            if hint == 0 {
                // The zstd frame is decoded and flushed whole: the sender released its
                // context. So does this end, until the next frame begins.
                self.more = false;
                self.zstd = None;
                self.step = Vec::new();
                if self.used == self.input.len() {
                    self.input = Vec::new();
                    self.used = 0;
                }
                if self.frames.buffered() == 0 {
                    self.frames = FrameReader::default();
                }
            } else if read == 0 && written == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(origin: &str, seq: u64, ts: u64, payload: &[u8]) -> Entry {
        Entry {
            id: EntryId {
                origin: NodeName::new(origin).unwrap(),
                seq: Seq(seq),
            },
            timestamp: Timestamp(ts),
            key: seq.is_multiple_of(2).then(|| b"k".to_vec()),
            to: seq
                .is_multiple_of(3)
                .then(|| NodeName::new("alpha").unwrap()),
            headers: vec![("h".into(), vec![seq as u8])],
            payload: payload.to_vec(),
        }
    }

    fn topic() -> TopicName {
        TopicName::new("t").unwrap()
    }

    #[test]
    fn batches_round_trip() {
        let entries = vec![
            entry("hq", 7, 1_700_000_000_000, b"one"),
            entry("bravo", 1, 1_699_999_999_000, b"two"),
            entry("hq", 8, 1_700_000_000_005, b""),
            entry("hq", 12, 1_700_000_000_009, &[0; 1000]),
        ];
        let batch = Batch::new(topic(), &entries);
        let frame = Frame::Batch(batch);
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        let mut reader = FrameReader::default();
        // Byte by byte: a frame is only returned once whole.
        for b in &bytes[..bytes.len() - 1] {
            reader.push(&[*b]);
            assert!(reader.next_frame().unwrap().is_none());
        }
        reader.push(&bytes[bytes.len() - 1..]);
        let Some(Frame::Batch(back)) = reader.next_frame().unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(back.into_entries().unwrap(), entries);
    }

    #[test]
    fn compressed_streams_round_trip_and_shrink_similar_entries() {
        let mut deflate = Deflate::new(3).unwrap();
        let mut inflate = Inflate::new().unwrap();
        let mut sent = Vec::new();
        let mut wire = 0;
        let mut raw = 0;
        for i in 0..200u64 {
            let json = format!(
                r#"{{"nasa_id":"PIA{i:05}","title":"Mars rover image {i}","center":"JPL","media_type":"image"}}"#
            );
            let frame = Frame::Batch(Batch::new(
                topic(),
                &[entry("hq", i + 1, 1_700_000_000_000 + i, json.as_bytes())],
            ));
            raw += json.len();
            let mut out = Vec::new();
            deflate.write(&frame, &mut out).unwrap();
            deflate.flush(&mut out).unwrap();
            wire += out.len();
            inflate.push(&out);
            assert_eq!(inflate.next_frame().unwrap(), Some(frame.clone()));
            assert_eq!(inflate.next_frame().unwrap(), None);
            sent.push(frame);
        }
        assert!(
            wire * 2 < raw,
            "{wire} bytes on the wire for {raw} bytes of JSON"
        );
    }

    #[test]
    fn large_entries_cross_the_compressed_stream_whole() {
        let mut deflate = Deflate::new(3).unwrap();
        let mut inflate = Inflate::new().unwrap();
        for (i, size) in [1_000usize, 100_000, 300_000, 700_000, 1 << 20]
            .into_iter()
            .enumerate()
        {
            let frame = Frame::Batch(Batch::new(
                topic(),
                &[entry(
                    "hq",
                    i as u64 + 1,
                    1_700_000_000_000,
                    &vec![b'x'; size],
                )],
            ));
            let mut out = Vec::new();
            deflate.write(&frame, &mut out).unwrap();
            deflate.flush(&mut out).unwrap();
            // As QUIC hands it over: in pieces, the frame asked for after each.
            let mut got = None;
            for piece in out.chunks(7) {
                inflate.push(piece);
                if let Some(frame) = inflate.next_frame().unwrap() {
                    assert!(got.is_none(), "one frame");
                    got = Some(frame);
                }
            }
            assert_eq!(got, Some(frame), "an entry of {size} bytes");
            assert_eq!(inflate.next_frame().unwrap(), None);
        }
    }

    #[test]
    fn a_released_stream_goes_on_in_a_new_zstd_frame_and_both_ends_hold_nothing_between() {
        let mut deflate = Deflate::new(1).unwrap();
        let mut inflate = Inflate::new().unwrap();
        assert!(!deflate.is_live() && !inflate.is_live());
        for round in 0..3u64 {
            for i in 0..20u64 {
                let seq = round * 100 + i + 1;
                let frame = Frame::Batch(Batch::new(
                    topic(),
                    &[entry(
                        "hq",
                        seq,
                        seq,
                        format!("status {seq} nominal").as_bytes(),
                    )],
                ));
                let mut out = Vec::new();
                deflate.write(&frame, &mut out).unwrap();
                deflate.flush(&mut out).unwrap();
                inflate.push(&out);
                assert_eq!(inflate.next_frame().unwrap(), Some(frame));
                assert_eq!(inflate.next_frame().unwrap(), None);
                assert!(deflate.is_live() && inflate.is_live());
            }
            // The link goes quiet: the sender ends its frame, and the receiver, seeing
            // the end, lets go of its context too.
            let mut out = Vec::new();
            deflate.release(&mut out).unwrap();
            assert!(!deflate.is_live());
            assert!(
                (1..=16).contains(&out.len()),
                "the frame's end crosses: {} bytes",
                out.len()
            );
            inflate.push(&out);
            assert_eq!(inflate.next_frame().unwrap(), None);
            assert!(!inflate.is_live());
            out.clear();
            deflate.release(&mut out).unwrap();
            assert!(out.is_empty(), "twice is nothing");
        }
    }

    #[test]
    fn oversized_and_garbage_input_is_an_error_not_a_panic() {
        let mut reader = FrameReader::default();
        reader.push(&[0xff, 0xff, 0xff, 0xff, 0x7f]); // a length of 34 GB
        assert!(matches!(
            reader.next_frame(),
            Err(WireError::TooLarge { .. })
        ));

        let mut reader = FrameReader::default();
        reader.push(&[0x80; 12]);
        assert!(matches!(reader.next_frame(), Err(WireError::BadLength)));

        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for len in [1usize, 2, 5, 17, 100, 1000] {
            let mut garbage = vec![0u8; len];
            for b in &mut garbage {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng as u8;
            }
            let mut reader = FrameReader::default();
            reader.push(&garbage);
            let _ = reader.next_frame(); // any result but a panic
            let mut inflate = Inflate::new().unwrap();
            inflate.push(&garbage);
            let _ = inflate.next_frame();
        }

        // A batch that points at a name it does not carry.
        let mut batch = Batch::new(topic(), &[entry("hq", 1, 0, b"x")]);
        batch.entries[0].origin = 5;
        assert!(matches!(
            batch.into_entries(),
            Err(WireError::BadBatch { .. })
        ));

        // Past the limits: refused with the limit named, and never held whole.
        let mut bomb = entry("hq", 1, 0, b"x");
        bomb.headers = vec![(String::new(), Vec::new()); 100_000];
        let mut bytes = Vec::new();
        encode(&Frame::Batch(Batch::new(topic(), &[bomb])), &mut bytes);
        let mut reader = FrameReader::default();
        reader.push(&bytes);
        let Some(Frame::Batch(back)) = reader.next_frame().unwrap() else {
            panic!("not a batch")
        };
        let held = back.entries[0].extras.as_ref().unwrap().headers.len();
        assert_eq!(held, crate::entry::MAX_HEADERS + 1);
        let refused = back.into_entries().unwrap_err().to_string();
        assert!(refused.contains("more than 64 headers"), "{refused}");
        let many: Vec<Entry> = (1..=5000).map(|i| entry("hq", i, 0, b"")).collect();
        let refused = Batch::new(topic(), &many).into_entries().unwrap_err();
        assert!(
            refused.to_string().contains("more than 4096 entries"),
            "{refused}"
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_without_buffering_it() {
        // 64 MB of zeros compress to a few KB; the frame inside claims more than allowed.
        let mut body = Vec::new();
        let mut len = 64u64 << 20;
        while len >= 0x80 {
            body.push((len as u8) | 0x80);
            len >>= 7;
        }
        body.push(len as u8);
        body.resize(body.len() + (64 << 20), 0);
        let compressed = zstd::encode_all(&body[..], 3).unwrap();
        let mut inflate = Inflate::new().unwrap();
        inflate.push(&compressed);
        assert!(matches!(
            inflate.next_frame(),
            Err(WireError::TooLarge { .. })
        ));
        assert!(inflate.frames.buffered() <= INFLATE_STEP + 16);
    }
}
