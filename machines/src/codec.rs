//! The one serialization codec for stored records (and, later, wire frames).
//!
//! Everything that Tether writes to disk or sends to a peer goes through [`encode`] and
//! [`decode`], so that the format (postcard: stable, specified, varint-compact) is a
//! one-line change. This module does no IO and never reads the clock.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes that could not be decoded into the expected type.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {source}")]
pub struct DecodeError {
    /// The kind of record that was expected.
    pub what: &'static str,
    #[source]
    source: postcard::Error,
}

/// Encodes a value in the project's codec.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding into a growable Vec cannot fail for the plain data types we derive: postcard
    // only fails on a full fixed buffer or on types serde cannot describe (maps with
    // unknown length), which we do not use.
    postcard::to_allocvec(value).expect("postcard encodes plain data into a Vec")
}

/// Decodes a value; `what` names the record kind in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError { what, source })
}
