//! The agent: one per machine. Registers its resources with the master, runs tasks through
//! a [`Containerizer`], and delivers their status updates at least once: every update is
//! checkpointed and resent with backoff until the framework acknowledges it. Its state is
//! checkpointed to `state_dir`, so a restarted agent re-adopts the tasks still running,
//! reports those that ended meanwhile, and loses no unacknowledged update.

mod core;
mod task;
#[cfg(test)]
mod tests;

pub use core::{
    ActorEnd, AgentCore, Checkpoint, Effect, TaskEnd, TaskRecord, AGENT_COMPLETED_TASKS_LIMIT,
};

pub use task::{TaskActor, TaskArgs, TaskMsg};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use plexus_actors::{InboxGauge, Node, SendError};

use crate::containerizer::{ContainerInfo, Containerizer, LaunchSpec};
use crate::ids::TaskId;
use crate::master::Now;
use crate::protocol::*;
use crate::resources::{PortSet, Resources, RoleResources};
use crate::statefile::{Disk, StateFile};
use crate::status::ActorAt;

pub use crate::statefile::RealDisk;
use crate::supervision::{ChildSpec, FaultSwitch, Restarter, RestarterMsg};

/// Agent tunables.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Stable id; when `None`, the checkpointed one, or the node name.
    pub agent_id: Option<String>,
    /// Resources to offer, per role.
    pub resources: RoleResources,
    /// Where the checkpoint and the sandboxes live.
    pub state_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL when killing a task.
    pub kill_grace: Duration,
    /// Period of registration retries and update resends.
    pub tick: Duration,
    /// A deliberate defect, for proving that the simulation's invariants catch real bugs:
    /// acknowledgements are ignored. Never set outside such checks.
    pub drop_acknowledgements: bool,
    /// A deliberate defect, for the same checks: the agent does not report its completed
    /// tasks when it registers. Never set outside such checks.
    pub forget_completed_tasks: bool,
    /// A deliberate defect, for the same checks: updates are sent before the checkpoint
    /// holding them is written. Never set outside such checks.
    pub send_unwritten_updates: bool,
    /// Makes the next message of a task actor panic once tripped (for tests of the
    /// agent's supervision of its task actors; nothing on the wire can trip it).
    pub fault: FaultSwitch,
    /// Makes the agent actor itself panic on its next message once tripped (for tests of
    /// its supervisor).
    pub agent_fault: FaultSwitch,
    /// Where the checkpoint is kept ([`RealDisk`] but in simulations).
    pub disk: Arc<dyn Disk>,
    /// Most messages from peers queued for the agent; past it they are shed and
    /// counted (the master resends what matters).
    pub inbox_limit_msgs: usize,
    /// Issues executors' identities (`None`: this agent runs no actor tasks; they fail
    /// to launch, saying why).
    pub executors: Option<Arc<dyn crate::executor::IssueExecutors>>,
    /// What operators say about this machine, for placement constraints.
    pub attributes: BTreeMap<String, String>,
    /// How long its executors wait for it after losing it before they exit.
    pub executor_recovery: Duration,
}

/// How long an executor's certificate is valid.
pub const EXECUTOR_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How long a started executor may take to dial its agent and host its actor.
pub const EXECUTOR_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pre-started executor waits for an actor task before it is stopped.
pub const SPARE_EXECUTOR_IDLE: Duration = Duration::from_secs(60);
/// How long after an actor task's actor answered the next executor is pre-started, so
/// that the process start does not compete with the actor's first messages for the
/// machine.
pub const SPARE_START_DELAY: Duration = Duration::from_millis(20);

/// Which actor tasks a pre-started executor can take: the same framework's, with the
/// same executor command and OS user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SpareKey {
    framework_id: FrameworkId,
    argv: Vec<String>,
    user: Option<String>,
}

/// A pre-started executor: one per framework and executor command on an agent that ran
/// one of its actor tasks, so that its next actor task here skips the process start. It
/// runs in a cgroup of its own sized like its sibling's, resized to the task it takes.
/// Its resources are not offered to anyone else meanwhile only by being small; it is
/// stopped after [`SPARE_EXECUTOR_IDLE`] without a task, and an agent restart stops it
/// as an orphan.
/// A pre-started executor an actor task claimed before its launch was written, and
/// the spawn of its actor there.
struct Claim {
    name: String,
    key: SpareKey,
    container: ContainerInfo,
    cell: oneshot::Receiver<Result<ActorCell, String>>,
}

struct Spare {
    key: SpareKey,
    /// The resources its cgroup is sized to.
    sized: Resources,
    /// Its container, once launched.
    container: Option<ContainerInfo>,
    /// Watches its process until it ends or it takes a task.
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// The actor tasks whose actors an agent monitors, by the actors' (remote) ids; shared
/// with the tasks' attach futures, which add an actor before monitoring it.
type ActorIndex = Arc<std::sync::Mutex<BTreeMap<ActorId, TaskId>>>;

/// The node names of the executors an agent runs now.
type LiveExecutors = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// The agent's admission rule: executor peers only if they are its own, live executors
/// (an identity of an executor that ended, or of another agent's, is refused);
/// everyone else as the wire's other rules say.
fn admit_executors(agent: String, live: LiveExecutors) -> plexus_actors::Admission {
    Arc::new(move |peer: &str, roles: plexus_net::Roles| {
        if !roles.has(plexus_net::Role::Executor) {
            return Ok(());
        }
        if plexus_net::tls::executor_agent(peer) != Some(agent.as_str()) {
            return Err(format!("executor {peer:?} is not one of agent {agent}'s"));
        }
        if !live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(peer)
        {
            return Err(format!(
                "agent {agent} runs no executor {peer:?} now (its identity is spent)"
            ));
        }
        Ok(())
    })
}

/// Most bytes of tasks in one message of a registration (a registration with more is
/// sent in parts).
pub const REGISTRATION_PART_BYTES: usize = 1 << 20;

/// The default bound of an agent's inbox.
pub const AGENT_INBOX_LIMIT_MSGS: usize = 16_384;

/// Resources of this machine: its cpus, its memory less 1 GiB (at least half of it),
/// 10 GiB of disk and ports 31000-32000.
pub fn detect_resources() -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024);
    Resources {
        cpus_milli: cpus * 1000,
        mem_mb: (mem_mb.saturating_sub(1024)).max(mem_mb / 2),
        disk_mb: 10 * 1024,
        ports: PortSet::from_ranges([(31000, 32000)]),
        scalars: BTreeMap::new(),
    }
}

