//! The Helm chart (`helm/tether`), offline. `helm/tests/test_chart.py` lints and renders
//! every preset with Helm's own Go SDK, validates the objects against the Kubernetes
//! schemas, checks the kinds without one field by field, and checks that bad values are
//! refused with a clear message (`tools::python`: skipped without the venv, unless
//! `TETHER_REQUIRE_TOOLS` is set). Then the real binaries run with the config files it
//! rendered and the environment the StatefulSet gives them (the tokens from the Secret
//! the chart rendered): every file loads as the pod has it (HTTP on 0.0.0.0) with the
//! tokens and is refused without them, unless it is the lab's `insecureNoToken`; the core
//! and edge presets linked over QUIC on loopback, the EZUA preset alone, each answering
//! the probes' paths without a token, refusing a change without the token or with the
//! read token, and stopping cleanly on SIGTERM.
//!
//! What must differ on a test machine from a pod is overridden as an operator would, with
//! `TETHER_<SECTION>__<KEY>` variables: the data directory, the certificates directory
//! (certificates made by `core-node certs`), loopback addresses on free ports (a test
//! opens no port beyond this machine; the files' 0.0.0.0 is checked by loading them), and
//! the edge's core address.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use protocol::config::Config;
use protocol::node::Role;
use tests::TempDir;

use crate::support::process::{Node, PATIENCE, binary};
use crate::support::tools;

/// The Python modules the script imports.
const MODULES: &[&str] = &["helm_python", "kubernetes_validate", "yaml"];

/// The config files the script writes, by scenario, and the binary that reads each.
/// Each comes with `<scenario>.env.json`, the environment its StatefulSet gives the node.
const RENDERED: &[(&str, &str)] = &[
    ("core", "core-node"),
    ("edge", "edge-node"),
    ("edge-enroll", "edge-node"),
    ("ezua", "core-node"),
    ("core-full", "core-node"),
    ("core-enrolls", "core-node"),
    ("edge-full", "edge-node"),
    ("insecure", "edge-node"),
    ("core-backbone", "core-node"),
    ("edge-failover", "edge-node"),
];

/// The scenario that opts out of the token (`http.insecureNoToken`).
const INSECURE: &str = "insecure";

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
        for file in [format!("{name}.toml"), format!("{name}.env.json")] {
            assert!(
                out.path().join(&file).is_file(),
                "no {file} rendered:\n{report}"
            );
        }
    }
}

