//! Volume mirroring over the link: the third traffic class.
//!
//! - **Stream.** Each mirror run is one bidirectional QUIC stream opened by the edge on
//!   the session's connection, once the session is up (after the hellos, so the control
//!   stream is always the first one). It runs at [`PRIORITY_MIRROR`], below entries (0)
//!   and control (1): quinn fills each packet from the highest-priority stream with data,
//!   so a mirror only ever uses what entries and control leave of the sender; its pacing
//!   keeps what it has queued further on small. Frames are
//!   [`MirrorFrame`]s (numbered in `machines`' `mirror/wire.rs`).
//! - **Edge** ([`Mirror`]): runs only when an operator started it (a marker file,
//!   `<dir>/mirror.run`, keeps that wish across restarts). A run sends `Start` with the
//!   roots it holds, assembles and checks the manifest (full or a delta), plans against
//!   the current version and the spool ([`ReplicaVolume::begin`], or the stored plan when
//!   it resumes the same target), then asks for chunks (`Fetch`, by position in the
//!   target, see [`ChunkTable`]) in requests of about [`MirrorSettings::request_bytes`],
//!   at most [`MirrorSettings::in_flight`] requests outstanding, checks each chunk
//!   (`Data`) against the hash it asked for, spools it, syncs the spool after each
//!   request, and applies. An appended file's extended last chunk, whose start the edge
//!   holds (the plan's [`Prefix`](crate::mirror::Prefix)), is asked for from that offset
//!   on (`FetchFrom`) and rebuilt ([`ReplicaVolume::receive_rest`]); if the rebuilt
//!   chunk fails its hash, it is asked for again whole. It tells the core how many bytes
//!   it has read (`Received`) every few kilobytes (the core says how many:
//!   `ReportEvery`) and when the stream goes quiet. A chunk that fails its hash is asked
//!   for again (up to [`MAX_REFETCH`] times); a `Gone` chunk (its file changed at the
//!   core) makes the run re-plan against a fresh manifest. A lost connection interrupts
//!   the run; it resumes on the next session, fetching only what the spool lacks.
//!   [`Mirror::stop`] interrupts it until [`Mirror::start`].
//! - **Core** (`serve_stream`, one task per stream, spawned by the session with the
//!   connection): the one [`SourceVolume`] of the node sits behind a mutex, used only on
//!   blocking threads (`manifest()` re-hashes what changed; `read_chunk_of` reads and
//!   checks, first in the manifest the run fetches). The edge's frames are read by a task
//!   of their own, so its reports come in while chunks go out. Chunks go out one at a
//!   time, in the order asked (read whole and checked, then sent from the offset asked
//!   for, if any), each read when the previous one is written, in slices
//!   paced by [`Pace`] (`machines`' `mirror/pace.rs`): at about the rate the path carries with a
//!   queue of [`TARGET_QUEUE`](crate::mirror::TARGET_QUEUE), measured from the
//!   connection's round trips, so that entries behind a mirror wait little in a modem's
//!   queue; and through an optional token bucket (the lower of the core's and the edge's
//!   caps).
//! - A mirror error never ends the session: the stream is reset and entries go on.
//!
//! The decisions of both ends are state machines in `machines::mirror`, driven here:
//! [`Fetch`] and [`Target`] at the edge (which chunks to ask for, what each frame means,
//! refetch, re-plan), [`Serve`] at the core (what the edge may ask, which chunk next, in
//! what slices, how fast). This module keeps the streams, the volumes' blocking work,
//! the timers and the status.
//!
//! `bytes_on_link` in the status counts the mirror stream's bytes both ways (frames),
//! not QUIC's own overhead. `bytes_arrived` counts the chunk bytes of `Data` frames as
//! the edge reads them off the stream, before a frame is whole ([`DataMeter`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::PeerLink;
use crate::entry::NodeName;
use crate::mirror::{
    Again, Arrived, Asked, ChunkParams, ChunkTable, Fetch, Hash, Limits, MAX_REPLANS, MAX_REPORT,
    MIN_REPORT, Manifest, ManifestAssembly, MirrorFrame, MirrorStatus, Pace, PathNow, Plan, Ready,
    ReceiveError, ReplicaError, ReplicaVolume, RunFailed, Serve, Snapshot, SourceError,
    SourceVolume, SpoolError, Target, Verdict, manifest_frames,
};
use crate::wire::{self, FrameReader};

/// The mirror stream's QUIC priority: below entries (0) and control (1).
pub const PRIORITY_MIRROR: i32 = -1;

pub use machines::mirror::MAX_REFETCH;

/// Application error code of a mirror stream reset (the reason is logged at each end).
const RESET_CODE: u32 = 1;

/// The core's mission volume, served to its edges' mirrors.
#[derive(Debug, Clone)]
pub struct MirrorSource {
    volume: Arc<Mutex<SourceVolume>>,
    max_rate: Option<u64>,
    corrupt: Arc<AtomicU32>,
}

