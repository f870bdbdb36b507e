//! rsync as the `mirror` scenario's yardstick: a local rsync daemon on 127.0.0.1 serving
//! a copy of the volume, and an rsync client pulling it into a destination directory,
//! as an edge would pull from a core with rsync.
//!
//! The daemon runs as a child process (`--no-detach`) from a generated `rsyncd.conf`
//! (one read-only module `volume`, no chroot) on a free port, and is killed by its PID
//! when the [`Rsync`] is dropped. Each [`Rsync::pull`] runs
//! `rsync -a --delete --no-whole-file --fsync --stats rsync://127.0.0.1:PORT/volume/ DEST/`
//! and reads "Total bytes sent" and "Total bytes received" from `--stats`: rsync's
//! protocol bytes both ways (file list, block checksums, tokens and literal data),
//! without TCP/IP. `--fsync` (rsync 3.2.4 and later) fsyncs every file rsync writes, so
//! that its time is a durable yardstick as the mirror's is; an older rsync pulls without
//! it and [`Rsync::fsync`] says so.
//!
//! IO: files under its own scratch directory, two child processes, a TCP port.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::TempDir;

/// How long the daemon may take to accept connections.
const DAEMON_START: Duration = Duration::from_secs(10);

/// A running rsync daemon with its module and a destination to pull into.
#[derive(Debug)]
pub(crate) struct Rsync {
    dir: TempDir,
    daemon: Child,
    port: u16,
    fsync: bool,
}

/// What one pull moved, from rsync's `--stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pulled {
    /// "Total bytes sent" (client to daemon: file list requests, block checksums).
    pub sent: u64,
    /// "Total bytes received" (daemon to client: file list, tokens, literal data).
    pub received: u64,
    /// "Number of regular files transferred".
    pub files: u64,
    /// "Literal data": bytes sent as they are, not matched against the destination.
    pub literal: u64,
    /// How long the pull took, the client's start and exit included.
    pub seconds: f64,
}

impl Pulled {
    /// Bytes on the wire as rsync counts them: both ways.
    pub(crate) fn wire_bytes(&self) -> u64 {
        self.sent + self.received
    }
}

impl Rsync {
    /// Starts a daemon serving an empty module; `Ok(None)` (and a word on stderr) when
    /// rsync is not installed.
    pub(crate) fn start() -> Result<Option<Rsync>, String> {
        match Command::new("rsync")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("mirror: `rsync --version` failed ({s}): no rsync comparison");
                return Ok(None);
            }
            Err(e) => {
                eprintln!(
                    "mirror: rsync is not available ({e}): no rsync comparison \
                     (apt-get install rsync)"
                );
                return Ok(None);
            }
        }
        let fsync = Command::new("rsync")
            .arg("--help")
            .stdin(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).contains("--fsync"))
            .unwrap_or(false);
        if !fsync {
            eprintln!(
                "mirror: this rsync has no --fsync (3.2.4 and later): its seconds are not \
                 durable ones"
            );
        }
        let dir = TempDir::new("bench-rsync").map_err(|e| e.to_string())?;
        for sub in ["module", "dest"] {
            std::fs::create_dir_all(dir.path().join(sub))
                .map_err(|e| format!("cannot create {sub} for rsync: {e}"))?;
        }
        let port = free_port()?;
        // The daemon drops to `nobody` when started by root unless told otherwise: read
        // the module as whoever owns it, which is us.
        let owner = std::fs::metadata(dir.path()).map_err(|e| e.to_string())?;
        let conf = dir.path().join("rsyncd.conf");
        let text = format!(
            "use chroot = no\n\
             uid = {uid}\n\
             gid = {gid}\n\
             [volume]\n\
             \tpath = {module}\n\
             \tread only = yes\n\
             \tuse chroot = no\n",
            uid = owner.uid(),
            gid = owner.gid(),
            module = dir.path().join("module").display(),
        );
        std::fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let log = dir.path().join("rsyncd.log");
        let daemon = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", conf.display()))
            .arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--log-file={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the rsync daemon: {e}"))?;
        let mut rsync = Rsync {
            dir,
            daemon,
            port,
            fsync,
        };
        rsync.wait_ready()?;
        eprintln!(
            "mirror: rsync daemon (pid {}) on 127.0.0.1:{port}",
            rsync.daemon.id()
        );
        Ok(Some(rsync))
    }

    /// The module's directory: the copy of the volume that rsync serves.
    pub(crate) fn module(&self) -> PathBuf {
        self.dir.path().join("module")
    }

    /// Whether pulls fsync every file they write (`--fsync`).
    pub(crate) fn fsync(&self) -> bool {
        self.fsync
    }

    /// The destination that pulls keep up to date.
    pub(crate) fn dest(&self) -> PathBuf {
        self.dir.path().join("dest")
    }

    /// Pulls the module into the destination (blocking; seconds for large changes).
    pub(crate) fn pull(&self) -> Result<Pulled, String> {
        let started = Instant::now();
        let mut command = Command::new("rsync");
        command.args(["-a", "--delete", "--no-whole-file", "--stats"]);
        if self.fsync {
            command.arg("--fsync");
        }
        let out = command
            .arg(format!("rsync://127.0.0.1:{}/volume/", self.port))
            .arg(format!("{}/", self.dest().display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run rsync: {e}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "rsync failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            ));
        }
        let stat = |label: &str| {
            stat(&stdout, label)
                .ok_or_else(|| format!("no {label:?} in rsync's --stats:\n{stdout}"))
        };
        Ok(Pulled {
            sent: stat("Total bytes sent")?,
            received: stat("Total bytes received")?,
            files: stat("Number of regular files transferred")?,
            literal: stat("Literal data")?,
            seconds,
        })
    }

    /// Waits until the daemon accepts connections; fails if it exits or takes too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DAEMON_START;
        loop {
            if let Ok(Some(status)) = self.daemon.try_wait() {
                let mut why = String::new();
                if let Some(mut err) = self.daemon.stderr.take() {
                    let _ = err.read_to_string(&mut why);
                }
                return Err(format!(
                    "the rsync daemon exited at start ({status}): {}",
                    why.trim()
                ));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the rsync daemon did not listen on port {} within {DAEMON_START:?}",
                    self.port
                ));
            }
            // A child process gives no readiness signal but its port: poll it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rsync {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID alone.
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A port free on 127.0.0.1 now (the daemon binds it a moment later).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The number after `label:` in rsync's `--stats` output ("1,234,567" or "1.234.567",
/// depending on the locale), if there is one.
fn stat(stats: &str, label: &str) -> Option<u64> {
    let line = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(label)?.strip_prefix(':'))?;
    let digits: String = line
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
