//! What the API shows of a node, as JSON: plain views of the protocol's types, with
//! times in milliseconds since the Unix epoch and durations in milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use protocol::edges::{EdgeStatus, Forgotten};
use protocol::entry::Record;
use protocol::link::{CLOCK_SKEW_WARN, LinkStatus};
use protocol::log::TopicInfo;
use protocol::mirror::{MirrorState, MirrorStatus};
use protocol::tls::CertificateInfo;
use serde::Serialize;

/// The node itself.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// `core` or `edge`.
    pub role: &'static str,
    /// The binary's version.
    pub version: &'static str,
    /// When it started.
    pub started_ms: u64,
    /// Whether changes need a bearer token.
    pub token_required: bool,
    /// Whether the demo's link control is here.
    pub demo_link: bool,
    /// The log filter in force, where this process's logs are reachable.
    pub log_filter: Option<String>,
    /// The node's own certificate, as its handshakes use it now.
    pub certificate: CertificateView,
}

/// A node's own certificate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateView {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of its public key, lowercase hex.
    pub key_sha256: String,
    /// When it expires.
    pub not_after_ms: u64,
    /// Whether it expires within the warning time (14 days): renew it.
    pub expires_soon: bool,
}

impl CertificateView {
    /// The view of `c`, judged at `now` against `warn_before`.
    pub fn new(c: &CertificateInfo, now: SystemTime, warn_before: Duration) -> CertificateView {
        CertificateView {
            serial: c.serial.clone(),
            key_sha256: c.key_sha256.clone(),
            not_after_ms: millis(c.not_after),
            expires_soon: c.expires_in(now) <= warn_before,
        }
    }
}

/// An edge as the core sees it: in its list or not, connected, its certificates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    /// Its name.
    pub name: String,
    /// Whether the core admits its name (a revoked certificate is refused all the same).
    pub admitted: bool,
    /// Why: `config` (link.edges), `any-edge` (link.allow_any_edge), `added` or
    /// `removed` by an operator, or `not-listed`.
    pub listing: &'static str,
    /// Whether a link with it is up.
    pub connected: bool,
    /// When an operator forgot it.
    pub forgotten_ms: Option<u64>,
    /// When the core last knew it connected (now while it is).
    pub last_seen_ms: Option<u64>,
    /// When the core released it (stopped keeping entries for it) for staying away past
    /// its allowance, and why; cleared when it returns.
    pub released: Option<ReleasedView>,
    /// The certificates it presented, oldest first.
    pub certificates: Vec<EdgeCertificateView>,
}

/// When and why an edge was released.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleasedView {
    /// When.
    pub at_ms: u64,
    /// Why: how long it was away, or how much was held for it, against which setting.
    pub why: String,
}

/// A certificate an edge presented.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeCertificateView {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of its public key, lowercase hex.
    pub key_sha256: String,
    /// When it expires.
    pub not_after_ms: u64,
    /// When the core first saw it.
    pub first_seen_ms: u64,
    /// When it was revoked.
    pub revoked_ms: Option<u64>,
}

impl From<&EdgeStatus> for EdgeView {
    fn from(e: &EdgeStatus) -> EdgeView {
        EdgeView {
            name: e.name.to_string(),
            admitted: e.listing.admitted(),
            listing: e.listing.as_str(),
            connected: e.connected,
            forgotten_ms: e.forgotten.map(millis),
            last_seen_ms: e.last_seen.map(millis),
            released: e.released.as_ref().map(|(at, why)| ReleasedView {
                at_ms: millis(*at),
                why: why.clone(),
            }),
            certificates: e
                .certificates
                .iter()
                .map(|c| EdgeCertificateView {
                    serial: c.serial.clone(),
                    key_sha256: c.key_sha256.clone(),
                    not_after_ms: millis(c.not_after),
                    first_seen_ms: millis(c.first_seen),
                    revoked_ms: c.revoked.map(millis),
                })
                .collect(),
        }
    }
}

/// What forgetting an edge did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeForgottenView {
    /// The edge after.
    pub edge: EdgeView,
    /// Whether the core's store held anything for it.
    pub known: bool,
    /// Entries retention released right after.
    pub released: u64,
}

impl EdgeForgottenView {
    /// The view of `forgotten` and the edge's status after.
    pub fn new(edge: &EdgeStatus, forgotten: Forgotten) -> EdgeForgottenView {
        EdgeForgottenView {
            edge: EdgeView::from(edge),
            known: forgotten.known,
            released: forgotten.released,
        }
    }
}

