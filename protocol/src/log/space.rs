//! The free space of the disk under the store: while it is under `min_free`, entries
//! are refused ([`WriteError::DiskFull`]) and everything else goes on.
//!
//! A store that runs out of disk mid-write must refuse every write until it is reopened
//! (it is poisoned), so this keeps it from getting there: the owner asks before each
//! transaction that writes entries or documents, and a link's receiver waits here rather
//! than fail its session. Cursors, acknowledgements, peer records and retention (which
//! frees space, and records gaps) still pass: they are small, and `min_free` is their
//! reserve. The disk is asked again once a second has passed or a quarter of the room
//! left has been written since, so a burst cannot overshoot and a quiet store costs
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::WriteError;

/// The default disk budget for a store in `dir`: a third of its room (the disk's free
/// space plus what the store's files take), as the store takes about twice its entry
/// bytes on disk; `None` if the disk cannot be asked.
pub fn default_budget(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let free = fs2::available_space(existing).ok()?;
    let held: u64 = walk_size(dir);
    Some(free.saturating_add(held) / 3)
}

/// Bytes the files under `dir` take (0 if there is none).
fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// How often a full disk is asked again, and a store that writes little at most.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// Where free space comes from: the filesystem, or a test's numbers.
pub(super) type FreeSpace = Box<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// The store's view of the free space under it.
pub(super) struct Space {
    path: PathBuf,
    min_free: u64,
    free_space: FreeSpace,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the disk was last asked, and what it said.
    asked: Option<(Instant, u64)>,
    /// Bytes written since.
    written: u64,
    /// Whether the last answer was under `min_free` (logged once per change).
    full: bool,
}

impl Space {
    /// The space under `path`, refusing entries under `min_free` bytes free (0: never).
    pub(super) fn new(path: PathBuf, min_free: u64) -> Space {
        Space::with(path, min_free, Box::new(|p| fs2::available_space(p)))
    }

    pub(super) fn with(path: PathBuf, min_free: u64, free_space: FreeSpace) -> Space {
        Space {
            path,
            min_free,
            free_space,
            state: Mutex::new(State::default()),
        }
    }

    /// Refuses with [`WriteError::DiskFull`] while the disk's free space is under
    /// `min_free`.
    pub(super) fn check(&self, now: Instant) -> Result<(), WriteError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let free = match state.asked {
            Some((at, free))
                if now.duration_since(at) < ASK_EVERY
                    && (state.full || state.written < free.saturating_sub(self.min_free) / 4) =>
            {
                free.saturating_sub(state.written)
            }
            _ => match (self.free_space)(&self.path) {
                Ok(free) => {
                    state.asked = Some((now, free));
                    state.written = 0;
                    free
                }
                Err(err) => {
                    // Not knowing is no reason to refuse: the write itself will tell.
                    tracing::warn!(path = %self.path.display(), %err, "cannot read the disk's free space");
                    return Ok(());
                }
            },
        };
        let full = free < self.min_free;
        if full != state.full {
            state.full = full;
            if full {
                tracing::error!(path = %self.path.display(), free, min_free = self.min_free, "disk full: the store refuses entries until space is freed");
            } else {
                tracing::info!(path = %self.path.display(), free, "the disk has room again: the store takes entries");
            }
        }
        if full {
            return Err(WriteError::DiskFull {
                path: self.path.clone(),
                free,
                min_free: self.min_free,
            });
        }
        Ok(())
    }

    /// Counts `bytes` written since the disk was last asked.
    pub(super) fn wrote(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.written = state.written.saturating_add(bytes);
    }
}

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space")
            .field("path", &self.path)
            .field("min_free", &self.min_free)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// A disk with `free` bytes free, counting how often it is asked.
    fn disk(free: &Arc<AtomicU64>, asked: &Arc<AtomicUsize>) -> FreeSpace {
        let (free, asked) = (free.clone(), asked.clone());
        Box::new(move |_| {
            asked.fetch_add(1, Ordering::Relaxed);
            Ok(free.load(Ordering::Relaxed))
        })
    }

    #[test]
    fn entries_are_refused_under_min_free_and_taken_again_once_space_returns() {
        let (free, asked) = (
            Arc::new(AtomicU64::new(1000)),
            Arc::new(AtomicUsize::new(0)),
        );
        let space = Space::with("store".into(), 100, disk(&free, &asked));
        let t0 = Instant::now();
        assert!(space.check(t0).is_ok());
        // Writes count against what the disk said, without asking it again...
        space.wrote(100);
        assert!(space.check(t0).is_ok());
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        // ...until a quarter of the room left is written.
        free.store(150, Ordering::Relaxed);
        space.wrote(200);
        assert!(space.check(t0).is_ok());
        assert_eq!(asked.load(Ordering::Relaxed), 2);
        free.store(99, Ordering::Relaxed);
        let t1 = t0 + ASK_EVERY;
        match space.check(t1) {
            Err(WriteError::DiskFull { free, min_free, .. }) => {
                assert_eq!((free, min_free), (99, 100));
            }
            other => panic!("{other:?}"),
        }
        // Full: asked again only after a second.
        free.store(10_000, Ordering::Relaxed);
        assert!(space.check(t1).is_err());
        assert!(space.check(t1 + ASK_EVERY).is_ok());
    }

    #[test]
    fn no_minimum_never_asks() {
        let (free, asked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
        let space = Space::with("store".into(), 0, disk(&free, &asked));
        assert!(space.check(Instant::now()).is_ok());
        assert_eq!(asked.load(Ordering::Relaxed), 0);
    }
}
