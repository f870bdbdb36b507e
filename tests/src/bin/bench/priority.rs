//! `priority`: do small entries keep their latency while a mirror fills the link?
//!
//! - A core and an edge holding two `all` topics, `down` (appended at the core) and `up`
//!   (appended at the edge), and a mirror; the edge dials through the link emulator with
//!   a custom profile, [`profile`]: 512 kbit/s each way, 300 ms one way (a 600 ms round
//!   trip, satcom-like), no loss, the usual queue of one second at the rate.
//! - Probes: 200-byte entries, one a second each way (60 each way; `--quick`: 10 at 4 a
//!   second), timed from the start of the append at the origin to the moment the entry
//!   is readable at the other node, as `latency` times them.
//! - First with the link idle; then while a mirror of random data runs (8 MB, about
//!   twice the measuring time at the link's rate, stopped once measured), after a few
//!   seconds for it to fill the link. Chunks go core to edge, so `down` (the headline
//!   keys) shares their direction; `up` (`_e2c` keys) shares the requests' and ACKs'.
//!
//! The `tactical` case ([`tactical`], `--case tactical`; both run without a case): does
//! an urgent topic's entry wait behind a backlog of normal entries on the same side?
//!
//! - A core and an edge on the `tactical` profile (64 kbit/s, 1.2 s round trip, 5 %
//!   loss), holding `backlog` and `alerts` (both `all`); `alerts` is urgent in the
//!   core's config (`[[topics]] priority`), which the edge learns in the handshake.
//! - The edge appends 10,000 random 256-byte entries to `backlog` (2.8 MB: ~6 minutes of
//!   the link), and once they stream, 20 entries to `alerts`, one every 2 s (`--quick`:
//!   2,000 and 5): each timed from its append to the moment the core can read it.
//! - `backlog_goodput_ratio`: `backlog` payload bits the core stored per second over
//!   the probes' span (20 × 2 s from the first urgent append), over the link's rate (as
//!   `catch-up` computes goodput).
//! - Then the same with `alerts` of the normal class (`urgent_as_normal_*`): what an
//!   urgent entry waited before classes.

use std::path::Path;
use std::time::{Duration, Instant};

use protocol::entry::{Append, Offset, Priority, Scope, TopicName};
use protocol::link::{Priorities, SessionSettings};
use protocol::log::Store;
use protocol::mirror::MirrorState;
use serde_json::json;
use tests::cluster::{Cluster, topic, wait_for_count};
use tests::emulator::{OneWay, Profile};

use crate::mirror::{edge_mirror, linked_pair, random, settle};
use crate::{impaired, round2};

/// The probe entries' payload.
const PROBE: usize = 200;

/// Appended at the core: the mirror's direction.
const DOWN: &str = "down";

/// Appended at the edge.
const UP: &str = "up";

/// How long a probe may take to arrive before the scenario gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// The link: 512 kbit/s each way, 300 ms one way, no loss.
fn profile() -> Profile {
    Profile::symmetric(
        "512k",
        OneWay::new(512_000, Duration::from_millis(300), 0.0),
    )
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Probes each way, per phase.
    samples: usize,
    /// Between two probes.
    every: Duration,
    /// From the mirror's first chunk to the first probe: its window grows until it
    /// fills the link's queue.
    warmup: Duration,
    /// Bytes in the mirrored volume: enough to keep the link busy well past the probes.
    data: usize,
}

const FULL: Sizes = Sizes {
    samples: 60,
    every: Duration::from_secs(1),
    warmup: Duration::from_secs(5),
    // About 125 s at 512 kbit/s, for 65 s of measuring.
    data: 8_000_000,
};

const QUICK: Sizes = Sizes {
    samples: 10,
    every: Duration::from_millis(250),
    warmup: Duration::from_secs(2),
    data: 1_000_000,
};

/// `priority`: the mirror case's line and the `tactical` case's, or the `case` named.
pub(crate) async fn priority(quick: bool, case: Option<&str>) -> crate::Lines {
    match case {
        None => {
            let mut lines = mirror_case(quick).await?;
            lines.push(tactical(quick).await?);
            Ok(lines)
        }
        Some("mirror") => mirror_case(quick).await,
        Some("tactical") => Ok(vec![tactical(quick).await?]),
        Some(other) => Err(format!(
            "priority has no case {other:?} (cases: mirror, tactical)"
        )),
    }
}

