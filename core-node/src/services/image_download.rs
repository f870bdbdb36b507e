//! Image Download: for each `IMAGE_FEED` entry, fetches the image within the limits and
//! where the pipeline's guard lets it go (http or https to public addresses, the
//! operator's allowed ones and HQ's own; file only from a local feed document), checks
//! that it is an image, stores it under a safe name in HQ's downloads directory, and
//! appends the outcome to `IMAGE_DOWNLOAD`. Transient failures (timeouts, unreachable,
//! 5xx) are retried with backoff before the asset is failed; a refusal is not retried.

use std::sync::Arc;
use std::time::Duration;

use mission::update_asset;
use protocol::entry::Append;
use protocol::log::Txn;
use protocol::service::{Ctx, Run, Service, ServiceError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Pipeline, hash, write_atomic};
use crate::{download, feed, image};

/// How often a transient failure is tried again, and the first wait (doubling).
const RETRIES: u32 = 3;
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// An `IMAGE_DOWNLOAD` entry: the outcome of one asset's download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Downloaded {
    /// The asset.
    pub(crate) id: String,
    /// Its file in the downloads directory, when it worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Downloaded {
    /// Adds this outcome to `txn`.
    pub(crate) fn append_to(&self, txn: &mut Txn) {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        txn.append(
            &mission::topic(mission::IMAGE_DOWNLOAD),
            Append::new(payload).key(self.id.clone()),
        );
    }
}

pub(crate) struct ImageDownload(pub(crate) Arc<Pipeline>);

impl Service for ImageDownload {
    fn name(&self) -> &'static str {
        "image-download"
    }

    fn description(&self) -> &'static str {
        "Downloads each IMAGE_FEED item's image, checks it and stores it at HQ (IMAGE_DOWNLOAD)"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let hq = &self.0;
            let mut input = ctx.input("", &mission::topic(mission::IMAGE_FEED))?;
            loop {
                let record = input.next().await?;
                let item: feed::FeedItem = match serde_json::from_slice(&record.entry.payload) {
                    Ok(item) => item,
                    Err(e) => {
                        let why = format!("IMAGE_FEED entry at {}: {e}", record.offset.0);
                        input.failed(&record, Txn::new(), why).await?;
                        continue;
                    }
                };
                let mut txn = Txn::new();
                match fetch(hq, &item).await {
                    Ok((file, bytes, info)) => {
                        update_asset(
                            &mut txn,
                            ctx.store(),
                            &item.id,
                            json!({
                                "state": "downloaded",
                                "file": file,
                                "size": bytes.len(),
                                "hash": hash(&bytes),
                                "format": info.format,
                                "width": info.width,
                                "height": info.height,
                                "preview": info.preview,
                                "error": null,
                            }),
                        )?;
                        let done = Downloaded {
                            id: item.id.clone(),
                            file: Some(file.clone()),
                            error: None,
                        };
                        done.append_to(&mut txn);
                        let text = format!("Downloaded {} KiB", bytes.len().div_ceil(1024));
                        ctx.tile(&item.title, text)
                            .asset(&item.id)
                            .image(format!("downloads/{file}"))
                            .append_to(&mut txn);
                        input.done(&record, txn).await?;
                    }
                    Err(why) => {
                        let why = format!("{}: {why}", item.id);
                        update_asset(
                            &mut txn,
                            ctx.store(),
                            &item.id,
                            json!({ "state": "download-failed", "error": why }),
                        )?;
                        let failed = Downloaded {
                            id: item.id.clone(),
                            file: None,
                            error: Some(why.clone()),
                        };
                        failed.append_to(&mut txn);
                        ctx.tile(&item.title, format!("Download failed: {why}"))
                            .asset(&item.id)
                            .append_to(&mut txn);
                        input.failed(&record, txn, why).await?;
                    }
                }
            }
        })
    }
}

/// Downloads and checks one item's image and stores it; returns its file name.
async fn fetch(
    hq: &Pipeline,
    item: &feed::FeedItem,
) -> Result<(String, Arc<Vec<u8>>, image::ImageInfo), String> {
    let mut wait = RETRY_FIRST;
    let mut attempt = 0;
    let bytes = loop {
        let (url, limits) = (item.href.clone(), hq.limits());
        let reach = download::Reach::Feed(hq.guard.clone());
        let fetched = tokio::task::spawn_blocking(move || download::fetch(&url, &limits, &reach))
            .await
            .map_err(|e| e.to_string())?;
        match fetched {
            Ok(bytes) => break bytes,
            Err(e) if e.is_transient() && attempt < RETRIES => {
                tracing::info!(asset = %item.id, error = %e, retry_in = ?wait, "download failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let bytes = Arc::new(bytes);
    let checked = bytes.clone();
    let info = tokio::task::spawn_blocking(move || image::inspect(&checked))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // The id came through a topic: made safe again where it becomes a path, always.
    let file = format!(
        "{}.{}",
        feed::asset_id(&item.id),
        image::extension(info.format)
    );
    write_atomic(
        hq.scratch.clone(),
        hq.downloads.clone(),
        file.clone(),
        bytes.clone(),
    )
    .await
    .map_err(|e: ServiceError| e.to_string())?;
    Ok((file, bytes, info))
}
