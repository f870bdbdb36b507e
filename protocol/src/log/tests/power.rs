//! Power cuts under the write-ahead log and the entry files: [`CutFs`] drops (or tears)
//! what was written and not synced, and the store is reopened from a copy of its
//! directory taken at the cut (sled's files as they were on disk then: what it held only
//! in memory is lost too).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use super::*;
use crate::log::wal::{DiskFs, MAGIC, WalFs};

/// A [`WalFs`] on a real directory that remembers what was synced. After
/// [`CutFs::cut_at_next_sync`], the next sync fails (the power went during it) and
/// every later call fails; [`CutFs::power_cut`] (after which every call fails too)
/// drops from the files what was not synced, keeping `torn` bytes of it, and files
/// whose names were never synced, and brings back the files removed since the
/// directory was last synced (with what of them was synced).
#[derive(Debug)]
struct CutFs {
    inner: DiskFs,
    state: Mutex<CutState>,
}

#[derive(Debug, Default)]
struct CutState {
    synced: HashMap<String, u64>,
    /// Where what was appended ends (a segment taken from the spare is longer).
    written: HashMap<String, u64>,
    /// Segments taken from the spare: zeros where nothing synced was written.
    from_spare: HashSet<String>,
    /// Segments taken from the spare so far.
    spares_taken: usize,
    fresh: HashSet<String>,
    /// Files removed since the last directory sync: their synced bytes, which a power
    /// cut brings back.
    removed: HashMap<String, Vec<u8>>,
    cut_at_sync: bool,
    dead: bool,
    /// Each sync takes this long first: a slow device.
    slow_sync: Option<Duration>,
}

/// The store's two file layers, each a [`CutFs`]: the log's and the entry files'.
#[derive(Debug, Clone)]
struct CutDisk {
    wal: Arc<CutFs>,
    entries: Arc<CutFs>,
}

impl CutDisk {
    fn new(store: &Path) -> CutDisk {
        CutDisk {
            wal: CutFs::new(&store.join(wal::DIR)),
            entries: CutFs::new(&store.join(entries::DIR)),
        }
    }

    fn open(&self, store: &Path, config: StoreConfig) -> Store {
        let (wal, entries) = (self.wal.clone(), self.entries.clone());
        Store::open_on(store, config, Some(wal), Some(entries)).unwrap()
    }

    /// The next sync of the log fails: the power went during it.
    fn cut_at_next_sync(&self) {
        self.wal.cut_at_next_sync();
        self.entries.cut_at_next_sync();
    }

    /// The power goes: `torn` bytes of what each file had unsynced reach the disk.
    fn power_cut(&self, torn: u64) {
        self.wal.power_cut(torn);
        self.entries.power_cut(torn);
    }
}

impl CutFs {
    fn new(dir: &Path) -> Arc<CutFs> {
        Arc::new(CutFs {
            inner: DiskFs::open(dir).unwrap(),
            state: Mutex::new(CutState::default()),
        })
    }

    fn cut_at_next_sync(&self) {
        self.state.lock().unwrap().cut_at_sync = true;
    }

    fn power_cut(&self, torn: u64) {
        let mut state = self.state.lock().unwrap();
        state.dead = true;
        for (name, bytes) in std::mem::take(&mut state.removed) {
            std::fs::write(self.inner.path(&name), bytes).unwrap();
        }
        for name in self.inner.list().unwrap() {
            let path = self.inner.path(&name);
            if state.fresh.contains(&name) {
                std::fs::remove_file(&path).unwrap();
                continue;
            }
            let len = std::fs::metadata(&path).unwrap().len();
            let synced = state.synced.get(&name).copied().unwrap_or(0);
            let keep = len.min(synced + torn);
            if state.from_spare.contains(&name) {
                let written = state.written.get(&name).copied().unwrap_or(0).min(len);
                if written > keep {
                    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    use std::os::unix::fs::FileExt as _;
                    let zeros = vec![0; (written - keep) as usize];
                    file.write_all_at(&zeros, keep).unwrap();
                    file.flush().unwrap();
                }
            } else {
                cut(&path, keep);
            }
        }
    }

    fn alive(&self) -> std::io::Result<std::sync::MutexGuard<'_, CutState>> {
        let state = self.state.lock().unwrap();
        if state.dead {
            return Err(std::io::Error::other("power cut"));
        }
        Ok(state)
    }
}

