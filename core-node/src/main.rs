//! The `core-node` binary: `core-node --help` says how to run it.

use std::process::ExitCode;

use protocol::node::{Role, main_for};

fn main() -> ExitCode {
    // Commands for a running node go to its HTTP API (`status`, `services`, ...).
    if let Some(code) = ui::cli::main(Role::Core) {
        return code;
    }
    // Arguments, config, logging, runtime and signals: all shared with `edge-node`.
    main_for(Role::Core, core_node::run)
}
