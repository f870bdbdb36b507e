//! Links: keeping one QUIC connection per peer up, and replicating over it.
//!
//! - The core runs [`serve`]: it accepts edges (the TLS handshake and the allow-list are
//!   [`crate::tls`]'s), one session each; a newer connection of the same edge replaces
//!   the older one.
//! - An edge runs [`dial`]: it connects to the core and, whenever the link drops,
//!   reconnects with jittered exponential backoff, forever.
//! - A session (`link/session.rs`) replicates until the connection ends.
//! - Volume mirroring (`link/mirror.rs`) runs on its own stream of the session's
//!   connection, at the lowest priority: [`Mirror`] at the edge, [`MirrorSource`] at the
//!   core.
//! - [`Links`] holds every peer's [`PeerLink`]: its status, and the operator's pause
//!   switch, which outlives sessions.
//!
//! This module and [`crate::tls`] are the only ones that speak quinn.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use machines::session::SessionError;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::edges::Edges;
use crate::entry::{NodeName, Priority, TopicName};
use crate::log::{Held, ReadError, Store};
use crate::tls::{self, Admit as _, CloseCode};
use crate::wire::{self, WireError};

mod admission;
mod mirror;
mod session;

pub use admission::{Admission, MAX_HANDSHAKES, MAX_WAITING};

pub use mirror::{MAX_REFETCH, Mirror, MirrorSettings, MirrorSource, PRIORITY_MIRROR};
// The mirror stream's meter of chunk bytes reads bytes from the core: fuzzed.
pub use machines::session::{Priorities, RelayLimit, RelayQuota, SessionSettings};
pub(crate) use mirror::DataMeter;
pub use session::session;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection failed or was closed.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer broke the protocol; the connection is closed with this reason.
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// The peer sent a frame over the size limit.
    #[error("the peer sent {0}")]
    TooLarge(String),
    /// An edge sent what only another node may say (the trust rule, see
    /// [`crate::replication`]): closed as `forged-origin`.
    #[error("forged origin: {0}")]
    Forged(String),
    /// The peer presents its name from a new store while this node holds the old one's
    /// entries: closed as `incarnation`.
    #[error("{0}")]
    Incarnation(String),
    /// The peer speaks another version.
    #[error("peer speaks protocol version {0}; this node speaks {v}", v = wire::VERSION)]
    Version(u32),
    /// The local store failed.
    #[error("store: {0}")]
    Store(String),
    /// The peer said nothing in time.
    #[error("no hello from the peer within {0:?}")]
    Timeout(Duration),
}

impl LinkError {
    /// The close code and reason to send the peer for this error.
    pub fn close(&self) -> (CloseCode, String) {
        match self {
            LinkError::Protocol(why) => (CloseCode::Protocol, why.clone()),
            LinkError::TooLarge(why) => (CloseCode::TooLarge, why.clone()),
            LinkError::Forged(why) => (CloseCode::ForgedOrigin, why.clone()),
            LinkError::Incarnation(why) => (CloseCode::Incarnation, why.clone()),
            LinkError::Version(v) => (
                CloseCode::Version,
                format!(
                    "version {v} is not spoken here; this node speaks {}",
                    wire::VERSION
                ),
            ),
            LinkError::Store(_) => (CloseCode::Shutdown, "the node cannot go on".into()),
            LinkError::Timeout(_) => (CloseCode::Protocol, "no hello".into()),
            LinkError::Connection(_) => (CloseCode::Shutdown, String::new()),
        }
    }
}

impl From<SessionError> for LinkError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Protocol(why) => LinkError::Protocol(why),
            SessionError::Forged(why) => LinkError::Forged(why),
            SessionError::Incarnation(why) => LinkError::Incarnation(why),
            SessionError::Version(v) => LinkError::Version(v),
            SessionError::Timeout(t) => LinkError::Timeout(t),
        }
    }
}

impl From<WireError> for LinkError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::TooLarge { .. } => LinkError::TooLarge(e.to_string()),
            other => LinkError::Protocol(other.to_string()),
        }
    }
}

impl From<ReadError> for LinkError {
    fn from(e: ReadError) -> Self {
        LinkError::Store(e.to_string())
    }
}

