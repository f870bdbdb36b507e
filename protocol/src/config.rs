//! A node's configuration: one TOML file, environment overrides, and the checked result.
//!
//! Loading goes in three steps ([`Config::load`]):
//! 1. the file (if any) is parsed as it is written, so that a syntax error, an unknown key
//!    or a value of the wrong type is reported with its line, its column and the file;
//! 2. each environment variable `TETHER_<SECTION>__<KEY>` replaces one key (for example
//!    `TETHER_NODE__NAME=bravo`, `TETHER_STORE__DISK_BUDGET=10GiB`,
//!    `TETHER_LINK__EDGES=alpha,bravo`); the value is read as a TOML value if it is one,
//!    else as a string. Variables without `__` are ignored. Topics cannot be set from the
//!    environment;
//! 3. the result is checked and converted into [`Config`]: names, sizes, durations, no
//!    duplicate topic, the `[link]` keys of the node's role only (a core listens, an edge
//!    dials). Errors name the key (`topics[2].name`, counted from 0) and where it came
//!    from (the file or the variable).
//!
//! Keys left out take the defaults of the node's [`Role`]; a file that lists `[[topics]]`
//! replaces the default list. Sizes are bytes, as an integer or a string with a unit
//! (`"512KiB"`, `"64MiB"`, `"10GB"`); durations are strings with a unit (`"500ms"`,
//! `"10s"`, `"30m"`, `"12h"`, `"7d"`).
//!
//! IO: [`Config::load`] reads the file it is given and the process environment.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
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

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "TETHER_";

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

