//! The master's tunables.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::view::ReadModel;
use crate::resources::Resources;
use crate::supervision::FaultSwitch;

/// Master tunables.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// How long an unreachable agent's tasks wait before they are `TASK_GONE`.
    pub agent_removal_timeout: Duration,
    /// With several masters: how long a master that begins to lead waits for the
    /// agents the registry admitted to re-register, holding back `TASK_UNKNOWN` for
    /// tasks it does not know meanwhile (see [`super::recovery`]).
    pub agent_reregister_timeout: Duration,
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
    /// Weights and quotas operators changed at runtime (the API writes, the master
    /// applies on `MasterMsg::RolesChanged`); kept across restarts of the master actor.
    pub role_changes: SharedRoles,
    /// With several masters: the Raft term this master leads in (its claim on the
    /// master's name carries it, so the name follows the election) and its lease, past
    /// which it takes no message (the process stops it). `None`: a single master.
    pub leading: Option<(u64, crate::registry::replica::Lease)>,
    /// With several masters: the registry as this master found it when it began to
    /// lead, and where its registry writes go. `None`: a single master.
    pub registry: Option<RegistryLink>,
    /// Mixed into the ids this master mints: how many masters this process started
    /// before it (a master leading again in the same term mints ids of its own).
    pub epoch_salt: u32,
}

/// The default wait for admitted agents to re-register with a new leader.
pub const AGENT_REREGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most registry writes of a leading master queued at once (agents admitted or removed);
/// past it a write is dropped and logged (the agent is written again should it
/// re-register).
pub const REGISTRY_WRITES_QUEUED: usize = 16_384;

/// A leading master's link to the replicated registry.
#[derive(Debug, Clone)]
pub struct RegistryLink {
    /// The agents the registry held as admitted when this master began to lead.
    pub admitted: std::collections::BTreeSet<crate::ids::AgentId>,
    /// The frameworks it held then, with their failover timeouts (ms).
    pub frameworks: BTreeMap<crate::ids::FrameworkId, u64>,
    /// The frameworks it held as removed then, oldest first: none may come back.
    pub removed_frameworks: Vec<crate::ids::FrameworkId>,
    /// Where the master's registry writes go (written in order, in batches).
    pub writes: tokio::sync::mpsc::Sender<crate::registry::RegistryOp>,
}

/// Most roles with a weight or a quota.
pub const MAX_ROLE_SETTINGS: usize = 1024;

/// Weights and quotas by role, shared by the API (which changes them) and the master
/// (which applies them). Nothing on the wire reaches it: a peer can only ask the master to
/// apply what is there.
#[derive(Debug, Clone, Default)]
pub struct SharedRoles(Arc<Mutex<RoleSettings>>);

/// Weights and quotas by role, set at runtime over those of the settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleSettings {
    /// Weights (default 1).
    pub weights: BTreeMap<String, f64>,
    /// Quota limits (`None`: cleared, even if the settings give one).
    pub quotas: BTreeMap<String, Option<Resources>>,
}

impl RoleSettings {
    /// `base` (the settings' weights and quotas) with these changes over it.
    pub fn over(
        &self,
        weights: &BTreeMap<String, f64>,
        quotas: &BTreeMap<String, Resources>,
    ) -> (BTreeMap<String, f64>, BTreeMap<String, Resources>) {
        let mut w = weights.clone();
        w.extend(self.weights.iter().map(|(r, v)| (r.clone(), *v)));
        let mut q = quotas.clone();
        for (r, v) in &self.quotas {
            match v {
                Some(v) => q.insert(r.clone(), v.clone()),
                None => q.remove(r),
            };
        }
        (w, q)
    }
}

impl SharedRoles {
    /// What is set now.
    pub fn get(&self) -> RoleSettings {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces everything set (a master that begins to lead takes the registry's).
    pub fn replace(&self, settings: RoleSettings) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Whether `role`'s weight may be set to `weight`: refuses a bad role or weight, and
    /// a new role beyond [`MAX_ROLE_SETTINGS`].
    pub fn check(&self, role: &str, weight: Option<f64>) -> Result<(), String> {
        crate::resources::validate_role(role)?;
        if let Some(w) = weight {
            if !(w.is_finite() && (0.001..=1e6).contains(&w)) {
                return Err(format!(
                    "weight must be a number from 0.001 to 1000000, not {w}"
                ));
            }
        }
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let known = g.weights.contains_key(role) || g.quotas.contains_key(role);
        let roles = g
            .weights
            .keys()
            .chain(g.quotas.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if !known && roles >= MAX_ROLE_SETTINGS {
            return Err(format!(
                "at most {MAX_ROLE_SETTINGS} roles may have a weight or a quota"
            ));
        }
        Ok(())
    }

    /// Sets `role`'s weight and/or quota (`Some(None)` clears the quota), if
    /// [`SharedRoles::check`] allows it.
    pub fn set(
        &self,
        role: &str,
        weight: Option<f64>,
        quota: Option<Option<Resources>>,
    ) -> Result<(), String> {
        self.check(role, weight)?;
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = weight {
            g.weights.insert(role.to_string(), w);
        }
        if let Some(q) = quota {
            g.quotas.insert(role.to_string(), q);
        }
        Ok(())
    }
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
            agent_reregister_timeout: AGENT_REREGISTER_TIMEOUT,
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
            role_changes: SharedRoles::default(),
            leading: None,
            registry: None,
            epoch_salt: 0,
        }
    }
}
