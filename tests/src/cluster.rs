//! In-process clusters for end-to-end tests: a core and edges, each with a real store on
//! disk and real QUIC with mutual TLS on 127.0.0.1, replicating through `protocol::link`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::config::Config;
use protocol::entry::{NodeName, Offset, Retention, Scope, TopicConfig, TopicName};
use protocol::link::{
    LinkStatus, Links, Mirror, MirrorSettings, MirrorSource, PeerLink, SessionSettings,
};
use protocol::log::Store;
use protocol::mirror::{MirrorState, MirrorStatus};
use protocol::node::{Builder, NodeError, Role};
use protocol::replication::Writers;
use protocol::service::Services;
use protocol::tls::{self, Ca};

use crate::TempDir;
use crate::emulator::{Link, Profile};

/// What can go wrong starting a cluster (all of it is a test failure).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One running node: started by [`Builder`], served by [`protocol::node::Node::serve`] on a task
/// of its own until it is cut or dropped.
#[derive(Debug)]
pub struct Node {
    /// Its name.
    pub name: NodeName,
    /// Its store.
    pub store: Store,
    /// Its links.
    pub links: Links,
    endpoint: quinn::Endpoint,
    services: Services,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
    /// The core's served volume.
    pub source: Option<MirrorSource>,
    /// An edge's mirror.
    pub mirror: Option<Mirror>,
}

impl Node {
    /// Starts the node `builder` makes and serves it until [`Node::cut`].
    pub async fn start(builder: Builder) -> Result<Node, Error> {
        let node = builder.start().await?;
        let started = Node {
            name: node.config().node.name.clone(),
            store: node.store().clone(),
            links: node.links().clone(),
            endpoint: node.endpoint().clone(),
            services: node.services().clone(),
            source: node.mirror_source().cloned(),
            mirror: node.mirror().cloned(),
            task: tokio::spawn(node.serve(std::future::pending())),
        };
        Ok(started)
    }

    /// The link to `peer` (made if new).
    pub fn link(&self, peer: &str) -> Arc<PeerLink> {
        self.links.link(&name(peer))
    }

    /// The local address of the node's QUIC endpoint.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Stops the node's links at once (like a cable pulled): its store stays open.
    pub fn cut(&self) {
        self.task.abort();
        self.endpoint.close(quinn::VarInt::from_u32(0), b"cut");
    }

    /// Cuts the node, then closes its store: once this returns, nothing of the node
    /// holds the store, which opens again.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.cut();
        // An aborted task's handle resolves once its future (holding the store) dropped.
        let _ = (&mut self.task).await;
        self.services.halt().await;
        self.store.close().await?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A core and its edges, with the topics every node holds.
#[derive(Debug)]
pub struct Cluster {
    dir: TempDir,
    ca: Ca,
    topics: Vec<TopicConfig>,
    /// The session settings of every node.
    settings: SessionSettings,
    /// The edges' mirror settings.
    mirror: MirrorSettings,
    /// The core.
    pub core: Node,
    /// The edges, in the order given (and any added with [`Cluster::add`]).
    pub edges: Vec<Node>,
}

/// No cap on the core's chunk rate, default mirror settings at the edges.
fn uncapped() -> (Option<u64>, MirrorSettings) {
    (None, MirrorSettings::default())
}

/// A node name from a literal.
pub fn name(n: &str) -> NodeName {
    NodeName::new(n).unwrap_or_else(|e| panic!("{e}"))
}

/// A topic name from a literal.
pub fn topic(n: &str) -> TopicName {
    TopicName::new(n).unwrap_or_else(|e| panic!("{e}"))
}

impl Cluster {
    /// Starts a core `hq` and the named edges, each holding `topics`, all linked.
    pub async fn start(edges: &[&str], topics: &[(&str, Scope)]) -> Result<Cluster, Error> {
        Cluster::start_allowing(edges, &[], topics).await
    }

    /// Like [`Cluster::start`]; the core also allows the edges named in `more`, which
    /// are not started (tests connect as them by hand).
    pub async fn start_allowing(
        edges: &[&str],
        more: &[&str],
        topics: &[(&str, Scope)],
    ) -> Result<Cluster, Error> {
        Cluster::start_with(edges, more, topics, settings(), uncapped()).await
    }

    /// Like [`Cluster::start_allowing`], every node with the session `settings` (the
    /// core's writers and relay quota among them).
    pub async fn start_with_settings(
        edges: &[&str],
        more: &[&str],
        topics: &[(&str, Scope)],
        settings: SessionSettings,
    ) -> Result<Cluster, Error> {
        Cluster::start_with(edges, more, topics, settings, uncapped()).await
    }

