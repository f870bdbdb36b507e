//! The core's trust decisions at run time, with the real node runtime (`Node::start`,
//! stores on disk, QUIC with mutual TLS on 127.0.0.1, certificates in files):
//!
//! - revocation: a connected edge is cut when the operator revokes it (the test waits on
//!   the close event and prints how long it took), its certificate is refused at the next
//!   handshake and after a core restart, and a new certificate for the same name connects;
//! - rotation: certificates replaced on disk are served to the next handshake, by the
//!   core and by the edge, without a restart;
//! - forgetting: the core releases what it kept for a forgotten edge, and when the edge
//!   returns, what it missed is a gap at both ends.
//!
//! Nothing here sleeps to synchronise: every wait is on a watch (link status, store
//! changes) or a connection's close, with a timeout that only bounds a failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::config::Config;
use protocol::entry::{Append, Offset, Retention, Scope, Seq, TopicConfig};
use protocol::log::{GAPS_TOPIC, Gap, Store};
use protocol::node::{Node, Role};
use protocol::tls::{self, Ca, CertificateInfo, CloseCode, NodeIdentity};
use tests::TempDir;
use tests::cluster::{name, topic, wait_for_count, wait_link};

/// Bounds every wait: only a failing test ever reaches it.
const WITHIN: Duration = Duration::from_secs(20);

/// A node started with the real runtime, served in a task until [`Running::stop`].
struct Running {
    store: Store,
    links: protocol::link::Links,
    edges: Option<protocol::edges::Edges>,
    credentials: tls::Credentials,
    link_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(role: Role, config: Config) -> Running {
        let node = Node::start(role, config).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (store, links) = (node.store().clone(), node.links().clone());
        let (edges, credentials) = (node.edges().cloned(), node.credentials().clone());
        let link_addr = node.link_addr().unwrap();
        let until = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move { node.serve(until).await.unwrap() });
        Running {
            store,
            links,
            edges,
            credentials,
            link_addr,
            stop,
            task,
        }
    }

    /// Stops the node (links closed with a reason, store closed) and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }

    fn edges(&self) -> &protocol::edges::Edges {
        self.edges.as_ref().unwrap()
    }
}

/// Configs of a core `hq` (listing `alpha`) and an edge `alpha` sharing its certificates
/// directory (the demo's way: the core issues the files at its first start).
struct Mission {
    dir: TempDir,
    topics: Vec<TopicConfig>,
}

