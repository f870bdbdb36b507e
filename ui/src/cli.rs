//! The CLI that talks to a node's HTTP API (`core-node status`, `edge-node mirror
//! start`, ...).
