//! HQ on two machines (issue 19): two `core-node`s share a three-server NATS cluster (an R3
//! backbone stream) and four edges. One NATS server and one core are SIGKILLed during
//! traffic; the dead core's edges fail over to the other core; everything converges
//! exactly once on every node and in the stream, an entry larger than a NATS message
//! included (in parts). While NATS is frozen a core acknowledges nothing. An edge revoked
//! at one core is refused by the other; each core's fleet table shows the edges linked to
//! the other; a NATS client without the cores' credentials cannot publish on the
//! backbone. Real binaries, real `nats-server`s on loopback ports.
//!
//! Needs Debian's `nats-server` (see `tools::nats_server`): without it the test skips,
//! unless `TETHER_REQUIRE_TOOLS` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};
use tests::TempDir;

use crate::support::process::{Node as Process, PATIENCE, field};
use crate::support::tools;

/// Entries each edge appends before the kills, and after.
const BEFORE: usize = 300;
const AFTER: usize = 200;

/// Entries core-a appends itself.
const CORE_A: usize = 100;

/// Bytes of the one entry larger than a backbone message's part (512 KiB).
const BIG: usize = 700_000;

/// The cores' NATS user; applications get another, which may not publish on the
/// backbone.
const CORE_USER: (&str, &str) = ("core", "core-secret");
const APP_USER: (&str, &str) = ("app", "app-secret");

/// Three `nats-server`s in one cluster, each with JetStream.
struct Cluster {
    servers: Vec<Option<Process>>,
    ports: Vec<u16>,
}

impl Cluster {
    /// Starts the three and waits until each knows the JetStream metadata leader. Debian's
    /// nats-server 2.9.10 sometimes elects none when three start at once (the NATS
    /// tracker has such reports): after 20 s the cluster is started again, afresh.
    fn start(binary: &Path, dir: &Path) -> Cluster {
        for attempt in 0..3 {
            let cluster = Cluster::try_start(binary, &dir.join(format!("nats{attempt}")));
            match cluster {
                Ok(cluster) => return cluster,
                Err(log) => eprintln!("no JetStream metadata leader; starting again:\n{log}"),
            }
        }
        panic!("three tries and the NATS cluster never elected a metadata leader");
    }

    fn try_start(binary: &Path, dir: &Path) -> Result<Cluster, String> {
        std::fs::create_dir_all(dir).unwrap();
        let ports: Vec<u16> = (0..3)
            .map(|_| tests::fleet::free_tcp_port().unwrap())
            .collect();
        let routes: Vec<u16> = (0..3)
            .map(|_| tests::fleet::free_tcp_port().unwrap())
            .collect();
        let mut servers = Vec::new();
        for i in 0..3 {
            let others: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("\"nats://127.0.0.1:{}\"", routes[j]))
                .collect();
            let config = dir.join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{}\"\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: tether, listen: \"127.0.0.1:{}\", routes: [{}] }}\n\
                     authorization {{ users: [\n\
                       {{ user: {}, password: {} }}\n\
                       {{ user: {}, password: {}, permissions: {{ publish: {{ deny: \
                          [\"tether-bb.>\", \"tether-bb-fleet.>\"] }} }} }}\n\
                     ] }}\n",
                    ports[i],
                    dir.join(format!("n{i}")).display(),
                    routes[i],
                    others.join(", "),
                    CORE_USER.0,
                    CORE_USER.1,
                    APP_USER.0,
                    APP_USER.1,
                ),
            )
            .unwrap();
            let process = Process::spawn(Command::new(binary).arg("-c").arg(&config));
            servers.push(Some(process));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for server in servers.iter_mut().flatten() {
            loop {
                match server.try_next_line() {
                    Some((_, line)) if line.contains("metadata leader") => break,
                    Some(_) => {}
                    None if Instant::now() > deadline => return Err(server.log()),
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        Ok(Cluster { servers, ports })
    }

    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    /// Sends `signal` (`STOP`, `CONT`) to every server, by PID.
    fn signal(&self, signal: &str) {
        for server in self.servers.iter().flatten() {
            server.signal(signal);
        }
    }

    /// SIGKILL of server `i`, by PID.
    fn kill(&mut self, i: usize) {
        if let Some(server) = self.servers[i].take() {
            drop(server.kill());
        }
    }
}

/// A node of the test: its config file, HTTP API and process.
struct Member {
    config: PathBuf,
    api: String,
    process: Option<Process>,
}

impl Member {
    /// Starts it; its HTTP API is where it says it serves (any free port).
    fn start(&mut self, binary: &str) {
        let mut process = Process::start(binary, &self.config);
        let line = process.wait_for_line(|l| l.contains("serves HTTP"), "serves HTTP");
        self.api = format!("http://{}/api/v1", field(&line, "http="));
        self.process = Some(process);
    }
}

/// Writes a core's config: link on `link`, the four edges listed, demo certificates in
/// the shared `certs`, the backbone on `urls` with three replicas.
fn core(dir: &Path, name: &str, link: u16, urls: &[String]) -> Member {
    let config = dir.join(format!("{name}.toml"));
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\
             [link]\nlisten = \"127.0.0.1:{link}\"\nedges = [\"e1\", \"e2\", \"e3\", \"e4\"]\n\
             certs_dir = \"{}\"\ndemo_certs = true\nkeep_alive = \"1s\"\nidle_timeout = \"5s\"\n\
             relay_rate = 0\nrelay_entries = 0\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nstart_services = false\n\
             [bridge]\nurls = [{}]\nbackbone = true\nreplicas = 3\n\
             user = \"{}\"\npassword = \"{}\"\n\
             [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n",
            dir.join(name).display(),
            dir.join("certs").display(),
            urls.join(", "),
            CORE_USER.0,
            CORE_USER.1,
        ),
    )
    .unwrap();
    Member {
        config,
        api: String::new(),
        process: None,
    }
}