/// One topic and direction of a link, as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    /// The topic.
    pub topic: TopicName,
    /// `true`: this node sends it; `false`: it receives it.
    pub out: bool,
    /// Its priority class on this link, as this node knows it (out: the class it sends
    /// in; in, at an edge: the core's; in, at the core: its own config's).
    pub priority: Priority,
    /// Entries sent (out) or stored (in) in this session.
    pub entries: u64,
    /// Entries after the peer's acknowledged position (out only, an upper bound: some
    /// may not be for this peer).
    pub backlog: u64,
    /// When the direction last had nothing left to send or acknowledge.
    pub up_to_date: Option<SystemTime>,
}

/// A link as seen now, for the UI, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The peer.
    pub peer: NodeName,
    /// Whether a session is up.
    pub connected: bool,
    /// Since when it has been up (or down).
    pub since: SystemTime,
    /// Paused by an operator on this side.
    pub paused_here: bool,
    /// Paused by an operator on the peer's side.
    pub paused_by_peer: bool,
    /// QUIC's smoothed round trip.
    pub rtt: Option<Duration>,
    /// Compressed entry-stream bytes sent and received in this session.
    pub bytes_out: u64,
    /// See `bytes_out`.
    pub bytes_in: u64,
    /// Core: how often this edge's entries waited for its relay quota (since start).
    pub throttled: u64,
    /// Edge: dials of the core that failed since start: refused, or given up after
    /// 15 s with no answer (dials dropped because another one connected are
    /// not counted).
    pub failed_dials: u64,
    /// Per topic and direction.
    pub topics: Vec<TopicStatus>,
    /// What the peer last said it holds for this node and has not had acknowledged
    /// (edges tell the core; kept after the link goes down, as last known).
    pub backlog_in: Option<Held>,
    /// How far the peer's clock is ahead of this node's (negative: behind), in ms, as
    /// its last hello showed. Past [`CLOCK_SKEW_WARN`] both pages warn.
    pub clock_offset_ms: Option<i64>,
}

/// How far apart two nodes' clocks may be before their pages and logs warn: entries
/// carry their origin's timestamps, and certificates are checked against the clock.
pub const CLOCK_SKEW_WARN: Duration = Duration::from_secs(120);

/// The state of one peer's link, shared by its sessions, the link manager and readers.
#[derive(Debug)]
pub struct PeerLink {
    peer: NodeName,
    paused_here: watch::Sender<bool>,
    status: watch::Sender<LinkStatus>,
    current: Mutex<Option<quinn::Connection>>,
    /// Connections past the handshake whose hellos are not yet checked (core).
    joining: Mutex<Vec<quinn::Connection>>,
    /// The connection of the session that is up (past the hellos), for the mirror.
    session: watch::Sender<Option<quinn::Connection>>,
}

impl PeerLink {
    /// A link to `peer`, down and not paused.
    pub fn new(peer: NodeName) -> Arc<PeerLink> {
        let status = LinkStatus {
            peer: peer.clone(),
            connected: false,
            since: SystemTime::now(),
            paused_here: false,
            paused_by_peer: false,
            rtt: None,
            bytes_out: 0,
            bytes_in: 0,
            throttled: 0,
            failed_dials: 0,
            topics: Vec::new(),
            backlog_in: None,
            clock_offset_ms: None,
        };
        let (paused_here, status, current) = (
            watch::Sender::new(false),
            watch::Sender::new(status),
            Mutex::new(None),
        );
        Arc::new(PeerLink {
            peer,
            paused_here,
            status,
            current,
            joining: Mutex::new(Vec::new()),
            session: watch::Sender::new(None),
        })
    }

    /// The peer.
    pub fn peer(&self) -> &NodeName {
        &self.peer
    }

    /// UDP payload bytes sent and received so far on the connection of the session that
    /// is up (QUIC's count: handshake, acknowledgements and keep-alives included), or
    /// `None` while the link is down.
    pub fn wire_bytes(&self) -> Option<(u64, u64)> {
        self.session.borrow().as_ref().map(|c| {
            let stats = c.stats();
            (stats.udp_tx.bytes, stats.udp_rx.bytes)
        })
    }

    /// A snapshot of the status.
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// A watch of the status: it changes on every update (connection, pause, counters).
    pub fn watch(&self) -> watch::Receiver<LinkStatus> {
        self.status.subscribe()
    }

    /// Stops entries from flowing both ways (the peer is told), until [`PeerLink::resume`].
    pub fn pause(&self) {
        self.paused_here.send_replace(true);
        self.update(|s| s.paused_here = true);
    }

