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

/// An edge away past its allowance (here: more bytes held for it than
/// `link.allowance_bytes`) is released: the core stops keeping entries for it and shows
/// why; retention then removes what only it lacked; when it returns, it gets that loss as
/// a gap and the rest, while the edges that stayed get everything and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_away_past_its_allowance_is_released_and_gets_a_gap_when_it_returns() {
    let dir = TempDir::new("allowance").unwrap();
    let ca = fleet::make_ca(dir.path()).unwrap();
    let names = fleet::edge_names(3);
    let link = SocketAddr::from(([127, 0, 0, 1], fleet::free_port().unwrap()));
    let extra = fleet::Extra {
        store: "retention_interval = \"1s\"",
        link: "allowance_bytes = \"1KiB\"",
        topic: "max_entries = 1",
    };
    let config = fleet::core_config_with(dir.path(), link, &names, &extra).unwrap();
    let (mut core, http) = start_core(&config);
    let began = SystemTime::now();
    let mut edges = Vec::new();
    for n in &names {
        edges.push(fleet::start_edge(dir.path(), &ca, n, link).await.unwrap());
    }
    fleet::all_connected(&edges, began, PATIENCE).await.unwrap();
    fleet::publish(&http, 1, 1, "before", json!({}))
        .await
        .unwrap();
    for edge in &edges {
        wait_for_count(&edge.store, &topic(fleet::TOPIC), 1, PATIENCE)
            .await
            .unwrap();
    }

    // edge0000 goes away; 3 entries of 600 bytes are more than its 1 KiB allowance.
    let away = edges.remove(0);
    let away_name = away.name.clone();
    away.stop().await.unwrap();
    let big = "x".repeat(600);
    for i in 0..3 {
        fleet::publish(&http, 1, 1, &format!("big{i} {big}"), json!({}))
            .await
            .unwrap();
    }
    let released = core.wait_for_line(|l| l.contains("edge released"), "edge released");
    assert!(
        released.contains("edge0000") && released.contains("link.allowance_bytes"),
        "{released}"
    );
    let url = format!("http://{http}/api/v1/edges/{away_name}");
    let view = edge_view(&url);
    let why = view["released"]["why"].as_str().unwrap_or_default();
    assert!(why.contains("held for it"), "{view}");
    // Retention now keeps the newest entry only (max_entries 1): the others are gone.
    core.wait_for_line(|l| l.contains("retention removed entries"), "retention");

    // The edges that stayed hold all 4, and no gap.
    for edge in &edges {
        wait_for_count(&edge.store, &topic(fleet::TOPIC), 4, PATIENCE)
            .await
            .unwrap();
        let gaps = edge.store.topic(&topic(protocol::log::GAPS_TOPIC)).unwrap();
        assert_eq!(gaps.next, Offset(0), "{} has no gap", edge.name);
    }

    // It returns: the loss is a gap at the edge, the newest entry arrives, and the core
    // keeps entries for it again.
    let back = fleet::start_edge(dir.path(), &ca, &names[0], link)
        .await
        .unwrap();
    let gaps = topic(protocol::log::GAPS_TOPIC);
    wait_for_count(&back.store, &gaps, 1, PATIENCE)
        .await
        .unwrap();
    let gap: protocol::log::Gap =
        serde_json::from_slice(&cluster::all(&back.store, &gaps)[0].entry.payload).unwrap();
    assert_eq!(
        (gap.topic.as_str(), gap.origin.as_str(), gap.last.0),
        (fleet::TOPIC, "hq", 3),
        "{gap:?}"
    );
    assert_eq!(gap.peers, vec![away_name.clone()]);
    // It held `before` (sequence 1) when it left; the gap starts after what the core knew
    // it held.
    assert!((1..=2).contains(&gap.first.0), "{gap:?}");
    wait_for_count(&back.store, &topic(fleet::TOPIC), 2, PATIENCE)
        .await
        .unwrap();
    let held: Vec<String> = cluster::all(&back.store, &topic(fleet::TOPIC))
        .iter()
        .map(|r| String::from_utf8_lossy(&r.entry.payload).into_owned())
        .collect();
    assert_eq!(held, ["before 0.0".to_owned(), format!("big2 {big} 0.0")]);
    core.wait_for_line(|l| l.contains("a released edge returned"), "returned");
    let view = edge_view(&url);
    assert!(view["released"].is_null(), "{view}");
}

/// The core's view of one edge (`GET /api/v1/edges/<name>`).
fn edge_view(url: &str) -> serde_json::Value {
    let mut answer = ureq::get(url).call().unwrap();
    serde_json::from_reader(answer.body_mut().as_reader()).unwrap()
}
