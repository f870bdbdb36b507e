//! The kill test's child: a node (started by `protocol::node::Builder` and served, as
//! `core-node` and `edge-node` run it) that appends to an `all` topic in a loop until it
//! is killed.
//!
//! Usage: `link-writer <core|edge> <data-dir> <certs-dir> <address>`. The store lives in
//! `<data-dir>/store`. The core listens on the address (port 0 picks one) and prints
//! `listening <address>` first; the edge dials it. Each acknowledged (durable) append
//! prints `ack <seq> <token>`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use protocol::entry::{Append, Retention, Scope, TopicConfig};
use protocol::link::SessionSettings;
use protocol::node::{Builder, Role};
use tests::cluster::{node_config, topic};

const PRODUCERS: usize = 4;

/// The topic the replication_crash test replicates.
const TOPIC: &str = "kill.b";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, data, certs, address] = args.as_slice() else {
        eprintln!("usage: link-writer <core|edge> <data-dir> <certs-dir> <address>");
        return ExitCode::from(2);
    };
    let role = match role.as_str() {
        "core" => Role::Core,
        "edge" => Role::Edge,
        other => {
            eprintln!("error: unknown role {other:?}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tests::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(role, data.into(), certs.into(), address)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    role: Role,
    data: PathBuf,
    certs: PathBuf,
    address: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = if role == Role::Core { "hq" } else { "alpha" };
    let kill = TopicConfig {
        name: topic(TOPIC),
        scope: Scope::All,
        retention: Retention::default(),
    };
    let mut config = node_config(role, n, data, &[kill]);
    config.link.certs_dir = Some(certs);
    match role {
        Role::Core => config.link.listen = address.parse()?,
        Role::Edge => address.clone_into(&mut config.link.core),
    }
    // Cursors are stored every 10 ms instead of every second, so that kills land between
    // stores, sends and acknowledgements in every combination.
    let settings = SessionSettings {
        persist_every: std::time::Duration::from_millis(10),
        ..SessionSettings::default()
    };
    let node = Builder::new(role, config).session(settings).start().await?;
    if role == Role::Core {
        println!("listening {}", node.link_addr()?);
    }
    let store = node.store().clone();
    let mut tasks = tokio::task::JoinSet::<Result<(), String>>::new();
    tasks.spawn(async move {
        node.serve(std::future::pending())
            .await
            .map_err(|e| e.to_string())
    });
    let pid = std::process::id();
    for p in 0..PRODUCERS {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0u64.. {
                let token = format!("{}-{pid}-{p}-{i}", store.node());
                let done = store
                    .append(&topic(TOPIC), Append::new(token.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                // Written only after the append is acknowledged (durable).
                writeln!(std::io::stdout().lock(), "ack {} {token}", done.seq)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
    }
    match tasks.join_next().await {
        Some(Ok(result)) => result.map_err(Into::into),
        Some(Err(e)) => Err(e.into()),
        None => Ok(()),
    }
}
