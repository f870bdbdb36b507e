//! What crosses a link, decided without IO: which topics each way, and, per topic, which
//! entries to send, which sequences to skip, and how far the peer has acknowledged.
//!
//! The routing rule (DESIGN.md, "Concepts"), written once: [`Routes::between`] for
//! topics, [`Recipient::needs`] for entries. The sender ([`Outbound`]) sends what it says
//! a peer needs, and the store's retention keeps what it says a peer needs.
//! - `local` topics never cross; `core` topics go from edges to the core and stop there;
//!   `all` topics go both ways, and the core sends them on to every edge that holds them.
//! - An entry with a destination (`to`) goes only to that node and to the core.
//! - An entry is sent only if the peer's version vector lacks it, and never back to its
//!   origin; so loops cannot happen and nothing is sent twice to a peer that acknowledged.
//!
//! Per origin, a receiver takes sequences only in order (the store refuses a hole). The
//! sender therefore tells it, with a `Skip` frame, about sequences it will not send: ones
//! addressed to another node, and ones this node lost to its disk budget (a gap).
//!
//! And the trust rule (DESIGN, promise 8: a node speaks only for itself), here beside the
//! routing rule it guards:
//! - an edge sends the core only entries and `Skip`s of its own origin ([`Outbound`]), and
//!   the core takes nothing else from an edge ([`Inbound`]): an entry or `Skip` of
//!   another origin ends the link as `forged-origin`; an edge's `Skip` is applied only
//!   together with the entry that follows it, so it never reaches past what the edge
//!   appended;
//! - the core is the relay and the trust root: an edge takes entries and `Skip`s of any
//!   origin from it;
//! - an edge writes only the topics the core lets it write ([`Writers`]): the core's
//!   hello names the others (`closed`), they are not in the edge's routes, and an entry of
//!   one from the edge is a protocol violation like any topic outside the routes;
//! - a name presented again by a new store (another [`Hello::incarnation`]) is refused
//!   while this node holds entries of the old one ([`Incarnations`]): its sequences
//!   would be taken for the old ones' and dropped as duplicates.

use std::collections::{HashMap, VecDeque};

use crate::entry::VersionVector;
use crate::entry::{Entry, NodeName, Offset, Record, Scope, TopicName};
use crate::wire::{Batch, Frame, Hello};

/// The topics a link carries in each direction, seen from one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Topics this node sends to the peer.
    pub out: Vec<TopicName>,
    /// Topics this node takes from the peer.
    pub input: Vec<TopicName>,
}

impl Routes {
    /// The routes between this node (`core` if it is the core, holding `topics`) and the
    /// peer that said `hello`. A topic crosses only if both hold it with the same scope.
    /// `closed`: the topics this node does not take from the peer (at the core, those the
    /// edge may not write, [`Writers::closed_to`]); the topics the peer's hello closes are
    /// not sent.
    pub fn between(
        core: bool,
        topics: &[(TopicName, Scope)],
        closed: &[TopicName],
        hello: &Hello,
    ) -> Routes {
        let mut routes = Routes::default();
        for (name, scope) in topics {
            let shared = hello.topics.iter().any(|(n, s)| n == name && s == scope);
            if !shared {
                continue;
            }
            let (send, take) = (!hello.closed.contains(name), !closed.contains(name));
            match scope {
                Scope::Local => {}
                Scope::Core if core => routes.input.extend(take.then(|| name.clone())),
                Scope::Core if !hello.core => {} // edge to edge: never directly
                Scope::Core => routes.out.extend(send.then(|| name.clone())),
                Scope::All => {
                    routes.out.extend(send.then(|| name.clone()));
                    routes.input.extend(take.then(|| name.clone()));
                }
            }
        }
        routes
    }
}

/// A peer as the routing rule sees it, for entries of a topic it receives from this node
/// (one of its [`Routes::out`]). Generic over how names are held: the sender compares
/// [`NodeName`]s, the store its interned ids.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a, N> {
    /// The peer's name.
    pub name: &'a N,
    /// Whether the peer is the core (it receives entries addressed to any node).
    pub core: bool,
}

impl<N: PartialEq> Recipient<'_, N> {
    /// Whether the peer needs the entry `seq` of `origin`, addressed `to` (if to one
    /// node), while it holds (or was sent) `held` of that origin: never back to its
    /// origin, an addressed entry only to its node and to the core, and nothing it holds.
    pub fn needs(&self, origin: &N, seq: u64, to: Option<&N>, held: u64) -> bool {
        seq > held && origin != self.name && to.is_none_or(|to| to == self.name || self.core)
    }
}