    /// A mirroring cluster: a core `hq` serving the volume [`Cluster::volume`] (empty
    /// at first; its edges' chunk rate capped at `max_rate`) and one edge `n` keeping a
    /// mirror with `mirror` settings in `<dir>/<n>-mirror`, dialing the core directly or
    /// through a link emulator with `profile`, with the QUIC settings `transport` (see
    /// [`Cluster::start_edge_tuned`]). Holds no topics. Does not wait for the link.
    pub async fn start_mirroring(
        n: &str,
        profile: Option<Profile>,
        max_rate: Option<u64>,
        mirror: MirrorSettings,
        transport: quinn::TransportConfig,
    ) -> Result<(Cluster, Option<Link>), Error> {
        Cluster::start_mirroring_with(n, &[], profile, max_rate, mirror, transport).await
    }

    /// Like [`Cluster::start_mirroring`], every node also holding `topics` (entries and a
    /// mirror on one link, as the `priority` benchmark needs).
    pub async fn start_mirroring_with(
        n: &str,
        topics: &[(&str, Scope)],
        profile: Option<Profile>,
        max_rate: Option<u64>,
        mirror: MirrorSettings,
        transport: quinn::TransportConfig,
    ) -> Result<(Cluster, Option<Link>), Error> {
        let mut cluster = Cluster::start_with(
            &[],
            &[n],
            topics,
            SessionSettings::default(),
            (max_rate, mirror),
        )
        .await?;
        let relay = match profile {
            Some(profile) => Some(Link::start(cluster.core_addr(), profile)?),
            None => None,
        };
        let addr = relay.as_ref().map_or(cluster.core_addr(), Link::addr);
        let edge = cluster.start_edge_tuned(n, addr, transport).await?;
        cluster.add(edge);
        Ok((cluster, relay))
    }

    /// The core's mission volume directory (`mirror.volume`), empty at first.
    pub fn volume(&self) -> PathBuf {
        self.dir.path().join("hq-volume")
    }

    /// The config of node `n` of `role` in this cluster: its data in `<dir>/<n>`, the
    /// cluster's topics and session settings' writers and relay quota, on 127.0.0.1.
    fn config(&self, role: Role, n: &str) -> Config {
        config(&self.dir, role, n, &self.topics, &self.settings)
    }

    /// A cluster whose core allows `edges` and `more` and starts `edges`; the core's
    /// chunk rate is capped at `mirroring.0`, the edges mirror with `mirroring.1`.
    async fn start_with(
        edges: &[&str],
        more: &[&str],
        topics: &[(&str, Scope)],
        settings: SessionSettings,
        (max_rate, mirror): (Option<u64>, MirrorSettings),
    ) -> Result<Cluster, Error> {
        let dir = TempDir::new("cluster")?;
        let ca = Ca::create("test mission")?;
        let topics: Vec<TopicConfig> = topics
            .iter()
            .map(|(n, scope)| TopicConfig {
                name: topic(n),
                scope: *scope,
                retention: Retention::default(),
            })
            .collect();
        let mut config = config(&dir, Role::Core, "hq", &topics, &settings);
        config.link.edges = edges.iter().chain(more).map(|e| name(e)).collect();
        config.mirror.max_rate = max_rate;
        let identity = ca.issue(&config.node.name, Role::Core)?;
        let builder = Builder::new(Role::Core, config)
            .identity(identity)
            .session(settings.clone());
        let core = Node::start(builder).await?;
        let mut cluster = Cluster {
            dir,
            ca,
            topics,
            settings,
            mirror,
            core,
            edges: Vec::new(),
        };
        for edge in edges {
            let node = cluster.start_edge(edge).await?;
            cluster.edges.push(node);
        }
        Ok(cluster)
    }

    /// Adds a started edge to the cluster.
    pub fn add(&mut self, edge: Node) {
        self.edges.push(edge);
    }

    /// Starts a core `hq` holding `topics` and one edge `n` that dials it through a link
    /// emulator imposing `profile`; does not wait for the link to come up. The nodes
    /// run the default session settings, as on a real link (the hello timeout of
    /// loopback clusters is too short for a slow profile's first exchange).
    pub async fn start_through(
        n: &str,
        profile: Profile,
        topics: &[(&str, Scope)],
    ) -> Result<(Cluster, Link), Error> {
        let defaults = SessionSettings::default();
        let (cluster, relay) =
            Cluster::start_pair(n, topics, defaults.clone(), defaults, Some(profile)).await?;
        Ok((cluster, relay.ok_or("no link emulator")?))
    }

