//! The Tether framework library that `core-node` and `edge-node` share. It knows nothing
//! of the mission application (the `mission` crate): a binary registers its application's
//! config sections, default topics and writers ([`config::App`]) and adds its services.
//!
//! What it is: the durable log store on sled ([`log`]), the link that replicates it over
//! QUIC ([`link`], [`tls`]), node configuration ([`config`], with [`ip_range`]), the
//! node's [`role`] and the node runtime that both binaries share ([`node`]), the file side
//! of volume mirroring ([`mirror`]), and the service runtime ([`service`]); [`fuzzing`]
//! holds the bodies of the fuzz targets of its decoders of bytes from outside. The entry
//! model ([`entry`]), the codec ([`codec`]), the frames ([`wire`]) and the protocol's
//! decisions ([`replication`]) are the `machines` crate's, re-exported here under their
//! old paths; [`link`] drives them over QUIC and the store.
//!
//! What it is not: an HTTP server (that is the `ui` crate) or a binary. It installs no
//! tracing subscriber and handles no signal, except in [`node::main_for`], which is the
//! binaries' `main`; everywhere else it only emits events.
//!
//! IO: [`log`] touches the store directory; [`tls`] reads and writes the certificates
//! directory and opens the QUIC endpoints' UDP sockets; [`config`] reads the config file
//! it is pointed at and the environment; [`mirror`] reads the core's volume (and watches
//! it) and writes the edge's mirror directory.

pub use machines::{codec, entry, replication, wire};

pub mod bridge;
pub mod calendar;
pub mod config;
pub mod edges;
pub mod fuzzing;
pub mod ip_range;
pub mod link;
pub mod log;
pub mod mirror;
pub mod node;
pub mod role;
pub mod service;
pub mod tls;
