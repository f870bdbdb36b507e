//! Entry files: each topic's blocks of entries in append-only files of the store's own, which sled's `BLOCK` keys point into; retention removes whole files.
//!
//! Files: `<store>/entries/<topic id, 8 hex digits>-<first offset, 20 digits>.ent`, each
//! the encoded blocks ([`crate::codec`] of `Vec<StoredEntry>`) of one topic, back to
//! back, from the block whose first entry is the file's first offset. A file holds at
//! most [`FILE_BYTES`] (one larger block alone); the next block begins a new one.
//!
//! A block's `BLOCK` value in sled is its [`Location`]: the file, the position, the
//! length and a checksum of the bytes, so that a block read back damaged is an error,
//! never wrong entries. A store of format 2 or older held each block's bytes in sled
//! itself; such values are still read ([`block_bytes`]), and retention removes them.
//!
//! Durability: a block's bytes are also in the group's write-ahead log record, which is
//! synced before the block is written here (not synced: page cache only) and before sled
//! points at it. The flusher syncs the files written (and the directory, for new ones)
//! before sled, and both before the log's segments go; recovery writes every record's
//! blocks again (the same bytes at the same places), so a power cut that dropped an
//! unsynced write loses nothing acknowledged. Files that no block points at after a
//! recovery (records cut, files retention had removed and the replay wrote again) are
//! removed at open ([`Files::open`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::wal::{FileWrite, WalFs};

/// The directory of the entry files, inside the store's.
pub(crate) const DIR: &str = "entries";
/// A topic's file that holds this much is closed: the next block begins a new one. The
/// step in which retention gives disk space back.
pub(crate) const FILE_BYTES: u64 = 4 << 20;
const SUFFIX: &str = ".ent";

/// The name of topic `topic`'s file whose first block begins at offset `first`.
pub(crate) fn file_name(topic: u32, first: u64) -> String {
    format!("{topic:08x}-{first:020}{SUFFIX}")
}

/// The topic and first offset of an entry file's name; `None` for any other name (one
/// [`file_name`] would not write: no sign, no upper-case hex).
pub(crate) fn parse_name(name: &str) -> Option<(u32, u64)> {
    let (topic, first) = name.strip_suffix(SUFFIX)?.split_once('-')?;
    let topic = u32::from_str_radix(topic, 16).ok()?;
    let first = first.parse().ok()?;
    (file_name(topic, first) == name).then_some((topic, first))
}

/// Where a block's bytes are: sled's value for its `BLOCK` key.
///
/// Encoded as 29 bytes: [`LOCATION_TAG`], then the file's first offset (u64 BE), the
/// position (u64 BE), the length (u32 BE) and the checksum (8 bytes). A block encoded in
/// place (format 2 or older) never begins with the tag: it is a non-empty sequence,
/// whose length comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    /// The first offset of the file (its name, with the topic).
    pub(crate) file: u64,
    pub(crate) pos: u64,
    pub(crate) len: u32,
    pub(crate) sum: [u8; 8],
}

pub(crate) const LOCATION_TAG: u8 = 0;
const LOCATION_LEN: usize = 29;

impl Location {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(LOCATION_LEN);
        v.push(LOCATION_TAG);
        v.extend_from_slice(&self.file.to_be_bytes());
        v.extend_from_slice(&self.pos.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
        v.extend_from_slice(&self.sum);
        v
    }

    /// `Ok(None)`: the value is a block in place, not a location; `Err`: a damaged one.
    pub(crate) fn decode(value: &[u8]) -> Result<Option<Location>, String> {
        if value.first() != Some(&LOCATION_TAG) {
            return Ok(None);
        }
        let bad = || format!("a block location of {} bytes", value.len());
        if value.len() != LOCATION_LEN {
            return Err(bad());
        }
        let u64_at = |at: usize| -> Result<u64, String> {
            Ok(u64::from_be_bytes(
                value[at..at + 8].try_into().map_err(|_| bad())?,
            ))
        };
        let location = Location {
            file: u64_at(1)?,
            pos: u64_at(9)?,
            len: u32::from_be_bytes(value[17..21].try_into().map_err(|_| bad())?),
            sum: value[21..29].try_into().map_err(|_| bad())?,
        };
        if location.pos.checked_add(u64::from(location.len)).is_none() {
            return Err(bad());
        }
        Ok(Some(location))
    }

    /// Where the block ends in its file.
    pub(crate) fn end(&self) -> u64 {
        self.pos.saturating_add(u64::from(self.len))
    }
}

/// The first 8 bytes of BLAKE3 over a block's bytes.
pub(crate) fn checksum(bytes: &[u8]) -> [u8; 8] {
    let mut sum = [0; 8];
    sum.copy_from_slice(&blake3::hash(bytes).as_bytes()[..8]);
    sum
}

