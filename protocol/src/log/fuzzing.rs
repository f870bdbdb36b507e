//! The bodies of the store's fuzz targets, for what it reads back from disk (the write-ahead log, the entry files, sled's keys and values, the checkpoint), re-exported by [`crate::fuzzing`]; and [`store_seeds`], their seed inputs from a real store.
//!
//! Each target drives the decoders as the store does at open and on reads; any error is
//! an answer, a panic, a hang or an allocation without bound is the bug.
//!
//! IO: none, except [`store_seeds`], which reads an open store's files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use super::format::{self, ForgottenRecord, PeerRecord, StateRecord, StoredEntry, TopicRecord};
use super::wal::{self, WalFs};
use super::{Store, checkpoint, entries};
use crate::codec;
use crate::entry::{NodeName, TopicName};

/// One seed input: its target, its name (the file is `seed-<name>`) and its bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// What separates the segment files in a [`store_wal`] input.
pub const SEGMENT_MARK: &[u8] = b"TSEG";

/// The write-ahead log as recovery at open reads it ([`wal::recover`]), each record's
/// payload decoded as the writes of a group and applied to an in-memory tree, then every
/// key and value of that tree decoded as the catalog load and the reads do (see
/// [`store_records`]). A recovery that passed must pass again over what it left (a torn
/// tail cut), with nothing more to cut and the same last record.
///
/// The input: one byte, the LSN sled holds (255: `u64::MAX`, 254: one less); then the segment files,
/// separated by [`SEGMENT_MARK`], each its first LSN (u64 LE, which names the file) and
/// its bytes.
pub fn store_wal(data: &[u8]) {
    let Some((&applied, rest)) = data.split_first() else {
        return;
    };
    let applied = match applied {
        255 => u64::MAX,
        254 => u64::MAX - 1,
        small => u64::from(small),
    };
    let fs = MemFs::default();
    for part in split(rest, SEGMENT_MARK) {
        let Some((first, bytes)) = part.split_first_chunk::<8>() else {
            continue;
        };
        let name = format!("{:020}.wal", u64::from_le_bytes(*first));
        let _ = fs.append(&name, bytes);
    }
    let mut tree: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let entry_files = MemFs::default();
    let mut lsns = Vec::new();
    let recovered = wal::recover(&fs, applied, |lsn, payload, past| {
        let record: wal::Payload =
            codec::decode(payload, "write-ahead log record").map_err(|e| e.to_string())?;
        for block in &record.files {
            entries::write_block(&entry_files, block)?;
        }
        if !past {
            return Ok(());
        }
        for write in record.writes {
            match write.value {
                Some(value) => tree.insert(write.key, value),
                None => tree.remove(&write.key),
            };
        }
        tree.insert(format::META_LSN.to_vec(), lsn.to_be_bytes().to_vec());
        lsns.push(lsn);
        Ok(())
    });
    let recovery = match recovered {
        Ok(recovery) => recovery,
        Err(e) => {
            assert!(!e.is_empty(), "recovery failed without a message");
            return;
        }
    };
    assert_eq!(recovery.replayed, lsns.len() as u64, "records replayed");
    assert!(
        lsns.windows(2).all(|w| w[1] == w[0] + 1),
        "records replayed out of order: {lsns:?}"
    );
    assert!(
        lsns.iter()
            .all(|&lsn| lsn > applied && lsn <= recovery.last),
        "a record at or below what sled holds, or past the last, was replayed"
    );
    match wal::recover(&fs, applied, |_, _, _| Ok(())) {
        Ok(again) => {
            assert_eq!(again.cut, None, "a second recovery cut again");
            assert_eq!(
                again.last, recovery.last,
                "a second recovery ends elsewhere"
            );
        }
        Err(e) => panic!("a log that recovered does not recover again: {e}"),
    }
    let mut names = Vec::new();
    for (key, value) in &tree {
        if key.first() == Some(&format::NAME) {
            names.push((key.as_slice(), value.as_slice()));
        }
        let _ = stored(key, value);
        // A block's location, read from the entry files the replay wrote, as reads do.
        if let (Some(_), Some(topic)) = (
            format::block_first(key),
            key.get(1..5).and_then(format::u32_value),
        ) && let Ok(Some(bytes)) = entries::block_bytes(&entry_files, topic, value)
        {
            let _ = block(&bytes);
        }
    }
    let _ = interned(&names);
}

