//! The schema: the checked [`Config`] and its sections, each role's defaults, and
//! `SECTIONS`, every key's help (the one description of each key, which `--print-config`
//! writes); [`Section`] and [`Key`] describe an application's sections too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::App;
use crate::entry::{NodeName, TopicConfig, TopicName};
use crate::link::Priorities;
use crate::link::RelayLimit;
use crate::log::StoreConfig;
use crate::replication::Writers;
use crate::role::Role;
use crate::tls::{self, Allowed, Timeouts};

/// A node's checked configuration. [`Config::default_for`] is the local demo setup.
///
/// Each section's fields are its keys of the same names. What a key means, for operators,
/// is its help in `SECTIONS` (in `config/schema.rs`), which `--print-config` writes above
/// it; the fields' docs say only what the Rust side adds: units, what `None` means, where
/// a default comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The kind of node this config is for (not a key: the binary decides it). It picks
    /// the defaults and which keys apply.
    pub role: Role,
    /// `[node]`: who this node is and where it keeps its data.
    pub node: NodeSettings,
    /// `[log]`: how the binary logs.
    pub log: LogSettings,
    /// `[store]`: limits of the log store.
    pub store: StoreSettings,
    /// `[link]`: the QUIC link between the core and its edges, and its certificates.
    pub link: LinkSettings,
    /// `[mirror]`: volume mirroring (the core's mission volume, the edge's mirror).
    pub mirror: MirrorConfig,
    /// `[http]`: the node's HTTP server (API, page, files).
    pub http: HttpSettings,
    /// `[bridge]`: topics carried into and out of NATS JetStream.
    pub bridge: BridgeSettings,
    /// `[[topics]]`: the topics the node creates (or updates) at start (`TOPICS_HELP`);
    /// by default the application's ([`App::topics`]).
    pub topics: Vec<TopicConfig>,
    /// `[[topics]] writers`: at the core, which edges may write each topic.
    pub writers: Writers,
    /// `[[topics]] priority`: the topics that are not of the normal class, for what this
    /// node sends on its links.
    pub priorities: Priorities,
    /// `[[topics]] latest_value`: the topics of which only the latest entry per origin
    /// and key crosses a link, of those that wait.
    pub latest_value: Vec<TopicName>,
}

/// The `[node]` section (each key's help: see [`Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// `name`: the origin of every entry this node appends.
    pub name: NodeName,
    /// `data_dir`; by default `data/<name>`, which follows the name.
    pub data_dir: PathBuf,
}

/// The `[log]` section (each key's help: see [`Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `format`.
    pub format: LogFormat,
    /// `filter`: a tracing `EnvFilter` directive, checked with its parser.
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The `[store]` section (each key's help: see [`Config`]); sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `max_entry_bytes`.
    pub max_entry_bytes: u64,
    /// `disk_budget`; `None` (left out): a third of the disk's room for the store when
    /// it opens ([`crate::log::default_budget`]); `Some(0)`: no budget.
    pub disk_budget: Option<u64>,
    /// `min_free`: 0 for no minimum.
    pub min_free: u64,
    /// `cache_bytes`: sled's page cache.
    pub cache_bytes: u64,
    /// `retention_interval`: shorter frees space sooner and costs more idle work.
    pub retention_interval: Duration,
}

/// Another core of the same HQ an edge may fail over to (`link.failover`, written
/// `name@host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverCore {
    /// Its node name: the certificate it presents must name it.
    pub name: NodeName,
    /// Its address, `host:port`, resolved at each dial.
    pub address: String,
}

impl std::fmt::Display for FailoverCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.address)
    }
}

