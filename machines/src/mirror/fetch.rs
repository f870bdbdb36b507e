//! The edge's end of a mirror run, without IO: which chunks to ask for and when, what
//! to make of each frame from the core, and when the run re-plans.
//!
//! The driver (`protocol`'s `link/mirror.rs`) sends the requests [`Fetch::poll_request`]
//! gives, reads the core's frames into [`Fetch::handle_frame`], has the spool check
//! each chunk against its hash and reports the verdict ([`Fetch::handle_checked`]),
//! syncs the spool when a request is complete ([`Fetch::take_complete`]), and ends
//! when nothing is left in flight ([`Fetch::waiting`]): then [`Fetch::gone`] says
//! whether to re-plan against a fresh manifest ([`Target::of`] says what a manifest
//! means for the edge).

use std::collections::{HashMap, VecDeque};

use super::{ChunkRef, Hash, MAX_REQUEST, MirrorFrame, Plan, fetch_runs};

/// Times one chunk may fail its hash before the run fails.
pub const MAX_REFETCH: u32 = 3;

/// Fresh manifests asked for in one run after chunks were `Gone`, before it fails.
pub const MAX_REPLANS: usize = 8;

/// Why the run cannot go on: the core sent what it may not. The previous state is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RunFailed(pub String);

/// A chunk asked for and due from the core: its hash, and the length of its prefix if
/// only its rest was asked for (the edge rebuilds it from the prefix it holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The chunk's hash.
    pub hash: Hash,
    /// The prefix's length, if only the rest was asked for.
    pub prefix: Option<u32>,
}

/// What a frame from the core brought, for the chunk due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrived {
    /// The chunk's bytes (its rest, after the prefix, if `due.prefix` is set): have the
    /// spool check them against `due.hash`, then call [`Fetch::handle_checked`].
    Chunk {
        /// The chunk due.
        due: Due,
        /// The bytes as they came.
        bytes: Vec<u8>,
    },
    /// The core can no longer serve it (its file changed): the run re-plans once what is
    /// in flight has come.
    Gone,
}

/// What the spool said of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Checked and spooled.
    Held,
    /// It failed its hash (or, for a rest, did not begin with its prefix).
    Mismatch,
}

/// What the run does about a chunk that failed its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// Fetched again, whole; `prefix`: the bytes of a held prefix that went unused.
    Whole {
        /// The unused prefix's length, if the chunk was asked for from it.
        prefix: Option<u32>,
    },
}

/// The chunks of one plan, fetched: requests of about `request_bytes`, at most
/// `in_flight` outstanding, by position in the target; a chunk that fails its hash is
/// asked for again whole (up to [`MAX_REFETCH`] times); a `Gone` chunk stops new
/// requests, and once what is in flight has come the run re-plans.
#[derive(Debug)]
pub struct Fetch {
    /// Each chunk's first position in the target: requests name chunks by it.
    positions: HashMap<Hash, u64>,
    pending: VecDeque<Vec<(u64, Due)>>,
    /// Per request sent, the chunks still due, in the order asked.
    in_flight: VecDeque<VecDeque<Due>>,
    max_in_flight: usize,
    max_chunk: usize,
    retries: HashMap<Hash, u32>,
    /// Chunks to fetch again, whole.
    refetch: Vec<Hash>,
    gone: bool,
    /// The chunk whose bytes the spool is checking.
    checking: Option<Due>,
    /// A request was completed since the last [`Fetch::take_complete`].
    complete: bool,
}

impl Fetch {
    /// Fetching `plan` from a target whose chunks are first at `positions`
    /// (`ChunkTable::first_positions`), in requests of about `request_bytes`, at most
    /// `in_flight` outstanding, refusing chunks over `max_chunk` bytes.
    pub fn new(
        plan: &Plan,
        positions: HashMap<Hash, u64>,
        request_bytes: u64,
        in_flight: usize,
        max_chunk: u32,
    ) -> Result<Fetch, RunFailed> {
        let mut fetch = Fetch {
            positions,
            pending: VecDeque::new(),
            in_flight: VecDeque::new(),
            max_in_flight: in_flight.max(1),
            max_chunk: max_chunk as usize,
            retries: HashMap::new(),
            refetch: Vec::new(),
            gone: false,
            checking: None,
            complete: false,
        };
        let due = |c: &ChunkRef| Due {
            hash: c.hash,
            prefix: plan.prefixes.get(&c.hash).map(|p| p.chunk.len),
        };
        for batch in plan.batches(request_bytes, MAX_REQUEST) {
            let placed = fetch.placed(batch.iter().map(due))?;
            fetch.pending.push_back(placed);
        }
        Ok(fetch)
    }

