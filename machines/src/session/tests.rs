//! The session's decisions with simulated time: no sockets, no store, no sleeps.

use std::time::{Duration, Instant};

use super::*;
use crate::entry::Priority;
use crate::entry::{Entry, EntryId, Offset, Record, Seq, Timestamp};
use crate::replication::{Incarnations, Writer};
use crate::wire::{self, Batch, Hello};

fn node(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

fn topic(n: &str) -> TopicName {
    TopicName::new(n).unwrap()
}

/// A node holding `reports` (scope core) and `broadcast` (scope all).
fn side(name: &str, core: bool) -> Side {
    Side {
        node: node(name),
        incarnation: 7,
        core,
        topics: vec![
            (topic("reports"), Scope::Core),
            (topic("broadcast"), Scope::All),
        ],
    }
}

/// The hello the edge `alpha` says to the core, changed by `change`.
fn alpha_hello(change: impl FnOnce(&mut Hello)) -> Frame {
    let t0 = Instant::now();
    let mut frame =
        Handshake::new(side("alpha", false), node("hq"), Default::default(), t0).hello(0);
    if let Frame::Hello(hello) = &mut frame {
        change(hello);
    }
    frame
}

/// The core `hq`, its hellos exchanged with `alpha`.
fn core_greeted(settings: SessionSettings, t0: Instant) -> Greeted {
    let hs = Handshake::new(side("hq", true), node("alpha"), settings, t0);
    hs.handle_hello(alpha_hello(|_| {})).unwrap()
}

/// The edge `alpha`, its hellos exchanged with the core.
fn edge_greeted(t0: Instant) -> Greeted {
    let core = Handshake::new(side("hq", true), node("alpha"), Default::default(), t0);
    let hs = Handshake::new(side("alpha", false), node("hq"), Default::default(), t0);
    hs.handle_hello(core.hello(0)).unwrap()
}

fn entry(origin: &str, seq: u64, len: usize) -> Entry {
    Entry {
        id: EntryId {
            origin: node(origin),
            seq: Seq(seq),
        },
        timestamp: Timestamp(0),
        key: None,
        to: None,
        headers: vec![],
        payload: vec![0; len],
    }
}

fn batch(t: &str, entries: &[Entry]) -> Frame {
    Frame::Batch(Batch::new(topic(t), entries))
}

/// `n` records of `hq`'s origin, 1,016 bytes each as the store counts them.
fn log(n: u64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            offset: Offset(i),
            entry: entry("hq", i + 1, 1000),
        })
        .collect()
}

fn entries_in(frames: &[Frame]) -> usize {
    frames
        .iter()
        .map(|f| match f {
            Frame::Batch(b) => b.len(),
            _ => 0,
        })
        .sum()
}

/// One send round over `log`: the entries planned.
fn round(session: &mut Session, log: &[Record], measure: Measure) -> usize {
    let mut round = session.send_round(measure, false, None);
    let mut sent = 0;
    while let Some(read) = session.next_read(&mut round, 0) {
        let from = usize::try_from(read.from.0).unwrap().min(log.len());
        let to = (from + read.max).min(log.len());
        let records = log[from..to].to_vec();
        sent += entries_in(&session.plan(&mut round, &read.topic, records, &[]));
    }
    session.end_round(round);
    sent
}

/// The core's sending half toward `alpha`, ready to send `broadcast` from offset 0.
fn ready_core(t0: Instant) -> Session {
    let (mut session, _) = core_greeted(SessionSettings::default(), t0).start([], t0);
    peer_has(&mut session, &[], Some(&VersionVector::default()));
    session
}

/// Hands the core's session alpha's `Have` of `broadcast`.
fn peer_has(
    session: &mut Session,
    vector: &[(&str, u64)],
    before: Option<&VersionVector>,
) -> Progress {
    let vector: Vec<_> = vector.iter().map(|(o, s)| (node(o), *s)).collect();
    let frame = Frame::Have {
        topic: topic("broadcast"),
        vector: vector.clone(),
    };
    let first = matches!(
        session.handle_control(frame),
        Ok(Control::Have { first: true, .. })
    );
    assert_eq!(
        first,
        before.is_some(),
        "the machine asks for the baseline on the first have"
    );
    let held = VersionVector([(node("hq"), Seq(u64::MAX))].into_iter().collect());
    session
        .handle_have(&topic("broadcast"), &vector, &held, before)
        .unwrap()
}

const SLOW: Measure = Measure {
    cwnd: 10_000,
    rtt: Duration::from_millis(100),
};

const FAST: Measure = Measure {
    cwnd: 1_000_000,
    rtt: Duration::from_millis(10),
};

