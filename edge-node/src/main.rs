//! The `edge-node` binary: `edge-node --help` says how to run it.

use std::process::ExitCode;

use protocol::node::{Role, main_for};

fn main() -> ExitCode {
    // Arguments, config, logging, runtime and signals: all shared with `core-node`.
    main_for(Role::Edge, edge_node::run)
}
