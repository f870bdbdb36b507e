//! One session: replication over one authenticated connection, until it ends.
//!
//! The driver of `machines::session`'s state machines: this module owns the QUIC
//! streams, the store and the timers, hands the machines what happened, and does what
//! they answer. Data flow:
//! - Control stream (bidirectional, opened by the edge): each side sends the
//!   [`Handshake`]'s hello and hands it the peer's; it checks the peer's incarnation
//!   against the store, records the peer's routes, and starts the [`Session`] (sending
//!   half) and the [`Intake`] (receiving half); then it sends `Have` for every topic it
//!   takes, so that the peer knows where to start.
//! - Sender (this side's entry stream): in each round the session says which topic to
//!   read from where, sized to QUIC's congestion window, and plans frames from what was
//!   read; they go through one zstd stream, flushed after each round. QUIC flow control
//!   and the in-flight bound make a slow link hold the sender back; it waits on the
//!   store's change signal, never polls.
//! - Receiver (the peer's entry stream): frames are read ahead into a bounded queue; the
//!   committer hands each to the intake and takes everything queued as one transaction
//!   (one fsync), then sends `Have` for the topics the intake says to acknowledge.
//! - Control reader: `Have` goes to the session with what the store holds; `Pause` /
//!   `Resume` stop and start the sender. At the session's timeouts (every second),
//!   cursors and acknowledged vectors are stored, so that a restart resumes where the
//!   peer stands and retention knows what the peer holds.
//!
//! Anything from the peer that breaks the protocol ends the session with an application
//! close code and a reason; the node's other links go on.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use machines::replication::Incarnations;
use machines::session::{self as machine, Control, Greeted, Handshake, Intake, Measure, Session};
use machines::session::{Gathering, Progress, Side, Take};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::{CLOCK_SKEW_WARN, LinkError, Local, PeerLink, TopicStatus};
use crate::entry::{NodeName, Offset, Priority, Scope, Seq, TopicName};
use crate::log::{ConsumerName, Held, PeerConfig, Store, TableName, Txn, WriteError};
use crate::tls;
use crate::wire::{self, Deflate, Frame, FrameReader, Inflate};

/// Runs one session on an authenticated connection with `peer` until it ends, then
/// closes the connection with the reason. `dialer`: this side opened the connection.
pub async fn session(
    local: &Local,
    conn: &quinn::Connection,
    link: &Arc<PeerLink>,
    dialer: bool,
) -> LinkError {
    let result = run(local, conn, link, dialer).await;
    // A session refused at its hello, or replaced, leaves the current one's status be.
    link.leave(conn);
    if link.holds(conn) {
        link.set_connected(false);
    }
    link.set_session(None, Some(conn));
    let err = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let (code, reason) = err.close();
    code.close(conn, &reason);
    err
}

enum Never {}

