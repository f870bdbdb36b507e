//! The two node binaries, run as real processes: configuration, start, a clean stop on
//! SIGTERM or Ctrl-C (SIGINT) that leaves a flushed store behind, and a mirror by hand
//! (`core-node` serving its volume, `edge-node mirror`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use protocol::entry::{NodeName, Offset, TopicName};
use protocol::log::{Store, StoreConfig};
use tests::{Rng, TempDir};

use crate::support::process::{Node, PATIENCE, binary};

fn write_config(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join("node.toml");
    let data = dir.join("data");
    let mut text = format!(
        "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    // Port 0: no clash with another test, or with a node a developer runs.
    text.push_str("[http]\nlisten = \"127.0.0.1:0\"\n");
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
    // Nothing at HQ appends to ASSET_REQUEST (its feed fills IMAGE_FEED at once).
    stops_cleanly("core-node", "hq", "TERM", "ASSET_REQUEST");
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
fn a_node_serving_http_beyond_loopback_without_a_token_refuses_to_start() {
    // The check comes before any socket opens: nothing listens beyond loopback here.
    for binary_name in ["core-node", "edge-node"] {
        let out = Command::new(binary(binary_name))
            .env("TETHER_HTTP__LISTEN", "0.0.0.0:0")
            .env("TETHER_NODE__DATA_DIR", "/nonexistent/never-created")
            .arg("-c")
            .arg("/dev/null")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{binary_name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("http.token")
                && err.contains("TETHER_HTTP__TOKEN")
                && err.contains("insecure_no_token"),
            "{binary_name}: {err}"
        );
    }
}

#[test]
fn the_demo_runs_the_pipeline_across_an_outage() {
    use std::io::Write;
    let dir = TempDir::new("demo").unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--profile", "lte", "--http-port", "0", "--data"])
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
        seen.push(line.clone());
        if found {
            break line;
        }
    };
    let mut input = demo.stdin.take().unwrap();
    let mut say = |line: &str| writeln!(input, "{line}").unwrap();

    wait_for("demo: HQ listens");
    // HQ's demo feed lists an image, downloads it and tells the field.
    let line = wait_for("alpha broadcast-listener:");
    let id = line
        .rsplit_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no asset id in {line:?}"))
        .to_owned();
    // The link goes down: the request waits at the edge, then crosses.
    say("down");
    wait_for("link down");
    say(&format!("request {id}"));
    wait_for(&format!("Requested from HQ [{id}]"));
    say("up");
    wait_for(&format!("Ready at HQ: mirror to fetch it [{id}]"));
    say("mirror");
    wait_for(&format!("Received [{id}]"));
    say("quit");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || drop(done_tx.send(demo.wait())));
    let status = done_rx
        .recv_timeout(PATIENCE)
        .expect("the demo stops")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Starts `core-node` with `config`; returns it and the address its link listens on.
fn start_core(config: &Path) -> (Node, String) {
    let mut core = Node::start("core-node", config);
    let ready = core.wait_for_line(|l| l.contains("node ready"), "node ready");
    let address = ready
        .split_whitespace()
        .find_map(|field| field.strip_prefix("link="))
        .unwrap_or_else(|| panic!("no link address in {ready:?}"))
        .to_owned();
    (core, address)
}

/// `edge-node mirror` with the edge's config, dialing the core at `core`.
fn edge_mirror(config: &Path, core: &str, envs: &[(&str, &str)]) -> Node {
    let mut command = Command::new(binary("edge-node"));
    command
        .args(["mirror", "--config"])
        .arg(config)
        .env("TETHER_LINK__CORE", core);
    for (key, value) in envs {
        command.env(key, value);
    }
    Node::spawn(&mut command)
}

/// Every path under `dir`: files with their bytes, directories as `None`.
fn tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn edge_node_mirror_brings_the_core_volume_by_hand() {
    let dir = TempDir::new("mirror-by-hand").unwrap();
    let (hq, alpha) = (dir.path().join("hq"), dir.path().join("alpha"));
    std::fs::create_dir_all(&hq).unwrap();
    std::fs::create_dir_all(&alpha).unwrap();
    let core_config = write_config(&hq, "hq");
    let volume = hq.join("data/volume");
    let current = alpha.join("data/mirror/current");
    let put = |rel: &str, bytes: &[u8]| {
        let path = volume.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    let mut image = vec![0u8; 1_500_000];
    Rng::new(1).fill(&mut image);
    put("maps/sector-7.tif", &image);
    put("briefing.txt", b"proceed to the ridge at dawn\n");
    std::fs::create_dir_all(volume.join("inbox")).unwrap();
    // Two names equal but for case: the edge refuses such a manifest.
    put("Report.txt", b"one");
    put("REPORT.txt", b"two");
    // The edge uses the certificates the core makes for its listed edges (demo mode).
    let edge_config = write_config(&alpha, "alpha");
    let certs = hq.join("data/certs");
    let mut text = std::fs::read_to_string(&edge_config).unwrap();
    text.push_str(&format!("[link]\ncerts_dir = \"{}\"\n", certs.display()));
    std::fs::write(&edge_config, text).unwrap();

    // A refused manifest: exit 1 with the reason; the (empty) mirror is kept.
    let (core, address) = start_core(&core_config);
    let (status, log) = edge_mirror(&edge_config, &address, &[]).exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("error: the mirror failed") && log.contains("REPORT.txt"),
        "{log}"
    );
    assert!(tree(&current).is_empty(), "{:?}", tree(&current).keys());
    core.signal("TERM");
    let (status, log) = core.exit();
    assert!(status.success(), "{log}");

    // Fixed at the core (restarted: it scans the volume at start). A mirror capped at
    // 100 kB/s is stopped with Ctrl-C once a KiB or more is verified (a chunk of the
    // image, not only the small files): exit 1, resumable.
    std::fs::remove_file(volume.join("REPORT.txt")).unwrap();
    let (core, address) = start_core(&core_config);
    let cap = [("TETHER_MIRROR__MAX_RATE", "100000")];
    let mut edge = edge_mirror(&edge_config, &address, &cap);
    edge.wait_for_line(
        |l| {
            l.strip_prefix("mirror: running: ")
                .and_then(|rest| rest.split_once(" of "))
                .is_some_and(|(done, _)| !done.ends_with(" B"))
        },
        "mirror: running with a KiB or more verified",
    );
    edge.signal("INT");
    let (status, log) = edge.exit();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("stopped before the mirror was done") && log.contains("node stopped"),
        "{log}"
    );
    assert!(tree(&current).is_empty(), "{:?}", tree(&current).keys());

    // Again, uncapped: it resumes, fetches only the rest, and the files are in `current`.
    let (status, log) = edge_mirror(&edge_config, &address, &[]).exit();
    assert!(status.success(), "{status}: {log}");
    let done = log
        .lines()
        .find(|l| l.starts_with("mirror: done in"))
        .unwrap_or_else(|| panic!("no summary in {log}"));
    let fetched: u64 = done
        .split_once(" bytes fetched")
        .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no fetched bytes in {done:?}"));
    let payload = (image.len() + 29 + 3) as u64;
    assert!(fetched > 0 && fetched + 1000 < payload, "{done}");
    assert_eq!(tree(&current), tree(&volume));
    assert!(tree(&current).contains_key("inbox"));
    core.signal("TERM");
    let (status, log) = core.exit();
    assert!(status.success(), "{log}");
}

