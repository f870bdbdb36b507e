//! The checked configuration: [`Config`] and its sections, and each role's defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::entry::{NodeName, Retention, Scope, TopicConfig, TopicName};
use crate::ip_range::IpRange;
use crate::link::RelayLimit;
use crate::log::StoreConfig;
use crate::replication::{Writer, Writers};
use crate::role::Role;
use crate::tls::{self, Allowed, Timeouts};

/// A node's checked configuration. [`Config::default_for`] is the local demo setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The kind of node this config is for (not a key: the binary decides it). It picks
    /// the defaults and which `[link]` keys apply.
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
    /// `[pipeline]`: the mission pipeline's services.
    pub pipeline: PipelineSettings,
    /// `[[topics]]`: the topics the node creates (or updates) at start.
    pub topics: Vec<TopicConfig>,
    /// `[[topics]] writers`: at the core, which edges may write each topic.
    pub writers: Writers,
}

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The node's name; it is the origin of every entry this node appends.
    pub name: NodeName,
    /// Where the node keeps its data; the store is in `<data_dir>/store`. A relative path
    /// starts at the working directory. Default: `data/<name>`.
    pub data_dir: PathBuf,
}

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Text for people or JSON for log collectors.
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive, such as `info` or `protocol=debug,info`.
    /// `RUST_LOG` overrides it.
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

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Largest entry a producer or a peer may append, in bytes; larger ones are refused.
    pub max_entry_bytes: u64,
    /// Total entry bytes the node may hold. Past it, retention removes the oldest entries
    /// even if a peer has not received them, and records a gap. `None`: no budget.
    pub disk_budget: Option<u64>,
    /// sled's page cache, in bytes: more is faster reads and more resident memory.
    pub cache_bytes: u64,
    /// How often retention runs. Shorter frees space sooner and costs more idle work.
    pub retention_interval: Duration,
}

/// The `[link]` section. A core uses `listen`, `edges` and `allow_any_edge`; an edge uses
/// `core` and `core_name`; the keys of the other role keep their defaults (setting one is
/// an error). Both use the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Core: the UDP address it listens on for its edges.
    pub listen: SocketAddr,
    /// Core: the edges that may connect, by node name (each also needs a certificate from
    /// the mission CA naming it). No duplicates, not the core's own name.
    pub edges: Vec<NodeName>,
    /// Core: accept any edge the mission CA issued a certificate to, listed or not.
    pub allow_any_edge: bool,
    /// Edge: the core's address, `host:port`, the host a DNS name or an IP address
    /// (IPv6 in brackets); resolved at each dial.
    pub core: String,
    /// Edge: the core's node name; the core's certificate must name it.
    pub core_name: NodeName,
    /// The node's certificate and key (`<name>.pem`, `<name>.key`) and the mission CA's
    /// certificate (`ca.pem`); on the core also the CA's key. `None`: `<data_dir>/certs`,
    /// following the data directory; [`Config::certs_dir`] resolves it.
    pub certs_dir: Option<PathBuf>,
    /// For a demo: at start, create what is missing in `certs_dir` (see
    /// [`crate::tls::ensure_demo_files`]). Nodes still authenticate each other.
    pub demo_certs: bool,
    /// How often this node pings a link with nothing to send, to keep NAT and conntrack
    /// state alive: Linux forgets an idle UDP flow after 30 s (120 s once it has seen
    /// replies), home NATs often after 30 s. Each ping costs a ~50-byte packet and its
    /// ack. Default [`tls::KEEP_ALIVE_INTERVAL`] (15 s); 1 s to 10 min
    /// ([`tls::KEEP_ALIVE_RANGE`]).
    pub keep_alive: Duration,
    /// A link on which no packet arrived for this long is dead and is closed (then the
    /// edge redials). Longer rides out slow round trips and fades (the default, four
    /// keep-alives, takes a 5-second round trip or a fade of up to ~45 s); the price is
    /// that a link that did die is noticed only after it. The smaller of the two sides'
    /// values applies. Default [`tls::IDLE_TIMEOUT`] (60 s); 5 s to 1 h
    /// ([`tls::IDLE_TIMEOUT_RANGE`]), and at least twice `keep_alive`, or a healthy idle
    /// link would time out between two keep-alives.
    pub idle_timeout: Duration,
    /// Core: what it relays from one edge to the others (`relay_rate`, `relay_entries`,
    /// `relay_burst`), so that one edge cannot fill every other edge's slow link; past
    /// it, that edge's entries are taken only as fast as the quota allows (its backlog
    /// waits on its own disk). `None`: no limit (both rates 0).
    pub relay: Option<RelayLimit>,
}

/// The default relay quota per edge: 4 KiB of entries a second (~1.4 KiB/s on the wire
/// for JSON, a sixth of a 64 kbit/s radio), 50 entries a second, a minute's burst.
pub const RELAY_DEFAULT: RelayLimit = RelayLimit {
    bytes_per_s: 4 << 10,
    entries_per_s: 50,
    burst: Duration::from_secs(60),
};