impl WalFs for CutFs {
    fn write_at(&self, name: &str, pos: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = self.alive()?;
        let path = self.inner.path(name);
        if !path.exists() {
            state.fresh.insert(name.to_owned());
        }
        let before = std::fs::metadata(&path).map_or(0, |m| m.len());
        let end = state.written.entry(name.to_owned()).or_insert(before);
        *end = (*end).max(pos + bytes.len() as u64);
        self.inner.write_at(name, pos, bytes)
    }

    fn read_at(&self, name: &str, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read_at(name, pos, len)
    }

    fn append(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = self.alive()?;
        let path = self.inner.path(name);
        if !path.exists() {
            state.fresh.insert(name.to_owned());
        }
        let before = std::fs::metadata(&path).map_or(0, |m| m.len());
        *state.written.entry(name.to_owned()).or_insert(before) += bytes.len() as u64;
        self.inner.append(name, bytes)
    }

    fn sync(&self, name: &str) -> std::io::Result<()> {
        let slow = self.alive()?.slow_sync;
        if let Some(slow) = slow {
            std::thread::sleep(slow);
        }
        let mut state = self.alive()?;
        if state.cut_at_sync {
            state.dead = true;
            return Err(std::io::Error::other("power cut"));
        }
        self.inner.sync(name)?;
        let len = match state.written.get(name) {
            Some(&written) => written,
            None => std::fs::metadata(self.inner.path(name))?.len(),
        };
        state.synced.insert(name.to_owned(), len);
        Ok(())
    }

    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        self.inner.read(name)
    }

    fn truncate(&self, name: &str, len: u64) -> std::io::Result<()> {
        let mut state = self.alive()?;
        self.inner.truncate(name, len)?;
        state.synced.insert(name.to_owned(), len);
        state.written.insert(name.to_owned(), len);
        state.from_spare.remove(name);
        Ok(())
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut state = self.alive()?;
        if !state.fresh.contains(name) {
            let mut durable = std::fs::read(self.inner.path(name)).unwrap_or_default();
            let synced = state.synced.get(name).copied().unwrap_or(0);
            durable.truncate(synced as usize);
            state.removed.insert(name.to_owned(), durable);
        }
        state.synced.remove(name);
        state.written.remove(name);
        state.from_spare.remove(name);
        state.fresh.remove(name);
        self.inner.remove(name)
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        let mut state = self.alive()?;
        self.inner.sync_dir()?;
        state.fresh.clear();
        state.removed.clear();
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.inner.path(name)
    }

    fn prepare_spare(&self, len: u64) -> std::io::Result<()> {
        let _state = self.alive()?;
        self.inner.prepare_spare(len)
    }

    fn take_spare(&self, name: &str) -> std::io::Result<bool> {
        let mut state = self.alive()?;
        let taken = self.inner.take_spare(name)?;
        if taken {
            state.fresh.insert(name.to_owned());
            state.from_spare.insert(name.to_owned());
            state.spares_taken += 1;
            state.written.insert(name.to_owned(), 0);
            state.synced.insert(name.to_owned(), 0);
        }
        Ok(taken)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A store on a [`CutFs`], topic `t` created, and five appends `a0`..`a4` and a
/// document acknowledged, each its own group.
async fn store_on_cut_fs() -> (TempDir, CutDisk, Store, Vec<String>) {
    store_on_cut_fs_with(StoreConfig::new(node("hq")), None).await
}

/// [`store_on_cut_fs`] with this config, and each sync taking `slow_sync` first.
async fn store_on_cut_fs_with(
    config: StoreConfig,
    slow_sync: Option<Duration>,
) -> (TempDir, CutDisk, Store, Vec<String>) {
    let dir = TempDir::new();
    let fs = CutDisk::new(&dir.0);
    fs.wal.state.lock().unwrap().slow_sync = slow_sync;
    let store = fs.open(&dir.0, config);
    let config = TopicConfig {
        name: topic("t"),
        scope: Scope::Local,
        retention: Retention::default(),
    };
    store.create_topic(config).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..5 {
        let payload = format!("a{i}");
        store
            .append(&topic("t"), Append::new(payload.clone()))
            .await
            .unwrap();
        acked.push(payload);
    }
    let mut txn = Txn::new();
    txn.put(&TableName::new("docs").unwrap(), "d", serde_json::json!(1));
    store.commit(txn).await.unwrap();
    (dir, fs, store, acked)
}

/// The power goes during a group's sync, `torn` bytes of its unsynced record reach the
/// disk; returns the copy of the store's directory as the disk holds it, and what was
/// acknowledged.
async fn cut_during_a_sync(torn: u64) -> (TempDir, Vec<String>) {
    let (dir, fs, store, mut acked) = store_on_cut_fs().await;
    fs.cut_at_next_sync();
    // Whatever the store answers, an acknowledged append must survive.
    if store.append(&topic("t"), Append::new("cut")).await.is_ok() {
        acked.push("cut".into());
    }
    fs.power_cut(torn);
    let copy = TempDir::new();
    copy_dir(&dir.0, &copy.0);
    drop(store); // sled flushes its memory as it drops: the copy was taken before
    (copy, acked)
}

fn check_holds(store: &Store, acked: &[String]) {
    let held = payloads(&store.read(&topic("t"), Offset(0), 1000).unwrap());
    let lost: Vec<_> = acked.iter().filter(|a| !held.contains(a)).collect();
    let extra: Vec<_> = held.iter().filter(|h| !acked.contains(h)).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "acknowledged and lost: {lost:?}; held, not acknowledged: {extra:?}"
    );
    assert_eq!(held, acked, "in order");
    let doc = store.doc(&TableName::new("docs").unwrap(), "d").unwrap();
    assert_eq!(doc, Some(serde_json::json!(1)));
}

