//! The node-to-node protocol carried in frames after the handshake.

use serde::{Deserialize, Serialize};

/// Most bytes a frame takes beside the message it carries: its length prefix and the
/// [`Wire::Call`] header (variant, actor, call id, body length; varints at their widest).
pub(crate) const FRAME_OVERHEAD_BYTES: usize = 64;

/// Why a remote actor is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum DownReason {
    /// It stopped, with its exit reason if it gave one.
    Terminated(Option<String>),
    /// It failed (panicked or returned an error), with the error text.
    Failed(String),
    /// No actor with that id runs there.
    NoProc,
}

/// One protocol message between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Wire {
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
        /// Another node that may reach the new actor (message and monitor it, not stop
        /// it): the node an agent spawns an actor task for.
        grant_to: Option<String>,
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
    /// A cluster-wide name now points at the sender's actor `pid`; of two claims the
    /// higher `rank` wins (see [`crate::names::NameTable::claim_as`]).
    Register {
        name: String,
        pid: u64,
        msg_type: String,
        rank: u64,
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

/// Describes frames for a simulation's trace: the protocol message, and for casts and
/// calls the receiving actor's message type (learned from the names registered and the
/// actors spawned in the frames seen so far) and the variant's index within it.
#[derive(Default)]
pub struct FrameDescriber {
    /// `(node, pid)` → message type of that actor.
    types: std::sync::Mutex<std::collections::BTreeMap<(String, u64), String>>,
    /// `(requesting node, spawn id)` → message type asked for.
    spawns: std::sync::Mutex<std::collections::BTreeMap<(String, u64), String>>,
}

/// Most actors and spawns a [`FrameDescriber`] remembers (then it forgets the oldest).
const DESCRIBER_LIMIT: usize = 100_000;

fn short_type(t: &str) -> &str {
    t.rsplit("::").next().unwrap_or(t)
}

impl FrameDescriber {
    /// One frame body sent from node `from` to node `to`.
    pub fn describe(&self, from: &str, to: &str, body: &[u8]) -> String {
        // A connection's first frame each way is the handshake.
        if let Ok(h) = plexus_net::codec::decode::<plexus_net::Hello>(body) {
            if h.protocol == plexus_net::PROTOCOL_VERSION && !h.cluster.is_empty() {
                return format!("Hello {} incarnation={}", h.name, h.incarnation);
            }
        }
        let Ok(w) = plexus_net::codec::decode::<Wire>(body) else {
            return format!("undecodable {}B", body.len());
        };
        let mut types = self.types.lock().unwrap_or_else(|p| p.into_inner());
        let mut spawns = self.spawns.lock().unwrap_or_else(|p| p.into_inner());
        trim(&mut types);
        trim(&mut spawns);
        let target = |pid: u64, body: &[u8]| {
            let ty = types
                .get(&(to.to_string(), pid))
                .map(|t| short_type(t).to_string())
                .unwrap_or_else(|| format!("pid {pid}"));
            let variant: Option<u32> = plexus_net::codec::SeqReader::new(body).read().ok();
            match variant {
                Some(v) => format!("{ty}#{v}"),
                None => ty,
            }
        };
        match w {
            Wire::Heartbeat => "Heartbeat".into(),
            Wire::Cast { to: pid, body } => format!("Cast {}", target(pid, &body)),
            Wire::Call { to: pid, id, body } => format!("Call {} id={id}", target(pid, &body)),
            Wire::Reply { id, body } => {
                format!("Reply id={id}{}", if body.is_ok() { "" } else { " error" })
            }
            Wire::Spawn {
                id,
                type_name,
                msg_type,
                ..
            } => {
                spawns.insert((from.to_string(), id), msg_type);
                format!("Spawn {type_name:?} id={id}")
            }
            Wire::Spawned { id, result } => match result {
                Ok(pid) => {
                    if let Some(t) = spawns.remove(&(to.to_string(), id)) {
                        types.insert((from.to_string(), pid), t);
                    }
                    format!("Spawned id={id} pid={pid}")
                }
                Err(e) => format!("Spawned id={id} failed: {e}"),
            },
            Wire::Watch { pid } => format!("Watch pid={pid}"),
            Wire::Down { pid, reason } => format!("Down pid={pid} {reason:?}"),
            Wire::Stop { pid, .. } => format!("Stop pid={pid}"),
            Wire::Register {
                name,
                pid,
                msg_type,
                rank,
            } => {
                let d = format!(
                    "Register {name:?} pid={pid} rank={rank} {}",
                    short_type(&msg_type)
                );
                types.insert((from.to_string(), pid), msg_type);
                d
            }
            Wire::Unregister { name } => format!("Unregister {name:?}"),
            Wire::Peers { peers } => format!("Peers ({})", peers.len()),
            Wire::Leave { reason } => format!("Leave ({reason})"),
        }
    }
}

fn trim<V>(m: &mut std::collections::BTreeMap<(String, u64), V>) {
    while m.len() > DESCRIBER_LIMIT {
        m.pop_first();
    }
}
