//! A node's HTTP server (axum): the API under `/api/v1` ([`api`]) with its OpenAPI
//! document and live events ([`events`]), the web tile page embedded in the binary
//! ([`page`]), `/metrics` ([`metrics`]), health, and the node's files served read-only
//! from their own directories. Also the CLI that talks to a node's API ([`cli`]).
//!
//! It uses the node's public API only (store, services, links, mirror, logs); what the
//! demo adds (its link emulator) comes in through [`DemoLink`].
//!
//! Rules: every request that changes something (any method but GET and HEAD) needs the
//! bearer token when `http.token` is set; errors are JSON with a code and a message
//! ([`error`]); nothing served comes from outside the directories the node names.
//!
//! IO: a TCP listener; reads the directories it is given.

pub mod access;
pub mod api;
pub mod cli;
pub mod enrollments;
pub mod error;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod page;
pub mod setup;
pub mod views;

use std::net::SocketAddr;
use std::path::{Component, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::link::{Links, Mirror};
use protocol::log::Store;
use protocol::node::{Node, Role};
use protocol::service::Services;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::services::ServeDir;

use crate::error::ApiError;

/// The demo's link, where the demo runs: its emulator's profile, and a switch.
pub trait DemoLink: Send + Sync + 'static {
    /// The profile in use, the profiles there are, and whether the link is up.
    fn status(&self) -> DemoLinkStatus;
    /// Switches to the named profile; an unknown name is refused with the known ones.
    fn set_profile(&self, name: &str) -> Result<(), String>;
    /// Takes the link down (`false`) or brings it back (`true`).
    fn set_up(&self, up: bool);
}

/// The demo link as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DemoLinkStatus {
    /// The profile in use.
    pub profile: String,
    /// Every profile's name.
    pub profiles: Vec<String>,
    /// Whether the link is up.
    pub up: bool,
}

/// What a node serves over HTTP besides its API: its files, and the demo link.
#[derive(Default)]
pub struct Site {
    files: Vec<(String, PathBuf)>,
    demo: Option<Arc<dyn DemoLink>>,
    fed: Vec<String>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("files", &self.files)
            .field("demo", &self.demo.is_some())
            .finish()
    }
}

impl Site {
    /// Serves the files under `dir` at `/files/<name>/...`, read-only; paths that would
    /// leave `dir` are refused.
    pub fn files(mut self, name: &str, dir: PathBuf) -> Site {
        self.files.push((name.to_owned(), dir));
        self
    }

    /// Adds the demo link's control.
    pub fn demo_link(mut self, demo: Arc<dyn DemoLink>) -> Site {
        self.demo = Some(demo);
        self
    }

    /// Topics this node's own services feed: the API takes no entries for them, so that
    /// no request can hand a service input it did not make (a download from any URL, a
    /// file name of its choosing).
    pub fn fed_by_services(mut self, topics: &[&str]) -> Site {
        self.fed.extend(topics.iter().map(|t| (*t).to_owned()));
        self
    }
}

