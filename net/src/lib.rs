//! Moving framed bytes between plexus nodes.
//!
//! - [`clock`]: the wall clock for timestamps (simulated in simulations).
//! - [`codec`]: the wire codec (bincode 2 behind one module, `u32` length prefix, size limit).
//! - [`transport`]: the [`Transport`] trait, links, batching, and the handshake.
//! - [`quic`]: the real transport, QUIC with mutual TLS.
//! - [`tls`]: the cluster CA and node certificates.
//! - [`roles`]: what a node may be (master, agent, executor, client), from its certificate.
//! - [`sim`]: an in-memory network with seeded faults for simulations.

#![warn(missing_docs)]

pub mod clock;
pub mod codec;
pub mod quic;
pub mod roles;
pub mod sim;
pub mod tls;
pub mod transport;

pub use quic::QuicTransport;
pub use roles::{Role, Roles};
pub use sim::{SimFaults, SimNetwork, SimTransport};
pub use transport::{
    CloseKind, CloseReason, DialTag, FrameReceiver, FrameSender, Hello, Link, LinkKey,
    LocalIdentity, NetError, PeerAddr, Transport, PROTOCOL_VERSION, SEND_BUFFER_LIMIT_BYTES,
    SEND_HIGH_WATER_BYTES,
};

/// The 64-bit id of a node name (FNV-1a, never zero), as used in remote actor ids.
pub fn node_id(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    h.max(1)
}
