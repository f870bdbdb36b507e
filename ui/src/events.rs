//! Live events (`GET /api/v1/events`), as server-sent events: what the page shows,
//! pushed as it changes.
//!
//! Events, each a JSON document named by its `event:` field:
//! - `node`: the node (first, once);
//! - `services`: every service's state and counters, when any changes;
//! - `links`: every link's state, round trip, bytes and backlog, when any changes;
//! - `mirror`: the edge's mirror progress, when it changes;
//! - `demo-link`: the demo link's profile and state, when it changes (demo only);
//! - `bridge`: the bridge to NATS JetStream, when it changes (where there is one);
//! - `tile`: one tile, with the tile's offset as the event id: a client that
//!   reconnects with `Last-Event-ID` (as browsers do by themselves) gets the tiles it
//!   missed, and no tile twice;
//! - `log`: one log line (the last 200 first).
//!
//! States are sampled every 250 ms and sent only when they changed; tiles and log lines
//! are sent as they come. One task per client feeds a small channel: a slow client
//! slows only itself (and misses log lines, which it is told).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use protocol::node::logs::{LogLine, control};
use protocol::service::Tile;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::api::{self, TileView};
use crate::error::ApiError;
use crate::{App, DemoLinkStatus};

/// How often states are compared with what the client last got.
const SAMPLE: Duration = Duration::from_millis(250);

/// The query of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// How many recent tiles to send first (default 50; 0: none). Ignored when the
    /// client sends `Last-Event-ID`.
    tiles: Option<usize>,
    /// Whether to send log lines (default true).
    logs: Option<bool>,
}

/// Live-event streams a node serves at once (pages, CLIs following a mirror).
pub(crate) const MAX_STREAMS: usize = 32;

pub(crate) async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(q) = query?;
    let recent = q.tiles.unwrap_or(50);
    if recent > api::MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "tiles {recent} is over the most one read returns ({})",
            api::MAX_LIMIT
        )));
    }
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be a tile offset (a number)")
                })?,
        ),
        None => None,
    };
    let from = match resume {
        Some(offset) => offset.saturating_add(1),
        None => api::recent_tiles_from(&app, recent),
    };
    // Each stream holds a task and a subscription until its client goes: a bounded few.
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too-many-streams",
            format!(
                "{MAX_STREAMS} live-event streams are open on this node, the most it serves: \
                 close a page (or another client) and retry"
            ),
        ));
    };
    let (tx, rx) = mpsc::channel(64);
    let logs = q.logs.unwrap_or(true);
    tokio::spawn(async move {
        feed(app, tx, from, logs).await;
        drop(permit);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    // Our views always serialize; an empty event is harmless if one ever did not.
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// What the client last got.
#[derive(Default)]
struct Sent {
    services: Option<Vec<protocol::service::ServiceStatus>>,
    links: Option<Vec<crate::views::LinkView>>,
    mirror: Option<crate::views::MirrorView>,
    demo: Option<DemoLinkStatus>,
    bridge: Option<protocol::bridge::BridgeStatus>,
}

/// Feeds one client until it goes away.
async fn feed(app: Arc<App>, tx: mpsc::Sender<Event>, mut next_tile: u64, logs: bool) {
    if tx
        .send(json_event("node", &api::node_view(&app)))
        .await
        .is_err()
    {
        return;
    }
    let mut sent = Sent::default();
    let mut tail = app.store.subscribe(&Tile::topic()).ok();
    let mut lines = match (logs, control()) {
        (true, Some(control)) => {
            let (backlog, rx) = control.subscribe();
            for line in &backlog {
                if tx.send(json_event("log", line)).await.is_err() {
                    return;
                }
            }
            Some(rx)
        }
        _ => None,
    };
    let mut closing = app.closing.subscribe();
    let mut tick = tokio::time::interval(SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Tiles already there go first.
    let mut tiles_due = true;
    loop {
        if tiles_due {
            tiles_due = false;
            match api::read_tiles(&app, next_tile, 100) {
                Ok(tiles) => {
                    let full = tiles.len() == 100;
                    for tile in tiles {
                        next_tile = tile.offset + 1;
                        if tx.send(tile_event(&tile)).await.is_err() {
                            return;
                        }
                    }
                    tiles_due = full;
                }
                Err(e) => tracing::debug!(error = ?e, "events: cannot read tiles"),
            }
            if tiles_due {
                continue;
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            _ = async { closing.wait_for(|closing| *closing).await.is_ok() } => return,
            _ = tick.tick() => {
                for event in changes(&app, &mut sent) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            changed = async { tail.as_mut()?.changed().await.ok() }, if tail.is_some() => {
                if changed.is_none() {
                    tail = None;
                }
                tiles_due = true;
            }
            line = async { Some(lines.as_mut()?.recv().await) }, if lines.is_some() => {
                let event = match line {
                    Some(Ok(line)) => json_event("log", &line),
                    Some(Err(broadcast::error::RecvError::Lagged(n))) => json_event("log", &LogLine {
                        time_ms: crate::views::millis(std::time::SystemTime::now()),
                        level: "WARN".to_owned(),
                        target: "ui".to_owned(),
                        text: format!("{n} log lines skipped: this page could not keep up"),
                    }),
                    Some(Err(broadcast::error::RecvError::Closed)) | None => {
                        lines = None;
                        continue;
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn tile_event(tile: &TileView) -> Event {
    json_event("tile", tile).id(tile.offset.to_string())
}

/// The events for the states that changed since `sent`, which it updates.
fn changes(app: &App, sent: &mut Sent) -> Vec<Event> {
    let mut events = Vec::new();
    let services = app.services.list();
    if sent.services.as_ref() != Some(&services) {
        events.push(json_event("services", &services));
        sent.services = Some(services);
    }
    let links = api::link_views(app);
    if sent.links.as_ref() != Some(&links) {
        events.push(json_event("links", &links));
        sent.links = Some(links);
    }
    if let Some(mirror) = api::mirror_view(app)
        && sent.mirror.as_ref() != Some(&mirror)
    {
        events.push(json_event("mirror", &mirror));
        sent.mirror = Some(mirror);
    }
    if let Some(demo) = &app.demo {
        let status = demo.status();
        if sent.demo.as_ref() != Some(&status) {
            events.push(json_event("demo-link", &status));
            sent.demo = Some(status);
        }
    }
    if let Some(bridge) = &app.bridge {
        let status = bridge.borrow().clone();
        if sent.bridge.as_ref() != Some(&status) {
            events.push(json_event("bridge", &status));
            sent.bridge = Some(status);
        }
    }
    events
}
