//! Unit tests of the store: each opens a real sled store in a fresh directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::entry::{Append, Retention, Scope, TopicConfig};

mod power;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tether-log-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

fn open(dir: &Path, name: &str) -> Store {
    Store::open(dir, StoreConfig::new(node(name))).unwrap()
}

async fn open_with(dir: &Path, name: &str, topics: &[(&str, Scope, Retention)]) -> Store {
    let store = open(dir, name);
    for (t, scope, retention) in topics {
        store
            .create_topic(TopicConfig {
                name: topic(t),
                scope: *scope,
                retention: *retention,
            })
            .await
            .unwrap();
    }
    store
}

fn remote(origin: &str, seq: u64, payload: &str) -> Entry {
    Entry {
        id: EntryId {
            origin: node(origin),
            seq: Seq(seq),
        },
        timestamp: Timestamp(1_000 * seq),
        key: None,
        to: None,
        headers: vec![],
        payload: payload.as_bytes().to_vec(),
    }
}

/// Commits entries from peers into topic `t`.
async fn insert(store: &Store, entries: Vec<Entry>) -> Result<Committed, WriteError> {
    let mut txn = Txn::new();
    txn.insert(&topic("t"), entries);
    store.commit(txn).await
}

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.entry.payload.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn append_then_read_back_with_identity_and_offsets() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::All, Retention::default())]).await;
    let a = store
        .append(
            &topic("t"),
            Append::new(*b"one").key(*b"k1").header("h", *b"v"),
        )
        .await
        .unwrap();
    let b = store
        .append(&topic("t"), Append::new(*b"two").to(node("alpha")))
        .await
        .unwrap();
    assert_eq!((a.offset, a.seq), (Offset(0), Seq(1)));
    assert_eq!((b.offset, b.seq), (Offset(1), Seq(2)));

    let records = store.read(&topic("t"), Offset(0), 10).unwrap();
    assert_eq!(payloads(&records), ["one", "two"]);
    let first = &records[0].entry;
    assert_eq!(
        first.id,
        EntryId {
            origin: node("hq"),
            seq: Seq(1)
        }
    );
    assert_eq!(first.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(first.headers, vec![("h".to_owned(), b"v".to_vec())]);
    assert_eq!(records[1].entry.to, Some(node("alpha")));
    assert_eq!(store.read(&topic("t"), Offset(1), 10).unwrap().len(), 1);
    assert_eq!(store.read(&topic("t"), Offset(2), 10).unwrap().len(), 0);
    assert_eq!(store.vector(&topic("t")).unwrap().get(&node("hq")), Seq(2));
    assert!(matches!(
        store.read(&topic("nope"), Offset(0), 1),
        Err(ReadError::UnknownTopic(_))
    ));
}

/// A link's sender wakes for entries it may send: one addressed to another edge wakes
/// only that edge's sender (and the core's, which relays it); one for no one wakes all;
/// a local topic wakes none.
#[tokio::test]
async fn an_entry_for_one_peer_wakes_only_the_senders_that_may_send_it() {
    let dir = TempDir::new();
    let store = open_with(
        &dir.0,
        "alpha",
        &[
            ("t", Scope::All, Retention::default()),
            ("here", Scope::Local, Retention::default()),
        ],
    )
    .await;
    for (name, core) in [("hq", true), ("bravo", false), ("charlie", false)] {
        store
            .set_peer(PeerConfig {
                name: node(name),
                core,
                topics: vec![topic("t")],
            })
            .await
            .unwrap();
    }
    let mut hq = store.sender_wakes(&node("hq"));
    let mut bravo = store.sender_wakes(&node("bravo"));
    let mut charlie = store.sender_wakes(&node("charlie"));
    // Woken now, or not: the wake-up is given before the append is answered.
    async fn woken(w: &mut SenderWakes) -> bool {
        let now = tokio::time::timeout(Duration::ZERO, w.changed())
            .await
            .is_ok();
        w.seen();
        now
    }
    for w in [&mut hq, &mut bravo, &mut charlie] {
        w.seen();
    }
    store
        .append(&topic("t"), Append::new(*b"for bravo").to(node("bravo")))
        .await
        .unwrap();
    assert!(woken(&mut bravo).await, "bravo's sender");
    assert!(woken(&mut hq).await, "the core's, which relays it");
    assert!(!woken(&mut charlie).await, "not charlie's");

    store
        .append(&topic("t"), Append::new(*b"all"))
        .await
        .unwrap();
    for (w, who) in [
        (&mut hq, "hq"),
        (&mut bravo, "bravo"),
        (&mut charlie, "charlie"),
    ] {
        assert!(woken(w).await, "{who}: an entry for everyone");
    }

    store
        .append(&topic("here"), Append::new(*b"stays"))
        .await
        .unwrap();
    for (w, who) in [
        (&mut hq, "hq"),
        (&mut bravo, "bravo"),
        (&mut charlie, "charlie"),
    ] {
        assert!(!woken(w).await, "{who}: a local topic never crosses");
    }
}

