//! Printing: the config as the commented TOML file that `--print-config` writes.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use super::schema::default_data_dir;
use super::units::{format_duration, size_value};
use super::{Config, LinkSettings, MirrorConfig, PipelineSettings, RELAY_DEFAULT};
use crate::entry::Retention;
use crate::replication::Writer;
use crate::role::Role;

impl Config {
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
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::tests::load;
    use crate::config::{Config, LogFormat, LogSettings};
    use crate::entry::{NodeName, Retention};
    use crate::replication::Writers;
    use crate::role::Role;
    use crate::tls::Allowed;

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
}