impl MirrorSource {
    /// Serves `volume`, sending chunk bytes at most at `max_rate` bytes per second (the
    /// edge may ask for less).
    pub fn new(volume: SourceVolume, max_rate: Option<u64>) -> MirrorSource {
        MirrorSource {
            volume: Arc::new(Mutex::new(volume)),
            max_rate: max_rate.filter(|r| *r > 0),
            corrupt: Arc::default(),
        }
    }

    /// Watches and scans the volume at `root` (on a blocking thread), then serves it.
    pub async fn open(root: PathBuf, max_rate: Option<u64>) -> Result<MirrorSource, SourceError> {
        let opened =
            tokio::task::spawn_blocking(move || SourceVolume::open(root, ChunkParams::default()))
                .await
                .map_err(|e| SourceError::Root {
                    path: PathBuf::new(),
                    source: io::Error::other(e.to_string()),
                })??;
        Ok(MirrorSource::new(opened, max_rate))
    }

    /// For tests of the edge's checks: the next `chunks` chunks served have one byte
    /// flipped (after the core checked them), as a faulty path would deliver them.
    pub fn corrupt_next(&self, chunks: u32) {
        self.corrupt.store(chunks, Ordering::SeqCst);
    }

    /// The current manifest, brought up to date with what the watcher saw.
    pub async fn manifest(&self) -> Result<Arc<Snapshot>, SourceError> {
        let volume = self.volume.clone();
        tokio::task::spawn_blocking(move || MirrorSource::lock(&volume).manifest())
            .await
            .map_err(|e| SourceError::Root {
                path: PathBuf::new(),
                source: io::Error::other(e.to_string()),
            })?
    }