/// Readers at the tail read the newest blocks from memory (`Recent`), older ones from
/// sled: whichever, every read returns the same records, across block and cache edges.
#[tokio::test]
async fn reads_from_the_newest_blocks_in_memory_match_reads_from_disk() {
    let dir = TempDir::new();
    let t = topic("t");
    let store = open_with(&dir.0, "hq", &[("t", Scope::All, Retention::default())]).await;
    // Groups of 1 to 40 entries of ~1 KiB: ~300 KiB, more than the cache holds, in
    // blocks of all sizes.
    let mut n = 0u64;
    for group in 0..30u64 {
        let mut txn = Txn::new();
        for _ in 0..(group * 7 % 40 + 1) {
            txn.append(&t, Append::new(format!("{n:04}{}", "x".repeat(1000))));
            n += 1;
        }
        store.commit(txn).await.unwrap();
    }
    let live: Vec<Vec<Record>> = (0..n)
        .map(|from| store.read(&t, Offset(from), 17).unwrap())
        .collect();
    let within: Vec<Vec<Record>> = (0..n)
        .map(|from| store.read_within(&t, Offset(from), 50, 5_000).unwrap())
        .collect();
    // The newest entries come from memory: the cache reaches back some way, not all.
    let recent = store.view(&t).unwrap().recent.lock().unwrap().from(n - 1);
    let cached = recent.map_or(0, |b| b.len());
    assert!(cached > 0, "the newest block is in memory");
    assert!(
        store
            .view(&t)
            .unwrap()
            .recent
            .lock()
            .unwrap()
            .from(0)
            .is_none(),
        "the oldest are not"
    );
    store.close().await.unwrap();
    drop(store);
    // Reopened, the cache is empty: every read comes from sled.
    let store = open(&dir.0, "hq");
    for from in 0..n {
        let disk = store.read(&t, Offset(from), 17).unwrap();
        assert_eq!(disk, live[from as usize], "read from {from}");
        assert_eq!(disk.first().map(|r| r.offset), Some(Offset(from)));
        let disk = store.read_within(&t, Offset(from), 50, 5_000).unwrap();
        assert_eq!(disk, within[from as usize], "read within from {from}");
    }
    assert!(store.read(&t, Offset(n), 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_flushes_and_get_distinct_offsets() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::Core, Retention::default())]).await;
    let mut tasks = Vec::new();
    for p in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..50 {
                let a = store
                    .append(&topic("t"), Append::new(format!("{p}-{i}")))
                    .await
                    .unwrap();
                got.push(a.offset.0);
            }
            got
        }));
    }
    let mut offsets = Vec::new();
    for t in tasks {
        offsets.extend(t.await.unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..1600).collect::<Vec<_>>());
    let records = store.read(&topic("t"), Offset(0), 5000).unwrap();
    assert_eq!(records.len(), 1600);
    // Per producer, offsets follow append order.
    for p in 0..32 {
        let mine: Vec<_> = payloads(&records)
            .into_iter()
            .filter(|s| s.starts_with(&format!("{p}-")))
            .collect();
        assert_eq!(
            mine,
            (0..50).map(|i| format!("{p}-{i}")).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        store.vector(&topic("t")).unwrap().get(&node("hq")),
        Seq(1600)
    );
}

