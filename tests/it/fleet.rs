//! A fleet through the real core: 50 edges, each with its own certificate, store and QUIC
//! connection, on one `core-node` process that is killed and restarted.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use protocol::entry::Offset;
use serde_json::json;
use tests::TempDir;
use tests::cluster::{self, topic, wait_for_count};
use tests::fleet;

use crate::support::process::{Node as Process, field};

const EDGES: usize = 50;
const PATIENCE: Duration = Duration::from_secs(120);
/// The edge the directed entry is for.
const ONE: &str = "edge0007";

/// Starts the core with `config`; returns it and its HTTP address.
fn start_core(config: &Path) -> (Process, String) {
    let mut core = Process::start("core-node", config);
    core.wait_for("node ready");
    let http = core.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    (core, field(&http, "http="))
}

/// Waits until each edge holds the broadcasts `all` (and `ONE` also `one` after the
/// first), then checks each holds exactly those, once each, in order.
async fn holds(edges: &[cluster::Node], all: &[&str], one: &str) {
    for edge in edges {
        let mut wanted: Vec<&str> = all.to_vec();
        if edge.name.as_str() == ONE {
            wanted.insert(1, one);
        }
        wait_for_count(
            &edge.store,
            &topic(fleet::TOPIC),
            wanted.len() as u64,
            PATIENCE,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", edge.name));
        let held: Vec<String> = edge
            .store
            .read(&topic(fleet::TOPIC), Offset(0), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.entry.payload).into_owned())
            .collect();
        assert_eq!(held, wanted, "what {} holds", edge.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_gets_each_broadcast_once_a_directed_entry_alone_and_returns_after_a_core_restart()
{
    let dir = TempDir::new("fleet").unwrap();
    let ca = fleet::make_ca(dir.path()).unwrap();
    let names = fleet::edge_names(EDGES);
    let link = SocketAddr::from(([127, 0, 0, 1], fleet::free_port().unwrap()));
    let config = fleet::core_config(dir.path(), link, &names).unwrap();
    let (core, http) = start_core(&config);
    let began = SystemTime::now();
    let mut edges = Vec::new();
    for n in &names {
        edges.push(fleet::start_edge(dir.path(), &ca, n, link).await.unwrap());
    }
    fleet::all_connected(&edges, began, PATIENCE).await.unwrap();

    // A broadcast, an entry for one edge, another broadcast.
    for (payload, to) in [("first", None), ("directed", Some(ONE)), ("second", None)] {
        let extra = to.map_or(json!({}), |to| json!({ "to": to }));
        fleet::publish(&http, 1, 1, payload, extra).await.unwrap();
    }
    holds(&edges, &["first 0.0", "second 0.0"], "directed 0.0").await;

    // The core killed and restarted on its data and address: every edge has a new
    // session, and the next broadcast reaches each once.
    core.kill();
    let killed = SystemTime::now();
    let (_core, http) = start_core(&config);
    fleet::all_connected(&edges, killed, PATIENCE)
        .await
        .unwrap();
    fleet::publish(&http, 1, 1, "third", json!({}))
        .await
        .unwrap();
    holds(
        &edges,
        &["first 0.0", "second 0.0", "third 0.0"],
        "directed 0.0",
    )
    .await;
}

/// An edge whose certificate is from another mission's CA counts its failed dials (for
/// its page, API and metrics: `failed_dials`), and its link stays down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_counts_its_failed_dials() {
    let cluster =
        cluster::Cluster::start(&["alpha"], &[(fleet::TOPIC, protocol::entry::Scope::All)])
            .await
            .unwrap();
    let dir = TempDir::new("stranger").unwrap();
    let other = protocol::tls::Ca::create("another mission").unwrap();
    let stranger = fleet::start_edge(dir.path(), &other, "alpha", cluster.core_addr())
        .await
        .unwrap();
    let mut status = stranger.link("hq").watch();
    let failed = tokio::time::timeout(PATIENCE, status.wait_for(|s| s.failed_dials >= 2))
        .await
        .expect("failed dials are counted")
        .unwrap()
        .clone();
    assert!(!failed.connected, "{failed:?}");
    // The edge of this mission has none.
    let mut alpha = cluster.edge("alpha").link("hq").watch();
    let alpha = tokio::time::timeout(PATIENCE, alpha.wait_for(|s| s.connected))
        .await
        .expect("alpha connects")
        .unwrap()
        .clone();
    assert_eq!(alpha.failed_dials, 0, "{alpha:?}");
}