async fn run(
    local: &Local,
    conn: &quinn::Connection,
    link: &Arc<PeerLink>,
    dialer: bool,
) -> Result<Never, LinkError> {
    let peer = link.peer().clone();
    let store = &local.store;
    let side = Side {
        node: store.node().clone(),
        incarnation: store.incarnation(),
        core: local.core,
        topics: store
            .topics()
            .into_iter()
            .filter(|t| t.config.scope != Scope::Local)
            .map(|t| (t.config.name, t.config.scope))
            .collect(),
    };
    let settings = local.settings.clone();
    let mut handshake = Handshake::new(side, peer.clone(), settings, Instant::now());
    // The deadline covers the control stream's opening too: an authenticated peer that
    // never opens it must not hold a session open.
    let opened = in_time(&handshake, async {
        match dialer {
            true => Ok(conn.open_bi().await?),
            false => Ok(conn.accept_bi().await?),
        }
    });
    let (mut control_send, mut control_recv) = opened.await?;
    // Traffic classes: quinn sends the stream with the highest priority first, so an
    // acknowledgement or a pause never waits behind a batch of entries.
    let _ = control_send.set_priority(PRIORITY_CONTROL);

    // Hello, both ways: the dialer says its own first; the other side answers once it
    // has read it, in the version the dialer speaks (a core serves edges of the
    // previous version). Each side has the hello timeout to say its own.
    let mut bytes = Vec::new();
    let mut control = FrameReader::default();
    // A core then tells an edge of version 6 its rules for their topics (priority
    // classes, latest-value topics), in the same write as its hello.
    let mut greeted = if dialer {
        wire::encode(&handshake.hello(tls::millis(SystemTime::now())), &mut bytes);
        control_send.write_all(&bytes).await.map_err(closed)?;
        handshake.opened(Instant::now());
        let theirs = in_time(&handshake, read_frame(&mut control_recv, &mut control)).await?;
        handshake.handle_hello(theirs)?
    } else {
        handshake.opened(Instant::now());
        let theirs = in_time(&handshake, read_frame(&mut control_recv, &mut control)).await?;
        let greeted = handshake.handle_hello(theirs)?;
        wire::encode(&greeted.hello(tls::millis(SystemTime::now())), &mut bytes);
        if let Some(rules) = greeted.rules() {
            wire::encode(&rules, &mut bytes);
        }
        control_send.write_all(&bytes).await.map_err(closed)?;
        greeted
    };
    if greeted.expects_rules() {
        let wait = local.settings.hello_timeout;
        let frame = tokio::time::timeout(wait, read_frame(&mut control_recv, &mut control))
            .await
            .map_err(|_| LinkError::from(machine::SessionError::Timeout(wait)))??;
        greeted.handle_rules(frame)?;
    }
    let version = greeted.version();
    let offset = greeted.clock_offset_ms(tls::millis(SystemTime::now()), conn.rtt());
    link.update(|s| s.clock_offset_ms = Some(offset));
    if offset.unsigned_abs() > CLOCK_SKEW_WARN.as_millis() as u64 {
        let (how, by) = match offset > 0 {
            true => ("ahead of", offset.unsigned_abs()),
            false => ("behind", offset.unsigned_abs()),
        };
        tracing::warn!(
            %peer,
            offset_ms = offset,
            "the peer's clock is {} s {how} this node's: set both from one time source \
             (entries carry their origin's time, and certificates are checked against it)",
            by / 1000
        );
    }
    check_incarnation(store, &peer, &greeted).await?;
    let routes = greeted.routes().clone();
    let out_config = PeerConfig {
        name: peer.clone(),
        core: greeted.peer_core(),
        topics: routes.out.clone(),
    };
    store.set_peer(out_config).await.map_err(store_error)?;
    link.take_over(conn);
    link.set_connected(true);
    link.set_session(Some(conn), None);
    tracing::info!(%peer, out = routes.out.len(), input = routes.input.len(), "link up");

    // Where each outgoing topic starts: the stored cursor (from the start if the peer
    // turns out to have lost data).
    let consumer =
        ConsumerName::new(format!("link.{peer}")).map_err(|e| LinkError::Store(e.to_string()))?;
    let mut cursors = Vec::new();
    for topic in &routes.out {
        cursors.push((topic.clone(), store.cursor(&consumer, topic)?));
        let class = greeted.class_of(topic);
        link.topic(topic, true, |t| t.priority = class);
    }
    for topic in &routes.input {
        let class = greeted.class_of(topic);
        link.topic(topic, false, |t| t.priority = class);
    }
    let (session, intake) = greeted.start(cursors, Instant::now());
    // With a peer of version 6 or later, each priority class of the outgoing topics has
    // an entry stream of its own; with one of version 5, one stream carries them all.
    let classes: Vec<Option<Priority>> = match version >= 6 {
        true => session.classes().into_iter().map(Some).collect(),
        false => vec![None],
    };
    let shared = Arc::new(Shared {
        session: Mutex::new(session),
        wake: watch::Sender::new(0),
    });

    // Control writer: every frame for the control stream goes through one queue.
    let (control_tx, mut control_rx) = mpsc::channel::<Frame>(1024);
    // At a core on a backbone, `backbone_haves` sends those of the topics it carries, as
    // far as the backbone holds.
    let (capped, plain): (Vec<TopicName>, Vec<TopicName>) = intake
        .topics()
        .iter()
        .cloned()
        .partition(|topic| capped_by_backbone(local, topic));
    for topic in &plain {
        let _ = control_tx.try_send(machine::have(topic.clone(), &store.vector(topic)?));
    }
    // Each loop is a task of its own, so that each is polled when its own event comes
    // and not whenever any other loop's does: with a thousand links, one broadcast wakes
    // every sender, and polling every loop's streams with it doubled the core's work.
    // The first to end ends the session; the others are stopped before this returns.
    let mut loops: JoinSet<Result<Never, LinkError>> = JoinSet::new();
    loops.spawn(async move {
        let mut buf = Vec::new();
        while let Some(frame) = control_rx.recv().await {
            buf.clear();
            wire::encode(&frame, &mut buf);
            while let Ok(more) = control_rx.try_recv() {
                wire::encode(&more, &mut buf);
            }
            control_send.write_all(&buf).await.map_err(closed)?;
        }
        Err(LinkError::Protocol("control queue closed".into()))
    });
    // What every loop holds its own handle of.
    let at = Handles {
        local: local.clone(),
        conn: conn.clone(),
        link: link.clone(),
        shared: shared.clone(),
        control: control_tx.clone(),
    };
    let h = at.clone();
    loops.spawn(async move {
        control_loop(&h.local.store, &h.link, &h.shared, control_recv, control).await
    });
    let h = at.clone();
    loops.spawn(async move { pause_loop(&h.link, &h.shared, &h.control).await });
    for class in classes {
        let h = at.clone();
        loops.spawn(async move { send_loop(&h.local, &h.conn, &h.link, &h.shared, class).await });
    }
    let h = at.clone();
    loops.spawn(async move {
        receive_loop(&h.local, &h.conn, &h.link, intake, &h.control, version).await
    });
    if let Some(backbone) = local.backbone.clone() {
        let (h, peer) = (at.clone(), peer.clone());
        loops.spawn(async move {
            backbone_haves(&h.local.store, &backbone, &peer, &capped, &h.control).await
        });
    }
    let h = at.clone();
    loops
        .spawn(async move { persist_loop(&h.local, &h.conn, &consumer, &h.link, &h.shared).await });
    let h = at.clone();
    match dialer {
        true => loops.spawn(async move { backlog_loop(&h.local.store, &h.link, &h.control).await }),
        false => loops.spawn(async move { mirror_loop(&h.local, &h.conn, &peer).await }),
    };
    let Handles { conn: c, .. } = at;
    drop(control_tx);
    loops.spawn(async move { Err(LinkError::Connection(c.closed().await)) });
    let ended = match loops.join_next().await {
        Some(Ok(ended)) => ended,
        // A bug here: it ends the session as a panic in it always did.
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        _ => Err(LinkError::Store("a session task was cancelled".into())),
    };
    loops.shutdown().await;
    ended
}

