//! The `core-node` binary: `core-node --help` says how to run it.

use std::process::ExitCode;

use protocol::node::{Role, main_for};

fn main() -> ExitCode {
    // Arguments, config, logging, runtime and signals: all shared with `edge-node`.
    main_for(Role::Core, core_node::run)
}