#[test]
fn a_hello_is_refused_for_its_place_version_name_or_role() {
    let t0 = Instant::now();
    let core = || Handshake::new(side("hq", true), node("alpha"), Default::default(), t0);
    let refusal = |frame| core().handle_hello(frame).unwrap_err();
    assert!(core().handle_hello(alpha_hello(|_| {})).is_ok());
    assert_eq!(
        refusal(Frame::Pause),
        SessionError::Protocol("expected hello, got pause".into())
    );
    assert_eq!(
        refusal(alpha_hello(|h| h.version = 3)),
        SessionError::Version(3)
    );
    assert_eq!(
        refusal(alpha_hello(|h| h.node = node("mallory"))),
        SessionError::Protocol("hello names mallory, the certificate alpha".into())
    );
    assert_eq!(
        refusal(alpha_hello(|h| h.core = true)),
        SessionError::Protocol("both ends are a core".into())
    );
}

#[test]
fn each_side_learns_how_far_the_peer_s_clock_is_from_its_own() {
    let t0 = Instant::now();
    let core = || Handshake::new(side("hq", true), node("alpha"), Default::default(), t0);
    let at = |clock_ms| {
        core()
            .handle_hello(alpha_hello(|h| h.clock_ms = clock_ms))
            .unwrap()
    };
    // Sent at 1,000,000 by its clock; here it arrives at 1,000,500 after half of a
    // 200 ms round trip: sent at 1,000,400 by ours, so its clock is 400 ms behind.
    let rtt = Duration::from_millis(200);
    assert_eq!(at(1_000_000).clock_offset_ms(1_000_500, rtt), -400);
    // An edge whose clock is a day ahead.
    let day: i64 = 86_400_000;
    assert_eq!(
        at(1_000_000 + day as u64).clock_offset_ms(1_000_100, rtt),
        day
    );
    // Nonsense clocks do not overflow.
    assert_eq!(at(u64::MAX).clock_offset_ms(0, rtt), i64::MAX);
    assert_eq!(at(0).clock_offset_ms(u64::MAX, rtt), i64::MIN);
}

#[test]
fn a_silent_peer_times_out_at_each_step() {
    let t0 = Instant::now();
    let minute = Duration::from_secs(60);
    let mut hs = Handshake::new(side("hq", true), node("alpha"), Default::default(), t0);
    assert_eq!(hs.poll_timeout(), Some(t0 + minute));
    assert_eq!(
        hs.handle_timeout(t0 + minute - Duration::from_millis(1)),
        Ok(())
    );
    assert_eq!(
        hs.handle_timeout(t0 + minute),
        Err(SessionError::Timeout(minute))
    );
    // Once the control stream is open and our hello sent, the peer has the whole timeout
    // again to say its own.
    hs.opened(t0 + Duration::from_secs(30));
    assert_eq!(hs.handle_timeout(t0 + minute), Ok(()));
    assert!(hs.handle_timeout(t0 + Duration::from_secs(90)).is_err());
    // A timeout too long to count never fires.
    let forever = SessionSettings {
        hello_timeout: Duration::MAX,
        ..Default::default()
    };
    let hs = Handshake::new(side("hq", true), node("alpha"), forever, t0);
    assert_eq!(hs.poll_timeout(), None);
    assert_eq!(hs.handle_timeout(t0 + Duration::from_secs(1 << 40)), Ok(()));
}

#[test]
fn a_new_store_under_a_known_name_is_refused_while_its_entries_are_held() {
    let greeted = core_greeted(Default::default(), Instant::now());
    assert_eq!(greeted.presented(), 7);
    assert_eq!(
        greeted.check_incarnation(None, 0),
        Ok(Some(Incarnations::Known))
    );
    assert_eq!(greeted.check_incarnation(Some(7), 100), Ok(None));
    assert_eq!(
        greeted.check_incarnation(Some(6), 0),
        Ok(Some(Incarnations::Renewed))
    );
    let refused = greeted.check_incarnation(Some(6), 5);
    assert!(matches!(refused, Err(SessionError::Incarnation(why)) if why.contains("up to 5")));
}

#[test]
fn the_core_closes_what_an_edge_may_not_write_and_both_routes_follow() {
    let t0 = Instant::now();
    let writers = Writers(vec![(topic("broadcast"), Writer::Edges(vec![]))]);
    let settings = SessionSettings {
        writers,
        ..Default::default()
    };
    let core = Handshake::new(side("hq", true), node("alpha"), settings.clone(), t0);
    let Frame::Hello(hello) = core.hello(0) else {
        panic!("a hello")
    };
    assert_eq!(hello.closed, vec![topic("broadcast")]);
    let at_core = core_greeted(settings, t0);
    assert_eq!(at_core.routes().input, vec![topic("reports")]);
    assert_eq!(at_core.routes().out, vec![topic("broadcast")]);
    let edge = Handshake::new(side("alpha", false), node("hq"), Default::default(), t0);
    let at_edge = edge.handle_hello(Frame::Hello(hello)).unwrap();
    assert_eq!(at_edge.routes().out, vec![topic("reports")]);
    assert!(at_edge.peer_core());
}

