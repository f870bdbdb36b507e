//! `wire`'s report cases: what a small field report costs on the link, from a seeded
//! generator of plausible ones.
//!
//! - Position reports: 64 bytes, binary (unit, time, latitude and longitude as a slow
//!   random walk, altitude, speed, heading, fix quality, battery, the rest reserved).
//! - Status reports: ~120 bytes of JSON (unit, time, state, battery, fuel, temperature,
//!   link quality, a short note).
//! - Quiet: one report a second on an otherwise idle link; busy: 100 a second. A core
//!   and an edge over the emulator (`lan`: no limit, so only the bytes are measured),
//!   the edge appending; everything the emulator delivers both ways is counted (QUIC
//!   headers, acknowledgements, Tether's own frames), from the first report until the
//!   last is readable at the core and its acknowledgement has settled, over the count.
//!   Quiet reports are also timed, append to readable at the core.

use std::time::{Duration, Instant};

use protocol::entry::{Append, Scope};
use serde_json::json;
use tests::Rng;
use tests::cluster::{Cluster, topic, wait_for_count};
use tests::emulator::{Link, Profile};

/// How long anything may take before the scenario gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// Units in the generator's fleet.
const UNITS: u64 = 12;

/// A seeded generator of plausible reports.
struct Reports {
    rng: Rng,
    /// Per unit: latitude and longitude in 1e-7 degrees.
    at: Vec<(i32, i32)>,
    t0: u64,
}

impl Reports {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let at = (0..UNITS)
            .map(|_| {
                let lat = 340_000_000 + rng.range(0, 2_000_000) as i32;
                let lon = 690_000_000 + rng.range(0, 2_000_000) as i32;
                (lat, lon)
            })
            .collect();
        Reports {
            rng,
            at,
            t0: 1_796_000_000_000,
        }
    }

    /// The `i`th position report: 64 bytes.
    fn position(&mut self, i: u64) -> (String, Vec<u8>) {
        let unit = i % UNITS;
        let (lat, lon) = &mut self.at[unit as usize];
        *lat += self.rng.range(0, 400) as i32 - 200;
        *lon += self.rng.range(0, 400) as i32 - 200;
        let mut r = Vec::with_capacity(64);
        r.extend_from_slice(&(unit as u16).to_le_bytes());
        r.extend_from_slice(&(self.t0 + i * 1000).to_le_bytes());
        r.extend_from_slice(&lat.to_le_bytes());
        r.extend_from_slice(&lon.to_le_bytes());
        r.extend_from_slice(&(1200 + self.rng.range(0, 40) as i16).to_le_bytes());
        r.extend_from_slice(&(self.rng.range(0, 900) as u16).to_le_bytes());
        r.extend_from_slice(&(self.rng.range(0, 3600) as u16).to_le_bytes());
        r.push(3); // fix: 3D
        r.push(80 - (i / 100 % 60) as u8); // battery %
        r.resize(64, 0);
        (format!("unit-{unit}"), r)
    }

    /// The `i`th status report: ~120 bytes of JSON.
    fn status(&mut self, i: u64) -> (String, Vec<u8>) {
        const STATES: [&str; 4] = ["moving", "halted", "observing", "resupply"];
        const NOTES: [&str; 4] = ["all well", "low fuel", "radio fade", "holding"];
        let unit = i % UNITS;
        let state = STATES[self.rng.range(0, 3) as usize];
        let note = NOTES[self.rng.range(0, 3) as usize];
        let doc = json!({
            "unit": format!("unit-{unit}"),
            "ts": self.t0 + i * 1000,
            "state": state,
            "battery": 80 - (i / 100 % 60),
            "fuel": self.rng.range(10, 99),
            "temp_c": 15 + self.rng.range(0, 10),
            "link": self.rng.range(1, 5),
            "note": note,
        });
        (format!("unit-{unit}"), doc.to_string().into_bytes())
    }
}

