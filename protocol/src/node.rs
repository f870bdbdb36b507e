//! The node runtime both binaries share: start a node, run it until asked to stop, stop it.
//!
//! - [`run`] loads the node's TLS identity from `link.certs_dir` (in demo mode creating
//!   what is missing there first), opens the store at `<data_dir>/store`, creates the
//!   configured topics, then applies retention every `retention_interval` until its
//!   shutdown future resolves; then it flushes and closes the store. QUIC links and the
//!   HTTP API join it later.
//! - [`Builder`] puts a node together (`node/builder.rs`): [`Node::start`] is it with
//!   the config alone; tests and benchmarks add an in-memory identity, QUIC, session and
//!   mirror settings.
//! - [`cli`] is both binaries' command line (clap); [`main_for`] is the rest of a binary's
//!   `main` for the node's own commands: config, the tracing subscriber, the tokio
//!   runtime, and SIGTERM or Ctrl-C as the shutdown signal (a second one exits at once).
//!   Errors are printed with their causes, and become the exit code.
//! - `core-node certs init` and `core-node certs issue <edge>` create the mission CA and
//!   issue certificates ([`crate::tls`]), then exit.
//! - `edge-node mirror` runs the edge until the mirror it starts has ended, printing its
//!   progress (`node/mirror.rs`).
//!
//! IO: the store and certificates directories, and (in [`main_for`] and [`cli::parse`]
//! only) arguments, environment, signals, stdout and stderr.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::bridge::Bridge;
use crate::config::{App, Config, LogSettings};
use crate::edges::{Edges, EdgesError};
use crate::entry::{NameError, NodeName, TopicName};
use crate::link::{Links, Mirror, MirrorSource};
use crate::log::{OpenError, ReadError, RetentionReport, Store, WriteError};
use crate::service::Services;
use crate::tls::{self, CA_CERT_FILE, CA_KEY_FILE, Ca, CloseCode, Credentials, TlsError};
use cli::{CertsCommand, EntriesCommand, NodeArgs, NodeCommand};

pub use crate::role::Role;
pub use builder::Builder;

mod builder;
pub mod cli;
pub mod logs;
mod mirror;

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node's certificate, key or CA certificate could not be loaded (or, in demo
    /// mode, created).
    #[error("TLS identity of node {node}: {source}{hint}")]
    Identity {
        /// The node.
        node: NodeName,
        /// What is wrong; it names the file (in `link.certs_dir`).
        source: TlsError,
        /// How to get the files, when they are missing; else empty.
        hint: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A configured topic could not be created, for example because it exists with
    /// another scope.
    #[error("cannot create topic {topic}: {source}")]
    CreateTopic {
        /// The topic.
        topic: TopicName,
        /// Why the store refused it.
        source: WriteError,
    },
    /// The store stopped taking writes while the node ran (a failed write poisons it);
    /// the node must restart.
    #[error("store failed: {0}")]
    Store(WriteError),
    /// The store could not be flushed and closed at shutdown.
    #[error("cannot close the store: {0}")]
    Close(WriteError),
    /// The QUIC endpoint could not be opened (for example, the listen address is taken).
    #[error("cannot open the link endpoint: {0}")]
    Endpoint(TlsError),
    /// The core's mission volume cannot be served.
    #[error("mirror volume {}: {source}", path.display())]
    Volume {
        /// The volume's directory.
        path: PathBuf,
        /// Why.
        source: crate::mirror::SourceError,
    },
    /// The edge's mirror directory cannot be opened.
    #[error("mirror directory {}: {source}", path.display())]
    Mirror {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: crate::mirror::ReplicaError,
    },
    /// The link's accept or dial loop ended while the node ran (its endpoint closed).
    #[error("the link stopped unexpectedly")]
    LinkStopped,
    /// The core's list of edges (the store's `_edges` table) does not read.
    #[error("the core's list of edges: {0}")]
    Edges(ReadError),
}

/// Resolves when the process is asked to stop: the first SIGTERM or Ctrl-C that
/// [`main_for`] receives.
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender also means stop: nobody is left to say it later.
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// Runs a node of `role` until `shutdown` resolves, then closes its links and store.
pub async fn run(
    role: Role,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    Node::start(role, config).await?.serve(shutdown).await
}

