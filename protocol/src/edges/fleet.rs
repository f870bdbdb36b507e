//! The fleet at a glance: one row per edge the core knows, from its list, its link and
//! what the store holds for it, for the fleet table (API, page, CLI) and the fleet
//! metrics. Built on demand; costs a few store lookups per edge and one read of `_gaps`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{Edges, Listing};
use crate::entry::{NodeName, Offset, TopicName};
use crate::log::{GAPS_TOPIC, Gap, Held, ReadError};
use crate::wire;

/// Most `_gaps` records read to count each edge's gaps (the newest).
const MAX_GAP_RECORDS: usize = 10_000;

/// One edge as the fleet table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    /// Its name.
    pub name: NodeName,
    /// `up`, `paused`, `elsewhere` (linked to another core of the HQ), `down` (it linked
    /// before), `never` (never seen), `released` (away past its allowance), `revoked`
    /// (every certificate), `removed` (not admitted).
    pub state: &'static str,
    /// Since when the link is up or down (in this run of the core).
    pub since: Option<SystemTime>,
    /// When the core last knew it connected (now while it is).
    pub last_seen: Option<SystemTime>,
    /// The link's smoothed round trip, while up.
    pub rtt: Option<Duration>,
    /// What the core holds that it has not acknowledged (`None`: nothing is kept for it).
    pub backlog_out: Option<Held>,
    /// What it last said it holds for the core and the core has not acknowledged (`None`:
    /// it has not said, in this run of the core).
    pub backlog_in: Option<Held>,
    /// How long it has been behind: since it last had nothing left to receive (while up),
    /// or since it was last seen when entries wait for it; zero when it has all.
    pub behind: Duration,
    /// Per topic the core sends it: entries waiting and how long it has been behind.
    pub topics: Vec<FleetTopic>,
    /// Gaps recorded for it (entries it will never receive from the core).
    pub gaps: u64,
    /// When its newest certificate that is not revoked expires.
    pub certificate_expiry: Option<SystemTime>,
    /// The other core of the HQ it is linked to (state `elsewhere`).
    pub core: Option<NodeName>,
    /// The protocol version of its session, while up.
    pub version: Option<u32>,
    /// How far its clock is ahead of the core's (negative: behind), as its last hello
    /// showed.
    pub clock_offset: Option<i64>,
}

/// One topic the core sends an edge, in the fleet table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTopic {
    /// The topic.
    pub topic: TopicName,
    /// Entries after its acknowledged position (an upper bound).
    pub backlog: u64,
    /// How long it has been behind on this topic (zero when caught up).
    pub behind: Duration,
}

impl Edges {
    /// Every edge the core knows, as the fleet table shows it at `now`.
    pub fn fleet(&self, now: SystemTime) -> Result<Vec<FleetRow>, ReadError> {
        let gaps = self.gaps_per_edge()?;
        let mut rows = Vec::new();
        for status in self.list() {
            let link = self.0.links.get(&status.name).map(|l| l.status());
            let connected = link.as_ref().is_some_and(|l| l.connected);
            let paused = link
                .as_ref()
                .is_some_and(|l| l.paused_here || l.paused_by_peer);
            let revoked = !status.certificates.is_empty()
                && status.certificates.iter().all(|c| c.revoked.is_some());
            let state = match (connected, paused) {
                (true, true) => "paused",
                (true, false) => "up",
                _ if revoked => "revoked",
                _ if !status.listing.admitted() && status.listing != Listing::NotListed => {
                    "removed"
                }
                _ if status.elsewhere.is_some() => "elsewhere",
                _ if status.released.is_some() => "released",
                _ if status.last_seen.is_none() && link.is_none() => "never",
                _ => "down",
            };
            let backlog_out = match &self.0.store {
                Some(store) => store.held_for(&status.name)?,
                None => None,
            };
            let since_ago = |t: Option<SystemTime>| {
                t.map_or(Duration::ZERO, |t| {
                    now.duration_since(t).unwrap_or_default()
                })
            };
            let topics: Vec<FleetTopic> = link
                .iter()
                .flat_map(|l| l.topics.iter().filter(|t| t.out))
                .map(|t| FleetTopic {
                    topic: t.topic.clone(),
                    backlog: t.backlog,
                    behind: if t.backlog == 0 || !connected {
                        Duration::ZERO
                    } else {
                        since_ago(t.up_to_date.or(link.as_ref().map(|l| l.since)))
                    },
                })
                .collect();
            let waiting = backlog_out.is_some_and(|h| h.entries > 0);
            let behind = if connected {
                topics.iter().map(|t| t.behind).max().unwrap_or_default()
            } else if waiting {
                since_ago(status.last_seen)
            } else {
                Duration::ZERO
            };
            let certificate_expiry = status
                .certificates
                .iter()
                .filter(|c| c.revoked.is_none())
                .map(|c| c.not_after)
                .max();
            rows.push(FleetRow {
                state,
                since: link.as_ref().map(|l| l.since),
                last_seen: status.last_seen,
                rtt: link.as_ref().and_then(|l| l.rtt),
                backlog_out,
                backlog_in: link.as_ref().and_then(|l| l.backlog_in),
                behind,
                topics,
                gaps: gaps.get(&status.name).copied().unwrap_or(0),
                certificate_expiry,
                core: status.elsewhere.clone(),
                version: connected.then_some(wire::VERSION),
                clock_offset: link.as_ref().and_then(|l| l.clock_offset_ms),
                name: status.name,
            });
        }
        Ok(rows)
    }

    /// How many gap records name each edge, over the newest [`MAX_GAP_RECORDS`].
    fn gaps_per_edge(&self) -> Result<HashMap<NodeName, u64>, ReadError> {
        let mut counts = HashMap::new();
        let Some(store) = &self.0.store else {
            return Ok(counts);
        };
        let Ok(topic) = TopicName::new(GAPS_TOPIC) else {
            return Ok(counts);
        };
        let Some(info) = store.topic(&topic) else {
            return Ok(counts);
        };
        let from = Offset(
            info.next
                .0
                .saturating_sub(MAX_GAP_RECORDS as u64)
                .max(info.first.0),
        );
        for record in store.read(&topic, from, MAX_GAP_RECORDS)? {
            // A record this build cannot read names no one it knows.
            if let Ok(gap) = serde_json::from_slice::<Gap>(&record.entry.payload) {
                for peer in gap.peers {
                    *counts.entry(peer).or_default() += 1;
                }
            }
        }
        Ok(counts)
    }
}