/// Writes an edge's config: it dials `first` (`name@port`), then `then`.
fn edge(dir: &Path, name: &str, first: (&str, u16), then: (&str, u16)) -> Member {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\
             [link]\ncore = \"127.0.0.1:{}\"\ncore_name = \"{}\"\n\
             failover = [\"{}@127.0.0.1:{}\"]\n\
             certs_dir = \"{}\"\ndemo_certs = true\nkeep_alive = \"1s\"\nidle_timeout = \"5s\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nstart_services = false\n\
             [[topics]]\nname = \"NEWS\"\nscope = \"all\"\n",
            dir.join(name).display(),
            first.1,
            first.0,
            then.0,
            then.1,
            dir.join("certs").display(),
        ),
    )
    .unwrap();
    Member {
        config,
        api: String::new(),
        process: None,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get(url: &str) -> Option<Value> {
    let mut answer = agent().get(url).call().ok()?;
    if answer.status().as_u16() != 200 {
        return None;
    }
    serde_json::from_reader(answer.body_mut().as_reader()).ok()
}

/// Appends `n` entries to NEWS at `api`.
fn append(api: &str, n: usize) {
    let agent = agent();
    for i in 0..n {
        let answer = agent
            .post(&format!("{api}/topics/NEWS/entries"))
            .header("content-type", "application/json")
            .send(json!({ "payload": format!("entry {i}") }).to_string())
            .unwrap();
        assert_eq!(answer.status().as_u16(), 201, "append at {api}");
    }
}

/// Per origin, the sequences of NEWS at `api`, in topic order (`None`: not answering).
fn held(api: &str) -> Option<BTreeMap<String, Vec<u64>>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut from = 0;
    loop {
        let page = get(&format!("{api}/topics/NEWS/entries?from={from}&limit=1000"))?;
        let page = page.as_array()?.clone();
        if page.is_empty() {
            return Some(out);
        }
        from += page.len();
        for e in page {
            out.entry(e["origin"].as_str()?.to_owned())
                .or_default()
                .push(e["seq"].as_u64()?);
        }
    }
}

/// How many entries of each origin NEWS at `api` holds, for a failure's message.
fn sizes(api: &str) -> String {
    let sizes = held(api).map(|h| {
        h.iter()
            .map(|(o, s)| (o.clone(), s.len()))
            .collect::<Vec<_>>()
    });
    format!("{sizes:?}")
}

