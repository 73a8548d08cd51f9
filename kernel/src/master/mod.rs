//! The master: admits agents, offers their free resources to frameworks through the
//! [`Allocator`](crate::allocator::Allocator), validates launches, keeps the cluster's
//! task table and forwards status updates.
//!
//! It is split the way quinn splits a connection from its endpoint driver:
//!
//! - [`core`]: [`MasterCore`], every rule of the master as a deterministic state machine
//!   (events and the time in, effects out), tested rule by rule without a runtime;
//! - [`tasks`] and [`offers`]: the task table and the offer book the core keeps;
//! - [`actor`]: [`Master`], the actor that resolves and watches agents and schedulers,
//!   feeds the core and carries out its effects;
//! - [`assembly`]: registrations too large for one message, put back together;
//! - [`session`]: [`session::FrameworkSession`], one actor per subscribed framework,
//!   carrying the master's messages to its scheduler;
//! - [`supervisor`]: [`MasterSupervisor`], which restarts the master actor under a
//!   policy;
//! - [`view`]: the read model the master publishes for the API ([`ReadModel`]), so
//!   readers never wait on the master nor it on them;
//! - [`config`]: the tunables, [`MasterConfig`];
//! - [`leadership`]: with several masters, running the master only where one leads;
//! - [`recovery`]: with several masters, the registry's agents a new leader waits for.
//!
//! A lost agent turns its tasks `TASK_UNREACHABLE` (then `TASK_GONE` after
//! `agent_removal_timeout`); a disconnected framework keeps its tasks for its failover
//! timeout.

pub mod actor;
pub mod assembly;
pub mod config;
pub mod core;
pub mod leadership;
mod offers;
pub mod recovery;
pub mod session;
pub mod supervisor;
mod tasks;
#[cfg(test)]
mod tests;
pub mod view;

pub use self::actor::{Master, MasterState};
pub use self::config::{MasterConfig, RegistryLink, MASTER_INBOX_LIMIT_MSGS};
pub use self::core::{
    AgentLink, Effect, Event, MasterCore, Now, SubscribeError, ToAgent, ToScheduler,
};
pub use self::supervisor::{MasterSpec, MasterSupervisor, MasterSupervisorMsg};
pub use self::view::{ClusterView, ReadModel};