/// A started node: its store and links are up; [`Node::serve`] runs it until shutdown.
/// The demo and tests hold on to [`Node::store`] and [`Node::links`].
pub struct Node {
    config: Config,
    store: Store,
    links: Links,
    credentials: Credentials,
    edges: Option<Edges>,
    endpoint: quinn::Endpoint,
    link_loop: Pin<Box<dyn Future<Output = ()> + Send>>,
    source: Option<MirrorSource>,
    mirror: Option<Mirror>,
    services: Services,
    bridge: Option<Bridge>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.config.node.name)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Loads the identity, opens the store, creates the configured topics and opens the
    /// link endpoint (the core listens, an edge dials), all as `config` says. Every
    /// startup error surfaces here. [`Builder`] also starts a node, with what a config
    /// cannot say (tests and benchmarks).
    pub async fn start(role: Role, config: Config) -> Result<Node, NodeError> {
        Builder::new(role, config).start().await
    }

    /// The bridge to NATS JetStream, where `[bridge]` configures one.
    pub fn bridge(&self) -> Option<&Bridge> {
        self.bridge.as_ref()
    }

    /// The node's services; the node crates add theirs before [`Node::serve`].
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The edge's mirror of the core's volume (`None` at the core).
    pub fn mirror(&self) -> Option<&Mirror> {
        self.mirror.as_ref()
    }

    /// The core's served mission volume (`None` at an edge).
    pub fn mirror_source(&self) -> Option<&MirrorSource> {
        self.source.as_ref()
    }

    /// The node's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node's links.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The node's TLS credentials: its certificate in use (reloaded when its files
    /// change).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The core's edges: the list, certificates, revocations (`None` at an edge).
    pub fn edges(&self) -> Option<&Edges> {
        self.edges.as_ref()
    }

    /// The UDP address of the node's link endpoint (the core's listening address).
    pub fn link_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The node's link endpoint; closing it cuts every link at once (tests cut a node
    /// so, like a cable pulled).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Runs the node (links, retention, status logs) until `shutdown` resolves; then
    /// closes its links (peers are told why) and its store.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
        let Node {
            config,
            store,
            links,
            credentials,
            edges,
            endpoint,
            mut link_loop,
            source: _source,
            mirror: _mirror,
            services,
            bridge,
        } = self;
        tokio::pin!(shutdown);
        // The first tick completes at once: retention also runs at start, after a long stop.
        let mut retention = tokio::time::interval(config.store.retention_interval);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status = tokio::time::interval(STATUS_EVERY);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status.tick().await;
        // The first tick completes at once: an expiring certificate is reported at start.
        let mut certificate = tokio::time::interval(CERTIFICATE_CHECK_EVERY);
        certificate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut expiry = ExpiryWarning::default();
        let mut renewal = Renewal::default();
        let mut poisoned = false;
        let stopped = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                () = &mut link_loop => break Err(NodeError::LinkStopped),
                _ = retention.tick() => match release_and_retain(&config, edges.as_ref(), &store).await {
                    // The store logs what retention removed and any gap it recorded.
                    Ok(_) => {}
                    // Exiting would not help (a restart on a full disk fails again): the
                    // node goes on serving what it holds, and says so once.
                    Err(WriteError::Poisoned(cause)) => if !poisoned {
                        poisoned = true;
                        error!(%cause, "the store refuses writes after a failed write; the node goes on serving reads and links: restart it once the cause is fixed");
                    },
                    Err(e @ WriteError::Closed) => break Err(NodeError::Store(e)),
                    Err(err) => error!(%err, "retention failed"),
                },
                _ = status.tick() => log_links(&links),
                _ = certificate.tick() => {
                    // Picks up renewed files even when no handshake happens; a failure
                    // is logged by `refresh` (once per change).
                    let _ = credentials.refresh();
                    expiry.check(&config.node.name, &credentials);
                    if config.role == Role::Edge {
                        renewal.start_if_due(&config, &credentials);
                    }
                }
            }
        };

        // Stop the bridge and the services (they start again at the next start), then the
        // links: sessions end, the peers are told why; then the store closes.
        drop(bridge);
        services.halt().await;
        drop(link_loop);
        endpoint.close(CloseCode::Shutdown.code(), b"the node is stopping");
        if tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle())
            .await
            .is_err()
        {
            // QUIC keeps a closed connection draining for three probe timeouts, which
            // on a satellite link is longer than this grace: the peers were told anyway.
            info!("links still draining after {CLOSE_GRACE:?}; stopping anyway");
        }
        stopped?;
        store.close().await.map_err(NodeError::Close)?;
        info!(node = %config.node.name, "node stopped");
        Ok(())
    }
}