/// Whether `api`'s link to `peer` is up.
fn linked(api: &str, peer: &str) -> bool {
    get(&format!("{api}/links/{peer}")).is_some_and(|l| l["connected"] == true)
}

/// Waits, up to `patience`, until `done` holds; `what` names it, `show` what a failure
/// prints.
fn wait_until(
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> bool,
    show: impl Fn() -> String,
) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; {}",
            show()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_hq_on_two_cores_shares_every_entry_once_through_a_core_and_a_nats_server_dying() {
    let Some(server) = tools::nats_server("backbone") else {
        return;
    };
    let dir = TempDir::new("backbone").unwrap();
    let mut cluster = Cluster::start(&server, dir.path());
    let urls = cluster.urls();
    let (link_a, link_b) = (
        tests::fleet::free_port().unwrap(),
        tests::fleet::free_port().unwrap(),
    );
    let mut a = core(dir.path(), "core-a", link_a, &urls);
    let mut b = core(dir.path(), "core-b", link_b, &urls);
    // core-a first: it makes the demo CA and the edges' certificates; core-b finds them.
    a.start("core-node");
    b.start("core-node");
    let (ca, cb) = (("core-a", link_a), ("core-b", link_b));
    let mut edges = vec![
        edge(dir.path(), "e1", ca, cb),
        edge(dir.path(), "e2", ca, cb),
        edge(dir.path(), "e3", cb, ca),
        edge(dir.path(), "e4", ca, cb),
    ];
    for e in &mut edges {
        e.start("edge-node");
    }
    for (e, core) in edges.iter().zip(["core-a", "core-a", "core-b", "core-a"]) {
        wait_until(
            &format!("{} links to {core}", e.api),
            PATIENCE,
            || linked(&e.api, core),
            String::new,
        );
    }

    // e4 is revoked at core-a: core-b takes the decision in, and refuses e4 when it
    // comes (restarted, it dials core-a, is refused, and fails over to core-b).
    let answer = agent()
        .post(&format!("{}/edges/e4/revoke", a.api))
        .header("x-requested-with", "test")
        .send_empty()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "revoke e4 at core-a");
    let revoked_at_b = || {
        get(&format!("{}/edges", b.api)).is_some_and(|list| {
            list.as_array().into_iter().flatten().any(|e| {
                e["name"] == "e4"
                    && e["certificates"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| !c["revoked_ms"].is_null()))
            })
        })
    };
    let deadline = Instant::now() + PATIENCE;
    while !revoked_at_b() {
        if Instant::now() > deadline {
            let mut lines = Vec::new();
            for (name, core) in [("core-a", &mut a), ("core-b", &mut b)] {
                let process = core.process.as_mut().unwrap();
                while let Some((_, line)) = process.try_next_line() {
                    if line.contains("backbone") || line.contains("bridge") {
                        lines.push(format!("{name}: {line}"));
                    }
                }
            }
            for (i, server) in cluster.servers.iter_mut().enumerate() {
                while let Some((_, line)) = server.as_mut().unwrap().try_next_line() {
                    if line.contains("[WRN]") || line.contains("[ERR]") || line.contains("eader") {
                        lines.push(format!("n{i}: {line}"));
                    }
                }
            }
            panic!(
                "timed out waiting until core-b knows e4 is revoked; their bridge logs:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(edges[3].process.take().map(Process::kill));
    edges[3].start("edge-node");
    b.process.as_mut().unwrap().wait_for_line(
        |l| l.contains("edge e4 at") && l.contains("presented a revoked certificate"),
        "core-b refuses e4",
    );
    assert!(!linked(&b.api, "e4"), "core-b admitted the revoked e4");

    // Each core's fleet table shows the edges linked to the other core as there.
    let at_core = |api: &str, edge: &str| {
        get(&format!("{api}/fleet")).and_then(|f| {
            f["edges"]
                .as_array()?
                .iter()
                .find(|e| e["name"] == edge)
                .map(|e| {
                    (
                        e["state"].as_str().map(str::to_owned),
                        e["core"].as_str().map(str::to_owned),
                    )
                })
        })
    };
    let elsewhere = |core: &str| (Some("elsewhere".to_owned()), Some(core.to_owned()));
    wait_until(
        "core-b's fleet table shows e1 and e2 at core-a, and core-a's shows e3 at core-b",
        PATIENCE,
        || {
            at_core(&b.api, "e1") == Some(elsewhere("core-a"))
                && at_core(&b.api, "e2") == Some(elsewhere("core-a"))
                && at_core(&a.api, "e3") == Some(elsewhere("core-b"))
        },
        || format!("{:?} {:?}", at_core(&b.api, "e1"), at_core(&a.api, "e3")),
    );

    // While NATS is frozen, core-a stores e1's entries but does not tell e1 it holds
    // them: only what the backbone holds is acknowledged. Once NATS thaws, it is.
    let backlog =
        || get(&format!("{}/links/core-a", edges[0].api)).and_then(|l| l["backlog"].as_u64());
    cluster.signal("STOP");
    append(&edges[0].api, 20);
    wait_until(
        "core-a holds e1's entries",
        PATIENCE,
        || held(&a.api).is_some_and(|h| h.get("e1").is_some_and(|s| s.len() >= 20)),
        String::new,
    );
    // Not a synchronisation: a window in which an acknowledgement must not come.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(1) {
        assert!(
            backlog().is_some_and(|n| n >= 20),
            "core-a acknowledged entries the backbone does not hold: {:?}",
            get(&format!("{}/links/core-a", edges[0].api))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.signal("CONT");
    wait_until(
        "core-a acknowledges e1's entries once the backbone holds them",
        PATIENCE,
        || backlog() == Some(0),
        || format!("{:?}", get(&format!("{}/links/core-a", edges[0].api))),
    );

    // Traffic from three edges and core-a; then one NATS server and core-a die.
    let apis: Vec<String> = edges.iter().map(|e| e.api.clone()).collect();
    std::thread::scope(|s| {
        for api in &apis[..3] {
            s.spawn(|| append(api, BEFORE));
        }
        s.spawn(|| append(&a.api, CORE_A));
    });
    // One entry larger than a NATS message, from e3 on core-b: it crosses in parts.
    let answer = agent()
        .post(&format!("{}/topics/NEWS/entries", apis[2]))
        .header("content-type", "application/json")
        .send(json!({ "payload": "x".repeat(BIG) }).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201, "the large entry at e3");
    cluster.kill(0);
    drop(a.process.take().map(Process::kill));
    let died = Instant::now();
    std::thread::scope(|s| {
        for api in &apis[..3] {
            s.spawn(|| append(api, AFTER));
        }
    });
    // core-a's edges fail over to core-b.
    for e in &edges[..2] {
        wait_until(
            &format!("{} fails over to core-b", e.api),
            PATIENCE,
            || linked(&e.api, "core-b"),
            || format!("{:?}", get(&format!("{}/links", e.api))),
        );
    }
    eprintln!("the edges failed over in {:?}", died.elapsed());

    // Every edge's entries reach core-b and every other edge; core-a's own, those it
    // published before it died.
    let per_edge = (BEFORE + AFTER) as u64;
    let counts = [
        ("core-a", CORE_A as u64),
        ("e1", per_edge + 20),
        ("e2", per_edge),
        ("e3", per_edge + 1),
    ];
    let complete = |api: &str| {
        held(api).is_some_and(|h| {
            counts[1..]
                .iter()
                .all(|(o, n)| h.get(*o).is_some_and(|s| s.len() as u64 >= *n))
        })
    };
    for api in [&b.api, &edges[0].api, &edges[1].api, &edges[2].api] {
        wait_until(
            &format!("{api} holds every edge's entries"),
            PATIENCE,
            || complete(api),
            || sizes(api),
        );
    }

    // core-a comes back: what it held and had not yet published goes out now.
    a.start("core-node");
    let expected: BTreeMap<String, Vec<u64>> = counts
        .iter()
        .map(|(o, n)| (o.to_string(), (1..=*n).collect()))
        .collect();
    for api in [&a.api, &b.api, &edges[0].api, &edges[1].api, &edges[2].api] {
        let sorted = |h: BTreeMap<String, Vec<u64>>| {
            h.into_iter()
                .filter(|(o, _)| o != "e4")
                .map(|(o, mut s)| {
                    s.sort_unstable();
                    (o, s)
                })
                .collect::<BTreeMap<_, _>>()
        };
        wait_until(
            &format!("{api} holds every entry exactly once"),
            PATIENCE,
            || held(api).map(sorted).as_ref() == Some(&expected),
            || sizes(api),
        );
    }

    // core-a, back, knows its old edges are at core-b now, though it died linked to them.
    wait_until(
        "core-a's fleet table shows e1 and e2 at core-b",
        PATIENCE,
        || {
            at_core(&a.api, "e1") == Some(elsewhere("core-b"))
                && at_core(&a.api, "e2") == Some(elsewhere("core-b"))
        },
        || format!("{:?}", at_core(&a.api, "e1")),
    );

    // The large entry reached core-a, whole, through the backbone alone.
    let mut large = None;
    let mut from = 0;
    while let Some(page) = get(&format!(
        "{}/topics/NEWS/entries?from={from}&limit=1000",
        a.api
    )) {
        let page = page.as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            break;
        }
        from += page.len();
        large = large.or_else(|| {
            page.iter()
                .filter(|e| e["origin"] == "e3")
                .find_map(|e| e["payload"].as_str().map(str::len).filter(|n| *n > 1000))
        });
    }
    assert_eq!(large, Some(BIG), "e3's large entry at core-a");

    // Each core shows its backbone's mappings: `core-node bridge`.
    let url = b.api.trim_end_matches("/api/v1");
    let out = Command::new(crate::support::process::binary("core-node"))
        .args(["bridge", "--url", url])
        .env_remove("TETHER_HTTP__TOKEN")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("backbone: NEWS -> stream TETHER_BACKBONE (tether-bb.NEWS.*): running")
            && shown.contains("backbone: stream TETHER_BACKBONE (tether-bb.NEWS.*) -> NEWS"),
        "core-node bridge at core-b: {shown}"
    );

    // The stream holds each entry once, in order per origin; an application's user
    // cannot publish there.
    let runtime = tests::runtime().unwrap();
    runtime.block_on(async {
        let connect = |(user, password): (&str, &str)| {
            async_nats::ConnectOptions::new()
                .user_and_password(user.into(), password.into())
                .connect(urls[1..].to_vec())
        };
        let js = jetstream::new(connect(CORE_USER).await.unwrap());
        let stream = js.get_stream("TETHER_BACKBONE").await.unwrap();
        assert_eq!(stream.cached_info().config.num_replicas, 3);
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        // Runs in parts (`Tether-Part: i/n`), gathered by subject.
        let mut parts: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut in_parts = 0;
        for seq in 1..=last {
            let message = stream.get_raw_message(seq).await.unwrap();
            let subject = message.subject.to_string();
            let payload = match message.headers.get("Tether-Part").map(|v| v.to_string()) {
                None => message.payload.to_vec(),
                Some(part) => {
                    let (i, n) = part.split_once('/').unwrap();
                    let gathered = parts.entry(subject.clone()).or_default();
                    if i == "1" {
                        gathered.clear();
                    }
                    gathered.extend_from_slice(&message.payload);
                    if i != n {
                        continue;
                    }
                    in_parts += 1;
                    parts.remove(&subject).unwrap()
                }
            };
            let (_, origin, entries) =
                protocol::bridge::backbone::decode("tether-bb", &subject, &payload).unwrap();
            seen.entry(origin.to_string())
                .or_default()
                .extend(entries.iter().map(|e| e.id.seq.0));
        }
        seen.remove("e4");
        assert_eq!(in_parts, 1, "the one large entry, in parts");
        assert_eq!(
            seen, expected,
            "the backbone stream, per origin in stream order"
        );

        let app = jetstream::new(connect(APP_USER).await.unwrap());
        let forged = match app.publish("tether-bb.NEWS.e1", "forged".into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        assert!(!forged, "an application's user published on the backbone");
    });
    drop(cluster);
}
