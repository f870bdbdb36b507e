//! A hostile edge (issue 14): a client holding a valid mission certificate, on real QUIC,
//! tries each attack on the core's trust boundary while honest edges keep appending. Each
//! attack is refused with its reason (or throttled, for a flood), the core serves the
//! honest edges throughout, its memory stays within the per-peer bound, and afterwards
//! every honest entry is at the core and at a third edge exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::entry::{Entry, EntryId, Scope, Seq, Timestamp};
use protocol::link::{RelayLimit, SessionSettings};
use protocol::replication::{Writer, Writers};
use protocol::wire::{self, Batch, Deflate, Frame, FrameReader, Hello};
use tests::cluster::{Cluster, all, name, topic, wait_for_count};

use crate::replication::{append_n, check_once_in_order, wait_status};

const PATIENCE: Duration = Duration::from_secs(30);

/// This machine's clock, for the hellos (ms since the Unix epoch).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The incarnation the hostile edge presents (its "store").
const MALLORY: u64 = 0x6d61_6c6c_6f72_7900;

/// What the core may hold for one connected peer, whatever it sends (ARCHITECTURE.md,
/// "A peer is never trusted"): QUIC's receive window, the read-ahead queue (shared by
/// the entry streams), per entry stream (one per priority class, up to 3) a frame being
/// decoded and what it decodes into and the zstd window, the control stream's frame.
const PEER_BOUND: u64 = (16 + 8 + 3 * (2 * 4 + 4) + 2 * 4) << 20;

/// An edge connection driven by hand: the hellos exchanged, then any frames.
struct Hostile {
    conn: quinn::Connection,
    control: quinn::SendStream,
    /// Kept open: the core's hello and `Have`s arrive on it.
    _control_recv: quinn::RecvStream,
    entries: quinn::SendStream,
    deflate: Deflate,
    /// The core's hello.
    theirs: Hello,
    _endpoint: quinn::Endpoint,
}

impl Hostile {
    /// Connects as `who` presenting `incarnation`, and exchanges hellos.
    async fn connect(cluster: &Cluster, who: &str, incarnation: u64) -> Hostile {
        let endpoint = Cluster::endpoint_for(cluster.ca(), who).unwrap();
        let peer = protocol::tls::connect(&endpoint, cluster.core_addr(), &name("hq"))
            .await
            .unwrap();
        let conn = peer.connection;
        let (mut control, mut recv) = conn.open_bi().await.unwrap();
        let hello = Frame::Hello(Hello {
            version: wire::VERSION,
            node: name(who),
            incarnation,
            core: false,
            topics: TOPICS.iter().map(|(t, s)| (topic(t), *s)).collect(),
            closed: vec![],
            clock_ms: now_ms(),
        });
        control.write_all(&framed(&hello)).await.unwrap();
        let mut reader = FrameReader::default();
        let theirs = loop {
            if let Some(frame) = reader.next_frame().unwrap() {
                match frame {
                    Frame::Hello(h) => break h,
                    other => panic!("expected the core's hello, got {other:?}"),
                }
            }
            match recv.read_chunk(64 << 10, true).await {
                Ok(Some(chunk)) => reader.push(&chunk.bytes),
                other => panic!("no hello from the core: {other:?}"),
            }
        };
        let entries = conn.open_uni().await.unwrap();
        Hostile {
            conn,
            control,
            _control_recv: recv,
            entries,
            deflate: Deflate::new(1).unwrap(),
            theirs,
            _endpoint: endpoint,
        }
    }

    /// Connects as `who` presenting `incarnation`, says hello, and returns how the core
    /// closed the connection (it may close before its own hello arrives).
    async fn refused(cluster: &Cluster, who: &str, incarnation: u64) -> String {
        let endpoint = Cluster::endpoint_for(cluster.ca(), who).unwrap();
        let peer = protocol::tls::connect(&endpoint, cluster.core_addr(), &name("hq"))
            .await
            .unwrap();
        let hello = Frame::Hello(Hello {
            version: wire::VERSION,
            node: name(who),
            incarnation,
            core: false,
            topics: Vec::new(),
            closed: vec![],
            clock_ms: now_ms(),
        });
        let (mut control, _recv) = peer.connection.open_bi().await.unwrap();
        let _ = control.write_all(&framed(&hello)).await;
        let closed = tokio::time::timeout(PATIENCE, peer.connection.closed())
            .await
            .expect("the core closes the link");
        protocol::tls::explain(&closed)
    }

