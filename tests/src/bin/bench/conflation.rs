//! `conflation`: what a latest-value topic sends after an outage.
//!
//! - A core and an edge on the `tactical` profile; `positions` (scope `all`) is
//!   latest-value in the core's config (`[[topics]] latest_value`), which the edge learns
//!   in the handshake.
//! - The link goes down; for 10 minutes (`--quick`: 1) the edge updates 100 units'
//!   positions every second (64-byte binary reports, random, keyed by unit): 60,000
//!   entries (6,000). Then the link comes back.
//! - Measured from then until the core holds the latest position of every unit:
//!   `wire_bytes` (everything the emulator delivered to the core: the reconnect's
//!   handshake, QUIC and Tether framing included) and `entry_stream_bytes` (the edge's
//!   compressed entry stream, as its link counts it), each against 100 entries' bytes
//!   (`one_entry_bytes` as the store counts an entry: `bytes_ratio_to_one_per_key`,
//!   `entry_stream_ratio_to_one_per_key`); `latest_readable_s`, whose target is two
//!   round trips plus the time the entry stream's bytes take at the link's rate
//!   (`latest_readable_target_s`); `reconnect_s`, of that, until the new session was up
//!   (the outage outlives the idle timeout).
//! - `entries_per_key`: what the core stored of the updates, per unit (1: the latest).

use std::time::{Duration, Instant};

use protocol::entry::{Append, NodeName, Scope};
use protocol::link::SessionSettings;
use protocol::log::Txn;
use serde_json::json;
use tests::Rng;
use tests::cluster::{Cluster, topic, wait_for_count};
use tests::emulator::Profile;

use crate::round2;

/// Units reporting their position.
const UNITS: usize = 100;

/// A binary position report.
const REPORT: usize = 64;

/// How long anything may take before the scenario gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// One line.
pub(crate) async fn conflation(quick: bool) -> crate::Lines {
    let outage = Duration::from_secs(if quick { 60 } else { 600 });
    let profile = Profile::named("tactical").map_err(|e| e.to_string())?;
    let rate = profile.e2c.rate_bps.map_or(1, |r| r.get());
    let positions = topic("positions");
    let at_core = SessionSettings {
        latest_value: vec![positions.clone()],
        ..SessionSettings::default()
    };
    let topics = [("positions", Scope::All)];
    let (cluster, relay) = Cluster::start_pair(
        "alpha",
        &topics,
        at_core,
        SessionSettings::default(),
        Some(profile.clone()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let relay = relay.ok_or("no link emulator")?;
    let link = cluster.edge("alpha").link("hq");
    let mut status = link.watch();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.connected))
        .await
        .map_err(|_| "the link never came up")?
        .map_err(|e| e.to_string())?;
    let (core, edge) = (&cluster.core.store, &cluster.edge("alpha").store);
    // A first report crosses: routes and acknowledgements are settled.
    edge.append(&positions, Append::new(vec![0; REPORT]).key("unit-0"))
        .await
        .map_err(|e| e.to_string())?;
    wait_for_count(core, &positions, 1, PATIENCE).await?;

    eprintln!("conflation: tactical down for {outage:?}, {UNITS} units reporting every second");
    relay.down();
    let started = Instant::now();
    let mut rng = Rng::new(21);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut updates = 0u64;
    let mut one_entry = 0;
    while started.elapsed() < outage {
        tick.tick().await;
        let mut txn = Txn::new();
        for unit in 0..UNITS {
            let mut report = vec![0; REPORT];
            rng.fill(&mut report);
            let append = Append::new(report).key(format!("unit-{unit}"));
            one_entry = append.size();
            txn.append(&positions, append);
        }
        edge.commit(txn).await.map_err(|e| e.to_string())?;
        updates += UNITS as u64;
    }
    let last = 1 + updates;
    let (before, stream_before) = (relay.counters(), link.status().bytes_out);
    let (up, up_at) = (Instant::now(), std::time::SystemTime::now());
    relay.up();
    let alpha = NodeName::new("alpha").map_err(|e| e.to_string())?;
    let mut changes = core.changes();
    tokio::time::timeout(PATIENCE, async {
        loop {
            changes.borrow_and_update();
            if core
                .vector(&positions)
                .map_err(|e| e.to_string())?
                .get(&alpha)
                .0
                >= last
            {
                return Ok::<_, String>(());
            }
            changes.changed().await.map_err(|e| e.to_string())?;
        }
    })
    .await
    .map_err(|_| "the core never held the latest positions")??;
    let latest_all = up.elapsed();
    // When the session that carried them came up: a new one if the outage outlived the
    // idle timeout.
    let session_up = link.status().since;
    let reconnect = session_up.duration_since(up_at).ok();
    let after = relay.counters();
    let stream = link.status().bytes_out - stream_before;
    let wire_e2c = after.e2c.delivered.bytes - before.e2c.delivered.bytes;
    let at_core = core.topic(&positions).map_or(0, |t| t.next.0) - 1;
    let per_key = (UNITS as u64 * one_entry) as f64;
    let rtt = profile.round_trip().as_secs_f64();
    let target_s = 2.0 * rtt + (stream * 8) as f64 / rate as f64;
    eprintln!(
        "conflation: {updates} updates, {at_core} crossed; entry stream {stream} bytes \
         ({:.2} x one entry per unit), {wire_e2c} bytes on the wire e2c ({:.2} x); the \
         latest of all in {:.1} s (target {target_s:.1} s; the session was up after {})",
        stream as f64 / per_key,
        wire_e2c as f64 / per_key,
        latest_all.as_secs_f64(),
        reconnect.map_or("none: the same one".to_owned(), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
    );
    Ok(vec![json!({
        "scenario": "conflation",
        "profile": profile.name,
        "rate_bps": rate,
        "round_trip_ms": profile.round_trip().as_millis() as u64,
        "outage_s": outage.as_secs(),
        "units": UNITS,
        "report_bytes": REPORT,
        "updates": updates,
        "entries_per_key": round2(at_core as f64 / UNITS as f64),
        "one_entry_bytes": one_entry,
        "wire_bytes": wire_e2c,
        "bytes_ratio_to_one_per_key": round2(wire_e2c as f64 / per_key),
        "entry_stream_bytes": stream,
        "entry_stream_ratio_to_one_per_key": round2(stream as f64 / per_key),
        "wire_bytes_c2e": after.c2e.delivered.bytes - before.c2e.delivered.bytes,
        "latest_readable_s": round2(latest_all.as_secs_f64()),
        "latest_readable_target_s": round2(target_s),
        "reconnect_s": reconnect.map(|d| round2(d.as_secs_f64())),
        "quick": quick,
    })])
}
