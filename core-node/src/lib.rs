//! The HQ node (`core-node`): the core of a mission, which every edge dials.
//!
//! What it is: [`run`], the node as a library, so that tests start it in-process: the
//! node runtime of [`protocol::node`] (store, links, mission volume), HQ's services
//! ([`services`]: the feed, downloads, broadcasts, responses, ingest), and its HTTP
//! server ([`ui`]), which also serves the built-in demo feed's images; [`fuzzing`] holds
//! the bodies of the fuzz targets of its decoders of bytes from outside.
//!
//! What it is not: argument parsing or logging setup; `main.rs` hands those to
//! [`protocol::node::cli`] and [`protocol::node::main_for`].
//!
//! IO: the node's data directory, its HTTP listener, and the feed's URLs.

pub mod address;
pub mod demo_feed;
pub mod download;
pub mod feed;
pub mod fuzzing;
pub mod image;
pub mod services;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use protocol::config::Config;
use protocol::node::{Node, NodeError, Role};
use protocol::service::ServicesError;

use crate::services::{FeedSource, Pipeline};

/// Why HQ could not start or stopped with an error.
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
    /// A directory of the pipeline could not be made, or the demo feed written.
    #[error("cannot prepare {what}: {source}")]
    Files {
        /// Which.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The services could not be started.
    #[error(transparent)]
    Services(#[from] ServicesError),
}

/// Runs the HQ node with the mission's `settings` until `shutdown` resolves, then stops
/// its services, links and HTTP server and closes its store.
pub async fn run(
    config: Config,
    settings: mission::Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let node = Node::start(Role::Core, config).await?;
    let http = start(&node, &settings, None).await?;
    let served = node.serve(shutdown).await;
    http.stop().await;
    Ok(served?)
}

/// Opens HQ's HTTP server (API, page, files; `demo`: the demo's link control), writes the demo feed when no feed is configured, and adds
/// HQ's services to `node` (they run in the node, with the mission's `settings`); returns
/// the HTTP server.
pub async fn start(
    node: &Node,
    settings: &mission::Settings,
    demo: Option<Arc<dyn ui::DemoLink>>,
) -> Result<ui::Server, Error> {
    let config = node.config();
    let addr = config.http.listen;
    let listener = ui::Listener::bind(addr)
        .await
        .map_err(|source| Error::Http { addr, source })?;
    let http = listener
        .addr()
        .map_err(|source| Error::Http { addr, source })?;
    let demo_dir = config.node.data_dir.join("demo-feed");
    // This node's HTTP server as a download reaches it; the downloader allows exactly it.
    let own = if http.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], http.port()))
    } else {
        http
    };
    let feed = match &settings.pipeline.feed {
        Some(location) => FeedSource::Location(location.clone()),
        None => {
            // The demo feed's images are a real download, from this node's HTTP server.
            let base = format!("http://{own}/files/demo-feed");
            let dir = demo_dir.clone();
            let demo = tokio::task::spawn_blocking(move || {
                demo_feed::generate(&dir, &base, demo_feed::DEFAULT_COUNT)
            })
            .await
            .map_err(|e| Error::Files {
                what: "the demo feed",
                source: std::io::Error::other(e),
            })?
            .map_err(|source| Error::Files {
                what: "the demo feed",
                source,
            })?;
            FeedSource::Demo(Arc::new(demo.document))
        }
    };
    let source = node.mirror_source().cloned();
    let pipeline =
        Pipeline::new(config, &settings.pipeline, feed, own, source).map_err(|source| {
            Error::Files {
                what: "the pipeline's directories",
                source,
            }
        })?;
    let mut site = ui::Site::default()
        .fed_by_services(&[mission::IMAGE_FEED, mission::IMAGE_DOWNLOAD])
        .files("demo-feed", demo_dir)
        .files("downloads", pipeline.downloads.clone());
    services::add(node, Arc::new(pipeline)).await?;
    if let Some(demo) = demo {
        site = site.demo_link(demo);
    }
    let server = listener
        .serve(node, site)
        .map_err(|source| Error::Http { addr, source })?;
    tracing::info!(http = %http, "HQ serves HTTP");
    Ok(server)
}
