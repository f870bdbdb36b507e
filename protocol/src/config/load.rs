//! Loading: the file as written, and the `TETHER_<SECTION>__<KEY>` variables over it.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{DeserializeSeed, MapAccess};

use super::check::Origins;
use super::first_run::FirstRun;
use super::schema::SECTIONS;
use super::units::Scalar;
use super::{App, Config, ConfigError, LogFormat};
use crate::entry::{Priority, Scope};
use crate::role::Role;

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "TETHER_";

impl Config {
    /// Loads the config of a node of this role running the application `A`: the
    /// defaults, the file at `path` if one is given, then (an edge's) the first-run
    /// setup's record ([`FirstRun`]), then the `TETHER_<SECTION>__<KEY>` environment
    /// variables. The file holds the framework's sections and `A`'s.
    pub fn load<A: App>(role: Role, path: Option<&Path>) -> Result<(Config, A), ConfigError> {
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
        let (mut config, app) =
            Config::from_sources::<A>(role, file.as_ref().map(|(p, t)| (*p, t.as_str())), &env)?;
        if role == Role::Edge
            && let Some(first_run) = FirstRun::read(&config.certs_dir())?
        {
            first_run.apply(&mut config);
        }
        Ok((config, app))
    }

    /// Loads from an optional `(path, text)` file and `(variable, value)` overrides, as
    /// [`Config::load`] does from the file it reads and the process environment (for
    /// tests and fuzzing: nothing is read).
    pub fn from_sources<A: App>(
        role: Role,
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
    ) -> Result<(Config, A), ConfigError> {
        let (mut table, mut raw) = match file {
            Some((path, text)) => {
                let parse_error = |source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source,
                };
                // Parsed once into the schema, so that errors point into the text, and
                // once as a plain table, for the overrides to edit.
                let raw: RawFile<A> = toml::from_str(text).map_err(parse_error)?;
                let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
                (table, raw)
            }
            None => (toml::Table::new(), RawFile::default()),
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
        let config = raw
            .config
            .check(role, A::topics(role), A::writers(), &origins)?;
        let app = A::check(raw.app, role, &origins)?;
        Ok((config, app))
    }
}

/// The whole file as written: the framework's sections and the application's. Not
/// `#[serde(flatten)]`, which ignores `deny_unknown_fields`: each top-level key goes to
/// the framework's field or the application's section of its name, and any other is
/// refused as serde refuses an unknown field, with its line.
#[derive(Debug)]
struct RawFile<A: App> {
    config: RawConfig,
    app: A::Raw,
}

impl<A: App> Default for RawFile<A> {
    fn default() -> Self {
        RawFile {
            config: RawConfig::default(),
            app: A::Raw::default(),
        }
    }
}

impl<'de, A: App> Deserialize<'de> for RawFile<A> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<A>(PhantomData<A>);
        impl<'de, A: App> serde::de::Visitor<'de> for Visitor<A> {
            type Value = RawFile<A>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawConfig")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawFile<A>, M::Error> {
                let mut raw = RawFile::<A>::default();
                let config = &mut raw.config;
                while let Some(key) = map.next_key_seed(TopKey::<A>(PhantomData))? {
                    match key {
                        "node" => config.node = map.next_value()?,
                        "log" => config.log = map.next_value()?,
                        "store" => config.store = map.next_value()?,
                        "link" => config.link = map.next_value()?,
                        "mirror" => config.mirror = map.next_value()?,
                        "http" => config.http = map.next_value()?,
                        "bridge" => config.bridge = map.next_value()?,
                        "topics" => config.topics = map.next_value()?,
                        section => map.next_value_seed(AppSection::<A> {
                            raw: &mut raw.app,
                            name: section,
                        })?,
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(Visitor(PhantomData))
    }
}

/// A top-level key of the file: a framework's section, an application's, or `topics`;
/// any other is refused with the names it could be, as serde words it.
struct TopKey<A>(PhantomData<A>);

impl<'de, A: App> DeserializeSeed<'de> for TopKey<A> {
    type Value = &'static str;
    fn deserialize<D: serde::Deserializer<'de>>(self, key: D) -> Result<&'static str, D::Error> {
        struct Visitor<A>(PhantomData<A>);
        impl<A: App> serde::de::Visitor<'_> for Visitor<A> {
            type Value = &'static str;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a section name")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<&'static str, E> {
                let names = || {
                    let sections = SECTIONS.iter().chain(A::SECTIONS);
                    sections.map(|section| section.name).chain(["topics"])
                };
                if let Some(name) = names().find(|name| *name == key) {
                    return Ok(name);
                }
                let listed: Vec<String> = names().map(|name| format!("`{name}`")).collect();
                Err(E::custom(format_args!(
                    "unknown field `{key}`, expected one of {}",
                    listed.join(", ")
                )))
            }
        }
        key.deserialize_identifier(Visitor::<A>(PhantomData))
    }
}

