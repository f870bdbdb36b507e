//! Tiles: what a service did, as one event the web UI shows (service, title, text,
//! image, time), appended to the local `TILES` topic in the same transaction as the work.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entry::{Append, Retention, Scope, Timestamp, TopicConfig, TopicName};
use crate::log::Txn;

/// The local topic that carries every tile of a node.
pub const TILES: &str = "TILES";

/// One event for the UI's tile grid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    /// The service that did it.
    pub service: String,
    /// A few words (an asset's title, say).
    pub title: String,
    /// What happened, in a sentence.
    pub text: String,
    /// The image to show, as a path under the node's files (`downloads/x.png` at HQ,
    /// `mirror/assets/x.png` at an edge), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The asset it is about, if any (the UI links the tile to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// A ThumbHash preview (base64) to show until the image is there, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl Tile {
    /// A tile of `service`, now.
    pub fn new(service: &str, title: impl Into<String>, text: impl Into<String>) -> Tile {
        Tile {
            service: service.to_owned(),
            title: title.into(),
            text: text.into(),
            image: None,
            asset: None,
            preview: None,
            time_ms: Timestamp::now().0,
        }
    }

    /// With an image to show.
    pub fn image(mut self, path: impl Into<String>) -> Tile {
        self.image = Some(path.into());
        self
    }

    /// About this asset.
    pub fn asset(mut self, id: impl Into<String>) -> Tile {
        self.asset = Some(id.into());
        self
    }

    /// With a preview to show until the image is there.
    pub fn preview(mut self, preview: Option<String>) -> Tile {
        self.preview = preview;
        self
    }

    /// Adds the tile to `txn`.
    pub fn append_to(&self, txn: &mut Txn) {
        // A struct of strings and an integer always serializes.
        let payload = serde_json::to_vec(self).unwrap_or_default();
        txn.append(&Tile::topic(), Append::new(payload));
    }

    /// The `TILES` topic.
    pub fn topic() -> TopicName {
        TopicName::new(TILES).expect("TILES is a valid topic name")
    }

    /// Reads a tile from an entry's payload.
    pub fn decode(payload: &[u8]) -> Result<Tile, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// How a node keeps its tiles: local, the last 10,000 or a week.
pub(crate) fn config() -> TopicConfig {
    TopicConfig {
        name: Tile::topic(),
        scope: Scope::Local,
        retention: Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 60 * 60)),
            max_entries: Some(10_000),
            ..Retention::default()
        },
    }
}