impl Mission {
    fn new(purpose: &str, topics: Vec<TopicConfig>) -> Mission {
        Mission {
            dir: TempDir::new(purpose).unwrap(),
            topics,
        }
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    fn core(&self) -> Config {
        let (mut config, _) = Config::default_with::<mission::Settings>(Role::Core);
        config.node.data_dir = self.dir.path().join("hq");
        config.link.certs_dir = Some(self.certs());
        config.link.listen = ([127, 0, 0, 1], 0).into();
        config.link.edges = vec![name("alpha")];
        config.topics.extend(self.topics.iter().cloned());
        config
    }

    fn edge(&self, core: std::net::SocketAddr) -> Config {
        let (mut config, _) = Config::default_with::<mission::Settings>(Role::Edge);
        config.node.data_dir = self.dir.path().join("alpha");
        config.link.certs_dir = Some(self.certs());
        config.link.core = core.to_string();
        config
            .topics
            .extend(self.topics.iter().map(|t| TopicConfig {
                retention: Retention::default(),
                ..t.clone()
            }));
        config
    }

    /// Replaces `node`'s certificate and key with new ones from the mission CA; returns
    /// what the new certificate says.
    fn renew(&self, node: &str, role: Role) -> CertificateInfo {
        renew(&self.certs(), node, role)
    }
}

fn renew(certs: &Path, node: &str, role: Role) -> CertificateInfo {
    for ext in ["pem", "key"] {
        std::fs::remove_file(certs.join(format!("{node}.{ext}"))).unwrap();
    }
    let ca = Ca::load(certs).unwrap();
    let identity = ca.issue(&name(node), role).unwrap();
    identity.save(certs).unwrap();
    certificate_of(certs, node, role)
}

fn certificate_of(certs: &Path, node: &str, role: Role) -> CertificateInfo {
    let identity = NodeIdentity::load(certs, &name(node), role).unwrap();
    tls::Credentials::fixed(&identity).unwrap().certificate()
}

/// Dials the core at `addr` once as `alpha` with the files in `certs`.
async fn dial(certs: &Path, addr: std::net::SocketAddr) -> tls::Peer {
    let identity = NodeIdentity::load(certs, &name("alpha"), Role::Edge).unwrap();
    dial_as(&identity, addr).await
}

async fn dial_as(identity: &NodeIdentity, addr: std::net::SocketAddr) -> tls::Peer {
    let transport = Arc::new(tls::transport_config(tls::Timeouts::default()));
    let endpoint = tls::client_endpoint(([127, 0, 0, 1], 0).into(), identity, transport).unwrap();
    tls::connect(&endpoint, addr, &name("hq")).await.unwrap()
}

/// Dials as [`dial`] does; the core must close the connection (it does so right after
/// the handshake when it refuses the edge). Returns how it ended.
async fn refused(certs: &Path, addr: std::net::SocketAddr) -> quinn::ConnectionError {
    let peer = dial(certs, addr).await;
    tokio::time::timeout(WITHIN, peer.connection.closed())
        .await
        .unwrap()
}

fn close_code(err: &quinn::ConnectionError) -> Option<CloseCode> {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => CloseCode::from_code(close.error_code),
        _ => None,
    }
}

#[tokio::test]
async fn a_revoked_edge_is_cut_and_refused_and_a_new_certificate_connects() {
    let mission = Mission::new("trust-revoke", Vec::new());
    let hq = Running::start(Role::Core, mission.core()).await;
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let (to_hq, at_hq) = (alpha.links.link(&name("hq")), hq.links.link(&name("alpha")));
    for link in [&to_hq, &at_hq] {
        wait_link(link, "up", WITHIN, |s| s.connected)
            .await
            .unwrap();
    }
    let old = certificate_of(&mission.certs(), "alpha", Role::Edge);
    let status = hq.edges().status(&name("alpha"));
    assert!(status.connected && status.listing.admitted(), "{status:?}");
    assert_eq!(status.certificates.len(), 1);
    assert_eq!(status.certificates[0].key_sha256, old.key_sha256);

    // Revoked: the edge's link goes down at once (the close event, not a timeout).
    let started = Instant::now();
    let revoked = hq.edges().revoke(&name("alpha")).await.unwrap();
    wait_link(&to_hq, "cut", WITHIN, |s| !s.connected)
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("revocation: the edge's link closed {took:?} after the revoke call");
    assert!(revoked.certificates.iter().all(|c| c.revoked.is_some()));
    alpha.stop().await;

    // The same certificate cannot come back: refused with the reason `revoked`.
    let closed = refused(&mission.certs(), hq.link_addr).await;
    assert_eq!(close_code(&closed), Some(CloseCode::Revoked), "{closed:?}");
    assert!(tls::explain(&closed).contains("revoked"), "{closed}");

    // Nor after the core restarts: the revocation is in its store.
    hq.stop().await;
    let hq = Running::start(Role::Core, mission.core()).await;
    let closed = refused(&mission.certs(), hq.link_addr).await;
    assert_eq!(close_code(&closed), Some(CloseCode::Revoked), "{closed:?}");

    // A new certificate and key for the same name: admitted; the edge links up.
    let new = mission.renew("alpha", Role::Edge);
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let at_hq = hq.links.link(&name("alpha"));
    wait_link(&at_hq, "up again", WITHIN, |s| s.connected)
        .await
        .unwrap();
    let status = hq.edges().status(&name("alpha"));
    let serials: Vec<(&str, bool)> = status
        .certificates
        .iter()
        .map(|c| (c.serial.as_str(), c.revoked.is_some()))
        .collect();
    assert_eq!(
        serials,
        [(old.serial.as_str(), true), (new.serial.as_str(), false)]
    );

    // Removing it from the list at run time also cuts it, with its own reason.
    let removed = hq.edges().remove(&name("alpha")).await.unwrap();
    assert!(!removed.listing.admitted());
    let to_hq = alpha.links.link(&name("hq"));
    wait_link(&to_hq, "cut by the removal", WITHIN, |s| !s.connected)
        .await
        .unwrap();
    alpha.stop().await;
    let closed = refused(&mission.certs(), hq.link_addr).await;
    assert_eq!(
        close_code(&closed),
        Some(CloseCode::NotAllowed),
        "{closed:?}"
    );
    hq.stop().await;
}

