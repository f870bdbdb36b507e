//! The sending half of a session and its control stream: acknowledgements in, what to
//! read and send out, sized to the link; the pause switches; when to store cursors.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::{SessionError, SessionSettings, Side};
use crate::entry::{NodeName, Offset, Priority, Record, TopicName, VersionVector};
use crate::replication::{Outbound, Routes};
use crate::wire::Frame;

/// The least the sender may have unacknowledged, whatever the congestion window says:
/// enough for a burst of small entries on a link that has just started.
const MIN_IN_FLIGHT_BYTES: u64 = 64 << 10;

/// The least entry bytes handed to QUIC in one compressed piece (see [`Session::send_round`]).
const MIN_WRITE_BYTES: u64 = 16 << 10;

/// A piece may always hold what the link sends in this long (see [`Session::send_round`]).
const PIECE_TIME: Duration = Duration::from_millis(50);

/// The sending half of a session: per outgoing topic an [`Outbound`], the peer's pause,
/// and the stored cursors. The driver reads the store where [`Session::next_read`] says,
/// and sends what [`Session::plan`] makes of it.
#[derive(Debug)]
pub struct Session {
    peer: NodeName,
    routes: Routes,
    outbound: HashMap<TopicName, Outbound>,
    paused_by_peer: bool,
    /// What the peer was last told of this side's pause switch.
    told_paused: bool,
    /// Each outgoing topic's priority class, in the order of `routes.out`.
    classes: Vec<Priority>,
    /// Per class (in [`Priority::ALL`]'s order), its outgoing topics (indices into
    /// `routes.out`).
    by_class: [Vec<usize>; 3],
    /// The outgoing latest-value topics.
    latest_value: Vec<TopicName>,
    /// Per class (in [`Priority::ALL`]'s order), which of its topics goes first in the
    /// next round: each round starts one further, so that no topic always waits behind
    /// another of its class.
    turns: [usize; 3],
    batch_entries: usize,
    batch_bytes: usize,
    max_in_flight: usize,
    persist_every: Duration,
    /// When cursors are next stored; `None`: never again (a period too long to count).
    next_persist: Option<Instant>,
    /// Per topic, the cursor last stored.
    stored: HashMap<TopicName, Offset>,
}

/// A control frame from the peer, classified by [`Session::handle_control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The peer's `Have` of an outgoing topic: hand it to [`Session::handle_have`] with
    /// what the store holds of the topic, and, if `first`, the vector the peer
    /// acknowledged before (stored by an earlier session), to tell whether it lost data.
    Have {
        /// The topic.
        topic: TopicName,
        /// What the peer durably holds of it.
        vector: Vec<(NodeName, u64)>,
        /// The first `Have` of this topic in this session.
        first: bool,
    },
    /// The peer's operator paused the link: nothing is sent until it resumes.
    Paused,
    /// The peer's operator resumed the link.
    Resumed,
    /// What the peer holds for this side and has not had acknowledged.
    Backlog {
        /// Entries.
        entries: u64,
        /// Their bytes, as the peer estimates them.
        bytes: u64,
    },
}

/// Where one outgoing topic stands after a `Have`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The peer holds less than it acknowledged before: sending starts again from the
    /// topic's first offset.
    pub restarted: bool,
    /// The lowest offset not known to be held by the peer.
    pub cursor: Offset,
    /// The next offset to read.
    pub position: Offset,
    /// Entries sent and not yet acknowledged.
    pub in_flight: usize,
}

impl Progress {
    fn of(out: &Outbound) -> Progress {
        Progress {
            restarted: false,
            cursor: out.cursor(),
            position: out.position(),
            in_flight: out.in_flight(),
        }
    }

    /// Entries after the peer's acknowledged position, when the topic's next offset is
    /// `next` (an upper bound: some may not be for this peer).
    pub fn backlog(&self, next: Offset) -> u64 {
        next.0.saturating_sub(self.cursor.0)
    }

    /// Whether nothing is left to send or to be acknowledged, when the topic's next
    /// offset is `next`.
    pub fn up_to_date(&self, next: Offset) -> bool {
        self.in_flight == 0 && self.position >= next
    }
}

/// What the link says now, as plain numbers (QUIC's path statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// The congestion window, in bytes.
    pub cwnd: u64,
    /// The smoothed round trip.
    pub rtt: Duration,
}

/// One round of sending, sized when it starts ([`Session::send_round`]).
#[derive(Debug)]
pub struct Round {
    /// The class it sends (`None`: every class, most urgent first, on one stream).
    class: Option<Priority>,
    /// Neither side is paused: the round counts as a turn.
    started: bool,
    /// More may be read in this round.
    active: bool,
    /// Most entry bytes sent and not yet acknowledged, over all topics.
    window: u64,
    /// Most entry bytes in this round's compressed piece.
    piece: u64,
    gathered: u64,
    unacknowledged: u64,
    /// Outgoing topics looked at so far in this round.
    looked: usize,
    /// Records were planned since the last look at the round's limits.
    planned: bool,
    progressed: bool,
}

