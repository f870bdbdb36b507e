//! What a node is in the mission: the HQ node or a field node.
//!
//! At the bottom of the crate so that `config`, `tls` and `node` all name it without
//! importing upward; [`crate::node`] re-exports it, where the binaries find it.

use std::fmt;

/// What a node is in the mission: the HQ node or a field node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HQ node (`core-node`): it listens, and stores every `core` topic.
    Core,
    /// A field node (`edge-node`): it dials the core.
    Edge,
}

impl Role {
    /// `core` or `edge`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Core => "core",
            Role::Edge => "edge",
        }
    }

    /// The role at the other end of a link: an edge's peer is the core and the
    /// core's an edge.
    pub fn other(self) -> Role {
        match self {
            Role::Core => Role::Edge,
            Role::Edge => Role::Core,
        }
    }

    /// The binary that runs a node of this role: `core-node` or `edge-node`.
    pub fn binary(self) -> &'static str {
        match self {
            Role::Core => "core-node",
            Role::Edge => "edge-node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
