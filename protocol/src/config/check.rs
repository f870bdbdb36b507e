//! Checking: the file as written (with the environment over it) into [`Config`], each
//! error naming the key and where its value came from.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::load::{
    NameList, RawBridge, RawConfig, RawHttp, RawLink, RawMirror, RawTopic, RawWriters,
};
use super::schema::default_data_dir;
use super::units::{Scalar, format_duration, positive_duration, positive_size, size_or_zero};
use super::{
    Allowance, BridgeSettings, Config, ConfigError, FailoverCore, HttpSettings, LinkSettings,
    LogSettings, MirrorConfig, NodeSettings, Origin, RELAY_DEFAULT, StoreSettings,
};
use crate::entry::{NodeName, Priority, Retention, Scope, TopicConfig, TopicName};
use crate::link::Priorities;
use crate::link::RelayLimit;
use crate::replication::{Writer, Writers};
use crate::role::Role;
use crate::tls;

/// Where each key's value came from (the file, or the environment variable that set it),
/// to name it in errors.
#[derive(Debug)]
pub struct Origins {
    pub(super) file: Option<PathBuf>,
    /// `(dotted key path, variable)`, in the order applied.
    pub(super) overrides: Vec<(String, String)>,
}

impl Origins {
    /// Where the value of `key` (`section.key`, `section.key[2]`) came from.
    pub fn of(&self, key: &str) -> Origin {
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

    /// The error for a malformed or out-of-range value of `key`, naming where it came
    /// from: `config file <path>: <key>: <reason>`.
    pub fn invalid(&self, key: &str, reason: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            origin: self.of(key),
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl RawConfig {
    /// Fills in the role's defaults (with the application's `topics` and `writers`) and
    /// checks every value.
    pub(super) fn check(
        self,
        role: Role,
        topics: Vec<TopicConfig>,
        writers: Writers,
        origins: &Origins,
    ) -> Result<Config, ConfigError> {
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
                    size_or_zero(&value).map_err(|e| origins.invalid("store.disk_budget", e))?,
                ),
                None => None,
            },
            min_free: match self.store.min_free {
                Some(value) => {
                    size_or_zero(&value).map_err(|e| origins.invalid("store.min_free", e))?
                }
                None => defaults.store.min_free,
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
        let Topics {
            topics,
            writers,
            priorities,
            latest_value,
        } = match self.topics {
            Some(raw) => check_topics(raw, origins)?,
            None => Topics {
                topics,
                writers,
                priorities: Priorities::default(),
                latest_value: Vec::new(),
            },
        };
        let link = self.link.check(role, &name, defaults.link, origins)?;
        let mirror = self.mirror.check(role, origins)?;
        let http = self.http.check(defaults.http, origins)?;
        let bridge = self.bridge.check(role, origins)?;
        Ok(Config {
            role,
            link,
            mirror,
            http,
            bridge,
            node: NodeSettings { name, data_dir },
            log: LogSettings {
                format: self.log.format.unwrap_or(defaults.log.format),
                filter,
            },
            store,
            topics,
            writers,
            priorities,
            latest_value,
        })
    }
}

impl RawBridge {
    /// Checks the values, and that credentials and TLS files come in whole kinds.
    fn check(self, role: Role, origins: &Origins) -> Result<BridgeSettings, ConfigError> {
        let defaults = BridgeSettings::default();
        if role == Role::Edge {
            let core_keys = [
                ("bridge.backbone", self.backbone.is_some()),
                ("bridge.backbone_stream", self.backbone_stream.is_some()),
                ("bridge.backbone_prefix", self.backbone_prefix.is_some()),
            ];
            if let Some((key, _)) = core_keys.iter().find(|(_, set)| *set) {
                return Err(origins.invalid(key, "a core's key: the backbone joins an HQ's cores"));
            }
        }
        let urls = match self.urls {
            Some(NameList(urls)) => {
                for url in &urls {
                    check_nats_url(url).map_err(|e| origins.invalid("bridge.urls", e))?;
                }
                urls
            }
            None => defaults.urls,
        };
        let topics = |key: &str, list: Option<NameList>| -> Result<Vec<TopicName>, ConfigError> {
            let mut topics: Vec<TopicName> = Vec::new();
            for name in list.map(|NameList(names)| names).unwrap_or_default() {
                let topic = TopicName::new(name).map_err(|e| origins.invalid(key, e))?;
                if topic.as_str().starts_with('_') {
                    return Err(origins.invalid(
                        key,
                        format_args!("{topic} is one of the node's own topics; it is not bridged"),
                    ));
                }
                if topics.contains(&topic) {
                    return Err(origins.invalid(key, format_args!("{topic} is listed twice")));
                }
                topics.push(topic);
            }
            Ok(topics)
        };
        let out = topics("bridge.out", self.out)?;
        let inbound = topics("bridge.in", self.inbound)?;
        let name = |key: &str, value: Option<String>, default: String| match value {
            Some(value) => check_stream_name(&value)
                .map(|()| value)
                .map_err(|e| origins.invalid(key, e)),
            None => Ok(default),
        };
        let subject = |key: &str, value: Option<String>, default: String| match value {
            Some(value) => check_subject_prefix(&value)
                .map(|()| value)
                .map_err(|e| origins.invalid(key, e)),
            None => Ok(default),
        };
        let stream = name("bridge.stream", self.stream, defaults.stream)?;
        let in_stream = name("bridge.in_stream", self.in_stream, defaults.in_stream)?;
        let subject_prefix = subject(
            "bridge.subject_prefix",
            self.subject_prefix,
            defaults.subject_prefix,
        )?;
        let in_prefix = subject("bridge.in_prefix", self.in_prefix, defaults.in_prefix)?;
        let backbone_stream = name(
            "bridge.backbone_stream",
            self.backbone_stream,
            defaults.backbone_stream,
        )?;
        let backbone_prefix = subject(
            "bridge.backbone_prefix",
            self.backbone_prefix,
            defaults.backbone_prefix,
        )?;
        let backbone = self.backbone.unwrap_or(defaults.backbone);
        if backbone && urls.is_empty() {
            return Err(origins.invalid(
                "bridge.backbone",
                "the backbone is NATS JetStream: set bridge.urls to the cluster's servers",
            ));
        }
        if backbone {
            check_stream_name(&format!("{backbone_stream}_FLEET"))
                .map_err(|e| origins.invalid("bridge.backbone_stream", e))?;
            // The backbone's streams are written by every core: no other mapping's stream
            // may be one of them, and no prefix may take another's subjects.
            let fleet = format!("{backbone_stream}_FLEET");
            for (key, other) in [("bridge.stream", &stream), ("bridge.in_stream", &in_stream)] {
                if *other == backbone_stream || *other == fleet {
                    return Err(origins.invalid(
                        key,
                        format_args!("{other} is one of the backbone's streams"),
                    ));
                }
            }
            let b = format!("{backbone_prefix}.");
            let bf = format!("{backbone_prefix}-fleet.");
            for (key, other) in [
                ("bridge.subject_prefix", &subject_prefix),
                ("bridge.in_prefix", &in_prefix),
            ] {
                let o = format!("{other}.");
                if [&b, &bf]
                    .iter()
                    .any(|p| p.starts_with(&o) || o.starts_with(p.as_str()))
                {
                    return Err(origins.invalid(
                        key,
                        format_args!(
                            "{other:?} and backbone_prefix {backbone_prefix:?} overlap: the \
                             backbone's subjects are its own"
                        ),
                    ));
                }
            }
        }
        if !inbound.is_empty() && !out.is_empty() && stream == in_stream {
            // The way out counts on being the stream's only publisher.
            return Err(origins.invalid(
                "bridge.in_stream",
                format_args!(
                    "{in_stream} is also bridge.stream: what comes in needs a stream of its \
                     own, which applications publish to"
                ),
            ));
        }
        if !inbound.is_empty() && !out.is_empty() {
            let (a, b) = (format!("{subject_prefix}."), format!("{in_prefix}."));
            if a.starts_with(&b) || b.starts_with(&a) {
                return Err(origins.invalid(
                    "bridge.in_prefix",
                    format_args!(
                        "{in_prefix:?} and subject_prefix {subject_prefix:?} overlap: what goes out \
                         would come back in"
                    ),
                ));
            }
        }
        let replicas = match self.replicas {
            Some(n @ 1..=5) => n as usize,
            Some(n) => {
                return Err(origins.invalid(
                    "bridge.replicas",
                    format_args!("{n}: JetStream keeps 1 to 5 replicas of a stream"),
                ));
            }
            None => defaults.replicas,
        };
        let duplicate_window = match self.duplicate_window {
            Some(value) => positive_duration(&value)
                .map_err(|e| origins.invalid("bridge.duplicate_window", e))?,
            None => defaults.duplicate_window,
        };
        let in_flight = match self.in_flight {
            Some(n @ 1..=65_536) => n as usize,
            Some(n) => {
                return Err(origins.invalid(
                    "bridge.in_flight",
                    format_args!("{n}: from 1 to 65536 publishes"),
                ));
            }
            None => defaults.in_flight,
        };
        let user = match (self.user, self.password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(origins.invalid("bridge.password", "bridge.user needs a password"));
            }
            (None, Some(_)) => {
                return Err(origins.invalid("bridge.user", "bridge.password needs a user"));
            }
        };
        let kinds = [
            user.is_some(),
            self.token.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if kinds.iter().filter(|set| **set).count() > 1 {
            return Err(origins.invalid(
                "bridge.user",
                "set one kind of credentials: user and password, token, nkey_seed_file or \
                 creds_file",
            ));
        }
        let tls_client = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(origins.invalid(
                    "bridge.tls_cert_file",
                    "tls_cert_file and tls_key_file go together",
                ));
            }
        };
        Ok(BridgeSettings {
            urls,
            out,
            stream,
            subject_prefix,
            inbound,
            in_stream,
            in_prefix,
            create_streams: self.create_streams.unwrap_or(defaults.create_streams),
            replicas,
            duplicate_window,
            in_flight,
            user,
            token: self.token,
            nkey_seed_file: self.nkey_seed_file,
            creds_file: self.creds_file,
            tls_ca_file: self.tls_ca_file,
            tls_client,
            backbone,
            backbone_stream,
            backbone_prefix,
        })
    }
}