#[tokio::test]
async fn renewed_certificates_are_used_without_a_restart() {
    let mission = Mission::new("trust-rotate", Vec::new());
    let hq = Running::start(Role::Core, mission.core()).await;
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let at_hq = hq.links.link(&name("alpha"));
    wait_link(&at_hq, "up", WITHIN, |s| s.connected)
        .await
        .unwrap();
    let before = hq.credentials.certificate();

    // The core's files are replaced (as cert-manager does): the next handshake gets the
    // new certificate, and the running node reports it.
    let renewed = mission.renew("hq", Role::Core);
    assert_ne!(renewed.serial, before.serial);
    // (Dialing as another edge, which the core refuses after the handshake: a dial as
    // alpha would replace alpha's link.)
    let probe = Ca::load(&mission.certs())
        .unwrap()
        .issue(&name("probe"), Role::Edge)
        .unwrap();
    let peer = dial_as(&probe, hq.link_addr).await;
    assert_eq!(peer.certificate, Some(renewed.clone()));
    assert_eq!(hq.credentials.certificate(), renewed);

    // The edge's files are replaced; its next handshake presents the new one (the link
    // is cut here to make it dial again).
    let renewed = mission.renew("alpha", Role::Edge);
    let mut watch = at_hq.watch();
    at_hq.close(CloseCode::Shutdown, "the test makes the edge dial again");
    let down_then_up = async {
        watch.wait_for(|s| !s.connected).await.unwrap();
        watch.wait_for(|s| s.connected).await.unwrap();
    };
    tokio::time::timeout(WITHIN, down_then_up).await.unwrap();
    let status = hq.edges().status(&name("alpha"));
    let last = status.certificates.last().unwrap();
    assert_eq!(last.serial, renewed.serial);
    assert_eq!(alpha.credentials.certificate(), renewed);
    alpha.stop().await;
    hq.stop().await;
}

