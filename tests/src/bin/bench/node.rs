//! This binary as a real node in a process of its own: `bench node core|edge --config F`
//! runs exactly what `core-node` or `edge-node` runs, so that a scenario can measure one
//! node alone (its memory, a kill and a restart) without another build.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::node::cli::{self, Invocation};
use protocol::node::{Role, main_for};

/// Runs the node of `role` with `args` (what follows `bench node <role>`), as the node's
/// own binary would.
pub(crate) fn main(role: &str, args: impl Iterator<Item = OsString>) -> ExitCode {
    let (role, binary) = match role {
        "core" => (Role::Core, "core-node"),
        "edge" => (Role::Edge, "edge-node"),
        other => {
            eprintln!("error: bench node: no role {other:?} (core or edge)");
            return ExitCode::from(2);
        }
    };
    let args = std::iter::once(OsString::from(binary)).chain(args);
    match cli::parse(role, args) {
        Ok(Invocation::Node(args)) if role == Role::Core => main_for(role, args, core_node::run),
        Ok(Invocation::Node(args)) => main_for(role, args, edge_node::run),
        Ok(Invocation::Api(args)) => ui::cli::run(role, args),
        Err(code) => code,
    }
}

/// A node running in a child process of this binary, its log lines read as they come.
pub(crate) struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts `bench node <role> --config <config>`.
    pub(crate) fn start(role: &str, config: &Path) -> Result<NodeProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(["node", role, "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the {role} node: {e}"))?;
        let stderr = child.stderr.take().ok_or("the node's log is not piped")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(NodeProcess { child, lines })
    }

    /// Waits up to `patience` for a log line containing `text`; returns it.
    pub(crate) fn wait_for(&mut self, text: &str, patience: Duration) -> Result<String, String> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no {text:?} from the node within {patience:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("the node exited before {text:?}"));
                }
            }
        }
    }

    /// The log lines written since the last call, without waiting.
    pub(crate) fn drain(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The node's resident memory (`VmRSS`), in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64, String> {
        self.status_kib("VmRSS")
    }

    /// One memory figure of the node's `/proc/<pid>/status` (`VmRSS`, `RssAnon`,
    /// `RssFile`), in KiB.
    pub(crate) fn status_kib(&self, key: &str) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("the node's /proc status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {key} in the node's /proc status"))
    }

    /// The CPU time the process has used so far (user and system), from `/proc`.
    pub(crate) fn cpu(&self) -> Result<Duration, String> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .map_err(|e| format!("the node's /proc stat: {e}"))?;
        // Fields after the command name (which may hold spaces), from field 3 on:
        // utime and stime are fields 14 and 15, in clock ticks.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or("no command name in the node's /proc stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| "a short /proc stat".to_owned())
        };
        // Linux reports them in USER_HZ, 100 a second on every architecture it runs
        // this on.
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// SIGKILL, and wait for the process to be gone (what dropping it does).
    pub(crate) fn kill(self) {}
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a log line (up to the next space).
pub(crate) fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(key)? + key.len();
    Some(
        line[at..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_matches('"')
            .to_owned(),
    )
}