/// The agent actor.
pub struct Agent {
    node: Node,
    cfg: AgentConfig,
    containerizer: Arc<dyn Containerizer>,
}

impl Agent {
    /// An agent on `node` running tasks through `containerizer`.
    pub fn new(node: Node, cfg: AgentConfig, containerizer: Arc<dyn Containerizer>) -> Self {
        Agent {
            node,
            cfg,
            containerizer,
        }
    }
}

/// The agent process's root supervisor: restarts the agent actor under a
/// [`RestartPolicy`](crate::supervision::RestartPolicy). A restarted agent reads its
/// checkpoint again, re-adopts the tasks still running (the processes outlive it) and
/// re-registers, as after an agent process restart.
pub type AgentSupervisor = Restarter<AgentSpec>;

/// Messages of the agent's supervisor.
pub type AgentSupervisorMsg = RestarterMsg<AgentMsg>;

/// The agents an [`AgentSupervisor`] starts.
pub struct AgentSpec {
    node: Node,
    cfg: AgentConfig,
    containerizer: Arc<dyn Containerizer>,
}

impl AgentSpec {
    /// Agents of `cfg` on `node`, running tasks through `containerizer`.
    pub fn new(node: Node, cfg: AgentConfig, containerizer: Arc<dyn Containerizer>) -> Self {
        AgentSpec {
            node,
            cfg,
            containerizer,
        }
    }
}

impl ChildSpec for AgentSpec {
    type Child = Agent;

    fn make(&self, _generation: u32) -> (Agent, ()) {
        (
            Agent::new(
                self.node.clone(),
                self.cfg.clone(),
                self.containerizer.clone(),
            ),
            (),
        )
    }

    fn what(&self) -> &'static str {
        "the agent"
    }

    fn node(&self) -> &Node {
        &self.node
    }
}

/// Most changes written in one checkpoint during a burst.
const PERSIST_BATCH: usize = 32;

/// After a checkpoint write that carried more than [`PERSIST_IDLE_CHANGES`] changes (a
/// burst), the next one waits at least this many times as long as the write took (group
/// commit): under a burst, writing takes at most a fifth of the agent's time and each
/// write carries many changes. An agent with little to write writes at once, so a lone
/// launch waits for no timer.
const PERSIST_SPACING: u32 = 4;

/// Most changes a write may carry and still count as idle (no spacing after it).
const PERSIST_IDLE_CHANGES: usize = 2;

/// First wait before writing the checkpoint again after a write failed (a full disk);
/// it doubles with each failure, up to `PERSIST_RETRY_MAX`. Meanwhile no update is sent.
const PERSIST_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts to write a checkpoint that could not be written.
const PERSIST_RETRY_MAX: Duration = Duration::from_secs(5);

/// When the last checkpoint write ended, how long it took and how many changes it carried.
struct LastSave {
    at: Instant,
    took: Duration,
    changes: usize,
}

/// The agent's state.
pub struct AgentState {
    /// The decisions and what is checkpointed.
    core: AgentCore,
    /// Where the checkpoint is written.
    state_file: StateFile,
    master: Option<ActorRef<MasterMsg>>,
    start: Instant,
    me: ActorRef<AgentMsg>,
    persist_queued: bool,
    /// A `Tick` is on its way.
    tick_armed: bool,
    /// The last registration sent (numbered from the node's incarnation, so that a
    /// restarted agent's registrations differ from those before).
    register_attempt: u64,
    /// The last checkpoint write.
    last_save: Option<LastSave>,
    /// Checkpoint writes that failed in a row.
    write_failures: u32,
    /// Why the agent takes no tasks now (its checkpoint cannot be written), if so.
    problem: Option<String>,
    /// The actor of each task whose process it launches or watches.
    task_actors: BTreeMap<TaskId, ActorRef<TaskMsg>>,
    /// The task of each task actor.
    task_of: BTreeMap<ActorId, TaskId>,
    /// The actor task of each monitored actor.
    actor_tasks: ActorIndex,
    /// The executors this agent runs now: the only executor peers it admits.
    live_executors: LiveExecutors,
    /// Pre-started executors, by node name.
    spares: BTreeMap<String, Spare>,
    /// The pre-started executor to start once the actor of a task answers (its key, and
    /// the task's launch to size it like).
    spare_after: BTreeMap<TaskId, (SpareKey, LaunchSpec)>,
    /// Pre-started executors claimed by actor tasks whose launch is being written.
    claims: BTreeMap<TaskId, Claim>,
    /// The agent's bounded inbox.
    inbox: InboxGauge,
}

impl AgentState {
    fn now(&self) -> Now {
        Now {
            elapsed: self.start.elapsed(),
            unix_ms: plexus_net::clock::unix_ms(),
        }
    }
}

impl Agent {
    fn checkpoint_path(&self) -> PathBuf {
        self.cfg.state_dir.join("agent.checkpoint")
    }