    /// Waits until the watched manifest holds the file `path` with BLAKE3 content
    /// `hash` (hex), waking on the watcher's events: a service that wrote a file into the
    /// volume calls it before telling an edge to mirror it. Gives up after `within`.
    pub async fn holds(&self, path: &str, hash: &str, within: Duration) -> Result<(), String> {
        let volume = self.volume.clone();
        let (path, hash) = (path.to_owned(), hash.to_owned());
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + within;
            loop {
                let snapshot = MirrorSource::lock(&volume)
                    .manifest()
                    .map_err(|e| e.to_string())?;
                let held = snapshot.manifest.entries.iter().any(|e| {
                    e.path.as_str() == path
                        && matches!(&e.node, crate::mirror::Node::File(f) if f.hash().to_string() == hash)
                });
                if held {
                    return Ok(());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("the mission volume's manifest still lacks {path}"));
                }
                MirrorSource::lock(&volume).wait_change(left.min(Duration::from_millis(100)));
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// For tests and tools after writing into the volume: waits until the watched
    /// manifest equals a fresh walk of the volume (the watcher has seen every change),
    /// waking on the watcher's events; returns it, or the last difference after `within`.
    pub async fn settled(&self, within: Duration) -> Result<Arc<Snapshot>, String> {
        let volume = self.volume.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + within;
            let root = MirrorSource::lock(&volume).root().to_path_buf();
            loop {
                let watched = MirrorSource::lock(&volume)
                    .manifest()
                    .map_err(|e| e.to_string())?;
                let mut fresh = SourceVolume::unwatched(&root, watched.manifest.chunking)
                    .map_err(|e| e.to_string())?;
                let walked = fresh.manifest().map_err(|e| e.to_string())?;
                if walked.manifest.entries == watched.manifest.entries {
                    return Ok(watched);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!(
                        "the watched manifest of {} still differs from the volume",
                        root.display()
                    ));
                }
                MirrorSource::lock(&volume).wait_change(left.min(Duration::from_millis(100)));
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn lock(volume: &Mutex<SourceVolume>) -> MutexGuard<'_, SourceVolume> {
        volume.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves one mirror stream of `peer` on `conn` until the edge ends it; an error resets
/// it.
pub(super) async fn serve_stream(
    source: Option<MirrorSource>,
    peer: NodeName,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let _ = send.set_priority(PRIORITY_MIRROR);
    let result = match &source {
        Some(source) => serve(source, &conn, &mut send, recv).await,
        None => {
            let refused = MirrorFrame::Refused {
                reason: "this core has no mirror volume".into(),
            };
            write(&mut send, &refused).await.map(drop)
        }
    };
    match result {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(RunError::Link(why)) => tracing::debug!(%peer, %why, "mirror stream cut"),
        Err(RunError::Failed(why) | RunError::Stopped(why)) => {
            tracing::warn!(%peer, %why, "mirror stream ended");
            let _ = send.reset(quinn::VarInt::from_u32(RESET_CODE));
        }
    }
}

/// The edge's frames, read by their own task so that its `Received` reports come in
/// while chunks go out: `Ok(None)` when the edge finished the stream.
type Incoming = Result<Option<MirrorFrame>, RunError>;

async fn read_frames(mut recv: quinn::RecvStream, tx: tokio::sync::mpsc::Sender<Incoming>) {
    let mut reader = FrameReader::default();
    loop {
        let frame = read(&mut recv, &mut reader, &mut 0).await;
        let end = !matches!(frame, Ok(Some(_)));
        if tx.send(frame).await.is_err() || end {
            return;
        }
    }
}

/// The core's side of one run: the stream, the source, the manifest last sent, and the
/// state machine that decides ([`Serve`]).
struct Serving<'a> {
    source: &'a MirrorSource,
    conn: &'a quinn::Connection,
    send: &'a mut quinn::SendStream,
    serve: Serve,
    /// The manifest last sent (what `Fetch` positions refer to).
    target: Option<Arc<Snapshot>>,
}

async fn serve(
    source: &MirrorSource,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<(), RunError> {
    let (tx, mut frames) = tokio::sync::mpsc::channel(16);
    let _reader = AbortOnDrop(tokio::spawn(read_frames(recv, tx)));
    let mut serving = Serving {
        source,
        conn,
        send,
        serve: Serve::new(source.max_rate),
        target: None,
    };
    loop {
        let delay = serving.serve.poll_timeout(Instant::now());
        let frame = match delay {
            // Due now (or within the timer's resolution: the pacing clock keeps the
            // credit): take what the edge sent meanwhile without waiting, else send.
            Some(d) if d < Duration::from_millis(1) => match frames.try_recv() {
                Ok(frame) => frame,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    serving.send_some().await?;
                    continue;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    return Err(RunError::Failed("the mirror stream's reader ended".into()));
                }
            },
            _ => tokio::select! {
                biased;
                frame = frames.recv() => frame.ok_or_else(|| RunError::Failed("the mirror stream's reader ended".into()))?,
                () = tokio::time::sleep(delay.unwrap_or_default()), if delay.is_some() => {
                    serving.send_some().await?;
                    continue;
                }
            },
        };
        let Some(frame) = frame? else {
            return Ok(());
        };
        if !serving.take(frame).await? {
            return Ok(());
        }
    }
}

impl Serving<'_> {
    /// Takes one frame from the edge; `false` when the edge ended the run.
    async fn take(&mut self, frame: MirrorFrame) -> Result<bool, RunError> {
        let conn = self.conn;
        let path = || {
            let stats = conn.stats();
            PathNow {
                smoothed: stats.path.rtt,
                min: stats.path.min_rtt,
                lost_packets: stats.path.lost_packets,
            }
        };
        let sent = self.target.as_ref().map(|s| &s.manifest);
        let asked = self
            .serve
            .handle_frame(frame, sent, path, Instant::now())
            .map_err(failed)?;
        let (have_root, target_root) = match asked {
            Asked::Done => return Ok(false),
            Asked::Nothing => return Ok(true),
            Asked::Start {
                have_root,
                target_root,
            } => (have_root, target_root),
        };
        let volume = self.source.volume.clone();
        let planned = tokio::task::spawn_blocking(move || {
            let mut volume = MirrorSource::lock(&volume);
            let snapshot = volume.manifest().map_err(|e| e.to_string())?;
            // The closest manifest the edge holds: the target it is resuming, else its
            // current version; none (a core restart forgets them): all of it.
            let base = target_root
                .and_then(|r| volume.snapshot(&r))
                .or_else(|| volume.snapshot(&have_root));
            let frames = manifest_frames(&snapshot.manifest, base.as_ref().map(|b| &b.manifest));
            let table = ChunkTable::new(&snapshot.manifest);
            Ok::<_, String>((snapshot, table, frames))
        })
        .await
        .map_err(|e| RunError::Failed(e.to_string()))?;
        let frames = match planned {
            Ok((snapshot, table, frames)) => {
                self.target = Some(snapshot);
                self.serve.started(table);
                frames
            }
            Err(reason) => vec![MirrorFrame::Refused { reason }],
        };
        for frame in &frames {
            self.write_frame(frame).await?;
        }
        Ok(true)
    }

    /// Writes the next slice of chunk bytes (reading the next chunk if none is being
    /// written), as much as the pacing allows.
    async fn send_some(&mut self) -> Result<(), RunError> {
        if let Some(report) = self.serve.poll_report() {
            self.write_frame(&report).await?;
        }
        if let Some((chunk, offset)) = self.serve.next_chunk() {
            let volume = self.source.volume.clone();
            let pinned = self.target.clone();
            let read = tokio::task::spawn_blocking(move || {
                MirrorSource::lock(&volume).read_chunk_of(pinned.as_deref(), &chunk.hash)
            })
            .await
            .map_err(|e| RunError::Failed(e.to_string()))?;
            let read = match read {
                Ok(mut bytes) => {
                    let flip =
                        self.source
                            .corrupt
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                    // The flipped byte must be one the edge receives: past the offset.
                    if flip.is_ok()
                        && let Some(b) = bytes.get_mut(offset as usize)
                    {
                        *b ^= 0xff;
                    }
                    Some(bytes)
                }
                Err(err) => {
                    tracing::info!(%err, "chunk gone: the edge re-plans");
                    None
                }
            };
            match self.serve.handle_chunk(chunk, offset, read, Instant::now()) {
                Ready::Data { wait } => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Ready::Gone(gone) => return self.write_frame(&gone).await,
            }
        }
        let Some(slice) = self.serve.next_slice() else {
            return Ok(());
        };
        let n = slice.len();
        self.send.write_all(slice).await.map_err(write_error)?;
        self.serve.wrote_slice(n, Instant::now(), self.conn.rtt());
        Ok(())
    }

    /// Writes a whole frame that is not chunk data (unpaced, counted in flight).
    async fn write_frame(&mut self, frame: &MirrorFrame) -> Result<(), RunError> {
        let n = write(self.send, frame).await?;
        self.serve.wrote_frame(n, Instant::now(), self.conn.rtt());
        Ok(())
    }
}

/// The edge's mirror settings.
#[derive(Debug, Clone)]
pub struct MirrorSettings {
    /// What a manifest from the core may hold.
    pub limits: Limits,
    /// The operator's cap on chunk bytes per second, sent to the core; `None`: none.
    pub max_rate: Option<u64>,
    /// Chunk bytes asked for in one request (many small chunks share one).
    pub request_bytes: u64,
    /// Requests outstanding at once: enough to keep the link busy across a round trip,
    /// few enough that little is queued at the core.
    pub in_flight: usize,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            limits: Limits::default(),
            max_rate: None,
            request_bytes: 1 << 20,
            in_flight: 3,
        }
    }
}

