//! The HTTP API (axum) and the web tile page it serves, embedded in the node binaries.
//!
//! Empty until the UI issue: the crate exists so that the workspace has its final shape.
//! It will know nothing of sled or QUIC: nodes hand it plain view types, so that `ui`
//! and `protocol` compile in parallel.