/// Why a config could not be loaded. Each names the file, variable or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {}: {}", path.display(), source.to_string().trim_end())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's error: it shows the line, the column and the offending text.
        source: toml::de::Error,
    },
    /// An environment variable could not be applied to the config.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable, such as `TETHER_NODE__NAME`.
        var: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is malformed or out of range.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// Where the value came from.
        origin: Origin,
        /// The key, such as `store.max_entry_bytes` or `topics[2].name`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a config value came from, to name it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in defaults.
    Default,
    /// The config file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
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

    /// Loads the config of a node of this role: the defaults, the file at `path` if one
    /// is given, then the `TETHER_<SECTION>__<KEY>` environment variables.
    pub fn load(role: Role, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Some((path, text))
            }
            None => None,
        };
        let mut env = Vec::new();
        for (var, value) in std::env::vars_os() {
            // A variable whose name is not Unicode cannot be one of ours.
            let Some(var) = var
                .to_str()
                .filter(|v| v.starts_with(ENV_PREFIX) && v.contains("__"))
            else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Env {
                var: var.to_owned(),
                reason: "the value is not valid Unicode".to_owned(),
            })?;
            env.push((var.to_owned(), value));
        }
        env.sort();
        Config::from_sources(role, file.as_ref().map(|(p, t)| (*p, t.as_str())), &env)
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

    /// The config as a commented TOML file, as `--print-config` prints it. Loading the
    /// text back (for the same role) gives this config again.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_toml(&mut out);
        out
    }

    fn write_toml(&self, out: &mut String) -> fmt::Result {
        let Config {
            role: _,
            node,
            log,
            store,
            link,
            mirror,
            http,
            pipeline,
            topics,
            writers: _,
        } = self;
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        out.push_str(
            r#"# Tether node configuration.
#
# Every key of [node], [log], [store], [link], [mirror], [http] and [pipeline] may be
# overridden by an environment variable TETHER_<SECTION>__<KEY>, such as
# TETHER_NODE__NAME=bravo, TETHER_STORE__DISK_BUDGET=10GiB or
# TETHER_LINK__EDGES=alpha,bravo. Topics are set in this file only.
# Sizes are bytes, as an integer or a string with a unit: "512KiB", "64MiB", "10GB".
# Durations are strings with a unit: "500ms", "10s", "30m", "12h", "7d".
"#,
        );
        if topics.is_empty() {
            out.push_str("\n# This node holds no topics (without this key: the defaults).\n");
            out.push_str("topics = []\n");
        }
        // The default data directory stays a comment, so that it follows a changed name.
        let data_dir = text(&node.data_dir.to_string_lossy());
        let data_dir = if node.data_dir == default_data_dir(&node.name) {
            format!("# data_dir = {data_dir}")
        } else {
            format!("data_dir = {data_dir}")
        };
        let disk_budget = match store.disk_budget {
            Some(budget) => format!("disk_budget = {}", size_value(budget)),
            None => "# disk_budget = \"10GiB\"".to_owned(),
        };
        write!(
            out,
            r#"
[node]
# The node's name, 1 to 63 of a-z, 0-9 and '-': the origin of its entries everywhere.
name = {name}
# Where the node keeps its data (the store is in <data_dir>/store). A relative path
# starts at the working directory. Default: "data/<name>".
{data_dir}

[log]
# "text" for people, "json" for log collectors.
format = {format}
# What to log, as a tracing filter directive: "info", "protocol=debug,info".
# RUST_LOG overrides it.
filter = {filter}

[store]
# Largest entry a producer or a peer may append; larger ones are refused.
max_entry_bytes = {max_entry_bytes}
# Total entry bytes the node may hold. Past it, retention removes the oldest entries
# even if a peer has not received them, and records a gap. Left out: no budget.
{disk_budget}
# sled's page cache: more is faster reads and more resident memory.
cache_bytes = {cache_bytes}
# How often retention runs (each topic's max_age, max_bytes and max_entries).
retention_interval = {retention_interval}
"#,
            name = text(node.name.as_str()),
            format = text(log.format.as_str()),
            filter = text(&log.filter),
            max_entry_bytes = size_value(store.max_entry_bytes),
            cache_bytes = size_value(store.cache_bytes),
            retention_interval = text(&format_duration(store.retention_interval)),
        )?;
        self.write_link_toml(out, link)?;
        self.write_mirror_toml(out, mirror)?;
        writeln!(
            out,
            "\n[http]\n# Where the node serves its HTTP API, page and files. 127.0.0.1: this machine only;\n\
             # any other address needs a token.\n\
             listen = {}\n\
             # The operator's bearer token: every request but /healthz and /readyz needs it (or the\n\
             # page's session, signed in with it). Best set from the environment: TETHER_HTTP__TOKEN.\n\
             # token = \"...\"{}\n\
             # A token that reads but changes nothing (dashboards, Prometheus): TETHER_HTTP__READ_TOKEN.\n\
             # read_token = \"...\"{}\n\
             # Labs only: serve beyond loopback with no token, open to anyone on the network.\n\
             insecure_no_token = {}\n\
             # Host names this node answers to besides IP addresses and localhost (an Ingress\n\
             # host, a Service name); a request naming another host is refused (DNS rebinding).\n\
             hosts = {}",
            text(&http.listen.to_string()),
            if http.token.is_some() {
                " (a token is set; not shown)"
            } else {
                ""
            },
            if http.read_token.is_some() {
                " (a token is set; not shown)"
            } else {
                ""
            },
            http.insecure_no_token,
            toml::Value::Array(
                http.hosts
                    .iter()
                    .map(|h| toml::Value::String(h.clone()))
                    .collect()
            )
        )?;
        self.write_pipeline_toml(out, pipeline)?;
        if !topics.is_empty() {
            out.push_str(
                r#"
# The topics this node holds; listing any replaces the default list. scope: "local"
# never leaves the node, "core" is stored at the core, "all" on every node that
# subscribes. Retention (max_age, max_bytes, max_entries): left out, no such limit.
# writers (read by the core): who besides the core may write the topic: "any" edge
# (left out), "core" alone, or a list of edge names; the core takes no other edge's.
"#,
            );
        }
        for topic in topics {
            writeln!(out, "\n[[topics]]")?;
            writeln!(out, "name = {}", text(topic.name.as_str()))?;
            writeln!(out, "scope = {}", text(&topic.scope.to_string()))?;
            let Retention {
                max_age,
                max_bytes,
                max_entries,
            } = topic.retention;
            if let Some(age) = max_age {
                writeln!(out, "max_age = {}", text(&format_duration(age)))?;
            }
            if let Some(bytes) = max_bytes {
                writeln!(out, "max_bytes = {}", size_value(bytes))?;
            }
            if let Some(entries) = max_entries {
                // TOML integers are signed; no topic holds 2^63 entries.
                writeln!(
                    out,
                    "max_entries = {}",
                    i64::try_from(entries).unwrap_or(i64::MAX)
                )?;
            }
            match self.writers.0.iter().find(|(t, _)| *t == topic.name) {
                None | Some((_, Writer::AnyEdge)) => {}
                Some((_, Writer::Edges(edges))) if edges.is_empty() => {
                    writeln!(out, "writers = \"core\"")?;
                }
                Some((_, Writer::Edges(edges))) => {
                    let list: toml::Value = edges
                        .iter()
                        .map(|e| toml::Value::String(e.to_string()))
                        .collect::<Vec<_>>()
                        .into();
                    writeln!(out, "writers = {list}")?;
                }
            }
        }
        Ok(())
    }

    /// The `[link]` section: the keys of this node's role, then the shared ones.
    fn write_link_toml(&self, out: &mut String, link: &LinkSettings) -> fmt::Result {
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        out.push_str("\n[link]\n");
        if self.is_core() {
            let edges: toml::Value = link
                .edges
                .iter()
                .map(|edge| toml::Value::String(edge.to_string()))
                .collect::<Vec<_>>()
                .into();
            write!(
                out,
                r#"# The UDP address this core listens on for its edges' QUIC connections
# ("0.0.0.0:7000": every interface).
listen = {listen}
# The edges that may connect, by node name. Each must also present a certificate from
# the mission CA that names it.
edges = {edges}
# Accept any edge the mission CA issued a certificate to, listed or not.
allow_any_edge = {allow_any_edge}
# What this core relays from one edge to the others (its entries of "all" topics), per
# second, so that one edge cannot fill every other edge's slow link: entry bytes (a
# size) and entries, each 0 for no limit, with a burst of relay_burst at full speed.
# Past it, the core takes that edge's entries only as fast as the quota allows.
relay_rate = {relay_rate}
relay_entries = {relay_entries}
relay_burst = {relay_burst}
"#,
                listen = text(&link.listen.to_string()),
                allow_any_edge = link.allow_any_edge,
                relay_rate = link
                    .relay
                    .map_or(toml::Value::Integer(0), |r| size_value(r.bytes_per_s)),
                relay_entries = link
                    .relay
                    .map_or(0, |r| i64::try_from(r.entries_per_s).unwrap_or(i64::MAX)),
                relay_burst = text(&format_duration(
                    link.relay.map_or(RELAY_DEFAULT.burst, |r| r.burst)
                )),
            )?;
        } else {
            write!(
                out,
                r#"# The core's address, host:port (UDP); the host is a name or an IP address
# (IPv6 in brackets). A name is resolved again at each dial.
core = {core}
# The core's node name: the certificate the core presents must name it.
core_name = {core_name}
"#,
                core = text(&link.core),
                core_name = text(link.core_name.as_str()),
            )?;
        }
        let certs_dir = match &link.certs_dir {
            Some(dir) => format!("certs_dir = {}", text(&dir.to_string_lossy())),
            // The default stays a comment, so that it follows a changed data directory.
            None => format!(
                "# certs_dir = {}",
                text(&self.certs_dir().to_string_lossy())
            ),
        };
        let demo_note = if self.is_core() {
            ""
        } else {
            "\n# An edge cannot issue its own certificate without the CA's key: for a demo on one\n\
             # machine, point certs_dir at the core's (\"data/hq/certs\"); alone, it makes a CA\n\
             # of its own, which the core does not trust."
        };
        write!(
            out,
            r#"# This node's certificate and key (<name>.pem, <name>.key) and the mission CA's
# certificate (ca.pem); on the core also the CA's key (ca.key). `core-node certs init`
# and `core-node certs issue <edge>` make them. Default: "<data_dir>/certs".
{certs_dir}
# For a demo: at start, create what is missing in certs_dir (a CA if there is none,
# this node's certificate, and on the core those of its edges). The nodes still
# authenticate each other. Set it to false in production: a node then refuses to start
# without its files.{demo_note}
demo_certs = {demo_certs}
# How often this node pings a quiet link, to keep NAT and conntrack state alive (Linux
# forgets an idle UDP flow after 30 s, home NATs often too); a ping is ~50 bytes.
# 1s to 10m.
keep_alive = {keep_alive}
# A link with no packet from the peer for this long is dead: it is closed and the edge
# redials. Longer rides out slow round trips and fades (the default: a 5 s round trip,
# a fade of ~45 s); a link that did die is noticed only after it. The smaller of both
# sides' values applies. 5s to 1h, and at least twice keep_alive.
idle_timeout = {idle_timeout}
"#,
            demo_certs = link.demo_certs,
            keep_alive = text(&format_duration(link.keep_alive)),
            idle_timeout = text(&format_duration(link.idle_timeout)),
        )
    }

    /// The `[mirror]` section: the key of this node's role, then the shared one.
    fn write_mirror_toml(&self, out: &mut String, mirror: &MirrorConfig) -> fmt::Result {
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        out.push_str("\n[mirror]\n");
        // Defaults stay comments, so that they follow a changed data directory.
        let dir_line = |key: &str, set: &Option<PathBuf>, resolved: PathBuf| match set {
            Some(dir) => format!("{key} = {}", text(&dir.to_string_lossy())),
            None => format!("# {key} = {}", text(&resolved.to_string_lossy())),
        };
        if self.is_core() {
            writeln!(
                out,
                "# The mission volume served to the edges' mirrors; it is watched, so a mirror\n\
                 # with no change costs almost nothing. Default: \"<data_dir>/volume\".\n{}",
                dir_line("volume", &mirror.volume, self.volume_dir())
            )?;
        } else {
            writeln!(
                out,
                "# Where the mirror of the core's volume is kept; readers use <dir>/current.\n\
                 # A mirror runs only when an operator starts it. Default: \"<data_dir>/mirror\".\n{}",
                dir_line("dir", &mirror.dir, self.mirror_dir())
            )?;
        }
        let max_rate = match mirror.max_rate {
            Some(rate) => format!("max_rate = {}", size_value(rate)),
            None => "# max_rate = \"64KiB\"".to_owned(),
        };
        writeln!(
            out,
            "# Cap on mirror bytes per second (the lower of the core's and the edge's applies).\n\
             # Left out: no cap; mirrors always yield to entries and control anyway.\n{max_rate}"
        )
    }

    /// The `[pipeline]` section: the core's feed and download keys, then the shared one.
    fn write_pipeline_toml(&self, out: &mut String, pipeline: &PipelineSettings) -> fmt::Result {
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        out.push_str("\n[pipeline]\n");
        if self.is_core() {
            let feed = match &pipeline.feed {
                Some(feed) => format!("feed = {}", text(feed)),
                None => "# feed = \"https://images-api.nasa.gov/search?q=apollo&media_type=image\""
                    .to_owned(),
            };
            write!(
                out,
                r#"# The IMAGE feed document: a path or an http(s) URL, in the NASA Image and Video
# Library API format. Left out: the built-in demo feed, served by this node.
{feed}
# How often the feed service picks new items, and how many each time.
feed_every = {feed_every}
feed_batch = {feed_batch}
# Limits on one image download.
max_download_bytes = {max_download_bytes}
download_timeout = {download_timeout}
# A feed item's image is fetched over http(s) only, and never from an internal address
# (loopback, private, link-local, shared, multicast, broadcast, reserved; IPv6 forms
# that embed such an IPv4 address too), checked after DNS and at every redirect. The
# addresses ("10.0.0.7") and CIDR ranges ("10.0.0.0/8", "fd00::/8") listed here are
# allowed all the same. This node's own HTTP address is always allowed.
download_allow = {download_allow}
"#,
                feed_every = text(&format_duration(pipeline.feed_every)),
                feed_batch = pipeline.feed_batch,
                max_download_bytes = size_value(pipeline.max_download_bytes),
                download_timeout = text(&format_duration(pipeline.download_timeout)),
                download_allow = toml::Value::Array(
                    pipeline
                        .download_allow
                        .iter()
                        .map(|r| toml::Value::String(r.to_string()))
                        .collect()
                ),
            )?;
        }
        writeln!(
            out,
            "# Start every service the first time the node starts; afterwards the node\n\
             # remembers which services an operator left running.\n\
             start_services = {}",
            pipeline.start_services
        )
    }

    fn is_core(&self) -> bool {
        self.role == Role::Core
    }

    /// Loads from an optional `(path, text)` file and `(variable, value)` overrides.
    pub(crate) fn from_sources(
        role: Role,
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let (mut table, mut raw) = match file {
            Some((path, text)) => {
                let parse_error = |source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                };
                // Parsed once into the schema, so that errors point into the text, and
                // once as a plain table, for the overrides to edit.
                let raw: RawConfig = toml::from_str(text).map_err(parse_error)?;
                let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
                (table, raw)
            }
            None => (toml::Table::new(), RawConfig::default()),
        };
        let mut overrides = Vec::new();
        for (var, value) in env {
            let env_error = |reason: String| ConfigError::Env {
                var: var.clone(),
                reason,
            };
            let path = env_path(var).map_err(env_error)?;
            let parsed = toml_value(value);
            let is_string = matches!(parsed, toml::Value::String(_));
            let mut tried = table.clone();
            set_path(&mut tried, &path, parsed).map_err(env_error)?;
            raw = match deserialize(&tried) {
                Ok(raw) => {
                    table = tried;
                    raw
                }
                // `TETHER_NODE__NAME=7` reads as an integer: try it as the string it also is.
                Err(first) if !is_string => {
                    let mut tried = table.clone();
                    set_path(&mut tried, &path, toml::Value::String(value.clone()))
                        .map_err(env_error)?;
                    let raw = deserialize(&tried).map_err(|_| env_error(first))?;
                    table = tried;
                    raw
                }
                Err(reason) => return Err(env_error(reason)),
            };
            overrides.push((path.join("."), var.clone()));
        }
        let origins = Origins {
            file: file.map(|(path, _)| path.to_path_buf()),
            overrides,
        };
        raw.check(role, &origins)
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

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default config"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// `data/<name>`.
fn default_data_dir(name: &NodeName) -> PathBuf {
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

/// The file as written: every key optional, values not yet checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    node: RawNode,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    link: RawLink,
    #[serde(default)]
    mirror: RawMirror,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    pipeline: RawPipeline,
    topics: Option<Vec<RawTopic>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    max_entry_bytes: Option<Scalar>,
    disk_budget: Option<Scalar>,
    cache_bytes: Option<Scalar>,
    retention_interval: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    listen: Option<String>,
    edges: Option<NameList>,
    allow_any_edge: Option<bool>,
    core: Option<String>,
    core_name: Option<String>,
    certs_dir: Option<PathBuf>,
    demo_certs: Option<bool>,
    keep_alive: Option<Scalar>,
    idle_timeout: Option<Scalar>,
    relay_rate: Option<Scalar>,
    relay_entries: Option<u64>,
    relay_burst: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    volume: Option<PathBuf>,
    dir: Option<PathBuf>,
    max_rate: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    token: Option<String>,
    read_token: Option<String>,
    insecure_no_token: Option<bool>,
    hosts: Option<NameList>,
}