#[tokio::test]
async fn remote_entries_are_inserted_once_and_in_order() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::All, Retention::default())]).await;
    let done = insert(
        &store,
        vec![
            remote("alpha", 1, "a1"),
            remote("alpha", 2, "a2"),
            remote("bravo", 1, "b1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!((done.inserted, done.duplicates), (3, 0));

    // A retry with overlap: the held ones are duplicates, the new one goes in.
    let done = insert(
        &store,
        vec![
            remote("alpha", 1, "x"),
            remote("alpha", 2, "x"),
            remote("alpha", 3, "a3"),
        ],
    )
    .await
    .unwrap();
    assert_eq!((done.inserted, done.duplicates), (1, 2));
    assert_eq!(
        payloads(&store.read(&topic("t"), Offset(0), 10).unwrap()),
        ["a1", "a2", "b1", "a3"]
    );

    // A hole is refused, and nothing of that transaction is applied.
    let err = insert(
        &store,
        vec![remote("bravo", 2, "b2"), remote("bravo", 4, "b4")],
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        WriteError::OutOfOrder {
            topic: topic("t"),
            origin: node("bravo"),
            expected: Seq(3),
            got: Seq(4)
        }
    );
    assert!(err.to_string().contains("expected bravo:3"), "{err}");
    assert_eq!(store.read(&topic("t"), Offset(0), 10).unwrap().len(), 4);

    // A peer cannot invent entries of this node's own origin.
    assert!(matches!(
        insert(&store, vec![remote("hq", 1, "forged")]).await,
        Err(WriteError::OwnOrigin { .. })
    ));

    // A recorded loss lets the origin's later entries in.
    let mut txn = Txn::new();
    txn.skip(&topic("t"), &node("bravo"), Seq(5))
        .insert(&topic("t"), vec![remote("bravo", 6, "b6")]);
    store.commit(txn).await.unwrap();
    let vector = store.vector(&topic("t")).unwrap();
    assert_eq!(
        (vector.get(&node("alpha")), vector.get(&node("bravo"))),
        (Seq(3), Seq(6))
    );
}

#[tokio::test]
async fn a_refused_transaction_leaves_nothing_and_spares_its_group() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::Local, Retention::default())]).await;
    let table = TableName::new("assets").unwrap();
    let mut bad = Txn::new();
    bad.append(&topic("t"), Append::new(*b"lost"))
        .put(&table, "a", serde_json::json!({"x": 1}))
        .append(&topic("missing"), Append::new(*b"x"));
    let mut good = Txn::new();
    good.append(&topic("t"), Append::new(*b"kept"));
    // Both in flight at once, so they likely share a group.
    let (bad, good) = tokio::join!(store.commit(bad), store.commit(good));
    assert_eq!(bad.unwrap_err(), WriteError::UnknownTopic(topic("missing")));
    assert_eq!(good.unwrap().appended[0].offset, Offset(0));
    assert_eq!(
        payloads(&store.read(&topic("t"), Offset(0), 10).unwrap()),
        ["kept"]
    );
    assert_eq!(store.doc(&table, "a").unwrap(), None);
    assert_eq!(store.vector(&topic("t")).unwrap().get(&node("hq")), Seq(1));
}

