//! The HTTP API under `/api/v1`: the node, services, topics, tiles, assets, links, the
//! mirror, the log filter and the demo link. Each handler is a thin call into the node's
//! own API; the OpenAPI document (`openapi.json`) describes every route here.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use protocol::entry::{Append, NodeName, Offset, Timestamp, TopicName};
use protocol::log::{ReadError, WriteError};
use protocol::service::{ServicesError, TILES, Tile};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::views::{
    CertificateView, EdgeForgottenView, EdgeView, EntryView, HeaderView, LinkView, MirrorView,
    NodeView, TopicView,
};
use crate::{App, events};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The most entries or tiles one read returns.
pub const MAX_LIMIT: usize = 1000;

/// The bytes of entries past which one read stops (the first entry comes whatever its
/// size): an answer stays a few MiB however large the topic's entries are.
pub const MAX_READ_BYTES: u64 = 4 << 20;

type Result<T> = std::result::Result<T, ApiError>;

/// The `/api/v1` routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/node", get(node))
        .route("/services", get(services))
        .route("/services/{name}", get(service))
        .route("/services/{name}/start", post(service_start))
        .route("/services/{name}/stop", post(service_stop))
        .route("/services/{name}/delay", post(service_delay))
        .route("/topics", get(topics))
        .route("/topics/{name}", get(topic))
        .route("/topics/{name}/entries", get(entries).post(publish))
        .route("/tiles", get(tiles))
        .route("/assets", get(assets))
        .route("/assets/{id}", get(asset))
        .route("/assets/{id}/request", post(asset_request))
        .route("/links", get(links))
        .route("/links/{peer}", get(link))
        .route("/links/{peer}/pause", post(link_pause))
        .route("/links/{peer}/resume", post(link_resume))
        .route("/edges", get(edges).post(edge_add))
        .route("/edges/{name}", get(edge))
        .route("/edges/{name}/remove", post(edge_remove))
        .route("/edges/{name}/revoke", post(edge_revoke))
        .route("/edges/{name}/forget", post(edge_forget))
        .route("/fleet", get(crate::fleet::fleet))
        .route(
            "/enrollments",
            get(crate::enrollments::list).post(crate::enrollments::create),
        )
        .route("/enrollments/{id}/revoke", post(crate::enrollments::revoke))
        .route("/bridge", get(bridge))
        .route("/mirror", get(mirror))
        .route("/mirror/start", post(mirror_start))
        .route("/mirror/stop", post(mirror_stop))
        .route("/log", get(log).put(log_set))
        .route("/demo-link", get(demo_link).post(demo_link_set))
        .route("/events", get(events::events))
        .route(
            "/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .fallback(|| async {
            ApiError::not_found("no such endpoint; GET /api/v1/openapi.json lists them")
        })
}

/// The node's view, shared with the events.
pub fn node_view(app: &App) -> NodeView {
    NodeView {
        name: app.name.clone(),
        role: app.role,
        version: env!("CARGO_PKG_VERSION"),
        started_ms: app.started_ms,
        token_required: app.gate.access.required(),
        demo_link: app.demo.is_some(),
        log_filter: protocol::node::logs::control().map(|c| c.filter()),
        certificate: CertificateView::new(
            &app.credentials.certificate(),
            std::time::SystemTime::now(),
            protocol::node::CERTIFICATE_WARN_BEFORE,
        ),
    }
}

async fn node(State(app): State<Arc<App>>) -> Json<NodeView> {
    Json(node_view(&app))
}

// ---- services ----

async fn services(State(app): State<Arc<App>>) -> Response {
    Json(app.services.list()).into_response()
}

async fn service(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Path(name) = name?;
    match app.services.status(&name) {
        Some(status) => Ok(Json(status).into_response()),
        None => Err(unknown_service(&app, &name)),
    }
}

fn unknown_service(app: &App, name: &str) -> ApiError {
    let known: Vec<String> = app.services.list().into_iter().map(|s| s.name).collect();
    ApiError::not_found(format!(
        "no service named {name:?} on this node (services: {})",
        known.join(", ")
    ))
}

fn services_error(app: &App, e: ServicesError) -> ApiError {
    match e {
        ServicesError::Unknown { name, .. } => unknown_service(app, &name),
        ServicesError::Store(e) => write_error(e),
    }
}

