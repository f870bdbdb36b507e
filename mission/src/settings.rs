//! The mission's part of the node's config ([`Settings`], registered as the framework's
//! `config::App`): the `[pipeline]` section (its keys' help, checks and printed lines),
//! and the pipeline's topics and their writers, which a node holds when its file lists no
//! `[[topics]]`.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use protocol::config::{
    App, ConfigError, Key, Line, NameList, Origins, SEE_ABOVE, Scalar, Section, format_duration,
    positive_duration, positive_size, size_value,
};
use protocol::entry::{Retention, Scope, TopicConfig};
use protocol::ip_range::IpRange;
use protocol::log::Store;
use protocol::node::Role;
use protocol::replication::{Writer, Writers};

use crate::{
    ASSET_BROADCAST, ASSET_REQUEST, ASSET_RESPONSE, IMAGE_DOWNLOAD, IMAGE_FEED, MESSAGES, topic,
};

#[cfg(test)]
mod tests;

/// The mission's settings: its sections of the node's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `[pipeline]`: the mission pipeline's services.
    pub pipeline: PipelineSettings,
}

/// The `[pipeline]` section: the mission pipeline's services (DESIGN.md; each key's help:
/// `SECTIONS` in this file, which `--print-config` writes above it). Every key but
/// `start_services` is the core's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// `feed`; `None`: the built-in demo feed, served by the core itself.
    pub feed: Option<String>,
    /// `feed_every`.
    pub feed_every: Duration,
    /// `feed_batch`: 1 to 1000.
    pub feed_batch: u32,
    /// `max_download_bytes`.
    pub max_download_bytes: u64,
    /// `download_timeout`.
    pub download_timeout: Duration,
    /// `download_allow`: empty by default, since HQ's own HTTP address, where the demo
    /// feed's images are served, is always allowed.
    pub download_allow: Vec<IpRange>,
    /// `start_services`.
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

/// The mission's sections as written: every key optional, values not yet checked.
#[derive(Debug, Default)]
pub struct RawSettings {
    pipeline: RawPipeline,
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

/// The mission's sections of the config file, each key with its help, in the order
/// `--print-config` writes them (after the framework's).
const SECTIONS: &[Section] = &[Section {
    name: "pipeline",
    keys: &[
        Key::core(
            "feed",
            &[
                "The IMAGE feed document: a path or an http(s) URL, in the NASA Image and Video",
                "Library API format. Left out: the built-in demo feed, served by this node.",
            ],
        ),
        Key::core(
            "feed_every",
            &["How often the feed service picks new items, and how many each time."],
        ),
        Key::core("feed_batch", SEE_ABOVE),
        Key::core("max_download_bytes", &["Limits on one image download."]),
        Key::core("download_timeout", SEE_ABOVE),
        Key::core(
            "download_allow",
            &[
                "A feed item's image is fetched over http(s) only, and never from an internal address",
                "(loopback, private, link-local, shared, multicast, broadcast, reserved; IPv6 forms",
                "that embed such an IPv4 address too), checked after DNS and at every redirect. The",
                "addresses (\"10.0.0.7\") and CIDR ranges (\"10.0.0.0/8\", \"fd00::/8\") listed here are",
                "allowed all the same. This node's own HTTP address is always allowed.",
            ],
        ),
        Key::both(
            "start_services",
            &[
                "Start every service the first time the node starts; afterwards the node",
                "remembers which services an operator left running.",
            ],
        ),
    ],
}];

impl App for Settings {
    const SECTIONS: &'static [Section] = SECTIONS;

    type Raw = RawSettings;

    fn read_section<'de, D: Deserializer<'de>>(
        raw: &mut RawSettings,
        name: &str,
        section: D,
    ) -> Result<(), D::Error> {
        match name {
            "pipeline" => raw.pipeline = RawPipeline::deserialize(section)?,
            _ => {
                return Err(serde::de::Error::custom(format_args!(
                    "no section [{name}]"
                )));
            }
        }
        Ok(())
    }

    fn default_for(_: Role) -> Settings {
        Settings::default()
    }

    fn check(raw: RawSettings, role: Role, origins: &Origins) -> Result<Settings, ConfigError> {
        Ok(Settings {
            pipeline: raw.pipeline.check(role, origins)?,
        })
    }

    fn line(&self, section: &str, key: &str) -> Line {
        let text = |s: &str| toml::Value::String(s.to_owned());
        let duration = |d| text(&format_duration(d));
        let pipeline = &self.pipeline;
        match (section, key) {
            ("pipeline", "feed") => match &pipeline.feed {
                Some(feed) => Line::Set(text(feed)),
                None => Line::Unset(text(
                    "https://images-api.nasa.gov/search?q=apollo&media_type=image",
                )),
            },
            ("pipeline", "feed_every") => Line::Set(duration(pipeline.feed_every)),
            ("pipeline", "feed_batch") => {
                Line::Set(toml::Value::Integer(i64::from(pipeline.feed_batch)))
            }
            ("pipeline", "max_download_bytes") => {
                Line::Set(size_value(pipeline.max_download_bytes))
            }
            ("pipeline", "download_timeout") => Line::Set(duration(pipeline.download_timeout)),
            ("pipeline", "download_allow") => Line::Set(toml::Value::Array(
                pipeline
                    .download_allow
                    .iter()
                    .map(|r| toml::Value::String(r.to_string()))
                    .collect(),
            )),
            ("pipeline", "start_services") => Line::Set(pipeline.start_services.into()),
            // SECTIONS and this match name the same keys, and the tests print every key
            // of both roles: a key added to one and not the other fails them.
            _ => unreachable!("config key {section}.{key} has help but no line"),
        }
    }

    /// The mission pipeline's topics (DESIGN.md, "The mission pipeline") as each role
    /// holds them.
    fn topics(role: Role) -> Vec<TopicConfig> {
        const DAY: u64 = 24 * 60 * 60;
        let held = |name: &str, scope, days| TopicConfig {
            name: topic(name),
            scope,
            retention: Retention {
                max_age: Some(Duration::from_secs(days * DAY)),
                ..Retention::default()
            },
        };
        // The core's internal pipeline steps are worth a week; what crosses the link is
        // kept a month, so that an edge that was away for weeks still finds it.
        let mut topics = match role {
            Role::Core => vec![
                held(IMAGE_FEED, Scope::Local, 7),
                held(IMAGE_DOWNLOAD, Scope::Local, 7),
            ],
            Role::Edge => Vec::new(),
        };
        topics.extend([
            held(MESSAGES, Scope::All, 30),
            held(ASSET_BROADCAST, Scope::All, 30),
            held(ASSET_REQUEST, Scope::Core, 30),
            held(ASSET_RESPONSE, Scope::All, 30),
        ]);
        topics
    }

    /// Who writes the default topics: HQ alone broadcasts assets and answers requests.
    fn writers() -> Writers {
        let core_only = |name| (topic(name), Writer::Edges(Vec::new()));
        Writers(vec![core_only(ASSET_BROADCAST), core_only(ASSET_RESPONSE)])
    }

    /// `edge-node request <id>`: marks the asset as wanted ([`crate::request`]).
    fn request(store: &Store, id: &str) -> impl Future<Output = Result<String, String>> {
        let id = id.to_owned();
        async move {
            let state = crate::request(store, &id)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "asset {id} is {state}; the request crosses when the node runs"
            ))
        }
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