    /// Writes the checkpoint; the launches it allows, or `None` if it could not be
    /// written.
    fn save(&self, st: &mut AgentState) -> Option<Vec<Effect>> {
        let t0 = Instant::now();
        let changes = st.core.unsaved();
        let r = st
            .core
            .checkpoint()
            .encode()
            .map_err(|e| e.to_string())
            .and_then(|b| st.state_file.write(&b).map_err(|e| e.to_string()));
        let end = Instant::now();
        tracing::trace!(
            took_ms = (end - t0).as_secs_f64() * 1e3,
            changes,
            "checkpoint written"
        );
        st.last_save = Some(LastSave {
            at: end,
            took: end - t0,
            changes,
        });
        let agent = st.core.agent_id().to_string();
        match r {
            Ok(()) => {
                let launches = st.core.saved();
                if st.write_failures > 0 {
                    info!(%agent, failed = st.write_failures, "checkpoint written again; sending the updates it held and taking tasks again");
                    st.write_failures = 0;
                    self.report_health(st, None);
                }
                Some(launches)
            }
            Err(e) => {
                st.write_failures += 1;
                // Said at once, then at every doubling of the count.
                if st.write_failures.is_power_of_two() {
                    error!(%agent, failed = st.write_failures, "cannot write the agent checkpoint: {e}; status updates and launches wait until it is written");
                }
                if st.write_failures == 1 {
                    self.report_health(st, Some(format!("cannot write its checkpoint: {e}")));
                }
                None
            }
        }
    }

    /// Tells the master whether this agent can take tasks (`problem`: why not).
    fn report_health(&self, st: &mut AgentState, problem: Option<String>) {
        st.problem = problem.clone();
        let Some(m) = &st.master else { return };
        let msg = MasterMsg::AgentHealth {
            agent_id: st.core.agent_id().into(),
            problem,
        };
        if let Err(e) = m.cast(msg) {
            debug!("master gone; the problem is told at the next registration: {e}");
        }
    }

    /// How long to wait before writing again after the last write failed.
    fn retry_wait(st: &AgentState) -> Duration {
        let doublings = st.write_failures.saturating_sub(1).min(16);
        PERSIST_RETRY_MIN
            .saturating_mul(1 << doublings)
            .min(PERSIST_RETRY_MAX)
    }

    /// How long the next checkpoint write must still wait ([`PERSIST_SPACING`]).
    fn spacing_left(st: &AgentState) -> Option<Duration> {
        let last = st.last_save.as_ref()?;
        if last.changes <= PERSIST_IDLE_CHANGES {
            return None;
        }
        (last.at + last.took * PERSIST_SPACING)
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// After the core decided: schedules writing what changed (the checkpoint is written
    /// once the changes queued before it are handled) and carries out its effects.
    async fn carry_out(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        effects: Vec<Effect>,
    ) -> Result<(), ActorProcessingErr> {
        for e in effects {
            self.effect(me, st, e).await?;
        }
        self.changed(me, st).await
    }

    /// After a change: queues writing it, and launches what an immediate write allowed.
    async fn changed(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        for e in self.mark_dirty(st) {
            self.effect(me, st, e).await?;
        }
        Ok(())
    }

    async fn effect(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        effect: Effect,
    ) -> Result<(), ActorProcessingErr> {
        match effect {
            // Each task's actor launches it (side by side with the others) and reports
            // back in `Launched`.
            Effect::Launch { task_id, mut spec } => {
                if self.take_spare(me, st, &task_id, &spec).await? {
                    return Ok(());
                }
                if let Some(exec) = st.core.task(&task_id).and_then(|t| t.executor.clone()) {
                    lock_live(&st.live_executors).insert(exec.clone());
                    match self.executor_env(&exec) {
                        Ok(env) => spec.env = env,
                        Err(reason) => {
                            let result = Err(crate::containerizer::ContainerError::Launch {
                                task: task_id.to_string(),
                                reason,
                            });
                            st.core.launched(&task_id, result, st.now());
                            return Ok(());
                        }
                    }
                }
                self.start_task_actor(me, st, &task_id, Some(spec), None)
                    .await?
            }
            Effect::Adopt { task_id, container } => {
                let running = self.containerizer.is_running(&container);
                info!(task = %task_id, running, "re-adopting task");
                if let Some(at) = st.core.task(&task_id).and_then(|t| t.actor_at.clone()) {
                    self.watch_actor(me, st, &task_id, at);
                }
                self.start_task_actor(me, st, &task_id, None, Some(container))
                    .await?
            }
            // The task's actor signals; its end comes back in `Exited`.
            Effect::Signal { task_id } => self.signal(st, &task_id),
            Effect::Reap { container } => self.reap(container),
            Effect::DestroyOrphans { keep } => self.containerizer.destroy_orphans(keep),
        }
        Ok(())
    }

    /// Has the actor of task `task_id` stop its process.
    fn signal(&self, st: &AgentState, task_id: &str) {
        if let Some(a) = st.task_actors.get(task_id) {
            if let Err(e) = a.cast(TaskMsg::Kill {
                grace: self.cfg.kill_grace,
            }) {
                debug!(task = %task_id, "task actor gone: {e}");
            }
        }
    }

    /// Queues writing the checkpoint if anything changed (or, in a long burst, writes
    /// it now and returns the launches that allowed).
    fn mark_dirty(&self, st: &mut AgentState) -> Vec<Effect> {
        let unsaved = st.core.unsaved();
        if unsaved == 0 {
            return Vec::new();
        }
        if unsaved >= PERSIST_BATCH && Self::spacing_left(st).is_none() && st.write_failures == 0 {
            // A long burst: do not hold its updates back until it ends.
            return self.persist(st);
        }
        if !st.persist_queued {
            st.persist_queued = true;
            if let Err(e) = st.me.cast(AgentMsg::Persist) {
                debug!("agent stopping: {e}");
            }
        }
        Vec::new()
    }

    /// Writes the checkpoint if anything changed, then sends the updates that are due;
    /// returns the launches the write allowed.
    fn persist(&self, st: &mut AgentState) -> Vec<Effect> {
        let mut launches = Vec::new();
        if st.core.unsaved() > 0 {
            match self.save(st) {
                Some(l) => launches = l,
                None => {
                    // Nothing unwritten goes out, nothing unwritten starts; try again later.
                    if !st.persist_queued {
                        st.persist_queued = true;
                        st.me.send_after(Self::retry_wait(st), || AgentMsg::Persist);
                    }
                    return launches;
                }
            }
        }
        self.flush(st);
        launches
    }

    /// Sends the updates that are due (the core holds them while a change is unwritten).
    fn flush(&self, st: &mut AgentState) {
        let Some(m) = st.master.clone() else { return };
        let now = st.now();
        for u in st.core.due_updates(now) {
            if let Err(e) = m.cast(MasterMsg::Update(u)) {
                debug!("master gone; the update is sent again: {e}");
            }
        }
    }

    /// Schedules the next `Tick` while there is something for it to do (registering, or
    /// resending unacknowledged updates); an idle agent keeps no timer running.
    fn arm_tick(&self, st: &mut AgentState) {
        if st.tick_armed || !st.core.needs_tick() {
            return;
        }
        st.tick_armed = true;
        st.me.send_after(self.cfg.tick, || AgentMsg::Tick);
    }

    /// Starts the actor of a task, linked to the agent: it launches `launch`, or
    /// re-adopts `container`.
    async fn start_task_actor(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        task_id: &str,
        launch: Option<LaunchSpec>,
        container: Option<ContainerInfo>,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            TaskActor::new(self.containerizer.clone(), self.cfg.fault.clone()),
            TaskArgs {
                task_id: task_id.into(),
                launch,
                container,
                agent: me.clone(),
            },
            me.get_cell(),
        )
        .await?;
        st.task_of.insert(actor.get_id(), task_id.into());
        st.task_actors.insert(task_id.into(), actor);
        Ok(())
    }

