//! `fanout`: the real core (this binary as `core-node`, in a process of its own) with N
//! edges in this process, each a real QUIC connection with its own certificate from the
//! mission CA, started by the same `protocol::node::Builder` the edge node uses, each
//! with its own store on disk.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use protocol::entry::{Retention, Scope, TopicConfig};
use protocol::node::{Builder, Role};
use protocol::tls::Ca;
use serde_json::json;
use tests::TempDir;
use tests::cluster::{Node, name, node_config, topic, wait_for_count};

use crate::node::{NodeProcess, field};
use crate::round2;

const TOPIC: &str = "fleet";
const PATIENCE: Duration = Duration::from_secs(300);
/// How long the fleet is left idle before its memory is read.
const SETTLE: Duration = Duration::from_secs(5);
const BURST: u64 = 1_000;
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

    /// Publishes `count` entries on the fleet topic through the core's HTTP API, one
    /// request each, from [`PUBLISHERS`] clients at once (HQ's applications).
    async fn publish(&self, count: u64) -> Result<(), String> {
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..PUBLISHERS.min(count) {
            let url = format!("http://{}/api/v1/topics/{TOPIC}/entries", self.http);
            let share = count / PUBLISHERS + u64::from(p < count % PUBLISHERS);
            tasks.spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for i in 0..share {
                    let body = json!({ "payload": format!("broadcast {p}.{i}") }).to_string();
                    let mut answer = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(body)
                        .map_err(|e| format!("POST {url}: {e}"))?;
                    if !answer.status().is_success() {
                        let text = answer.body_mut().read_to_string().unwrap_or_default();
                        return Err(format!("POST {url}: {}: {text}", answer.status()));
                    }
                }
                Ok::<_, String>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
        Ok(())
    }
}

/// A free UDP port on 127.0.0.1, for a core that must come back on the same address.
fn free_port() -> Result<u16, String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

fn core_config(
    dir: &Path,
    link: SocketAddr,
    edges: &[String],
) -> Result<std::path::PathBuf, String> {
    let list: Vec<String> = edges.iter().map(|e| format!("\"{e}\"")).collect();
    let text = format!(
        "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [link]\nlisten = \"{link}\"\ndemo_certs = false\nedges = [{}]\n\
         [pipeline]\nstart_services = false\n\
         [[topics]]\nname = \"{TOPIC}\"\nscope = \"all\"\n",
        dir.join("hq").display(),
        list.join(", ")
    );
    let path = dir.join("hq.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Starts edge `n` of the fleet, dialing the core at `core`.
async fn start_edge(dir: &Path, ca: &Ca, n: &str, core: SocketAddr) -> Result<Node, String> {
    let topics = [TopicConfig {
        name: topic(TOPIC),
        scope: Scope::All,
        retention: Retention::default(),
    }];
    let mut config = node_config(Role::Edge, n, dir.join("edges").join(n), &topics);
    config.link.core = core.to_string();
    let identity = ca.issue(&name(n), Role::Edge).map_err(|e| e.to_string())?;
    Node::start(Builder::new(Role::Edge, config).identity(identity))
        .await
        .map_err(|e| format!("edge {n}: {e}"))
}

/// Waits until every edge's link to the core is up with a session begun after `after`;
/// returns when each edge's session began, from `after`, sorted.
async fn all_connected(edges: &[Node], after: SystemTime) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(edges.len());
    for edge in edges {
        let mut up = edge.link("hq").watch();
        let status =
            tokio::time::timeout(PATIENCE, up.wait_for(|s| s.connected && s.since >= after))
                .await
                .map_err(|_| format!("edge {} never connected", edge.name))?
                .map_err(|e| e.to_string())?;
        times.push(status.since.duration_since(after).unwrap_or_default());
    }
    times.sort();
    Ok(times)
}

/// Waits until every edge's store holds `count` entries of the fleet topic; returns each
/// edge's time from `since`, sorted.
async fn arrivals(edges: &[Node], count: u64, since: Instant) -> Result<Vec<Duration>, String> {
    let mut tasks = tokio::task::JoinSet::new();
    for edge in edges {
        let store = edge.store.clone();
        tasks.spawn(async move {
            wait_for_count(&store, &topic(TOPIC), count, PATIENCE).await?;
            Ok::<_, String>(since.elapsed())
        });
    }
    let mut times = Vec::with_capacity(edges.len());
    while let Some(done) = tasks.join_next().await {
        times.push(done.map_err(|e| e.to_string())??);
    }
    times.sort();
    Ok(times)
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
    let certs = dir.path().join("hq").join("certs");
    let ca = Ca::create("fanout bench").map_err(|e| e.to_string())?;
    ca.save(&certs).map_err(|e| e.to_string())?;
    ca.issue(&name("hq"), Role::Core)
        .and_then(|identity| identity.save(&certs))
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..n).map(|i| format!("edge{i:04}")).collect();
    let link: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let config = core_config(dir.path(), link, &names)?;

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
        edges.push(start_edge(dir.path(), &ca, n, link).await?);
        if (i + 1) % 100 == 0 {
            eprintln!("fanout: {} edges started", i + 1);
        }
    }
    let connected = all_connected(&edges, began).await?;
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

    // One broadcast: from the request to the core until it is durable at each edge.
    let sent = Instant::now();
    core.publish(1).await?;
    let one = arrivals(&edges, 1, sent).await?;
    eprintln!(
        "fanout: one broadcast at all {n} edges in {:.3} s (p50 {:.3} s)",
        quantile(&one, 1.0),
        quantile(&one, 0.5)
    );

    // A burst: until every edge holds all of it.
    let sent = Instant::now();
    core.publish(BURST).await?;
    let published = sent.elapsed();
    let burst = arrivals(&edges, 1 + BURST, sent).await?;
    eprintln!(
        "fanout: {BURST} broadcasts published in {:.1} s, at all edges in {:.1} s",
        published.as_secs_f64(),
        quantile(&burst, 1.0)
    );

    // The core killed and restarted on the same address and data.
    core.process.drain();
    let config = core.config.clone();
    core.process.kill();
    let restarted = Instant::now();
    let killed = SystemTime::now();
    let mut core = Core::start(&config)?;
    let ready = restarted.elapsed();
    let back = all_connected(&edges, killed).await?;
    let reconnect = restarted.elapsed();
    let log = core.process.drain();
    let failed = log
        .iter()
        .filter(|l| l.contains("link refused") || l.contains("handshake"))
        .count();
    let up = log.iter().filter(|l| l.contains("link up")).count();
    eprintln!(
        "fanout: core restarted; all {n} edges back in {:.1} s ({failed} failed handshakes \
         logged at the core, {up} links up)",
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
        "broadcast_p50_s": quantile(&one, 0.5),
        "broadcast_p99_s": quantile(&one, 0.99),
        "broadcast_max_s": quantile(&one, 1.0),
        "burst": BURST,
        "burst_publish_s": round2(published.as_secs_f64()),
        "burst_1000_s": round2(quantile(&burst, 1.0)),
        "core_restart_s": round2(ready.as_secs_f64()),
        "reconnect_all_s": round2(reconnect.as_secs_f64()),
        "reconnect_p50_s": round2(quantile(&back, 0.5)),
        "reconnect_p90_s": round2(quantile(&back, 0.9)),
        "failed_handshakes": failed,
        "core_rss_after_restart_mb": round2(rss_after as f64 / 1024.0),
        "quick": quick,
    })])
}
