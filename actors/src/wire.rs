//! The node-to-node protocol carried in frames after the handshake.

use serde::{Deserialize, Serialize};

/// Why a remote actor is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DownReason {
    /// It stopped, with its exit reason if it gave one.
    Terminated(Option<String>),
    /// It failed (panicked or returned an error), with the error text.
    Failed(String),
    /// No actor with that id runs there.
    NoProc,
}

/// One protocol message between two nodes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Wire {
    /// Liveness; every frame counts, this one is sent when nothing else is.
    Heartbeat,
    /// A cast to local actor `to`.
    Cast {
        to: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A call to local actor `to`; answered by `Reply { id }`.
    Call {
        to: u64,
        id: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The answer to `Call { id }`; `Err` when the actor is missing or dropped the call.
    Reply {
        id: u64,
        body: Result<serde_bytes::ByteBuf, String>,
    },
    /// Spawn a registered actor type; answered by `Spawned { id }`.
    Spawn {
        id: u64,
        type_name: String,
        msg_type: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        linked: bool,
    },
    /// The answer to `Spawn { id }`: the new actor's id or why it could not start.
    Spawned {
        id: u64,
        result: Result<u64, String>,
    },
    /// Tell the sender when local actor `pid` ends (answered by `Down`).
    Watch { pid: u64 },
    /// A watched or linked actor ended.
    Down { pid: u64, reason: DownReason },
    /// Stop local actor `pid`.
    Stop { pid: u64, reason: Option<String> },
    /// A cluster-wide name now points at the sender's actor `pid`.
    Register {
        name: String,
        pid: u64,
        msg_type: String,
    },
    /// The sender dropped its registration of `name`.
    Unregister { name: String },
    /// Nodes the sender is connected to, so every pair meshes.
    Peers {
        peers: Vec<(String, std::net::SocketAddr)>,
    },
    /// The sender is leaving the cluster on purpose.
    Leave { reason: String },
}
