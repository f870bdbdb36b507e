//! `edge-node mirror`: mirror the core's mission volume by hand, from a shell.
//!
//! - The edge starts as in a normal run ([`Node::start`]: store, link, mirror; not the
//!   services the `edge-node` crate adds), presses "Mirror" at once ([`Mirror::start`]),
//!   and serves until the mirror has ended.
//! - Progress goes to stderr, with the node's log: a line when the state or the link
//!   changes, and every [`PROGRESS_EVERY`] while the mirror plans or runs (bytes and files
//!   done and to do, rate, time left); at the end a summary with exact byte counts.
//! - Done: [`run`] returns `Ok` (exit 0). Failed: [`MirrorRunError::Failed`] (exit 1), the
//!   previous version stays in `current`. A signal stops the node cleanly first
//!   ([`MirrorRunError::Stopped`], exit 1): the operator's start is kept on disk, so the
//!   mirror resumes by itself at the edge's next start, with or without `mirror`.
//!
//! IO: stderr, and what [`Node`] does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Node, NodeError, Role, Shutdown};
use crate::config::Config;
use crate::link::{Mirror, PeerLink};
use crate::mirror::{MirrorState, MirrorStatus};

/// How often a progress line is printed while the mirror plans or runs.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Why `edge-node mirror` did not bring the mirror up to date.
#[derive(Debug, thiserror::Error)]
pub(super) enum MirrorRunError {
    /// The node could not start, or stopped on an error.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The operator's start could not be recorded in the mirror directory.
    #[error("cannot start the mirror: {0}")]
    Start(#[source] std::io::Error),
    /// The mirror failed; the previous version is still in `current`.
    #[error("the mirror failed: {why}; the previous version is kept in {}", current.display())]
    Failed {
        /// The mirror's error.
        why: String,
        /// Where readers find the mirror.
        current: PathBuf,
    },
    /// A signal stopped the node before the mirror was done.
    #[error(
        "stopped before the mirror was done; it resumes the next time the edge runs \
         (`edge-node` or `edge-node mirror`)"
    )]
    Stopped,
}

/// Runs the edge node until the mirror it starts has ended, or `shutdown` resolves.
pub(super) async fn run(config: Config, shutdown: Shutdown) -> Result<(), MirrorRunError> {
    let core = format!("{} at {}", config.link.core_name, config.link.core);
    let node = Node::start(Role::Edge, config).await?;
    let link = node.links().link(&node.config().link.core_name);
    let Some(mirror) = node.mirror().cloned() else {
        return Err(MirrorRunError::Failed {
            why: "this node keeps no mirror".into(),
            current: PathBuf::new(),
        });
    };
    let current = mirror.current_dir();
    let watch = mirror.watch();
    mirror.start().map_err(MirrorRunError::Start)?;
    eprintln!(
        "mirror: started: the volume of {core} is mirrored into {}",
        current.display()
    );
    let began = Instant::now();
    let mut ended = None;
    let stop = async {
        ended = tokio::select! {
            () = shutdown => None,
            status = follow(&mirror, &link, watch, &core) => Some(status),
        };
    };
    node.serve(stop).await?;
    match ended {
        None => Err(MirrorRunError::Stopped),
        Some(status) if status.state == MirrorState::Done => {
            eprintln!("{}", summary(&status, began.elapsed(), &current));
            Ok(())
        }
        Some(status) => Err(MirrorRunError::Failed {
            why: status
                .last_error
                .unwrap_or_else(|| "no reason given".into()),
            current,
        }),
    }
}

/// Prints progress until the run this command started has ended; returns its status.
async fn follow(
    mirror: &Mirror,
    link: &PeerLink,
    mut watch: watch::Receiver<MirrorStatus>,
    core: &str,
) -> MirrorStatus {
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = None;
    let mut ticked = false;
    loop {
        let status = watch.borrow_and_update().clone();
        // The run has ended once the operator's start is cleared (done or failed).
        if !mirror.started() && matches!(status.state, MirrorState::Done | MirrorState::Failed) {
            return status;
        }
        let connected = link.status().connected;
        let busy = matches!(status.state, MirrorState::Planning | MirrorState::Running);
        if shown != Some((status.state, connected)) || (ticked && busy) {
            eprintln!("{}", progress(&status, connected, core));
            shown = Some((status.state, connected));
        }
        ticked = false;
        tokio::select! {
            changed = watch.changed() => if changed.is_err() {
                let mut failed = status;
                failed.failed("the mirror's task ended");
                return failed;
            },
            _ = every.tick() => ticked = true,
        }
    }
}

