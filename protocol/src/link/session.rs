//! One session: replication over one authenticated connection, until it ends.
//!
//! Data flow:
//! - Control stream (bidirectional, opened by the edge): each side sends `Hello`, checks
//!   the peer's, and works out the [`Routes`]; then it sends `Have` for every topic it
//!   takes, so that the peer knows where to start.
//! - Sender (this side's entry stream): per outgoing topic an [`Outbound`] plans frames
//!   from the local log; they go through one zstd stream, flushed whenever there is
//!   nothing more to send at once. QUIC flow control and an in-flight bound make a slow
//!   link hold the sender back; it waits on the store's change signal, never polls.
//! - Receiver (the peer's entry stream): frames are read ahead into a bounded queue; the
//!   committer takes everything queued as one transaction (one fsync), then answers with
//!   `Have` for each topic it touched: that is the acknowledgement.
//! - Control reader: `Have` moves the outbound cursors; `Pause` / `Resume` stop and start
//!   the sender. Every second, cursors and acknowledged vectors are stored, so that a
//!   restart resumes where the peer stands and retention knows what the peer holds.
//!
//! Anything from the peer that breaks the protocol ends the session with an application
//! close code and a reason; the node's other links go on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{LinkError, Local, PeerLink, RelayQuota};
use crate::entry::{NodeName, Offset, Scope, TopicName};
use crate::log::{ConsumerName, PeerConfig, Store, TableName, Txn, WriteError};
use crate::replication::{Inbound, Incarnations, Outbound, Routes};
use crate::wire::{self, Deflate, Frame, FrameReader, Hello, Inflate};

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
    // The hello timeout covers the control stream's opening too: an authenticated peer
    // that never opens it must not hold a session open.
    let timeout = local.settings.hello_timeout;
    let opened = if dialer {
        tokio::time::timeout(timeout, conn.open_bi()).await
    } else {
        tokio::time::timeout(timeout, conn.accept_bi()).await
    };
    let (mut control_send, mut control_recv) =
        opened.map_err(|_| LinkError::Timeout(timeout))??;
    // Traffic classes: quinn sends the stream with the highest priority first, so an
    // acknowledgement or a pause never waits behind a batch of entries.
    let _ = control_send.set_priority(PRIORITY_CONTROL);

    // Hello, both ways.
    let topics: Vec<(TopicName, Scope)> = store
        .topics()
        .into_iter()
        .filter(|t| t.config.scope != Scope::Local)
        .map(|t| (t.config.name, t.config.scope))
        .collect();
    // At the core, the topics this edge may not write (the core's config); an edge
    // closes none to the core.
    let closed_topics = if local.core {
        local.settings.writers.closed_to(&peer)
    } else {
        Vec::new()
    };
    let hello = Hello {
        version: wire::VERSION,
        node: store.node().clone(),
        incarnation: store.incarnation(),
        core: local.core,
        topics: topics.clone(),
        closed: closed_topics.clone(),
    };
    let mut bytes = Vec::new();
    wire::encode(&Frame::Hello(hello), &mut bytes);
    control_send.write_all(&bytes).await.map_err(closed)?;
    let mut control = FrameReader::default();
    let theirs =
        match tokio::time::timeout(timeout, read_frame(&mut control_recv, &mut control)).await {
            Err(_) => return Err(LinkError::Timeout(timeout)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Frame::Hello(hello))) => hello,
            Ok(Ok(other)) => {
                return Err(LinkError::Protocol(format!(
                    "expected hello, got {}",
                    name(&other)
                )));
            }
        };
    if theirs.version != wire::VERSION {
        return Err(LinkError::Version(theirs.version));
    }
    if theirs.node != peer {
        return Err(LinkError::Protocol(format!(
            "hello names {}, the certificate {peer}",
            theirs.node
        )));
    }
    if theirs.core == local.core {
        let role = if local.core { "core" } else { "edge" };
        return Err(LinkError::Protocol(format!("both ends are a {role}")));
    }
    check_incarnation(store, &peer, theirs.incarnation).await?;
    let routes = Routes::between(local.core, &topics, &closed_topics, &theirs);
    let out_config = PeerConfig {
        name: peer.clone(),
        core: theirs.core,
        topics: routes.out.clone(),
    };
    store.set_peer(out_config).await.map_err(store_error)?;
    link.take_over(conn);
    link.set_connected(true);
    link.set_session(Some(conn), None);
    tracing::info!(%peer, out = routes.out.len(), input = routes.input.len(), "link up");

    // Where each outgoing topic starts: the stored cursor, unless the peer lost data.
    let consumer =
        ConsumerName::new(format!("link.{peer}")).map_err(|e| LinkError::Store(e.to_string()))?;
    let mut outbound = HashMap::new();
    for topic in &routes.out {
        let start = store.cursor(&consumer, topic)?;
        // The trust rule: an edge offers the core only its own origin.
        let only = (!local.core).then(|| store.node().clone());
        outbound.insert(
            topic.clone(),
            Outbound::new(topic.clone(), peer.clone(), theirs.core, only, start),
        );
        link.topic(topic, true, |_| {});
    }
    for topic in &routes.input {
        link.topic(topic, false, |_| {});
    }
    let shared = Arc::new(Shared {
        outbound: Mutex::new(outbound),
        wake: Notify::new(),
        paused_by_peer: watch::Sender::new(false),
    });

    // Control writer: every frame for the control stream goes through one queue.
    let (control_tx, mut control_rx) = mpsc::channel::<Frame>(1024);
    for topic in &routes.input {
        let vector = wire_vector(&store.vector(topic)?);
        let _ = control_tx.try_send(Frame::Have {
            topic: topic.clone(),
            vector,
        });
    }
    let writer = async {
        let mut buf = Vec::new();
        while let Some(frame) = control_rx.recv().await {
            buf.clear();
            wire::encode(&frame, &mut buf);
            while let Ok(more) = control_rx.try_recv() {
                wire::encode(&more, &mut buf);
            }
            control_send.write_all(&buf).await.map_err(closed)?;
        }
        Err::<Never, _>(LinkError::Protocol("control queue closed".into()))
    };

    let reader = control_loop(store, &peer, link, &shared, &routes, control_recv, control);
    let pause = pause_loop(link, &control_tx);
    let sender = send_loop(local, conn, link, &shared, &routes);
    let receiver = receive_loop(local, conn, link, &routes, theirs.core, &control_tx);
    let persist = persist_loop(local, conn, &consumer, link, &shared);
    let mirrors = mirror_loop(local, conn, &peer);
    tokio::select! {
        r = mirrors, if !dialer => r,
        r = writer => r,
        r = reader => r,
        r = pause => r,
        r = sender => r,
        r = receiver => r,
        r = persist => r,
        e = conn.closed() => Err(LinkError::Connection(e)),
    }
}

