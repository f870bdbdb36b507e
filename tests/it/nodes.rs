//! The two node binaries, run as real processes: configuration, start, and a clean stop
//! on SIGTERM or Ctrl-C (SIGINT) that leaves a flushed store behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use protocol::entry::{NodeName, Offset, TopicName};
use protocol::log::{Store, StoreConfig};
use tests::TempDir;

/// Generous: a debug binary on a loaded 2-core machine. Only reached on failure.
const PATIENCE: Duration = Duration::from_secs(60);

/// The path of a node binary, built once per test run with the workspace's cargo (the
/// integration-test crate cannot name another package's binaries directly).
fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(cargo)
            .args([
                "build",
                "--locked",
                "-p",
                "core-node",
                "-p",
                "edge-node",
                "--bins",
            ])
            .current_dir(&root)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the node binaries failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // The test executable lives in target/<profile>/deps; the binaries one level up.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("no target directory")?;
        profile
            .join("../debug")
            .canonicalize()
            .map_err(|e| e.to_string())
    });
    match dir {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("{e}"),
    }
}

/// A node process whose stderr (its log) is read line by line on a thread.
struct Node {
    child: Child,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Node {
    fn start(binary_name: &str, config: &Path) -> Node {
        let mut child = Command::new(binary(binary_name))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the node");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `text`.
    fn wait_for(&mut self, text: &str) {
        loop {
            match self.log.recv_timeout(PATIENCE) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no log line with {text:?}; log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends a signal by PID.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; returns its status and the rest of its log.
    fn exit(mut self) -> (ExitStatus, String) {
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        std::thread::spawn(move || drop(tx.send(child.wait())));
        let status = rx
            .recv_timeout(PATIENCE)
            .expect("the node exits")
            .expect("wait for the node");
        self.seen.extend(self.log.iter());
        (status, self.seen.join("\n"))
    }
}

fn write_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join("node.toml");
    let data = dir.join("data");
    let mut text = format!(
        "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    // Port 0: no clash with another test, or with a node a developer runs.
    if name == "hq" {
        text.push_str("[link]\nlisten = \"127.0.0.1:0\"\n");
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn stops_cleanly(binary_name: &str, node: &str, signal: &str, topic: &str) {
    let dir = TempDir::new("node").unwrap();
    let config = write_config(dir.path(), node);
    let mut process = Node::start(binary_name, &config);
    process.wait_for("node ready");
    process.signal(signal);
    let (status, log) = process.exit();
    assert!(
        status.success(),
        "{binary_name} exited with {status}; log:\n{log}"
    );
    assert!(
        log.contains("node stopped"),
        "no clean stop in the log:\n{log}"
    );

    // The store was closed cleanly: it opens at once (not locked) and holds its topics.
    let store = Store::open(
        dir.path().join("data/store"),
        StoreConfig::new(NodeName::new(node).unwrap()),
    )
    .unwrap();
    let info = store
        .topic(&TopicName::new(topic).unwrap())
        .expect("default topic created");
    assert_eq!(info.next, Offset(0));
}

#[test]
fn core_node_stops_cleanly_on_sigterm() {
    stops_cleanly("core-node", "hq", "TERM", "IMAGE_FEED");
}

#[test]
fn edge_node_stops_cleanly_on_ctrl_c() {
    stops_cleanly("edge-node", "alpha", "INT", "ASSET_REQUEST");
}

#[test]
fn the_dev_configs_are_the_printed_defaults() {
    for name in ["core-node", "edge-node"] {
        let out = Command::new(binary(name))
            .arg("--print-config")
            .output()
            .unwrap();
        assert!(out.status.success());
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../{name}/config.dev.toml"));
        let committed = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            committed,
            "{} is stale: regenerate it with `cargo run -p {name} -- --print-config > {name}/config.dev.toml`",
            file.display()
        );
    }
}

#[test]
fn a_bad_config_names_the_file_and_the_key() {
    let dir = TempDir::new("node-config").unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[store]\nmax_entry_bytez = 5\n").unwrap();
    let out = Command::new(binary("core-node"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("max_entry_bytez"),
        "{err}"
    );

    let out = Command::new(binary("edge-node"))
        .env("TETHER_NODE__NAME", "Not_Valid")
        .arg("--print-config")
        .arg("-c")
        .arg("/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("TETHER_NODE__NAME") && err.contains("invalid node name"),
        "{err}"
    );
}

#[test]
fn the_demo_shows_store_and_forward_across_an_outage() {
    use std::io::Write;
    let dir = TempDir::new("demo").unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--profile", "lte", "--data"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |text: &str| loop {
        let line = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no {text:?} in:\n{}", seen.join("\n")));
        let found = line.contains(text);
        seen.push(line);
        if found {
            break;
        }
    };
    let mut input = demo.stdin.take().unwrap();
    let mut say = |line: &str| writeln!(input, "{line}").unwrap();

    wait_for("demo: HQ listens");
    say("hq hello field");
    wait_for("alpha received ASSET_BROADCAST hq:1 \"hello field\"");
    // The link goes down: the edge's request waits at the edge, then crosses.
    say("down");
    wait_for("link down");
    say("alpha sent while down");
    wait_for("alpha appended to ASSET_REQUEST");
    say("up");
    wait_for("hq received ASSET_REQUEST alpha:1 \"sent while down\"");
    say("quit");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || drop(done_tx.send(demo.wait())));
    let status = done_rx
        .recv_timeout(PATIENCE)
        .expect("the demo stops")
        .unwrap();
    assert!(status.success(), "{status}");
}
