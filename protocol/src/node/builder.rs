//! The one place a node is put together: [`Builder`] wires identity, store, topics,
//! services, the core's edges and volume, the link endpoint and the edge's mirror.
//!
//! `Node::start(role, config)` is `Builder::new(role, config).start()`. Everything a
//! config says comes from the config; the builder's methods set only what a config cannot
//! say and tests and benchmarks need: an identity held in memory instead of certificate
//! files, the QUIC transport, session and mirror settings beyond the config's.
//!
//! IO: the store, certificates, volume and mirror directories; the link endpoint's socket.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::{info, warn};

use super::{Node, NodeError, Role};
use crate::bridge::{Backbone, Bridge};
use crate::config::Config;
use crate::edges::Edges;
use crate::link::{self, Links, Local, Mirror, MirrorSettings, MirrorSource, SessionSettings};
use crate::log::Store;
use crate::service::Services;
use crate::tls::{self, CA_KEY_FILE, Credentials, NodeIdentity, TlsError};

/// How a node is made: from its config, plus what a config cannot say (see the module
/// doc). [`Builder::start`] gives a started [`Node`].
pub struct Builder {
    role: Role,
    config: Config,
    identity: Option<NodeIdentity>,
    transport: Option<quinn::TransportConfig>,
    session: SessionSettings,
    mirror: MirrorSettings,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("role", &self.role)
            .field("node", &self.config.node.name)
            .field("identity", &self.identity.as_ref().map(NodeIdentity::name))
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A node of `role` as `config` says: identity from `link.certs_dir`, QUIC transport
    /// from `[link]`, default session and mirror settings with the config's writers,
    /// relay quota and mirror rate.
    pub fn new(role: Role, config: Config) -> Builder {
        Builder {
            role,
            config,
            identity: None,
            transport: None,
            session: SessionSettings::default(),
            mirror: MirrorSettings::default(),
        }
    }

    /// Uses `identity` (issued for the config's node name and role, for example by a
    /// test's [`tls::Ca`]) instead of loading certificate files; it is never reloaded.
    pub fn identity(mut self, identity: NodeIdentity) -> Builder {
        self.identity = Some(identity);
        self
    }

    /// Uses the QUIC `transport` settings instead of [`tls::transport_config`] with the
    /// config's `[link]` timeouts.
    pub fn transport(mut self, transport: quinn::TransportConfig) -> Builder {
        self.transport = Some(transport);
        self
    }

    /// The link sessions' settings; their `writers` and `relay` still come from the
    /// config (`[[topics]] writers`, `[link] relay_*`).
    pub fn session(mut self, settings: SessionSettings) -> Builder {
        self.session = settings;
        self
    }

    /// The edge's mirror settings; `max_rate` still comes from the config
    /// (`[mirror] max_rate`). Unused at the core.
    pub fn mirror(mut self, settings: MirrorSettings) -> Builder {
        self.mirror = settings;
        self
    }

