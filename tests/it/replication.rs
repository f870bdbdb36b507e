//! Replication over real QUIC on 127.0.0.1 between a core and edges (issue 3).

use std::collections::HashMap;
use std::time::Duration;

use protocol::entry::{Append, NodeName, Record, Scope};
use protocol::log::Store;
use tests::cluster::{Cluster, all, name, topic, wait_for_count};

const PATIENCE: Duration = Duration::from_secs(30);

/// Checks that `records` hold each identity once and each origin's sequences in order.
pub(crate) fn check_once_in_order(records: &[Record]) -> HashMap<NodeName, u64> {
    let mut last: HashMap<NodeName, u64> = HashMap::new();
    for r in records {
        let seen = last.entry(r.entry.id.origin.clone()).or_default();
        assert!(
            r.entry.id.seq.0 > *seen,
            "{:?} after seq {seen}: a duplicate or out of order",
            r.entry.id
        );
        *seen = r.entry.id.seq.0;
    }
    last
}

pub(crate) async fn append_n(store: &Store, t: &str, n: usize, to: Option<&str>) {
    for i in 0..n {
        let mut a = Append::new(format!("{} {i}", store.node()));
        if let Some(to) = to {
            a = a.to(name(to));
        }
        store.append(&topic(t), a).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_and_two_edges_converge_by_scope_and_destination() {
    let topics = [
        ("broadcast", Scope::All),
        ("reports", Scope::Core),
        ("scratch", Scope::Local),
    ];
    let cluster = Cluster::start(&["alpha", "bravo"], &topics).await.unwrap();
    let (hq, alpha, bravo) = (
        &cluster.core.store,
        &cluster.edge("alpha").store,
        &cluster.edge("bravo").store,
    );

    // Every node appends to every topic; the core also sends one private entry to alpha.
    for store in [hq, alpha, bravo] {
        append_n(store, "broadcast", 50, None).await;
        append_n(store, "reports", 20, None).await;
        append_n(store, "scratch", 5, None).await;
    }
    append_n(hq, "broadcast", 3, Some("alpha")).await;
    append_n(alpha, "broadcast", 2, Some("bravo")).await;

    // all: everything everywhere, except private entries: only at their origin, their
    // destination and the core. core: the core gets every edge's reports; edges keep their own only.
    let b = topic("broadcast");
    wait_for_count(hq, &b, 150 + 3 + 2, PATIENCE).await.unwrap();
    wait_for_count(alpha, &b, 150 + 3 + 2, PATIENCE)
        .await
        .unwrap();
    wait_for_count(bravo, &b, 150 + 2, PATIENCE).await.unwrap();
    wait_for_count(hq, &topic("reports"), 60, PATIENCE)
        .await
        .unwrap();

    for (store, expect) in [(hq, 155), (alpha, 155), (bravo, 152)] {
        let records = all(store, &b);
        assert_eq!(records.len(), expect, "{}", store.node());
        let last = check_once_in_order(&records);
        assert_eq!(last.len(), 3, "three origins at {}", store.node());
        for r in &records {
            if let Some(to) = &r.entry.to {
                let here = store.node();
                let allowed = to == here || here.as_str() == "hq" || r.entry.id.origin == *here;
                assert!(allowed, "{here} holds {:?}, which is for {to}", r.entry.id);
            }
        }
    }
    check_once_in_order(&all(hq, &topic("reports")));
    for edge in [alpha, bravo] {
        let reports = all(edge, &topic("reports"));
        assert_eq!(reports.len(), 20, "{} holds others' reports", edge.node());
        assert!(reports.iter().all(|r| r.entry.id.origin == *edge.node()));
        assert_eq!(all(edge, &topic("scratch")).len(), 5);
    }
    assert_eq!(all(hq, &topic("scratch")).len(), 5);

    // Vectors agree where the entries do.
    let hq_vector = hq.vector(&b).unwrap();
    let alpha_vector = alpha.vector(&b).unwrap();
    assert_eq!(
        hq_vector.get(&name("bravo")),
        alpha_vector.get(&name("bravo"))
    );

    // Status: each edge's link to the core is up and has carried entries both ways.
    let status = cluster.edge("alpha").link("hq").status();
    assert!(status.connected);
    assert!(
        status
            .topics
            .iter()
            .any(|t| t.topic == b && t.out && t.entries >= 52)
    );
    assert!(
        status
            .topics
            .iter()
            .any(|t| t.topic == b && !t.out && t.entries >= 101)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_with_no_loss_and_no_duplicates() {
    let mut cluster = Cluster::start(
        &["alpha"],
        &[("broadcast", Scope::All), ("reports", Scope::Core)],
    )
    .await
    .unwrap();
    let b = topic("broadcast");
    append_n(&cluster.core.store, "broadcast", 10, None).await;
    wait_for_count(&cluster.edge("alpha").store, &b, 10, PATIENCE)
        .await
        .unwrap();

    // The link goes down; both sides go on appending.
    cluster.edge("alpha").cut();
    append_n(&cluster.core.store, "broadcast", 300, None).await;
    append_n(&cluster.edge("alpha").store, "broadcast", 200, None).await;
    append_n(&cluster.edge("alpha").store, "reports", 100, None).await;

    // The edge comes back (a restart, on its store): everything converges.
    cluster.restart_edge("alpha").await.unwrap();
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    wait_for_count(hq, &b, 510, PATIENCE).await.unwrap();
    wait_for_count(alpha, &b, 510, PATIENCE).await.unwrap();
    wait_for_count(hq, &topic("reports"), 100, PATIENCE)
        .await
        .unwrap();
    for store in [hq, alpha] {
        let records = all(store, &b);
        assert_eq!(records.len(), 510, "{}", store.node());
        let last = check_once_in_order(&records);
        assert_eq!((last[&name("hq")], last[&name("alpha")]), (310, 200));
    }
    assert_eq!(all(hq, &topic("reports")).len(), 100);
}

/// Waits until `check` holds for the link's status (on its change signal).
pub(crate) async fn wait_status(
    link: &protocol::link::PeerLink,
    what: &str,
    check: impl Fn(&protocol::link::LinkStatus) -> bool,
) {
    let mut watch = link.watch();
    let waited = tokio::time::timeout(PATIENCE, watch.wait_for(|s| check(s))).await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "link never {what}: {:?}",
        link.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_both_ways_the_core_sees_what_waits_and_resume_goes_on_where_it_stopped() {
    let cluster = Cluster::start(&["alpha"], &[("broadcast", Scope::All)])
        .await
        .unwrap();
    let b = topic("broadcast");
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    let here = cluster.edge("alpha").link("hq");
    wait_status(&here, "up", |s| s.connected).await;

    // The field operator pauses; the core sees it.
    here.pause();
    wait_status(&cluster.core.link("alpha"), "paused by the peer", |s| {
        s.paused_by_peer
    })
    .await;
    append_n(hq, "broadcast", 20, None).await;
    append_n(alpha, "broadcast", 10, None).await;
    // The edge tells the core what waits there for it (HQ's fleet table shows it).
    let at_core = cluster.core.link("alpha");
    wait_status(&at_core, "told of the edge's 10 waiting entries", |s| {
        s.backlog_in.is_some_and(|h| h.entries == 10 && h.bytes > 0)
    })
    .await;
    // Nothing crosses while paused: a second is ample on loopback, where the same
    // entries cross in milliseconds when the link is not paused.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        all(alpha, &b).len(),
        10,
        "entries reached the edge while paused"
    );
    assert_eq!(
        all(hq, &b).len(),
        20,
        "entries reached the core while paused"
    );
    assert!(here.status().paused_here);

    here.resume();
    wait_for_count(alpha, &b, 30, PATIENCE).await.unwrap();
    wait_for_count(hq, &b, 30, PATIENCE).await.unwrap();
    wait_status(&at_core, "told that nothing waits", |s| {
        s.backlog_in.is_some_and(|h| h.entries == 0)
    })
    .await;
    check_once_in_order(&all(alpha, &b));
    check_once_in_order(&all(hq, &b));
}

/// Each side of a link learns from the other's hello how far apart their clocks are; past
/// two minutes both pages warn. An edge whose clock is three hours slow, driven by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_learns_how_far_the_other_s_clock_is() {
    use protocol::wire::{Frame, FrameReader, Hello};
    let cluster = Cluster::start_allowing(&[], &["alpha"], &[("broadcast", Scope::All)])
        .await
        .unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let slow: i64 = 3 * 3600 * 1000;
    let endpoint = Cluster::endpoint_for(cluster.ca(), "alpha").unwrap();
    let peer = protocol::tls::connect(&endpoint, cluster.core_addr(), &name("hq"))
        .await
        .unwrap();
    let (mut control, mut recv) = peer.connection.open_bi().await.unwrap();
    let hello = Frame::Hello(Hello {
        version: protocol::wire::VERSION,
        node: name("alpha"),
        incarnation: 1,
        core: false,
        topics: vec![(topic("broadcast"), Scope::All)],
        closed: vec![],
        clock_ms: (now_ms() - slow) as u64,
    });
    control.write_all(&framed(&hello)).await.unwrap();
    // The core's hello carries its clock: this machine's.
    let mut reader = FrameReader::default();
    let theirs = loop {
        if let Some(frame) = reader.next_frame().unwrap() {
            break frame;
        }
        let chunk = recv.read_chunk(4096, true).await.unwrap().unwrap();
        reader.push(&chunk.bytes);
    };
    let Frame::Hello(theirs) = theirs else {
        panic!("the core's first frame is a hello: {theirs:?}")
    };
    assert!(
        (theirs.clock_ms as i64 - now_ms()).abs() < 60_000,
        "the core's clock: {}",
        theirs.clock_ms
    );
    // The core sees the edge's clock three hours behind its own, and says so.
    let at_core = cluster.core.link("alpha");
    wait_status(&at_core, "told of the edge's clock", |s| {
        s.clock_offset_ms.is_some()
    })
    .await;
    let status = at_core.status();
    let offset = status.clock_offset_ms.unwrap();
    assert!((offset + slow).abs() < 60_000, "offset {offset} ms");
    let view = ui::views::LinkView::from(&status);
    assert!(view.clock_skewed, "{view:?}");
    assert!(!ui::views::clock_skewed(60_000));
    drop(peer);
}

/// Connects to the core as `who` (from `ca`), writes `bytes` on a control stream, and
/// returns how the core closed the connection: code name and reason.
async fn misbehave(cluster: &Cluster, ca: &protocol::tls::Ca, who: &str, bytes: Vec<u8>) -> String {
    let endpoint = Cluster::endpoint_for(ca, who).unwrap();
    let closed = match protocol::tls::connect(&endpoint, cluster.core_addr(), &name("hq")).await {
        Err(e) => return format!("handshake failed: {e}"),
        Ok(peer) => {
            // Both halves stay open until the core closes the connection.
            let mut stream = peer.connection.open_bi().await;
            if let Ok((send, _)) = &mut stream {
                let _ = send.write_all(&bytes).await;
            }
            let closed = tokio::time::timeout(PATIENCE, peer.connection.closed())
                .await
                .expect("the core closes the link");
            drop(stream);
            closed
        }
    };
    protocol::tls::explain(&closed)
}

fn framed(frame: &protocol::wire::Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    protocol::wire::encode(frame, &mut bytes);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_are_refused_with_a_reason_and_the_core_serves_on() {
    use protocol::wire::{Frame, Hello};
    let cluster = Cluster::start_allowing(&["alpha"], &["mallory"], &[("broadcast", Scope::All)])
        .await
        .unwrap();
    let ca = cluster.ca();
    let hello = |version| {
        Frame::Hello(Hello {
            incarnation: 1,
            closed: vec![],
            version,
            node: name("mallory"),
            core: false,
            topics: vec![(topic("broadcast"), Scope::All)],
            clock_ms: 0,
        })
    };

    let not_listed = misbehave(&cluster, ca, "charlie", Vec::new()).await;
    assert!(
        not_listed.contains("not-allowed") && not_listed.contains("charlie"),
        "{not_listed}"
    );

    let other_ca = protocol::tls::Ca::create("another mission").unwrap();
    let stranger = misbehave(&cluster, &other_ca, "alpha", Vec::new()).await;
    assert!(
        !stranger.contains("closed by the peer (shutdown)"),
        "a stranger got in: {stranger}"
    );

    let version = misbehave(&cluster, ca, "mallory", framed(&hello(99))).await;
    assert!(
        version.contains("(version)") && version.contains("99"),
        "{version}"
    );

    let garbage = misbehave(
        &cluster,
        ca,
        "mallory",
        b"\x05\xff\xff\xff\xff\xff and more garbage".to_vec(),
    )
    .await;
    assert!(garbage.contains("(protocol)"), "{garbage}");

    let mut huge = framed(&hello(protocol::wire::VERSION));
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // a 4 GiB frame follows
    let too_large = misbehave(&cluster, ca, "mallory", huge).await;
    assert!(too_large.contains("(too-large)"), "{too_large}");

    let wrong_name = misbehave(
        &cluster,
        ca,
        "mallory",
        framed(&Frame::Hello(Hello {
            node: name("alpha"),
            ..match hello(protocol::wire::VERSION) {
                Frame::Hello(h) => h,
                _ => unreachable!(),
            }
        })),
    )
    .await;
    assert!(
        wrong_name.contains("(protocol)") && wrong_name.contains("certificate"),
        "{wrong_name}"
    );

    // Meanwhile alpha's link is unharmed: entries flow both ways.
    let b = topic("broadcast");
    append_n(&cluster.edge("alpha").store, "broadcast", 5, None).await;
    append_n(&cluster.core.store, "broadcast", 5, None).await;
    wait_for_count(&cluster.core.store, &b, 10, PATIENCE)
        .await
        .unwrap();
    wait_for_count(&cluster.edge("alpha").store, &b, 10, PATIENCE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_closed_after_the_hello_timeout() {
    // A valid, allowed edge that connects and says nothing: its session must end.
    let cluster = Cluster::start_allowing(&[], &["mallory"], &[("broadcast", Scope::All)])
        .await
        .unwrap();
    let endpoint = Cluster::endpoint_for(cluster.ca(), "mallory").unwrap();
    let peer = protocol::tls::connect(&endpoint, cluster.core_addr(), &name("hq"))
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(90), peer.connection.closed())
        .await
        .expect("closed by the core");
    let why = protocol::tls::explain(&closed);
    assert!(
        why.contains("(protocol)") && why.contains("no hello"),
        "{why}"
    );
}

/// Edges are upgraded one by one, over months: an edge that speaks the previous protocol
/// version (5: one entry stream, no priority classes) links with the new core and
/// replicates both ways, an urgent topic of the core's included (on the one stream,
/// read first). The core answers its hello in its version; had it answered in its own,
/// the edge would refuse the link ("version").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_of_the_previous_version_replicates_with_the_new_core() {
    use protocol::entry::Priority;
    use protocol::link::{Priorities, SessionSettings};
    let settings = SessionSettings {
        hello_timeout: Duration::from_secs(3),
        priorities: Priorities(vec![(topic("alerts"), Priority::Urgent)]),
        ..SessionSettings::default()
    };
    let topics = [("broadcast", Scope::All), ("alerts", Scope::All)];
    let old = SessionSettings {
        version: protocol::wire::PREVIOUS_VERSION,
        ..settings.clone()
    };
    let (cluster, _) = Cluster::start_pair("alpha", &topics, settings, old, None)
        .await
        .unwrap();
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    append_n(alpha, "broadcast", 20, None).await;
    append_n(hq, "broadcast", 20, None).await;
    append_n(hq, "alerts", 5, None).await;
    append_n(alpha, "alerts", 5, None).await;
    for (store, t, n) in [
        (hq, "broadcast", 40),
        (alpha, "broadcast", 40),
        (hq, "alerts", 10),
        (alpha, "alerts", 10),
    ] {
        wait_for_count(store, &topic(t), n, PATIENCE).await.unwrap();
        let last = check_once_in_order(&all(store, &topic(t)));
        assert_eq!(last.len(), 2, "{t} at {}: both origins", store.node());
    }
}

/// A latest-value topic (set in the core's config only: the edge learns it in the
/// handshake): while the link is paused, the edge updates 20 positions 10 times each;
/// when it resumes, only the latest of each crosses, and the core's vector still covers
/// every sequence (the superseded ones were skipped with their successors, not lost). A
/// superseded entry never arrives after its successor, and the edge still reads all 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_value_topic_sends_only_the_latest_entry_per_key_of_what_waits() {
    use protocol::link::SessionSettings;
    let settings = SessionSettings {
        hello_timeout: Duration::from_secs(3),
        latest_value: vec![topic("positions")],
        ..SessionSettings::default()
    };
    let topics = [("positions", Scope::All)];
    let at_edge = SessionSettings {
        latest_value: Vec::new(),
        ..settings.clone()
    };
    let (cluster, _) = Cluster::start_pair("alpha", &topics, settings, at_edge, None)
        .await
        .unwrap();
    let p = topic("positions");
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    let here = cluster.edge("alpha").link("hq");
    wait_status(&here, "up", |s| s.connected).await;
    // A first position crosses at once: routes and acknowledgements are settled.
    alpha
        .append(&p, Append::new("unit-0 at start").key("unit-0"))
        .await
        .unwrap();
    wait_for_count(hq, &p, 1, PATIENCE).await.unwrap();

    here.pause();
    wait_status(&cluster.core.link("alpha"), "paused by the peer", |s| {
        s.paused_by_peer
    })
    .await;
    for round in 0..10 {
        let mut txn = protocol::log::Txn::new();
        for unit in 0..20 {
            let position = format!("unit-{unit} at {round}");
            txn.append(&p, Append::new(position).key(format!("unit-{unit}")));
        }
        alpha.commit(txn).await.unwrap();
    }
    here.resume();
    // The latest of each unit: seq 2 + 9 * 20 + unit.
    let last = 1 + 200;
    let wanted =
        |store: &protocol::log::Store| store.vector(&p).unwrap().get(&name("alpha")).0 >= last;
    let mut changes = hq.changes();
    tokio::time::timeout(PATIENCE, async {
        while !wanted(hq) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the core's vector never covered the edge's updates");
    let records = all(hq, &p);
    let seqs: Vec<u64> = records.iter().map(|r| r.entry.id.seq.0).collect();
    assert_eq!(
        seqs,
        std::iter::once(1).chain(182..=201).collect::<Vec<_>>(),
        "the core holds the first position and the latest of each unit, in order"
    );
    for r in &records[1..] {
        let text = String::from_utf8_lossy(&r.entry.payload);
        assert!(text.ends_with(" at 9"), "{text}: not the latest");
    }
    check_once_in_order(&records);
    assert_eq!(all(alpha, &p).len(), 201, "the edge reads every entry");
}