/// What the handlers share: the node's handles.
pub struct App {
    name: String,
    role: &'static str,
    started_ms: u64,
    /// Its credentials, host names and body limit.
    gate: Arc<access::Gate>,
    store: Store,
    services: Services,
    links: Links,
    mirror: Option<Mirror>,
    credentials: protocol::tls::Credentials,
    edges: Option<protocol::edges::Edges>,
    /// The bridge's status, where the node has one.
    bridge: Option<tokio::sync::watch::Receiver<protocol::bridge::BridgeStatus>>,
    demo: Option<Arc<dyn DemoLink>>,
    /// See [`Site::fed_by_services`].
    fed: Vec<String>,
    /// Room for live-event streams ([`events::MAX_STREAMS`]).
    streams: Arc<tokio::sync::Semaphore>,
    http: metrics::HttpCounts,
    /// Turns true when the server stops: live event streams end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl App {
    fn new(node: &Node, demo: Option<Arc<dyn DemoLink>>, fed: Vec<String>) -> App {
        let config = node.config();
        App {
            name: config.node.name.to_string(),
            role: match config.role {
                Role::Core => "core",
                Role::Edge => "edge",
            },
            started_ms: views::millis(std::time::SystemTime::now()),
            // One entry, base64 (4/3) in JSON, with room for its headers.
            gate: access::Gate::new(
                config,
                usize::try_from(config.store.max_entry_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(3)
                    .div_ceil(2)
                    .saturating_add(64 << 10),
            ),
            store: node.store().clone(),
            services: node.services().clone(),
            links: node.links().clone(),
            mirror: node.mirror().cloned(),
            credentials: node.credentials().clone(),
            edges: node.edges().cloned(),
            bridge: node.bridge().map(protocol::bridge::Bridge::watch),
            demo,
            fed,
            streams: Arc::new(tokio::sync::Semaphore::new(events::MAX_STREAMS)),
            http: metrics::HttpCounts::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

fn router(app: Arc<App>, files: Vec<(String, PathBuf)>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .nest(
            "/api/v1",
            api::routes().merge(access::routes(app.gate.clone())),
        )
        .merge(page::routes());
    for (name, dir) in files {
        let served = Router::new()
            .fallback_service(ServeDir::new(dir))
            .layer(middleware::map_response(file_headers))
            .layer(middleware::from_fn(inside_directory));
        router = router.nest(&format!("/files/{name}"), served);
    }
    router
        .layer(DefaultBodyLimit::max(app.gate.body_limit))
        .layer(middleware::from_fn_with_state(
            app.gate.clone(),
            access::guard,
        ))
        .route_layer(middleware::from_fn_with_state(app.clone(), metrics::count))
        .with_state(app)
}

/// Refuses a file path that tries to leave its directory.
async fn inside_directory(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if escapes(path.trim_start_matches('/')) {
        return ApiError::bad_request(format!(
            "{path}: a file path must stay inside its directory (no `..`, no absolute parts)"
        ))
        .into_response();
    }
    next.run(request).await
}

/// What a served file may do in a browser: nothing. A file from the mission volume or a
/// download is someone else's bytes: `sandbox` keeps an `.html` or `.svg` from running
/// script on the node's origin (where the page keeps its token), `nosniff` keeps a
/// browser from taking it for something it is not labelled as, and anything but a raster
/// image downloads instead of opening. Images still show in the page's tiles.
async fn file_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let raster = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("image/") && !t.starts_with("image/svg"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    if !raster {
        headers.insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_static("attachment"),
        );
    }
    response
}

/// Whether a URL path, once percent-decoded, would leave the directory it names.
fn escapes(path: &str) -> bool {
    let decoded = percent_decode(path);
    decoded.contains('\\')
        || decoded.contains('\0')
        || std::path::Path::new(&decoded)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    /// Serves `node`'s API and page and `site`'s files, in a task of its own, until
    /// [`Server::stop`].
    pub fn serve(self, node: &Node, site: Site) -> std::io::Result<Server> {
        let addr = self.addr()?;
        let http = &node.config().http;
        if http.token.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                http = %addr,
                "INSECURE: HTTP is served beyond this machine with no token \
                 (http.insecure_no_token): anyone who reaches {addr} reads and changes \
                 everything on this node"
            );
        }
        let app = Arc::new(App::new(node, site.demo, site.fed));
        let closing = app.closing.clone();
        let router = router(app, site.files);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move {
            axum::serve(
                self.0,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        });
        Ok(Server {
            addr,
            stop,
            closing,
            task,
        })
    }
}

/// A running HTTP server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    closing: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it: no new connections; it returns once the open ones are done (live
    /// event streams end with it).
    pub async fn stop(self) {
        self.closing.send_replace(true);
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_their_directory_are_caught() {
        for bad in [
            "../x",
            "a/../../x",
            "%2e%2e/x",
            "a/%2E%2E/b",
            "/etc/passwd",
            "a\\..\\b",
            "a%00",
        ] {
            assert!(escapes(bad), "{bad}");
        }
        for good in ["a.png", "assets/x.png", "a..b", "./a", "x%20y.png"] {
            assert!(!escapes(good), "{good}");
        }
    }
}
