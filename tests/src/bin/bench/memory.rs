//! `memory`: an edge node's resident memory (the real `edge-node` main in a process of its
//! own, its mission services running) idle, under 1,000 entries/s to a live core, and
//! holding a week's backlog for an absent core.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use protocol::entry::{Retention, Scope, TopicConfig};
use protocol::log::{Store, StoreConfig};
use protocol::node::Role;
use serde_json::json;
use tests::cluster::{name, topic};
use tests::{TempDir, fleet};

use crate::node::{NodeProcess, field};
use crate::round2;

const PATIENCE: Duration = Duration::from_secs(120);
/// How long the edge is left idle before its memory is read.
const SETTLE: Duration = Duration::from_secs(5);
const RATE: u64 = 1_000;
/// A week's backlog for an absent core, as `BENCHMARKS.md` names it: 600,000 entries
/// (about one a second).
const BACKLOG: u64 = 600_000;

/// `<dir>/alpha.toml`: edge `alpha`, its data in `<dir>/alpha`, dialing `core`, with
/// the certificates in `certs`.
fn edge_config(dir: &Path, core: SocketAddr, certs: &Path) -> Result<std::path::PathBuf, String> {
    let text = format!(
        "[node]\nname = \"alpha\"\ndata_dir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [link]\ncore = \"{core}\"\ncerts_dir = \"{}\"\n\
         [[topics]]\nname = \"{}\"\nscope = \"all\"\n",
        dir.join("alpha").display(),
        certs.display(),
        fleet::TOPIC
    );
    let path = dir.join("alpha.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The edge's process and HTTP address.
fn start_edge(config: &Path) -> Result<(NodeProcess, String), String> {
    let mut edge = NodeProcess::start("edge", config)?;
    edge.wait_for("node ready", PATIENCE)?;
    let http = edge.wait_for("the edge serves HTTP", PATIENCE)?;
    let http = field(&http, "http=").ok_or("no HTTP address in the edge's log")?;
    Ok((edge, http))
}

/// Publishes at `RATE` entries/s for `seconds` through the edge's HTTP API while
/// sampling its memory; returns the highest sample, in KiB.
async fn load(edge: &NodeProcess, http: &str, seconds: u64) -> Result<u64, String> {
    let mut peak = edge.rss_kib()?;
    let started = Instant::now();
    for second in 0..seconds {
        fleet::publish(http, RATE, 4, &format!("load {second}"), json!({})).await?;
        peak = peak.max(edge.rss_kib()?);
        // Paced: the next second's entries start on the second.
        let next = started + Duration::from_secs(second + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    Ok(peak)
}

/// Appends `n` random 256-byte entries to the fleet topic of the store at `path`
/// (`impaired::fill`: 100 per transaction).
async fn fill(path: &Path, n: u64) -> Result<(), String> {
    let store = Store::open(path, StoreConfig::new(name("alpha"))).map_err(|e| e.to_string())?;
    store
        .create_topic(TopicConfig {
            name: topic(fleet::TOPIC),
            scope: Scope::All,
            retention: Retention::default(),
        })
        .await
        .map_err(|e| e.to_string())?;
    crate::impaired::fill(&store, &topic(fleet::TOPIC), n as usize, 7).await?;
    store.close().await.map_err(|e| e.to_string())
}

/// `memory`: the edge idle, under load, and with the backlog (`--quick`: 60,000).
pub(crate) async fn memory(quick: bool) -> crate::Lines {
    let (seconds, backlog) = if quick {
        (3, BACKLOG / 10)
    } else {
        (20, BACKLOG)
    };
    let dir = TempDir::new("memory").map_err(|e| e.to_string())?;
    let ca = fleet::make_ca(dir.path())?;
    let certs = dir.path().join("hq").join("certs");
    ca.issue(&name("alpha"), Role::Edge)
        .and_then(|identity| identity.save(&certs))
        .map_err(|e| e.to_string())?;
    let link: SocketAddr = ([127, 0, 0, 1], fleet::free_port()?).into();
    let core_config = fleet::core_config(dir.path(), link, &["alpha".to_owned()])?;
    let config = edge_config(dir.path(), link, &certs)?;

    let mut core = NodeProcess::start("core", &core_config)?;
    core.wait_for("node ready", PATIENCE)?;
    let (mut edge, http) = start_edge(&config)?;
    edge.wait_for("link up", PATIENCE)?;
    tokio::time::sleep(SETTLE).await;
    let idle = edge.rss_kib()?;
    let (anon, file) = (edge.status_kib("RssAnon")?, edge.status_kib("RssFile")?);
    eprintln!(
        "memory: edge idle, linked: {:.1} MiB ({:.1} MiB anonymous, {:.1} MiB of files: \
         the binary's pages)",
        idle as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );

    let loaded = load(&edge, &http, seconds).await?;
    eprintln!(
        "memory: edge at {RATE} entries/s for {seconds} s: {:.1} MiB at most",
        loaded as f64 / 1024.0
    );

    // The core goes away for a week: the backlog is written into the edge's store, then
    // the edge runs on, appending, with no core to send it to.
    core.kill();
    edge.kill();
    eprintln!("memory: writing a backlog of {backlog} entries");
    fill(&dir.path().join("alpha").join("store"), backlog).await?;
    let (edge, http) = start_edge(&config)?;
    tokio::time::sleep(SETTLE).await;
    let backlog_idle = edge.rss_kib()?;
    let backlog_peak = load(&edge, &http, seconds).await?.max(backlog_idle);
    eprintln!(
        "memory: edge holding {backlog} entries for an absent core: {:.1} MiB idle, {:.1} \
         MiB at most while appending",
        backlog_idle as f64 / 1024.0,
        backlog_peak as f64 / 1024.0
    );
    Ok(vec![json!({
        "scenario": "memory",
        "rss_idle_mb": round2(idle as f64 / 1024.0),
        "rss_idle_anon_mb": round2(anon as f64 / 1024.0),
        "rss_idle_file_mb": round2(file as f64 / 1024.0),
        "rss_load_mb": round2(loaded as f64 / 1024.0),
        "load_per_s": RATE,
        "load_s": seconds,
        "rss_backlog_mb": round2(backlog_peak as f64 / 1024.0),
        "rss_backlog_idle_mb": round2(backlog_idle as f64 / 1024.0),
        "backlog_entries": backlog,
        "quick": quick,
    })])
}
