//! The hellos: what this side says, what it accepts of the peer's, and by when.

use std::time::Instant;

use super::{Intake, Session, SessionError, SessionSettings, Side};
use crate::entry::{NodeName, Offset, Priority, TopicName};
use crate::replication::{Incarnations, Routes};
use crate::wire::{self, Frame, Hello};

/// A session before the peer's hello: our hello, and the deadline for theirs.
#[derive(Debug)]
pub struct Handshake {
    side: Side,
    peer: NodeName,
    settings: SessionSettings,
    /// The topics this side does not take from the peer (at the core, those the edge may
    /// not write); named in our hello.
    closed: Vec<TopicName>,
    /// `None`: a timeout too long to count.
    deadline: Option<Instant>,
}

impl Handshake {
    /// A session of `side` with `peer` (the name its certificate proves), from `now`.
    pub fn new(side: Side, peer: NodeName, settings: SessionSettings, now: Instant) -> Self {
        // At the core, the topics this edge may not write (the core's config); an edge
        // closes none to the core.
        let closed = match side.core {
            true => settings.writers.closed_to(&peer),
            false => Vec::new(),
        };
        let deadline = now.checked_add(settings.hello_timeout);
        Handshake {
            side,
            peer,
            settings,
            closed,
            deadline,
        }
    }

    /// Our hello, of this build's version: the dialer's first frame on the control
    /// stream (the other side answers with [`Greeted::hello`], once it knows which
    /// version the dialer speaks); `clock_ms` is this node's clock as it sends it (ms
    /// since the Unix epoch).
    pub fn hello(&self, clock_ms: u64) -> Frame {
        hello(&self.side, &self.closed, self.settings.version, clock_ms)
    }

    /// By when the next step must happen (the control stream opened, then the peer's
    /// hello arrived); `None`: never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The control stream is open and our hello sent at `now`: the peer has
    /// `hello_timeout` from here to say its own.
    pub fn opened(&mut self, now: Instant) {
        self.deadline = now.checked_add(self.settings.hello_timeout);
    }

    /// The time is `now`: past the deadline, the session ends.
    pub fn handle_timeout(&self, now: Instant) -> Result<(), SessionError> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                Err(SessionError::Timeout(self.settings.hello_timeout))
            }
            _ => Ok(()),
        }
    }

    /// The peer's first control frame, which must be a hello of this build's version or
    /// the previous one ([`wire::PREVIOUS_VERSION`]: the session then speaks that one),
    /// naming the peer its certificate proves, from the other role.
    pub fn handle_hello(self, frame: Frame) -> Result<Greeted, SessionError> {
        let theirs = match frame {
            Frame::Hello(hello) => hello,
            other => {
                let got = other.name();
                return Err(SessionError::Protocol(format!("expected hello, got {got}")));
            }
        };
        if !(wire::PREVIOUS_VERSION..=self.settings.version).contains(&theirs.version) {
            return Err(SessionError::Version(theirs.version));
        }
        if theirs.node != self.peer {
            return Err(SessionError::Protocol(format!(
                "hello names {}, the certificate {}",
                theirs.node, self.peer
            )));
        }
        if theirs.core == self.side.core {
            let role = if self.side.core { "core" } else { "edge" };
            return Err(SessionError::Protocol(format!("both ends are a {role}")));
        }
        let routes = Routes::between(self.side.core, &self.side.topics, &self.closed, &theirs);
        Ok(Greeted {
            side: self.side,
            peer: self.peer,
            settings: self.settings,
            closed: self.closed,
            theirs,
            routes,
        })
    }
}

fn hello(side: &Side, closed: &[TopicName], version: u32, clock_ms: u64) -> Frame {
    Frame::Hello(Hello {
        version,
        node: side.node.clone(),
        incarnation: side.incarnation,
        core: side.core,
        topics: side.topics.clone(),
        closed: closed.to_vec(),
        clock_ms,
    })
}

/// A session whose hellos are exchanged and checked: the routes are known. Before it
/// starts, the peer's incarnation is checked ([`Greeted::check_incarnation`]).
#[derive(Debug)]
pub struct Greeted {
    side: Side,
    peer: NodeName,
    settings: SessionSettings,
    closed: Vec<TopicName>,
    theirs: Hello,
    routes: Routes,
}

impl Greeted {
    /// The version the session speaks: the lower of the two hellos'.
    pub fn version(&self) -> u32 {
        self.theirs.version.min(self.settings.version)
    }