/// The `[link]` section (each key's help, and whose key it is: see [`Config`]). The
/// keys of the other role keep their defaults (setting one is an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// `listen` (core).
    pub listen: SocketAddr,
    /// `edges` (core): no duplicates, not the core's own name.
    pub edges: Vec<NodeName>,
    /// `allow_any_edge` (core).
    pub allow_any_edge: bool,
    /// `core` (edge): checked as `host:port`, resolved at each dial.
    pub core: String,
    /// `core_name` (edge).
    pub core_name: NodeName,
    /// `failover` (edge): other cores of the same HQ, dialed in turn when the one in use
    /// stops answering (an HQ on several machines sharing a backbone).
    pub failover: Vec<FailoverCore>,
    /// `certs_dir`; `None`: `<data_dir>/certs`, following the data directory;
    /// [`Config::certs_dir`] resolves it.
    pub certs_dir: Option<PathBuf>,
    /// `demo_certs`: what is made is [`crate::tls::ensure_demo_files`]'s.
    pub demo_certs: bool,
    /// `keep_alive`: by default [`tls::KEEP_ALIVE_INTERVAL`], within
    /// [`tls::KEEP_ALIVE_RANGE`]. Linux forgets an idle UDP flow after 30 s, 120 s once
    /// it has seen replies.
    pub keep_alive: Duration,
    /// `idle_timeout`: by default [`tls::IDLE_TIMEOUT`] (four keep-alives), within
    /// [`tls::IDLE_TIMEOUT_RANGE`], and at least twice `keep_alive`.
    pub idle_timeout: Duration,
    /// `relay_rate`, `relay_entries` and `relay_burst` (core), by default
    /// [`RELAY_DEFAULT`]; `None`: no limit (both rates 0).
    pub relay: Option<RelayLimit>,
    /// `allowance_age` and `allowance_bytes` (core): how long, and how much, the core
    /// keeps entries for an edge that is away.
    pub allowance: Allowance,
}

/// What a core keeps for one edge that is away ([`crate::allowance`]): past either, it
/// releases the edge's entries (the edge gets a gap when it returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Longest an edge may be away.
    pub age: Duration,
    /// Most entry bytes held for it; 0: no byte limit.
    pub bytes: u64,
}

/// The default allowance: a month away, 1 GiB held.
pub const ALLOWANCE_DEFAULT: Allowance = Allowance {
    age: Duration::from_secs(30 * 24 * 3600),
    bytes: 1 << 30,
};

/// The default relay quota per edge: 4 KiB of entries a second (~1.4 KiB/s on the wire
/// for JSON, a sixth of a 64 kbit/s radio), 50 entries a second, a minute's burst.
pub const RELAY_DEFAULT: RelayLimit = RelayLimit {
    bytes_per_s: 4 << 10,
    entries_per_s: 50,
    burst: Duration::from_secs(60),
};

/// The `[mirror]` section (each key's help: see [`Config`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorConfig {
    /// `volume` (core); `None`: `<data_dir>/volume`; [`Config::volume_dir`] resolves it.
    pub volume: Option<PathBuf>,
    /// `dir` (edge); `None`: `<data_dir>/mirror`; [`Config::mirror_dir`] resolves it.
    pub dir: Option<PathBuf>,
    /// `max_rate`, in chunk bytes per second; `None`: no cap.
    pub max_rate: Option<u64>,
}

