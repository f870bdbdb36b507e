//! The impaired-link suite (issue 4): a real core and a real edge, each with its store on
//! disk, the edge dialing the core over QUIC through the link emulator (`tests::emulator`)
//! with a named profile, its outages and its schedules.
//!
//! What it shows: replication stays exact (each entry once, each origin in order) under
//! every profile; outages and flapping while both sides append converge by themselves,
//! on the same connection when the outage is shorter than QUIC's idle timeout and by a
//! redial when it is longer; a new entry crosses while a backlog drains the other way;
//! an idle link sends little.
//!
//! Timing: nothing here sleeps to wait for an event (waits are on the store's change
//! signal or the link's status watch, with deadlines reached only on failure); sleeps
//! only hold an outage or an idle period for its length. Targets on speed are the bench
//! runner's (`catch-up`, `idle`, `first-entry`), never asserted here. Entries are few
//! and small on the slow profiles, and the profiles run at once, to keep the suite short.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::entry::{Append, NodeName, Scope, TopicName};
use protocol::link::LinkStatus;
use protocol::log::Store;
use protocol::tls::{self, Timeouts};
use tests::cluster::{Cluster, all, name, topic, wait_for_count, wait_link};
use tests::emulator::{Counters, Link, Profile, Tally};

/// The topic of every test here: `all`, appended on both sides.
const TOPIC: &str = "broadcast";

/// How long a step may take on a profile before the test fails: the handshake and a
/// few entries on `hf` take tens of seconds (9.6 kbit/s, 2.5 s round trip, 10 % loss,
/// so lost handshake packets wait for backed-off retransmissions).
fn patience(profile: &str) -> Duration {
    Duration::from_secs(match profile {
        "lan" | "lte" => 30,
        "satcom" => 60,
        "tactical" => 120,
        _ => 240,
    })
}

/// A core and an edge `alpha` dialing it through the emulator with `profile`, linked.
async fn linked(profile: &str) -> (Cluster, Link) {
    let (cluster, relay) = Cluster::start_through(
        "alpha",
        Profile::named(profile).unwrap(),
        &[(TOPIC, Scope::All), ("other", Scope::All)],
    )
    .await
    .unwrap();
    up(&cluster, profile).await;
    (cluster, relay)
}

/// Waits until the edge sees its link up; returns that status.
async fn up(cluster: &Cluster, profile: &str) -> LinkStatus {
    wait_link(
        &cluster.edge("alpha").link("hq"),
        "up",
        patience(profile),
        |s| s.connected,
    )
    .await
    .unwrap()
}

/// Appends entries `from..to` of `store`'s own series to `t`: payload `"<node> <i>"`, so
/// that entry `i` has sequence `i + 1`.
async fn append_range(store: &Store, t: &str, from: u64, to: u64) {
    for i in from..to {
        store
            .append(&topic(t), Append::new(format!("{} {i}", store.node())))
            .await
            .unwrap();
    }
}

/// Appends `n` random 256-byte entries to `t` at `store` in one transaction (random, so
/// that compression does not shrink them), from the seed `seed`.
async fn append_random(store: &Store, t: &TopicName, n: u64, seed: u64) {
    let mut txn = protocol::log::Txn::new();
    let mut rng = tests::Rng::new(seed);
    for _ in 0..n {
        let mut payload = vec![0; 256];
        rng.fill(&mut payload);
        txn.append(t, Append::new(payload));
    }
    store.commit(txn).await.unwrap();
}

/// Checks that `t` at `store` holds exactly the series `"<origin> 0"` to
/// `"<origin> <n-1>"` of each origin in `expect`, each entry once, each origin in order,
/// and nothing else.
fn check_exact(store: &Store, t: &TopicName, expect: &[(&str, u64)], context: &str) {
    let records = all(store, t);
    let mut next: HashMap<NodeName, u64> = HashMap::new();
    for r in &records {
        let origin = &r.entry.id.origin;
        let seen = next.entry(origin.clone()).or_default();
        assert_eq!(
            r.entry.id.seq.0,
            *seen + 1,
            "{context}: at {}, {:?} after seq {seen}: a duplicate, a hole or out of order",
            store.node(),
            r.entry.id
        );
        assert_eq!(
            r.entry.payload,
            format!("{origin} {seen}").into_bytes(),
            "{context}: at {}, {:?} carries another entry's payload",
            store.node(),
            r.entry.id
        );
        *seen += 1;
    }
    let want: HashMap<NodeName, u64> = expect.iter().map(|(o, n)| (name(o), *n)).collect();
    assert_eq!(
        next,
        want,
        "{context}: at {}, entries per origin",
        store.node()
    );
}