/// Releases the edges away past their allowance (core), then applies retention, which
/// frees what was kept for them.
async fn release_and_retain(
    config: &Config,
    edges: Option<&Edges>,
    store: &Store,
) -> Result<RetentionReport, WriteError> {
    if let Some(edges) = edges {
        match edges
            .check_allowances(config.link.allowance, SystemTime::now())
            .await
        {
            Ok(_) => {}
            Err(EdgesError::Write(e)) => return Err(e),
            Err(err) => error!(%err, "cannot check the edges' allowances"),
        }
    }
    let report = store.enforce_retention().await?;
    tracing::debug!(
        removed = report.removed,
        gaps = report.gaps.len(),
        "retention pass"
    );
    Ok(report)
}

/// How often each link's status is logged (it is also logged when a link goes up or down).
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// How often the node looks at its certificate files (handshakes also do) and its
/// certificate's expiry.
const CERTIFICATE_CHECK_EVERY: Duration = Duration::from_secs(60);

/// A certificate this close to its end is warned about, in the log (daily) and on the
/// page. The chart asks cert-manager for 90-day certificates renewed 15 days before
/// their end (`certificates.certManager.renewBefore`): one still unrenewed 14 days
/// before has failed to renew, and leaves two weeks to act. A certificate by
/// `core-node certs` lasts five years.
pub const CERTIFICATE_WARN_BEFORE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How often an expiring certificate is warned about in the log.
const CERTIFICATE_WARN_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// The log's warning of an expiring certificate, at most once every
/// [`CERTIFICATE_WARN_EVERY`] (and again when the certificate changes).
#[derive(Debug, Default)]
struct ExpiryWarning {
    last: Option<(std::time::Instant, String)>,
}

impl ExpiryWarning {
    fn check(&mut self, node: &NodeName, credentials: &Credentials) {
        let certificate = credentials.certificate();
        let left = certificate.expires_in(std::time::SystemTime::now());
        if left > CERTIFICATE_WARN_BEFORE {
            self.last = None;
            return;
        }
        let recent = self.last.as_ref().is_some_and(|(at, serial)| {
            *serial == certificate.serial && at.elapsed() < CERTIFICATE_WARN_EVERY
        });
        if recent {
            return;
        }
        let path = credentials.path().map(|p| p.display().to_string());
        warn!(
            %node,
            serial = %certificate.serial,
            not_after_ms = tls::millis(certificate.not_after),
            days_left = left.as_secs() / 86_400,
            path,
            "the node's certificate expires soon: renew it (cert-manager renews by itself; \
             by hand, `core-node certs issue` and replace the files, no restart needed)"
        );
        self.last = Some((std::time::Instant::now(), certificate.serial));
    }
}

/// An edge's renewal of its certificate over the link (`crate::edges::enrollment::renew`),
/// once less than `1/RENEW_WITHIN` of its lifetime is left; one at a time, and again
/// [`RENEW_RETRY`] after a failure.
#[derive(Debug, Default)]
struct Renewal {
    running: Option<tokio::task::JoinHandle<()>>,
    tried: Option<std::time::Instant>,
}

/// How long after a failed renewal the next one starts.
const RENEW_RETRY: Duration = Duration::from_secs(600);