    /// At the core, to an edge of version 6 or later: the frame to send right after the
    /// hello, its rules for the topics they share ([`Frame::Rules`]).
    pub fn rules(&self) -> Option<Frame> {
        if !self.side.core || self.version() < 6 {
            return None;
        }
        let shared = |t: &TopicName| self.routes.out.contains(t) || self.routes.input.contains(t);
        let classes = self.settings.priorities.0.iter();
        let latest = self.settings.latest_value.iter();
        Some(Frame::Rules {
            classes: classes.filter(|(t, _)| shared(t)).cloned().collect(),
            latest_value: latest.filter(|t| shared(t)).cloned().collect(),
        })
    }

    /// At an edge whose core speaks version 6 or later: its next control frame must be
    /// [`Frame::Rules`] ([`Greeted::handle_rules`]).
    pub fn expects_rules(&self) -> bool {
        !self.side.core && self.version() >= 6
    }

    /// `topic`'s priority class on this link, as this side knows it: its config's, and
    /// at an edge, the higher of that and the core's ([`Greeted::handle_rules`]).
    pub fn class_of(&self, topic: &TopicName) -> Priority {
        self.settings.priorities.of(topic)
    }

    /// The core's rules ([`Greeted::rules`]): each topic this edge sends goes in the
    /// higher of the core's class and its own config's (and each it takes is shown in
    /// the core's), and is latest-value if either says so. Topics outside the routes are
    /// ignored.
    pub fn handle_rules(&mut self, frame: Frame) -> Result<(), SessionError> {
        let Frame::Rules {
            classes,
            latest_value,
        } = frame
        else {
            let got = frame.name();
            return Err(SessionError::Protocol(format!("expected rules, got {got}")));
        };
        let routed = |t: &TopicName| self.routes.out.contains(t) || self.routes.input.contains(t);
        for (topic, class) in classes {
            if !routed(&topic) {
                continue;
            }
            let own = self.settings.priorities.of(&topic);
            let list = &mut self.settings.priorities.0;
            list.retain(|(t, _)| *t != topic);
            list.push((topic, own.min(class)));
        }
        for topic in latest_value {
            if routed(&topic) && !self.settings.latest_value.contains(&topic) {
                self.settings.latest_value.push(topic);
            }
        }
        Ok(())
    }

    /// Whether this side sends `topic` as a latest-value topic.
    pub fn latest_value(&self, topic: &TopicName) -> bool {
        self.settings.latest_value.contains(topic)
    }

    /// Our hello in answer to the peer's, of the version the session speaks: the
    /// accepting side sends it once it has read the dialer's, so that a dialer of the
    /// previous version reads a hello of its own version.
    pub fn hello(&self, clock_ms: u64) -> Frame {
        hello(&self.side, &self.closed, self.version(), clock_ms)
    }

    /// The topics each way.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Whether the peer is the core.
    pub fn peer_core(&self) -> bool {
        self.theirs.core
    }

    /// The incarnation the peer's hello presents.
    pub fn presented(&self) -> u64 {
        self.theirs.incarnation
    }

    /// How far the peer's clock is ahead of ours (negative: behind), in ms: its hello's
    /// clock against ours when the hello `arrived_ms`, less half the round trip `rtt` it
    /// took to cross.
    pub fn clock_offset_ms(&self, arrived_ms: u64, rtt: std::time::Duration) -> i64 {
        let sent_ms = i128::from(arrived_ms) - (rtt.as_millis() / 2) as i128;
        let offset = i128::from(self.theirs.clock_ms) - sent_ms;
        offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Checks the peer's incarnation against the one `recorded` for its name, `held`
    /// being the highest sequence of the peer's origin this node holds in any topic
    /// ([`Incarnations::check`]). `Some`: record the presented one (`Renewed`: it comes
    /// from a new store, none of whose predecessor's entries are held here).
    pub fn check_incarnation(
        &self,
        recorded: Option<u64>,
        held: u64,
    ) -> Result<Option<Incarnations>, SessionError> {
        let presented = self.theirs.incarnation;
        let verdict =
            Incarnations::check(recorded, presented, held).map_err(SessionError::Incarnation)?;
        Ok((recorded != Some(presented)).then_some(verdict))
    }

    /// The session is up at `now`. `cursors`: where each outgoing topic starts (its
    /// stored cursor; a topic not named starts at offset 0). Returns the sending half
    /// and the receiving half, which the driver may run apart.
    pub fn start(
        self,
        cursors: impl IntoIterator<Item = (TopicName, Offset)>,
        now: Instant,
    ) -> (Session, Intake) {
        let Greeted {
            side,
            peer,
            settings,
            theirs,
            routes,
            ..
        } = self;
        let intake = Intake::new(&side, peer.clone(), theirs.core, &routes, &settings, now);
        let session = Session::new(&side, peer, theirs.core, routes, &settings, cursors, now);
        (session, intake)
    }
}