    /// Lets entries flow again, from where they stopped.
    pub fn resume(&self) {
        self.paused_here.send_replace(false);
        self.update(|s| s.paused_here = false);
    }

    /// Closes the current connection with `code` and `reason`, if there is one; returns
    /// whether there was. The session ends; an edge redials after its backoff.
    pub fn close(&self, code: CloseCode, reason: &str) -> bool {
        for joining in self
            .joining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            code.close(joining, reason);
        }
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(connection) = current.as_ref() {
            code.close(connection, reason);
        }
        current.is_some()
    }

    /// Notes a connection whose hellos are not yet checked: [`PeerLink::close`] closes it
    /// too, until it takes over or leaves.
    fn join(&self, connection: &quinn::Connection) {
        let mut joining = self.joining.lock().unwrap_or_else(|p| p.into_inner());
        joining.push(connection.clone());
    }

    /// Forgets a joining connection (it took over, or its session ended).
    fn leave(&self, connection: &quinn::Connection) {
        let mut joining = self.joining.lock().unwrap_or_else(|p| p.into_inner());
        joining.retain(|c| c.stable_id() != connection.stable_id());
    }

    /// Sets the current connection; returns the one it replaces.
    fn replace(&self, connection: Option<quinn::Connection>) -> Option<quinn::Connection> {
        std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|p| p.into_inner()),
            connection,
        )
    }

    /// Makes `connection` the current one, closing the one it replaces (if another) as
    /// `replaced`.
    fn take_over(&self, connection: &quinn::Connection) {
        self.leave(connection);
        if let Some(old) = self.replace(Some(connection.clone()))
            && old.stable_id() != connection.stable_id()
        {
            CloseCode::Replaced.close(&old, "a newer connection of this node replaced it");
        }
    }

    /// Whether `connection` is the current one, or none is.
    fn holds(&self, connection: &quinn::Connection) -> bool {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .is_none_or(|c| c.stable_id() == connection.stable_id())
    }

    /// Clears the current connection if it is still `connection`.
    fn replace_if(&self, connection: &quinn::Connection) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|c| c.stable_id() == connection.stable_id())
        {
            *current = None;
        }
    }

    /// Publishes the connection of a session that is up, or clears it if it is still
    /// `ended`'s.
    fn set_session(&self, up: Option<&quinn::Connection>, ended: Option<&quinn::Connection>) {
        match (up, ended) {
            (Some(conn), _) => {
                self.session.send_replace(Some(conn.clone()));
            }
            (None, Some(ended)) => {
                self.session.send_if_modified(|c| {
                    let same = c
                        .as_ref()
                        .is_some_and(|c| c.stable_id() == ended.stable_id());
                    if same {
                        *c = None;
                    }
                    same
                });
            }
            (None, None) => {}
        }
    }

    fn update(&self, change: impl FnOnce(&mut LinkStatus)) {
        self.status.send_modify(change);
    }

    fn set_connected(&self, connected: bool) {
        self.update(|s| {
            if s.connected != connected {
                s.connected = connected;
                s.since = SystemTime::now();
            }
            if !connected {
                s.paused_by_peer = false;
                s.rtt = None;
            }
        });
    }

    fn topic(&self, topic: &TopicName, out: bool, update: impl FnOnce(&mut TopicStatus)) {
        self.update(|s| {
            let i = match s
                .topics
                .iter()
                .position(|t| t.topic == *topic && t.out == out)
            {
                Some(i) => i,
                None => {
                    let (entries, backlog, up_to_date) = (0, 0, None);
                    s.topics.push(TopicStatus {
                        topic: topic.clone(),
                        out,
                        priority: Priority::Normal,
                        entries,
                        backlog,
                        up_to_date,
                    });
                    s.topics.len() - 1
                }
            };
            update(&mut s.topics[i]);
        });
    }
}

/// What a session needs of its node.
#[derive(Debug, Clone)]
pub struct Local {
    /// The node's store.
    pub store: Store,
    /// Whether this node is the core.
    pub core: bool,
    /// Session settings.
    pub settings: SessionSettings,
    /// The core's mission volume, served to mirrors (`None` at an edge, or a core
    /// without a volume: mirrors are refused with a reason).
    pub mirror: Option<MirrorSource>,
    /// The HQ's backbone, at a core that shares one: an edge's entries are acknowledged
    /// only once the backbone holds them.
    pub backbone: Option<crate::bridge::Backbone>,
}