/// The application's section `name`, read into its raw form.
struct AppSection<'a, A: App> {
    raw: &'a mut A::Raw,
    name: &'static str,
}

impl<'de, A: App> DeserializeSeed<'de> for AppSection<'_, A> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, section: D) -> Result<(), D::Error> {
        A::read_section(self.raw, self.name, section)
    }
}

/// The framework's sections as written: every key optional, values not yet checked.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) node: RawNode,
    pub(super) log: RawLog,
    pub(super) store: RawStore,
    pub(super) link: RawLink,
    pub(super) mirror: RawMirror,
    pub(super) http: RawHttp,
    pub(super) bridge: RawBridge,
    pub(super) topics: Option<Vec<RawTopic>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) max_entry_bytes: Option<Scalar>,
    pub(super) disk_budget: Option<Scalar>,
    pub(super) min_free: Option<Scalar>,
    pub(super) cache_bytes: Option<Scalar>,
    pub(super) retention_interval: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLink {
    pub(super) listen: Option<String>,
    pub(super) edges: Option<NameList>,
    pub(super) allow_any_edge: Option<bool>,
    pub(super) core: Option<String>,
    pub(super) core_name: Option<String>,
    pub(super) failover: Option<NameList>,
    pub(super) certs_dir: Option<PathBuf>,
    pub(super) demo_certs: Option<bool>,
    pub(super) keep_alive: Option<Scalar>,
    pub(super) idle_timeout: Option<Scalar>,
    pub(super) relay_rate: Option<Scalar>,
    pub(super) relay_entries: Option<u64>,
    pub(super) relay_burst: Option<Scalar>,
    pub(super) allowance_age: Option<Scalar>,
    pub(super) allowance_bytes: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    pub(super) volume: Option<PathBuf>,
    pub(super) dir: Option<PathBuf>,
    pub(super) max_rate: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) token: Option<String>,
    pub(super) read_token: Option<String>,
    pub(super) insecure_no_token: Option<bool>,
    pub(super) hosts: Option<NameList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBridge {
    pub(super) urls: Option<NameList>,
    pub(super) out: Option<NameList>,
    pub(super) stream: Option<String>,
    pub(super) subject_prefix: Option<String>,
    #[serde(rename = "in")]
    pub(super) inbound: Option<NameList>,
    pub(super) in_stream: Option<String>,
    pub(super) in_prefix: Option<String>,
    pub(super) create_streams: Option<bool>,
    pub(super) replicas: Option<u64>,
    pub(super) duplicate_window: Option<Scalar>,
    pub(super) in_flight: Option<u64>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) token: Option<String>,
    pub(super) nkey_seed_file: Option<PathBuf>,
    pub(super) creds_file: Option<PathBuf>,
    pub(super) tls_ca_file: Option<PathBuf>,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) backbone: Option<bool>,
    pub(super) backbone_stream: Option<String>,
    pub(super) backbone_prefix: Option<String>,
}

/// A list of names as written: a TOML array of strings, or one string of names separated
/// by commas (handy in an environment variable: `TETHER_LINK__EDGES=alpha,bravo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameList(pub Vec<String>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopic {
    pub(super) name: String,
    pub(super) scope: Scope,
    pub(super) max_age: Option<Scalar>,
    pub(super) max_bytes: Option<Scalar>,
    pub(super) max_entries: Option<u64>,
    pub(super) writers: Option<RawWriters>,
    pub(super) priority: Option<Priority>,
    pub(super) latest_value: Option<bool>,
}

/// `writers` as written: `"any"`, `"core"`, or a list of edge names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawWriters {
    Word(String),
    Edges(Vec<String>),
}

/// Deserializes the edited table into the schema; the error is one line.
fn deserialize<A: App>(table: &toml::Table) -> Result<RawFile<A>, String> {
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
    use std::time::Duration;

    use super::*;
    use crate::config::tests::{check_error, load};
    use crate::entry::Retention;

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
        let (none, ()) = Config::from_sources(Role::Edge, None, &[]).unwrap();
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
}
