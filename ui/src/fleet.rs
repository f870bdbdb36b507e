//! `GET /api/v1/fleet` (HQ): every edge in one table, filtered, sorted and paged by the
//! node, so that a page, a script or the CLI stays quick at a thousand edges.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use protocol::edges::fleet::FleetRow;
use protocol::log::Held;
use serde::{Deserialize, Serialize};

use crate::App;
use crate::error::ApiError;
use crate::views::millis;

/// Most rows one answer holds.
pub const MAX_LIMIT: usize = 1000;

/// The states an edge can be in, as the table and `state=` name them.
pub const STATES: [&str; 8] = [
    "up",
    "paused",
    "elsewhere",
    "down",
    "never",
    "released",
    "revoked",
    "removed",
];

/// The columns the table sorts by.
const SORTS: [&str; 11] = [
    "name",
    "state",
    "since",
    "last_seen",
    "rtt",
    "backlog",
    "backlog_in",
    "behind",
    "gaps",
    "expiry",
    "clock",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetQuery {
    /// Only edges in this state.
    state: Option<String>,
    /// Only edges whose name contains this.
    q: Option<String>,
    /// Only edges behind by at least this many seconds.
    behind_s: Option<u64>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<usize>,
    offset: Option<u64>,
}

/// The answer: counts for the whole fleet, and the page of rows asked for.
#[derive(Debug, Serialize)]
pub struct FleetView {
    /// Edges the core knows.
    pub total: usize,
    /// Edges per state, over the whole fleet.
    pub states: Vec<StateCount>,
    /// Edges that pass the filters.
    pub matched: usize,
    /// Where this page starts among them.
    pub offset: usize,
    /// The page.
    pub edges: Vec<FleetRowView>,
}

/// How many edges are in one state.
#[derive(Debug, Serialize)]
pub struct StateCount {
    /// The state.
    pub state: &'static str,
    /// How many.
    pub edges: usize,
}

/// One edge in the fleet table.
#[derive(Debug, Serialize)]
pub struct FleetRowView {
    /// Its name.
    pub name: String,
    /// One of [`STATES`].
    pub state: &'static str,
    /// Since when its link is up or down (in this run of HQ).
    pub since_ms: Option<u64>,
    /// When HQ last knew it connected.
    pub last_seen_ms: Option<u64>,
    /// Round trip, while up.
    pub rtt_ms: Option<f64>,
    /// What HQ holds that it has not acknowledged: entries and bytes (estimated).
    pub backlog_out: Option<BacklogView>,
    /// What it last said it holds for HQ and HQ has not acknowledged (`null`: it has
    /// not said since HQ started).
    pub backlog_in: Option<BacklogView>,
    /// How long it has been behind (0: it has everything).
    pub behind_ms: u64,
    /// Per topic HQ sends it.
    pub topics: Vec<FleetTopicView>,
    /// Gaps recorded for it.
    pub gaps: u64,
    /// When its newest certificate that is not revoked expires.
    pub certificate_expiry_ms: Option<u64>,
    /// The other core of the HQ it is linked to (state `elsewhere`).
    pub core: Option<String>,
    /// Its session's protocol version, while up.
    pub version: Option<u32>,
    /// How far its clock is ahead of HQ's (negative: behind), as its last hello showed.
    pub clock_offset_ms: Option<i64>,
    /// Its clock is further from HQ's than the nodes tolerate (2 minutes): both pages
    /// warn.
    pub clock_skewed: bool,
}

/// Entries and bytes waiting.
#[derive(Debug, Serialize)]
pub struct BacklogView {
    /// Entries.
    pub entries: u64,
    /// Bytes (estimated from each topic's mean entry size).
    pub bytes: u64,
}

/// One topic of an edge in the fleet table.
#[derive(Debug, Serialize)]
pub struct FleetTopicView {
    /// The topic.
    pub topic: String,
    /// Entries after its acknowledged position.
    pub backlog: u64,
    /// How long it has been behind on it.
    pub behind_ms: u64,
}

impl From<&FleetRow> for FleetRowView {
    fn from(r: &FleetRow) -> FleetRowView {
        FleetRowView {
            name: r.name.to_string(),
            state: r.state,
            since_ms: r.since.map(millis),
            last_seen_ms: r.last_seen.map(millis),
            rtt_ms: r.rtt.map(|d| d.as_secs_f64() * 1000.0),
            backlog_out: r.backlog_out.map(BacklogView::from),
            backlog_in: r.backlog_in.map(BacklogView::from),
            behind_ms: ms(r.behind),
            topics: r
                .topics
                .iter()
                .map(|t| FleetTopicView {
                    topic: t.topic.to_string(),
                    backlog: t.backlog,
                    behind_ms: ms(t.behind),
                })
                .collect(),
            gaps: r.gaps,
            certificate_expiry_ms: r.certificate_expiry.map(millis),
            core: r.core.as_ref().map(|c| c.to_string()),
            version: r.version,
            clock_offset_ms: r.clock_offset,
            clock_skewed: r.clock_offset.is_some_and(crate::views::clock_skewed),
        }
    }
}

impl From<Held> for BacklogView {
    fn from(h: Held) -> BacklogView {
        BacklogView {
            entries: h.entries,
            bytes: h.bytes,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) async fn fleet(
    State(app): State<Arc<App>>,
    query: Result<Query<FleetQuery>, QueryRejection>,
) -> Result<Json<FleetView>, ApiError> {
    let Query(query) = query?;
    let edges = app.edges.as_ref().ok_or_else(|| {
        ApiError::conflict("the fleet is HQ's: this node is an edge (GET /api/v1/links)")
    })?;
    let filter = Filter::parse(&query)?;
    // A thousand edges take a few store lookups each: off the runtime's workers.
    let edges = edges.clone();
    let rows = tokio::task::spawn_blocking(move || edges.fleet(SystemTime::now()))
        .await
        .map_err(|e| ApiError::unavailable(format!("the fleet could not be read: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("the store cannot be read: {e}")))?;
    Ok(Json(filter.apply(rows)))
}

/// A query, checked.
struct Filter {
    state: Option<&'static str>,
    q: Option<String>,
    behind: Option<Duration>,
    sort: &'static str,
    descending: bool,
    limit: usize,
    offset: usize,
}

impl Filter {
    fn parse(query: &FleetQuery) -> Result<Filter, ApiError> {
        let one_of = |what: &str, value: &str, allowed: &[&'static str]| {
            allowed
                .iter()
                .copied()
                .find(|a| *a == value)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{what} {value:?} is not one of {}",
                        allowed.join(", ")
                    ))
                })
        };
        let state = match &query.state {
            Some(s) => Some(one_of("state", s, &STATES)?),
            None => None,
        };
        let sort = one_of("sort", query.sort.as_deref().unwrap_or("name"), &SORTS)?;
        // By default: names A to Z, the oldest last seen and the soonest expiry first,
        // the biggest of everything else first.
        let descending = match query.order.as_deref() {
            None => !matches!(sort, "name" | "state" | "last_seen" | "expiry"),
            Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "order {other:?} is not asc or desc"
                )));
            }
        };
        let limit = query.limit.unwrap_or(MAX_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit {limit} is not 1 to {MAX_LIMIT}"
            )));
        }
        for (name, value) in [("offset", query.offset), ("behind_s", query.behind_s)] {
            if value.is_some_and(|v| v > i64::MAX as u64) {
                return Err(ApiError::bad_request(format!(
                    "{name} is over {} (the largest the API takes)",
                    i64::MAX
                )));
            }
        }
        let q = query.q.as_ref().map(|q| q.trim().to_ascii_lowercase());
        if q.as_ref().is_some_and(|q| q.len() > 63) {
            return Err(ApiError::bad_request(
                "q is longer than any edge name (63 characters)",
            ));
        }
        Ok(Filter {
            state,
            q: q.filter(|q| !q.is_empty()),
            behind: query.behind_s.map(Duration::from_secs),
            sort,
            descending,
            limit,
            offset: usize::try_from(query.offset.unwrap_or(0)).unwrap_or(usize::MAX),
        })
    }

    fn apply(&self, rows: Vec<FleetRow>) -> FleetView {
        let total = rows.len();
        let states = STATES
            .iter()
            .map(|&state| StateCount {
                state,
                edges: rows.iter().filter(|r| r.state == state).count(),
            })
            .collect();
        let mut matched: Vec<FleetRow> = rows
            .into_iter()
            .filter(|r| self.state.is_none_or(|s| r.state == s))
            .filter(|r| {
                self.q
                    .as_ref()
                    .is_none_or(|q| r.name.as_str().contains(q.as_str()))
            })
            .filter(|r| self.behind.is_none_or(|b| r.behind >= b))
            .collect();
        matched.sort_by(|a, b| {
            let order = self.compare(a, b);
            let order = if self.descending {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| a.name.cmp(&b.name))
        });
        let count = matched.len();
        FleetView {
            total,
            states,
            matched: count,
            offset: self.offset,
            edges: matched
                .iter()
                .skip(self.offset)
                .take(self.limit)
                .map(FleetRowView::from)
                .collect(),
        }
    }

    /// Rows by the sort column; an unknown value (never seen, no round trip) sorts
    /// below every known one.
    fn compare(&self, a: &FleetRow, b: &FleetRow) -> Ordering {
        let state_rank = |s: &str| STATES.iter().position(|x| *x == s);
        match self.sort {
            "state" => state_rank(a.state).cmp(&state_rank(b.state)),
            "since" => a.since.cmp(&b.since),
            "last_seen" => a.last_seen.cmp(&b.last_seen),
            "rtt" => a.rtt.cmp(&b.rtt),
            "backlog" => a
                .backlog_out
                .map(|h| h.bytes)
                .cmp(&b.backlog_out.map(|h| h.bytes)),
            "backlog_in" => a
                .backlog_in
                .map(|h| h.bytes)
                .cmp(&b.backlog_in.map(|h| h.bytes)),
            "clock" => a
                .clock_offset
                .map(i64::unsigned_abs)
                .cmp(&b.clock_offset.map(i64::unsigned_abs)),
            "behind" => a.behind.cmp(&b.behind),
            "gaps" => a.gaps.cmp(&b.gaps),
            "expiry" => a.certificate_expiry.cmp(&b.certificate_expiry),
            _ => a.name.cmp(&b.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::entry::NodeName;

    fn row(name: &str, state: &'static str, behind_s: u64, bytes: Option<u64>) -> FleetRow {
        FleetRow {
            name: NodeName::new(name).unwrap(),
            state,
            since: None,
            last_seen: None,
            rtt: None,
            backlog_out: bytes.map(|bytes| Held { entries: 1, bytes }),
            backlog_in: None,
            behind: Duration::from_secs(behind_s),
            topics: Vec::new(),
            gaps: 0,
            certificate_expiry: None,
            core: None,
            version: None,
            clock_offset: None,
        }
    }

    /// The query string as axum's `Query` parses it.
    fn query(pairs: &str) -> FleetQuery {
        let uri: axum::http::Uri = format!("/fleet?{pairs}").parse().unwrap();
        Query::<FleetQuery>::try_from_uri(&uri).unwrap().0
    }

    fn names(view: &FleetView) -> Vec<&str> {
        view.edges.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn the_table_filters_sorts_and_pages() {
        let rows = || {
            vec![
                row("alpha", "up", 0, Some(0)),
                row("bravo", "down", 7200, Some(500)),
                row("charlie", "down", 60, Some(9000)),
                row("delta", "never", 0, None),
            ]
        };
        let all = Filter::parse(&query("")).unwrap().apply(rows());
        assert_eq!(names(&all), ["alpha", "bravo", "charlie", "delta"]);
        assert_eq!((all.total, all.matched), (4, 4));
        let down = all.states.iter().find(|s| s.state == "down").unwrap();
        assert_eq!(down.edges, 2);
        // Behind by an hour or more.
        let behind = Filter::parse(&query("behind_s=3600"))
            .unwrap()
            .apply(rows());
        assert_eq!(names(&behind), ["bravo"]);
        assert_eq!(behind.total, 4);
        // The biggest backlog first; unknown last.
        let backlog = Filter::parse(&query("sort=backlog")).unwrap().apply(rows());
        assert_eq!(names(&backlog), ["charlie", "bravo", "alpha", "delta"]);
        let by_name = Filter::parse(&query("state=down&sort=name&order=desc"))
            .unwrap()
            .apply(rows());
        assert_eq!(names(&by_name), ["charlie", "bravo"]);
        let page = Filter::parse(&query("q=a&limit=2&offset=1"))
            .unwrap()
            .apply(rows());
        assert_eq!((names(&page), page.matched), (vec!["bravo", "charlie"], 4));
    }

    #[test]
    fn a_bad_query_is_refused_with_what_is_allowed() {
        for (bad, says) in [
            ("state=lost", "up, paused"),
            ("sort=color", "name, state"),
            ("order=up", "asc or desc"),
            ("limit=0", "1 to 1000"),
            ("limit=1001", "1 to 1000"),
            ("offset=9223372036854775808", "largest the API takes"),
            ("behind_s=9223372036854775808", "largest the API takes"),
        ] {
            let Err(e) = Filter::parse(&query(bad)) else {
                panic!("{bad} accepted");
            };
            assert!(e.message().contains(says), "{bad}: {}", e.message());
        }
    }
}