/// Every peer's link on this node.
#[derive(Debug, Clone, Default)]
pub struct Links {
    peers: Arc<Mutex<BTreeMap<NodeName, Arc<PeerLink>>>>,
}

impl Links {
    /// The link to `peer`, made (down, not paused) if it is new.
    pub fn link(&self, peer: &NodeName) -> Arc<PeerLink> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .entry(peer.clone())
            .or_insert_with(|| PeerLink::new(peer.clone()))
            .clone()
    }

    /// The link to `peer`, if it has ever been seen.
    pub fn get(&self, peer: &NodeName) -> Option<Arc<PeerLink>> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .cloned()
    }

    /// Every link's status, by peer name.
    pub fn status(&self) -> Vec<LinkStatus> {
        let peers: Vec<_> = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        peers.iter().map(|p| p.status()).collect()
    }
}

/// The core's side: accepts edges on `endpoint` and runs a session for each, until the
/// endpoint is closed. `edges` admits them (a config's `tls::Allowed` will do); the
/// certificate of each admitted edge is recorded there. A newer connection of an edge
/// replaces its older one.
pub async fn serve(
    local: Local,
    endpoint: quinn::Endpoint,
    edges: impl Into<Edges>,
    links: Links,
    enrollment: Option<Arc<tls::Ca>>,
) {
    let edges: Edges = edges.into();
    let mut sessions = JoinSet::new();
    // Enrollments are rare and unauthenticated until the code is checked: a few at once.
    let enrolling = Arc::new(tokio::sync::Semaphore::new(MAX_ENROLLING));
    let admission = Arc::new(Admission::default());
    loop {
        tokio::select! {
            biased;
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(err) = done {
                    tracing::error!(%err, "a link session panicked");
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let (local, edges, links) = (local.clone(), edges.clone(), links.clone());
                let (enrollment, enrolling) = (enrollment.clone(), enrolling.clone());
                let admission = admission.clone();
                sessions.spawn(async move {
                    let Some(turn) = admission.turn().await else {
                        tracing::warn!(peer = %incoming.remote_address(), "link refused: {MAX_WAITING} handshakes wait already; the edge will dial again");
                        incoming.refuse();
                        return;
                    };
                    // tls::accept_any logs a refused edge itself.
                    let accepted = tls::accept_any(incoming, &edges).await;
                    drop(turn);
                    let peer = match accepted {
                        Ok(tls::Accepted::Link(peer)) => peer,
                        Ok(tls::Accepted::Enroll(connection)) => {
                            let Some(ca) = &enrollment else {
                                CloseCode::Protocol.close(&connection, "this core takes no enrollments");
                                return;
                            };
                            let Ok(_permit) = enrolling.try_acquire() else {
                                tracing::warn!(peer = %connection.remote_address(), "enrollment refused: {MAX_ENROLLING} under way already");
                                CloseCode::Protocol.close(&connection, "the core is busy with other enrollments: try again in a minute");
                                return;
                            };
                            crate::edges::enrollment::serve(connection, &edges, ca).await;
                            return;
                        }
                        Err(_) => return,
                    };
                    let Some(certificate) = peer.certificate.clone() else { return };
                    edges.seen(&peer.name, &certificate).await;
                    // The session takes the link over once the hellos are checked: a
                    // connection that never says a valid hello (a stray probe, an
                    // impostor with another store) never cuts the one that works. Until
                    // then it is joining, and closed with the link if it is revoked.
                    let link = links.link(&peer.name);
                    link.join(&peer.connection);
                    // Revoked or removed while this handshake ran: `Edges` closes what
                    // is registered after it changed, this closes what registers after.
                    if let Err(refusal) = edges.admit(&peer.name, &certificate) {
                        let code = match refusal {
                            tls::Refusal::Revoked { .. } => CloseCode::Revoked,
                            tls::Refusal::NotAllowed => CloseCode::NotAllowed,
                        };
                        code.close(&peer.connection, "refused by the core's operator");
                        link.leave(&peer.connection);
                        return;
                    }
                    let err = session(&local, &peer.connection, &link, false).await;
                    link.replace_if(&peer.connection);
                    log_end(&peer.name, &err);
                });
            }
        }
    }
    sessions.shutdown().await;
}

/// Most enrollments a core serves at once; more are closed with a reason.
const MAX_ENROLLING: usize = 16;