/// Read at most `max` entries of `topic` from offset `from` on, and hand them to
/// [`Session::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The topic.
    pub topic: TopicName,
    /// The first offset to read.
    pub from: Offset,
    /// Most entries to read.
    pub max: usize,
}

/// Store `topic`'s cursor for the peer, and what the peer acknowledged (for retention);
/// then tell [`Session::persisted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// The topic.
    pub topic: TopicName,
    /// The lowest offset not known to be held by the peer.
    pub cursor: Offset,
    /// What the peer acknowledged.
    pub acknowledged: VersionVector,
}

impl Session {
    pub(super) fn new(
        side: &Side,
        peer: NodeName,
        peer_core: bool,
        routes: Routes,
        settings: &SessionSettings,
        cursors: impl IntoIterator<Item = (TopicName, Offset)>,
        now: Instant,
    ) -> Self {
        let mut cursors: HashMap<TopicName, Offset> = cursors.into_iter().collect();
        // The trust rule: an edge offers the core only its own origin.
        let only = (!side.core).then(|| side.node.clone());
        let outbound = routes.out.iter().map(|topic| {
            let start = cursors.remove(topic).unwrap_or_default();
            let out = Outbound::new(topic.clone(), peer.clone(), peer_core, only.clone(), start);
            (topic.clone(), out)
        });
        let classes = routes
            .out
            .iter()
            .map(|t| settings.priorities.of(t))
            .collect();
        let mut by_class: [Vec<usize>; 3] = Default::default();
        for (i, t) in routes.out.iter().enumerate() {
            let k = Priority::ALL
                .iter()
                .position(|c| *c == settings.priorities.of(t))
                .unwrap_or(1);
            by_class[k].push(i);
        }
        let latest_value = (routes.out.iter())
            .filter(|t| settings.latest_value.contains(t))
            .cloned()
            .collect();
        Session {
            latest_value,
            outbound: outbound.collect(),
            peer,
            routes,
            classes,
            by_class,
            paused_by_peer: false,
            told_paused: false,
            turns: [0; 3],
            batch_entries: settings.batch_entries,
            batch_bytes: settings.batch_bytes,
            max_in_flight: settings.max_in_flight,
            persist_every: settings.persist_every,
            next_persist: Some(now),
            stored: HashMap::new(),
        }
    }

    /// The peer.
    pub fn peer(&self) -> &NodeName {
        &self.peer
    }

    /// The topics each way.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// A frame from the peer's control stream (after the hellos): only `Have` of a topic
    /// this side sends, `Pause`, `Resume` and `Backlog` belong there.
    pub fn handle_control(&mut self, frame: Frame) -> Result<Control, SessionError> {
        match frame {
            Frame::Have { topic, vector } => {
                if !self.routes.out.contains(&topic) {
                    return Err(SessionError::Protocol(format!(
                        "have for topic {topic}, which this node does not send"
                    )));
                }
                let first = self.outbound.get(&topic).is_some_and(|o| !o.ready());
                Ok(Control::Have {
                    topic,
                    vector,
                    first,
                })
            }
            Frame::Pause => {
                self.paused_by_peer = true;
                Ok(Control::Paused)
            }
            Frame::Resume => {
                self.paused_by_peer = false;
                Ok(Control::Resumed)
            }
            Frame::Backlog { entries, bytes } => Ok(Control::Backlog { entries, bytes }),
            other => Err(SessionError::Protocol(format!(
                "{} on the control stream",
                other.name()
            ))),
        }
    }

    /// The peer's `Have` of `topic` ([`Control::Have`]): `held` is what this node holds
    /// of the topic (only its origins count, so made-up ones cost nothing); `before`, on
    /// the first `Have`, what the peer acknowledged in an earlier session. If the peer
    /// now holds less than that, it lost data, and sending starts again from offset 0.
    /// `None`: not an outgoing topic.
    pub fn handle_have(
        &mut self,
        topic: &TopicName,
        vector: &[(NodeName, u64)],
        held: &VersionVector,
        before: Option<&VersionVector>,
    ) -> Option<Progress> {
        let out = self.outbound.get_mut(topic)?;
        let restarted = !out.ready() && before.is_some_and(|before| regressed(before, vector));
        if restarted {
            *out = out.restart(Offset(0));
        }
        out.have(vector, |origin| held.0.contains_key(origin));
        Some(Progress {
            restarted,
            ..Progress::of(out)
        })
    }