#[test]
fn the_rendered_configs_run_the_real_nodes() {
    let out = TempDir::new("chart-nodes").unwrap();
    if run_chart_tests("chart", out.path()).is_none() {
        return;
    }
    let rendered = |name: &str| out.path().join(format!("{name}.toml"));

    // Every rendered file, every option on included, loads in the binary that reads it,
    // as the pod has it: HTTP on every interface, the tokens from the environment.
    let mut files: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = RENDERED
        .iter()
        .flat_map(|(n, _)| [format!("{n}.toml"), format!("{n}.env.json")])
        .collect();
    expected.sort();
    assert_eq!(files, expected, "a rendered config this test does not run");
    for (name, bin) in RENDERED {
        let env = pod_env(out.path(), name);
        let printed = print_config(bin, &rendered(name), &env);
        let text = String::from_utf8_lossy(&printed.stdout);
        assert!(
            printed.status.success(),
            "{bin} refuses {name}.toml with its pod's environment {:?}: {}",
            env.keys(),
            String::from_utf8_lossy(&printed.stderr)
        );
        let insecure = *name == INSECURE;
        // Each pod of a release with several cores is a core of its own (the first: hq-0),
        // on the backbone; an edge of theirs lists the other to fail over to.
        if *name == "core-backbone" {
            for key in ["name = \"hq-0\"", "backbone = true", "replicas = 3"] {
                assert!(
                    text.contains(key),
                    "{name}.toml as loaded lacks {key}:\n{text}"
                );
            }
        }
        if *name == "edge-failover" {
            let key = r#"failover = ["hq-1@hq-1.example.org:7000"]"#;
            assert!(
                text.contains(key),
                "{name}.toml as loaded lacks {key}:\n{text}"
            );
        }
        if *name == "core-full" {
            assert!(
                text.contains(r#"download_allow = ["10.20.0.0/16", "fd00::/8"]"#),
                "{name}.toml as loaded lacks its download_allow:\n{text}"
            );
        }
        for key in [
            "data_dir = \"/var/lib/tether\"",
            "demo_certs = false",
            "listen = \"0.0.0.0:8080\"",
            if insecure {
                "insecure_no_token = true"
            } else {
                "insecure_no_token = false"
            },
        ] {
            assert!(
                text.contains(key),
                "{name}.toml as loaded lacks {key}:\n{text}"
            );
        }
        // The tokens come from the Secret, in the environment, or there are none at all:
        // without them the file alone is refused, saying what to set.
        assert_eq!(
            env.contains_key("TETHER_HTTP__TOKEN") && env.contains_key("TETHER_HTTP__READ_TOKEN"),
            !insecure,
            "{name}: the pod's environment {:?}",
            env.keys()
        );
        let without: BTreeMap<String, String> = env
            .iter()
            .filter(|(var, _)| !var.starts_with("TETHER_HTTP__"))
            .map(|(var, value)| (var.clone(), value.clone()))
            .collect();
        let bare = print_config(bin, &rendered(name), &without);
        if insecure {
            assert!(bare.status.success(), "{bin} refuses {name}.toml");
        } else {
            let stderr = String::from_utf8_lossy(&bare.stderr);
            assert!(
                !bare.status.success() && stderr.contains("TETHER_HTTP__TOKEN"),
                "{bin} takes {name}.toml without a token ({}):\n{stderr}",
                bare.status
            );
        }
    }

    // The mission CA and the nodes' certificates, as an operator makes them for the
    // Secrets, in one directory: the core's (init) and the edge's (issue).
    let core = here(out.path(), "core", Role::Core);
    let edge = here(out.path(), "edge", Role::Edge);
    let certs = out.path().join("certs");
    let hq_env = pod_env(out.path(), "core");
    certs_command(
        &rendered("core"),
        &hq_env,
        &["certs", "init", "--dir"],
        &certs,
    );
    certs_command(
        &rendered("core"),
        &hq_env,
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
        &hq_env,
        &[("TETHER_LINK__LISTEN", "127.0.0.1:0".to_owned())],
    );
    let ready = hq.wait_for_line(|l| l.contains("node ready"), "node ready");
    let link = field(&ready, "link");
    let served = hq.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    probes("core", &field(&served, "http"));
    tokens("core", &field(&served, "http"), &hq_env);

    let alpha_env = pod_env(out.path(), "edge");
    let mut alpha = start(
        "edge-node",
        &rendered("edge"),
        &out.path().join("edge"),
        &certs,
        &alpha_env,
        &[("TETHER_LINK__CORE", link)],
    );
    alpha.wait_for("node ready");
    let served = alpha.wait_for_line(|l| l.contains("the edge serves HTTP"), "edge HTTP");
    probes("edge", &field(&served, "http"));
    tokens("edge", &field(&served, "http"), &alpha_env);
    alpha.wait_for("link up");
    hq.wait_for("link up");
    stop("edge", alpha);
    stop("core", hq);

    // The EZUA preset: a core of its own.
    let ezua_env = pod_env(out.path(), "ezua");
    let mut ezua = start(
        "core-node",
        &rendered("ezua"),
        &out.path().join("ezua"),
        &certs,
        &ezua_env,
        &[("TETHER_LINK__LISTEN", "127.0.0.1:0".to_owned())],
    );
    ezua.wait_for("node ready");
    let served = ezua.wait_for_line(|l| l.contains("HQ serves HTTP"), "HQ serves HTTP");
    probes("ezua", &field(&served, "http"));
    tokens("ezua", &field(&served, "http"), &ezua_env);
    stop("ezua", ezua);
}

/// The environment the scenario's StatefulSet gives the node, as the script wrote it:
/// the tokens read from the Secret the chart rendered (or stand-ins for the operator's
/// own Secret), and `extraEnv`.
fn pod_env(out: &Path, name: &str) -> BTreeMap<String, String> {
    let path = out.join(format!("{name}.env.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `<bin> --print-config --config <config>` with exactly `env` among the node's
/// variables.
fn print_config(bin: &str, config: &Path, env: &BTreeMap<String, String>) -> Output {
    let mut command = Command::new(binary(bin));
    command
        .arg("--print-config")
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TETHER_") {
            command.env_remove(var);
        }
    }
    command.envs(env).output().unwrap()
}

/// The scenario's config as this machine runs it (its pod's environment, HTTP on
/// loopback), loaded here: the binary prints it, this process reads the printed file.
fn here(out: &Path, name: &str, role: Role) -> Config {
    let bin = match role {
        Role::Core => "core-node",
        Role::Edge => "edge-node",
    };
    let mut env = pod_env(out, name);
    env.insert("TETHER_HTTP__LISTEN".to_owned(), "127.0.0.1:0".to_owned());
    let printed = print_config(bin, &out.join(format!("{name}.toml")), &env);
    assert!(
        printed.status.success(),
        "{bin} refuses {name}.toml: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let path: PathBuf = out.join(format!("{name}.here.toml"));
    std::fs::write(&path, &printed.stdout).unwrap();
    Config::load::<mission::Settings>(role, Some(&path))
        .unwrap()
        .0
}

/// Runs `core-node <args> <certs> --config <config>` with the pod's environment (the
/// config needs its token), which must succeed.
fn certs_command(config: &Path, pod: &BTreeMap<String, String>, args: &[&str], certs: &Path) {
    let out = Command::new(binary("core-node"))
        .args(args)
        .arg(certs)
        .arg("--config")
        .arg(config)
        .envs(pod)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "core-node {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `bin` with the rendered config and its pod's environment (the tokens), the
/// pod's paths and addresses overridden for this machine: data in `data`, certificates
/// from `certs`, HTTP on a free loopback port.
fn start(
    bin: &str,
    config: &Path,
    data: &Path,
    certs: &Path,
    pod: &BTreeMap<String, String>,
    extra: &[(&str, String)],
) -> Node {
    let mut command = Command::new(binary(bin));
    command
        .arg("--config")
        .arg(config)
        .envs(pod)
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

/// The probes' paths answer 200 at `addr` without a token, as the kubelet asks them.
fn probes(what: &str, addr: &str) {
    for path in ["/healthz", "/readyz"] {
        let (status, response) = request(addr, "GET", path, None, None);
        assert_eq!(status, 200, "{what}: GET {path}:\n{response}");
    }
}

/// The tokens the pod's environment gave the node hold: a change needs the token (the
/// read token, which only reads, is refused), and Prometheus' GET of /metrics with the
/// read token answers.
fn tokens(what: &str, addr: &str, pod: &BTreeMap<String, String>) {
    let token = pod["TETHER_HTTP__TOKEN"].as_str();
    let read_token = pod["TETHER_HTTP__READ_TOKEN"].as_str();
    let change = |token| {
        request(
            addr,
            "PUT",
            "/api/v1/log",
            token,
            Some(r#"{"filter":"info"}"#),
        )
    };
    let (status, response) = change(None);
    assert_eq!(status, 401, "{what}: a change without a token:\n{response}");
    let (status, response) = change(Some(read_token));
    assert_eq!(
        status, 403,
        "{what}: a change with the read token:\n{response}"
    );
    let (status, response) = change(Some(token));
    assert_eq!(status, 200, "{what}: a change with the token:\n{response}");
    for path in ["/metrics", "/api/v1/node"] {
        let (status, response) = request(addr, "GET", path, None, None);
        assert_eq!(status, 401, "{what}: {path} without a token:\n{response}");
        let (status, response) = request(addr, "GET", path, Some(read_token), None);
        assert_eq!(
            status, 200,
            "{what}: {path} with the read token:\n{response}"
        );
    }
}

/// One HTTP/1.1 request to `addr`, with a bearer token and a JSON body if given: the
/// status and the whole response.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(stream, "{head}\r\n{body}").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    (status, response)
}