/// Backoff between dials: from `MIN_BACKOFF`, doubling to `MAX_BACKOFF`, each wait
/// drawn between half and all of it, so that many edges do not redial in step.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one dial (handshake included) may take before it is abandoned and retried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// At most this many dials are in flight at once while the core does not answer.
const MAX_PROBES: usize = 4;

/// While the core does not answer, how often a fresh dial starts beside those already
/// waiting, by how long the link has been down and its last round trip: often at first,
/// so that when a link comes back after seconds or minutes a fresh handshake crosses
/// within a few seconds (instead of waiting for QUIC's backed-off retransmission of the
/// last one), but never more than one handshake per four round trips, so that a slow
/// radio's handshakes do not crowd each other out; rarely after an hour, so that a link
/// down for weeks costs a handshake packet a minute.
fn probe_every(down_for: Duration, rtt: Duration) -> Duration {
    let every = if down_for < Duration::from_secs(120) {
        Duration::from_secs(2)
    } else if down_for < Duration::from_secs(3600) {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(60)
    };
    every.max(rtt * 4)
}

/// One core an edge may dial: its address (`host:port`, resolved at every attempt), its
/// name (its certificate must name it) and the edge's link with it.
pub type CoreToDial = (String, NodeName, Arc<PeerLink>);

/// How long an edge that lists several cores waits for the one it dials to answer
/// before it dials the next: at least 32 round trips of its last session, as a handshake
/// on the slowest radios (HF) has taken up to thirty.
const FAILOVER_AFTER: Duration = Duration::from_secs(3);

