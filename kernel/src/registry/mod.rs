//! The replicated registry: what masters agree on through Raft (openraft), and keep on
//! disk.
//!
//! As in Mesos, what is replicated is small: where the leader's API is, the admitted
//! agents (and removed ones with when they were removed, see
//! [`crate::master::recovery`]), the built-in jobs framework's jobs, and operations for
//! frameworks with their failover timeouts and roles' weights.
//! Tasks are not: agents bring theirs back when they re-register. Each change is a
//! [`RegistryOp`] appended to the Raft log; once committed, every master applies it to
//! its [`Registry`] (the state machine), so a new leader replays nothing.
//!
//! The log and the vote live in a [`LogStore`] (redb: each append, truncation and vote is
//! one durable transaction, synced before it is acknowledged). The state machine,
//! [`RegistryMachine`], is in memory and rebuilt from the latest snapshot and the log
//! after it; snapshots let the log be compacted, and bring a master that fell behind the
//! compaction point up to date. Both pass openraft's storage suite (the tests below).

// openraft's storage traits return its `StorageError` (over 200 bytes); the helpers
// here return what the traits do.
#![allow(clippy::result_large_err)]

mod log;
mod machine;
/// Raft's calls between masters.
pub mod net;
/// A master's replica: Raft, storage, peers and the leader's lease.
pub mod replica;
pub mod rt;

pub use log::{LogStore, LogStoreError, MemFile};
pub use machine::{JobsImage, LeaderRecord, Registry, RegistryMachine};

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, FrameworkId};

/// A master's id in the Raft group.
pub type MasterId = u64;

openraft::declare_raft_types!(
    /// The Raft types of the registry.
    pub RegistryRaft:
        D = RegistryOp,
        R = RegistryReply,
        NodeId = MasterId,
        Node = openraft::BasicNode,
        AsyncRuntime = rt::RegistryRuntime,
);

/// A change to the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegistryOp {
    /// An agent is admitted (or re-admitted).
    AdmitAgent {
        /// The agent.
        agent_id: AgentId,
        /// Its node name.
        hostname: String,
    },
    /// An agent is removed (it stayed away past its timeout), at `unix_ms`; admitted
    /// again should it come back.
    RemoveAgent {
        /// The agent.
        agent_id: AgentId,
        /// When.
        unix_ms: u64,
    },
    /// A framework subscribed.
    AddFramework {
        /// The framework.
        framework_id: FrameworkId,
        /// How long its tasks outlive its disconnection, ms.
        failover_timeout_ms: u64,
    },
    /// A framework is removed, at `unix_ms`.
    RemoveFramework {
        /// The framework.
        framework_id: FrameworkId,
        /// When.
        unix_ms: u64,
    },
    /// A master leads in `term`, its operator API at `api` (`http://host:port`): the
    /// other masters send the API's clients there.
    Leader {
        /// The master.
        master: MasterId,
        /// The term it leads in.
        term: u64,
        /// Its API's base URL.
        api: String,
    },
    /// Changes of the built-in jobs framework (every master's runs it while leading,
    /// from what the registry holds).
    Jobs(JobsChange),
    /// Several changes, applied in order as one write.
    Batch(Vec<RegistryOp>),
    /// A role's weight changed.
    SetWeight {
        /// The role.
        role: String,
        /// Its weight, in thousandths.
        weight_milli: u64,
    },
    /// A role's quota changed.
    SetQuota {
        /// The role.
        role: String,
        /// Its quota (`None`: cleared, even if the settings give one).
        quota: Option<crate::resources::Resources>,
    },
}

/// A job as the registry keeps it: its submission number, its status, and who it
/// belongs to (kept beside the status, which does not carry them on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its submission number.
    pub seq: u64,
    /// Its status and history.
    pub job: crate::jobs::JobStatus,
    /// The principal that submitted it.
    pub owner: Option<String>,
    /// The OS user it runs as.
    pub user: Option<String>,
}

/// One batch of the jobs framework's changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsChange {
    /// The next job number, if it changed.
    pub next: Option<u64>,
    /// Jobs new or changed.
    pub put: Vec<JobRecord>,
    /// Jobs forgotten.
    pub delete: Vec<crate::ids::TaskId>,
    /// Framework ids of roles, new or changed.
    pub framework_ids: Vec<(String, FrameworkId)>,
}

/// What applying a [`RegistryOp`] answers: whether it changed the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryReply {
    /// False when the registry already said so.
    pub changed: bool,
}

#[cfg(test)]
mod tests;
