//! The link's transport: QUIC (quinn) with mutual TLS 1.3 (rustls, ring) and the mission CA.
//!
//! - The mission CA ([`Ca`]) lives with the core: `ca.pem` (its certificate, which every
//!   node holds) and `ca.key` (its private key, which stays on the core). It issues each
//!   node a [`NodeIdentity`]: `<node>.pem` and `<node>.key`, ECDSA P-256, the node's name
//!   as the certificate's DNS name and common name. The core's certificate is for server
//!   authentication only and an edge's for client authentication only, so an edge cannot
//!   pose as the core, nor the core's key dial in as an edge. All files are plain PEM, so
//!   a Kubernetes secret can hold them.
//! - The core listens ([`server_endpoint`]) and requires a client certificate that chains
//!   to the CA. After the handshake, [`accept`] reads the edge's name from its certificate
//!   ([`peer_name`]) and its serial and key ([`CertificateInfo`]), and asks an [`Admit`]
//!   (the config's [`Allowed`], or the core's run-time list `crate::edges::Edges`): an
//!   edge not listed is closed with [`CloseCode::NotAllowed`], one whose certificate is
//!   revoked with [`CloseCode::Revoked`], each with a reason, and the refusal is logged
//!   with its address.
//! - [`Credentials`] serve each handshake the node's current certificate and CA, reloaded
//!   from their files when they change (renewal without a restart).
//! - An edge dials ([`client_endpoint`], [`connect`]): it trusts only the CA, presents its
//!   own certificate, and checks that the server's certificate names the core.
//! - Both sides speak the ALPN [`ALPN`] (protocol and version); a peer that speaks another
//!   fails the handshake, and [`explain`] says so in the log of either side.
//! - Where the core holds the CA's key, edges also enroll on the same port with
//!   [`ENROLL_ALPN`] ([`server_config_enrolling`], [`accept_any`]): a client certificate
//!   is then optional in the handshake (one that is sent is checked all the same), and
//!   [`accept`] refuses a link without one; the enrolling edge trusts the core through
//!   the CA pinned by its code ([`enroll_client_config`]). See `crate::edges::enrollment`.
//! - [`transport_config`] holds the QUIC settings chosen for slow, lossy, long links.
//!
//! TLS 1.3 only; no 0-RTT (replayable, and it saves one round trip per reconnect at best).
//! Links resume sessions (TLS 1.3 tickets, kept in memory by both ends: the core keeps
//! [`RESUMED_SESSIONS`], one use each, for at most [`SESSION_LIFETIME`], a day): a
//! returning edge's handshake
//! carries no certificates, ~1 KB each way, seconds on an HF radio. A resumed handshake
//! presents the certificates of the session's first one, and [`accept`] checks them as
//! it checks a full handshake's: its name against the edges allowed, its serial against
//! the revocation list, and its validity against the clock, so that a revoked or expired
//! certificate is refused on a ticket as without one. An edge whose own files were
//! renewed drops its tickets ([`SessionsOf`]): its next handshake presents the new
//! certificate. A core's renewed certificate is seen by each edge at its next full
//! handshake (a ticket lasts a day at most). Enrollment and renewal never resume.
//!
//! IO: the certificates directory (reading and writing PEM files, in `tls/ca.rs`) and UDP
//! sockets (the endpoints).

mod ca;
mod certificate;
mod congestion;
mod credentials;
#[cfg(test)]
pub(crate) mod tests;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, TransportErrorCode, VarInt};
use rustls::AlertDescription;
use rustls::pki_types::{CertificateDer, ServerName};
use tracing::warn;

pub(crate) use self::ca::sha256;
pub use self::ca::{
    CA_CERT_FILE, CA_KEY_FILE, Ca, DemoFiles, NodeIdentity, certificate_info_of_pem,
    check_key_file, enrollment_key, ensure_demo_files, finish_renewal, replace_identity,
    save_enrolled, sha256_of_pem,
};
pub(crate) use self::certificate::hex;
pub use self::certificate::{CertificateInfo, RENEW_WITHIN};

/// Whether two secrets (tokens, hashes) are equal, compared without stopping at the
/// first difference, so that the time taken does not tell how much of a guess was right.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
pub use self::credentials::Credentials;
use crate::entry::NodeName;

/// The ALPN protocol name both sides offer: the protocol and its major version. A peer
/// offering anything else fails the TLS handshake (`no_application_protocol`).
pub const ALPN: &[u8] = b"tether/1";

/// The ALPN of an edge enrolling with a code (`crate::edges::enrollment`): one request,
/// one answer, then the connection closes.
pub const ENROLL_ALPN: &[u8] = b"tether-enroll/1";

/// The default of [`Timeouts::keep_alive`] (`[link] keep_alive`): how often a side with
/// nothing to send pings its peer. It keeps NAT and conntrack state alive (Linux forgets
/// an idle UDP flow after 30 s, or 120 s once it has seen replies; home NATs often after
/// 30 s) and costs a ~50-byte packet and its ack each time, about 7 bytes/s: nothing even
/// at 64 kbit/s.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The default of [`Timeouts::idle_timeout`] (`[link] idle_timeout`): a link on which no
/// packet arrived for this long is dead and is closed (then the edge redials). Four
/// keep-alive intervals: a 5-second round trip, or a fade of up to ~45 s, is not mistaken
/// for a dead link; the price is that a link that did die is noticed only after a minute.
/// quinn also never times out before 3 probe timeouts, so a very slow link stretches it
/// further. The smaller of the two sides' values applies.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The values `[link] keep_alive` may take. Under a second, pings and their acks take a
/// noticeable share of a slow link (~800 bit/s, 8 % of a 9.6 kbit/s HF link); past 10
/// minutes, every NAT on the way has long forgotten the flow.
pub const KEEP_ALIVE_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(10 * 60);

