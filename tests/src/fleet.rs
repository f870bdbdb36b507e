//! A fleet of edges for one core in another process: each edge a real node started by
//! the edge node's [`Builder`], with its own certificate from the mission CA, its own
//! store on disk and its own QUIC connection; the core's config to match. For the
//! `fanout` bench and the fleet test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use protocol::entry::{Retention, Scope, TopicConfig};
use protocol::node::{Builder, Role};
use protocol::tls::Ca;

use crate::cluster::{Node, name, node_config, topic, wait_for_count};

/// The topic every fleet node holds, scope `all`.
pub const TOPIC: &str = "fleet";

/// The mission CA in `<dir>/hq/certs`, with the core's identity beside it, where the
/// core's config says.
pub fn make_ca(dir: &Path) -> Result<Ca, String> {
    let certs = dir.join("hq").join("certs");
    let ca = Ca::create("fleet").map_err(|e| e.to_string())?;
    ca.save(&certs).map_err(|e| e.to_string())?;
    ca.issue(&name("hq"), Role::Core)
        .and_then(|identity| identity.save(&certs))
        .map_err(|e| e.to_string())?;
    Ok(ca)
}

/// A free UDP port on 127.0.0.1, for a core that must come back on the same address.
pub fn free_port() -> Result<u16, String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.port())
}

/// A free TCP port on 127.0.0.1 (HTTP, NATS): one free for UDP may be taken over TCP.
pub fn free_tcp_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Writes `<dir>/hq.toml`: core `hq` with its data in `<dir>/hq` (certificates from
/// [`make_ca`]), its link on `link` admitting `edges`, HTTP on any free loopback port,
/// no mission services running, the fleet topic and the mission's asset request and
/// response topics; returns its path.
pub fn core_config(dir: &Path, link: SocketAddr, edges: &[String]) -> Result<PathBuf, String> {
    core_config_with(dir, link, edges, &Extra::default())
}

/// More lines for [`core_config_with`]'s sections.
#[derive(Debug, Default)]
pub struct Extra<'a> {
    /// In `[store]`.
    pub store: &'a str,
    /// In `[link]`.
    pub link: &'a str,
    /// In the fleet topic's `[[topics]]`.
    pub topic: &'a str,
}

/// [`core_config`] with `extra` lines.
pub fn core_config_with(
    dir: &Path,
    link: SocketAddr,
    edges: &[String],
    extra: &Extra,
) -> Result<PathBuf, String> {
    let list: Vec<String> = edges.iter().map(|e| format!("\"{e}\"")).collect();
    let text = format!(
        "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n\
         [store]\n{}\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [link]\nlisten = \"{link}\"\ndemo_certs = false\nedges = [{}]\n{}\n\
         [pipeline]\nstart_services = false\n\
         [[topics]]\nname = \"{TOPIC}\"\nscope = \"all\"\n{}\n\
         [[topics]]\nname = \"{}\"\nscope = \"core\"\n\
         [[topics]]\nname = \"{}\"\nscope = \"all\"\nwriters = \"core\"\n",
        dir.join("hq").display(),
        extra.store,
        list.join(", "),
        extra.link,
        extra.topic,
        mission::ASSET_REQUEST,
        mission::ASSET_RESPONSE,
    );
    let path = dir.join("hq.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The names of `n` edges: `edge0000`, `edge0001`, ...
pub fn edge_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("edge{i:04}")).collect()
}

/// Starts edge `n`, its data in `<dir>/edges/<n>`, dialing the core at `core`. It holds
/// the fleet topic and the mission's request and response topics (an edge asks HQ for
/// an asset on one, HQ answers it alone on the other).
pub async fn start_edge(dir: &Path, ca: &Ca, n: &str, core: SocketAddr) -> Result<Node, String> {
    let held = |name: &str, scope| TopicConfig {
        name: topic(name),
        scope,
        retention: Retention::default(),
    };
    let topics = [
        held(TOPIC, Scope::All),
        held(mission::ASSET_REQUEST, Scope::Core),
        held(mission::ASSET_RESPONSE, Scope::All),
    ];
    let mut config = node_config(Role::Edge, n, dir.join("edges").join(n), &topics);
    config.link.core = core.to_string();
    let identity = ca.issue(&name(n), Role::Edge).map_err(|e| e.to_string())?;
    Node::start(Builder::new(Role::Edge, config).identity(identity))
        .await
        .map_err(|e| format!("edge {n}: {e}"))
}

/// Waits up to `patience` until every edge's link to the core is up with a session
/// begun after `after`; returns when each began, from `after`, sorted.
pub async fn all_connected(
    edges: &[Node],
    after: SystemTime,
    patience: Duration,
) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(edges.len());
    for edge in edges {
        let mut up = edge.link("hq").watch();
        let status =
            tokio::time::timeout(patience, up.wait_for(|s| s.connected && s.since >= after))
                .await
                .map_err(|_| format!("edge {} never connected", edge.name))?
                .map_err(|e| e.to_string())?;
        times.push(status.since.duration_since(after).unwrap_or_default());
    }
    times.sort();
    Ok(times)
}

/// Waits up to `patience` until every edge's store holds `count` entries of the fleet
/// topic; returns each edge's time from `since`, sorted.
pub async fn arrivals(
    edges: &[Node],
    count: u64,
    since: Instant,
    patience: Duration,
) -> Result<Vec<Duration>, String> {
    arrivals_on(edges, &topic(TOPIC), count, since, patience).await
}

/// [`arrivals`] on any topic the edges hold.
pub async fn arrivals_on(
    edges: &[Node],
    on: &protocol::entry::TopicName,
    count: u64,
    since: Instant,
    patience: Duration,
) -> Result<Vec<Duration>, String> {
    let mut tasks = tokio::task::JoinSet::new();
    for edge in edges {
        let (store, on) = (edge.store.clone(), on.clone());
        tasks.spawn(async move {
            wait_for_count(&store, &on, count, patience).await?;
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

/// Publishes `count` entries on the fleet topic through the core's HTTP API at `http`
/// (`host:port`), one request each, from `clients` HTTP clients at once; each entry is
/// `{"payload": "<prefix> <client>.<i>"}` plus `extra` fields (such as `"to"`).
pub async fn publish(
    http: &str,
    count: u64,
    clients: u64,
    prefix: &str,
    extra: serde_json::Value,
) -> Result<(), String> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients.min(count) {
        let url = format!("http://{http}/api/v1/topics/{TOPIC}/entries");
        let share = count / clients + u64::from(c < count % clients);
        let (prefix, extra) = (prefix.to_owned(), extra.clone());
        tasks.spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            for i in 0..share {
                let mut body = serde_json::json!({ "payload": format!("{prefix} {c}.{i}") });
                if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
                    body.extend(extra.clone());
                }
                let mut answer = agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(body.to_string())
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
