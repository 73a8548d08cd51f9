//! Distribution for ractor: nodes, remote actor references, remote spawn, cross-node
//! supervision and monitors, node-down detection, and a cluster-wide name registry.
//!
//! A remote actor is an ordinary [`ractor::ActorRef`]: `cast`, `call!` and `call_t!` work
//! on it once its message type derives [`RemoteMessage`]. A supervisor linked to a remote
//! child (see [`Node::spawn_remote_linked`]) receives the child's
//! [`ractor::SupervisionEvent`]s as for a local child; when the child's node dies or is
//! cut off, it receives `ActorTerminated` with a reason for which [`is_node_down`] holds.
//! Monitors (`ActorCell::monitor`) work on remote actors the same way.
//!
//! Two nodes with certificates from one cluster CA; a counter spawned on the second from
//! the first, cast to and called; a name registered on one node and found from the other
//! (`examples/counter.rs` in the repository goes on to supervise a remote child through
//! the loss of its node):
//!
//! ```
//! use std::time::Duration;
//! use plexus_actors::{Node, RemoteMessage};
//! use plexus_config::{NodeSettings, PeerAddr, TlsSettings};
//! use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
//!
//! #[derive(Debug, RemoteMessage)]
//! enum Counter {
//!     Add(u64),
//!     Get(RpcReplyPort<u64>),
//! }
//!
//! struct CounterActor;
//!
//! impl Actor for CounterActor {
//!     type Msg = Counter;
//!     type State = u64;
//!     type Arguments = u64;
//!     async fn pre_start(&self, _: ActorRef<Counter>, n: u64) -> Result<u64, ActorProcessingErr> {
//!         Ok(n)
//!     }
//!     async fn handle(&self, _: ActorRef<Counter>, m: Counter, n: &mut u64)
//!         -> Result<(), ActorProcessingErr> {
//!         match m {
//!             Counter::Add(k) => *n += k,
//!             Counter::Get(reply) => reply.send(*n).ok().unwrap_or_default(),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn settings(dir: &std::path::Path, name: &str, peers: Vec<PeerAddr>)
//!     -> Result<NodeSettings, Box<dyn std::error::Error>> {
//!     let (cert, key) = plexus_net::tls::issue(dir, dir, name, plexus_net::Role::Client)?;
//!     Ok(NodeSettings {
//!         name: name.into(),
//!         listen: "127.0.0.1:0".parse()?, // any free port
//!         peers,
//!         tls: TlsSettings { ca_cert: Some(dir.join("ca.pem")), cert: Some(cert), key: Some(key), dev: false },
//!         state_dir: dir.join(name),
//!         ..NodeSettings::default()
//!     })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! plexus_net::tls::init_ca(dir.path(), "plexus")?; // as `plexus certs init`
//! let a = Node::start(&settings(dir.path(), "a", vec![])?).await?;
//! let seed: PeerAddr = format!("a@{}", a.addr()).parse()?;
//! let b = Node::start(&settings(dir.path(), "b", vec![seed])?).await?;
//! b.register_type("counter", plexus_net::Role::Client, || CounterActor); // clients may spawn counters on b
//! a.wait_for_peers(&["b"], Duration::from_secs(10)).await?;
//!
//! let c: ActorRef<Counter> = a.spawn_remote("b", "counter", &0u64).await?;
//! c.cast(Counter::Add(2))?;
//! assert_eq!(call_t!(c, Counter::Get, 1000)?, 2);
//!
//! // A name registered on b, found from a once b's announcement arrived.
//! let (local, _) = Actor::spawn(None, CounterActor, 7).await?;
//! b.register("counter.main", &local)?;
//! let found: ActorRef<Counter> = a.whereis_wait("counter.main", Duration::from_secs(5)).await?;
//! assert_eq!(call_t!(found, Counter::Get, 1000)?, 7);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

extern crate self as plexus_actors;

pub mod detector;
mod error;
pub mod inbox;
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

pub use error::{ActorsError, SendError};
pub use inbox::InboxGauge;
pub use node::{
    is_node_down, Admission, Node, NodeOptions, PeerInfo, Refused, NODE_DOWN, PARENT_NODE_DOWN,
};
pub use plexus_actors_derive::RemoteMessage;
pub use wire::{DownReason, FrameDescriber};
