//! The store's on-disk format, version [`FORMAT_VERSION`]: key layout and stored records.
//!
//! Everything lives in one sled tree (entries: their locations; the blocks are in entry files, `log/entries.rs`). Keys
//! start with a one-byte tag; integers in keys are big-endian so that byte order is
//! numeric order. Values are encoded with [`crate::codec`].
//!
//! | tag | key after the tag | value |
//! | --- | --- | --- |
//! | 0 `META` | `format` / `node` / `incarnation` / `wal_lsn` | format version (u32 BE) / the owning node's name / incarnation (u64 BE) / last log record applied (u64 BE) |
//! | 1 `TOPIC` | topic name | [`TopicRecord`] |
//! | 2 `NAME` | node name | interned id (u32 BE) |
//! | 3 `BLOCK` | topic id, first offset | the block's `entries::Location` in its entry file (format 2 and older: the `Vec<StoredEntry>` itself): the entries of one topic from one group commit |
//! | 4 `TIME` | topic id, max timestamp, first offset | min timestamp (u64 BE) of that block |
//! | 5 `STATE` | topic id | [`StateRecord`]: head, next offset, bytes, version vector |
//! | 6 `CURSOR` | consumer, 0, topic id | next offset (u64 BE) |
//! | 7 `DOC` | table, 0, document id | the JSON document |
//! | 8 `PEER` | peer name | [`PeerRecord`] |
//! | 9 `ACK` | peer, 0, topic id, origin id | highest sequence the peer holds (u64 BE) |
//! | 10 `FORGOTTEN` | peer name | [`ForgottenRecord`]: a peer retention no longer waits for |
//!
//! Tags and record fields are never reused; a change of meaning bumps the version.

use serde::{Deserialize, Serialize};

use crate::entry::{NodeName, Scope};

/// The version this build writes and reads. Version 3: blocks of entries are in entry
/// files (`log/entries.rs`), and a `BLOCK` value is the block's location; the log's
/// records carry the blocks. Version 2: writes go through the write-ahead log
/// (`log/wal.rs`) before sled, and sled holds the log's position ([`META_LSN`]). A
/// build of an older version refuses a newer store, whose log or blocks it would not
/// read.
pub(crate) const FORMAT_VERSION: u32 = 3;

/// Version 2 (blocks in sled), which this build opens and converts.
pub(crate) const FORMAT_LOGGED: u32 = 2;

/// Version 1 (no write-ahead log), which this build opens and converts.
pub(crate) const FORMAT_UNLOGGED: u32 = 1;

/// sled's segment size, part of the format: sled refuses to open a database with another.
/// 2 MiB puts sled's blob threshold (a quarter segment) above a leaf of 16 blocks.
pub(crate) const SLED_SEGMENT: usize = 2 << 20;

pub(crate) const TOPIC: u8 = 1;
pub(crate) const NAME: u8 = 2;
pub(crate) const BLOCK: u8 = 3;
pub(crate) const TIME: u8 = 4;
pub(crate) const STATE: u8 = 5;
pub(crate) const CURSOR: u8 = 6;
pub(crate) const DOC: u8 = 7;
pub(crate) const PEER: u8 = 8;
pub(crate) const ACK: u8 = 9;
pub(crate) const FORGOTTEN: u8 = 10;

pub(crate) const META_FORMAT: &[u8] = b"\x00format";
pub(crate) const META_NODE: &[u8] = b"\x00node";
/// The store's incarnation (a `u64`, big-endian): drawn once, when the store is made (or
/// first opened by a version that knows it), and presented to peers in the hello.
pub(crate) const META_INCARNATION: &[u8] = b"\x00incarnation";
/// The LSN (a `u64`, big-endian) of the last write-ahead log record handed to sled, in
/// the same batch as that record's writes: replay goes on from the next one.
pub(crate) const META_LSN: &[u8] = b"\x00wal_lsn";

/// A topic's definition as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopicRecord {
    pub(crate) id: u32,
    pub(crate) scope: Scope,
    pub(crate) max_age_ms: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_entries: Option<u64>,
}

/// A topic's counters, written in the same batch as the entries they count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    /// The oldest offset still held (retention moves it forward).
    pub(crate) first: u64,
    /// The offset the next entry will get.
    pub(crate) next: u64,
    /// Sum of [`crate::entry::Entry::size`] over the held entries.
    pub(crate) bytes: u64,
    /// Per origin id, the highest sequence accounted for without a hole.
    pub(crate) vector: Vec<(u32, u64)>,
}

/// One entry as stored: names are interned ids, the offset is implied by its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    pub(crate) origin: u32,
    pub(crate) seq: u64,
    pub(crate) ts: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) to: Option<u32>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}