/// One case: `n` reports of `kind` (`position` or `status`), `every` apart. Returns the
/// wire bytes per report, the report's own mean size, and (quiet) the p99 readable time.
async fn case(kind: &str, n: u64, every: Duration) -> Result<(f64, f64, f64), String> {
    let mut cluster = Cluster::start_allowing(&[], &["alpha"], &[("reports", Scope::All)])
        .await
        .map_err(|e| e.to_string())?;
    let relay = Link::start(cluster.core_addr(), Profile::lan()).map_err(|e| e.to_string())?;
    let edge = cluster
        .start_edge_via("alpha", relay.addr())
        .await
        .map_err(|e| e.to_string())?;
    cluster.add(edge);
    let (core, alpha) = (
        cluster.core.store.clone(),
        cluster.edge("alpha").store.clone(),
    );
    let t = topic("reports");
    let mut up = cluster.edge("alpha").link("hq").watch();
    tokio::time::timeout(PATIENCE, up.wait_for(|s| s.connected))
        .await
        .map_err(|_| "the link never came up")?
        .map_err(|e| e.to_string())?;
    // One report first: routes and acknowledgements settle, the handshake is not counted.
    alpha
        .append(&t, Append::new(vec![0; 8]))
        .await
        .map_err(|e| e.to_string())?;
    wait_for_count(&core, &t, 1, PATIENCE).await?;
    settle(&cluster).await;
    let before = relay.counters();
    let mut reports = Reports::new(31);
    let mut tick = tokio::time::interval(every);
    let mut sizes = 0usize;
    let mut latencies = Vec::new();
    for i in 0..n {
        tick.tick().await;
        let (unit, report) = match kind {
            "position" => reports.position(i),
            _ => reports.status(i),
        };
        sizes += report.len();
        let sent = Instant::now();
        alpha
            .append(&t, Append::new(report).key(unit))
            .await
            .map_err(|e| e.to_string())?;
        if every >= Duration::from_millis(500) {
            // Quiet: each is readable at the core before the next (a second later).
            wait_for_count(&core, &t, i + 2, PATIENCE).await?;
            latencies.push(sent.elapsed());
        }
    }
    wait_for_count(&core, &t, n + 1, PATIENCE).await?;
    settle(&cluster).await;
    let after = relay.counters();
    let bytes = (after.wire_bytes() - before.wire_bytes()) as f64 / n as f64;
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Ok((bytes, sizes as f64 / n as f64, p99))
}

/// Waits until the edge's sender has nothing left to send or have acknowledged.
async fn settle(cluster: &Cluster) {
    let mut watch = cluster.edge("alpha").link("hq").watch();
    let done = |s: &protocol::link::LinkStatus| {
        s.topics
            .iter()
            .any(|t| t.out && t.backlog == 0 && t.up_to_date.is_some())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| done(s))).await;
}

/// The report cases' keys, added to `line`.
pub(crate) async fn report_cases(quick: bool, line: &mut serde_json::Value) -> Result<(), String> {
    let (quiet_n, busy_s) = if quick { (10, 3) } else { (60, 20) };
    for kind in ["position", "status"] {
        let (quiet, size, p99) = case(kind, quiet_n, Duration::from_secs(1)).await?;
        let (busy, _, _) = case(kind, busy_s * 100, Duration::from_millis(10)).await?;
        eprintln!(
            "wire {kind} reports ({size:.0} bytes): quiet {quiet:.1} bytes per report on the \
             wire (p99 readable {p99:.0} ms), busy {busy:.1}"
        );
        line[format!("wire_bytes_per_entry_{kind}")] = json!(crate::round2(quiet));
        line[format!("wire_bytes_per_entry_{kind}_busy")] = json!(crate::round2(busy));
        line[format!("{kind}_report_bytes")] = json!(crate::round2(size));
        line[format!("{kind}_p99_readable_ms")] = json!(crate::round2(p99));
    }
    line["reports_quiet"] = json!(quiet_n);
    line["reports_busy_per_s"] = json!(100);
    Ok(())
}
