//! `/metrics`: the node's figures in Prometheus' text exposition format (version 0.0.4),
//! named by its conventions (`tether_` prefix, base units in the name, counters ending
//! in `_total`), and the count of HTTP requests that feeds one of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::service::ServiceState;

use crate::App;
use crate::views::{MIRROR_STATES, mirror_state};

/// HTTP requests served, by method, route and status.
#[derive(Debug, Default)]
pub struct HttpCounts(Mutex<BTreeMap<(String, String, u16), u64>>);

/// Counts every request by its route's pattern (never its raw path: ids stay out of
/// the label set).
pub(crate) async fn count(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let mut counts = app.http.0.lock().unwrap_or_else(|p| p.into_inner());
    *counts.entry((method, route, status)).or_default() += 1;
    response
}

/// Most links whose series are per peer; a node with more shows the fleet's totals.
pub const PER_PEER_LINKS: usize = 64;

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    // A fleet's totals take a few store lookups per edge: off the runtime's workers.
    let text = tokio::task::spawn_blocking(move || render(&app))
        .await
        .unwrap_or_default();
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// HQ's edges, in totals: per state, entries and bytes held for them, the most behind.
fn fleet_totals(o: &mut String, edges: &protocol::edges::Edges) {
    let rows = match edges.fleet(std::time::SystemTime::now()) {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(%err, "metrics: cannot read the fleet");
            return;
        }
    };
    let mut f = family(
        o,
        "tether_edges",
        "gauge",
        "HQ's edges per state (up, paused, down, never, released, revoked, removed).",
    );
    for state in crate::fleet::STATES {
        f.sample(
            &[("state", state)],
            rows.iter().filter(|r| r.state == state).count(),
        );
    }
    let held = |r: &protocol::edges::fleet::FleetRow| r.backlog_out.unwrap_or_default();
    family(
        o,
        "tether_edges_backlog_entries",
        "gauge",
        "Entries HQ holds that its edges have not acknowledged, summed over the edges.",
    )
    .sample(&[], rows.iter().map(|r| held(r).entries).sum::<u64>());
    family(
        o,
        "tether_edges_backlog_bytes",
        "gauge",
        "Their bytes, estimated from each topic's mean entry size.",
    )
    .sample(&[], rows.iter().map(|r| held(r).bytes).sum::<u64>());
    family(
        o,
        "tether_edges_behind_max_seconds",
        "gauge",
        "How long the edge furthest behind has been behind.",
    )
    .sample(
        &[],
        rows.iter()
            .map(|r| r.behind)
            .max()
            .unwrap_or_default()
            .as_secs_f64(),
    );
    family(
        o,
        "tether_edges_gaps",
        "gauge",
        "Gap records naming an edge (the newest 10,000 records), summed over the edges.",
    )
    .sample(&[], rows.iter().map(|r| r.gaps).sum::<u64>());
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds as Prometheus wants them.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The whole exposition.
pub fn render(app: &App) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(
        o,
        "tether_node_info",
        "gauge",
        "The node: its name, role and version (always 1).",
    )
    .sample(
        &[
            ("node", &app.name),
            ("role", app.role),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    family(
        o,
        "tether_start_time_seconds",
        "gauge",
        "When the node started, in seconds since the Unix epoch.",
    )
    .sample(&[], seconds(app.started_ms));
    let certificate = app.credentials.certificate();
    family(
        o,
        "tether_certificate_expiry_time_seconds",
        "gauge",
        "When the node's own certificate (as its handshakes use it now) expires, in seconds \
         since the Unix epoch; the node warns 14 days before.",
    )
    .sample(&[], seconds(crate::views::millis(certificate.not_after)));
    if let Some(edges) = &app.edges {
        let list = edges.list();
        let revoked: usize = list
            .iter()
            .map(|e| {
                e.certificates
                    .iter()
                    .filter(|c| c.revoked.is_some())
                    .count()
            })
            .sum();
        family(
            o,
            "tether_edges_revoked_certificates",
            "gauge",
            "Edge certificates the core refuses because an operator revoked them.",
        )
        .sample(&[], revoked);
        let admitted = list.iter().filter(|e| e.listing.admitted()).count();
        family(
            o,
            "tether_edges_admitted",
            "gauge",
            "Edge names the core admits now (config and operators' changes; any-edge counts the known ones).",
        )
        .sample(&[], admitted);
    }

    // The store.
    let topics = app.store.topics();
    let mut f = family(
        o,
        "tether_appends_total",
        "counter",
        "Entries this node appended, per topic.",
    );
    for t in &topics {
        let own = app
            .store
            .vector(&t.config.name)
            .map_or(0, |v| v.get(app.store.node()).0);
        f.sample(&[("topic", t.config.name.as_str())], own);
    }
    let mut f = family(
        o,
        "tether_topic_entries_total",
        "counter",
        "Entries stored in each topic on this node (appended here or received).",
    );
    for t in &topics {
        f.sample(&[("topic", t.config.name.as_str())], t.next.0);
    }
    let mut f = family(
        o,
        "tether_topic_bytes",
        "gauge",
        "Entry bytes each topic holds now.",
    );
    for t in &topics {
        f.sample(&[("topic", t.config.name.as_str())], t.bytes);
    }
    family(
        o,
        "tether_store_disk_bytes",
        "gauge",
        "Bytes the store takes on disk.",
    )
    .sample(&[], app.store.disk_bytes());

    // The fleet (HQ): totals whatever its size.
    if let Some(edges) = &app.edges {
        fleet_totals(o, edges);
    }

    // Links, one series per peer while there are at most `PER_PEER_LINKS` (a fleet's
    // thousand edges would be tens of thousands of series: its totals are above).
    let mut links = app.links.status();
    if links.len() > PER_PEER_LINKS {
        links.clear();
    }
    let mut f = family(
        o,
        "tether_link_up",
        "gauge",
        "Whether the link to a peer is up (1) or down (0).",
    );
    for l in &links {
        f.sample(&[("peer", l.peer.as_str())], u8::from(l.connected));
    }
    let mut f = family(
        o,
        "tether_link_paused",
        "gauge",
        "Whether the link is paused by an operator on either side.",
    );
    for l in &links {
        f.sample(
            &[("peer", l.peer.as_str())],
            u8::from(l.paused_here || l.paused_by_peer),
        );
    }
    let mut f = family(
        o,
        "tether_link_rtt_seconds",
        "gauge",
        "The link's smoothed round trip, while it is up.",
    );
    for l in &links {
        if let Some(rtt) = l.rtt {
            f.sample(&[("peer", l.peer.as_str())], rtt.as_secs_f64());
        }
    }
    let mut f = family(
        o,
        "tether_link_bytes_total",
        "counter",
        "Compressed entry bytes that crossed the link, per direction.",
    );
    for l in &links {
        f.sample(
            &[("peer", l.peer.as_str()), ("direction", "out")],
            l.bytes_out,
        );
        f.sample(
            &[("peer", l.peer.as_str()), ("direction", "in")],
            l.bytes_in,
        );
    }
    let mut f = family(
        o,
        "tether_link_throttled_total",
        "counter",
        "Times an edge's entries waited for its relay quota at the core.",
    );
    for l in &links {
        f.sample(&[("peer", l.peer.as_str())], l.throttled);
    }
    let mut f = family(
        o,
        "tether_link_failed_dials_total",
        "counter",
        "Dials of the core that failed: refused, or no answer (edge).",
    );
    for l in &links {
        f.sample(&[("peer", l.peer.as_str())], l.failed_dials);
    }
    let mut f = family(
        o,
        "tether_link_entries_total",
        "counter",
        "Entries sent (out) or stored (in) over the link, per topic.",
    );
    for l in &links {
        for t in &l.topics {
            let direction = if t.out { "out" } else { "in" };
            f.sample(
                &[
                    ("peer", l.peer.as_str()),
                    ("topic", t.topic.as_str()),
                    ("direction", direction),
                ],
                t.entries,
            );
        }
    }
    let mut f = family(
        o,
        "tether_link_backlog_entries",
        "gauge",
        "Entries waiting to be sent to the peer, per topic (an upper bound).",
    );
    for l in &links {
        for t in l.topics.iter().filter(|t| t.out) {
            f.sample(
                &[("peer", l.peer.as_str()), ("topic", t.topic.as_str())],
                t.backlog,
            );
        }
    }

    // The mirror.
    if let Some(mirror) = &app.mirror {
        let s = mirror.status();
        let mut f = family(
            o,
            "tether_mirror_state",
            "gauge",
            "The mirror's state (1 for the current one).",
        );
        for state in MIRROR_STATES {
            f.sample(
                &[("state", mirror_state(state))],
                u8::from(state == s.state),
            );
        }
        family(
            o,
            "tether_mirror_done_bytes",
            "gauge",
            "Chunk bytes of this mirror received and verified.",
        )
        .sample(&[], s.bytes_done);
        family(
            o,
            "tether_mirror_arrived_bytes",
            "gauge",
            "Chunk bytes of this mirror read from the link, verified or not yet.",
        )
        .sample(&[], s.bytes_arrived);
        family(
            o,
            "tether_mirror_todo_bytes",
            "gauge",
            "Chunk bytes this mirror fetches in all.",
        )
        .sample(&[], s.bytes_todo);
        family(
            o,
            "tether_mirror_link_bytes",
            "gauge",
            "Bytes of this mirror that crossed the link, both ways.",
        )
        .sample(&[], s.bytes_on_link);
        family(
            o,
            "tether_mirror_rate_bytes_per_second",
            "gauge",
            "The mirror's recent rate.",
        )
        .sample(&[], s.rate);
        let mut f = family(
            o,
            "tether_mirror_last_success_time_seconds",
            "gauge",
            "When the last successful mirror ended, in seconds since the Unix epoch.",
        );
        if let Some(t) = s.last_success {
            f.sample(&[], seconds(crate::views::millis(t)));
        }
    }

    // Services.
    let services = app.services.list();
    let mut f = family(
        o,
        "tether_service_processed_total",
        "counter",
        "Items a service processed since the node started.",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], s.processed);
    }
    let mut f = family(
        o,
        "tether_service_failed_total",
        "counter",
        "Items that failed in a service since the node started.",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], s.failed);
    }
    let mut f = family(
        o,
        "tether_service_restarts_total",
        "counter",
        "Restarts of a service after a failure since the node started.",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], s.restarts);
    }
    let mut f = family(
        o,
        "tether_service_state",
        "gauge",
        "A service's state (1 for the current one).",
    );
    for s in &services {
        let current = match s.state {
            ServiceState::Stopped => "stopped",
            ServiceState::Running => "running",
            ServiceState::Failed { .. } => "failed",
        };
        for state in ["stopped", "running", "failed"] {
            f.sample(
                &[("service", &s.name), ("state", state)],
                u8::from(state == current),
            );
        }
    }
    let mut f = family(
        o,
        "tether_service_delay_seconds",
        "gauge",
        "A service's processing delay set by an operator.",
    );
    for s in &services {
        f.sample(&[("service", &s.name)], seconds(s.delay_ms));
    }

    // The bridge to NATS JetStream, per topic and direction (a handful of series).
    if let Some(bridge) = &app.bridge {
        let status = bridge.borrow().clone();
        family(
            o,
            "tether_bridge_connected",
            "gauge",
            "1 while the bridge's NATS client is connected.",
        )
        .sample(&[], u64::from(status.connected));
        fn labels(m: &protocol::bridge::MappingStatus) -> [(&'static str, &str); 2] {
            [("direction", m.direction), ("topic", m.topic.as_str())]
        }
        let mut f = family(
            o,
            "tether_bridge_carried_total",
            "counter",
            "Entries carried into (out) or from (in) JetStream since the node started.",
        );
        for m in &status.mappings {
            f.sample(&labels(m), m.carried);
        }
        let mut f = family(
            o,
            "tether_bridge_refused_total",
            "counter",
            "Messages from JetStream refused (malformed, or for no topic of bridge.in).",
        );
        for m in status.mappings.iter().filter(|m| m.direction == "in") {
            f.sample(&labels(m), m.refused);
        }
        let mut f = family(
            o,
            "tether_bridge_lag_entries",
            "gauge",
            "Entries of the topic not yet in JetStream.",
        );
        for m in status.mappings.iter().filter(|m| m.direction == "out") {
            f.sample(&labels(m), m.lag_entries);
        }
        let mut f = family(
            o,
            "tether_bridge_lag_seconds",
            "gauge",
            "How long the oldest entry not yet in JetStream has waited.",
        );
        for m in status.mappings.iter().filter(|m| m.direction == "out") {
            f.sample(&labels(m), seconds(m.lag_ms));
        }
    }

    // HTTP.
    let counts = app.http.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut f = family(
        o,
        "tether_http_requests_total",
        "counter",
        "HTTP requests served, by method, route and status.",
    );
    for ((method, route, status), n) in &counts {
        f.sample(
            &[
                ("method", method),
                ("route", route),
                ("status", &status.to_string()),
            ],
            n,
        );
    }
    let in_use = |room: &tokio::sync::Semaphore, max: usize| max - room.available_permits();
    family(
        o,
        "tether_http_waiting_reads",
        "gauge",
        "Reads waiting for a new entry (wait_ms) now; past ui::access::MAX_WAITS, 429.",
    )
    .sample(
        &[],
        in_use(&app.gate.access.waits, crate::access::MAX_WAITS),
    );
    family(
        o,
        "tether_http_event_streams",
        "gauge",
        "Live-event streams open now; past their cap, 429.",
    )
    .sample(&[], in_use(&app.streams, crate::events::MAX_STREAMS));
    out
}
