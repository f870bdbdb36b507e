//! The edge's services (DESIGN.md, "The mission pipeline"): Broadcast Listener, Asset
//! Request and Asset Viewer, and [`request`], the operator's "I want this one".
//!
//! An asset's document in the edge's `assets` table goes `available` (heard of) ->
//! `wanted` (the operator asked) -> `requested` (the request is in the log; it crosses
//! when the link allows) -> `ready` (HQ put it in the mission volume) or `not-found` ->
//! `received` (its file is in the mirror, verified).

mod asset_request;
mod asset_viewer;
mod broadcast_listener;

use std::sync::Arc;

use protocol::log::{Store, Txn};
use protocol::mission;
use protocol::node::Node;
use protocol::service::{ServiceError, ServicesError};
use serde_json::{Map, Value};

/// Adds the edge's services to the node.
pub async fn add(node: &Node) -> Result<(), ServicesError> {
    let services = node.services();
    let start = node.config().pipeline.start_services;
    services
        .add(Arc::new(broadcast_listener::BroadcastListener), start)
        .await?;
    services
        .add(Arc::new(asset_request::AssetRequest), start)
        .await?;
    if let Some(mirror) = node.mirror() {
        let viewer = asset_viewer::AssetViewer(mirror.clone());
        services.add(Arc::new(viewer), start).await?;
    }
    Ok(())
}

pub use protocol::mission::{RequestError, request};

/// An asset's document, if the table has it.
fn asset(store: &Store, id: &str) -> Result<Option<Map<String, Value>>, ServiceError> {
    Ok(match store.doc(&mission::assets(), id)? {
        Some(Value::Object(doc)) => Some(doc),
        _ => None,
    })
}

/// Adds to `txn` the asset's document with `changes` applied (made if missing).
fn update_asset(
    txn: &mut Txn,
    store: &Store,
    id: &str,
    changes: Value,
) -> Result<Map<String, Value>, ServiceError> {
    let mut doc = asset(store, id)?.unwrap_or_default();
    doc.insert("id".into(), Value::from(id));
    if let Value::Object(changes) = changes {
        for (k, v) in changes {
            doc.insert(k, v);
        }
    }
    txn.put(&mission::assets(), id, Value::Object(doc.clone()));
    Ok(doc)
}
