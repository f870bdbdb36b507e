//! Printing: the config as the commented TOML file that `--print-config` writes.
//!
//! The printer walks the schema's `SECTIONS`, then the application's: for each key of the node's role, its help
//! as comment lines, then its line, `key = value` or, for a default that follows another
//! key or an example, `# key = value`. Loading the text back gives the config again.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use super::schema::{SECTIONS, TOPICS_HELP, default_data_dir};
use super::units::{format_duration, size_value};
use super::{App, Config, RELAY_DEFAULT};
use crate::entry::{Priority, Retention};
use crate::replication::Writer;

/// The top of the file: what applies to every key; the sections are named between its
/// first line and the rest.
const HEADER_TOP: &str = "# Tether node configuration.\n#\n";
/// The rest of the top of the file.
const HEADER: &str = r#"# overridden by an environment variable TETHER_<SECTION>__<KEY>, such as
# TETHER_NODE__NAME=bravo, TETHER_STORE__DISK_BUDGET=10GiB or
# TETHER_LINK__EDGES=alpha,bravo. Topics are set in this file only.
# Sizes are bytes, as an integer or a string with a unit: "512KiB", "64MiB", "10GB".
# Durations are strings with a unit: "500ms", "10s", "30m", "12h", "7d".
"#;

/// How a key is written in the printed config, under its help ([`App::line`]).
#[derive(Debug)]
pub enum Line {
    /// `key = value`.
    Set(toml::Value),
    /// `# key = value`: left out, with the default it takes (when that follows another
    /// key, such as the data directory, so that it keeps following it) or an example.
    Unset(toml::Value),
    /// `# key = "..."`: a secret, never printed; `true` when one is set.
    Secret(bool),
}

impl Config {
    /// The config of the framework alone as a commented TOML file (see
    /// [`Config::to_toml_with`]).
    pub fn to_toml(&self) -> String {
        self.to_toml_with(&())
    }