/// One decoder of what the store reads from sled or from its checkpoint: the first byte
/// chooses it (modulo their number, in this order), the rest is the bytes it decodes.
///
/// Values: 0 topic record, 1 topic state, 2 block of entries, 3 peer record, 4 forgotten
/// peer, 5 u64 (time index, cursor, acknowledgement, log position), 6 u32 (name id,
/// format), 7 document (JSON), 8 the checkpoint. Keys: 9 block, 10 time index, 11
/// acknowledgement, 12 a name-keyed record (topic, name, peer, forgotten peer). 13: a
/// sled key and value (a one-byte key length, the key, the value) decoded by its tag as
/// the store does. 14: the interned names (each a one-byte name length, the name, its id
/// as u32 BE), as the catalog load makes its table of them. 15: an entry file's name, and
/// the entry files as the store finds them at open (names separated by `/`, each topic's
/// head and last block taken from the bytes). 16: a write-ahead log record's payload
/// (which [`store_wal`] sees only behind a checksum the fuzzer cannot forge), its blocks
/// written to in-memory entry files and each read back through a location, as recovery
/// and reads do.
pub fn store_records(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let _ = match which % 17 {
        0 => decode::<TopicRecord>(bytes, "topic record").map(|_| ()),
        1 => state(bytes),
        2 => block(bytes),
        3 => decode::<PeerRecord>(bytes, "peer record").map(|_| ()),
        4 => decode::<ForgottenRecord>(bytes, "forgotten peer").map(|_| ()),
        5 => format::u64_value(bytes).map(|_| ()).ok_or_default(),
        6 => format::u32_value(bytes).map(|_| ()).ok_or_default(),
        7 => document(bytes),
        8 => checkpoint::check(bytes, |topic| (topic.len() % 3 != 0).then_some(10)),
        9 => format::block_first(bytes).map(|_| ()).ok_or_default(),
        10 => format::time_parts(bytes).map(|_| ()).ok_or_default(),
        11 => ack(bytes),
        12 => named(bytes),
        13 => {
            let Some((&len, rest)) = bytes.split_first() else {
                return;
            };
            let (key, value) = rest.split_at(usize::from(len).min(rest.len()));
            stored(key, value)
        }
        15 => entry_files(bytes),
        16 => payload(bytes),
        _ => {
            let mut names = Vec::new();
            let mut rest = bytes;
            while let Some((&len, after)) = rest.split_first() {
                let (name, after) = after.split_at(usize::from(len).min(after.len()));
                let (id, after) = after.split_at(4.min(after.len()));
                names.push((name, id));
                rest = after;
            }
            let keys: Vec<(Vec<u8>, &[u8])> = names
                .iter()
                .map(|(name, id)| (format::name_key(&String::from_utf8_lossy(name)), *id))
                .collect();
            let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
            interned(&pairs).map(|_| ())
        }
    };
}