    /// Writes `frames` on the entry stream, compressed and flushed.
    async fn send(&mut self, frames: &[Frame]) {
        let mut buf = Vec::new();
        for frame in frames {
            self.deflate.write(frame, &mut buf).unwrap();
        }
        self.deflate.flush(&mut buf).unwrap();
        // The core may close the connection before it reads everything: not an error.
        let _ = self.entries.write_all(&buf).await;
    }

    /// Waits until the core closes the connection; returns how, as a sentence.
    async fn closed(self) -> String {
        let closed = tokio::time::timeout(PATIENCE, self.conn.closed())
            .await
            .expect("the core closes the link");
        protocol::tls::explain(&closed)
    }
}

const TOPICS: [(&str, Scope); 3] = [
    ("broadcast", Scope::All),
    ("reports", Scope::Core),
    ("orders", Scope::All),
];

fn framed(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::encode(frame, &mut bytes);
    bytes
}

fn entry(origin: &str, seq: u64, payload: &[u8]) -> Entry {
    Entry {
        id: EntryId {
            origin: name(origin),
            seq: Seq(seq),
        },
        timestamp: Timestamp(1_700_000_000_000),
        key: None,
        to: None,
        headers: Vec::new(),
        payload: payload.to_vec(),
    }
}

fn batch(t: &str, entries: &[Entry]) -> Frame {
    Frame::Batch(Batch::new(topic(t), entries))
}