/// A link to a peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkView {
    /// The peer's name.
    pub peer: String,
    /// `up`, `down` or `paused` (up, but paused on either side).
    pub state: &'static str,
    /// Whether a session is up.
    pub connected: bool,
    /// Since when it is up or down.
    pub since_ms: u64,
    /// Paused by an operator here.
    pub paused_here: bool,
    /// Paused by an operator at the peer.
    pub paused_by_peer: bool,
    /// The smoothed round trip, while up.
    pub rtt_ms: Option<f64>,
    /// Compressed entry bytes sent since the node started.
    pub bytes_out: u64,
    /// Compressed entry bytes received since the node started.
    pub bytes_in: u64,
    /// Core: how often this edge's entries waited for its relay quota since the node
    /// started.
    pub throttled: u64,
    /// Edge: dials of the core that failed (refused, or no answer) since the node started.
    pub failed_dials: u64,
    /// Entries waiting to be sent, all topics (an upper bound).
    pub backlog: u64,
    /// Entries the peer last said wait there for this node (edges tell HQ).
    pub backlog_in: Option<u64>,
    /// Their bytes, as the peer estimates them.
    pub backlog_in_bytes: Option<u64>,
    /// How far the peer's clock is ahead of this node's (negative: behind), in ms, as
    /// its last hello showed.
    pub clock_offset_ms: Option<i64>,
    /// The two clocks are further apart than the nodes tolerate (2 minutes): the page
    /// warns.
    pub clock_skewed: bool,
    /// Per topic and direction.
    pub topics: Vec<LinkTopicView>,
}

/// Whether clocks `offset_ms` apart are further apart than [`CLOCK_SKEW_WARN`].
pub fn clock_skewed(offset_ms: i64) -> bool {
    u128::from(offset_ms.unsigned_abs()) > CLOCK_SKEW_WARN.as_millis()
}

/// One topic and direction of a link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkTopicView {
    /// The topic.
    pub topic: String,
    /// `out` (sent) or `in` (received).
    pub direction: &'static str,
    /// Its priority class on the link: `urgent`, `normal` or `bulk`.
    pub priority: String,
    /// Entries sent or stored since the node started.
    pub entries: u64,
    /// Entries waiting to be sent (out only).
    pub backlog: u64,
    /// When it last had nothing left to send or acknowledge.
    pub up_to_date_ms: Option<u64>,
}

impl From<&LinkStatus> for LinkView {
    fn from(s: &LinkStatus) -> LinkView {
        let state = match (s.connected, s.paused_here || s.paused_by_peer) {
            (false, _) => "down",
            (true, true) => "paused",
            (true, false) => "up",
        };
        LinkView {
            peer: s.peer.to_string(),
            state,
            connected: s.connected,
            since_ms: millis(s.since),
            paused_here: s.paused_here,
            paused_by_peer: s.paused_by_peer,
            rtt_ms: s.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            bytes_out: s.bytes_out,
            bytes_in: s.bytes_in,
            throttled: s.throttled,
            failed_dials: s.failed_dials,
            backlog: s.topics.iter().filter(|t| t.out).map(|t| t.backlog).sum(),
            backlog_in: s.backlog_in.map(|h| h.entries),
            backlog_in_bytes: s.backlog_in.map(|h| h.bytes),
            clock_offset_ms: s.clock_offset_ms,
            clock_skewed: s.clock_offset_ms.is_some_and(clock_skewed),
            topics: s
                .topics
                .iter()
                .map(|t| LinkTopicView {
                    topic: t.topic.to_string(),
                    direction: if t.out { "out" } else { "in" },
                    priority: t.priority.to_string(),
                    entries: t.entries,
                    backlog: t.backlog,
                    up_to_date_ms: t.up_to_date.map(millis),
                })
                .collect(),
        }
    }
}

/// The edge's mirror.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorView {
    /// `idle`, `planning`, `running`, `done`, `failed` or `interrupted`.
    pub state: &'static str,
    /// Whether the operator wants it running (it resumes by itself when the link returns).
    pub started: bool,
    /// The version the edge held when this mirror started.
    pub base_version: Option<u64>,
    /// The version it is fetching.
    pub target_version: Option<u64>,
    /// Files written.
    pub files_done: u64,
    /// Files to write.
    pub files_todo: u64,
    /// Chunk bytes received and verified.
    pub bytes_done: u64,
    /// Chunk bytes read from the link for this mirror as they arrive, before
    /// verification: moves while a chunk is part way across; kept on a resume of the same
    /// target; never below `bytes_done` (it also counts a chunk cut by an interruption or
    /// failing verification).
    pub bytes_arrived: u64,
    /// Chunk bytes to fetch.
    pub bytes_todo: u64,
    /// Bytes taken from chunks the edge already held.
    pub bytes_reused: u64,
    /// Mirror bytes that crossed the link, both ways.
    pub bytes_on_link: u64,
    /// Chunks that failed verification and were fetched again.
    pub refetched: u64,
    /// Percent of the bytes to fetch that are here.
    pub percent: f64,
    /// Recent rate, bytes per second.
    pub rate_bytes_per_second: f64,
    /// Time left at that rate.
    pub eta_ms: Option<u64>,
    /// When this mirror started.
    pub started_ms: Option<u64>,
    /// When the last successful mirror ended.
    pub last_success_ms: Option<u64>,
    /// The version it brought.
    pub last_success_version: Option<u64>,
    /// The last error, kept until the next success.
    pub last_error: Option<String>,
    /// Interruptions of this mirror.
    pub interruptions: u32,
}