    /// Loads the identity, opens the store, creates the configured topics, opens the
    /// core's edges and volume or the edge's mirror, and the link endpoint (the core
    /// listens, an edge dials). Every startup error surfaces here.
    pub async fn start(self) -> Result<Node, NodeError> {
        let Builder {
            role,
            config,
            identity,
            transport,
            session,
            mirror,
        } = self;
        let identity_error = |source| NodeError::Identity {
            node: config.node.name.clone(),
            source,
            hint: String::new(),
        };
        // Loaded first, so that a missing or bad certificate stops the node at once.
        let credentials = match identity {
            Some(identity) => Credentials::fixed(&identity).map_err(identity_error)?,
            None => {
                let identity = load_identity(role, &config)?;
                Credentials::watch(&identity, &config.certs_dir()).map_err(identity_error)?
            }
        };
        // Opening reads the catalog from disk on this thread: it happens once, before the
        // node does anything else, so blocking a worker for it is harmless.
        let store_config = config.store_config();
        let store = Store::open(config.store_dir(), store_config.clone())?;
        match (config.store.disk_budget, store_config.disk_budget) {
            (None, Some(budget)) => tracing::info!(
                disk_budget = budget,
                min_free = store_config.min_free,
                "store: entries are kept within a disk budget of a third of the disk's room \
                 for the store (set store.disk_budget to choose, 0 for none)"
            ),
            (_, budget) => tracing::info!(
                disk_budget = budget.unwrap_or(0),
                min_free = store_config.min_free,
                "store: disk budget as configured (0: none)"
            ),
        }
        for topic in &config.topics {
            let created = store.create_topic(topic.clone()).await;
            created.map_err(|source| NodeError::CreateTopic {
                topic: topic.name.clone(),
                source,
            })?;
        }

        let services =
            Services::new(store.clone())
                .await
                .map_err(|source| NodeError::CreateTopic {
                    topic: crate::service::Tile::topic(),
                    source,
                })?;

        let links = Links::default();
        let backbone = (role == Role::Core && config.bridge.backbone())
            .then(|| Backbone::new(config.node.name.clone(), &config.bridge));
        let edges = match role {
            Role::Core => Some(
                Edges::open(store.clone(), links.clone(), config.allowed_edges())
                    .map_err(NodeError::Edges)?,
            ),
            Role::Edge => None,
        };
        // The core serves its mission volume (made if missing); an edge keeps a mirror.
        let source = match role {
            Role::Core => Some(open_volume(&config).await?),
            Role::Edge => None,
        };
        let local = Local {
            store: store.clone(),
            core: role == Role::Core,
            settings: SessionSettings {
                writers: config.writers.clone(),
                priorities: config.priorities.clone(),
                latest_value: config.latest_value.clone(),
                relay: config.link.relay,
                ..session
            },
            mirror: source.clone(),
            backbone: backbone.clone(),
        };
        if let (Some(edges), Some(backbone)) = (&edges, &backbone) {
            edges.join(backbone.clone());
        }
        let transport =
            Arc::new(transport.unwrap_or_else(|| tls::transport_config(config.link.timeouts())));
        let mut replica = None;
        let (endpoint, link_loop): (quinn::Endpoint, Pin<Box<dyn Future<Output = ()> + Send>>) =
            match role {
                Role::Core => {
                    let endpoint = tls::server_endpoint_with(
                        config.link.listen,
                        &credentials,
                        transport.clone(),
                    )
                    .map_err(NodeError::Endpoint)?;
                    // Edges enroll with codes only where the CA's key is at hand.
                    let ca = enrollment_ca(&config);
                    if let (Some(ca), Some(edges)) = (&ca, &edges) {
                        edges.enable_enrollment(ca.pin());
                        let enrolling = tls::server_config_enrolling(&credentials, transport, true)
                            .map_err(NodeError::Endpoint)?;
                        endpoint.set_server_config(Some(enrolling));
                    }
                    let edges = edges
                        .clone()
                        .unwrap_or_else(|| config.allowed_edges().into());
                    let serve = link::serve(local, endpoint.clone(), edges, links.clone(), ca);
                    (endpoint, Box::pin(serve))
                }
                Role::Edge => {
                    let core = link::resolve(&config.link.core).await.ok();
                    let bind = link::edge_bind(core);
                    let endpoint = tls::client_endpoint_with(bind, &credentials, transport)
                        .map_err(NodeError::Endpoint)?;
                    let link = links.link(&config.link.core_name);
                    let settings = MirrorSettings {
                        max_rate: config.mirror.max_rate,
                        ..mirror
                    };
                    let dir = config.mirror_dir();
                    replica = Some(Mirror::open(&dir, settings, link.clone()).map_err(
                        |source| NodeError::Mirror {
                            path: dir.clone(),
                            source,
                        },
                    )?);
                    let mut cores = vec![(
                        config.link.core.clone(),
                        config.link.core_name.clone(),
                        link,
                    )];
                    for other in &config.link.failover {
                        let link = links.link(&other.name);
                        cores.push((other.address.clone(), other.name.clone(), link));
                    }
                    (
                        endpoint.clone(),
                        Box::pin(link::dial(local, endpoint, cores)),
                    )
                }
            };
        let address = endpoint
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        info!(
            node = %config.node.name,
            role = %role,
            data_dir = %config.node.data_dir.display(),
            certs_dir = %config.certs_dir().display(),
            topics = config.topics.len(),
            link = %address,
            keep_alive = ?config.link.keep_alive,
            idle_timeout = ?config.link.idle_timeout,
            "node ready"
        );
        let bridge = config.bridge.enabled().then(|| {
            tracing::info!(servers = ?config.bridge.urls, out = ?config.bridge.out, inbound = ?config.bridge.inbound, "bridge to NATS JetStream on");
            if config.bridge.backbone() {
                tracing::info!(stream = %config.bridge.backbone_stream, replicas = config.bridge.replicas, "backbone on: this core shares its entries and fleet with the HQ's other cores");
                if config.bridge.create_streams && config.bridge.replicas < 3 {
                    tracing::warn!(replicas = config.bridge.replicas, "backbone: a stream with fewer than 3 replicas loses what one NATS server's disk loses; an edge's entries are acknowledged once it holds them (set bridge.replicas = 3)");
                }
                if !config.bridge.out.is_empty() || !config.bridge.inbound.is_empty() {
                    tracing::warn!("backbone: bridge.out and bridge.in are this core's own: set them on one core of the HQ only, or each stream gets every entry once per core and each message is appended once per core");
                }
            }
            Bridge::start(
                store.clone(),
                config.node.name.clone(),
                config.bridge.clone(),
                config.store.max_entry_bytes,
                backbone,
            )
        });
        Ok(Node {
            config,
            store,
            links,
            credentials,
            edges,
            endpoint,
            link_loop,
            source,
            mirror: replica,
            services,
            bridge,
        })
    }
}