/// A session's handles, one set per loop task.
#[derive(Clone)]
struct Handles {
    local: Local,
    conn: quinn::Connection,
    link: Arc<PeerLink>,
    shared: Arc<Shared>,
    control: mpsc::Sender<Frame>,
}

/// Runs `op` until it completes, or fails it when the handshake's deadline passes.
async fn in_time<T>(
    handshake: &Handshake,
    op: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    let mut op = std::pin::pin!(op);
    while let Some(deadline) = handshake.poll_timeout() {
        match tokio::time::timeout_at(deadline.into(), &mut op).await {
            Ok(done) => return done,
            Err(_) => handshake.handle_timeout(Instant::now())?,
        }
    }
    op.await
}

/// Stream priorities (higher goes first): control, then the entry streams by class
/// ([`priority_of`]); mirror transfers come last, below entries
/// ([`super::PRIORITY_MIRROR`]).
const PRIORITY_CONTROL: i32 = 3;

/// An entry stream's QUIC priority: urgent 2, normal 1 (and a peer of version 5's one
/// stream), bulk 0; quinn fills each packet from the highest-priority stream with data.
fn priority_of(class: Option<Priority>) -> i32 {
    match class {
        Some(Priority::Urgent) => 2,
        Some(Priority::Normal) | None => 1,
        Some(Priority::Bulk) => 0,
    }
}

/// The sending half, shared by the loops that feed it. The lock is never held across an
/// `.await`.
struct Shared {
    session: Mutex<Session>,
    /// Wakes the send loops (each its own receiver): an acknowledgement freed room, or
    /// the peer resumed.
    wake: watch::Sender<u64>,
}