/// The values `[link] idle_timeout` may take. Under 5 s, a single slow round trip or a
/// short fade ends a healthy link; past an hour, a dead link holds its session (and the
/// edge waits to redial) for longer than any outage worth riding out. An hour in
/// milliseconds fits QUIC's idle timeout field (a variable-length integer) by far.
pub const IDLE_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(5)..=Duration::from_secs(60 * 60);

// The longest idle timeout a config accepts is one quinn can send.
const _: () = assert!(IDLE_TIMEOUT_RANGE.end().as_millis() < 1 << 62);

/// The round-trip estimate before the first sample (quinn's default: 333 ms). The first
/// handshake packet is resent after about 3 times this without an answer: 1.5 s here, so
/// a geostationary satellite hop (~600 ms) does not resend the handshake spuriously, at
/// the cost of waiting 1.5 s instead of 1 s when a first packet really was lost. Links
/// with several seconds of round trip still resend a few handshake packets (exponential
/// backoff keeps that to a handful); after the first sample the estimate is measured.
pub const INITIAL_RTT: Duration = Duration::from_millis(500);

/// Bytes a peer may send on one stream before we read them. A stream's throughput is at
/// most this per round trip: 4 MiB covers ~6 Mbit/s at a 5 s round trip. It is also the
/// memory a stream can make the receiver hold.
const STREAM_RECEIVE_WINDOW: u32 = 4 << 20;

/// Bytes a peer may have in flight on all streams of a connection: bounds the memory one
/// peer can make us buffer (quinn's default has no bound).
const RECEIVE_WINDOW: u32 = 16 << 20;

/// Bytes we keep unacknowledged in flight to a peer, on all streams: memory held per peer
/// while a slow link drains it.
const SEND_WINDOW: u64 = 16 << 20;

/// Bidirectional streams a peer may have open at once: the control stream and mirror runs.
pub const MAX_BIDI_STREAMS: u32 = 3;

/// Sessions the core keeps for edges to resume (one ticket per edge in use, each ~2 KB
/// with the edge's certificates): a fleet of this many edges reconnects without
/// certificates; past it, the oldest tickets give way to full handshakes.
pub const RESUMED_SESSIONS: usize = 4096;

/// Unidirectional streams a peer may have open at once: its entry streams, one per
/// priority class.
pub const MAX_UNI_STREAMS: u32 = 3;

/// The longest close reason sent: it must fit one packet on a small-MTU link.
const MAX_REASON_BYTES: usize = 256;

/// Which edges a core accepts, once their certificate chains to the mission CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Only the edges with these names.
    List(Vec<NodeName>),
    /// Any edge the mission CA issued a certificate to.
    AnyEdge,
}

/// When the link pings a quiet peer and when it gives up on a silent one: the `[link]`
/// keys `keep_alive` and `idle_timeout`. [`Default`] is [`KEEP_ALIVE_INTERVAL`] and
/// [`IDLE_TIMEOUT`]; a node's config checks its values against [`KEEP_ALIVE_RANGE`] and
/// [`IDLE_TIMEOUT_RANGE`] and keeps the idle timeout at least twice the keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How often a side with nothing to send pings its peer.
    pub keep_alive: Duration,
    /// How long a link may stay without a packet from the peer before it is closed.
    pub idle_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            keep_alive: KEEP_ALIVE_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Why this node closes a link, sent as the QUIC application close code with a reason
/// text. One place for every code; numbers are never reused, retired ones stay here with
/// a note.
///
/// | code | name          | meaning                                                    |
/// | ---- | ------------- | ---------------------------------------------------------- |
/// | 0    | `shutdown`    | the node is stopping, or an operator closed the link       |
/// | 1    | `not-allowed` | the peer's certificate is valid, but its name is not allowed |
/// | 2    | `version`     | the peer speaks no protocol version this node does         |
/// | 3    | `protocol`    | the peer broke the protocol: garbage, an unexpected frame  |
/// | 4    | `too-large`   | the peer sent a frame over the size limit                  |
/// | 5    | `replaced`    | a newer connection from the same node replaced this one    |
/// | 6    | `forged-origin` | an edge sent entries or a skip of another node's origin  |
/// | 7    | `revoked`     | the peer's certificate is revoked by the core's operator   |
/// | 8    | `incarnation` | a known name from a new store, whose entries would be lost |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 0: the node is stopping, or an operator closed the link. The peer may redial.
    Shutdown,
    /// 1: the peer's certificate is from the mission CA, but the core does not list its
    /// name (`link.edges`). Redialing will not help until the core's config changes.
    NotAllowed,
    /// 2: the peer speaks no protocol version this node does; the reason lists the
    /// versions this node speaks.
    Version,
    /// 3: the peer broke the protocol: bytes that do not decode, a frame out of place.
    Protocol,
    /// 4: the peer sent a frame over the size limit; the reason gives the limit.
    TooLarge,
    /// 5: the same node connected again; the older connection is closed.
    Replaced,
    /// 6: an edge sent entries or a `Skip` of another node's origin, or a `Skip` past
    /// what it appended: a node speaks only for itself. Nothing of it was stored.
    ForgedOrigin,
    /// 7: the peer's certificate (its key or serial) is revoked by the core's operator.
    /// Redialing will not help: the edge needs a new certificate and key.
    Revoked,
    /// 8: the peer presents a name this node knows from another store (a new device, a
    /// wiped data directory) while this node holds the old store's entries; the reason
    /// says what to do.
    Incarnation,
}