#[test]
fn acknowledgements_wait_for_have_every_while_the_stream_streams() {
    let mut g = Gathering::default();
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let (_, mut intake) = core_greeted(Default::default(), t0).start([], t0);
    assert_eq!(intake.topics(), [topic("reports"), topic("broadcast")]);
    let reports = [entry("alpha", 1, 10), entry("alpha", 2, 10)];
    assert!(matches!(
        intake.handle_frame(&mut g, batch("reports", &reports)),
        Ok(Take::Insert { entries, skip: None, .. }) if entries.len() == 2
    ));
    // More frames are queued: the stream streams, so no `Have` yet...
    let done = intake.committed(std::mem::take(&mut g), t0 + ms(10), true);
    assert_eq!(done.stored, vec![(topic("reports"), 2)]);
    assert!(done.acknowledge.is_empty());
    intake
        .handle_frame(&mut g, batch("broadcast", &[entry("alpha", 1, 10)]))
        .unwrap();
    assert!(
        intake
            .committed(std::mem::take(&mut g), t0 + ms(50), true)
            .acknowledge
            .is_empty()
    );
    // ...until `have_every` has passed: both topics at once.
    intake
        .handle_frame(&mut g, batch("reports", &[entry("alpha", 3, 10)]))
        .unwrap();
    let done = intake.committed(std::mem::take(&mut g), t0 + ms(100), true);
    assert_eq!(done.acknowledge, vec![topic("reports"), topic("broadcast")]);
    intake
        .handle_frame(&mut g, batch("reports", &[entry("alpha", 4, 10)]))
        .unwrap();
    assert!(
        intake
            .committed(std::mem::take(&mut g), t0 + ms(120), true)
            .acknowledge
            .is_empty()
    );
    // A quiet stream is acknowledged at once.
    let done = intake.committed(std::mem::take(&mut g), t0 + ms(130), false);
    assert_eq!(done.acknowledge, vec![topic("reports")]);
    assert!(done.stored.is_empty());
}

#[test]
fn the_trust_rule_refuses_what_an_edge_may_not_say() {
    let mut g = Gathering::default();
    let t0 = Instant::now();
    let (_, mut from_alpha) = core_greeted(Default::default(), t0).start([], t0);
    let forged = from_alpha.handle_frame(&mut g, batch("reports", &[entry("bravo", 1, 1)]));
    assert!(matches!(forged, Err(SessionError::Forged(why)) if why.contains("bravo:1")));
    let skip = |origin: &str, through| Frame::Skip {
        topic: topic("reports"),
        origin: node(origin),
        through,
    };
    assert!(matches!(
        from_alpha.handle_frame(&mut g, skip("bravo", 9)),
        Err(SessionError::Forged(_))
    ));
    // Its own skip is held until the entry right after it, then applied with it.
    assert_eq!(
        from_alpha.handle_frame(&mut g, skip("alpha", 9)),
        Ok(Take::Hold)
    );
    let next = from_alpha.handle_frame(&mut g, batch("reports", &[entry("alpha", 10, 1)]));
    assert!(matches!(next, Ok(Take::Insert { skip: Some((o, 9)), .. }) if o == node("alpha")));
    assert_eq!(
        from_alpha.handle_frame(&mut g, skip("alpha", 20)),
        Ok(Take::Hold)
    );
    let past = from_alpha.handle_frame(&mut g, batch("reports", &[entry("alpha", 25, 1)]));
    assert!(matches!(past, Err(SessionError::Forged(_))));
    // Outside the routes, or out of place: a protocol violation.
    let (_, mut intake) = core_greeted(Default::default(), t0).start([], t0);
    assert_eq!(
        intake.handle_frame(&mut g, batch("elsewhere", &[entry("alpha", 1, 1)])),
        Err(SessionError::Protocol(
            "entries of topic elsewhere, which this node does not take from the peer".into()
        ))
    );
    assert_eq!(
        intake.handle_frame(&mut g, Frame::Resume),
        Err(SessionError::Protocol("resume on the entry stream".into()))
    );
    // The core relays: an edge takes any origin from it, and its skips at once.
    let (_, mut from_core) = edge_greeted(t0).start([], t0);
    let relayed = [entry("bravo", 1, 1), entry("hq", 1, 1)];
    assert!(
        from_core
            .handle_frame(&mut g, batch("broadcast", &relayed))
            .is_ok()
    );
    let skip = Frame::Skip {
        topic: topic("broadcast"),
        origin: node("bravo"),
        through: 7,
    };
    assert!(matches!(
        from_core.handle_frame(&mut g, skip),
        Ok(Take::Skip { through: 7, .. })
    ));
    // `reports` stops at the core: an edge takes none.
    assert!(matches!(
        from_core.handle_frame(&mut g, batch("reports", &[entry("hq", 1, 1)])),
        Err(SessionError::Protocol(_))
    ));
}

