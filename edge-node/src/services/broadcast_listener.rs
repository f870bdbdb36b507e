//! Broadcast Listener: every asset HQ broadcasts becomes an `available` asset in the
//! edge's table (an asset the edge already asked for keeps its state).

use std::sync::Arc;

use mission::{self, Broadcast};
use mission::{asset, update_asset};
use protocol::log::Txn;
use protocol::service::{Ctx, Run, Service};
use serde_json::Value;

pub(crate) struct BroadcastListener;

impl Service for BroadcastListener {
    fn name(&self) -> &'static str {
        "broadcast-listener"
    }

    fn description(&self) -> &'static str {
        "Lists every asset HQ broadcasts as available at this edge"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let mut input = ctx.input("", &mission::topic(mission::ASSET_BROADCAST))?;
            loop {
                let record = input.next().await?;
                let broadcast: Broadcast = match mission::decode(&record.entry.payload) {
                    Ok(b) => b,
                    Err(e) => {
                        let why = format!(
                            "ASSET_BROADCAST entry {}:{}: {e}",
                            record.entry.id.origin, record.entry.id.seq.0
                        );
                        input.failed(&record, Txn::new(), why).await?;
                        continue;
                    }
                };
                if !mission::valid_id(&broadcast.id) {
                    let why = format!("ASSET_BROADCAST: bad asset id {:?}", broadcast.id);
                    input.failed(&record, Txn::new(), why).await?;
                    continue;
                }
                let state = asset(ctx.store(), &broadcast.id)?
                    .and_then(|d| d.get("state").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| "available".to_owned());
                let mut doc = serde_json::to_value(&broadcast).unwrap_or_default();
                doc["state"] = state.into();
                let mut txn = Txn::new();
                update_asset(&mut txn, ctx.store(), &broadcast.id, doc)?;
                let text = format!("Available ({} KiB)", broadcast.size.div_ceil(1024));
                ctx.tile(&broadcast.title, text)
                    .asset(&broadcast.id)
                    .preview(Some(broadcast.preview.clone()))
                    .append_to(&mut txn);
                input.done(&record, txn).await?;
            }
        })
    }
}
