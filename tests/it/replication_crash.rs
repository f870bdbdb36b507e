//! SIGKILL of either node during replication (issue 3): the core and the edge run as
//! child processes (`link-writer`: a store and a link, as the node binaries run them)
//! appending to an `all` topic; one of them is killed at a random moment, restarted, and
//! so on. Then both stores are linked again and must converge with every acknowledged
//! entry of both origins exactly once, in per-origin order.
//!
//! And a restarted core resets the links of its previous run: the node binaries, the core
//! killed and started again on the same port while the edge runs on; the edge must hear
//! the reset and redial well before QUIC's idle timeout would have ended the dead link.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protocol::entry::{Offset, Retention, Scope, TopicConfig};
use protocol::log::Store;
use protocol::node::{Builder, Role};
use protocol::tls::Ca;
use tests::cluster::{self, name, topic};
use tests::{Rng, TempDir};

use crate::support::process::Node;

const PATIENCE: Duration = Duration::from_secs(60);
const TOPIC: &str = "kill.b";

fn rounds() -> u64 {
    std::env::var("TETHER_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// A running `link-writer` and the thread that forwards its stdout lines.
struct Writer {
    child: Child,
    reader: JoinHandle<()>,
}

fn start(
    role: Role,
    data: &Path,
    certs: &Path,
    address: &str,
    lines: &mpsc::Sender<(Role, String)>,
) -> Writer {
    let kind = if role == Role::Core { "core" } else { "edge" };
    let mut child = Command::new(env!("CARGO_BIN_EXE_link-writer"))
        .args([
            kind,
            &data.display().to_string(),
            &certs.display().to_string(),
            address,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start link-writer");
    let stdout = child.stdout.take().unwrap();
    let lines = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send((role, line)).is_err() {
                break;
            }
        }
    });
    Writer { child, reader }
}

impl Writer {
    /// SIGKILL, then wait for the process and for every line it wrote before dying.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.join().unwrap();
    }
}

/// Acknowledged appends per origin: sequence to token.
type Acked = HashMap<Role, BTreeMap<u64, String>>;

/// Records a line; returns the core's address if it is the core's `listening` line.
fn record(role: Role, line: &str, acked: &mut Acked) -> Option<String> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ack"), Some(seq), Some(token)) => {
            let previous = acked
                .entry(role)
                .or_default()
                .insert(seq.parse().unwrap(), token.to_owned());
            assert!(
                previous.is_none(),
                "{role:?} acknowledged sequence {seq} twice"
            );
            None
        }
        (Some("listening"), Some(address), None) => Some(address.to_owned()),
        _ => panic!("unexpected line from {role:?}: {line:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_restart_and_converge_without_losing_acknowledged_entries() {
    let mut rng = Rng::from_env("TETHER_KILL_SEED", "kill test");
    let dir = TempDir::new("kill").unwrap();
    let certs = dir.path().join("certs");
    let ca = Ca::create("kill test").unwrap();
    ca.save(&certs).unwrap();
    ca.issue(&name("hq"), Role::Core)
        .unwrap()
        .save(&certs)
        .unwrap();
    ca.issue(&name("alpha"), Role::Edge)
        .unwrap()
        .save(&certs)
        .unwrap();
    let data = |n: &str| dir.path().join(n);

    let (tx, rx) = mpsc::channel();
    let mut acked: Acked = HashMap::new();
    let mut core = start(Role::Core, &data("hq"), &certs, "127.0.0.1:0", &tx);
    let address = loop {
        let (role, line) = rx.recv_timeout(PATIENCE).expect("the core starts");
        if let Some(address) = record(role, &line, &mut acked) {
            break address;
        }
    };
    let mut edge = start(Role::Edge, &data("alpha"), &certs, &address, &tx);

    for round in 0..rounds() {
        let victim = if round % 2 == 0 {
            Role::Edge
        } else {
            Role::Core
        };
        let wanted = rng.range(20, 300);
        let mut seen = 0;
        while seen < wanted {
            let (role, line) = rx
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("round {round}: no progress"));
            record(role, &line, &mut acked);
            seen += u64::from(role == victim);
        }
        match victim {
            Role::Edge => {
                edge.kill();
                edge = start(Role::Edge, &data("alpha"), &certs, &address, &tx);
            }
            Role::Core => {
                core.kill();
                core = start(Role::Core, &data("hq"), &certs, &address, &tx);
            }
        }
    }
    core.kill();
    edge.kill();
    while let Ok((role, line)) = rx.try_recv() {
        record(role, &line, &mut acked);
    }

    // Link the two stores once more, in this process, and let them converge.
    let (hq, alpha) = link_again(&dir, &certs).await;
    for (origin, role) in [(name("hq"), Role::Core), (name("alpha"), Role::Edge)] {
        let mine = &acked[&role];
        for store in [&hq.store, &alpha.store] {
            let records = store.read(&topic(TOPIC), Offset(0), usize::MAX).unwrap();
            let mut last = 0;
            let mut held: BTreeMap<u64, String> = BTreeMap::new();
            for r in records.iter().filter(|r| r.entry.id.origin == origin) {
                assert!(
                    r.entry.id.seq.0 > last,
                    "{origin} at {}: duplicate or out of order at {}",
                    store.node(),
                    r.entry.id.seq
                );
                last = r.entry.id.seq.0;
                held.insert(last, String::from_utf8(r.entry.payload.clone()).unwrap());
            }
            for (seq, token) in mine {
                assert_eq!(
                    held.get(seq),
                    Some(token),
                    "{origin}:{seq} acknowledged but missing at {}",
                    store.node()
                );
            }
        }
    }
    eprintln!(
        "{} rounds: {} + {} acknowledged appends, all present on both nodes",
        rounds(),
        acked[&Role::Core].len(),
        acked[&Role::Edge].len()
    );
}

