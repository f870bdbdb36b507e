//! Running services: one supervisor task per running service, restarts with backoff,
//! statuses and counters, and the `_services` table that remembers what was running.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::entry::Offset;
use crate::log::{Store, TableName, Txn, WriteError};

use super::{Ctx, Service};

/// The first restart of a failed service waits this long; each further one twice as long.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between restarts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A service that ran this long before failing starts again from the shortest backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The table that remembers, per service, whether it runs and its processing delay.
const TABLE: &str = "_services";

/// What a service is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ServiceState {
    /// Not running: an operator stopped it, or it never started.
    Stopped,
    /// Running.
    Running,
    /// Its last run failed with `error`; it starts again after a backoff.
    Failed {
        /// Why, as the service or its panic said it.
        error: String,
    },
}

/// What operators see of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Stopped, running or failed.
    #[serde(flatten)]
    pub state: ServiceState,
    /// Items done since the node started.
    pub processed: u64,
    /// Items that failed since the node started (the service went on).
    pub failed: u64,
    /// When it last finished an item, in milliseconds since the Unix epoch.
    pub last_activity_ms: Option<u64>,
    /// The last problem it reported (a failed item, a bad feed entry), if any.
    pub last_problem: Option<String>,
    /// How often it was restarted after a failure since the node started.
    pub restarts: u32,
    /// Its processing delay, in milliseconds (0: as fast as it can).
    pub delay_ms: u64,
}

/// Why an operator's request to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// No service of that name on this node.
    #[error("no service named {name:?} on this node (services: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names there are, comma separated.
        known: String,
    },
    /// The choice could not be remembered in the store.
    #[error("cannot record the service state: {0}")]
    Store(#[from] WriteError),
}

/// The services of one node: cheap to clone, every clone is the same runtime.
#[derive(Clone, Debug)]
pub struct Services {
    store: Store,
    shared: Arc<Shared>,
    /// Logs every tile once it is durable (operators and tests read the node's log).
    logger: Arc<Logger>,
}

/// The tile logger's task, aborted when the last clone of [`Services`] drops: it holds a
/// store handle, which would otherwise keep the store open (and locked) after a node
/// dropped without [`Services::halt`], such as one a test cuts.
#[derive(Debug)]
struct Logger(Mutex<Option<JoinHandle<()>>>);

