//! In-process clusters for end-to-end tests: a core and edges, each with a real store on
//! disk and real QUIC with mutual TLS on 127.0.0.1, replicating through `protocol::link`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::entry::{NodeName, Offset, Retention, Scope, TopicConfig, TopicName};
use protocol::link::{
    self, LinkStatus, Links, Local, Mirror, MirrorSettings, MirrorSource, PeerLink, SessionSettings,
};
use protocol::log::{Store, StoreConfig};
use protocol::mirror::{MirrorState, MirrorStatus};
use protocol::node::Role;
use protocol::tls::{self, Allowed, Ca, NodeIdentity};

use crate::TempDir;
use crate::emulator::{Link, Profile};

/// What can go wrong starting a cluster (all of it is a test failure).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// One running node.
#[derive(Debug)]
pub struct Node {
    /// Its name.
    pub name: NodeName,
    /// Its store.
    pub store: Store,
    /// Its links.
    pub links: Links,
    endpoint: quinn::Endpoint,
    task: tokio::task::JoinHandle<()>,
    /// The core's served volume, in a mirroring cluster.
    pub source: Option<MirrorSource>,
    /// An edge's mirror, in a mirroring cluster.
    pub mirror: Option<Mirror>,
}

impl Node {
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
    /// The edges' mirror settings, in a mirroring cluster.
    mirror: Option<MirrorSettings>,
    /// The core.
    pub core: Node,
    /// The edges, in the order given (and any added with [`Cluster::add`]).
    pub edges: Vec<Node>,
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
        Cluster::start_with(edges, more, topics, settings(), None).await
    }

    /// Like [`Cluster::start_allowing`], every node with the session `settings` (the
    /// core's writers and relay quota among them).
    pub async fn start_with_settings(
        edges: &[&str],
        more: &[&str],
        topics: &[(&str, Scope)],
        settings: SessionSettings,
    ) -> Result<Cluster, Error> {
        Cluster::start_with(edges, more, topics, settings, None).await
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
            Some((max_rate, mirror)),
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

    /// The core's mission volume directory (served in a mirroring cluster).
    pub fn volume(&self) -> std::path::PathBuf {
        self.dir.path().join("hq-volume")
    }

    async fn start_with(
        edges: &[&str],
        more: &[&str],
        topics: &[(&str, Scope)],
        settings: SessionSettings,
        mirroring: Option<(Option<u64>, MirrorSettings)>,
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
        let allowed = Allowed::List(edges.iter().chain(more).map(|e| name(e)).collect());
        let (source, mirror) = match mirroring {
            Some((max_rate, mirror)) => {
                let volume = dir.path().join("hq-volume");
                std::fs::create_dir_all(&volume)?;
                (
                    Some(MirrorSource::open(volume, max_rate).await?),
                    Some(mirror),
                )
            }
            None => (None, None),
        };
        let core = start_core(&dir, &ca, &topics, allowed, &settings, source).await?;
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
        let mut cluster =
            Cluster::start_with(&[], &[n], topics, SessionSettings::default(), None).await?;
        let relay = Link::start(cluster.core_addr(), profile)?;
        let edge = cluster.start_edge_via(n, relay.addr()).await?;
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
        let node = name(n);
        let store = open_store(&self.dir, &node, &self.topics).await?;
        let identity = self.ca.issue(&node, Role::Edge)?;
        let endpoint =
            tls::client_endpoint(([127, 0, 0, 1], 0).into(), &identity, Arc::new(transport))?;
        let links = Links::default();
        let link = links.link(&name("hq"));
        let local = Local {
            store: store.clone(),
            core: false,
            settings: self.settings.clone(),
            mirror: None,
        };
        let mirror = match &self.mirror {
            Some(settings) => Some(Mirror::open(
                &self.dir.path().join(format!("{n}-mirror")),
                settings.clone(),
                link.clone(),
            )?),
            None => None,
        };
        let task = tokio::spawn(link::dial(
            local,
            endpoint.clone(),
            addr.to_string(),
            name("hq"),
            link,
        ));
        Ok(Node {
            name: node,
            store,
            links,
            endpoint,
            task,
            source: None,
            mirror,
        })
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
        let old = self.edges.remove(i);
        old.cut();
        old.store.close().await?;
        drop(old);
        let node = self.start_edge_via(n, addr).await?;
        self.edges.insert(i, node);
        Ok(())
    }
}

async fn start_core(
    dir: &TempDir,
    ca: &Ca,
    topics: &[TopicConfig],
    allowed: Allowed,
    settings: &SessionSettings,
    source: Option<MirrorSource>,
) -> Result<Node, Error> {
    let node = name("hq");
    let store = open_store(dir, &node, topics).await?;
    let identity: NodeIdentity = ca.issue(&node, Role::Core)?;
    let endpoint = tls::server_endpoint(
        ([127, 0, 0, 1], 0).into(),
        &identity,
        Arc::new(tls::transport_config(tls::Timeouts::default())),
    )?;
    let links = Links::default();
    let local = Local {
        store: store.clone(),
        core: true,
        settings: settings.clone(),
        mirror: source.clone(),
    };
    let task = tokio::spawn(link::serve(local, endpoint.clone(), allowed, links.clone()));
    Ok(Node {
        name: node,
        store,
        links,
        endpoint,
        task,
        source,
        mirror: None,
    })
}

/// Session settings for clusters on loopback: a short hello timeout, so that tests of a
/// silent peer do not wait a minute.
fn settings() -> SessionSettings {
    SessionSettings {
        hello_timeout: Duration::from_secs(3),
        ..SessionSettings::default()
    }
}

async fn open_store(
    dir: &TempDir,
    node: &NodeName,
    topics: &[TopicConfig],
) -> Result<Store, Error> {
    let store = Store::open(
        dir.path().join(node.as_str()),
        StoreConfig::new(node.clone()),
    )?;
    for topic in topics {
        store.create_topic(topic.clone()).await?;
    }
    Ok(store)
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
