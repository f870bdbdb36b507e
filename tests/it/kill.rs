//! SIGKILL of either node during replication (issue 3): the core and the edge run as
//! child processes (`link-writer`: a store and a link, as the node binaries run them)
//! appending to an `all` topic; one of them is killed at a random moment, restarted, and
//! so on. Then both stores are linked again and must converge with every acknowledged
//! entry of both origins exactly once, in per-origin order.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::entry::Offset;
use protocol::link::{self, Links, Local, SessionSettings};
use protocol::log::{Store, StoreConfig};
use protocol::node::Role;
use protocol::tls::{self, Allowed, Ca, NodeIdentity};
use tests::cluster::{name, topic};
use tests::{Rng, TempDir};

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
    let seed = std::env::var("TETHER_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(Rng::seed_from_clock);
    eprintln!("kill test seed {seed} (set TETHER_KILL_SEED to replay)");
    let mut rng = Rng::new(seed);
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
        for store in [&hq, &alpha] {
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

/// Opens both stores and links them; returns once their vectors agree.
async fn link_again(dir: &TempDir, certs: &Path) -> (Store, Store) {
    let open = |n: &str| Store::open(dir.path().join(n), StoreConfig::new(name(n))).unwrap();
    let (hq, alpha) = (open("hq"), open("alpha"));
    let transport = Arc::new(tls::transport_config());
    let core_id = NodeIdentity::load(certs, &name("hq"), Role::Core).unwrap();
    let edge_id = NodeIdentity::load(certs, &name("alpha"), Role::Edge).unwrap();
    let server =
        tls::server_endpoint(([127, 0, 0, 1], 0).into(), &core_id, transport.clone()).unwrap();
    let client = tls::client_endpoint(([127, 0, 0, 1], 0).into(), &edge_id, transport).unwrap();
    let local = |store: &Store, core| Local {
        store: store.clone(),
        core,
        settings: SessionSettings::default(),
        mirror: None,
    };
    let allowed = Allowed::List(vec![name("alpha")]);
    tokio::spawn(link::serve(
        local(&hq, true),
        server.clone(),
        allowed,
        Links::default(),
    ));
    let link = Links::default().link(&name("hq"));
    tokio::spawn(link::dial(
        local(&alpha, false),
        client,
        server.local_addr().unwrap().to_string(),
        name("hq"),
        link,
    ));

    let t = topic(TOPIC);
    let converged = |a: &Store, b: &Store| a.vector(&t).unwrap() == b.vector(&t).unwrap();
    let (mut hq_changes, mut alpha_changes) = (hq.changes(), alpha.changes());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !converged(&hq, &alpha) {
        let vectors = |s: &Store| s.vector(&t).unwrap();
        tokio::select! {
            _ = hq_changes.changed() => {}
            _ = alpha_changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => panic!("no convergence: hq {:?}, alpha {:?}", vectors(&hq), vectors(&alpha)),
        }
    }
    (hq, alpha)
}