impl RawHttp {
    fn check(self, defaults: HttpSettings, origins: &Origins) -> Result<HttpSettings, ConfigError> {
        let listen: SocketAddr = match self.listen {
            Some(text) => text.parse().map_err(|e| {
                origins.invalid(
                    "http.listen",
                    format_args!(
                        "{text:?} is not an address and port such as 127.0.0.1:8080 ({e})"
                    ),
                )
            })?,
            None => defaults.listen,
        };
        let token = |key: &str, token: Option<String>| match token {
            Some(token)
                if !(16..=256).contains(&token.len())
                    || !token.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Err(origins.invalid(
                    key,
                    "a token is 16 to 256 visible ASCII characters, with no spaces",
                ))
            }
            token => Ok(token),
        };
        let read_token = token("http.read_token", self.read_token)?;
        let token = token("http.token", self.token)?;
        let insecure_no_token = self.insecure_no_token.unwrap_or(defaults.insecure_no_token);
        if read_token.is_some() && token.is_none() {
            return Err(origins.invalid(
                "http.read_token",
                "a read-only token needs the operator's token (http.token) beside it",
            ));
        }
        if read_token.is_some() && read_token == token {
            return Err(origins.invalid(
                "http.read_token",
                "the read-only token must differ from http.token",
            ));
        }
        if token.is_none() && !insecure_no_token && !listen.ip().is_loopback() {
            return Err(origins.invalid(
                "http.token",
                format_args!(
                    "this node serves HTTP on {listen}, beyond this machine, so it needs a \
                     token: set TETHER_HTTP__TOKEN (16 to 256 visible characters, for example \
                     `openssl rand -hex 24`), or listen on 127.0.0.1; a lab that wants anyone \
                     on the network to read and change everything sets \
                     http.insecure_no_token = true"
                ),
            ));
        }
        Ok(HttpSettings {
            listen,
            token,
            read_token,
            insecure_no_token,
            hosts: match self.hosts {
                Some(NameList(hosts)) => check_hosts(hosts, origins)?,
                None => defaults.hosts,
            },
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    feed: Option<String>,
    feed_every: Option<Scalar>,
    feed_batch: Option<i64>,
    max_download_bytes: Option<Scalar>,
    download_timeout: Option<Scalar>,
    download_allow: Option<NameList>,
    start_services: Option<bool>,
}

/// A list of names as written: a TOML array of strings, or one string of names separated
/// by commas (handy in an environment variable: `TETHER_LINK__EDGES=alpha,bravo`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameList(Vec<String>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    scope: Scope,
    max_age: Option<Scalar>,
    max_bytes: Option<Scalar>,
    max_entries: Option<u64>,
    writers: Option<RawWriters>,
}

/// `writers` as written: `"any"`, `"core"`, or a list of edge names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawWriters {
    Word(String),
    Edges(Vec<String>),
}

/// A size or duration as written: an integer or a string, parsed when checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scalar {
    Int(i64),
    Text(String),
}

/// Which keys the environment set, to name the right origin in errors.
#[derive(Debug)]
struct Origins {
    file: Option<PathBuf>,
    /// `(dotted key path, variable)`, in the order applied.
    overrides: Vec<(String, String)>,
}

impl Origins {
    fn of(&self, key: &str) -> Origin {
        let set_by = |path: &str| {
            key == path
                || key.starts_with(&format!("{path}."))
                || key.starts_with(&format!("{path}["))
        };
        if let Some((_, var)) = self.overrides.iter().rev().find(|(path, _)| set_by(path)) {
            return Origin::Env(var.clone());
        }
        match &self.file {
            Some(path) => Origin::File(path.clone()),
            None => Origin::Default,
        }
    }

    fn invalid(&self, key: &str, reason: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            origin: self.of(key),
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl RawConfig {
    /// Fills in the role's defaults and checks every value.
    fn check(self, role: Role, origins: &Origins) -> Result<Config, ConfigError> {
        let defaults = Config::default_for(role);
        let name = match self.node.name {
            Some(name) => NodeName::new(name).map_err(|e| origins.invalid("node.name", e))?,
            None => defaults.node.name,
        };
        let data_dir = match self.node.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(origins.invalid("node.data_dir", "must not be empty"));
            }
            Some(dir) => dir,
            None => default_data_dir(&name),
        };
        let filter = self.log.filter.unwrap_or(defaults.log.filter);
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&filter) {
            return Err(
                origins.invalid("log.filter", format_args!("invalid filter {filter:?}: {e}"))
            );
        }
        let size = |key: &str, value: Option<Scalar>, default: u64| match value {
            Some(value) => positive_size(&value).map_err(|e| origins.invalid(key, e)),
            None => Ok(default),
        };
        let store = StoreSettings {
            max_entry_bytes: size(
                "store.max_entry_bytes",
                self.store.max_entry_bytes,
                defaults.store.max_entry_bytes,
            )?,
            disk_budget: match self.store.disk_budget {
                Some(value) => Some(
                    positive_size(&value).map_err(|e| origins.invalid("store.disk_budget", e))?,
                ),
                None => None,
            },
            cache_bytes: size(
                "store.cache_bytes",
                self.store.cache_bytes,
                defaults.store.cache_bytes,
            )?,
            retention_interval: match self.store.retention_interval {
                Some(value) => positive_duration(&value)
                    .map_err(|e| origins.invalid("store.retention_interval", e))?,
                None => defaults.store.retention_interval,
            },
        };
        let (topics, writers) = match self.topics {
            Some(raw) => check_topics(raw, origins)?,
            None => (defaults.topics, defaults.writers),
        };
        let link = self.link.check(role, &name, defaults.link, origins)?;
        let mirror = self.mirror.check(role, origins)?;
        let http = self.http.check(defaults.http, origins)?;
        let pipeline = self.pipeline.check(role, origins)?;
        Ok(Config {
            role,
            link,
            mirror,
            http,
            pipeline,
            node: NodeSettings { name, data_dir },
            log: LogSettings {
                format: self.log.format.unwrap_or(defaults.log.format),
                filter,
            },
            store,
            topics,
            writers,
        })
    }
}

impl RawPipeline {
    fn check(self, role: Role, origins: &Origins) -> Result<PipelineSettings, ConfigError> {
        let defaults = PipelineSettings::default();
        if role == Role::Edge {
            let core_keys = [
                ("pipeline.feed", self.feed.is_some()),
                ("pipeline.feed_every", self.feed_every.is_some()),
                ("pipeline.feed_batch", self.feed_batch.is_some()),
                (
                    "pipeline.max_download_bytes",
                    self.max_download_bytes.is_some(),
                ),
                ("pipeline.download_timeout", self.download_timeout.is_some()),
                ("pipeline.download_allow", self.download_allow.is_some()),
            ];
            if let Some((key, _)) = core_keys.iter().find(|(_, set)| *set) {
                return Err(origins.invalid(key, "a core's key: HQ reads the feed and downloads"));
            }
        }
        if self.feed.as_ref().is_some_and(|f| f.trim().is_empty()) {
            return Err(origins.invalid(
                "pipeline.feed",
                "must not be empty (leave it out for the demo feed)",
            ));
        }
        let duration = |key: &str, value: Option<Scalar>, default| match value {
            Some(v) => positive_duration(&v).map_err(|e| origins.invalid(key, e)),
            None => Ok(default),
        };
        Ok(PipelineSettings {
            feed: self.feed,
            feed_every: duration("pipeline.feed_every", self.feed_every, defaults.feed_every)?,
            feed_batch: match self.feed_batch {
                Some(n) => u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| origins.invalid("pipeline.feed_batch", "must be 1 to 1000"))?,
                None => defaults.feed_batch,
            },
            max_download_bytes: match self.max_download_bytes {
                Some(v) => positive_size(&v)
                    .map_err(|e| origins.invalid("pipeline.max_download_bytes", e))?,
                None => defaults.max_download_bytes,
            },
            download_timeout: duration(
                "pipeline.download_timeout",
                self.download_timeout,
                defaults.download_timeout,
            )?,
            download_allow: match self.download_allow {
                Some(NameList(listed)) => check_download_allow(listed, origins)?,
                None => defaults.download_allow,
            },
            start_services: self.start_services.unwrap_or(defaults.start_services),
        })
    }
}

impl RawMirror {
    /// Checks that only this role's keys are set, and the values.
    fn check(self, role: Role, origins: &Origins) -> Result<MirrorConfig, ConfigError> {
        match role {
            Role::Core if self.dir.is_some() => {
                return Err(
                    origins.invalid("mirror.dir", "an edge's key; a core serves mirror.volume")
                );
            }
            Role::Edge if self.volume.is_some() => {
                return Err(
                    origins.invalid("mirror.volume", "a core's key; an edge keeps mirror.dir")
                );
            }
            _ => {}
        }
        for (key, dir) in [("mirror.volume", &self.volume), ("mirror.dir", &self.dir)] {
            if dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
                return Err(origins.invalid(key, "must not be empty"));
            }
        }
        let max_rate = match self.max_rate {
            Some(value) => {
                Some(positive_size(&value).map_err(|e| origins.invalid("mirror.max_rate", e))?)
            }
            None => None,
        };
        Ok(MirrorConfig {
            volume: self.volume,
            dir: self.dir,
            max_rate,
        })
    }
}

