//! Asset Viewer: records HQ's answers (`ASSET_RESPONSE`), and once an answered asset's
//! file is in the edge's mirror (after the operator mirrored) and matches its hash,
//! marks it `received` and shows it as a tile.

use std::sync::Arc;

use mission::{self, Response};
use mission::{asset, update_asset};
use protocol::link::Mirror;
use protocol::log::Txn;
use protocol::mirror::{MirrorState, RelPath};
use protocol::service::{Ctx, Run, Service, ServiceError};
use serde_json::{Value, json};

pub(crate) struct AssetViewer(pub(crate) Mirror);

impl Service for AssetViewer {
    fn name(&self) -> &'static str {
        "asset-viewer"
    }

    fn description(&self) -> &'static str {
        "Shows each requested asset once its file arrived in the mirror"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let mirror = &self.0;
            let mut input = ctx.input("", &mission::topic(mission::ASSET_RESPONSE))?;
            let mut status = mirror.watch();
            // Whatever arrived while the service was stopped.
            receive(&ctx, mirror).await?;
            loop {
                tokio::select! {
                    record = input.next() => {
                        let record = record?;
                        let response: Response = match mission::decode(&record.entry.payload) {
                            Ok(r) => r,
                            Err(e) => {
                                let why = format!("ASSET_RESPONSE entry {}: {e}", record.entry.id.seq.0);
                                input.failed(&record, Txn::new(), why).await?;
                                continue;
                            }
                        };
                        let id = response.asset().to_owned();
                        if !mission::valid_id(&id) {
                            let why = format!("ASSET_RESPONSE entry {}: bad asset id {id:?}", record.entry.id.seq.0);
                            input.failed(&record, Txn::new(), why).await?;
                            continue;
                        }
                        let mut txn = Txn::new();
                        let title = title(&ctx, &id)?;
                        match &response {
                            Response::Ready { path, size, hash, .. } => {
                                update_asset(&mut txn, ctx.store(), &id, json!({
                                    "state": "ready", "path": path, "size": size, "hash": hash,
                                }))?;
                                ctx.tile(title, "Ready at HQ: mirror to fetch it").asset(&id).append_to(&mut txn);
                                input.done(&record, txn).await?;
                            }
                            Response::NotFound { reason, .. } => {
                                update_asset(&mut txn, ctx.store(), &id, json!({
                                    "state": "not-found", "error": reason,
                                }))?;
                                ctx.tile(title, format!("Not found at HQ: {reason}")).asset(&id).append_to(&mut txn);
                                input.failed(&record, txn, format!("{id}: {reason}")).await?;
                            }
                        }
                        receive(&ctx, mirror).await?;
                    }
                    changed = status.changed() => {
                        if changed.is_err() {
                            return Err(ServiceError::other("the mirror stopped"));
                        }
                        let done = status.borrow_and_update().state == MirrorState::Done;
                        if done {
                            receive(&ctx, mirror).await?;
                        }
                    }
                }
            }
        })
    }
}

fn title(ctx: &Ctx, id: &str) -> Result<String, ServiceError> {
    Ok(asset(ctx.store(), id)?
        .and_then(|d| d.get("title").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| id.to_owned()))
}

/// Marks `received` every `ready` asset whose file is in the mirror with its hash.
async fn receive(ctx: &Ctx, mirror: &Mirror) -> Result<(), ServiceError> {
    let docs = ctx.store().docs(&mission::assets())?;
    let current = mirror.current_dir();
    for (id, doc) in docs {
        if doc.get("state").and_then(Value::as_str) != Some("ready") {
            continue;
        }
        let (Some(path), Some(hash)) = (
            doc.get("path").and_then(Value::as_str),
            doc.get("hash").and_then(Value::as_str),
        ) else {
            continue;
        };
        // The path came from HQ: it must stay inside the mirror.
        let Ok(path) = RelPath::new(path) else {
            ctx.problem(format!(
                "{id}: HQ's path {path:?} is not a path inside the volume"
            ));
            continue;
        };
        let Ok(bytes) = tokio::fs::read(current.join(path.as_str())).await else {
            continue; // Not mirrored yet.
        };
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            continue; // An older version: the next mirror brings the new one.
        }
        let mut txn = Txn::new();
        update_asset(&mut txn, ctx.store(), &id, json!({ "state": "received" }))?;
        let title = doc.get("title").and_then(Value::as_str).unwrap_or(&id);
        ctx.tile(title, "Received")
            .asset(&id)
            .image(format!("mirror/{}", path.as_str()))
            .append_to(&mut txn);
        ctx.store().commit(txn).await?;
        ctx.processed();
    }
    Ok(())
}
