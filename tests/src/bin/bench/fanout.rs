//! `fanout`: the real core (this binary as `core-node`, in a process of its own) with N
//! edges in this process, each a real QUIC connection with its own certificate from the
//! mission CA, started by the same `protocol::node::Builder` the edge node uses, each
//! with its own store on disk.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tests::TempDir;
use tests::fleet::{self, all_connected, arrivals};

use crate::node::{NodeProcess, field};
use crate::round2;

const PATIENCE: Duration = Duration::from_secs(300);
/// How long the fleet is left idle before its memory is read.
const SETTLE: Duration = Duration::from_secs(5);
const BURST: u64 = 1_000;
/// How long the idle fleet's traffic is counted (`--quick`: one keep-alive interval).
const IDLE: Duration = Duration::from_secs(60);
const IDLE_QUICK: Duration = Duration::from_secs(15);
/// How long the fleet is left quiet after the burst before the core's memory is read
/// again: past the links' release of their compression contexts (30 s).
const QUIET: Duration = Duration::from_secs(35);
/// HTTP clients publishing a burst at once.
const PUBLISHERS: u64 = 16;

/// The core's process, its config and addresses.
struct Core {
    process: NodeProcess,
    config: std::path::PathBuf,
    http: String,
}

impl Core {
    /// Starts (or restarts, on its data) the core with `config`.
    fn start(config: &Path) -> Result<Core, String> {
        let mut process = NodeProcess::start("core", config)?;
        process.wait_for("node ready", PATIENCE)?;
        let http = process.wait_for("HQ serves HTTP", PATIENCE)?;
        let http = field(&http, "http=").ok_or("no HTTP address in the core's log")?;
        Ok(Core {
            process,
            config: config.to_path_buf(),
            http,
        })
    }