    /// A core `hq` holding `topics` with the session settings `at_core` (their
    /// `writers`, `priorities`, `latest_value` and `relay` in its config) and one edge
    /// `n` with `at_edge` (its `priorities` and `latest_value` in its own), dialing the
    /// core directly, or through a link emulator imposing `profile`; does not wait for
    /// the link to come up.
    pub async fn start_pair(
        n: &str,
        topics: &[(&str, Scope)],
        at_core: SessionSettings,
        at_edge: SessionSettings,
        profile: Option<Profile>,
    ) -> Result<(Cluster, Option<Link>), Error> {
        let mut cluster = Cluster::start_with(&[], &[n], topics, at_core, uncapped()).await?;
        let relay = profile
            .map(|profile| Link::start(cluster.core_addr(), profile))
            .transpose()?;
        let addr = relay.as_ref().map_or(cluster.core_addr(), Link::addr);
        let transport = tls::transport_config(tls::Timeouts::default());
        let edge = cluster.start_edge_as(n, addr, transport, at_edge).await?;
        cluster.add(edge);
        Ok((cluster, relay))
    }

    /// The edge called `n`.
    pub fn edge(&self, n: &str) -> &Node {
        self.edges
            .iter()
            .find(|e| e.name.as_str() == n)
            .unwrap_or_else(|| panic!("no edge {n}"))
    }

    /// The core's address.
    pub fn core_addr(&self) -> SocketAddr {
        self.core
            .endpoint
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An edge endpoint with a certificate for `n` from `ca`, not connected.
    pub fn endpoint_for(ca: &Ca, n: &str) -> Result<quinn::Endpoint, Error> {
        let identity = ca.issue(&name(n), Role::Edge)?;
        Ok(tls::client_endpoint(
            ([127, 0, 0, 1], 0).into(),
            &identity,
            Arc::new(tls::transport_config(tls::Timeouts::default())),
        )?)
    }

    /// The mission CA, to issue more identities.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Starts (or restarts, on its existing store) the edge `n`, dialing the core.
    pub async fn start_edge(&self, n: &str) -> Result<Node, Error> {
        self.start_edge_via(n, self.core_addr()).await
    }

    /// Like [`Cluster::start_edge`], dialing the core at `addr` (a link emulator's).
    pub async fn start_edge_via(&self, n: &str, addr: SocketAddr) -> Result<Node, Error> {
        self.start_edge_tuned(n, addr, tls::transport_config(tls::Timeouts::default()))
            .await
    }

    /// Like [`Cluster::start_edge_via`], with the edge's QUIC settings given instead of
    /// the defaults (such as [`tls::transport_config`] with other [`tls::Timeouts`]). The
    /// idle timeout applies to both sides (QUIC uses the smaller of the two), so a test can
    /// shorten it here alone.
    pub async fn start_edge_tuned(
        &self,
        n: &str,
        addr: SocketAddr,
        transport: quinn::TransportConfig,
    ) -> Result<Node, Error> {
        self.start_edge_as(n, addr, transport, self.settings.clone())
            .await
    }

    /// Like [`Cluster::start_edge_tuned`], with the edge's own session `settings` (such
    /// as an edge speaking the previous protocol version, `SessionSettings::version`);
    /// their `priorities` are the edge's config's.
    pub async fn start_edge_as(
        &self,
        n: &str,
        addr: SocketAddr,
        transport: quinn::TransportConfig,
        settings: SessionSettings,
    ) -> Result<Node, Error> {
        let mut config = self.config(Role::Edge, n);
        config.priorities = settings.priorities.clone();
        config.latest_value = settings.latest_value.clone();
        config.link.core = addr.to_string();
        config.mirror.dir = Some(self.dir.path().join(format!("{n}-mirror")));
        config.mirror.max_rate = self.mirror.max_rate;
        let identity = self.ca.issue(&config.node.name, Role::Edge)?;
        let builder = Builder::new(Role::Edge, config)
            .identity(identity)
            .transport(transport)
            .session(settings)
            .mirror(self.mirror.clone());
        Node::start(builder).await
    }

    /// Replaces edge `n` by a restarted one on the same store (after [`Node::cut`] or a
    /// drop of the old one, whose store must be closed first).
    pub async fn restart_edge(&mut self, n: &str) -> Result<(), Error> {
        self.restart_edge_via(n, self.core_addr()).await
    }

    /// Like [`Cluster::restart_edge`], dialing the core at `addr` (a link emulator's).
    pub async fn restart_edge_via(&mut self, n: &str, addr: SocketAddr) -> Result<(), Error> {
        let i = self
            .edges
            .iter()
            .position(|e| e.name.as_str() == n)
            .ok_or("no such edge")?;
        self.edges.remove(i).stop().await?;
        let node = self.start_edge_via(n, addr).await?;
        self.edges.insert(i, node);
        Ok(())
    }
}

/// The config of a test node `n` of `role` with its data in `data_dir`: holding only
/// `topics`, anyone writing any of them, no relay quota; its link on 127.0.0.1 (a core
/// listens on any free port, accepting `alpha`; an edge's core is `hq`); certificates
/// from files (`<data_dir>/certs`, none made) unless the builder is given an identity.
pub fn node_config(role: Role, n: &str, data_dir: PathBuf, topics: &[TopicConfig]) -> Config {
    let mut config = Config::default_for(role);
    config.node.name = name(n);
    config.node.data_dir = data_dir;
    config.topics = topics.to_vec();
    config.writers = Writers::default();
    config.link.relay = None;
    config.link.listen = ([127, 0, 0, 1], 0).into();
    config.link.edges = vec![name("alpha")];
    config.link.core_name = name("hq");
    config.link.demo_certs = false;
    config
}

/// The config of node `n` of `role` in a cluster in `dir`: [`node_config`] in `<dir>/<n>`
/// with the writers and relay quota of `settings`, the core's volume in
/// `<dir>/hq-volume`.
fn config(
    dir: &TempDir,
    role: Role,
    n: &str,
    topics: &[TopicConfig],
    settings: &SessionSettings,
) -> Config {
    let mut config = node_config(role, n, dir.path().join(n), topics);
    config.writers = settings.writers.clone();
    config.priorities = settings.priorities.clone();
    config.latest_value = settings.latest_value.clone();
    config.link.relay = settings.relay;
    config.mirror.volume = Some(dir.path().join("hq-volume"));
    config
}

/// Session settings for clusters on loopback: a short hello timeout, so that tests of a
/// silent peer do not wait a minute.
fn settings() -> SessionSettings {
    SessionSettings {
        hello_timeout: Duration::from_secs(3),
        ..SessionSettings::default()
    }
}

/// Waits (on the store's change signal, not by polling) until `topic` holds at least
/// `count` entries; fails after `within`.
pub async fn wait_for_count(
    store: &Store,
    topic: &TopicName,
    count: u64,
    within: Duration,
) -> Result<(), String> {
    let mut changes = store.changes();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let held = store.topic(topic).map_or(0, |t| t.next.0 - t.first.0);
        if held >= count {
            return Ok(());
        }
        changes.borrow_and_update();
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(format!(
                "{} holds {held} of {count} entries of {topic} after {within:?}",
                store.node()
            ));
        }
    }
}