#[tokio::test]
async fn a_cut_between_the_write_and_its_sync_loses_only_that_group() {
    let (copy, acked) = cut_during_a_sync(0).await;
    let store = open(&copy.0, "hq");
    check_holds(&store, &acked);
    assert_eq!(store.vector(&topic("t")).unwrap().get(&node("hq")), Seq(5));
    // The store goes on from there.
    let a = store
        .append(&topic("t"), Append::new("after"))
        .await
        .unwrap();
    assert_eq!((a.offset, a.seq), (Offset(5), Seq(6)));
    store.close().await.unwrap();
}

/// Log lines written while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines(Arc::default());
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    (out, text)
}

#[tokio::test]
async fn a_torn_final_record_is_cut_and_logged() {
    // The header and a few bytes of the payload reached the disk.
    let (copy, acked) = cut_during_a_sync(30).await;
    let (store, log) = logged(|| open(&copy.0, "hq"));
    assert!(
        log.contains("cut a torn tail") && log.contains("bytes=30") && log.contains(".wal"),
        "{log}"
    );
    check_holds(&store, &acked);
}

#[tokio::test]
async fn a_flipped_byte_in_a_middle_record_fails_the_open_naming_file_and_offset() {
    let (dir, _fs, store, _acked) = store_on_cut_fs().await;
    let copy = TempDir::new();
    copy_dir(&dir.0, &copy.0);
    drop(store);
    let wal_dir = copy.0.join(wal::DIR);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let file = segments.last().unwrap().clone();
    let mut bytes = std::fs::read(&file).unwrap();
    // Walk to the third record by the length fields, flip a byte of its payload.
    let mut at = 0;
    for _ in 0..2 {
        assert_eq!(bytes[at..at + 4], MAGIC);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 32 + len;
    }
    bytes[at + 32 + 2] ^= 0x10;
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let err = Store::open(&copy.0, StoreConfig::new(node("hq"))).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{text}");
    assert!(
        text.contains(&format!("{} at offset {at}", file.display())),
        "{text}"
    );
}

/// Rewrites a closed store as a build of `format` (1 or 2) would have left it: each
/// block's entries in sled in place of its location, no entry files, no log, no log
/// position for format 1.
fn as_older_format(dir: &Path, format: u32) {
    let entry_files = wal::DiskFs::open(&dir.join(entries::DIR)).unwrap();
    {
        let db = sled_config(dir, 1 << 20).open().unwrap();
        let tree = db.open_tree("tether").unwrap();
        let mut blocks = 0;
        for kv in tree.scan_prefix([format::BLOCK]) {
            let (k, v) = kv.unwrap();
            let topic = format::u32_value(&k[1..5]).unwrap();
            let bytes = entries::block_bytes(&entry_files, topic, &v)
                .unwrap()
                .unwrap()
                .into_owned();
            assert_ne!(bytes, v.to_vec(), "a block already in place");
            tree.insert(k, bytes).unwrap();
            blocks += 1;
        }
        assert!(blocks > 0);
        tree.insert(format::META_FORMAT, &format.to_be_bytes())
            .unwrap();
        if format == 1 {
            tree.remove(format::META_LSN).unwrap();
        }
        db.flush().unwrap();
    }
    std::fs::remove_dir_all(dir.join(entries::DIR)).unwrap();
    std::fs::remove_dir_all(dir.join(wal::DIR)).unwrap();
}

