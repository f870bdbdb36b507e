//! Asset Request: for each asset the operator marked `wanted`, appends an
//! `ASSET_REQUEST` (it crosses to HQ when the link allows) and marks it `requested`.
//! It reads the assets table's change feed, so a request survives a restart.

use std::sync::Arc;

use mission::{self, Request};
use mission::{asset, update_asset};
use protocol::entry::Append;
use protocol::log::Txn;
use protocol::service::{Ctx, Run, Service};
use serde_json::{Value, json};

pub(crate) struct AssetRequest;

impl Service for AssetRequest {
    fn name(&self) -> &'static str {
        "asset-request"
    }

    fn description(&self) -> &'static str {
        "Asks HQ for each asset the operator requested (ASSET_REQUEST)"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let mut input = ctx.input("", &mission::assets().feed())?;
            loop {
                let record = input.next().await?;
                let id = record
                    .entry
                    .key
                    .as_deref()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .unwrap_or_default()
                    .to_owned();
                let doc = asset(ctx.store(), &id)?;
                let state = doc
                    .as_ref()
                    .and_then(|d| d.get("state"))
                    .and_then(Value::as_str);
                if state != Some("wanted") {
                    input.skip(&record).await?;
                    continue;
                }
                let title = doc
                    .as_ref()
                    .and_then(|d| d.get("title"))
                    .and_then(Value::as_str)
                    .unwrap_or(&id)
                    .to_owned();
                let mut txn = Txn::new();
                let request = Request { asset: id.clone() };
                txn.append(
                    &mission::topic(mission::ASSET_REQUEST),
                    Append::new(mission::encode(&request)).key(id.clone()),
                );
                let now = protocol::entry::Timestamp::now().0;
                update_asset(
                    &mut txn,
                    ctx.store(),
                    &id,
                    json!({ "state": "requested", "requested_ms": now }),
                )?;
                ctx.tile(title, "Requested from HQ")
                    .asset(&id)
                    .append_to(&mut txn);
                input.done(&record, txn).await?;
            }
        })
    }
}
