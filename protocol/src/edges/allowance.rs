//! Edges that go away: each edge's retention allowance at the core, and releasing an
//! edge that stays away past it.
//!
//! An edge's allowance is how long it may be away (`link.allowance_age`, a month by
//! default) and how many entry bytes the core may hold for it meanwhile
//! (`link.allowance_bytes`, 1 GiB; estimated by [`Store::held_for`]). Past either, the
//! core *releases* it: [`Store::forget_peer`], so retention stops keeping entries for it
//! and notes what it removes that the edge lacked. The edge stays listed; when it
//! returns, its link records that loss as a gap in `_gaps` (replicated to it, so the
//! edge learns of it) and the core keeps entries for it again. "Away" is measured from
//! the last time the core knew it connected, which is stored (at most every
//! [`SEEN_EVERY`] while it is connected, and once after it leaves), so a core restart
//! does not reset the clock.
//!
//! IO: the store, through [`Edges`]; the decision itself ([`past`]) is a pure function.

use std::time::{Duration, SystemTime};

use super::{Edges, EdgesError, ReleasedDoc};
use crate::config::{Allowance, format_duration};
use crate::entry::NodeName;
use crate::log::{Held, Store};
use crate::tls::millis;

/// How often a connected edge's last-seen time is stored.
pub const SEEN_EVERY: Duration = Duration::from_secs(3600);

/// After the core starts, no edge is released for its age before this long: the edges
/// come back within minutes of a core's return (their redials), and a core that was
/// down for weeks must not release them all for its own absence. The bytes rule holds
/// from the start.
pub const AFTER_START: Duration = Duration::from_secs(600);

/// Why an edge away for `away`, with `held` kept for it, is past `allowance`, if it is;
/// `up_for`: how long the core has been running.
pub fn past(allowance: Allowance, away: Duration, held: Held, up_for: Duration) -> Option<String> {
    if away > allowance.age && up_for >= AFTER_START {
        return Some(format!(
            "away for {} (link.allowance_age {})",
            format_duration(away),
            format_duration(allowance.age)
        ));
    }
    (allowance.bytes > 0 && held.bytes > allowance.bytes).then(|| {
        format!(
            "{} bytes in {} entries held for it (link.allowance_bytes {})",
            held.bytes, held.entries, allowance.bytes
        )
    })
}

impl Edges {
    /// Keeps each edge's last-seen time, and releases every edge that is away past
    /// `allowance` (see the module doc). Returns the edges released now; the caller
    /// runs retention next, which frees what was kept for them.
    pub async fn check_allowances(
        &self,
        allowance: Allowance,
        now: SystemTime,
    ) -> Result<Vec<NodeName>, EdgesError> {
        let Some(store) = self.0.store.clone() else {
            return Ok(Vec::new());
        };
        let mut released = Vec::new();
        for status in self.list() {
            let name = status.name;
            let link = self.0.links.get(&name).map(|l| l.status());
            let connected = link.as_ref().is_some_and(|l| l.connected);
            let doc = self.doc(&name);
            let stored = doc
                .last_seen_ms
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
            if connected {
                let stale = stored
                    .is_none_or(|seen| now.duration_since(seen).unwrap_or_default() >= SEEN_EVERY);
                if stale || doc.released.is_some() {
                    self.seen_at(&name, now, doc.released.is_some()).await?;
                }
                continue;
            }
            if doc.released.is_some() {
                continue;
            }
            let Some(held) = store.held_for(&name)? else {
                continue; // nothing is kept for it: never linked, or forgotten
            };
            // It left at `since` of its (down) link, if it linked in this run.
            let left = link.map(|l| l.since);
            let seen = match (stored, left) {
                (Some(s), Some(l)) => s.max(l),
                // Never recorded (a store from before allowances): counted from now.
                (s, l) => s.or(l).unwrap_or(now),
            };
            if stored != Some(seen) {
                self.seen_at(&name, seen, false).await?;
            }
            let away = now.duration_since(seen).unwrap_or_default();
            let up_for = now.duration_since(self.0.started).unwrap_or_default();
            if let Some(why) = past(allowance, away, held, up_for) {
                self.release(&store, &name, now, why).await?;
                released.push(name);
            }
        }
        Ok(released)
    }

    /// Stores that `name` was seen at `at`; `returned`: it is back after a release.
    async fn seen_at(
        &self,
        name: &NodeName,
        at: SystemTime,
        returned: bool,
    ) -> Result<(), EdgesError> {
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        doc.last_seen_ms = Some(millis(at));
        doc.released = None;
        self.save(name, doc).await?;
        if returned {
            tracing::info!(edge = %name, "a released edge returned: the core keeps its entries again");
        }
        Ok(())
    }

    async fn release(
        &self,
        store: &Store,
        name: &NodeName,
        now: SystemTime,
        why: String,
    ) -> Result<(), EdgesError> {
        store.forget_peer(name).await?;
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        doc.released = Some(ReleasedDoc {
            at_ms: millis(now),
            why: why.clone(),
        });
        self.save(name, doc).await?;
        tracing::warn!(edge = %name, %why, "edge released: past its allowance, the core keeps nothing more for it; it gets a gap when it returns");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn an_edge_is_past_its_allowance_by_age_or_by_bytes() {
        let allowance = Allowance {
            age: 30 * DAY,
            bytes: 1000,
        };
        let held = |bytes| Held { entries: 10, bytes };
        let up = AFTER_START;
        assert_eq!(past(allowance, 30 * DAY, held(1000), up), None);
        assert_eq!(
            past(allowance, 31 * DAY, held(0), up / 2),
            None,
            "not for the core's own absence"
        );
        let why = past(allowance, 31 * DAY, held(0), up).unwrap();
        assert!(
            why.contains("away for 31d") && why.contains("allowance_age"),
            "{why}"
        );
        let why = past(allowance, DAY, held(1001), Duration::ZERO).unwrap();
        assert!(
            why.contains("1001 bytes") && why.contains("allowance_bytes"),
            "{why}"
        );
        let no_byte_limit = Allowance {
            bytes: 0,
            ..allowance
        };
        assert_eq!(past(no_byte_limit, DAY, held(u64::MAX), up), None);
    }
}