/// The `[bridge]` section (each key's help: see [`Config`]); off while `urls` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSettings {
    /// `urls`: the NATS servers (`nats://`, `tls://` or `host:port`).
    pub urls: Vec<String>,
    /// `out`: topics whose entries go into JetStream.
    pub out: Vec<crate::entry::TopicName>,
    /// `stream`: the stream they go into.
    pub stream: String,
    /// `subject_prefix`: their subjects are `<subject_prefix>.<topic>.<origin>`.
    pub subject_prefix: String,
    /// `in`: topics that take messages from JetStream.
    pub inbound: Vec<crate::entry::TopicName>,
    /// `in_stream`: the stream those messages are read from.
    pub in_stream: String,
    /// `in_prefix`: their subjects are `<in_prefix>.<topic>` or `<in_prefix>.<topic>.<edge>`.
    pub in_prefix: String,
    /// `create_streams`: create missing streams (with `replicas` and `duplicate_window`).
    pub create_streams: bool,
    /// `replicas`, of a stream the bridge creates.
    pub replicas: usize,
    /// `duplicate_window`, of a stream the bridge creates.
    pub duplicate_window: Duration,
    /// `in_flight`: publishes awaiting JetStream's acknowledgement at most.
    pub in_flight: usize,
    /// `user` and `password`.
    pub user: Option<(String, String)>,
    /// `token`.
    pub token: Option<String>,
    /// `nkey_seed_file`: a file holding an NKey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// `creds_file`: a NATS credentials file (JWT and seed).
    pub creds_file: Option<PathBuf>,
    /// `tls_ca_file`: the CA to check the servers' certificates with.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_cert_file` and `tls_key_file`: this node's client certificate.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// `backbone` (core): share this core's topics and fleet with the other cores of the
    /// HQ through JetStream ([`crate::bridge::backbone`]).
    pub backbone: bool,
    /// `backbone_stream`: the stream of the HQ's entries (`<backbone_stream>_FLEET`: of
    /// its fleet decisions).
    pub backbone_stream: String,
    /// `backbone_prefix`: entries on `<backbone_prefix>.<topic>.<origin>`, fleet
    /// decisions on `<backbone_prefix>-fleet.<edge>.<core>`.
    pub backbone_prefix: String,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            urls: Vec::new(),
            out: Vec::new(),
            stream: "TETHER".to_owned(),
            subject_prefix: "tether".to_owned(),
            inbound: Vec::new(),
            in_stream: "TETHER_IN".to_owned(),
            in_prefix: "tether-in".to_owned(),
            create_streams: true,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            in_flight: 256,
            user: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca_file: None,
            tls_client: None,
            backbone: false,
            backbone_stream: "TETHER_BACKBONE".to_owned(),
            backbone_prefix: "tether-bb".to_owned(),
        }
    }
}

impl BridgeSettings {
    /// Whether the bridge runs.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Whether this core shares a backbone with the HQ's other cores.
    pub fn backbone(&self) -> bool {
        self.enabled() && self.backbone
    }
}

/// The `[http]` section (each key's help: see [`Config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// `listen`: by default 127.0.0.1:8080 at the core, 127.0.0.1:8081 at an edge (both
    /// on one machine for the demo).
    pub listen: SocketAddr,
    /// `token`: requests carry it as `Authorization: Bearer <token>`. `None`: no token,
    /// which only a listener on loopback may have (or one with
    /// [`HttpSettings::insecure_no_token`]).
    pub token: Option<String>,
    /// `read_token`; needs [`HttpSettings::token`].
    pub read_token: Option<String>,
    /// `insecure_no_token`: logged loudly at start.
    pub insecure_no_token: bool,
    /// `hosts`: lowercased, without ports.
    pub hosts: Vec<String>,
}

impl Config {
    /// The defaults for a node of this role and the application `A`: a local demo with
    /// the application's topics ([`App::topics`], [`App::writers`]) and settings.
    pub fn default_with<A: App>(role: Role) -> (Config, A) {
        let config = Config {
            topics: A::topics(role),
            writers: A::writers(),
            ..Config::default_for(role)
        };
        (config, A::default_for(role))
    }