async fn service_start(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Path(name) = name?;
    app.services
        .start(&name)
        .await
        .map_err(|e| services_error(&app, e))?;
    service(State(app), Ok(Path(name))).await
}

async fn service_stop(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Path(name) = name?;
    app.services
        .stop(&name)
        .await
        .map_err(|e| services_error(&app, e))?;
    service(State(app), Ok(Path(name))).await
}

/// The body of `POST /services/{name}/delay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delay {
    delay_ms: u64,
}

/// The longest processing delay an operator may set: one hour.
const MAX_DELAY_MS: u64 = 3_600_000;

async fn service_delay(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<Delay>, JsonRejection>,
) -> Result<Response> {
    let Path(name) = name?;
    let Json(Delay { delay_ms }) = body?;
    if delay_ms > MAX_DELAY_MS {
        return Err(ApiError::bad_request(format!(
            "delay_ms {delay_ms} is over the limit of {MAX_DELAY_MS} (one hour)"
        )));
    }
    app.services
        .set_delay(&name, Duration::from_millis(delay_ms))
        .await
        .map_err(|e| services_error(&app, e))?;
    service(State(app), Ok(Path(name))).await
}

// ---- topics ----

async fn topics(State(app): State<Arc<App>>) -> Json<Vec<TopicView>> {
    Json(app.store.topics().iter().map(TopicView::from).collect())
}

fn topic_name(app: &App, name: &str) -> Result<TopicName> {
    let topic = TopicName::new(name)
        .map_err(|e| ApiError::bad_request(format!("{name:?} is not a topic name: {e}")))?;
    if app.store.topic(&topic).is_none() {
        return Err(ApiError::not_found(format!(
            "no topic {name:?} on this node; GET /api/v1/topics lists them"
        )));
    }
    Ok(topic)
}

async fn topic(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<TopicView>> {
    let Path(name) = name?;
    let topic = topic_name(&app, &name)?;
    let info = app
        .store
        .topic(&topic)
        .ok_or_else(|| ApiError::not_found(format!("no topic {name:?} on this node")))?;
    Ok(Json(TopicView::from(&info)))
}

/// The query of `GET /topics/{name}/entries`: by offset (`from`), or by the origin's
/// time (`since_ms`, `until_ms`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    from: Option<u64>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: Option<usize>,
    /// Reading by offset, with nothing there yet: wait up to this long for an entry.
    wait_ms: Option<u64>,
}

/// The longest a read waits for a new entry: one minute.
const MAX_WAIT_MS: u64 = 60_000;

fn limit(limit: Option<usize>, default: usize) -> Result<usize> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad_request(format!(
            "limit {n} is over the most one read returns ({MAX_LIMIT}); page with `from`"
        ))),
        Some(n) => Ok(n),
    }
}

async fn entries(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
    query: std::result::Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<Vec<EntryView>>> {
    let Path(name) = name?;
    let Query(q) = query?;
    let topic = topic_name(&app, &name)?;
    let max = limit(q.limit, 100)?;
    if let Some(ms) = q.wait_ms
        && ms > MAX_WAIT_MS
    {
        return Err(ApiError::bad_request(format!(
            "wait_ms {ms} is over the longest wait ({MAX_WAIT_MS} ms)"
        )));
    }
    let from = Offset(q.from.unwrap_or(0));
    let timed = q.since_ms.is_some() || q.until_ms.is_some();
    let (since, until) = (q.since_ms.unwrap_or(0), q.until_ms.unwrap_or(u64::MAX));
    let read = |app: &App| -> Result<Vec<protocol::entry::Record>> {
        if !timed {
            return app
                .store
                .read_within(&topic, from, max, MAX_READ_BYTES)
                .map_err(read_error);
        }
        if since >= until {
            return Ok(Vec::new());
        }
        // By time, at or after `from`, at most `max`: never the whole range.
        app.store
            .read_time(
                &topic,
                from,
                Timestamp(since),
                Timestamp(until),
                max,
                MAX_READ_BYTES,
            )
            .map_err(read_error)
    };
    let next = app.store.topic(&topic).map_or(0, |t| t.next.0);
    let mut records = read(&app)?;
    if let Some(ms) = q.wait_ms
        && ms > 0
        && records.is_empty()
    {
        // Wait for an entry past what the topic holds now (and at `from` or later).
        let Ok(_waiting) = app.gate.access.waits.clone().try_acquire_owned() else {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                format!(
                    "{} reads are waiting for entries on this node, the most it keeps; read \
                     without wait_ms, or try again in a moment",
                    crate::access::MAX_WAITS
                ),
            ));
        };
        let after = Offset(next.max(from.0));
        let mut closing = app.closing.subscribe();
        let waited = tokio::time::timeout(Duration::from_millis(ms), app.store.wait(&topic, after));
        tokio::select! {
            _ = waited => {}
            _ = closing.wait_for(|c| *c) => {}
        }
        records = read(&app)?;
    }
    Ok(Json(records.iter().map(EntryView::from).collect()))
}