/// The `[mirror]` section. A core uses `volume`, an edge `dir`; both `max_rate`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorConfig {
    /// Core: the mission volume it serves to its edges' mirrors. `None`:
    /// `<data_dir>/volume`; [`Config::volume_dir`] resolves it.
    pub volume: Option<PathBuf>,
    /// Edge: where it keeps its mirror (readers use `<dir>/current`). `None`:
    /// `<data_dir>/mirror`; [`Config::mirror_dir`] resolves it.
    pub dir: Option<PathBuf>,
    /// Cap on mirror chunk bytes per second (the lower of the core's and the edge's
    /// applies). `None`: no cap (the mirror still yields to entries).
    pub max_rate: Option<u64>,
}

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where the node serves its HTTP API, page and files. Default: 127.0.0.1:8080 at
    /// the core, 127.0.0.1:8081 at an edge (both on one machine for the demo).
    pub listen: SocketAddr,
    /// The operator's bearer token: with it, every request but the probes (`/healthz`,
    /// `/readyz`) must carry it (`Authorization: Bearer <token>`) or the session cookie
    /// the page gets by signing in with it. `None`: no token, which only a listener on
    /// loopback may have (or one with [`HttpSettings::insecure_no_token`]). Best set from
    /// the environment (`TETHER_HTTP__TOKEN`), out of the config file.
    pub token: Option<String>,
    /// A second token that reads but never changes anything: for dashboards and
    /// Prometheus (`TETHER_HTTP__READ_TOKEN`). Needs [`HttpSettings::token`].
    pub read_token: Option<String>,
    /// Serve a listener that is not on loopback with no token: anyone who reaches the
    /// port reads and changes everything. For labs only; logged loudly at start.
    pub insecure_no_token: bool,
    /// Host names the node answers to, besides IP addresses and `localhost`: the names
    /// people and proxies reach it by (an Ingress host, a Service name). A request whose
    /// `Host` is any other name is refused, so that a web page cannot rebind its own
    /// name to the node's address (DNS rebinding) and act as if it were the node's page.
    pub hosts: Vec<String>,
}

/// The `[pipeline]` section: the mission pipeline's services (DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// Core: the feed document, a path or an http(s) URL in the NASA Image and Video
    /// Library format. `None`: the built-in demo feed, served by the core itself.
    pub feed: Option<String>,
    /// Core: how often the feed service picks new items.
    pub feed_every: Duration,
    /// Core: how many new items it picks each time.
    pub feed_batch: u32,
    /// Core: the largest image a download may fetch.
    pub max_download_bytes: u64,
    /// Core: how long one download may take.
    pub download_timeout: Duration,
    /// Core: addresses and ranges a feed item's download may connect to although they
    /// are internal (loopback, private, link-local, multicast, ...), which the downloader
    /// otherwise refuses. Empty by default; HQ's own HTTP address is always allowed (the
    /// demo feed's images are served there).
    pub download_allow: Vec<IpRange>,
    /// Whether every service starts the first time a node starts (afterwards a node
    /// remembers which services an operator left running).
    pub start_services: bool,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            feed: None,
            feed_every: Duration::from_secs(10),
            feed_batch: 2,
            max_download_bytes: 50 << 20,
            download_timeout: Duration::from_secs(60),
            download_allow: Vec::new(),
            start_services: true,
        }
    }
}

impl Config {
    /// The defaults for a node of this role: a local demo with the mission pipeline's
    /// topics (core: `hq`; edge: `alpha`).
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
                certs_dir: None,
                demo_certs: true,
                keep_alive: tls::KEEP_ALIVE_INTERVAL,
                idle_timeout: tls::IDLE_TIMEOUT,
                relay: Some(RELAY_DEFAULT),
            },
            mirror: MirrorConfig::default(),
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
            pipeline: PipelineSettings::default(),
            node: NodeSettings { data_dir, name },
            log: LogSettings {
                format: LogFormat::Text,
                filter: "info".to_owned(),
            },
            store: StoreSettings {
                max_entry_bytes: 1 << 20,
                disk_budget: None,
                cache_bytes: 32 << 20,
                retention_interval: Duration::from_secs(10),
            },
            topics: default_topics(role),
            writers: default_writers(),
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

    /// Where the core keeps downloaded images: `<data_dir>/downloads`.
    pub fn downloads_dir(&self) -> PathBuf {
        self.node.data_dir.join("downloads")
    }

    /// The core's ingest directory, watched for files to turn into assets:
    /// `<data_dir>/ingest`.
    pub fn ingest_dir(&self) -> PathBuf {
        self.node.data_dir.join("ingest")
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
            disk_budget: self.store.disk_budget,
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

/// The mission pipeline's topics (DESIGN.md, "The mission pipeline") as each role holds them.
fn default_topics(role: Role) -> Vec<TopicConfig> {
    const DAY: u64 = 24 * 60 * 60;
    let topic = |name: &str, scope, days| TopicConfig {
        name: TopicName::new(name).expect("the default topic names are valid"),
        scope,
        retention: Retention {
            max_age: Some(Duration::from_secs(days * DAY)),
            ..Retention::default()
        },
    };
    // The core's internal pipeline steps are worth a week; what crosses the link is kept
    // a month, so that an edge that was away for weeks still finds it.
    let mut topics = match role {
        Role::Core => vec![
            topic("IMAGE_FEED", Scope::Local, 7),
            topic("IMAGE_DOWNLOAD", Scope::Local, 7),
        ],
        Role::Edge => Vec::new(),
    };
    topics.extend([
        // The operators' own messages (the CLI's and the API's `publish`): every node.
        topic("MESSAGES", Scope::All, 30),
        topic("ASSET_BROADCAST", Scope::All, 30),
        topic("ASSET_REQUEST", Scope::Core, 30),
        topic("ASSET_RESPONSE", Scope::All, 30),
    ]);
    topics
}

/// Who writes the default topics: HQ alone broadcasts assets and answers requests.
fn default_writers() -> Writers {
    let core_only = |name: &str| {
        let name = TopicName::new(name).expect("the default topic names are valid");
        (name, Writer::Edges(Vec::new()))
    };
    Writers(vec![
        core_only("ASSET_BROADCAST"),
        core_only("ASSET_RESPONSE"),
    ])
}