/// An edge's side: keeps a link to a core up, reconnecting after every loss, until the
/// future is dropped. With several `cores` (the HQ's backbone), a session that ends, or
/// a core that does not answer within [`FAILOVER_AFTER`], moves the edge on to the next
/// one in the list; the next session resumes from what that core holds.
pub async fn dial(local: Local, endpoint: quinn::Endpoint, cores: Vec<CoreToDial>) {
    let mut backoff = MIN_BACKOFF;
    let mut jitter = Jitter::new();
    let mut down_since = std::time::Instant::now();
    // The last session's round trip; before any, QUIC's initial estimate.
    let mut rtt = tls::INITIAL_RTT;
    let mut index = 0;
    loop {
        let Some((addr, core, link)) = cores.get(index % cores.len().max(1)) else {
            return;
        };
        let give_up = (cores.len() > 1).then(|| FAILOVER_AFTER.max(rtt * 32));
        match resolve(addr).await {
            // tls::connect logs a failure itself.
            Ok(resolved) => {
                match probe(&endpoint, resolved, link, down_since, rtt, give_up).await {
                    Some(peer) => {
                        let started = std::time::Instant::now();
                        link.replace(Some(peer.connection.clone()));
                        let err = session(&local, &peer.connection, link, true).await;
                        link.replace_if(&peer.connection);
                        log_end(core, &err);
                        down_since = std::time::Instant::now();
                        rtt = peer.connection.rtt();
                        if started.elapsed() >= STABLE {
                            backoff = MIN_BACKOFF;
                        }
                        if refused_by_operator(&err) {
                            // Redialing soon will not help: the core's operator must act.
                            backoff = MAX_BACKOFF;
                        }
                    }
                    None if give_up.is_some() => {
                        // tls::connect logged a refusal; silence is logged here.
                        tracing::warn!(peer = %core, %addr, "no link with this core (refused, or no answer): dialing the next one of HQ");
                    }
                    None => {}
                }
            }
            Err(err) => {
                tracing::warn!(peer = %core, %addr, %err, "cannot resolve the core's address")
            }
        }
        index += 1;
        // Back off once per round of the list.
        if index % cores.len().max(1) != 0 {
            continue;
        }
        let wait = jitter.spread(backoff);
        tracing::debug!(?wait, "redialing");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Dials the core at `addr`; while nothing answers, starts another dial every
/// [`probe_every`] beside the ones waiting (at most [`MAX_PROBES`], the oldest given up
/// first), each abandoned after [`DIAL_TIMEOUT`]. Returns the first connection made
/// (the other dials are dropped before they complete), or `None` when the core answered
/// with a refusal or an error, for the caller to back off, or did not answer within
/// `give_up`.
async fn probe(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    link: &PeerLink,
    down_since: std::time::Instant,
    rtt: Duration,
    give_up: Option<Duration>,
) -> Option<tls::Peer> {
    let core = link.peer();
    let give_up = give_up.map(|after| tokio::time::Instant::now() + after);
    let mut dials = JoinSet::new();
    let mut started = std::collections::VecDeque::new();
    loop {
        if dials.is_empty() || started.len() < MAX_PROBES {
            let (endpoint, core) = (endpoint.clone(), core.clone());
            // A dial started while the link is down would otherwise sit in QUIC's
            // backed-off handshake retransmissions until the idle timeout.
            let dial = async move {
                tokio::time::timeout(DIAL_TIMEOUT, tls::connect(&endpoint, addr, &core)).await
            };
            started.push_back(dials.spawn(dial));
        }
        let next = probe_every(down_since.elapsed(), rtt);
        tokio::select! {
            done = dials.join_next() => match done {
                Some(Ok(Ok(Ok(peer)))) => return Some(peer),
                // An answer that is not a connection: refused, another CA, a bad name.
                Some(Ok(Ok(Err(_)))) => {
                    link.update(|s| s.failed_dials += 1);
                    return None;
                }
                // Timed out (nothing answered): the probes go on.
                Some(Ok(Err(_))) => {
                    link.update(|s| s.failed_dials += 1);
                    started.retain(|h: &tokio::task::AbortHandle| !h.is_finished());
                }
                // Cancelled (the oldest probe given up for a fresh one).
                Some(Err(_)) | None => {
                    started.retain(|h: &tokio::task::AbortHandle| !h.is_finished());
                }
            },
            () = sleep_until_some(give_up) => {
                link.update(|s| s.failed_dials += 1);
                return None;
            }
            () = tokio::time::sleep(next) => {
                started.retain(|h| !h.is_finished());
                if started.len() >= MAX_PROBES
                    && let Some(oldest) = started.pop_front()
                {
                    oldest.abort();
                }
            }
        }
    }
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The first address `host:port` resolves to.
pub async fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    let mut found = tokio::net::lookup_host(addr).await?;
    found
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

/// Where an edge binds its link socket: the address family of the core's address (IPv4
/// unless it is IPv6), on loopback when the core is on loopback (a demo or a test opens
/// no socket on the machine's other interfaces), else on every interface.
pub(crate) fn edge_bind(core: Option<SocketAddr>) -> SocketAddr {
    match core.map(|a| a.ip()) {
        Some(std::net::IpAddr::V6(ip)) if ip.is_loopback() => {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        }
        Some(std::net::IpAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        Some(std::net::IpAddr::V4(ip)) if ip.is_loopback() => {
            (std::net::Ipv4Addr::LOCALHOST, 0).into()
        }
        Some(std::net::IpAddr::V4(_)) | None => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
    }
}

/// Whether the core closed the link because its operator removed this edge or revoked
/// its certificate.
fn refused_by_operator(err: &LinkError) -> bool {
    match err {
        LinkError::Connection(quinn::ConnectionError::ApplicationClosed(close)) => matches!(
            CloseCode::from_code(close.error_code),
            Some(CloseCode::Revoked | CloseCode::NotAllowed)
        ),
        _ => false,
    }
}

fn log_end(peer: &NodeName, err: &LinkError) {
    match err {
        LinkError::Connection(e) => tracing::info!(%peer, reason = %tls::explain(e), "link down"),
        other => tracing::warn!(%peer, err = %other, "link closed"),
    }
}

/// A small generator for backoff jitter (xorshift, seeded from the clock and address).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let clock = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let here = &clock as *const u64 as u64;
        Jitter((clock ^ here.rotate_left(32)) | 1)
    }

    /// A duration between half and all of `d`.
    fn spread(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let fraction = 0.5 + (self.0 % 1000) as f64 / 2000.0;
        d.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_binds_loopback_only_for_a_core_on_loopback() {
        let bind = |core: &str| edge_bind(Some(core.parse().expect("an address")));
        assert_eq!(
            bind("127.0.0.1:7000"),
            "127.0.0.1:0".parse().expect("an address")
        );
        assert_eq!(bind("[::1]:7000"), "[::1]:0".parse().expect("an address"));
        assert_eq!(
            bind("10.0.0.7:7000"),
            "0.0.0.0:0".parse().expect("an address")
        );
        assert_eq!(
            bind("[fd00::7]:7000"),
            "[::]:0".parse().expect("an address")
        );
        // A name that does not resolve yet: the link dials (and resolves) again later.
        assert_eq!(edge_bind(None), "0.0.0.0:0".parse().expect("an address"));
    }
}
