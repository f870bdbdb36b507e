//! Ingest: files dropped into HQ's ingest directory become assets, as if the feed had
//! listed and downloaded them. Each is tracked in the `loads` table: `ready` (seen),
//! `ingesting`, `ingested` (the asset exists), then `archived` (moved to
//! `ingest/archive`), or `errored` with the reason (moved to `ingest/errored`). A file is taken only once its size and modification time
//! held still for [`STABLE`], so a file still being written is never taken half-written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mission::update_asset;
use notify::Watcher as _;
use notify::event::{AccessKind, AccessMode, Event, EventKind};
use protocol::log::{TableName, Txn};
use protocol::service::{Ctx, Run, Service, ServiceError};
use serde_json::{Value, json};

use super::image_download::Downloaded;
use super::{Pipeline, hash, write_atomic};
use crate::{feed, image};

/// How long a file must hold still before it is taken.
const STABLE: Duration = Duration::from_secs(1);

/// The table of loads: one document per file dropped into the ingest directory.
const LOADS: &str = "loads";

pub(crate) struct Ingest(pub(crate) Arc<Pipeline>);

/// A file's size and modification time, and since when they held.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    size: u64,
    modified: SystemTime,
    since: Instant,
}

impl Service for Ingest {
    fn name(&self) -> &'static str {
        "ingest"
    }

    fn description(&self) -> &'static str {
        "Turns image files dropped into HQ's ingest directory into assets, tracked as loads"
    }

    fn run(self: Arc<Self>, ctx: Ctx) -> Run {
        Box::pin(async move {
            let hq = &self.0;
            let dir = hq.ingest.clone();
            let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
            let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
                // Listing the directory opens it: were opens and reads wake-ups, each
                // listing would wake the next one, and the service would spin forever.
                if !event.is_ok_and(|e| is_read(&e.kind)) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| ServiceError::other(format!("cannot watch {}: {e}", dir.display())))?;
            watcher
                .watch(&dir, notify::RecursiveMode::NonRecursive)
                .map_err(|e| ServiceError::other(format!("cannot watch {}: {e}", dir.display())))?;
            let mut seen: HashMap<String, Seen> = HashMap::new();
            loop {
                let files = list(&dir).await?;
                seen.retain(|name, _| files.iter().any(|(n, _, _)| n == name));
                let mut waiting = false;
                for (name, size, modified) in files {
                    let now = Instant::now();
                    let entry = seen.entry(name.clone()).or_insert(Seen {
                        size,
                        modified,
                        since: now,
                    });
                    if (entry.size, entry.modified) != (size, modified) {
                        *entry = Seen {
                            size,
                            modified,
                            since: now,
                        };
                    }
                    let fresh = entry.since == now;
                    if fresh {
                        ready(&ctx, &name, size, modified).await?;
                    }
                    if now.duration_since(entry.since) < STABLE {
                        waiting = true;
                        continue;
                    }
                    seen.remove(&name);
                    ctx.pace().await;
                    take(hq, &ctx, &name).await?;
                }
                if waiting {
                    // Look again when the file may have held still long enough.
                    let _ = tokio::time::timeout(STABLE / 2, events.recv()).await;
                } else if events.recv().await.is_none() {
                    return Err(ServiceError::other(
                        "the ingest directory's watcher stopped",
                    ));
                }
                while events.try_recv().is_ok() {}
            }
        })
    }
}

/// An access that changes nothing: an open, a read, a close after reading. A close
/// after writing is a change (a file may be complete).
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

fn loads() -> TableName {
    TableName::new(LOADS).expect("`loads` is a valid table name")
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Regular files directly in `dir` (not hidden, not `.part`): name, size, modified.
async fn list(dir: &Path) -> Result<Vec<(String, u64, SystemTime)>, ServiceError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| ServiceError::other(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if name.starts_with('.') || name.ends_with(".part") || !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(UNIX_EPOCH);
            files.push((name, meta.len(), modified));
        }
        files.sort();
        Ok(files)
    })
    .await
    .map_err(ServiceError::other)?
}

/// Records a newly seen file as a `ready` load (unless it is one already taken).
async fn ready(ctx: &Ctx, name: &str, size: u64, modified: SystemTime) -> Result<(), ServiceError> {
    let id = feed::asset_id(name);
    let current = ctx.store().doc(&loads(), &id)?;
    if current
        .as_ref()
        .and_then(|d| d.get("state"))
        .and_then(Value::as_str)
        .is_some_and(|s| s == "ingested" || s == "archived")
    {
        return Ok(());
    }
    let mut txn = Txn::new();
    txn.put(
        &loads(),
        &id,
        json!({ "name": name, "size": size, "modified_ms": millis(modified), "state": "ready" }),
    );
    ctx.store().commit(txn).await?;
    Ok(())
}