impl Renewal {
    fn start_if_due(&mut self, config: &Config, credentials: &Credentials) {
        if self.running.as_ref().is_some_and(|r| !r.is_finished())
            || self.tried.is_some_and(|at| at.elapsed() < RENEW_RETRY)
            || credentials.path().is_none()
            || !credentials
                .certificate()
                .renewal_due(std::time::SystemTime::now())
        {
            return;
        }
        self.tried = Some(std::time::Instant::now());
        let (config, credentials) = (config.clone(), credentials.clone());
        self.running = Some(tokio::spawn(async move {
            let old = credentials.certificate();
            info!(serial = %old.serial, not_after_ms = tls::millis(old.not_after), "the certificate is due for renewal: asking HQ over the link");
            let renewed = crate::edges::enrollment::renew(
                &config.link.core,
                &config.link.core_name,
                &credentials,
                &config.node.name,
                &config.certs_dir(),
            )
            .await;
            match renewed {
                Ok(new) => info!(
                    old_serial = %old.serial,
                    serial = %new.serial,
                    not_after_ms = tls::millis(new.not_after),
                    "certificate renewed over the link: new handshakes use it"
                ),
                Err(err) => {
                    warn!(%err, "the certificate could not be renewed; trying again in 10 minutes")
                }
            }
        }));
    }
}

/// How long a stopping node waits for its peers to acknowledge the close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Logs one line per link: up or down, round trip, entries each way, backlog.
fn log_links(links: &Links) {
    for s in links.status() {
        let sent: u64 = s.topics.iter().filter(|t| t.out).map(|t| t.entries).sum();
        let received: u64 = s.topics.iter().filter(|t| !t.out).map(|t| t.entries).sum();
        let backlog: u64 = s.topics.iter().filter(|t| t.out).map(|t| t.backlog).sum();
        let rtt_ms = s.rtt.map(|r| r.as_secs_f64() * 1e3);
        info!(
            peer = %s.peer,
            connected = s.connected,
            paused = s.paused_here || s.paused_by_peer,
            rtt_ms,
            sent,
            received,
            backlog,
            bytes_out = s.bytes_out,
            bytes_in = s.bytes_in,
            "link status"
        );
    }
}