/// The edge's mirror of the core's mission volume: start, stop, status. Clones share
/// one mirror; its task ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Mirror {
    shared: Arc<EdgeShared>,
    _task: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct EdgeShared {
    want: watch::Sender<bool>,
    status: watch::Sender<MirrorStatus>,
    marker: PathBuf,
    current: PathBuf,
}

impl EdgeShared {
    /// Records the operator's wish, durably, then tells the task.
    fn set_wanted(&self, wanted: bool) -> io::Result<()> {
        if wanted {
            std::fs::write(&self.marker, b"")?;
        } else {
            match std::fs::remove_file(&self.marker) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.want.send_replace(wanted);
        Ok(())
    }
}

impl Mirror {
    /// Opens the mirror in `dir` (recovering from any interruption) and starts its task,
    /// which mirrors over `link` whenever an operator started it. A mirror started before
    /// a restart resumes by itself. Must be called within a tokio runtime.
    pub fn open(
        dir: &Path,
        settings: MirrorSettings,
        link: Arc<PeerLink>,
    ) -> Result<Mirror, ReplicaError> {
        let replica = ReplicaVolume::open(dir, settings.limits.clone())?;
        let marker = dir.join("mirror.run");
        let wanted = marker.exists();
        let mut status = MirrorStatus::default();
        let version = replica.current().version;
        if version > 0 {
            status.last_success_version = Some(version);
        }
        if let Some(target) = replica.target() {
            status.state = crate::mirror::MirrorState::Interrupted;
            status.base_version = Some(version);
            status.target_version = Some(target.version);
        }
        let shared = Arc::new(EdgeShared {
            want: watch::Sender::new(wanted),
            status: watch::Sender::new(status),
            marker,
            current: replica.current_dir(),
        });
        let replica = Arc::new(Mutex::new(replica));
        let task = tokio::spawn(edge_loop(shared.clone(), replica, settings, link));
        Ok(Mirror {
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// Starts (or resumes) a mirror: it runs as soon as the link is up.
    pub fn start(&self) -> io::Result<()> {
        self.shared.set_wanted(true)
    }

    /// Stops the mirror in progress; what was received is kept for the next start.
    pub fn stop(&self) -> io::Result<()> {
        self.shared.set_wanted(false)
    }

    /// Whether an operator started a mirror that has not finished or stopped.
    pub fn started(&self) -> bool {
        *self.shared.want.borrow()
    }

    /// The status now.
    pub fn status(&self) -> MirrorStatus {
        self.shared.status.borrow().clone()
    }

    /// A watch of the status: it changes on every update.
    pub fn watch(&self) -> watch::Receiver<MirrorStatus> {
        self.shared.status.subscribe()
    }

    /// Where readers find the mirrored volume (a symlink to the current version).
    pub fn current_dir(&self) -> PathBuf {
        self.shared.current.clone()
    }
}

/// Why a run ended early.
#[derive(Debug)]
enum RunError {
    /// The connection was lost: resume on the next session.
    Link(String),
    /// The operator stopped it (edge), or the peer stopped the stream.
    Stopped(String),
    /// It cannot go on: bad input, a disk error; the previous state is kept.
    Failed(String),
}

async fn edge_loop(
    shared: Arc<EdgeShared>,
    replica: Arc<Mutex<ReplicaVolume>>,
    settings: MirrorSettings,
    link: Arc<PeerLink>,
) {
    let mut want = shared.want.subscribe();
    let mut session = link.session.subscribe();
    loop {
        if want.wait_for(|w| *w).await.is_err() {
            return;
        }
        let conn = tokio::select! {
            c = session.wait_for(Option::is_some) => match c {
                Ok(c) => c.clone(),
                Err(_) => return,
            },
            _ = want.wait_for(|w| !*w) => continue,
        };
        let Some(conn) = conn else { continue };
        let base = lock(&replica).current().version;
        shared
            .status
            .send_modify(|s| s.planning(Some(base), SystemTime::now()));
        let result = tokio::select! {
            r = run(&conn, &replica, &settings, &shared.status) => r,
            _ = want.wait_for(|w| !*w) => Err(RunError::Stopped("stopped by the operator".into())),
        };
        match result {
            Ok(()) => {
                if let Err(err) = shared.set_wanted(false) {
                    tracing::warn!(%err, "cannot clear the mirror's run marker");
                }
                shared.status.send_modify(|s| s.done(SystemTime::now()));
                tracing::info!("mirror done");
            }
            Err(RunError::Stopped(why)) => {
                tracing::info!(%why, "mirror interrupted");
                shared.status.send_modify(MirrorStatus::interrupted);
            }
            Err(RunError::Link(why)) => {
                tracing::info!(%why, "mirror interrupted by the link; resumes when it is back");
                shared.status.send_modify(|s| {
                    s.interrupted();
                    s.last_error = Some(why);
                });
                // Wait for another session (or a stop).
                let id = conn.stable_id();
                tokio::select! {
                    r = session.wait_for(|c| c.as_ref().map(quinn::Connection::stable_id) != Some(id)) => if r.is_err() { return },
                    _ = want.wait_for(|w| !*w) => {}
                }
            }
            Err(RunError::Failed(why)) => {
                tracing::warn!(%why, "mirror failed; the previous version is kept");
                if let Err(err) = shared.set_wanted(false) {
                    tracing::warn!(%err, "cannot clear the mirror's run marker");
                }
                shared.status.send_modify(|s| s.failed(&why));
            }
        }
    }
}

fn lock(replica: &Mutex<ReplicaVolume>) -> MutexGuard<'_, ReplicaVolume> {
    replica.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on the replica on a blocking thread.
async fn blocking<T: Send + 'static>(
    replica: &Arc<Mutex<ReplicaVolume>>,
    f: impl FnOnce(&mut ReplicaVolume) -> T + Send + 'static,
) -> Result<T, RunError> {
    let replica = replica.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&replica)))
        .await
        .map_err(|e| RunError::Failed(format!("mirror task failed: {e}")))
}