/// The encoded block that `value` (a `BLOCK` value of topic `topic`) stands for: read
/// from its file and checked, or the value itself (a block kept in sled by format 2 or
/// older). `Ok(None)`: its file is gone (retention removed it since the key was read).
pub(crate) fn block_bytes<'a>(
    fs: &dyn WalFs,
    topic: u32,
    value: &'a [u8],
) -> Result<Option<Cow<'a, [u8]>>, String> {
    let Some(at) = Location::decode(value)? else {
        return Ok(Some(Cow::Borrowed(value)));
    };
    let name = file_name(topic, at.file);
    let place = || format!("{} at offset {}", fs.path(&name).display(), at.pos);
    let bytes = match fs.read_at(&name, at.pos, at.len as usize) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(format!(
                "entry file cut short: a block of {} bytes at {}",
                at.len,
                place()
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", place())),
    };
    if checksum(&bytes) != at.sum {
        return Err(format!(
            "entry file damaged: the block of {} bytes at {} fails its checksum",
            at.len,
            place()
        ));
    }
    Ok(Some(Cow::Owned(bytes)))
}

/// Writes a log record's block at its place in its entry file (not synced); returns the
/// file's name. An error names the file.
pub(crate) fn write_block(fs: &dyn WalFs, block: &FileWrite) -> Result<String, String> {
    let name = file_name(block.topic, block.file);
    fs.write_at(&name, block.pos, &block.bytes)
        .map_err(|e| format!("cannot write entry file {}: {e}", fs.path(&name).display()))?;
    Ok(name)
}

/// The owner's view of the entry files: the ones each topic holds, where its next block
/// goes, and what was written since the flusher last synced.
#[derive(Debug, Default)]
pub(crate) struct Files {
    topics: HashMap<u32, TopicFiles>,
    /// Files written since they were last handed to the flusher.
    dirty: BTreeSet<String>,
    /// A file was created since then: the directory needs a sync too.
    created: bool,
    /// Bytes placed since then.
    dirty_bytes: u64,
}

/// Once this much is written to entry files, the flusher syncs them in the background
/// ([`Files::take_dirty`] early), so that the device writes them in steps rather than
/// all at once when the log's segment is folded, where the log's syncs would wait
/// behind them.
pub(crate) const EARLY_SYNC: u64 = 256 << 10;

#[derive(Debug, Default)]
struct TopicFiles {
    /// The topic's files, by first offset.
    firsts: BTreeSet<u64>,
    /// Where the next block goes in the last file.
    end: u64,
}

/// What the flusher makes durable before sled: files written, and whether the
/// directory gained one.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    pub(crate) files: Vec<String>,
    pub(crate) created: bool,
}