    /// Starts one of the core's services through its HTTP API.
    async fn start_service(&self, name: &str) -> Result<(), String> {
        let url = format!("http://{}/api/v1/services/{name}/start", self.http);
        tokio::task::spawn_blocking(move || {
            let mut answer = ureq::post(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .header("content-type", "application/json")
                .header("x-requested-with", "bench")
                .send("{}")
                .map_err(|e| format!("POST {url}: {e}"))?;
            if !answer.status().is_success() {
                let text = answer.body_mut().read_to_string().unwrap_or_default();
                return Err(format!("POST {url}: {}: {text}", answer.status()));
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Publishes `count` broadcasts through the core's HTTP API from [`PUBLISHERS`]
    /// clients at once (HQ's applications).
    async fn publish(&self, count: u64) -> Result<(), String> {
        fleet::publish(&self.http, count, PUBLISHERS, "broadcast", json!({})).await
    }
}

/// How many of `times` fall in each `bucket`, from 0: `0-5s:12 5-10s:40 ...`.
fn histogram(times: &[Duration], bucket: Duration) -> String {
    let mut counts: Vec<usize> = Vec::new();
    for t in times {
        let i = (t.as_secs_f64() / bucket.as_secs_f64()) as usize;
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }
    let width = bucket.as_secs();
    counts
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}-{}s:{n}", i as u64 * width, (i as u64 + 1) * width))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `q` quantile of sorted `times`, in seconds.
fn quantile(times: &[Duration], q: f64) -> f64 {
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).map_or(0.0, Duration::as_secs_f64)
}

/// `fanout`: N edges (1,000; `--quick` 100) on one real core.
pub(crate) async fn fanout(quick: bool) -> crate::Lines {
    let n: usize = if quick { 100 } else { 1_000 };
    // `RUST_LOG=warn bench fanout`: the in-process edges' log lines on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        let log = protocol::config::LogSettings {
            format: protocol::config::LogFormat::Text,
            filter: "warn".into(),
        };
        protocol::node::init_tracing(&log).map_err(|e| e.to_string())?;
    }
    let dir = TempDir::new("fanout").map_err(|e| e.to_string())?;
    let ca = fleet::make_ca(dir.path())?;
    let names = fleet::edge_names(n);
    let link: SocketAddr = ([127, 0, 0, 1], fleet::free_port()?).into();
    let config = fleet::core_config(dir.path(), link, &names)?;

    eprintln!("fanout: starting the core");
    let mut core = Core::start(&config)?;
    tokio::time::sleep(SETTLE).await;
    let rss_idle = core.process.rss_kib()?;
    eprintln!(
        "fanout: core idle, {} MiB; starting {n} edges",
        rss_idle / 1024
    );

    let started = Instant::now();
    let began = SystemTime::now();
    let mut edges = Vec::with_capacity(n);
    for (i, n) in names.iter().enumerate() {
        edges.push(fleet::start_edge(dir.path(), &ca, n, link).await?);
        if (i + 1) % 100 == 0 {
            eprintln!("fanout: {} edges started", i + 1);
        }
    }
    let connected = all_connected(&edges, began, PATIENCE).await?;
    eprintln!(
        "fanout: {n} edges connected, {:.1} s after the first started",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let rss_fleet = core.process.rss_kib()?;
    let kib_per_edge = rss_fleet.saturating_sub(rss_idle) as f64 / n as f64;
    eprintln!(
        "fanout: core with the fleet idle, {} MiB: {kib_per_edge:.0} KiB per edge",
        rss_fleet / 1024
    );

    // An idle fleet's traffic: every byte of each edge's connection, both ways.
    let wire = |edges: &[tests::cluster::Node]| -> Result<u64, String> {
        edges.iter().try_fold(0, |sum, e| {
            let (tx, rx) = e
                .link("hq")
                .wire_bytes()
                .ok_or_else(|| format!("edge {} is down", e.name))?;
            Ok(sum + tx + rx)
        })
    };
    let idle_for = if quick { IDLE_QUICK } else { IDLE };
    let before = wire(&edges)?;
    tokio::time::sleep(idle_for).await;
    let idle_bytes =
        wire(&edges)?.saturating_sub(before) as f64 / n as f64 / (idle_for.as_secs_f64() / 60.0);
    eprintln!("fanout: idle, {idle_bytes:.0} bytes per edge per minute");

    // One broadcast: from the request to the core until it is durable at each edge.
    let cpu_before = core.process.cpu()?;
    let sent = Instant::now();
    core.publish(1).await?;
    let one = arrivals(&edges, 1, sent, PATIENCE).await?;
    let broadcast_cpu = core.process.cpu()?.saturating_sub(cpu_before);
    eprintln!(
        "fanout: one broadcast at all {n} edges in {:.3} s (p50 {:.3} s); the core spent \
         {} ms of CPU on it",
        quantile(&one, 1.0),
        quantile(&one, 0.5),
        broadcast_cpu.as_millis()
    );

    // A burst: until every edge holds all of it.
    let sent = Instant::now();
    core.publish(BURST).await?;
    let published = sent.elapsed();
    let burst = arrivals(&edges, 1 + BURST, sent, PATIENCE).await?;
    eprintln!(
        "fanout: {BURST} broadcasts published in {:.1} s, at all edges in {:.1} s",
        published.as_secs_f64(),
        quantile(&burst, 1.0)
    );
    // What the core holds for links that carried traffic, and once they are quiet again
    // (each link lets go of its compression context after `RELEASE_AFTER`).
    tokio::time::sleep(SETTLE).await;
    let rss_busy = core.process.rss_kib()?;
    tokio::time::sleep(QUIET).await;
    let rss_quiet = core.process.rss_kib()?;
    let kib_per_quiet_edge = rss_quiet.saturating_sub(rss_idle) as f64 / n as f64;
    eprintln!(
        "fanout: core after the burst {} MiB, quiet again {} MiB: {kib_per_quiet_edge:.0} KiB \
         per edge",
        rss_busy / 1024,
        rss_quiet / 1024
    );

    // Every edge asks HQ for an asset at once; HQ's asset-response service answers each
    // with an `ASSET_RESPONSE` addressed to it alone. The asset is one HQ does not hold,
    // so the answer is "not found": what is measured is the requests' way in, the
    // service, and the answers' way out to each edge.
    core.start_service("asset-response").await?;
    let asked = Instant::now();
    let request = mission::topic(mission::ASSET_REQUEST);
    let mut asks = tokio::task::JoinSet::new();
    for (i, edge) in edges.iter().enumerate() {
        let (store, request) = (edge.store.clone(), request.clone());
        let ask = mission::Request {
            asset: format!("bench-{i}"),
        };
        asks.spawn(async move {
            store
                .append(
                    &request,
                    protocol::entry::Append::new(mission::encode(&ask)),
                )
                .await
                .map_err(|e| e.to_string())
        });
    }
    while let Some(done) = asks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let response = mission::topic(mission::ASSET_RESPONSE);
    let answered = fleet::arrivals_on(&edges, &response, 1, asked, PATIENCE).await?;
    eprintln!(
        "fanout: an asset request from each of {n} edges, all answered in {:.1} s (p50 {:.1} s)",
        quantile(&answered, 1.0),
        quantile(&answered, 0.5)
    );

    // The core killed and restarted on the same address and data. A failed handshake
    // is a dial an edge counts as failed (refused, or no answer), or one the core logs
    // as refused.
    let failed_dials = |edges: &[tests::cluster::Node]| -> u64 {
        edges
            .iter()
            .map(|e| e.link("hq").status().failed_dials)
            .sum()
    };
    core.process.drain();
    let dials_before = failed_dials(&edges);
    let config = core.config.clone();
    core.process.kill();
    let restarted = Instant::now();
    let killed = SystemTime::now();
    let mut core = Core::start(&config)?;
    let ready = restarted.elapsed();
    let back = all_connected(&edges, killed, PATIENCE).await?;
    let reconnect = restarted.elapsed();
    let refused = core
        .process
        .drain()
        .iter()
        .filter(|l| l.contains("link refused"))
        .count() as u64;
    let failed = failed_dials(&edges) - dials_before + refused;
    eprintln!(
        "fanout: core restarted; all {n} edges back in {:.1} s ({failed} failed handshakes: \
         {refused} refused at the core)",
        reconnect.as_secs_f64()
    );
    eprintln!(
        "fanout: the core served again {:.1} s after its kill; edges back by 5 s: {}",
        ready.as_secs_f64(),
        histogram(&back, Duration::from_secs(5))
    );
    let rss_after = core.process.rss_kib()?;
    drop(core);
    drop(edges);
    Ok(vec![json!({
        "scenario": "fanout",
        "edges": n,
        "connect_all_s": round2(quantile(&connected, 1.0)),
        "core_rss_idle_mb": round2(rss_idle as f64 / 1024.0),
        "core_rss_fleet_mb": round2(rss_fleet as f64 / 1024.0),
        "core_kb_per_idle_edge": kib_per_edge.round(),
        "idle_bytes_per_edge_per_min": idle_bytes.round(),
        "broadcast_p50_s": quantile(&one, 0.5),
        "broadcast_p99_s": quantile(&one, 0.99),
        "broadcast_max_s": quantile(&one, 1.0),
        "broadcast_core_cpu_ms": broadcast_cpu.as_millis() as u64,
        "burst": BURST,
        "burst_publish_s": round2(published.as_secs_f64()),
        "burst_1000_s": round2(quantile(&burst, 1.0)),
        "asset_requests_answered_s": round2(quantile(&answered, 1.0)),
        "asset_requests_p50_s": round2(quantile(&answered, 0.5)),
        "core_rss_after_burst_mb": round2(rss_busy as f64 / 1024.0),
        "core_kb_per_quiet_edge": kib_per_quiet_edge.round(),
        "core_restart_s": round2(ready.as_secs_f64()),
        "reconnect_all_s": round2(reconnect.as_secs_f64()),
        "reconnect_p50_s": round2(quantile(&back, 0.5)),
        "reconnect_p90_s": round2(quantile(&back, 0.9)),
        "failed_handshakes": failed,
        "core_rss_after_restart_mb": round2(rss_after as f64 / 1024.0),
        "quick": quick,
    })])
}
