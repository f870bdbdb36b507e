//! The bridge to NATS JetStream (issue 19), with a real `nats-server` (JetStream, started
//! here on a loopback port) and the real `core-node` binary: entries go out and messages
//! come in exactly once and in order, through SIGKILLs of the node and of `nats-server`
//! and a NATS outage longer than the stream's duplicate window. Checked by reading the
//! stream and the topic back.
//!
//! Needs Debian's `nats-server` (see `tools::nats_server`): without it the tests skip,
//! unless `TETHER_REQUIRE_TOOLS` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};
use tests::TempDir;

use crate::support::process::{Node as Process, PATIENCE};
use crate::support::tools;
use crate::support::webdriver::Browser;

/// Entries the node appends, in three rounds.
const ROUND: usize = 400;

/// Messages an application publishes into the node's topic.
const MESSAGES: usize = 1500;

/// The stream's duplicate window here: the outage below is longer.
const WINDOW: Duration = Duration::from_secs(2);

/// `nats-server` with JetStream on a fixed loopback port and store directory, so that a
/// restart finds what it stored.
struct Nats {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl Nats {
    fn start(binary: PathBuf, dir: &Path) -> Nats {
        let port = tests::fleet::free_tcp_port().unwrap();
        let mut nats = Nats {
            binary,
            port,
            dir: dir.to_path_buf(),
            process: None,
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let mut process = Process::spawn(
            Command::new(&self.binary)
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(&self.dir),
        );
        process.wait_for("Server is ready");
        self.process = Some(process);
    }

    /// Sends `signal` (`STOP`, `CONT`) by PID.
    fn signal(&self, signal: &str) {
        self.process
            .as_ref()
            .expect("nats-server runs")
            .signal(signal);
    }

    /// SIGKILL, by PID.
    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            drop(process.kill());
        }
    }
}

/// The core's config: NEWS goes out, ORDERS comes in.
fn core_config(dir: &Path, http: u16, nats: &str) -> PathBuf {
    let path = dir.join("hq.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"hq\"\ndata_dir = \"{}\"\n\
             [link]\nlisten = \"127.0.0.1:0\"\nedges = [\"alpha\"]\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [pipeline]\nstart_services = false\n\
             [bridge]\nurls = [\"{nats}\"]\nout = [\"NEWS\"]\nin = [\"ORDERS\"]\n\
             duplicate_window = \"{}ms\"\n\
             [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n\
             [[topics]]\nname = \"ORDERS\"\nscope = \"all\"\n",
            dir.join("hq").display(),
            WINDOW.as_millis()
        ),
    )
    .unwrap();
    path
}