    /// The environment of executor `exec`: its settings and its newly issued identity.
    fn executor_env(&self, exec: &str) -> Result<Vec<(String, String)>, String> {
        let issuer = self.cfg.executors.as_ref().ok_or_else(|| {
            format!(
                "agent {} has no executor CA ({}.executors.pem beside its certificate), so it runs no actor tasks",
                self.node.name(),
                self.node.name()
            )
        })?;
        let n = exec
            .split('.')
            .next()
            .and_then(|x| x.strip_prefix('x'))
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or_else(|| format!("bad executor name {exec:?}"))?;
        let id = issuer
            .issue(n, EXECUTOR_CERT_VALIDITY)
            .map_err(|e| format!("issuing the executor's identity: {e}"))?;
        if id.node != exec {
            return Err(format!(
                "the executor's identity names {:?}, not {exec:?}",
                id.node
            ));
        }
        let opts = self.node.options();
        let settings = crate::executor::ExecutorSettings {
            node: id.node.clone(),
            cluster: self.node.cluster().to_string(),
            agent: self.node.name().to_string(),
            agent_addr: self.node.addr(),
            listen_ip: self.node.addr().ip(),
            ca_pem: issuer.root_pem(),
            chain_pem: id.chain_pem.clone(),
            agent_recovery_timeout_ms: self.cfg.executor_recovery.as_millis() as u64,
            heartbeat_interval_ms: opts.heartbeat_interval.as_millis() as u64,
            node_down_timeout_ms: opts.node_down_timeout.as_millis() as u64,
        };
        let json = serde_json::to_string(&settings).map_err(|e| e.to_string())?;
        Ok(vec![
            (crate::executor::ENV_SETTINGS.to_string(), json),
            (crate::executor::ENV_KEY.to_string(), id.key_pem),
        ])
    }

    /// The pre-started executor key of actor task `task_id`, if it is one.
    fn spare_key(st: &AgentState, task_id: &str) -> Option<SpareKey> {
        let t = st.core.task(task_id)?;
        t.spec.actor.as_ref()?;
        Some(SpareKey {
            framework_id: t.framework_id.clone(),
            argv: t.spec.argv.clone(),
            user: t.spec.user.clone(),
        })
    }

    /// When actor task `task_id` has just been accepted (its launch not yet written)
    /// and a pre-started executor of its key is ready: claims it (resized to the task)
    /// and starts the actor in it while the launch is written. Nobody hears of the
    /// actor before the launch is written; should the task end before it launches, the
    /// executor is stopped ([`Agent::drop_unlaunched_claims`]).
    fn claim_spare(&self, st: &mut AgentState, task_id: &str) {
        let Some(key) = Self::spare_key(st, task_id) else {
            return;
        };
        let Some(name) = st
            .spares
            .iter()
            .find(|(_, s)| s.key == key && s.container.is_some())
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        let (Some(t), Some(spare)) = (st.core.task(task_id), st.spares.remove(&name)) else {
            return;
        };
        let (want, actor) = (t.spec.resources.clone(), t.spec.actor.clone());
        if let Some(w) = spare.watcher {
            w.abort();
        }
        let container = spare.container.expect("ready");
        let was = &spare.sized;
        let resized = if (was.cpus_milli, was.mem_mb) == (want.cpus_milli, want.mem_mb) {
            Ok(())
        } else {
            self.containerizer.resize(&container, &want)
        };
        let (Ok(()), Some(actor)) = (resized.clone(), actor) else {
            warn!(task = %task_id, executor = %name, "cannot hand the pre-started executor over ({resized:?}); starting one");
            self.stop_executor(st, &name, container);
            return;
        };
        debug!(task = %task_id, executor = %name, "takes a pre-started executor");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (node, exec) = (self.node.clone(), name.clone());
        tokio::spawn(async move {
            let cell = spawn_actor(&node, &exec, *actor).await;
            if tx.send(cell).is_err() {
                debug!(executor = %exec, "the actor's task ended before its launch");
            }
        });
        st.claims.insert(
            task_id.into(),
            Claim {
                name,
                key,
                container,
                cell: rx,
            },
        );
    }

    /// Hands actor task `task_id`, now written, the pre-started executor it claimed;
    /// true when it had one, and a new one is started for the next task.
    async fn take_spare(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        task_id: &TaskId,
        spec: &LaunchSpec,
    ) -> Result<bool, ActorProcessingErr> {
        let Some(mut claim) = st.claims.remove(task_id) else {
            return Ok(false);
        };
        st.core.adopt_executor(task_id, &claim.name);
        self.start_task_actor(me, st, task_id, None, Some(claim.container.clone()))
            .await?;
        st.core.launched(task_id, Ok(claim.container), st.now());
        st.spare_after
            .insert(task_id.clone(), (claim.key, spec.clone()));
        match claim.cell.try_recv() {
            // Started while the launch was written: running now, in the same next write.
            Ok(Ok(cell)) => {
                let at = watch_placed(&self.node, me, &st.actor_tasks, task_id, claim.name, cell);
                let now = st.now();
                for e in self.actor_started(me, st, task_id.clone(), at, now) {
                    if let Effect::Signal { task_id } = e {
                        self.signal(st, &task_id);
                    }
                }
            }
            Ok(Err(why)) => {
                let msg = AgentMsg::ActorStarted {
                    task_id: task_id.clone(),
                    result: Err(why),
                };
                if let Err(e) = me.cast(msg) {
                    debug!("agent stopping: {e}");
                }
            }
            Err(_) => self.attach_actor(me, st, task_id, Some(claim.cell)),
        }
        Ok(true)
    }

