//! `failover`: a two-core HQ on a NATS backbone (`bridge.backbone`, a real `nats-server`
//! with JetStream on loopback), its edges dialing core-a and listing core-b to fail over
//! to; core-a is killed with SIGKILL, and the time is measured until an entry each edge
//! appends just after is readable at core-b (its edges replicate through the other core).
//! With the default idle timeout (60 s) and with 10 s. All nodes are this binary as
//! `core-node` and `edge-node`, each in a process of its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::TempDir;

use crate::bridge::nats_server;
use crate::node::{NodeProcess, field};
use crate::round2;

/// The longest a phase may take (failover itself included).
const PATIENCE: Duration = Duration::from_secs(180);

/// Entries each edge appends before the kill (they cross through core-a and the backbone).
const BEFORE: usize = 20;

/// One case: its name, the links' idle timeout and keep-alive (`None`: the defaults).
struct Case {
    name: &'static str,
    idle_timeout: Option<(u64, u64)>,
}

/// A node's process and HTTP API.
struct Running {
    process: NodeProcess,
    api: String,
}

fn start(role: &str, config: &Path) -> Result<Running, String> {
    let mut process = NodeProcess::start(role, config)?;
    let line = process.wait_for("serves HTTP", PATIENCE)?;
    let http = field(&line, "http=").ok_or("no HTTP address in the node's log")?;
    Ok(Running {
        process,
        api: format!("http://{http}/api/v1"),
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

fn get(url: &str) -> Option<Value> {
    let mut answer = agent().get(url).call().ok()?;
    (answer.status().as_u16() == 200)
        .then(|| serde_json::from_reader(answer.body_mut().as_reader()).ok())
        .flatten()
}

fn append(api: &str, payload: &str) -> Result<(), String> {
    let answer = agent()
        .post(&format!("{api}/topics/NEWS/entries"))
        .header("content-type", "application/json")
        .send(json!({ "payload": payload }).to_string())
        .map_err(|e| format!("append at {api}: {e}"))?;
    match answer.status().as_u16() {
        201 => Ok(()),
        other => Err(format!("append at {api}: HTTP {other}")),
    }
}

/// How many entries of `origin` NEWS at `api` holds.
fn held(api: &str, origin: &str) -> usize {
    let mut count = 0;
    let mut from = 0;
    while let Some(page) = get(&format!("{api}/topics/NEWS/entries?from={from}&limit=1000")) {
        let Some(page) = page.as_array() else { break };
        if page.is_empty() {
            break;
        }
        from += page.len();
        count += page.iter().filter(|e| e["origin"] == origin).count();
    }
    count
}

/// Polls `done` every 20 ms until it holds or `PATIENCE` passes.
fn wait(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Writes a node's config into `dir`; `link` is its `[link]` section's body.
fn config(dir: &Path, name: &str, link: &str, more: &str) -> Result<PathBuf, String> {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\
         [link]\n{link}\ncerts_dir = \"{}\"\ndemo_certs = true\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [pipeline]\nstart_services = false\n{more}\
         [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n",
        dir.join(name).display(),
        dir.join("certs").display(),
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// One case: returns the failover time, the slowest edge's.
fn run_case(case: &Case, edges: usize, dir: &Path, nats: &str) -> Result<Duration, String> {
    let timeouts = match case.idle_timeout {
        Some((idle, keep)) => format!("idle_timeout = \"{idle}s\"\nkeep_alive = \"{keep}s\"\n"),
        None => String::new(),
    };
    let names: Vec<String> = (1..=edges).map(|i| format!("e{i}")).collect();
    let listed: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let bridge = format!("[bridge]\nurls = [\"{nats}\"]\nbackbone = true\n");
    let (port_a, port_b) = (tests::fleet::free_port()?, tests::fleet::free_port()?);
    let core = |name: &str, port: u16| {
        let link = format!(
            "listen = \"127.0.0.1:{port}\"\nedges = [{}]\n{timeouts}",
            listed.join(", ")
        );
        config(dir, name, &link, &bridge)
    };
    let mut a = start("core", &core("core-a", port_a)?)?;
    let b = start("core", &core("core-b", port_b)?)?;
    let mut running = Vec::new();
    for name in &names {
        let link = format!(
            "core = \"127.0.0.1:{port_a}\"\ncore_name = \"core-a\"\n\
             failover = [\"core-b@127.0.0.1:{port_b}\"]\n{timeouts}"
        );
        running.push(start("edge", &config(dir, name, &link, "")?)?);
    }
    for (name, edge) in names.iter().zip(&running) {
        for i in 0..BEFORE {
            append(&edge.api, &format!("{name} before {i}"))?;
        }
    }
    // Everything so far has crossed to core-b through core-a and the backbone.
    for name in &names {
        wait(&format!("core-b holds {name}'s first entries"), || {
            held(&b.api, name) >= BEFORE
        })?;
    }
    eprintln!(
        "failover ({}): {edges} edges on core-a; killing it",
        case.name
    );
    let killed = Instant::now();
    drop(a.process.drain());
    a.process.kill();
    for (name, edge) in names.iter().zip(&running) {
        append(&edge.api, &format!("{name} after the kill"))?;
    }
    for name in &names {
        wait(
            &format!("core-b holds {name}'s entry after the kill"),
            || held(&b.api, name) > BEFORE,
        )?;
    }
    Ok(killed.elapsed())
}

/// Runs the cases (`quick`: the 10 s one, two edges); one line per case, then the summary.
pub(crate) async fn failover(quick: bool) -> crate::Lines {
    tokio::task::spawn_blocking(move || {
        let mut cases = vec![Case {
            name: "idle-10s",
            idle_timeout: Some((10, 3)),
        }];
        if !quick {
            cases.push(Case {
                name: "default",
                idle_timeout: None,
            });
        }
        let edges = if quick { 2 } else { 4 };
        let mut lines = Vec::new();
        let mut summary = json!({ "scenario": "failover", "edges": edges });
        for case in &cases {
            let dir = TempDir::new("bench-failover").map_err(|e| e.to_string())?;
            let server = nats_server(&dir.path().join("nats"))?;
            let took = run_case(case, edges, dir.path(), &server.url)?;
            let idle = case
                .idle_timeout
                .map_or(protocol::tls::IDLE_TIMEOUT.as_secs(), |(idle, _)| idle);
            let target = match case.idle_timeout {
                Some(_) => 15.0,
                None => idle as f64 + 5.0,
            };
            eprintln!(
                "failover ({}): {:.1} s with an idle timeout of {idle} s (target {target} s)",
                case.name,
                took.as_secs_f64()
            );
            let line = json!({
                "scenario": "failover",
                "case": case.name,
                "edges": edges,
                "idle_timeout_s": idle,
                "failover_s": round2(took.as_secs_f64()),
                "target_s": target,
            });
            summary[format!("failover_s_{}", case.name.replace('-', "_"))] =
                line["failover_s"].clone();
            summary["failover_s"] = line["failover_s"].clone();
            summary["idle_timeout_s"] = line["idle_timeout_s"].clone();
            lines.push(line);
        }
        lines.push(summary);
        Ok(lines)
    })
    .await
    .map_err(|e| e.to_string())?
}