fn start_core(config: &Path) -> Process {
    let mut core = Process::start("core-node", config);
    core.wait_for("HQ serves HTTP");
    core
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get(url: &str) -> Value {
    let mut answer = agent().get(url).call().unwrap();
    assert_eq!(answer.status().as_u16(), 200, "GET {url}");
    serde_json::from_reader(answer.body_mut().as_reader()).unwrap()
}

/// Appends `n` entries to NEWS, numbered from `from`.
fn append(api: &str, from: usize, n: usize) {
    let agent = agent();
    for i in from..from + n {
        let answer = agent
            .post(&format!("{api}/topics/NEWS/entries"))
            .header("content-type", "application/json")
            .send(json!({ "payload": format!("news {i}"), "key": format!("k{i}") }).to_string())
            .unwrap();
        assert_eq!(answer.status().as_u16(), 201);
    }
}

/// The entries of a topic, as (origin, seq, payload, to), read whole through the API.
fn topic(api: &str, name: &str) -> Vec<(String, u64, String, Option<String>)> {
    let mut out = Vec::new();
    loop {
        let page = get(&format!(
            "{api}/topics/{name}/entries?from={}&limit=1000",
            out.len()
        ));
        let page = page.as_array().unwrap();
        if page.is_empty() {
            return out;
        }
        for e in page {
            out.push((
                e["origin"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
                e["payload"].as_str().unwrap_or_default().to_owned(),
                e["to"].as_str().map(str::to_owned),
            ));
        }
    }
}

/// Waits, up to `PATIENCE`, until `done` holds; `what` names it, and `api` is the node
/// whose bridge status a failure shows.
fn wait_until(what: &str, api: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() > deadline {
            let status = agent()
                .get(&format!("{api}/bridge"))
                .call()
                .ok()
                .and_then(|mut a| a.body_mut().read_to_string().ok());
            panic!("timed out waiting until {what}; the bridge: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn entries_go_out_and_messages_come_in_exactly_once_through_kills_and_outages() {
    let Some(server) = tools::nats_server("bridge") else {
        return;
    };
    let dir = TempDir::new("bridge").unwrap();
    let mut nats = Nats::start(server, &dir.path().join("nats"));
    let http = tests::fleet::free_tcp_port().unwrap();
    let config = core_config(dir.path(), http, &nats.url());
    let api = format!("http://127.0.0.1:{http}/api/v1");
    let runtime = tests::runtime().unwrap();
    let mut core = start_core(&config);
    // The node makes both streams; an application publishes orders, each to everyone
    // or to alpha alone, with a key in a header.
    let _in_runtime = runtime.enter();
    let client = runtime
        .block_on(async_nats::ConnectOptions::new().connect(nats.url()))
        .unwrap();
    let js = jetstream::new(client);
    wait_until("the bridge made its streams", &api, || {
        runtime.block_on(async {
            js.get_stream("TETHER").await.is_ok() && js.get_stream("TETHER_IN").await.is_ok()
        })
    });
    let publish = |from: usize, to: usize| {
        runtime.block_on(async {
            let mut acks = Vec::new();
            for i in from..to {
                let subject = if i % 10 == 0 {
                    "tether-in.ORDERS.alpha"
                } else {
                    "tether-in.ORDERS"
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Tether-Key", format!("order-{i}").as_str());
                acks.push(
                    js.publish_with_headers(subject, headers, format!("order {i}").into())
                        .await
                        .unwrap(),
                );
            }
            for ack in acks {
                ack.await.unwrap();
            }
        });
    };
    publish(0, MESSAGES / 3);

    // Round 1. Then NATS is frozen (SIGSTOP) while round 2 is appended: the bridge
    // publishes as far as its pipeline goes and gets no acknowledgement. The node is
    // killed, NATS thaws and stores what it was sent: the restarted node finds those
    // entries in the stream, though it never heard they landed.
    append(&api, 0, ROUND);
    publish(MESSAGES / 3, 2 * MESSAGES / 3);
    nats.signal("STOP");
    append(&api, ROUND, ROUND);
    drop(core.kill());
    nats.signal("CONT");
    core = start_core(&config);

    // NATS is killed and stays away longer than its duplicate window while round 3 is
    // appended; then the node is killed again as it catches up.
    nats.kill();
    append(&api, 2 * ROUND, ROUND);
    let away = Instant::now();
    core.wait_for_line(
        |l| l.contains("bridge: a session failed"),
        "the bridge sees NATS gone",
    );
    std::thread::sleep((WINDOW + Duration::from_secs(1)).saturating_sub(away.elapsed()));
    nats.restart();
    core.wait_for_line(
        |l| l.contains("bridge: a session failed") || l.contains("connected"),
        "the bridge at work again",
    );
    drop(core.kill());
    core = start_core(&config);
    // Messages that cannot be entries are refused, and do not hold up the rest.
    runtime.block_on(async {
        for (subject, payload) in [
            ("tether-in.NOPE", "no such topic"),
            ("tether-in.ORDERS.Not_A_Node", "no such edge"),
        ] {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    publish(2 * MESSAGES / 3, MESSAGES);

    // Everything arrives, and no more.
    let news = topic(&api, "NEWS");
    assert_eq!(news.len(), 3 * ROUND);
    let out = runtime.block_on(js.get_stream("TETHER")).unwrap();
    wait_until("every entry is in the stream", &api, || {
        let status = get(&format!("{api}/bridge"));
        status["mappings"][0]["lag_entries"] == 0
            && runtime
                .block_on(async { out.get_info().await.map(|i| i.state.messages) })
                .is_ok_and(|n| n as usize >= news.len())
    });
    let orders = || topic(&api, "ORDERS");
    wait_until("every message is in the topic", &api, || {
        orders().len() >= MESSAGES
    });

    // Out: each entry once, in order, with its identity and key.
    let info = runtime.block_on(out.get_info()).unwrap();
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let message = runtime.block_on(out.get_raw_message(seq)).unwrap();
        assert_eq!(message.subject.as_str(), "tether.NEWS.hq");
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let tether_seq: u64 = header("Tether-Seq").parse().unwrap();
        assert_eq!(header("Tether-Origin"), "hq");
        assert_eq!(
            tether_seq,
            seen.len() as u64 + 1,
            "entries in order, none twice, none missing"
        );
        assert_eq!(header("Tether-Key"), format!("k{}", tether_seq - 1));
        seen.insert(
            tether_seq,
            String::from_utf8_lossy(&message.payload).into_owned(),
        );
    }
    assert_eq!(seen.len(), news.len(), "the stream holds each entry once");
    for (origin, seq, payload, _) in &news {
        assert_eq!(origin, "hq");
        assert_eq!(seen.get(seq), Some(payload), "entry {seq}");
    }

    // In: each message once, in the order published, to alpha where its subject said.
    let orders = orders();
    assert_eq!(orders.len(), MESSAGES, "each message once");
    for (i, (origin, _, payload, to)) in orders.iter().enumerate() {
        assert_eq!(origin, "hq");
        assert_eq!(payload, &format!("order {i}"));
        assert_eq!(to.as_deref(), (i % 10 == 0).then_some("alpha"), "order {i}");
    }
    let status = get(&format!("{api}/bridge"));
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["mappings"][1]["refused"], 2, "{status}");
    // The page shows it live, if a browser is here.
    if let Some((chromium, driver)) = tools::chromium("bridge") {
        let browser = Browser::start(&chromium, &driver).unwrap();
        browser.goto(&format!("http://127.0.0.1:{http}/")).unwrap();
        browser.wait_for_script(
            "the page shows the bridge connected, NEWS caught up, ORDERS running",
            PATIENCE,
            "const p = document.getElementById('bridge-panel'); \
             const out = document.querySelector('#bridge [data-mapping=\"out:NEWS\"]'); \
             const inbound = document.querySelector('#bridge [data-mapping=\"in:ORDERS\"]'); \
             return !p.hidden && document.getElementById('bridge-state').dataset.state === 'connected' \
               && out && out.dataset.state === 'running' \
               && out.querySelector('[data-field=lag]').dataset.lag === '0' \
               && inbound && inbound.dataset.state === 'running';",
        );
        let shot = crate::support::webdriver::screenshots_dir().join("hq-bridge.png");
        browser.screenshot_page(&shot, 1280).unwrap();
    }
    // The CLI says the same.
    let out = Command::new(crate::support::process::binary("core-node"))
        .args(["bridge", "--url", &format!("http://127.0.0.1:{http}")])
        .env_remove("TETHER_HTTP__TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && said.contains(&format!("NATS {}: connected", nats.url()))
            && said.contains("NEWS -> stream TETHER (tether.NEWS.*): running")
            && said.contains("0 waiting")
            && said.contains(
                "stream TETHER_IN (tether-in.ORDERS and tether-in.ORDERS.<edge>) -> ORDERS: running"
            ),
        "{said}"
    );
    drop(core);
    nats.kill();
}