fn marker(dir: &Path) -> Option<u32> {
    let db = sled_config(dir, 1 << 20).open().unwrap();
    let tree = db.open_tree("tether").unwrap();
    format::u32_value(&tree.get(format::META_FORMAT).unwrap()?)
}

#[tokio::test]
async fn a_store_of_format_1_opens_converted_and_the_format_3_marker_is_durable_first() {
    let (dir, fs, store, acked) = store_on_cut_fs().await;
    drop(fs);
    store.close().await.unwrap();
    drop(store);
    as_older_format(&dir.0, 1);
    let store = open(&dir.0, "hq");
    check_holds(&store, &acked);
    // New entries go to entry files, after the ones kept in sled.
    store.append(&topic("t"), Append::new("new")).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    assert_eq!(marker(&dir.0), Some(3));
    let store = open(&dir.0, "hq");
    let mut acked = acked;
    acked.push("new".into());
    check_holds(&store, &acked);
}

/// A store of format 2 whose log holds a record of that format (its writes alone, a
/// block in place): it is replayed, and the store converted.
#[tokio::test]
async fn a_store_of_format_2_replays_its_log_and_opens_converted() {
    let (dir, fs, store, mut acked) = store_on_cut_fs().await;
    drop(fs);
    store.close().await.unwrap();
    drop(store);
    as_older_format(&dir.0, 2);
    let lsn = {
        let db = sled_config(&dir.0, 1 << 20).open().unwrap();
        let tree = db.open_tree("tether").unwrap();
        format::u64_value(&tree.get(format::META_LSN).unwrap().unwrap()).unwrap()
    };
    // The record a format 2 build wrote for a sixth append: its block in place, the
    // topic's state, the time index.
    let (t, state) = {
        let db = sled_config(&dir.0, 1 << 20).open().unwrap();
        let tree = db.open_tree("tether").unwrap();
        let record = tree.get(format::topic_key("t")).unwrap().unwrap();
        let t = codec::decode::<format::TopicRecord>(&record, "topic")
            .unwrap()
            .id;
        let v = tree.get(format::state_key(t)).unwrap().unwrap();
        (
            t,
            codec::decode::<format::StateRecord>(&v, "state").unwrap(),
        )
    };
    let e = StoredEntry {
        origin: state.vector[0].0,
        seq: state.vector[0].1 + 1,
        ts: 1,
        key: None,
        to: None,
        headers: Vec::new(),
        payload: b"in the old log".to_vec(),
    };
    let mut after = state.clone();
    after.next += 1;
    after.bytes += e.size();
    after.vector[0].1 += 1;
    let writes = vec![
        wal::Write {
            key: format::block_key(t, state.next).to_vec(),
            value: Some(codec::encode(&vec![e])),
        },
        wal::Write {
            key: format::time_key(t, 1, state.next).to_vec(),
            value: Some(1u64.to_be_bytes().to_vec()),
        },
        wal::Write {
            key: format::state_key(t).to_vec(),
            value: Some(codec::encode(&after)),
        },
    ];
    let log = wal::DiskFs::open(&dir.0.join(wal::DIR)).unwrap();
    let record = wal::encode_record(lsn + 1, lsn, &codec::encode(&writes)).unwrap();
    log.append(&format!("{:020}.wal", lsn + 1), &record)
        .unwrap();
    let store = open(&dir.0, "hq");
    acked.push("in the old log".into());
    check_holds(&store, &acked);
    store.close().await.unwrap();
    drop(store);
    assert_eq!(marker(&dir.0), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_segments_are_folded_into_sled_and_removed_and_a_cut_still_recovers() {
    let dir = TempDir::new();
    let fs = CutDisk::new(&dir.0);
    let config = StoreConfig {
        wal_segment_bytes: 4096,
        ..StoreConfig::new(node("hq"))
    };
    let store = fs.open(&dir.0, config);
    let t = TopicConfig {
        name: topic("t"),
        scope: Scope::Local,
        retention: Retention::default(),
    };
    store.create_topic(t).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..200 {
        let payload = format!("{i:04}{}", "x".repeat(200));
        store
            .append(&topic("t"), Append::new(payload.clone()))
            .await
            .unwrap();
        acked.push(payload);
    }
    let mut txn = Txn::new();
    txn.put(&TableName::new("docs").unwrap(), "d", serde_json::json!(1));
    store.commit(txn).await.unwrap();
    // About 50 KiB of log in 4 KiB segments: the flusher keeps up and removes them.
    let segments = || {
        let names = fs.wal.list().unwrap();
        names.iter().filter(|n| n.ends_with(".wal")).count()
    };
    for _ in 0..500 {
        if segments() <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(segments() <= 2, "{} segments left", segments());
    // Segments after the first few are renamed from spares the flusher made ready.
    assert!(fs.wal.state.lock().unwrap().spares_taken > 0);
    fs.cut_at_next_sync();
    if store.append(&topic("t"), Append::new("cut")).await.is_ok() {
        acked.push("cut".into());
    }
    fs.power_cut(10);
    let copy = TempDir::new();
    copy_dir(&dir.0, &copy.0);
    drop(store);
    let store = open(&copy.0, "hq");
    check_holds(&store, &acked);
}

/// Every group fills a segment, so every group is followed by a rotation, and the disk
/// is slow: the flusher may fold the old segment into sled only once sled holds the
/// group that was still being synced, or a cut right after its acknowledgement loses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_folded_into_sled_only_once_sled_holds_all_of_it() {
    let config = StoreConfig {
        wal_segment_bytes: 1,
        ..StoreConfig::new(node("hq"))
    };
    let slow = Some(Duration::from_millis(20));
    let (dir, fs, store, acked) = store_on_cut_fs_with(config, slow).await;
    // The cut comes right after the last acknowledgement, before any later flush.
    fs.power_cut(0);
    let copy = TempDir::new();
    copy_dir(&dir.0, &copy.0);
    drop(store);
    let store = open(&copy.0, "hq");
    check_holds(&store, &acked);
}

/// sled is durable past the groups whose blocks the entry files still hold only in the
/// page cache (sled flushes by itself); the power goes: the files lose them (the new
/// files their names too), and recovery writes them again from the log, whose records
/// sled already holds.
#[tokio::test]
async fn blocks_the_entry_files_lost_to_a_cut_are_written_again_from_the_log() {
    let (dir, fs, store, acked) = store_on_cut_fs().await;
    store.shared.db.flush().unwrap();
    assert!(
        fs.entries.state.lock().unwrap().synced.is_empty(),
        "an entry file was synced: the cut would lose nothing"
    );
    fs.power_cut(0);
    let copy = TempDir::new();
    copy_dir(&dir.0, &copy.0);
    drop(store);
    assert!(
        std::fs::read_dir(copy.0.join(entries::DIR))
            .unwrap()
            .next()
            .is_none(),
        "the cut left an entry file"
    );
    let store = open(&copy.0, "hq");
    check_holds(&store, &acked);
}

/// Retention removes whole entry files once their entries are all gone, and a cut after
/// that (the removal's record in the log, sled not flushed) does not bring them back.
#[tokio::test]
async fn retention_removes_emptied_entry_files_and_a_replay_does_not_bring_them_back() {
    let dir = TempDir::new();
    let fs = CutDisk::new(&dir.0);
    // One segment of log for everything: none is folded, the replay holds every block.
    let config = StoreConfig {
        wal_segment_bytes: 64 << 20,
        ..StoreConfig::new(node("hq"))
    };
    let store = fs.open(&dir.0, config);
    let retention = Retention {
        max_entries: Some(10),
        ..Retention::default()
    };
    let config = TopicConfig {
        name: topic("t"),
        scope: Scope::Local,
        retention,
    };
    store.create_topic(config).await.unwrap();
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.0.join(entries::DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // Entries of 200 KB, each its own group and block: about 20 in a file.
    let mut acked = Vec::new();
    for i in 0..45 {
        let payload = format!("{i:04}{}", "y".repeat(200_000));
        store
            .append(&topic("t"), Append::new(payload.clone()))
            .await
            .unwrap();
        acked.push(payload);
    }
    let before = files();
    let report = store.enforce_retention().await.unwrap();
    assert_eq!(report.removed, 35);
    let after = files();
    assert!(
        after.len() < before.len(),
        "no entry file removed: {before:?} -> {after:?}"
    );
    fs.power_cut(0);
    let copy = TempDir::new();
    copy_dir(&dir.0, &copy.0);
    drop(store);
    let store = open(&copy.0, "hq");
    let held = payloads(&store.read(&topic("t"), Offset(0), 1000).unwrap());
    assert_eq!(held, acked[35..].to_vec());
    let mut kept: Vec<String> = std::fs::read_dir(copy.0.join(entries::DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, after, "files retention removed came back");
}
