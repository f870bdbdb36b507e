//! The `edge-node` binary: `edge-node --help` says how to run it.

use std::process::ExitCode;

use protocol::node::{Role, main_for};

fn main() -> ExitCode {
    // Commands for a running node go to its HTTP API (`status`, `services`, ...).
    if let Some(code) = ui::cli::main(Role::Edge) {
        return code;
    }
    // Arguments, config, logging, runtime and signals: all shared with `core-node`.
    main_for(Role::Edge, edge_node::run)
}