#[tokio::test]
async fn oversized_entries_are_refused_with_the_limit() {
    let dir = TempDir::new();
    let mut config = StoreConfig::new(node("hq"));
    config.max_entry_bytes = 1000;
    let store = Store::open(&dir.0, config).unwrap();
    store
        .create_topic(TopicConfig {
            name: topic("t"),
            scope: Scope::Local,
            retention: Retention::default(),
        })
        .await
        .unwrap();
    let err = store
        .append(&topic("t"), Append::new(vec![0; 1000]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        WriteError::TooLarge {
            size: 1016,
            limit: 1000
        }
    );
    assert_eq!(
        err.to_string(),
        "entry of 1016 bytes is over the limit of 1000 bytes"
    );
    store
        .append(&topic("t"), Append::new(vec![0; 984]))
        .await
        .unwrap();
    let err = store
        .append(&topic("_gaps"), Append::new(*b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::SystemTopic(_)));
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = TempDir::new();
    let table = TableName::new("assets").unwrap();
    let consumer = ConsumerName::new("svc").unwrap();
    {
        let store = open_with(
            &dir.0,
            "hq",
            &[(
                "t",
                Scope::All,
                Retention {
                    max_entries: Some(10),
                    ..Retention::default()
                },
            )],
        )
        .await;
        for i in 0..5 {
            store
                .append(&topic("t"), Append::new(format!("e{i}")))
                .await
                .unwrap();
        }
        let mut txn = Txn::new();
        txn.insert(&topic("t"), vec![remote("alpha", 1, "a1")])
            .put(&table, "x", serde_json::json!({"state": "ready"}))
            .cursor(&consumer, &topic("t"), Offset(3));
        store.commit(txn).await.unwrap();
        store.close().await.unwrap();
        assert_eq!(
            store
                .append(&topic("t"), Append::new(*b"late"))
                .await
                .unwrap_err(),
            WriteError::Closed
        );
    }
    let store = open(&dir.0, "hq");
    let info = store.topic(&topic("t")).unwrap();
    assert_eq!(
        (
            info.config.scope,
            info.config.retention.max_entries,
            info.next
        ),
        (Scope::All, Some(10), Offset(6))
    );
    assert_eq!(
        payloads(&store.read(&topic("t"), Offset(0), 10).unwrap()),
        ["e0", "e1", "e2", "e3", "e4", "a1"]
    );
    let vector = store.vector(&topic("t")).unwrap();
    assert_eq!(
        (vector.get(&node("hq")), vector.get(&node("alpha"))),
        (Seq(5), Seq(1))
    );
    assert_eq!(store.cursor(&consumer, &topic("t")).unwrap(), Offset(3));
    assert_eq!(
        store.doc(&table, "x").unwrap(),
        Some(serde_json::json!({"state": "ready"}))
    );
    // The origin sequence goes on where it stopped.
    assert_eq!(
        store
            .append(&topic("t"), Append::new(*b"e5"))
            .await
            .unwrap()
            .seq,
        Seq(6)
    );
}

/// A process killed while sled wrote a snapshot leaves `snap.<lsn>.generating`; sled
/// 0.34 would read it at open and refuse the store as corrupt (seen in CI after a
/// SIGKILL). The store removes it and opens with everything it held.
#[tokio::test]
async fn a_snapshot_cut_off_by_a_kill_does_not_stop_the_store_opening() {
    let dir = TempDir::new();
    {
        let store = open_with(&dir.0, "hq", &[("t", Scope::All, Retention::default())]).await;
        for i in 0..3 {
            store
                .append(&topic("t"), Append::new(format!("e{i}")))
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
    // What the killed process left: part of a snapshot under the name sled writes it to.
    let unfinished = dir.0.join("sled").join("snap.00000000FFFFFFFF.generating");
    std::fs::write(&unfinished, b"\x01\x02 cut off here").unwrap();
    let store = open(&dir.0, "hq");
    assert_eq!(
        payloads(&store.read(&topic("t"), Offset(0), 10).unwrap()),
        ["e0", "e1", "e2"]
    );
    assert!(!unfinished.exists());
}

#[tokio::test]
async fn reads_by_time_range_use_the_origin_timestamp() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::All, Retention::default())]).await;
    // Arrival order differs from timestamp order: a backlog arrives late.
    let batches = [
        vec![remote("alpha", 1, "t5"), remote("alpha", 2, "t10")],
        vec![remote("bravo", 1, "t1")],
    ];
    for batch in batches {
        let mut txn = Txn::new();
        txn.insert(&topic("t"), batch);
        store.commit(txn).await.unwrap();
    }
    insert(&store, vec![remote("alpha", 3, "t15")])
        .await
        .unwrap();
    // Timestamps are 1000 * seq: t5 = 1000, t10 = 2000, t1 = 1000, t15 = 3000.
    let got = store
        .read_time(
            &topic("t"),
            Offset(0),
            Timestamp(1000),
            Timestamp(2001),
            10,
            u64::MAX,
        )
        .unwrap();
    assert_eq!(payloads(&got), ["t5", "t10", "t1"]);
    let got = store
        .read_time(
            &topic("t"),
            Offset(0),
            Timestamp(1001),
            Timestamp(5000),
            10,
            u64::MAX,
        )
        .unwrap();
    assert_eq!(payloads(&got), ["t10", "t15"]);
    assert_eq!(
        store
            .read_time(
                &topic("t"),
                Offset(0),
                Timestamp(0),
                Timestamp(5000),
                1,
                u64::MAX
            )
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .read_time(
                &topic("t"),
                Offset(0),
                Timestamp(3001),
                Timestamp(9000),
                10,
                u64::MAX
            )
            .unwrap()
            .is_empty()
    );
    // From an offset on: only records at or after it, and still at most `max`.
    let got = store
        .read_time(
            &topic("t"),
            Offset(1),
            Timestamp(0),
            Timestamp(5000),
            10,
            u64::MAX,
        )
        .unwrap();
    assert_eq!(payloads(&got), ["t10", "t1", "t15"]);
    let got = store
        .read_time(
            &topic("t"),
            Offset(2),
            Timestamp(0),
            Timestamp(5000),
            1,
            u64::MAX,
        )
        .unwrap();
    assert_eq!(payloads(&got), ["t1"]);
    // A byte budget stops the read after the record that reaches it; the first record
    // comes whatever its size.
    let one = store.read(&topic("t"), Offset(0), 1).unwrap()[0]
        .entry
        .size();
    let got = store
        .read_time(
            &topic("t"),
            Offset(0),
            Timestamp(0),
            Timestamp(5000),
            10,
            one + 1,
        )
        .unwrap();
    assert_eq!(payloads(&got), ["t5", "t10"]);
    let got = store
        .read_time(&topic("t"), Offset(0), Timestamp(0), Timestamp(5000), 10, 1)
        .unwrap();
    assert_eq!(payloads(&got), ["t5"]);
    let got = store
        .read_within(&topic("t"), Offset(1), 10, one * 2)
        .unwrap();
    assert_eq!(payloads(&got), ["t10", "t1"]);
}

#[tokio::test]
async fn a_tail_wakes_on_a_durable_append() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::Local, Retention::default())]).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store.wait(&topic("t"), Offset(0)).await.unwrap();
            store.read(&topic("t"), Offset(0), 10).unwrap()
        })
    };
    store
        .append(&topic("t"), Append::new(*b"hello"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payloads(&got), ["hello"]);
}