/// The seed inputs of [`store_wal`] and [`store_records`] from a real store, as
/// `(target, name, bytes)`: its write-ahead log as it is now (whole, split into
/// segments, with a record torn, with sled past some of it), every key and value of its
/// sled tree (at most two of each kind) and its checkpoint.
///
/// Call it on a store that took its writes and is still open (its log is removed at
/// close), with no write under way.
pub fn store_seeds(store: &Store) -> Result<Vec<Seed>, String> {
    let mut seeds = Vec::new();
    let dir = store.path().join(wal::DIR);
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "wal") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::new();
    for path in &paths {
        files.push(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    // The records, by their headers, in LSN order: (LSN, bytes); a segment taken from
    // the spare ends in zeros, where its records end.
    let mut records: Vec<(u64, &[u8])> = Vec::new();
    for bytes in &files {
        let mut at = 0;
        while let Some(header) = bytes.get(at..at + wal::HEADER) {
            if header[..4] != wal::MAGIC {
                break;
            }
            let len = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as usize;
            let lsn = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
            let end = (at + wal::HEADER + len).min(bytes.len());
            records.push((lsn, &bytes[at..end]));
            at = end;
        }
    }
    if records.len() < 3 {
        return Err(format!("the log holds {} records: too few", records.len()));
    }
    if let Some(w) = records
        .windows(2)
        .find(|w| w[1].0 != w[0].0.wrapping_add(1))
    {
        return Err(format!(
            "the log's records, split by their headers, go from {} to {}: split wrong",
            w[0].0, w[1].0
        ));
    }
    let input = |applied: u8, segments: &[&[(u64, &[u8])]]| {
        let mut out = vec![applied];
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(SEGMENT_MARK);
            }
            let first = segment.first().map_or(0, |(lsn, _)| *lsn);
            out.extend_from_slice(&first.to_le_bytes());
            for (_, bytes) in *segment {
                out.extend_from_slice(bytes);
            }
        }
        out
    };
    let n = records.len();
    let (a, b) = (n / 3, 2 * n / 3);
    let middle = u8::try_from(records[n / 2].0).unwrap_or(1);
    seeds.push(("store_wal", "whole".to_owned(), input(0, &[&records])));
    let split = [&records[..a], &records[a..b], &records[b..]];
    seeds.push(("store_wal", "segments".to_owned(), input(0, &split)));
    seeds.push(("store_wal", "applied".to_owned(), input(middle, &split)));
    let mut torn = input(0, &split);
    let last = records[n - 1].1.len();
    torn.truncate(torn.len() - last / 2);
    seeds.push(("store_wal", "torn".to_owned(), torn));
    let mut empty = input(0, &split);
    empty.extend_from_slice(SEGMENT_MARK);
    empty.extend_from_slice(&(records[n - 1].0 + 1).to_le_bytes());
    seeds.push(("store_wal", "empty-segment".to_owned(), empty));
    // Two records' payloads with blocks, for store_records 16, which needs no checksum.
    let with_blocks = records.iter().filter_map(|(_, bytes)| {
        let payload = bytes.get(wal::HEADER..)?;
        let record: wal::Payload = codec::decode(payload, "record").ok()?;
        (!record.files.is_empty()).then_some(payload)
    });
    for (i, payload) in with_blocks.take(2).enumerate() {
        let mut out = vec![16];
        out.extend_from_slice(payload);
        seeds.push(("store_records", format!("payload-{}", i + 1), out));
    }

    // sled's keys and values: at most two of each kind.
    let mut kinds: BTreeMap<u8, usize> = BTreeMap::new();
    let mut names = Vec::new();
    for kv in store.shared.tree.iter() {
        let (key, value) = kv.map_err(|e| e.to_string())?;
        let Some(&tag) = key.first() else { continue };
        if tag == format::NAME {
            names.push((key.to_vec(), value.to_vec()));
        }
        let seen = kinds.entry(tag).or_default();
        *seen += 1;
        if *seen > 2 || key.len() > 255 {
            continue;
        }
        let name = |what: &str| format!("{what}-{}", *seen);
        let mut add = |which: u8, what: &str, bytes: &[u8]| {
            let mut out = vec![which];
            out.extend_from_slice(bytes);
            seeds.push(("store_records", name(what), out));
        };
        let value_decoder = match tag {
            format::TOPIC => Some(0),
            format::STATE => Some(1),
            format::BLOCK => Some(2),
            format::PEER => Some(3),
            format::FORGOTTEN => Some(4),
            format::TIME | format::CURSOR | format::ACK => Some(5),
            format::NAME => Some(6),
            format::DOC => Some(7),
            _ => None,
        };
        let what = kind(tag);
        if let Some(which) = value_decoder {
            add(which, &format!("{what}-value"), &value);
        }
        match tag {
            format::BLOCK => add(9, "block-key", &key),
            format::TIME => add(10, "time-key", &key),
            format::ACK => add(11, "ack-key", &key),
            format::TOPIC | format::NAME | format::PEER | format::FORGOTTEN => {
                add(12, &format!("{what}-key"), &key)
            }
            _ => {}
        }
        if *seen == 1 {
            let mut pair = vec![key.len() as u8];
            pair.extend_from_slice(&key);
            pair.extend_from_slice(&value);
            add(13, &format!("{what}-pair"), &pair);
        }
    }
    let mut table = Vec::new();
    for (key, id) in &names {
        let name = &key[1..];
        table.push(name.len() as u8);
        table.extend_from_slice(name);
        table.extend_from_slice(id);
    }
    let mut out = vec![14];
    out.extend_from_slice(&table);
    seeds.push(("store_records", "names".to_owned(), out));

    // The entry files: their names, a head, the last block's location; and a block as
    // read back from them (as a store of format 2 kept it in sled).
    let mut last = None;
    for kv in store.shared.tree.scan_prefix([format::BLOCK]) {
        let (key, value) = kv.map_err(|e| e.to_string())?;
        if entries::Location::decode(&value)?.is_some() {
            last = Some((key.to_vec(), value.to_vec()));
        }
    }
    let (key, location) = last.ok_or("no block in an entry file")?;
    let topic = key
        .get(1..5)
        .and_then(format::u32_value)
        .ok_or("bad block key")?;
    let block = entries::block_bytes(&*store.shared.entries, topic, &location)?
        .ok_or("the last block's entry file is missing")?;
    let mut out = vec![2];
    out.extend_from_slice(&block);
    seeds.push(("store_records", "block-in-place".to_owned(), out));
    let mut names = store
        .shared
        .entries
        .list()
        .map_err(|e| format!("entry files: {e}"))?;
    names.sort();
    let mut out = vec![15];
    out.extend_from_slice(&0u64.to_be_bytes());
    out.extend_from_slice(&location);
    out.extend_from_slice(names.join("/").as_bytes());
    seeds.push(("store_records", "entry-files".to_owned(), out));

    let path = store.path().join("checkpoint");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = vec![8];
    out.extend_from_slice(&bytes);
    seeds.push(("store_records", "checkpoint".to_owned(), out));
    Ok(seeds)
}

