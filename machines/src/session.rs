//! One replication session's decisions, as a state machine without IO.
//!
//! The driver (`protocol`'s `link/session.rs`) owns the QUIC streams, the store and the
//! timers; it hands these types what happened and does what they answer. Data flow:
//! - [`Handshake`]: our `Hello` to send, the deadline for the peer's; the peer's `Hello`
//!   in (version, name against the certificate, roles), then the store's record of the
//!   peer's incarnation in. Out: the [`Routes`](crate::replication::Routes), what to
//!   record, and the two halves below.
//! - [`Session`], the sending half and the control stream: the peer's control frames in
//!   (`Have` with what the store holds, `Pause`, `Resume`), link measurements in (QUIC's
//!   congestion window and round trip); out: which topic to read from which offset and how
//!   much, the frames planned from what was read, `Pause` / `Resume` to send, and at each
//!   timeout the cursors to store.
//! - [`Intake`], the receiving half: the peer's entry-stream frames in, decoded; out:
//!   what to put in the store's transaction, how long the relay quota makes it wait, and
//!   after the commit, which topics to acknowledge (`Have`) now.
//!
//! Time is always passed in (`now`); nothing here reads the clock or sleeps, so tests
//! step it by hand.

use std::time::Duration;

use crate::entry::{NodeName, Priority, Scope, TopicName, VersionVector};
use crate::replication::Writers;
use crate::wire::Frame;

mod handshake;
mod intake;
mod quota;
mod send;
#[cfg(test)]
mod tests;

pub use handshake::{Greeted, Handshake};
pub use intake::{Committed, Gathering, Intake, Take};
pub use quota::{RelayLimit, RelayQuota};
pub use send::{Control, Measure, Persist, Progress, Read, Round, Session};

/// How a session behaves; `Default` suits both loopback and a radio link.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Most entries read from the log for one batch.
    pub batch_entries: usize,
    /// Compressed bytes gathered before they are handed to QUIC.
    pub batch_bytes: usize,
    /// Most entries sent and not yet acknowledged, per topic: bounds memory and the
    /// work redone after a reconnect.
    pub max_in_flight: usize,
    /// How often cursors and acknowledgements are stored.
    pub persist_every: Duration,
    /// How long to wait for the peer's `Hello`.
    pub hello_timeout: Duration,
    /// While entries stream in, the longest between two acknowledgements (`Have`) of a
    /// topic; a quiet stream is acknowledged at once. Longer: fewer packets back, more
    /// entries re-sent after a reconnect.
    pub have_every: Duration,
    /// zstd level of the entry streams (1 to 3: fast, and most of the gain).
    pub zstd_level: i32,
    /// Core: which edges may write which topics (`[[topics]] writers`).
    pub writers: Writers,
    /// Each topic's priority class (`[[topics]] priority`), for what this side sends.
    pub priorities: Priorities,
    /// The latest-value topics (`[[topics]] latest_value`): of what waits to cross, only
    /// the latest entry per origin and key is sent.
    pub latest_value: Vec<TopicName>,
    /// The protocol version this side speaks: this build's ([`wire::VERSION`]); the
    /// previous one only where a test plays an edge not yet upgraded.
    pub version: u32,
    /// Most entry bytes (as the store counts them) read ahead from a peer's entry stream
    /// and not yet committed: the memory one peer's stream can make this side hold,
    /// beside QUIC's receive window.
    pub queue_bytes: usize,
    /// Core: what it relays from one edge to the others (`[link] relay_*`); `None`: no
    /// limit.
    pub relay: Option<RelayLimit>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            batch_entries: 1024,
            batch_bytes: 256 << 10,
            max_in_flight: 65_536,
            persist_every: Duration::from_secs(1),
            hello_timeout: Duration::from_secs(60),
            have_every: Duration::from_millis(100),
            zstd_level: 1,
            writers: Writers::default(),
            priorities: Priorities::default(),
            latest_value: Vec::new(),
            version: crate::wire::VERSION,
            queue_bytes: 8 << 20,
            relay: None,
        }
    }
}

/// The topics whose priority class is not [`Priority::Normal`] (`[[topics]] priority`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Priorities(pub Vec<(TopicName, Priority)>);

impl Priorities {
    /// `topic`'s class.
    pub fn of(&self, topic: &TopicName) -> Priority {
        self.0
            .iter()
            .find(|(t, _)| t == topic)
            .map_or(Priority::Normal, |(_, p)| *p)
    }
}

/// This end of a link, as its hello presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// This node's name.
    pub node: NodeName,
    /// Its store's incarnation.
    pub incarnation: u64,
    /// Whether it is the core.
    pub core: bool,
    /// The topics it holds that may cross a link (scope `core` or `all`).
    pub topics: Vec<(TopicName, Scope)>,
}

/// Why the state machine ends a session. The driver closes the connection with the
/// matching close code and this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the protocol: a frame out of place, a topic outside the routes, a
    /// hello that does not fit.
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// An edge sent what only another node may say (the trust rule, see
    /// [`crate::replication`]).
    #[error("forged origin: {0}")]
    Forged(String),
    /// The peer presents its name from a new store while this node holds the old one's
    /// entries.
    #[error("{0}")]
    Incarnation(String),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}")]
    Version(u32),
    /// The peer said nothing in time.
    #[error("no hello from the peer within {0:?}")]
    Timeout(Duration),
}

/// The `Have` frame that acknowledges `topic`: what this node durably holds of it.
pub fn have(topic: TopicName, vector: &VersionVector) -> Frame {
    let vector = vector.0.iter().map(|(o, s)| (o.clone(), s.0)).collect();
    Frame::Have { topic, vector }
}