#[test]
fn control_frames_out_of_place_end_the_session() {
    let t0 = Instant::now();
    let (mut session, _) = core_greeted(Default::default(), t0).start([], t0);
    let refused = |session: &mut Session, frame| session.handle_control(frame).unwrap_err();
    assert_eq!(
        refused(&mut session, batch("broadcast", &[])),
        SessionError::Protocol("batch on the control stream".into())
    );
    assert_eq!(
        refused(&mut session, alpha_hello(|_| {})),
        SessionError::Protocol("hello on the control stream".into())
    );
    let have = Frame::Have {
        topic: topic("reports"),
        vector: vec![],
    };
    assert_eq!(
        refused(&mut session, have),
        SessionError::Protocol("have for topic reports, which this node does not send".into())
    );
}

#[test]
fn the_window_grows_and_shrinks_with_the_congestion_window() {
    let t0 = Instant::now();
    let log = log(2000);
    let mut session = ready_core(t0);
    // A slow link (10 kB window, 100 ms): pieces of 16 KiB, at most 64 KiB in flight.
    let slow: Vec<usize> = (0..6).map(|_| round(&mut session, &log, SLOW)).collect();
    assert_eq!(slow, [16, 16, 16, 16, 1, 0]);
    // The window grows: 4 MB may be in flight, in pieces of `batch_bytes` (256 KiB).
    assert_eq!(round(&mut session, &log, FAST), 258);
    // It shrinks again: nothing more until acknowledgements free room.
    assert_eq!(round(&mut session, &log, SLOW), 0);
    let progress = peer_has(&mut session, &[("hq", 65)], None);
    assert_eq!((progress.cursor, progress.in_flight), (Offset(65), 258));
    assert_eq!(round(&mut session, &log, SLOW), 0);
    let progress = peer_has(&mut session, &[("hq", 323)], None);
    assert_eq!(progress.cursor, Offset(323));
    assert!(!progress.up_to_date(Offset(2000)));
    assert_eq!(progress.backlog(Offset(2000)), 2000 - 323);
    assert_eq!(round(&mut session, &log, SLOW), 16);
}

#[test]
fn the_in_flight_bound_holds_per_topic() {
    let t0 = Instant::now();
    let settings = SessionSettings {
        max_in_flight: 10,
        ..Default::default()
    };
    let (mut session, _) = core_greeted(settings, t0).start([], t0);
    peer_has(&mut session, &[], Some(&VersionVector::default()));
    let log = log(100);
    assert_eq!(round(&mut session, &log, FAST), 10);
    assert_eq!(round(&mut session, &log, FAST), 0);
    peer_has(&mut session, &[("hq", 4)], None);
    assert_eq!(round(&mut session, &log, FAST), 4);
}

#[test]
fn a_peer_that_lost_data_is_sent_everything_again() {
    let t0 = Instant::now();
    let start = || {
        let greeted = core_greeted(Default::default(), t0);
        greeted.start([(topic("broadcast"), Offset(50))], t0).0
    };
    let before = VersionVector([(node("hq"), Seq(40))].into_iter().collect());
    // It holds what it acknowledged: sending goes on from the stored cursor.
    let mut session = start();
    let progress = peer_has(&mut session, &[("hq", 40)], Some(&before));
    assert!(!progress.restarted);
    assert_eq!(progress.position, Offset(50));
    // Later `Have`s are not compared: only the first tells what the peer kept.
    let progress = peer_has(&mut session, &[("hq", 3)], None);
    assert!(!progress.restarted);
    // It holds less (a restored backup, a wiped store): from the start.
    let mut session = start();
    let progress = peer_has(&mut session, &[("hq", 10)], Some(&before));
    assert!(progress.restarted);
    assert_eq!((progress.position, progress.cursor), (Offset(0), Offset(0)));
    // An origin it no longer names at all counts as lost too.
    let mut session = start();
    assert!(peer_has(&mut session, &[], Some(&before)).restarted);
}

