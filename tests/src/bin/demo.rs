//! The demo: HQ (`hq`) and a field node (`alpha`) in one process, each the real node
//! runtime, linked through the link emulator, with a console to watch store and forward.
//!
//! Usage: `demo [--profile NAME] [--data DIR]`. Commands on stdin:
//!
//! - `hq <text>`: HQ broadcasts `<text>` (`ASSET_BROADCAST`, to every edge);
//! - `alpha <text>`: the edge sends `<text>` to HQ (`ASSET_REQUEST`);
//! - `down` / `up`: take the link down, bring it back;
//! - `profile <name>`: switch the link to `lan`, `lte`, `satcom`, `tactical` or `hf`;
//! - `mirror`: the edge mirrors HQ's mission volume (`<data>/hq/volume`, seeded with a
//!   few files; add your own) into `<data>/alpha/mirror/current`; `mirror stop` stops it
//!   (a later `mirror` resumes), `mirror status` shows where it stands;
//! - `status`: both ends' view of the link; `quit` (or Ctrl-C) stops.
//!
//! Every entry is printed when it becomes durable at the other node, with how long it
//! took from the append.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::config::Config;
use protocol::entry::{Append, Offset, TopicName};
use protocol::log::Store;
use protocol::node::{Node, Role};
use tests::link::{Link, LinkConfig, Profile};
use tokio::sync::{mpsc, watch};

const HELP: &str = "commands: hq <text> | alpha <text> | down | up | profile <lan|lte|satcom|tactical|hf> | mirror [stop|status] | status | quit";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut profile, mut data) = (Profile::lan(), PathBuf::from("data/demo"));
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--profile", Some(name)) => match Profile::named(&name) {
                Ok(p) => profile = p,
                Err(e) => return usage(&e.to_string()),
            },
            ("--data", Some(dir)) => data = dir.into(),
            (other, _) => return usage(&format!("unexpected argument {other:?}")),
        }
    }
    let runtime = match tests::runtime() {
        Ok(r) => r,
        Err(e) => return usage(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(profile, data)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}\nusage: demo [--profile lan|lte|satcom|tactical|hf] [--data DIR]");
    ExitCode::from(2)
}

async fn run(profile: Profile, data: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let mut core = Config::default_for(Role::Core);
    core.node.data_dir = data.join("hq");
    core.link.listen = ([127, 0, 0, 1], 0).into();
    protocol::node::init_tracing(&core.log).map_err(|e| e.to_string())?;
    seed_volume(&core.volume_dir())?;
    let hq = Node::start(Role::Core, core.clone()).await?;

    // The edge dials the emulator, which relays to HQ; it uses HQ's demo certificates.
    let link = Link::open(LinkConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        core: hq.link_addr()?,
        profile: profile.clone(),
        seed: tests::link::DEFAULT_SEED,
    })?;
    let mut edge = Config::default_for(Role::Edge);
    edge.node.data_dir = data.join("alpha");
    edge.link.core = link.addr().to_string();
    edge.link.certs_dir = Some(core.certs_dir());
    let alpha = Node::start(Role::Edge, edge).await?;
    println!(
        "demo: HQ listens on {}, the edge dials the link emulator at {} ({}); {HELP}",
        hq.link_addr()?,
        link.addr(),
        profile.name
    );

    let broadcast = TopicName::new("ASSET_BROADCAST")?;
    let request = TopicName::new("ASSET_REQUEST")?;
    let (stop, stopped) = watch::channel(false);
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let watchers = [
        tokio::spawn(arrivals(
            alpha.store().clone(),
            broadcast.clone(),
            "alpha",
            stopped.clone(),
        )),
        tokio::spawn(arrivals(
            hq.store().clone(),
            request.clone(),
            "hq",
            stopped.clone(),
        )),
    ];
    let (hq_store, alpha_store) = (hq.store().clone(), alpha.store().clone());
    let (hq_links, alpha_links) = (hq.links().clone(), alpha.links().clone());
    let mirror = alpha.mirror().cloned().ok_or("the edge has no mirror")?;
    let hq_task = tokio::spawn(hq.serve(until(stopped.clone())));
    let alpha_task = tokio::spawn(alpha.serve(until(stopped.clone())));

    let mut lines = stdin_lines();
    loop {
        let line = tokio::select! {
            line = lines.recv() => match line { Some(line) => line, None => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        let (command, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        match command {
            "" => {}
            "hq" => report(
                hq_store
                    .append(&broadcast, Append::new(rest))
                    .await
                    .map(|a| a.offset),
                "hq",
                &broadcast,
            ),
            "alpha" => report(
                alpha_store
                    .append(&request, Append::new(rest))
                    .await
                    .map(|a| a.offset),
                "alpha",
                &request,
            ),
            "down" => {
                link.down();
                println!("link down: entries wait at their origin");
            }
            "up" => {
                link.up();
                println!("link up");
            }
            "profile" => match Profile::named(rest) {
                Ok(p) => {
                    link.set_profile(p);
                    println!("link profile {rest}");
                }
                Err(e) => println!("{e}"),
            },
            "status" => {
                for s in hq_links.status().into_iter().chain(alpha_links.status()) {
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
            "mirror" => match rest {
                "" => match mirror.start() {
                    Ok(()) => println!("mirror started: {}", mirror.current_dir().display()),
                    Err(e) => println!("cannot start the mirror: {e}"),
                },
                "stop" => match mirror.stop() {
                    Ok(()) => println!("mirror stopped; `mirror` resumes it"),
                    Err(e) => println!("cannot stop the mirror: {e}"),
                },
                "status" => {
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
                _ => println!("{HELP}"),
            },
            "quit" | "exit" => break,
            _ => println!("{HELP}"),
        }
    }
    let _ = stop.send(true);
    for task in [hq_task, alpha_task] {
        task.await??;
    }
    for watcher in watchers {
        watcher.abort();
    }
    link.stop();
    Ok(())
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

fn report(appended: Result<Offset, protocol::log::WriteError>, node: &str, topic: &TopicName) {
    match appended {
        Ok(offset) => println!("{node} appended to {topic} at offset {offset} (durable)"),
        Err(e) => println!("{node} could not append: {e}"),
    }
}

/// Prints each entry of `topic` that arrives at `store` from another node.
async fn arrivals(
    store: Store,
    topic: TopicName,
    here: &'static str,
    stopped: watch::Receiver<bool>,
) {
    let mut changes = store.changes();
    let mut position = store.topic(&topic).map_or(Offset(0), |t| t.next);
    while !*stopped.borrow() {
        changes.borrow_and_update();
        for record in store.read(&topic, position, 256).unwrap_or_default() {
            position = Offset(record.offset.0 + 1);
            let e = record.entry;
            if e.id.origin == *store.node() {
                continue;
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_millis() as u64;
            let text = String::from_utf8_lossy(&e.payload);
            println!(
                "{here} received {topic} {}:{} {text:?} {} ms after it was appended",
                e.id.origin,
                e.id.seq,
                now.saturating_sub(e.timestamp.0)
            );
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
