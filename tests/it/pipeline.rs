//! The mission pipeline end to end (issue 6), in one process with the real node runtimes,
//! services and HTTP servers, the edge linked through the emulator: a demo feed item at
//! HQ is downloaded over HTTP, broadcast, listed at the edge, requested, answered,
//! mirrored and received, and the bytes at the edge equal the original image.

use std::time::Duration;

use protocol::log::Store;
use protocol::mission;
use serde_json::Value;
use tests::TempDir;
use tests::link::Profile;
use tests::mission::{Mission, MissionConfig};

/// How long one step of the pipeline may take on loopback.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `store`'s assets table has a document for which `what` holds; returns
/// its id and document.
async fn wait_asset(store: &Store, what: impl Fn(&str, &Value) -> bool) -> (String, Value) {
    let mut changes = store.changes();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let docs = store.docs(&mission::assets()).unwrap();
            if let Some(found) = docs.into_iter().find(|(id, doc)| what(id, doc)) {
                return found;
            }
            changes.changed().await.unwrap();
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no asset matched within {PATIENCE:?}: {:?}",
            store.docs(&mission::assets()).unwrap()
        )
    })
}

fn state(doc: &Value) -> &str {
    doc.get("state").and_then(Value::as_str).unwrap_or_default()
}

async fn mirror_until_received(mission: &Mission, id: &str) -> Value {
    let mirror = mission.alpha.mirror.as_ref().unwrap();
    mirror.start().unwrap();
    let (_, doc) = wait_asset(&mission.alpha.store, |i, d| {
        i == id && state(d) == "received"
    })
    .await;
    doc
}

/// Checks that the edge's mirrored file is byte for byte HQ's original demo image.
fn assert_same_image(mission: &Mission, edge_doc: &Value, id: &str) {
    let hq_doc = mission
        .hq
        .store
        .doc(&mission::assets(), id)
        .unwrap()
        .unwrap();
    let href = hq_doc["href"].as_str().unwrap();
    let original_name = href.rsplit('/').next().unwrap();
    let original = mission
        .hq
        .config
        .node
        .data_dir
        .join("demo-feed")
        .join(original_name);
    let path = edge_doc["path"].as_str().unwrap();
    let mirrored = mission
        .alpha
        .mirror
        .as_ref()
        .unwrap()
        .current_dir()
        .join(path);
    let (original, mirrored) = (
        std::fs::read(original).unwrap(),
        std::fs::read(mirrored).unwrap(),
    );
    assert!(original.len() > 1000, "a real image");
    assert!(
        original == mirrored,
        "the bytes at the edge differ from HQ's original"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_image_reaches_the_field_when_requested_and_mirrored() {
    let dir = TempDir::new("pipeline").unwrap();
    let mission = Mission::start(&MissionConfig::new(dir.path(), Profile::lan()))
        .await
        .unwrap();
    let (id, doc) = wait_asset(&mission.alpha.store, |_, d| state(d) == "available").await;
    assert!(
        doc["preview"].as_str().is_some_and(|p| !p.is_empty()),
        "{doc}"
    );
    assert!(doc["size"].as_u64().is_some_and(|s| s > 0), "{doc}");

    let now = edge_node::services::request(&mission.alpha.store, &id)
        .await
        .unwrap();
    assert_eq!(now, "wanted");
    let (_, ready) = wait_asset(&mission.alpha.store, |i, d| i == id && state(d) == "ready").await;
    let path = ready["path"].as_str().unwrap();
    assert!(path.starts_with(&format!("assets/{id}.")), "{path}");
    let received = mirror_until_received(&mission, &id).await;
    assert_same_image(&mission, &received, &id);

    // A second request of a received asset changes nothing.
    let again = edge_node::services::request(&mission.alpha.store, &id)
        .await
        .unwrap();
    assert_eq!(again, "received");
    // An unknown asset is refused with a clear error.
    let err = edge_node::services::request(&mission.alpha.store, "nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no asset \"nope\""), "{err}");
    mission.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_the_link_is_down_is_answered_when_it_returns() {
    let dir = TempDir::new("pipeline").unwrap();
    let mission = Mission::start(&MissionConfig::new(dir.path(), Profile::lan()))
        .await
        .unwrap();
    let (id, _) = wait_asset(&mission.alpha.store, |_, d| state(d) == "available").await;
    mission.link.down();
    edge_node::services::request(&mission.alpha.store, &id)
        .await
        .unwrap();
    wait_asset(&mission.alpha.store, |i, d| {
        i == id && state(d) == "requested"
    })
    .await;
    mission.link.up();
    wait_asset(&mission.alpha.store, |i, d| i == id && state(d) == "ready").await;
    let received = mirror_until_received(&mission, &id).await;
    assert_same_image(&mission, &received, &id);
    mission.stop().await;
}
