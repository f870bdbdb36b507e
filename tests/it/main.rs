//! The integration-test binary: one module per scenario.

mod crash;