    /// Stops the pre-started executors claimed by tasks that ended before launching.
    fn drop_unlaunched_claims(&self, st: &mut AgentState) {
        let gone: Vec<TaskId> = st
            .claims
            .keys()
            .filter(|t| {
                st.core
                    .task(t)
                    .is_none_or(|r| r.state != crate::task::TaskState::Staging)
            })
            .cloned()
            .collect();
        for t in gone {
            let c = st.claims.remove(&t).expect("listed");
            debug!(task = %t, executor = %c.name, "the task ended before its launch; stopping the executor it claimed");
            self.stop_executor(st, &c.name, c.container);
        }
    }

    /// Starts a pre-started executor for `key` sized like `like`, unless one is there.
    fn start_spare(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        key: SpareKey,
        like: &LaunchSpec,
    ) {
        if st.spares.values().any(|s| s.key == key) {
            return;
        }
        let name = st.core.mint_executor();
        let env = match self.executor_env(&name) {
            Ok(env) => env,
            Err(e) => {
                debug!("no pre-started executor: {e}");
                return;
            }
        };
        lock_live(&st.live_executors).insert(name.clone());
        let launch = LaunchSpec {
            task_id: format!("executor.{name}"),
            argv: key.argv.clone(),
            resources: like.resources.clone(),
            user: key.user.clone(),
            env,
        };
        st.spares.insert(
            name.clone(),
            Spare {
                key,
                sized: like.resources.clone(),
                container: None,
                watcher: None,
            },
        );
        let c = self.containerizer.clone();
        let me = me.clone();
        tokio::spawn(async move {
            let result = c.launch(launch).await;
            if let Err(e) = me.cast(AgentMsg::SpareLaunched { name, result }) {
                debug!("agent gone: {e}");
            }
        });
    }