/// Which edges may write each topic, as the core's config says (`[[topics]] writers`):
/// the core takes a topic's entries only from its writers. A topic not named is open to
/// every edge. The core itself writes every topic it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writers(pub Vec<(TopicName, Writer)>);

/// Who may write one topic besides the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// Every edge.
    AnyEdge,
    /// Only these edges (none: the core alone).
    Edges(Vec<NodeName>),
}

impl Writers {
    /// Whether `edge` may write `topic`.
    pub fn allows(&self, topic: &TopicName, edge: &NodeName) -> bool {
        match self.0.iter().find(|(t, _)| t == topic) {
            None | Some((_, Writer::AnyEdge)) => true,
            Some((_, Writer::Edges(edges))) => edges.contains(edge),
        }
    }

    /// The topics `edge` may not write: the core does not take them from it, and says
    /// so in its hello.
    pub fn closed_to(&self, edge: &NodeName) -> Vec<TopicName> {
        let closed = self.0.iter().filter(|(t, _)| !self.allows(t, edge));
        closed.map(|(t, _)| t.clone()).collect()
    }
}

/// Why a peer's entry-stream frame is refused by the trust rule: the link ends with the
/// close code `forged-origin` and this reason, and nothing of the transaction is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forged(pub String);

/// The receiving side of the trust rule: what this node takes from one peer. Without IO.
///
/// From the core, everything (it relays). From an edge, entries and `Skip`s of the edge's
/// own origin only; a `Skip` is held until the entry right after it arrives, and applied
/// with it, so an edge can only skip sequences below one it really appended.
#[derive(Debug)]
pub struct Inbound {
    peer: NodeName,
    from_core: bool,
    /// Per topic, an edge's `Skip` waiting for its next entry: the last skipped sequence.
    held: HashMap<TopicName, u64>,
}

impl Inbound {
    /// Taking from `peer`; `from_core`: the peer is the core.
    pub fn new(peer: NodeName, from_core: bool) -> Self {
        Inbound {
            peer,
            from_core,
            held: HashMap::new(),
        }
    }

    /// Checks a `Skip` of `origin` through `through`: `Some` is what to apply now.
    pub fn skip(
        &mut self,
        topic: &TopicName,
        origin: &NodeName,
        through: u64,
    ) -> Result<Option<u64>, Forged> {
        if self.from_core {
            return Ok(Some(through));
        }
        if *origin != self.peer {
            return Err(Forged(format!(
                "{} sent a skip of {origin}'s entries of {topic}: an edge speaks only for itself",
                self.peer
            )));
        }
        self.held.insert(topic.clone(), through);
        Ok(None)
    }

    /// Checks a batch's entries: `Some(through)` is a held `Skip` of the peer's own origin
    /// to apply before them.
    pub fn batch(&mut self, topic: &TopicName, entries: &[Entry]) -> Result<Option<u64>, Forged> {
        if self.from_core {
            return Ok(None);
        }
        if let Some(e) = entries.iter().find(|e| e.id.origin != self.peer) {
            return Err(Forged(format!(
                "{} sent entry {}:{} of {topic}: an edge speaks only for itself",
                self.peer, e.id.origin, e.id.seq
            )));
        }
        let Some(through) = self.held.remove(topic) else {
            return Ok(None);
        };
        match entries.first() {
            Some(e) if Some(e.id.seq.0) == through.checked_add(1) => Ok(Some(through)),
            Some(e) => Err(Forged(format!(
                "{} skipped its entries of {topic} through {through}, then sent {}: a skip \
                 must be followed by the entry right after it",
                self.peer, e.id.seq
            ))),
            None => {
                self.held.insert(topic.clone(), through);
                Ok(None)
            }
        }
    }
}

/// What a node remembers of its peers' incarnations (a table in its store), and the rule
/// for a name presented by a new store. Without IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incarnations {
    /// The peer's first hello here, or the same store as before.
    Known,
    /// A new store under this name, and this node holds none of the old one's entries:
    /// nothing can be mistaken, so the new incarnation is recorded and goes on.
    Renewed,
}

