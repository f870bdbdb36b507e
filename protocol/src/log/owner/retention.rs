//! Retention: removes a topic's oldest entries past its limits, never one that a peer in
//! scope lacks, unless the node's disk budget forces it; then it records a gap.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Group, Owner, Peer, work_for_group, work_for_group_mut};
use crate::entry::{Append, NodeName, Seq, Timestamp, TopicName};
use crate::log::format::{self, StoredEntry};
use crate::log::{GAPS_TOPIC, Gap, RetentionReport, Shared};
use crate::replication::Recipient;

impl Owner {
    /// One retention pass: topic limits first (never past what a peer lacks), then the
    /// disk budget (past it if it must, recording gaps).
    pub(super) fn retain(&mut self, g: &mut Group) -> RetentionReport {
        let cutoff = Timestamp::now();
        let mut report = RetentionReport::default();
        let mut ids: Vec<u32> = self.topics.keys().copied().collect();
        ids.sort_unstable();
        for &t in &ids {
            let retention = self.topics[&t].config.retention;
            if retention.is_unlimited() {
                continue;
            }
            let mut head = match Head::open(
                &self.shared,
                t,
                work_for_group(g, &self.topics, t).counters.first,
            ) {
                Ok(head) => head,
                Err(err) => {
                    tracing::error!(topic = %self.topics[&t].config.name, %err, "retention cannot read the topic head");
                    continue;
                }
            };
            while let Some(e) = head.peek() {
                let c = &work_for_group(g, &self.topics, t).counters;
                let over = retention.max_entries.is_some_and(|m| c.next - c.first > m)
                    || retention.max_bytes.is_some_and(|m| c.bytes > m)
                    || retention
                        .max_age
                        .is_some_and(|age| e.ts < cutoff.minus(age).0);
                if !over || !self.needed_by(t, e).is_empty() {
                    break;
                }
                self.remove_head(g, &mut head);
                report.removed += 1;
            }
        }

        let mut lost: BTreeMap<(u32, u32), (u64, u64, BTreeSet<NodeName>)> = BTreeMap::new();
        if let Some(budget) = self.config.disk_budget {
            let gaps_id = self
                .by_name
                .get(&TopicName::new(GAPS_TOPIC).unwrap_or_else(|_| unreachable!()))
                .copied();
            let mut heads: HashMap<u32, Head> = HashMap::new();
            loop {
                let total: u64 = ids
                    .iter()
                    .map(|&t| work_for_group(g, &self.topics, t).counters.bytes)
                    .sum();
                if total <= budget {
                    break;
                }
                // Remove the oldest entry (by origin timestamp) of all topics' heads.
                let mut oldest: Option<(u64, u32)> = None;
                for &t in ids.iter().filter(|&&t| Some(t) != gaps_id) {
                    if let std::collections::hash_map::Entry::Vacant(slot) = heads.entry(t) {
                        let first = work_for_group(g, &self.topics, t).counters.first;
                        match Head::open(&self.shared, t, first) {
                            Ok(head) => drop(slot.insert(head)),
                            Err(err) => tracing::error!(%err, "retention cannot read a topic head"),
                        }
                    }
                    if let Some(e) = heads.get(&t).and_then(Head::peek)
                        && oldest.is_none_or(|(ts, _)| e.ts < ts)
                    {
                        oldest = Some((e.ts, t));
                    }
                }
                let Some((_, t)) = oldest else { break };
                let Some(head) = heads.get_mut(&t) else { break };
                let Some(e) = head.peek() else { break };
                let peers = self.needed_by(t, e);
                if !peers.is_empty() {
                    let range =
                        lost.entry((t, e.origin))
                            .or_insert((e.seq, e.seq, BTreeSet::new()));
                    range.1 = e.seq;
                    range.2.extend(peers);
                }
                self.remove_head(g, head);
                report.removed += 1;
            }
        }
        if report.removed > 0 {
            tracing::info!(
                removed = report.removed,
                gaps = lost.len(),
                "retention removed entries"
            );
        }
        self.record_gaps(lost, "disk budget", g, &mut report);
        self.write_forgotten(g);
        report
    }

    /// Appends a [`Gap`] to `_gaps` for each `(topic, origin) -> (first, last, peers)`.
    pub(super) fn record_gaps(
        &mut self,
        lost: BTreeMap<(u32, u32), (u64, u64, BTreeSet<NodeName>)>,
        reason: &str,
        g: &mut Group,
        report: &mut RetentionReport,
    ) {
        let Some(&gaps_id) = TopicName::new(GAPS_TOPIC)
            .ok()
            .and_then(|n| self.by_name.get(&n))
        else {
            return;
        };
        let catalog_names = self
            .shared
            .catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .clone();
        for ((t, origin), (first, last, peers)) in lost {
            let (Some(topic), Some(origin)) =
                (self.topics.get(&t), catalog_names.get(origin as usize))
            else {
                continue;
            };
            let gap = Gap {
                topic: topic.config.name.clone(),
                origin: origin.clone(),
                first: Seq(first),
                last: Seq(last),
                reason: reason.to_owned(),
                peers: peers.into_iter().collect(),
            };
            tracing::warn!(topic = %gap.topic, origin = %gap.origin, first, last, peers = ?gap.peers, "gap recorded: entries lost before peers received them");
            let payload = serde_json::to_vec(&gap).unwrap_or_default();
            let mut work = HashMap::new();
            // The gap record is small; it cannot exceed the entry limit.
            if self
                .append_own(&mut work, g, gaps_id, Append::new(payload))
                .is_ok()
            {
                g.merge(work);
            }
            report.gaps.push(gap);
        }
    }

