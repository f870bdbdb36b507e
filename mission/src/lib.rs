//! The mission application on the Tether framework (`protocol`), shared by HQ
//! (`core-node`) and the edges (`edge-node`): the pipeline's vocabulary (its topics, the
//! assets table, and the messages that cross the link; DESIGN.md, "The mission
//! pipeline"), and its part of the node's config ([`Settings`]: the `[pipeline]`
//! section, the default topics and their writers), which the binaries register with
//! `protocol::node::main_for`.
//!
//! Every message is JSON, so that integrators read it with any tool; each has the
//! asset's id, which is safe as a file name and a table id (HQ makes it so).
//!
//! IO: none but the store it is handed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use protocol::config::Config;
use protocol::entry::TopicName;
use protocol::log::{ReadError, Store, TableName, Txn, WriteError};

mod settings;

pub use settings::{PipelineSettings, RawSettings, Settings};

/// Every node: the operators' own messages (the CLI's and the API's `publish`).
pub const MESSAGES: &str = "MESSAGES";
/// HQ: items picked from the feed (local).
pub const IMAGE_FEED: &str = "IMAGE_FEED";
/// HQ: each download's outcome (local).
pub const IMAGE_DOWNLOAD: &str = "IMAGE_DOWNLOAD";
/// HQ to every edge: an asset exists ([`Broadcast`]).
pub const ASSET_BROADCAST: &str = "ASSET_BROADCAST";
/// An edge to HQ: send me this asset ([`Request`]).
pub const ASSET_REQUEST: &str = "ASSET_REQUEST";
/// HQ to the requesting edge (`to`): the asset is in the mission volume, or not found
/// ([`Response`]).
pub const ASSET_RESPONSE: &str = "ASSET_RESPONSE";
/// The table of assets, on every node: at HQ what it fetched, at an edge what it heard of.
pub const ASSETS: &str = "assets";
/// Where HQ puts requested assets in the mission volume (and the edge finds them in its
/// mirror).
pub const VOLUME_DIR: &str = "assets";

/// Where HQ keeps downloaded images: `<data_dir>/downloads`.
pub fn downloads_dir(config: &Config) -> PathBuf {
    config.node.data_dir.join("downloads")
}

/// HQ's ingest directory, watched for files to turn into assets: `<data_dir>/ingest`.
pub fn ingest_dir(config: &Config) -> PathBuf {
    config.node.data_dir.join("ingest")
}

/// A topic of the pipeline by its constant.
pub fn topic(name: &str) -> TopicName {
    TopicName::new(name).expect("the pipeline's topic names are valid")
}

/// The assets table.
pub fn assets() -> TableName {
    TableName::new(ASSETS).expect("`assets` is a valid table name")
}

/// What HQ tells every edge about an asset: its metadata and a tiny preview, never the
/// image itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    /// The asset's id (safe as a file name).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// When it was made, as the source said it.
    #[serde(default)]
    pub date_created: String,
    /// Its keywords.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The centre that made it.
    #[serde(default)]
    pub center: String,
    /// `png`, `jpeg`, ...
    pub format: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The file's size in bytes: what a request will cost on the link.
    pub size: u64,
    /// The file's BLAKE3 hash, hex.
    pub hash: String,
    /// A ThumbHash of the image, base64 (a few dozen bytes).
    #[serde(default)]
    pub preview: String,
}

/// An edge asks HQ for an asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The asset's id.
    pub asset: String,
}

/// HQ's answer to a [`Request`], addressed to the edge that asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Response {
    /// The asset's file is in the mission volume at `path`: mirror to fetch it.
    Ready {
        /// The asset's id.
        asset: String,
        /// Its path in the mission volume (and so in the edge's mirror).
        path: String,
        /// Its size in bytes.
        size: u64,
        /// Its BLAKE3 hash, hex.
        hash: String,
    },
    /// HQ has no such asset, or could not provide it.
    NotFound {
        /// The asset's id, as asked.
        asset: String,
        /// Why.
        reason: String,
    },
}

impl Response {
    /// The asset it answers for.
    pub fn asset(&self) -> &str {
        match self {
            Response::Ready { asset, .. } | Response::NotFound { asset, .. } => asset,
        }
    }
}

/// Whether `id` can name an asset: 1 to 100 bytes, no control characters. A message
/// from another node with any other id is refused as that message, never written.
pub fn valid_id(id: &str) -> bool {
    (1..=100).contains(&id.len()) && !id.chars().any(char::is_control)
}

/// An asset's document in `store`'s assets table, if it has one.
pub fn asset(
    store: &Store,
    id: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ReadError> {
    Ok(match store.doc(&assets(), id)? {
        Some(serde_json::Value::Object(doc)) => Some(doc),
        _ => None,
    })
}

/// Adds to `txn` the asset's document with `changes` (a JSON object) applied: each key
/// set, or removed where its value is `null`; the document is made if missing. Returns
/// the document as written.
pub fn update_asset(
    txn: &mut Txn,
    store: &Store,
    id: &str,
    changes: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, ReadError> {
    let mut doc = asset(store, id)?.unwrap_or_default();
    doc.insert("id".into(), serde_json::Value::from(id));
    if let serde_json::Value::Object(changes) = changes {
        for (key, value) in changes {
            if value.is_null() {
                doc.remove(&key);
            } else {
                doc.insert(key, value);
            }
        }
    }
    txn.put(&assets(), id, serde_json::Value::Object(doc.clone()));
    Ok(doc)
}

/// Decodes a pipeline message from an entry's payload.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// Encodes a pipeline message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // The messages are plain structs of strings and numbers: they always serialize.
    serde_json::to_vec(message).unwrap_or_default()
}

/// Why an operator's request for an asset was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The edge never heard of it.
    #[error("no asset {0:?} at this edge: only broadcast assets can be requested")]
    Unknown(String),
    /// The table could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The choice could not be recorded.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// At an edge: marks an asset as wanted, for the Asset Request service to ask HQ for it
/// (at once if the node runs, else at its next start); returns the asset's state
/// afterwards. An asset already requested or received is left alone.
pub async fn request(store: &Store, id: &str) -> Result<String, RequestError> {
    let Some(serde_json::Value::Object(mut doc)) = store.doc(&assets(), id)? else {
        return Err(RequestError::Unknown(id.to_owned()));
    };
    let state = doc
        .get("state")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("available");
    if !matches!(state, "available" | "not-found") {
        return Ok(state.to_owned());
    }
    doc.insert("state".into(), "wanted".into());
    let mut txn = Txn::new();
    txn.put(&assets(), id, serde_json::Value::Object(doc));
    store.commit(txn).await?;
    Ok("wanted".to_owned())
}