impl Incarnations {
    /// Checks `presented` against what was `recorded` for the peer, `held` being the
    /// highest sequence of the peer's origin this node holds in any topic.
    pub fn check(recorded: Option<u64>, presented: u64, held: u64) -> Result<Self, String> {
        match recorded {
            None => Ok(Incarnations::Known),
            Some(r) if r == presented => Ok(Incarnations::Known),
            Some(_) if held == 0 => Ok(Incarnations::Renewed),
            Some(r) => Err(format!(
                "a new store ({presented:x}) under a name whose entries up to {held} came \
                 from another ({r:x}) and would be taken for them: restore the node's data \
                 directory, or give the new device a name of its own"
            )),
        }
    }
}

/// One topic's sending side toward one peer.
///
/// It reads the local log from `position` on, in offset order (which keeps each origin's
/// order), and plans frames: entries the peer lacks, and `Skip`s for sequences it will
/// not get. Sent entries stay in flight until the peer's `Have` covers them; the
/// **cursor** is the lowest offset still in flight, or the position if none is: every
/// entry below it that the peer needs, the peer holds.
#[derive(Debug)]
pub struct Outbound {
    topic: TopicName,
    peer: NodeName,
    peer_core: bool,
    /// Toward the core from an edge: the edge's own name, the only origin it offers.
    only: Option<NodeName>,
    /// What the peer holds, from its `Have`s: `None` until the first.
    have: Option<HashMap<NodeName, u64>>,
    /// Per origin, the highest sequence the peer holds or was sent or told to skip.
    told: HashMap<NodeName, u64>,
    position: u64,
    /// Offset, origin, sequence and size of each entry sent and not yet acknowledged.
    in_flight: VecDeque<(u64, NodeName, u64, u64)>,
    in_flight_bytes: u64,
}

impl Outbound {
    /// Sending `topic` to `peer`, from local offset `start`. `only`: the origin this
    /// side may offer, `Some(its own name)` at an edge (the trust rule), `None` at the core.
    pub fn new(
        topic: TopicName,
        peer: NodeName,
        peer_core: bool,
        only: Option<NodeName>,
        start: Offset,
    ) -> Self {
        let (have, told, in_flight) = (None, HashMap::new(), VecDeque::new());
        Outbound {
            topic,
            peer,
            peer_core,
            only,
            have,
            told,
            position: start.0,
            in_flight,
            in_flight_bytes: 0,
        }
    }

    /// The same sender, started again from `start` (the peer lost what it had).
    pub fn restart(&self, start: Offset) -> Self {
        let (topic, peer, only) = (self.topic.clone(), self.peer.clone(), self.only.clone());
        Outbound::new(topic, peer, self.peer_core, only, start)
    }

    /// The topic.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// Whether the peer said what it holds, so that sending may start.
    pub fn ready(&self) -> bool {
        self.have.is_some()
    }

    /// The next local offset to read.
    pub fn position(&self) -> Offset {
        Offset(self.position)
    }

    /// Entries sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes (as [`crate::entry::Entry::size`] counts) sent and not yet acknowledged.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// The lowest offset not known to be held by the peer (see the type's doc).
    pub fn cursor(&self) -> Offset {
        Offset(
            self.in_flight
                .front()
                .map_or(self.position, |(offset, _, _, _)| *offset),
        )
    }

    /// Takes the peer's `Have`: what it durably holds. Only origins for which `holds`
    /// is true are kept (the origins this node holds of the topic): a peer's `Have`
    /// naming made-up origins costs nothing here.
    pub fn have(&mut self, vector: &[(NodeName, u64)], holds: impl Fn(&NodeName) -> bool) {
        let have = self.have.get_or_insert_with(HashMap::new);
        for (origin, seq) in vector.iter().filter(|(o, _)| holds(o)) {
            let held = have.entry(origin.clone()).or_default();
            *held = (*held).max(*seq);
            let told = self.told.entry(origin.clone()).or_default();
            *told = (*told).max(*seq);
        }
        while let Some((_, origin, seq, size)) = self.in_flight.front() {
            if have.get(origin).is_some_and(|held| held >= seq) {
                self.in_flight_bytes -= size;
                self.in_flight.pop_front();
            } else {
                break;
            }
        }
    }

    /// The peer's acknowledged vector, for retention.
    pub fn acknowledged(&self) -> VersionVector {
        let have = self.have.iter().flatten();
        VersionVector(
            have.map(|(o, s)| (o.clone(), crate::entry::Seq(*s)))
                .collect(),
        )
    }

