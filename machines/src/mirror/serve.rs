//! The core's end of a mirror run, without IO: what the edge may ask and when, which
//! chunk goes next, and how fast its bytes go.
//!
//! The driver (`protocol`'s `link/mirror.rs`) hands [`Serve::handle_frame`] each frame
//! from the edge (with the manifest last sent, and the path's measurements for a
//! report); on `Start` it sends the manifest and calls [`Serve::started`]. To send, it
//! writes the report interval [`Serve::poll_report`] gives, reads and checks the chunk
//! [`Serve::next_chunk`] names and hands it to [`Serve::handle_chunk`] (which says how
//! long the operator's cap makes it wait, or that the chunk is gone), then writes what
//! [`Serve::next_slice`] gives when [`Serve::poll_timeout`] says the pacing allows it,
//! reporting every write ([`Serve::wrote_slice`], [`Serve::wrote_frame`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{
    ChunkRef, ChunkTable, Hash, MAX_REQUEST, Manifest, MirrorFrame, Pace, PathNow, RunFailed,
};
use crate::wire;

/// Chunks one stream may have asked for and not yet received.
const MAX_QUEUED: usize = 8 * MAX_REQUEST;

/// The core's side of one mirror stream.
#[derive(Debug)]
pub struct Serve {
    /// The core operator's cap on chunk bytes per second, if any.
    max_rate: Option<u64>,
    /// The lower of the core's and the edge's caps, for this run.
    bucket: Option<Bucket>,
    pace: Pace,
    /// The report interval last told to the edge, and one to tell at the next frame
    /// boundary.
    told: u64,
    tell: Option<u64>,
    /// The chunk table of the manifest last sent: what `Fetch` positions refer to.
    table: Option<ChunkTable>,
    /// Chunks asked for, each with the offset to send it from (0: whole).
    queue: VecDeque<(ChunkRef, u32)>,
    /// A `Data` frame being written, and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
}

/// What a frame from the edge asks of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A run starts: send the current manifest (a delta from the closest one the edge
    /// holds: the target it resumes, else its current version), then call
    /// [`Serve::started`].
    Start {
        /// The root of the edge's current version.
        have_root: Hash,
        /// The root of the target it is part way through, if any.
        target_root: Option<Hash>,
    },
    /// Nothing now (chunks were queued, or a report taken).
    Nothing,
    /// The edge ended the run.
    Done,
}

/// A chunk read for the edge, ready or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Its `Data` frame is ready: wait this long (the operator's cap), then write its
    /// slices.
    Data {
        /// How long to wait first.
        wait: Duration,
    },
    /// It cannot be served any more (its file changed): send this frame, and the edge
    /// re-plans.
    Gone(MirrorFrame),
}

impl Serve {
    /// A stream of a core whose operator caps chunk bytes at `max_rate` per second.
    pub fn new(max_rate: Option<u64>) -> Serve {
        let pace = Pace::new();
        Serve {
            max_rate,
            bucket: None,
            told: pace.report_every(),
            tell: None,
            pace,
            table: None,
            queue: VecDeque::new(),
            out: None,
        }
    }

