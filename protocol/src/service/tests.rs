//! Unit tests of the service runtime, on a real store in a scratch directory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;
use crate::entry::{Append, Scope, TopicConfig, TopicName};
use crate::log::StoreConfig;
use crate::service::{Run, Tile};
use crate::tls::tests::TempDir;

const PATIENCE: Duration = Duration::from_secs(10);

fn open(dir: &TempDir) -> Store {
    let node = crate::entry::NodeName::new("hq").unwrap();
    Store::open(dir.path(), StoreConfig::new(node)).unwrap()
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

/// Copies every entry of `IN` to `OUT` with a tile; panics on the payload `panic`
/// (once: the counter says how often it ran).
#[derive(Debug, Default)]
struct Copy {
    runs: AtomicU32,
}

impl Service for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn description(&self) -> &'static str {
        "copies IN to OUT"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            let mut input = ctx.input("", &topic("IN"))?;
            loop {
                let record = input.next().await?;
                if record.entry.payload == b"panic" && run == 0 {
                    panic!("a poison entry");
                }
                let mut txn = Txn::new();
                txn.append(&topic("OUT"), Append::new(record.entry.payload.clone()));
                ctx.tile("copied", "one entry").append_to(&mut txn);
                if record.entry.payload == b"bad" {
                    input.failed(&record, txn, "a bad entry").await?;
                } else {
                    input.done(&record, txn).await?;
                }
            }
        })
    }
}

async fn with_topics(store: &Store) {
    for name in ["IN", "OUT"] {
        let config = TopicConfig {
            name: topic(name),
            scope: Scope::Local,
            retention: Default::default(),
        };
        store.create_topic(config).await.unwrap();
    }
}

async fn wait_status(services: &Services, what: impl Fn(&ServiceStatus) -> bool) -> ServiceStatus {
    let mut watch = services.watch();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(s) = services.status("copy").filter(|s| what(s)) {
                return s;
            }
            watch.changed().await.unwrap();
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("status never matched: {:?}", services.status("copy")))
}

#[tokio::test]
async fn a_panic_is_shown_and_the_service_restarts_without_losing_or_repeating() {
    let dir = TempDir::new("service");
    let store = open(&dir);
    with_topics(&store).await;
    let services = Services::new(store.clone()).await.unwrap();
    let copy = Arc::new(Copy::default());
    services.add(copy.clone(), true).await.unwrap();
    for payload in ["a", "panic", "bad", "b"] {
        store
            .append(&topic("IN"), Append::new(payload))
            .await
            .unwrap();
    }
    let status = wait_status(&services, |s| s.processed + s.failed == 4).await;
    assert_eq!(status.state, ServiceState::Running);
    assert_eq!(
        (status.processed, status.failed, status.restarts),
        (3, 1, 1)
    );
    assert_eq!(status.last_problem.as_deref(), Some("a bad entry"));
    let out: Vec<Vec<u8>> = store
        .read(&topic("OUT"), crate::entry::Offset(0), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.entry.payload)
        .collect();
    assert_eq!(out, [&b"a"[..], b"panic", b"bad", b"b"]);
    let tiles = store
        .read(&topic(crate::service::TILES), crate::entry::Offset(0), 10)
        .unwrap();
    assert_eq!(tiles.len(), 4);
    let tile = Tile::decode(&tiles[0].entry.payload).unwrap();
    assert_eq!(
        (tile.service.as_str(), tile.title.as_str()),
        ("copy", "copied")
    );
    services.halt().await;
}

#[tokio::test]
async fn a_stopped_service_stays_stopped_after_a_restart_and_unknown_names_are_refused() {
    let dir = TempDir::new("service");
    {
        let store = open(&dir);
        with_topics(&store).await;
        let services = Services::new(store.clone()).await.unwrap();
        services.add(Arc::new(Copy::default()), true).await.unwrap();
        services
            .set_delay("copy", Duration::from_millis(5))
            .await
            .unwrap();
        services.stop("copy").await.unwrap();
        assert_eq!(
            services.status("copy").unwrap().state,
            ServiceState::Stopped
        );
        store.append(&topic("IN"), Append::new("x")).await.unwrap();
        let err = services.start("nope").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no service named \"nope\" on this node (services: copy)"
        );
        // As a node stops: the services (and the tile logger, which holds a handle on
        // the store) first, so that the store can be opened again.
        services.halt().await;
        store.close().await.unwrap();
    }
    let store = open(&dir);
    let services = Services::new(store.clone()).await.unwrap();
    // Started by default, but remembered as stopped: it stays stopped, nothing is read.
    services.add(Arc::new(Copy::default()), true).await.unwrap();
    let status = services.status("copy").unwrap();
    assert_eq!((status.state, status.delay_ms), (ServiceState::Stopped, 5));
    services.start("copy").await.unwrap();
    let status = wait_status(&services, |s| s.processed == 1).await;
    assert_eq!(status.state, ServiceState::Running);
    services.halt().await;
}
