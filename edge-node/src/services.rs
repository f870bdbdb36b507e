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

use protocol::node::Node;
use protocol::service::ServicesError;

/// Adds the edge's services to the node (each starts if it was running, or at the first
/// start if `pipeline.start_services`).
pub async fn add(node: &Node, pipeline: &mission::PipelineSettings) -> Result<(), ServicesError> {
    let services = node.services();
    let start = pipeline.start_services;
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

pub use mission::{RequestError, request};