#[test]
fn a_round_past_the_peers_own_entries_leaves_the_topic_up_to_date() {
    let t0 = Instant::now();
    let mut session = ready_core(t0);
    // Three of the core's entries go out and are acknowledged...
    let mut log = log(3);
    assert_eq!(round(&mut session, &log, FAST), 3);
    let acked = peer_has(&mut session, &[("hq", 3)], None);
    // ...while an entry of alpha's own arrives at the core, after the round.
    log.push(Record {
        offset: Offset(3),
        entry: entry("alpha", 1, 10),
    });
    let next = Offset(4);
    assert_eq!(acked.backlog(next), 1);
    assert!(!acked.up_to_date(next));
    // The next round passes it (alpha has it) and sends nothing, so no `Have` follows:
    // what the round leaves is where the topic stands.
    assert_eq!(round(&mut session, &log, FAST), 0);
    let now = session.progress(&topic("broadcast")).unwrap();
    assert_eq!(now.backlog(next), 0);
    assert!(now.up_to_date(next));
    assert_eq!(session.progress(&topic("other")), None);
}

#[test]
fn pauses_are_told_once_and_stop_the_sender() {
    let t0 = Instant::now();
    let log = log(100);
    let mut session = ready_core(t0);
    assert_eq!(session.pause_here(false), None);
    assert_eq!(session.pause_here(true), Some(Frame::Pause));
    assert_eq!(session.pause_here(true), None);
    assert_eq!(session.pause_here(false), Some(Frame::Resume));
    // Paused here (the operator's switch is an input of each round): nothing is read.
    let mut paused = session.send_round(FAST, true, None);
    assert_eq!(session.next_read(&mut paused, 0), None);
    assert!(!session.end_round(paused));
    // Paused by the peer: the same, until it resumes.
    assert_eq!(session.handle_control(Frame::Pause), Ok(Control::Paused));
    assert!(session.paused_by_peer());
    assert_eq!(round(&mut session, &log, FAST), 0);
    assert_eq!(session.handle_control(Frame::Resume), Ok(Control::Resumed));
    assert_eq!(round(&mut session, &log, FAST), 100);
}

#[test]
fn cursors_are_stored_every_persist_every_when_they_moved() {
    let t0 = Instant::now();
    let second = Duration::from_secs(1);
    let (mut session, _) = core_greeted(Default::default(), t0).start([], t0);
    // Due at once, but nothing to store before the peer said what it holds.
    assert_eq!(session.poll_timeout(), Some(t0));
    assert!(session.handle_timeout(t0).is_empty());
    assert_eq!(session.poll_timeout(), Some(t0 + second));
    peer_has(&mut session, &[("hq", 3)], Some(&VersionVector::default()));
    assert!(session.handle_timeout(t0 + second / 2).is_empty());
    let due = session.handle_timeout(t0 + second);
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].topic.clone(), due[0].cursor),
        (topic("broadcast"), Offset(0))
    );
    assert_eq!(due[0].acknowledged.get(&node("hq")), Seq(3));
    session.persisted(&due[0].topic, due[0].cursor);
    // Unmoved: not stored again.
    assert!(session.handle_timeout(t0 + 2 * second).is_empty());
    round(&mut session, &log(10), FAST);
    peer_has(&mut session, &[("hq", 10)], None);
    let due = session.handle_timeout(t0 + 3 * second);
    assert_eq!(due[0].cursor, Offset(10));
    // A late wake does not catch up the times it missed.
    session.persisted(&due[0].topic, due[0].cursor);
    let late = t0 + Duration::from_millis(7500);
    assert!(session.handle_timeout(late).is_empty());
    assert_eq!(session.poll_timeout(), Some(late + second));
}

#[test]
fn the_relay_quota_holds_back_an_edge_past_it() {
    let mut g = Gathering::default();
    let t0 = Instant::now();
    let settings = SessionSettings {
        relay: Some(RelayLimit {
            bytes_per_s: 0,
            entries_per_s: 10,
            burst: Duration::from_secs(1),
        }),
        ..Default::default()
    };
    let (_, mut intake) = core_greeted(settings, t0).start([], t0);
    // Reports stop at the core: not relayed, not counted.
    let reports: Vec<_> = (1..=50).map(|s| entry("alpha", s, 1)).collect();
    intake
        .handle_frame(&mut g, batch("reports", &reports))
        .unwrap();
    assert_eq!(intake.before_commit(&mut g, t0), Duration::ZERO);
    intake.committed(std::mem::take(&mut g), t0, false);
    // Broadcasts go on to the other edges: past the burst, the debt is waited out...
    let broadcasts: Vec<_> = (1..=20).map(|s| entry("alpha", s, 1)).collect();
    intake
        .handle_frame(&mut g, batch("broadcast", &broadcasts))
        .unwrap();
    assert_eq!(intake.before_commit(&mut g, t0), Duration::from_secs(1));
    intake.committed(std::mem::take(&mut g), t0, false);
    // ...but entries addressed to the core itself go nowhere else.
    let for_core: Vec<_> = (21..=40)
        .map(|s| Entry {
            to: Some(node("hq")),
            ..entry("alpha", s, 1)
        })
        .collect();
    intake
        .handle_frame(&mut g, batch("broadcast", &for_core))
        .unwrap();
    let later = t0 + Duration::from_secs(2);
    assert_eq!(intake.before_commit(&mut g, later), Duration::ZERO);
}