#[tokio::test]
async fn a_consumer_commits_results_and_cursor_together() {
    let dir = TempDir::new();
    let store = open_with(
        &dir.0,
        "hq",
        &[
            ("in", Scope::Local, Retention::default()),
            ("out", Scope::Local, Retention::default()),
        ],
    )
    .await;
    for i in 0..3 {
        store
            .append(&topic("in"), Append::new(format!("{i}")))
            .await
            .unwrap();
    }
    let name = ConsumerName::new("doubler").unwrap();
    let mut consumer = store.consumer(name.clone(), topic("in")).unwrap();
    let batch = consumer.poll(2).await.unwrap();
    assert_eq!(payloads(&batch), ["0", "1"]);
    let mut txn = Txn::new();
    for r in &batch {
        txn.append(&topic("out"), Append::new(r.entry.payload.repeat(2)));
    }
    consumer
        .commit(txn, Offset(batch[1].offset.0 + 1))
        .await
        .unwrap();
    // A new consumer of the same name resumes after the committed work.
    let mut again = store.consumer(name, topic("in")).unwrap();
    assert_eq!(again.position(), Offset(2));
    assert_eq!(payloads(&again.poll(10).await.unwrap()), ["2"]);
    assert_eq!(
        payloads(&store.read(&topic("out"), Offset(0), 10).unwrap()),
        ["00", "11"]
    );
    // A cursor cannot point past the end.
    let err = again.commit(Txn::new(), Offset(9)).await.unwrap_err();
    assert_eq!(
        err,
        WriteError::BeyondEnd {
            topic: topic("in"),
            offset: Offset(9),
            next: Offset(3)
        }
    );
}