/// The mirror case: one line with the idle and the busy latencies, both directions.
async fn mirror_case(quick: bool) -> crate::Lines {
    let Sizes {
        samples,
        every,
        warmup,
        data,
    } = if quick { QUICK } else { FULL };
    let profile = profile();
    let (cluster, relay) =
        linked_pair(profile.clone(), &[(DOWN, Scope::All), (UP, Scope::All)]).await?;
    let volume = cluster.volume();
    tokio::task::block_in_place(|| fill(&volume, data))?;
    settle(&cluster).await?;
    let (core, edge) = (
        cluster.core.store.clone(),
        cluster.edge("alpha").store.clone(),
    );

    // One probe each way first: routes and cursors settle before anything is timed.
    phase(&core, &edge, 1, every).await?;
    let rate = profile.c2e.rate_bps.map_or(0, |r| r.get());
    eprintln!(
        "priority: {samples} probes of {PROBE} bytes each way, every {every:?}, link idle \
         ({}: {} kbit/s, {} ms round trip)",
        profile.name,
        rate / 1000,
        profile.round_trip().as_millis()
    );
    let (idle_down, idle_up) = phase(&core, &edge, samples, every).await?;
    eprintln!(
        "priority: idle p99 {:.0} ms down, {:.0} ms up",
        pct(&idle_down, 0.99),
        pct(&idle_up, 0.99)
    );

    let mirror = edge_mirror(&cluster)?;
    mirror
        .start()
        .map_err(|e| format!("cannot start the mirror: {e}"))?;
    let mut watch = mirror.watch();
    tokio::time::timeout(PATIENCE, watch.wait_for(|s| s.bytes_done > 0))
        .await
        .map_err(|_| format!("the mirror never started: {:?}", mirror.status()))?
        .map_err(|e| e.to_string())?;
    // Holding a duration: the mirror's window grows until it fills the link's queue.
    tokio::time::sleep(warmup).await;
    eprintln!("priority: the same while a mirror of {data} bytes runs");
    let (before, mirrored_before, started) =
        (relay.counters(), mirror.status().bytes_done, Instant::now());
    let (busy_down, busy_up) = phase(&core, &edge, samples, every).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (after, status) = (relay.counters(), mirror.status());
    mirror
        .stop()
        .map_err(|e| format!("cannot stop the mirror: {e}"))?;
    // The mirror must have been moving data the whole time, or the figure means nothing.
    let busy = status.state == MirrorState::Running && status.bytes_done < status.bytes_todo;
    let mirrored = status.bytes_done - mirrored_before;
    let c2e = after.c2e.delivered.bytes - before.c2e.delivered.bytes;
    let tail_drops = after.c2e.dropped_queue.packets - before.c2e.dropped_queue.packets;
    let utilisation = (c2e * 8) as f64 / seconds / rate.max(1) as f64;

    let (p99_idle, p99_busy) = (pct(&idle_down, 0.99), pct(&busy_down, 0.99));
    let increase = p99_busy - p99_idle;
    eprintln!(
        "priority: during the mirror p99 {p99_busy:.0} ms down (+{increase:.0} ms, target \
         250: {}), {:.0} ms up; link down {:.2} used, mirror {:.0} kbit/s, {tail_drops} \
         datagrams dropped at the link's full queue{}",
        if increase <= 250.0 { "met" } else { "MISSED" },
        pct(&busy_up, 0.99),
        utilisation,
        mirrored as f64 * 8.0 / seconds / 1e3,
        if busy { "" } else { " (NOT busy all along)" },
    );
    Ok(vec![json!({
        "scenario": "priority",
        "profile": profile.name,
        "rate_bps": rate,
        "one_way_delay_ms": profile.c2e.delay.as_millis() as u64,
        "round_trip_ms": profile.round_trip().as_millis() as u64,
        "loss": profile.c2e.loss,
        "queue_bytes": profile.c2e.queue_bytes,
        "dir": "c2e",
        "samples": samples,
        "every_ms": every.as_millis() as u64,
        "payload_bytes": PROBE,
        "p50_ms_idle": round2(pct(&idle_down, 0.5)),
        "p99_ms_idle": round2(p99_idle),
        "max_ms_idle": round2(pct(&idle_down, 1.0)),
        "p50_ms_during_mirror": round2(pct(&busy_down, 0.5)),
        "p99_ms_during_mirror": round2(p99_busy),
        "max_ms_during_mirror": round2(pct(&busy_down, 1.0)),
        "increase_ms": round2(increase),
        "p50_increase_ms": round2(pct(&busy_down, 0.5) - pct(&idle_down, 0.5)),
        "target_increase_ms": 250,
        "within_target": increase <= 250.0,
        "p50_ms_idle_e2c": round2(pct(&idle_up, 0.5)),
        "p99_ms_idle_e2c": round2(pct(&idle_up, 0.99)),
        "p50_ms_during_mirror_e2c": round2(pct(&busy_up, 0.5)),
        "p99_ms_during_mirror_e2c": round2(pct(&busy_up, 0.99)),
        "increase_ms_e2c": round2(pct(&busy_up, 0.99) - pct(&idle_up, 0.99)),
        "mirror_bytes": data,
        "mirror_bytes_during": mirrored,
        "mirror_busy_throughout": busy,
        "link_utilisation_c2e": round2(utilisation),
        "queue_drops_c2e": tail_drops,
        "quick": quick,
    })])
}

