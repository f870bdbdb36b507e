//! What crosses a link, decided without IO: which topics each way, and, per topic, which
//! entries to send, which sequences to skip, and how far the peer has acknowledged.
//!
//! The rules (DESIGN.md, "Concepts"):
//! - `local` topics never cross; `core` topics go from edges to the core and stop there;
//!   `all` topics go both ways, and the core sends them on to every edge that holds them.
//! - An entry with a destination (`to`) goes only to that node and to the core.
//! - An entry is sent only if the peer's version vector lacks it, and never back to its
//!   origin; so loops cannot happen and nothing is sent twice to a peer that acknowledged.
//!
//! Per origin, a receiver takes sequences only in order (the store refuses a hole). The
//! sender therefore tells it, with a `Skip` frame, about sequences it will not send: ones
//! addressed to another node, and ones this node lost to its disk budget (a gap).

use std::collections::{HashMap, VecDeque};

use crate::entry::{NodeName, Offset, Record, Scope, TopicName};
use crate::log::VersionVector;
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
    pub fn between(core: bool, topics: &[(TopicName, Scope)], hello: &Hello) -> Routes {
        let mut routes = Routes::default();
        for (name, scope) in topics {
            let shared = hello.topics.iter().any(|(n, s)| n == name && s == scope);
            if !shared {
                continue;
            }
            match scope {
                Scope::Local => {}
                Scope::Core if core => routes.input.push(name.clone()),
                Scope::Core if !hello.core => {} // edge to edge: never directly
                Scope::Core => routes.out.push(name.clone()),
                Scope::All => {
                    routes.out.push(name.clone());
                    routes.input.push(name.clone());
                }
            }
        }
        routes
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
    /// Sending `topic` to `peer`, from local offset `start`.
    pub fn new(topic: TopicName, peer: NodeName, peer_core: bool, start: Offset) -> Self {
        let (have, told, in_flight) = (None, HashMap::new(), VecDeque::new());
        Outbound {
            topic,
            peer,
            peer_core,
            have,
            told,
            position: start.0,
            in_flight,
            in_flight_bytes: 0,
        }
    }

    /// Whether the peer is the core.
    pub fn peer_is_core(&self) -> bool {
        self.peer_core
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

    /// Takes the peer's `Have`: what it durably holds.
    pub fn have(&mut self, vector: &[(NodeName, u64)]) {
        let have = self.have.get_or_insert_with(HashMap::new);
        for (origin, seq) in vector {
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
    /// and moves the position past them.
    pub fn plan(&mut self, records: Vec<Record>) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut entries = Vec::new();
        for record in records {
            self.position = self.position.max(record.offset.0 + 1);
            let e = record.entry;
            let origin = &e.id.origin;
            let told = self.told.get(origin).copied().unwrap_or(0);
            let for_peer =
                e.to.as_ref()
                    .is_none_or(|to| *to == self.peer || self.peer_core);
            if e.id.seq.0 <= told || *origin == self.peer || !for_peer {
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
            core,
            topics: vec![
                (topic("feed"), Scope::Local),
                (topic("reports"), Scope::Core),
                (topic("broadcast"), Scope::All),
                (topic("mismatch"), Scope::Core),
            ],
        };
        // At the core, facing an edge: reports come in only; broadcasts both ways.
        let at_core = Routes::between(true, &topics, &hello(false));
        assert_eq!(at_core.out, vec![topic("broadcast")]);
        assert_eq!(at_core.input, vec![topic("reports"), topic("broadcast")]);
        // At an edge, facing the core: the mirror image.
        let at_edge = Routes::between(false, &topics, &hello(true));
        assert_eq!(at_edge.out, vec![topic("reports"), topic("broadcast")]);
        assert_eq!(at_edge.input, vec![topic("broadcast")]);
    }

    #[test]
    fn sends_what_the_peer_lacks_in_order() {
        let mut out = Outbound::new(topic("t"), node("alpha"), false, Offset(0));
        assert!(!out.ready());
        out.have(&[(node("hq"), 1)]);
        let frames = out.plan(vec![
            record(0, "hq", 1, None),
            record(1, "hq", 2, None),
            record(2, "bravo", 1, None),
            record(3, "hq", 3, None),
        ]);
        assert_eq!(show(frames), ["b:hq:2,bravo:1,hq:3"]);
        assert_eq!(
            (out.position(), out.cursor(), out.in_flight()),
            (Offset(4), Offset(1), 3)
        );
        // Acknowledgements move the cursor past what the peer holds.
        out.have(&[(node("hq"), 2)]);
        assert_eq!(out.cursor(), Offset(2));
        out.have(&[(node("hq"), 3), (node("bravo"), 1)]);
        assert_eq!((out.cursor(), out.in_flight()), (Offset(4), 0));
        assert_eq!(out.acknowledged().get(&node("hq")), Seq(3));
    }

    #[test]
    fn never_echoes_to_the_origin_and_respects_destinations() {
        // Toward an edge: its own entries and others' private ones are not sent; the
        // sequences it will not get are skipped before the next one it will.
        let mut out = Outbound::new(topic("t"), node("alpha"), false, Offset(0));
        out.have(&[]);
        let frames = out.plan(vec![
            record(0, "alpha", 1, None),
            record(1, "hq", 1, Some("bravo")),
            record(2, "hq", 2, Some("bravo")),
            record(3, "hq", 3, Some("alpha")),
            record(4, "hq", 4, None),
            record(5, "hq", 5, Some("bravo")),
        ]);
        assert_eq!(show(frames), ["s:hq:2", "b:hq:3,hq:4"]);
        // Toward the core: everything but its own.
        let mut out = Outbound::new(topic("t"), node("hq"), true, Offset(0));
        out.have(&[]);
        let frames = out.plan(vec![
            record(0, "alpha", 1, Some("bravo")),
            record(1, "hq", 1, None),
            record(2, "alpha", 2, None),
        ]);
        assert_eq!(show(frames), ["b:alpha:1,alpha:2"]);
    }

    #[test]
    fn a_hole_in_the_local_log_becomes_a_skip() {
        // Sequences 2 and 3 of bravo were lost here (disk budget): say so before 4.
        let mut out = Outbound::new(topic("t"), node("alpha"), false, Offset(0));
        out.have(&[(node("bravo"), 1)]);
        let frames = out.plan(vec![
            record(7, "bravo", 4, None),
            record(8, "bravo", 5, None),
        ]);
        assert_eq!(show(frames), ["s:bravo:3", "b:bravo:4,bravo:5"]);
    }
}
