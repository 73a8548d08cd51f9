//! plexus: a datacenter operating-system kernel built on distributed actors.
//!
//! This facade re-exports the workspace's crates under one name:
//! [`config`] (typed settings), [`net`] (wire codec, QUIC, simulated network),
//! [`actors`] (distributed ractor), [`kernel`] (the datacenter OS).

#![warn(missing_docs)]

pub use plexus_actors as actors;
pub use plexus_config as config;
pub use plexus_kernel as kernel;
pub use plexus_net as net;

pub use plexus_kernel::datacenter::supervisor::{ChildEvent, ChildSpec, Intensity, OneForOne};
pub use plexus_kernel::datacenter::{
    Constraint, Datacenter, DatacenterConfig, DatacenterError, PendingSpawn, Requirements,
};
pub use plexus_kernel::executor;

pub mod builtin;
pub mod client;
pub mod logging;
pub mod roles;
pub mod simcli;