impl Shared {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the control stream: `Have` moves cursors, `Pause` / `Resume` gate the sender.
async fn control_loop(
    store: &Store,
    link: &PeerLink,
    shared: &Shared,
    mut recv: quinn::RecvStream,
    mut reader: FrameReader,
) -> Result<Never, LinkError> {
    let peer = link.peer();
    loop {
        let frame = read_frame(&mut recv, &mut reader).await?;
        let control = shared.session().handle_control(frame)?;
        match control {
            Control::Have {
                topic,
                vector,
                first,
            } => {
                let held = store.vector(&topic)?;
                let before = match first {
                    true => Some(store.peer_vector(peer, &topic)?),
                    false => None,
                };
                let progress =
                    shared
                        .session()
                        .handle_have(&topic, &vector, &held, before.as_ref());
                let Some(progress) = progress else {
                    continue;
                };
                if progress.restarted {
                    tracing::warn!(%peer, %topic, "peer holds less than it acknowledged before: sending from the start");
                }
                let next = store.topic(&topic).map_or(Offset(0), |t| t.next);
                link.topic(&topic, true, |t| show(t, progress, next));
                shared.wake.send_modify(|n| *n += 1);
            }
            Control::Paused => {
                link.update(|s| s.paused_by_peer = true);
                tracing::info!(%peer, "peer paused the link");
            }
            Control::Resumed => {
                link.update(|s| s.paused_by_peer = false);
                shared.wake.send_modify(|n| *n += 1);
                tracing::info!(%peer, "peer resumed the link");
            }
            Control::Backlog { entries, bytes } => {
                link.update(|s| s.backlog_in = Some(Held { entries, bytes }));
            }
        }
    }
}

/// An edge's side: tells the core what waits here to cross to it ([`Store::held_for`]),
/// whenever that changes, checked every [`BACKLOG_EVERY`], for HQ's fleet table. An
/// idle link sends nothing.
async fn backlog_loop(
    store: &Store,
    link: &PeerLink,
    control: &mpsc::Sender<Frame>,
) -> Result<Never, LinkError> {
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told = None;
    loop {
        every.tick().await;
        let held = store.held_for(link.peer())?.unwrap_or_default();
        if told != Some(held) {
            let frame = Frame::Backlog {
                entries: held.entries,
                bytes: held.bytes,
            };
            if control.send(frame).await.is_err() {
                return Err(LinkError::Protocol("control queue closed".into()));
            }
            told = Some(held);
        }
    }
}

/// How often an edge checks what waits for the core ([`backlog_loop`]).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Tells the peer when an operator pauses or resumes the link here.
async fn pause_loop(
    link: &PeerLink,
    shared: &Shared,
    control: &mpsc::Sender<Frame>,
) -> Result<Never, LinkError> {
    let mut paused = link.paused_here.subscribe();
    loop {
        let now = *paused.borrow_and_update();
        let tell = shared.session().pause_here(now);
        if let Some(frame) = tell {
            control
                .send(frame)
                .await
                .map_err(|_| LinkError::Protocol("control queue closed".into()))?;
        }
        if paused.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sends the entries of the topics of `class` (`None`: of every class, to a peer of
/// version 5) on an entry stream of their own: in rounds, reads what the session says,
/// compresses what it plans, writes.
async fn send_loop(
    local: &Local,
    conn: &quinn::Connection,
    link: &PeerLink,
    shared: &Shared,
    class: Option<Priority>,
) -> Result<Never, LinkError> {
    let store = &local.store;
    let mut send = conn.open_uni().await?;
    let _ = send.set_priority(priority_of(class));
    let mut woken = shared.wake.subscribe();
    let mut deflate =
        Deflate::new(local.settings.zstd_level).map_err(|e| LinkError::Store(e.to_string()))?;
    let mut wakes = store.sender_wakes(link.peer());
    let mut paused_here = link.paused_here.subscribe();
    let mut buf = Vec::new();
    // QUIC's window and round trip, read at most every `MEASURE_EVERY`: `stats` copies
    // all of the connection's counters, and a core's thousand senders run a round each
    // whenever anything is appended.
    let mut measured: Option<(Instant, Measure)> = None;
    let mut last_sent = Instant::now();
    loop {
        wakes.seen();
        woken.borrow_and_update();
        let paused = *paused_here.borrow_and_update();
        let now = Instant::now();
        let measure = match measured {
            Some((at, measure)) if now.duration_since(at) < MEASURE_EVERY => measure,
            _ => {
                let path = conn.stats().path;
                let measure = Measure {
                    cwnd: path.cwnd,
                    rtt: path.rtt,
                };
                measured = Some((now, measure));
                measure
            }
        };
        let mut round = shared.session().send_round(measure, paused, class);
        let mut counts = Vec::new();
        loop {
            let read = shared.session().next_read(&mut round, buf.len());
            let Some(read) = read else { break };
            let records = store.read(&read.topic, read.from, read.max)?;
            if records.is_empty() {
                continue;
            }
            let latest_value = shared.session().latest_value(&read.topic);
            let superseded = match latest_value {
                true => store.superseded(&read.topic, &records)?,
                false => Vec::new(),
            };
            let frames = shared
                .session()
                .plan(&mut round, &read.topic, records, &superseded);
            let mut entries = 0;
            for frame in &frames {
                if let Frame::Batch(b) = frame {
                    entries += b.len() as u64;
                }
                deflate
                    .write(frame, &mut buf)
                    .map_err(|e| LinkError::Store(e.to_string()))?;
            }
            counts.push((read.topic, entries));
        }
        let progressed = shared.session().end_round(round);
        if !buf.is_empty() || progressed {
            deflate
                .flush(&mut buf)
                .map_err(|e| LinkError::Store(e.to_string()))?;
            if !buf.is_empty() {
                send.write_all(&buf).await.map_err(closed)?;
                link.update(|s| s.bytes_out += buf.len() as u64);
                buf.clear();
                last_sent = Instant::now();
            }
            for (topic, entries) in counts {
                // The round may have passed the peer's own entries only, with no `Have`
                // to follow: the status shows where the topic stands now.
                let progress = shared.session().progress(&topic);
                let next = store.topic(&topic).map_or(Offset(0), |t| t.next);
                link.topic(&topic, true, |t| {
                    t.entries += entries;
                    if let Some(progress) = progress {
                        show(t, progress, next);
                    }
                });
            }
            continue;
        }
        // Nothing to send: wait for new entries, an acknowledgement or a pause change;
        // once the link has been quiet for `RELEASE_AFTER`, end the zstd frame and let go
        // of the compression context (the peer lets go of its own at the frame's end).
        let quiet = deflate.is_live().then(|| last_sent + RELEASE_AFTER);
        tokio::select! {
            r = wakes.changed() => if r.is_err() { return Err(LinkError::Store("store closed".into())) },
            _ = woken.changed() => {}
            _ = paused_here.changed() => {}
            () = sleep_until_some(quiet) => {
                deflate
                    .release(&mut buf)
                    .map_err(|e| LinkError::Store(e.to_string()))?;
                send.write_all(&buf).await.map_err(closed)?;
                link.update(|s| s.bytes_out += buf.len() as u64);
                buf = Vec::new();
                measured = None;
            }
        }
    }
}

/// How long a link's sender keeps its zstd context with nothing to send: past it, the
/// context (~100 KiB once used) is dropped, and the next entry starts a fresh zstd frame
/// (`bench wire` measures what that costs).
const RELEASE_AFTER: Duration = Duration::from_secs(30);

/// How long a sender uses one reading of QUIC's window and round trip.
const MEASURE_EVERY: Duration = Duration::from_millis(10);

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Receives the peer's entry streams: one from a peer of version 5, up to one per
/// priority class from a peer of version 6 or later (accepted as the peer opens them),
/// each read and committed on its own ([`receive_stream`]) so that an urgent entry never
/// waits behind a normal one's commit; they share the intake (the trust rule, the relay
/// quota) and the read-ahead budget ([`super::SessionSettings::queue_bytes`]: a stream
/// waits for room only while the others' entries are not yet committed).
async fn receive_loop(
    local: &Local,
    conn: &quinn::Connection,
    link: &Arc<PeerLink>,
    intake: Intake,
    control: &mpsc::Sender<Frame>,
    version: u32,
) -> Result<Never, LinkError> {
    let streams = match version >= 6 {
        true => Priority::ALL.len(),
        false => 1,
    };
    let budget = local.settings.queue_bytes.max(1);
    let room = Arc::new(Semaphore::new(budget));
    let intake = Arc::new(Mutex::new(intake));
    let mut receiving: JoinSet<Result<Never, LinkError>> = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_uni(), if receiving.len() < streams => {
                let recv = accepted?;
                let (local, link) = (local.clone(), link.clone());
                let (intake, control, room) = (intake.clone(), control.clone(), room.clone());
                receiving.spawn(async move {
                    receive_stream(&local, &link, recv, &intake, &control, (room, budget)).await
                });
            }
            Some(ended) = receiving.join_next() => {
                return match ended {
                    Ok(ended) => ended,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => Err(LinkError::Store("an entry stream's task was cancelled".into())),
                };
            }
        }
    }
}

/// Receives one entry stream: reads ahead, commits what is queued as one transaction,
/// acknowledges with `Have` when the intake says so.
///
/// What the peer can make this side hold is bounded: the read-ahead queue by the bytes
/// of the entries in it (`room`, of `budget` permits, shared by the peer's streams),
/// each frame by [`wire::MAX_FRAME`] and what it decodes into (`wire`'s limits). Every frame passes the intake (routes, the trust
/// rule) before it joins a transaction; a refusal ends the session with nothing of that
/// transaction stored. At the core, entries that are relayed to other edges pass the
/// edge's relay quota first.
async fn receive_stream(
    local: &Local,
    link: &PeerLink,
    mut recv: quinn::RecvStream,
    intake: &Mutex<Intake>,
    control: &mpsc::Sender<Frame>,
    (room, budget): (Arc<Semaphore>, usize),
) -> Result<Never, LinkError> {
    let store = &local.store;
    let peer = link.peer().clone();
    let intake = || intake.lock().unwrap_or_else(|p| p.into_inner());
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<(Frame, OwnedSemaphorePermit)>();
    let read = async {
        let mut inflate = Inflate::new().map_err(|e| LinkError::Store(e.to_string()))?;
        loop {
            let chunk = recv.read_chunk(64 << 10, true).await.map_err(|e| match e {
                // The connection ended (reset, timed out, closed): not the peer's fault.
                quinn::ReadError::ConnectionLost(e) => LinkError::Connection(e),
                other => LinkError::Protocol(other.to_string()),
            })?;
            let Some(chunk) = chunk else {
                return Err(LinkError::Protocol("entry stream ended".into()));
            };
            link.update(|s| s.bytes_in += chunk.bytes.len() as u64);
            inflate.push(&chunk.bytes);
            while let Some(frame) = inflate.next_frame()? {
                // Wait for room: a frame waits in the queue for its bytes (at least one
                // frame always fits), so the peer's reads stop when the committer lags.
                let cost = u32::try_from(frame_cost(&frame).min(budget)).unwrap_or(u32::MAX);
                let permit = room
                    .clone()
                    .acquire_many_owned(cost)
                    .await
                    .map_err(|_| LinkError::Store("committer gone".into()))?;
                if frames_tx.send((frame, permit)).is_err() {
                    return Err(LinkError::Store("committer gone".into()));
                }
            }
        }
    };
    let commit = async {
        while let Some(first) = frames_rx.recv().await {
            let mut txn = Txn::new();
            let mut gathering = Gathering::default();
            let mut next = Some(first);
            // Held until the transaction is committed: the queue's bytes are free only
            // once the entries are out of memory.
            let mut permits = Vec::new();
            while let Some((frame, permit)) = next.take().or_else(|| frames_rx.try_recv().ok()) {
                permits.push(permit);
                match intake().handle_frame(&mut gathering, frame)? {
                    Take::Insert {
                        topic,
                        skip,
                        entries,
                    } => {
                        if let Some((origin, through)) = skip {
                            txn.skip(&topic, &origin, Seq(through));
                        }
                        txn.insert(&topic, entries);
                    }
                    Take::Skip {
                        topic,
                        origin,
                        through,
                    } => {
                        txn.skip(&topic, &origin, Seq(through));
                    }
                    Take::Hold => {}
                }
                if gathering.full() {
                    break;
                }
            }
            let wait = intake().before_commit(&mut gathering, Instant::now());
            if !wait.is_zero() {
                link.update(|s| s.throttled += 1);
                tracing::debug!(%peer, ?wait, "relay quota: throttled");
                tokio::time::sleep(wait).await;
            }
            if txn.has_entries() && store.check_space().is_err() {
                // The peer's entries wait in the read-ahead queue, and then at the peer
                // (flow control), while the link stays up; the store logs the refusal.
                tracing::warn!(%peer, "the disk is full: entries from this peer wait for space");
                store.wait_for_space().await;
                tracing::info!(%peer, "the disk has room again: taking this peer's entries");
            }
            match store.commit(txn).await {
                Ok(_) => {}
                Err(
                    e
                    @ (WriteError::Poisoned(_) | WriteError::Closed | WriteError::DiskFull { .. }),
                ) => {
                    return Err(store_error(e));
                }
                Err(e) => return Err(LinkError::Protocol(e.to_string())),
            }
            drop(permits);
            let queued = !frames_rx.is_empty();
            let committed = intake().committed(gathering, Instant::now(), queued);
            for (topic, count) in committed.stored {
                link.topic(&topic, false, |t| {
                    t.entries += count;
                    t.up_to_date = Some(SystemTime::now());
                });
            }
            for topic in committed.acknowledge {
                if capped_by_backbone(local, &topic) {
                    continue; // `backbone_haves` acknowledges once the backbone holds them.
                }
                let have = machine::have(topic.clone(), &store.vector(&topic)?);
                if control.send(have).await.is_err() {
                    return Err(LinkError::Protocol("control queue closed".into()));
                }
            }
        }
        Err(LinkError::Protocol("entry stream ended".into()))
    };
    tokio::select! {
        r = read => r,
        r = commit => r,
    }
}

/// Whether this node acknowledges a peer's entries of `topic` only as far as the HQ's
/// backbone holds them: at a core on a backbone, for the topics the backbone carries.
fn capped_by_backbone(local: &Local, topic: &TopicName) -> bool {
    local.backbone.is_some()
        && local
            .store
            .topic(topic)
            .is_some_and(|t| crate::bridge::backbone::carries(&t.config))
}

/// At a core on the HQ's backbone: `Have` for each topic the peer sends, its own entries
/// counted only as far as the backbone holds them, sent again whenever that moves. So an
/// edge is never told that entries are safe which a core's death could lose.
async fn backbone_haves(
    store: &Store,
    backbone: &crate::bridge::Backbone,
    peer: &NodeName,
    topics: &[TopicName],
    control: &mpsc::Sender<Frame>,
) -> Result<Never, LinkError> {
    let mut moved = backbone.moved();
    let mut sent: std::collections::HashMap<TopicName, Seq> = std::collections::HashMap::new();
    loop {
        moved.borrow_and_update();
        for topic in topics {
            // Not known yet (NATS away): nothing is acknowledged until it is.
            let Some(held) = backbone.look_up(topic, peer).await else {
                continue;
            };
            let mut vector = store.vector(topic)?;
            let own = Seq(vector.get(peer).0.min(held));
            if sent.get(topic) == Some(&own) {
                continue;
            }
            vector.0.insert(peer.clone(), own);
            if control
                .send(machine::have(topic.clone(), &vector))
                .await
                .is_err()
            {
                return Err(LinkError::Protocol("control queue closed".into()));
            }
            sent.insert(topic.clone(), own);
        }
        // Moves when the backbone learns of new messages; the second bounds the wait
        // while a lookup is not possible.
        let _ = tokio::time::timeout(Duration::from_secs(1), moved.changed()).await;
    }
}

/// Shows where an outgoing topic stands, when its next offset is `next`.
fn show(status: &mut TopicStatus, progress: Progress, next: Offset) {
    status.backlog = progress.backlog(next);
    if progress.up_to_date(next) {
        status.up_to_date = Some(SystemTime::now());
    }
}

/// What a frame costs the read-ahead queue: its entries' sizes as the store counts them
/// (payload, key, headers with their overhead, identity), or a small fixed cost.
fn frame_cost(frame: &Frame) -> usize {
    const FIXED: usize = 64;
    match frame {
        Frame::Batch(batch) => FIXED + usize::try_from(batch.size()).unwrap_or(usize::MAX),
        _ => FIXED,
    }
}

/// Checks the peer's incarnation against the one this node recorded for its name
/// ([`Incarnations`]), and records a first or renewed one.
async fn check_incarnation(
    store: &Store,
    peer: &NodeName,
    greeted: &Greeted,
) -> Result<(), LinkError> {
    let table = TableName::new(INCARNATIONS).map_err(|e| LinkError::Store(e.to_string()))?;
    let recorded = store
        .doc(&table, peer.as_str())?
        .and_then(|doc| doc.get("incarnation")?.as_str().map(str::to_owned))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok());
    let mut held = 0;
    for topic in store.topics() {
        held = held.max(store.vector(&topic.config.name)?.get(peer).0);
    }
    if let Some(verdict) = greeted.check_incarnation(recorded, held)? {
        if verdict == Incarnations::Renewed {
            tracing::warn!(%peer, "the peer comes from a new store; none of the old one's entries are held here");
        }
        let presented = greeted.presented();
        let mut txn = Txn::new();
        let doc = serde_json::json!({ "incarnation": format!("{presented:016x}") });
        txn.put(&table, peer.as_str(), doc);
        store.commit(txn).await.map_err(store_error)?;
    }
    Ok(())
}

/// The table of peers' incarnations, by node name.
const INCARNATIONS: &str = "_incarnations";

/// The core's side of mirroring: each bidirectional stream the edge opens after the
/// control stream is a mirror run, served by its own task until the session ends.
async fn mirror_loop(
    local: &Local,
    conn: &quinn::Connection,
    peer: &NodeName,
) -> Result<Never, LinkError> {
    let mut runs = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(done) = runs.join_next(), if !runs.is_empty() => {
                if let Err(err) = done {
                    tracing::error!(%peer, %err, "a mirror stream task panicked");
                }
            }
            opened = conn.accept_bi() => {
                let (send, recv) = opened?;
                runs.spawn(super::mirror::serve_stream(local.mirror.clone(), peer.clone(), conn.clone(), send, recv));
            }
        }
    }
}

