//! Tether's protocol decisions, without IO: what `protocol` drives over QUIC and sled.
//!
//! What it is: the entry model ([`entry`], with [`entry::VersionVector`]), the one
//! serialization codec ([`codec`]), the frames and their encoding ([`wire`]), what
//! crosses a link and what is taken from a peer ([`replication`]: routes, the routing
//! rule, the trust rule), the replication session's state machine ([`session`]), and
//! volume mirroring's chunks, manifests, plans and frames ([`mirror`]).
//!
//! What it is not: a runtime. It depends on no async runtime, socket, QUIC or storage
//! crate (its `Cargo.toml` names none, and that is how the build keeps it so). Its state
//! machines are handed what happened (frames already decoded, commit results, link
//! measurements as plain numbers) and the time, and answer with what to do: frames to
//! send, store work, when to wake them next.
//!
//! IO: none. It reads no clock either, except [`entry::Timestamp::now`], which the store
//! calls when it stamps an append.

pub mod codec;
pub mod entry;
pub mod mirror;
pub mod replication;
pub mod session;
#[cfg(test)]
mod sim;
pub mod wire;
