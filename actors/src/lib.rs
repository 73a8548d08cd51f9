//! Distribution for ractor: nodes, remote actor references, remote spawn, cross-node
//! supervision and monitors, node-down detection, and a cluster-wide name registry.
//!
//! A remote actor is an ordinary [`ractor::ActorRef`]: `cast`, `call!` and `call_t!` work
//! on it once its message type derives [`RemoteMessage`]. A supervisor linked to a remote
//! child (see [`Node::spawn_remote_linked`]) receives the child's
//! [`ractor::SupervisionEvent`]s as for a local child; when the child's node dies or is
//! cut off, it receives `ActorTerminated` with a reason for which [`is_node_down`] holds.
//! Monitors (`ActorCell::monitor`) work on remote actors the same way.

#![warn(missing_docs)]

extern crate self as plexus_actors;

pub mod detector;
mod error;
pub mod names;
mod node;
#[doc(hidden)]
pub mod private;
mod proxy;
mod session;
mod watcher;
mod wire;

/// Helpers used by the `RemoteMessage` derive (not a stable API).
#[doc(hidden)]
pub use private as __private;

pub use error::ActorsError;
pub use node::{is_node_down, Node, NodeOptions, PeerInfo, NODE_DOWN, PARENT_NODE_DOWN};
pub use plexus_actors_derive::RemoteMessage;