/// The name of a mirror state, as the API and metrics spell it.
pub fn mirror_state(state: MirrorState) -> &'static str {
    match state {
        MirrorState::Idle => "idle",
        MirrorState::Planning => "planning",
        MirrorState::Running => "running",
        MirrorState::Done => "done",
        MirrorState::Failed => "failed",
        MirrorState::Interrupted => "interrupted",
    }
}

/// Every mirror state, for metrics.
pub const MIRROR_STATES: [MirrorState; 6] = [
    MirrorState::Idle,
    MirrorState::Planning,
    MirrorState::Running,
    MirrorState::Done,
    MirrorState::Failed,
    MirrorState::Interrupted,
];

impl MirrorView {
    /// The view of `s`; `started`: whether the operator wants it running.
    pub fn new(s: &MirrorStatus, started: bool) -> MirrorView {
        MirrorView {
            state: mirror_state(s.state),
            started,
            base_version: s.base_version,
            target_version: s.target_version,
            files_done: s.files_done,
            files_todo: s.files_todo,
            bytes_done: s.bytes_done,
            bytes_arrived: s.bytes_arrived,
            bytes_todo: s.bytes_todo,
            bytes_reused: s.bytes_reused,
            bytes_on_link: s.bytes_on_link,
            refetched: s.refetched,
            percent: s.percent(),
            rate_bytes_per_second: s.rate,
            eta_ms: s.eta.map(duration_ms),
            started_ms: s.started.map(millis),
            last_success_ms: s.last_success.map(millis),
            last_success_version: s.last_success_version,
            last_error: s.last_error.clone(),
            interruptions: s.interruptions,
        }
    }
}

/// A topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    /// Its name.
    pub name: String,
    /// `local`, `core` or `all`.
    pub scope: String,
    /// The oldest offset held.
    pub first: u64,
    /// The offset the next entry gets.
    pub next: u64,
    /// Entry bytes held.
    pub bytes: u64,
    /// Its retention: the longest age kept.
    pub max_age_ms: Option<u64>,
    /// Its retention: the most bytes kept.
    pub max_bytes: Option<u64>,
    /// Its retention: the most entries kept.
    pub max_entries: Option<u64>,
}

impl From<&TopicInfo> for TopicView {
    fn from(t: &TopicInfo) -> TopicView {
        TopicView {
            name: t.config.name.to_string(),
            scope: t.config.scope.to_string(),
            first: t.first.0,
            next: t.next.0,
            bytes: t.bytes,
            max_age_ms: t.config.retention.max_age.map(duration_ms),
            max_bytes: t.config.retention.max_bytes,
            max_entries: t.config.retention.max_entries,
        }
    }
}

/// An entry of a topic. Bytes that are UTF-8 are shown as text, others as base64 (in
/// the `_base64` field instead).
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    /// Its offset in the topic on this node.
    pub offset: u64,
    /// The node that appended it.
    pub origin: String,
    /// Its sequence at the origin.
    pub seq: u64,
    /// The origin's clock when it was appended.
    pub timestamp_ms: u64,
    /// Its key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The one node it is for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Its headers.
    pub headers: Vec<HeaderView>,
    /// The payload, if it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload as base64, if it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl From<&Record> for EntryView {
    fn from(r: &Record) -> EntryView {
        let e = &r.entry;
        let (payload, payload_base64) = match std::str::from_utf8(&e.payload) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(base64(&e.payload))),
        };
        EntryView {
            offset: r.offset.0,
            origin: e.id.origin.to_string(),
            seq: e.id.seq.0,
            timestamp_ms: e.timestamp.0,
            key: e.key.as_deref().map(text_or_base64),
            to: e.to.as_ref().map(ToString::to_string),
            headers: e
                .headers
                .iter()
                .map(|(name, value)| HeaderView {
                    name: name.clone(),
                    value: text_or_base64(value),
                })
                .collect(),
            payload,
            payload_base64,
        }
    }
}

/// An entry's header. A value that is not UTF-8 is shown as base64 after `base64:`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderView {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn text_or_base64(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", base64(bytes)),
    }
}

/// `time` in milliseconds since the Unix epoch (0 before it).
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

/// `d` in whole milliseconds.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
