//! The link emulator as a process: `emulator --listen ADDR --to ADDR [--profile NAME] [--seed N]`.
//!
//! Relays UDP between an edge (which sends to `--listen`) and the core at `--to` through
//! the named profile until SIGTERM or Ctrl-C. Commands on stdin, one per line: `down`,
//! `up`, `flap UP_S DOWN_S` (an outage schedule), `profile NAME`, `stats`. `stats` and
//! the exit print the counters as one JSON line on stdout; everything else goes to
//! stderr. A closed stdin only ends the commands, not the relay.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use protocol::node::Signals;
use serde_json::json;
use tests::emulator::{DEFAULT_SEED, Link, LinkConfig, Profile};

const USAGE: &str = "usage: emulator --listen ADDR --to ADDR [--profile NAME] [--seed N]

Relays UDP between an edge (sending to --listen) and the core at --to, shaped by a link
profile, until SIGTERM or Ctrl-C.

commands on stdin:
  down               take the link down (both directions drop everything)
  up                 bring it up (and cancel a schedule)
  flap UP_S DOWN_S   repeat: up for UP_S seconds, down for DOWN_S seconds
  profile NAME       switch to another profile
  stats              print the counters as a JSON line on stdout";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!("{USAGE}\n\nprofiles: {}", Profile::NAMES.join(", "));
        return ExitCode::SUCCESS;
    }
    let config = match parse_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (listen, core, seed) = (config.listen, config.core, config.seed);
    let link = match Link::open(config) {
        Ok(link) => link,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "link: {} -> {core}, profile {}, seed {seed}",
        link.addr(),
        link.profile().name
    );
    let code = runtime.block_on(serve(&link));
    print_stats(&link);
    drop(link);
    code
}

/// Runs commands until a signal.
async fn serve(link: &Link) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Lines from a thread of its own: std's stdin blocks. The thread stays blocked in
    // its read at exit and ends with the process.
    let (lines, mut commands) = tokio::sync::mpsc::channel(16);
    let reader = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    if let Err(e) = reader {
        eprintln!("link: no commands (cannot read stdin: {e})");
    }
    loop {
        tokio::select! {
            biased;
            signal = signals.recv() => {
                eprintln!("link: {signal}, stopping");
                return ExitCode::SUCCESS;
            }
            Some(line) = commands.recv() => command(link, &line),
        }
    }
}

/// Carries out one stdin command.
fn command(link: &Link, line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => {}
        ["down"] => {
            link.down();
            eprintln!("link: down");
        }
        ["up"] => {
            link.up();
            eprintln!("link: up");
        }
        ["flap", up, down] => match (seconds(up), seconds(down)) {
            (Some(up), Some(down)) => {
                link.schedule(&[(up, down)]);
                eprintln!("link: flapping, up {up:?}, down {down:?}");
            }
            _ => eprintln!("link: flap takes two durations in seconds, e.g. flap 10 2.5"),
        },
        ["profile", name] => match Profile::named(name) {
            Ok(profile) => {
                link.set_profile(profile);
                eprintln!("link: profile {name}");
            }
            Err(e) => eprintln!("link: {e}"),
        },
        ["stats"] => print_stats(link),
        _ => eprintln!(
            "link: unknown command {line:?} (down, up, flap UP_S DOWN_S, profile NAME, stats)"
        ),
    }
}

fn print_stats(link: &Link) {
    let mut stats = link.counters().to_json();
    stats["profile"] = json!(link.profile().name);
    stats["down"] = json!(link.is_down());
    println!("{stats}");
}

fn seconds(s: &str) -> Option<Duration> {
    s.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

fn parse_args(args: &[String]) -> Result<LinkConfig, String> {
    let (mut listen, mut core, mut profile, mut seed) = (None, None, Profile::lan(), DEFAULT_SEED);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(address(flag, value()?)?),
            "--to" => core = Some(address(flag, value()?)?),
            "--profile" => profile = Profile::named(value()?).map_err(|e| e.to_string())?,
            "--seed" => {
                let v = value()?;
                seed = v
                    .parse()
                    .map_err(|_| format!("--seed takes a number, not {v:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(LinkConfig {
        listen: listen.ok_or("--listen is required")?,
        core: core.ok_or("--to is required")?,
        profile,
        seed,
    })
}

fn address(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes an address such as 127.0.0.1:7000, not {value:?}"))
}