#[tokio::test]
async fn tables_keep_documents_and_a_change_feed() {
    let dir = TempDir::new();
    let store = open(&dir.0, "hq");
    let table = TableName::new("assets").unwrap();
    let mut txn = Txn::new();
    txn.put(&table, "a", serde_json::json!({"n": 1}))
        .put(&table, "b", serde_json::json!({"n": 2}));
    store.commit(txn).await.unwrap();
    let mut txn = Txn::new();
    txn.put(&table, "a", serde_json::json!({"n": 3}))
        .delete(&table, "b");
    store.commit(txn).await.unwrap();
    assert_eq!(
        store.docs(&table).unwrap(),
        vec![("a".to_owned(), serde_json::json!({"n": 3}))]
    );
    let feed = store.read(&table.feed(), Offset(0), 10).unwrap();
    let changes: Vec<_> = feed
        .iter()
        .map(|r| {
            (
                r.entry.key.clone().unwrap(),
                r.entry.headers[0].1.clone(),
                String::from_utf8(r.entry.payload.clone()).unwrap(),
            )
        })
        .collect();
    let expect = |k: &str, op: &str, doc: &str| {
        (
            k.as_bytes().to_vec(),
            op.as_bytes().to_vec(),
            doc.to_owned(),
        )
    };
    assert_eq!(
        changes,
        vec![
            expect("a", "put", r#"{"n":1}"#),
            expect("b", "put", r#"{"n":2}"#),
            expect("a", "put", r#"{"n":3}"#),
            expect("b", "delete", "")
        ]
    );
    assert_eq!(
        store.topic(&table.feed()).unwrap().config.scope,
        Scope::Local
    );
    let mut txn = Txn::new();
    txn.put(&table, "", serde_json::json!(null));
    assert!(matches!(
        store.commit(txn).await,
        Err(WriteError::DocumentId(_))
    ));
}

#[tokio::test]
async fn retention_keeps_what_a_peer_lacks() {
    let dir = TempDir::new();
    let limit = Retention {
        max_entries: Some(3),
        ..Retention::default()
    };
    let store = open_with(
        &dir.0,
        "alpha",
        &[
            ("reports", Scope::Core, limit),
            ("scratch", Scope::Local, limit),
        ],
    )
    .await;
    store
        .set_peer(PeerConfig {
            name: node("hq"),
            core: true,
            topics: vec![topic("reports")],
        })
        .await
        .unwrap();
    for i in 0..10 {
        store
            .append(&topic("reports"), Append::new(format!("r{i}")))
            .await
            .unwrap();
        store
            .append(&topic("scratch"), Append::new(format!("s{i}")))
            .await
            .unwrap();
    }
    let report = store.enforce_retention().await.unwrap();
    // The local topic is trimmed; the core has received nothing, so reports stay.
    assert_eq!(report.removed, 7);
    assert_eq!(store.topic(&topic("scratch")).unwrap().first, Offset(7));
    assert_eq!(
        payloads(&store.read(&topic("scratch"), Offset(0), 10).unwrap()),
        ["s7", "s8", "s9"]
    );
    assert_eq!(
        store.read(&topic("reports"), Offset(0), 100).unwrap().len(),
        10
    );

    // The core acknowledges up to 5: those may go, not more.
    let vector = VersionVector([(node("alpha"), Seq(5))].into_iter().collect());
    store
        .peer_acked(&node("hq"), &topic("reports"), vector)
        .await
        .unwrap();
    assert_eq!(store.enforce_retention().await.unwrap().removed, 5);
    assert_eq!(
        payloads(&store.read(&topic("reports"), Offset(0), 100).unwrap())[0],
        "r5"
    );
    assert!(
        store
            .read(&topic("_gaps"), Offset(0), 10)
            .unwrap()
            .is_empty()
    );

    // Retention survives a reopen: the head and the acknowledgements are durable.
    store.close().await.unwrap();
    drop(store);
    let store = open(&dir.0, "alpha");
    assert_eq!(store.topic(&topic("reports")).unwrap().first, Offset(5));
    assert_eq!(store.enforce_retention().await.unwrap().removed, 0);
}

#[tokio::test]
async fn a_forgotten_peer_is_not_waited_for_and_on_return_its_loss_is_a_gap() {
    let dir = TempDir::new();
    let limit = Retention {
        max_entries: Some(1),
        ..Retention::default()
    };
    let store = open_with(&dir.0, "hq", &[("news", Scope::All, limit)]).await;
    let alpha = || PeerConfig {
        name: node("alpha"),
        core: false,
        topics: vec![topic("news")],
    };
    store.set_peer(alpha()).await.unwrap();
    for i in 1..=6 {
        let append = Append::new(format!("n{i}"));
        // One entry for bravo alone: alpha would not have received it.
        let append = if i == 5 {
            append.to(node("bravo"))
        } else {
            append
        };
        store.append(&topic("news"), append).await.unwrap();
    }
    let vector = VersionVector([(node("hq"), Seq(2))].into_iter().collect());
    store
        .peer_acked(&node("alpha"), &topic("news"), vector)
        .await
        .unwrap();
    // alpha lacks 3 to 6: retention keeps them, past the limit of 1.
    assert_eq!(store.enforce_retention().await.unwrap().removed, 2);
    assert_eq!(store.topic(&topic("news")).unwrap().first, Offset(2));
    assert!(!store.forget_peer(&node("bravo")).await.unwrap());

    // Forgotten: retention releases what it kept for alpha, and notes what alpha lacked.
    assert!(store.forget_peer(&node("alpha")).await.unwrap());
    let report = store.enforce_retention().await.unwrap();
    assert_eq!((report.removed, report.gaps.len()), (3, 0));
    assert!(
        store
            .read(&topic(GAPS_TOPIC), Offset(0), 10)
            .unwrap()
            .is_empty()
    );

    // Remembered across a restart; alpha returns: entries 3 and 4 (5 was bravo's) are
    // a gap for alpha; 6 it can still receive.
    store.close().await.unwrap();
    drop(store);
    let store = open(&dir.0, "hq");
    assert!(store.forget_peer(&node("alpha")).await.unwrap());
    store.set_peer(alpha()).await.unwrap();
    let recorded = store.read(&topic(GAPS_TOPIC), Offset(0), 10).unwrap();
    let gaps: Vec<Gap> = recorded
        .iter()
        .map(|r| serde_json::from_slice(&r.entry.payload).unwrap())
        .collect();
    let gap = Gap {
        topic: topic("news"),
        origin: node("hq"),
        first: Seq(3),
        last: Seq(4),
        reason: "removed while alpha was forgotten or released (the core kept nothing for it)"
            .into(),
        peers: vec![node("alpha")],
    };
    assert_eq!(gaps, vec![gap]);
    // Back as a peer: retention waits for it again; returning twice records nothing more.
    assert_eq!(store.enforce_retention().await.unwrap().removed, 0);
    store.set_peer(alpha()).await.unwrap();
    assert_eq!(
        store.read(&topic(GAPS_TOPIC), Offset(0), 10).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn the_disk_budget_forces_removal_and_records_a_gap() {
    let dir = TempDir::new();
    let mut config = StoreConfig::new(node("alpha"));
    config.disk_budget = Some(5 * (16 + 100));
    let store = Store::open(&dir.0, config).unwrap();
    store
        .create_topic(TopicConfig {
            name: topic("reports"),
            scope: Scope::Core,
            retention: Retention::default(),
        })
        .await
        .unwrap();
    store
        .set_peer(PeerConfig {
            name: node("hq"),
            core: true,
            topics: vec![topic("reports")],
        })
        .await
        .unwrap();
    for _ in 0..8 {
        store
            .append(&topic("reports"), Append::new(vec![b'x'; 100]))
            .await
            .unwrap();
    }
    let report = store.enforce_retention().await.unwrap();
    assert_eq!(report.removed, 3);
    let gap = Gap {
        topic: topic("reports"),
        origin: node("alpha"),
        first: Seq(1),
        last: Seq(3),
        reason: "disk budget".into(),
        peers: vec![node("hq")],
    };
    assert_eq!(report.gaps, vec![gap.clone()]);
    let recorded = store.read(&topic(GAPS_TOPIC), Offset(0), 10).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        serde_json::from_slice::<Gap>(&recorded[0].entry.payload).unwrap(),
        gap
    );
    assert_eq!(store.topic(&topic("reports")).unwrap().bytes, 5 * 116);
}

#[tokio::test]
async fn topics_keep_their_scope() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::All, Retention::default())]).await;
    let again = TopicConfig {
        name: topic("t"),
        scope: Scope::Local,
        retention: Retention::default(),
    };
    let err = store.create_topic(again).await.unwrap_err();
    assert_eq!(err.to_string(), "topic t exists with scope all, not local");
    let longer = Retention {
        max_age: Some(Duration::from_secs(60)),
        ..Retention::default()
    };
    store
        .create_topic(TopicConfig {
            name: topic("t"),
            scope: Scope::All,
            retention: longer,
        })
        .await
        .unwrap();
    assert_eq!(store.topic(&topic("t")).unwrap().config.retention, longer);
}