/// A name for the kind of a key's tag, in seed names.
fn kind(tag: u8) -> &'static str {
    match tag {
        0 => "meta",
        format::TOPIC => "topic",
        format::NAME => "name",
        format::BLOCK => "block",
        format::TIME => "time",
        format::STATE => "state",
        format::CURSOR => "cursor",
        format::DOC => "doc",
        format::PEER => "peer",
        format::ACK => "ack",
        format::FORGOTTEN => "forgotten",
        _ => "other",
    }
}

/// A key and its value from sled, decoded by the key's tag as the catalog load
/// (`Owner::load`), the recovery (the log position) and the reads do.
fn stored(key: &[u8], value: &[u8]) -> Result<(), String> {
    let Some(&tag) = key.first() else {
        return Err("an empty key".into());
    };
    match tag {
        0 => match key {
            format::META_FORMAT => format::u32_value(value).map(|_| ()).ok_or_default(),
            format::META_NODE => node_name(value),
            format::META_INCARNATION | format::META_LSN => {
                format::u64_value(value).map(|_| ()).ok_or_default()
            }
            _ => Ok(()),
        },
        format::TOPIC => {
            named(key)?;
            decode::<TopicRecord>(value, "topic record").map(|_| ())
        }
        format::NAME => {
            named(key)?;
            format::u32_value(value).map(|_| ()).ok_or_default()
        }
        format::BLOCK => {
            format::block_first(key).ok_or("bad block key")?;
            block(value)
        }
        format::TIME => {
            format::time_parts(key).ok_or("bad time key")?;
            format::u64_value(value).map(|_| ()).ok_or_default()
        }
        format::STATE => state(value),
        format::CURSOR => format::u64_value(value).map(|_| ()).ok_or_default(),
        format::DOC => {
            let id = key.iter().skip(1).position(|&b| b == 0).unwrap_or(0);
            let _ = String::from_utf8_lossy(key.get(id + 2..).unwrap_or_default());
            document(value)
        }
        format::PEER => {
            named(key)?;
            decode::<PeerRecord>(value, "peer record").map(|_| ())
        }
        format::ACK => {
            ack(key)?;
            format::u64_value(value).map(|_| ()).ok_or_default()
        }
        format::FORGOTTEN => {
            named(key)?;
            decode::<ForgottenRecord>(value, "forgotten peer").map(|_| ())
        }
        _ => Err(format!("unknown tag {tag}")),
    }
}

