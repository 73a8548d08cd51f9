//! The master: admits agents, offers their free resources to frameworks through the
//! [`Allocator`], validates launches, keeps the cluster's task table and forwards status
//! updates. Agents and schedulers are watched with monitors: a lost agent turns its tasks
//! `TASK_UNREACHABLE` (then `TASK_GONE` after `agent_removal_timeout`); a disconnected
//! framework keeps its tasks for its failover timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;
use tracing::{info, warn};

use plexus_actors::Node;

use crate::allocator::Allocator;
use crate::protocol::*;
use crate::resources::{Resources, RoleResources};
use crate::status::StatusUpdate;
use crate::task::{TaskState, TaskStateMachine};

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
    /// [`Allocator::set_offer_limit`].
    pub offer_limit: u32,
}

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
        }
    }
}

/// The master actor.
pub struct Master {
    node: Node,
    cfg: MasterConfig,
}

impl Master {
    /// How long events are batched before an allocation cycle: the configured batch,
    /// and 20 µs per agent in large clusters (a cycle scans every agent).
    fn batch(&self, st: &MasterState) -> Duration {
        self.cfg
            .allocation_batch
            .max(Duration::from_micros(20) * st.agents.len() as u32)
    }

    /// A master on `node`.
    pub fn new(node: Node, cfg: MasterConfig) -> Self {
        Master { node, cfg }
    }
}

enum AgentStatus {
    Active,
    Unreachable { since: Instant },
}

struct AgentEntry {
    hostname: String,
    total: RoleResources,
    actor: Option<ActorRef<AgentMsg>>,
    status: AgentStatus,
    isolation: String,
}

struct FrameworkEntry {
    info: FrameworkInfo,
    scheduler: Option<ActorRef<SchedulerMsg>>,
    disconnected_since: Option<Instant>,
}

struct TaskEntry {
    info: TaskInfo,
    sm: TaskStateMachine,
}

enum Watched {
    Agent(String),
    Framework(String),
}

/// Outstanding offers by id, indexed by agent and by framework, so that rescinding the
/// offers of one agent or framework touches only theirs.
#[derive(Default)]
struct OfferBook {
    by_id: BTreeMap<String, Offer>,
    by_agent: BTreeMap<String, BTreeSet<String>>,
    by_framework: BTreeMap<String, BTreeSet<String>>,
}

impl OfferBook {
    fn insert(&mut self, o: Offer) {
        // Offer ids are never reused; should one be, the old offer goes first.
        self.remove(&o.id);
        self.by_agent
            .entry(o.agent_id.clone())
            .or_default()
            .insert(o.id.clone());
        self.by_framework
            .entry(o.framework_id.clone())
            .or_default()
            .insert(o.id.clone());
        self.by_id.insert(o.id.clone(), o);
    }

