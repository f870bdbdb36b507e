//! Power cuts under the write-ahead log: [`CutFs`] drops (or tears) what was written and
//! not synced, and the store is reopened from a copy of its directory taken at the cut
//! (sled's files as they were on disk then: what it held only in memory is lost too).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use super::*;
use crate::log::wal::{DiskFs, MAGIC, WalFs};

/// A [`WalFs`] on a real directory that remembers what was synced. After
/// [`CutFs::cut_at_next_sync`], the next sync fails (the power went during it) and
/// every later call fails; [`CutFs::power_cut`] (after which every call fails too)
/// drops from the files what was not synced, keeping `torn` bytes of it, and files
/// whose names were never synced. Removals count as durable at once (the log never
/// relies on a removal).
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
    cut_at_sync: bool,
    dead: bool,
    /// Each sync takes this long first: a slow device.
    slow_sync: Option<Duration>,
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
async fn store_on_cut_fs() -> (TempDir, Arc<CutFs>, Store, Vec<String>) {
    store_on_cut_fs_with(StoreConfig::new(node("hq")), None).await
}

/// [`store_on_cut_fs`] with this config, and each sync taking `slow_sync` first.
async fn store_on_cut_fs_with(
    config: StoreConfig,
    slow_sync: Option<Duration>,
) -> (TempDir, Arc<CutFs>, Store, Vec<String>) {
    let dir = TempDir::new();
    let fs = CutFs::new(&dir.0.join(wal::DIR));
    fs.state.lock().unwrap().slow_sync = slow_sync;
    let store = Store::open_on(&dir.0, config, Some(fs.clone())).unwrap();
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

#[tokio::test]
async fn a_store_of_format_1_opens_converted_and_a_format_2_marker_is_durable_first() {
    let (dir, fs, store, acked) = store_on_cut_fs().await;
    drop(fs);
    store.close().await.unwrap();
    drop(store);
    // A closed store holds no log: as a build of format 1 would have left it.
    {
        let db = sled_config(&dir.0, 1 << 20).open().unwrap();
        let tree = db.open_tree("tether").unwrap();
        tree.insert(format::META_FORMAT, &1u32.to_be_bytes())
            .unwrap();
        tree.remove(format::META_LSN).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_dir_all(dir.0.join(wal::DIR)).unwrap();
    let store = open(&dir.0, "hq");
    check_holds(&store, &acked);
    store.close().await.unwrap();
    drop(store);
    let db = sled_config(&dir.0, 1 << 20).open().unwrap();
    let marker = db
        .open_tree("tether")
        .unwrap()
        .get(format::META_FORMAT)
        .unwrap();
    assert_eq!(marker.as_deref(), Some(&2u32.to_be_bytes()[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_segments_are_folded_into_sled_and_removed_and_a_cut_still_recovers() {
    let dir = TempDir::new();
    let fs = CutFs::new(&dir.0.join(wal::DIR));
    let config = StoreConfig {
        wal_segment_bytes: 4096,
        ..StoreConfig::new(node("hq"))
    };
    let store = Store::open_on(&dir.0, config, Some(fs.clone())).unwrap();
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
        let names = fs.list().unwrap();
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
    assert!(fs.state.lock().unwrap().spares_taken > 0);
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
