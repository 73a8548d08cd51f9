//! The agent: one per machine. Registers its resources with the master, runs tasks through
//! a [`Containerizer`], and delivers their status updates at least once: every update is
//! checkpointed and resent with backoff until the framework acknowledges it. Its state is
//! checkpointed to `state_dir`, so a restarted agent re-adopts the tasks still running,
//! reports those that ended meanwhile, and loses no unacknowledged update.

mod task;

pub use task::{TaskActor, TaskArgs, TaskMsg};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use plexus_actors::Node;

use crate::containerizer::{classify, exit_code, ContainerInfo, Containerizer, LaunchSpec};
use crate::protocol::*;
use crate::reason::Reason;
use crate::resources::{PortSet, Resources, RoleResources};
use crate::statefile::{Disk, StateFile};

pub use crate::statefile::RealDisk;
use crate::status::{StatusUpdate, StatusUpdateManager};
use crate::supervision::{ChildSpec, FaultSwitch, Restarter, RestarterMsg};
use crate::task::{TaskState, TaskStateMachine};

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
    /// Makes the next message of a task actor panic once tripped (for tests of the
    /// agent's supervision of its task actors; nothing on the wire can trip it).
    pub fault: FaultSwitch,
    /// Makes the agent actor itself panic on its next message once tripped (for tests of
    /// its supervisor).
    pub agent_fault: FaultSwitch,
    /// Where the checkpoint is kept ([`RealDisk`] but in simulations).
    pub disk: Arc<dyn Disk>,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskRecord {
    spec: TaskSpec,
    framework_id: String,
    resources: RoleResources,
    state: TaskState,
    container: Option<ContainerInfo>,
    killing: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    agent_id: String,
    next_uuid: u64,
    tasks: BTreeMap<String, TaskRecord>,
    updates: StatusUpdateManager,
}

/// Most changes written in one checkpoint during a burst.
const PERSIST_BATCH: usize = 32;

/// After a checkpoint write, the next one waits at least this many times as long as the
/// write took (group commit): under a burst of changes, writing takes at most a fifth of
/// the agent's time and each write carries many changes, while an agent with little to
/// write writes at once.
const PERSIST_SPACING: u32 = 4;

/// First wait before writing the checkpoint again after a write failed (a full disk);
/// it doubles with each failure, up to `PERSIST_RETRY_MAX`. Meanwhile no update is sent.
const PERSIST_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts to write a checkpoint that could not be written.
const PERSIST_RETRY_MAX: Duration = Duration::from_secs(5);

/// The agent's state.
pub struct AgentState {
    ck: Checkpoint,
    /// Where `ck` is written.
    state_file: StateFile,
    master: Option<ActorRef<MasterMsg>>,
    registered: bool,
    start: Instant,
    me: ActorRef<AgentMsg>,
    /// Changes not yet in the checkpoint; updates are only sent once they are.
    dirty: bool,
    /// Changes since the last write.
    unsaved: usize,
    persist_queued: bool,
    /// A `Tick` is on its way.
    tick_armed: bool,
    /// When the last checkpoint write ended and how long it took.
    last_save: Option<(Instant, Duration)>,
    /// Checkpoint writes that failed in a row.
    write_failures: u32,
    /// The actor of each task whose process it launches or watches.
    task_actors: BTreeMap<String, ActorRef<TaskMsg>>,
    /// The task of each task actor.
    task_of: BTreeMap<ActorId, String>,
}

fn unix_ms() -> u64 {
    plexus_net::clock::unix_ms()
}

impl Agent {
    fn checkpoint_path(&self) -> PathBuf {
        self.cfg.state_dir.join("agent.checkpoint")
    }

