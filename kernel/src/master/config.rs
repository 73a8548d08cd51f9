//! The master's tunables.

use std::collections::BTreeMap;
use std::time::Duration;

use super::view::ReadModel;
use crate::resources::Resources;
use crate::supervision::FaultSwitch;

/// Master tunables.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// How long an unreachable agent's tasks wait before they are `TASK_GONE`.
    pub agent_removal_timeout: Duration,
    /// Longest pause between allocation cycles.
    pub allocation_interval: Duration,
    /// Delay that batches events into one allocation cycle (in a large cluster, at
    /// least 20 µs per agent, so that allocation keeps up with events).
    pub allocation_batch: Duration,
    /// DRF weights of roles (roles not listed weigh 1).
    pub weights: BTreeMap<String, f64>,
    /// Quota limits of roles.
    pub quotas: BTreeMap<String, Resources>,
    /// Ended tasks kept in the task table (the oldest are forgotten first; a framework
    /// reconciling a forgotten task hears `TASK_UNKNOWN`, as from Mesos).
    pub max_completed_tasks: usize,
    /// Most offers one framework gets per allocation cycle (0: no limit); see
    /// [`crate::allocator::Allocator::set_offer_limit`].
    pub offer_limit: u32,
    /// Most messages from peers queued for the master; past it they are shed and
    /// counted (`plexus_master_inbox_shed_total`).
    pub inbox_limit_msgs: usize,
    /// Where the master publishes what readers see (shared with the API), and the
    /// longest a change waits to be published while the master is busy.
    pub reads: ReadModel,
    /// See [`MasterConfig::reads`].
    pub publish_interval: Duration,
    /// A deliberate defect, for proving that the simulation's invariants catch real bugs:
    /// kills are not kept for agents that are away. Never set outside such checks.
    pub forget_kills: bool,
    /// Makes the master actor panic on its next message once tripped (for tests of its
    /// supervision; nothing on the wire can trip it).
    pub fault: FaultSwitch,
    /// Makes a framework session panic on its next message once tripped (tests).
    pub session_fault: FaultSwitch,
    /// Who may register frameworks in which roles and launch tasks as which users.
    pub acls: crate::acl::Acls,
    /// Principals' secrets, which frameworks subscribe with.
    pub credentials: crate::acl::Credentials,
}

/// The default bound of the master's inbox: at the master's pace (tens of thousands of
/// updates a second), a few seconds of work.
pub const MASTER_INBOX_LIMIT_MSGS: usize = 65_536;

/// The default longest wait of a change before readers see it.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            agent_removal_timeout: Duration::from_secs(60),
            allocation_interval: Duration::from_secs(1),
            allocation_batch: Duration::from_millis(2),
            weights: BTreeMap::new(),
            quotas: BTreeMap::new(),
            max_completed_tasks: 10_000,
            offer_limit: 64,
            inbox_limit_msgs: MASTER_INBOX_LIMIT_MSGS,
            reads: ReadModel::default(),
            publish_interval: PUBLISH_INTERVAL,
            forget_kills: false,
            fault: FaultSwitch::default(),
            session_fault: FaultSwitch::default(),
            acls: crate::acl::Acls::default(),
            credentials: crate::acl::Credentials::default(),
        }
    }
}