/// An optional field that, when present, must have a value (not `null`).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The body of `POST /topics/{name}/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    /// The payload as text.
    #[serde(default, deserialize_with = "present")]
    payload: Option<String>,
    /// Or as base64, for bytes that are not text.
    #[serde(default, deserialize_with = "present")]
    payload_base64: Option<String>,
    #[serde(default, deserialize_with = "present")]
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    to: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderView>,
}

/// What `POST /topics/{name}/entries` answers.
#[derive(Debug, Serialize)]
struct Published {
    topic: String,
    origin: String,
    seq: u64,
    offset: u64,
}

async fn publish(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
    body: std::result::Result<Json<Publish>, JsonRejection>,
) -> Result<Response> {
    let Path(name) = name?;
    let Json(p) = body?;
    let topic = topic_name(&app, &name)?;
    if name.starts_with('_') || name == TILES {
        return Err(ApiError::conflict(format!(
            "{name} is the node's own topic; publish to a topic of the mission"
        )));
    }
    if app.fed.contains(&name) {
        return Err(ApiError::conflict(format!(
            "{name} is fed by this node's own services and takes no entries from the API"
        )));
    }
    let payload = match (p.payload, p.payload_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("payload_base64 is not base64: {e}")))?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of payload (text) and payload_base64",
            ));
        }
    };
    let mut append = Append::new(payload);
    if let Some(key) = p.key {
        append = append.key(key.into_bytes());
    }
    if let Some(to) = p.to {
        let node = NodeName::new(&to)
            .map_err(|e| ApiError::bad_request(format!("to: {to:?} is not a node name: {e}")))?;
        append = append.to(node);
    }
    append.headers = p
        .headers
        .into_iter()
        .map(|h| (h.name, h.value.into_bytes()))
        .collect();
    let appended = app
        .store
        .append(&topic, append)
        .await
        .map_err(write_error)?;
    let body = Published {
        topic: name,
        origin: app.name.clone(),
        seq: appended.seq.0,
        offset: appended.offset.0,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::UnknownTopic(topic) => ApiError::not_found(format!(
            "no topic {topic} on this node; GET /api/v1/topics lists them"
        )),
        e => ApiError::unavailable(format!("the store cannot be read: {e}")),
    }
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::TooLarge { .. } | WriteError::UnknownTopic(_) => {
            ApiError::bad_request(e.to_string())
        }
        WriteError::DiskFull { .. } => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "disk-full", e.to_string())
        }
        e => ApiError::unavailable(format!("the store refused the write: {e}")),
    }
}

// ---- tiles ----

/// A tile with its offset in the `TILES` topic (the events' id).
#[derive(Debug, Clone, Serialize)]
pub struct TileView {
    /// Its offset.
    pub offset: u64,
    /// The tile.
    #[serde(flatten)]
    pub tile: Tile,
}

/// Up to `max` tiles from offset `from` on; tiles that do not decode are left out.
pub fn read_tiles(app: &App, from: u64, max: usize) -> Result<Vec<TileView>> {
    let records = app
        .store
        .read(&Tile::topic(), Offset(from), max)
        .map_err(read_error)?;
    Ok(records
        .iter()
        .filter_map(|r| {
            let tile = Tile::decode(&r.entry.payload).ok()?;
            Some(TileView {
                offset: r.offset.0,
                tile,
            })
        })
        .collect())
}

/// The most recent tiles' first offset, for `limit` of them.
pub fn recent_tiles_from(app: &App, limit: usize) -> u64 {
    app.store
        .topic(&Tile::topic())
        .map_or(0, |t| t.next.0.saturating_sub(limit as u64).max(t.first.0))
}