    /// The framework's defaults for a node of this role, with no topic: a local demo
    /// (core: `hq`; edge: `alpha`).
    pub fn default_for(role: Role) -> Config {
        let name = match role {
            Role::Core => "hq",
            Role::Edge => "alpha",
        };
        let name = NodeName::new(name).expect("the default node names are valid");
        let data_dir = default_data_dir(&name);
        let hq = NodeName::new("hq").expect("the default node names are valid");
        let alpha = NodeName::new("alpha").expect("the default node names are valid");
        Config {
            role,
            link: LinkSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
                edges: vec![alpha],
                allow_any_edge: false,
                core: "127.0.0.1:7000".to_owned(),
                core_name: hq,
                failover: Vec::new(),
                certs_dir: None,
                demo_certs: true,
                keep_alive: tls::KEEP_ALIVE_INTERVAL,
                idle_timeout: tls::IDLE_TIMEOUT,
                relay: Some(RELAY_DEFAULT),
                allowance: ALLOWANCE_DEFAULT,
            },
            mirror: MirrorConfig::default(),
            bridge: BridgeSettings::default(),
            http: HttpSettings {
                listen: match role {
                    Role::Core => SocketAddr::from(([127, 0, 0, 1], 8080)),
                    Role::Edge => SocketAddr::from(([127, 0, 0, 1], 8081)),
                },
                token: None,
                read_token: None,
                insecure_no_token: false,
                hosts: Vec::new(),
            },
            node: NodeSettings { data_dir, name },
            log: LogSettings {
                format: LogFormat::Text,
                filter: "info".to_owned(),
            },
            store: StoreSettings {
                max_entry_bytes: 1 << 20,
                disk_budget: None,
                min_free: crate::log::MIN_FREE,
                cache_bytes: 32 << 20,
                retention_interval: Duration::from_secs(10),
            },
            topics: Vec::new(),
            writers: Writers::default(),
            priorities: Priorities::default(),
            latest_value: Vec::new(),
        }
    }

    /// The store's directory: `<data_dir>/store`.
    pub fn store_dir(&self) -> PathBuf {
        self.node.data_dir.join("store")
    }

    /// The certificates directory: `link.certs_dir`, by default `<data_dir>/certs`.
    pub fn certs_dir(&self) -> PathBuf {
        match &self.link.certs_dir {
            Some(dir) => dir.clone(),
            None => self.node.data_dir.join("certs"),
        }
    }

    /// The core's mission volume: `mirror.volume`, by default `<data_dir>/volume`.
    pub fn volume_dir(&self) -> PathBuf {
        match &self.mirror.volume {
            Some(dir) => dir.clone(),
            None => self.node.data_dir.join("volume"),
        }
    }

    /// The edge's mirror directory: `mirror.dir`, by default `<data_dir>/mirror`.
    pub fn mirror_dir(&self) -> PathBuf {
        match &self.mirror.dir {
            Some(dir) => dir.clone(),
            None => self.node.data_dir.join("mirror"),
        }
    }

    /// The log store's settings, for [`crate::log::Store::open`].
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            max_entry_bytes: self.store.max_entry_bytes,
            disk_budget: match self.store.disk_budget {
                Some(0) => None,
                Some(budget) => Some(budget),
                None => crate::log::default_budget(&self.store_dir()),
            },
            min_free: self.store.min_free,
            cache_bytes: self.store.cache_bytes,
            ..StoreConfig::new(self.node.name.clone())
        }
    }

    /// Which edges a core accepts: [`Allowed::AnyEdge`] if `allow_any_edge`, else
    /// `edges`.
    pub fn allowed_edges(&self) -> Allowed {
        if self.link.allow_any_edge {
            Allowed::AnyEdge
        } else {
            Allowed::List(self.link.edges.clone())
        }
    }
}

impl LinkSettings {
    /// The link's `keep_alive` and `idle_timeout`, for [`tls::transport_config`].
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            keep_alive: self.keep_alive,
            idle_timeout: self.idle_timeout,
        }
    }
}