#[test]
fn a_commit_is_at_most_one_transaction_of_entries() {
    let mut g = Gathering::default();
    let t0 = Instant::now();
    let (_, mut intake) = core_greeted(Default::default(), t0).start([], t0);
    let mut seq = 0;
    let mut frames = 0;
    while !g.full() {
        let entries: Vec<_> = (0..1000)
            .map(|_| {
                seq += 1;
                entry("alpha", seq, 0)
            })
            .collect();
        intake
            .handle_frame(&mut g, batch("reports", &entries))
            .unwrap();
        frames += 1;
    }
    assert_eq!(frames, 9);
    intake.committed(std::mem::take(&mut g), t0, false);
    assert!(!g.full());
}

/// A node for [`two_machines_replicate_both_ways_over_simulated_time`]: its two halves
/// and an in-memory log in place of the store.
struct SimNode {
    name: NodeName,
    session: Session,
    intake: Intake,
    logs: std::collections::HashMap<TopicName, Vec<Record>>,
    vectors: std::collections::HashMap<TopicName, VersionVector>,
    /// Frames for the peer: control, then entries.
    control: Vec<Frame>,
    entries: Vec<Frame>,
}

impl SimNode {
    fn start(greeted: Greeted, name: &str, t0: Instant) -> SimNode {
        let (session, intake) = greeted.start([], t0);
        let mut node = SimNode {
            name: node(name),
            session,
            intake,
            logs: Default::default(),
            vectors: Default::default(),
            control: Vec::new(),
            entries: Vec::new(),
        };
        for topic in node.intake.topics().to_vec() {
            let vector = node.vectors.entry(topic.clone()).or_default();
            node.control.push(have(topic, vector));
        }
        node
    }

    /// Stores `e` as the store would: the next sequence of its origin, or a duplicate.
    fn store(&mut self, topic: &TopicName, e: Entry) {
        let vector = self.vectors.entry(topic.clone()).or_default();
        let held = vector.get(&e.id.origin).0;
        assert!(e.id.seq.0 <= held + 1, "a hole before {:?}", e.id);
        if e.id.seq.0 == held + 1 {
            vector.0.insert(e.id.origin.clone(), e.id.seq);
            let log = self.logs.entry(topic.clone()).or_default();
            let offset = Offset(log.len() as u64);
            log.push(Record { offset, entry: e });
        }
    }

    fn append(&mut self, t: &str, seq: u64) {
        let e = entry(self.name.as_str(), seq, 8);
        self.store(&topic(t), e);
    }

    /// One send round: what the session plans goes to the peer's entry stream.
    fn send(&mut self) -> usize {
        let mut round = self.session.send_round(FAST, false, None);
        let mut sent = 0;
        while let Some(read) = self.session.next_read(&mut round, 0) {
            let log = self.logs.get(&read.topic).map_or(&[][..], Vec::as_slice);
            let from = usize::try_from(read.from.0).unwrap().min(log.len());
            let records = log[from..(from + read.max).min(log.len())].to_vec();
            let frames = self.session.plan(&mut round, &read.topic, records, &[]);
            sent += entries_in(&frames);
            self.entries.extend(frames);
        }
        self.session.end_round(round);
        sent
    }

