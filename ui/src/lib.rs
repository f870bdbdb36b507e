//! The HTTP API (axum) and the web tile page it serves, embedded in the node binaries.
//!
//! Today: the server itself ([`Listener`], [`Server`]), health, and the node's files served
//! read-only from their own directories ([`Site`]). The API, the page and the live events
//! come with the UI issue. It knows nothing of sled or QUIC: nodes hand it directories
//! and, later, plain view types, so that `ui` and `protocol` compile in parallel.
//!
//! IO: a TCP listener; reads the directories it is given.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
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

/// A node's HTTP listener, bound; [`Listener::serve`] starts serving on it.
#[derive(Debug)]
pub struct Listener(TcpListener);

impl Listener {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
        TcpListener::bind(addr).await.map(Listener)
    }

    /// The address it is bound to.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Serves `site` in a task of its own until [`Server::stop`].
    pub fn serve(self, site: Site) -> std::io::Result<Server> {
        let addr = self.addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move {
            axum::serve(self.0, site.router())
                .with_graceful_shutdown(shutdown)
                .await
        });
        Ok(Server { addr, stop, task })
    }
}

/// A running HTTP server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it: no new connections; it returns once the open ones are done.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