    /// The next request to send now, if one may go: chunks to fetch again first, then
    /// the plan's, while fewer than `in_flight` are outstanding and nothing was gone.
    pub fn poll_request(&mut self) -> Result<Option<MirrorFrame>, RunFailed> {
        if self.in_flight.len() >= self.max_in_flight || self.gone {
            return Ok(None);
        }
        let batch = if !self.refetch.is_empty() {
            let n = self.refetch.len().min(MAX_REQUEST);
            let again: Vec<Hash> = self.refetch.drain(..n).collect();
            self.placed(again.into_iter().map(|hash| Due { hash, prefix: None }))?
        } else if let Some(batch) = self.pending.pop_front() {
            batch
        } else {
            return Ok(None);
        };
        let (at, dues): (Vec<u64>, VecDeque<Due>) = batch.into_iter().unzip();
        let runs = fetch_runs(&at);
        // A batch holds at most MAX_REQUEST chunks: an index fits in a u32.
        let from: Vec<(u32, u32)> = dues
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((u32::try_from(i).ok()?, d.prefix?)))
            .collect();
        self.in_flight.push_back(dues);
        Ok(Some(match from.is_empty() {
            true => MirrorFrame::Fetch { runs },
            false => MirrorFrame::FetchFrom { runs, from },
        }))
    }

    /// Whether chunks are due from the core: read its next frame. `false`: the fetching
    /// is over (see [`Fetch::gone`]).
    pub fn waiting(&self) -> bool {
        self.in_flight.iter().any(|request| !request.is_empty())
    }

    /// The core's next frame, for the chunk due first.
    pub fn handle_frame(&mut self, frame: MirrorFrame) -> Result<Arrived, RunFailed> {
        let due = self
            .in_flight
            .front_mut()
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| RunFailed(format!("the core sent a {} unasked", frame.name())))?;
        let arrived = match frame {
            MirrorFrame::Data { bytes } => {
                let whole = bytes.len() + due.prefix.unwrap_or(0) as usize;
                if whole > self.max_chunk {
                    return Err(RunFailed(format!(
                        "the core sent a chunk of {whole} bytes, over the limit of {}",
                        self.max_chunk
                    )));
                }
                self.checking = Some(due);
                Arrived::Chunk { due, bytes }
            }
            MirrorFrame::Gone { hash } => {
                if hash != due.hash {
                    return Err(RunFailed(format!(
                        "the core said chunk {hash} is gone where {} was due",
                        due.hash
                    )));
                }
                self.gone = true;
                Arrived::Gone
            }
            MirrorFrame::Refused { reason } => {
                return Err(RunFailed(format!("the core refused: {reason}")));
            }
            other => {
                return Err(RunFailed(format!(
                    "the core sent a {} instead of a chunk",
                    other.name()
                )));
            }
        };
        if self.in_flight.front().is_some_and(VecDeque::is_empty) {
            self.in_flight.pop_front();
            self.complete = true;
        }
        Ok(arrived)
    }

    /// What the spool said of the chunk last arrived. `Some`: it is fetched again.
    pub fn handle_checked(&mut self, verdict: Verdict) -> Result<Option<Again>, RunFailed> {
        let Some(due) = self.checking.take() else {
            return Ok(None);
        };
        if verdict == Verdict::Held {
            return Ok(None);
        }
        let tries = self.retries.entry(due.hash).or_default();
        *tries += 1;
        if *tries > MAX_REFETCH {
            return Err(RunFailed(format!(
                "chunk {} failed its hash {MAX_REFETCH} times",
                due.hash
            )));
        }
        self.refetch.push(due.hash);
        Ok(Some(Again::Whole { prefix: due.prefix }))
    }

    /// Whether a request was completed since the last call: the spool is synced after
    /// each request, so that a run cut later resumes without fetching it again.
    pub fn take_complete(&mut self) -> bool {
        std::mem::take(&mut self.complete)
    }

    /// Whether chunks were gone: the run re-plans against a fresh manifest.
    pub fn gone(&self) -> bool {
        self.gone
    }

    /// The chunks with their positions in the target, in position order, once each.
    fn placed(&self, dues: impl Iterator<Item = Due>) -> Result<Vec<(u64, Due)>, RunFailed> {
        let mut batch = dues
            .map(|due| match self.positions.get(&due.hash) {
                Some(p) => Ok((*p, due)),
                None => Err(RunFailed(format!(
                    "chunk {} is not in the target",
                    due.hash
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        batch.sort_unstable_by_key(|(p, _)| *p);
        batch.dedup_by_key(|(p, _)| *p);
        Ok(batch)
    }
}

/// What a complete manifest from the core means for the edge, given the roots of the
/// version it holds and of the target it was fetching (as its `Start` said).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The edge holds it already; `abandon`: drop the target it was fetching.
    Held {
        /// A target was being fetched and is dropped.
        abandon: bool,
    },
    /// It is the target the edge was fetching: resume its stored plan.
    Resume,
    /// A new target: plan it against what the edge holds.
    Begin,
}

impl Target {
    /// What the manifest of root `root` means, the edge holding `current` and fetching
    /// `target`.
    pub fn of(root: Hash, current: Hash, target: Option<Hash>) -> Target {
        if root == current {
            Target::Held {
                abandon: target.is_some(),
            }
        } else if target == Some(root) {
            Target::Resume
        } else {
            Target::Begin
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::mirror::testing::{manifest, random};
    use crate::mirror::{ChunkParams, ChunkTable, Manifest, plan};

    /// A fetch of `after` by an edge holding `before`.
    fn fetch_of(
        before: &Manifest,
        after: &Manifest,
        request_bytes: u64,
        in_flight: usize,
    ) -> Fetch {
        let plan = plan(before, after, &|_| false);
        let positions = ChunkTable::first_positions(after);
        Fetch::new(&plan, positions, request_bytes, in_flight, 256 << 10).unwrap()
    }

    /// An edge with nothing, fetching 4 MiB of noise (about 64 chunks).
    fn fresh(request_bytes: u64, in_flight: usize) -> Fetch {
        let empty = Manifest::empty(ChunkParams::default());
        fetch_of(
            &empty,
            &manifest(1, &[("f", &random(4 << 20, 1))]),
            request_bytes,
            in_flight,
        )
    }

    fn chunks_in(request: &MirrorFrame) -> u32 {
        match request {
            MirrorFrame::Fetch { runs } | MirrorFrame::FetchFrom { runs, .. } => {
                runs.iter().map(|(_, n)| n).sum()
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    /// The core's answer to the chunk due: its bytes (of the right length or not).
    fn data(len: usize) -> MirrorFrame {
        MirrorFrame::Data {
            bytes: vec![0; len],
        }
    }

    #[test]
    fn requests_follow_the_plan_and_the_in_flight_bound() {
        let mut fetch = fresh(1 << 20, 2);
        let first = fetch.poll_request().unwrap().unwrap();
        let second = fetch.poll_request().unwrap().unwrap();
        assert_eq!(fetch.poll_request(), Ok(None), "two outstanding at most");
        // Positions in order, from the start: one run each.
        assert!(matches!(&first, MirrorFrame::Fetch { runs } if runs.len() == 1 && runs[0].0 == 0));
        let mut received = 0;
        let mut syncs = 0;
        for _ in 0..chunks_in(&first) {
            assert!(fetch.waiting());
            let arrived = fetch.handle_frame(data(100)).unwrap();
            assert!(matches!(arrived, Arrived::Chunk { .. }));
            assert_eq!(fetch.handle_checked(Verdict::Held), Ok(None));
            received += 1;
            syncs += usize::from(fetch.take_complete());
        }
        // The first request is complete: the spool is synced, and another may go.
        assert_eq!(syncs, 1);
        let third = fetch.poll_request().unwrap().unwrap();
        let mut total = chunks_in(&first) + chunks_in(&second) + chunks_in(&third);
        while fetch.waiting() {
            fetch.handle_frame(data(100)).unwrap();
            fetch.handle_checked(Verdict::Held).unwrap();
            received += 1;
            syncs += usize::from(fetch.take_complete());
            while let Some(request) = fetch.poll_request().unwrap() {
                total += chunks_in(&request);
            }
        }
        assert_eq!(received, total);
        assert!(syncs >= 4 && !fetch.gone());
    }

    #[test]
    fn a_chunk_that_fails_its_hash_is_fetched_again_whole_up_to_a_limit() {
        let mut fetch = fresh(64 << 10, 1);
        let first = fetch.poll_request().unwrap().unwrap();
        assert_eq!(chunks_in(&first), 1);
        for _ in 0..MAX_REFETCH {
            let Arrived::Chunk { due, .. } = fetch.handle_frame(data(100)).unwrap() else {
                panic!("a chunk")
            };
            let again = fetch.handle_checked(Verdict::Mismatch);
            assert_eq!(again, Ok(Some(Again::Whole { prefix: None })));
            assert!(fetch.take_complete());
            // Asked for again before anything else, by its position.
            let refetch = fetch.poll_request().unwrap().unwrap();
            assert_eq!(refetch, MirrorFrame::Fetch { runs: vec![(0, 1)] });
            assert!(due.prefix.is_none());
        }
        fetch.handle_frame(data(100)).unwrap();
        let failed = fetch.handle_checked(Verdict::Mismatch);
        assert!(failed.is_err_and(|RunFailed(why)| why.contains("failed its hash 3 times")));
    }

    #[test]
    fn a_gone_chunk_stops_new_requests_and_the_run_replans_after_what_is_in_flight() {
        let mut fetch = fresh(256 << 10, 2);
        let first = fetch.poll_request().unwrap().unwrap();
        let second = fetch.poll_request().unwrap().unwrap();
        let due = fetch.in_flight[0][0];
        let gone = MirrorFrame::Gone { hash: due.hash };
        assert_eq!(fetch.handle_frame(gone), Ok(Arrived::Gone));
        let mut left = chunks_in(&first) + chunks_in(&second) - 1;
        while fetch.waiting() {
            fetch.handle_frame(data(10)).unwrap();
            fetch.handle_checked(Verdict::Held).unwrap();
            assert_eq!(
                fetch.poll_request(),
                Ok(None),
                "nothing new once a chunk is gone"
            );
            left -= 1;
        }
        assert_eq!(left, 0);
        assert!(fetch.gone());
    }

    #[test]
    fn frames_out_of_place_fail_the_run() {
        let fails = |frame: MirrorFrame, why: &str| {
            let mut fetch = fresh(1 << 20, 1);
            fetch.poll_request().unwrap();
            let failed = fetch.handle_frame(frame);
            assert!(failed.is_err_and(|RunFailed(w)| w.contains(why)), "{why}");
        };
        let other = Hash::of(b"another chunk");
        fails(MirrorFrame::Gone { hash: other }, "is gone where");
        fails(
            MirrorFrame::Refused {
                reason: "no volume".into(),
            },
            "refused: no volume",
        );
        fails(MirrorFrame::Done, "instead of a chunk");
        fails(data((256 << 10) + 1), "over the limit");
        // Nothing asked for: nothing may come.
        let mut idle = fresh(1 << 20, 1);
        assert!(idle.handle_frame(data(1)).is_err());
    }

    #[test]
    fn an_appended_chunk_is_asked_for_from_its_prefix_then_whole_if_it_fails() {
        let old = random(300_000, 7);
        let mut grown = old.clone();
        grown.extend_from_slice(b"appended");
        let before = manifest(1, &[("log", &old)]);
        let after = manifest(2, &[("log", &grown)]);
        let mut fetch = fetch_of(&before, &after, 1 << 20, 1);
        let request = fetch.poll_request().unwrap().unwrap();
        let MirrorFrame::FetchFrom { from, .. } = request else {
            panic!("a fetch from a prefix: {request:?}")
        };
        let [(0, prefix)] = from[..] else {
            panic!("one chunk from its prefix: {from:?}")
        };
        // The prefix counts toward the chunk's limit.
        let over = (256 << 10) + 1 - prefix as usize;
        let mut strict = fetch_of(&before, &after, 1 << 20, 1);
        strict.poll_request().unwrap();
        assert!(strict.handle_frame(data(over)).is_err());
        // Rebuilt, it fails its hash: fetched again, whole, with a plain request.
        let arrived = fetch.handle_frame(data(8)).unwrap();
        assert!(matches!(arrived, Arrived::Chunk { due, .. } if due.prefix == Some(prefix)));
        let again = fetch.handle_checked(Verdict::Mismatch).unwrap();
        assert_eq!(
            again,
            Some(Again::Whole {
                prefix: Some(prefix)
            })
        );
        assert!(matches!(
            fetch.poll_request(),
            Ok(Some(MirrorFrame::Fetch { .. }))
        ));
    }

    #[test]
    fn a_manifest_is_held_resumed_or_begun() {
        let (a, b, c) = (Hash::of(b"a"), Hash::of(b"b"), Hash::of(b"c"));
        assert_eq!(Target::of(a, a, None), Target::Held { abandon: false });
        assert_eq!(Target::of(a, a, Some(b)), Target::Held { abandon: true });
        assert_eq!(Target::of(b, a, Some(b)), Target::Resume);
        assert_eq!(Target::of(c, a, Some(b)), Target::Begin);
        assert_eq!(Target::of(c, a, None), Target::Begin);
    }
}
