//! What a mirror is doing, for operators: a state and counters that the transfer fills in
//! and the UI, the HTTP API and metrics read.
//!
//! Progress is counted in fetched bytes after deduplication (the real work), never in
//! logical file sizes; it only goes up, across interruptions and resumes. Two counters
//! follow the chunks: `bytes_arrived` as their bytes come off the link, `bytes_done` once
//! each is whole and verified (a 64 KiB chunk takes about a minute at 9.6 kbit/s: the
//! first shows it moving, the second jumps when it is in).
//!
//! IO: none, and no clock: callers pass `now`.

use std::time::{Duration, Instant, SystemTime};

use super::plan::Plan;

/// Where a mirror stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MirrorState {
    /// No mirror has run since the node started, or the last one finished.
    #[default]
    Idle,
    /// Fetching the manifest and working out what is missing.
    Planning,
    /// Fetching chunks, then applying.
    Running,
    /// The last mirror completed: the edge holds the target.
    Done,
    /// The last mirror stopped on an error (`last_error`); the previous state is kept.
    Failed,
    /// The link dropped or an operator stopped it; received chunks are kept and a new
    /// start resumes.
    Interrupted,
}

/// A mirror's status. `Default` is an edge that never mirrored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MirrorStatus {
    /// Where it stands.
    pub state: MirrorState,
    /// The version the edge held when this mirror started.
    pub base_version: Option<u64>,
    /// The version it is fetching.
    pub target_version: Option<u64>,
    /// Files of the target written or linked.
    pub files_done: u64,
    /// Files the target adds or changes.
    pub files_todo: u64,
    /// Chunk bytes received and verified.
    pub bytes_done: u64,
    /// Chunk bytes read from the link for this mirror, counted as each `Data` frame's
    /// bytes arrive, before the chunk is whole and verified: partial progress, and when
    /// the first byte came. Kept, like `bytes_done`, when a run resumes the same target
    /// (after an interruption, or a restart of the node, where both start from 0), and
    /// back to 0 with a new target. It also keeps what was received for nothing: the part
    /// of a chunk an interruption cut (fetched again whole on resume) and chunks that
    /// failed verification; so it is never below `bytes_done`, and the difference is
    /// the chunk part way across plus that waste.
    pub bytes_arrived: u64,
    /// Chunk bytes to fetch (after deduplication against what the edge holds).
    pub bytes_todo: u64,
    /// Bytes of new or changed files taken from chunks the edge already held, and from
    /// the prefixes of chunks of which only the rest was fetched (an append's).
    pub bytes_reused: u64,
    /// Bytes of mirror traffic that crossed the link, both ways, framing and refetches
    /// included.
    pub bytes_on_link: u64,
    /// Chunks that failed verification and were fetched again.
    pub refetched: u64,
    /// Recent rate of verified bytes, per second.
    pub rate: f64,
    /// Time left at `rate`, once there is a rate.
    pub eta: Option<Duration>,
    /// When this mirror started.
    pub started: Option<SystemTime>,
    /// When the last successful mirror completed.
    pub last_success: Option<SystemTime>,
    /// The version the last successful mirror brought.
    pub last_success_version: Option<u64>,
    /// The last error, kept until the next success.
    pub last_error: Option<String>,
    /// Interruptions of this mirror (link drops, operator stops).
    pub interruptions: u32,
    meter: RateMeter,
}

/// An exponentially weighted rate over about ten seconds.
#[derive(Debug, Clone, PartialEq, Default)]
struct RateMeter {
    since: Option<Instant>,
    bytes: u64,
}

/// How long samples are gathered before the rate is updated.
const RATE_SAMPLE: Duration = Duration::from_secs(1);

/// Weight of a new one-second sample: about a ten-second memory.
const RATE_WEIGHT: f64 = 0.1;

impl MirrorStatus {
    /// A mirror is starting: the manifest is being fetched.
    pub fn planning(&mut self, base_version: Option<u64>, now: SystemTime) {
        self.state = MirrorState::Planning;
        self.base_version = base_version;
        if self.started.is_none() {
            self.started = Some(now);
        }
    }