/// A node on the other end of an authenticated link.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The QUIC connection, authenticated both ways.
    pub connection: quinn::Connection,
    /// The peer's node name, read from its certificate.
    pub name: NodeName,
    /// The peer's certificate: serial, key, expiry (always read at the core, which
    /// revokes by it; at an edge, `None` if it does not read).
    pub certificate: Option<CertificateInfo>,
}

/// Decides, after the TLS handshake, whether an authenticated edge may stay connected.
pub trait Admit: Send + Sync {
    /// `Ok` if the edge `name`, presenting `certificate` (already verified against the
    /// mission CA), may connect.
    fn admit(&self, name: &NodeName, certificate: &CertificateInfo) -> Result<(), Refusal>;
}

/// Why the core refuses an authenticated edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its name is not in the core's list of edges.
    NotAllowed,
    /// Its certificate is revoked (by its key or its serial).
    Revoked {
        /// The serial of the certificate presented.
        serial: String,
    },
}

/// A problem with certificates, keys or the TLS setup. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that should be there is not.
    #[error("missing file {}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A private key file that users other than the node's may read or write.
    #[error(
        "{} is readable or writable by other users (mode {mode:03o}): a private key must be \
         readable by the node's user only; run `chmod 600 {}` (on Kubernetes: the Secret \
         volume's defaultMode 0400 or 0440 with the pod's fsGroup)",
        path.display(),
        path.display()
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file exists where a new one was to be written; it is left as it is.
    #[error("{} already exists; refusing to overwrite it (remove it first to replace it)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A directory already holds a mission CA where a new one was to be created.
    #[error(
        "{} already holds a mission CA ({CA_CERT_FILE}, {CA_KEY_FILE}); refusing to replace \
         it, as every certificate it issued would stop working (to start a new mission, \
         remove them and every node's certificate first)",
        dir.display()
    )]
    CaExists {
        /// The directory.
        dir: PathBuf,
    },
    /// A file is not the PEM it should be: garbage, a truncated file, no certificate or
    /// key in it.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate or key was read but cannot serve: the key does not match the
    /// certificate, it has expired, it is not issued by this CA, or for another node.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A node name that is not a valid DNS name (all digits, or ending with '-') cannot be
    /// a certificate's name.
    #[error(
        "node name {name} cannot name a certificate: as a DNS name it must not be all \
         digits nor end with '-'"
    )]
    NotDnsName {
        /// The node name.
        name: NodeName,
    },
    /// A key or certificate could not be generated.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// rustls or quinn refused the TLS configuration built from the identity.
    #[error("invalid TLS configuration: {reason}")]
    Config {
        /// Their reason.
        reason: String,
    },
    /// The UDP socket could not be opened.
    #[error("cannot open UDP socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The peer presented no certificate (a server always does; the core requires one).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate names no node.
    #[error("the peer's certificate names no node: {reason}")]
    PeerName {
        /// What is wrong with it.
        reason: String,
    },
    /// The peer's certificate's serial, key or validity does not read.
    #[error("the peer's certificate does not read: {reason}")]
    PeerCertificate {
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The dial could not start (bad address, endpoint closed).
    #[error("cannot dial {peer}: {source}")]
    Dial {
        /// The address dialed.
        peer: SocketAddr,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The QUIC or TLS handshake failed, here or at the peer.
    #[error("handshake with {peer} failed: {}", explain(source))]
    Handshake {
        /// The peer's address.
        peer: SocketAddr,
        /// quinn's error; [`explain`] reads it.
        source: ConnectionError,
    },
    /// The handshake succeeded but the peer's certificate names no node.
    #[error("{peer}: {source}")]
    Identity {
        /// The peer's address.
        peer: SocketAddr,
        /// What is wrong with its certificate.
        source: TlsError,
    },
    /// The edge's certificate is valid but the core does not allow its name.
    #[error("edge {name} at {peer} is not in this core's list of edges (link.edges)")]
    NotAllowed {
        /// The edge's address.
        peer: SocketAddr,
        /// The edge's name, from its certificate.
        name: NodeName,
    },
    /// The edge's certificate is revoked.
    #[error("edge {name} at {peer} presented a revoked certificate (serial {serial})")]
    Revoked {
        /// The edge's address.
        peer: SocketAddr,
        /// The edge's name, from its certificate.
        name: NodeName,
        /// The certificate's serial.
        serial: String,
    },
}

impl Allowed {
    /// Whether an edge of this name (already authenticated by the CA) may connect.
    pub fn allows(&self, name: &NodeName) -> bool {
        match self {
            Allowed::List(names) => names.contains(name),
            Allowed::AnyEdge => true,
        }
    }
}

impl Admit for Allowed {
    fn admit(&self, name: &NodeName, _certificate: &CertificateInfo) -> Result<(), Refusal> {
        self.allows(name).then_some(()).ok_or(Refusal::NotAllowed)
    }
}

impl CloseCode {
    /// Every code, in number order.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Shutdown,
        CloseCode::NotAllowed,
        CloseCode::Version,
        CloseCode::Protocol,
        CloseCode::TooLarge,
        CloseCode::Replaced,
        CloseCode::ForgedOrigin,
        CloseCode::Revoked,
        CloseCode::Incarnation,
    ];

    /// The code's number on the wire.
    pub fn code(self) -> VarInt {
        VarInt::from_u32(match self {
            CloseCode::Shutdown => 0,
            CloseCode::NotAllowed => 1,
            CloseCode::Version => 2,
            CloseCode::Protocol => 3,
            CloseCode::TooLarge => 4,
            CloseCode::Replaced => 5,
            CloseCode::ForgedOrigin => 6,
            CloseCode::Revoked => 7,
            CloseCode::Incarnation => 8,
        })
    }

    /// The code with this number, if this version knows it.
    pub fn from_code(code: VarInt) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The code's name for logs: `not-allowed`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCode::Shutdown => "shutdown",
            CloseCode::NotAllowed => "not-allowed",
            CloseCode::Version => "version",
            CloseCode::Protocol => "protocol",
            CloseCode::TooLarge => "too-large",
            CloseCode::Replaced => "replaced",
            CloseCode::ForgedOrigin => "forged-origin",
            CloseCode::Revoked => "revoked",
            CloseCode::Incarnation => "incarnation",
        }
    }

    /// Closes `connection` with this code and `reason` (cut to 256 bytes), for the peer
    /// to log. Streams stop at once; what was not yet acknowledged is dropped.
    pub fn close(self, connection: &quinn::Connection, reason: &str) {
        let mut end = reason.len().min(MAX_REASON_BYTES);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        connection.close(self.code(), &reason.as_bytes()[..end]);
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The QUIC transport settings for the link, chosen for slow, lossy links with long round
/// trips; each constant above documents its consequence. `timeouts` are the node's
/// `[link]` keys (an idle timeout too long for QUIC is cut to QUIC's longest).
pub fn transport_config(timeouts: Timeouts) -> quinn::TransportConfig {
    let idle_timeout =
        quinn::IdleTimeout::try_from(timeouts.idle_timeout).unwrap_or_else(|_| VarInt::MAX.into());
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval(Some(timeouts.keep_alive))
        .max_idle_timeout(Some(idle_timeout))
        .initial_rtt(INITIAL_RTT)
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        // The link uses streams only: refusing datagrams is one less thing a peer can send.
        .datagram_receive_buffer_size(None)
        // What the protocol opens, and no more: the control stream and a mirror run (one
        // at a time; a stopped run's stream may linger while a new one starts), and an
        // entry stream per priority class each way. Each stream a peer opens costs the receiver a task and
        // buffers; quinn's default lets it open 100 of each.
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .congestion_controller_factory(congestion_controller())
        .ack_frequency_config(Some(ack_frequency()));
    config
}

/// How often we ask the peer to acknowledge: after every [`ACK_ELICITING_THRESHOLD`] + 1
/// ack-eliciting packets, or after its max ack delay. quinn's default (every other packet)
/// costs about one 40-byte ACK packet per two data packets, 2-3 % of a bulk transfer's
/// bytes on the link; asking for fewer ACKs costs a little burstiness in congestion
/// control, and loss is still detected by packet-number gaps.
fn ack_frequency() -> quinn::AckFrequencyConfig {
    let mut config = quinn::AckFrequencyConfig::default();
    config.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    config
}

/// See [`ack_frequency`].
const ACK_ELICITING_THRESHOLD: u32 = 7;

/// The congestion controller: the one place to change it. CUBIC that takes a loss for
/// congestion only when the round trip shows a queue (`tls/congestion.rs`). Measured
/// with the link emulator against quinn's three: `bench catch-up` (goodput of a bulk
/// catch-up over the link's rate, medians of 3 runs, 2 for NewReno) and
/// `bench replicate --quick` (loopback):
///
/// | controller      | satcom up | satcom down | tactical up | tactical down | loopback entries/s |
/// | --------------- | --------- | ----------- | ----------- | ------------- | ------------------ |
/// | tolerant CUBIC  | 0.93      | 0.89        | 0.82        | 0.87          | 160,000-290,000    |
/// | CUBIC           | 0.92      | 0.26        | 0.82        | 0.85          | 220,000-300,000    |
/// | NewReno         | 0.68      | 0.11        | 0.49        | 0.59          |                    |
/// | BBR             | 0.91      | 0.91        | 0.85        | 0.76          | 7,000-74,000       |
///
/// - CUBIC and NewReno take random loss for congestion: on `satcom`'s 2 Mbit/s downlink
///   (1 % loss, 600 ms), CUBIC moves a quarter of the link, NewReno a tenth.
/// - BBR ignores radio loss and fills every emulated link, but collapses on loopback (its
///   window follows a bandwidth-delay product of microseconds), and, as quinn paces from
///   the window rather than from BBR's model, overflows the modem's queue: 40 % of its
///   packets tail-dropped on `satcom`, up to 78 % on `tactical` (tolerant CUBIC: 1-25 %).
fn congestion_controller() -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    Arc::new(congestion::TolerantCubic::default())
}