/// Ingests one file that held still: an asset and an `IMAGE_DOWNLOAD` entry, or an
/// errored load; then moves the file out of the way.
async fn take(hq: &Pipeline, ctx: &Ctx, name: &str) -> Result<(), ServiceError> {
    let id = feed::asset_id(name);
    let path = hq.ingest.join(name);
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return Ok(()); // Gone meanwhile.
    };
    let digest = hash(&bytes);
    let load = ctx.store().doc(&loads(), &id)?.unwrap_or_default();
    let state = load.get("state").and_then(Value::as_str);
    let same = load.get("hash").and_then(Value::as_str) == Some(&digest);
    if matches!(state, Some("ingested" | "archived")) && same {
        // Taken before a crash, not yet moved.
        return archive(
            hq,
            ctx,
            name,
            &id,
            load.as_object().cloned().unwrap_or_default(),
        )
        .await;
    }
    let mut txn = Txn::new();
    let mut doc =
        json!({ "name": name, "size": bytes.len(), "hash": digest, "state": "ingesting" });
    txn.put(&loads(), &id, doc.clone());
    ctx.store().commit(txn).await?;

    let bytes = Arc::new(bytes);
    let checked = bytes.clone();
    let inspected = tokio::task::spawn_blocking(move || image::inspect(&checked))
        .await
        .map_err(ServiceError::other)?;
    let mut txn = Txn::new();
    match inspected {
        Ok(info) => {
            let asset = feed::asset_id(&format!("ingest-{name}"));
            let file = format!("{asset}.{}", image::extension(info.format));
            write_atomic(
                hq.scratch.clone(),
                hq.downloads.clone(),
                file.clone(),
                bytes.clone(),
            )
            .await?;
            update_asset(
                &mut txn,
                ctx.store(),
                &asset,
                json!({
                    "title": name,
                    "description": "Dropped into HQ's ingest directory",
                    "source": "ingest",
                    "state": "downloaded",
                    "file": file,
                    "size": bytes.len(),
                    "hash": digest,
                    "format": info.format,
                    "width": info.width,
                    "height": info.height,
                    "preview": info.preview,
                }),
            )?;
            let done = Downloaded {
                id: asset.clone(),
                file: Some(file.clone()),
                error: None,
            };
            done.append_to(&mut txn);
            doc["state"] = "ingested".into();
            doc["asset"] = asset.clone().into();
            txn.put(&loads(), &id, doc.clone());
            ctx.tile(name, "Ingested")
                .asset(&asset)
                .image(format!("downloads/{file}"))
                .append_to(&mut txn);
            ctx.store().commit(txn).await?;
            ctx.processed();
            let doc = doc.as_object().cloned().unwrap_or_default();
            archive(hq, ctx, name, &id, doc).await
        }
        Err(e) => {
            // Moved first: the file is kept either way, and `errored` means it is aside.
            park(&hq.ingest, "errored", name).await?;
            let why = format!("{name}: {e}");
            doc["state"] = "errored".into();
            doc["error"] = why.clone().into();
            txn.put(&loads(), &id, doc);
            ctx.tile(name, format!("Not ingested: {e}"))
                .append_to(&mut txn);
            ctx.store().commit(txn).await?;
            ctx.failed(why);
            Ok(())
        }
    }
}

/// Moves an ingested file into `ingest/archive/` and marks its load `archived`.
async fn archive(
    hq: &Pipeline,
    ctx: &Ctx,
    name: &str,
    id: &str,
    mut load: serde_json::Map<String, Value>,
) -> Result<(), ServiceError> {
    park(&hq.ingest, "archive", name).await?;
    load.insert("state".into(), "archived".into());
    let mut txn = Txn::new();
    txn.put(&loads(), id, Value::Object(load));
    ctx.store().commit(txn).await?;
    Ok(())
}

/// Moves an ingested file into `ingest/<to>/`.
async fn park(ingest: &Path, to: &str, name: &str) -> Result<(), ServiceError> {
    let dir: PathBuf = ingest.join(to);
    tokio::fs::create_dir_all(&dir)
        .await
        .and(tokio::fs::rename(ingest.join(name), dir.join(name)).await)
        .map_err(|e| ServiceError::other(format!("cannot move {name} into {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};

    use super::is_read;

    #[test]
    fn only_accesses_that_change_nothing_are_ignored() {
        // The service's own listing makes these: waking on them would spin.
        assert!(is_read(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_read(&EventKind::Access(AccessKind::Read)));
        // A writer done, a new file, more bytes: look again.
        assert!(!is_read(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_read(&EventKind::Create(CreateKind::File)));
        assert!(!is_read(&EventKind::Modify(ModifyKind::Any)));
    }
}