    fn unlink(&mut self, o: &Offer) {
        for (index, key) in [
            (&mut self.by_agent, &o.agent_id),
            (&mut self.by_framework, &o.framework_id),
        ] {
            if let Some(ids) = index.get_mut(key) {
                ids.remove(&o.id);
                if ids.is_empty() {
                    index.remove(key);
                }
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Offer> {
        let o = self.by_id.remove(id)?;
        self.unlink(&o);
        Some(o)
    }

    fn get(&self, id: &str) -> Option<&Offer> {
        self.by_id.get(id)
    }

    fn values(&self) -> impl Iterator<Item = &Offer> {
        self.by_id.values()
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Ids of the offers of `agent`, in id order.
    fn of_agent(&self, agent: &str) -> Vec<String> {
        self.by_agent
            .get(agent)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Ids of the offers made to `framework`, in id order.
    fn of_framework(&self, framework: &str) -> Vec<String> {
        self.by_framework
            .get(framework)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The master's state.
pub struct MasterState {
    agents: BTreeMap<String, AgentEntry>,
    frameworks: BTreeMap<String, FrameworkEntry>,
    offers: OfferBook,
    tasks: BTreeMap<String, TaskEntry>,
    /// The ids of each agent's tasks in `tasks` (so agent events need no table scan).
    by_agent: BTreeMap<String, BTreeSet<String>>,
    watched: BTreeMap<ActorId, Watched>,
    /// Ended tasks, oldest first (the table keeps at most `max_completed_tasks`).
    completed: std::collections::VecDeque<String>,
    allocator: Allocator,
    alloc_pending: bool,
    next_id: u64,
    start: Instant,
    last_alloc_us: u64,
}

fn unix_ms() -> u64 {
    plexus_net::clock::unix_ms()
}

impl MasterState {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn send_to_framework(&self, fw: &str, m: SchedulerMsg) {
        if let Some(s) = self.frameworks.get(fw).and_then(|f| f.scheduler.as_ref()) {
            let _ = s.cast(m);
        }
    }

    /// Adds a task to the table (and to its agent's index).
    fn insert_task(&mut self, entry: TaskEntry) {
        let id = entry.info.task_id.clone();
        self.remove_task(&id);
        self.by_agent
            .entry(entry.info.agent_id.clone())
            .or_default()
            .insert(id.clone());
        self.tasks.insert(id, entry);
    }

    /// Drops a task from the table.
    fn remove_task(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            if let Some(set) = self.by_agent.get_mut(&t.info.agent_id) {
                set.remove(id);
                if set.is_empty() {
                    self.by_agent.remove(&t.info.agent_id);
                }
            }
        }
    }

    /// Ids of the agent's tasks that have not ended, in id order.
    fn live_tasks_of(&self, agent: &str) -> Vec<String> {
        self.by_agent
            .get(agent)
            .into_iter()
            .flatten()
            .filter(|id| {
                self.tasks
                    .get(*id)
                    .is_some_and(|t| !t.info.state.is_terminal())
            })
            .cloned()
            .collect()
    }

    /// A master-generated update (no acknowledgement expected: uuid 0).
    fn master_update(
        &mut self,
        task_id: &str,
        state: TaskState,
        reason: Option<&str>,
        message: String,
    ) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            return;
        };
        if t.sm.transition(state).is_err() {
            return;
        }
        t.info.state = state;
        t.info.reason = reason.map(str::to_string);
        t.info.message = message.clone();
        if state.is_terminal() {
            self.completed.push_back(task_id.to_string());
        }
        let u = StatusUpdate {
            uuid: 0,
            task_id: task_id.to_string(),
            framework_id: t.info.framework_id.clone(),
            agent_id: t.info.agent_id.clone(),
            state,
            reason: reason.map(str::to_string),
            message,
            exit_code: None,
            unix_ms: unix_ms(),
        };
        let fw = t.info.framework_id.clone();
        self.send_to_framework(&fw, SchedulerMsg::Update(u));
    }

    /// A task that never reached an agent: recorded, reported, terminal.
    fn task_error(&mut self, fw: &str, agent: &str, spec: &TaskSpec, message: String) {
        let info = TaskInfo {
            task_id: spec.task_id.clone(),
            name: spec.name.clone(),
            framework_id: fw.to_string(),
            agent_id: agent.to_string(),
            state: TaskState::Error,
            reason: Some("REASON_TASK_INVALID".into()),
            message: message.clone(),
            resources: RoleResources::default(),
            argv: spec.argv.clone(),
        };
        if !self.tasks.contains_key(&spec.task_id) {
            self.insert_task(TaskEntry {
                info,
                sm: TaskStateMachine::at(TaskState::Error),
            });
            self.completed.push_back(spec.task_id.clone());
        }
        self.send_to_framework(
            fw,
            SchedulerMsg::Update(StatusUpdate {
                uuid: 0,
                task_id: spec.task_id.clone(),
                framework_id: fw.to_string(),
                agent_id: agent.to_string(),
                state: TaskState::Error,
                reason: Some("REASON_TASK_INVALID".into()),
                message,
                exit_code: None,
                unix_ms: unix_ms(),
            }),
        );
    }

    fn rescind_agent_offers(&mut self, agent: &str) {
        for id in self.offers.of_agent(agent) {
            if let Some(o) = self.offers.remove(&id) {
                let _ = self.allocator.recover(
                    &o.framework_id,
                    &o.agent_id,
                    &o.resources,
                    None,
                    self.now(),
                );
                self.send_to_framework(&o.framework_id, SchedulerMsg::Rescind(id));
            }
        }
    }

    fn rescind_framework_offers(&mut self, fw: &str) {
        let now = self.now();
        for id in self.offers.of_framework(fw) {
            if let Some(o) = self.offers.remove(&id) {
                let _ =
                    self.allocator
                        .recover(&o.framework_id, &o.agent_id, &o.resources, None, now);
            }
        }
    }

    fn agent_lost(&mut self, agent_id: &str) {
        let Some(a) = self.agents.get_mut(agent_id) else {
            return;
        };
        if matches!(a.status, AgentStatus::Unreachable { .. }) {
            return;
        }
        warn!(agent = agent_id, "agent unreachable");
        a.status = AgentStatus::Unreachable {
            since: Instant::now(),
        };
        a.actor = None;
        self.rescind_agent_offers(agent_id);
        self.allocator.remove_agent(agent_id);
        for id in self.live_tasks_of(agent_id) {
            self.master_update(
                &id,
                TaskState::Unreachable,
                Some("REASON_AGENT_DISCONNECTED"),
                format!("agent {agent_id} is unreachable"),
            );
        }
    }

    fn state(&self) -> ClusterState {
        let mut used = Resources::default();
        for t in self.tasks.values().filter(|t| !t.info.state.is_terminal()) {
            used.add(&t.info.resources.total());
        }
        for o in self.offers.values() {
            used.add(&o.resources.total());
        }
        let shares = self.allocator.shares();
        ClusterState {
            agents: self
                .agents
                .iter()
                .map(|(id, a)| AgentState {
                    id: id.clone(),
                    hostname: a.hostname.clone(),
                    status: match a.status {
                        AgentStatus::Active => "active".into(),
                        AgentStatus::Unreachable { .. } => "unreachable".into(),
                    },
                    total: a.total.total(),
                    free: self
                        .allocator
                        .available(id)
                        .map(|r| r.total())
                        .unwrap_or_default(),
                    isolation: a.isolation.clone(),
                })
                .collect(),
            frameworks: self
                .frameworks
                .iter()
                .map(|(id, f)| FrameworkState {
                    id: id.clone(),
                    name: f.info.name.clone(),
                    role: f.info.role.clone(),
                    status: if f.scheduler.is_some() {
                        "connected".into()
                    } else {
                        "disconnected".into()
                    },
                    share: shares.get(id).copied().unwrap_or(0.0),
                })
                .collect(),
            tasks: self.tasks.values().map(|t| t.info.clone()).collect(),
            total: self.allocator.total().clone(),
            used,
            offers_outstanding: self.offers.len(),
            offers: self.offers.values().cloned().collect(),
            last_allocation_us: self.last_alloc_us,
        }
    }
}

fn schedule_allocation(me: &ActorRef<MasterMsg>, st: &mut MasterState, delay: Duration) {
    if !st.alloc_pending {
        st.alloc_pending = true;
        me.send_after(delay, || MasterMsg::Allocate);
    }
}

impl Master {
    async fn register_agent(
        &self,
        me: &ActorRef<MasterMsg>,
        st: &mut MasterState,
        reg: AgentRegistration,
    ) {
        let AgentRegistration {
            agent_id,
            hostname,
            resources,
            tasks,
            isolation,
        } = reg;
        let actor = match self.node.whereis::<AgentMsg>(&agent_name(&agent_id)).await {
            Ok(Some(a)) => a,
            other => {
                warn!(agent = %agent_id, "cannot reach registering agent: {other:?}");
                return;
            }
        };
        me.get_cell().monitor(actor.get_cell());
        st.watched
            .insert(actor.get_id(), Watched::Agent(agent_id.clone()));
        let reregister = st.agents.contains_key(&agent_id);
        // Tasks the agent reports come back; tasks it no longer has are gone.
        let reported: BTreeMap<String, AgentTask> = tasks
            .into_iter()
            .map(|t| (t.spec.task_id.clone(), t))
            .collect();
        let known = st.live_tasks_of(&agent_id);
        for id in known {
            match reported.get(&id) {
                Some(t) if !t.state.is_terminal() => {
                    if st.tasks[&id].info.state == TaskState::Unreachable {
                        st.master_update(
                            &id,
                            t.state,
                            Some("REASON_AGENT_REREGISTERED"),
                            format!("agent {agent_id} re-registered"),
                        );
                    }
                }
                Some(_) => {}
                None => st.master_update(
                    &id,
                    TaskState::Gone,
                    Some("REASON_AGENT_REREGISTERED"),
                    "the agent no longer knows this task".into(),
                ),
            }
        }
        let mut used: Vec<(String, RoleResources)> = Vec::new();
        let mut stale = Vec::new();
        for (id, t) in reported {
            if t.state.is_terminal() {
                // Ended while the agent was away: its terminal update is on its way and
                // frees the resources then, so until that they count as used.
                if st
                    .tasks
                    .get(&id)
                    .is_some_and(|k| !k.info.state.is_terminal())
                {
                    used.push((t.framework_id.clone(), t.resources.clone()));
                }
                continue;
            }
            if st
                .tasks
                .get(&id)
                .is_some_and(|k| k.info.state.is_terminal())
            {
                // Already given up on (e.g. TASK_GONE while the agent was away): it must
                // not run on unknown to its framework.
                stale.push(id);
                continue;
            }
            used.push((t.framework_id.clone(), t.resources.clone()));
            if !st.tasks.contains_key(&id) {
                st.insert_task(TaskEntry {
                    info: TaskInfo {
                        task_id: id,
                        name: t.spec.name.clone(),
                        framework_id: t.framework_id.clone(),
                        agent_id: agent_id.clone(),
                        state: t.state,
                        reason: None,
                        message: "recovered from agent".into(),
                        resources: t.resources.clone(),
                        argv: t.spec.argv.clone(),
                    },
                    sm: TaskStateMachine::at(t.state),
                });
            }
        }
        st.allocator.add_agent(&agent_id, resources.clone(), &used);
        info!(agent = %agent_id, %hostname, reregister, resources = %resources.total(), "agent registered");
        st.agents.insert(
            agent_id,
            AgentEntry {
                hostname,
                total: resources,
                actor: Some(actor.clone()),
                status: AgentStatus::Active,
                isolation,
            },
        );
        let _ = actor.cast(AgentMsg::Registered);
        for task_id in stale {
            warn!(task = %task_id, "killing a task the cluster already gave up on");
            let _ = actor.cast(AgentMsg::Kill { task_id });
        }
        schedule_allocation(me, st, self.batch(st));
    }

    async fn subscribe(
        &self,
        me: &ActorRef<MasterMsg>,
        st: &mut MasterState,
        info: FrameworkInfo,
        scheduler: String,
    ) -> Result<String, String> {
        if info.name.trim().is_empty() {
            return Err("a framework needs a name".into());
        }
        if info.role.trim().is_empty() {
            return Err("a framework needs a role (`*` for none)".into());
        }
        let sched = match self.node.whereis::<SchedulerMsg>(&scheduler).await {
            Ok(Some(s)) => s,
            other => return Err(format!("cannot reach scheduler {scheduler:?}: {other:?}")),
        };
        let id = match &info.id {
            Some(id) if st.frameworks.contains_key(id) => {
                let f = st.frameworks.get_mut(id).expect("checked");
                f.scheduler = Some(sched.clone());
                f.disconnected_since = None;
                let _ = st.allocator.revive(id);
                info!(framework = %id, "framework re-subscribed");
                id.clone()
            }
            Some(id) => {
                return Err(format!(
                    "unknown framework id {id:?} (its failover timeout may have passed)"
                ))
            }
            None => {
                let id = st.id("fw");
                st.allocator
                    .add_framework(&id, &info.role)
                    .map_err(|e| e.to_string())?;
                st.frameworks.insert(
                    id.clone(),
                    FrameworkEntry {
                        info: FrameworkInfo {
                            id: Some(id.clone()),
                            ..info.clone()
                        },
                        scheduler: Some(sched.clone()),
                        disconnected_since: None,
                    },
                );
                info!(framework = %id, name = %info.name, role = %info.role, "framework subscribed");
                id
            }
        };
        me.get_cell().monitor(sched.get_cell());
        st.watched
            .insert(sched.get_id(), Watched::Framework(id.clone()));
        let _ = sched.cast(SchedulerMsg::Subscribed(id.clone()));
        schedule_allocation(me, st, self.batch(st));
        Ok(id)
    }

    fn accept(
        &self,
        me: &ActorRef<MasterMsg>,
        st: &mut MasterState,
        fw: String,
        offer_ids: Vec<String>,
        tasks: Vec<TaskSpec>,
        refuse_secs: f64,
    ) {
        let now = st.now();
        let mut pool = RoleResources::default();
        let mut agent: Option<String> = None;
        let mut bad = None;
        for id in &offer_ids {
            match st.offers.get(id) {
                Some(o)
                    if o.framework_id == fw && agent.as_ref().is_none_or(|a| *a == o.agent_id) =>
                {
                    agent = Some(o.agent_id.clone());
                }
                Some(o) if o.framework_id != fw => {
                    bad = Some(format!("offer {id} belongs to another framework"))
                }
                Some(_) => bad = Some("offers of different agents cannot be combined".into()),
                None => {
                    bad = Some(format!(
                        "offer {id} is not valid (unknown, used or rescinded)"
                    ))
                }
            }
        }
        let valid: Vec<Offer> = offer_ids
            .iter()
            .filter_map(|id| {
                st.offers
                    .get(id)
                    .filter(|o| o.framework_id == fw && Some(&o.agent_id) == agent.as_ref())
                    .cloned()
            })
            .collect();
        for o in &valid {
            st.offers.remove(&o.id);
            pool.add(&o.resources);
        }
        let agent_id = agent.unwrap_or_default();
        let role = st
            .frameworks
            .get(&fw)
            .map(|f| f.info.role.clone())
            .unwrap_or_else(|| "*".into());
        let agent_ref = st.agents.get(&agent_id).and_then(|a| a.actor.clone());
        for spec in tasks {
            let problem = if let Some(b) = &bad {
                Some(b.clone())
            } else if !st.frameworks.contains_key(&fw) {
                Some(format!("unknown framework {fw:?}"))
            } else if spec.task_id.trim().is_empty() {
                Some("empty task id".into())
            } else if st.tasks.contains_key(&spec.task_id) {
                Some(format!("task id {:?} is already used", spec.task_id))
            } else if spec.argv.first().is_none_or(|a| a.trim().is_empty()) {
                Some("empty command".into())
            } else if spec.resources.cpus_milli == 0 && spec.resources.mem_mb == 0 {
                Some("a task needs some cpus or mem".into())
            } else if agent_ref.is_none() {
                Some(format!("agent {agent_id:?} is not active"))
            } else {
                None
            };
            if let Some(p) = problem {
                st.task_error(&fw, &agent_id, &spec, p);
                continue;
            }
            let Some(take) = pool.take(&role, &spec.resources) else {
                let msg = format!(
                    "resources not in the offer: wants {}, offer has {}",
                    spec.resources,
                    pool.total()
                );
                st.task_error(&fw, &agent_id, &spec, msg);
                continue;
            };
            pool = pool.checked_sub(&take).expect("taken from the pool");
            st.insert_task(TaskEntry {
                info: TaskInfo {
                    task_id: spec.task_id.clone(),
                    name: spec.name.clone(),
                    framework_id: fw.clone(),
                    agent_id: agent_id.clone(),
                    state: TaskState::Staging,
                    reason: None,
                    message: String::new(),
                    resources: take.clone(),
                    argv: spec.argv.clone(),
                },
                sm: TaskStateMachine::default(),
            });
            if let Some(a) = &agent_ref {
                let _ = a.cast(AgentMsg::Run {
                    framework_id: fw.clone(),
                    spec,
                    resources: take,
                });
            }
        }
        if !pool.is_empty() && !agent_id.is_empty() {
            let refuse = Duration::from_secs_f64(refuse_secs.clamp(0.0, 86_400.0));
            let _ = st
                .allocator
                .recover(&fw, &agent_id, &pool, Some(refuse), now);
        }
        schedule_allocation(me, st, self.batch(st));
    }
}

impl Actor for Master {
    type Msg = MasterMsg;
    type State = MasterState;
    type Arguments = ();

    async fn pre_start(
        &self,
        me: ActorRef<MasterMsg>,
        _: (),
    ) -> Result<MasterState, ActorProcessingErr> {
        self.node.register(MASTER_NAME, &me)?;
        me.send_interval(Duration::from_secs(1), || MasterMsg::Tick);
        me.send_interval(self.cfg.allocation_interval, || MasterMsg::Allocate);
        let mut allocator = Allocator::new();
        allocator.set_offer_limit(self.cfg.offer_limit);
        for (role, w) in &self.cfg.weights {
            allocator.set_weight(role, *w);
        }
        for (role, q) in &self.cfg.quotas {
            allocator.set_quota(role, Some(q.clone()));
        }
        Ok(MasterState {
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            offers: OfferBook::default(),
            tasks: BTreeMap::new(),
            by_agent: BTreeMap::new(),
            watched: BTreeMap::new(),
            completed: Default::default(),
            allocator,
            alloc_pending: false,
            next_id: 0,
            start: Instant::now(),
            last_alloc_us: 0,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<MasterMsg>,
        msg: MasterMsg,
        st: &mut MasterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MasterMsg::RegisterAgent(reg) => self.register_agent(&me, st, reg).await,
            MasterMsg::Update(u) => {
                let Some(t) = st.tasks.get_mut(&u.task_id) else {
                    warn!(task = %u.task_id, "update for an unknown task");
                    return Ok(());
                };
                let was_terminal = t.info.state.is_terminal();
                if t.sm.transition(u.state).is_ok() {
                    t.info.state = u.state;
                    t.info.reason = u.reason.clone();
                    t.info.message = u.message.clone();
                }
                let (fw, agent, res) = (
                    t.info.framework_id.clone(),
                    t.info.agent_id.clone(),
                    t.info.resources.clone(),
                );
                if u.state.is_terminal() && !was_terminal {
                    st.completed.push_back(u.task_id.clone());
                    let now = st.now();
                    let _ = st.allocator.recover(&fw, &agent, &res, None, now);
                    schedule_allocation(&me, st, self.batch(st));
                }
                if st.frameworks.contains_key(&fw) {
                    st.send_to_framework(&fw, SchedulerMsg::Update(u));
                } else if u.uuid != 0 {
                    // Nobody is left to acknowledge it: the master does, so the agent's
                    // stream moves on (and reaches the task's terminal update).
                    if let Some(a) = st.agents.get(&agent).and_then(|a| a.actor.clone()) {
                        let _ = a.cast(AgentMsg::Ack {
                            task_id: u.task_id,
                            uuid: u.uuid,
                        });
                    }
                }
            }
            MasterMsg::Subscribe {
                info,
                scheduler,
                reply,
            } => {
                let r = self.subscribe(&me, st, info, scheduler).await;
                let _ = reply.send(r);
            }
            MasterMsg::Accept {
                framework_id,
                offer_ids,
                tasks,
                refuse_secs,
            } => self.accept(&me, st, framework_id, offer_ids, tasks, refuse_secs),
            MasterMsg::Decline {
                framework_id,
                offer_ids,
                refuse_secs,
            } => {
                let now = st.now();
                let refuse = Duration::from_secs_f64(refuse_secs.clamp(0.0, 86_400.0));
                for id in offer_ids {
                    if st
                        .offers
                        .get(&id)
                        .is_some_and(|o| o.framework_id == framework_id)
                    {
                        let o = st.offers.remove(&id).expect("checked");
                        let _ = st.allocator.recover(
                            &framework_id,
                            &o.agent_id,
                            &o.resources,
                            Some(refuse),
                            now,
                        );
                    }
                }
                schedule_allocation(&me, st, self.batch(st));
            }
            MasterMsg::Kill {
                framework_id,
                task_id,
            } => match st.tasks.get(&task_id) {
                Some(t) if t.info.framework_id == framework_id && !t.info.state.is_terminal() => {
                    if let Some(a) = st
                        .agents
                        .get(&t.info.agent_id)
                        .and_then(|a| a.actor.clone())
                    {
                        let _ = a.cast(AgentMsg::Kill { task_id });
                    }
                }
                Some(_) => {}
                None => st.send_to_framework(
                    &framework_id,
                    SchedulerMsg::Error(format!("kill: unknown task {task_id:?}")),
                ),
            },
            MasterMsg::Acknowledge {
                framework_id,
                task_id,
                uuid,
            } => {
                if uuid == 0 {
                    return Ok(());
                }
                if let Some(t) = st
                    .tasks
                    .get(&task_id)
                    .filter(|t| t.info.framework_id == framework_id)
                {
                    if let Some(a) = st
                        .agents
                        .get(&t.info.agent_id)
                        .and_then(|a| a.actor.clone())
                    {
                        let _ = a.cast(AgentMsg::Ack { task_id, uuid });
                    }
                }
            }
            MasterMsg::Reconcile {
                framework_id,
                task_ids,
            } => {
                let ids: Vec<String> = if task_ids.is_empty() {
                    st.tasks
                        .values()
                        .filter(|t| t.info.framework_id == framework_id)
                        .map(|t| t.info.task_id.clone())
                        .collect()
                } else {
                    task_ids
                };
                for id in ids {
                    let u = match st
                        .tasks
                        .get(&id)
                        .filter(|t| t.info.framework_id == framework_id)
                    {
                        Some(t) => StatusUpdate {
                            uuid: 0,
                            task_id: id.clone(),
                            framework_id: framework_id.clone(),
                            agent_id: t.info.agent_id.clone(),
                            state: t.info.state,
                            reason: Some("REASON_RECONCILIATION".into()),
                            message: t.info.message.clone(),
                            exit_code: None,
                            unix_ms: unix_ms(),
                        },
                        None => StatusUpdate {
                            uuid: 0,
                            task_id: id.clone(),
                            framework_id: framework_id.clone(),
                            agent_id: String::new(),
                            state: TaskState::Unknown,
                            reason: Some("REASON_RECONCILIATION".into()),
                            message: "the master does not know this task".into(),
                            exit_code: None,
                            unix_ms: unix_ms(),
                        },
                    };
                    st.send_to_framework(&framework_id, SchedulerMsg::Update(u));
                }
            }
            MasterMsg::Suppress { framework_id } => {
                let _ = st.allocator.suppress(&framework_id);
            }
            MasterMsg::Revive { framework_id } => {
                let _ = st.allocator.revive(&framework_id);
                schedule_allocation(&me, st, self.batch(st));
            }
            MasterMsg::Teardown { framework_id } => {
                self.remove_framework(st, &framework_id);
            }
            MasterMsg::State(reply) => {
                let _ = reply.send(st.state());
            }
            MasterMsg::Allocate => {
                st.alloc_pending = false;
                let t = std::time::Instant::now();
                let now = st.now();
                let allocations = st.allocator.allocate(now);
                st.last_alloc_us = t.elapsed().as_micros() as u64;
                let mut by_fw: BTreeMap<String, Vec<Offer>> = BTreeMap::new();
                for a in allocations {
                    let id = st.id("offer");
                    let hostname = st
                        .agents
                        .get(&a.agent)
                        .map(|x| x.hostname.clone())
                        .unwrap_or_default();
                    let o = Offer {
                        id: id.clone(),
                        framework_id: a.framework.clone(),
                        agent_id: a.agent,
                        hostname,
                        resources: a.resources,
                    };
                    st.offers.insert(o.clone());
                    by_fw.entry(a.framework).or_default().push(o);
                }
                for (fw, offers) in by_fw {
                    st.send_to_framework(&fw, SchedulerMsg::Offers(offers));
                }
            }
            MasterMsg::Tick => self.tick(st),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<MasterMsg>,
        evt: SupervisionEvent,
        st: &mut MasterState,
    ) -> Result<(), ActorProcessingErr> {
        let cell = match &evt {
            SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) => {
                c.clone()
            }
            _ => return Ok(()),
        };
        match st.watched.remove(&cell.get_id()) {
            Some(Watched::Agent(id)) => {
                // Only if that ref is still the agent's current one.
                let current = st
                    .agents
                    .get(&id)
                    .and_then(|a| a.actor.as_ref())
                    .is_some_and(|a| a.get_id() == cell.get_id());
                if current {
                    st.agent_lost(&id);
                }
            }
            Some(Watched::Framework(id)) => {
                let current = st
                    .frameworks
                    .get(&id)
                    .and_then(|f| f.scheduler.as_ref())
                    .is_some_and(|s| s.get_id() == cell.get_id());
                if current {
                    warn!(framework = %id, "framework disconnected");
                    st.rescind_framework_offers(&id);
                    let _ = st.allocator.suppress(&id);
                    if let Some(f) = st.frameworks.get_mut(&id) {
                        f.scheduler = None;
                        f.disconnected_since = Some(Instant::now());
                    }
                    schedule_allocation(&me, st, self.batch(st));
                }
            }
            None => {}
        }
        Ok(())
    }
}

impl Master {
    fn remove_framework(&self, st: &mut MasterState, fw: &str) {
        let live: Vec<(String, String)> = st
            .tasks
            .values()
            .filter(|t| t.info.framework_id == fw && !t.info.state.is_terminal())
            .map(|t| (t.info.task_id.clone(), t.info.agent_id.clone()))
            .collect();
        for (task_id, agent) in live {
            if let Some(a) = st.agents.get(&agent).and_then(|a| a.actor.clone()) {
                let _ = a.cast(AgentMsg::Kill { task_id });
            }
        }
        st.rescind_framework_offers(fw);
        st.allocator.remove_framework(fw);
        st.frameworks.remove(fw);
        info!(framework = %fw, "framework removed");
    }

    fn tick(&self, st: &mut MasterState) {
        while st.completed.len() > self.cfg.max_completed_tasks {
            let Some(id) = st.completed.pop_front() else {
                break;
            };
            if st
                .tasks
                .get(&id)
                .is_some_and(|t| t.info.state.is_terminal())
            {
                st.remove_task(&id);
            }
        }
        let gone: Vec<String> = st
            .agents
            .iter()
            .filter(|(_, a)| matches!(a.status, AgentStatus::Unreachable { since } if since.elapsed() >= self.cfg.agent_removal_timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            warn!(agent = %id, "agent removed after its removal timeout");
            let tasks = st.live_tasks_of(&id);
            for t in tasks {
                st.master_update(
                    &t,
                    TaskState::Gone,
                    Some("REASON_AGENT_REMOVED"),
                    format!("agent {id} was removed"),
                );
            }
            st.agents.remove(&id);
        }
        let expired: Vec<String> = st
            .frameworks
            .iter()
            .filter(|(_, f)| {
                f.disconnected_since
                    .is_some_and(|s| s.elapsed().as_secs_f64() >= f.info.failover_timeout_secs)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for fw in expired {
            warn!(framework = %fw, "failover timeout passed: killing its tasks");
            self.remove_framework(st, &fw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(id: usize, agent: usize, fw: usize) -> Offer {
        Offer {
            id: format!("o{id}"),
            framework_id: format!("f{fw}"),
            agent_id: format!("a{agent}"),
            hostname: String::new(),
            resources: RoleResources::default(),
        }
    }

    proptest! {
        /// The indexes always list exactly the offers a scan of all offers would find.
        #[test]
        fn offer_indexes_agree_with_a_scan(
            ops in proptest::collection::vec((any::<bool>(), 0usize..40, 0usize..5, 0usize..4), 1..200)
        ) {
            let mut book = OfferBook::default();
            for (insert, id, agent, fw) in ops {
                if insert {
                    book.insert(offer(id, agent, fw));
                } else {
                    book.remove(&format!("o{id}"));
                }
                for a in 0..5 {
                    let a = format!("a{a}");
                    let scan: Vec<String> =
                        book.values().filter(|o| o.agent_id == a).map(|o| o.id.clone()).collect();
                    prop_assert_eq!(book.of_agent(&a), scan);
                }
                for f in 0..4 {
                    let f = format!("f{f}");
                    let scan: Vec<String> =
                        book.values().filter(|o| o.framework_id == f).map(|o| o.id.clone()).collect();
                    prop_assert_eq!(book.of_framework(&f), scan);
                }
            }
            // Nothing is left behind once every offer is gone.
            let ids: Vec<String> = book.values().map(|o| o.id.clone()).collect();
            for id in ids {
                book.remove(&id);
            }
            prop_assert!(book.by_agent.is_empty() && book.by_framework.is_empty());
        }
    }
}
