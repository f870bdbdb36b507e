//! The service runtime: named, long-running tasks on a node that operators start and stop.
//!
//! - A [`Service`] is a name, a description and a `run` future. Most services read a
//!   topic through an [`Input`] (a durable consumer): take an entry, do the work, and
//!   commit the results together with the cursor, so that a crash neither skips nor
//!   repeats an entry. Work outside the store (a downloaded file, a copy into the mission
//!   volume) is written so that doing it twice is harmless.
//! - [`Services`] runs them: one supervisor task per running service. A service whose
//!   `run` returns an error or panics is shown as failed with the reason, and restarted
//!   with backoff; it never takes the node down. Which services run is remembered in the
//!   `_services` table, so that a node restarts what was running.
//! - Every service publishes what it did as [`Tile`]s on the local `TILES` topic, for the
//!   web UI to show.
//!
//! IO: the store (through [`Ctx`]) and the tokio runtime (tasks, timers).

mod input;
mod runtime;
mod tile;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use input::Input;
pub use runtime::{ServiceState, ServiceStatus, Services, ServicesError};
pub use tile::{TILES, Tile};

use crate::log::{ReadError, WriteError};

/// What a service's `run` returns: a boxed future, so that services are trait objects.
pub type Run = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send>>;

/// A long-running task on a node.
pub trait Service: Send + Sync + 'static {
    /// Its name, in kebab case (`image-feed`): in the API, the logs and the `_services`
    /// table.
    fn name(&self) -> &'static str;

    /// One sentence for operators: what it does.
    fn description(&self) -> &'static str;

    /// Runs until it fails. The runtime stops a service by dropping this future, at any
    /// await point: whatever it wrote must be committed atomically or be harmless to
    /// write again.
    fn run(self: Arc<Self>, ctx: Ctx) -> Run;
}

/// Why a service stopped working. The runtime shows it and restarts the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The store refused a write.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The store could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl ServiceError {
    /// A failure described in words.
    pub fn other(message: impl std::fmt::Display) -> ServiceError {
        ServiceError::Other(message.to_string())
    }
}

/// What a running service gets: the store, its counters and its pace.
#[derive(Clone, Debug)]
pub struct Ctx {
    store: crate::log::Store,
    name: &'static str,
    shared: Arc<runtime::Shared>,
}

impl Ctx {
    /// The node's store.
    pub fn store(&self) -> &crate::log::Store {
        &self.store
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Opens the service's durable input over `topic`; its consumer is named after the
    /// service (and `part`, for a service that reads more than one topic).
    pub fn input(
        &self,
        part: &str,
        topic: &crate::entry::TopicName,
    ) -> Result<Input, ServiceError> {
        Input::open(self.clone(), part, topic)
    }

    /// Waits the service's processing delay (zero unless an operator set one, to pace a
    /// demo so that people can follow it).
    pub async fn pace(&self) {
        let delay = self.shared.delay(self.name);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Counts one item done.
    pub fn processed(&self) {
        self.shared.count(self.name, None);
    }

    /// Counts one item that failed (the service goes on); `why` is shown as its last
    /// problem.
    pub fn failed(&self, why: impl std::fmt::Display) {
        let why = why.to_string();
        tracing::warn!(service = self.name, problem = %why, "item failed");
        self.shared.count(self.name, Some(why));
    }

    /// Shows a problem that did not stop the service (a bad feed item, say).
    pub fn problem(&self, why: impl std::fmt::Display) {
        let why = why.to_string();
        tracing::warn!(service = self.name, problem = %why, "service problem");
        self.shared.problem(self.name, why);
    }

    /// A tile for this service, to append with the service's other writes.
    pub fn tile(&self, title: impl Into<String>, text: impl Into<String>) -> Tile {
        Tile::new(self.name, title, text)
    }
}
