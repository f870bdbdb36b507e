//! The HQ node (`core-node`): the core of a mission, which every edge dials.
//!
//! What it is: [`run`], the node as a library, so that tests start it in-process. Today it
//! opens the store, creates the mission pipeline's topics and applies retention (all in
//! [`protocol::node`]); the QUIC listener, the HTTP API and the HQ services join it here.
//!
//! What it is not: argument parsing or logging setup; `main.rs` hands those to
//! [`protocol::node::main_for`].
//!
//! IO: the node's data directory.

use std::future::Future;

use protocol::config::Config;
use protocol::node::{NodeError, Role};

/// Runs the HQ node until `shutdown` resolves, then flushes and closes its store.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    protocol::node::run(Role::Core, config, shutdown).await
}
