//! The commit pipeline behind the owner: a syncer thread makes the log's records durable, one `fdatasync` for every group waiting, and an applier thread then hands them to sled, publishes and answers, while the owner gathers and writes the next group.
//!
//! A group the owner has written to the log is a [`Flight`]. Flights go through both
//! threads in the order they were written, so readers see groups in order, and a flight
//! is answered only after a sync that began after its record was written: nothing is
//! acknowledged or visible before it is durable.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{Done, batch_of};
use crate::log::format::StateRecord;
use crate::log::wal::{self, WalFs};
use crate::log::{Shared, TopicView, WriteError};

/// Flights written and not yet taken by the syncer, at most: past it the owner waits.
const QUEUE: usize = 16;

/// One group, written to the log and on its way to being durable, applied and answered.
pub(super) struct Flight {
    /// Its record: the LSN and the segment file it is in; `None` when the group writes
    /// nothing (its replies still wait for every earlier group).
    pub(super) record: Option<(u64, String)>,
    pub(super) writes: Vec<wal::Write>,
    /// Each topic's new published state.
    pub(super) publish: Vec<(Arc<TopicView>, StateRecord)>,
    pub(super) done: Vec<Done>,
}

/// The owner's end of the pipeline.
pub(super) struct Pipeline {
    tx: Option<SyncSender<Flight>>,
    /// Flights handed to the syncer so far.
    handed: u64,
    progress: Arc<Progress>,
    threads: Vec<JoinHandle<()>>,
}

/// What the applier has done, for the owner to wait on.
#[derive(Default)]
struct Progress {
    /// Flights answered so far.
    answered: Mutex<u64>,
    changed: Condvar,
    /// Requests in flights not yet answered.
    waiting: AtomicUsize,
    /// The LSN through which the log is durable (the syncer's last sync).
    synced: AtomicU64,
}

impl Pipeline {
    /// Starts the syncer and the applier threads; the log is durable through `synced`.
    pub(super) fn start(
        shared: Arc<Shared>,
        fs: Arc<dyn WalFs>,
        synced: u64,
    ) -> std::io::Result<Pipeline> {
        let (tx, rx) = sync_channel(QUEUE);
        let (synced_tx, synced_rx) = std::sync::mpsc::channel();
        let progress = Arc::new(Progress::default());
        progress.synced.store(synced, Ordering::Release);
        let syncer = {
            let (shared, progress) = (shared.clone(), progress.clone());
            std::thread::Builder::new()
                .name("tether-store-sync".into())
                .spawn(move || sync_loop(&shared, &*fs, &progress, rx, synced_tx))?
        };
        let applier = {
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("tether-store-apply".into())
                .spawn(move || apply_loop(&shared, &progress, synced_rx))?
        };
        Ok(Pipeline {
            tx: Some(tx),
            handed: 0,
            progress,
            threads: vec![syncer, applier],
        })
    }

    /// Hands a written group on; waits while [`QUEUE`] flights wait for the syncer.
    pub(super) fn send(&mut self, flight: Flight) {
        let requests = flight.done.len();
        let Some(tx) = &self.tx else {
            return refuse(flight, "the store's commit pipeline is stopped".into());
        };
        self.progress.waiting.fetch_add(requests, Ordering::Relaxed);
        match tx.send(flight) {
            Ok(()) => self.handed += 1,
            Err(std::sync::mpsc::SendError(flight)) => {
                self.progress.waiting.fetch_sub(requests, Ordering::Relaxed);
                refuse(flight, "the store's commit pipeline is gone".into());
            }
        }
    }

    /// The LSN through which the log is durable: a record written now says so.
    pub(super) fn synced(&self) -> u64 {
        self.progress.synced.load(Ordering::Acquire)
    }

    /// Requests handed on and not yet answered.
    pub(super) fn waiting(&self) -> usize {
        self.progress.waiting.load(Ordering::Relaxed)
    }

    /// Waits until every flight handed on is answered: sled then holds every group
    /// written, and the published state is the owner's.
    pub(super) fn drain(&self) {
        let mut answered = lock(&self.progress.answered);
        while *answered < self.handed && !self.threads.iter().any(|t| t.is_finished()) {
            answered = self
                .progress
                .changed
                .wait(answered)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Drains and stops both threads.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The syncer: takes every flight waiting, syncs the segments their records are in
/// (once each), and passes them on with the outcome.
fn sync_loop(
    shared: &Shared,
    fs: &dyn WalFs,
    progress: &Progress,
    rx: Receiver<Flight>,
    tx: Sender<(Vec<Flight>, Result<(), String>)>,
) {
    while let Ok(first) = rx.recv() {
        let mut flights = vec![first];
        flights.extend(rx.try_iter());
        let mut segments: Vec<&str> = Vec::new();
        for (_, segment) in flights.iter().filter_map(|f| f.record.as_ref()) {
            if segments.last() != Some(&segment.as_str()) {
                segments.push(segment);
            }
        }
        let synced = match shared.poisoned() {
            Some(cause) => Err(cause),
            None => segments.iter().try_for_each(|s| {
                fs.sync(s)
                    .map_err(|err| shared.poison(&format!("write-ahead log: {err}")))
            }),
        };
        if synced.is_ok() {
            let last = flights
                .iter()
                .filter_map(|f| f.record.as_ref().map(|r| r.0));
            progress
                .synced
                .fetch_max(last.max().unwrap_or(0), Ordering::Release);
        }
        if tx.send((flights, synced)).is_err() {
            return;
        }
    }
}

/// The applier: hands each synced batch of flights to sled as one batch, publishes,
/// wakes tailers, answers.
fn apply_loop(
    shared: &Shared,
    progress: &Progress,
    rx: Receiver<(Vec<Flight>, Result<(), String>)>,
) {
    for (mut flights, synced) in rx {
        let last = flights
            .iter()
            .rev()
            .find_map(|f| f.record.as_ref().map(|r| r.0));
        let applied = synced.and_then(|()| match (shared.poisoned(), last) {
            (Some(cause), _) => Err(cause),
            (None, None) => Ok(()),
            (None, Some(lsn)) => {
                let writes = flights
                    .iter_mut()
                    .flat_map(|f| std::mem::take(&mut f.writes));
                shared
                    .tree
                    .apply_batch(batch_of(writes, lsn))
                    .map_err(|err| shared.poison(&err))
            }
        });
        let count = flights.len() as u64;
        let requests: usize = flights.iter().map(|f| f.done.len()).sum();
        match applied {
            Ok(()) => {
                for flight in &mut flights {
                    for (view, record) in flight.publish.drain(..) {
                        view.publish(record);
                    }
                }
                shared.changes.send_modify(|n| *n += 1);
                for done in flights.into_iter().flat_map(|f| f.done) {
                    done.accept();
                }
            }
            Err(cause) => flights.into_iter().for_each(|f| refuse(f, cause.clone())),
        }
        progress.waiting.fetch_sub(requests, Ordering::Relaxed);
        *lock(&progress.answered) += count;
        progress.changed.notify_all();
    }
}

fn refuse(flight: Flight, cause: String) {
    for done in flight.done {
        done.refuse(WriteError::Poisoned(cause.clone()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
