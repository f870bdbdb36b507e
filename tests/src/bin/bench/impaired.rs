//! Scenarios over the link emulator (`tests::emulator`): an in-process core and edge, each
//! with its store on disk, over real QUIC with mutual TLS, the edge dialing the core
//! through a relay that imposes a named profile and counts the bytes on the wire.
//!
//! - `catch-up` through the profiles ([`catch_up_profiles`]): a backlog appended while
//!   the link is down, sent when it comes back (a new connection); how long the
//!   reconnect took, and the backlog's goodput against the link's rate.
//! - `idle` ([`idle`]): bytes per minute on a linked pair with nothing to send.
//! - `first-entry` ([`first_entry`]): after a 60 s outage on `tactical` during which the
//!   edge appended 10,000 entries, how long one new entry takes to cross.

use std::time::{Duration, Instant};

use protocol::entry::{Append, Scope, TopicName};
use protocol::log::{Store, Txn};
use protocol::tls;
use serde_json::json;
use tests::Rng;
use tests::cluster::{Cluster, Node, topic};
use tests::emulator::{Link, Profile};

use crate::round2;

/// Payload bytes per entry: random, so that compression gains nothing and the goodput
/// is the link's, not zstd's.
const PAYLOAD: usize = 256;

/// Bytes on the wire per 256-byte entry in a bulk transfer, about (the `wire` scenario
/// measures 270-280); only used to size backlogs.
const WIRE_PER_ENTRY: u64 = 280;

/// How long anything may take before the scenario gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// The topic every backlog goes to.
const BULK: &str = "bench";

/// A topic of its own for a new entry from the side that holds the backlog.
const URGENT: &str = "urgent";

/// The edge's QUIC idle timeout in `catch-up`: an outage past it ends the connection.
const RECONNECT_IDLE: Duration = Duration::from_secs(15);

/// A core and an edge `alpha`, the edge dialing through a link emulator.
struct Pair {
    cluster: Cluster,
    relay: Link,
}

impl Pair {
    /// Starts the pair on `profile` and waits until the link is up.
    async fn start(profile: Profile) -> Result<Pair, String> {
        let topics = [(BULK, Scope::All), (URGENT, Scope::All)];
        let (cluster, relay) = Cluster::start_through("alpha", profile, &topics)
            .await
            .map_err(|e| e.to_string())?;
        let pair = Pair { cluster, relay };
        pair.connected().await?;
        Ok(pair)
    }

    /// Like [`Pair::start`], the edge's QUIC idle timeout [`RECONNECT_IDLE`] (QUIC takes
    /// the smaller of both sides'), so that an outage past it ends the connection in
    /// seconds and what comes back is a new one.
    async fn start_reconnecting(profile: Profile) -> Result<Pair, String> {
        let topics = [(BULK, Scope::All), (URGENT, Scope::All)];
        let settings = protocol::link::SessionSettings::default();
        let mut cluster = Cluster::start_with_settings(&[], &["alpha"], &topics, settings)
            .await
            .map_err(|e| e.to_string())?;
        let relay = Link::start(cluster.core_addr(), profile).map_err(|e| e.to_string())?;
        let timeouts = tls::Timeouts {
            keep_alive: RECONNECT_IDLE / 3,
            idle_timeout: RECONNECT_IDLE,
        };
        let edge = cluster
            .start_edge_tuned("alpha", relay.addr(), tls::transport_config(timeouts))
            .await
            .map_err(|e| e.to_string())?;
        cluster.add(edge);
        let pair = Pair { cluster, relay };
        pair.connected().await?;
        Ok(pair)
    }

    fn edge(&self) -> &Node {
        self.cluster.edge("alpha")
    }

    fn core(&self) -> &Node {
        &self.cluster.core
    }