/// One progress line.
fn progress(status: &MirrorStatus, connected: bool, core: &str) -> String {
    match status.state {
        MirrorState::Planning => format!("mirror: planning: asking {core} for its manifest"),
        MirrorState::Running if status.bytes_done >= status.bytes_todo => format!(
            "mirror: applying: {} of {} bytes verified, building the new version of {} files",
            bytes(status.bytes_done),
            bytes(status.bytes_todo),
            status.files_todo
        ),
        MirrorState::Running => {
            let pace = match (status.rate > 0.0, status.eta) {
                (true, Some(eta)) => {
                    format!("{}/s, {} left", bytes(status.rate as u64), duration(eta))
                }
                _ => "measuring the rate".to_owned(),
            };
            format!(
                "mirror: running: {} of {} ({:.0} %), {}/{} files, {pace}",
                bytes(status.bytes_done),
                bytes(status.bytes_todo),
                status.percent(),
                status.files_done,
                status.files_todo
            )
        }
        _ if !connected => match (&status.last_error, status.state) {
            (Some(why), MirrorState::Interrupted) => {
                format!("mirror: interrupted ({why}); waiting for the link to {core}")
            }
            _ => format!("mirror: waiting for the link to {core}"),
        },
        _ => format!("mirror: the link to {core} is up; starting"),
    }
}

/// The last line of a completed mirror.
fn summary(status: &MirrorStatus, took: Duration, current: &std::path::Path) -> String {
    let what = if status.bytes_todo == 0 && status.files_todo == 0 {
        "the mirror already held the core's volume".to_owned()
    } else {
        format!(
            "{} files written, {} bytes fetched ({}), {} bytes reused",
            status.files_todo,
            status.bytes_done,
            bytes(status.bytes_done),
            status.bytes_reused
        )
    };
    format!(
        "mirror: done in {}: {what}; {} bytes on the link; the files are in {}",
        duration(took),
        status.bytes_on_link,
        current.display()
    )
}

/// `n` bytes for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `0.4 s`, `12 s`, `3 min 5 s`, `2 h 10 min`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1} s", d.as_secs_f64()),
        10..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_for_people() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(Duration::from_millis(420)), "0.4 s");
        assert_eq!(duration(Duration::from_secs(12)), "12 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(duration(Duration::from_secs(7800)), "2 h 10 min");
    }

    #[test]
    fn progress_lines() {
        let core = "hq at 127.0.0.1:7000";
        let mut status = MirrorStatus::default();
        assert_eq!(
            progress(&status, false, core),
            "mirror: waiting for the link to hq at 127.0.0.1:7000"
        );
        status.state = MirrorState::Running;
        (status.bytes_done, status.bytes_todo) = (1 << 20, 4 << 20);
        (status.files_done, status.files_todo) = (0, 3);
        assert_eq!(
            progress(&status, true, core),
            "mirror: running: 1.0 MiB of 4.0 MiB (25 %), 0/3 files, measuring the rate"
        );
        (status.rate, status.eta) = (512.0 * 1024.0, Some(Duration::from_secs(6)));
        assert!(
            progress(&status, true, core).ends_with("512.0 KiB/s, 6.0 s left"),
            "{}",
            progress(&status, true, core)
        );
        status.interrupted();
        status.last_error = Some("connection lost".into());
        assert_eq!(
            progress(&status, false, core),
            "mirror: interrupted (connection lost); waiting for the link to hq at 127.0.0.1:7000"
        );
        status.state = MirrorState::Done;
        status.bytes_on_link = 4_200_000;
        let line = summary(&status, Duration::from_secs(3), "/m/current".as_ref());
        assert!(
            line.starts_with("mirror: done in 3.0 s: 3 files written, 1048576 bytes fetched")
                && line.ends_with("4200000 bytes on the link; the files are in /m/current"),
            "{line}"
        );
    }
}