/// The query of `GET /tiles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TilesQuery {
    limit: Option<usize>,
}

async fn tiles(
    State(app): State<Arc<App>>,
    query: std::result::Result<Query<TilesQuery>, QueryRejection>,
) -> Result<Json<Vec<TileView>>> {
    let Query(q) = query?;
    let max = limit(q.limit, 50)?;
    Ok(Json(read_tiles(&app, recent_tiles_from(&app, max), max)?))
}

// ---- assets ----

async fn assets(State(app): State<Arc<App>>) -> Result<Json<Vec<Value>>> {
    let docs = app.store.docs(&mission::assets()).map_err(read_error)?;
    Ok(Json(docs.into_iter().map(|(_, doc)| doc).collect()))
}

async fn asset(
    State(app): State<Arc<App>>,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let Path(id) = id?;
    match mission::asset(&app.store, &id).map_err(read_error)? {
        Some(doc) => Ok(Json(Value::Object(doc))),
        None => Err(ApiError::not_found(format!(
            "no asset {id:?} on this node; GET /api/v1/assets lists them"
        ))),
    }
}

async fn asset_request(
    State(app): State<Arc<App>>,
    id: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Path(id) = id?;
    if app.role != "edge" {
        return Err(ApiError::conflict(
            "assets are requested at an edge; this node is the core",
        ));
    }
    let state = match mission::request(&app.store, &id).await {
        Ok(state) => state,
        Err(mission::RequestError::Unknown(id)) => {
            return Err(ApiError::not_found(format!(
                "no asset {id:?} at this edge: only broadcast assets can be requested \
                 (GET /api/v1/assets lists them)"
            )));
        }
        Err(mission::RequestError::Read(e)) => return Err(read_error(e)),
        Err(mission::RequestError::Write(e)) => return Err(write_error(e)),
    };
    Ok(Json(json!({ "id": id, "state": state })).into_response())
}

// ---- links ----

/// Every link's view, sorted by peer.
pub fn link_views(app: &App) -> Vec<LinkView> {
    let mut views: Vec<LinkView> = app.links.status().iter().map(LinkView::from).collect();
    views.sort_by(|a, b| a.peer.cmp(&b.peer));
    views
}

async fn links(State(app): State<Arc<App>>) -> Json<Vec<LinkView>> {
    Json(link_views(&app))
}

fn peer_link(app: &App, peer: &str) -> Result<Arc<protocol::link::PeerLink>> {
    let unknown = || {
        let peers: Vec<String> = link_views(app).into_iter().map(|l| l.peer).collect();
        ApiError::not_found(format!(
            "no link to {peer:?} on this node (links: {})",
            peers.join(", ")
        ))
    };
    let name = NodeName::new(peer).map_err(|_| unknown())?;
    app.links.get(&name).ok_or_else(unknown)
}