    /// A pre-started executor's launch ended.
    fn spare_launched(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        name: String,
        result: Result<ContainerInfo, crate::containerizer::ContainerError>,
    ) {
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                warn!(executor = %name, "no pre-started executor: {e}");
                st.spares.remove(&name);
                lock_live(&st.live_executors).remove(&name);
                return;
            }
        };
        let Some(spare) = st.spares.get_mut(&name) else {
            // Gone meanwhile (the agent is stopping it): stop what started.
            self.stop_executor(st, &name, info);
            return;
        };
        let wait = self.containerizer.wait(&info);
        let (me2, n) = (me.clone(), name.clone());
        spare.watcher = Some(tokio::spawn(async move {
            wait.await;
            if let Err(e) = me2.cast(AgentMsg::SpareEnded { name: n }) {
                debug!("agent gone: {e}");
            }
        }));
        spare.container = Some(info);
        me.send_after(SPARE_EXECUTOR_IDLE, move || AgentMsg::SpareIdle { name });
    }

    /// Stops and frees executor `name`'s process, which no task holds.
    fn stop_executor(&self, st: &mut AgentState, name: &str, info: ContainerInfo) {
        lock_live(&st.live_executors).remove(name);
        self.node.forget(name);
        self.reap(info);
    }

    /// Stops and frees, in the background, the process of container `info`.
    fn reap(&self, info: ContainerInfo) {
        let c = self.containerizer.clone();
        let grace = self.cfg.kill_grace;
        tokio::spawn(async move {
            c.kill(&info, grace).await;
            c.wait(&info).await;
            c.destroy(&info).await;
        });
    }

    /// Once actor task `task_id`'s executor runs: starts the task's actor in it
    /// (granted to the framework's node), unless `spawned` already did, and monitors
    /// it; tells the agent where the actor is, or why it could not start.
    fn attach_actor(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &AgentState,
        task_id: &str,
        spawned: Option<oneshot::Receiver<Result<ActorCell, String>>>,
    ) {
        let Some(t) = st.core.task(task_id) else {
            return;
        };
        let (Some(exec), Some(spec)) = (t.executor.clone(), t.spec.actor.clone()) else {
            return;
        };
        let node = self.node.clone();
        let me = me.clone();
        let index = st.actor_tasks.clone();
        let task_id: TaskId = task_id.into();
        tokio::spawn(async move {
            let started = async {
                let cell = match spawned {
                    Some(rx) => rx
                        .await
                        .map_err(|_| "the actor's spawn was dropped".to_string())??,
                    None => spawn_actor(&node, &exec, *spec).await?,
                };
                watch_placed(&node, &me, &index, &task_id, exec, cell)
            }
            .await;
            if let Err(e) = me.cast(AgentMsg::ActorStarted {
                task_id,
                result: started,
            }) {
                debug!("agent gone: {e}");
            }
        });
    }

    /// Makes a new reference to the actor of task `task_id`, whose reference ended with
    /// its executor's link, if the task still runs: the actor's end then reaches this
    /// agent again (as `noproc` if it ended meanwhile). An executor that does not come
    /// back ends the task by its exit.
    fn reattach(&self, me: &ActorRef<AgentMsg>, st: &AgentState, task_id: &TaskId) {
        let Some(t) = st.core.task(task_id) else {
            return;
        };
        let Some(at) = t.actor_at.clone().filter(|_| !t.state.is_terminal()) else {
            return;
        };
        let (node, me, index, task_id) = (
            self.node.clone(),
            me.clone(),
            st.actor_tasks.clone(),
            task_id.clone(),
        );
        tokio::spawn(async move {
            let cell = match node.remote_cell(&at.node, at.pid).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(task = %task_id, "the actor's executor is not back: {e}");
                    return;
                }
            };
            match watch_placed(&node, &me, &index, &task_id, at.node, cell) {
                Ok(_) => info!(task = %task_id, "the actor's executor is back; watching it again"),
                Err(e) => debug!(task = %task_id, "cannot watch the actor again: {e}"),
            }
        });
    }

    /// The actor of actor task `task_id` started (or could not): the core decides, the
    /// framework hears where it is at once, and the next pre-started executor is due.
    fn actor_started(
        &self,
        me: &ActorRef<AgentMsg>,
        st: &mut AgentState,
        task_id: TaskId,
        result: Result<ActorAt, String>,
        now: Now,
    ) -> Vec<Effect> {
        if let Err(e) = &result {
            warn!(task = %task_id, "the actor did not start: {e}");
        }
        let effects = st.core.actor_started(&task_id, result, now);
        self.tell_actor_up(st, &task_id);
        // The next one is started a little after this actor answered, not to compete
        // with its start and first messages for the machine.
        if st.spare_after.contains_key(&task_id) {
            me.send_after(SPARE_START_DELAY, move || AgentMsg::SpareDue { task_id });
        }
        effects
    }

    /// Tells the master where the actor of task `task_id` answers, if it just started:
    /// its framework hears it before the running update is written and sent.
    fn tell_actor_up(&self, st: &AgentState, task_id: &str) {
        let (Some(m), Some(t)) = (&st.master, st.core.task(task_id)) else {
            return;
        };
        let Some(at) = t.actor_at.clone() else { return };
        let msg = MasterMsg::ActorUp {
            agent_id: st.core.agent_id().into(),
            task_id: task_id.into(),
            at,
        };
        if let Err(e) = m.cast(msg) {
            debug!("master gone; the running update tells it: {e}");
        }
    }

    /// Monitors again the actor of an actor task re-adopted after a restart.
    fn watch_actor(&self, me: &ActorRef<AgentMsg>, st: &AgentState, task_id: &str, at: ActorAt) {
        let node = self.node.clone();
        let me = me.clone();
        let index = st.actor_tasks.clone();
        let task_id: TaskId = task_id.into();
        tokio::spawn(async move {
            node.join(plexus_config::PeerAddr {
                name: at.node.clone(),
                addr: at.addr,
            });
            match node.remote_cell(&at.node, at.pid).await {
                Ok(cell) => {
                    lock_index(&index).insert(cell.get_id(), task_id);
                    me.get_cell().monitor(cell);
                }
                Err(e) => {
                    warn!(task = %task_id, "cannot watch the actor again: {e}; its executor's end ends it")
                }
            }
        });
    }

    async fn register(&self, me: &ActorRef<AgentMsg>, st: &mut AgentState) {
        if st.master.is_none() {
            match self.node.whereis::<MasterMsg>(MASTER_NAME).await {
                Ok(Some(m)) => {
                    me.get_cell().monitor(m.get_cell());
                    // A ref that ended before the monitor was set will never report its
                    // end: look again at the next tick. (One just made may still be
                    // starting: it will report.)
                    if m.get_status() >= ractor::ActorStatus::Stopping {
                        debug!(agent = %st.core.agent_id(), status = ?m.get_status(), "the master found has already ended");
                        return;
                    }
                    st.master = Some(m);
                }
                _ => return,
            }
        }
        let mut reg = st.core.registration(
            self.node.name(),
            &self.cfg.resources,
            &self.containerizer.isolation(),
            &self.cfg.attributes,
        );
        if self.cfg.forget_completed_tasks {
            reg.completed.clear();
        }
        reg.problem = st.problem.clone();
        st.register_attempt = st.register_attempt.wrapping_add(1);
        reg.attempt = st.register_attempt;
        let Some(m) = &st.master else { return };
        // What does not fit in one message goes in parts, each well within a frame.
        let budget = (self.node.max_message_bytes() / 4).min(REGISTRATION_PART_BYTES);
        let (header, parts) = reg.split(budget);
        let sent = parts
            .into_iter()
            .map(MasterMsg::RegisterAgentPart)
            .chain([MasterMsg::RegisterAgent(header)])
            .try_for_each(|msg| self.node.cast_checked(m, msg));
        match sent {
            Ok(()) => {}
            Err(e @ SendError::TooLarge { .. }) => {
                error!(agent = %st.core.agent_id(), "cannot register: {e}; registering again at the next tick")
            }
            Err(e) => debug!("master gone; registering again at the next tick: {e}"),
        }
    }
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = ();

    async fn pre_start(
        &self,
        me: ActorRef<AgentMsg>,
        _: (),
    ) -> Result<AgentState, ActorProcessingErr> {
        self.cfg.disk.create_dir_all(&self.cfg.state_dir)?;
        let mut state_file = StateFile::on(self.cfg.disk.clone(), &self.checkpoint_path());
        // An agent of an earlier version wrote the whole checkpoint to the base path.
        let saved = match state_file.read()? {
            Some(b) => Some(b),
            None if self.cfg.disk.is_real() => std::fs::read(self.checkpoint_path()).ok(),
            None => None,
        };
        let ck: Checkpoint = match saved {
            Some(b) => Checkpoint::decode(&b).map_err(|e| {
                format!("agent checkpoint {}: {e}", self.checkpoint_path().display())
            })?,
            None => Checkpoint::default(),
        };
        let start = Instant::now();
        let now = Now {
            elapsed: Duration::ZERO,
            unix_ms: plexus_net::clock::unix_ms(),
        };
        let (mut core, effects) =
            AgentCore::recover(ck, self.cfg.agent_id.as_deref(), self.node.name(), now);
        if self.cfg.send_unwritten_updates {
            core.send_unwritten_updates();
        }
        self.node.register(&agent_name(core.agent_id()), &me)?;
        let live: LiveExecutors = Arc::new(std::sync::Mutex::new(core.live_executors()));
        self.node
            .admit_with(admit_executors(self.node.name().to_string(), live.clone()));
        let mut st = AgentState {
            core,
            state_file,
            master: None,
            start,
            me: me.clone(),
            persist_queued: false,
            tick_armed: false,
            register_attempt: self.node.incarnation(),
            last_save: None,
            write_failures: 0,
            problem: None,
            task_actors: BTreeMap::new(),
            task_of: BTreeMap::new(),
            actor_tasks: ActorIndex::default(),
            live_executors: live,
            spares: BTreeMap::new(),
            spare_after: BTreeMap::new(),
            claims: BTreeMap::new(),
            inbox: self
                .node
                .bound_inbox(me.get_id(), self.cfg.inbox_limit_msgs),
        };
        // Re-adopt what survived the restart; report what did not; stop orphans.
        self.carry_out(&me, &mut st, effects).await?;
        self.arm_tick(&mut st);
        info!(agent = %st.core.agent_id(), isolation = %self.containerizer.isolation(), resources = %self.cfg.resources.total(), "agent started");
        Ok(st)
    }

    async fn handle(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        self.cfg.agent_fault.check("the agent");
        st.inbox.handled();
        #[cfg(debug_assertions)]
        let seen = format!("{msg:?}");
        self.handle_msg(me.clone(), msg, st).await?;
        #[cfg(debug_assertions)]
        if let Err(e) = st.core.check() {
            panic!("agent invariant broken by {seen}: {e}");
        }
        // Whatever the message changed is written (its updates wait for that).
        self.changed(&me, st).await?;
        self.arm_tick(st);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<AgentMsg>,
        evt: SupervisionEvent,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        self.supervisor_evt(me.clone(), evt, st).await?;
        // Whatever the event changed is written (its updates wait for that), and
        // updates are resent until acknowledged.
        self.changed(&me, st).await?;
        self.arm_tick(st);
        Ok(())
    }
}