/// The rest of a node binary's `main`, once [`cli::parse`] has read the arguments: loads
/// the config with the application `A`'s sections (the binary's [`App`], which `run`
/// takes), installs the tracing subscriber, builds the runtime and calls `run` with the
/// config, the application's settings and a [`Shutdown`] that resolves at the first
/// SIGTERM or Ctrl-C. A second signal exits at once. `edge-node mirror` runs the node of
/// `protocol` instead of `run` (see `node/mirror.rs`); the other commands run and exit.
///
/// Exit codes: 0 after a clean stop (`mirror`: once the mirror is done), 1 for any error.
pub fn main_for<A, F, Fut, E>(role: Role, args: NodeArgs, run: F) -> ExitCode
where
    A: App,
    F: FnOnce(Config, A, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let NodeArgs {
        config: path,
        command,
    } = args;
    if command == NodeCommand::PrintConfig && path.is_none() {
        // The defaults as they are, not as the environment changes them.
        let (config, app) = Config::default_with::<A>(role);
        print!("{}", config.to_toml_with(&app));
        return ExitCode::SUCCESS;
    }
    let (config, app) = match Config::load::<A>(role, path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
    };
    let mirror = match command {
        NodeCommand::Run => false,
        NodeCommand::Mirror => true,
        NodeCommand::PrintConfig => {
            print!("{}", config.to_toml_with(&app));
            return ExitCode::SUCCESS;
        }
        NodeCommand::Certs(command) => {
            return match certs(&config, command) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            };
        }
        NodeCommand::Enroll { code } => {
            return match enroll(&config, code.as_deref()) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        NodeCommand::Entries(command) => {
            return match entries::<A>(&config, command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    if let Err(e) = init_tracing(&config.log) {
        return fail(&*e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tether-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&StartError("cannot start the async runtime", e)),
    };
    if mirror {
        let served = runtime.block_on(serve(config, mirror::run));
        return exit_code(served, runtime);
    }
    let served = runtime.block_on(serve(config, |config, shutdown| run(config, app, shutdown)));
    exit_code(served, runtime)
}

/// The variable `edge-node enroll` reads its code from when none is given.
pub const ENROLL_CODE_VAR: &str = "TETHER_ENROLL_CODE";

/// `edge-node enroll [<code>]`: joins the fleet (see `crate::edges::enrollment`), unless
/// the edge holds a certificate already; returns what to tell the operator.
fn enroll(config: &Config, code: Option<&str>) -> Result<String, String> {
    let certs = config.certs_dir();
    let name = &config.node.name;
    if crate::edges::enrollment::holds_certificate(&certs, name) {
        let identity = tls::NodeIdentity::load(&certs, name, Role::Edge).map_err(|e| {
            format!("{e}; to enroll again, move this edge's certificate and key away first")
        })?;
        let info = identity.certificate_info().map_err(|e| e.to_string())?;
        return Ok(format!(
            "{name} holds a certificate already (serial {}, in {}): nothing to do\n",
            info.serial,
            certs.display()
        ));
    }
    let code = match code {
        Some(code) => code.to_owned(),
        None => std::env::var(ENROLL_CODE_VAR)
            .map_err(|_| format!("no code: give it as an argument or in {ENROLL_CODE_VAR}"))?,
    };
    let code: crate::edges::enrollment::Code = code.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let identity = runtime
        .block_on(crate::edges::enrollment::enroll(
            &config.link.core,
            &config.link.core_name,
            &code,
            &config.node.name,
            &certs,
        ))
        .map_err(|e| e.to_string())?;
    let info = identity.certificate_info().map_err(|e| e.to_string())?;
    let (year, month, day) =
        crate::calendar::civil_from_days(tls::millis(info.not_after) / 86_400_000);
    Ok(format!(
        "enrolled as {} with HQ at {}: certificate serial {}, valid until \
         {year:04}-{month:02}-{day:02}; its key (made here, never sent) and certificate are \
         in {}. Start the edge now.\n",
        config.node.name,
        config.link.core,
        info.serial,
        certs.display()
    ))
}

/// The exit code of a served node: 0 after a clean stop, else 1 with the error printed.
fn exit_code<E: std::error::Error + 'static>(
    served: Served<E>,
    runtime: tokio::runtime::Runtime,
) -> ExitCode {
    match served {
        Served::Stopped(Ok(())) => ExitCode::SUCCESS,
        Served::Stopped(Err(e)) => fail(&e),
        Served::NoSignals(e) => fail(&StartError("cannot listen for signals", e)),
        Served::Forced => {
            // Do not wait for tasks that may be stuck: that is why the operator insisted.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
    }
}

/// Why a `certs` command failed.
#[derive(Debug, thiserror::Error)]
enum CertsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot issue a certificate: {0}")]
    Name(#[from] NameError),
    #[error("{0} is this core's own name; an edge needs a name of its own")]
    OwnName(NodeName),
    #[error(
        "no mission CA in {} ({CA_CERT_FILE} and {CA_KEY_FILE}): run `core-node certs init` \
         first, or give the CA's directory with --dir",
        .0.display()
    )]
    NoCa(PathBuf),
}

/// How [`serve`] ended.
#[derive(Debug)]
enum Served<E> {
    Stopped(Result<(), E>),
    NoSignals(std::io::Error),
    Forced,
}

/// A start-up step of [`main_for`] that failed, with the OS's reason as its source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartError(&'static str, #[source] std::io::Error);

/// Runs `append`, `read` or the application's `request` on the node's store (the node
/// must be stopped: the store is locked while it runs). An append is durable when this
/// returns, and crosses the link when the node runs again: store and forward, by hand.
fn entries<A: App>(config: &Config, command: EntriesCommand) -> Result<(), String> {
    let store = Store::open(config.store_dir(), config.store_config()).map_err(|e| match e {
        OpenError::Locked { .. } => format!("{e}: stop the node first"),
        other => other.to_string(),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        match command {
            EntriesCommand::Append { topic, text } => {
                let topic = TopicName::new(topic).map_err(|e| e.to_string())?;
                let done = store
                    .append(&topic, crate::entry::Append::new(text))
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "appended to {topic} at offset {} (sequence {} of {})",
                    done.offset,
                    done.seq,
                    store.node()
                );
            }
            EntriesCommand::Request { asset } => {
                println!("{}", A::request(&store, &asset).await?);
            }
            EntriesCommand::Read { topic } => {
                let topic = TopicName::new(topic).map_err(|e| e.to_string())?;
                for r in store
                    .read(&topic, crate::entry::Offset(0), usize::MAX)
                    .map_err(|e| e.to_string())?
                {
                    let e = &r.entry;
                    let to =
                        e.to.as_ref()
                            .map(|t| format!(" to {t}"))
                            .unwrap_or_default();
                    let text = String::from_utf8_lossy(&e.payload);
                    println!(
                        "{} {}:{} at {} ms{to}: {text}",
                        r.offset, e.id.origin, e.id.seq, e.timestamp.0
                    );
                }
            }
        }
        store.close().await.map_err(|e| e.to_string())
    })
}