async fn link(
    State(app): State<Arc<App>>,
    peer: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<LinkView>> {
    let Path(peer) = peer?;
    Ok(Json(LinkView::from(&peer_link(&app, &peer)?.status())))
}

async fn link_pause(
    State(app): State<Arc<App>>,
    peer: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<LinkView>> {
    let Path(peer) = peer?;
    let link = peer_link(&app, &peer)?;
    link.pause();
    tracing::info!(peer = %peer, "link paused by an operator (HTTP API)");
    Ok(Json(LinkView::from(&link.status())))
}

async fn link_resume(
    State(app): State<Arc<App>>,
    peer: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<LinkView>> {
    let Path(peer) = peer?;
    let link = peer_link(&app, &peer)?;
    link.resume();
    tracing::info!(peer = %peer, "link resumed by an operator (HTTP API)");
    Ok(Json(LinkView::from(&link.status())))
}

// ---- edges (the core's list, certificates, revocations) ----

fn the_edges(app: &App) -> Result<&protocol::edges::Edges> {
    app.edges
        .as_ref()
        .ok_or_else(|| ApiError::conflict("the core keeps the list of edges; this node is an edge"))
}

fn edge_name(name: &str) -> Result<NodeName> {
    NodeName::new(name)
        .map_err(|e| ApiError::bad_request(format!("{name:?} is not an edge name: {e}")))
}

pub(crate) fn edges_error(e: protocol::edges::EdgesError) -> ApiError {
    use protocol::edges::EdgesError as E;
    match e {
        E::Unknown(_) => ApiError::not_found(format!("{e}; GET /api/v1/edges lists them")),
        E::OwnName(_) | E::NoCertificate(_) => ApiError::conflict(e.to_string()),
        E::Write(e) => write_error(e),
        E::Read(e) => read_error(e),
        E::UnknownCode(_) => {
            ApiError::not_found(format!("{e}; GET /api/v1/enrollments lists them"))
        }
        E::Enrollment(_) => ApiError::conflict(e.to_string()),
    }
}

/// Every edge the core knows, by name.
pub fn edge_views(app: &App) -> Vec<EdgeView> {
    app.edges
        .as_ref()
        .map(|edges| edges.list().iter().map(EdgeView::from).collect())
        .unwrap_or_default()
}

async fn edges(State(app): State<Arc<App>>) -> Result<Json<Vec<EdgeView>>> {
    the_edges(&app)?;
    Ok(Json(edge_views(&app)))
}

async fn edge(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<EdgeView>> {
    let Path(name) = name?;
    let edges = the_edges(&app)?;
    let node = edge_name(&name)?;
    if !edges.knows(&node) {
        return Err(edges_error(protocol::edges::EdgesError::Unknown(node)));
    }
    Ok(Json(EdgeView::from(&edges.status(&node))))
}

/// The body of `POST /edges`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeAdd {
    name: String,
}

async fn edge_add(
    State(app): State<Arc<App>>,
    body: std::result::Result<Json<EdgeAdd>, JsonRejection>,
) -> Result<Json<EdgeView>> {
    let Json(EdgeAdd { name }) = body?;
    let edges = the_edges(&app)?;
    let node = edge_name(&name)?;
    let status = edges.add(&node).await.map_err(edges_error)?;
    tracing::info!(edge = %node, "edge added by an operator (HTTP API)");
    Ok(Json(EdgeView::from(&status)))
}

async fn edge_remove(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<EdgeView>> {
    let Path(name) = name?;
    let edges = the_edges(&app)?;
    let status = edges
        .remove(&edge_name(&name)?)
        .await
        .map_err(edges_error)?;
    tracing::info!(edge = %name, "edge removed by an operator (HTTP API)");
    Ok(Json(EdgeView::from(&status)))
}

async fn edge_revoke(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<EdgeView>> {
    let Path(name) = name?;
    let edges = the_edges(&app)?;
    let status = edges
        .revoke(&edge_name(&name)?)
        .await
        .map_err(edges_error)?;
    tracing::info!(edge = %name, "edge revoked by an operator (HTTP API)");
    Ok(Json(EdgeView::from(&status)))
}

async fn edge_forget(
    State(app): State<Arc<App>>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<EdgeForgottenView>> {
    let Path(name) = name?;
    let edges = the_edges(&app)?;
    let node = edge_name(&name)?;
    let forgotten = edges.forget(&node).await.map_err(edges_error)?;
    tracing::info!(edge = %name, released = forgotten.released, "edge forgotten by an operator (HTTP API)");
    Ok(Json(EdgeForgottenView::new(
        &edges.status(&node),
        forgotten,
    )))
}

// ---- mirror ----

fn the_mirror(app: &App) -> Result<&protocol::link::Mirror> {
    app.mirror.as_ref().ok_or_else(|| {
        ApiError::conflict(if app.role == "core" {
            "the mirror runs at an edge; this node is the core, whose mission volume edges mirror"
        } else {
            "this edge has no mirror"
        })
    })
}

/// The mirror's view, if this node has one.
pub fn mirror_view(app: &App) -> Option<MirrorView> {
    app.mirror
        .as_ref()
        .map(|m| MirrorView::new(&m.status(), m.started()))
}

/// `GET /bridge`: the bridge to NATS JetStream, each topic's way in or out.
async fn bridge(State(app): State<Arc<App>>) -> Result<Json<protocol::bridge::BridgeStatus>> {
    let status = app.bridge.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "this node has no bridge to NATS: set [bridge] urls, out and in in its config",
        )
    })?;
    Ok(Json(status.borrow().clone()))
}

async fn mirror(State(app): State<Arc<App>>) -> Result<Json<MirrorView>> {
    let m = the_mirror(&app)?;
    Ok(Json(MirrorView::new(&m.status(), m.started())))
}

async fn mirror_start(State(app): State<Arc<App>>) -> Result<Json<MirrorView>> {
    let m = the_mirror(&app)?;
    m.start()
        .map_err(|e| ApiError::unavailable(format!("cannot record the start: {e}")))?;
    tracing::info!("mirror started by an operator (HTTP API)");
    Ok(Json(MirrorView::new(&m.status(), m.started())))
}

async fn mirror_stop(State(app): State<Arc<App>>) -> Result<Json<MirrorView>> {
    let m = the_mirror(&app)?;
    m.stop()
        .map_err(|e| ApiError::unavailable(format!("cannot record the stop: {e}")))?;
    tracing::info!("mirror stopped by an operator (HTTP API)");
    Ok(Json(MirrorView::new(&m.status(), m.started())))
}

// ---- log ----

/// The body and answer of `/log`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFilter {
    filter: String,
}

fn log_control() -> Result<&'static protocol::node::logs::LogControl> {
    protocol::node::logs::control().ok_or_else(|| {
        ApiError::conflict(
            "this node's process did not install the node's logger (a test harness?)",
        )
    })
}

/// Whether `filter` is comma-separated items, each a level or `module::path=level`.
fn simple_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let ident = |s: &str| {
        s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    filter.split(',').all(|item| {
        let (target, level) = match item.split_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, item),
        };
        LEVELS.contains(&level) && target.is_none_or(|t| t.split("::").all(ident))
    })
}