/// Waits until both nodes hold `total` entries of `TOPIC`, then checks both exactly.
async fn converged(cluster: &Cluster, expect: &[(&str, u64)], within: Duration, context: &str) {
    let total = expect.iter().map(|(_, n)| n).sum();
    let t = topic(TOPIC);
    for store in [&cluster.core.store, &cluster.edge("alpha").store] {
        wait_for_count(store, &t, total, within)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
    }
    for store in [&cluster.core.store, &cluster.edge("alpha").store] {
        check_exact(store, &t, expect, context);
    }
}

/// One profile: both sides append half their entries before the link is up and half
/// after; both end with every entry once, in per-origin order.
async fn exact_under(profile: &'static str, n: u64) {
    let started = Instant::now();
    let (cluster, relay) = Cluster::start_through(
        "alpha",
        Profile::named(profile).unwrap(),
        &[(TOPIC, Scope::All)],
    )
    .await
    .unwrap();
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    append_range(hq, TOPIC, 0, n / 2).await;
    append_range(alpha, TOPIC, 0, n / 2).await;
    up(&cluster, profile).await;
    append_range(hq, TOPIC, n / 2, n).await;
    append_range(alpha, TOPIC, n / 2, n).await;
    converged(
        &cluster,
        &[("hq", n), ("alpha", n)],
        patience(profile),
        profile,
    )
    .await;
    let counters = relay.counters();
    eprintln!(
        "{profile}: {n} entries each way in {:.1} s; {} bytes on the wire, {} + {} packets lost",
        started.elapsed().as_secs_f64(),
        counters.wire_bytes(),
        counters.e2c.dropped_loss.packets,
        counters.c2e.dropped_loss.packets,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_and_an_edge_replicate_exactly_under_every_profile() {
    // All at once: the slow profiles spend their time waiting on the link, not the CPU.
    // Counts shrink with the link: hf carries 9.6 kbit/s with 10 % loss.
    tokio::join!(
        exact_under("lan", 500),
        exact_under("lte", 300),
        exact_under("satcom", 100),
        exact_under("tactical", 30),
        exact_under("hf", 6),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_while_both_sides_append_resumes_on_the_same_connection() {
    let (cluster, relay) = linked("satcom").await;
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    append_range(hq, TOPIC, 0, 20).await;
    append_range(alpha, TOPIC, 0, 20).await;
    converged(
        &cluster,
        &[("hq", 20), ("alpha", 20)],
        patience("satcom"),
        "before",
    )
    .await;
    let before = cluster.edge("alpha").link("hq").status();

    // A few seconds down, far below QUIC's idle timeout: both sides go on appending.
    relay.down();
    append_range(hq, TOPIC, 20, 80).await;
    append_range(alpha, TOPIC, 20, 70).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.up();
    converged(
        &cluster,
        &[("hq", 80), ("alpha", 70)],
        patience("satcom"),
        "after",
    )
    .await;

    // The session never noticed: same connection, up since before the outage.
    let after = cluster.edge("alpha").link("hq").status();
    assert!(after.connected, "{after:?}");
    assert_eq!(
        after.since, before.since,
        "the link went down and came back"
    );
    assert!(
        relay.counters().e2c.dropped_outage.packets > 0,
        "the outage dropped nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_idle_timeout_redials_and_converges() {
    // The edge with the shortest timeouts a node's config accepts (`[link] keep_alive =
    // "1s"`, `idle_timeout = "5s"`, instead of 15 s and 60 s), so that a short outage
    // outlives the connection; QUIC takes the smaller of both sides' idle timeouts, so the
    // core's session ends too.
    let mut cluster = Cluster::start_allowing(&[], &["alpha"], &[(TOPIC, Scope::All)])
        .await
        .unwrap();
    let relay = Link::start(cluster.core_addr(), Profile::named("lte").unwrap()).unwrap();
    let transport = tls::transport_config(Timeouts {
        keep_alive: *tls::KEEP_ALIVE_RANGE.start(),
        idle_timeout: *tls::IDLE_TIMEOUT_RANGE.start(),
    });
    let edge = cluster
        .start_edge_tuned("alpha", relay.addr(), transport)
        .await
        .unwrap();
    cluster.add(edge);
    let first = up(&cluster, "lte").await;
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    append_range(hq, TOPIC, 0, 10).await;
    append_range(alpha, TOPIC, 0, 10).await;
    converged(
        &cluster,
        &[("hq", 10), ("alpha", 10)],
        patience("lte"),
        "before",
    )
    .await;

    relay.down();
    append_range(hq, TOPIC, 10, 60).await;
    append_range(alpha, TOPIC, 10, 40).await;
    let link = cluster.edge("alpha").link("hq");
    wait_link(&link, "down", patience("lte"), |s| !s.connected)
        .await
        .unwrap();
    wait_link(
        &cluster.core.link("alpha"),
        "down at the core",
        patience("lte"),
        |s| !s.connected,
    )
    .await
    .unwrap();
    // Down a little longer: until one of the edge's redials has been lost in the outage.
    let lost = relay.counters().e2c.dropped_outage.packets;
    let deadline = Instant::now() + patience("lte");
    while relay.counters().e2c.dropped_outage.packets == lost {
        assert!(Instant::now() < deadline, "the edge never redialled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.up();
    let again = up(&cluster, "lte").await;
    assert!(again.since > first.since, "{again:?}");
    converged(
        &cluster,
        &[("hq", 60), ("alpha", 40)],
        patience("lte"),
        "after",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_while_both_sides_append_converges() {
    let (cluster, relay) = linked("satcom").await;
    let (hq, alpha) = (
        cluster.core.store.clone(),
        cluster.edge("alpha").store.clone(),
    );
    // Up and down on a schedule with cycles shorter and longer than a round trip's
    // retransmission timeout, while both sides append every 100 ms for 8 s.
    relay.schedule(&[
        (Duration::from_millis(1500), Duration::from_millis(500)),
        (Duration::from_millis(700), Duration::from_millis(1500)),
        (Duration::from_millis(300), Duration::from_millis(200)),
    ]);
    let pace = |store: Store| async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for i in 0..80 {
            tick.tick().await;
            append_range(&store, TOPIC, i, i + 1).await;
        }
    };
    tokio::join!(pace(hq), pace(alpha));
    relay.up();
    converged(
        &cluster,
        &[("hq", 80), ("alpha", 80)],
        patience("satcom"),
        "flapping",
    )
    .await;
    let counters = relay.counters();
    assert!(
        counters.e2c.dropped_outage.packets + counters.c2e.dropped_outage.packets > 0,
        "the schedule dropped nothing: {counters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_entry_does_not_wait_behind_the_backlog() {
    let (cluster, relay) = linked("tactical").await;
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    let t = topic(TOPIC);
    // Each side has heard where the other stands (`Have`) before the outage: otherwise
    // the new entry would also wait for that first exchange, lost in the outage.
    append_range(hq, TOPIC, 0, 1).await;
    append_range(alpha, TOPIC, 0, 1).await;
    converged(
        &cluster,
        &[("hq", 1), ("alpha", 1)],
        patience("tactical"),
        "before",
    )
    .await;

    // While the link is down, the edge gathers a backlog of ~120 kB: about 15 s on a
    // 64 kbit/s link at best.
    const BACKLOG: u64 = 400;
    relay.down();
    append_random(alpha, &t, BACKLOG, 4).await;
    // The outage itself: two seconds, well under the idle timeout (what is measured is
    // what crosses after it, not how the link noticed it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.up();

    // The core's new entry crosses the other way at once: it reaches the edge while the
    // backlog is still on its way to the core.
    let sent = Instant::now();
    hq.append(&t, Append::new("hq 1")).await.unwrap();
    wait_for_count(alpha, &t, BACKLOG + 3, patience("tactical"))
        .await
        .unwrap();
    let took = sent.elapsed();
    // The core holds its 2 entries, alpha's first, and what arrived of the backlog.
    let arrived = hq.topic(&t).map_or(0, |i| i.next.0) - 3;
    eprintln!(
        "tactical: the new entry took {:.0} ms; the core held {arrived} of {BACKLOG} backlog \
         entries then",
        took.as_secs_f64() * 1e3,
    );
    assert!(
        arrived < BACKLOG,
        "the new entry arrived only after the whole backlog ({took:?})"
    );
    wait_for_count(hq, &t, BACKLOG + 3, patience("tactical"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_link_sends_little() {
    let (cluster, relay) = linked("lan").await;
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    append_range(hq, TOPIC, 0, 5).await;
    append_range(alpha, TOPIC, 0, 5).await;
    converged(
        &cluster,
        &[("hq", 5), ("alpha", 5)],
        patience("lan"),
        "idle",
    )
    .await;

    // Once both sides have every entry acknowledged, 20 s of nothing to send (beyond one
    // 15 s keep-alive interval).
    for link in [cluster.core.link("alpha"), cluster.edge("alpha").link("hq")] {
        wait_link(&link, "acknowledged", patience("lan"), |s| {
            s.topics
                .iter()
                .filter(|t| t.out)
                .all(|t| t.backlog == 0 && t.up_to_date.is_some())
        })
        .await
        .unwrap();
    }
    let before = relay.counters();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = relay.counters();
    let count = |d: fn(&Counters) -> Tally| {
        let (after, before) = (d(&after), d(&before));
        (after.packets - before.packets, after.bytes - before.bytes)
    };
    let (packets, bytes) = count(|c| c.e2c.delivered + c.c2e.delivered);
    let (probes, probe_bytes) = count(|c| c.e2c.delivered_large + c.c2e.delivered_large);
    let (packets, bytes) = (packets - probes, bytes - probe_bytes);
    eprintln!("idle: {bytes} bytes in {packets} packets and {probes} MTU probes in 20 s");
    // Keep-alives cost ~100 bytes per 15 s; the bound is generous so that it never
    // flakes, and still catches a link that chatters (the bench measures the figure).
    assert!(bytes <= 2_000, "{bytes} bytes in 20 s on an idle link");
    // QUIC's path MTU search starts once a link is up, one probe of 1,326 to 1,452 bytes
    // at a time, each size tried up to 3 times; on a loaded machine it can reach into this
    // window. Each side searches once (and again after 10 minutes), a few sizes each.
    assert!(
        probes <= 2 * 6 * 3,
        "{probes} large datagrams on an idle link"
    );
}

/// A topic's priority class on the `tactical` rate and round trip (without its loss, so
/// that what is shown is the order, not a retransmission): the edge holds a backlog of
/// a normal topic, handed to QUIC as far as the sender's window allows; an entry of an
/// urgent topic appended after it on the same side overtakes the backlog's entries that
/// were already sent (in QUIC's buffer): it has an entry stream of its own, which QUIC
/// sends first, and a window that does not count the normal topic's entries. On one
/// stream, it would arrive after all of them. The class is set in the core's config
/// only: the edge learns it in the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_entry_overtakes_a_normal_backlog_sent_before_it() {
    use protocol::entry::Priority;
    use protocol::link::{Priorities, SessionSettings};
    use tests::emulator::OneWay;
    let profile = Profile::symmetric(
        "tactical-no-loss",
        OneWay::new(64_000, Duration::from_millis(600), 0.0),
    );
    let at_core = SessionSettings {
        priorities: Priorities(vec![(topic("alerts"), Priority::Urgent)]),
        ..SessionSettings::default()
    };
    let topics = [(TOPIC, Scope::All), ("alerts", Scope::All)];
    let at_edge = SessionSettings::default();
    let (cluster, _relay) = Cluster::start_pair("alpha", &topics, at_core, at_edge, Some(profile))
        .await
        .unwrap();
    up(&cluster, "tactical").await;
    let (hq, alpha) = (&cluster.core.store, &cluster.edge("alpha").store);
    let (backlog, alerts) = (topic(TOPIC), topic("alerts"));

    // ~400 kB of random entries: 50 s on this link, far more than the window lets out.
    const BACKLOG: u64 = 1500;
    append_random(alpha, &backlog, BACKLOG, 9).await;

    // Wait until the sender has handed QUIC well more of the backlog than the link can
    // hold on its way (its queue and its round trip: ~18 kB, ~70 entries).
    let link = cluster.edge("alpha").link("hq");
    let mut status = link.watch();
    let sent_of = |s: &LinkStatus| {
        s.topics
            .iter()
            .find(|t| t.out && t.topic == backlog)
            .map_or(0, |t| t.entries)
    };
    let held = |store: &Store, t: &TopicName| store.topic(t).map_or(0, |i| i.next.0);
    let ahead = tokio::time::timeout(patience("tactical"), async {
        loop {
            let sent = sent_of(&status.borrow_and_update());
            if sent.saturating_sub(held(hq, &backlog)) >= 120 {
                return sent;
            }
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("the sender never got 120 entries ahead of what the core holds");

    alpha.append(&alerts, Append::new("contact")).await.unwrap();
    wait_for_count(hq, &alerts, 1, patience("tactical"))
        .await
        .unwrap();
    let arrived = held(hq, &backlog);
    eprintln!(
        "priority: {ahead} backlog entries were sent before the urgent one; the core held \
         {arrived} of them when it arrived"
    );
    assert!(
        arrived < ahead,
        "the urgent entry arrived after all {ahead} backlog entries sent before it \
         (the core held {arrived})"
    );
}