/// The name a name-keyed record's key holds, checked as the catalog load does: a topic
/// name after [`format::TOPIC`], a node name after the others.
fn named(key: &[u8]) -> Result<(), String> {
    let Some((&tag, name)) = key.split_first() else {
        return Err("an empty key".into());
    };
    if tag == format::TOPIC {
        TopicName::new(String::from_utf8_lossy(name).into_owned())
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        node_name(name)
    }
}

fn node_name(bytes: &[u8]) -> Result<(), String> {
    NodeName::new(String::from_utf8_lossy(bytes).into_owned())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// An acknowledgement key: the peer's name, 0, the topic id and the origin id, parsed as
/// the catalog load and `Store::peer_vector` do, after a prefix of the peer's name.
fn ack(key: &[u8]) -> Result<(), String> {
    let Some(zero) = key.iter().position(|&b| b == 0) else {
        return Err("no end of the peer's name".into());
    };
    node_name(key.get(1..zero).unwrap_or_default())?;
    let ids = &key[zero + 1..];
    let topic = format::u32_value(&ids[..4.min(ids.len())]);
    let origin = format::u32_value(ids.get(4..).unwrap_or_default());
    topic.zip(origin).map(|_| ()).ok_or_default()
}

/// A topic's state, with the check the catalog load makes of it.
fn state(bytes: &[u8]) -> Result<(), String> {
    let state: StateRecord = decode(bytes, "topic state")?;
    if state.first > state.next {
        return Err("head past end".into());
    }
    Ok(())
}

/// A block of entries, and each one's size (the reads' byte bounds).
/// A `BLOCK` value: a location in an entry file, or (format 2 and older) the block.
fn block(bytes: &[u8]) -> Result<(), String> {
    if entries::Location::decode(bytes)?.is_some() {
        return Ok(());
    }
    let entries: Vec<StoredEntry> = decode(bytes, "entry block")?;
    let _bytes = entries
        .iter()
        .map(StoredEntry::size)
        .fold(0, u64::saturating_add);
    Ok(())
}

/// A log record's payload as recovery decodes and applies it (blocks written to
/// in-memory entry files, at most 64 MiB in all), then each block read back through a
/// location made for it, as reads do.
fn payload(bytes: &[u8]) -> Result<(), String> {
    let record: wal::Payload = decode(bytes, "write-ahead log record")?;
    let files = MemFs::default();
    let mut written = 0u64;
    for block in &record.files {
        written = written
            .saturating_add(block.pos)
            .saturating_add(block.bytes.len() as u64);
        if written > 64 << 20 {
            return Err("more than 64 MiB of entry files".into());
        }
        entries::write_block(&files, block)?;
        let at = entries::Location {
            file: block.file,
            pos: block.pos,
            len: u32::try_from(block.bytes.len()).map_err(|e| e.to_string())?,
            sum: entries::checksum(&block.bytes),
        };
        let location = at.encode();
        let read = entries::block_bytes(&files, block.topic, &location)?
            .ok_or("a block written is missing")?;
        assert_eq!(&*read, &block.bytes[..], "a block read back differs");
        let _ = self::block(&read);
    }
    for write in &record.writes {
        if let Some(value) = &write.value {
            let _ = stored(&write.key, value);
        }
    }
    Ok(())
}

/// Entry file names, and [`entries::Files::open`] over them: which it keeps must be
/// consistent with the heads and last blocks it was given.
fn entry_files(bytes: &[u8]) -> Result<(), String> {
    let (head, rest) = bytes.split_at(8.min(bytes.len()));
    let head = format::u64_value(head).unwrap_or(0);
    let (last, rest) = rest.split_at(29.min(rest.len()));
    let last = entries::Location::decode(last).ok().flatten();
    let fs = MemFs::default();
    for name in rest.split(|&b| b == b'/') {
        let name = String::from_utf8_lossy(name);
        if let Some((topic, first)) = entries::parse_name(&name) {
            assert_eq!(
                entries::file_name(topic, first),
                name,
                "a name parsed, not as written"
            );
            fs.append(&name, b"").map_err(|e| e.to_string())?;
        }
    }
    let topics: BTreeMap<u32, (u64, Option<entries::Location>)> =
        [(1, (head, last))].into_iter().collect();
    let mut files = entries::Files::open(&fs, &topics).map_err(|e| e.to_string())?;
    for name in fs.list().map_err(|e| e.to_string())? {
        let (topic, first) = entries::parse_name(&name).ok_or("a file kept with a bad name")?;
        assert_eq!(topic, 1, "a file of an unknown topic was kept");
        assert!(
            last.is_some_and(|l| first <= l.file),
            "a file after the last block was kept"
        );
    }
    let (_, at) = files.place(1, head, b"block");
    if let Some(l) = last.filter(|l| l.end() < entries::FILE_BYTES) {
        assert_eq!(
            (at.file, at.pos),
            (l.file, l.end()),
            "the next block does not follow the last one"
        );
    }
    Ok(())
}

fn document(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The interned names' table by id, from their keys and values, as the catalog load
/// makes it ([`format::names_by_id`]).
fn interned(pairs: &[(&[u8], &[u8])]) -> Result<Vec<NodeName>, String> {
    let mut names = Vec::new();
    for (key, value) in pairs {
        let text = String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned();
        let name = NodeName::new(text).map_err(|e| e.to_string())?;
        let id = format::u32_value(value).ok_or("bad name id")?;
        names.push((id, name));
    }
    format::names_by_id(names)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, String> {
    codec::decode(bytes, what).map_err(|e| e.to_string())
}

/// An `Option` of a check as a `Result` with a generic message.
trait OkOrDefault {
    fn ok_or_default(self) -> Result<(), String>;
}

impl OkOrDefault for Option<()> {
    fn ok_or_default(self) -> Result<(), String> {
        self.ok_or_else(|| "malformed".to_owned())
    }
}

/// The pieces of `bytes` between occurrences of `mark`.
fn split<'a>(bytes: &'a [u8], mark: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at + mark.len() <= bytes.len() {
        if bytes[at..].starts_with(mark) {
            parts.push(&bytes[start..at]);
            at += mark.len();
            start = at;
        } else {
            at += 1;
        }
    }
    parts.push(&bytes[start..]);
    parts
}

/// A [`WalFs`] in memory: one flat directory of files.
#[derive(Debug, Default)]
struct MemFs {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemFs {
    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn missing(name: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, name.to_owned())
}

impl WalFs for MemFs {
    fn append(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.files()
            .entry(name.to_owned())
            .or_default()
            .extend_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, name: &str, pos: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut files = self.files();
        let file = files.entry(name.to_owned()).or_default();
        let pos = usize::try_from(pos).map_err(std::io::Error::other)?;
        let end = pos
            .checked_add(bytes.len())
            .filter(|&end| end <= 1 << 30)
            .ok_or_else(|| std::io::Error::other("a write past 1 GiB in memory"))?;
        if file.len() < end {
            file.resize(end, 0);
        }
        file[pos..end].copy_from_slice(bytes);
        Ok(())
    }

    fn read_at(&self, name: &str, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let files = self.files();
        let file = files.get(name).ok_or_else(|| missing(name))?;
        usize::try_from(pos)
            .ok()
            .and_then(|pos| file.get(pos..pos.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }

    fn sync(&self, _: &str) -> std::io::Result<()> {
        Ok(())
    }

    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        self.files().get(name).cloned().ok_or_else(|| missing(name))
    }

    fn truncate(&self, name: &str, len: u64) -> std::io::Result<()> {
        let mut files = self.files();
        let file = files.get_mut(name).ok_or_else(|| missing(name))?;
        file.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(())
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        Ok(self.files().keys().cloned().collect())
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.files()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| missing(name))
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(wal::DIR).join(name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A [`store_wal`] input: sled's LSN byte, then each segment's first LSN and records.
    fn input(applied: u8, segments: &[(u64, &[u64])]) -> Vec<u8> {
        let mut out = vec![applied];
        for (i, (first, lsns)) in segments.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(SEGMENT_MARK);
            }
            out.extend_from_slice(&first.to_le_bytes());
            for &lsn in *lsns {
                let record = wal::Payload {
                    writes: vec![wal::Write {
                        key: format::META_NODE.to_vec(),
                        value: Some(b"alpha".to_vec()),
                    }],
                    files: vec![wal::FileWrite {
                        topic: 1,
                        file: 0,
                        pos: lsn.min(1 << 20),
                        bytes: b"block".to_vec(),
                    }],
                };
                out.extend(
                    wal::encode_record(lsn, lsn.saturating_sub(1), &codec::encode(&record))
                        .unwrap(),
                );
            }
        }
        out
    }

    /// Recovery over a store_wal input, with its error.
    fn recover(data: &[u8]) -> Result<wal::Recovery, String> {
        let fs = MemFs::default();
        let applied = match data[0] {
            255 => u64::MAX,
            254 => u64::MAX - 1,
            small => u64::from(small),
        };
        for part in split(&data[1..], SEGMENT_MARK) {
            let (first, bytes) = part.split_first_chunk::<8>().unwrap();
            let name = format!("{:020}.wal", u64::from_le_bytes(*first));
            fs.append(&name, bytes).unwrap();
        }
        wal::recover(&fs, applied, |_, _, _| Ok(()))
    }

    #[test]
    fn a_log_position_or_a_record_at_the_last_lsn_is_an_error_not_an_overflow() {
        // sled says it holds u64::MAX: no record can be due after it.
        let data = input(255, &[(1, &[1, 2])]);
        let err = recover(&data).unwrap_err();
        assert!(err.contains("log position"), "{err}");
        store_wal(&data);
        // A record numbered u64::MAX, then another: nothing can follow it, and the store
        // would go on from it.
        let data = input(254, &[(u64::MAX, &[u64::MAX, 3])]);
        let err = recover(&data).unwrap_err();
        assert!(err.contains("no record can follow"), "{err}");
        store_wal(&data);
        if std::env::var_os("TETHER_WRITE_REGRESSIONS").is_some_and(|v| v == "1") {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/store_wal");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("applied-u64-max"), input(255, &[(1, &[1, 2])])).unwrap();
            std::fs::write(dir.join("record-u64-max"), data).unwrap();
        }
    }

    /// The last block's file is missing and an older one is there: the next block goes
    /// after the last one, in its file, not into the older file.
    #[test]
    fn the_next_block_follows_the_last_even_when_its_file_is_missing() {
        let last = entries::Location {
            file: 10,
            pos: 100,
            len: 5,
            sum: [0; 8],
        };
        let mut data = vec![15];
        data.extend_from_slice(&0u64.to_be_bytes());
        data.extend_from_slice(&last.encode());
        data.extend_from_slice(entries::file_name(1, 0).as_bytes());
        store_records(&data);
    }

    #[test]
    fn the_seed_segments_split_as_written() {
        let data = input(0, &[(1, &[1, 2]), (3, &[3]), (4, &[])]);
        let rec = recover(&data).unwrap();
        assert_eq!((rec.last, rec.replayed, rec.segments), (3, 3, 3));
        store_wal(&data);
    }

    #[test]
    fn interned_names_with_an_id_past_their_number_are_refused_without_a_table_of_it() {
        let alpha = NodeName::new("alpha").unwrap();
        let bravo = NodeName::new("bravo").unwrap();
        let table = format::names_by_id(vec![(1, bravo.clone()), (0, alpha.clone())]).unwrap();
        assert_eq!(table, [alpha.clone(), bravo.clone()]);
        let err = format::names_by_id(vec![(0, alpha.clone()), (u32::MAX, bravo.clone())]);
        assert!(err.unwrap_err().contains("past the 2 names"));
        let err = format::names_by_id(vec![(0, alpha), (0, bravo)]);
        assert!(err.unwrap_err().contains("same id"));
        // The catalog's table from sled's records, as store_records 14 takes them.
        let mut data = vec![14, 5];
        data.extend_from_slice(b"alpha");
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        store_records(&data);
    }
}
