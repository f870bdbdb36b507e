//! The integration-test binary: one module per scenario, named after what it tests;
//! what they share is in [`support`].
// A failed unwrap in a test is a failed test with a backtrace: what we want here.
#![allow(clippy::unwrap_used, reason = "test code")]

mod api;
mod backbone;
mod bridge;
mod chart;
mod emulator;
mod enroll;
mod fleet;
mod fuzz;
mod hostile;
mod impaired;
mod mirror;
mod mirror_crash;
mod nodes;
mod page;
mod pipeline;
mod pipeline_binaries;
mod replication;
mod replication_crash;
mod store_crash;
mod support;
mod trust;