    /// A frame from the edge at `now`. `sent`: the manifest last sent (what `Fetch`
    /// positions refer to); `path`: the link's measurements, asked for a report.
    pub fn handle_frame(
        &mut self,
        frame: MirrorFrame,
        sent: Option<&Manifest>,
        path: impl FnOnce() -> PathNow,
        now: Instant,
    ) -> Result<Asked, RunFailed> {
        match frame {
            MirrorFrame::Start {
                have_root,
                target_root,
                max_rate,
                ..
            } => {
                if self.busy() {
                    return Err(RunFailed(
                        "a mirror start from the edge while chunks it asked for are due".into(),
                    ));
                }
                let rate = match (self.max_rate, max_rate.filter(|r| *r > 0)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.bucket = rate.map(|rate| Bucket::new(rate, now));
                Ok(Asked::Start {
                    have_root,
                    target_root,
                })
            }
            MirrorFrame::Fetch { runs } => self.fetch(sent, &runs, &[]),
            MirrorFrame::FetchFrom { runs, from } => self.fetch(sent, &runs, &from),
            MirrorFrame::Received { bytes } => {
                self.pace
                    .on_received(bytes, path())
                    .map_err(|e| RunFailed(e.to_string()))?;
                let every = self.pace.report_every();
                if every >= 2 * self.told || 2 * every <= self.told {
                    self.tell = Some(every);
                }
                Ok(Asked::Nothing)
            }
            MirrorFrame::Done => Ok(Asked::Done),
            other => Err(RunFailed(format!(
                "{} from the edge on the mirror stream",
                other.name()
            ))),
        }
    }

    /// The manifest whose chunk table is `table` was sent: `Fetch`es refer to it now.
    pub fn started(&mut self, table: ChunkTable) {
        self.table = Some(table);
    }

    /// Whether chunk bytes wait to go: a frame being written, or chunks asked for.
    pub fn busy(&self) -> bool {
        self.out.is_some() || !self.queue.is_empty()
    }

    /// How long from `now` until the pacing lets the next chunk bytes go; `None`: there
    /// are none, or the pacing's window is full (wait for the edge's report).
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        (self.busy() && self.pace.allowed() > 0).then(|| self.pace.delay(now))
    }

    /// Between two chunks: the new report interval to tell the edge, if it changed
    /// enough (half or double); write it whole, then [`Serve::wrote_frame`].
    pub fn poll_report(&mut self) -> Option<MirrorFrame> {
        if self.out.is_some() {
            return None;
        }
        let every = self.tell.take()?;
        self.told = every;
        Some(MirrorFrame::ReportEvery { bytes: every })
    }

    /// Between two chunks: the next one to read (and check), with the offset it goes
    /// from; hand it to [`Serve::handle_chunk`].
    pub fn next_chunk(&mut self) -> Option<(ChunkRef, u32)> {
        if self.out.is_some() {
            return None;
        }
        self.queue.pop_front()
    }

    /// The chunk `next_chunk` named, read and checked whole (`None`: it cannot be read
    /// any more), at `now`.
    pub fn handle_chunk(
        &mut self,
        chunk: ChunkRef,
        offset: u32,
        read: Option<Vec<u8>>,
        now: Instant,
    ) -> Ready {
        let Some(mut bytes) = read else {
            return Ready::Gone(MirrorFrame::Gone { hash: chunk.hash });
        };
        // The whole chunk was read and checked; the edge holds its start.
        // (`resolve_from` kept the offset inside the manifest's chunk.)
        bytes.drain(..(offset as usize).min(bytes.len()));
        let wait = match &mut self.bucket {
            Some(bucket) => bucket.take(bytes.len(), now),
            None => Duration::ZERO,
        };
        let mut buf = Vec::with_capacity(bytes.len() + 8);
        wire::encode_value(&MirrorFrame::Data { bytes }, &mut buf);
        self.out = Some((buf, 0));
        Ready::Data { wait }
    }

    /// The next slice of the `Data` frame being written, as much as the pacing allows
    /// (at least a byte); write it, then [`Serve::wrote_slice`].
    pub fn next_slice(&self) -> Option<&[u8]> {
        let (buf, done) = self.out.as_ref()?;
        let slice = (self.pace.window() / 16).clamp(2 << 10, 64 << 10);
        let n = (buf.len() - *done)
            .min(usize::try_from(self.pace.allowed()).unwrap_or(usize::MAX))
            .min(slice as usize)
            .max(1);
        buf.get(*done..*done + n)
    }

    /// `n` bytes of the slice were written at `now`, the round trip being `rtt`.
    pub fn wrote_slice(&mut self, n: usize, now: Instant, rtt: Duration) {
        if let Some((buf, done)) = &mut self.out {
            *done += n;
            if *done >= buf.len() {
                self.out = None;
            }
        }
        self.pace.on_sent(now, n as u64, rtt, true);
    }

    /// A whole frame that is not chunk data, of `n` bytes, was written at `now`
    /// (unpaced, counted in flight).
    pub fn wrote_frame(&mut self, n: usize, now: Instant, rtt: Duration) {
        self.pace.on_sent(now, n as u64, rtt, false);
    }