impl Files {
    /// The files as the directory holds them, given each topic's head, next offset and
    /// the location of its last block (`None`: it has none in a file). Removes, with a
    /// log line, the files no block points at: of unknown topics, before the head, after
    /// the last block's file. What lies past the last block in its file is overwritten.
    pub(crate) fn open(
        fs: &dyn WalFs,
        topics: &BTreeMap<u32, (u64, Option<Location>)>,
    ) -> std::io::Result<Files> {
        let mut files = Files::default();
        let mut found: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for name in fs.list()? {
            if let Some((topic, first)) = parse_name(&name) {
                found.entry(topic).or_default().insert(first);
            }
        }
        let mut removed = Vec::new();
        for (topic, firsts) in found {
            let (head, last) = match topics.get(&topic) {
                Some(&(head, last)) => (head, last),
                None => (u64::MAX, None),
            };
            let mut kept = BTreeSet::new();
            for &first in &firsts {
                let after = (std::ops::Bound::Excluded(first), std::ops::Bound::Unbounded);
                let next_first = firsts.range(after).next().copied();
                let pointed = last.is_some_and(|l| first <= l.file)
                    && (first == last.map_or(0, |l| l.file)
                        || next_first.is_some_and(|n| n > head));
                if pointed {
                    kept.insert(first);
                } else {
                    let name = file_name(topic, first);
                    match fs.remove(&name) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        other => other?,
                    }
                    removed.push(name);
                }
            }
            if let Some(last) = last {
                // The next block goes after the last one, in its file, even were that
                // file missing (its blocks then read as damage, never as another's).
                kept.insert(last.file);
                files.topics.insert(
                    topic,
                    TopicFiles {
                        firsts: kept,
                        end: last.end(),
                    },
                );
            }
        }
        // A topic whose last block's file the directory lacks altogether.
        for (&topic, &(_, last)) in topics {
            if let (Some(last), false) = (last, files.topics.contains_key(&topic)) {
                let t = TopicFiles {
                    firsts: [last.file].into(),
                    end: last.end(),
                };
                files.topics.insert(topic, t);
            }
        }
        if !removed.is_empty() {
            fs.sync_dir()?;
            tracing::info!(files = ?removed, "entry files no block points at removed");
        }
        Ok(files)
    }

    /// Places a block of `len` bytes of topic `topic` whose first entry is `first`:
    /// after the last one in the topic's file, or at the start of a new file once that
    /// one holds [`FILE_BYTES`]. Returns the file's name and the block's location
    /// (checksum included).
    pub(crate) fn place(&mut self, topic: u32, first: u64, bytes: &[u8]) -> (String, Location) {
        let t = self.topics.entry(topic).or_default();
        let file = match t.firsts.last() {
            Some(&file) if t.end < FILE_BYTES => file,
            _ => {
                t.firsts.insert(first);
                t.end = 0;
                self.created = true;
                first
            }
        };
        let at = Location {
            file,
            pos: t.end,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            sum: checksum(bytes),
        };
        t.end = at.end();
        self.dirty_bytes += u64::from(at.len);
        let name = file_name(topic, file);
        self.dirty.insert(name.clone());
        (name, at)
    }

    /// The files of `topic` that hold only entries before `head` (retention's new head),
    /// forgotten here: the caller removes them. With `head == next` (every entry gone)
    /// that is all of them, and the next block begins a new file.
    pub(crate) fn below(&mut self, topic: u32, head: u64, next: u64) -> Vec<String> {
        let Some(t) = self.topics.get_mut(&topic) else {
            return Vec::new();
        };
        // Most groups remove nothing: only the first file can be wholly before the head.
        let first_goes = match t.firsts.iter().nth(1) {
            Some(&second) => second <= head,
            None => head >= next,
        };
        if !first_goes {
            return Vec::new();
        }
        let firsts: Vec<u64> = t.firsts.iter().copied().collect();
        let mut gone = Vec::new();
        for (i, &first) in firsts.iter().enumerate() {
            let wholly_before = match firsts.get(i + 1) {
                Some(&after) => after <= head,
                None => head >= next,
            };
            if wholly_before {
                t.firsts.remove(&first);
                let name = file_name(topic, first);
                self.dirty.remove(&name);
                gone.push(name);
            }
        }
        if t.firsts.is_empty() {
            self.topics.remove(&topic);
        }
        gone
    }

    /// What was written since the last call, for the flusher to sync.
    pub(crate) fn take_dirty(&mut self) -> Dirty {
        self.dirty_bytes = 0;
        Dirty {
            files: std::mem::take(&mut self.dirty).into_iter().collect(),
            created: std::mem::take(&mut self.created),
        }
    }

    /// Whether [`EARLY_SYNC`] bytes were written since the last [`Files::take_dirty`].
    pub(crate) fn sync_due(&self) -> bool {
        self.dirty_bytes >= EARLY_SYNC
    }

    /// Takes back what a [`Files::take_dirty`] took, when the flusher was busy.
    pub(crate) fn restore(&mut self, dirty: Dirty) {
        self.dirty.extend(dirty.files);
        self.created |= dirty.created;
        self.dirty_bytes = EARLY_SYNC;
    }
}

/// Syncs the files (those gone meanwhile, removed by retention, need nothing) and, when
/// one was created, the directory.
pub(crate) fn sync(fs: &dyn WalFs, dirty: &Dirty) -> std::io::Result<()> {
    for name in &dirty.files {
        match fs.sync(name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    if dirty.created {
        fs.sync_dir()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations_come_back_as_written() {
        let name = file_name(7, 123_456);
        assert_eq!(name, "00000007-00000000000000123456.ent");
        assert_eq!(parse_name(&name), Some((7, 123_456)));
        for bad in [
            "7-1.ent",
            "00000007-00000000000000123456.wal",
            "+0000007-00000000000000123456.ent",
            "0000000A-00000000000000123456.ent",
            "00000007-+0000000000000123456.ent",
            "spare",
            "",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        let at = Location {
            file: 3,
            pos: 4096,
            len: 77,
            sum: checksum(b"block"),
        };
        assert_eq!(Location::decode(&at.encode()), Ok(Some(at)));
        // A block kept in sled (a non-empty sequence: its length first) is no location.
        assert_eq!(Location::decode(&[1, 2, 3]), Ok(None));
        assert!(Location::decode(&at.encode()[..20]).is_err());
    }

    #[test]
    fn a_topic_moves_to_a_new_file_once_its_file_is_full_and_retention_takes_whole_files() {
        let mut files = Files::default();
        let block = vec![7u8; (FILE_BYTES / 2) as usize];
        let (a, at) = files.place(1, 0, &block);
        assert_eq!((at.file, at.pos), (0, 0));
        let (b, at) = files.place(1, 10, &block);
        assert_eq!((b.as_str(), at.pos), (a.as_str(), FILE_BYTES / 2));
        let (c, at) = files.place(1, 20, &block);
        assert_eq!(
            (at.file, at.pos),
            (20, 0),
            "full: a new file from offset 20"
        );
        let dirty = files.take_dirty();
        assert_eq!(dirty.files, vec![a.clone(), c.clone()]);
        assert!(dirty.created);
        assert!(files.below(1, 19, 30).is_empty(), "offset 19 is still held");
        assert_eq!(files.below(1, 20, 30), vec![a]);
        assert_eq!(files.below(1, 30, 30), vec![c], "every entry gone");
        let (_, at) = files.place(1, 30, &block);
        assert_eq!((at.file, at.pos), (30, 0));
    }
}