/// Runs a `certs` command with the CA in `--dir` (default: `link.certs_dir`); returns
/// what to print.
fn certs(config: &Config, command: CertsCommand) -> Result<String, CertsError> {
    let core = &config.node.name;
    match command {
        CertsCommand::Init { dir } => {
            let dir = dir.unwrap_or_else(|| config.certs_dir());
            let written = certs_init(&dir, core)?;
            Ok(format!(
                "Created the mission CA and the certificate of core {core} in {}:\n{}\
                 Keep {CA_KEY_FILE} on the core only. Next, for each edge: `core-node certs \
                 issue <edge-name>`.\n",
                dir.display(),
                list(&written),
            ))
        }
        CertsCommand::Issue { edge, dir, out } => {
            let dir = dir.unwrap_or_else(|| config.certs_dir());
            let out = out.unwrap_or_else(|| dir.clone());
            let edge = NodeName::new(edge)?;
            let written = certs_issue(&dir, &out, &edge, core)?;
            let mut report = format!(
                "Issued the certificate of edge {edge}:\n{}Copy these files into the edge's \
                 link.certs_dir; its [node] name must be \"{edge}\".\n",
                list(&written)
            );
            if !config.allowed_edges().allows(&edge) {
                report.push_str(&format!(
                    "Note: {edge} is not in this core's link.edges: add it there (or set \
                     link.allow_any_edge = true) for the core to accept it.\n"
                ));
            }
            Ok(report)
        }
        CertsCommand::Renew { dir, out } => {
            let dir = dir.unwrap_or_else(|| config.certs_dir());
            let out = out.unwrap_or_else(|| dir.join("renewed"));
            let ca = load_ca(&dir)?;
            let written = ca.issue(core, Role::Core)?.save(&out)?;
            Ok(format!(
                "Issued a new certificate and key for core {core}:\n{}Move {core}.key and \
                 {core}.pem into link.certs_dir ({}); the running core uses them from its \
                 next handshake (it logs `certificate reloaded`), no restart needed.\n",
                list(&written),
                config.certs_dir().display()
            ))
        }
    }
}

/// The mission CA in `dir`, with a hint when there is none.
fn load_ca(dir: &Path) -> Result<Ca, CertsError> {
    match Ca::load(dir) {
        Err(TlsError::Missing { path })
            if path == dir.join(CA_CERT_FILE) && !dir.join(CA_KEY_FILE).exists() =>
        {
            Err(CertsError::NoCa(dir.to_path_buf()))
        }
        loaded => Ok(loaded?),
    }
}

/// Creates the mission CA and the core's certificate in `dir`; refuses if any of these
/// files is there already. Returns the files written.
fn certs_init(dir: &Path, core: &NodeName) -> Result<Vec<PathBuf>, CertsError> {
    let ca = Ca::create(&format!("Tether mission CA {core}"))?;
    let identity = ca.issue(core, Role::Core)?;
    // Checked before writing anything, so that a refusal leaves nothing half done.
    if dir.join(CA_CERT_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
        return Err(TlsError::CaExists {
            dir: dir.to_path_buf(),
        }
        .into());
    }
    for file in [format!("{core}.pem"), format!("{core}.key")] {
        let path = dir.join(file);
        if path.exists() {
            return Err(TlsError::Exists { path }.into());
        }
    }
    let mut written = ca.save(dir)?;
    written.extend(identity.save(dir)?);
    Ok(written)
}

/// Issues `edge` a certificate with the CA in `dir`, into `out` (with `ca.pem`).
fn certs_issue(
    dir: &Path,
    out: &Path,
    edge: &NodeName,
    core: &NodeName,
) -> Result<Vec<PathBuf>, CertsError> {
    if edge == core {
        return Err(CertsError::OwnName(edge.clone()));
    }
    let ca = load_ca(dir)?;
    Ok(ca.issue(edge, Role::Edge)?.save(out)?)
}

