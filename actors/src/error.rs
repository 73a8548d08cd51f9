//! Errors of the distribution layer.

/// Errors of nodes, remote spawn and the name registry.
#[derive(Debug, thiserror::Error)]
pub enum ActorsError {
    /// The transport failed.
    #[error(transparent)]
    Net(#[from] plexus_net::NetError),
    /// No connection to the named node.
    #[error("node {0:?} is not connected")]
    NotConnected(String),
    /// The peer did not answer in time.
    #[error("{what} on node {node:?} timed out after {after:?}")]
    Timeout {
        /// What was asked.
        what: String,
        /// The node asked.
        node: String,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The remote node could not spawn the actor.
    #[error("spawn of {type_name:?} on node {node:?} failed: {reason}")]
    Spawn {
        /// The actor type asked for.
        type_name: String,
        /// The node asked.
        node: String,
        /// Why.
        reason: String,
    },
    /// The name is registered to another actor.
    #[error("name {name:?} is already registered (on node {node:?})")]
    NameTaken {
        /// The name.
        name: String,
        /// The holder's node.
        node: String,
    },
    /// This node may not hold the name (its roles or node name do not allow it).
    #[error("this node may not register {name:?}: {reason}")]
    NameRefused {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A lookup found an actor of another message type.
    #[error("{name:?} handles {actual}, not {expected}")]
    TypeMismatch {
        /// What was looked up.
        name: String,
        /// The type asked for.
        expected: String,
        /// The type found.
        actual: String,
    },
    /// A local ractor operation failed.
    #[error("actor error: {0}")]
    Actor(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Shutdown,
}

/// Why [`crate::Node::cast_checked`] did not send a message.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Encoded, it would not fit in a frame.
    #[error("the message takes {bytes} bytes encoded; a message may take at most {limit_bytes}")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The most a message may take.
        limit_bytes: usize,
    },
    /// The actor (or its node's link) is gone.
    #[error("actor {0} is gone: {1}")]
    Gone(String, String),
    /// It could not be encoded.
    #[error("the message cannot be encoded: {0}")]
    Encode(String),
}