/// Opens the core's mission volume (`mirror.volume`), made if missing.
async fn open_volume(config: &Config) -> Result<MirrorSource, NodeError> {
    let path = config.volume_dir();
    let volume_error = |source| NodeError::Volume {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&path).map_err(|e| {
        volume_error(crate::mirror::SourceError::Root {
            path: path.clone(),
            source: e,
        })
    })?;
    MirrorSource::open(path.clone(), config.mirror.max_rate)
        .await
        .map_err(volume_error)
}

/// Loads the node's TLS identity from `link.certs_dir`; with `link.demo_certs`, first
/// creates what is missing there (and logs what it created).
fn load_identity(role: Role, config: &Config) -> Result<NodeIdentity, NodeError> {
    let node = &config.node.name;
    let dir = config.certs_dir();
    let failed = |source: TlsError| {
        let hint = match (&source, role) {
            (TlsError::Missing { .. }, Role::Core) if !config.link.demo_certs => {
                "; create the mission CA and this core's certificate with `core-node certs \
                 init`, or set link.demo_certs = true for a demo"
                    .to_owned()
            }
            (TlsError::Missing { .. }, Role::Edge) => format!(
                "; run `core-node certs issue {node}` on the core and copy the files it writes \
                 into {}, or for a demo on one machine set link.certs_dir to the core's",
                dir.display()
            ),
            _ => String::new(),
        };
        NodeError::Identity {
            node: node.clone(),
            source,
            hint,
        }
    };
    // A renewal cut off between its two renames is finished first.
    if tls::finish_renewal(&dir, node) {
        tracing::warn!(certs_dir = %dir.display(), "finished a certificate renewal that a stop had cut off");
    }
    if config.link.demo_certs {
        let edges = match role {
            Role::Core => config.link.edges.as_slice(),
            Role::Edge => &[],
        };
        let created = crate::tls::ensure_demo_files(&dir, node, role, edges).map_err(failed)?;
        let shown = dir.display();
        if created.ca_created {
            match role {
                Role::Core => info!(certs_dir = %shown, "demo certificates: created a mission CA"),
                Role::Edge => warn!(
                    certs_dir = %shown,
                    "demo certificates: created a mission CA for this edge alone; the core \
                     refuses it unless they share the CA: set link.certs_dir to the core's \
                     certificates directory, or install the files of `core-node certs issue`"
                ),
            }
        }
        for issued in &created.issued {
            info!(node = %issued, certs_dir = %shown, "demo certificates: issued a certificate");
        }
    }
    let identity = NodeIdentity::load(&dir, node, role).map_err(failed)?;
    let mut keys = vec![dir.join(format!("{node}.key"))];
    if role == Role::Core {
        keys.push(dir.join(CA_KEY_FILE));
    }
    for key in keys.iter().filter(|k| k.exists()) {
        tls::check_key_file(key).map_err(failed)?;
    }
    Ok(identity)
}

/// The mission CA, if its key is in the core's certificates directory: then edges may
/// enroll with codes (`crate::edges::enrollment`). Logged either way.
fn enrollment_ca(config: &Config) -> Option<Arc<tls::Ca>> {
    let dir = config.certs_dir();
    if !dir.join(tls::CA_KEY_FILE).exists() {
        tracing::info!(certs_dir = %dir.display(), "enrollment off: the CA's key (ca.key) is not in certs_dir, so edges join with certificates issued elsewhere");
        return None;
    }
    match tls::Ca::load(&dir) {
        Ok(ca) => {
            tracing::info!("enrollment on: edges may join with a code (core-node enroll create)");
            Some(Arc::new(ca))
        }
        Err(err) => {
            tracing::warn!(%err, "enrollment off: the CA does not load");
            None
        }
    }
}