#[tokio::test]
async fn a_forgotten_edge_is_released_and_its_loss_is_a_gap_when_it_returns() {
    let news = TopicConfig {
        name: topic("NEWS"),
        scope: Scope::All,
        retention: Retention {
            max_entries: Some(1),
            ..Retention::default()
        },
    };
    let mission = Mission::new("trust-forget", vec![news]);
    let hq = Running::start(Role::Core, mission.core()).await;
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let news = topic("NEWS");
    let append = |n: u32| hq.store.append(&news, Append::new(format!("news {n}")));
    append(1).await.unwrap();
    wait_for_count(&alpha.store, &news, 1, WITHIN)
        .await
        .unwrap();
    // The core knows alpha holds it (its acknowledgement is stored every second).
    wait_store(&hq.store, || {
        hq.store
            .peer_vector(&name("alpha"), &news)
            .unwrap()
            .get(&name("hq"))
            == Seq(1)
    })
    .await;
    alpha.stop().await;

    // While alpha is away, the core keeps what it lacks, past the topic's limit of 1.
    for n in 2..=4 {
        append(n).await.unwrap();
    }
    assert_eq!(hq.store.enforce_retention().await.unwrap().removed, 1);
    assert_eq!(hq.store.topic(&news).unwrap().first, Offset(1));

    // Forgotten: released at once; alpha is out of the list.
    let forgotten = hq.edges().forget(&name("alpha")).await.unwrap();
    assert!(forgotten.known, "{forgotten:?}");
    assert_eq!(forgotten.released, 2);
    assert!(!hq.edges().status(&name("alpha")).listing.admitted());

    // It returns (added again): 2 and 3 are a gap, recorded at the core and replicated;
    // 4 arrives; nothing is skipped without a record.
    hq.edges().add(&name("alpha")).await.unwrap();
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let gaps = topic(GAPS_TOPIC);
    wait_for_count(&alpha.store, &gaps, 1, WITHIN)
        .await
        .unwrap();
    wait_for_count(&alpha.store, &news, 2, WITHIN)
        .await
        .unwrap();
    let gap = Gap {
        topic: news.clone(),
        origin: name("hq"),
        first: Seq(2),
        last: Seq(3),
        reason: "removed while alpha was forgotten or released (the core kept nothing for it)"
            .into(),
        peers: vec![name("alpha")],
    };
    for store in [&hq.store, &alpha.store] {
        let recorded: Vec<Gap> = tests::cluster::all(store, &gaps)
            .iter()
            .map(|r| serde_json::from_slice(&r.entry.payload).unwrap())
            .collect();
        assert_eq!(recorded, vec![gap.clone()], "at {}", store.node());
    }
    let held: Vec<String> = tests::cluster::all(&alpha.store, &news)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.entry.payload).into_owned())
        .collect();
    assert_eq!(held, ["news 1", "news 4"]);
    assert_eq!(alpha.store.vector(&news).unwrap().get(&name("hq")), Seq(4));
    alpha.stop().await;
    hq.stop().await;
}

/// An edge away longer than its allowance (`link.allowance_age`; the check is given a
/// clock 31 days ahead) is released: the core keeps nothing more for it, but it stays
/// listed; when it returns, what it lacked is a gap at both ends and it gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_away_past_its_allowance_age_is_released_and_gets_a_gap() {
    use protocol::config::Allowance;
    use std::time::SystemTime;
    let news = TopicConfig {
        name: topic("NEWS"),
        scope: Scope::All,
        retention: Retention {
            max_entries: Some(1),
            ..Retention::default()
        },
    };
    let mission = Mission::new("trust-allowance", vec![news]);
    let hq = Running::start(Role::Core, mission.core()).await;
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let news = topic("NEWS");
    let append = |n: u32| hq.store.append(&news, Append::new(format!("news {n}")));
    append(1).await.unwrap();
    wait_store(&hq.store, || {
        hq.store
            .peer_vector(&name("alpha"), &news)
            .unwrap()
            .get(&name("hq"))
            == Seq(1)
    })
    .await;
    alpha.stop().await;
    for n in 2..=4 {
        append(n).await.unwrap();
    }
    let month = Allowance {
        age: Duration::from_secs(30 * 24 * 3600),
        bytes: 0,
    };
    let edges = hq.edges();
    // Just gone: within its allowance, kept.
    let now = SystemTime::now();
    assert!(edges.check_allowances(month, now).await.unwrap().is_empty());
    assert_eq!(hq.store.enforce_retention().await.unwrap().removed, 1);
    let status = edges.status(&name("alpha"));
    assert!(
        status.last_seen.is_some() && status.released.is_none(),
        "{status:?}"
    );

    // A month and a day later: released, still listed; retention frees what it lacked.
    let later = now + Duration::from_secs(31 * 24 * 3600);
    let released = edges.check_allowances(month, later).await.unwrap();
    assert_eq!(released, vec![name("alpha")]);
    let status = edges.status(&name("alpha"));
    let (_, why) = status.released.clone().expect("released");
    assert!(
        why.contains("away for") && why.contains("allowance_age"),
        "{why}"
    );
    assert!(status.listing.admitted(), "{status:?}");
    assert_eq!(hq.store.enforce_retention().await.unwrap().removed, 2);
    assert!(hq.store.held_for(&name("alpha")).unwrap().is_none());

    // It returns: 2 and 3 are a gap at both ends, 4 arrives, and it is kept for again.
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let gaps = topic(GAPS_TOPIC);
    wait_for_count(&alpha.store, &gaps, 1, WITHIN)
        .await
        .unwrap();
    wait_for_count(&alpha.store, &news, 2, WITHIN)
        .await
        .unwrap();
    for store in [&hq.store, &alpha.store] {
        let recorded: Vec<Gap> = tests::cluster::all(store, &gaps)
            .iter()
            .map(|r| serde_json::from_slice(&r.entry.payload).unwrap())
            .collect();
        assert_eq!(
            recorded
                .iter()
                .map(|g| (g.first, g.last))
                .collect::<Vec<_>>(),
            [(Seq(2), Seq(3))],
            "at {}",
            store.node()
        );
    }
    assert!(hq.store.held_for(&name("alpha")).unwrap().is_some());
    edges
        .check_allowances(month, SystemTime::now())
        .await
        .unwrap();
    assert!(edges.status(&name("alpha")).released.is_none());
    alpha.stop().await;
    hq.stop().await;
}

