//! The Helm chart (`helm/tether`), offline. `helm/tests/test_chart.py` lints and renders
//! every preset with Helm's own Go SDK, validates the objects against the Kubernetes
//! schemas, checks the kinds without one field by field, and checks that bad values are
//! refused with a clear message (`tools::python`: skipped without the venv, unless
//! `TETHER_REQUIRE_TOOLS` is set). Then the real binaries run with the config files it
//! rendered: the core and edge presets linked over QUIC on loopback, the EZUA preset alone,
//! each answering the probes' paths and stopping cleanly on SIGTERM.
//!
//! What must differ on a test machine from a pod is overridden as an operator would, with
//! `TETHER_<SECTION>__<KEY>` variables: the data directory, the certificates directory
//! (certificates made by `core-node certs`), loopback addresses on free ports, and the
//! edge's core address.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use protocol::config::Config;
use protocol::node::Role;
use tests::TempDir;

use crate::process::{Node, PATIENCE, binary};
use crate::tools;

/// The Python modules the script imports.
const MODULES: &[&str] = &["helm_python", "kubernetes_validate", "yaml"];

/// The config files the script writes, by scenario, and the binary that reads each.
const RENDERED: &[(&str, &str)] = &[
    ("core", "core-node"),
    ("edge", "edge-node"),
    ("ezua", "core-node"),
    ("core-full", "core-node"),
    ("edge-full", "edge-node"),
];

/// Runs the chart's tests into `out`; returns their report, or `None` when the venv is
/// missing (and tools are not required). Fails the test, showing the report, if any
/// check failed.
fn run_chart_tests(test: &str, out: &Path) -> Option<String> {
    let python = tools::python(test, MODULES)?;
    let script = tools::root().join("helm/tests/test_chart.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(out)
        .output()
        .expect("run the chart tests");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{report}",
        python.display(),
        script.display(),
        output.status
    );
    Some(report)
}

#[test]
fn the_chart_lints_renders_validates_and_refuses_bad_values() {
    let out = TempDir::new("chart-lint").unwrap();
    let Some(report) = run_chart_tests("chart", out.path()) else {
        return;
    };
    // Shown with --nocapture: the object list per preset goes into the closing note.
    println!("{report}");
    assert!(report.contains(" passed, 0 failed"), "{report}");
    for (name, _) in RENDERED {
        assert!(
            out.path().join(format!("{name}.toml")).is_file(),
            "no {name}.toml rendered:\n{report}"
        );
    }
}

#[test]
fn the_rendered_configs_run_the_real_nodes() {
    let out = TempDir::new("chart-nodes").unwrap();
    if run_chart_tests("chart", out.path()).is_none() {
        return;
    }
    let rendered = |name: &str| out.path().join(format!("{name}.toml"));

    // Every rendered file, every option on included, loads in the binary that reads it.
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = RENDERED.iter().map(|(n, _)| format!("{n}.toml")).collect();
    expected.sort();
    assert_eq!(files, expected, "a rendered config this test does not run");
    for (name, bin) in RENDERED {
        let printed = Command::new(binary(bin))
            .arg("--print-config")
            .arg("--config")
            .arg(rendered(name))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&printed.stdout);
        assert!(
            printed.status.success(),
            "{bin} refuses {name}.toml: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
        for key in ["data_dir = \"/var/lib/tether\"", "demo_certs = false"] {
            assert!(
                text.contains(key),
                "{name}.toml as loaded lacks {key}:\n{text}"
            );
        }
    }

    // The mission CA and the nodes' certificates, as an operator makes them for the
    // Secrets, in one directory: the core's (init) and the edge's (issue).
    let core = Config::load(Role::Core, Some(&rendered("core"))).unwrap();
    let edge = Config::load(Role::Edge, Some(&rendered("edge"))).unwrap();
    let certs = out.path().join("certs");
    certs_command(&rendered("core"), &["certs", "init", "--dir"], &certs);
    certs_command(
        &rendered("core"),
        &["certs", "issue", edge.node.name.as_str(), "--dir"],
        &certs,
    );
    assert_eq!(
        edge.link.core_name, core.node.name,
        "the edge preset dials another core"
    );
    assert!(
        core.link.edges.contains(&edge.node.name),
        "the core preset does not list the edge preset's node"
    );

    // The core and the edge presets, linked.
    let mut hq = start(
        "core-node",
        &rendered("core"),
        &out.path().join("core"),
        &certs,
        &[("TETHER_LINK__LISTEN", "127.0.0.1:0".to_owned())],
    );
    let ready = hq.wait_for_line(|l| l.contains("node ready"), "node ready");
    let link = field(&ready, "link");
    let served = hq.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    probes("core", &field(&served, "http"));

    let mut alpha = start(
        "edge-node",
        &rendered("edge"),
        &out.path().join("edge"),
        &certs,
        &[("TETHER_LINK__CORE", link)],
    );
    alpha.wait_for("node ready");
    let served = alpha.wait_for_line(|l| l.contains("the edge serves HTTP"), "edge HTTP");
    probes("edge", &field(&served, "http"));
    alpha.wait_for("link up");
    hq.wait_for("link up");
    stop("edge", alpha);
    stop("core", hq);

    // The EZUA preset: a core of its own.
    let mut ezua = start(
        "core-node",
        &rendered("ezua"),
        &out.path().join("ezua"),
        &certs,
        &[("TETHER_LINK__LISTEN", "127.0.0.1:0".to_owned())],
    );
    ezua.wait_for("node ready");
    let served = ezua.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    probes("ezua", &field(&served, "http"));
    stop("ezua", ezua);
}

/// Runs `core-node <args> <certs> --config <config>`, which must succeed.
fn certs_command(config: &Path, args: &[&str], certs: &Path) {
    let out = Command::new(binary("core-node"))
        .args(args)
        .arg(certs)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "core-node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `bin` with the rendered config, the pod's paths and addresses overridden for
/// this machine: data in `data`, certificates from `certs`, HTTP on a free loopback port.
fn start(bin: &str, config: &Path, data: &Path, certs: &Path, extra: &[(&str, String)]) -> Node {
    let mut command = Command::new(binary(bin));
    command
        .arg("--config")
        .arg(config)
        .env("TETHER_NODE__DATA_DIR", data)
        .env("TETHER_LINK__CERTS_DIR", certs)
        .env("TETHER_HTTP__LISTEN", "127.0.0.1:0");
    for (var, value) in extra {
        command.env(var, value);
    }
    Node::spawn(&mut command)
}

/// Stops a node with SIGTERM, by PID, as Kubernetes does; it must stop cleanly.
fn stop(what: &str, node: Node) {
    node.signal("TERM");
    let (status, log) = node.exit();
    assert!(status.success(), "{what} exited with {status}; log:\n{log}");
    assert!(
        log.contains("node stopped"),
        "{what}: no clean stop:\n{log}"
    );
}

/// A field of a log line: JSON (`log.format = "json"`, as the presets render) or text.
fn field(line: &str, name: &str) -> String {
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        value["fields"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no field {name} in {line}"))
            .to_owned()
    } else {
        let prefix = format!("{name}=");
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no field {name} in {line}"))
            .trim_matches('"')
            .to_owned()
    }
}

/// The probes' paths answer 200 at `addr`, as the kubelet asks them.
fn probes(what: &str, addr: &str) {
    for path in ["/healthz", "/readyz"] {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{what}: GET {path}:\n{response}"
        );
    }
}