    fn remove_head(&mut self, g: &mut Group, head: &mut Head) {
        let t = head.topic;
        if let Some(e) = head.peek() {
            self.owe(t, e);
        }
        let w = work_for_group_mut(g, &self.topics, t);
        if let Some(e) = head.peek() {
            w.counters.first += 1;
            w.counters.bytes = w.counters.bytes.saturating_sub(e.size());
        }
        if let Some((first, max_ts)) = head.advance(&self.shared) {
            g.kv.push((format::block_key(t, first).to_vec(), None));
            g.kv.push((format::time_key(t, max_ts, first).to_vec(), None));
        }
    }

    /// Records, for each forgotten peer that would have received `e` of topic `t` and
    /// lacked it, that it is being removed.
    fn owe(&mut self, t: u32, e: &StoredEntry) {
        for f in self.forgotten.values_mut() {
            if f.peer.needs(t, e) {
                let range = f.owed.entry((t, e.origin)).or_insert((e.seq, e.seq));
                range.0 = range.0.min(e.seq);
                range.1 = range.1.max(e.seq);
                f.changed = true;
            }
        }
    }

    /// The peers in scope that have not received `e` of topic `t`.
    fn needed_by(&self, t: u32, e: &StoredEntry) -> Vec<NodeName> {
        let local = self
            .topics
            .get(&t)
            .is_none_or(|s| !s.config.scope.leaves_node());
        if local {
            return Vec::new();
        }
        self.peers
            .iter()
            .filter(|(_, p)| p.needs(t, e))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Peer {
    /// Whether this peer needs `e` of topic `t`: it receives the topic from this node,
    /// and the routing rule (the sender's, [`Recipient::needs`]) says it lacks the entry.
    fn needs(&self, t: u32, e: &StoredEntry) -> bool {
        let held = self.acked.get(&(t, e.origin)).copied().unwrap_or(0);
        let peer = Recipient {
            name: &self.id,
            core: self.core,
        };
        self.topics.contains(&t) && peer.needs(&e.origin, e.seq, e.to.as_ref(), held)
    }
}

/// Walks a topic's oldest entries, block by block, for retention.
struct Head {
    topic: u32,
    block_first: u64,
    entries: Vec<StoredEntry>,
    index: usize,
}

impl Head {
    fn open(shared: &Shared, topic: u32, first: u64) -> Result<Head, String> {
        let mut head = Head {
            topic,
            block_first: 0,
            entries: Vec::new(),
            index: 0,
        };
        let start = shared
            .tree
            .range(format::block_key(topic, 0)..=format::block_key(topic, first))
            .next_back()
            .transpose()
            .map_err(|e| e.to_string())?
            .and_then(|(k, _)| format::block_first(&k))
            .unwrap_or(first);
        head.load(shared, start)?;
        // Skip what retention already removed from a partly removed block.
        head.index = first.saturating_sub(head.block_first) as usize;
        Ok(head)
    }

    /// Loads the first block at or after `from`.
    fn load(&mut self, shared: &Shared, from: u64) -> Result<(), String> {
        self.entries.clear();
        self.index = 0;
        let range = format::block_key(self.topic, from)..format::block_key(self.topic + 1, 0);
        if let Some(kv) = shared.tree.range(range).next() {
            let (k, v) = kv.map_err(|e| e.to_string())?;
            self.block_first = format::block_first(&k).ok_or("bad block key")?;
            self.entries = shared.block(self.topic, &v)?.ok_or_else(|| {
                format!(
                    "the entry file of the block at offset {} is missing",
                    self.block_first
                )
            })?;
        }
        Ok(())
    }

    fn peek(&self) -> Option<&StoredEntry> {
        self.entries.get(self.index)
    }

    /// Moves past the current entry; when that empties the block, returns the block's
    /// `(first, max_ts)` for deletion and loads the next one.
    fn advance(&mut self, shared: &Shared) -> Option<(u64, u64)> {
        self.index += 1;
        if self.index < self.entries.len() {
            return None;
        }
        let max_ts = self.entries.iter().map(|e| e.ts).max().unwrap_or(0);
        let done = (self.block_first, max_ts);
        let next = self.block_first + self.entries.len() as u64;
        if let Err(err) = self.load(shared, next) {
            tracing::error!(%err, "retention cannot read the next block");
            self.entries.clear();
        }
        Some(done)
    }
}
