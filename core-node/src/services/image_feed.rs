//! IMAGE Feed: at each tick, reads the feed document, picks a few items not yet sent,
//! records each as an asset and appends it to `IMAGE_FEED`.

use std::collections::HashSet;
use std::sync::Arc;

use mission::{asset, update_asset};
use protocol::entry::Append;
use protocol::log::Txn;
use protocol::service::{Ctx, Run, Service, ServiceError};
use serde_json::json;

use super::{FeedSource, Pipeline};
use crate::{download, feed};

pub(crate) struct ImageFeed(pub(crate) Arc<Pipeline>);

impl Service for ImageFeed {
    fn name(&self) -> &'static str {
        "image-feed"
    }

    fn description(&self) -> &'static str {
        "Picks new items from the IMAGE feed, records each as an asset and appends it to IMAGE_FEED"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let hq = &self.0;
            let mut tick = tokio::time::interval(hq.settings.feed_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Each bad item is reported once, not at every tick.
            let mut reported = HashSet::new();
            let remote = !hq.feed.is_local_file();
            loop {
                tick.tick().await;
                let document = match load(hq).await {
                    Ok(document) => document,
                    Err(why) => {
                        ctx.problem(why);
                        continue;
                    }
                };
                let parsed = match feed::parse(&document) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        ctx.problem(format!("feed {}: {e}", where_from(hq)));
                        continue;
                    }
                };
                for error in &parsed.errors {
                    if reported.insert(error.to_string()) {
                        ctx.failed(format!("feed {}: {error}", where_from(hq)));
                    }
                }
                let mut picked = 0;
                for item in &parsed.items {
                    if picked >= hq.settings.feed_batch {
                        break;
                    }
                    if asset(ctx.store(), &item.id)?.is_some() {
                        continue;
                    }
                    if remote
                        && item
                            .href
                            .get(..5)
                            .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
                    {
                        // A remote feed must not make HQ read (and broadcast) its own files.
                        if reported.insert(format!("file:{}", item.id)) {
                            ctx.failed(format!(
                                "feed {}: item {}: file: links are followed only from a local feed",
                                where_from(hq),
                                item.nasa_id
                            ));
                        }
                        continue;
                    }
                    ctx.pace().await;
                    publish(&ctx, item).await?;
                    picked += 1;
                }
            }
        })
    }
}

/// Records `item` as an asset and appends it to `IMAGE_FEED`, in one transaction.
async fn publish(ctx: &Ctx, item: &feed::FeedItem) -> Result<(), ServiceError> {
    let store = ctx.store();
    let mut txn = Txn::new();
    update_asset(
        &mut txn,
        store,
        &item.id,
        json!({
            "nasa_id": item.nasa_id,
            "title": item.title,
            "description": item.description,
            "date_created": item.date_created,
            "keywords": item.keywords,
            "center": item.center,
            "href": item.href,
            "source": "feed",
            "state": "listed",
        }),
    )?;
    let payload = serde_json::to_vec(item).map_err(ServiceError::other)?;
    txn.append(
        &mission::topic(mission::IMAGE_FEED),
        Append::new(payload).key(item.id.clone()),
    );
    ctx.tile(&item.title, format!("New in the feed: {}", item.nasa_id))
        .asset(&item.id)
        .append_to(&mut txn);
    store.commit(txn).await?;
    ctx.processed();
    Ok(())
}

fn where_from(hq: &Pipeline) -> &str {
    match &hq.feed {
        FeedSource::Location(location) => location,
        FeedSource::Demo(_) => "(the demo feed)",
    }
}

/// The feed document's bytes: the demo's, or read from its path or URL.
async fn load(hq: &Pipeline) -> Result<Arc<Vec<u8>>, String> {
    let location = match &hq.feed {
        FeedSource::Demo(document) => return Ok(document.clone()),
        FeedSource::Location(location) => location.clone(),
    };
    let limits = hq.limits();
    tokio::task::spawn_blocking(move || {
        let is_url = ["http://", "https://", "file://"]
            .iter()
            .any(|scheme| location.starts_with(scheme));
        if is_url {
            // The operator named it: any address, the environment's proxy.
            download::fetch(&location, &limits, &download::Reach::Operator)
                .map_err(|e| format!("feed: {e}"))
        } else {
            std::fs::read(&location).map_err(|e| format!("feed {location}: {e}"))
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map(Arc::new)
}