    /// Queues the chunks of a `Fetch` (or a `FetchFrom`, with `from`), checked first.
    fn fetch(
        &mut self,
        sent: Option<&Manifest>,
        runs: &[(u64, u32)],
        from: &[(u32, u32)],
    ) -> Result<Asked, RunFailed> {
        let (Some(table), Some(manifest)) = (&self.table, sent) else {
            return Err(RunFailed(
                "a chunk fetch from the edge before any manifest".into(),
            ));
        };
        let chunks = table
            .resolve_from(manifest, runs, from)
            .map_err(|e| RunFailed(format!("the edge sent {e}")))?;
        if self.queue.len() + chunks.len() > MAX_QUEUED {
            return Err(RunFailed(format!(
                "the edge asked for more than {MAX_QUEUED} chunks at once"
            )));
        }
        self.queue.extend(chunks);
        Ok(Asked::Nothing)
    }
}

/// Paces chunk bytes: `rate` per second, bursts of a quarter second (at least 64 KiB).
/// Handed the time, it answers how long to wait.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let burst = (rate as f64 / 4.0).max(64.0 * 1024.0);
        Bucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` bytes' worth at `now`: how long to wait for the debt to be paid off.
    fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        match self.tokens < 0.0 {
            true => Duration::from_secs_f64(-self.tokens / self.rate),
            false => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::testing::random;
    use crate::mirror::{ChunkParams, Entry, FileNode, Node, RelPath, chunk_bytes};

    /// A manifest of one file of 2 MiB of noise (about 32 chunks).
    fn manifest() -> Manifest {
        let c = chunk_bytes(&random(2 << 20, 9), ChunkParams::default()).unwrap();
        let file = FileNode::new(0o644, 7, c.chunks, c.hash);
        Manifest {
            version: 1,
            entries: vec![Entry {
                path: RelPath::new("f").unwrap(),
                node: Node::File(file),
            }],
            ..Manifest::empty(ChunkParams::default())
        }
    }

    fn path() -> PathNow {
        PathNow {
            smoothed: Duration::from_millis(100),
            min: Duration::from_millis(100),
            lost_packets: 0,
        }
    }

    fn start(max_rate: Option<u64>) -> MirrorFrame {
        MirrorFrame::Start {
            have_root: Hash::of(b"held"),
            have_version: 1,
            target_root: None,
            max_rate,
        }
    }

    /// A stream whose run started at `now`, the manifest sent.
    fn started(core_rate: Option<u64>, edge_rate: Option<u64>, now: Instant) -> (Serve, Manifest) {
        let mut serve = Serve::new(core_rate);
        let asked = serve.handle_frame(start(edge_rate), None, path, now);
        assert!(matches!(
            asked,
            Ok(Asked::Start {
                target_root: None,
                ..
            })
        ));
        let manifest = manifest();
        serve.started(ChunkTable::new(&manifest));
        (serve, manifest)
    }

    fn fetch(runs: Vec<(u64, u32)>) -> MirrorFrame {
        MirrorFrame::Fetch { runs }
    }

    #[test]
    fn fetches_are_checked_bounded_and_a_start_waits_for_them() {
        let now = Instant::now();
        let mut serve = Serve::new(None);
        let early = serve.handle_frame(fetch(vec![(0, 1)]), None, path, now);
        assert!(early.is_err_and(|RunFailed(why)| why.contains("before any manifest")));
        let (mut serve, m) = started(None, None, now);
        let outside = serve.handle_frame(fetch(vec![(1000, 1)]), Some(&m), path, now);
        assert!(outside.is_err_and(|RunFailed(why)| why.starts_with("the edge sent")));
        let asked = serve.handle_frame(fetch(vec![(0, 3)]), Some(&m), path, now);
        assert_eq!(asked, Ok(Asked::Nothing));
        assert!(serve.busy());
        // A new run may not start while chunks it asked for are due.
        let again = serve.handle_frame(start(None), Some(&m), path, now);
        assert!(again.is_err_and(|RunFailed(why)| why.contains("while chunks")));
        // Nor may the edge queue without bound.
        let (mut serve, m) = started(None, None, now);
        let mut asked = Ok(Asked::Nothing);
        for _ in 0..=(MAX_QUEUED / 3) {
            asked = serve.handle_frame(fetch(vec![(0, 3)]), Some(&m), path, now);
        }
        assert!(asked.is_err_and(|RunFailed(why)| why.contains("more than")));
    }

    #[test]
    fn frames_out_of_place_end_the_stream() {
        let now = Instant::now();
        let (mut serve, m) = started(None, None, now);
        let data = MirrorFrame::Data { bytes: vec![1] };
        let refused = serve.handle_frame(data, Some(&m), path, now);
        assert_eq!(
            refused,
            Err(RunFailed(
                "chunk data from the edge on the mirror stream".into()
            ))
        );
        // A report of bytes never written is refused too.
        let ahead = serve.handle_frame(MirrorFrame::Received { bytes: 1 }, Some(&m), path, now);
        assert!(ahead.is_err());
        assert_eq!(
            serve.handle_frame(MirrorFrame::Done, Some(&m), path, now),
            Ok(Asked::Done)
        );
    }

    #[test]
    fn chunks_go_in_slices_from_their_offset_and_a_gone_one_is_said() {
        let now = Instant::now();
        let (mut serve, m) = started(None, None, now);
        assert_eq!(serve.poll_timeout(now), None, "nothing to send");
        let from = MirrorFrame::FetchFrom {
            runs: vec![(0, 2)],
            from: vec![(0, 1000)],
        };
        serve.handle_frame(from, Some(&m), path, now).unwrap();
        assert_eq!(serve.poll_timeout(now), Some(Duration::ZERO));
        let (first, offset) = serve.next_chunk().unwrap();
        assert_eq!(offset, 1000);
        let bytes = vec![7; first.len as usize];
        let ready = serve.handle_chunk(first, offset, Some(bytes), now);
        assert_eq!(
            ready,
            Ready::Data {
                wait: Duration::ZERO
            }
        );
        // Until its frame is written, no other chunk (nor report) starts.
        assert_eq!(serve.next_chunk(), None);
        let mut written = Vec::new();
        while let Some(slice) = serve.next_slice() {
            assert!(slice.len() <= 64 << 10);
            let n = slice.len();
            written.extend_from_slice(slice);
            serve.wrote_slice(n, now, Duration::from_millis(100));
        }
        let mut reader = crate::wire::FrameReader::default();
        reader.push(&written);
        let frame: MirrorFrame = reader.next_value().unwrap().unwrap();
        assert_eq!(
            frame,
            MirrorFrame::Data {
                bytes: vec![7; first.len as usize - 1000]
            }
        );
        // The next chunk's file changed: it is gone, and the edge is told.
        let (second, _) = serve.next_chunk().unwrap();
        let ready = serve.handle_chunk(second, 0, None, now);
        assert_eq!(ready, Ready::Gone(MirrorFrame::Gone { hash: second.hash }));
        assert!(!serve.busy());
    }

    #[test]
    fn the_lower_cap_of_the_two_ends_paces_the_chunk_bytes() {
        let now = Instant::now();
        let wait = |core: Option<u64>, edge: Option<u64>| {
            let (mut serve, m) = started(core, edge, now);
            serve
                .handle_frame(fetch(vec![(0, 1)]), Some(&m), path, now)
                .unwrap();
            let (chunk, _) = serve.next_chunk().unwrap();
            // 100 KiB against a burst of 64 KiB: 36 KiB of debt to wait out.
            match serve.handle_chunk(chunk, 0, Some(vec![0; 100 << 10]), now) {
                Ready::Data { wait } => wait,
                Ready::Gone(_) => panic!("read"),
            }
        };
        assert_eq!(wait(None, None), Duration::ZERO);
        assert_eq!(wait(None, Some(0)), Duration::ZERO, "0: no cap");
        let debt = f64::from(36 << 10);
        assert_eq!(
            wait(Some(1024), None),
            Duration::from_secs_f64(debt / 1024.0)
        );
        assert_eq!(
            wait(Some(4096), Some(1024)),
            Duration::from_secs_f64(debt / 1024.0)
        );
        assert_eq!(
            wait(Some(1024), Some(4096)),
            Duration::from_secs_f64(debt / 1024.0)
        );
    }
}
