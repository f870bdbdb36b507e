//! The Tether framework library that `core-node` and `edge-node` share.
//!
//! What it is: the entry model ([`entry`]), the one serialization codec ([`codec`]), the
//! durable log store on sled ([`log`]), node configuration ([`config`], with [`ip_range`]),
//! the node's [`role`] and the node runtime that both binaries share ([`node`]), and the
//! file side of volume mirroring ([`mirror`]), and the service runtime ([`service`]);
//! [`fuzzing`] holds the bodies of the fuzz targets of its decoders of bytes from outside.
//!
//! What it is not: an HTTP server (that is the `ui` crate) or a binary. It installs no
//! tracing subscriber and handles no signal, except in [`node::main_for`], which is the
//! binaries' `main`; everywhere else it only emits events.
//!
//! IO: [`log`] touches the store directory; [`tls`] reads and writes the certificates
//! directory and opens the QUIC endpoints' UDP sockets; [`config`] reads the config file
//! it is pointed at and the environment; [`mirror`] reads the core's volume (and watches
//! it) and writes the edge's mirror directory.

pub mod calendar;
pub mod codec;
pub mod config;
pub mod edges;
pub mod entry;
pub mod fuzzing;
pub mod ip_range;
pub mod link;
pub mod log;
pub mod mirror;
pub mod mission;
pub mod node;
pub mod replication;
pub mod role;
pub mod service;
pub mod tls;
pub mod wire;