    /// Waits until the edge sees its link to the core up.
    async fn connected(&self) -> Result<(), String> {
        let mut up = self.edge().link("hq").watch();
        tokio::time::timeout(PATIENCE, up.wait_for(|s| s.connected))
            .await
            .map_err(|_| "the link never came up")?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Appends `n` random `PAYLOAD`-byte entries to `t` at `store`, 100 per transaction.
pub(crate) async fn fill(store: &Store, t: &TopicName, n: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut left = n;
    while left > 0 {
        let mut txn = Txn::new();
        for _ in 0..left.min(100) {
            let mut payload = vec![0; PAYLOAD];
            rng.fill(&mut payload);
            txn.append(t, Append::new(payload));
        }
        left -= left.min(100);
        store.commit(txn).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub(crate) fn held(store: &Store, t: &TopicName) -> u64 {
    store.topic(t).map_or(0, |i| i.next.0 - i.first.0)
}

/// Waits (on the store's change signal) until `t` at `store` holds `count` entries;
/// returns when it first held more than `from`, and when it reached `count`.
async fn arrivals(
    store: &Store,
    t: &TopicName,
    from: u64,
    count: u64,
    within: Duration,
) -> Result<(Instant, Instant), String> {
    let mut changes = store.changes();
    let deadline = tokio::time::Instant::now() + within;
    let mut first = None;
    loop {
        changes.borrow_and_update();
        let now = held(store, t);
        if now > from && first.is_none() {
            first = Some(Instant::now());
        }
        if now >= count {
            let last = Instant::now();
            return Ok((first.unwrap_or(last), last));
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(format!(
                "{} holds {now} of {count} entries of {t} after {within:?}",
                store.node()
            ));
        }
    }
}

/// Appends one entry to `t` at `from` and waits until `to` holds `count` entries of it.
async fn one_across(
    from: &Store,
    to: &Store,
    t: &TopicName,
    count: u64,
    within: Duration,
) -> Result<Duration, String> {
    let sent = Instant::now();
    from.append(t, Append::new(vec![1; PAYLOAD]))
        .await
        .map_err(|e| e.to_string())?;
    arrivals(to, t, 0, count, within).await?;
    Ok(sent.elapsed())
}

/// The link's rate in a direction, in bits per second.
fn rate(profile: &Profile, dir: &str) -> Result<u64, String> {
    let one_way = if dir == "e2c" {
        &profile.e2c
    } else {
        &profile.c2e
    };
    one_way
        .rate_bps
        .map(|r| r.get())
        .ok_or_else(|| format!("profile {} has no rate limit", profile.name))
}

/// `catch-up` through the profiles, after the loopback line(s) of `link::catch_up`
/// (`lan`): per profile and direction, the link goes down through the emulator for
/// longer than the edge's idle timeout ([`RECONNECT_IDLE`]: the connection ends, the
/// edge keeps dialing), a backlog is appended meanwhile, then the link comes back.
/// Keys:
///
/// - `handshake_s`: from the moment the link is back until the session is up (the wait
///   for the edge's next dial, the QUIC and TLS handshake, resumed from the last
///   session's ticket, and the hellos);
/// - `catchup_s`: from the moment the link is back to the last entry stored at the other
///   side (handshake included);
/// - `goodput_ratio`: payload bytes delivered per second, from the first entry stored to
///   the last, over the link's rate in that direction;
/// - `first_new_entry_ms`: once the link is up, one entry appended at the side without
///   the backlog, until it is stored at the other (it crosses the other direction, so it
///   must not wait behind the backlog);
/// - `link_utilisation`: UDP payload bytes delivered in the backlog's direction over the
///   same time, over the rate (what the controller achieved; the rest of goodput's gap
///   is framing and QUIC overhead).
///
/// The backlog is sized to about 45 s at the link rate (5 s with `--quick`). The last
/// line sums up: the worst goodput per profile, the worst first new entry.
pub(crate) async fn catch_up_profiles(
    quick: bool,
    only: Option<&str>,
    mut lines: Vec<serde_json::Value>,
) -> crate::Lines {
    let profiles: Vec<&str> = match only {
        Some(name) => vec![name],
        None if quick => vec!["satcom", "tactical"],
        None => vec!["satcom", "tactical", "hf"],
    };
    let seconds = if quick { 5 } else { 45 };
    let mut summary = json!({ "scenario": "catch-up", "summary": true, "quick": quick });
    for line in &lines {
        if let (Some("lan"), Some(s)) = (line["profile"].as_str(), line["catchup_s"].as_f64()) {
            summary["catchup_s_lan"] = json!(s);
        }
    }
    let mut worst_first = 0.0f64;
    for name in &profiles {
        let profile = Profile::named(name).map_err(|e| e.to_string())?;
        let mut worst = f64::INFINITY;
        for dir in ["e2c", "c2e"] {
            let bps = rate(&profile, dir)?;
            let n = (seconds * bps / 8 / WIRE_PER_ENTRY).max(20) as usize;
            let line = catch_up_one(&profile, dir, n, quick).await?;
            worst = worst.min(line["goodput_ratio"].as_f64().unwrap_or(0.0));
            worst_first = worst_first.max(line["first_new_entry_ms"].as_f64().unwrap_or(0.0));
            lines.push(line);
        }
        summary[format!("goodput_ratio_{name}")] = json!(worst);
    }
    summary["first_new_entry_ms_max"] = json!(worst_first);
    lines.push(summary);
    Ok(lines)
}

async fn catch_up_one(
    profile: &Profile,
    dir: &str,
    n: usize,
    quick: bool,
) -> Result<serde_json::Value, String> {
    let name = &profile.name;
    let bps = rate(profile, dir)?;
    let pair = Pair::start_reconnecting(profile.clone()).await?;
    let bulk = topic(BULK);
    let (edge, core) = (pair.edge().store.clone(), pair.core().store.clone());
    // Each side hears where the other stands (`Have`) before the outage, and the edge
    // holds the core's session ticket.
    one_across(&edge, &core, &bulk, 1, PATIENCE).await?;
    one_across(&core, &edge, &bulk, 2, PATIENCE).await?;
    // The link goes down, for longer than the idle timeout: the connection ends.
    pair.relay.down();
    let mut status = pair.edge().link("hq").watch();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| !s.connected))
        .await
        .map_err(|_| "the edge never saw its link down")?
        .map_err(|e| e.to_string())?;
    eprintln!("catch-up {name} {dir}: {n} entries of {PAYLOAD} bytes while the link is down");
    let (origin, target) = match dir {
        "e2c" => (edge, core),
        _ => (core, edge),
    };
    fill(&origin, &bulk, n, 5).await?;

    let before = pair.relay.counters();
    let started = Instant::now();
    pair.relay.up();
    let first_new = async {
        pair.connected().await?;
        let handshake = started.elapsed();
        let first = one_across(&target, &origin, &bulk, n as u64 + 3, PATIENCE).await?;
        Ok::<_, String>((handshake, first))
    };
    let (first_new, arrived) = tokio::join!(
        first_new,
        arrivals(&target, &bulk, 2, n as u64 + 2, PATIENCE)
    );
    let (handshake, first_new) = first_new?;
    let (first, last) = arrived?;
    let after = pair.relay.counters();
    let catchup = last - started;
    let bulk_s = (last - first).as_secs_f64().max(1e-3);
    let goodput = (n * PAYLOAD * 8) as f64 / bulk_s / bps as f64;
    let (lane_before, lane_after) = match dir {
        "e2c" => (before.e2c, after.e2c),
        _ => (before.c2e, after.c2e),
    };
    let delivered = lane_after.delivered.bytes - lane_before.delivered.bytes;
    let utilisation = (delivered * 8) as f64 / bulk_s / bps as f64;
    let lost = lane_after.dropped_loss.packets - lane_before.dropped_loss.packets;
    let tail = lane_after.dropped_queue.packets - lane_before.dropped_queue.packets;
    let sent = lane_after.offered.packets - lane_before.offered.packets;
    eprintln!(
        "catch-up {name} {dir}: {:.1} s, goodput {goodput:.2} of the link, first new entry {:.0} ms \
         ({sent} packets, {lost} lost, {tail} tail-dropped)",
        catchup.as_secs_f64(),
        first_new.as_secs_f64() * 1e3,
    );
    Ok(json!({
        "scenario": "catch-up",
        "profile": name,
        "dir": dir,
        "entries": n,
        "payload_bytes": PAYLOAD,
        "rate_bps": bps,
        "round_trip_ms": profile.round_trip().as_millis() as u64,
        "catchup_s": round2(catchup.as_secs_f64()),
        "handshake_s": round2(handshake.as_secs_f64()),
        "bulk_s": round2(bulk_s),
        "goodput_ratio": round2(goodput),
        "link_utilisation": round2(utilisation),
        "first_new_entry_ms": round2(first_new.as_secs_f64() * 1e3),
        "packets": sent,
        "packets_lost": lost,
        "packets_tail_dropped": tail,
        "wire_bytes": after.wire_bytes() - before.wire_bytes(),
        "quick": quick,
    }))
}

/// `idle`: a linked pair with nothing to send, on `lan` and `tactical` at once: UDP
/// payload bytes per minute both ways at the emulator (keep-alives and their
/// acknowledgements, and anything else the link sends unasked), over 3 minutes (20 s
/// with `--quick`), after 5 s for the link to settle. The last line is the worst profile.
pub(crate) async fn idle(quick: bool) -> crate::Lines {
    let seconds = if quick { 20 } else { 180 };
    let run = |name: &'static str| async move {
        let profile = Profile::named(name).map_err(|e| e.to_string())?;
        let pair = Pair::start(profile).await?;
        // Holding durations, not waiting for events: the link settles, then idles.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = pair.relay.counters();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let after = pair.relay.counters();
        let bytes = after.wire_bytes() - before.wire_bytes();
        let packets = (after.e2c.delivered.packets + after.c2e.delivered.packets)
            - (before.e2c.delivered.packets + before.c2e.delivered.packets);
        let per_min = |x: u64| round2(x as f64 * 60.0 / seconds as f64);
        eprintln!("idle {name}: {} bytes/min", per_min(bytes));
        Ok::<_, String>(json!({
            "scenario": "idle",
            "profile": name,
            "seconds": seconds,
            "idle_bytes_per_min": per_min(bytes),
            "idle_packets_per_min": per_min(packets),
            "e2c_bytes": after.e2c.delivered.bytes - before.e2c.delivered.bytes,
            "c2e_bytes": after.c2e.delivered.bytes - before.c2e.delivered.bytes,
            "quick": quick,
        }))
    };
    eprintln!("idle: {seconds} s on lan and tactical");
    let (lan, tactical) = tokio::join!(run("lan"), run("tactical"));
    let lines = vec![lan?, tactical?];
    let worst = lines
        .iter()
        .filter_map(|l| l["idle_bytes_per_min"].as_f64())
        .fold(0.0, f64::max);
    let mut all = lines;
    all.push(json!({
        "scenario": "idle",
        "summary": true,
        "seconds": seconds,
        "idle_bytes_per_min": worst,
        "quick": quick,
    }));
    Ok(all)
}

/// `first-entry`: on `tactical`, the link goes down for 60 s while the edge appends
/// 10,000 entries (1,000 and 10 s with `--quick`); when it comes back up, the core
/// appends one entry at once. `first_new_entry_ms`: until that entry is stored at the
/// edge (issue 4: within 3 round trips plus the handshake). `first_new_entry_same_side_ms`:
/// the edge also appends one entry to another topic when the link comes up, until it is
/// stored at the core: it shares the direction (and the entry stream) with the backlog;
/// `null` if it did not arrive within 120 s (15 s with `--quick`). `reconnected`: whether
/// the edge dialed a new connection (the outage outlived QUIC's idle timeout); then
/// `reconnect_ms` is from the link coming up to the new session being up (the
/// handshake, and whatever the redial's backoff added).
pub(crate) async fn first_entry(quick: bool) -> crate::Lines {
    let (n, outage) = if quick {
        (1_000, Duration::from_secs(10))
    } else {
        (10_000, Duration::from_secs(60))
    };
    let same_side_patience = Duration::from_secs(if quick { 15 } else { 120 });
    let profile = Profile::named("tactical").map_err(|e| e.to_string())?;
    let round_trip = profile.round_trip();
    let pair = Pair::start(profile).await?;
    let (bulk, urgent) = (topic(BULK), topic(URGENT));
    let (edge, core) = (pair.edge().store.clone(), pair.core().store.clone());
    // Each side hears where the other stands (`Have`) before the outage, on both topics.
    for t in [&bulk, &urgent] {
        one_across(&edge, &core, t, 1, PATIENCE).await?;
        one_across(&core, &edge, t, 2, PATIENCE).await?;
    }
    let link = pair.edge().link("hq");
    let since = link.status().since;

    eprintln!("first-entry: tactical down for {outage:?}, {n} entries appended at the edge");
    pair.relay.down();
    let down = Instant::now();
    fill(&edge, &bulk, n, 9).await?;
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    pair.relay.up();
    let up = std::time::SystemTime::now();
    let before = pair.relay.counters();
    let other_side = one_across(&core, &edge, &bulk, n as u64 + 3, PATIENCE);
    let same_side = async {
        match one_across(&edge, &core, &urgent, 3, same_side_patience).await {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("first-entry: same side: {e}");
                None
            }
        }
    };
    let (other_side, same_side) = tokio::join!(other_side, same_side);
    let other_side = other_side?;
    let backlog_in = held(&core, &bulk) - 3;
    let after = pair.relay.counters();
    let status = link.status();
    let reconnected = status.since != since;
    // When the new session came up, if there was one: the handshake's share.
    let reconnect = reconnected.then(|| status.since.duration_since(up).unwrap_or_default());
    let ms = |d: Duration| round2(d.as_secs_f64() * 1e3);
    eprintln!(
        "first-entry: {:.0} ms ({:.1} round trips), same side {}, reconnected: {reconnected}, \
         {backlog_in} of {n} backlog entries in meanwhile",
        ms(other_side),
        other_side.as_secs_f64() / round_trip.as_secs_f64(),
        same_side.map_or("none".to_owned(), |d| format!("{:.0} ms", ms(d))),
    );
    Ok(vec![json!({
        "scenario": "first-entry",
        "profile": "tactical",
        "backlog_entries": n,
        "outage_s": outage.as_secs(),
        "round_trip_ms": round_trip.as_millis() as u64,
        "first_new_entry_ms": ms(other_side),
        "first_new_entry_rtts": round2(other_side.as_secs_f64() / round_trip.as_secs_f64()),
        "first_new_entry_same_side_ms": same_side.map(ms),
        "reconnected": reconnected,
        "reconnect_ms": reconnect.map(ms),
        "backlog_delivered": backlog_in,
        "wire_bytes_after_up": after.wire_bytes() - before.wire_bytes(),
        "quick": quick,
    })])
}
