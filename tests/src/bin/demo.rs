//! The demo: HQ (`hq`) and a field node (`alpha`) in one process, each the real node
//! runtime with its services and HTTP server, linked through the link emulator, with a
//! console to watch the mission pipeline and store and forward.
//!
//! Usage: `demo [--profile NAME] [--data DIR] [--http-port N]`. HQ serves HTTP on port N
//! (default 8080), the edge on N+1; 0 picks free ports. Every tile a service publishes
//! is printed as it happens. Commands on stdin:
//!
//! - `assets`: the edge's assets and their states; `request <id>`: ask HQ for one;
//! - `services`: both nodes' services; `start|stop <hq|alpha> <service>`;
//!   `delay <hq|alpha> <service> <ms>` paces a service;
//! - `down` / `up`: take the link down, bring it back;
//! - `profile <name>`: switch the link to `lan`, `lte`, `satcom`, `tactical` or `hf`;
//! - `mirror`: the edge mirrors HQ's mission volume (`<data>/hq/volume`, seeded with a
//!   few files; requested assets land in its `assets/`) into
//!   `<data>/alpha/mirror/current`; `mirror stop` stops it (a later `mirror` resumes),
//!   `mirror status` shows where it stands;
//! - `status`: both ends' view of the link; `quit` (or Ctrl-C) stops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use protocol::entry::Offset;
use protocol::log::Store;
use protocol::service::{Services, Tile};
use tests::emulator::Profile;
use tests::mission::{Mission, MissionConfig};
use tokio::sync::{mpsc, watch};