    /// The config and the application's settings `app` as a commented TOML file, as
    /// `--print-config` prints them. Loading the text back (for the same role and
    /// application) gives them again.
    pub fn to_toml_with<A: App>(&self, app: &A) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_toml(app, &mut out);
        out
    }

    fn write_toml<A: App>(&self, app: &A, out: &mut String) -> fmt::Result {
        out.push_str(HEADER_TOP);
        let names: Vec<String> = SECTIONS
            .iter()
            .chain(A::SECTIONS)
            .map(|section| format!("[{}]", section.name))
            .collect();
        if let Some((last, first)) = names.split_last() {
            writeln!(out, "# Every key of {} and {last} may be", first.join(", "))?;
        }
        out.push_str(HEADER);
        if self.topics.is_empty() {
            out.push_str("\n# This node holds no topics (without this key: the defaults).\n");
            out.push_str("topics = []\n");
        }
        let framework = SECTIONS.iter().map(|section| (section, true));
        for (section, ours) in framework.chain(A::SECTIONS.iter().map(|section| (section, false))) {
            write!(out, "\n[{}]\n", section.name)?;
            for key in section.keys.iter().filter(|key| key.applies_to(self.role)) {
                for help in key.help_for(self.role) {
                    writeln!(out, "# {help}")?;
                }
                let name = key.name;
                let line = if ours {
                    self.line(section.name, name)
                } else {
                    app.line(section.name, name)
                };
                match line {
                    Line::Set(value) => writeln!(out, "{name} = {value}")?,
                    Line::Unset(value) => writeln!(out, "# {name} = {value}")?,
                    Line::Secret(set) => {
                        let note = if set {
                            " (a token is set; not shown)"
                        } else {
                            ""
                        };
                        writeln!(out, "# {name} = \"...\"{note}")?;
                    }
                }
            }
        }
        self.write_topics(out)
    }

    /// The line of the key `name` of `[section]`.
    fn line(&self, section: &str, name: &str) -> Line {
        let text = |s: &str| toml::Value::String(s.to_owned());
        let path = |p: &Path| text(&p.to_string_lossy());
        let duration = |d| text(&format_duration(d));
        let list = |items: Vec<String>| {
            toml::Value::Array(items.into_iter().map(toml::Value::String).collect())
        };
        let optional_path = |set: &Option<PathBuf>| match set {
            Some(file) => Line::Set(path(file)),
            None => Line::Unset(text("")),
        };
        let dir = |set: &Option<PathBuf>, default: PathBuf| match set {
            Some(dir) => Line::Set(path(dir)),
            None => Line::Unset(path(&default)),
        };
        let Config {
            node,
            log,
            store,
            link,
            mirror,
            http,
            bridge,
            ..
        } = self;
        let relay = link.relay;
        match (section, name) {
            ("node", "name") => Line::Set(text(node.name.as_str())),
            ("node", "data_dir") if node.data_dir == default_data_dir(&node.name) => {
                Line::Unset(path(&node.data_dir))
            }
            ("node", "data_dir") => Line::Set(path(&node.data_dir)),
            ("log", "format") => Line::Set(text(log.format.as_str())),
            ("log", "filter") => Line::Set(text(&log.filter)),
            ("store", "max_entry_bytes") => Line::Set(size_value(store.max_entry_bytes)),
            ("store", "disk_budget") => match store.disk_budget {
                Some(budget) => Line::Set(size_value(budget)),
                None => Line::Unset(text("10GiB")),
            },
            ("store", "min_free") => Line::Set(size_value(store.min_free)),
            ("store", "cache_bytes") => Line::Set(size_value(store.cache_bytes)),
            ("store", "retention_interval") => Line::Set(duration(store.retention_interval)),
            ("link", "listen") => Line::Set(text(&link.listen.to_string())),
            ("link", "edges") => {
                Line::Set(list(link.edges.iter().map(|e| e.to_string()).collect()))
            }
            ("link", "allow_any_edge") => Line::Set(link.allow_any_edge.into()),
            ("link", "relay_rate") => {
                Line::Set(relay.map_or(toml::Value::Integer(0), |r| size_value(r.bytes_per_s)))
            }
            // TOML integers are signed; no quota is 2^63 entries a second.
            ("link", "relay_entries") => {
                Line::Set(toml::Value::Integer(relay.map_or(0, |r| {
                    i64::try_from(r.entries_per_s).unwrap_or(i64::MAX)
                })))
            }
            ("link", "relay_burst") => {
                Line::Set(duration(relay.map_or(RELAY_DEFAULT.burst, |r| r.burst)))
            }
            ("link", "allowance_age") => Line::Set(duration(link.allowance.age)),
            ("link", "allowance_bytes") => Line::Set(size_value(link.allowance.bytes)),
            ("link", "core") => Line::Set(text(&link.core)),
            ("link", "core_name") => Line::Set(text(link.core_name.as_str())),
            ("link", "failover") => {
                Line::Set(list(link.failover.iter().map(|c| c.to_string()).collect()))
            }
            ("link", "certs_dir") => dir(&link.certs_dir, self.certs_dir()),
            ("link", "demo_certs") => Line::Set(link.demo_certs.into()),
            ("link", "keep_alive") => Line::Set(duration(link.keep_alive)),
            ("link", "idle_timeout") => Line::Set(duration(link.idle_timeout)),
            ("mirror", "volume") => dir(&mirror.volume, self.volume_dir()),
            ("mirror", "dir") => dir(&mirror.dir, self.mirror_dir()),
            ("mirror", "max_rate") => match mirror.max_rate {
                Some(rate) => Line::Set(size_value(rate)),
                None => Line::Unset(text("64KiB")),
            },
            ("http", "listen") => Line::Set(text(&http.listen.to_string())),
            ("http", "token") => Line::Secret(http.token.is_some()),
            ("http", "read_token") => Line::Secret(http.read_token.is_some()),
            ("http", "insecure_no_token") => Line::Set(http.insecure_no_token.into()),
            ("http", "hosts") => Line::Set(list(http.hosts.clone())),
            ("bridge", "urls") => Line::Set(list(bridge.urls.clone())),
            ("bridge", "out") => {
                Line::Set(list(bridge.out.iter().map(|t| t.to_string()).collect()))
            }
            ("bridge", "stream") => Line::Set(text(&bridge.stream)),
            ("bridge", "subject_prefix") => Line::Set(text(&bridge.subject_prefix)),
            ("bridge", "in") => {
                Line::Set(list(bridge.inbound.iter().map(|t| t.to_string()).collect()))
            }
            ("bridge", "in_stream") => Line::Set(text(&bridge.in_stream)),
            ("bridge", "in_prefix") => Line::Set(text(&bridge.in_prefix)),
            ("bridge", "create_streams") => Line::Set(bridge.create_streams.into()),
            ("bridge", "replicas") => Line::Set(toml::Value::Integer(bridge.replicas as i64)),
            ("bridge", "duplicate_window") => Line::Set(duration(bridge.duplicate_window)),
            ("bridge", "in_flight") => Line::Set(toml::Value::Integer(bridge.in_flight as i64)),
            ("bridge", "user") => match &bridge.user {
                Some((user, _)) => Line::Set(text(user)),
                None => Line::Unset(text("")),
            },
            ("bridge", "password") => Line::Secret(bridge.user.is_some()),
            ("bridge", "token") => Line::Secret(bridge.token.is_some()),
            ("bridge", "nkey_seed_file") => optional_path(&bridge.nkey_seed_file),
            ("bridge", "creds_file") => optional_path(&bridge.creds_file),
            ("bridge", "tls_ca_file") => optional_path(&bridge.tls_ca_file),
            ("bridge", "tls_cert_file") => {
                optional_path(&bridge.tls_client.as_ref().map(|(cert, _)| cert.clone()))
            }
            ("bridge", "tls_key_file") => {
                optional_path(&bridge.tls_client.as_ref().map(|(_, key)| key.clone()))
            }
            ("bridge", "backbone") => Line::Set(bridge.backbone.into()),
            ("bridge", "backbone_stream") => Line::Set(text(&bridge.backbone_stream)),
            ("bridge", "backbone_prefix") => Line::Set(text(&bridge.backbone_prefix)),
            // SECTIONS and this match name the same keys, and the tests print every key
            // of both roles: a key added to one and not the other fails them.
            _ => unreachable!("config key {section}.{name} has help but no line"),
        }
    }

    /// `[[topics]]`, under their help, when the node holds any.
    fn write_topics(&self, out: &mut String) -> fmt::Result {
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        if !self.topics.is_empty() {
            out.push('\n');
            for help in TOPICS_HELP {
                writeln!(out, "# {help}")?;
            }
        }
        for topic in &self.topics {
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
            match self.priorities.of(&topic.name) {
                Priority::Normal => {}
                class => writeln!(out, "priority = \"{class}\"")?,
            }
            if self.latest_value.contains(&topic.name) {
                writeln!(out, "latest_value = true")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The framework's keys; the round trip of a printed config with its topics, and the
    //! mission's keys, are tested in `mission`.

    use super::Line;
    use crate::config::Config;
    use crate::config::schema::SECTIONS;
    use crate::config::tests::load;
    use crate::role::Role;

    /// The keys the file takes are the keys with help: the names serde lists for an
    /// unknown one, section by section, are those of `SECTIONS`.
    #[test]
    fn every_key_has_help() {
        let expected = |text: &str| {
            let err = load(Role::Core, text, &[]).unwrap_err().to_string();
            let (_, listed) = err.split_once("expected").expect("serde lists the keys");
            let mut names: Vec<String> = listed
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            names.sort();
            names
        };
        let mut sections: Vec<String> = SECTIONS.iter().map(|s| s.name.to_owned()).collect();
        sections.push("topics".to_owned());
        sections.sort();
        assert_eq!(expected("[no_such_section]\n"), sections);
        for section in SECTIONS {
            let mut keys: Vec<String> = section.keys.iter().map(|k| k.name.to_owned()).collect();
            keys.sort();
            let file = format!("[{}]\nno_such_key = 1\n", section.name);
            assert_eq!(expected(&file), keys, "[{}]", section.name);
        }
    }

    /// A key that `SECTIONS` gives one role (and so prints in that role's file only) is
    /// refused in the other's.
    #[test]
    fn keys_of_one_role_are_refused_in_the_other_s_file() {
        for section in SECTIONS {
            for key in section.keys {
                let Some(role) = key.role else { continue };
                let other = role.other();
                let value = match Config::default_for(role).line(section.name, key.name) {
                    Line::Set(value) | Line::Unset(value) => value,
                    Line::Secret(_) => panic!("no secret belongs to one role"),
                };
                let file = format!("[{}]\n{} = {value}\n", section.name, key.name);
                let err = load(other, &file, &[]).unwrap_err().to_string();
                let path = format!("{}.{}", section.name, key.name);
                assert!(
                    err.contains(&format!("{path}: a")) && err.contains("'s key"),
                    "{err}"
                );
            }
        }
    }
}