/// Checks a NATS server address: `nats://`, `tls://`, `ws://` or `wss://` with a host and
/// port, or a bare `host:port`.
fn check_nats_url(url: &str) -> Result<(), String> {
    let rest = ["nats://", "tls://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .unwrap_or(url);
    // Credentials in the URL (user:password@) would show in logs and the page.
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(format!(
            "{url:?}: put credentials in bridge.user/password or bridge.token, not in the URL"
        ));
    }
    check_host_port(rest).map_err(|e| format!("{url:?}: {e}"))
}

/// Checks a JetStream stream name: no spaces, dots, wildcards or path separators.
fn check_stream_name(name: &str) -> Result<(), String> {
    let ok = (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    ok.then_some(())
        .ok_or_else(|| format!("{name:?}: a stream name is 1 to 255 of A-Z, a-z, 0-9, '_' and '-'"))
}

/// Checks a subject prefix: dot-separated tokens without spaces or wildcards.
fn check_subject_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 200
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        });
    ok.then_some(()).ok_or_else(|| {
        format!(
            "{prefix:?}: a subject prefix is dot-separated tokens of A-Z, a-z, 0-9, '_' and '-'"
        )
    })
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
            "link.failover" => self.failover.is_some(),
            "link.listen" => self.listen.is_some(),
            "link.edges" => self.edges.is_some(),
            "link.relay_rate" => self.relay_rate.is_some(),
            "link.relay_entries" => self.relay_entries.is_some(),
            "link.relay_burst" => self.relay_burst.is_some(),
            "link.allowance_age" => self.allowance_age.is_some(),
            "link.allowance_bytes" => self.allowance_bytes.is_some(),
            _ => self.allow_any_edge.is_some(),
        };
        let (theirs, why): (&[&str], _) = match role {
            Role::Core => (
                &["link.core", "link.core_name", "link.failover"],
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
                    "link.allowance_age",
                    "link.allowance_bytes",
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
        let mut failover: Vec<FailoverCore> = Vec::new();
        for text in self.failover.map(|NameList(l)| l).unwrap_or_default() {
            let core = check_failover(&text).map_err(|e| origins.invalid("link.failover", e))?;
            if core.name == *name || core.name == core_name {
                return Err(origins.invalid(
                    "link.failover",
                    format_args!("{}: this edge itself, or link.core_name", core.name),
                ));
            }
            if failover.iter().any(|c| c.name == core.name) {
                return Err(origins.invalid(
                    "link.failover",
                    format_args!("{} is listed twice", core.name),
                ));
            }
            failover.push(core);
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
        let allowance = Allowance {
            age: match self.allowance_age {
                Some(value) => positive_duration(&value)
                    .map_err(|e| origins.invalid("link.allowance_age", e))?,
                None => defaults.allowance.age,
            },
            bytes: match self.allowance_bytes {
                Some(value) => {
                    size_or_zero(&value).map_err(|e| origins.invalid("link.allowance_bytes", e))?
                }
                None => defaults.allowance.bytes,
            },
        };
        Ok(LinkSettings {
            listen,
            edges,
            allow_any_edge: self.allow_any_edge.unwrap_or(defaults.allow_any_edge),
            core,
            core_name,
            failover,
            certs_dir,
            demo_certs,
            keep_alive,
            idle_timeout,
            relay,
            allowance,
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
/// Checks one `link.failover` entry, `name@host:port`.
fn check_failover(text: &str) -> Result<FailoverCore, String> {
    let (name, address) = text.split_once('@').ok_or_else(|| {
        format!("{text:?}: expected name@host:port, such as \"hq-b@hq-b.example.org:7000\"")
    })?;
    let name = NodeName::new(name).map_err(|e| e.to_string())?;
    check_host_port(address)?;
    Ok(FailoverCore {
        name,
        address: address.to_owned(),
    })
}

pub(super) fn check_host_port(text: &str) -> Result<(), String> {
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

/// `[[topics]]`, checked: the topics and what their keys say beyond `TopicConfig`.
struct Topics {
    topics: Vec<TopicConfig>,
    writers: Writers,
    priorities: Priorities,
    latest_value: Vec<TopicName>,
}

fn check_topics(raw: Vec<RawTopic>, origins: &Origins) -> Result<Topics, ConfigError> {
    let mut seen = HashSet::new();
    let mut topics = Vec::with_capacity(raw.len());
    let mut writers = Writers::default();
    let mut priorities = Priorities::default();
    let mut latest_value = Vec::new();
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
        match topic.priority {
            Some(Priority::Normal) | None => {}
            Some(class) if topic.scope == Scope::Local => {
                return Err(origins.invalid(
                    &key("priority"),
                    format_args!(
                        "topic {name} is local: its entries never cross a link, so a \
                         priority ({class}) has no meaning"
                    ),
                ));
            }
            Some(class) => priorities.0.push((name.clone(), class)),
        }
        match topic.latest_value {
            Some(true) if topic.scope == Scope::Local => {
                return Err(origins.invalid(
                    &key("latest_value"),
                    format_args!(
                        "topic {name} is local: its entries never cross a link, so there is \
                         nothing to conflate"
                    ),
                ));
            }
            Some(true) => latest_value.push(name.clone()),
            Some(false) | None => {}
        }
        topics.push(TopicConfig {
            name,
            scope: topic.scope,
            retention,
        });
    }
    Ok(Topics {
        topics,
        writers,
        priorities,
        latest_value,
    })
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