/// The TLS provider: ring, for every config here.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The core's QUIC server config: TLS 1.3, ALPN [`ALPN`], a client certificate chaining to
/// the mission CA required, the identity's certificate presented.
pub fn server_config(
    identity: &NodeIdentity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    server_config_with(&Credentials::fixed(identity)?, transport)
}

/// [`server_config`] with [`Credentials`]: each handshake presents the current
/// certificate and checks edges against the current CA.
pub fn server_config_with(
    credentials: &Credentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    server_config_enrolling(credentials, transport, false)
}

/// [`server_config_with`]; `enrolling`: edges may also enroll here (ALPN
/// [`ENROLL_ALPN`], no client certificate needed for it: see `crate::edges::enrollment`).
/// A link ([`ALPN`]) needs a certificate either way: [`accept`] refuses one without.
pub fn server_config_enrolling(
    credentials: &Credentials,
    transport: Arc<quinn::TransportConfig>,
    enrolling: bool,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(credentials.edge_verifier(enrolling))
        .with_cert_resolver(credentials.server_resolver());
    tls.alpn_protocols = if enrolling {
        vec![ALPN.to_vec(), ENROLL_ALPN.to_vec()]
    } else {
        vec![ALPN.to_vec()]
    };
    // Session resumption (see the module doc): one ticket per connection, single use,
    // kept in memory; never 0-RTT data.
    tls.session_storage = Arc::new(DaySessions::new());
    tls.send_tls13_tickets = 1;
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// An edge's QUIC client config: TLS 1.3, ALPN [`ALPN`], only the mission CA trusted,
/// the identity's certificate presented. The server's name is checked per dial.
pub fn client_config(
    identity: &NodeIdentity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with(&Credentials::fixed(identity)?, transport)
}

/// [`client_config`] with [`Credentials`]: each handshake presents the current
/// certificate and checks the core against the current CA.
pub fn client_config_with(
    credentials: &Credentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    quic_client(
        credentials.core_verifier(),
        Some(credentials),
        ALPN,
        transport,
        true,
    )
}

/// A QUIC client config: TLS 1.3 with `verifier` for the core, `credentials`' current
/// certificate shown (`None`: none), ALPN `alpn`; `resume`: sessions are resumed (links,
/// see the module doc), else every handshake is a full one (enrollment, renewal).
fn quic_client(
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    credentials: Option<&Credentials>,
    alpn: &[u8],
    transport: Arc<quinn::TransportConfig>,
    resume: bool,
) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match credentials {
        Some(credentials) => builder.with_client_cert_resolver(credentials.client_resolver()),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.resumption = match (resume, credentials) {
        (true, Some(credentials)) => {
            rustls::client::Resumption::store(Arc::new(SessionsOf::new(credentials.clone())))
        }
        _ => rustls::client::Resumption::disabled(),
    };
    let crypto = QuicClientConfig::try_from(tls).map_err(config_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// The core's resumable sessions: [`RESUMED_SESSIONS`] at most, each used once and for
/// at most [`SESSION_LIFETIME`] from its ticket's issue (rustls's cache bounds their
/// number only; the time of each is kept in front of its value here).
#[derive(Debug)]
struct DaySessions(Arc<rustls::server::ServerSessionMemoryCache>);

/// How long a session ticket the core issued may be resumed.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl DaySessions {
    fn new() -> Self {
        DaySessions(rustls::server::ServerSessionMemoryCache::new(
            RESUMED_SESSIONS,
        ))
    }

    /// The value stored under a ticket, if it was issued less than a lifetime ago.
    fn fresh(stored: Vec<u8>) -> Option<Vec<u8>> {
        let (issued, value) = stored.split_first_chunk::<8>()?;
        let age = millis(SystemTime::now()).saturating_sub(u64::from_be_bytes(*issued));
        (u128::from(age) < SESSION_LIFETIME.as_millis()).then(|| value.to_vec())
    }
}

impl rustls::server::StoresServerSessions for DaySessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut stored = millis(SystemTime::now()).to_be_bytes().to_vec();
        stored.extend_from_slice(&value);
        self.0.put(key, stored)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).and_then(Self::fresh)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.take(key).and_then(Self::fresh)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// An edge's resumable sessions, bound to the certificate it presents: once its files
/// are renewed (checked at each dial, before the hello), the old certificate's tickets
/// are dropped, so that the next handshake is a full one and the core sees the new
/// certificate at once. An edge dials one core (or the few of its HQ): 16 tickets.
struct SessionsOf {
    credentials: Credentials,
    /// The serial the tickets were taken with, and the tickets.
    held: std::sync::Mutex<(String, Arc<rustls::client::ClientSessionMemoryCache>)>,
}

impl SessionsOf {
    fn new(credentials: Credentials) -> Self {
        let serial = credentials.certificate().serial;
        let cache = Arc::new(rustls::client::ClientSessionMemoryCache::new(16));
        SessionsOf {
            credentials,
            held: std::sync::Mutex::new((serial, cache)),
        }
    }

    /// The tickets of the certificate in use now; `refresh`: its files looked at first
    /// (before a hello; not when a ticket arrives, which belongs to the certificate the
    /// handshake presented, the one in use before any reload).
    fn current(&self, refresh: bool) -> Arc<rustls::client::ClientSessionMemoryCache> {
        if refresh {
            // A failed reload keeps the previous certificate, and is logged there.
            let _ = self.credentials.refresh();
        }
        let serial = self.credentials.certificate().serial;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.0 != serial {
            *held = (
                serial,
                Arc::new(rustls::client::ClientSessionMemoryCache::new(16)),
            );
        }
        held.1.clone()
    }
}

impl std::fmt::Debug for SessionsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsOf").finish_non_exhaustive()
    }
}

