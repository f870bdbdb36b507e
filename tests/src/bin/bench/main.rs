//! The benchmark runner: `bench <scenario> [--quick] [--profile NAME]`.
//!
//! Results go to stdout, one JSON object per line with `"scenario"` and its metric keys
//! (see `shared/BENCHMARKS.md`); progress for people goes to stderr. Every scenario runs
//! on real components: the real sled store on disk, real sockets on 127.0.0.1.

mod bridge;
mod conflation;
mod failover;
mod fanout;
mod impaired;
mod link;
mod memory;
mod mirror;
mod node;
mod priority;
mod reports;
mod rsync;
mod store;

use std::process::ExitCode;

const SCENARIOS: &[(&str, &str)] = &[
    (
        "log-append",
        "durable appends from 64 concurrent producers into one store",
    ),
    (
        "replicate",
        "100,000 entries from one node to the other, each direction",
    ),
    (
        "latency",
        "200 entries/s for 20 s: append at the origin to readable at the other",
    ),
    (
        "catch-up",
        "50,000 entries appended while the link is down, then up; then the same through \
         the satcom and tactical profiles (and hf), each direction",
    ),
    (
        "wire",
        "bytes on the link per entry, random and JSON payloads; position and status \
         reports, quiet (1/s) and busy (100/s)",
    ),
    (
        "idle",
        "bytes per minute on an idle link, on lan and tactical (3 minutes)",
    ),
    (
        "first-entry",
        "tactical down 60 s while the edge appends 10,000 entries; then one new entry \
         each way",
    ),
    (
        "conflation",
        "a latest-value topic of 100 units reporting every second through a 10-minute \
         outage on tactical (--quick: 1): what crosses when the link returns",
    ),
    (
        "mirror",
        "volume mirror cases (initial, no-change, small-edit, insert, append, move, \
         many-small) on lan against rsync; outage-resume on satcom",
    ),
    (
        "fanout",
        "the real core with 1,000 edges (--quick: 100): memory per edge, a broadcast and \
         a burst of 1,000 to all, reconnects after the core is killed",
    ),
    (
        "memory",
        "an edge node's resident memory idle, at 1,000 entries/s, and holding a week's \
         backlog (600,000 entries) for an absent core",
    ),
    (
        "bridge",
        "100,000 entries (--quick: 10,000) from the store into JetStream and back through \
         the bridge, against async-nats alone on the same nats-server",
    ),
    (
        "failover",
        "a two-core HQ on a NATS backbone: a core SIGKILLed, until its edges replicate \
         through the other (10 s idle timeout, and the default)",
    ),
    (
        "priority",
        "200-byte entries each second, link idle then while a mirror fills 512 kbit/s \
         (--case mirror); urgent entries behind 10,000 normal ones on tactical (--case \
         tactical)",
    ),
];

/// A scenario's result lines, or what went wrong.
type Lines = Result<Vec<serde_json::Value>, String>;

fn main() -> ExitCode {
    // `bench node core|edge ...`: a scenario's node in a process of its own.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().is_some_and(|a| a == "node") {
        let role = raw.next().unwrap_or_default();
        return node::main(&role.to_string_lossy(), raw);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--profile NAME`: `catch-up` through that link profile only.
    let profile = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `--case NAME`: `mirror` runs that case only (`outage-resume`, or the lan cases).
    let case = args
        .iter()
        .position(|a| a == "--case")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let scenario = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with("--")
                && (*i == 0 || (args[i - 1] != "--profile" && args[i - 1] != "--case"))
        })
        .map(|(_, a)| a);
    let usage = || {
        eprintln!(
            "usage: bench <scenario> [--quick] [--profile NAME] [--case NAME]\n\n\
             --profile NAME  catch-up through that link profile only\n\
             --case NAME     mirror: that case only (outage-resume, or lan for the others);\n\
                             priority: mirror or tactical\n\n\
             scenarios:"
        );
        for (name, what) in SCENARIOS {
            eprintln!("  {name:<12} {what}");
        }
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        usage();
        return ExitCode::SUCCESS;
    }
    if let Some(bad) = args
        .iter()
        .find(|a| a.starts_with("--") && !["--quick", "--profile", "--case"].contains(&a.as_str()))
    {
        eprintln!("error: unknown option {bad}");
        usage();
        return ExitCode::from(2);
    }
    let runtime = match tests::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match scenario.map(String::as_str) {
        Some("log-append") => runtime
            .block_on(store::log_append(quick))
            .map(|line| vec![line]),
        Some("replicate") => runtime.block_on(link::replicate(quick)),
        Some("latency") => runtime.block_on(link::latency(quick)),
        Some("catch-up") => runtime.block_on(async {
            match profile {
                Some(name) => impaired::catch_up_profiles(quick, Some(&name), Vec::new()).await,
                None => {
                    let lan = link::catch_up(quick).await?;
                    impaired::catch_up_profiles(quick, None, lan).await
                }
            }
        }),
        Some("idle") => runtime.block_on(impaired::idle(quick)),
        Some("first-entry") => runtime.block_on(impaired::first_entry(quick)),
        Some("conflation") => runtime.block_on(conflation::conflation(quick)),
        Some("wire") => runtime.block_on(link::wire(quick)),
        Some("mirror") => runtime.block_on(mirror::mirror(quick, case.as_deref())),
        Some("priority") => runtime.block_on(priority::priority(quick, case.as_deref())),
        Some("fanout") => runtime.block_on(fanout::fanout(quick)),
        Some("memory") => runtime.block_on(memory::memory(quick)),
        Some("bridge") => runtime.block_on(bridge::bridge(quick)),
        Some("failover") => runtime.block_on(failover::failover(quick)),
        Some(other) => {
            eprintln!("error: unknown scenario {other:?}");
            usage();
            return ExitCode::from(2);
        }
        None => {
            usage();
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `x` rounded to two decimals, for readable JSON.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