/// The edge's end of one mirror stream, counting its bytes into the status, and
/// reporting the bytes it read (`Received`) for the core's pacing.
struct EdgeStream<'a> {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: FrameReader,
    status: &'a watch::Sender<MirrorStatus>,
    /// Bytes read from the core, and in the last report.
    read: u64,
    reported: u64,
    /// The report interval the core asked for.
    report_every: u64,
    /// Chunk bytes in what was read, for `bytes_arrived`.
    data: DataMeter,
}

/// A stream quiet for this long with bytes unreported reports them: the core may be
/// waiting for the report to send more.
const QUIET: Duration = Duration::from_millis(50);

impl EdgeStream<'_> {
    async fn send(&mut self, frame: &MirrorFrame) -> Result<(), RunError> {
        let n = write(&mut self.send, frame).await?;
        self.status.send_modify(|s| s.on_link(n as u64));
        Ok(())
    }

    async fn report(&mut self) -> Result<(), RunError> {
        self.reported = self.read;
        self.send(&MirrorFrame::Received { bytes: self.read }).await
    }

    /// The next frame from the core; `ReportEvery` is taken here.
    async fn recv(&mut self) -> Result<MirrorFrame, RunError> {
        loop {
            match self.reader.next_value::<MirrorFrame>() {
                Ok(Some(MirrorFrame::ReportEvery { bytes })) => {
                    self.report_every = bytes.clamp(MIN_REPORT, MAX_REPORT);
                    continue;
                }
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(RunError::Failed(format!("bad mirror frame: {e}"))),
            }
            let unreported = self.read - self.reported;
            if unreported >= self.report_every {
                self.report().await?;
            }
            let read = if self.read > self.reported {
                match tokio::time::timeout(QUIET, self.recv.read_chunk(64 << 10, true)).await {
                    Ok(read) => read,
                    Err(_) => {
                        self.report().await?;
                        continue;
                    }
                }
            } else {
                self.recv.read_chunk(64 << 10, true).await
            };
            match read {
                Ok(Some(chunk)) => {
                    let n = chunk.bytes.len() as u64;
                    let data = self.data.push(&chunk.bytes);
                    self.read += n;
                    self.status.send_modify(|s| {
                        s.on_link(n);
                        s.arrived(data);
                    });
                    self.reader.push(&chunk.bytes);
                }
                Ok(None) => return Err(RunError::Failed("the core ended the mirror".into())),
                Err(e) => return Err(read_error(e)),
            }
        }
    }
}

