//! The `edge-node` binary: `edge-node --help` says how to run it.

use std::process::ExitCode;

use protocol::node::cli::{self, Invocation};
use protocol::node::{Role, main_for};

fn main() -> ExitCode {
    // One command line for both binaries (`protocol::node::cli`), narrowed to this role.
    match cli::parse(Role::Edge, std::env::args_os()) {
        // Commands for a running node go to its HTTP API (`status`, `services`, ...).
        Ok(Invocation::Api(args)) => ui::cli::run(Role::Edge, args),
        // Config, logging, runtime and signals: all shared with `core-node`. `run` takes
        // the mission's settings (`mission::Settings`): the config has its sections.
        Ok(Invocation::Node(args)) => main_for(Role::Edge, args, edge_node::run),
        // Help, version or completions printed, or a usage error (2).
        Err(code) => code,
    }
}