/// Files, one per line, indented.
fn list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|file| format!("  {}\n", file.display()))
        .collect()
}

/// Prints `error: ` and the error with its causes on one line; returns exit code 1.
fn fail(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {}", chain(err));
    ExitCode::FAILURE
}

/// The error and its sources, joined by `: `. A source whose text the message already
/// contains (many errors here print their source) is not repeated.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        let more = more.trim_end();
        if !text.contains(more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Installs the process's subscriber: text or JSON on stderr, filtered by `RUST_LOG` if
/// set, else by the config's filter; [`logs::control`] changes the filter later and
/// feeds the lines to the UI.
pub fn init_tracing(log: &LogSettings) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    logs::init(log)
}

/// Runs the node with signals as its shutdown: the first asks it to stop, a second one
/// while it stops gives up on it.
async fn serve<F, Fut, E>(config: Config, run: F) -> Served<E>
where
    F: FnOnce(Config, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => return Served::NoSignals(e),
    };
    let (stop, stopped) = oneshot::channel();
    let mut stop = Some(stop);
    let node = run(config, Shutdown(stopped));
    tokio::pin!(node);
    loop {
        tokio::select! {
            result = &mut node => return Served::Stopped(result),
            signal = signals.recv() => match stop.take() {
                Some(stop) => {
                    info!(signal, "shutting down");
                    // The node may have stopped on its own already; then its result comes next.
                    let _ = stop.send(());
                }
                None => {
                    error!(signal, "second signal: exiting without a clean shutdown");
                    return Served::Forced;
                }
            },
        }
    }
}