/// The least the sender may have unacknowledged, whatever the congestion window says:
/// enough for a burst of small entries on a link that has just started.
const MIN_IN_FLIGHT_BYTES: u64 = 64 << 10;

/// The least entry bytes handed to QUIC in one compressed piece (see [`send_loop`]).
const MIN_WRITE_BYTES: u64 = 16 << 10;

/// A piece may always hold what the link sends in this long (see [`send_loop`]).
const PIECE_TIME: Duration = Duration::from_millis(50);

/// Stream priorities (higher goes first): control, then entries; mirror transfers come
/// last, below entries ([`super::PRIORITY_MIRROR`]).
const PRIORITY_CONTROL: i32 = 1;
const PRIORITY_ENTRIES: i32 = 0;

/// Session state the loops share.
struct Shared {
    outbound: Mutex<HashMap<TopicName, Outbound>>,
    /// Wakes the sender: an acknowledgement freed room, or a pause changed.
    wake: Notify,
    paused_by_peer: watch::Sender<bool>,
}

impl Shared {
    fn outbound(&self) -> std::sync::MutexGuard<'_, HashMap<TopicName, Outbound>> {
        self.outbound.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the control stream: `Have` moves cursors, `Pause` / `Resume` gate the sender.
async fn control_loop(
    store: &Store,
    peer: &NodeName,
    link: &PeerLink,
    shared: &Shared,
    routes: &Routes,
    mut recv: quinn::RecvStream,
    mut reader: FrameReader,
) -> Result<Never, LinkError> {
    loop {
        match read_frame(&mut recv, &mut reader).await? {
            Frame::Have { topic, vector } => {
                if !routes.out.contains(&topic) {
                    return Err(LinkError::Protocol(format!(
                        "have for topic {topic}, which this node does not send"
                    )));
                }
                let held = store.vector(&topic)?;
                let mut outbound = shared.outbound();
                let Some(out) = outbound.get_mut(&topic) else {
                    continue;
                };
                if !out.ready() && regressed(store, peer, &topic, &vector)? {
                    tracing::warn!(%peer, %topic, "peer holds less than it acknowledged before: sending from the start");
                    *out = out.restart(Offset(0));
                }
                // Only origins this node holds count: made-up ones cost nothing.
                out.have(&vector, |origin| held.0.contains_key(origin));
                let (cursor, position) = (out.cursor(), out.position());
                let next = store.topic(&topic).map_or(0, |t| t.next.0);
                let idle = out.in_flight() == 0 && position.0 >= next;
                drop(outbound);
                link.topic(&topic, true, |t| {
                    t.backlog = next.saturating_sub(cursor.0);
                    if idle {
                        t.up_to_date = Some(SystemTime::now());
                    }
                });
                shared.wake.notify_one();
            }
            Frame::Pause => {
                shared.paused_by_peer.send_replace(true);
                link.update(|s| s.paused_by_peer = true);
                tracing::info!(%peer, "peer paused the link");
            }
            Frame::Resume => {
                shared.paused_by_peer.send_replace(false);
                link.update(|s| s.paused_by_peer = false);
                shared.wake.notify_one();
                tracing::info!(%peer, "peer resumed the link");
            }
            other => {
                return Err(LinkError::Protocol(format!(
                    "{} on the control stream",
                    name(&other)
                )));
            }
        }
    }
}

/// Whether the peer now holds less of `topic` than it once acknowledged (it lost data).
fn regressed(
    store: &Store,
    peer: &NodeName,
    topic: &TopicName,
    have: &[(NodeName, u64)],
) -> Result<bool, LinkError> {
    let acked = store.peer_vector(peer, topic)?;
    let held: BTreeMap<&NodeName, u64> = have.iter().map(|(o, s)| (o, *s)).collect();
    Ok(acked
        .0
        .iter()
        .any(|(origin, seq)| held.get(origin).copied().unwrap_or(0) < seq.0))
}

/// Tells the peer when an operator pauses or resumes the link here.
async fn pause_loop(link: &PeerLink, control: &mpsc::Sender<Frame>) -> Result<Never, LinkError> {
    let mut paused = link.paused_here.subscribe();
    let mut told = false;
    loop {
        let now = *paused.borrow_and_update();
        if now != told {
            let frame = if now { Frame::Pause } else { Frame::Resume };
            control
                .send(frame)
                .await
                .map_err(|_| LinkError::Protocol("control queue closed".into()))?;
            told = now;
        }
        if paused.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sends entries: reads each outgoing topic from its position, plans, compresses, writes.
async fn send_loop(
    local: &Local,
    conn: &quinn::Connection,
    link: &PeerLink,
    shared: &Shared,
    routes: &Routes,
) -> Result<Never, LinkError> {
    let settings = &local.settings;
    let store = &local.store;
    let mut send = conn.open_uni().await?;
    let _ = send.set_priority(PRIORITY_ENTRIES);
    let mut deflate =
        Deflate::new(settings.zstd_level).map_err(|e| LinkError::Store(e.to_string()))?;
    let mut changes = store.changes();
    let mut paused_here = link.paused_here.subscribe();
    let mut paused_by_peer = shared.paused_by_peer.subscribe();
    let mut buf = Vec::new();
    let mut turn = 0;
    loop {
        changes.borrow_and_update();
        let paused = *paused_here.borrow_and_update() || *paused_by_peer.borrow_and_update();
        let mut progressed = false;
        let mut counts: Vec<(TopicName, u64)> = Vec::new();
        if !paused {
            // Sized to the link: what is sent and not yet acknowledged stays within four
            // congestion windows (acknowledgements come a round trip plus a commit after
            // the data; two windows cost a quarter of satcom's goodput), so that little waits in QUIC's buffers and a new
            // entry (of another topic, or from the other side) never queues behind a
            // backlog of megabytes on a slow link.
            let path = conn.stats().path;
            let cwnd = path.cwnd;
            let window = (4 * cwnd).max(MIN_IN_FLIGHT_BYTES);
            // Each write is flushed, so the peer can decompress, store and acknowledge
            // it once it has all of it. Written in pieces of at most half a window, the
            // entries are acknowledged within about a round trip; in one piece of
            // `batch_bytes`, a link in slow start (a few packets per round trip) carried
            // it over several round trips with nothing acknowledged, the window above
            // filled, and the sender stalled: satcom's catch-up lost ~5 s of its ramp.
            // Where half a window is far less than `PIECE_TIME` of sending (loopback, a
            // LAN), pieces that small only cost work: a piece is the larger of the two.
            let rtt = path.rtt.max(Duration::from_millis(1));
            let timely = u64::try_from(u128::from(cwnd) * PIECE_TIME.as_micros() / rtt.as_micros())
                .unwrap_or(u64::MAX);
            let piece = (cwnd / 2)
                .max(timely)
                .clamp(MIN_WRITE_BYTES, settings.batch_bytes as u64);
            let mut gathered: u64 = 0;
            let mut unacknowledged: u64 = shared
                .outbound()
                .values()
                .map(Outbound::in_flight_bytes)
                .sum();
            let n = routes.out.len();
            for i in 0..n {
                if unacknowledged >= window {
                    break;
                }
                let topic = &routes.out[(turn + i) % n.max(1)];
                let (position, room) = {
                    let outbound = shared.outbound();
                    let Some(out) = outbound.get(topic) else {
                        continue;
                    };
                    if !out.ready() {
                        continue;
                    }
                    (
                        out.position(),
                        settings.max_in_flight.saturating_sub(out.in_flight()),
                    )
                };
                if room == 0 {
                    continue;
                }
                let mut records = store.read(topic, position, settings.batch_entries.min(room))?;
                if records.is_empty() {
                    continue;
                }
                // Keep to the window and the piece (at least one entry, so that a large
                // one still goes).
                let mut fits = 0;
                for r in &records {
                    let size = r.entry.size();
                    if fits > 0 && (unacknowledged + size > window || gathered + size > piece) {
                        break;
                    }
                    unacknowledged += size;
                    gathered += size;
                    fits += 1;
                }
                records.truncate(fits);
                progressed = true;
                let frames = match shared.outbound().get_mut(topic) {
                    Some(out) => out.plan(records),
                    None => continue,
                };
                let mut entries = 0;
                for frame in &frames {
                    if let Frame::Batch(b) = frame {
                        entries += b.len() as u64;
                    }
                    deflate
                        .write(frame, &mut buf)
                        .map_err(|e| LinkError::Store(e.to_string()))?;
                }
                counts.push((topic.clone(), entries));
                if buf.len() >= settings.batch_bytes || gathered >= piece {
                    break;
                }
            }
            turn = turn.wrapping_add(1);
        }
        if !buf.is_empty() || progressed {
            deflate
                .flush(&mut buf)
                .map_err(|e| LinkError::Store(e.to_string()))?;
            if !buf.is_empty() {
                send.write_all(&buf).await.map_err(closed)?;
                link.update(|s| s.bytes_out += buf.len() as u64);
                buf.clear();
            }
            for (topic, entries) in counts {
                link.topic(&topic, true, |t| t.entries += entries);
            }
            continue;
        }
        // Nothing to send: wait for new entries, an acknowledgement or a pause change.
        tokio::select! {
            r = changes.changed() => if r.is_err() { return Err(LinkError::Store("store closed".into())) },
            () = shared.wake.notified() => {}
            _ = paused_here.changed() => {}
            _ = paused_by_peer.changed() => {}
        }
    }
}

/// Receives the peer's entry stream: reads ahead, commits what is queued as one
/// transaction, acknowledges with `Have`.
///
/// What the peer can make this side hold is bounded: the read-ahead queue by the bytes
/// of the entries in it ([`SessionSettings::queue_bytes`]), each frame by
/// [`wire::MAX_FRAME`] and what it decodes into (`wire`'s limits). Every frame passes the
/// trust rule ([`Inbound`]) before it joins a transaction; a refusal ends the session as
/// `forged-origin` with nothing of that transaction stored. At the core, entries that
/// are relayed to other edges pass the edge's relay quota ([`RelayQuota`]) first.
async fn receive_loop(
    local: &Local,
    conn: &quinn::Connection,
    link: &PeerLink,
    routes: &Routes,
    from_core: bool,
    control: &mpsc::Sender<Frame>,
) -> Result<Never, LinkError> {
    let store = &local.store;
    let peer = link.peer().clone();
    let mut recv = conn.accept_uni().await?;
    let budget = local.settings.queue_bytes.max(1);
    let room = Arc::new(Semaphore::new(budget));
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
        let mut inbound = Inbound::new(peer.clone(), from_core);
        let mut quota = RelayQuota::new(local.settings.relay, Instant::now());
        let mut unacknowledged: Vec<TopicName> = Vec::new();
        let mut last_have = Instant::now();
        while let Some(first) = frames_rx.recv().await {
            let mut txn = Txn::new();
            let mut touched: Vec<TopicName> = Vec::new();
            let mut stored: HashMap<TopicName, u64> = HashMap::new();
            let mut next = Some(first);
            let mut entries = 0;
            let mut relayed = (0u64, 0u64);
            // Held until the transaction is committed: the queue's bytes are free only
            // once the entries are out of memory.
            let mut permits = Vec::new();
            while let Some((frame, permit)) = next.take().or_else(|| frames_rx.try_recv().ok()) {
                permits.push(permit);
                let topic = match &frame {
                    Frame::Batch(b) => b.topic.clone(),
                    Frame::Skip { topic, .. } => topic.clone(),
                    other => {
                        return Err(LinkError::Protocol(format!(
                            "{} on the entry stream",
                            name(other)
                        )));
                    }
                };
                if !routes.input.contains(&topic) {
                    return Err(LinkError::Protocol(format!(
                        "entries of topic {topic}, which this node does not take from the peer"
                    )));
                }
                match frame {
                    Frame::Batch(batch) => {
                        let list = batch.into_entries()?;
                        if let Some(through) = inbound.batch(&topic, &list).map_err(forged)? {
                            txn.skip(&topic, &peer, crate::entry::Seq(through));
                        }
                        if local.core && local.settings.relay.is_some() && local.relays(&topic) {
                            // What goes on to other edges: all but entries for the core.
                            let onward =
                                list.iter().filter(|e| e.to.as_ref() != Some(store.node()));
                            for e in onward {
                                relayed.0 += 1;
                                relayed.1 += e.size();
                            }
                        }
                        entries += list.len();
                        *stored.entry(topic.clone()).or_default() += list.len() as u64;
                        txn.insert(&topic, list);
                    }
                    Frame::Skip {
                        origin, through, ..
                    } => {
                        if let Some(through) =
                            inbound.skip(&topic, &origin, through).map_err(forged)?
                        {
                            txn.skip(&topic, &origin, crate::entry::Seq(through));
                        }
                    }
                    _ => {}
                }
                if !touched.contains(&topic) {
                    touched.push(topic);
                }
                if entries >= 8192 {
                    break;
                }
            }
            // An edge past its relay quota waits here: its stream stops being read, so
            // its own sender slows down and the backlog stays on its disk, not ours.
            let wait = quota.take(relayed.0, relayed.1, Instant::now());
            if !wait.is_zero() {
                link.update(|s| s.throttled += 1);
                tracing::debug!(%peer, ?wait, "relay quota: throttled");
                tokio::time::sleep(wait).await;
            }
            match store.commit(txn).await {
                Ok(_) => {}
                Err(e @ (WriteError::Poisoned(_) | WriteError::Closed)) => {
                    return Err(store_error(e));
                }
                Err(e) => return Err(LinkError::Protocol(e.to_string())),
            }
            drop(permits);
            for topic in touched {
                let count = stored.get(&topic).copied().unwrap_or(0);
                link.topic(&topic, false, |t| {
                    t.entries += count;
                    t.up_to_date = Some(SystemTime::now());
                });
                if !unacknowledged.contains(&topic) {
                    unacknowledged.push(topic);
                }
            }
            // Acknowledge at once when the stream goes quiet, and at most every
            // `have_every` while it streams: one `Have` per commit would cost a packet
            // back per commit during a bulk transfer.
            if frames_rx.is_empty() || last_have.elapsed() >= local.settings.have_every {
                for topic in unacknowledged.drain(..) {
                    let vector = wire_vector(&store.vector(&topic)?);
                    if control.send(Frame::Have { topic, vector }).await.is_err() {
                        return Err(LinkError::Protocol("control queue closed".into()));
                    }
                }
                last_have = Instant::now();
            }
        }
        Err(LinkError::Protocol("entry stream ended".into()))
    };
    tokio::select! {
        r = read => r,
        r = commit => r,
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

fn forged(e: crate::replication::Forged) -> LinkError {
    LinkError::Forged(e.0)
}

/// Checks the peer's incarnation against the one this node recorded for its name
/// ([`Incarnations`]), and records a first or renewed one.
async fn check_incarnation(
    store: &Store,
    peer: &NodeName,
    presented: u64,
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
    let verdict = Incarnations::check(recorded, presented, held).map_err(LinkError::Incarnation)?;
    if recorded != Some(presented) {
        if verdict == Incarnations::Renewed {
            tracing::warn!(%peer, "the peer comes from a new store; none of the old one's entries are held here");
        }
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

/// Stores cursors and acknowledged vectors every `persist_every`; updates the round trip.
async fn persist_loop(
    local: &Local,
    conn: &quinn::Connection,
    consumer: &ConsumerName,
    link: &PeerLink,
    shared: &Shared,
) -> Result<Never, LinkError> {
    let store = &local.store;
    let peer = link.peer();
    let mut stored: HashMap<TopicName, Offset> = HashMap::new();
    let mut tick = tokio::time::interval(local.settings.persist_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        link.update(|s| s.rtt = Some(conn.rtt()));
        let snapshot: Vec<_> = shared
            .outbound()
            .values()
            .filter(|o| o.ready())
            .map(|o| (o.topic().clone(), o.cursor(), o.acknowledged()))
            .collect();
        for (topic, cursor, acknowledged) in snapshot {
            if stored.get(&topic) == Some(&cursor) {
                continue;
            }
            let mut txn = Txn::new();
            txn.cursor(consumer, &topic, cursor);
            store.commit(txn).await.map_err(store_error)?;
            store
                .peer_acked(peer, &topic, acknowledged)
                .await
                .map_err(store_error)?;
            stored.insert(topic, cursor);
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

fn wire_vector(vector: &crate::log::VersionVector) -> Vec<(NodeName, u64)> {
    vector.0.iter().map(|(o, s)| (o.clone(), s.0)).collect()
}

fn name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello(_) => "hello",
        Frame::Have { .. } => "have",
        Frame::Batch(_) => "batch",
        Frame::Skip { .. } => "skip",
        Frame::Pause => "pause",
        Frame::Resume => "resume",
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
