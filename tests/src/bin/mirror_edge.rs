//! The network mirror kill test's child: an edge `alpha` (`Node::start` and
//! `Node::serve`, as `edge-node` runs them, with no topics) that dials the core, presses "Mirror" and prints its progress
//! until the mirror is done, or until it is killed.
//!
//! Usage: `mirror-edge <data-dir> <certs-dir> <core-address>`. The store lives in
//! `<data-dir>/store`, the mirror in `<data-dir>/mirror`. Lines on stdout: `ready` once the
//! mirror is open (recovered), then `status <state> <bytes done> <bytes to do>` on every
//! change of either, then `done <version>` before a clean exit. A failed mirror prints
//! `error: ...` on stderr and exits with 1.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use protocol::mirror::{MirrorState, MirrorStatus};
use protocol::node::{Node, Role};
use tests::cluster::node_config;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, certs, address] = args.as_slice() else {
        eprintln!("usage: mirror-edge <data-dir> <certs-dir> <core-address>");
        return ExitCode::from(2);
    };
    let runtime = match tests::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(data.into(), certs.into(), address)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    data: PathBuf,
    certs: PathBuf,
    address: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = node_config(Role::Edge, "alpha", data, &[]);
    config.link.certs_dir = Some(certs);
    address.clone_into(&mut config.link.core);
    let node = Node::start(Role::Edge, config).await?;
    let mirror = node.mirror().cloned().ok_or("an edge has a mirror")?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = node.serve(async {
        let _ = stopped.await;
    });
    tokio::pin!(serve);

    let mut watch = mirror.watch();
    mirror.start()?;
    let mut shown = None;
    let version = loop {
        let status: MirrorStatus = watch.borrow_and_update().clone();
        let now = (status.state, status.bytes_done, status.bytes_todo);
        if shown != Some(now) {
            writeln!(out, "status {:?} {} {}", now.0, now.1, now.2)?;
            shown = Some(now);
        }
        // The run this process started has ended once the operator's wish is cleared.
        if !mirror.started() {
            match status.state {
                MirrorState::Done => break status.target_version.unwrap_or(0),
                MirrorState::Failed => {
                    let why = status.last_error.unwrap_or_default();
                    return Err(format!("the mirror failed: {why}").into());
                }
                _ => {}
            }
        }
        tokio::select! {
            changed = watch.changed() => changed.map_err(|_| "the mirror task ended")?,
            served = &mut serve => return Err(format!("the node stopped: {served:?}").into()),
        }
    };
    writeln!(out, "done {version}")?;
    drop(mirror);
    // The node stops as at SIGTERM: links closed, then the store.
    let _ = stop.send(());
    serve.await?;
    Ok(())
}