/// The variant index of [`MirrorFrame::Data`] (its number in `mirror/wire.rs`, never
/// reused): the codec writes it first in the frame, then the bytes' length, then them.
const DATA_TAG: u8 = 8;

/// Finds the chunk bytes in the stream from the core as it is read, frame headers
/// left out, before a frame is whole: `bytes_arrived` moves with each packet of a chunk
/// instead of once per chunk. It follows the framing ([`wire::encode_value`]: a varint
/// length, then the value) and never fails: bad framing is the [`FrameReader`]'s to
/// refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataMeter {
    /// A frame's length, so far.
    Length { value: u64, shift: u32 },
    /// `left` bytes of the frame's value, whose first byte is its variant index.
    Tag { left: u64 },
    /// A `Data` frame's byte count, so far, and the frame's bytes left after it.
    DataLength { left: u64, value: u64, shift: u32 },
    /// `left` bytes of the frame, of which the first `data` are chunk bytes.
    Body { left: u64, data: u64 },
}

impl Default for DataMeter {
    fn default() -> Self {
        DataMeter::Length { value: 0, shift: 0 }
    }
}

impl DataMeter {
    /// Takes the next `bytes` of the stream; returns how many of them are chunk bytes.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> u64 {
        let mut found = 0;
        while let Some((&byte, rest)) = bytes.split_first() {
            *self = match *self {
                DataMeter::Length { value, shift } => {
                    bytes = rest;
                    let value = varint(value, shift, byte);
                    match (byte & 0x80 == 0, value) {
                        (true, 0) => DataMeter::default(),
                        (true, left) => DataMeter::Tag { left },
                        (false, _) => DataMeter::Length {
                            value,
                            shift: shift.saturating_add(7),
                        },
                    }
                }
                DataMeter::Tag { left } => {
                    bytes = rest;
                    let left = left - 1;
                    if byte == DATA_TAG && left > 0 {
                        DataMeter::DataLength {
                            left,
                            value: 0,
                            shift: 0,
                        }
                    } else {
                        DataMeter::Body { left, data: 0 }.settled()
                    }
                }
                DataMeter::DataLength { left, value, shift } => {
                    bytes = rest;
                    let (left, value) = (left - 1, varint(value, shift, byte));
                    if byte & 0x80 == 0 || left == 0 {
                        DataMeter::Body {
                            left,
                            data: value.min(left),
                        }
                        .settled()
                    } else {
                        DataMeter::DataLength {
                            left,
                            value,
                            shift: shift.saturating_add(7),
                        }
                    }
                }
                DataMeter::Body { left, data } => {
                    let n = left.min(bytes.len() as u64);
                    found += n.min(data);
                    bytes = &bytes[n as usize..];
                    DataMeter::Body {
                        left: left - n,
                        data: data.saturating_sub(n),
                    }
                    .settled()
                }
            };
        }
        found
    }

    /// The next frame's length once this one's bytes are all read.
    fn settled(self) -> DataMeter {
        match self {
            DataMeter::Body { left: 0, .. } => DataMeter::default(),
            other => other,
        }
    }
}

/// A varint read so far, `value`, with its next `byte`, `shift` bits up (past 64 bits,
/// nothing: the frame reader refuses such a length).
fn varint(value: u64, shift: u32, byte: u8) -> u64 {
    value | u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0)
}