#[tokio::test]
async fn opening_names_the_path_and_the_problem() {
    let dir = TempDir::new();
    let store = open(&dir.0, "hq");
    // A second open of the same directory while it is in use.
    let err = Store::open(&dir.0, StoreConfig::new(node("hq"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("store at {} is in use by another process", dir.0.display())
    );
    // `close` lets go of the files once the last handle drops.
    store.close().await.unwrap();
    drop(store);
    let err = Store::open(&dir.0, StoreConfig::new(node("alpha"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("store at {} belongs to node hq, not alpha", dir.0.display())
    );
}

#[test]
fn an_unknown_format_version_is_a_clear_error() {
    let dir = TempDir::new();
    {
        let db = sled_config(&dir.0, 1 << 20).open().unwrap();
        let tree = db.open_tree("tether").unwrap();
        tree.insert(format::META_FORMAT, &7u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&dir.0, StoreConfig::new(node("hq"))).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::UnknownFormat {
                found: 7,
                supported: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("format version 7; this build reads versions 1 to 3"),
        "{err}"
    );
    // Nothing of a store this build does not read is touched: no log is begun in it.
    assert!(!dir.0.join(wal::DIR).exists());
    assert!(!dir.0.join(entries::DIR).exists());
}

#[test]
fn damaged_files_give_an_error_not_a_panic() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("sled")).unwrap();
    std::fs::write(
        dir.0.join("sled").join("conf"),
        b"garbage that is not a sled config",
    )
    .unwrap();
    std::fs::write(dir.0.join("sled").join("db"), vec![0xAB; 4096]).unwrap();
    let err = Store::open(&dir.0, StoreConfig::new(node("hq"))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("store at {} ", dir.0.display())),
        "{err}"
    );

    // A sled database that is not a Tether store.
    let other = TempDir::new();
    {
        let db = sled_config(&other.0, 1 << 20).open().unwrap();
        db.open_tree("tether")
            .unwrap()
            .insert(b"foreign", b"data")
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&other.0, StoreConfig::new(node("hq"))).unwrap_err();
    assert!(err.to_string().contains("not a tether store"), "{err}");
}

#[tokio::test]
async fn a_damaged_name_id_is_an_error_not_a_table_of_its_size() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::Local, Retention::default())]).await;
    store.append(&topic("t"), Append::new("x")).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    {
        let db = sled_config(&dir.0, 1 << 20).open().unwrap();
        let tree = db.open_tree("tether").unwrap();
        // Ids are dense: one of u32::MAX once sized the table by it (about 100 GB).
        tree.insert(format::name_key("ghost"), &u32::MAX.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(&dir.0, StoreConfig::new(node("hq"))).unwrap_err();
    assert!(
        err.to_string()
            .contains("node ghost has id 4294967295, past the"),
        "{err}"
    );
}

/// A closed store of 2,000 entries in topic `t`, written in 20 transactions; returns
/// its directory and sled's log file.
async fn closed_store_of_2000() -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::Local, Retention::default())]).await;
    for round in 0..20 {
        let mut txn = Txn::new();
        for i in 0..100 {
            let payload = format!("entry {} {}", round * 100 + i, "x".repeat(200));
            txn.append(&topic("t"), Append::new(payload));
        }
        store.commit(txn).await.unwrap();
    }
    store.close().await.unwrap();
    let db = dir.0.join("sled").join("db");
    (dir, db)
}