async fn log() -> Result<Json<LogFilter>> {
    Ok(Json(LogFilter {
        filter: log_control()?.filter(),
    }))
}

async fn log_set(
    body: std::result::Result<Json<LogFilter>, JsonRejection>,
) -> Result<Json<LogFilter>> {
    let Json(LogFilter { filter }) = body?;
    let control = log_control()?;
    if !simple_filter(&filter) {
        return Err(ApiError::bad_request(format!(
            "{filter:?} is not a log filter: give comma-separated levels (trace, debug, info, \
             warn, error, off) or module=level items, such as protocol::link=debug,info"
        )));
    }
    control.set_filter(&filter).map_err(ApiError::bad_request)?;
    tracing::info!(filter = %filter, "log filter changed (HTTP API)");
    Ok(Json(LogFilter {
        filter: control.filter(),
    }))
}

// ---- demo link ----

fn the_demo(app: &App) -> Result<&Arc<dyn crate::DemoLink>> {
    app.demo.as_ref().ok_or_else(|| {
        ApiError::not_found("this node has no demo link: it is not running in the demo")
    })
}

async fn demo_link(State(app): State<Arc<App>>) -> Result<Json<crate::DemoLinkStatus>> {
    Ok(Json(the_demo(&app)?.status()))
}

/// The body of `POST /demo-link`: either or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoLinkSet {
    #[serde(default, deserialize_with = "present")]
    profile: Option<String>,
    #[serde(default, deserialize_with = "present")]
    up: Option<bool>,
}

async fn demo_link_set(
    State(app): State<Arc<App>>,
    body: std::result::Result<Json<DemoLinkSet>, JsonRejection>,
) -> Result<Json<crate::DemoLinkStatus>> {
    let Json(set) = body?;
    let demo = the_demo(&app)?;
    if set.profile.is_none() && set.up.is_none() {
        return Err(ApiError::bad_request(
            "give a profile, up (true or false), or both",
        ));
    }
    if let Some(profile) = &set.profile {
        demo.set_profile(profile).map_err(ApiError::bad_request)?;
    }
    if let Some(up) = set.up {
        demo.set_up(up);
    }
    Ok(Json(demo.status()))
}

#[cfg(test)]
mod tests {
    use super::simple_filter;

    #[test]
    fn log_filters_are_levels_or_module_levels() {
        for good in [
            "info",
            "debug",
            "protocol::link=debug,info",
            "a_b=off,warn,x=trace",
        ] {
            assert!(simple_filter(good), "{good}");
        }
        for bad in [
            "",
            "loud",
            "=info",
            "Protocol=debug",
            "a::=info",
            "info,",
            "a=b=info",
        ] {
            assert!(!simple_filter(bad), "{bad}");
        }
    }
}
