//! A mission in one process: HQ (`hq`) and one edge (`alpha`), each the real node
//! runtime with its services and HTTP server, the edge dialing HQ through the link
//! emulator. The demo and the pipeline tests start it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::mission::Settings;
use protocol::config::{App as _, Config};
use protocol::node::{Node, Role};

use crate::cluster::Error;
use crate::emulator::{Link, LinkConfig, Profile};

/// How a mission starts.
#[derive(Debug, Clone)]
pub struct MissionConfig {
    /// Where both nodes keep their data (`<data>/hq`, `<data>/alpha`).
    pub data: PathBuf,
    /// The link's profile.
    pub profile: Profile,
    /// The HTTP addresses of HQ and the edge (port 0: any free port).
    pub http: (std::net::SocketAddr, std::net::SocketAddr),
    /// How often HQ's feed picks new items.
    pub feed_every: Duration,
    /// How many items it picks each time.
    pub feed_batch: u32,
    /// HQ's feed document (`None`: the built-in demo feed).
    pub feed: Option<String>,
    /// HQ's download size limit (`None`: the default).
    pub max_download_bytes: Option<u64>,
    /// Internal addresses HQ's downloads may reach all the same
    /// (`pipeline.download_allow`; HQ's own HTTP address needs none).
    pub download_allow: Vec<protocol::ip_range::IpRange>,
    /// Whether both nodes start their services at their first start
    /// (`pipeline.start_services`); `false`: an operator starts them.
    pub start_services: bool,
    /// Both nodes' bearer token for changes through their HTTP API (`http.token`).
    pub token: Option<String>,
}

impl MissionConfig {
    /// Loopback, any free ports, a fast feed.
    pub fn new(data: &Path, profile: Profile) -> MissionConfig {
        MissionConfig {
            data: data.to_path_buf(),
            profile,
            http: (([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into()),
            feed_every: Duration::from_millis(200),
            feed_batch: 4,
            feed: None,
            max_download_bytes: None,
            download_allow: Vec::new(),
            start_services: true,
            token: None,
        }
    }

    /// HQ's node config.
    pub fn core(&self) -> Config {
        let (mut core, _) = Config::default_with::<Settings>(Role::Core);
        core.node.data_dir = self.data.join("hq");
        core.link.listen = ([127, 0, 0, 1], 0).into();
        core.http.listen = self.http.0;
        core.http.token = self.token.clone();
        core
    }

    /// HQ's mission settings (`[pipeline]`).
    pub fn core_settings(&self) -> Settings {
        let mut core = Settings::default_for(Role::Core);
        core.pipeline.start_services = self.start_services;
        core.pipeline.feed_every = self.feed_every;
        core.pipeline.feed_batch = self.feed_batch;
        core.pipeline.feed = self.feed.clone();
        if let Some(max) = self.max_download_bytes {
            core.pipeline.max_download_bytes = max;
        }
        core.pipeline.download_allow = self.download_allow.clone();
        // Short, so that a test's slow download fails in seconds.
        core.pipeline.download_timeout = Duration::from_secs(3);
        core
    }

    /// The edge's mission settings (`[pipeline]`).
    pub fn edge_settings(&self) -> Settings {
        let mut edge = Settings::default_for(Role::Edge);
        edge.pipeline.start_services = self.start_services;
        edge
    }

    /// The edge's node config, dialing `core` (the link emulator's address).
    pub fn edge(&self, core: std::net::SocketAddr) -> Config {
        let (mut edge, _) = Config::default_with::<Settings>(Role::Edge);
        edge.node.data_dir = self.data.join("alpha");
        edge.link.core = core.to_string();
        edge.link.certs_dir = Some(self.core().certs_dir());
        edge.http.listen = self.http.1;
        edge.http.token = self.token.clone();
        edge
    }
}

/// HQ, the link and the edge, started; each node runs until [`Mission::stop`].
#[derive(Debug)]
pub struct Mission {
    /// HQ's store, links, services, volume.
    pub hq: Handles,
    /// The edge's.
    pub alpha: Handles,
    /// HQ's HTTP address.
    pub hq_http: std::net::SocketAddr,
    /// The edge's HTTP address.
    pub alpha_http: std::net::SocketAddr,
    /// The link emulator between them (both nodes' HTTP APIs control it too).
    pub link: Arc<Link>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    hq_parts: Option<ui::Server>,
    alpha_parts: Option<ui::Server>,
}

/// What a test or the demo holds of a running node.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The store.
    pub store: protocol::log::Store,
    /// The links.
    pub links: protocol::link::Links,
    /// The services.
    pub services: protocol::service::Services,
    /// The edge's mirror (`None` at HQ).
    pub mirror: Option<protocol::link::Mirror>,
    /// The node's config.
    pub config: Config,
}

impl Mission {
    /// Starts HQ, the link emulator and the edge.
    pub async fn start(config: &MissionConfig) -> Result<Mission, Error> {
        let hq = Node::start(Role::Core, config.core()).await?;
        let link = Arc::new(Link::open(LinkConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            core: hq.link_addr()?,
            profile: config.profile.clone(),
            seed: crate::emulator::DEFAULT_SEED,
        })?);
        let demo: Arc<dyn ui::DemoLink> = Arc::new(DemoLink(link.clone()));
        let hq_parts = core_node::start(&hq, &config.core_settings(), Some(demo.clone())).await?;
        let alpha = Node::start(Role::Edge, config.edge(link.addr())).await?;
        let alpha_parts = edge_node::start(&alpha, &config.edge_settings(), Some(demo)).await?;
        let handles = |node: &Node| Handles {
            store: node.store().clone(),
            links: node.links().clone(),
            services: node.services().clone(),
            mirror: node.mirror().cloned(),
            config: node.config().clone(),
        };
        let (hq_handles, alpha_handles) = (handles(&hq), handles(&alpha));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for node in [hq, alpha] {
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let until = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = node.serve(until).await {
                    tracing::error!(error = %e, "node stopped with an error");
                }
            }));
        }
        Ok(Mission {
            hq_http: hq_parts.addr(),
            alpha_http: alpha_parts.addr(),
            hq: hq_handles,
            alpha: alpha_handles,
            link,
            stop,
            tasks,
            hq_parts: Some(hq_parts),
            alpha_parts: Some(alpha_parts),
        })
    }

    /// Stops both nodes (services, links, stores) and their HTTP servers.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(parts) = self.hq_parts.take() {
            parts.stop().await;
        }
        if let Some(parts) = self.alpha_parts.take() {
            parts.stop().await;
        }
    }
}

/// The link emulator as the nodes' HTTP API and page control it.
#[derive(Debug)]
struct DemoLink(Arc<Link>);

impl ui::DemoLink for DemoLink {
    fn status(&self) -> ui::DemoLinkStatus {
        ui::DemoLinkStatus {
            profile: self.0.profile().name,
            profiles: Profile::NAMES.iter().map(|&n| n.to_owned()).collect(),
            up: !self.0.is_down(),
        }
    }

    fn set_profile(&self, name: &str) -> Result<(), String> {
        let profile = Profile::named(name).map_err(|e| e.to_string())?;
        self.0.set_profile(profile);
        tracing::info!(profile = name, "demo link: profile changed");
        Ok(())
    }

    fn set_up(&self, up: bool) {
        if up {
            self.0.up();
        } else {
            self.0.down();
        }
        tracing::info!(up, "demo link: switched");
    }
}
