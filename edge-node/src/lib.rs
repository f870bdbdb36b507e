//! A field node (`edge-node`): it keeps working when the link to the core is down.
//!
//! What it is: [`run`], the node as a library, so that tests start it in-process: the
//! node runtime of [`protocol::node`] (store, link to the core, mirror), the edge's
//! services ([`services`]: broadcast listener, asset request, asset viewer), and its
//! HTTP server ([`ui`]), which serves the mirror's files.
//!
//! What it is not: argument parsing or logging setup; `main.rs` hands those to
//! [`protocol::node::cli`] and [`protocol::node::main_for`].
//!
//! IO: the node's data directory and its HTTP listener.

pub mod services;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use protocol::config::{Config, FirstRun};
use protocol::edges::enrollment;
use protocol::node::{Node, NodeError, Role};
use protocol::service::ServicesError;

/// Why the edge could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node runtime failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The HTTP listener could not be opened.
    #[error("cannot listen for HTTP on {addr} (http.listen): {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The services could not be started.
    #[error(transparent)]
    Services(#[from] ServicesError),
}

/// Runs the field node with the mission's `settings` until `shutdown` resolves, then
/// stops its services, link and HTTP server and closes its store. An edge that holds no
/// certificate yet serves its first-run setup first ([`ui::setup`]) and starts once it
/// has enrolled.
pub async fn run(
    mut config: Config,
    settings: mission::Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let mut shutdown = std::pin::pin!(shutdown);
    let addr = config.http.listen;
    let http_error = |source| Error::Http { addr, source };
    let mut listener = ui::Listener::bind(addr).await.map_err(http_error)?;
    let certs_dir = config.certs_dir();
    if !config.link.demo_certs && !enrollment::holds_certificate(&certs_dir, &config.node.name) {
        let http = listener.addr().map_err(http_error)?;
        tracing::warn!(
            http = %http,
            name = %config.node.name,
            certs_dir = %certs_dir.display(),
            "first-run setup: this edge holds no certificate yet; open http://{http}/ to give \
             it HQ's address and an enrollment code, or run `edge-node enroll <code>`"
        );
        match ui::setup::serve(&config, listener, shutdown.as_mut())
            .await
            .map_err(http_error)?
        {
            Some((kept, answers)) => {
                listener = kept;
                answers.apply(&mut config);
            }
            None => return Ok(()),
        }
    }
    if FirstRun::path(&certs_dir).exists() {
        tracing::info!(
            file = %FirstRun::path(&certs_dir).display(),
            name = %config.node.name,
            core = %config.link.core,
            core_name = %config.link.core_name,
            "the first-run setup's record sets this edge's name and HQ (the environment still wins)"
        );
    }
    let node = Node::start(Role::Edge, config).await?;
    let http = start_on(listener, &node, &settings, None).await?;
    let served = node.serve(shutdown).await;
    http.stop().await;
    Ok(served?)
}

/// Opens the edge's HTTP server (API, page, files; `demo`: the demo's link control) and adds the edge's services to `node` (they run in the
/// node, with the mission's `settings`); returns the HTTP server.
pub async fn start(
    node: &Node,
    settings: &mission::Settings,
    demo: Option<Arc<dyn ui::DemoLink>>,
) -> Result<ui::Server, Error> {
    let addr = node.config().http.listen;
    let listener = ui::Listener::bind(addr)
        .await
        .map_err(|source| Error::Http { addr, source })?;
    start_on(listener, node, settings, demo).await
}

/// [`start`] on a listener bound already.
async fn start_on(
    listener: ui::Listener,
    node: &Node,
    settings: &mission::Settings,
    demo: Option<Arc<dyn ui::DemoLink>>,
) -> Result<ui::Server, Error> {
    let addr = node.config().http.listen;
    let http = listener
        .addr()
        .map_err(|source| Error::Http { addr, source })?;
    let mut site = ui::Site::default();
    if let Some(mirror) = node.mirror() {
        site = site.files("mirror", mirror.current_dir());
    }
    services::add(node, &settings.pipeline).await?;
    if let Some(demo) = demo {
        site = site.demo_link(demo);
    }
    let server = listener
        .serve(node, site)
        .map_err(|source| Error::Http { addr, source })?;
    tracing::info!(http = %http, "the edge serves HTTP");
    Ok(server)
}
