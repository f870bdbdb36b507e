//! Asset Response: for each `ASSET_REQUEST`, copies the asset's file into the mission
//! volume (where the edge's next mirror picks it up) and appends an `ASSET_RESPONSE`
//! addressed to the edge that asked, or a "not found" with the reason.

use std::sync::Arc;

use mission::{self, Request, Response};
use mission::{asset, update_asset};
use protocol::entry::{Append, Record};
use protocol::log::Txn;
use protocol::service::{Ctx, Run, Service, ServiceError};
use serde_json::{Value, json};

use super::{Pipeline, hash, write_atomic};

/// How long the volume's watcher may take to see a file written there.
const VOLUME_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct AssetResponse(pub(crate) Arc<Pipeline>);

impl Service for AssetResponse {
    fn name(&self) -> &'static str {
        "asset-response"
    }

    fn description(&self) -> &'static str {
        "Puts each requested asset into the mission volume and answers the edge (ASSET_RESPONSE)"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let mut input = ctx.input("", &mission::topic(mission::ASSET_REQUEST))?;
            loop {
                let record = input.next().await?;
                let edge = record.entry.id.origin.clone();
                let response = respond(&self.0, &ctx, &record).await?;
                let mut txn = Txn::new();
                txn.append(
                    &mission::topic(mission::ASSET_RESPONSE),
                    Append::new(mission::encode(&response))
                        .key(response.asset().to_owned())
                        .to(edge.clone()),
                );
                match &response {
                    Response::Ready { asset: id, .. } => {
                        let mut requested_by = asset(ctx.store(), id)?
                            .and_then(|d| d.get("requested_by").cloned())
                            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                            .unwrap_or_default();
                        if !requested_by.iter().any(|e| e == edge.as_str()) {
                            requested_by.push(edge.as_str().to_owned());
                        }
                        update_asset(
                            &mut txn,
                            ctx.store(),
                            id,
                            json!({ "requested_by": requested_by }),
                        )?;
                        let title = title(&ctx, id)?;
                        ctx.tile(title, format!("Sent to the mission volume for {edge}"))
                            .asset(id)
                            .append_to(&mut txn);
                        input.done(&record, txn).await?;
                    }
                    Response::NotFound { asset: id, reason } => {
                        let why = format!("request from {edge} for {id:?}: {reason}");
                        ctx.tile(id.clone(), format!("Not found for {edge}: {reason}"))
                            .asset(id)
                            .append_to(&mut txn);
                        input.failed(&record, txn, why).await?;
                    }
                }
            }
        })
    }
}

/// The answer to one request; copies the file into the volume when there is one.
async fn respond(hq: &Pipeline, ctx: &Ctx, record: &Record) -> Result<Response, ServiceError> {
    let request: Request = match mission::decode(&record.entry.payload) {
        Ok(request) => request,
        Err(e) => {
            return Ok(Response::NotFound {
                asset: String::new(),
                reason: format!("the request is not an asset request: {e}"),
            });
        }
    };
    let not_found = |reason: &str| Response::NotFound {
        asset: request.asset.clone(),
        reason: reason.to_owned(),
    };
    let Some(doc) = asset(ctx.store(), &request.asset)? else {
        return Ok(not_found("no such asset at HQ"));
    };
    let Some(file) = doc.get("file").and_then(Value::as_str) else {
        return Ok(not_found("HQ has not downloaded it (yet)"));
    };
    // A file name, never a path: it is joined to the downloads and the volume.
    if std::path::Path::new(file).file_name() != Some(std::ffi::OsStr::new(file)) {
        return Ok(not_found("its file name is not a plain name"));
    }
    let Ok(bytes) = tokio::fs::read(hq.downloads.join(file)).await else {
        return Ok(not_found("its file is missing at HQ"));
    };
    let dir = hq.volume.join(mission::VOLUME_DIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ServiceError::other(format!("cannot make {}: {e}", dir.display())))?;
    let (size, hash) = (bytes.len() as u64, hash(&bytes));
    let current = tokio::fs::read(dir.join(file)).await.ok();
    if current.as_deref() != Some(&bytes[..]) {
        write_atomic(hq.scratch.clone(), dir, file.to_owned(), Arc::new(bytes)).await?;
    }
    let path = format!("{}/{file}", mission::VOLUME_DIR);
    if let Some(source) = &hq.source {
        // Answer only once a mirror would find the file.
        source
            .holds(&path, &hash, VOLUME_PATIENCE)
            .await
            .map_err(ServiceError::other)?;
    }
    Ok(Response::Ready {
        asset: request.asset.clone(),
        path,
        size,
        hash,
    })
}

fn title(ctx: &Ctx, id: &str) -> Result<String, ServiceError> {
    Ok(asset(ctx.store(), id)?
        .and_then(|d| d.get("title").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| id.to_owned()))
}