    /// The plan is known; counters restart unless this resumes the same target.
    pub fn running(&mut self, plan: &Plan) {
        let resumed = self.target_version == Some(plan.target_version);
        self.state = MirrorState::Running;
        self.target_version = Some(plan.target_version);
        self.files_todo = (plan.create.len() + plan.replace.len()) as u64;
        if resumed {
            // What was verified before stays done: the plan no longer lists it.
            self.bytes_todo = self.bytes_done + plan.fetch_bytes;
        } else {
            self.files_done = 0;
            self.bytes_done = 0;
            self.bytes_arrived = 0;
            self.bytes_todo = plan.fetch_bytes;
            self.refetched = 0;
        }
        self.bytes_reused = plan.reuse_bytes;
        self.meter = RateMeter::default();
        self.rate = 0.0;
        self.eta = None;
    }

    /// The edge already holds the core's current state, at `version`: nothing to fetch.
    pub fn up_to_date(&mut self, version: u64) {
        self.target_version = Some(version);
        self.files_done = 0;
        self.files_todo = 0;
        self.bytes_done = 0;
        self.bytes_arrived = 0;
        self.bytes_todo = 0;
        self.bytes_reused = 0;
    }

    /// `bytes` of chunk data arrived (not yet a whole chunk, not yet verified).
    pub fn arrived(&mut self, bytes: u64) {
        self.bytes_arrived += bytes;
    }

    /// A chunk of `bytes` was received and verified (its bytes arrived before:
    /// [`MirrorStatus::arrived`]).
    pub fn received(&mut self, bytes: u64, now: Instant) {
        self.bytes_done += bytes;
        let since = *self.meter.since.get_or_insert(now);
        self.meter.bytes += bytes;
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= RATE_SAMPLE {
            let sample = self.meter.bytes as f64 / elapsed.as_secs_f64();
            self.rate = if self.rate == 0.0 {
                sample
            } else {
                self.rate + RATE_WEIGHT * (sample - self.rate)
            };
            self.meter = RateMeter {
                since: Some(now),
                bytes: 0,
            };
        }
        let left = self.bytes_todo.saturating_sub(self.bytes_done);
        self.eta = if self.rate > 0.0 {
            Duration::try_from_secs_f64(left as f64 / self.rate).ok()
        } else {
            None
        };
    }

    /// `bytes` of mirror traffic crossed the link (either way).
    pub fn on_link(&mut self, bytes: u64) {
        self.bytes_on_link += bytes;
    }

    /// A chunk failed verification and will be fetched again.
    pub fn refetch(&mut self) {
        self.refetched += 1;
    }

    /// A chunk of which only the rest after a held `prefix` bytes long was fetched failed
    /// its hash once rebuilt: it is fetched again, whole, and its prefix is no longer
    /// reused.
    pub fn prefix_unused(&mut self, prefix: u64) {
        self.refetched += 1;
        self.bytes_todo += prefix;
        self.bytes_reused = self.bytes_reused.saturating_sub(prefix);
    }

    /// A file of the target was written or linked.
    pub fn file_done(&mut self) {
        self.files_done += 1;
    }

    /// The link dropped or an operator stopped the mirror.
    pub fn interrupted(&mut self) {
        self.state = MirrorState::Interrupted;
        self.interruptions += 1;
        self.rate = 0.0;
        self.eta = None;
        self.meter = RateMeter::default();
    }

    /// The mirror stopped on `error`.
    pub fn failed(&mut self, error: impl std::fmt::Display) {
        self.state = MirrorState::Failed;
        self.last_error = Some(error.to_string());
        self.rate = 0.0;
        self.eta = None;
    }

    /// The target is in place.
    pub fn done(&mut self, now: SystemTime) {
        self.state = MirrorState::Done;
        self.last_success = Some(now);
        self.last_success_version = self.target_version;
        self.last_error = None;
        self.started = None;
        self.interruptions = 0;
        self.files_done = self.files_todo;
        self.rate = 0.0;
        self.eta = None;
    }

