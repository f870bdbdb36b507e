//! The checks' tests: every key read, and every malformed value named with its origin.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::entry::NodeName;
use crate::role::Role;
use crate::tls::{self, Allowed, Timeouts};

/// Loads `text` as the file `/etc/tether/node.toml`, with `env` over it, for the
/// framework alone (the mission's sections and defaults are tested in `mission`).
pub(super) fn load(role: Role, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<_> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let file = Some((Path::new("/etc/tether/node.toml"), text));
    Config::from_sources(role, file, &env).map(|(config, ())| config)
}

/// The error's message, checked to contain each of `parts`.
#[track_caller]
pub(super) fn check_error(result: Result<Config, ConfigError>, parts: &[&str]) {
    let message = result.unwrap_err().to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} is not in:\n{message}");
    }
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
fn link_timeouts_are_read_and_checked() {
    // The defaults, for both roles, as --print-config shows them.
    for role in [Role::Core, Role::Edge] {
        let config = load(role, "", &[]).unwrap();
        assert_eq!(config.link.keep_alive, Duration::from_secs(15));
        assert_eq!(config.link.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.link.timeouts(), Timeouts::default());
        let text = config.to_toml();
        assert!(
            text.contains("\nkeep_alive = \"15s\"\n") && text.contains("\nidle_timeout = \"1m\"\n"),
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
fn bad_bridge_keys_name_the_key() {
    let bridge = |body: &str| {
        let urls = match body.starts_with("urls") {
            true => "",
            false => "urls = [\"nats://127.0.0.1:4222\"]\n",
        };
        load(Role::Core, &format!("[bridge]\n{urls}{body}\n"), &[])
    };
    for (body, says) in [
        ("urls = [\"nats://me:secret@host:4222\"]", "not in the URL"),
        ("urls = [\"nats://host\"]", "no port"),
        ("out = [\"_gaps\"]", "node's own topics"),
        ("out = [\"NEWS\", \"NEWS\"]", "listed twice"),
        ("stream = \"A.B\"", "bridge.stream"),
        ("subject_prefix = \"a.*\"", "subject prefix"),
        (
            "out = [\"NEWS\"]\nin = [\"NEWS\"]\nin_stream = \"TETHER\"",
            "bridge.in_stream: TETHER is also bridge.stream",
        ),
        (
            "out = [\"NEWS\"]\nin = [\"NEWS\"]\nin_prefix = \"tether.in\"",
            "what goes out would come back in",
        ),
        ("replicas = 7", "1 to 5 replicas"),
        ("in_flight = 0", "from 1 to 65536"),
        ("password = \"x\"", "bridge.password needs a user"),
        (
            "user = \"u\"\npassword = \"p\"\ntoken = \"t\"",
            "one kind of credentials",
        ),
        ("tls_cert_file = \"c.pem\"", "go together"),
        (
            "backbone = true\nstream = \"TETHER_BACKBONE_FLEET\"",
            "one of the backbone's streams",
        ),
        (
            "backbone = true\nsubject_prefix = \"tether-bb\"",
            "the backbone's subjects are its own",
        ),
        ("backbone_prefix = \"bb.*\"", "bridge.backbone_prefix"),
    ] {
        check_error(bridge(body), &[says]);
    }
    let backbone = bridge("backbone = true").unwrap();
    assert!(backbone.bridge.backbone());
    check_error(
        load(Role::Edge, "[bridge]\nbackbone = true\n", &[]),
        &["bridge.backbone", "a core's key"],
    );
    check_error(
        load(Role::Core, "[bridge]\nbackbone = true\n", &[]),
        &["bridge.backbone", "set bridge.urls"],
    );
    let config = bridge("out = [\"NEWS\"]\nduplicate_window = \"5s\"").unwrap();
    assert!(config.bridge.enabled());
    assert_eq!(
        config.bridge.duplicate_window,
        std::time::Duration::from_secs(5)
    );
    assert!(!load(Role::Core, "", &[]).unwrap().bridge.enabled());
}

#[test]
fn an_edge_lists_other_cores_to_fail_over_to() {
    let edge = |body: &str| load(Role::Edge, &format!("[link]\n{body}\n"), &[]);
    let config = edge("failover = [\"hq-b@10.0.0.2:7000\", \"hq-c@[fd00::3]:7000\"]").unwrap();
    let listed: Vec<String> = config.link.failover.iter().map(|c| c.to_string()).collect();
    assert_eq!(listed, ["hq-b@10.0.0.2:7000", "hq-c@[fd00::3]:7000"]);
    let env = [("TETHER_LINK__FAILOVER", "hq-b@hq-b.example.org:7000")];
    let config = load(Role::Edge, "", &env).unwrap();
    assert_eq!(config.link.failover[0].address, "hq-b.example.org:7000");
    for (body, says) in [
        ("failover = [\"10.0.0.2:7000\"]", "expected name@host:port"),
        ("failover = [\"hq-b@10.0.0.2\"]", "link.failover"),
        ("failover = [\"HQ@10.0.0.2:7000\"]", "link.failover"),
        ("failover = [\"hq@10.0.0.2:7000\"]", "link.core_name"),
        (
            "failover = [\"b@10.0.0.2:7000\", \"b@10.0.0.3:7000\"]",
            "listed twice",
        ),
    ] {
        check_error(edge(body), &[says]);
    }
    check_error(
        load(Role::Core, "[link]\nfailover = []\n", &[]),
        &["link.failover", "an edge's key"],
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

#[test]
fn topic_priorities_are_read_and_checked() {
    use crate::entry::{Priority, TopicName};
    let text = r#"
        [[topics]]
        name = "contacts"
        scope = "all"
        priority = "urgent"
        [[topics]]
        name = "logs"
        scope = "core"
        priority = "bulk"
        [[topics]]
        name = "chat"
        scope = "all"
        priority = "normal"
        [[topics]]
        name = "positions"
        scope = "all"
    "#;
    let config = load(Role::Core, text, &[]).unwrap();
    let of = |n: &str| config.priorities.of(&TopicName::new(n).unwrap());
    assert_eq!(of("contacts"), Priority::Urgent);
    assert_eq!(of("logs"), Priority::Bulk);
    assert_eq!(of("chat"), Priority::Normal);
    assert_eq!(of("positions"), Priority::Normal);
    // Only the classes that are not normal are listed (and printed).
    assert_eq!(config.priorities.0.len(), 2);
    check_error(
        load(
            Role::Core,
            "[[topics]]\nname = \"a\"\nscope = \"all\"\npriority = \"high\"\n",
            &[],
        ),
        &["unknown variant `high`", "urgent", "bulk"],
    );
    check_error(
        load(
            Role::Edge,
            "[[topics]]\nname = \"notes\"\nscope = \"local\"\npriority = \"urgent\"\n",
            &[],
        ),
        &["topics[0].priority", "notes is local"],
    );
}

#[test]
fn latest_value_topics_are_read_and_checked() {
    use crate::entry::TopicName;
    let text = r#"
        [[topics]]
        name = "positions"
        scope = "all"
        latest_value = true
        [[topics]]
        name = "reports"
        scope = "core"
        latest_value = false
    "#;
    let config = load(Role::Core, text, &[]).unwrap();
    assert_eq!(
        config.latest_value,
        vec![TopicName::new("positions").unwrap()]
    );
    check_error(
        load(
            Role::Core,
            "[[topics]]\nname = \"a\"\nscope = \"all\"\nlatest_value = \"yes\"\n",
            &[],
        ),
        &["line 4", "latest_value = \"yes\"", "expected a boolean"],
    );
    check_error(
        load(
            Role::Edge,
            "[[topics]]\nname = \"notes\"\nscope = \"local\"\nlatest_value = true\n",
            &[],
        ),
        &["topics[0].latest_value", "notes is local"],
    );
}