    /// Takes the peer's frames: entries as one transaction, then the control frames.
    fn receive(&mut self, control: Vec<Frame>, entries: Vec<Frame>, now: Instant) {
        let queued = !entries.is_empty();
        let mut g = Gathering::default();
        for frame in entries {
            match self.intake.handle_frame(&mut g, frame).unwrap() {
                Take::Insert {
                    topic,
                    skip,
                    entries,
                } => {
                    assert_eq!(skip, None);
                    entries.into_iter().for_each(|e| self.store(&topic, e));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if queued {
            for topic in self.intake.committed(g, now, false).acknowledge {
                let vector = self.vectors.entry(topic.clone()).or_default();
                self.control.push(have(topic, vector));
            }
        }
        for frame in control {
            if let Control::Have {
                topic,
                vector,
                first,
            } = self.session.handle_control(frame).unwrap()
            {
                let held = self.vectors.get(&topic).cloned().unwrap_or_default();
                let before = first.then(VersionVector::default);
                self.session
                    .handle_have(&topic, &vector, &held, before.as_ref());
            }
        }
    }
}

#[test]
fn two_machines_replicate_both_ways_over_simulated_time() {
    let t0 = Instant::now();
    let mut core = SimNode::start(core_greeted(Default::default(), t0), "hq", t0);
    let mut edge = SimNode::start(edge_greeted(t0), "alpha", t0);
    for seq in 1..=3000 {
        core.append("broadcast", seq);
        edge.append("reports", seq);
        if seq <= 10 {
            edge.append("broadcast", seq);
        }
    }
    // Step until neither side has anything to send, each step 10 ms of simulated time.
    let mut now = t0;
    for _ in 0..100 {
        now += Duration::from_millis(10);
        let moved = core.send() + edge.send();
        let told = core.control.len() + edge.control.len();
        let (c, e) = (
            std::mem::take(&mut core.control),
            std::mem::take(&mut core.entries),
        );
        edge.receive(c, e, now);
        let (c, e) = (
            std::mem::take(&mut edge.control),
            std::mem::take(&mut edge.entries),
        );
        core.receive(c, e, now);
        if moved == 0 && told == 0 {
            break;
        }
    }
    let count = |node: &SimNode, t: &str| node.logs.get(&topic(t)).map_or(0, Vec::len);
    assert_eq!(count(&core, "reports"), 3000);
    assert_eq!(count(&core, "broadcast"), 3010);
    assert_eq!(
        count(&edge, "broadcast"),
        3010,
        "the edge's own and all of the core's"
    );
    // Everything acknowledged: both senders' cursors are at the end of their logs.
    let due = core.session.handle_timeout(now);
    assert_eq!(
        due.iter().map(|p| p.cursor).collect::<Vec<_>>(),
        [Offset(3010)]
    );
    let due = edge.session.handle_timeout(now);
    let mut cursors: Vec<_> = due.iter().map(|p| (p.topic.clone(), p.cursor)).collect();
    cursors.sort();
    assert_eq!(
        cursors,
        [
            (topic("broadcast"), Offset(3010)),
            (topic("reports"), Offset(3000))
        ]
    );
}

/// A core and an edge that both hold `broadcast` and `alerts` (scope all), `alerts`
/// urgent at the core: the core's sending half toward alpha, with both topics ready.
fn core_with_alerts(t0: Instant) -> Session {
    let with_alerts = |name: &str, core: bool| {
        let mut s = side(name, core);
        s.topics.push((topic("alerts"), Scope::All));
        s
    };
    let settings = SessionSettings {
        priorities: Priorities(vec![(topic("alerts"), Priority::Urgent)]),
        ..Default::default()
    };
    let edge = Handshake::new(
        with_alerts("alpha", false),
        node("hq"),
        Default::default(),
        t0,
    );
    let hs = Handshake::new(with_alerts("hq", true), node("alpha"), settings, t0);
    let (mut session, _) = hs.handle_hello(edge.hello(0)).unwrap().start([], t0);
    for t in ["broadcast", "alerts"] {
        let frame = Frame::Have {
            topic: topic(t),
            vector: vec![],
        };
        assert!(matches!(
            session.handle_control(frame),
            Ok(Control::Have { .. })
        ));
        session.handle_have(&topic(t), &[], &VersionVector::default(), None);
    }
    session
}

#[test]
fn an_urgent_topic_is_not_held_by_a_window_full_of_normal_entries() {
    let t0 = Instant::now();
    let mut session = core_with_alerts(t0);
    assert_eq!(session.classes(), vec![Priority::Urgent, Priority::Normal]);
    let slow = Measure {
        cwnd: 16 << 10,
        rtt: Duration::from_millis(1200),
    };
    // The normal class fills its window with broadcast's backlog, round after round.
    let backlog = log(1000);
    let mut rounds = 0;
    loop {
        let mut round = session.send_round(slow, false, Some(Priority::Normal));
        let mut read_any = false;
        while let Some(read) = session.next_read(&mut round, 0) {
            assert_eq!(
                read.topic,
                topic("broadcast"),
                "a normal round reads normal topics only"
            );
            let from = usize::try_from(read.from.0).unwrap();
            let records = backlog[from..(from + read.max).min(backlog.len())].to_vec();
            session.plan(&mut round, &read.topic, records, &[]);
            read_any = true;
        }
        session.end_round(round);
        rounds += 1;
        if !read_any {
            break;
        }
        assert!(rounds < 100, "the normal window never filled");
    }
    assert!(session.progress(&topic("broadcast")).unwrap().in_flight > 0);
    // The urgent class still reads: its window does not count normal entries.
    let mut urgent = session.send_round(slow, false, Some(Priority::Urgent));
    let read = session.next_read(&mut urgent, 0).expect("alerts is read");
    assert_eq!(read.topic, topic("alerts"));
    // On one stream (a peer of version 5), the round reads urgent topics first.
    let mut one = session.send_round(slow, false, None);
    let first = session.next_read(&mut one, 0).map(|r| r.topic);
    assert_eq!(first, None, "one stream: the shared window is full");
}

#[test]
fn on_one_stream_urgent_topics_are_read_first() {
    let t0 = Instant::now();
    let mut session = core_with_alerts(t0);
    for _ in 0..3 {
        let mut round = session.send_round(FAST, false, None);
        let first = session.next_read(&mut round, 0).map(|r| r.topic);
        assert_eq!(first, Some(topic("alerts")));
        let second = session.next_read(&mut round, 0).map(|r| r.topic);
        assert_eq!(second, Some(topic("broadcast")));
        session.end_round(round);
    }
}

#[test]
fn the_core_serves_an_edge_of_the_previous_version_in_that_version() {
    let t0 = Instant::now();
    let old = SessionSettings {
        version: wire::PREVIOUS_VERSION,
        ..Default::default()
    };
    let edge = Handshake::new(side("alpha", false), node("hq"), old.clone(), t0);
    let core = Handshake::new(side("hq", true), node("alpha"), Default::default(), t0);
    let greeted = core.handle_hello(edge.hello(0)).unwrap();
    assert_eq!(greeted.version(), wire::PREVIOUS_VERSION);
    let answer = greeted.hello(0);
    assert!(matches!(&answer, Frame::Hello(h) if h.version == wire::PREVIOUS_VERSION));
    // The old edge takes the answer (it checks the version it speaks).
    let edge = Handshake::new(side("alpha", false), node("hq"), old, t0);
    assert_eq!(
        edge.handle_hello(answer).unwrap().version(),
        wire::PREVIOUS_VERSION
    );
    // Older than the previous version: refused, naming it.
    let core = Handshake::new(side("hq", true), node("alpha"), Default::default(), t0);
    let ancient = alpha_hello(|h| h.version = wire::PREVIOUS_VERSION - 1);
    let err = core.handle_hello(ancient).unwrap_err();
    assert_eq!(err, SessionError::Version(wire::PREVIOUS_VERSION - 1));
}

#[test]
fn the_core_tells_an_edge_of_version_6_its_rules_and_the_edge_takes_the_higher_class() {
    let t0 = Instant::now();
    let with_alerts = |name: &str, core: bool| {
        let mut s = side(name, core);
        s.topics.push((topic("alerts"), Scope::All));
        s
    };
    let at_core = SessionSettings {
        priorities: Priorities(vec![
            (topic("alerts"), Priority::Urgent),
            (topic("reports"), Priority::Bulk),
            (topic("elsewhere"), Priority::Urgent),
        ]),
        latest_value: vec![topic("reports"), topic("elsewhere")],
        ..Default::default()
    };
    // The edge's own config makes `reports` urgent: the higher of the two stays.
    let at_edge = SessionSettings {
        priorities: Priorities(vec![(topic("reports"), Priority::Urgent)]),
        ..Default::default()
    };
    let edge = Handshake::new(with_alerts("alpha", false), node("hq"), at_edge.clone(), t0);
    let core = Handshake::new(with_alerts("hq", true), node("alpha"), at_core.clone(), t0);
    let core = core.handle_hello(edge.hello(0)).unwrap();
    let rules = core.rules().expect("a core tells an edge of version 6");
    assert_eq!(
        rules,
        Frame::Rules {
            classes: vec![
                (topic("alerts"), Priority::Urgent),
                (topic("reports"), Priority::Bulk),
            ],
            latest_value: vec![topic("reports")],
        },
        "only the topics they share"
    );
    let mut edge = edge.handle_hello(core.hello(0)).unwrap();
    assert!(edge.expects_rules());
    assert!(edge.rules().is_none(), "an edge tells nothing");
    edge.handle_rules(rules).unwrap();
    assert!(edge.latest_value(&topic("reports")));
    assert!(!edge.latest_value(&topic("alerts")));
    let (session, _) = edge.start([], t0);
    assert_eq!(session.class_of(&topic("alerts")), Some(Priority::Urgent));
    assert_eq!(session.class_of(&topic("reports")), Some(Priority::Urgent));
    assert!(session.latest_value(&topic("reports")));
    // Anything else in its place ends the session.
    let edge = Handshake::new(with_alerts("alpha", false), node("hq"), at_edge, t0);
    let mut edge = edge.handle_hello(core.hello(0)).unwrap();
    assert!(matches!(
        edge.handle_rules(Frame::Pause),
        Err(SessionError::Protocol(_))
    ));
    // An edge of version 5 is told nothing, and expects nothing.
    let old = SessionSettings {
        version: wire::PREVIOUS_VERSION,
        ..Default::default()
    };
    let edge = Handshake::new(with_alerts("alpha", false), node("hq"), old, t0);
    let core = Handshake::new(with_alerts("hq", true), node("alpha"), at_core, t0);
    let core = core.handle_hello(edge.hello(0)).unwrap();
    assert!(core.rules().is_none());
    assert!(!edge.handle_hello(core.hello(0)).unwrap().expects_rules());
}
