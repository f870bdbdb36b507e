//! HQ's services (DESIGN.md, "The mission pipeline"): IMAGE Feed, Image Download, Asset
//! Broadcast, Asset Response and Ingest, and what they share: the node's directories and
//! the assets table.
//!
//! An asset's document in the `assets` table goes `listed` (the feed picked it) ->
//! `downloaded` or `download-failed` -> `broadcast`; ingested files enter at `downloaded`.
//! Files are written aside and renamed into place, so that a crash never leaves half a
//! file under a final name, and writing one twice is harmless.

mod asset_broadcast;
mod asset_response;
mod image_download;
mod image_feed;
mod ingest;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::node::Node;
use protocol::service::{ServiceError, Services, ServicesError};

use crate::download;

/// Where the feed document comes from.
#[derive(Debug, Clone)]
pub enum FeedSource {
    /// A path or an http, https or file URL, read at every tick.
    Location(String),
    /// The built-in demo feed's document.
    Demo(Arc<Vec<u8>>),
}

impl FeedSource {
    /// Whether the feed document is a file on this machine (a path or a `file` URL):
    /// only such a feed's items may name `file` URLs.
    pub fn is_local_file(&self) -> bool {
        match self {
            FeedSource::Location(location) => {
                let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
                !lower.starts_with("http://") && !lower.starts_with("https://")
            }
            FeedSource::Demo(_) => false,
        }
    }
}

/// What HQ's services share.
#[derive(Debug)]
pub struct Pipeline {
    /// Downloaded images: `<data_dir>/downloads`.
    pub downloads: PathBuf,
    /// The mission volume (the mirror source).
    pub volume: PathBuf,
    /// The ingest directory.
    pub ingest: PathBuf,
    /// Scratch space on the data directory's file system, for files renamed into place.
    pub scratch: PathBuf,
    /// The feed document.
    pub feed: FeedSource,
    /// The pipeline's settings.
    pub settings: mission::PipelineSettings,
    /// The served mission volume, to know when a file written there is mirrorable.
    pub source: Option<protocol::link::MirrorSource>,
    /// What the feed's items may reach: http(s) to public addresses, the operator's
    /// `pipeline.download_allow`, HQ's own HTTP address; `file` from a local feed only.
    pub guard: Arc<download::Guard>,
}

impl Pipeline {
    /// HQ's directories from the node's config, created if missing, and the pipeline's
    /// `settings`. `own_http` is HQ's HTTP address as a download reaches it (the demo
    /// feed's images are there).
    pub fn new(
        config: &protocol::config::Config,
        settings: &mission::PipelineSettings,
        feed: FeedSource,
        own_http: SocketAddr,
        source: Option<protocol::link::MirrorSource>,
    ) -> std::io::Result<Pipeline> {
        let guard = download::Guard {
            files: feed.is_local_file(),
            allow: settings.download_allow.clone(),
            own: Some(own_http),
            // The read token is enough to read files, and is the one to risk.
            own_token: config
                .http
                .read_token
                .clone()
                .or_else(|| config.http.token.clone()),
        };
        let hq = Pipeline {
            downloads: mission::downloads_dir(config),
            volume: config.volume_dir(),
            ingest: mission::ingest_dir(config),
            scratch: config.node.data_dir.join("tmp"),
            feed,
            settings: settings.clone(),
            source,
            guard: Arc::new(guard),
        };
        for dir in [&hq.downloads, &hq.ingest, &hq.scratch, &hq.volume] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(hq)
    }

    fn limits(&self) -> download::Limits {
        download::Limits {
            max_bytes: self.settings.max_download_bytes,
            timeout: self.settings.download_timeout,
            ..download::Limits::default()
        }
    }
}

/// Adds HQ's services to the node (each starts if it was running, or at the first start
/// if `pipeline.start_services`).
pub async fn add(node: &Node, hq: Arc<Pipeline>) -> Result<(), ServicesError> {
    let services: &Services = node.services();
    let start = hq.settings.start_services;
    services
        .add(Arc::new(image_feed::ImageFeed(hq.clone())), start)
        .await?;
    services
        .add(Arc::new(image_download::ImageDownload(hq.clone())), start)
        .await?;
    services
        .add(Arc::new(asset_broadcast::AssetBroadcast), start)
        .await?;
    services
        .add(Arc::new(asset_response::AssetResponse(hq.clone())), start)
        .await?;
    services.add(Arc::new(ingest::Ingest(hq)), start).await?;
    Ok(())
}

/// Writes `bytes` to `dir/name` through a file in `scratch` renamed into place (on
/// another file system: a `.part` file beside the target), synced, so that no reader
/// ever sees half of it.
pub(crate) async fn write_atomic(
    scratch: PathBuf,
    dir: PathBuf,
    name: String,
    bytes: Arc<Vec<u8>>,
) -> Result<PathBuf, ServiceError> {
    let shown = name.clone();
    tokio::task::spawn_blocking(move || {
        let target = dir.join(&name);
        let write = |path: &Path| -> std::io::Result<()> {
            let mut file = std::fs::File::create(path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        };
        let aside = scratch.join(format!("{name}.part"));
        write(&aside)?;
        if std::fs::rename(&aside, &target).is_err() {
            let _ = std::fs::remove_file(&aside);
            let part = dir.join(format!(".{name}.part"));
            write(&part)?;
            std::fs::rename(&part, &target)?;
        }
        if let Ok(dir) = std::fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok::<_, std::io::Error>(target)
    })
    .await
    .map_err(ServiceError::other)?
    .map_err(|e| ServiceError::other(format!("cannot write {shown}: {e}")))
}

/// The BLAKE3 hash of `bytes`, hex.
pub(crate) fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
