//! The node binaries as child processes, shared by the scenarios that run them:
//! built once by a nested cargo build, started with a config file, their log (stderr)
//! read line by line on a thread, signalled or killed by PID.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: a debug binary on a loaded 2-core machine. Only reached on failure.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// The path of a node binary, built once per test run with the workspace's cargo (the
/// integration-test crate cannot name another package's binaries directly).
pub(crate) fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut command = Command::new(cargo);
        // Without the variables cargo set for this test: a build script that reads one
        // (ring's reads CARGO_MANIFEST_DIR) would otherwise rebuild, and everything above
        // it, here and again at the next `cargo build` or `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&&*key)
            {
                command.env_remove(&*key);
            }
        }
        let out = command
            .args([
                "build",
                "--locked",
                "-p",
                "core-node",
                "-p",
                "edge-node",
                "--bins",
            ])
            .current_dir(&root)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the node binaries failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // The test executable lives in target/<profile>/deps; the binaries one level up.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("no target directory")?;
        profile
            .join("../debug")
            .canonicalize()
            .map_err(|e| e.to_string())
    });
    match dir {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("{e}"),
    }
}

/// A node process whose stderr (its log) is read line by line on a thread, each line
/// stamped with the moment it was read. Dropped while it runs (a failed test), the
/// process is killed, so that no node outlives its test.
pub(crate) struct Node {
    child: Option<Child>,
    log: mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Node {
    pub(crate) fn start(binary_name: &str, config: &Path) -> Node {
        Node::spawn(
            Command::new(binary(binary_name))
                .arg("--config")
                .arg(config),
        )
    }

    /// Runs `command` (a node binary and its arguments) with its log on a pipe.
    pub(crate) fn spawn(command: &mut Command) -> Node {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the node");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a line that is not UTF-8 must not end the log.
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                buf.clear();
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Node {
            child: Some(child),
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `text`.
    pub(crate) fn wait_for(&mut self, text: &str) {
        self.wait_for_line(|line| line.contains(text), text);
    }

    /// Waits for a log line for which `check` holds, and returns it; `what` names it.
    pub(crate) fn wait_for_line(&mut self, check: impl Fn(&str) -> bool, what: &str) -> String {
        self.wait_for_stamped(check, what).1
    }

    /// As [`Node::wait_for_line`], with the moment the line was written.
    pub(crate) fn wait_for_stamped(
        &mut self,
        check: impl Fn(&str) -> bool,
        what: &str,
    ) -> (Instant, String) {
        // One deadline for all lines: a node that logs now and then must not keep a
        // wait for a line that never comes going for ever.
        self.wait_for_by(Instant::now() + PATIENCE, check, what)
    }

    /// The next log line and the moment it was written; `what` names what the caller
    /// waits for, for the message if none comes.
    pub(crate) fn next_line(&mut self, what: &str) -> (Instant, String) {
        self.next_line_by(Instant::now() + PATIENCE, what)
    }

    /// As [`Node::next_line`], failing at `deadline`.
    pub(crate) fn next_line_by(&mut self, deadline: Instant, what: &str) -> (Instant, String) {
        match self
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok((at, line)) => {
                self.seen.push(line.clone());
                (at, line)
            }
            Err(_) => {
                // Whether it is still running, and if not how it ended.
                let status = self.child.as_mut().map(|c| c.try_wait());
                panic!(
                    "no log line with {what:?} (the process: {status:?}); log so far:\n{}",
                    self.seen.join("\n")
                )
            }
        }
    }

    /// As [`Node::wait_for_stamped`], but fails at `deadline` (a failure bound tighter
    /// than [`PATIENCE`], for a test whose point is that something happens before a
    /// timeout elsewhere would make it happen anyway).
    pub(crate) fn wait_for_by(
        &mut self,
        deadline: Instant,
        check: impl Fn(&str) -> bool,
        what: &str,
    ) -> (Instant, String) {
        loop {
            let (at, line) = self.next_line_by(deadline, what);
            if check(&line) {
                return (at, line);
            }
        }
    }

    /// The next log line if one was written already.
    pub(crate) fn try_next_line(&mut self) -> Option<(Instant, String)> {
        let (at, line) = self.log.try_recv().ok()?;
        self.seen.push(line.clone());
        Some((at, line))
    }

    /// The log lines seen so far.
    pub(crate) fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal by PID.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; returns its status and the rest of its log.
    pub(crate) fn exit(mut self) -> (ExitStatus, String) {
        let (tx, rx) = mpsc::channel();
        let mut child = self.child.take().expect("a running node");
        std::thread::spawn(move || drop(tx.send(child.wait())));
        let status = rx
            .recv_timeout(PATIENCE)
            .expect("the node exits")
            .expect("wait for the node");
        self.seen.extend(self.log.iter().map(|(_, line)| line));
        (status, self.seen.join("\n"))
    }

    /// Kills the process with SIGKILL (by PID), waits for it; returns its log.
    pub(crate) fn kill(mut self) -> String {
        let mut child = self.child.take().expect("a running node");
        child.kill().expect("SIGKILL the node");
        child.wait().expect("wait for the killed node");
        self.seen.extend(self.log.iter().map(|(_, line)| line));
        self.seen.join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of a `key=value` field of a text log line (`key` with its `=`).
pub(crate) fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_owned()
}