/// An edge whose certificate is near its end renews it over the link at start: a new
/// key made at the edge, a certificate from HQ for it, both files replaced, the new
/// certificate used at the next handshake and recorded by HQ. A revoked edge cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_near_its_end_is_renewed_over_the_link() {
    use std::time::SystemTime;
    let mission = Mission::new("trust-renewal", Vec::new());
    let hq = Running::start(Role::Core, mission.core()).await;
    // alpha's certificate: 10 days used, 1 day left (renewed once under 1/8 is left).
    let certs = mission.certs();
    for ext in ["pem", "key"] {
        std::fs::remove_file(certs.join(format!("alpha.{ext}"))).unwrap();
    }
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    Ca::load(&certs)
        .unwrap()
        .issue_valid(&name("alpha"), Role::Edge, now - 10 * day, now + day)
        .unwrap()
        .save(&certs)
        .unwrap();
    let old = certificate_of(&certs, "alpha", Role::Edge);
    let alpha = Running::start(Role::Edge, mission.edge(hq.link_addr)).await;
    let deadline = Instant::now() + WITHIN;
    while alpha.credentials.certificate().serial == old.serial {
        assert!(
            Instant::now() < deadline,
            "the certificate was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = alpha.credentials.certificate();
    assert_ne!(new.key_sha256, old.key_sha256, "a new key");
    assert!(new.not_after > now + 365 * day, "{new:?}");
    assert_eq!(
        certificate_of(&certs, "alpha", Role::Edge),
        new,
        "the files"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(certs.join("alpha.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0);
    // The next handshake shows it, and HQ records it.
    let link = hq.links.get(&name("alpha")).unwrap();
    let since = link.status().since;
    link.close(CloseCode::Shutdown, "the test wants a new handshake");
    let up = alpha.links.get(&name("hq")).unwrap();
    wait_link(&up, "alpha's new session", WITHIN, |s| {
        s.connected && s.since > since
    })
    .await
    .unwrap();
    let deadline = Instant::now() + WITHIN;
    while !hq
        .edges()
        .status(&name("alpha"))
        .certificates
        .iter()
        .any(|c| c.serial == new.serial)
    {
        assert!(
            Instant::now() < deadline,
            "HQ never saw the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revoked: no renewal, and the reason says why.
    hq.edges().revoke(&name("alpha")).await.unwrap();
    let refused = protocol::edges::enrollment::renew(
        &hq.link_addr.to_string(),
        &name("hq"),
        &alpha.credentials,
        &name("alpha"),
        &certs,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("revoked"), "{refused}");
    assert_eq!(alpha.credentials.certificate(), new);
    alpha.stop().await;
    hq.stop().await;
}

/// Waits on the store's change signal until `done` holds.
async fn wait_store(store: &Store, done: impl Fn() -> bool) {
    let mut changes = store.changes();
    let waited = tokio::time::timeout(WITHIN, async {
        while !done() {
            changes.changed().await.unwrap();
        }
    });
    waited.await.unwrap();
}