impl Agent {
    async fn supervisor_evt(
        &self,
        me: ActorRef<AgentMsg>,
        evt: SupervisionEvent,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) = &evt
        {
            let actor_task = lock_index(&st.actor_tasks).remove(&c.get_id());
            if let Some(task_id) = actor_task {
                let end = match &evt {
                    SupervisionEvent::ActorFailed(_, e) => Some(ActorEnd::Failed(e.to_string())),
                    // Its executor's link went down: how the actor ends is the
                    // executor's exit, unless the executor is back (its link only
                    // dropped), when a new reference tells.
                    SupervisionEvent::ActorTerminated(_, _, r)
                        if plexus_actors::is_node_down(r.as_deref()) =>
                    {
                        let id = task_id.clone();
                        me.send_after(REATTACH_AFTER, move || AgentMsg::Reattach { task_id: id });
                        None
                    }
                    SupervisionEvent::ActorTerminated(_, _, r) => {
                        Some(ActorEnd::Stopped(r.clone()))
                    }
                    _ => None,
                };
                if let Some(end) = end {
                    let effects = st.core.actor_ended(&task_id, end);
                    self.carry_out(&me, st, effects).await?;
                }
                return Ok(());
            }
            if let Some(task_id) = st.task_of.remove(&c.get_id()) {
                st.task_actors.remove(&task_id);
                if let SupervisionEvent::ActorFailed(_, e) = &evt {
                    let now = st.now();
                    let effects = st.core.task_actor_failed(&task_id, &e.to_string(), now);
                    self.carry_out(&me, st, effects).await?;
                }
                #[cfg(debug_assertions)]
                if let Err(e) = st.core.check() {
                    panic!(
                        "agent invariant broken by the failure of the actor of task {task_id}: {e}"
                    );
                }
                self.arm_tick(st);
                return Ok(());
            }
            if st.master.as_ref().is_some_and(|m| m.get_id() == c.get_id()) {
                warn!(agent = %st.core.agent_id(), "lost the master; re-registering");
                st.master = None;
                st.core.on_master_lost();
                self.arm_tick(st);
            }
        }
        Ok(())
    }
}