    /// Where the outgoing `topic` stands now. A round can move it as a `Have` does: past
    /// entries the peer does not need (its own), leaving nothing to send or acknowledge.
    /// `None`: not an outgoing topic.
    pub fn progress(&self, topic: &TopicName) -> Option<Progress> {
        self.outbound.get(topic).map(Progress::of)
    }

    /// This side's operator switch is now `paused`: the frame that tells the peer, if it
    /// was told otherwise.
    pub fn pause_here(&mut self, paused: bool) -> Option<Frame> {
        if paused == self.told_paused {
            return None;
        }
        self.told_paused = paused;
        Some(if paused { Frame::Pause } else { Frame::Resume })
    }

    /// Whether the peer paused the link.
    pub fn paused_by_peer(&self) -> bool {
        self.paused_by_peer
    }

    /// The priority classes of the outgoing topics, most urgent first: with a peer of
    /// version 6 or later, the driver sends each on its own entry stream.
    pub fn classes(&self) -> Vec<Priority> {
        Priority::ALL
            .into_iter()
            .filter(|c| self.classes.contains(c))
            .collect()
    }

    /// Whether the outgoing `topic` is latest-value: the driver says which of the records
    /// it reads are superseded ([`Session::plan`]).
    pub fn latest_value(&self, topic: &TopicName) -> bool {
        self.latest_value.contains(topic)
    }

    /// `topic`'s priority class on this link (`None`: not an outgoing topic).
    pub fn class_of(&self, topic: &TopicName) -> Option<Priority> {
        let i = self.routes.out.iter().position(|t| t == topic)?;
        self.classes.get(i).copied()
    }

    /// Starts a round of sending with the link as `measure` says, of the topics of
    /// `class` (`None`: of every class, most urgent first, for a peer of version 5 and
    /// its one entry stream); nothing is sent while either side is paused
    /// (`paused_here`: this side's operator switch).
    ///
    /// A class's window counts what its own topics and those of higher classes have
    /// sent and not had acknowledged, never lower classes': an urgent entry never waits
    /// for a backlog of normal ones to be acknowledged.
    ///
    /// Sized to the link: what is sent and not yet acknowledged stays within four
    /// congestion windows (acknowledgements come a round trip plus a commit after the
    /// data; two windows cost a quarter of satcom's goodput), so that little waits in
    /// QUIC's buffers and a new entry (of another topic, or from the other side) never
    /// queues behind a backlog of megabytes on a slow link.
    ///
    /// Each round is one compressed piece, flushed, so the peer can decompress, store and
    /// acknowledge it once it has all of it. In pieces of at most half a window, the
    /// entries are acknowledged within about a round trip; in one piece of `batch_bytes`,
    /// a link in slow start (a few packets per round trip) carried it over several round
    /// trips with nothing acknowledged, the window above filled, and the sender stalled:
    /// satcom's catch-up lost ~5 s of its ramp. Where half a window is far less than
    /// 50 ms of sending (loopback, a LAN), pieces that small only cost work: a
    /// piece is the larger of the two.
    pub fn send_round(
        &mut self,
        measure: Measure,
        paused_here: bool,
        class: Option<Priority>,
    ) -> Round {
        let mut round = Round {
            class,
            started: false,
            active: false,
            window: 0,
            piece: 0,
            gathered: 0,
            unacknowledged: 0,
            looked: 0,
            planned: false,
            progressed: false,
        };
        if paused_here || self.paused_by_peer {
            return round;
        }
        let cwnd = measure.cwnd;
        let rtt = measure.rtt.max(Duration::from_millis(1));
        let timely = u64::try_from(u128::from(cwnd) * PIECE_TIME.as_micros() / rtt.as_micros())
            .unwrap_or(u64::MAX);
        let most = (self.batch_bytes as u64).max(MIN_WRITE_BYTES);
        round.started = true;
        round.active = true;
        round.window = cwnd.saturating_mul(4).max(MIN_IN_FLIGHT_BYTES);
        round.piece = (cwnd / 2).max(timely).clamp(MIN_WRITE_BYTES, most);
        let counted = |i: usize| class.is_none_or(|only| self.classes[i] <= only);
        round.unacknowledged = (0..self.routes.out.len())
            .filter(|&i| counted(i))
            .filter_map(|i| self.outbound.get(&self.routes.out[i]))
            .map(Outbound::in_flight_bytes)
            .sum();
        round
    }