impl rustls::client::ClientSessionStore for SessionsOf {
    fn set_kx_hint(&self, server: ServerName<'static>, group: rustls::NamedGroup) {
        self.current(false).set_kx_hint(server, group);
    }

    fn kx_hint(&self, server: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.current(false).kx_hint(server)
    }

    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
        // TLS 1.3 only.
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        server: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.current(false).insert_tls13_ticket(server, value);
    }

    fn take_tls13_ticket(
        &self,
        server: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.current(true).take_tls13_ticket(server)
    }
}

/// An enrolling edge's QUIC client config: TLS 1.3, ALPN [`ENROLL_ALPN`], no client
/// certificate, and the core trusted only if it serves, after its own certificate, a CA
/// certificate whose SHA-256 is `pin` (from the enrollment code) and its certificate
/// chains to that CA: nothing is sent to a core that is not the mission's.
pub fn enroll_client_config(
    pin: [u8; 32],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    quic_client(Arc::new(PinnedCa(pin)), None, ENROLL_ALPN, transport, false)
}

/// An edge renewing its certificate: [`client_config_with`] (the CA of `ca.pem` trusted,
/// the current certificate shown), with ALPN [`ENROLL_ALPN`].
pub fn renew_client_config(
    credentials: &Credentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    quic_client(
        credentials.core_verifier(),
        Some(credentials),
        ENROLL_ALPN,
        transport,
        false,
    )
}

