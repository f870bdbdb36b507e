//! Scenarios of two linked nodes: a core and one edge in this process, each with its
//! store on disk, over real QUIC with mutual TLS on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::entry::{Append, Offset, Scope};
use protocol::log::{Store, Txn};
use serde_json::json;
use tests::Rng;
use tests::cluster::{Cluster, topic, wait_for_count};

use crate::round2;

const PAYLOAD: usize = 256;
const PATIENCE: Duration = Duration::from_secs(300);

async fn cluster() -> Result<Cluster, String> {
    let cluster = Cluster::start(&["alpha"], &[("bench", Scope::All)])
        .await
        .map_err(|e| e.to_string())?;
    let mut up = cluster.edge("alpha").link("hq").watch();
    tokio::time::timeout(PATIENCE, up.wait_for(|s| s.connected))
        .await
        .map_err(|_| "the link never came up")?
        .map_err(|e| e.to_string())?;
    Ok(cluster)
}

/// Appends `n` random 256-byte entries to `bench` at `store`: 8 producers, 100 entries
/// per transaction, so that appending is not what is measured.
async fn fill(store: &Store, n: usize) -> Result<(), String> {
    const PRODUCERS: usize = 8;
    const PER_TXN: usize = 100;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..PRODUCERS {
        let store = store.clone();
        let count = n / PRODUCERS + usize::from(p < n % PRODUCERS);
        tasks.spawn(async move {
            let mut rng = Rng::new(p as u64 + 1);
            let mut left = count;
            while left > 0 {
                let mut txn = Txn::new();
                for _ in 0..left.min(PER_TXN) {
                    let mut payload = vec![0; PAYLOAD];
                    rng.fill(&mut payload);
                    txn.append(&topic("bench"), Append::new(payload));
                }
                left -= left.min(PER_TXN);
                store.commit(txn).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// `replicate`: 100,000 entries appended at one node; time until all are durable and
/// readable at the other. Both directions.
pub(crate) async fn replicate(quick: bool) -> crate::Lines {
    let n = if quick { 20_000 } else { 100_000 };
    let mut lines = Vec::new();
    for dir in ["e2c", "c2e"] {
        let cluster = cluster().await?;
        let (origin, target) = match dir {
            "e2c" => (&cluster.edge("alpha").store, &cluster.core.store),
            _ => (&cluster.core.store, &cluster.edge("alpha").store),
        };
        eprintln!("replicate {dir}: {n} entries of {PAYLOAD} bytes");
        let bench = topic("bench");
        let started = Instant::now();
        let (filled, arrived) = tokio::join!(
            async {
                fill(origin, n).await?;
                Ok::<_, String>(started.elapsed())
            },
            wait_for_count(target, &bench, n as u64, PATIENCE)
        );
        let appended = filled?;
        arrived?;
        let secs = started.elapsed().as_secs_f64();
        let rate = n as f64 / secs;
        eprintln!("replicate {dir}: {rate:.0} entries/s");
        lines.push(json!({
            "scenario": "replicate",
            "dir": dir,
            "entries": n,
            "payload_bytes": PAYLOAD,
            "entries_per_s": rate.round(),
            "mb_per_s": round2(rate * PAYLOAD as f64 / 1e6),
            "append_s": round2(appended.as_secs_f64()),
            "seconds": round2(secs),
            "quick": quick,
        }));
    }
    Ok(lines)
}

/// `latency`: 200 entries/s for 20 s appended at the edge; from the start of each append
/// to the moment it is readable at the core (and, of that, until the append returned:
/// durable at the edge, `edge_durable_*`).
pub(crate) async fn latency(quick: bool) -> crate::Lines {
    let seconds = if quick { 3 } else { 20 };
    let total = 200 * seconds;
    let cluster = cluster().await?;
    let (origin, target) = (
        cluster.edge("alpha").store.clone(),
        cluster.core.store.clone(),
    );
    let started: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let watch = {
        let (started, target) = (started.clone(), target.clone());
        tokio::spawn(async move {
            let mut changes = target.changes();
            let mut position = Offset(0);
            let mut latencies = Vec::with_capacity(total);
            while latencies.len() < total {
                changes.borrow_and_update();
                for record in target
                    .read(&topic("bench"), position, 1024)
                    .map_err(|e| e.to_string())?
                {
                    let arrived = Instant::now();
                    position = Offset(record.offset.0 + 1);
                    let index = u64::from_le_bytes(
                        record.entry.payload[..8]
                            .try_into()
                            .map_err(|_| "short payload")?,
                    ) as usize;
                    let sent = started.lock().map_err(|e| e.to_string())?[index]
                        .ok_or("arrived before it was sent")?;
                    latencies.push(arrived - sent);
                }
                if latencies.len() < total {
                    tokio::time::timeout(PATIENCE, changes.changed())
                        .await
                        .map_err(|_| "entries stopped arriving")?
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok::<_, String>(latencies)
        })
    };
    eprintln!("latency: 200 entries/s for {seconds} s, edge to core");
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut rng = Rng::new(7);
    let mut durable = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let mut payload = vec![0; PAYLOAD];
        rng.fill(&mut payload);
        payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t = Instant::now();
        started.lock().map_err(|e| e.to_string())?[i] = Some(t);
        origin
            .append(&topic("bench"), Append::new(payload))
            .await
            .map_err(|e| e.to_string())?;
        durable.push(t.elapsed());
    }
    durable.sort_unstable();
    let durable_ms = |p: f64| {
        durable[((durable.len() as f64 * p) as usize).min(durable.len() - 1)].as_secs_f64() * 1e3
    };
    let mut latencies = watch.await.map_err(|e| e.to_string())??;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    // The disk's own limit, in the same run, on the same file system as the stores.
    let probe = tests::TempDir::new("bench-latency-sync").map_err(|e| e.to_string())?;
    let syncs = crate::store::sync_latencies(probe.path(), if quick { 200 } else { 1000 })
        .map_err(|e| format!("sync probe: {e}"))?;
    let sync_ms = |p: f64| {
        syncs[((syncs.len() as f64 * p) as usize).min(syncs.len() - 1)].as_secs_f64() * 1e3
    };
    eprintln!(
        "latency: p50 {:.2} ms, p99 {:.2} ms; disk: sync p99 {:.3} ms",
        pct(0.5),
        pct(0.99),
        sync_ms(0.99)
    );
    Ok(vec![json!({
        "scenario": "latency",
        "dir": "e2c",
        "entries": total,
        "rate_per_s": 200,
        "p50_ms": round2(pct(0.5)),
        "p99_ms": round2(pct(0.99)),
        "max_ms": round2(pct(1.0)),
        "edge_durable_p50_ms": round2(durable_ms(0.5)),
        "edge_durable_p99_ms": round2(durable_ms(0.99)),
        "sync_median_ms": (sync_ms(0.5) * 1e3).round() / 1e3,
        "sync_p99_ms": (sync_ms(0.99) * 1e3).round() / 1e3,
        "quick": quick,
    })])
}

/// `catch-up`: 50,000 entries appended at the edge while its link is down; then the link
/// comes back: time until all are at the core, and how long a new entry from the core
/// takes to reach the edge meanwhile (it must not wait behind the backlog).
pub(crate) async fn catch_up(quick: bool) -> crate::Lines {
    let n = if quick { 10_000 } else { 50_000 };
    let mut cluster = cluster().await?;
    cluster.edge("alpha").cut();
    eprintln!("catch-up: {n} entries appended at the edge while the link is down");
    fill(&cluster.edge("alpha").store, n).await?;

    let started = Instant::now();
    cluster
        .restart_edge("alpha")
        .await
        .map_err(|e| e.to_string())?;
    let (hq, alpha) = (
        cluster.core.store.clone(),
        cluster.edge("alpha").store.clone(),
    );
    let first_new = async {
        // As soon as the link is back, the core appends one entry for the edge.
        let mut up = cluster.edge("alpha").link("hq").watch();
        tokio::time::timeout(PATIENCE, up.wait_for(|s| s.connected))
            .await
            .map_err(|_| "no link")?
            .map_err(|e| e.to_string())?;
        let sent = Instant::now();
        hq.append(&topic("bench"), Append::new(vec![1; PAYLOAD]))
            .await
            .map_err(|e| e.to_string())?;
        wait_for_count(&alpha, &topic("bench"), n as u64 + 1, PATIENCE).await?;
        Ok::<_, String>(sent.elapsed())
    };
    let bench = topic("bench");
    let (first_new, all_in) = tokio::join!(
        first_new,
        wait_for_count(&hq, &bench, n as u64 + 1, PATIENCE)
    );
    let first_new = first_new?;
    all_in?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "catch-up: {secs:.2} s, first new entry {:.1} ms",
        first_new.as_secs_f64() * 1e3
    );
    Ok(vec![json!({
        "scenario": "catch-up",
        "profile": "lan",
        "entries": n,
        "catchup_s": round2(secs),
        "first_new_entry_ms": round2(first_new.as_secs_f64() * 1e3),
        "quick": quick,
    })])
}

/// An asset's metadata as `ASSET_BROADCAST` carries it: NASA Image Library fields.
fn asset_json(i: usize, rng: &mut Rng) -> Vec<u8> {
    const CENTERS: [&str; 5] = ["JPL", "GSFC", "JSC", "KSC", "ARC"];
    const WORDS: [&str; 8] = [
        "Mars",
        "rover",
        "crater",
        "Perseverance",
        "sol",
        "panorama",
        "dust",
        "ridge",
    ];
    let pick =
        |rng: &mut Rng, list: &[&'static str]| list[rng.range(0, list.len() as u64 - 1) as usize];
    let id = format!("PIA{:05}", 20_000 + i);
    let keywords: Vec<&str> = (0..3).map(|_| pick(rng, &WORDS)).collect();
    json!({
        "asset_id": id,
        "nasa_id": id,
        "title": format!("{} {} {}", pick(rng, &WORDS), pick(rng, &WORDS), i),
        "description": format!("Image {i} taken by the {} camera on sol {}.", pick(rng, &WORDS), rng.range(1, 4000)),
        "date_created": format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", rng.range(1, 12), rng.range(1, 28), rng.range(0, 23), rng.range(0, 59)),
        "center": pick(rng, &CENTERS),
        "media_type": "image",
        "keywords": keywords,
        "href": format!("https://images-assets.nasa.gov/image/{id}/{id}~orig.jpg"),
        "bytes": rng.range(100_000, 9_000_000),
        "sha256": format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()),
    })
    .to_string()
    .into_bytes()
}

/// `wire`: bytes on the link per entry, counted at a relay (the link emulator, `lan`
/// profile: no limits), handshake and acknowledgements included.
pub(crate) async fn wire(quick: bool) -> crate::Lines {
    let n = if quick { 5_000 } else { 20_000 };
    let mut line =
        json!({ "scenario": "wire", "entries": n, "payload_bytes": PAYLOAD, "quick": quick });
    for kind in ["random", "json"] {
        let mut cluster = Cluster::start_allowing(&[], &["alpha"], &[("bench", Scope::All)])
            .await
            .map_err(|e| e.to_string())?;
        let relay =
            tests::emulator::Link::start(cluster.core_addr(), tests::emulator::Profile::lan())
                .map_err(|e| e.to_string())?;
        let edge = cluster
            .start_edge_via("alpha", relay.addr())
            .await
            .map_err(|e| e.to_string())?;
        cluster.add(edge);
        let alpha = cluster.edge("alpha").store.clone();
        let mut rng = Rng::new(11);
        let mut json_bytes = 0;
        let mut txn = Txn::new();
        for i in 0..n {
            let payload = match kind {
                "random" => {
                    let mut p = vec![0; PAYLOAD];
                    rng.fill(&mut p);
                    p
                }
                _ => asset_json(i, &mut rng),
            };
            json_bytes += payload.len();
            txn.append(&topic("bench"), Append::new(payload));
            if txn_len(i) {
                alpha
                    .commit(std::mem::take(&mut txn))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        alpha.commit(txn).await.map_err(|e| e.to_string())?;
        wait_for_count(&cluster.core.store, &topic("bench"), n as u64, PATIENCE).await?;
        // Let the last acknowledgements cross before counting.
        let acked = cluster.edge("alpha").link("hq");
        let mut watch = acked.watch();
        let done = |s: &protocol::link::LinkStatus| {
            s.topics
                .iter()
                .any(|t| t.out && t.backlog == 0 && t.up_to_date.is_some())
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| done(s))).await;
        let counters = relay.stop();
        let per_entry = counters.wire_bytes() as f64 / n as f64;
        eprintln!("wire {kind}: {per_entry:.1} bytes per entry on the wire");
        line[format!("wire_bytes_per_entry_{kind}")] = json!(round2(per_entry));
        if kind == "json" {
            let json_per_entry = json_bytes as f64 / n as f64;
            line["json_bytes_per_entry"] = json!(round2(json_per_entry));
            line["json_wire_ratio"] = json!(round2(per_entry / json_per_entry));
        }
    }
    crate::reports::report_cases(quick, &mut line).await?;
    Ok(vec![line])
}

/// Entries arrive in transactions of 10, as a busy producer would make them.
fn txn_len(i: usize) -> bool {
    i % 10 == 9
}
