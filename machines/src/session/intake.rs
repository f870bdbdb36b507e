//! The receiving half of a session: the peer's entry stream, frame by frame, into
//! transactions; the trust rule, the relay quota, and when to acknowledge.

use std::time::{Duration, Instant};

use super::{RelayQuota, SessionError, SessionSettings, Side};
use crate::entry::{Entry, NodeName, Scope, TopicName};
use crate::replication::{Forged, Inbound, Routes};
use crate::wire::Frame;

/// Most entries gathered into one transaction: the driver commits once the frames
/// queued so far hold this many.
const COMMIT_ENTRIES: usize = 8192;

/// The receiving half of a session. The driver gathers queued frames into one
/// transaction ([`Intake::handle_frame`] says what each adds), waits as
/// [`Intake::before_commit`] says, commits, and reports it ([`Intake::committed`]).
/// With a peer of version 6, each of its entry streams (one per priority class) has a
/// committer of its own, each gathering its own transaction ([`Gathering`]) through the
/// one intake: the trust rule and the relay quota see every stream.
#[derive(Debug)]
pub struct Intake {
    peer: NodeName,
    node: NodeName,
    input: Vec<TopicName>,
    /// At the core with a relay quota: the topics it relays to other edges (scope
    /// `all`), whose entries the quota counts.
    relayed_topics: Vec<TopicName>,
    inbound: Inbound,
    quota: RelayQuota,
    have_every: Duration,
    last_have: Instant,
    /// Topics stored since their last `Have`.
    unacknowledged: Vec<TopicName>,
}

/// One transaction being gathered from an entry stream: entries, entries and bytes
/// relayed onward, and the topics it touches with the entries it stores of each.
#[derive(Debug, Default)]
pub struct Gathering {
    entries: usize,
    relayed: (u64, u64),
    touched: Vec<(TopicName, u64)>,
}

impl Gathering {
    /// Whether the transaction holds enough: commit it before taking more frames.
    pub fn full(&self) -> bool {
        self.entries >= COMMIT_ENTRIES
    }

    fn touch(&mut self, topic: &TopicName, stored: u64) {
        match self.touched.iter_mut().find(|(t, _)| t == topic) {
            Some((_, count)) => *count += stored,
            None => self.touched.push((topic.clone(), stored)),
        }
    }
}

/// What one frame of the entry stream adds to the transaction being gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// Insert `entries` of `topic`; first, if `skip` is set, account for that origin's
    /// sequences through that one (an edge's own `Skip`, held until this entry).
    Insert {
        /// The topic.
        topic: TopicName,
        /// An origin and its last skipped sequence.
        skip: Option<(NodeName, u64)>,
        /// The entries, in the peer's order.
        entries: Vec<Entry>,
    },
    /// Account for `origin`'s sequences of `topic` through `through`: the peer will not
    /// send them.
    Skip {
        /// The topic.
        topic: TopicName,
        /// The origin.
        origin: NodeName,
        /// The last sequence skipped.
        through: u64,
    },
    /// Nothing yet: an edge's `Skip`, held until the entry after it.
    Hold,
}

/// A transaction committed: what it stored and what to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The topics it touched, with the entries it stored of each.
    pub stored: Vec<(TopicName, u64)>,
    /// Send a `Have` of each of these topics now ([`super::have`]).
    pub acknowledge: Vec<TopicName>,
}

impl Intake {
    pub(super) fn new(
        side: &Side,
        peer: NodeName,
        from_core: bool,
        routes: &Routes,
        settings: &SessionSettings,
        now: Instant,
    ) -> Self {
        let relays = side.core && settings.relay.is_some();
        let relayed_topics = side
            .topics
            .iter()
            .filter(|(_, scope)| relays && *scope == Scope::All);
        Intake {
            inbound: Inbound::new(peer.clone(), from_core),
            peer,
            node: side.node.clone(),
            input: routes.input.clone(),
            relayed_topics: relayed_topics.map(|(t, _)| t.clone()).collect(),
            quota: RelayQuota::new(settings.relay, now),
            have_every: settings.have_every,
            last_have: now,
            unacknowledged: Vec::new(),
        }
    }