impl LogFormat {
    /// The name used in the config file: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `data/<name>`.
pub(super) fn default_data_dir(name: &NodeName) -> PathBuf {
    Path::new("data").join(name.as_str())
}

/// The sections of the config file and their keys, in the order `--print-config` writes
/// them, each with its help: the one description of every key, which the printer writes
/// above it as comment lines and the fields of [`Config`] point to.
pub(super) const SECTIONS: &[Section] = &[
    Section {
        name: "node",
        keys: &[
            Key::both(
                "name",
                &["The node's name, 1 to 63 of a-z, 0-9 and '-': the origin of its entries everywhere."],
            ),
            Key::both(
                "data_dir",
                &[
                    "Where the node keeps its data (the store is in <data_dir>/store). A relative path",
                    "starts at the working directory. Default: \"data/<name>\".",
                ],
            ),
        ],
    },
    Section {
        name: "log",
        keys: &[
            Key::both("format", &["\"text\" for people, \"json\" for log collectors."]),
            Key::both(
                "filter",
                &[
                    "What to log, as a tracing filter directive: \"info\", \"protocol=debug,info\".",
                    "RUST_LOG overrides it.",
                ],
            ),
        ],
    },
    Section {
        name: "store",
        keys: &[
            Key::both(
                "max_entry_bytes",
                &["Largest entry a producer or a peer may append; larger ones are refused."],
            ),
            Key::both(
                "disk_budget",
                &[
                    "Total entry bytes the node may hold. Past it, retention removes the oldest entries",
                    "even if a peer has not received them, and records a gap. Left out: a third of the",
                    "disk's room for the store when the node starts (free space and what the store",
                    "holds; the store takes about twice its entry bytes on disk). 0: no budget.",
                ],
            ),
            Key::both(
                "min_free",
                &[
                    "Free disk space the store leaves: under it, appends (and entries from peers) are",
                    "refused with a clear error until space is freed; reads, links and retention go on.",
                    "0: no minimum.",
                ],
            ),
            Key::both(
                "cache_bytes",
                &["sled's page cache: more is faster reads and more resident memory."],
            ),
            Key::both(
                "retention_interval",
                &["How often retention runs (each topic's max_age, max_bytes and max_entries)."],
            ),
        ],
    },
    Section {
        name: "link",
        keys: &[
            Key::core(
                "listen",
                &[
                    "The UDP address this core listens on for its edges' QUIC connections",
                    "(\"0.0.0.0:7000\": every interface).",
                ],
            ),
            Key::core(
                "edges",
                &[
                    "The edges that may connect, by node name. Each must also present a certificate from",
                    "the mission CA that names it.",
                ],
            ),
            Key::core(
                "allow_any_edge",
                &["Accept any edge the mission CA issued a certificate to, listed or not."],
            ),
            Key::core(
                "relay_rate",
                &[
                    "What this core relays from one edge to the others (its entries of \"all\" topics), per",
                    "second, so that one edge cannot fill every other edge's slow link: entry bytes (a",
                    "size) and entries, each 0 for no limit, with a burst of relay_burst at full speed.",
                    "Past it, the core takes that edge's entries only as fast as the quota allows.",
                ],
            ),
            Key::core("relay_entries", SEE_ABOVE),
            Key::core("relay_burst", SEE_ABOVE),
            Key::core(
                "allowance_age",
                &[
                    "How long this core keeps entries for an edge that is away, and how many bytes of",
                    "them (allowance_bytes, 0 for no limit). Past either, it stops keeping them for that",
                    "edge (it is released) and the edge is told of the gap when it returns.",
                ],
            ),
            Key::core("allowance_bytes", SEE_ABOVE),
            Key::edge(
                "core",
                &[
                    "The core's address, host:port (UDP); the host is a name or an IP address",
                    "(IPv6 in brackets). A name is resolved again at each dial.",
                ],
            ),
            Key::edge(
                "core_name",
                &["The core's node name: the certificate the core presents must name it."],
            ),
            Key::edge(
                "failover",
                &[
                    "Other cores of the same HQ (sharing a NATS backbone), as name@host:port: when",
                    "the core in use stops answering, the edge dials the next one and resumes.",
                ],
            ),
            Key::both(
                "certs_dir",
                &[
                    "This node's certificate and key (<name>.pem, <name>.key) and the mission CA's",
                    "certificate (ca.pem); on the core also the CA's key (ca.key). `core-node certs init`",
                    "and `core-node certs issue <edge>` make them. Default: \"<data_dir>/certs\".",
                ],
            ),
            Key::both(
                "demo_certs",
                &[
                    "For a demo: at start, create what is missing in certs_dir (a CA if there is none,",
                    "this node's certificate, and on the core those of its edges). The nodes still",
                    "authenticate each other. Set it to false in production: a node then refuses to start",
                    "without its files.",
                ],
            )
            .with_edge_note(&[
                "An edge cannot issue its own certificate without the CA's key: for a demo on one",
                "machine, point certs_dir at the core's (\"data/hq/certs\"); alone, it makes a CA",
                "of its own, which the core does not trust.",
            ]),
            Key::both(
                "keep_alive",
                &[
                    "How often this node pings a quiet link, to keep NAT and conntrack state alive (Linux",
                    "forgets an idle UDP flow after 30 s, home NATs often too); a ping is ~50 bytes.",
                    "1s to 10m.",
                ],
            ),
            Key::both(
                "idle_timeout",
                &[
                    "A link with no packet from the peer for this long is dead: it is closed and the edge",
                    "redials. Longer rides out slow round trips and fades (the default: a 5 s round trip,",
                    "a fade of ~45 s); a link that did die is noticed only after it. The smaller of both",
                    "sides' values applies. 5s to 1h, and at least twice keep_alive.",
                ],
            ),
        ],
    },
    Section {
        name: "mirror",
        keys: &[
            Key::core(
                "volume",
                &[
                    "The mission volume served to the edges' mirrors; it is watched, so a mirror",
                    "with no change costs almost nothing. Default: \"<data_dir>/volume\".",
                ],
            ),
            Key::edge(
                "dir",
                &[
                    "Where the mirror of the core's volume is kept; readers use <dir>/current.",
                    "A mirror runs only when an operator starts it. Default: \"<data_dir>/mirror\".",
                ],
            ),
            Key::both(
                "max_rate",
                &[
                    "Cap on mirror bytes per second (the lower of the core's and the edge's applies).",
                    "Left out: no cap; mirrors always yield to entries and control anyway.",
                ],
            ),
        ],
    },
    Section {
        name: "http",
        keys: &[
            Key::both(
                "listen",
                &[
                    "Where the node serves its HTTP API, page and files. 127.0.0.1: this machine only;",
                    "any other address needs a token.",
                ],
            ),
            Key::both(
                "token",
                &[
                    "The operator's bearer token: every request but /healthz and /readyz needs it (or the",
                    "page's sign-in with it). Best set from the environment: TETHER_HTTP__TOKEN.",
                ],
            ),
            Key::both(
                "read_token",
                &["A token that reads but changes nothing (dashboards, Prometheus): TETHER_HTTP__READ_TOKEN."],
            ),
            Key::both(
                "insecure_no_token",
                &["Labs only: serve beyond loopback with no token, open to anyone on the network."],
            ),
            Key::both(
                "hosts",
                &[
                    "Host names this node answers to besides IP addresses and localhost (an Ingress",
                    "host, a Service name); a request naming another host is refused (DNS rebinding).",
                ],
            ),
        ],
    },
    Section {
        name: "bridge",
        keys: &[
            Key::both(
                "urls",
                &[
                    "NATS servers to bridge topics with JetStream (nats://host:4222, tls://...).",
                    "Left empty: no bridge. Each entry lands exactly once, in order per origin.",
                ],
            ),
            Key::both(
                "out",
                &["Topics whose entries go into JetStream, as <subject_prefix>.<topic>.<origin>."],
            ),
            Key::both("stream", &["The JetStream stream they go into."]),
            Key::both("subject_prefix", SEE_ABOVE),
            Key::both(
                "in",
                &[
                    "Topics that take messages from JetStream: a message on <in_prefix>.<topic> is",
                    "appended for everyone, on <in_prefix>.<topic>.<edge> for that edge alone; it is",
                    "acknowledged to NATS once it is durable here.",
                ],
            ),
            Key::both("in_stream", &["The JetStream stream those messages are read from."]),
            Key::both("in_prefix", SEE_ABOVE),
            Key::both(
                "create_streams",
                &[
                    "Create a missing stream (file storage), with these replicas and duplicate window.",
                    "false: the streams must exist (an operator made them).",
                ],
            ),
            Key::both("replicas", SEE_ABOVE),
            Key::both("duplicate_window", SEE_ABOVE),
            Key::both(
                "in_flight",
                &["Publishes awaiting JetStream's acknowledgement at most (the pipeline's depth)."],
            ),
            Key::both(
                "user",
                &[
                    "Credentials, one kind at most: user and password, a token, an NKey seed file",
                    "or a credentials file. Secrets are best set from the environment",
                    "(TETHER_BRIDGE__PASSWORD, TETHER_BRIDGE__TOKEN).",
                ],
            ),
            Key::both("password", SEE_ABOVE),
            Key::both("token", SEE_ABOVE),
            Key::both("nkey_seed_file", SEE_ABOVE),
            Key::both("creds_file", SEE_ABOVE),
            Key::both(
                "tls_ca_file",
                &["TLS to NATS: the CA that signed the servers' certificates (PEM)."],
            ),
            Key::both(
                "tls_cert_file",
                &["This node's client certificate and key (PEM), if the servers ask for one."],
            ),
            Key::both("tls_key_file", SEE_ABOVE),
            Key::core(
                "backbone",
                &[
                    "An HQ on several machines: every core with backbone = true shares its entries",
                    "(each once, in order per origin) and its fleet decisions with the others",
                    "through these streams, and acknowledges an edge's entries only once JetStream",
                    "holds them. Give the cores' NATS user alone the right to publish there.",
                ],
            ),
            Key::core("backbone_stream", SEE_ABOVE),
            Key::core("backbone_prefix", SEE_ABOVE),
        ],
    },
];

/// The help of `[[topics]]`, written above the list (the topics' keys share it).
pub(super) const TOPICS_HELP: &[&str] = &[
    "The topics this node holds; listing any replaces the default list. scope: \"local\"",
    "never leaves the node, \"core\" is stored at the core, \"all\" on every node that",
    "subscribes. Retention (max_age, max_bytes, max_entries): left out, no such limit.",
    "writers (read by the core): who besides the core may write the topic: \"any\" edge",
    "(left out), \"core\" alone, or a list of edge names; the core takes no other edge's.",
    "priority: \"urgent\", \"normal\" (left out) or \"bulk\": on a link, each class has an",
    "entry stream of its own, and a class never waits behind a lower one.",
    "latest_value = true: of the entries waiting to cross a link, only the latest per origin",
    "and key is sent (positions, states); readers here still see every entry.",
];

/// The help of a key that the help of the key above it describes too.
pub const SEE_ABOVE: &[&str] = &[];

/// A section of the config file, `[name]`, and its keys: the framework's (`node`, `log`,
/// `store`, `link`, `mirror`, `http`, `bridge`) or an application's ([`App::SECTIONS`]).
#[derive(Debug)]
pub struct Section {
    /// Its name: `[name]` in the file, `TETHER_<NAME>__<KEY>` in the environment.
    pub name: &'static str,
    /// Its keys, in the order they are printed.
    pub keys: &'static [Key],
}

/// A key of the config file: whose it is, and its help.
#[derive(Debug)]
pub struct Key {
    /// Its name in its section.
    pub name: &'static str,
    /// The role whose file has it; `None`: both. The other role's check refuses it.
    pub role: Option<Role>,
    /// What it means, a comment line each; none when the key above describes it too.
    pub help: &'static [&'static str],
    /// More help, for an edge's file only.
    pub edge_note: &'static [&'static str],
}