fn cut(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[tokio::test]
async fn a_truncated_store_is_an_error_not_a_silent_loss() {
    let (dir, db) = closed_store_of_2000().await;
    let len = std::fs::metadata(&db).unwrap().len();
    // Cut the log at several points: sled itself notices some, the checkpoint the rest.
    for at in [len * 95 / 100, len * 9 / 10, len / 2, 100] {
        cut(&db, at);
        let err = Store::open(&dir.0, StoreConfig::new(node("hq")))
            .unwrap_err()
            .to_string();
        let prefix = format!("store at {} is corrupt: ", dir.0.display());
        assert!(err.starts_with(&prefix), "cut at {at}: {err}");
    }
}

#[tokio::test]
async fn the_operator_may_accept_a_truncated_store() {
    let (dir, db) = closed_store_of_2000().await;
    cut(&db, std::fs::metadata(&db).unwrap().len() * 9 / 10);
    let err = Store::open(&dir.0, StoreConfig::new(node("hq")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated: topic t reaches offset") && err.contains("remove"),
        "{err}"
    );
    // As the error says: removing the checkpoint opens the store as it is.
    std::fs::remove_file(dir.0.join("checkpoint")).unwrap();
    let store = Store::open(&dir.0, StoreConfig::new(node("hq"))).unwrap();
    let held = store.topic(&topic("t")).unwrap().next.0;
    assert!(held < 2000, "the cut removed entries");
    assert_eq!(
        store.read(&topic("t"), Offset(0), 5000).unwrap().len() as u64,
        held
    );
}

/// Bytes of the files under `dir` (apparent sizes), as the benchmark counts them.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// `n` entries of 256 pseudo-random bytes (incompressible, like the benchmark's).
fn random_appends(seed: &mut u64, n: usize) -> Txn {
    let mut txn = Txn::new();
    for _ in 0..n {
        let payload = (0..256)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect::<Vec<u8>>();
        txn.append(&topic("t"), Append::new(payload));
    }
    txn
}

/// Retention gives disk space back. Not at the pass itself: sled is log-structured, and
/// the pass first writes more (the pages it changes). sled drains a segment once at most
/// half of it is live, moving one page per later write, reuses drained segments and
/// truncates its file from the end: the space comes back over the writes that follow,
/// as on a node that goes on appending with retention on its timer, once sled has
/// written a few segments more (here ~60 rounds of 64 single appends; the benchmark's
/// rounds of 64 concurrent appends write less of sled's log, and 200 of them give
/// nothing back).
#[tokio::test]
async fn retention_gives_disk_space_back() {
    let dir = TempDir::new();
    let store = open_with(&dir.0, "hq", &[("t", Scope::Local, Retention::default())]).await;
    let mut seed = 0x5eed;
    for _ in 0..120 {
        store.commit(random_appends(&mut seed, 500)).await.unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    let full = dir_bytes(&dir.0);

    // The topic now keeps 256 KiB; the node goes on appending one entry at a time, with
    // a retention pass every 64 (as its timer would), until sled holds less than half.
    let store = open(&dir.0, "hq");
    let keep = Retention {
        max_bytes: Some(256 << 10),
        ..Retention::default()
    };
    store
        .create_topic(TopicConfig {
            name: topic("t"),
            scope: Scope::Local,
            retention: keep,
        })
        .await
        .unwrap();
    let mut rounds = 0;
    let mut removed = 0;
    loop {
        removed += store.enforce_retention().await.unwrap().removed;
        let now = store.disk_bytes();
        if now < full / 2 {
            eprintln!("after {rounds} rounds: {now} bytes in sled, of {full}");
            break;
        }
        rounds += 1;
        assert!(
            rounds <= 300,
            "sled still holds {now} bytes of {full} after {rounds} rounds of retention"
        );
        for _ in 0..64 {
            store.commit(random_appends(&mut seed, 1)).await.unwrap();
        }
    }
    assert!(removed >= 60_000 - 1000, "retention removed only {removed}");
    let info = store.topic(&topic("t")).unwrap();
    assert!(info.bytes <= 256 << 10);
    let kept = store.read(&topic("t"), Offset(0), usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, info.next.0 - info.first.0);
    assert_eq!(kept[0].offset, info.first);
    store.close().await.unwrap();
    drop(store);
    let after = dir_bytes(&dir.0);
    eprintln!("closed: {after} of {full} bytes");
    assert!(after < full / 2, "{after} bytes on disk of {full}");
}