/// Writes `data` random bytes into `volume`, in four files.
fn fill(volume: &Path, data: usize) -> Result<(), String> {
    let dir = volume.join("survey");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for i in 0..4 {
        let path = dir.join(format!("strip-{i}.raw"));
        std::fs::write(&path, random(90 + i, data / 4))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Probes both ways at once: `n` each, one every `every`; the latencies down (core to
/// edge) and up.
async fn phase(
    core: &Store,
    edge: &Store,
    n: usize,
    every: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let (down, up) = (topic(DOWN), topic(UP));
    let (down, up) = tokio::join!(
        probes(core, edge, &down, n, every),
        probes(edge, core, &up, n, every),
    );
    Ok((down?, up?))
}

/// Appends `n` probes to `t` at `origin`, one every `every`, each carrying its index,
/// and returns, per probe, the time from the start of its append to when `target` could
/// read it.
async fn probes(
    origin: &Store,
    target: &Store,
    t: &TopicName,
    n: usize,
    every: Duration,
) -> Result<Vec<Duration>, String> {
    let from = target.topic(t).map_or(Offset(0), |i| i.next);
    let send = async {
        let mut sent = Vec::with_capacity(n);
        let mut tick = tokio::time::interval(every);
        for i in 0..n {
            tick.tick().await;
            let mut payload = random(i as u64 + 1, PROBE);
            payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
            sent.push(Instant::now());
            origin
                .append(t, Append::new(payload))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(sent)
    };
    let within = every * n as u32 + PATIENCE;
    let (sent, arrived) = tokio::join!(send, arrivals(target, t, from, n, within));
    let (sent, arrived) = (sent?, arrived?);
    Ok(sent
        .iter()
        .zip(&arrived)
        .map(|(s, a)| a.saturating_duration_since(*s))
        .collect())
}

/// When each of the probes `0..n` became readable in `t` at `target`, reading from
/// offset `from` on the store's change signal; fails after `within`.
async fn arrivals(
    target: &Store,
    t: &TopicName,
    from: Offset,
    n: usize,
    within: Duration,
) -> Result<Vec<Instant>, String> {
    let mut changes = target.changes();
    let mut position = from;
    let mut arrived: Vec<Option<Instant>> = vec![None; n];
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + within;
    while count < n {
        changes.borrow_and_update();
        for record in target.read(t, position, 1024).map_err(|e| e.to_string())? {
            let now = Instant::now();
            position = Offset(record.offset.0 + 1);
            let index = record
                .entry
                .payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or("a probe without its index")? as usize;
            if let Some(slot @ None) = arrived.get_mut(index) {
                *slot = Some(now);
                count += 1;
            }
        }
        if count < n {
            tokio::time::timeout_at(deadline, changes.changed())
                .await
                .map_err(|_| format!("{count} of {n} probes of {t} arrived"))?
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(arrived.into_iter().flatten().collect())
}

/// The `p` quantile of `latencies`, in ms (0 for none).
fn pct(latencies: &[Duration], p: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    sorted[((sorted.len() as f64 * p) as usize).min(last)].as_secs_f64() * 1e3
}

/// The `tactical` case (see the module doc): one line.
async fn tactical(quick: bool) -> Result<serde_json::Value, String> {
    let (backlog_n, urgent_n) = if quick { (2_000, 5) } else { (10_000, 20) };
    let every = Duration::from_secs(2);
    let profile = Profile::named("tactical").map_err(|e| e.to_string())?;
    let rate = profile.e2c.rate_bps.map_or(1, |r| r.get());
    eprintln!(
        "priority tactical: {urgent_n} urgent entries, one every {every:?}, behind \
         {backlog_n} normal ones on the same side (edge to core)"
    );
    let classes = run_tactical(&profile, backlog_n, urgent_n, every, true).await?;
    eprintln!(
        "priority tactical: urgent p50 {:.0} ms, p99 {:.0} ms (targets {} and {} ms); \
         backlog goodput {:.2}",
        pct(&classes.latencies, 0.5),
        pct(&classes.latencies, 0.99),
        profile.round_trip().as_millis() + 500,
        2 * profile.round_trip().as_millis() + 500,
        classes.goodput(rate)
    );
    let without = run_tactical(&profile, backlog_n, urgent_n, every, false).await?;
    eprintln!(
        "priority tactical: the same topic of the normal class: p50 {:.0} ms, p99 {:.0} ms",
        pct(&without.latencies, 0.5),
        pct(&without.latencies, 0.99),
    );
    let rtt = profile.round_trip().as_secs_f64() * 1e3;
    let (p50, p99) = (pct(&classes.latencies, 0.5), pct(&classes.latencies, 0.99));
    Ok(json!({
        "scenario": "priority",
        "profile": profile.name,
        "rate_bps": rate,
        "rtt_ms": round2(rtt),
        "loss": profile.e2c.loss,
        "dir": "e2c",
        "backlog_entries": backlog_n,
        "urgent_entries": urgent_n,
        "every_ms": every.as_millis() as u64,
        "urgent_p50_ms": round2(p50),
        "urgent_p99_ms": round2(p99),
        "urgent_max_ms": round2(pct(&classes.latencies, 1.0)),
        "target_p50_ms": round2(rtt + 500.0),
        "target_p99_ms": round2(2.0 * rtt + 500.0),
        "within_target": p50 <= rtt + 500.0 && p99 <= 2.0 * rtt + 500.0,
        "backlog_goodput_ratio": round2(classes.goodput(rate)),
        "urgent_as_normal_p50_ms": round2(pct(&without.latencies, 0.5)),
        "urgent_as_normal_p99_ms": round2(pct(&without.latencies, 0.99)),
        "backlog_goodput_ratio_as_normal": round2(without.goodput(rate)),
        "quick": quick,
    }))
}

/// What one run of the `tactical` case measured.
struct Tactical {
    latencies: Vec<Duration>,
    /// Backlog entries the core stored while the urgent ones crossed, and over how long.
    backlog_stored: u64,
    seconds: f64,
}

impl Tactical {
    fn goodput(&self, rate_bps: u64) -> f64 {
        let bits = (self.backlog_stored * BACKLOG_PAYLOAD as u64 * 8) as f64;
        bits / self.seconds.max(1e-3) / rate_bps.max(1) as f64
    }
}

/// The backlog's payload: random, so that compression gains nothing.
const BACKLOG_PAYLOAD: usize = 256;

/// One run of the `tactical` case: `urgent` of the urgent class (`classes`) or not.
async fn run_tactical(
    profile: &Profile,
    backlog_n: usize,
    urgent_n: usize,
    every: Duration,
    classes: bool,
) -> Result<Tactical, String> {
    let (backlog, alerts) = (topic("backlog"), topic("alerts"));
    let priorities = match classes {
        true => Priorities(vec![(alerts.clone(), Priority::Urgent)]),
        false => Priorities::default(),
    };
    // The class is in the core's config only: the edge learns it in the handshake.
    let at_core = SessionSettings {
        priorities,
        ..SessionSettings::default()
    };
    let topics = [("backlog", Scope::All), ("alerts", Scope::All)];
    let (cluster, relay) = Cluster::start_pair(
        "alpha",
        &topics,
        at_core,
        SessionSettings::default(),
        Some(profile.clone()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut up = cluster.edge("alpha").link("hq").watch();
    tokio::time::timeout(PATIENCE, up.wait_for(|s| s.connected))
        .await
        .map_err(|_| "the link never came up")?
        .map_err(|e| e.to_string())?;
    let (core, edge) = (&cluster.core.store, &cluster.edge("alpha").store);
    // One entry of each topic across first: each side has heard where the other
    // stands (`Have`) before anything is timed.
    for t in [&backlog, &alerts] {
        edge.append(t, Append::new(vec![0; 8]))
            .await
            .map_err(|e| e.to_string())?;
        wait_for_count(core, t, 1, PATIENCE).await?;
    }
    impaired::fill(edge, &backlog, backlog_n, 17).await?;
    // The backlog streams: its window is full once its first entries arrive.
    wait_for_count(core, &backlog, 2, PATIENCE).await?;
    // The backlog's goodput over a fixed window (the probes' own span), so that both
    // runs measure the same stretch of the transfer whenever their probes arrive.
    let stored_before = impaired::held(core, &backlog);
    let window = every * urgent_n as u32;
    let stored_then = async {
        tokio::time::sleep(window).await;
        impaired::held(core, &backlog)
    };
    let (latencies, stored_then) =
        tokio::join!(probes(edge, core, &alerts, urgent_n, every), stored_then);
    let latencies = latencies?;
    let seconds = window.as_secs_f64();
    let backlog_stored = stored_then - stored_before;
    if impaired::held(core, &backlog) > backlog_n as u64 {
        return Err("the backlog drained before the urgent entries were all across".into());
    }
    drop(relay);
    Ok(Tactical {
        latencies,
        backlog_stored,
        seconds,
    })
}