/// Starts both nodes on their stores (as the children did) and links them; returns them
/// once their vectors agree.
async fn link_again(dir: &TempDir, certs: &Path) -> (cluster::Node, cluster::Node) {
    let start = |role, n: &str, core: Option<SocketAddr>| {
        let mut config = cluster::node_config(role, n, dir.path().join(n), &[kill_topic()]);
        config.link.certs_dir = Some(certs.to_path_buf());
        if let Some(core) = core {
            config.link.core = core.to_string();
        }
        cluster::Node::start(Builder::new(role, config))
    };
    let core = start(Role::Core, "hq", None).await.unwrap();
    let edge = start(Role::Edge, "alpha", Some(core.addr().unwrap()))
        .await
        .unwrap();
    let (hq, alpha) = (&core.store, &edge.store);

    let t = topic(TOPIC);
    let converged = |a: &Store, b: &Store| a.vector(&t).unwrap() == b.vector(&t).unwrap();
    let (mut hq_changes, mut alpha_changes) = (hq.changes(), alpha.changes());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !converged(hq, alpha) {
        let vectors = |s: &Store| s.vector(&t).unwrap();
        tokio::select! {
            _ = hq_changes.changed() => {}
            _ = alpha_changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => panic!("no convergence: hq {:?}, alpha {:?}", vectors(hq), vectors(alpha)),
        }
    }
    (core, edge)
}

/// The topic the children append to.
fn kill_topic() -> TopicConfig {
    TopicConfig {
        name: topic(TOPIC),
        scope: Scope::All,
        retention: Retention::default(),
    }
}

/// Well below [`protocol::tls::IDLE_TIMEOUT`] (60 s), after which the edge would give up the dead
/// link anyway, and above a keep-alive interval (15 s) plus a debug core's start on a
/// loaded machine: on a quiet link the edge's next packet, which draws the reset, may be
/// its next keep-alive.
const RESET_BOUND: Duration = Duration::from_secs(40);

/// A node's config for the reset test: port 0 for HTTP, `link` as the core's listen
/// address or the edge's core, no services (a quiet link: the edge's next packet after
/// the kill may be a keep-alive).
fn node_config(dir: &Path, node: &str, link: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{node}.toml"));
    let mut text = format!(
        "[node]\nname = \"{node}\"\ndata_dir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [pipeline]\nstart_services = false\n",
        dir.join(node).display()
    );
    if node == "hq" {
        text.push_str(&format!("[link]\nlisten = \"{link}\"\n"));
    } else {
        text.push_str(&format!(
            "[link]\ncore = \"{link}\"\ncerts_dir = \"{}\"\n",
            dir.join("hq/certs").display()
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// The value of a `key=value` field of a log line: up to the next field, or to the end.
fn log_field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + key.len()
        + 2;
    let rest = &line[start..];
    // The next ` word=` starts the next field.
    let end = rest
        .match_indices(' ')
        .map(|(i, _)| i)
        .find(|&i| {
            rest[i + 1..].split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn an_edge_hears_the_stateless_reset_of_a_restarted_core_and_redials() {
    let dir = TempDir::new("kill-reset").unwrap();
    let first = node_config(dir.path(), "hq", "127.0.0.1:0");
    let mut core = Node::start("core-node", &first);
    let ready = core.wait_for_line(|l| l.contains("node ready"), "node ready");
    // The restarted core listens where the first one did, as a core's config says.
    let link = log_field(&ready, "link").to_owned();
    let core_toml = node_config(dir.path(), "hq", &link);
    let edge_toml = node_config(dir.path(), "alpha", &link);
    let mut edge = Node::start("edge-node", &edge_toml);
    edge.wait_for("link up");
    core.wait_for("link up");

    drop(core.kill());
    let killed = Instant::now();
    let mut core = Node::start("core-node", &core_toml);
    let (restarted, _) = core.wait_for_stamped(|l| l.contains("node ready"), "node ready");
    let deadline = killed + RESET_BOUND;
    // `link down` names why the connection ended; `link closed` is a session ending
    // for any other reason, such as a lost connection taken for a protocol violation.
    let (down, line) = edge.wait_for_by(
        deadline,
        |l| l.contains("link down") || l.contains("link closed"),
        "link down",
    );
    assert!(
        line.contains("link down"),
        "the edge's session ended otherwise than by the connection's loss: {line}"
    );
    let reason = log_field(&line, "reason");
    assert!(
        reason.contains("reset"),
        "the edge lost the link for another reason than the core's reset: {line}"
    );
    let (up, _) = edge.wait_for_by(deadline, |l| l.contains("link up"), "link up again");
    core.wait_for_by(
        deadline,
        |l| l.contains("link up"),
        "the edge at the new core",
    );
    eprintln!(
        "core restarted {} ms after its kill; the edge's link down {} ms after the restart \
         ({reason}), up again {} ms after that",
        restarted.saturating_duration_since(killed).as_millis(),
        down.saturating_duration_since(restarted).as_millis(),
        up.saturating_duration_since(down).as_millis()
    );
    drop(edge.kill());
    drop(core.kill());
}
