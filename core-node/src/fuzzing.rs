//! The bodies of the fuzz targets of HQ's decoders of bytes from outside (downloaded
//! images, the feed document, the node's config with the mission's sections), for `fuzz/` and for the integration test that replays the
//! committed corpora on stable (`tests/it/fuzz.rs`). As in `protocol::fuzzing`: any
//! error is an answer; a panic, a hang or an allocation without bound is the bug.
//!
//! IO: none.

use crate::{feed, image};

/// Downloaded bytes checked as an image, as the download and ingest services do:
/// [`image::inspect`] (sniffing, PNG or JPEG decoding within [`image::MAX_SIDE`] and
/// [`image::MAX_ALLOC`], the ThumbHash preview).
pub fn image(data: &[u8]) {
    match image::inspect(data) {
        Ok(info) => {
            let _ = image::extension(info.format);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A feed document, as the feed service reads it: [`feed::parse`], each item's error
/// message, and each item as the JSON entry the download service reads back (checked:
/// the same item). Every id must be what [`feed::asset_id`] promises: not empty, at most
/// [`feed::MAX_ID_BYTES`], `[A-Za-z0-9._-]` only, not starting with `.` or `-`.
pub fn feed(data: &[u8]) {
    let Ok(parsed) = feed::parse(data) else {
        return;
    };
    for error in &parsed.errors {
        let _ = error.to_string();
    }
    for item in &parsed.items {
        let id = feed::asset_id(&item.nasa_id);
        assert_eq!(id, item.id, "an item's id is not its nasa_id's asset id");
        assert!(
            !id.is_empty()
                && id.len() <= feed::MAX_ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && !id.starts_with(['.', '-']),
            "unsafe asset id {id:?} of {:?}",
            item.nasa_id
        );
        let json = serde_json::to_vec(item).expect("a feed item serializes");
        let back: feed::FeedItem = serde_json::from_slice(&json).expect("a feed item parses");
        assert_eq!(&back, item, "a feed item changed through its JSON entry");
    }
}

/// A config file and environment overrides as the binaries load them, with the mission's
/// sections: [`protocol::fuzzing::config_with`] for [`mission::Settings`].
pub fn config(data: &[u8]) {
    protocol::fuzzing::config_with::<mission::Settings>(data);
}