/// Stores cursors and acknowledged vectors when the session says (every
/// `persist_every`); updates the round trip.
async fn persist_loop(
    local: &Local,
    conn: &quinn::Connection,
    consumer: &ConsumerName,
    link: &PeerLink,
    shared: &Shared,
) -> Result<Never, LinkError> {
    let store = &local.store;
    let peer = link.peer();
    loop {
        let at = shared.session().poll_timeout();
        sleep_until_some(at).await;
        link.update(|s| s.rtt = Some(conn.rtt()));
        let due = shared.session().handle_timeout(Instant::now());
        for persist in due {
            let mut txn = Txn::new();
            txn.cursor(consumer, &persist.topic, persist.cursor);
            store.commit(txn).await.map_err(store_error)?;
            store
                .peer_acked(peer, &persist.topic, persist.acknowledged)
                .await
                .map_err(store_error)?;
            shared.session().persisted(&persist.topic, persist.cursor);
        }
    }
}

/// Reads the next whole frame from a control stream.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
) -> Result<Frame, LinkError> {
    loop {
        if let Some(frame) = reader.next_frame()? {
            return Ok(frame);
        }
        match recv.read_chunk(64 << 10, true).await {
            Ok(Some(chunk)) => reader.push(&chunk.bytes),
            Ok(None) => return Err(LinkError::Protocol("control stream ended".into())),
            Err(quinn::ReadError::ConnectionLost(e)) => return Err(LinkError::Connection(e)),
            Err(e) => return Err(LinkError::Protocol(e.to_string())),
        }
    }
}

fn closed(e: quinn::WriteError) -> LinkError {
    match e {
        quinn::WriteError::ConnectionLost(e) => LinkError::Connection(e),
        other => LinkError::Protocol(other.to_string()),
    }
}

fn store_error(e: WriteError) -> LinkError {
    LinkError::Store(e.to_string())
}