    /// Writes the checkpoint; false if it could not be written.
    fn save(&self, st: &mut AgentState) -> bool {
        let t0 = Instant::now();
        let r = plexus_net::codec::encode(&st.ck)
            .map_err(|e| e.to_string())
            .and_then(|b| st.state_file.write(&b).map_err(|e| e.to_string()));
        let end = Instant::now();
        st.last_save = Some((end, end - t0));
        match r {
            Ok(()) => {
                if st.write_failures > 0 {
                    info!(agent = %st.ck.agent_id, failed = st.write_failures, "checkpoint written again; sending the updates it held");
                    st.write_failures = 0;
                }
                true
            }
            Err(e) => {
                st.write_failures += 1;
                // Said at once, then at every doubling of the count.
                if st.write_failures.is_power_of_two() {
                    error!(agent = %st.ck.agent_id, failed = st.write_failures, "cannot write the agent checkpoint: {e}; status updates wait until it is written");
                }
                false
            }
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
        let (at, took) = st.last_save?;
        (at + took * PERSIST_SPACING)
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn update(
        &self,
        st: &mut AgentState,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
    ) {
        self.update_ended(st, task_id, state, reason, message, None)
    }

    /// As [`Agent::update`], for an update that reports how the command ended.
    fn update_ended(
        &self,
        st: &mut AgentState,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
        exit_code: Option<i32>,
    ) {
        let Some(t) = st.ck.tasks.get_mut(task_id) else {
            return;
        };
        // The task state machine decides: an ended task never changes again.
        if let Err(e) = TaskStateMachine::at(t.state).transition(state) {
            warn!(task = task_id, "not sending an update: {e}");
            return;
        }
        t.state = state;
        st.ck.next_uuid += 1;
        let u = StatusUpdate {
            uuid: st.ck.next_uuid,
            task_id: task_id.to_string(),
            framework_id: t.framework_id.clone(),
            agent_id: st.ck.agent_id.clone(),
            state,
            reason,
            message,
            exit_code,
            unix_ms: unix_ms(),
        };
        st.ck.updates.push(u);
        self.mark_dirty(st);
    }

    /// Notes an unsaved change; the checkpoint is written once the changes queued before
    /// it are handled.
    fn mark_dirty(&self, st: &mut AgentState) {
        st.dirty = true;
        st.unsaved += 1;
        if st.unsaved >= PERSIST_BATCH && Self::spacing_left(st).is_none() && st.write_failures == 0
        {
            // A long burst: do not hold its updates back until it ends.
            self.persist(st);
            return;
        }
        if !st.persist_queued {
            st.persist_queued = true;
            let _ = st.me.cast(AgentMsg::Persist);
        }
    }

    /// Writes the checkpoint if anything changed, then sends the updates that are due.
    fn persist(&self, st: &mut AgentState) {
        if st.dirty {
            if !self.save(st) {
                // Nothing unwritten goes out; try again later.
                if !st.persist_queued {
                    st.persist_queued = true;
                    st.me.send_after(Self::retry_wait(st), || AgentMsg::Persist);
                }
                return;
            }
            st.dirty = false;
            st.unsaved = 0;
        }
        self.flush(st);
    }

    /// Sends the updates that are due, once everything is checkpointed (an update is
    /// never sent before it is on disk).
    fn flush(&self, st: &mut AgentState) {
        if st.dirty {
            self.mark_dirty(st);
            return;
        }
        if !st.registered {
            return;
        }
        let Some(m) = st.master.clone() else { return };
        let now = st.start.elapsed();
        for u in st.ck.updates.due(now) {
            let _ = m.cast(MasterMsg::Update(u));
        }
    }

    /// Schedules the next `Tick` while there is something for it to do (registering, or
    /// resending unacknowledged updates); an idle agent keeps no timer running.
    fn arm_tick(&self, st: &mut AgentState) {
        if st.tick_armed || (st.registered && st.ck.updates.pending_count() == 0) {
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
                task_id: task_id.to_string(),
                launch,
                container,
                agent: me.clone(),
            },
            me.get_cell(),
        )
        .await?;
        st.task_of.insert(actor.get_id(), task_id.to_string());
        st.task_actors.insert(task_id.to_string(), actor);
        Ok(())
    }

    /// A task actor failed (policy: never restarted): its process is killed and freed,
    /// and the task ends `TASK_FAILED`.
    fn task_actor_failed(&self, st: &mut AgentState, task_id: &str, why: &str) {
        let Some(t) = st.ck.tasks.get(task_id) else {
            return;
        };
        warn!(task = task_id, "task actor failed: {why}");
        if let Some(info) = t.container.clone() {
            let c = self.containerizer.clone();
            let grace = self.cfg.kill_grace;
            tokio::spawn(async move {
                c.kill(&info, grace).await;
                c.wait(&info).await;
                c.destroy(&info);
            });
        }
        if !t.state.is_terminal() {
            self.update(
                st,
                task_id,
                TaskState::Failed,
                Some(Reason::ExecutorTerminated),
                format!("the actor running the task failed: {why}"),
            );
        }
    }

    async fn register(&self, me: &ActorRef<AgentMsg>, st: &mut AgentState) {
        if st.master.is_none() {
            match self.node.whereis::<MasterMsg>(MASTER_NAME).await {
                Ok(Some(m)) => {
                    me.get_cell().monitor(m.get_cell());
                    // A ref that ended before the monitor was set will never report its
                    // end: look again at the next tick.
                    if m.get_status() != ractor::ActorStatus::Running {
                        debug!(agent = %st.ck.agent_id, "the master found has already ended");
                        return;
                    }
                    st.master = Some(m);
                }
                _ => return,
            }
        }
        let tasks = st
            .ck
            .tasks
            .values()
            .map(|t| AgentTask {
                spec: t.spec.clone(),
                framework_id: t.framework_id.clone(),
                resources: t.resources.clone(),
                state: t.state,
            })
            .collect();
        if let Some(m) = &st.master {
            let _ = m.cast(MasterMsg::RegisterAgent(AgentRegistration {
                agent_id: st.ck.agent_id.clone(),
                hostname: self.node.name().to_string(),
                resources: self.cfg.resources.clone(),
                tasks,
                isolation: self.containerizer.isolation(),
            }));
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
        std::fs::create_dir_all(&self.cfg.state_dir)?;
        let mut state_file = StateFile::on(self.cfg.disk.clone(), &self.checkpoint_path());
        // An agent of an earlier version wrote the whole checkpoint to the base path.
        let saved = match state_file.read()? {
            Some(b) => Some(b),
            None => std::fs::read(self.checkpoint_path()).ok(),
        };
        let mut ck: Checkpoint = match saved {
            Some(b) => plexus_net::codec::decode(&b).map_err(|e| {
                format!("agent checkpoint {}: {e}", self.checkpoint_path().display())
            })?,
            None => Checkpoint::default(),
        };
        if let Some(id) = &self.cfg.agent_id {
            ck.agent_id = id.clone();
        }
        if ck.agent_id.is_empty() {
            ck.agent_id = self.node.name().to_string();
        }
        self.node.register(&agent_name(&ck.agent_id), &me)?;
        let mut st = AgentState {
            ck,
            state_file,
            master: None,
            registered: false,
            start: Instant::now(),
            me: me.clone(),
            dirty: false,
            unsaved: 0,
            persist_queued: false,
            tick_armed: false,
            last_save: None,
            write_failures: 0,
            task_actors: BTreeMap::new(),
            task_of: BTreeMap::new(),
        };
        // Re-adopt what survived the restart; report what did not.
        let ids: Vec<String> = st.ck.tasks.keys().cloned().collect();
        for id in ids {
            let t = st.ck.tasks[&id].clone();
            if t.state.is_terminal() {
                continue;
            }
            match t.container {
                Some(info) => {
                    let running = self.containerizer.is_running(&info);
                    info!(task = %id, running, "re-adopting task");
                    self.start_task_actor(&me, &mut st, &id, None, Some(info))
                        .await?;
                }
                None => self.update(
                    &mut st,
                    &id,
                    TaskState::Failed,
                    Some(Reason::ContainerLaunchFailed),
                    "the agent restarted while launching the task".into(),
                ),
            }
        }
        // Whatever else this agent launched was lost track of: stop it.
        self.containerizer.destroy_orphans(
            st.ck
                .tasks
                .values()
                .filter_map(|t| t.container.clone())
                .collect(),
        );
        self.arm_tick(&mut st);
        info!(agent = %st.ck.agent_id, isolation = %self.containerizer.isolation(), resources = %self.cfg.resources.total(), "agent started");
        Ok(st)
    }

    async fn handle(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        self.cfg.agent_fault.check("the agent");
        let r = self.handle_msg(me, msg, st).await;
        self.arm_tick(st);
        r
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<AgentMsg>,
        evt: SupervisionEvent,
        st: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) = &evt
        {
            if let Some(task_id) = st.task_of.remove(&c.get_id()) {
                st.task_actors.remove(&task_id);
                if let SupervisionEvent::ActorFailed(_, e) = &evt {
                    self.task_actor_failed(st, &task_id, &e.to_string());
                }
                self.arm_tick(st);
                return Ok(());
            }
            if st.master.as_ref().is_some_and(|m| m.get_id() == c.get_id()) {
                warn!(agent = %st.ck.agent_id, "lost the master; re-registering");
                st.master = None;
                st.registered = false;
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
        match msg {
            AgentMsg::Inspect { reply } => {
                let pending = st
                    .ck
                    .tasks
                    .keys()
                    .flat_map(|id| st.ck.updates.pending(id))
                    .collect();
                let _ = reply.send(AgentView {
                    agent_id: st.ck.agent_id.clone(),
                    tasks: st
                        .ck
                        .tasks
                        .iter()
                        .map(|(id, t)| (id.clone(), t.state))
                        .collect(),
                    pending_updates: pending,
                    registered: st.registered,
                });
            }
            AgentMsg::Persist => {
                st.persist_queued = false;
                match Self::spacing_left(st) {
                    Some(wait) if st.dirty => {
                        st.persist_queued = true;
                        me.send_after(wait, || AgentMsg::Persist);
                    }
                    _ => self.persist(st),
                }
            }
            AgentMsg::Tick => {
                st.tick_armed = false;
                if !st.registered {
                    self.register(&me, st).await;
                }
                self.flush(st);
            }
            AgentMsg::Registered => {
                if !st.registered {
                    info!(agent = %st.ck.agent_id, "registered with the master");
                }
                st.registered = true;
                st.ck.updates.resend_all();
                self.flush(st);
            }
            AgentMsg::Run {
                framework_id,
                spec,
                resources,
            } => {
                if st.ck.tasks.contains_key(&spec.task_id) {
                    return Ok(());
                }
                let id = spec.task_id.clone();
                st.ck.tasks.insert(
                    id.clone(),
                    TaskRecord {
                        spec: spec.clone(),
                        framework_id,
                        resources,
                        state: TaskState::Staging,
                        container: None,
                        killing: false,
                    },
                );
                let launch = LaunchSpec {
                    task_id: id.clone(),
                    argv: spec.argv.clone(),
                    resources: spec.resources.clone(),
                };
                // Each task's actor launches it (side by side with the others) and
                // reports back in `Launched`.
                self.start_task_actor(&me, st, &id, Some(launch), None)
                    .await?;
            }
            AgentMsg::Launched { task_id, result } => {
                let Some(t) = st.ck.tasks.get_mut(&task_id) else {
                    return Ok(());
                };
                match result {
                    Ok(info) if t.state.is_terminal() => {
                        // Killed while it was being launched: its actor had the kill
                        // and stops what did start.
                        debug!(task = %task_id, "launched after its kill: {}", info.shim_pid);
                    }
                    Ok(info) => {
                        // (a kill before this point made the task terminal, above)
                        t.container = Some(info);
                        self.update(st, &task_id, TaskState::Running, None, "running".into());
                    }
                    Err(e) if t.state.is_terminal() => {
                        debug!(task = %task_id, "launch of a killed task failed: {e}");
                    }
                    Err(e) => self.update_ended(
                        st,
                        &task_id,
                        TaskState::Failed,
                        Some(Reason::ContainerLaunchFailed),
                        e.to_string(),
                        Some(e.exit_code()),
                    ),
                }
            }
            AgentMsg::Kill { task_id } => {
                let Some(t) = st.ck.tasks.get_mut(&task_id) else {
                    return Ok(());
                };
                if t.state.is_terminal() || t.killing {
                    return Ok(());
                }
                t.killing = true;
                let launched = t.container.is_some();
                // The task's actor signals; its end comes back in `Exited`, which
                // `killing` makes a kill.
                if let Some(a) = st.task_actors.get(&task_id) {
                    if let Err(e) = a.cast(TaskMsg::Kill {
                        grace: self.cfg.kill_grace,
                    }) {
                        debug!(task = %task_id, "task actor gone: {e}");
                    }
                }
                if launched {
                    self.update(st, &task_id, TaskState::Killing, None, "killing".into());
                } else {
                    self.update(
                        st,
                        &task_id,
                        TaskState::Killed,
                        None,
                        "killed before it started".into(),
                    );
                }
            }
            AgentMsg::Exited { task_id, exit } => {
                let Some(t) = st.ck.tasks.get(&task_id) else {
                    return Ok(());
                };
                if t.state.is_terminal() {
                    return Ok(());
                }
                // (its actor freed the container)
                let (state, reason, message) = classify(&exit, t.killing);
                let code = exit_code(&exit);
                self.update_ended(st, &task_id, state, reason, message, code);
            }
            AgentMsg::Ack { .. } if self.cfg.drop_acknowledgements => {}
            AgentMsg::Ack { task_id, uuid } => {
                st.ck.updates.ack(&task_id, uuid);
                let done = st
                    .ck
                    .tasks
                    .get(&task_id)
                    .is_some_and(|t| t.state.is_terminal())
                    && st.ck.updates.pending(&task_id).is_empty();
                if done {
                    st.ck.tasks.remove(&task_id);
                }
                self.mark_dirty(st);
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
                    match self.containerizer.sandbox_of(&task_id) {
                        Some(dir) => read_from(&dir.join(&file), offset),
                        None => Err(format!("no sandbox for task {task_id:?} on this agent")),
                    }
                };
                let _ = reply.send(r);
            }
        }
        Ok(())
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}
