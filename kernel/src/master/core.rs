//! [`MasterCore`]: every decision the master makes, as a plain state machine.
//!
//! The core is sans-IO in the way quinn-proto and openraft's engine are: the caller feeds
//! it [`Event`]s with the time they happen at ([`Now`]), and drains the [`Effect`]s they
//! cause (a message to a scheduler, a message to an agent, "run an allocation cycle after
//! this delay"). It never reads a clock, sends a message or spawns anything; ids are
//! minted from a counter it owns. Fed the same events at the same times it makes the same
//! decisions, which is what lets the simulator replay a seed and lets a replicated master
//! apply one log on every replica.
//!
//! It owns the agent registry, the frameworks, the task table, the offer book and the
//! allocator. The invariant binding them — each framework's allocation in the allocator is
//! exactly its live tasks' resources plus its outstanding offers — is checked after every
//! event in debug builds (and so in every simulation), naming the event that broke it.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::config::MasterConfig;
use super::offers::OfferBook;
use super::recovery::Recovery;
use super::tasks::{TaskRecord, TaskTable, TransitionError};
pub use crate::acl::FrameworkAuthority;
use crate::allocator::{Allocator, AllocatorError};
use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::protocol::TaskInfo;
use crate::protocol::{
    AgentRegistration, AgentState, AgentStatus, AgentTask, ClusterState, CompletedTask,
    FrameworkCall, FrameworkInfo, FrameworkState, FrameworkStatus, InboxStats, Offer, TaskSpec,
};
use crate::reason::Reason;
use crate::resources::{Resources, RoleResources};
use crate::status::{ActorAt, StatusUpdate};
use crate::task::TaskState;

/// Removed frameworks remembered (so that they cannot re-subscribe); the oldest are
/// forgotten first.
pub const MAX_REMOVED_FRAMEWORKS: usize = 10_000;

/// Longest failover timeout recorded in the registry (a year; longer ones count as it).
pub const MAX_FAILOVER_TIMEOUT_SECS: f64 = 365.0 * 86_400.0;

/// Longest decline filter a framework may ask for.
pub const MAX_REFUSE_SECS: f64 = 86_400.0;
/// Per-agent share of the allocation batch delay (a cycle scans every agent).
pub const ALLOCATION_BATCH_PER_AGENT: Duration = Duration::from_micros(20);

/// The time an event happens at, as the caller's clocks read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Time since the master started (monotonic): timeouts and filters run on it.
    pub elapsed: Duration,
    /// Wall-clock milliseconds since the Unix epoch: only stamped on updates for people.
    pub unix_ms: u64,
}

/// Something that happened, for the core to decide on.
#[derive(Debug, Clone)]
pub enum Event {
    /// Operators changed roles' weights or quotas (see [`MasterConfig::role_changes`]).
    RolesChanged,
    /// An agent registered or re-registered (its actor is reachable).
    AgentRegistered(AgentRegistration),
    /// The current connection to an agent was lost.
    AgentLost {
        /// The agent.
        agent_id: AgentId,
    },
    /// A status update from an agent.
    Update(StatusUpdate),
    /// The actor of an actor task answers (see [`crate::protocol::MasterMsg::ActorUp`]).
    ActorUp {
        /// The agent that says so.
        agent_id: AgentId,
        /// The task.
        task_id: TaskId,
        /// Where its actor is.
        at: ActorAt,
    },
    /// An agent can no longer take tasks (`problem`), or can again.
    AgentHealth {
        /// The agent.
        agent_id: AgentId,
        /// What is wrong.
        problem: Option<String>,
    },
    /// The current connection to a framework's scheduler was lost.
    FrameworkDisconnected {
        /// The framework.
        framework_id: FrameworkId,
    },
    /// A framework's request.
    Framework {
        /// The framework.
        framework_id: FrameworkId,
        /// What it asks.
        call: FrameworkCall,
    },
    /// Time for an allocation cycle.
    Allocate,
    /// The periodic tick: timeouts and table eviction.
    Tick,
}

/// A message for a framework's scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum ToScheduler {
    /// Subscribed under this id.
    Subscribed(FrameworkId),
    /// New offers.
    Offers(Vec<Offer>),
    /// An offer is withdrawn.
    Rescind(OfferId),
    /// A task's status changed.
    Update(StatusUpdate),
    /// The actor of an actor task answers at `at`.
    ActorUp {
        /// The task.
        task_id: TaskId,
        /// Where its actor is.
        at: ActorAt,
    },
    /// A request was refused.
    Error(String),
}

/// A message for an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum ToAgent {
    /// Its registration is accepted.
    Registered,
    /// Launch a task.
    Run {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        spec: TaskSpec,
        /// What it was given.
        resources: RoleResources,
    },
    /// Kill a task.
    Kill {
        /// The task.
        task_id: TaskId,
    },
    /// A status update was acknowledged.
    Ack {
        /// The task.
        task_id: TaskId,
        /// The update.
        uuid: u64,
    },
}

/// What the caller carries out for the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send to a connected framework's scheduler.
    Scheduler {
        /// The framework.
        framework_id: FrameworkId,
        /// The message.
        msg: ToScheduler,
    },
    /// Send to an active agent.
    Agent {
        /// The agent.
        agent_id: AgentId,
        /// The message.
        msg: ToAgent,
    },
    /// Feed [`Event::Allocate`] after this delay.
    AllocateAfter(Duration),
    /// Write this to the replicated registry (with several masters only; in order, not
    /// waited for).
    Registry(crate::registry::RegistryOp),
}

/// Why a framework could not subscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The framework has no name.
    #[error("a framework needs a name")]
    NoName,
    /// The framework has no role.
    #[error("a framework needs a role (`*` for none)")]
    NoRole,
    /// It re-subscribes with an id this master does not know.
    #[error("unknown framework id {0:?} (its failover timeout may have passed)")]
    UnknownFramework(FrameworkId),
    /// The allocator refused it.
    #[error(transparent)]
    Allocator(#[from] AllocatorError),
    /// Its authority does not allow it (the ACLs, or another principal's framework id).
    #[error("{0}")]
    Forbidden(String),
}

/// A role's weight and quota in force.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoleState {
    /// The role.
    pub role: String,
    /// Its weight (1 unless set).
    pub weight: f64,
    /// Its quota limit, if it has one.
    pub quota: Option<Resources>,
}

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentLink {
    /// Registered and connected.
    Active,
    /// Its connection was lost at `since`; its tasks are `TASK_UNREACHABLE`.
    Unreachable {
        /// When, on the core's clock.
        since: Duration,
    },
}