impl RawLink {
    /// Fills in the defaults; checks the values, and that only this role's keys are set.
    fn check(
        self,
        role: Role,
        name: &NodeName,
        defaults: LinkSettings,
        origins: &Origins,
    ) -> Result<LinkSettings, ConfigError> {
        let set = |key: &str| match key {
            "link.core" => self.core.is_some(),
            "link.core_name" => self.core_name.is_some(),
            "link.listen" => self.listen.is_some(),
            "link.edges" => self.edges.is_some(),
            "link.relay_rate" => self.relay_rate.is_some(),
            "link.relay_entries" => self.relay_entries.is_some(),
            "link.relay_burst" => self.relay_burst.is_some(),
            _ => self.allow_any_edge.is_some(),
        };
        let (theirs, why): (&[&str], _) = match role {
            Role::Core => (
                &["link.core", "link.core_name"],
                "an edge's key; a core listens on link.listen",
            ),
            Role::Edge => (
                &[
                    "link.listen",
                    "link.edges",
                    "link.allow_any_edge",
                    "link.relay_rate",
                    "link.relay_entries",
                    "link.relay_burst",
                ],
                "a core's key; an edge dials link.core",
            ),
        };
        if let Some(key) = theirs.iter().find(|key| set(key)) {
            return Err(origins.invalid(key, why));
        }
        let listen = match self.listen {
            Some(text) => text.parse().map_err(|_| {
                origins.invalid(
                    "link.listen",
                    format_args!(
                        "invalid socket address {text:?}: expected ip:port, such as \
                         \"0.0.0.0:7000\" or \"[::]:7000\""
                    ),
                )
            })?,
            None => defaults.listen,
        };
        let edges = match self.edges {
            Some(NameList(listed)) => check_edges(listed, name, origins)?,
            // A core named like the default edge does not list itself.
            None if role == Role::Core => {
                defaults.edges.into_iter().filter(|e| e != name).collect()
            }
            None => defaults.edges,
        };
        let core = match self.core {
            Some(text) => {
                check_host_port(&text).map_err(|e| origins.invalid("link.core", e))?;
                text
            }
            None => defaults.core,
        };
        let core_name = match self.core_name {
            Some(text) => NodeName::new(text).map_err(|e| origins.invalid("link.core_name", e))?,
            None => defaults.core_name,
        };
        if role == Role::Edge && core_name == *name {
            return Err(origins.invalid(
                "link.core_name",
                format_args!("{core_name} is this edge's own name, not the core's"),
            ));
        }
        let certs_dir = match self.certs_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(origins.invalid("link.certs_dir", "must not be empty"));
            }
            dir => dir,
        };
        // How late each key was set (the environment comes after the file), to name the
        // later one when the two disagree: both defaults agree.
        let lateness = |key: &str, set: bool| match origins.of(key) {
            Origin::Env(_) => 2,
            _ if set => 1,
            _ => 0,
        };
        let keep_alive_later = lateness("link.keep_alive", self.keep_alive.is_some())
            > lateness("link.idle_timeout", self.idle_timeout.is_some());
        let keep_alive = bounded_duration(
            "link.keep_alive",
            self.keep_alive,
            defaults.keep_alive,
            &tls::KEEP_ALIVE_RANGE,
            origins,
        )?;
        let idle_timeout = bounded_duration(
            "link.idle_timeout",
            self.idle_timeout,
            defaults.idle_timeout,
            &tls::IDLE_TIMEOUT_RANGE,
            origins,
        )?;
        if idle_timeout < keep_alive.saturating_mul(2) {
            let key = if keep_alive_later {
                "link.keep_alive"
            } else {
                "link.idle_timeout"
            };
            return Err(origins.invalid(
                key,
                format_args!(
                    "idle_timeout {} is less than twice keep_alive {}: a healthy idle link \
                     would time out between two keep-alives; set link.idle_timeout to at \
                     least {} or link.keep_alive to at most {}",
                    format_duration(idle_timeout),
                    format_duration(keep_alive),
                    format_duration(keep_alive.saturating_mul(2)),
                    format_duration(idle_timeout / 2),
                ),
            ));
        }
        let demo_certs = self.demo_certs.unwrap_or(defaults.demo_certs);
        if role == Role::Core && demo_certs && !listen.ip().is_loopback() {
            return Err(origins.invalid(
                "link.demo_certs",
                format_args!(
                    "demo certificates are made only for a core that listens on loopback, and \
                     this one listens on {listen}: create the mission CA with `core-node certs \
                     init`, each edge's certificate with `core-node certs issue <edge>`, and \
                     set link.demo_certs = false"
                ),
            ));
        }
        let default_relay = defaults.relay.unwrap_or(RelayLimit {
            bytes_per_s: 0,
            entries_per_s: 0,
            ..RELAY_DEFAULT
        });
        let bytes_per_s = match self.relay_rate {
            Some(value) => {
                size_or_zero(&value).map_err(|e| origins.invalid("link.relay_rate", e))?
            }
            None => default_relay.bytes_per_s,
        };
        let burst = match self.relay_burst {
            Some(value) => {
                positive_duration(&value).map_err(|e| origins.invalid("link.relay_burst", e))?
            }
            None => default_relay.burst,
        };
        let entries_per_s = self.relay_entries.unwrap_or(default_relay.entries_per_s);
        let relay = (bytes_per_s > 0 || entries_per_s > 0).then_some(RelayLimit {
            bytes_per_s,
            entries_per_s,
            burst,
        });
        Ok(LinkSettings {
            listen,
            edges,
            allow_any_edge: self.allow_any_edge.unwrap_or(defaults.allow_any_edge),
            core,
            core_name,
            certs_dir,
            demo_certs,
            keep_alive,
            idle_timeout,
            relay,
        })
    }
}

/// A duration key within `range`, or `default` if it is not set.
fn bounded_duration(
    key: &str,
    value: Option<Scalar>,
    default: Duration,
    range: &RangeInclusive<Duration>,
    origins: &Origins,
) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let duration = positive_duration(&value).map_err(|e| origins.invalid(key, e))?;
    if !range.contains(&duration) {
        return Err(origins.invalid(
            key,
            format_args!(
                "must be from {} to {}, not {}",
                format_duration(*range.start()),
                format_duration(*range.end()),
                format_duration(duration)
            ),
        ));
    }
    Ok(duration)
}

/// The core's list of edges: valid names, no duplicate, not the core's own name.
fn check_edges(
    listed: Vec<String>,
    core: &NodeName,
    origins: &Origins,
) -> Result<Vec<NodeName>, ConfigError> {
    let mut edges: Vec<NodeName> = Vec::with_capacity(listed.len());
    for (i, text) in listed.into_iter().enumerate() {
        let key = format!("link.edges[{i}]");
        let edge = NodeName::new(text).map_err(|e| origins.invalid(&key, e))?;
        if edge == *core {
            return Err(origins.invalid(
                &key,
                format_args!("{edge} is this core's own name, not an edge's"),
            ));
        }
        if edges.contains(&edge) {
            return Err(origins.invalid(&key, format_args!("duplicate edge {edge}")));
        }
        edges.push(edge);
    }
    Ok(edges)
}

/// Checks a `host:port` address to dial: a port from 1 to 65535, a host that is a DNS
/// name or an IP address, IPv6 in brackets.
fn check_host_port(text: &str) -> Result<(), String> {
    let invalid = |why: &str| {
        format!(
            "invalid address {text:?}: {why} (expected host:port, such as \"hq.example.org:7000\", \
             \"10.0.0.1:7000\" or \"[fd00::1]:7000\")"
        )
    };
    if text.parse::<SocketAddr>().is_ok() {
        return if text.ends_with(":0") {
            Err(invalid("port 0 cannot be dialed"))
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(invalid("no port"));
    };
    match port.parse::<u16>() {
        Ok(0) => return Err(invalid("port 0 cannot be dialed")),
        Ok(_) => {}
        Err(_) => return Err(invalid("the port is not a number from 1 to 65535")),
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if name_ok {
        Ok(())
    } else if host.contains(':') && !host.starts_with('[') {
        Err(invalid("write an IPv6 address in brackets"))
    } else {
        Err(invalid("the host is not a DNS name nor an IP address"))
    }
}

fn check_topics(
    raw: Vec<RawTopic>,
    origins: &Origins,
) -> Result<(Vec<TopicConfig>, Writers), ConfigError> {
    let mut seen = HashSet::new();
    let mut topics = Vec::with_capacity(raw.len());
    let mut writers = Writers::default();
    for (i, topic) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("topics[{i}].{field}");
        let name = TopicName::new(topic.name).map_err(|e| origins.invalid(&key("name"), e))?;
        if name.is_system() {
            return Err(origins.invalid(
                &key("name"),
                format_args!("topic {name}: names starting with '_' belong to the system"),
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(origins.invalid(&key("name"), format_args!("duplicate topic {name}")));
        }
        let max_age = match topic.max_age {
            Some(value) => {
                Some(positive_duration(&value).map_err(|e| origins.invalid(&key("max_age"), e))?)
            }
            None => None,
        };
        let max_bytes = match topic.max_bytes {
            Some(value) => {
                Some(positive_size(&value).map_err(|e| origins.invalid(&key("max_bytes"), e))?)
            }
            None => None,
        };
        if topic.max_entries == Some(0) {
            return Err(origins.invalid(&key("max_entries"), "must be more than 0"));
        }
        let retention = Retention {
            max_age,
            max_bytes,
            max_entries: topic.max_entries,
        };
        match topic.writers {
            None => {}
            Some(RawWriters::Word(word)) if word == "any" => {}
            Some(RawWriters::Word(word)) if word == "core" => {
                writers.0.push((name.clone(), Writer::Edges(Vec::new())));
            }
            Some(RawWriters::Word(word)) => {
                return Err(origins.invalid(
                    &key("writers"),
                    format_args!(
                        "{word:?}: expected \"any\" (every edge), \"core\" (the core alone) \
                         or a list of edge names"
                    ),
                ));
            }
            Some(RawWriters::Edges(names)) => {
                let edges = names
                    .into_iter()
                    .map(NodeName::new)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| origins.invalid(&key("writers"), e))?;
                writers.0.push((name.clone(), Writer::Edges(edges)));
            }
        }
        topics.push(TopicConfig {
            name,
            scope: topic.scope,
            retention,
        });
    }
    Ok((topics, writers))
}

/// Deserializes the edited table into the schema; the error is one line.
fn deserialize(table: &toml::Table) -> Result<RawConfig, String> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string().trim_end().replace('\n', " "))
}

/// `TETHER_STORE__MAX_ENTRY_BYTES` -> `["store", "max_entry_bytes"]`.
fn env_path(var: &str) -> Result<Vec<String>, String> {
    let rest = var.strip_prefix(ENV_PREFIX).unwrap_or(var);
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!(
            "expected {ENV_PREFIX}<SECTION>__<KEY>, such as {ENV_PREFIX}NODE__NAME"
        ));
    }
    if path[0] == "topics" {
        return Err(
            "topics cannot be set from the environment; list them in the config file".to_owned(),
        );
    }
    Ok(path)
}

