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

pub mod api;
pub mod cli;
pub mod error;
pub mod events;
pub mod metrics;
pub mod page;
pub mod views;

use std::net::SocketAddr;
use std::path::{Component, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
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
    token: Option<String>,
    store: Store,
    services: Services,
    links: Links,
    mirror: Option<Mirror>,
    credentials: protocol::tls::Credentials,
    edges: Option<protocol::edges::Edges>,
    demo: Option<Arc<dyn DemoLink>>,
    /// See [`Site::fed_by_services`].
    fed: Vec<String>,
    /// `http.hosts`: names the node answers to besides addresses and localhost.
    hosts: Vec<String>,
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
            token: config.http.token.clone(),
            store: node.store().clone(),
            services: node.services().clone(),
            links: node.links().clone(),
            mirror: node.mirror().cloned(),
            credentials: node.credentials().clone(),
            edges: node.edges().cloned(),
            demo,
            fed,
            hosts: config.http.hosts.clone(),
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
        .nest("/api/v1", api::routes())
        .merge(page::routes());
    for (name, dir) in files {
        let served = Router::new()
            .fallback_service(ServeDir::new(dir))
            .layer(middleware::map_response(file_headers));
        router = router.nest(&format!("/files/{name}"), served);
    }
    router
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .route_layer(middleware::from_fn_with_state(app.clone(), metrics::count))
        .with_state(app)
}

/// Refuses what a browser on another site sends (a cross-site request, or a change whose
/// `Origin` is not this node), a change without the token, and a file path that tries to
/// leave its directory.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz");
    if !probe && let Some(why) = unknown_host(&request, &app.hosts) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response();
    }
    if let Some(why) = from_another_site(&request, safe) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response();
    }
    if !safe && let Some(token) = &app.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            return ApiError::unauthorized(
                "this node needs its bearer token for changes: send `Authorization: Bearer \
                 <token>` (the node's http.token, or TETHER_HTTP__TOKEN)",
            )
            .into_response();
        }
    }
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/files/")
        && escapes(rest)
    {
        return ApiError::bad_request(format!(
            "{path}: a file path must stay inside its directory (no `..`, no absolute parts)"
        ))
        .into_response();
    }
    next.run(request).await
}

/// Why the request's `Host` is not one this node answers to, if it is not: IP addresses
/// and `localhost` always are (a page can rebind only a name of its own to the node's
/// address), other names only when `http.hosts` lists them.
fn unknown_host(request: &Request, hosts: &[String]) -> Option<String> {
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(_) => return None, // an IPv6 address
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.to_ascii_lowercase();
    let known = name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || hosts.contains(&name);
    (!known).then(|| {
        format!(
            "this node does not answer to the host name {name:?}: if people or a proxy reach \
             it by that name, add it to http.hosts (TETHER_HTTP__HOSTS)"
        )
    })
}

/// Why a request comes from a page on another site, if it does: browsers say so in
/// `Sec-Fetch-Site`, and send `Origin` with every cross-origin change (a form posted by
/// another site, a script's fetch), which must then name this node as the `Host` does.
/// Clients that are not browsers (the CLI, Prometheus, curl) send neither.
fn from_another_site(request: &Request, safe: bool) -> Option<String> {
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site") == Some("cross-site") {
        return Some(
            "a page of another site sent this request (Sec-Fetch-Site: cross-site); \
             use this node's own page, the CLI or the API directly"
                .to_owned(),
        );
    }
    if safe {
        return None;
    }
    let origin = text(header::ORIGIN.as_str())?;
    let host = text(header::HOST.as_str()).unwrap_or("");
    let from = origin
        .split_once("://")
        .map_or(origin, |(_, authority)| authority);
    (!from.eq_ignore_ascii_case(host)).then(|| {
        format!(
            "a change from the page at {origin}, which is not this node ({host}): refused, so \
             that no other site can act through an operator's browser"
        )
    })
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

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let app = Arc::new(App::new(node, site.demo, site.fed));
        let closing = app.closing.clone();
        let router = router(app, site.files);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move {
            axum::serve(self.0, router)
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

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abcdefgh", b"abcdefgh"));
        assert!(!same(b"abcdefgh", b"abcdefgx"));
        assert!(!same(b"abcdefgh", b"abcdefg"));
    }
}
