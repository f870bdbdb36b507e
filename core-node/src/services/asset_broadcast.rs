//! Asset Broadcast: for each successful download, appends the asset's metadata and a
//! tiny preview (never the image) to `ASSET_BROADCAST`, which reaches every edge.

use std::sync::Arc;

use mission::{self, Broadcast};
use mission::{asset, update_asset};
use protocol::entry::Append;
use protocol::log::Txn;
use protocol::service::{Ctx, Run, Service, ServiceError};
use serde_json::{Map, Value, json};

use super::image_download::Downloaded;

pub(crate) struct AssetBroadcast;

impl Service for AssetBroadcast {
    fn name(&self) -> &'static str {
        "asset-broadcast"
    }

    fn description(&self) -> &'static str {
        "Tells every edge about each downloaded asset: metadata and a preview (ASSET_BROADCAST)"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let mut input = ctx.input("", &mission::topic(mission::IMAGE_DOWNLOAD))?;
            loop {
                let record = input.next().await?;
                let outcome: Downloaded = match serde_json::from_slice(&record.entry.payload) {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        let why = format!("IMAGE_DOWNLOAD entry at {}: {e}", record.offset.0);
                        input.failed(&record, Txn::new(), why).await?;
                        continue;
                    }
                };
                if outcome.file.is_none() {
                    // A failed download: nothing to tell the field.
                    input.done(&record, Txn::new()).await?;
                    continue;
                }
                let Some(doc) = asset(ctx.store(), &outcome.id)? else {
                    let why = format!("{}: downloaded, but not in the assets table", outcome.id);
                    input.failed(&record, Txn::new(), why).await?;
                    continue;
                };
                let broadcast = match broadcast(&outcome.id, &doc) {
                    Ok(b) => b,
                    Err(why) => {
                        input.failed(&record, Txn::new(), why).await?;
                        continue;
                    }
                };
                let mut txn = Txn::new();
                txn.append(
                    &mission::topic(mission::ASSET_BROADCAST),
                    Append::new(mission::encode(&broadcast)).key(broadcast.id.clone()),
                );
                update_asset(
                    &mut txn,
                    ctx.store(),
                    &outcome.id,
                    json!({ "state": "broadcast" }),
                )?;
                let text = format!(
                    "Broadcast to the field ({} KiB)",
                    broadcast.size.div_ceil(1024)
                );
                ctx.tile(&broadcast.title, text)
                    .asset(&broadcast.id)
                    .preview(Some(broadcast.preview.clone()))
                    .append_to(&mut txn);
                input.done(&record, txn).await?;
            }
        })
    }
}

/// The broadcast message from an asset's document.
fn broadcast(id: &str, doc: &Map<String, Value>) -> Result<Broadcast, ServiceError> {
    let mut doc = doc.clone();
    doc.insert("id".into(), Value::from(id));
    serde_json::from_value(Value::Object(doc))
        .map_err(|e| ServiceError::other(format!("{id}: the asset's document lacks {e}")))
}