    /// What to read next in `round`, `compressed` being the bytes its piece holds so far;
    /// `None`: the round is over (every topic looked at, or the window or the piece full).
    pub fn next_read(&self, round: &mut Round, compressed: usize) -> Option<Read> {
        let n: usize = self.groups(round.class).map(|(_, g)| g.len()).sum();
        if !round.active {
            return None;
        }
        if std::mem::take(&mut round.planned)
            && (compressed >= self.batch_bytes || round.gathered >= round.piece)
        {
            round.active = false;
            return None;
        }
        while round.looked < n {
            if round.unacknowledged >= round.window {
                round.active = false;
                return None;
            }
            let Some(i) = self.nth(round.class, round.looked) else {
                break;
            };
            let topic = &self.routes.out[i];
            round.looked += 1;
            let Some(out) = self.outbound.get(topic) else {
                continue;
            };
            let room = self.max_in_flight.saturating_sub(out.in_flight());
            if !out.ready() || room == 0 {
                continue;
            }
            return Some(Read {
                topic: topic.clone(),
                from: out.position(),
                max: self.batch_entries.min(room),
            });
        }
        None
    }

    /// Plans the frames for `records`, read as [`Session::next_read`] said: as many as
    /// fit the round's window and piece (at least one, so that a large entry still goes).
    /// `superseded`: per record, whether a later entry of the same origin and key holds
    /// its place (a latest-value topic; empty: none is): it is passed over, and the peer
    /// told to skip its sequence with its successor's.
    pub fn plan(
        &mut self,
        round: &mut Round,
        topic: &TopicName,
        mut records: Vec<Record>,
        superseded: &[bool],
    ) -> Vec<Frame> {
        if records.is_empty() {
            return Vec::new();
        }
        let mut fits = 0;
        for (i, r) in records.iter().enumerate() {
            if superseded.get(i).copied().unwrap_or(false) {
                fits += 1;
                continue;
            }
            let size = r.entry.size();
            let over =
                round.unacknowledged + size > round.window || round.gathered + size > round.piece;
            if fits > 0 && over {
                break;
            }
            round.unacknowledged += size;
            round.gathered += size;
            fits += 1;
        }
        records.truncate(fits);
        round.progressed = true;
        round.planned = true;
        match self.outbound.get_mut(topic) {
            Some(out) => out.plan(records, superseded),
            None => Vec::new(),
        }
    }

    /// The class groups a round of `class` looks at (`None`: all, most urgent first),
    /// with each group's index in [`Priority::ALL`].
    fn groups(&self, class: Option<Priority>) -> impl Iterator<Item = (usize, &Vec<usize>)> {
        (Priority::ALL.into_iter().zip(&self.by_class).enumerate())
            .filter(move |(_, (c, _))| class.is_none_or(|only| only == *c))
            .map(|(k, (_, group))| (k, group))
    }

    /// The `k`th topic a round of `class` looks at (an index into `routes.out`): each
    /// group in turn, each starting at its turn.
    fn nth(&self, class: Option<Priority>, mut k: usize) -> Option<usize> {
        for (g, group) in self.groups(class) {
            if k < group.len() {
                return Some(group[(self.turns[g] + k) % group.len()]);
            }
            k -= group.len();
        }
        None
    }

    /// Ends `round`; returns whether it planned anything (then the driver flushes the
    /// piece and starts another round at once; else it waits for new entries, an
    /// acknowledgement or a pause change).
    pub fn end_round(&mut self, round: Round) -> bool {
        if round.started {
            for (k, c) in Priority::ALL.into_iter().enumerate() {
                if round.class.is_none_or(|only| only == c) {
                    self.turns[k] = self.turns[k].wrapping_add(1);
                }
            }
        }
        round.progressed
    }

    /// When [`Session::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_persist
    }

    /// The time is `now`: when cursors are due (every `persist_every`, missed times not
    /// caught up), those that moved since they were last stored.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Persist> {
        let Some(at) = self.next_persist.filter(|at| now >= *at) else {
            return Vec::new();
        };
        self.next_persist = match at.checked_add(self.persist_every) {
            Some(next) if next > now => Some(next),
            _ => now.checked_add(self.persist_every),
        };
        let ready = self.routes.out.iter().filter_map(|t| self.outbound.get(t));
        ready
            .filter(|o| o.ready() && self.stored.get(o.topic()) != Some(&o.cursor()))
            .map(|o| Persist {
                topic: o.topic().clone(),
                cursor: o.cursor(),
                acknowledged: o.acknowledged(),
            })
            .collect()
    }

    /// The driver stored `topic`'s `cursor` (a [`Persist`]).
    pub fn persisted(&mut self, topic: &TopicName, cursor: Offset) {
        self.stored.insert(topic.clone(), cursor);
    }
}

/// Whether the peer now holds less than it once acknowledged (it lost data).
fn regressed(before: &VersionVector, have: &[(NodeName, u64)]) -> bool {
    let held: BTreeMap<&NodeName, u64> = have.iter().map(|(o, s)| (o, *s)).collect();
    before
        .0
        .iter()
        .any(|(origin, seq)| held.get(origin).copied().unwrap_or(0) < seq.0)
}