struct AgentEntry {
    hostname: String,
    attributes: BTreeMap<String, String>,
    total: RoleResources,
    status: AgentLink,
    isolation: String,
    /// Why it takes no tasks now (it is not offered meanwhile).
    problem: Option<String>,
}

struct FrameworkEntry {
    info: FrameworkInfo,
    /// On whose authority it acts.
    authority: FrameworkAuthority,
    /// `None` while connected; when the connection was lost otherwise.
    disconnected_since: Option<Duration>,
}

/// The master's state and rules; see the [module docs](self).
pub struct MasterCore {
    cfg: MasterConfig,
    /// Roles' weights in force.
    weights: BTreeMap<String, f64>,
    /// Roles' quotas in force.
    quotas: BTreeMap<String, Resources>,
    agents: BTreeMap<AgentId, AgentEntry>,
    frameworks: BTreeMap<FrameworkId, FrameworkEntry>,
    offers: OfferBook,
    tasks: TaskTable,
    allocator: Allocator,
    alloc_pending: bool,
    /// Part of every id this master mints, different for every master (a restarted one
    /// included), so that ids never repeat one an earlier master handed out.
    epoch: u32,
    next_id: u64,
    last_alloc_us: u64,
    out: VecDeque<Effect>,
    /// Frameworks removed (torn down, or past their failover timeout), oldest first.
    removed: VecDeque<FrameworkId>,
    removed_set: std::collections::BTreeSet<FrameworkId>,
    /// The registry's agents, and those expected back after this master began to lead.
    recovery: Recovery,
}

impl MasterCore {
    /// A master with no agents, frameworks or tasks, minting ids of epoch 0.
    pub fn new(cfg: MasterConfig) -> Self {
        Self::with_epoch(cfg, 0)
    }

    /// A master minting ids of `epoch` (give each master, restarted ones included, its
    /// own).
    pub fn with_epoch(cfg: MasterConfig, epoch: u32) -> Self {
        let mut allocator = Allocator::new();
        allocator.set_offer_limit(cfg.offer_limit);
        let (weights, quotas) = cfg.role_changes.get().over(&cfg.weights, &cfg.quotas);
        for (role, w) in &weights {
            allocator.set_weight(role, *w);
        }
        for (role, q) in &quotas {
            allocator.set_quota(role, Some(q.clone()));
        }
        let recovery = match &cfg.registry {
            Some(r) => {
                if !r.admitted.is_empty() {
                    info!(
                        agents = r.admitted.len(),
                        "waiting for the registry's agents to re-register"
                    );
                }
                Recovery::leading(
                    r.admitted.clone(),
                    cfg.agent_reregister_timeout,
                    r.frameworks.clone(),
                )
            }
            None => Recovery::single(),
        };
        let mut core = MasterCore {
            weights,
            quotas,
            cfg,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            offers: OfferBook::default(),
            tasks: TaskTable::default(),
            allocator,
            alloc_pending: false,
            epoch,
            next_id: 0,
            last_alloc_us: 0,
            out: VecDeque::new(),
            removed: VecDeque::new(),
            removed_set: std::collections::BTreeSet::new(),
            recovery,
        };
        let removed = core
            .cfg
            .registry
            .as_ref()
            .map(|r| r.removed_frameworks.clone());
        for fw in removed.into_iter().flatten() {
            core.forbid(fw);
        }
        core
    }

