//! The network mirror kill test's child: an edge `alpha` (store, link and mirror, as
//! `edge-node` runs them) that dials the core, presses "Mirror" and prints its progress
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
use std::sync::Arc;

use protocol::link::{self, Links, Local, Mirror, MirrorSettings, SessionSettings};
use protocol::log::{Store, StoreConfig};
use protocol::mirror::{MirrorState, MirrorStatus};
use protocol::node::Role;
use protocol::tls::{self, NodeIdentity};
use tests::cluster::name;

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
    let node = name("alpha");
    let store = Store::open(data.join("store"), StoreConfig::new(node.clone()))?;
    let identity = NodeIdentity::load(&certs, &node, Role::Edge)?;
    let endpoint = tls::client_endpoint(
        ([127, 0, 0, 1], 0).into(),
        &identity,
        Arc::new(tls::transport_config(tls::Timeouts::default())),
    )?;
    let link = Links::default().link(&name("hq"));
    let mirror = Mirror::open(
        &data.join("mirror"),
        MirrorSettings::default(),
        link.clone(),
    )?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    let local = Local {
        store: store.clone(),
        core: false,
        settings: SessionSettings::default(),
        mirror: None,
    };
    let dial = link::dial(local, endpoint, address.to_owned(), name("hq"), link);
    tokio::pin!(dial);

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
            () = &mut dial => return Err("the link's dial loop ended".into()),
        }
    };
    writeln!(out, "done {version}")?;
    drop(mirror);
    store.close().await?;
    Ok(())
}