    /// Verified bytes over bytes to fetch, 0 to 100; 100 when nothing is to fetch.
    pub fn percent(&self) -> f64 {
        if self.bytes_todo == 0 {
            return if self.state == MirrorState::Idle {
                0.0
            } else {
                100.0
            };
        }
        (self.bytes_done as f64 * 100.0 / self.bytes_todo as f64).min(100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::chunk::{ChunkRef, Hash};

    fn plan(version: u64, fetch: u64) -> Plan {
        Plan {
            target_version: version,
            target_root: Hash::of(b"t"),
            fetch: vec![ChunkRef {
                hash: Hash::of(b"c"),
                len: fetch as u32,
            }],
            prefixes: Default::default(),
            fetch_bytes: fetch,
            reuse_bytes: 5,
            create: Vec::new(),
            replace: Vec::new(),
            delete: Vec::new(),
            unchanged: 0,
            files: 0,
            bytes: 0,
        }
    }

    #[test]
    fn progress_rate_and_resume() {
        let (t0, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        let mut s = MirrorStatus::default();
        s.planning(Some(1), wall);
        s.running(&plan(2, 1000));
        assert_eq!(s.state, MirrorState::Running);
        s.received(100, t0);
        s.received(100, t0 + Duration::from_secs(1));
        assert_eq!(s.rate, 200.0);
        assert_eq!(s.eta, Some(Duration::from_secs(4)));
        assert_eq!(s.percent(), 20.0);
        s.interrupted();
        // Resume of the same target: 800 bytes left, progress kept.
        s.running(&plan(2, 800));
        assert_eq!(s.bytes_todo, 1000);
        assert_eq!(s.percent(), 20.0);
        s.received(800, t0 + Duration::from_secs(2));
        s.done(wall);
        assert_eq!(s.state, MirrorState::Done);
        assert_eq!(s.last_success_version, Some(2));
        assert_eq!(s.percent(), 100.0);
        s.failed("disk full");
        assert_eq!(s.last_error.as_deref(), Some("disk full"));
    }

    #[test]
    fn arrived_bytes_move_before_a_chunk_is_verified_and_are_kept_on_resume() {
        let (t0, wall) = (Instant::now(), SystemTime::UNIX_EPOCH);
        let mut s = MirrorStatus::default();
        s.planning(Some(1), wall);
        s.running(&plan(2, 1000));
        // A chunk of 400 bytes part way across: only `bytes_arrived` moves.
        s.arrived(150);
        assert_eq!((s.bytes_arrived, s.bytes_done), (150, 0));
        s.arrived(250);
        s.received(400, t0);
        assert_eq!((s.bytes_arrived, s.bytes_done), (400, 400));
        // One that fails its hash arrives again: the first copy stays counted.
        s.arrived(100);
        s.refetch();
        s.arrived(100);
        s.received(100, t0);
        assert_eq!((s.bytes_arrived, s.bytes_done), (600, 500));
        // The next one is cut by the link after 80 bytes: kept in `bytes_arrived`, and
        // so through the resume of the same target, where it arrives again whole.
        s.arrived(80);
        s.interrupted();
        s.planning(Some(1), wall);
        s.running(&plan(2, 500));
        assert_eq!(
            (s.bytes_arrived, s.bytes_done, s.bytes_todo),
            (680, 500, 1000)
        );
        s.arrived(500);
        s.received(500, t0);
        s.done(wall);
        assert_eq!((s.bytes_arrived, s.bytes_done), (1180, 1000));
        // A new target starts both from 0; so does a mirror with nothing to fetch.
        s.planning(Some(2), wall);
        s.running(&plan(3, 300));
        assert_eq!((s.bytes_arrived, s.bytes_done, s.bytes_todo), (0, 0, 300));
        s.arrived(20);
        s.up_to_date(3);
        assert_eq!((s.bytes_arrived, s.bytes_done, s.bytes_todo), (0, 0, 0));
        assert_eq!(s.target_version, Some(3));
    }

    #[test]
    fn a_prefix_that_does_not_fit_moves_from_reused_to_fetched() {
        let mut s = MirrorStatus::default();
        s.running(&plan(2, 1000));
        assert_eq!((s.bytes_todo, s.bytes_reused), (1000, 5));
        s.prefix_unused(4);
        assert_eq!((s.bytes_todo, s.bytes_reused, s.refetched), (1004, 1, 1));
    }
}
