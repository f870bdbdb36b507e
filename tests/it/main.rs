//! The integration-test binary: one module per scenario.
// A failed unwrap in a test is a failed test with a backtrace: what we want here.
#![allow(clippy::unwrap_used, reason = "test code")]

mod api;
mod chart;
mod crash;
mod fuzz;
mod hostile;
mod impaired;
mod kill;
mod link;
mod mirror;
mod mirroring;
mod mission;
mod nodes;
mod page;
mod pipeline;
mod process;
mod replication;
mod tools;
mod trust;
mod webdriver;