impl StoredEntry {
    pub(crate) fn size(&self) -> u64 {
        crate::entry::entry_size(self.key.as_deref(), &self.headers, &self.payload)
    }
}

/// A peer this node replicates to: which topics it receives, and whether it is the core
/// (which receives entries addressed to any node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerRecord {
    pub(crate) core: bool,
    pub(crate) topics: Vec<u32>,
}

/// A peer an operator forgot: retention no longer keeps entries for it, and records what
/// it removes that the peer lacked, to become gaps if the peer returns. Its `ACK` keys
/// stay: what it held when forgotten.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ForgottenRecord {
    /// When it was forgotten, ms since the Unix epoch.
    pub(crate) forgotten_ms: u64,
    /// Its [`PeerRecord`] when forgotten.
    pub(crate) core: bool,
    pub(crate) topics: Vec<u32>,
    /// Per topic id and origin id, the first and last sequence removed since, which the
    /// peer lacked and would have received.
    pub(crate) owed: Vec<(u32, u32, u64, u64)>,
}

pub(crate) fn forgotten_key(peer: &str) -> Vec<u8> {
    tagged(FORGOTTEN, peer.as_bytes())
}

pub(crate) fn topic_key(name: &str) -> Vec<u8> {
    tagged(TOPIC, name.as_bytes())
}

pub(crate) fn name_key(name: &str) -> Vec<u8> {
    tagged(NAME, name.as_bytes())
}

pub(crate) fn block_key(topic: u32, first: u64) -> [u8; 13] {
    let mut k = [0; 13];
    k[0] = BLOCK;
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k[5..13].copy_from_slice(&first.to_be_bytes());
    k
}

/// The offset a block key starts at, or `None` if the key is not a block key.
pub(crate) fn block_first(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(5..13)?.try_into().ok()?;
    (key.len() == 13 && key[0] == BLOCK).then(|| u64::from_be_bytes(bytes))
}

pub(crate) fn time_key(topic: u32, max_ts: u64, first: u64) -> [u8; 21] {
    let mut k = [0; 21];
    k[0] = TIME;
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k[5..13].copy_from_slice(&max_ts.to_be_bytes());
    k[13..21].copy_from_slice(&first.to_be_bytes());
    k
}

/// `(max_ts, first)` of a time key.
pub(crate) fn time_parts(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 21 || key[0] != TIME {
        return None;
    }
    let max: [u8; 8] = key[5..13].try_into().ok()?;
    let first: [u8; 8] = key[13..21].try_into().ok()?;
    Some((u64::from_be_bytes(max), u64::from_be_bytes(first)))
}

pub(crate) fn state_key(topic: u32) -> [u8; 5] {
    let mut k = [0; 5];
    k[0] = STATE;
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k
}

pub(crate) fn cursor_key(consumer: &str, topic: u32) -> Vec<u8> {
    let mut k = tagged(CURSOR, consumer.as_bytes());
    k.push(0);
    k.extend_from_slice(&topic.to_be_bytes());
    k
}

pub(crate) fn doc_prefix(table: &str) -> Vec<u8> {
    let mut k = tagged(DOC, table.as_bytes());
    k.push(0);
    k
}

pub(crate) fn doc_key(table: &str, id: &str) -> Vec<u8> {
    let mut k = doc_prefix(table);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(crate) fn peer_key(peer: &str) -> Vec<u8> {
    tagged(PEER, peer.as_bytes())
}

pub(crate) fn ack_key(peer: &str, topic: u32, origin: u32) -> Vec<u8> {
    let mut k = tagged(ACK, peer.as_bytes());
    k.push(0);
    k.extend_from_slice(&topic.to_be_bytes());
    k.extend_from_slice(&origin.to_be_bytes());
    k
}

/// The interned node names by id, from the `NAME` records as `(id, name)`. Ids are dense
/// from 0, so an id past the number of names, or one taken twice, is damage (and a
/// damaged id never sizes the table).
pub(crate) fn names_by_id(names: Vec<(u32, NodeName)>) -> Result<Vec<NodeName>, String> {
    let count = names.len();
    let mut by_id: Vec<Option<NodeName>> = vec![None; count];
    for (id, name) in names {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| by_id.get_mut(i))
            .ok_or_else(|| format!("node {name} has id {id}, past the {count} names"))?;
        if let Some(other) = slot {
            return Err(format!("nodes {other} and {name} have the same id {id}"));
        }
        *slot = Some(name);
    }
    // As many names as ids, none out of range or taken twice: every id has its name.
    Ok(by_id.into_iter().flatten().collect())
}

pub(crate) fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub(crate) fn u32_value(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn tagged(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len() + 13);
    k.push(tag);
    k.extend_from_slice(rest);
    k
}