/// A node whose disk fills up (a 24 MiB tmpfs of its own, in a mount namespace the test
/// makes) refuses appends with 507 and the reason, goes on serving reads, and stays up
/// through later retention passes instead of exiting.
#[test]
fn a_full_disk_refuses_appends_and_the_node_goes_on_serving() {
    let dir = TempDir::new("full-disk").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("alpha.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"alpha\"\ndata_dir = \"{}\"\n\
             [log]\nfilter = \"info,protocol::node=debug\"\n\
             [store]\nmin_free = \"8MiB\"\ndisk_budget = 0\nretention_interval = \"1s\"\n\
             [link]\ncore = \"127.0.0.1:9\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            data.join("alpha").display()
        ),
    )
    .unwrap();
    // The tmpfs exists only in the node's own mount namespace, and ends with it.
    let mut node = Node::spawn(
        Command::new("unshare")
            .args(["--mount", "sh", "-c"])
            .arg("mount -t tmpfs -o size=24m tether-full \"$1\" && exec \"$2\" --config \"$3\"")
            .arg("sh")
            .arg(&data)
            .arg(binary("edge-node"))
            .arg(&config),
    );
    let http = node.wait_for_line(|l| l.contains("serves HTTP"), "serves HTTP");
    let http = crate::support::process::field(&http, "http=");
    let entries = format!("http://{http}/api/v1/topics/MESSAGES/entries");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = || {
        let mut answer = agent
            .post(&entries)
            .header("content-type", "application/json")
            .send(format!("{{\"payload\": \"{}\"}}", "f".repeat(64 << 10)))
            .unwrap();
        let status = answer.status().as_u16();
        (
            status,
            answer.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let mut taken = 0;
    let (status, text) = loop {
        let (status, text) = post();
        if status != 201 {
            break (status, text);
        }
        taken += 1;
        assert!(taken < 1000, "24 MiB never filled");
    };
    assert!(taken > 10, "{taken} entries taken before the disk was full");
    assert_eq!(status, 507, "{text}");
    assert!(
        text.contains("disk-full") && text.contains("store.min_free"),
        "{text}"
    );
    // Two retention passes later the node is still up, still refusing, and still serving.
    node.wait_for("retention pass");
    node.wait_for("retention pass");
    assert_eq!(post().0, 507);
    let mut read = agent
        .get(&format!("{entries}?from=0&limit=1"))
        .call()
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);
    let text = read.body_mut().read_to_string().unwrap();
    assert!(text.contains("\"offset\":0"), "{text}");
    let node_view = agent
        .get(&format!("http://{http}/api/v1/node"))
        .call()
        .unwrap();
    assert_eq!(node_view.status().as_u16(), 200);
}