/// Waits (on the link's status watch, not by polling) until `check` holds for the status
/// of `link`, and returns that status; fails after `within`, saying `what` was awaited.
pub async fn wait_link(
    link: &PeerLink,
    what: &str,
    within: Duration,
    check: impl Fn(&LinkStatus) -> bool,
) -> Result<LinkStatus, String> {
    let mut watch = link.watch();
    match tokio::time::timeout(within, watch.wait_for(|s| check(s))).await {
        Ok(Ok(status)) => Ok(status.clone()),
        _ => Err(format!(
            "the link to {} was not {what} after {within:?}: {:?}",
            link.peer(),
            link.status()
        )),
    }
}

/// Waits (on the mirror's status watch) until the mirror started last has ended, done
/// or failed, and returns its status; fails after `within`.
pub async fn mirror_finished(mirror: &Mirror, within: Duration) -> Result<MirrorStatus, String> {
    let mut watch = mirror.watch();
    let ended = tokio::time::timeout(
        within,
        watch.wait_for(|s| {
            !mirror.started() && matches!(s.state, MirrorState::Done | MirrorState::Failed)
        }),
    )
    .await;
    match ended {
        Ok(Ok(status)) => Ok(status.clone()),
        _ => Err(format!(
            "the mirror did not end within {within:?}: {:?}",
            mirror.status()
        )),
    }
}

/// Every entry of `topic` at `store`, from offset 0.
pub fn all(store: &Store, topic: &TopicName) -> Vec<protocol::entry::Record> {
    store
        .read(topic, Offset(0), usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"))
}