impl Key {
    /// A key of both roles' files, with its help (a comment line each; [`SEE_ABOVE`]).
    pub const fn both(name: &'static str, help: &'static [&'static str]) -> Key {
        Key {
            name,
            role: None,
            help,
            edge_note: &[],
        }
    }

    /// A key of the core's file only.
    pub const fn core(name: &'static str, help: &'static [&'static str]) -> Key {
        Key {
            role: Some(Role::Core),
            ..Key::both(name, help)
        }
    }

    /// A key of an edge's file only.
    pub const fn edge(name: &'static str, help: &'static [&'static str]) -> Key {
        Key {
            role: Some(Role::Edge),
            ..Key::both(name, help)
        }
    }

    /// The key with more help, printed in an edge's file only.
    pub const fn with_edge_note(self, edge_note: &'static [&'static str]) -> Key {
        Key { edge_note, ..self }
    }

    /// Whether a file of this role has the key.
    pub(super) fn applies_to(&self, role: Role) -> bool {
        self.role.is_none_or(|r| r == role)
    }

    /// The help lines a file of this role has above the key.
    pub(super) fn help_for(&self, role: Role) -> impl Iterator<Item = &'static str> {
        let note = if role == Role::Edge {
            self.edge_note
        } else {
            &[]
        };
        self.help.iter().chain(note).copied()
    }
}