async fn run(
    conn: &quinn::Connection,
    replica: &Arc<Mutex<ReplicaVolume>>,
    settings: &MirrorSettings,
    status: &watch::Sender<MirrorStatus>,
) -> Result<(), RunError> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| RunError::Link(e.to_string()))?;
    let _ = send.set_priority(PRIORITY_MIRROR);
    let mut stream = EdgeStream {
        send,
        recv,
        reader: FrameReader::default(),
        status,
        read: 0,
        reported: 0,
        report_every: Pace::new().report_every(),
        data: DataMeter::default(),
    };
    for _ in 0..MAX_REPLANS {
        // A root hashes a whole manifest (about 3 ms for 20,000 files): on a blocking
        // thread, once a start, and kept for the plan.
        let (have_root, have_version, target_root) = blocking(replica, |r| {
            (
                r.current().root(),
                r.current().version,
                r.target().map(Manifest::root),
            )
        })
        .await?;
        stream
            .send(&MirrorFrame::Start {
                have_root,
                have_version,
                target_root,
                max_rate: settings.max_rate,
            })
            .await?;
        let mut assembly = ManifestAssembly::default();
        loop {
            match stream.recv().await? {
                MirrorFrame::Manifest {
                    root,
                    base,
                    total,
                    last,
                    bytes,
                } => {
                    let complete = assembly
                        .push(root, base, total, last, &bytes, &settings.limits)
                        .map_err(|e| RunError::Failed(e.to_string()))?;
                    if complete {
                        break;
                    }
                }
                MirrorFrame::Refused { reason } => {
                    return Err(RunError::Failed(format!("the core refused: {reason}")));
                }
                other => {
                    return Err(RunError::Failed(format!(
                        "the core sent a {} instead of the manifest",
                        other.name()
                    )));
                }
            }
        }
        let limits = settings.limits.clone();
        let held = (have_root, target_root);
        let plan = blocking(replica, move |r| plan_run(r, assembly, held, &limits))
            .await?
            .map_err(RunError::Failed)?;
        let Some(plan) = plan else {
            // Nothing to do: the edge holds the core's current state.
            let version = lock(replica).current().version;
            status.send_modify(|s| s.up_to_date(version));
            let _ = stream.send(&MirrorFrame::Done).await;
            let _ = stream.send.finish();
            return Ok(());
        };
        status.send_modify(|s| s.running(&plan));
        if fetch(&mut stream, replica, &plan, settings).await? {
            continue;
        }
        let applied = blocking(replica, |r| r.apply())
            .await?
            .map_err(|e| RunError::Failed(e.to_string()))?;
        tracing::info!(
            version = plan.target_version,
            linked = applied.linked,
            written = applied.written,
            "mirror applied"
        );
        let _ = stream.send(&MirrorFrame::Done).await;
        let _ = stream.send.finish();
        return Ok(());
    }
    Err(RunError::Failed(format!(
        "the core's volume kept changing: {MAX_REPLANS} manifests in a row had chunks gone"
    )))
}

/// Checks the assembled target and plans the run: `None` if the edge already holds it.
/// `held`: the roots of the edge's current version and target, as sent in `Start` (the
/// run alone changes the replica).
fn plan_run(
    replica: &mut ReplicaVolume,
    assembly: ManifestAssembly,
    (current_root, target_root): (Hash, Option<Hash>),
    limits: &Limits,
) -> Result<Option<Plan>, String> {
    let holds: Vec<&Manifest> = [Some(replica.current()), replica.target()]
        .into_iter()
        .flatten()
        .collect();
    let target = assembly.finish(&holds, limits).map_err(|e| e.to_string())?;
    match Target::of(target.root(), current_root, target_root) {
        Target::Held { abandon } => {
            if abandon {
                replica.abandon().map_err(|e| e.to_string())?;
            }
            Ok(None)
        }
        Target::Resume => Ok(replica.plan()),
        Target::Begin => replica.begin(target).map(Some).map_err(|e| e.to_string()),
    }
}

/// Fetches the plan's chunks as [`Fetch`] says; `Ok(true)` if some were gone (re-plan).
async fn fetch(
    stream: &mut EdgeStream<'_>,
    replica: &Arc<Mutex<ReplicaVolume>>,
    plan: &Plan,
    settings: &MirrorSettings,
) -> Result<bool, RunError> {
    // Chunks are asked for by their position in the target (the manifest the core just
    // sent, or the same one resumed).
    let positions = {
        let replica = lock(replica);
        let target = replica
            .target()
            .ok_or_else(|| RunError::Failed("no target to fetch".into()))?;
        ChunkTable::first_positions(target)
    };
    let (request, in_flight) = (settings.request_bytes, settings.in_flight);
    let max_chunk = settings.limits.max_chunk;
    let mut fetch = Fetch::new(plan, positions, request, in_flight, max_chunk).map_err(failed)?;
    loop {
        while let Some(request) = fetch.poll_request().map_err(failed)? {
            stream.send(&request).await?;
        }
        if !fetch.waiting() {
            return Ok(fetch.gone());
        }
        let frame = stream.recv().await?;
        if let Arrived::Chunk { due, bytes } = fetch.handle_frame(frame).map_err(failed)? {
            let (n, hash) = (bytes.len() as u64, due.hash);
            // The bytes (with the prefix, for a rest) are checked against the hash asked
            // for.
            let received = match due.prefix {
                None => blocking(replica, move |r| r.receive(&hash, &bytes)).await?,
                Some(_) => blocking(replica, move |r| r.receive_rest(&hash, &bytes)).await?,
            };
            let verdict = match &received {
                Ok(()) => Verdict::Held,
                Err(
                    ReceiveError::Spool(SpoolError::HashMismatch { .. })
                    | ReceiveError::Prefix { .. },
                ) => Verdict::Mismatch,
                Err(e) => return Err(RunError::Failed(e.to_string())),
            };
            match fetch.handle_checked(verdict).map_err(failed)? {
                None => stream.status.send_modify(|s| s.received(n, Instant::now())),
                Some(Again::Whole { prefix }) => {
                    match prefix {
                        // The chunk did not begin with its prefix after all (or the
                        // prefix is damaged here): its whole bytes are fetched.
                        Some(prefix) => stream
                            .status
                            .send_modify(|s| s.prefix_unused(u64::from(prefix))),
                        None => stream.status.send_modify(MirrorStatus::refetch),
                    }
                    let why = "a chunk failed its hash: fetching it again, whole";
                    if let Err(err) = received {
                        tracing::warn!(%hash, %err, "{why}");
                    }
                }
            }
        }
        if fetch.take_complete() {
            blocking(replica, |r| r.sync())
                .await?
                .map_err(|e| RunError::Failed(e.to_string()))?;
        }
    }
}

