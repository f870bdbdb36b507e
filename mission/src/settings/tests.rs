//! The mission's config: the `[pipeline]` keys read, checked and printed, with the
//! framework's errors; the default topics and writers; the printed defaults as the
//! binaries ship them. (Moved from `protocol::config`'s tests, assertions unchanged.)

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::config::{App, Config, ConfigError, Line, LogFormat, LogSettings, RELAY_DEFAULT};
use protocol::entry::{NodeName, Priority, Retention, TopicName};
use protocol::link::{Priorities, RelayLimit};
use protocol::node::Role;
use protocol::replication::Writers;
use protocol::tls::Allowed;

use super::{PipelineSettings, Settings};

/// A node's config and the mission's settings, as loaded together; it reads as the
/// framework's [`Config`] with a `pipeline` beside it, as the config was before the
/// mission left the framework.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    config: Config,
    pipeline: PipelineSettings,
}

impl Loaded {
    /// A node's defaults with the mission.
    fn default_for(role: Role) -> Loaded {
        let (config, settings) = Config::default_with::<Settings>(role);
        Loaded {
            config,
            pipeline: settings.pipeline,
        }
    }

    /// What `--print-config` prints for it.
    fn to_toml(&self) -> String {
        let settings = Settings {
            pipeline: self.pipeline.clone(),
        };
        self.config.to_toml_with(&settings)
    }
}

impl Deref for Loaded {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

impl DerefMut for Loaded {
    fn deref_mut(&mut self) -> &mut Config {
        &mut self.config
    }
}

/// Loads `text` as the file `/etc/tether/node.toml`, with `env` over it.
fn load(role: Role, text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let env: Vec<_> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let file = Some((Path::new("/etc/tether/node.toml"), text));
    let (config, settings) = Config::from_sources::<Settings>(role, file, &env)?;
    Ok(Loaded {
        config,
        pipeline: settings.pipeline,
    })
}

/// The error's message, checked to contain each of `parts`.
#[track_caller]
fn check_error(result: Result<Loaded, ConfigError>, parts: &[&str]) {
    let message = result.unwrap_err().to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} is not in:\n{message}");
    }
}

/// The binaries print their defaults as `config.dev.toml` holds them (the `nodes`
/// integration test checks the binaries themselves).
#[test]
fn printed_defaults_are_the_shipped_files() {
    let shipped = [
        (
            Role::Core,
            include_str!("../../../core-node/config.dev.toml"),
        ),
        (
            Role::Edge,
            include_str!("../../../edge-node/config.dev.toml"),
        ),
    ];
    for (role, file) in shipped {
        assert_eq!(Loaded::default_for(role).to_toml(), file, "{role:?}");
    }
}

/// The file's top-level names are the framework's sections, the mission's and
/// `topics`; the mission's sections take exactly the keys with help.
#[test]
fn every_key_has_help() {
    let expected = |text: &str| {
        let err = load(Role::Core, text, &[]).unwrap_err().to_string();
        let (_, listed) = err.split_once("expected").expect("serde lists the keys");
        let names: Vec<String> = listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        names
    };
    assert_eq!(
        expected("[no_such_section]\n"),
        [
            "node", "log", "store", "link", "mirror", "http", "bridge", "pipeline", "topics"
        ]
    );
    for section in Settings::SECTIONS {
        let mut keys: Vec<String> = section.keys.iter().map(|k| k.name.to_owned()).collect();
        keys.sort();
        let file = format!("[{}]\nno_such_key = 1\n", section.name);
        let mut listed = expected(&file);
        listed.sort();
        assert_eq!(listed, keys, "[{}]", section.name);
    }
}

/// A mission key of one role is refused in the other's file, as the framework's are.
#[test]
fn keys_of_one_role_are_refused_in_the_other_s_file() {
    for section in Settings::SECTIONS {
        for key in section.keys {
            let Some(role) = key.role else { continue };
            let other = role.other();
            let value = match Settings::default_for(role).line(section.name, key.name) {
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

/// Errors in the mission's sections read as they did in the framework's file: with the
/// line, or the variable and the key.
#[test]
fn pipeline_errors_name_the_line_or_the_variable() {
    check_error(
        load(Role::Core, "[pipeline]\nfeed_batch = \"x\"\n", &[]),
        &[
            "config file /etc/tether/node.toml: TOML parse error at line 2, column 14",
            "invalid type: string \"x\", expected i64",
        ],
    );
    check_error(
        load(Role::Core, "pipeline = 3\n", &[]),
        &["line 1, column 12", "expected struct RawPipeline"],
    );
    check_error(
        load(Role::Core, "", &[("TETHER_PIPELINE__FEED_BATCH", "x")]),
        &[
            "environment variable TETHER_PIPELINE__FEED_BATCH: invalid type: string \"x\", \
             expected i64 in `pipeline.feed_batch`",
        ],
    );
    check_error(
        load(Role::Core, "", &[("TETHER_PIPELINE__TYPO", "1")]),
        &[
            "TETHER_PIPELINE__TYPO: unknown field `typo`",
            "in `pipeline`",
        ],
    );
    check_error(
        load(Role::Core, "", &[("TETHER_NODES__X", "1")]),
        &[
            "environment variable TETHER_NODES__X: unknown field `nodes`, expected one of \
             `node`, `log`, `store`, `link`, `mirror`, `http`, `bridge`, `pipeline`, `topics`",
        ],
    );
    check_error(
        load(Role::Edge, "[nodes]\n", &[]),
        &[
            "config file /etc/tether/node.toml: TOML parse error at line 1, column 2",
            "unknown field `nodes`, expected one of `node`, `log`, `store`, `link`, \
             `mirror`, `http`, `bridge`, `pipeline`, `topics`",
        ],
    );
}

#[test]
fn printed_config_round_trips() {
    for role in [Role::Core, Role::Edge] {
        let config = Loaded::default_for(role);
        let text = config.to_toml();
        assert_eq!(load(role, &text, &[]).unwrap(), config, "{text}");
    }
    let mut config = Loaded::default_for(Role::Edge);
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
    let crossing = (config.topics.iter())
        .find(|t| t.scope.leaves_node())
        .map(|t| t.name.clone())
        .unwrap();
    config.priorities = Priorities(vec![(crossing.clone(), Priority::Urgent)]);
    config.latest_value = vec![crossing];
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
        text.contains("\nkeep_alive = \"2500ms\"\n") && text.contains("\nidle_timeout = \"90s\"\n"),
        "{text}"
    );
    assert!(text.contains("\npriority = \"urgent\"\n"), "{text}");
    assert!(text.contains("\nlatest_value = true\n"), "{text}");
    config.topics.clear();
    // Writers and priorities are properties of listed topics: none listed, none left.
    config.writers = Writers::default();
    config.priorities = Priorities::default();
    config.latest_value = Vec::new();
    let text = config.to_toml();
    assert_eq!(load(Role::Edge, &text, &[]).unwrap(), config, "{text}");

    let mut config = Loaded::default_for(Role::Core);
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
    let topics =
        |writers: &str| format!("[[topics]]\nname = \"A\"\nscope = \"all\"\nwriters = {writers}\n");
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