impl Agent {
    async fn handle_msg(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        let now = st.now();
        match msg {
            AgentMsg::Inspect { reply } => {
                let mut view = st.core.view();
                view.inbox = InboxStats::of(&st.inbox);
                // Ready: started and linked to this agent.
                let linked: std::collections::BTreeSet<String> =
                    self.node.peers().into_iter().map(|p| p.name).collect();
                view.spare_executors = st
                    .spares
                    .iter()
                    .filter(|(n, s)| s.container.is_some() && linked.contains(*n))
                    .count();
                if let Err(e) = reply.send(view) {
                    debug!("inspector gone: {e}");
                }
            }
            AgentMsg::Persist => {
                // An actor's spawn in a claimed executor, started by the last message,
                // goes out before the write holds this thread.
                if !st.claims.is_empty() {
                    tokio::task::yield_now().await;
                }
                st.persist_queued = false;
                match Self::spacing_left(st) {
                    Some(wait) if st.core.unsaved() > 0 => {
                        st.persist_queued = true;
                        me.send_after(wait, || AgentMsg::Persist);
                    }
                    _ => {
                        let launches = self.persist(st);
                        self.carry_out(&me, st, launches).await?;
                    }
                }
            }
            AgentMsg::Tick => {
                st.tick_armed = false;
                if !st.core.registered() {
                    self.register(&me, st).await;
                }
                self.flush(st);
            }
            AgentMsg::MasterChanged => {
                // Acted on only when the master's name points elsewhere now.
                let current = st.master.as_ref().map(|m| m.get_id());
                if crate::scheduler::master_moved(&self.node, current).await {
                    info!(agent = %st.core.agent_id(), "a new master leads; registering with it");
                    st.master = None;
                    st.core.on_master_lost();
                    self.register(&me, st).await;
                }
            }
            AgentMsg::Registered => {
                if !st.core.registered() {
                    info!(agent = %st.core.agent_id(), "registered with the master");
                }
                st.core.on_registered();
                self.flush(st);
            }
            AgentMsg::Run {
                framework_id,
                spec,
                resources,
            } => {
                debug!(task = %spec.task_id, "run");
                let task_id = spec.task_id.clone();
                if st.core.run(framework_id, spec, resources) {
                    self.claim_spare(st, &task_id);
                    self.changed(&me, st).await?;
                }
            }
            AgentMsg::Launched { task_id, result } => {
                debug!(task = %task_id, ok = result.is_ok(), "launched");
                let like = result.as_ref().ok().map(|_| ());
                st.core.launched(&task_id, result, now);
                if st
                    .core
                    .task(&task_id)
                    .is_some_and(|t| t.state == crate::task::TaskState::Starting)
                {
                    self.attach_actor(&me, st, &task_id, None);
                    // Its framework's next actor task here takes a pre-started executor.
                    if let (Some(()), Some(key), Some(t)) =
                        (like, Self::spare_key(st, &task_id), st.core.task(&task_id))
                    {
                        let like = LaunchSpec {
                            task_id: String::new(),
                            argv: Vec::new(),
                            resources: t.spec.resources.clone(),
                            user: None,
                            env: Vec::new(),
                        };
                        st.spare_after.insert(task_id.clone(), (key, like));
                    }
                }
                self.changed(&me, st).await?;
            }
            AgentMsg::Reattach { task_id } => self.reattach(&me, st, &task_id),
            AgentMsg::SpareDue { task_id } => {
                if let Some((key, like)) = st.spare_after.remove(&task_id) {
                    self.start_spare(&me, st, key, &like);
                }
            }
            AgentMsg::SpareLaunched { name, result } => self.spare_launched(&me, st, name, result),
            AgentMsg::SpareEnded { name } | AgentMsg::SpareIdle { name } => {
                // Still launching: it is stopped when its launch ends.
                let launched = st.spares.get(&name).is_some_and(|s| s.container.is_some());
                if let Some(spare) = st.spares.remove(&name).filter(|_| launched) {
                    if let Some(w) = spare.watcher {
                        w.abort();
                    }
                    if let Some(info) = spare.container {
                        self.stop_executor(st, &name, info);
                    }
                }
            }
            AgentMsg::ActorStarted { task_id, result } => {
                let effects = self.actor_started(&me, st, task_id, result, now);
                self.carry_out(&me, st, effects).await?;
            }
            AgentMsg::Kill { task_id } => {
                let effects = st.core.kill(&task_id, now);
                self.carry_out(&me, st, effects).await?;
                self.drop_unlaunched_claims(st);
            }
            AgentMsg::Exited { task_id, exit } => {
                st.core.exited(&task_id, &exit, now);
                if let Some(exec) = st.core.task(&task_id).and_then(|t| t.executor.clone()) {
                    lock_live(&st.live_executors).remove(&exec);
                    self.node.forget(&exec);
                }
                self.changed(&me, st).await?;
            }
            AgentMsg::Ack { .. } if self.cfg.drop_acknowledgements => {}
            AgentMsg::Ack { task_id, uuid } => {
                st.core.ack(&task_id, uuid);
                self.changed(&me, st).await?;
            }
            AgentMsg::ReadFile {
                task_id,
                file,
                offset,
                reply,
            } => {
                let r = if file != "stdout" && file != "stderr" {
                    Err(format!("no file {file:?} (stdout or stderr)"))
                } else {
                    // A task that took a pre-started executor lives in its sandbox.
                    let sandbox = st
                        .core
                        .task(&task_id)
                        .and_then(|t| t.container.as_ref().map(|c| c.sandbox.clone()))
                        .or_else(|| self.containerizer.sandbox_of(&task_id));
                    match sandbox {
                        Some(dir) => read_from(&dir.join(&file), offset),
                        None => Err(format!("no sandbox for task {task_id:?} on this agent")),
                    }
                };
                if let Err(e) = reply.send(r) {
                    debug!("reader gone: {e}");
                }
            }
        }
        Ok(())
    }
}

fn lock_live(l: &LiveExecutors) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_index(i: &ActorIndex) -> std::sync::MutexGuard<'_, BTreeMap<ActorId, TaskId>> {
    i.lock().unwrap_or_else(|p| p.into_inner())
}

/// Up to 1 MiB of a task's output stream from `offset`, across its rotations.
fn read_from(path: &std::path::Path, offset: u64) -> Result<(u64, Vec<u8>), String> {
    match crate::containerizer::logs::read_across(path, offset, 1 << 20) {
        Ok((bytes, start)) => Ok((start, bytes)),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Monitors the actor `cell` of actor task `task_id`, just started in executor `exec`;
/// where it is.
fn watch_placed(
    node: &Node,
    me: &ActorRef<AgentMsg>,
    index: &ActorIndex,
    task_id: &str,
    exec: String,
    cell: ActorCell,
) -> Result<ActorAt, String> {
    lock_index(index).insert(cell.get_id(), task_id.into());
    me.get_cell().monitor(cell.clone());
    let addr = node
        .peers()
        .into_iter()
        .find(|p| p.name == exec)
        .map(|p| p.addr)
        .ok_or_else(|| format!("executor {exec} left as its actor started"))?;
    Ok(ActorAt {
        node: exec,
        addr,
        pid: cell.get_id().pid(),
    })
}

/// How long after its executor's link went down the reference to an actor is made
/// again (a link that only dropped is back by then).
const REATTACH_AFTER: Duration = Duration::from_secs(1);

/// Waits for executor `exec` to dial this agent, then starts actor `spec` in it,
/// granted to the framework's node.
async fn spawn_actor(node: &Node, exec: &str, spec: ActorSpec) -> Result<ActorCell, String> {
    let t0 = Instant::now();
    node.wait_for_peers(&[exec], EXECUTOR_START_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    debug!(executor = %exec, waited_ms = t0.elapsed().as_secs_f64() * 1e3, "executor connected");
    let cell = node
        .spawn_remote_granted(
            exec,
            &spec.type_name,
            &spec.msg_type,
            spec.args,
            &spec.owner,
        )
        .await
        .map_err(|e| e.to_string())?;
    debug!(executor = %exec, after_ms = t0.elapsed().as_secs_f64() * 1e3, "actor spawned");
    Ok(cell)
}