    /// Plans the frames for `records` (read from [`Outbound::position`] on, in order),
    /// and moves the position past them. `superseded`: per record, whether a later entry
    /// of its origin and key holds its place (a latest-value topic; empty: none does).
    pub fn plan(&mut self, records: Vec<Record>, superseded: &[bool]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut entries = Vec::new();
        for (i, record) in records.into_iter().enumerate() {
            self.position = self.position.max(record.offset.0 + 1);
            if superseded.get(i).copied().unwrap_or(false) {
                // A later entry of its origin and key holds its place: its sequence is
                // skipped with the successor's (below), never sent after it.
                continue;
            }
            let e = record.entry;
            let origin = &e.id.origin;
            let told = self.told.get(origin).copied().unwrap_or(0);
            let peer = Recipient {
                name: &self.peer,
                core: self.peer_core,
            };
            let offered = self.only.as_ref().is_none_or(|only| only == origin);
            if !peer.needs(origin, e.id.seq.0, e.to.as_ref(), told) || !offered {
                continue;
            }
            if e.id.seq.0 > told + 1 {
                // Sequences before this one that the peer will not get from here.
                if !entries.is_empty() {
                    frames.push(Frame::Batch(Batch::new(self.topic.clone(), &entries)));
                    entries.clear();
                }
                let (topic, origin, through) = (self.topic.clone(), origin.clone(), e.id.seq.0 - 1);
                frames.push(Frame::Skip {
                    topic,
                    origin,
                    through,
                });
            }
            self.told.insert(origin.clone(), e.id.seq.0);
            let size = e.size();
            self.in_flight_bytes += size;
            self.in_flight
                .push_back((record.offset.0, origin.clone(), e.id.seq.0, size));
            entries.push(e);
            if entries.len() == crate::wire::MAX_BATCH_ENTRIES {
                frames.push(Frame::Batch(Batch::new(self.topic.clone(), &entries)));
                entries.clear();
            }
        }
        if !entries.is_empty() {
            frames.push(Frame::Batch(Batch::new(self.topic.clone(), &entries)));
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, EntryId, Seq, Timestamp};

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn topic(n: &str) -> TopicName {
        TopicName::new(n).unwrap()
    }

    fn record(offset: u64, origin: &str, seq: u64, to: Option<&str>) -> Record {
        let entry = Entry {
            id: EntryId {
                origin: node(origin),
                seq: Seq(seq),
            },
            timestamp: Timestamp(0),
            key: None,
            to: to.map(node),
            headers: vec![],
            payload: vec![],
        };
        Record {
            offset: Offset(offset),
            entry,
        }
    }

    /// Frames as short strings: `b:origin:seq,...` for batches, `s:origin:through`.
    fn show(frames: Vec<Frame>) -> Vec<String> {
        frames
            .into_iter()
            .map(|f| match f {
                Frame::Batch(b) => {
                    let ids: Vec<String> = b
                        .into_entries()
                        .unwrap()
                        .iter()
                        .map(|e| format!("{}:{}", e.id.origin, e.id.seq))
                        .collect();
                    format!("b:{}", ids.join(","))
                }
                Frame::Skip {
                    origin, through, ..
                } => format!("s:{origin}:{through}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn routes_follow_the_scopes() {
        let topics = vec![
            (topic("feed"), Scope::Local),
            (topic("reports"), Scope::Core),
            (topic("broadcast"), Scope::All),
            (topic("only-here"), Scope::All),
            (topic("mismatch"), Scope::All),
        ];
        let hello = |core: bool| Hello {
            version: 1,
            node: node("x"),
            incarnation: 1,
            core,
            topics: vec![
                (topic("feed"), Scope::Local),
                (topic("reports"), Scope::Core),
                (topic("broadcast"), Scope::All),
                (topic("mismatch"), Scope::Core),
            ],
            closed: vec![],
            clock_ms: 0,
        };
        // At the core, facing an edge: reports come in only; broadcasts both ways.
        let at_core = Routes::between(true, &topics, &[], &hello(false));
        assert_eq!(at_core.out, vec![topic("broadcast")]);
        assert_eq!(at_core.input, vec![topic("reports"), topic("broadcast")]);
        // At an edge, facing the core: the mirror image.
        let at_edge = Routes::between(false, &topics, &[], &hello(true));
        assert_eq!(at_edge.out, vec![topic("reports"), topic("broadcast")]);
        assert_eq!(at_edge.input, vec![topic("broadcast")]);
    }

    /// One row of the routing rule's table: for entries of one topic of `scope`, sent
    /// by the core to the edge `alpha` (`from_core`) or by `alpha` to the core, under
    /// the core's `writers`, which the peer needs. Three groups, by origin: this node,
    /// the peer, a third node; in each, by `to`: none, the peer, the third, this node.
    fn routing_row(scope: Scope, from_core: bool, writers: &Writers) -> String {
        let (here, peer, third) = match from_core {
            true => ("hq", "alpha", "bravo"),
            false => ("alpha", "hq", "bravo"),
        };
        let t = topic("t");
        let topics = vec![(t.clone(), scope)];
        let closed = writers.closed_to(&node("alpha"));
        let (ours, theirs) = match from_core {
            true => (closed, vec![]),
            false => (vec![], closed),
        };
        let hello = Hello {
            version: 1,
            node: node(peer),
            incarnation: 1,
            core: !from_core,
            topics: topics.clone(),
            closed: theirs,
            clock_ms: 0,
        };
        let routes = Routes::between(from_core, &topics, &ours, &hello);
        let name = node(peer);
        let recipient = Recipient {
            name: &name,
            core: !from_core,
        };
        let groups = [here, peer, third].map(|origin| {
            [None, Some(peer), Some(third), Some(here)]
                .map(|to| {
                    let to = to.map(node);
                    let needed = routes.out.contains(&t)
                        && recipient.needs(&node(origin), 1, to.as_ref(), 0);
                    if needed { 'x' } else { '.' }
                })
                .iter()
                .collect::<String>()
        });
        groups.join(" ")
    }

    #[test]
    fn the_routing_rule_table() {
        let open = Writers::default();
        let core_only = Writers(vec![(topic("t"), Writer::Edges(vec![]))]);
        let check = |scope: Scope, from_core: bool, writers: &Writers, expected: &str| {
            let row = routing_row(scope, from_core, writers);
            assert_eq!(
                row, expected,
                "{scope}, from the core: {from_core}, {writers:?}"
            );
        };
        //                                      origin: here     peer     third
        //                                      to:     -ptm     -ptm     -ptm
        for writers in [&open, &core_only] {
            check(Scope::Local, true, writers, ".... .... ....");
            check(Scope::Local, false, writers, ".... .... ....");
            // Core topics stop at the core.
            check(Scope::Core, true, writers, ".... .... ....");
            // From the core to an edge: never its own, never another node's addressed.
            check(Scope::All, true, writers, "xx.. .... xx..");
        }
        // From an edge to the core: everything but the core's own, unless closed.
        check(Scope::Core, false, &open, "xxxx .... xxxx");
        check(Scope::All, false, &open, "xxxx .... xxxx");
        check(Scope::Core, false, &core_only, ".... .... ....");
        check(Scope::All, false, &core_only, ".... .... ....");
        // Nothing the peer holds (or was sent).
        let (alpha, hq) = (node("alpha"), node("hq"));
        let to_alpha = Recipient {
            name: &alpha,
            core: false,
        };
        assert!(!to_alpha.needs(&hq, 5, None, 5));
        assert!(to_alpha.needs(&hq, 6, None, 5));
        assert!(!to_alpha.needs(&hq, 6, Some(&hq), 5));
        // The store's interned ids follow the same rule.
        let to_core = Recipient {
            name: &0,
            core: true,
        };
        assert!(to_core.needs(&1, 1, Some(&2), 0) && !to_core.needs(&0, 1, None, 0));
    }

    #[test]
    fn sends_what_the_peer_lacks_in_order() {
        let mut out = Outbound::new(topic("t"), node("alpha"), false, None, Offset(0));
        assert!(!out.ready());
        out.have(&[(node("hq"), 1)], |_| true);
        let frames = out.plan(
            vec![
                record(0, "hq", 1, None),
                record(1, "hq", 2, None),
                record(2, "bravo", 1, None),
                record(3, "hq", 3, None),
            ],
            &[],
        );
        assert_eq!(show(frames), ["b:hq:2,bravo:1,hq:3"]);
        assert_eq!(
            (out.position(), out.cursor(), out.in_flight()),
            (Offset(4), Offset(1), 3)
        );
        // Acknowledgements move the cursor past what the peer holds.
        out.have(&[(node("hq"), 2)], |_| true);
        assert_eq!(out.cursor(), Offset(2));
        out.have(&[(node("hq"), 3), (node("bravo"), 1)], |_| true);
        assert_eq!((out.cursor(), out.in_flight()), (Offset(4), 0));
        assert_eq!(out.acknowledged().get(&node("hq")), Seq(3));
    }

    #[test]
    fn a_superseded_entry_is_skipped_with_its_successor_and_never_sent_after_it() {
        let mut out = Outbound::new(topic("t"), node("alpha"), false, None, Offset(0));
        out.have(&[], |_| true);
        // hq's 1 and 3 are superseded (by 4 and 5, of the same keys); 2 is not.
        let records = vec![
            record(0, "hq", 1, None),
            record(1, "hq", 2, None),
            record(2, "hq", 3, None),
            record(3, "hq", 4, None),
            record(4, "hq", 5, None),
        ];
        let frames = out.plan(records, &[true, false, true, false, false]);
        assert_eq!(show(frames), ["s:hq:1", "b:hq:2", "s:hq:3", "b:hq:4,hq:5"]);
        assert_eq!((out.position(), out.in_flight()), (Offset(5), 3));
        // The peer's acknowledgement of the successors covers the skipped ones.
        out.have(&[(node("hq"), 5)], |_| true);
        assert_eq!((out.cursor(), out.in_flight()), (Offset(5), 0));
        // A read that holds only superseded records still moves the position on.
        let mut out = Outbound::new(topic("t"), node("alpha"), false, None, Offset(0));
        out.have(&[], |_| true);
        let frames = out.plan(vec![record(0, "hq", 1, None)], &[true]);
        assert!(frames.is_empty());
        assert_eq!(out.position(), Offset(1));
    }

    #[test]
    fn never_echoes_to_the_origin_and_respects_destinations() {
        // Toward an edge: its own entries and others' private ones are not sent; the
        // sequences it will not get are skipped before the next one it will.
        let mut out = Outbound::new(topic("t"), node("alpha"), false, None, Offset(0));
        out.have(&[], |_| true);
        let frames = out.plan(
            vec![
                record(0, "alpha", 1, None),
                record(1, "hq", 1, Some("bravo")),
                record(2, "hq", 2, Some("bravo")),
                record(3, "hq", 3, Some("alpha")),
                record(4, "hq", 4, None),
                record(5, "hq", 5, Some("bravo")),
            ],
            &[],
        );
        assert_eq!(show(frames), ["s:hq:2", "b:hq:3,hq:4"]);
        // From an edge toward the core: its own entries only (the trust rule), whatever
        // else it holds; the core has those from their origins.
        let mut out = Outbound::new(topic("t"), node("hq"), true, Some(node("alpha")), Offset(0));
        out.have(&[], |_| true);
        let frames = out.plan(
            vec![
                record(0, "alpha", 1, Some("bravo")),
                record(1, "hq", 1, None),
                record(2, "bravo", 1, None),
                record(3, "bravo", 4, None),
                record(4, "alpha", 2, None),
            ],
            &[],
        );
        assert_eq!(show(frames), ["b:alpha:1,alpha:2"]);
    }

    fn entry(origin: &str, seq: u64) -> Entry {
        record(0, origin, seq, None).entry
    }

    #[test]
    fn the_core_takes_from_an_edge_only_its_own_origin() {
        let t = topic("t");
        let mut from_alpha = Inbound::new(node("alpha"), false);
        assert_eq!(
            from_alpha.batch(&t, &[entry("alpha", 1), entry("alpha", 2)]),
            Ok(None)
        );
        // Another origin, in a batch or a skip: refused, naming both.
        let forged = from_alpha.batch(&t, &[entry("alpha", 3), entry("bravo", 1)]);
        assert!(forged.is_err_and(|Forged(why)| why.contains("alpha") && why.contains("bravo:1")));
        let forged = from_alpha.skip(&t, &node("bravo"), u64::MAX);
        assert!(forged.is_err_and(|Forged(why)| why.contains("skip of bravo")));
        assert!(from_alpha.skip(&t, &node("hq"), 1).is_err());
        // Its own skip waits for the entry right after it, and comes out with it.
        assert_eq!(from_alpha.skip(&t, &node("alpha"), 9), Ok(None));
        assert_eq!(from_alpha.batch(&t, &[]), Ok(None));
        assert_eq!(from_alpha.batch(&t, &[entry("alpha", 10)]), Ok(Some(9)));
        // A skip past what it appended (no entry right after it) is never applied...
        assert_eq!(from_alpha.skip(&t, &node("alpha"), u64::MAX), Ok(None));
        // ...and one followed by anything else ends the link.
        assert_eq!(from_alpha.skip(&t, &node("alpha"), 20), Ok(None));
        assert!(from_alpha.batch(&t, &[entry("alpha", 25)]).is_err());
        // From the core: any origin, skips at once (it relays and skips others' entries).
        let mut from_core = Inbound::new(node("hq"), true);
        assert_eq!(
            from_core.batch(&t, &[entry("bravo", 1), entry("hq", 1)]),
            Ok(None)
        );
        assert_eq!(from_core.skip(&t, &node("bravo"), 7), Ok(Some(7)));
    }

    #[test]
    fn a_have_of_origins_this_node_does_not_hold_is_ignored() {
        let mut out = Outbound::new(topic("t"), node("alpha"), false, None, Offset(0));
        let junk: Vec<_> = (0..1000).map(|i| (node(&format!("junk-{i}")), 5)).collect();
        out.have(&junk, |o| o.as_str() == "hq");
        out.have(&[(node("hq"), 2)], |o| o.as_str() == "hq");
        assert_eq!(out.acknowledged().0.len(), 1);
        assert_eq!(out.told.len(), 1);
    }

    #[test]
    fn writers_close_topics_to_edges_and_routes_follow() {
        let writers = Writers(vec![
            (topic("broadcast"), Writer::Edges(vec![])),
            (topic("sensors"), Writer::Edges(vec![node("alpha")])),
            (topic("messages"), Writer::AnyEdge),
        ]);
        assert_eq!(writers.closed_to(&node("alpha")), vec![topic("broadcast")]);
        assert_eq!(
            writers.closed_to(&node("bravo")),
            vec![topic("broadcast"), topic("sensors")]
        );
        assert!(writers.allows(&topic("other"), &node("bravo")));
        let topics = vec![
            (topic("broadcast"), Scope::All),
            (topic("messages"), Scope::All),
        ];
        let closed = writers.closed_to(&node("bravo"));
        let edge_hello = Hello {
            version: 1,
            node: node("bravo"),
            incarnation: 1,
            core: false,
            topics: topics.clone(),
            closed: vec![],
            clock_ms: 0,
        };
        let at_core = Routes::between(true, &topics, &closed, &edge_hello);
        assert_eq!(at_core.input, vec![topic("messages")]);
        assert_eq!(at_core.out.len(), 2);
        let core_hello = Hello {
            node: node("hq"),
            core: true,
            closed,
            ..edge_hello
        };
        let at_edge = Routes::between(false, &topics, &[], &core_hello);
        assert_eq!(at_edge.out, vec![topic("messages")]);
        assert_eq!(at_edge.input.len(), 2);
    }

    #[test]
    fn a_new_store_under_a_known_name_is_refused_while_its_old_entries_are_held() {
        assert_eq!(Incarnations::check(None, 7, 100), Ok(Incarnations::Known));
        assert_eq!(
            Incarnations::check(Some(7), 7, 100),
            Ok(Incarnations::Known)
        );
        assert_eq!(
            Incarnations::check(Some(7), 8, 0),
            Ok(Incarnations::Renewed)
        );
        let refused = Incarnations::check(Some(7), 8, 100).unwrap_err();
        assert!(refused.contains("up to 100") && refused.contains("name of its own"));
    }

    #[test]
    fn a_hole_in_the_local_log_becomes_a_skip() {
        // Sequences 2 and 3 of bravo were lost here (disk budget): say so before 4.
        let mut out = Outbound::new(topic("t"), node("alpha"), false, None, Offset(0));
        out.have(&[(node("bravo"), 1)], |_| true);
        let frames = out.plan(
            vec![record(7, "bravo", 4, None), record(8, "bravo", 5, None)],
            &[],
        );
        assert_eq!(show(frames), ["s:bravo:3", "b:bravo:4,bravo:5"]);
    }
}