/// An environment value as TOML (`2`, `true`, `"x"`, `[1, 2]`), or else as a string.
fn toml_value(text: &str) -> toml::Value {
    let parsed: Option<toml::Table> = toml::from_str(&format!("value = {text}")).ok();
    match parsed {
        Some(mut table) if table.len() == 1 => table.remove("value"),
        _ => None,
    }
    .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets `value` at `path` in `table`, creating the tables on the way.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".to_owned());
    };
    let mut at = table;
    for (depth, part) in parents.iter().enumerate() {
        let entry = at
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{}` is not a section", path[..=depth].join("."))),
        };
    }
    at.insert(last.clone(), value);
    Ok(())
}

/// `pipeline.download_allow`: IP addresses and CIDR ranges, each once.
fn check_download_allow(
    listed: Vec<String>,
    origins: &Origins,
) -> Result<Vec<IpRange>, ConfigError> {
    let mut ranges: Vec<IpRange> = Vec::with_capacity(listed.len());
    for (i, text) in listed.iter().enumerate() {
        let key = format!("pipeline.download_allow[{i}]");
        let range: IpRange = text.trim().parse().map_err(|e| origins.invalid(&key, e))?;
        if ranges.contains(&range) {
            return Err(origins.invalid(&key, format_args!("{range} is listed twice")));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// `http.hosts`: DNS names, lowercased, without ports.
fn check_hosts(hosts: Vec<String>, origins: &Origins) -> Result<Vec<String>, ConfigError> {
    hosts
        .into_iter()
        .map(|host| {
            let name = host.trim().to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !name.starts_with(['-', '.']);
            if valid {
                Ok(name)
            } else {
                Err(origins.invalid(
                    "http.hosts",
                    format_args!(
                        "{host:?} is not a host name (letters, digits, '-' and '.'; no port)"
                    ),
                ))
            }
        })
        .collect()
}

/// A size in bytes, 0 included.
fn size_or_zero(value: &Scalar) -> Result<u64, String> {
    match value {
        Scalar::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("invalid size {n}: must not be negative"))
        }
        Scalar::Text(text) if text.trim() == "0" => Ok(0),
        Scalar::Text(text) => parse_size(text),
    }
}

/// A size more than 0, in bytes.
fn positive_size(value: &Scalar) -> Result<u64, String> {
    let bytes = match value {
        Scalar::Int(n) => {
            u64::try_from(*n).map_err(|_| format!("invalid size {n}: must not be negative"))?
        }
        Scalar::Text(text) => parse_size(text)?,
    };
    if bytes == 0 {
        return Err("must be more than 0".to_owned());
    }
    Ok(bytes)
}

/// A duration more than 0.
fn positive_duration(value: &Scalar) -> Result<Duration, String> {
    let duration = match value {
        Scalar::Int(n) => {
            return Err(format!(
                "invalid duration {n}: add a unit, as in \"{n}s\" (ns, us, ms, s, m, h, d)"
            ));
        }
        Scalar::Text(text) => parse_duration(text)?,
    };
    if duration.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(duration)
}

/// Size units, largest first; [`format_size`] picks the first that divides exactly.
const SIZE_UNITS: [(&str, u64); 8] = [
    ("TiB", 1 << 40),
    ("TB", 1_000_000_000_000),
    ("GiB", 1 << 30),
    ("GB", 1_000_000_000),
    ("MiB", 1 << 20),
    ("MB", 1_000_000),
    ("KiB", 1 << 10),
    ("KB", 1_000),
];

/// Parses `"512MiB"`, `"10 GB"`, `"4096"` or `"4096B"` into bytes (units ignore case).
fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text.trim());
    let invalid = |why: &str| format!("invalid size {text:?}: {why}");
    if number.is_empty() {
        return Err(invalid(
            "expected a whole number and a unit, as in \"512MiB\"",
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "use a whole number with a smaller unit, as in \"1536MiB\"",
        ));
    }
    let multiplier = match unit {
        "" => 1,
        u if u.eq_ignore_ascii_case("b") => 1,
        u => SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(u))
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                invalid(&format!(
                    "unknown unit {u:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)"
                ))
            })?,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| invalid("too large"))
}

/// Parses `"500ms"`, `"10s"`, `"30m"`, `"12h"` or `"7d"` (also `ns` and `us`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text.trim());
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    if number.is_empty() {
        return Err(invalid("expected a whole number and a unit, as in \"10s\""));
    }
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "use a whole number with a smaller unit, as in \"1500ms\"",
        ));
    }
    let n: u64 = number.parse().map_err(|_| invalid("too large"))?;
    let secs = |unit: u64| {
        n.checked_mul(unit)
            .map(Duration::from_secs)
            .ok_or_else(|| invalid("too large"))
    };
    match unit {
        "" => Err(invalid(&format!(
            "add a unit, as in \"{n}s\" (ns, us, ms, s, m, h, d)"
        ))),
        "ns" => Ok(Duration::from_nanos(n)),
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(60 * 60),
        "d" => secs(24 * 60 * 60),
        u => Err(invalid(&format!(
            "unknown unit {u:?} (use ns, us, ms, s, m, h or d)"
        ))),
    }
}

/// `"10 GiB"` -> `("10", "GiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    (number, unit.trim_start())
}

/// A size as TOML: a string with the largest exact unit, else an integer of bytes.
fn size_value(bytes: u64) -> toml::Value {
    match SIZE_UNITS.iter().find(|(_, m)| bytes.is_multiple_of(*m)) {
        Some((unit, m)) if bytes > 0 => toml::Value::String(format!("{}{unit}", bytes / m)),
        // Past i64 (TOML's integers), the digits alone as a string still parse as bytes.
        _ => i64::try_from(bytes).map_or_else(
            |_| toml::Value::String(bytes.to_string()),
            toml::Value::Integer,
        ),
    }
}

/// A duration with the largest unit that divides it exactly: `"7d"`, `"90s"`, `"1500ms"`.
fn format_duration(duration: Duration) -> String {
    const UNITS: [(&str, u128); 7] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let nanos = duration.as_nanos();
    let (unit, per) = UNITS
        .iter()
        .find(|(_, per)| nanos.is_multiple_of(*per))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / per)
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string with a unit")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Scalar, E> {
                i64::try_from(n)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NameList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of names, or names separated by commas")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NameList, E> {
                let names = text.split(',').map(str::trim).filter(|n| !n.is_empty());
                Ok(NameList(names.map(str::to_owned).collect()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<NameList, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(NameList(names))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(role: Role, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<_> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_sources(role, Some((Path::new("/etc/tether/node.toml"), text)), &env)
    }

    /// The error's message, checked to contain each of `parts`.
    #[track_caller]
    fn check_error(result: Result<Config, ConfigError>, parts: &[&str]) {
        let message = result.unwrap_err().to_string();
        for part in parts {
            assert!(message.contains(part), "{part:?} is not in:\n{message}");
        }
    }

    #[test]
    fn printed_config_round_trips() {
        for role in [Role::Core, Role::Edge] {
            let config = Config::default_for(role);
            let text = config.to_toml();
            assert_eq!(load(role, &text, &[]).unwrap(), config, "{text}");
        }
        let mut config = Config::default_for(Role::Edge);
        config.node.data_dir = PathBuf::from("/var/lib/tether");
        config.log = LogSettings {
            format: LogFormat::Json,
            filter: "protocol=debug,info".to_owned(),
        };
        config.store.disk_budget = Some(10_000_000_000);
        config.store.max_entry_bytes = 1000;
        config.store.cache_bytes = 12345;
        config.store.retention_interval = Duration::from_millis(1500);
        config.topics[0].retention = Retention {
            max_age: Some(Duration::from_micros(3)),
            max_bytes: Some(3 << 30),
            max_entries: Some(10),
        };
        config.link.core = "hq.example.org:7443".to_owned();
        config.link.core_name = NodeName::new("base").unwrap();
        config.link.demo_certs = false;
        config.link.certs_dir = Some(PathBuf::from("/etc/tether/certs"));
        config.link.keep_alive = Duration::from_millis(2500);
        config.link.idle_timeout = Duration::from_secs(90);
        config.mirror.dir = Some(PathBuf::from("/srv/mirror"));
        config.mirror.max_rate = Some(65536);
        let text = config.to_toml();
        assert_eq!(load(Role::Edge, &text, &[]).unwrap(), config, "{text}");
        assert!(
            text.contains("\ncerts_dir = \"/etc/tether/certs\"\n"),
            "{text}"
        );
        assert!(
            text.contains("\nkeep_alive = \"2500ms\"\n")
                && text.contains("\nidle_timeout = \"90s\"\n"),
            "{text}"
        );
        config.topics.clear();
        // Writers are a property of listed topics: none listed, none left.
        config.writers = Writers::default();
        let text = config.to_toml();
        assert_eq!(load(Role::Edge, &text, &[]).unwrap(), config, "{text}");

        let mut config = Config::default_for(Role::Core);
        config.node.data_dir = PathBuf::from("/var/lib/tether");
        config.link.listen = "[::]:7443".parse().unwrap();
        config.link.demo_certs = false;
        config.link.edges = vec![NodeName::new("bravo").unwrap(), NodeName::new("c").unwrap()];
        config.link.allow_any_edge = true;
        config.mirror.volume = Some(PathBuf::from("/srv/volume"));
        let text = config.to_toml();
        assert_eq!(load(Role::Core, &text, &[]).unwrap(), config, "{text}");
        // The certificates directory follows the data directory unless it is set.
        assert!(
            text.contains("\n# certs_dir = \"/var/lib/tether/certs\"\n"),
            "{text}"
        );
        assert_eq!(config.allowed_edges(), Allowed::AnyEdge);
        config.link.edges.clear();
        config.link.allow_any_edge = false;
        let text = config.to_toml();
        assert_eq!(load(Role::Core, &text, &[]).unwrap(), config, "{text}");
        assert_eq!(config.allowed_edges(), Allowed::List(Vec::new()));
    }

    #[test]
    fn http_hosts_are_read_and_checked() {
        assert!(load(Role::Core, "", &[]).unwrap().http.hosts.is_empty());
        let env = [(
            "TETHER_HTTP__HOSTS",
            "tether.example.org, HQ-http.mission.svc",
        )];
        let config = load(Role::Core, "", &env).unwrap();
        assert_eq!(
            config.http.hosts,
            ["tether.example.org", "hq-http.mission.svc"]
        );
        assert_eq!(load(Role::Core, &config.to_toml(), &[]).unwrap(), config);
        for bad in ["a b", "evil.example:80", "", "-x"] {
            let env = [("TETHER_HTTP__HOSTS", format!("[{bad:?}]"))];
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = load(Role::Core, "", &env).unwrap_err().to_string();
            assert!(err.contains("http.hosts"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_listener_beyond_loopback_needs_a_token() {
        let open = [("TETHER_HTTP__LISTEN", "0.0.0.0:8080")];
        let err = load(Role::Edge, "", &open).unwrap_err().to_string();
        assert!(
            err.contains("http.token") && err.contains("TETHER_HTTP__TOKEN"),
            "{err}"
        );
        let token = [
            ("TETHER_HTTP__LISTEN", "0.0.0.0:8080"),
            ("TETHER_HTTP__TOKEN", "0123456789abcdef"),
            ("TETHER_HTTP__READ_TOKEN", "fedcba9876543210"),
        ];
        let http = load(Role::Edge, "", &token).unwrap().http;
        assert_eq!(http.read_token.as_deref(), Some("fedcba9876543210"));
        let lab = [
            ("TETHER_HTTP__LISTEN", "[::]:8080"),
            ("TETHER_HTTP__INSECURE_NO_TOKEN", "true"),
        ];
        assert!(load(Role::Core, "", &lab).unwrap().http.insecure_no_token);
        for loopback in ["127.0.0.1:8080", "[::1]:8080"] {
            assert!(load(Role::Core, "", &[("TETHER_HTTP__LISTEN", loopback)]).is_ok());
        }
        let alone = [("TETHER_HTTP__READ_TOKEN", "fedcba9876543210")];
        let err = load(Role::Core, "", &alone).unwrap_err().to_string();
        assert!(err.contains("http.read_token"), "{err}");
        let twice = [
            ("TETHER_HTTP__TOKEN", "0123456789abcdef"),
            ("TETHER_HTTP__READ_TOKEN", "0123456789abcdef"),
        ];
        assert!(load(Role::Core, "", &twice).is_err());
    }

    #[test]
    fn demo_certificates_only_for_a_core_on_loopback() {
        let env = [("TETHER_LINK__LISTEN", "0.0.0.0:7000")];
        let err = load(Role::Core, "", &env).unwrap_err().to_string();
        assert!(
            err.contains("link.demo_certs") && err.contains("certs init"),
            "{err}"
        );
        let env = [
            ("TETHER_LINK__LISTEN", "0.0.0.0:7000"),
            ("TETHER_LINK__DEMO_CERTS", "false"),
        ];
        assert!(load(Role::Core, "", &env).is_ok());
        for loopback in ["127.0.0.1:7000", "[::1]:7000"] {
            let env = [("TETHER_LINK__LISTEN", loopback)];
            assert!(load(Role::Core, "", &env).unwrap().link.demo_certs);
        }
    }

    #[test]
    fn link_keys_are_read_and_checked() {
        let config = load(Role::Core, "", &[]).unwrap();
        assert_eq!(config.link.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(
            config.allowed_edges(),
            Allowed::List(vec![NodeName::new("alpha").unwrap()])
        );
        assert_eq!(config.certs_dir(), Path::new("data/hq/certs"));
        assert!(config.link.demo_certs);
        let edge = load(Role::Edge, "[node]\ndata_dir = \"/srv/e\"\n", &[]).unwrap();
        assert_eq!(edge.link.core, "127.0.0.1:7000");
        assert_eq!(edge.link.core_name.as_str(), "hq");
        assert_eq!(edge.certs_dir(), Path::new("/srv/e/certs"));

        let env = [
            ("TETHER_LINK__LISTEN", "0.0.0.0:7443"),
            ("TETHER_LINK__EDGES", "alpha, bravo"),
            ("TETHER_LINK__ALLOW_ANY_EDGE", "true"),
            ("TETHER_LINK__CERTS_DIR", "/etc/tether/certs"),
            ("TETHER_LINK__DEMO_CERTS", "false"),
        ];
        let core = load(Role::Core, "", &env).unwrap();
        assert_eq!(core.link.listen, "0.0.0.0:7443".parse().unwrap());
        let names: Vec<_> = core.link.edges.iter().map(NodeName::as_str).collect();
        assert_eq!(names, ["alpha", "bravo"]);
        assert!(core.link.allow_any_edge && !core.link.demo_certs);
        assert_eq!(core.certs_dir(), Path::new("/etc/tether/certs"));
        let env = [("TETHER_LINK__EDGES", "[\"delta\"]")];
        let names = load(Role::Core, "", &env).unwrap().link.edges;
        assert_eq!(names, [NodeName::new("delta").unwrap()]);
        let env = [
            ("TETHER_LINK__CORE", "[fd00::1]:7000"),
            ("TETHER_LINK__CORE_NAME", "base"),
        ];
        let edge = load(Role::Edge, "", &env).unwrap();
        assert_eq!(
            (edge.link.core.as_str(), edge.link.core_name.as_str()),
            ("[fd00::1]:7000", "base")
        );
        for good in [
            "hq.example.org:7000",
            "10.0.0.1:1",
            "hq:65535",
            "[::1]:7000",
        ] {
            let file = format!("[link]\ncore = \"{good}\"\n");
            assert_eq!(load(Role::Edge, &file, &[]).unwrap().link.core, good);
        }
        // A core named like the default edge does not list itself.
        let alpha = load(Role::Core, "[node]\nname = \"alpha\"\n", &[]).unwrap();
        assert_eq!(alpha.link.edges, []);
    }

    #[test]
    fn relay_quota_and_writers_are_read_and_checked() {
        // Defaults: a quota per edge, and HQ alone writes what it broadcasts and answers.
        let config = load(Role::Core, "", &[]).unwrap();
        assert_eq!(config.link.relay, Some(RELAY_DEFAULT));
        let broadcast = TopicName::new("ASSET_BROADCAST").unwrap();
        let (alpha, messages) = (
            NodeName::new("alpha").unwrap(),
            TopicName::new("MESSAGES").unwrap(),
        );
        assert!(!config.writers.allows(&broadcast, &alpha));
        assert!(config.writers.allows(&messages, &alpha));
        // Values, the environment over the file, and both rates 0: no quota.
        let file = "[link]\nrelay_rate = \"1MiB\"\nrelay_entries = 7\nrelay_burst = \"5s\"\n";
        let relay = load(Role::Core, file, &[]).unwrap().link.relay;
        assert_eq!(
            relay,
            Some(RelayLimit {
                bytes_per_s: 1 << 20,
                entries_per_s: 7,
                burst: Duration::from_secs(5)
            })
        );
        let env = [
            ("TETHER_LINK__RELAY_RATE", "0"),
            ("TETHER_LINK__RELAY_ENTRIES", "0"),
        ];
        assert_eq!(load(Role::Core, file, &env).unwrap().link.relay, None);
        let off = load(Role::Core, "", &env).unwrap();
        let text = off.to_toml();
        assert!(text.contains("\nrelay_rate = 0\n"), "{text}");
        assert_eq!(load(Role::Core, &text, &[]).unwrap(), off);
        // An edge relays nothing; bad values name the key.
        let err = load(Role::Edge, "[link]\nrelay_rate = \"1KiB\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("link.relay_rate"), "{err}");
        let err = load(Role::Core, "[link]\nrelay_burst = \"0s\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("link.relay_burst"), "{err}");
        // Writers: any, core, a list; printed and read back; bad ones named.
        let topics = |writers: &str| {
            format!("[[topics]]\nname = \"A\"\nscope = \"all\"\nwriters = {writers}\n")
        };
        let a = TopicName::new("A").unwrap();
        let bravo = NodeName::new("bravo").unwrap();
        let any = load(Role::Core, &topics("\"any\""), &[]).unwrap();
        assert!(any.writers.allows(&a, &bravo));
        let core = load(Role::Core, &topics("\"core\""), &[]).unwrap();
        assert!(!core.writers.allows(&a, &alpha));
        let listed = load(Role::Core, &topics("[\"bravo\"]"), &[]).unwrap();
        assert!(listed.writers.allows(&a, &bravo) && !listed.writers.allows(&a, &alpha));
        for config in [core, listed] {
            assert_eq!(load(Role::Core, &config.to_toml(), &[]).unwrap(), config);
        }
        for bad in ["\"everyone\"", "[\"Bravo!\"]", "7"] {
            let err = load(Role::Core, &topics(bad), &[]).unwrap_err();
            assert!(err.to_string().contains("writers"), "{bad}: {err}");
        }
    }

    #[test]
    fn link_timeouts_are_read_and_checked() {
        // The defaults, for both roles, as --print-config shows them.
        for role in [Role::Core, Role::Edge] {
            let config = load(role, "", &[]).unwrap();
            assert_eq!(config.link.keep_alive, Duration::from_secs(15));
            assert_eq!(config.link.idle_timeout, Duration::from_secs(60));
            assert_eq!(config.link.timeouts(), Timeouts::default());
            let text = config.to_toml();
            assert!(
                text.contains("\nkeep_alive = \"15s\"\n")
                    && text.contains("\nidle_timeout = \"1m\"\n"),
                "{text}"
            );
        }
        // The shortest a node accepts (the impaired suite's redial test runs with them),
        // and an idle timeout of exactly two keep-alives.
        let file = "[link]\nkeep_alive = \"1s\"\nidle_timeout = \"5s\"\n";
        let shortest = load(Role::Edge, file, &[]).unwrap().link.timeouts();
        assert_eq!(
            (shortest.keep_alive, shortest.idle_timeout),
            (
                *tls::KEEP_ALIVE_RANGE.start(),
                *tls::IDLE_TIMEOUT_RANGE.start()
            )
        );
        let file = "[link]\nkeep_alive = \"30s\"\nidle_timeout = \"1m\"\n";
        let twice = load(Role::Core, file, &[]).unwrap().link;
        assert_eq!(twice.keep_alive, Duration::from_secs(30));
        let file = "[link]\nkeep_alive = \"10m\"\nidle_timeout = \"1h\"\n";
        let longest = load(Role::Core, file, &[]).unwrap().link.timeouts();
        assert_eq!(
            (longest.keep_alive, longest.idle_timeout),
            (*tls::KEEP_ALIVE_RANGE.end(), *tls::IDLE_TIMEOUT_RANGE.end())
        );
        // The environment overrides the file.
        let env = [
            ("TETHER_LINK__KEEP_ALIVE", "20s"),
            ("TETHER_LINK__IDLE_TIMEOUT", "2m"),
        ];
        for role in [Role::Core, Role::Edge] {
            let config = load(role, "[link]\nidle_timeout = \"5m\"\n", &env).unwrap();
            assert_eq!(
                config.link.timeouts(),
                Timeouts {
                    keep_alive: Duration::from_secs(20),
                    idle_timeout: Duration::from_secs(120),
                }
            );
        }

        let link = |body: &str| load(Role::Edge, &format!("[link]\n{body}\n"), &[]);
        check_error(
            link("keep_alive = \"500ms\""),
            &[
                "config file /etc/tether/node.toml: link.keep_alive: must be from 1s to 10m, \
                 not 500ms",
            ],
        );
        check_error(
            link("keep_alive = \"11m\""),
            &["link.keep_alive: must be from 1s to 10m, not 11m"],
        );
        check_error(
            link("keep_alive = \"0s\""),
            &["link.keep_alive: must be more than 0"],
        );
        check_error(
            link("keep_alive = 15"),
            &["link.keep_alive", "add a unit, as in \"15s\""],
        );
        check_error(
            link("idle_timeout = \"4999ms\""),
            &["link.idle_timeout: must be from 5s to 1h, not 4999ms"],
        );
        check_error(
            link("idle_timeout = \"61m\""),
            &["link.idle_timeout: must be from 5s to 1h, not 61m"],
        );
        check_error(
            link("idle_timeout = \"99999999999999999d\""),
            &["link.idle_timeout", "too large"],
        );
        // Less than two keep-alives: named after the key that was set, with what to set.
        check_error(
            link("idle_timeout = \"20s\""),
            &[
                "config file /etc/tether/node.toml: link.idle_timeout: idle_timeout 20s is less \
                 than twice keep_alive 15s",
                "a healthy idle link would time out between two keep-alives",
                "set link.idle_timeout to at least 30s or link.keep_alive to at most 10s",
            ],
        );
        check_error(
            link("keep_alive = \"1m\"\nidle_timeout = \"90s\""),
            &[
                "link.idle_timeout: idle_timeout 90s is less than twice keep_alive 1m",
                "at least 2m or link.keep_alive to at most 45s",
            ],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_LINK__KEEP_ALIVE", "45s")]),
            &[
                "environment variable TETHER_LINK__KEEP_ALIVE: link.keep_alive: idle_timeout 1m \
                 is less than twice keep_alive 45s",
                "at least 90s or link.keep_alive to at most 30s",
            ],
        );
        check_error(
            load(
                Role::Core,
                "[link]\nkeep_alive = \"30s\"\nidle_timeout = \"1m\"\n",
                &[("TETHER_LINK__KEEP_ALIVE", "31s")],
            ),
            &["environment variable TETHER_LINK__KEEP_ALIVE: link.keep_alive: idle_timeout"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_LINK__IDLE_TIMEOUT", "1d")]),
            &[
                "environment variable TETHER_LINK__IDLE_TIMEOUT: link.idle_timeout: must be from \
                 5s to 1h, not 1d",
            ],
        );
    }

    #[test]
    fn download_allow_is_read_checked_and_printed() {
        let core = load(Role::Core, "", &[]).unwrap();
        assert!(core.pipeline.download_allow.is_empty());
        assert!(
            core.to_toml().contains("\ndownload_allow = []\n"),
            "{}",
            core.to_toml()
        );
        let text = "[pipeline]\ndownload_allow = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]\n";
        let core = load(Role::Core, text, &[]).unwrap();
        let shown: Vec<String> = core
            .pipeline
            .download_allow
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
        assert_eq!(load(Role::Core, &core.to_toml(), &[]).unwrap(), core);
        // From the environment as the other lists: names separated by commas, or TOML.
        for value in [
            "127.0.0.1/32, ::1",
            "[\"127.0.0.1\", \"::1/128\"]",
            "127.0.0.1,::1",
        ] {
            let env = [("TETHER_PIPELINE__DOWNLOAD_ALLOW", value)];
            let core = load(Role::Core, text, &env).unwrap();
            let shown: Vec<String> = core
                .pipeline
                .download_allow
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(shown, ["127.0.0.1", "::1"], "{value}");
        }
        check_error(
            load(
                Role::Core,
                "",
                &[("TETHER_PIPELINE__DOWNLOAD_ALLOW", "127.0.0.1,localhost")],
            ),
            &[
                "environment variable TETHER_PIPELINE__DOWNLOAD_ALLOW",
                "pipeline.download_allow[1]",
                "\"localhost\" is not an IP address or a CIDR range",
            ],
        );
        check_error(
            load(
                Role::Core,
                "[pipeline]\ndownload_allow = [\"10.1.0.0/8\"]\n",
                &[],
            ),
            &[
                "config file /etc/tether/node.toml",
                "pipeline.download_allow[0]",
                "the range is \"10.0.0.0/8\"",
            ],
        );
        check_error(
            load(
                Role::Core,
                "[pipeline]\ndownload_allow = [\"::1/200\"]\n",
                &[],
            ),
            &["pipeline.download_allow[0]", "0 to 128"],
        );
        check_error(
            load(
                Role::Core,
                "[pipeline]\ndownload_allow = [\"::1\", \"::1/128\"]\n",
                &[],
            ),
            &["pipeline.download_allow[1]", "::1 is listed twice"],
        );
        check_error(
            load(Role::Edge, "[pipeline]\ndownload_allow = []\n", &[]),
            &["pipeline.download_allow", "a core's key"],
        );
    }

    #[test]
    fn pipeline_and_http_keys_are_read_and_checked() {
        let text = "[pipeline]\nfeed = \"https://example.org/feed.json\"\nfeed_every = \"2s\"\n\
                    feed_batch = 5\nmax_download_bytes = \"2MiB\"\n[http]\nlisten = \"0.0.0.0:9000\"\n";
        let env = [
            ("TETHER_PIPELINE__START_SERVICES", "false"),
            ("TETHER_HTTP__TOKEN", "0123456789abcdef"),
        ];
        let core = load(Role::Core, text, &env).unwrap();
        assert_eq!(
            core.pipeline.feed.as_deref(),
            Some("https://example.org/feed.json")
        );
        assert_eq!(core.pipeline.feed_every, Duration::from_secs(2));
        assert_eq!(core.pipeline.feed_batch, 5);
        assert_eq!(core.pipeline.max_download_bytes, 2 << 20);
        assert!(!core.pipeline.start_services);
        assert_eq!(core.http.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        // What --print-config writes loads back the same.
        let again = load(Role::Core, &core.to_toml(), &env[1..]).unwrap();
        assert_eq!(again.pipeline, core.pipeline);
        assert_eq!(again.http, core.http);
        let edge = load(Role::Edge, "", &[]).unwrap();
        assert_eq!(edge.http.listen, SocketAddr::from(([127, 0, 0, 1], 8081)));
        check_error(
            load(Role::Edge, "[pipeline]\nfeed = \"x\"\n", &[]),
            &["pipeline.feed", "a core's key"],
        );
        check_error(
            load(Role::Core, "[pipeline]\nfeed_batch = 0\n", &[]),
            &["pipeline.feed_batch", "1 to 1000"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_HTTP__LISTEN", "8080")]),
            &["TETHER_HTTP__LISTEN", "http.listen", "not an address"],
        );
    }

    #[test]
    fn mirror_keys_are_read_and_checked() {
        let env = [("TETHER_MIRROR__MAX_RATE", "512KiB")];
        let core = load(Role::Core, "[mirror]\nvolume = \"/srv/v\"\n", &env).unwrap();
        assert_eq!(core.volume_dir(), Path::new("/srv/v"));
        assert_eq!(core.mirror.max_rate, Some(512 << 10));
        let edge = load(Role::Edge, "[node]\ndata_dir = \"/d\"\n", &[]).unwrap();
        assert_eq!(edge.mirror_dir(), Path::new("/d/mirror"));
        assert_eq!(edge.mirror.max_rate, None);
        check_error(
            load(Role::Core, "[mirror]\ndir = \"/m\"\n", &[]),
            &["mirror.dir", "an edge's key"],
        );
        check_error(
            load(Role::Edge, "", &[("TETHER_MIRROR__VOLUME", "/v")]),
            &["TETHER_MIRROR__VOLUME", "mirror.volume", "a core's key"],
        );
        check_error(
            load(Role::Edge, "[mirror]\nmax_rate = 0\n", &[]),
            &["mirror.max_rate"],
        );
    }

    #[test]
    fn bad_link_keys_name_the_key() {
        let link = |role, body: &str| load(role, &format!("[link]\n{body}\n"), &[]);
        check_error(
            link(Role::Core, "listen = \"localhost:7000\""),
            &[
                "config file /etc/tether/node.toml: link.listen",
                "invalid socket address",
            ],
        );
        check_error(
            link(Role::Core, "edges = [\"alpha\", \"Bravo\"]"),
            &["link.edges[1]: invalid node name \"Bravo\""],
        );
        check_error(
            link(Role::Core, "edges = [\"alpha\", \"alpha\"]"),
            &["link.edges[1]: duplicate edge alpha"],
        );
        check_error(
            link(Role::Core, "edges = [\"hq\"]"),
            &["link.edges[0]: hq is this core's own name"],
        );
        check_error(
            link(Role::Core, "edges = 3"),
            &["line 2", "a list of names, or names separated by commas"],
        );
        check_error(
            link(Role::Core, "core = \"hq:7000\""),
            &["link.core: an edge's key; a core listens on link.listen"],
        );
        check_error(
            link(Role::Edge, "allow_any_edge = true"),
            &["link.allow_any_edge: a core's key; an edge dials link.core"],
        );
        check_error(
            load(Role::Edge, "", &[("TETHER_LINK__LISTEN", "0.0.0.0:1")]),
            &["environment variable TETHER_LINK__LISTEN: link.listen: a core's key"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_LINK__EDGES", "alpha,b_c")]),
            &["environment variable TETHER_LINK__EDGES: link.edges[1]: invalid node name"],
        );
        check_error(
            link(Role::Edge, "core_name = \"alpha\""),
            &["link.core_name: alpha is this edge's own name"],
        );
        check_error(
            link(Role::Edge, "certs_dir = \"\""),
            &["link.certs_dir: must not be empty"],
        );
        check_error(
            link(Role::Edge, "demo_certs = \"yes\""),
            &["line 2", "invalid type"],
        );
        for (bad, why) in [
            ("hq", "no port"),
            ("hq:0", "port 0"),
            ("hq:70000", "not a number from 1 to 65535"),
            (":7000", "not a DNS name nor an IP address"),
            ("h q:7000", "not a DNS name"),
            ("fd00::1:7000", "in brackets"),
            ("127.0.0.1:0", "port 0"),
        ] {
            check_error(
                link(Role::Edge, &format!("core = \"{bad}\"")),
                &["link.core: invalid address", why],
            );
        }
    }

    #[test]
    fn empty_file_gives_the_role_defaults() {
        assert_eq!(
            load(Role::Core, "", &[]).unwrap(),
            Config::default_for(Role::Core)
        );
        assert_eq!(
            load(Role::Edge, "", &[]).unwrap(),
            Config::default_for(Role::Edge)
        );
        let none = Config::from_sources(Role::Edge, None, &[]).unwrap();
        assert_eq!(none, Config::default_for(Role::Edge));
        assert_eq!(none.node.data_dir, Path::new("data/alpha"));
    }

    #[test]
    fn file_values_are_read() {
        let text = r#"
            [node]
            name = "bravo"
            [store]
            max_entry_bytes = 4096
            disk_budget = "2 GiB"
            retention_interval = "1m"
            [[topics]]
            name = "REPORTS"
            scope = "core"
            max_bytes = "10MB"
            max_entries = 5
        "#;
        let config = load(Role::Edge, text, &[]).unwrap();
        assert_eq!(config.node.name.as_str(), "bravo");
        assert_eq!(config.node.data_dir, Path::new("data/bravo"));
        assert_eq!(config.store.max_entry_bytes, 4096);
        assert_eq!(config.store.disk_budget, Some(2 << 30));
        assert_eq!(config.store.retention_interval, Duration::from_secs(60));
        assert_eq!(config.topics.len(), 1);
        let retention = Retention {
            max_age: None,
            max_bytes: Some(10_000_000),
            max_entries: Some(5),
        };
        assert_eq!(config.topics[0].retention, retention);
        let store = config.store_config();
        assert_eq!(
            (store.node.as_str(), store.max_entry_bytes),
            ("bravo", 4096)
        );
        assert_eq!(config.store_dir(), Path::new("data/bravo/store"));
    }

    #[test]
    fn env_overrides_keys() {
        let env = [
            ("TETHER_NODE__NAME", "bravo"),
            ("TETHER_STORE__MAX_ENTRY_BYTES", "2MiB"),
            ("TETHER_STORE__CACHE_BYTES", "1024"),
            ("TETHER_LOG__FORMAT", "json"),
            ("TETHER_LOG__FILTER", "\"warn\""),
        ];
        let config = load(Role::Core, "[node]\nname = \"hq\"\n", &env).unwrap();
        assert_eq!(config.node.name.as_str(), "bravo");
        assert_eq!(config.node.data_dir, Path::new("data/bravo"));
        assert_eq!(config.store.max_entry_bytes, 2 << 20);
        assert_eq!(config.store.cache_bytes, 1024);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.filter, "warn");
        // A value that reads as a TOML integer is also tried as a string.
        let config = load(Role::Core, "", &[("TETHER_NODE__NAME", "7")]).unwrap();
        assert_eq!(config.node.name.as_str(), "7");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        check_error(
            load(Role::Core, "", &[("TETHER_NODE__NAME", "bad_name")]),
            &[
                "environment variable TETHER_NODE__NAME",
                "node.name",
                "invalid node name \"bad_name\"",
            ],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_STORE__MAX_ENTRY_BYTES", "lots")]),
            &[
                "TETHER_STORE__MAX_ENTRY_BYTES",
                "store.max_entry_bytes",
                "invalid size \"lots\"",
            ],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_STORE__TYPO", "1")]),
            &["TETHER_STORE__TYPO", "unknown field `typo`"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_LOG__FORMAT", "xml")]),
            &["TETHER_LOG__FORMAT", "unknown variant `xml`"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_TOPICS__NAME", "X")]),
            &["TETHER_TOPICS__NAME", "topics cannot be set"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_NODE__NAME__X", "x")]),
            &["TETHER_NODE__NAME__X", "in `node.name`"],
        );
        let file = "[node]\nname = \"hq\"\n";
        check_error(
            load(Role::Core, file, &[("TETHER_NODE__NAME__X", "x")]),
            &["`node.name` is not a section"],
        );
        check_error(
            load(Role::Core, "", &[("TETHER_NODE__", "x")]),
            &["TETHER_NODE__", "expected TETHER_<SECTION>__<KEY>"],
        );
    }

    #[test]
    fn bad_keys_name_the_file_and_the_key() {
        check_error(
            load(Role::Core, "[store]\nmax_entry_byte = 5\n", &[]),
            &[
                "config file /etc/tether/node.toml",
                "line 2",
                "unknown field `max_entry_byte`",
            ],
        );
        check_error(
            load(Role::Core, "[nodes]\n", &[]),
            &["/etc/tether/node.toml", "unknown field `nodes`"],
        );
        check_error(
            load(Role::Core, "[node]\nname = 3\n", &[]),
            &["/etc/tether/node.toml", "line 2", "invalid type"],
        );
        check_error(
            load(Role::Core, "[node\n", &[]),
            &["/etc/tether/node.toml", "line 1"],
        );
        check_error(
            load(
                Role::Core,
                "[[topics]]\nname = \"A\"\nscope = \"global\"\n",
                &[],
            ),
            &[
                "/etc/tether/node.toml",
                "line 3",
                "unknown variant `global`",
            ],
        );
        check_error(
            load(
                Role::Core,
                "[[topics]]\nname = \"A\"\nscope = \"all\"\nretention = \"1d\"\n",
                &[],
            ),
            &["/etc/tether/node.toml", "unknown field `retention`"],
        );
        check_error(
            load(Role::Core, "[log]\nfilter = \"a=nonsense=\"\n", &[]),
            &["config file /etc/tether/node.toml: log.filter: invalid filter"],
        );
    }

    #[test]
    fn bad_sizes_and_durations() {
        let store =
            |key: &str, value: &str| load(Role::Core, &format!("[store]\n{key} = {value}\n"), &[]);
        check_error(
            store("max_entry_bytes", "\"12XB\""),
            &["store.max_entry_bytes", "unknown unit \"XB\""],
        );
        check_error(
            store("max_entry_bytes", "\"MiB\""),
            &["store.max_entry_bytes", "expected a whole number"],
        );
        check_error(
            store("max_entry_bytes", "\"1.5MiB\""),
            &["store.max_entry_bytes", "use a whole number"],
        );
        check_error(
            store("max_entry_bytes", "0"),
            &["store.max_entry_bytes: must be more than 0"],
        );
        check_error(
            store("cache_bytes", "-1"),
            &["store.cache_bytes", "must not be negative"],
        );
        check_error(
            store("disk_budget", "\"99999999999TiB\""),
            &["store.disk_budget", "too large"],
        );
        check_error(
            store("disk_budget", "true"),
            &["line 2", "expected an integer or a string"],
        );
        check_error(
            store("retention_interval", "10"),
            &["store.retention_interval", "add a unit, as in \"10s\""],
        );
        check_error(
            store("retention_interval", "\"10\""),
            &["store.retention_interval", "add a unit"],
        );
        check_error(
            store("retention_interval", "\"10y\""),
            &["store.retention_interval", "unknown unit \"y\""],
        );
        check_error(
            store("retention_interval", "\"0s\""),
            &["store.retention_interval: must be more than 0"],
        );
        let topic = |extra: &str| {
            load(
                Role::Core,
                &format!("[[topics]]\nname = \"A\"\nscope = \"all\"\n{extra}\n"),
                &[],
            )
        };
        check_error(
            topic("max_age = \"1w\""),
            &[
                "config file /etc/tether/node.toml: topics[0].max_age",
                "unknown unit \"w\"",
            ],
        );
        check_error(
            topic("max_bytes = 0"),
            &["topics[0].max_bytes: must be more than 0"],
        );
        check_error(
            topic("max_entries = 0"),
            &["topics[0].max_entries: must be more than 0"],
        );

        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10mb"), Ok(10_000_000));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(size_value(1 << 20).to_string(), "\"1MiB\"");
        assert_eq!(size_value(10_000_000).to_string(), "\"10MB\"");
        assert_eq!(size_value(1001).to_string(), "1001");
    }

    #[test]
    fn bad_topics_name_their_index() {
        let topics = |names: &[&str]| {
            let text: String = names
                .iter()
                .map(|n| format!("[[topics]]\nname = \"{n}\"\nscope = \"all\"\n"))
                .collect();
            load(Role::Core, &text, &[])
        };
        check_error(
            topics(&["A", "B", "A"]),
            &["config file /etc/tether/node.toml: topics[2].name: duplicate topic A"],
        );
        check_error(
            topics(&["A", "B", "C/D"]),
            &["topics[2].name: invalid topic name \"C/D\""],
        );
        check_error(
            topics(&["_gaps"]),
            &["topics[0].name", "belong to the system"],
        );
    }
}