fn failed(e: RunFailed) -> RunError {
    RunError::Failed(e.0)
}

/// Writes one frame; returns its size.
async fn write(send: &mut quinn::SendStream, frame: &MirrorFrame) -> Result<usize, RunError> {
    let mut buf = Vec::new();
    wire::encode_value(frame, &mut buf);
    send.write_all(&buf).await.map_err(write_error)?;
    Ok(buf.len())
}

fn write_error(e: quinn::WriteError) -> RunError {
    match e {
        quinn::WriteError::ConnectionLost(e) => RunError::Link(e.to_string()),
        quinn::WriteError::Stopped(_) => RunError::Stopped("the peer stopped the stream".into()),
        other => RunError::Failed(other.to_string()),
    }
}

/// Reads the next frame; `None` when the peer finished the stream cleanly.
/// Adds the bytes read from the stream to `count`.
async fn read(
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
    count: &mut u64,
) -> Result<Option<MirrorFrame>, RunError> {
    loop {
        match reader.next_value::<MirrorFrame>() {
            Ok(Some(frame)) => return Ok(Some(frame)),
            Ok(None) => {}
            Err(e) => return Err(RunError::Failed(format!("bad mirror frame: {e}"))),
        }
        match recv.read_chunk(64 << 10, true).await {
            Ok(Some(chunk)) => {
                *count += chunk.bytes.len() as u64;
                reader.push(&chunk.bytes);
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(read_error(e)),
        }
    }
}

fn read_error(e: quinn::ReadError) -> RunError {
    match e {
        quinn::ReadError::ConnectionLost(e) => RunError::Link(e.to_string()),
        quinn::ReadError::Reset(code) => RunError::Failed(format!(
            "the peer reset the mirror stream (code {code}); see its log"
        )),
        e => RunError::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frames: &[MirrorFrame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            wire::encode_value(frame, &mut out);
        }
        out
    }

    #[test]
    fn the_data_meter_counts_chunk_bytes_as_they_arrive_whatever_the_cuts() {
        let data = |n: usize| MirrorFrame::Data {
            bytes: vec![DATA_TAG; n],
        };
        let frames = [
            MirrorFrame::Manifest {
                root: Hash::of(b"r"),
                base: None,
                total: 3,
                last: true,
                bytes: vec![DATA_TAG; 3],
            },
            data(100),
            MirrorFrame::ReportEvery { bytes: 8 },
            // Lengths of two and three bytes, inside and around the frame.
            data(200),
            data(70_000),
            data(0),
            MirrorFrame::Gone {
                hash: Hash::of(b"g"),
            },
            data(1),
        ];
        let stream = encoded(&frames);
        let total = 100 + 200 + 70_000 + 1;
        for cut in [1, 2, 3, 7, 1000, 65_536, stream.len()] {
            let mut meter = DataMeter::default();
            let found: u64 = stream.chunks(cut).map(|c| meter.push(c)).sum();
            assert_eq!(found, total, "pieces of {cut} bytes");
            assert_eq!(meter, DataMeter::default());
        }
        // Part way through a chunk: what arrived of it, no header byte.
        let head = encoded(&frames[..1]).len() + 3;
        let mut meter = DataMeter::default();
        assert_eq!(meter.push(&stream[..head + 40]), 40);
        assert_eq!(meter.push(&stream[head + 40..head + 100]), 60);
        assert_eq!(meter.push(&stream[head + 100..]), total - 100);
    }

    #[test]
    fn the_data_tag_is_the_codecs() {
        let mut out = Vec::new();
        wire::encode_value(&MirrorFrame::Data { bytes: vec![7; 5] }, &mut out);
        assert_eq!(out, [7, DATA_TAG, 5, 7, 7, 7, 7, 7]);
    }
}