impl Drop for Logger {
    fn drop(&mut self) {
        let task = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// Statuses and processing delays, shared by the runtime and the services' [`Ctx`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    services: BTreeMap<&'static str, Entry>,
}

struct Entry {
    service: Arc<dyn Service>,
    status: ServiceStatus,
    running: Option<Supervisor>,
}

/// A running service's supervisor task and the way to stop it.
struct Supervisor {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// What the `_services` table holds per service.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Remembered {
    running: bool,
    #[serde(default)]
    delay_ms: u64,
}

impl Services {
    /// A runtime with no service yet; it creates the `TILES` topic.
    pub async fn new(store: Store) -> Result<Services, WriteError> {
        store.create_topic(super::tile::config()).await?;
        // Where the log starts is read here, not in the task: a task not yet polled when
        // the first services commit would start after their tiles and never log them.
        let next = store
            .topic(&super::Tile::topic())
            .map_or(Offset(0), |t| t.next);
        let logger = tokio::spawn(log_tiles(store.clone(), next));
        Ok(Services {
            store,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: watch::Sender::new(0),
            }),
            logger: Arc::new(Logger(Mutex::new(Some(logger)))),
        })
    }

    /// Adds a service and starts it if it was running when the node stopped, or, the
    /// first time this node sees it, if `start` says so.
    pub async fn add(&self, service: Arc<dyn Service>, start: bool) -> Result<(), ServicesError> {
        let name = service.name();
        let remembered = self.remembered(name);
        let status = ServiceStatus {
            name: name.to_owned(),
            description: service.description().to_owned(),
            state: ServiceState::Stopped,
            processed: 0,
            failed: 0,
            last_activity_ms: None,
            last_problem: None,
            restarts: 0,
            delay_ms: remembered.as_ref().map_or(0, |r| r.delay_ms),
        };
        let run = remembered.map_or(start, |r| r.running);
        self.shared.lock().services.insert(
            name,
            Entry {
                service,
                status,
                running: None,
            },
        );
        self.shared.changed();
        if run {
            self.start(name).await?;
        }
        Ok(())
    }

    /// Starts a service (a no-op if it runs) and remembers that it runs.
    pub async fn start(&self, name: &str) -> Result<(), ServicesError> {
        let name = self.known(name)?;
        self.remember(name, |r| r.running = true).await?;
        let mut state = self.shared.lock();
        let Some(entry) = state.services.get_mut(name) else {
            return Ok(());
        };
        if entry.running.is_none() {
            let (stop, stopped) = oneshot::channel();
            let ctx = Ctx {
                store: self.store.clone(),
                name,
                shared: self.shared.clone(),
            };
            let task = tokio::spawn(supervise(entry.service.clone(), ctx, stopped));
            entry.running = Some(Supervisor { stop, task });
            entry.status.state = ServiceState::Running;
            info!(service = name, "service started");
        }
        drop(state);
        self.shared.changed();
        Ok(())
    }

    /// Stops a service (a no-op if it is stopped), waits until it stopped, and remembers
    /// that it is stopped.
    pub async fn stop(&self, name: &str) -> Result<(), ServicesError> {
        let name = self.known(name)?;
        self.remember(name, |r| r.running = false).await?;
        self.halt_one(name).await;
        info!(service = name, "service stopped");
        Ok(())
    }

    /// Sets a service's processing delay, and remembers it.
    pub async fn set_delay(&self, name: &str, delay: Duration) -> Result<(), ServicesError> {
        let name = self.known(name)?;
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.remember(name, |r| r.delay_ms = ms).await?;
        if let Some(entry) = self.shared.lock().services.get_mut(name) {
            entry.status.delay_ms = ms;
        }
        self.shared.changed();
        Ok(())
    }

    /// Every service's status, by name.
    pub fn list(&self) -> Vec<ServiceStatus> {
        let state = self.shared.lock();
        state.services.values().map(|e| e.status.clone()).collect()
    }

    /// One service's status.
    pub fn status(&self, name: &str) -> Option<ServiceStatus> {
        let state = self.shared.lock();
        state.services.get(name).map(|e| e.status.clone())
    }

    /// A counter that moves whenever a status changes (for live views).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Stops every service without changing what is remembered: the node is stopping,
    /// and starts them again at its next start.
    pub async fn halt(&self) {
        let names: Vec<&'static str> = self.shared.lock().services.keys().copied().collect();
        for name in names {
            self.halt_one(name).await;
        }
        let logger = self
            .logger
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(logger) = logger {
            logger.abort();
            let _ = logger.await;
        }
    }

    async fn halt_one(&self, name: &'static str) {
        let supervisor = {
            let mut state = self.shared.lock();
            let Some(entry) = state.services.get_mut(name) else {
                return;
            };
            entry.status.state = ServiceState::Stopped;
            entry.running.take()
        };
        if let Some(Supervisor { stop, task }) = supervisor {
            // The supervisor aborts the service's task and waits until it ended.
            let _ = stop.send(());
            let _ = task.await;
        }
        self.shared.changed();
    }

    fn known(&self, name: &str) -> Result<&'static str, ServicesError> {
        let state = self.shared.lock();
        match state.services.get_key_value(name) {
            Some((name, _)) => Ok(name),
            None => Err(ServicesError::Unknown {
                name: name.to_owned(),
                known: state
                    .services
                    .keys()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn remembered(&self, name: &str) -> Option<Remembered> {
        let doc = self.store.doc(&table(), name).ok().flatten()?;
        serde_json::from_value(doc).ok()
    }

    async fn remember(
        &self,
        name: &str,
        change: impl FnOnce(&mut Remembered),
    ) -> Result<(), WriteError> {
        let mut remembered = self.remembered(name).unwrap_or_default();
        change(&mut remembered);
        let doc = serde_json::json!({
            "running": remembered.running,
            "delay_ms": remembered.delay_ms,
        });
        let mut txn = Txn::new();
        txn.put(&table(), name, doc);
        self.store.commit(txn).await?;
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ServiceStatus)) {
        if let Some(entry) = self.lock().services.get_mut(name) {
            change(&mut entry.status);
        }
        self.changed();
    }

    pub(crate) fn delay(&self, name: &str) -> Duration {
        let state = self.lock();
        let ms = state.services.get(name).map_or(0, |e| e.status.delay_ms);
        Duration::from_millis(ms)
    }

    /// Counts one item: processed, or failed with why (shown as the last problem).
    pub(crate) fn count(&self, name: &str, failed: Option<String>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.update(name, |s| {
            match failed {
                None => s.processed += 1,
                Some(why) => {
                    s.failed += 1;
                    s.last_problem = Some(why);
                }
            }
            s.last_activity_ms = Some(now);
        });
    }

    pub(crate) fn problem(&self, name: &str, why: String) {
        self.update(name, |s| s.last_problem = Some(why));
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.services.keys()).finish()
    }
}

fn table() -> TableName {
    TableName::new(TABLE).expect("_services is a valid table name")
}

/// How many tiles the logger reads at a time.
const TILES_PER_READ: usize = 256;

/// Logs each tile from offset `next` on, once it is durable.
async fn log_tiles(store: Store, mut next: Offset) {
    let topic = super::Tile::topic();
    let mut changes = store.changes();
    loop {
        changes.borrow_and_update();
        let records = store.read(&topic, next, TILES_PER_READ).unwrap_or_default();
        let more = records.len() == TILES_PER_READ;
        for record in records {
            next = Offset(record.offset.0 + 1);
            if let Ok(tile) = super::Tile::decode(&record.entry.payload) {
                // A target of their own, so a console that shows tiles itself (the
                // demo) can leave these lines out.
                info!(
                    target: "tether::tile",
                    service = %tile.service,
                    title = %tile.title,
                    asset = tile.asset.as_deref().unwrap_or("-"),
                    "tile: {}",
                    tile.text
                );
            }
        }
        if more {
            continue; // A backlog: the rest now, not at the next change.
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Runs `service` until `stop` fires; restarts it with backoff when it fails or panics.
async fn supervise(service: Arc<dyn Service>, ctx: Ctx, mut stop: oneshot::Receiver<()>) {
    let name = ctx.name;
    let shared = ctx.shared.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        shared.update(name, |s| s.state = ServiceState::Running);
        let started = Instant::now();
        let mut task = tokio::spawn(service.clone().run(ctx.clone()));
        let ended = tokio::select! {
            ended = &mut task => ended,
            _ = &mut stop => {
                task.abort();
                let _ = task.await;
                return;
            }
        };
        let error = match ended {
            Ok(Ok(())) => "it returned; a service runs until it is stopped".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(join) => match join.try_into_panic() {
                Ok(panic) => format!("panicked: {}", panic_message(&*panic)),
                Err(_) => "its task was cancelled".to_owned(),
            },
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        error!(service = name, %error, retry_in = ?backoff, "service failed");
        shared.update(name, |s| {
            s.state = ServiceState::Failed {
                error: error.clone(),
            };
            s.restarts += 1;
        });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