/// Waits until `store` holds `origin`'s broadcast entries through `seq`.
async fn wait_for_seq(store: &protocol::log::Store, origin: &str, seq: u64) {
    let (b, origin) = (topic("broadcast"), name(origin));
    let mut changes = store.subscribe(&b).unwrap();
    let held = |store: &protocol::log::Store| store.vector(&b).unwrap().get(&origin).0;
    let waited = tokio::time::timeout(PATIENCE, async {
        while held(store) < seq {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{} holds {origin} through {} of {seq}",
        store.node(),
        held(store)
    );
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// Set in the process that runs the hostile test alone.
const ALONE: &str = "TETHER_HOSTILE_ALONE";

/// The test's memory bound is on the process's resident memory, which the other tests of
/// this binary, running beside it, would move: it runs alone, in a process of its own
/// (this binary again, with only this test).
#[test]
fn a_hostile_edge_is_refused_and_costs_the_others_nothing() {
    if std::env::var_os(ALONE).is_none() {
        let name = "hostile::a_hostile_edge_is_refused_and_costs_the_others_nothing";
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(ALONE, "1")
            .status()
            .unwrap();
        assert!(status.success(), "{name}, alone: {status}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(hostile_edge());
}

async fn hostile_edge() {
    let settings = SessionSettings {
        hello_timeout: Duration::from_secs(10),
        writers: Writers(vec![(topic("orders"), Writer::Edges(vec![]))]),
        relay: Some(RelayLimit {
            bytes_per_s: 64 << 10,
            entries_per_s: 200,
            burst: Duration::from_secs(1),
        }),
        ..SessionSettings::default()
    };
    let cluster =
        Cluster::start_with_settings(&["bravo", "charlie"], &["mallory"], &TOPICS, settings)
            .await
            .unwrap();
    let (hq, bravo, charlie) = (
        &cluster.core.store,
        &cluster.edge("bravo").store,
        &cluster.edge("charlie").store,
    );
    let b = topic("broadcast");
    append_n(bravo, "broadcast", 10, None).await;
    wait_for_count(charlie, &b, 10, PATIENCE).await.unwrap();

    // Everything an attack sends is built before memory is watched: the header bomb alone
    // takes ~100 MB to build here.
    let mut bomb = entry("mallory", 1, b"boom");
    bomb.headers = vec![(String::new(), Vec::new()); 2_000_000];
    let bomb = batch("broadcast", &[bomb]);
    let junk_haves: Vec<Frame> = (0..20)
        .map(|f| Frame::Have {
            topic: b.clone(),
            vector: (0..50_000)
                .map(|i| (name(&format!("junk-{f}-{i}")), u64::MAX))
                .collect(),
        })
        .collect();
    let flood: Vec<Frame> = (0..64)
        .map(|chunk| {
            let entries: Vec<Entry> = (0..1000)
                .map(|i| entry("mallory", chunk * 1000 + i + 1, &[7; 1024]))
                .collect();
            batch("broadcast", &entries)
        })
        .collect();
    // A zstd stream that asks for a 128 MiB window.
    let mut wide = zstd::stream::raw::Encoder::new(1).unwrap();
    {
        use zstd::stream::raw::CParameter;
        wide.set_parameter(CParameter::WindowLog(27)).unwrap();
    }
    let wide_stream = {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let input = framed(&batch("broadcast", &[entry("mallory", 1, &[1; 100])]));
        let mut out = vec![0u8; 64 << 10];
        let mut output = OutBuffer::around(&mut out[..]);
        let mut inb = InBuffer::around(&input);
        wide.run(&mut inb, &mut output).unwrap();
        wide.flush(&mut output).unwrap();
        let n = output.pos();
        out.truncate(n);
        out
    };

    // Watch the process's memory (the core, both honest edges and this test) from here.
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // Bravo keeps appending while the attacks go on.
    let honest = tokio::spawn({
        let bravo = bravo.clone();
        async move { append_n(&bravo, "broadcast", 200, None).await }
    });

    // The core tells the edge which topics it may not write.
    let mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    assert_eq!(mallory.theirs.closed, vec![topic("orders")]);

    // A batch claiming another edge's origin: refused whole, nothing of it stored.
    let mut mallory = mallory;
    mallory
        .send(&[batch(
            "broadcast",
            &[
                entry("mallory", 1, b"mine"),
                entry("bravo", 1000, b"forged"),
            ],
        )])
        .await;
    let why = mallory.closed().await;
    assert!(
        why.contains("(forged-origin)") && why.contains("bravo:1000"),
        "{why}"
    );
    assert_eq!(hq.vector(&b).unwrap().get(&name("mallory")).0, 0);

    // Claiming the core's origin, in a topic only the core writes... or anywhere.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    mallory
        .send(&[batch("broadcast", &[entry("hq", 1, b"forged")])])
        .await;
    let why = mallory.closed().await;
    assert!(why.contains("(forged-origin)"), "{why}");

    // A skip of another edge's origin, through the end of time.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    mallory
        .send(&[Frame::Skip {
            topic: b.clone(),
            origin: name("bravo"),
            through: u64::MAX,
        }])
        .await;
    let why = mallory.closed().await;
    assert!(
        why.contains("(forged-origin)") && why.contains("skip of bravo"),
        "{why}"
    );

    // A skip of its own origin past what it appended.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    mallory
        .send(&[
            Frame::Skip {
                topic: b.clone(),
                origin: name("mallory"),
                through: 1_000_000,
            },
            batch("broadcast", &[entry("mallory", 1, b"first")]),
        ])
        .await;
    let why = mallory.closed().await;
    assert!(why.contains("(forged-origin)"), "{why}");
    assert_eq!(hq.vector(&b).unwrap().get(&name("mallory")).0, 0);

    // A topic only the core writes.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    mallory
        .send(&[batch("orders", &[entry("mallory", 1, b"attack at dawn")])])
        .await;
    let why = mallory.closed().await;
    assert!(
        why.contains("(protocol)") && why.contains("orders"),
        "{why}"
    );
    assert!(hq.vector(&topic("orders")).unwrap().0.is_empty());

    // A header bomb: two million empty headers in one entry.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    mallory.send(&[bomb]).await;
    let why = mallory.closed().await;
    assert!(
        why.contains("(protocol)") && why.contains("headers"),
        "{why}"
    );

    // A decompressed frame over the limit, and a stream asking for a huge window.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    let mut huge = Vec::new();
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut deflated = Vec::new();
    let mut deflate = zstd::stream::raw::Encoder::new(1).unwrap();
    {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut out = vec![0u8; 4096];
        let mut output = OutBuffer::around(&mut out[..]);
        deflate
            .run(&mut InBuffer::around(&huge), &mut output)
            .unwrap();
        deflate.flush(&mut output).unwrap();
        let n = output.pos();
        deflated.extend_from_slice(&out[..n]);
    }
    let _ = mallory.entries.write_all(&deflated).await;
    let why = mallory.closed().await;
    assert!(why.contains("(too-large)"), "{why}");
    let mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    let mut mallory = mallory;
    let _ = mallory.entries.write_all(&wide_stream).await;
    let why = mallory.closed().await;
    assert!(
        why.contains("(protocol)") && why.contains("compressed"),
        "{why}"
    );

    // A million made-up origins in `Have`s: ignored, the link stays up, nothing is kept.
    let mut mallory = Hostile::connect(&cluster, "mallory", MALLORY).await;
    for have in &junk_haves {
        mallory.control.write_all(&framed(have)).await.unwrap();
    }
    // A mirror-stream flood: no more streams than the protocol needs can be opened.
    let mut streams = Vec::new();
    for _ in 0..100 {
        let next = tokio::select! {
            biased;
            opened = mallory.conn.open_bi() => Some(opened),
            () = std::future::ready(()) => None,
        };
        match next {
            Some(Ok(stream)) => streams.push(stream),
            _ => break,
        }
    }
    assert_eq!(
        streams.len() as u32,
        protocol::tls::MAX_BIDI_STREAMS - 1,
        "mirror streams the core lets one edge open beside its control stream"
    );
    // Then a flood of its own entries into a broadcast topic: 64 MiB, throttled by the
    // relay quota; meanwhile the honest edges go on.
    let flooding = tokio::spawn(async move {
        mallory.send(&flood).await;
        mallory
    });
    wait_status(&cluster.core.link("mallory"), "throttled", |s| {
        s.throttled > 0
    })
    .await;
    honest.await.unwrap();
    wait_for_seq(charlie, "bravo", 210).await;
    wait_for_seq(hq, "bravo", 210).await;
    let acked = hq.peer_vector(&name("mallory"), &b).unwrap();
    assert!(
        acked.0.keys().all(|o| !o.as_str().starts_with("junk")),
        "made-up origins were kept: {} of them",
        acked.0.len()
    );
    flooding.abort();
    let peak = peak.load(Ordering::Relaxed);
    sampler.abort();

    // A second device with bravo's name and a fresh store: refused, never silent.
    let why = Hostile::refused(&cluster, "bravo", 42).await;
    assert!(
        why.contains("(incarnation)")
            && why.contains("up to 210")
            && why.contains("name of its own"),
        "{why}"
    );

    // Bravo's entries: at the core and at charlie, each once and in order; none of the
    // hostile edge's forged ones anywhere.
    for store in [hq, charlie] {
        let records = all(store, &b);
        let last = check_once_in_order(&records);
        assert_eq!(last.get(&name("bravo")), Some(&210));
        assert!(!records.iter().any(|r| r.entry.id.origin.as_str() == "hq"));
    }
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "hostile: resident memory {} MiB before the attacks, peak +{} MiB (bound {} MiB)",
        baseline >> 20,
        grown >> 20,
        PEER_BOUND >> 20
    );
    assert!(
        grown <= PEER_BOUND,
        "memory grew by {} MiB during the attacks, over the per-peer bound of {} MiB",
        grown >> 20,
        PEER_BOUND >> 20
    );
}