/// Trusts the CA the server sends whose SHA-256 is the pin, and checks the server's
/// certificate against it as [`client_config`] checks against `ca.pem`.
#[derive(Debug)]
struct PinnedCa([u8; 32]);

impl rustls::client::danger::ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| ca::sha256(c) == self.0) else {
            return Err(rustls::Error::General(
                "the core did not show the mission CA that the enrollment code names: check \
                 the code and the core's address"
                    .to_owned(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned CA is not usable: {e}")))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not spoken here".to_owned(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The core's endpoint, listening on `listen` (UDP). Must be called inside a tokio
/// runtime. Accept with `endpoint.accept()`, then [`accept`].
pub fn server_endpoint(
    listen: SocketAddr,
    identity: &NodeIdentity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::Endpoint, TlsError> {
    server_endpoint_with(listen, &Credentials::fixed(identity)?, transport)
}

/// [`server_endpoint`] with [`Credentials`], reloaded when their files change.
pub fn server_endpoint_with(
    listen: SocketAddr,
    credentials: &Credentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::Endpoint, TlsError> {
    let config = server_config_with(credentials, transport)?;
    let bind_error = |source| TlsError::Bind {
        addr: listen,
        source,
    };
    let socket = bind_udp(listen).map_err(bind_error)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_error(std::io::Error::other("no async runtime")))?;
    let endpoint_config = restart_aware(credentials.reset_secret());
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime).map_err(bind_error)
}

/// The receive buffer asked for on the link's UDP sockets. Linux's default (208 KiB)
/// holds ~150 datagrams: a burst from a peer while this side's thread is busy (a small
/// edge box hashing chunks, or two cores shared with a relay) overflows it, and every
/// datagram dropped there is sent again; on loopback that was 1-3 % of a mirror's bytes.
/// The kernel caps the size at `net.core.rmem_max`; [`bind_udp`] warns when it did.
pub const SOCKET_RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with a receive buffer of [`SOCKET_RECEIVE_BUFFER`]
/// (or the most the kernel allows, with a warning saying how to raise it).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let tuned = socket2::SockRef::from(&socket);
    // Refusal is not fatal: the socket works with the default buffer.
    let _ = tuned.set_recv_buffer_size(SOCKET_RECEIVE_BUFFER);
    // Linux reports twice what it grants (the other half is its bookkeeping).
    let granted = tuned.recv_buffer_size().unwrap_or(0) / 2;
    if granted < SOCKET_RECEIVE_BUFFER {
        warn!(
            %addr,
            granted_bytes = granted,
            wanted_bytes = SOCKET_RECEIVE_BUFFER,
            "the link's UDP receive buffer is smaller than wanted, so bursts may be dropped \
             and sent again; raise it with `sysctl -w net.core.rmem_max=4194304`"
        );
    }
    Ok(socket)
}

/// At most one stateless reset per this interval (quinn's default: 20 ms): none. After
/// a core restart every edge's next packet asks for one, and a fleet's keep-alives arrive
/// together (their idle timers were set by the same broadcast), and so do their
/// backed-off retransmissions. At 50 a second a thousand edges waited for them, some for
/// the whole idle timeout (`bench fanout`: all back 75 s after the kill); at 1,000 a
/// second the same happened to one edge in some runs: its probes kept arriving in the
/// same millisecond as others'. A reset is smaller than the packet that asks for it (no
/// amplification, and no loop: each answer is shorter, down to nothing), and only packets
/// whose connection ID carries this key's 40-bit tag get one (quinn's keyed FxHash: it
/// keeps random and non-QUIC packets out, 1 in 2^40, though not someone who has seen a
/// valid ID), so answering each costs one keyed hash and one small datagram.
pub const MIN_RESET_INTERVAL: Duration = Duration::ZERO;

/// The core endpoint's stateless-reset key and connection-ID key, derived from its
/// private key instead of drawn at random: a restarted core then recognises the
/// connection IDs of its previous run and answers an edge's next packet with a stateless
/// reset, so that the edge redials at once instead of waiting out its idle timeout.
fn restart_aware(secret: &[u8]) -> quinn::EndpointConfig {
    let reset = blake3::derive_key("tether 2026 quic stateless reset key", secret);
    let cid = blake3::derive_key("tether 2026 quic connection id key", secret);
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(ResetKey(reset)));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config.min_reset_interval(MIN_RESET_INTERVAL);
    config
}

/// A keyed BLAKE3 MAC, as quinn's stateless-reset key.
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        let tag = blake3::keyed_hash(&self.0, data);
        let n = out.len().min(32);
        out[..n].copy_from_slice(&tag.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let expected = blake3::keyed_hash(&self.0, data);
        // blake3::Hash compares in constant time.
        match <[u8; 32]>::try_from(signature) {
            Ok(given) if blake3::Hash::from_bytes(given) == expected => Ok(()),
            _ => Err(quinn::crypto::CryptoError),
        }
    }
}

/// An edge's endpoint, bound to `bind` (usually `0.0.0.0:0`, or `[::]:0` to reach an
/// IPv6 core), with the client config as its default. Must be called inside a tokio
/// runtime. Dial with [`connect`].
pub fn client_endpoint(
    bind: SocketAddr,
    identity: &NodeIdentity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::Endpoint, TlsError> {
    client_endpoint_with(bind, &Credentials::fixed(identity)?, transport)
}

/// [`client_endpoint`] with [`Credentials`], reloaded when their files change.
pub fn client_endpoint_with(
    bind: SocketAddr,
    credentials: &Credentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::Endpoint, TlsError> {
    let config = client_config_with(credentials, transport)?;
    let bind_error = |source| TlsError::Bind { addr: bind, source };
    let socket = bind_udp(bind).map_err(bind_error)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_error(std::io::Error::other("no async runtime")))?;
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
            .map_err(bind_error)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Completes an incoming connection at the core: the TLS handshake (the client's
/// certificate must chain to the CA), then `admit` must admit the edge's name and
/// certificate. A refused edge is closed with [`CloseCode::NotAllowed`] or
/// [`CloseCode::Revoked`] and a reason. Every refusal is logged here (warn, with the
/// peer's address), so the caller need not log it again.
pub async fn accept<A: Admit + ?Sized>(
    incoming: quinn::Incoming,
    admit: &A,
) -> Result<Peer, HandshakeError> {
    match accept_any(incoming, admit).await? {
        Accepted::Link(peer) => Ok(peer),
        Accepted::Enroll(connection) => {
            let peer = connection.remote_address();
            CloseCode::Protocol.close(&connection, "this core takes no enrollments here");
            warn!(%peer, "link refused: an enrollment where none is taken");
            Err(HandshakeError::Identity {
                peer,
                source: TlsError::NoPeerCertificate,
            })
        }
    }
}

/// What an incoming connection turned out to be.
#[derive(Debug)]
pub enum Accepted {
    /// An edge's link, admitted ([`accept`]).
    Link(Peer),
    /// An edge enrolling with a code (ALPN [`ENROLL_ALPN`]): not authenticated by a
    /// certificate of its own; `crate::edges::enrollment` serves it.
    Enroll(quinn::Connection),
}

/// [`accept`], where edges may also enroll (the endpoint's config from
/// [`server_config_enrolling`]).
pub async fn accept_any<A: Admit + ?Sized>(
    incoming: quinn::Incoming,
    admit: &A,
) -> Result<Accepted, HandshakeError> {
    let peer = incoming.remote_address();
    let accepted = accept_inner(incoming, admit, peer).await;
    if let Err(err) = &accepted {
        warn!(%peer, %err, "link refused");
    }
    accepted
}

async fn accept_inner<A: Admit + ?Sized>(
    incoming: quinn::Incoming,
    admit: &A,
    peer: SocketAddr,
) -> Result<Accepted, HandshakeError> {
    let handshake = |source| HandshakeError::Handshake { peer, source };
    let connection = incoming
        .accept()
        .map_err(handshake)?
        .await
        .map_err(handshake)?;
    let alpn = connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    // A full handshake checked the certificate's validity; a resumed one did not (its
    // certificates are the session's first handshake's, whatever ALPN it was resumed
    // with): check any certificate presented here, before enrollment (a renewal) or a
    // link is served.
    if let Ok(certificate) = peer_certificate(&connection)
        && certificate.not_after <= SystemTime::now()
    {
        let who = peer_name(&connection).map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let reason = format!(
            "the certificate of edge {who} (serial {}) has expired: renew it",
            certificate.serial
        );
        CloseCode::NotAllowed.close(&connection, &reason);
        let source = TlsError::PeerCertificate { reason };
        return Err(HandshakeError::Identity { peer, source });
    }
    if alpn.as_deref() == Some(ENROLL_ALPN) {
        return Ok(Accepted::Enroll(connection));
    }
    let identified = peer_name(&connection).and_then(|name| {
        let certificate = peer_certificate(&connection)?;
        Ok((name, certificate))
    });
    let (name, certificate) = match identified {
        Ok(found) => found,
        Err(source) => {
            CloseCode::Protocol.close(&connection, &source.to_string());
            return Err(HandshakeError::Identity { peer, source });
        }
    };
    match admit.admit(&name, &certificate) {
        Ok(()) => Ok(Accepted::Link(Peer {
            connection,
            name,
            certificate: Some(certificate),
        })),
        Err(Refusal::NotAllowed) => {
            let reason = format!("edge {name} is not in this core's list of edges");
            CloseCode::NotAllowed.close(&connection, &reason);
            Err(HandshakeError::NotAllowed { peer, name })
        }
        Err(Refusal::Revoked { serial }) => {
            let reason = format!(
                "the certificate of edge {name} (serial {serial}) is revoked by the core's \
                 operator; this edge needs a new certificate and key"
            );
            CloseCode::Revoked.close(&connection, &reason);
            Err(HandshakeError::Revoked { peer, name, serial })
        }
    }
}

/// Dials the core at `addr` from an endpoint made by [`client_endpoint`]; the core's
/// certificate must name `core`. Failures are logged here (warn), with [`explain`]'s
/// reading of them.
///
/// In TLS 1.3 the server checks the client's certificate after the client has finished
/// its side of the handshake: when the core refuses this edge's certificate or name, this
/// may still succeed, and the refusal arrives as the connection's close (see
/// `quinn::Connection::closed`, and [`explain`] for its reason).
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    core: &NodeName,
) -> Result<Peer, HandshakeError> {
    let connected = connect_inner(endpoint, addr, core).await;
    if let Err(err) = &connected {
        warn!(peer = %addr, %err, "cannot connect to the core");
    }
    connected
}

async fn connect_inner(
    endpoint: &quinn::Endpoint,
    peer: SocketAddr,
    core: &NodeName,
) -> Result<Peer, HandshakeError> {
    let connecting = endpoint
        .connect(peer, core.as_str())
        .map_err(|source| HandshakeError::Dial { peer, source })?;
    let connection = connecting
        .await
        .map_err(|source| HandshakeError::Handshake { peer, source })?;
    // rustls checked that the certificate names the core; this reads that same name.
    let name =
        peer_name(&connection).map_err(|source| HandshakeError::Identity { peer, source })?;
    let certificate = peer_certificate(&connection).ok();
    Ok(Peer {
        connection,
        name,
        certificate,
    })
}

/// The peer's node name: the DNS name in its certificate (which the handshake verified
/// against the mission CA).
pub fn peer_name(connection: &quinn::Connection) -> Result<NodeName, TlsError> {
    let identity = connection
        .peer_identity()
        .ok_or(TlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let cert = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    name_in_certificate(cert).map_err(|reason| TlsError::PeerName { reason })
}

/// What the peer's certificate says of its serial, key and expiry.
pub fn peer_certificate(connection: &quinn::Connection) -> Result<CertificateInfo, TlsError> {
    let identity = connection
        .peer_identity()
        .ok_or(TlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let cert = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    CertificateInfo::read(cert).map_err(|reason| TlsError::PeerCertificate { reason })
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A connection error as a sentence for the log: application close codes by name with
/// their reason, TLS alerts with what they usually mean here.
pub fn explain(err: &ConnectionError) -> String {
    match err {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            match CloseCode::from_code(close.error_code) {
                Some(code) => format!("closed by the peer ({code}): {reason}"),
                None => format!(
                    "closed by the peer with unknown code {}: {reason}",
                    close.error_code
                ),
            }
        }
        ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(alert) => format!("the peer refused the TLS handshake: {}", alert_hint(alert)),
            None => format!("closed by the peer's QUIC stack: {close}"),
        },
        ConnectionError::TransportError(error) => match tls_alert(error.code) {
            Some(alert) => format!(
                "TLS handshake refused here: {} ({})",
                alert_hint(alert),
                error.reason
            ),
            None => format!("QUIC error: {error}"),
        },
        ConnectionError::TimedOut => {
            "no packet from the peer within the idle timeout (the smaller of both sides' \
             link.idle_timeout), or no answer to the handshake"
                .to_owned()
        }
        ConnectionError::VersionMismatch => {
            "the peer speaks no QUIC version this node does".to_owned()
        }
        ConnectionError::Reset => {
            "reset by the peer: it no longer knows this connection (it restarted)".to_owned()
        }
        other => other.to_string(),
    }
}

/// The TLS alert inside a QUIC CRYPTO_ERROR code (0x100 to 0x1ff), if it is one.
fn tls_alert(code: TransportErrorCode) -> Option<AlertDescription> {
    let code = u64::from(code);
    (0x100..0x200)
        .contains(&code)
        .then(|| AlertDescription::from((code & 0xff) as u8))
}

/// What a TLS alert usually means on a Tether link.
fn alert_hint(alert: AlertDescription) -> String {
    let alpn = String::from_utf8_lossy(ALPN);
    match alert {
        AlertDescription::NoApplicationProtocol => format!(
            "no common application protocol (ALPN): this node speaks {alpn}, the peer another \
             protocol or version"
        ),
        AlertDescription::CertificateRequired => {
            "the client presented no certificate; the core requires one from the mission CA"
                .to_owned()
        }
        AlertDescription::UnknownCA => {
            "a certificate is not issued by the mission CA the other side trusts".to_owned()
        }
        // What webpki reports for a certificate whose issuer has the CA's name but not its
        // key: another mission's CA of the same name.
        AlertDescription::DecryptError => {
            "a certificate's signature does not verify: it is not issued by the mission CA \
             the other side trusts (another CA of the same name?)"
                .to_owned()
        }
        AlertDescription::BadCertificate | AlertDescription::UnsupportedCertificate => {
            "a certificate was refused: another CA, another name, or issued for another role"
                .to_owned()
        }
        AlertDescription::CertificateExpired => "a certificate has expired".to_owned(),
        other => format!("TLS alert {other:?}"),
    }
}

/// The node name a certificate is issued to: its one DNS name.
fn name_in_certificate(cert: &CertificateDer<'_>) -> Result<NodeName, String> {
    let cert = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut names = cert.valid_dns_names();
    let name = names.next().ok_or("it holds no DNS name")?;
    if names.next().is_some() {
        return Err("it holds more than one DNS name".to_owned());
    }
    NodeName::new(name).map_err(|e| e.to_string())
}

/// A node name as the TLS server name that the core's certificate must hold.
fn server_name(name: &NodeName) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.as_str().to_owned())
        .map_err(|_| TlsError::NotDnsName { name: name.clone() })
}

fn config_error(err: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        reason: err.to_string(),
    }
}
