//! plexus-kernel: the datacenter operating system — master, agents, frameworks and tasks
//! as actors, the allocator, the containerizer, status updates and the operator HTTP API.
//!
//! The deciding cores are plain types with no I/O: [`resources`], [`task`] (the task
//! state machine) and [`status`] (the at-least-once status-update stream). The kernel
//! is built on `plexus_actors` nodes; it knows nothing of sockets or QUIC.

#![warn(missing_docs)]

pub mod acl;
pub mod agent;
pub mod allocator;
pub mod api;
pub mod containerizer;
pub mod datacenter;
pub mod executor;
pub mod ids;
pub mod jobs;
pub mod master;
pub mod protocol;
pub mod reason;
pub mod registry;
pub mod resources;
pub mod scheduler;
pub mod statefile;
pub mod status;
pub mod supervision;
pub mod task;