    /// The next effect to carry out, oldest first.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.out.pop_front()
    }

    /// Records how long the last allocation cycle took (measured by the caller).
    pub fn set_last_allocation_us(&mut self, us: u64) {
        self.last_alloc_us = us;
    }

    /// Whether `agent_id` is registered and connected.
    pub fn agent_status(&self, agent_id: &str) -> Option<AgentLink> {
        self.agents.get(agent_id).map(|a| a.status)
    }

    /// Whether `framework_id` is known and connected.
    pub fn framework_connected(&self, framework_id: &str) -> Option<bool> {
        self.frameworks
            .get(framework_id)
            .map(|f| f.disconnected_since.is_none())
    }

    /// Decides on one event.
    pub fn handle(&mut self, now: Now, ev: Event) {
        #[cfg(debug_assertions)]
        let seen = ev.clone();
        match ev {
            Event::AgentRegistered(reg) => self.register_agent(now, reg),
            Event::AgentLost { agent_id } => self.agent_lost(now, &agent_id),
            Event::Update(u) => self.update(now, u),
            Event::ActorUp {
                agent_id,
                task_id,
                at,
            } => self.actor_up(&agent_id, task_id, at),
            Event::AgentHealth { agent_id, problem } => self.agent_health(now, &agent_id, problem),
            Event::FrameworkDisconnected { framework_id } => {
                self.framework_disconnected(now, &framework_id)
            }
            Event::Framework { framework_id, call } => {
                self.framework_call(now, &framework_id, call)
            }
            Event::Allocate => self.allocate(now),
            Event::Tick => self.tick(now),
            Event::RolesChanged => self.apply_role_changes(),
        }
        #[cfg(debug_assertions)]
        if let Err(e) = self.check_books() {
            panic!("master books broken by {seen:?}: {e}");
        }
    }

    fn framework_call(&mut self, now: Now, fw: &str, call: FrameworkCall) {
        match call {
            FrameworkCall::Accept {
                offer_ids,
                tasks,
                refuse_secs,
            } => self.accept(now, fw, &offer_ids, tasks, refuse_secs),
            FrameworkCall::Decline {
                offer_ids,
                refuse_secs,
            } => self.decline(now, fw, &offer_ids, refuse_secs),
            FrameworkCall::Kill { task_id } => self.kill(fw, task_id),
            FrameworkCall::Acknowledge { task_id, uuid } => self.acknowledge(fw, task_id, uuid),
            FrameworkCall::Reconcile { task_ids } => self.reconcile(now, fw, task_ids),
            FrameworkCall::Suppress => {
                if let Err(e) = self.allocator.suppress(fw) {
                    self.refuse(fw, format!("suppress: {e}"));
                }
            }
            FrameworkCall::Revive => match self.allocator.revive(fw) {
                Ok(()) => self.schedule_allocation(),
                Err(e) => self.refuse(fw, format!("revive: {e}")),
            },
            FrameworkCall::Teardown => self.remove_framework(now, fw),
        }
    }

    /// Applies the weights and quotas in force now (the settings' with the runtime
    /// changes over them), and allocates again.
    fn apply_role_changes(&mut self) {
        let (weights, quotas) = self
            .cfg
            .role_changes
            .get()
            .over(&self.cfg.weights, &self.cfg.quotas);
        for (role, w) in &weights {
            self.allocator.set_weight(role, *w);
        }
        for role in self.weights.keys().filter(|r| !weights.contains_key(*r)) {
            self.allocator.set_weight(role, 1.0);
        }
        for role in self.quotas.keys().filter(|r| !quotas.contains_key(*r)) {
            self.allocator.set_quota(role, None);
        }
        for (role, q) in &quotas {
            self.allocator.set_quota(role, Some(q.clone()));
        }
        self.weights = weights;
        self.quotas = quotas;
        self.schedule_allocation();
    }

    /// Weights and quotas in force, by role.
    pub fn role_states(&self) -> Vec<RoleState> {
        let roles: std::collections::BTreeSet<&String> =
            self.weights.keys().chain(self.quotas.keys()).collect();
        roles
            .into_iter()
            .map(|r| RoleState {
                role: r.clone(),
                weight: self.weights.get(r).copied().unwrap_or(1.0),
                quota: self.quotas.get(r).cloned(),
            })
            .collect()
    }

    /// A framework subscribes (or re-subscribes with its id) on `authority`; returns its
    /// id. The ACLs decide whether it may register in its role, and a framework id stays
    /// with the authority that registered it. A scheduler that subscribes holds no
    /// offer: those still out to its framework are rescinded.
    pub fn subscribe(
        &mut self,
        now: Now,
        info: FrameworkInfo,
        authority: FrameworkAuthority,
    ) -> Result<FrameworkId, SubscribeError> {
        if info.name.trim().is_empty() {
            return Err(SubscribeError::NoName);
        }
        if info.role.trim().is_empty() {
            return Err(SubscribeError::NoRole);
        }
        if let Some(why) = self.cfg.acls.framework_problem(&authority, &info.role) {
            return Err(SubscribeError::Forbidden(why));
        }
        if let Some(f) = info.id.as_ref().and_then(|id| self.frameworks.get(id)) {
            if f.authority != authority {
                return Err(SubscribeError::Forbidden(format!(
                    "framework {:?} was registered by another authority",
                    info.id
                        .as_ref()
                        .map(FrameworkId::as_str)
                        .unwrap_or_default()
                )));
            }
        }
        let id = match &info.id {
            Some(id) if self.removed_set.contains(id) => {
                return Err(SubscribeError::UnknownFramework(id.clone()))
            }
            Some(id) if !self.frameworks.contains_key(id) => {
                // A framework of an earlier master (this one restarted): its tasks came
                // back with their agents, and so does it.
                self.allocator.add_framework(id, &info.role)?;
                info!(framework = %id, name = %info.name, "framework re-subscribed after a master restart");
                self.frameworks.insert(
                    id.clone(),
                    FrameworkEntry {
                        info: info.clone(),
                        authority,
                        disconnected_since: None,
                    },
                );
                id.clone()
            }
            Some(id) => {
                let f = self.frameworks.get_mut(id).expect("checked");
                f.disconnected_since = None;
                // Offers out to it were made to the scheduler it had (a disconnected one
                // has none): they go back, as does its suppression.
                let offered = self.offers.of_framework(id);
                self.withdraw_offers(now, offered, true);
                self.allocator.revive(id)?;
                info!(framework = %id, "framework re-subscribed");
                id.clone()
            }
            None => {
                let id = FrameworkId::new(self.mint("fw"));
                self.allocator.add_framework(&id, &info.role)?;
                info!(framework = %id, name = %info.name, role = %info.role, "framework subscribed");
                self.frameworks.insert(
                    id.clone(),
                    FrameworkEntry {
                        info: FrameworkInfo {
                            id: Some(id.clone()),
                            ..info
                        },
                        authority,
                        disconnected_since: None,
                    },
                );
                id
            }
        };
        self.tell_scheduler(&id, ToScheduler::Subscribed(id.clone()));
        self.schedule_allocation();
        let secs = self.frameworks[&id]
            .info
            .failover_timeout_secs
            .clamp(0.0, MAX_FAILOVER_TIMEOUT_SECS);
        if let Some(op) = self.recovery.subscribed(&id, (secs * 1e3) as u64) {
            self.out.push_back(Effect::Registry(op));
        }
        Ok(id)
    }

    /// A framework of the registry did not re-subscribe with this master within its
    /// failover timeout: the tasks its agents brought back are killed (and those agents
    /// still bring back), and it may not come back under its id.
    fn abandon(&mut self, now: Now, fw: FrameworkId) {
        warn!(framework = %fw, "did not re-subscribe within its failover timeout: killing its tasks");
        let live: Vec<(TaskId, AgentId)> = self
            .tasks
            .values()
            .filter(|t| t.framework_id == fw && !t.is_terminal())
            .map(|t| (t.task_id.clone(), t.agent_id.clone()))
            .collect();
        for (task_id, agent) in live {
            self.tasks.request_kill(&task_id);
            self.tell_agent(&agent, ToAgent::Kill { task_id });
        }
        if let Some(op) = self.recovery.framework_removed(&fw, now.unix_ms) {
            self.out.push_back(Effect::Registry(op));
        }
        self.forbid(fw);
    }

    /// `fw` was removed: it may not come back under its id, and tasks of it that agents
    /// bring back are killed (the last [`MAX_REMOVED_FRAMEWORKS`] removed are kept).
    fn forbid(&mut self, fw: FrameworkId) {
        if !self.removed_set.insert(fw.clone()) {
            return;
        }
        self.removed.push_back(fw);
        while self.removed.len() > MAX_REMOVED_FRAMEWORKS {
            if let Some(old) = self.removed.pop_front() {
                self.removed_set.remove(&old);
            }
        }
    }

    /// The cluster as operators see it.
    pub fn state(&self) -> ClusterState {
        ClusterState {
            agents: self.agent_states(),
            frameworks: self.framework_states(),
            tasks: self.tasks.values().map(TaskRecord::info).collect(),
            total: self.allocator.total().clone(),
            used: self.used(),
            offers_outstanding: self.offers.len(),
            offers: self.offers.values().cloned().collect(),
            last_allocation_us: self.last_alloc_us,
            inbox: InboxStats::default(),
        }
    }

    /// Every agent as operators see it, by id.
    pub fn agent_states(&self) -> Vec<AgentState> {
        self.agents
            .iter()
            .map(|(id, a)| AgentState {
                id: id.clone(),
                hostname: a.hostname.clone(),
                status: match a.status {
                    AgentLink::Active => AgentStatus::Active,
                    AgentLink::Unreachable { .. } => AgentStatus::Unreachable,
                },
                total: a.total.total(),
                free: self
                    .allocator
                    .available(id)
                    .map(|r| r.total())
                    .unwrap_or_default(),
                isolation: a.isolation.clone(),
                problem: a.problem.clone(),
            })
            .collect()
    }

    /// Every framework as operators see it, by id.
    pub fn framework_states(&self) -> Vec<FrameworkState> {
        let shares = self.allocator.shares();
        self.frameworks
            .iter()
            .map(|(id, f)| FrameworkState {
                id: id.clone(),
                name: f.info.name.clone(),
                role: f.info.role.clone(),
                status: if f.disconnected_since.is_none() {
                    FrameworkStatus::Connected
                } else {
                    FrameworkStatus::Disconnected
                },
                share: shares.get(id).copied().unwrap_or(0.0),
            })
            .collect()
    }

    /// Resources held by live tasks and outstanding offers.
    pub fn used(&self) -> Resources {
        let mut used = Resources::default();
        for t in self.tasks.values().filter(|t| !t.is_terminal()) {
            used.add(&t.resources.total());
        }
        for o in self.offers.values() {
            used.add(&o.resources.total());
        }
        used
    }

    /// The master's tunables.
    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// Total resources of active agents.
    pub fn total(&self) -> Resources {
        self.allocator.total().clone()
    }

    /// Outstanding offers.
    pub fn offers_outstanding(&self) -> usize {
        self.offers.len()
    }

    /// Duration of the last allocation cycle, in microseconds.
    pub fn last_allocation_us(&self) -> u64 {
        self.last_alloc_us
    }

    /// The tasks added, changed or forgotten (`None`) since the last call, in id order:
    /// what a read model built from an earlier [`MasterCore::state`] needs to catch up.
    pub fn take_task_changes(&mut self) -> Vec<(TaskId, Option<TaskInfo>)> {
        let changed = self.tasks.take_changed();
        changed
            .into_iter()
            .map(|id| {
                let info = self.tasks.get(&id).map(TaskRecord::info);
                (id, info)
            })
            .collect()
    }

    fn mint(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:08x}-{}", self.epoch, self.next_id)
    }

    /// How long events are batched before an allocation cycle.
    fn batch(&self) -> Duration {
        let agents = u32::try_from(self.agents.len()).unwrap_or(u32::MAX);
        self.cfg
            .allocation_batch
            .max(ALLOCATION_BATCH_PER_AGENT.saturating_mul(agents))
    }

    fn schedule_allocation(&mut self) {
        if !self.alloc_pending {
            self.alloc_pending = true;
            self.out.push_back(Effect::AllocateAfter(self.batch()));
        }
    }

    fn tell_scheduler(&mut self, framework_id: &str, msg: ToScheduler) {
        if self.framework_connected(framework_id) == Some(true) {
            self.out.push_back(Effect::Scheduler {
                framework_id: framework_id.into(),
                msg,
            });
        }
    }

    fn tell_agent(&mut self, agent_id: &str, msg: ToAgent) {
        if self.agent_status(agent_id) == Some(AgentLink::Active) {
            self.out.push_back(Effect::Agent {
                agent_id: agent_id.into(),
                msg,
            });
        }
    }

    fn refuse(&mut self, framework_id: &str, message: String) {
        debug!(framework = framework_id, "refused: {message}");
        self.tell_scheduler(framework_id, ToScheduler::Error(message));
    }

    /// Gives resources a framework held on an agent back to the allocator. Failing is
    /// expected only when the framework or the agent has left the allocator (their
    /// books were dropped with them); anything else is a broken book.
    fn recover(
        &mut self,
        now: Now,
        framework_id: &str,
        agent_id: &str,
        resources: &RoleResources,
        refuse: Option<Duration>,
    ) {
        if !self.frameworks.contains_key(framework_id) {
            // Its framework is not registered: what the task held is freed as such.
            if let Err(e) = self
                .allocator
                .release_absent(framework_id, agent_id, resources)
            {
                debug!(
                    framework = framework_id,
                    agent = agent_id,
                    "nothing to release: {e}"
                );
            }
            return;
        }
        if let Err(e) =
            self.allocator
                .recover(framework_id, agent_id, resources, refuse, now.elapsed)
        {
            let expected = !self.frameworks.contains_key(framework_id)
                || self.agent_status(agent_id) != Some(AgentLink::Active);
            assert!(
                expected,
                "recovering {} of {framework_id} on {agent_id}: {e}",
                resources.total()
            );
            debug!(
                framework = framework_id,
                agent = agent_id,
                "nothing to recover: {e}"
            );
        }
    }

    /// A master-generated update (no acknowledgement expected: uuid 0).
    fn master_update(
        &mut self,
        now: Now,
        task_id: &str,
        state: TaskState,
        reason: Reason,
        message: String,
    ) {
        match self
            .tasks
            .transition(task_id, state, Some(reason), message.clone())
        {
            Ok(()) => {}
            Err(e) => {
                debug!(task = task_id, "no master update to {state}: {e}");
                return;
            }
        }
        let t = self.tasks.get(task_id).expect("just moved");
        let u = StatusUpdate {
            uuid: 0,
            task_id: task_id.into(),
            framework_id: t.framework_id.clone(),
            agent_id: t.agent_id.clone(),
            state,
            reason: Some(reason),
            message,
            exit_code: None,
            unix_ms: now.unix_ms,
            actor: None,
        };
        let fw = t.framework_id.clone();
        self.tell_scheduler(&fw, ToScheduler::Update(u));
    }

    /// A task that never reached an agent: recorded (if its id is free), reported, ended.
    fn task_error(&mut self, now: Now, fw: &str, agent: &str, spec: &TaskSpec, message: String) {
        let reason = Some(Reason::TaskInvalid);
        if !self.tasks.contains(&spec.task_id) {
            let mut t =
                TaskRecord::new(fw, agent, spec, RoleResources::default(), TaskState::Error);
            t.reason = reason;
            t.message = message.clone();
            self.tasks.insert(t);
        }
        let u = StatusUpdate {
            uuid: 0,
            task_id: spec.task_id.clone(),
            framework_id: fw.into(),
            agent_id: agent.into(),
            state: TaskState::Error,
            reason,
            message,
            exit_code: None,
            unix_ms: now.unix_ms,
            actor: None,
        };
        self.tell_scheduler(fw, ToScheduler::Update(u));
    }

    fn rescind_agent_offers(&mut self, now: Now, agent: &str) {
        let ids = self.offers.of_agent(agent);
        self.withdraw_offers(now, ids, true);
    }

    /// Takes back the offers `ids`, their resources free again; with `tell`, their
    /// frameworks hear that they are rescinded.
    fn withdraw_offers(&mut self, now: Now, ids: Vec<OfferId>, tell: bool) {
        for id in ids {
            if let Some(o) = self.offers.remove(&id) {
                self.recover(now, &o.framework_id, &o.agent_id, &o.resources, None);
                if tell {
                    self.tell_scheduler(&o.framework_id, ToScheduler::Rescind(id));
                }
            }
        }
    }

    fn register_agent(&mut self, now: Now, reg: AgentRegistration) {
        let AgentRegistration {
            agent_id,
            hostname,
            resources,
            tasks,
            isolation,
            completed,
            problem,
            attempt: _,
            parts,
            attributes,
        } = reg;
        debug_assert_eq!(parts, 0, "a registration is joined before the core sees it");
        let reregister = self.agents.contains_key(&agent_id);
        if self.agent_status(&agent_id) == Some(AgentLink::Active) {
            // Back before its old connection was seen to drop: what it was offered is
            // void (the allocator starts its books afresh below).
            self.rescind_agent_offers(now, &agent_id);
        }
        let reported: BTreeMap<TaskId, AgentTask> = tasks
            .into_iter()
            .map(|t| (t.spec.task_id.clone(), t))
            .collect();
        let completed: BTreeMap<TaskId, CompletedTask> = completed
            .into_iter()
            .map(|t| (t.spec.task_id.clone(), t))
            .collect();
        self.reconcile_known(now, &agent_id, &reported, &completed);
        self.adopt_completed(&agent_id, completed);
        let (used, stale) = self.adopt_reported(now, &agent_id, reported);
        self.allocator
            .add_agent(&agent_id, resources.clone(), &used);
        info!(agent = %agent_id, %hostname, reregister, resources = %resources.total(), "agent registered");
        let (write, recovered) = self.recovery.registered(&agent_id, &hostname);
        if let Some(op) = write {
            self.out.push_back(Effect::Registry(op));
        }
        self.agents.insert(
            agent_id.clone(),
            AgentEntry {
                hostname,
                attributes,
                total: resources,
                status: AgentLink::Active,
                isolation,
                problem: None,
            },
        );
        if problem.is_some() {
            self.agent_health(now, &agent_id, problem);
        }
        self.tell_agent(&agent_id, ToAgent::Registered);
        if recovered {
            info!("every agent of the registry re-registered");
            self.answer_held(now);
        }
        for task_id in stale {
            warn!(task = %task_id, "killing a task the cluster already gave up on");
            self.tell_agent(&agent_id, ToAgent::Kill { task_id });
        }
        for task_id in self.tasks.live_of_agent(&agent_id) {
            if self.tasks.get(&task_id).is_some_and(|t| t.kill_requested) {
                info!(task = %task_id, "sending a kill again to its re-registered agent");
                self.tell_agent(&agent_id, ToAgent::Kill { task_id });
            }
        }
        self.schedule_allocation();
    }

    /// Tasks the master knew on a re-registering agent: those it reports come back,
    /// those it completed meanwhile end as they did, and those it no longer has are gone.
    fn reconcile_known(
        &mut self,
        now: Now,
        agent_id: &str,
        reported: &BTreeMap<TaskId, AgentTask>,
        completed: &BTreeMap<TaskId, CompletedTask>,
    ) {
        for id in self.tasks.live_of_agent(agent_id) {
            match reported.get(&id) {
                Some(t) if !t.state.is_terminal() => {
                    if self.tasks.get(&id).map(TaskRecord::state) == Some(TaskState::Unreachable) {
                        self.master_update(
                            now,
                            &id,
                            t.state,
                            Reason::AgentReregistered,
                            format!("agent {agent_id} re-registered"),
                        );
                    }
                }
                // Ended while the agent was away: its own terminal update follows.
                Some(_) => {}
                None if completed.contains_key(&id) => {
                    let c = &completed[&id];
                    let reason = c.reason.unwrap_or(Reason::AgentReregistered);
                    self.master_update(now, &id, c.state, reason, c.message.clone());
                }
                None => self.master_update(
                    now,
                    &id,
                    TaskState::Gone,
                    Reason::AgentReregistered,
                    "the agent no longer knows this task".into(),
                ),
            }
        }
    }

    /// Tells a connected framework of its task this master just learnt of from an agent
    /// (after a restart), as reconciliation would, so it can act on it: a kill it still
    /// wants is sent again.
    fn tell_recovered(&mut self, now: Now, rec: &TaskRecord) {
        let u = StatusUpdate {
            uuid: 0,
            task_id: rec.task_id.clone(),
            framework_id: rec.framework_id.clone(),
            agent_id: rec.agent_id.clone(),
            state: rec.state(),
            reason: Some(Reason::Reconciliation),
            message: rec.message.clone(),
            exit_code: None,
            unix_ms: now.unix_ms,
            actor: None,
        };
        self.tell_scheduler(&rec.framework_id, ToScheduler::Update(u));
    }

    /// Takes in the completed tasks an agent reports that this master does not know (it
    /// restarted since, or forgot them): they are shown with their ends.
    fn adopt_completed(&mut self, agent_id: &str, completed: BTreeMap<TaskId, CompletedTask>) {
        for (id, c) in completed {
            if self.tasks.contains(&id) {
                continue;
            }
            let mut rec = TaskRecord::new(&c.framework_id, agent_id, &c.spec, c.resources, c.state);
            rec.reason = c.reason;
            rec.message = c.message;
            self.tasks.insert(rec);
        }
    }

    /// Takes in the tasks an agent reports; returns the resources they hold (by
    /// framework) and the tasks to kill because the cluster already gave up on them.
    fn adopt_reported(
        &mut self,
        now: Now,
        agent_id: &str,
        reported: BTreeMap<TaskId, AgentTask>,
    ) -> (Vec<(FrameworkId, RoleResources)>, Vec<TaskId>) {
        let mut used = Vec::new();
        let mut stale = Vec::new();
        for (id, t) in reported {
            let known_terminal = self.tasks.get(&id).map(TaskRecord::is_terminal);
            if t.state.is_terminal() {
                // Ended while the agent was away: its terminal update is on its way and
                // frees the resources then, so until that they count as used.
                if known_terminal == Some(false) {
                    used.push((t.framework_id.clone(), t.resources.clone()));
                }
                if known_terminal.is_none() {
                    // Unknown to this master (it restarted): known from now on, ended.
                    self.recover_task(now, agent_id, &t, "ended while the master was away");
                }
                continue;
            }
            if known_terminal == Some(true)
                || (known_terminal.is_none() && self.removed_set.contains(&t.framework_id))
            {
                // Already given up on (e.g. TASK_GONE while the agent was away), or its
                // framework is gone: it must not run on unknown to anyone.
                stale.push(id);
                continue;
            }
            used.push((t.framework_id.clone(), t.resources.clone()));
            if known_terminal.is_none() {
                self.recover_task(now, agent_id, &t, "recovered from agent");
            }
        }
        (used, stale)
    }

    /// Records a task this master learnt of from its agent, and tells its framework.
    fn recover_task(&mut self, now: Now, agent_id: &str, t: &AgentTask, message: &str) {
        let mut rec = TaskRecord::new(
            &t.framework_id,
            agent_id,
            &t.spec,
            t.resources.clone(),
            t.state,
        );
        rec.message = message.into();
        self.tell_recovered(now, &rec);
        self.tasks.insert(rec);
    }

    /// An agent's health changed: one that cannot take tasks is not offered (its offers
    /// are withdrawn) until it says it can again.
    fn agent_health(&mut self, now: Now, agent_id: &str, problem: Option<String>) {
        let Some(a) = self.agents.get_mut(agent_id) else {
            return;
        };
        if a.problem == problem {
            return;
        }
        match &problem {
            Some(p) => warn!(agent = agent_id, "agent takes no tasks: {p}"),
            None => info!(agent = agent_id, "agent takes tasks again"),
        }
        a.problem = problem;
        let paused = a.problem.is_some();
        self.allocator.pause_agent(agent_id, paused);
        if paused {
            self.rescind_agent_offers(now, agent_id);
        } else {
            self.schedule_allocation();
        }
    }

    fn agent_lost(&mut self, now: Now, agent_id: &str) {
        if self.agent_status(agent_id) != Some(AgentLink::Active) {
            return;
        }
        warn!(agent = agent_id, "agent unreachable");
        self.rescind_agent_offers(now, agent_id);
        self.allocator.remove_agent(agent_id);
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.status = AgentLink::Unreachable { since: now.elapsed };
        }
        for id in self.tasks.live_of_agent(agent_id) {
            self.master_update(
                now,
                &id,
                TaskState::Unreachable,
                Reason::AgentDisconnected,
                format!("agent {agent_id} is unreachable"),
            );
        }
    }

    /// Tells a framework where the actor of its task answers, ahead of the task's
    /// running update: only for an actor task of the agent that says so, not yet
    /// running (the running update carries the same) and not ended.
    fn actor_up(&mut self, agent_id: &str, task_id: TaskId, at: ActorAt) {
        let Some(t) = self.tasks.get(&task_id) else {
            debug!(task = %task_id, "actor up for an unknown task");
            return;
        };
        let starting = matches!(t.state(), TaskState::Staging | TaskState::Starting);
        if t.agent_id != agent_id || t.actor_type.is_none() || !starting {
            debug!(task = %task_id, agent = agent_id, state = %t.state(), "actor up not told: not a starting actor task of that agent");
            return;
        }
        let fw = t.framework_id.clone();
        self.tell_scheduler(&fw, ToScheduler::ActorUp { task_id, at });
    }

    fn update(&mut self, now: Now, u: StatusUpdate) {
        let Some(t) = self.tasks.get(&u.task_id) else {
            warn!(task = %u.task_id, "update for an unknown task");
            if u.uuid != 0 {
                // Acknowledge it so the agent's stream does not resend it forever.
                self.tell_agent(
                    &u.agent_id,
                    ToAgent::Ack {
                        task_id: u.task_id,
                        uuid: u.uuid,
                    },
                );
            }
            return;
        };
        let was_terminal = t.is_terminal();
        let before = t.state();
        let (fw, agent, res) = (
            t.framework_id.clone(),
            t.agent_id.clone(),
            t.resources.clone(),
        );
        if let Some(at) = &u.actor {
            self.tasks.set_actor_node(&u.task_id, &at.node);
        }
        match self
            .tasks
            .transition(&u.task_id, u.state, u.reason, u.message.clone())
        {
            Ok(()) => {}
            // The end the master already knows, now with its own words.
            Err(TransitionError::Illegal(_)) if before == u.state => {
                self.tasks.note(&u.task_id, u.reason, u.message.clone());
            }
            // A resent or late update: the framework still hears it (and acknowledges it).
            Err(TransitionError::Illegal(e)) => {
                debug!(task = %u.task_id, "update not applied: {e}")
            }
            Err(TransitionError::Unknown) => unreachable!("the task was just found"),
        }
        if u.state.is_terminal() && !was_terminal {
            self.recover(now, &fw, &agent, &res, None);
            self.schedule_allocation();
        }
        if self.frameworks.contains_key(&fw) {
            self.tell_scheduler(&fw, ToScheduler::Update(u));
        } else if u.uuid != 0 && self.removed_set.contains(&fw) {
            // Nobody is left to acknowledge it: the master does, so the agent's stream
            // moves on (and reaches the task's terminal update). A framework this master
            // does not know yet (it restarted) is not answered for: the agent sends the
            // update again, and the framework hears it once it is back.
            self.tell_agent(
                &agent,
                ToAgent::Ack {
                    task_id: u.task_id,
                    uuid: u.uuid,
                },
            );
        }
    }

    fn framework_disconnected(&mut self, now: Now, fw: &str) {
        if self.framework_connected(fw) != Some(true) {
            return;
        }
        warn!(framework = %fw, "framework disconnected");
        // A scheduler that is gone hears of no offer.
        let offered = self.offers.of_framework(fw);
        self.withdraw_offers(now, offered, false);
        if let Err(e) = self.allocator.suppress(fw) {
            unreachable!("a known framework is in the allocator: {e}");
        }
        if let Some(f) = self.frameworks.get_mut(fw) {
            f.disconnected_since = Some(now.elapsed);
        }
        self.schedule_allocation();
    }

    /// Checks which of the named offers a framework may use together: all must be its
    /// own and of one agent. Returns that agent, and the first problem found.
    fn check_offers(&self, fw: &str, offer_ids: &[OfferId]) -> (Option<AgentId>, Option<String>) {
        let mut agent: Option<AgentId> = None;
        let mut bad = None;
        for id in offer_ids {
            match self.offers.get(id) {
                Some(o) if o.framework_id != fw => {
                    bad = Some(format!("offer {id} belongs to another framework"))
                }
                Some(o) if agent.as_ref().is_none_or(|a| *a == o.agent_id) => {
                    agent = Some(o.agent_id.clone());
                }
                Some(_) => bad = Some("offers of different agents cannot be combined".into()),
                None => {
                    bad = Some(format!(
                        "offer {id} is not valid (unknown, used or rescinded)"
                    ))
                }
            }
        }
        (agent, bad)
    }

    /// Why a task of an accept cannot launch, if it cannot.
    fn launch_problem(&self, fw: &str, agent_id: &str, spec: &TaskSpec) -> Option<String> {
        if !self.frameworks.contains_key(fw) {
            Some(format!("unknown framework {fw:?}"))
        } else if spec.task_id.trim().is_empty() {
            Some("empty task id".into())
        } else if self.tasks.contains(&spec.task_id) {
            Some(format!("task id {:?} is already used", spec.task_id))
        } else if spec.argv.first().is_none_or(|a| a.trim().is_empty()) {
            Some("empty command".into())
        } else if let Some(p) = spec.size_problem() {
            Some(p)
        } else if spec.resources.cpus_milli == 0 && spec.resources.mem_mb == 0 {
            Some("a task needs some cpus or mem".into())
        } else if let Some(p) = self.frameworks.get(fw).and_then(|f| {
            self.cfg
                .acls
                .task_problem(&f.authority, &f.info.role, spec.user.as_deref())
        }) {
            Some(p)
        } else if self.agent_status(agent_id) != Some(AgentLink::Active) {
            Some(format!("agent {agent_id:?} is not active"))
        } else {
            None
        }
    }

    fn accept(
        &mut self,
        now: Now,
        fw: &str,
        offer_ids: &[OfferId],
        tasks: Vec<TaskSpec>,
        refuse_secs: f64,
    ) {
        let (agent, bad) = self.check_offers(fw, offer_ids);
        let agent_id = agent.unwrap_or_default();
        let mut pool = RoleResources::default();
        for id in offer_ids {
            if let Some(o) = self.offers.get(id) {
                if o.framework_id == fw && o.agent_id == agent_id {
                    let o = self.offers.remove(id).expect("just found");
                    pool.add(&o.resources);
                }
            }
        }
        let role = self
            .frameworks
            .get(fw)
            .map(|f| f.info.role.clone())
            .unwrap_or_else(|| "*".into());
        for spec in tasks {
            if let Some(p) = bad
                .clone()
                .or_else(|| self.launch_problem(fw, &agent_id, &spec))
            {
                self.task_error(now, fw, &agent_id, &spec, p);
                continue;
            }
            let Some(take) = pool.take(&role, &spec.resources) else {
                let msg = format!(
                    "resources not in the offer: wants {}, offer has {}",
                    spec.resources,
                    pool.total()
                );
                self.task_error(now, fw, &agent_id, &spec, msg);
                continue;
            };
            pool = pool.checked_sub(&take).expect("taken from the pool");
            self.tasks.insert(TaskRecord::new(
                fw,
                &agent_id,
                &spec,
                take.clone(),
                TaskState::Staging,
            ));
            self.tell_agent(
                &agent_id,
                ToAgent::Run {
                    framework_id: fw.into(),
                    spec,
                    resources: take,
                },
            );
        }
        if !pool.is_empty() {
            let refuse = Duration::from_secs_f64(refuse_secs.clamp(0.0, MAX_REFUSE_SECS));
            self.recover(now, fw, &agent_id, &pool, Some(refuse));
        }
        self.schedule_allocation();
    }

    fn decline(&mut self, now: Now, fw: &str, offer_ids: &[OfferId], refuse_secs: f64) {
        let refuse = Duration::from_secs_f64(refuse_secs.clamp(0.0, MAX_REFUSE_SECS));
        for id in offer_ids {
            if self.offers.get(id).is_some_and(|o| o.framework_id == fw) {
                let o = self.offers.remove(id).expect("checked");
                self.recover(now, fw, &o.agent_id, &o.resources, Some(refuse));
            }
        }
        self.schedule_allocation();
    }

    fn kill(&mut self, fw: &str, task_id: TaskId) {
        match self.tasks.get(&task_id) {
            Some(t) if t.framework_id == fw && !t.is_terminal() => {
                let agent = t.agent_id.clone();
                // Kept until the task ends: an agent away now is told when it is back.
                if !self.cfg.forget_kills {
                    self.tasks.request_kill(&task_id);
                }
                self.tell_agent(&agent, ToAgent::Kill { task_id });
            }
            Some(t) if t.framework_id == fw => {}
            _ => self.refuse(fw, format!("kill: unknown task {task_id:?}")),
        }
    }

    fn acknowledge(&mut self, fw: &str, task_id: TaskId, uuid: u64) {
        if uuid == 0 {
            return;
        }
        if let Some(t) = self.tasks.get(&task_id).filter(|t| t.framework_id == fw) {
            let agent = t.agent_id.clone();
            self.tell_agent(&agent, ToAgent::Ack { task_id, uuid });
        }
    }

    fn reconcile(&mut self, now: Now, fw: &str, task_ids: Vec<TaskId>) {
        let ids: Vec<TaskId> = if task_ids.is_empty() {
            self.tasks
                .values()
                .filter(|t| t.framework_id == fw)
                .map(|t| t.task_id.clone())
                .collect()
        } else {
            task_ids
        };
        for id in ids {
            let known = self.tasks.get(&id).filter(|t| t.framework_id == fw);
            if known.is_none() && self.recovery.waiting() {
                // It may be on an agent not back yet: answered once the agents are.
                if !self.recovery.hold(&fw.into(), id.clone()) {
                    warn!(framework = fw, task = %id, "too many reconciliations held; one dropped");
                }
                continue;
            }
            let u = match known {
                Some(t) => StatusUpdate {
                    uuid: 0,
                    task_id: id,
                    framework_id: fw.into(),
                    agent_id: t.agent_id.clone(),
                    state: t.state(),
                    reason: Some(Reason::Reconciliation),
                    message: t.message.clone(),
                    exit_code: None,
                    unix_ms: now.unix_ms,
                    actor: None,
                },
                None => StatusUpdate {
                    uuid: 0,
                    task_id: id,
                    framework_id: fw.into(),
                    agent_id: Default::default(),
                    state: TaskState::Unknown,
                    reason: Some(Reason::Reconciliation),
                    message: "the master does not know this task".into(),
                    exit_code: None,
                    unix_ms: now.unix_ms,
                    actor: None,
                },
            };
            self.tell_scheduler(fw, ToScheduler::Update(u));
        }
    }

    /// Answers the reconciliations held while agents were expected back.
    fn answer_held(&mut self, now: Now) {
        let mut by_fw: BTreeMap<FrameworkId, Vec<TaskId>> = BTreeMap::new();
        for (fw, id) in self.recovery.release() {
            by_fw.entry(fw).or_default().push(id);
        }
        for (fw, ids) in by_fw {
            if self.frameworks.contains_key(&fw) {
                self.reconcile(now, &fw, ids);
            }
        }
    }

    fn remove_framework(&mut self, now: Now, fw: &str) {
        if !self.frameworks.contains_key(fw) {
            return;
        }
        if let Some(op) = self.recovery.framework_removed(&fw.into(), now.unix_ms) {
            self.out.push_back(Effect::Registry(op));
        }
        let live: Vec<(TaskId, AgentId, RoleResources)> = self
            .tasks
            .values()
            .filter(|t| t.framework_id == fw && !t.is_terminal())
            .map(|t| (t.task_id.clone(), t.agent_id.clone(), t.resources.clone()))
            .collect();
        // No recover here: removing the framework returns everything it held...
        for id in self.offers.of_framework(fw) {
            self.offers.remove(&id);
        }
        self.allocator.remove_framework(fw);
        // ...but what its tasks hold stays held until they end (they are being killed).
        for (task_id, agent, resources) in live {
            if self.agent_status(&agent) == Some(AgentLink::Active) {
                if let Err(e) = self.allocator.hold_absent(fw, &agent, &resources) {
                    unreachable!("resources just returned by {fw} on {agent}: {e}");
                }
            }
            self.tell_agent(&agent, ToAgent::Kill { task_id });
        }
        self.frameworks.remove(fw);
        self.forbid(fw.into());
        info!(framework = %fw, "framework removed");
    }

    fn allocate(&mut self, now: Now) {
        self.alloc_pending = false;
        let allocations = self.allocator.allocate(now.elapsed);
        let mut by_fw: BTreeMap<FrameworkId, Vec<Offer>> = BTreeMap::new();
        for a in allocations {
            let id = self.mint("offer");
            let (hostname, attributes) = self
                .agents
                .get(&a.agent)
                .map(|x| (x.hostname.clone(), x.attributes.clone()))
                .unwrap_or_default();
            let o = Offer {
                id: id.into(),
                framework_id: a.framework.clone(),
                agent_id: a.agent,
                hostname,
                resources: a.resources,
                attributes,
            };
            self.offers.insert(o.clone());
            by_fw.entry(a.framework).or_default().push(o);
        }
        for (fw, offers) in by_fw {
            self.tell_scheduler(&fw, ToScheduler::Offers(offers));
        }
    }

    fn tick(&mut self, now: Now) {
        self.tasks.evict_completed(self.cfg.max_completed_tasks);
        let timeout = self.cfg.agent_removal_timeout;
        let gone: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                matches!(a.status, AgentLink::Unreachable { since } if now.elapsed.saturating_sub(since) >= timeout)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            warn!(agent = %id, "agent removed after its removal timeout");
            for t in self.tasks.live_of_agent(&id) {
                self.master_update(
                    now,
                    &t,
                    TaskState::Gone,
                    Reason::AgentRemoved,
                    format!("agent {id} was removed"),
                );
            }
            self.agents.remove(&id);
            self.allocator.forget_agent(&id);
            if let Some(op) = self.recovery.removed(&id, now.unix_ms) {
                self.out.push_back(Effect::Registry(op));
            }
        }
        if let Some(late) = self.recovery.expire(now.elapsed) {
            warn!(
                agents = late,
                "agents of the registry did not re-register in time; their tasks are unknown"
            );
            self.answer_held(now);
        }
        let expired: Vec<FrameworkId> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                f.disconnected_since.is_some_and(|s| {
                    now.elapsed.saturating_sub(s).as_secs_f64() >= f.info.failover_timeout_secs
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for fw in expired {
            warn!(framework = %fw, "failover timeout passed: killing its tasks");
            self.remove_framework(now, &fw);
        }
        for fw in self.recovery.overdue_frameworks(now.elapsed) {
            if !self.frameworks.contains_key(&fw) {
                self.abandon(now, fw);
            }
        }
    }

    /// Each framework's allocation equals its live tasks' resources (on active agents)
    /// plus its outstanding offers.
    pub fn check_books(&self) -> Result<(), String> {
        let mut want: BTreeMap<&str, Resources> = BTreeMap::new();
        for t in self.tasks.values() {
            let counted = !t.is_terminal()
                && self.frameworks.contains_key(&t.framework_id)
                && self.agent_status(&t.agent_id) == Some(AgentLink::Active);
            if counted {
                want.entry(&t.framework_id)
                    .or_default()
                    .add(&t.resources.total());
            }
        }
        for o in self.offers.values() {
            want.entry(&o.framework_id)
                .or_default()
                .add(&o.resources.total());
        }
        for fw in self.frameworks.keys() {
            let have = self
                .allocator
                .allocated_to(fw)
                .map_err(|e| format!("framework {fw}: {e}"))?;
            let want = want.remove(fw.as_str()).unwrap_or_default();
            if have != want {
                return Err(format!(
                    "framework {fw}: allocator holds {have}, tasks and offers hold {want}"
                ));
            }
        }
        if let Some((fw, r)) = want.into_iter().next() {
            return Err(format!("{r} held by {fw}, which is not registered"));
        }
        self.check_agents()
    }

    /// No offer is of an agent that is not active, and no active agent has more in live
    /// tasks and offers than it has.
    fn check_agents(&self) -> Result<(), String> {
        let mut held: BTreeMap<&str, Resources> = BTreeMap::new();
        for o in self.offers.values() {
            if self.agent_status(&o.agent_id) != Some(AgentLink::Active) {
                return Err(format!(
                    "offer {} is of agent {}, which is not active",
                    o.id, o.agent_id
                ));
            }
            if let Some(p) = self
                .agents
                .get(&o.agent_id)
                .and_then(|a| a.problem.as_ref())
            {
                return Err(format!(
                    "offer {} is of agent {}, which takes no tasks: {p}",
                    o.id, o.agent_id
                ));
            }
            held.entry(&o.agent_id)
                .or_default()
                .add(&o.resources.total());
        }
        for t in self.tasks.values().filter(|t| !t.is_terminal()) {
            held.entry(&t.agent_id)
                .or_default()
                .add(&t.resources.total());
        }
        for (id, a) in &self.agents {
            let total = a.total.total();
            match held.get(id.as_str()) {
                Some(h) if a.status == AgentLink::Active && !total.contains(h) => {
                    return Err(format!(
                        "agent {id} has {total}, its tasks and offers hold {h}"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Number of tasks in the table (live and kept ended ones).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }
}