/// The signals that stop a node: SIGTERM (Kubernetes) and SIGINT (Ctrl-C).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening; from now on these signals no longer kill the process.
    pub fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.terminate.recv() => "SIGTERM",
                Some(()) = self.interrupt.recv() => "SIGINT",
                // Both streams ended (the runtime is going away): no signal will come.
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::NodeIdentity;

    #[test]
    fn certs_init_then_issue_make_loadable_identities() {
        let dir = crate::tls::tests::TempDir::new("node-certs");
        let ca_dir = dir.path().join("hq/certs");
        let mut config = Config::default_for(Role::Core);
        config.link.certs_dir = Some(ca_dir.clone());
        let hq = NodeName::new("hq").unwrap();
        let bravo = NodeName::new("bravo").unwrap();

        let report = certs(&config, CertsCommand::Init { dir: None }).unwrap();
        assert!(
            report.contains("Created the mission CA and the certificate of core hq"),
            "{report}"
        );
        NodeIdentity::load(&ca_dir, &hq, Role::Core).unwrap();
        let renew = || {
            certs(
                &config,
                CertsCommand::Renew {
                    dir: None,
                    out: None,
                },
            )
        };
        let report = renew().unwrap();
        assert!(
            report.contains("Issued a new certificate and key for core hq"),
            "{report}"
        );
        let renewed = NodeIdentity::load(&ca_dir.join("renewed"), &hq, Role::Core).unwrap();
        let serial = |i: &NodeIdentity| tls::Credentials::fixed(i).unwrap().certificate().serial;
        let current = NodeIdentity::load(&ca_dir, &hq, Role::Core).unwrap();
        assert_ne!(serial(&renewed), serial(&current));
        assert!(renew().unwrap_err().to_string().contains("already exists"));
        let again = certs(&config, CertsCommand::Init { dir: None }).unwrap_err();
        assert!(
            again.to_string().contains("already holds a mission CA"),
            "{again}"
        );

        let out = dir.path().join("bravo-files");
        let issue = |edge: &str, out: Option<PathBuf>| {
            certs(
                &config,
                CertsCommand::Issue {
                    edge: edge.to_owned(),
                    dir: None,
                    out,
                },
            )
        };
        let report = issue("bravo", Some(out.clone())).unwrap();
        assert!(
            report.contains("bravo is not in this core's link.edges"),
            "{report}"
        );
        NodeIdentity::load(&out, &bravo, Role::Edge).unwrap();
        // Without --out, into the CA's directory; alpha is a listed edge.
        let report = issue("alpha", None).unwrap();
        assert!(!report.contains("Note"), "{report}");
        NodeIdentity::load(&ca_dir, &NodeName::new("alpha").unwrap(), Role::Edge).unwrap();

        let err = |edge: &str| issue(edge, None).unwrap_err().to_string();
        assert!(err("alpha").contains("alpha.pem already exists"));
        assert!(err("hq").contains("hq is this core's own name"));
        assert!(err("Bravo").contains("invalid node name"));
        let mut elsewhere = config.clone();
        elsewhere.link.certs_dir = Some(dir.path().join("nowhere"));
        let command = CertsCommand::Issue {
            edge: "charlie".to_owned(),
            dir: None,
            out: None,
        };
        let err = certs(&elsewhere, command).unwrap_err().to_string();
        assert!(err.contains("run `core-node certs init` first"), "{err}");
    }

    #[tokio::test]
    async fn a_node_without_its_certificates_does_not_start() {
        let dir = crate::tls::tests::TempDir::new("node-no-certs");
        for role in [Role::Core, Role::Edge] {
            let mut config = Config::default_for(role);
            config.node.data_dir = dir.path().join(role.as_str());
            config.link.certs_dir = Some(dir.path().join("certs"));
            config.link.demo_certs = false;
            let err = run(role, config, async {}).await.unwrap_err().to_string();
            let expected = match role {
                Role::Core => "or set link.demo_certs = true",
                Role::Edge => "run `core-node certs issue alpha` on the core",
            };
            assert!(
                err.contains("missing file") && err.contains(expected),
                "{err}"
            );
            // It stopped before opening its store.
            assert!(!dir.path().join(role.as_str()).exists());
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_key_readable_by_others_stops_the_node() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = crate::tls::tests::TempDir::new("node-key-mode");
        let mut config = Config::default_for(Role::Core);
        config.node.data_dir = dir.path().join("hq");
        config.link.certs_dir = Some(dir.path().join("certs"));
        config.link.listen = ([127, 0, 0, 1], 0).into();
        // The demo files are made readable by their owner only; start once to make them.
        run(Role::Core, config.clone(), async {}).await.unwrap();
        let key = dir.path().join("certs/hq.key");
        let mode = |m| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m));
        mode(0o644).unwrap();
        let err = run(Role::Core, config.clone(), async {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hq.key is readable or writable by other users (mode 644)")
                && err.contains("chmod 600"),
            "{err}"
        );
        // Readable by its group: a warning, not a refusal (Kubernetes shares Secrets so).
        mode(0o640).unwrap();
        run(Role::Core, config, async {}).await.unwrap();
    }

    #[test]
    fn chain_skips_repeated_sources() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            chain(&StartError("cannot start", io())),
            "cannot start: disk on fire"
        );
        let open = OpenError::Io {
            path: PathBuf::from("/x"),
            source: io(),
        };
        assert_eq!(chain(&open), "cannot open store at /x: disk on fire");
    }

    #[tokio::test]
    async fn run_creates_topics_and_closes_the_store() {
        let dir = std::env::temp_dir().join(format!("tether-node-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default_for(Role::Edge);
        config.node.data_dir = dir.clone();
        // An application's topics (the framework alone has none): the mission's edge's.
        let names = [
            "MESSAGES",
            "ASSET_BROADCAST",
            "ASSET_REQUEST",
            "ASSET_RESPONSE",
        ];
        config.topics = names
            .map(|name| crate::entry::TopicConfig {
                name: TopicName::new(name).unwrap(),
                scope: crate::entry::Scope::All,
                retention: crate::entry::Retention::default(),
            })
            .to_vec();

        let node = run(Role::Edge, config.clone(), async {});
        // Tests and binaries may spawn a node: its future must be Send.
        fn send<T: Send>(t: T) -> T {
            t
        }
        send(node).await.unwrap();

        // Closed: the store opens again, with the configured topics.
        let store = Store::open(config.store_dir(), config.store_config()).unwrap();
        let names: Vec<_> = store
            .topics()
            .into_iter()
            .map(|t| t.config.name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ASSET_BROADCAST",
                "ASSET_REQUEST",
                "ASSET_RESPONSE",
                "MESSAGES",
                "TILES",
                "_gaps"
            ]
        );
        store.close().await.unwrap();
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