const HELP: &str = "commands: assets | request <id> | services | start|stop <hq|alpha> <service> | delay <hq|alpha> <service> <ms> | down | up | profile <lan|lte|satcom|tactical|hf> | mirror [stop|status] | status | quit";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut profile, mut data, mut port) = (Profile::lan(), PathBuf::from("data/demo"), 8080u16);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--profile", Some(name)) => match Profile::named(&name) {
                Ok(p) => profile = p,
                Err(e) => return usage(&e.to_string()),
            },
            ("--data", Some(dir)) => data = dir.into(),
            ("--http-port", Some(n)) => match n.parse::<u16>() {
                Ok(n) if n < u16::MAX => port = n,
                _ => return usage(&format!("--http-port {n:?}: a port number below 65535")),
            },
            (other, _) => return usage(&format!("unexpected argument {other:?}")),
        }
    }
    let runtime = match tests::runtime() {
        Ok(r) => r,
        Err(e) => return usage(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(profile, data, port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!(
        "error: {problem}\nusage: demo [--profile lan|lte|satcom|tactical|hf] [--data DIR] [--http-port N]"
    );
    ExitCode::from(2)
}

async fn run(profile: Profile, data: PathBuf, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = MissionConfig::new(&data, profile.clone());
    let edge_port = if port == 0 { 0 } else { port + 1 };
    config.http = (
        ([127, 0, 0, 1], port).into(),
        ([127, 0, 0, 1], edge_port).into(),
    );
    config.feed_every = Duration::from_secs(5);
    config.feed_batch = 2;
    // The console prints every tile (below); the log's own tile lines would repeat them.
    let mut log = config.core().log.clone();
    log.filter = format!("{},tether::tile=off", log.filter);
    protocol::node::init_tracing(&log).map_err(|e| e.to_string())?;
    seed_volume(&config.core().volume_dir())?;
    let mission = Mission::start(&config).await.map_err(|e| e.to_string())?;
    let link = &mission.link;
    println!(
        "demo: HQ listens on {} (HTTP {}), the edge (HTTP {}) dials the link emulator at {} ({}); {HELP}",
        link.core(),
        mission.hq_http,
        mission.alpha_http,
        link.addr(),
        profile.name
    );

    let (stop, stopped) = watch::channel(false);
    let watchers = [
        tokio::spawn(tiles(mission.hq.store.clone(), "hq", stopped.clone())),
        tokio::spawn(tiles(mission.alpha.store.clone(), "alpha", stopped.clone())),
    ];
    let (hq, alpha) = (&mission.hq, &mission.alpha);
    let mirror = alpha.mirror.clone().ok_or("the edge has no mirror")?;
    let services = |node: &str| match node {
        "hq" => Some(&hq.services),
        "alpha" => Some(&alpha.services),
        _ => None,
    };

    let mut lines = stdin_lines();
    loop {
        let line = tokio::select! {
            line = lines.recv() => match line { Some(line) => line, None => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["assets"] => list_assets(&alpha.store),
            ["request", id] => match edge_node::services::request(&alpha.store, id).await {
                Ok(state) => println!("alpha: asset {id} is {state}"),
                Err(e) => println!("alpha: {e}"),
            },
            ["services"] => {
                print_services("hq", &hq.services);
                print_services("alpha", &alpha.services);
            }
            [verb @ ("start" | "stop"), node, name] => match services(node) {
                Some(services) => {
                    let done = if *verb == "start" {
                        services.start(name).await
                    } else {
                        services.stop(name).await
                    };
                    match done {
                        Ok(()) => println!("{node}: {name} {verb}ed"),
                        Err(e) => println!("{node}: {e}"),
                    }
                }
                None => println!("no node {node:?}: hq or alpha"),
            },
            ["delay", node, name, ms] => match (services(node), ms.parse::<u64>()) {
                (Some(services), Ok(ms)) => {
                    match services.set_delay(name, Duration::from_millis(ms)).await {
                        Ok(()) => println!("{node}: {name} waits {ms} ms per item"),
                        Err(e) => println!("{node}: {e}"),
                    }
                }
                _ => println!("delay <hq|alpha> <service> <milliseconds>"),
            },
            ["down"] => {
                link.down();
                println!("link down: entries wait at their origin");
            }
            ["up"] => {
                link.up();
                println!("link up");
            }
            ["profile", name] => match Profile::named(name) {
                Ok(p) => {
                    link.set_profile(p);
                    println!("link profile {name}");
                }
                Err(e) => println!("{e}"),
            },
            ["status"] => {
                for s in hq.links.status().into_iter().chain(alpha.links.status()) {
                    let out: u64 = s.topics.iter().filter(|t| t.out).map(|t| t.entries).sum();
                    let backlog: u64 = s.topics.iter().filter(|t| t.out).map(|t| t.backlog).sum();
                    let rtt = s
                        .rtt
                        .map_or("-".into(), |r| format!("{:.0} ms", r.as_secs_f64() * 1e3));
                    println!(
                        "link to {}: connected {}, rtt {rtt}, sent {out}, backlog {backlog}, paused {}",
                        s.peer,
                        s.connected,
                        s.paused_here || s.paused_by_peer
                    );
                }
                println!("emulator: {}", link.counters().to_json());
            }
            ["mirror"] => match mirror.start() {
                Ok(()) => println!("mirror started: {}", mirror.current_dir().display()),
                Err(e) => println!("cannot start the mirror: {e}"),
            },
            ["mirror", "stop"] => match mirror.stop() {
                Ok(()) => println!("mirror stopped; `mirror` resumes it"),
                Err(e) => println!("cannot stop the mirror: {e}"),
            },
            ["mirror", "status"] => {
                let s = mirror.status();
                let eta = s
                    .eta
                    .map_or("-".into(), |d| format!("{:.0} s", d.as_secs_f64()));
                println!(
                    "mirror {:?}: {:.0} %, files {}/{}, bytes {}/{} (reused {}), {} on the link, \
                     rate {:.0} B/s, eta {eta}, refetched {}, last version {:?}, last error {}",
                    s.state,
                    s.percent(),
                    s.files_done,
                    s.files_todo,
                    s.bytes_done,
                    s.bytes_todo,
                    s.bytes_reused,
                    s.bytes_on_link,
                    s.rate,
                    s.refetched,
                    s.last_success_version,
                    s.last_error.as_deref().unwrap_or("-"),
                );
            }
            ["quit" | "exit"] => break,
            _ => println!("{HELP}"),
        }
    }
    let _ = stop.send(true);
    for watcher in watchers {
        watcher.abort();
    }
    mission.stop().await;
    Ok(())
}

fn list_assets(store: &Store) {
    let docs = store.docs(&mission::assets()).unwrap_or_default();
    if docs.is_empty() {
        println!("alpha: no asset yet (HQ's feed lists a few every few seconds)");
    }
    for (id, doc) in docs {
        let field = |k: &str| {
            doc.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_owned()
        };
        let size = doc
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        println!(
            "alpha: {id:<24} {:<10} {:>6} KiB  {}",
            field("state"),
            size.div_ceil(1024),
            field("title")
        );
    }
}

fn print_services(node: &str, services: &Services) {
    for s in services.list() {
        let state = match &s.state {
            protocol::service::ServiceState::Failed { error } => format!("failed: {error}"),
            other => format!("{other:?}").to_lowercase(),
        };
        println!(
            "{node}: {:<20} {state:<10} processed {:>4}, failed {:>3}, delay {} ms{}",
            s.name,
            s.processed,
            s.failed,
            s.delay_ms,
            s.last_problem
                .map(|p| format!(", last problem: {p}"))
                .unwrap_or_default()
        );
    }
}

/// Puts a few files into HQ's mission volume the first time.
fn seed_volume(volume: &std::path::Path) -> std::io::Result<()> {
    if volume.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(volume.join("maps"))?;
    std::fs::create_dir_all(volume.join("briefings"))?;
    std::fs::write(
        volume.join("briefings/mission.txt"),
        "Mission: survey the ridge. Rendezvous at dawn.\n",
    )?;
    let mut rng = tests::Rng::new(7);
    for (name, len) in [
        ("maps/sector-7.bin", 2 << 20),
        ("maps/sector-8.bin", 512 << 10),
    ] {
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes);
        std::fs::write(volume.join(name), bytes)?;
    }
    Ok(())
}

/// Prints each tile the services of `store`'s node publish.
async fn tiles(store: Store, here: &'static str, stopped: watch::Receiver<bool>) {
    let topic = Tile::topic();
    let mut changes = store.changes();
    let mut position = store.topic(&topic).map_or(Offset(0), |t| t.next);
    while !*stopped.borrow() {
        changes.borrow_and_update();
        for record in store.read(&topic, position, 256).unwrap_or_default() {
            position = Offset(record.offset.0 + 1);
            if let Ok(tile) = Tile::decode(&record.entry.payload) {
                let asset = tile.asset.map(|a| format!(" [{a}]")).unwrap_or_default();
                println!(
                    "{here} {}: {}: {}{asset}",
                    tile.service, tile.title, tile.text
                );
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Lines typed on stdin, read on a thread of their own.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}
