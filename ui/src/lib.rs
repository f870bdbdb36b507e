//! The HTTP API (axum) and the web tile page it serves, embedded in the node binaries.
//!
//! Today: the server itself ([`bind`], [`serve`]), health, and the node's files served
//! read-only from their own directories ([`Site`]). The API, the page and the live events
//! come with the UI issue. It knows nothing of sled or QUIC: nodes hand it directories
//! and, later, plain view types, so that `ui` and `protocol` compile in parallel.
//!
//! IO: a TCP listener; reads the directories it is given.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::services::ServeDir;

/// What a node serves over HTTP.
#[derive(Debug, Default)]
pub struct Site {
    files: Vec<(String, PathBuf)>,
}

impl Site {
    /// Serves the files under `dir` at `/files/<name>/...`, read-only; paths that would
    /// leave `dir` are refused.
    pub fn files(mut self, name: &str, dir: PathBuf) -> Site {
        self.files.push((name.to_owned(), dir));
        self
    }

    fn router(self) -> Router {
        let mut router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(|| async { "ok\n" }));
        for (name, dir) in self.files {
            router = router.nest_service(&format!("/files/{name}"), ServeDir::new(dir));
        }
        router
    }
}

/// Binds the node's HTTP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `site` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    site: Site,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, site.router())
        .with_graceful_shutdown(shutdown)
        .await
}