    /// The topics taken from the peer: acknowledged at once when the session starts, so
    /// that the peer knows where to start.
    pub fn topics(&self) -> &[TopicName] {
        &self.input
    }

    /// A frame of the peer's entry stream, decoded: only `Batch` and `Skip` of the topics
    /// this side takes belong there, and each passes the trust rule ([`Inbound`]) before
    /// it joins the transaction `g`. A refusal ends the session with nothing of the
    /// transaction stored.
    pub fn handle_frame(&mut self, g: &mut Gathering, frame: Frame) -> Result<Take, SessionError> {
        match frame {
            Frame::Batch(batch) => {
                let topic = batch.topic.clone();
                self.check_route(&topic)?;
                let entries = batch
                    .into_entries()
                    .map_err(|e| SessionError::Protocol(e.to_string()))?;
                let skip = self.inbound.batch(&topic, &entries).map_err(forged)?;
                if self.relayed_topics.contains(&topic) {
                    // What goes on to other edges: all but entries for the core.
                    let onward = entries.iter().filter(|e| e.to.as_ref() != Some(&self.node));
                    for e in onward {
                        g.relayed.0 += 1;
                        g.relayed.1 += e.size();
                    }
                }
                g.entries += entries.len();
                g.touch(&topic, entries.len() as u64);
                let skip = skip.map(|through| (self.peer.clone(), through));
                Ok(Take::Insert {
                    topic,
                    skip,
                    entries,
                })
            }
            Frame::Skip {
                topic,
                origin,
                through,
            } => {
                self.check_route(&topic)?;
                let applied = self
                    .inbound
                    .skip(&topic, &origin, through)
                    .map_err(forged)?;
                g.touch(&topic, 0);
                Ok(match applied {
                    Some(through) => Take::Skip {
                        topic,
                        origin,
                        through,
                    },
                    None => Take::Hold,
                })
            }
            other => Err(SessionError::Protocol(format!(
                "{} on the entry stream",
                other.name()
            ))),
        }
    }

    /// The transaction `g` is about to be committed at `now`: how long to wait first. An
    /// edge past its relay quota waits here, so its stream stops being read, its own
    /// sender slows down, and the backlog stays on its disk, not the core's.
    pub fn before_commit(&mut self, g: &mut Gathering, now: Instant) -> Duration {
        let (entries, bytes) = std::mem::take(&mut g.relayed);
        self.quota.take(entries, bytes, now)
    }

    /// The transaction `g` was committed (durably) at `now`; `queued`: more frames wait
    /// for the next one on its stream. Acknowledges at once when the stream goes quiet,
    /// and at most every `have_every` while it streams: one `Have` per commit would cost
    /// a packet back per commit during a bulk transfer.
    pub fn committed(&mut self, g: Gathering, now: Instant, queued: bool) -> Committed {
        let stored = g.touched;
        for (topic, _) in &stored {
            if !self.unacknowledged.contains(topic) {
                self.unacknowledged.push(topic.clone());
            }
        }
        let due = !queued || now.saturating_duration_since(self.last_have) >= self.have_every;
        let acknowledge = match due {
            true => {
                self.last_have = now;
                std::mem::take(&mut self.unacknowledged)
            }
            false => Vec::new(),
        };
        Committed {
            stored,
            acknowledge,
        }
    }

    fn check_route(&self, topic: &TopicName) -> Result<(), SessionError> {
        if self.input.contains(topic) {
            return Ok(());
        }
        Err(SessionError::Protocol(format!(
            "entries of topic {topic}, which this node does not take from the peer"
        )))
    }
}

fn forged(e: Forged) -> SessionError {
    SessionError::Forged(e.0)
}
