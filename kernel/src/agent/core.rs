//! `AgentCore`: the agent's decisions, without I/O.
//!
//! The core owns what the agent checkpoints: its id, its task records (each task's state
//! lives only here, and changes only through the task state machine) and the status-update
//! streams. It takes what happened (a launch asked for, a launch ended, a kill, a process
//! ended, an acknowledgement, a task actor failed, the master answered or was lost) with
//! the time, and answers [`Effect`]s for the agent actor to carry out: start a task's actor,
//! signal it, reap a process nobody watches any more, destroy orphans. Updates are pushed
//! into the checkpointed streams; the actor writes the checkpoint and only then asks the
//! core for the updates that are due ([`AgentCore::due_updates`] answers none while a
//! change is unwritten), so an update is never sent before it is on disk.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::containerizer::shim::ExitRecord;
use crate::containerizer::{
    classify, exit_code, ContainerError, ContainerInfo, ExitInfo, LaunchSpec,
};
use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::master::Now;
use crate::protocol::{
    AgentRegistration, AgentTask, AgentView, CompletedTask, InboxStats, TaskSpec,
};
use crate::reason::Reason;
use crate::resources::RoleResources;
use crate::status::{Ack, ActorAt, StatusUpdate, StatusUpdateManager};
use crate::task::{TaskState, TaskStateMachine};

/// What the agent knows about one task (checkpointed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task as launched.
    pub spec: TaskSpec,
    /// Its framework.
    pub framework_id: FrameworkId,
    /// What it holds, per role.
    pub resources: RoleResources,
    /// Its state (changed only through the task state machine).
    pub state: TaskState,
    /// Its process, once launched.
    pub container: Option<ContainerInfo>,
    /// A kill was asked for.
    pub killing: bool,
    /// How it ended, once it did.
    pub end: Option<TaskEnd>,
    /// For an actor task: its executor's node name, chosen at launch.
    pub executor: Option<String>,
    /// For an actor task: where its actor runs, once it does.
    pub actor_at: Option<ActorAt>,
    /// For an actor task: how its actor ended, if it did before its executor.
    pub actor_end: Option<ActorEnd>,
}

/// How the actor of an actor task ended (its executor is then stopped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorEnd {
    /// It stopped normally, with this reason if any.
    Stopped(Option<String>),
    /// It failed (panicked, or returned an error): the text.
    Failed(String),
    /// It could not be started: why.
    NotStarted(String),
}

/// How a task ended, as its terminal update said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnd {
    /// Why.
    pub reason: Option<Reason>,
    /// The message.
    pub message: String,
    /// The command's exit code, shell-style.
    pub exit_code: Option<i32>,
}

/// Executor numbers a restarted agent skips: a pre-started executor's number is minted
/// before the checkpoint holding it is written, so the last ones before a crash may be
/// missing from it while their processes still run (until the restarted agent stops
/// them as orphans); no new executor may take their names, which their identities name.
/// Far more than an agent mints between two checkpoint writes.
pub const EXECUTOR_NUMBERS_SKIPPED_ON_RECOVERY: u64 = 1024;

/// Completed tasks an agent remembers (and reports to a master it registers with), the
/// oldest forgotten first.
pub const AGENT_COMPLETED_TASKS_LIMIT: usize = 1_000;

/// Most bytes of a completed task's command an agent keeps (for people): a registration
/// carries 1,000 of them.
pub const COMPLETED_ARGV_BYTES: usize = 1_024;

/// `argv` cut to about `max_bytes`: the arguments that fit, then `…` if any were left out.
fn shortened(argv: Vec<String>, max_bytes: usize) -> Vec<String> {
    let mut used = 0;
    let mut out = Vec::new();
    let total = argv.len();
    for a in argv {
        if used + a.len() > max_bytes {
            break;
        }
        used += a.len();
        out.push(a);
    }
    if out.len() < total {
        out.push("…".into());
    }
    out
}

/// Everything the agent checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The agent's id.
    pub agent_id: AgentId,
    /// The last status-update uuid used.
    pub next_uuid: u64,
    /// Tasks not yet ended, or ended with updates not yet acknowledged.
    pub tasks: BTreeMap<TaskId, TaskRecord>,
    /// The status-update streams.
    pub updates: StatusUpdateManager,
    /// Tasks ended and acknowledged, oldest first (at most
    /// [`AGENT_COMPLETED_TASKS_LIMIT`]).
    pub completed: VecDeque<CompletedTask>,
    /// The number of the last executor started (executors' names are never reused).
    pub last_executor: u64,
}

/// A task spec as agents before task users wrote it.
#[derive(Deserialize)]
struct TaskSpecV1 {
    task_id: TaskId,
    name: String,
    argv: Vec<String>,
    resources: crate::resources::Resources,
}

impl From<TaskSpecV1> for TaskSpec {
    fn from(s: TaskSpecV1) -> TaskSpec {
        TaskSpec {
            task_id: s.task_id,
            name: s.name,
            argv: s.argv,
            resources: s.resources,
            user: None,
            actor: None,
        }
    }
}

/// A task spec as agents before actor tasks wrote it.
#[derive(Deserialize)]
struct TaskSpecV2 {
    task_id: TaskId,
    name: String,
    argv: Vec<String>,
    resources: crate::resources::Resources,
    user: Option<String>,
}

impl From<TaskSpecV2> for TaskSpec {
    fn from(s: TaskSpecV2) -> TaskSpec {
        TaskSpec {
            task_id: s.task_id,
            name: s.name,
            argv: s.argv,
            resources: s.resources,
            user: s.user,
            actor: None,
        }
    }
}

/// The checkpoint as earlier agents wrote it, with task specs of shape `S`.
#[derive(Deserialize)]
struct CheckpointOld<S> {
    agent_id: AgentId,
    next_uuid: u64,
    tasks: BTreeMap<TaskId, TaskRecordOld<S>>,
    updates: crate::status::StatusUpdateManagerV2,
    completed: VecDeque<CompletedTaskOld<S>>,
}

#[derive(Deserialize)]
struct TaskRecordOld<S> {
    spec: S,
    framework_id: FrameworkId,
    resources: RoleResources,
    state: TaskState,
    container: Option<ContainerInfo>,
    killing: bool,
    end: Option<TaskEnd>,
}

#[derive(Deserialize)]
struct CompletedTaskOld<S> {
    spec: S,
    framework_id: FrameworkId,
    resources: RoleResources,
    state: TaskState,
    reason: Option<Reason>,
    message: String,
    exit_code: Option<i32>,
}

/// The checkpoint as agents before completed-task history wrote it.
#[derive(Deserialize)]
struct CheckpointV0 {
    agent_id: AgentId,
    next_uuid: u64,
    tasks: BTreeMap<TaskId, TaskRecordV0>,
    updates: crate::status::StatusUpdateManagerV2,
}

#[derive(Deserialize)]
struct TaskRecordV0 {
    spec: TaskSpecV1,
    framework_id: FrameworkId,
    resources: RoleResources,
    state: TaskState,
    container: Option<ContainerInfo>,
    killing: bool,
}

/// First bytes of a checkpoint written with a format version (earlier agents wrote none).
const CHECKPOINT_MAGIC: &[u8; 8] = b"plexusCK";
/// The format version this agent writes.
const CHECKPOINT_VERSION: u32 = 3;

impl Checkpoint {
    /// The checkpoint's bytes on disk: [`CHECKPOINT_MAGIC`], the format version, then
    /// the encoded checkpoint.
    pub fn encode(&self) -> Result<Vec<u8>, plexus_net::codec::CodecError> {
        let body = plexus_net::codec::encode(self)?;
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads a checkpoint this agent or an earlier version of it wrote.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, plexus_net::codec::CodecError> {
        if let Some(rest) = bytes.strip_prefix(CHECKPOINT_MAGIC) {
            let version = rest
                .get(..4)
                .map(|v| u32::from_le_bytes(v.try_into().expect("four bytes")));
            if version != Some(CHECKPOINT_VERSION) {
                return Err(plexus_net::codec::CodecError::Decode(format!(
                    "agent checkpoint format {version:?}; this agent reads format {CHECKPOINT_VERSION} and earlier unversioned ones"
                )));
            }
            return plexus_net::codec::decode::<Checkpoint>(&rest[4..]);
        }
        let err = match plexus_net::codec::decode::<CheckpointOld<TaskSpecV2>>(bytes) {
            Ok(v2) => return Ok(Checkpoint::from_old(v2)),
            Err(e) => e,
        };
        if let Ok(v1) = plexus_net::codec::decode::<CheckpointOld<TaskSpecV1>>(bytes) {
            return Ok(Checkpoint::from_old(v1));
        }
        let Ok(v0) = plexus_net::codec::decode::<CheckpointV0>(bytes) else {
            return Err(err);
        };
        Ok(Checkpoint::from_old(CheckpointOld {
            agent_id: v0.agent_id,
            next_uuid: v0.next_uuid,
            tasks: v0
                .tasks
                .into_iter()
                .map(|(id, t)| {
                    let rec = TaskRecordOld {
                        spec: t.spec,
                        framework_id: t.framework_id,
                        resources: t.resources,
                        state: t.state,
                        container: t.container,
                        killing: t.killing,
                        end: None,
                    };
                    (id, rec)
                })
                .collect(),
            updates: v0.updates,
            completed: VecDeque::new(),
        }))
    }

    fn from_old<S: Into<TaskSpec>>(old: CheckpointOld<S>) -> Checkpoint {
        let tasks = old
            .tasks
            .into_iter()
            .map(|(id, t)| {
                let rec = TaskRecord {
                    spec: t.spec.into(),
                    framework_id: t.framework_id,
                    resources: t.resources,
                    state: t.state,
                    container: t.container,
                    killing: t.killing,
                    end: t.end,
                    executor: None,
                    actor_at: None,
                    actor_end: None,
                };
                (id, rec)
            })
            .collect();
        let completed = old
            .completed
            .into_iter()
            .map(|c| CompletedTask {
                spec: c.spec.into(),
                framework_id: c.framework_id,
                resources: c.resources,
                state: c.state,
                reason: c.reason,
                message: c.message,
                exit_code: c.exit_code,
            })
            .collect();
        Checkpoint {
            agent_id: old.agent_id,
            next_uuid: old.next_uuid,
            tasks,
            updates: old.updates.into(),
            completed,
            last_executor: 0,
        }
    }
}

/// What the agent actor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start the task's actor, which launches `spec`.
    Launch {
        /// The task.
        task_id: TaskId,
        /// What to launch.
        spec: LaunchSpec,
    },
    /// Start the task's actor, which re-adopts its running process.
    Adopt {
        /// The task.
        task_id: TaskId,
        /// Its process.
        container: ContainerInfo,
    },
    /// Tell the task's actor to kill its process (SIGTERM, then SIGKILL after the grace).
    Signal {
        /// The task.
        task_id: TaskId,
    },
    /// Kill, wait for and free a process whose actor is gone.
    Reap {
        /// Its process.
        container: ContainerInfo,
    },
    /// Stop every process this agent launched but `keep`.
    DestroyOrphans {
        /// The processes of known tasks.
        keep: Vec<ContainerInfo>,
    },
}

/// The agent's state machine.
#[derive(Debug)]
pub struct AgentCore {
    ck: Checkpoint,
    registered: bool,
    /// Changes not yet in the checkpoint.
    unsaved: usize,
    /// Tasks to launch once the checkpoint holding them is written.
    awaiting_write: Vec<TaskId>,
    /// A deliberate defect (simulations only): updates go out before they are written.
    send_unwritten: bool,
    /// The agent's node name (its executors are named after it).
    node: String,
}

impl AgentCore {
    /// The core of an agent that read `ck` (default: a fresh agent), named `id` when
    /// configured, else by its checkpoint, else `node_name`. Tasks still running are
    /// re-adopted, tasks caught mid-launch fail, and other processes are orphans.
    pub fn recover(
        ck: Checkpoint,
        id: Option<&str>,
        node_name: &str,
        now: Now,
    ) -> (AgentCore, Vec<Effect>) {
        let mut core = AgentCore {
            ck,
            registered: false,
            unsaved: 0,
            awaiting_write: Vec::new(),
            send_unwritten: false,
            node: node_name.to_string(),
        };
        if let Some(id) = id {
            core.ck.agent_id = id.into();
        }
        if core.ck.agent_id.is_empty() {
            core.ck.agent_id = node_name.into();
        }
        core.ck.last_executor = core
            .ck
            .last_executor
            .saturating_add(EXECUTOR_NUMBERS_SKIPPED_ON_RECOVERY);
        let mut out = Vec::new();
        let live: Vec<(TaskId, Option<ContainerInfo>)> = core
            .ck
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(id, t)| (id.clone(), t.container.clone()))
            .collect();
        for (task_id, container) in live {
            match container {
                Some(container) => out.push(Effect::Adopt { task_id, container }),
                None => core.update(
                    &task_id,
                    TaskState::Failed,
                    Some(Reason::ContainerLaunchFailed),
                    "the agent restarted while launching the task".into(),
                    None,
                    now,
                ),
            }
        }
        let keep = core
            .ck
            .tasks
            .values()
            .filter_map(|t| t.container.clone())
            .collect();
        out.push(Effect::DestroyOrphans { keep });
        (core, out)
    }

    /// Switches on a deliberate defect, for proving that the simulation's invariants
    /// catch it: updates are sent before the checkpoint holding them is written.
    pub fn send_unwritten_updates(&mut self) {
        self.send_unwritten = true;
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.ck.agent_id
    }

    /// What to write to the checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ck
    }

    /// Changes not yet written to the checkpoint.
    pub fn unsaved(&self) -> usize {
        self.unsaved
    }

    /// The checkpoint as it is now was written: the tasks it records are launched now
    /// (a task is launched only once the agent would know of it after a restart).
    pub fn saved(&mut self) -> Vec<Effect> {
        self.unsaved = 0;
        let mut out = Vec::new();
        for task_id in std::mem::take(&mut self.awaiting_write) {
            let Some(t) = self.ck.tasks.get(&task_id) else {
                continue;
            };
            if t.state != TaskState::Staging || t.killing || t.container.is_some() {
                continue;
            }
            if t.spec.actor.is_some() && t.executor.is_none() {
                // Named before the launch, in the checkpoint the launch waited for.
                debug_assert!(false, "actor task {task_id} has no executor name");
                continue;
            }
            let spec = LaunchSpec {
                task_id: task_id.to_string(),
                argv: t.spec.argv.clone(),
                resources: t.spec.resources.clone(),
                user: t.spec.user.clone(),
                env: Vec::new(),
            };
            out.push(Effect::Launch { task_id, spec });
        }
        out
    }

    /// Registered with a master.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Something is left for a periodic tick: registering, or resending updates.
    pub fn needs_tick(&self) -> bool {
        !self.registered || self.ck.updates.pending_count() > 0
    }

    /// The registration to send to a master.
    pub fn registration(
        &self,
        hostname: &str,
        resources: &RoleResources,
        isolation: &str,
        attributes: &BTreeMap<String, String>,
    ) -> AgentRegistration {
        AgentRegistration {
            attributes: attributes.clone(),
            agent_id: self.ck.agent_id.clone(),
            hostname: hostname.to_string(),
            resources: resources.clone(),
            tasks: self
                .ck
                .tasks
                .values()
                .map(|t| AgentTask {
                    spec: t.spec.clone(),
                    framework_id: t.framework_id.clone(),
                    resources: t.resources.clone(),
                    state: t.state,
                })
                .collect(),
            isolation: isolation.to_string(),
            completed: self.ck.completed.iter().cloned().collect(),
            problem: None,
            attempt: 0,
            parts: 0,
        }
    }

    /// The master answered the registration: every unacknowledged update is due again.
    pub fn on_registered(&mut self) {
        self.registered = true;
        self.ck.updates.resend_all();
    }

    /// The master was lost: register again.
    pub fn on_master_lost(&mut self) {
        self.registered = false;
    }

    /// The updates due now, once every change is written and a master listens.
    pub fn due_updates(&mut self, now: Now) -> Vec<StatusUpdate> {
        if (self.unsaved > 0 && !self.send_unwritten) || !self.registered {
            return Vec::new();
        }
        self.ck.updates.due(now.elapsed)
    }

    /// A framework asked to launch `spec`: it is recorded, and launched once the record
    /// is written ([`AgentCore::saved`]). False for a task already known (a resent
    /// request), which is not recorded or launched again.
    pub fn run(
        &mut self,
        framework_id: FrameworkId,
        spec: TaskSpec,
        resources: RoleResources,
    ) -> bool {
        if self.ck.tasks.contains_key(&spec.task_id) {
            return false;
        }
        let task_id = spec.task_id.clone();
        let executor = spec.actor.is_some().then(|| {
            self.ck.last_executor += 1;
            plexus_net::tls::executor_node_name(&self.node, self.ck.last_executor)
        });
        self.ck.tasks.insert(
            task_id.clone(),
            TaskRecord {
                spec,
                framework_id,
                resources,
                state: TaskState::Staging,
                container: None,
                killing: false,
                end: None,
                executor,
                actor_at: None,
                actor_end: None,
            },
        );
        self.awaiting_write.push(task_id);
        self.unsaved += 1;
        true
    }

    /// A launch ended: the task runs, or failed to start. A task killed meanwhile stays
    /// as it is (its actor stops what did start).
    pub fn launched(
        &mut self,
        task_id: &str,
        result: Result<ContainerInfo, ContainerError>,
        now: Now,
    ) {
        let Some(t) = self.ck.tasks.get_mut(task_id) else {
            return;
        };
        match result {
            Ok(info) if t.state.is_terminal() => {
                debug!(task = task_id, "launched after its kill: {}", info.shim_pid);
            }
            Ok(info) if t.spec.actor.is_some() => {
                t.container = Some(info);
                let msg = "executor started; starting the actor".into();
                self.update(task_id, TaskState::Starting, None, msg, None, now);
            }
            Ok(info) => {
                t.container = Some(info);
                self.update(
                    task_id,
                    TaskState::Running,
                    None,
                    "running".into(),
                    None,
                    now,
                );
            }
            Err(e) if t.state.is_terminal() => {
                debug!(task = task_id, "launch of a killed task failed: {e}");
            }
            Err(e) => self.update(
                task_id,
                TaskState::Failed,
                Some(Reason::ContainerLaunchFailed),
                e.to_string(),
                Some(e.exit_code()),
                now,
            ),
        }
    }

    /// A framework asked to kill a task: a launched one is signalled and is `KILLING`
    /// until its process ends; one not yet launched is `KILLED` at once.
    pub fn kill(&mut self, task_id: &str, now: Now) -> Vec<Effect> {
        let Some(t) = self.ck.tasks.get_mut(task_id) else {
            return Vec::new();
        };
        if t.state.is_terminal() || t.killing {
            return Vec::new();
        }
        t.killing = true;
        if t.container.is_some() {
            self.update(
                task_id,
                TaskState::Killing,
                None,
                "killing".into(),
                None,
                now,
            );
        } else {
            let msg = "killed before it started".into();
            self.update(task_id, TaskState::Killed, None, msg, None, now);
        }
        vec![Effect::Signal {
            task_id: task_id.into(),
        }]
    }

    /// A task's process ended (its actor freed it).
    pub fn exited(&mut self, task_id: &str, exit: &ExitInfo, now: Now) {
        let Some(t) = self.ck.tasks.get(task_id) else {
            return;
        };
        if t.state.is_terminal() {
            return;
        }
        let limited = exit.oom_killed || matches!(exit.record, Some(ExitRecord::Limited(..)));
        let (state, reason, message) = match &t.actor_end {
            // A limit that killed the executor is what ended the actor.
            Some(_) if limited => classify(exit, false),
            Some(ActorEnd::Stopped(why)) => (
                TaskState::Finished,
                None,
                match why {
                    Some(w) => format!("the actor stopped: {w}"),
                    None => "the actor stopped".into(),
                },
            ),
            Some(ActorEnd::Failed(text)) => {
                (TaskState::Failed, Some(Reason::ActorFailed), text.clone())
            }
            Some(ActorEnd::NotStarted(why)) => (
                TaskState::Failed,
                Some(Reason::ContainerLaunchFailed),
                format!("the actor could not start: {why}"),
            ),
            None if t.spec.actor.is_some() && !t.killing => {
                let (state, reason, message) = classify(exit, false);
                let reason = match reason {
                    Some(Reason::CommandExecutorFailed) => Some(Reason::ExecutorTerminated),
                    r => r,
                };
                // An executor ends with its actor; ending first, it failed.
                let state = match state {
                    TaskState::Finished => TaskState::Failed,
                    s => s,
                };
                let reason = reason.or(Some(Reason::ExecutorTerminated));
                (state, reason, format!("the executor ended: {message}"))
            }
            None => classify(exit, t.killing),
        };
        self.update(task_id, state, reason, message, exit_code(exit), now);
    }

    /// The executor of actor task `task_id` hosts its actor at `at`, or could not start
    /// it (then the executor is stopped and the task fails).
    pub fn actor_started(
        &mut self,
        task_id: &str,
        result: Result<ActorAt, String>,
        now: Now,
    ) -> Vec<Effect> {
        let Some(t) = self.ck.tasks.get_mut(task_id) else {
            return Vec::new();
        };
        if t.state != TaskState::Starting || t.killing {
            return Vec::new();
        }
        match result {
            Ok(at) => {
                let msg = format!(
                    "actor {} on {}",
                    t.spec
                        .actor
                        .as_ref()
                        .map(|a| a.type_name.as_str())
                        .unwrap_or("?"),
                    at.node
                );
                t.actor_at = Some(at);
                self.update(task_id, TaskState::Running, None, msg, None, now);
                Vec::new()
            }
            Err(why) => {
                t.actor_end = Some(ActorEnd::NotStarted(why));
                self.unsaved += 1;
                vec![Effect::Signal {
                    task_id: task_id.into(),
                }]
            }
        }
    }

    /// The actor of actor task `task_id` ended while its executor lives: the executor
    /// is stopped, and the task ends as the actor did once it is gone.
    pub fn actor_ended(&mut self, task_id: &str, end: ActorEnd) -> Vec<Effect> {
        let Some(t) = self.ck.tasks.get_mut(task_id) else {
            return Vec::new();
        };
        if t.state.is_terminal() || t.actor_end.is_some() || t.killing {
            return Vec::new();
        }
        t.actor_end = Some(end);
        self.unsaved += 1;
        vec![Effect::Signal {
            task_id: task_id.into(),
        }]
    }

    /// A name for a new executor (never used before on this agent: the counter is
    /// checkpointed with the next write).
    pub fn mint_executor(&mut self) -> String {
        self.ck.last_executor += 1;
        self.unsaved += 1;
        plexus_net::tls::executor_node_name(&self.node, self.ck.last_executor)
    }

    /// Actor task `task_id` (not launched yet) takes the running executor `name` instead
    /// of starting its own.
    pub fn adopt_executor(&mut self, task_id: &str, name: &str) {
        if let Some(t) = self.ck.tasks.get_mut(task_id) {
            debug_assert!(
                t.container.is_none(),
                "task {task_id} has a process already"
            );
            t.executor = Some(name.to_string());
            self.unsaved += 1;
        }
    }

    /// The executors of the actor tasks not yet ended.
    pub fn live_executors(&self) -> std::collections::BTreeSet<String> {
        self.ck
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .filter_map(|t| t.executor.clone())
            .collect()
    }

    /// An actor task's record, if this agent has it.
    pub fn task(&self, task_id: &str) -> Option<&TaskRecord> {
        self.ck.tasks.get(task_id)
    }

    /// A task's actor failed (it is never restarted): its process is reaped and the task
    /// fails.
    pub fn task_actor_failed(&mut self, task_id: &str, why: &str, now: Now) -> Vec<Effect> {
        let Some(t) = self.ck.tasks.get(task_id) else {
            return Vec::new();
        };
        warn!(task = task_id, "task actor failed: {why}");
        let reap = t
            .container
            .clone()
            .map(|container| Effect::Reap { container });
        if !t.state.is_terminal() {
            self.update(
                task_id,
                TaskState::Failed,
                Some(Reason::ExecutorTerminated),
                format!("the actor running the task failed: {why}"),
                None,
                now,
            );
        }
        reap.into_iter().collect()
    }

    /// The framework acknowledged an update; an ended task whose updates are all
    /// acknowledged is forgotten.
    pub fn ack(&mut self, task_id: &str, uuid: u64) {
        if self.ck.updates.ack(task_id, uuid) == Ack::Ignored {
            debug!(task = task_id, uuid, "acknowledgement of no pending update");
            return;
        }
        let done = self
            .ck
            .tasks
            .get(task_id)
            .is_some_and(|t| t.state.is_terminal())
            && self.ck.updates.pending(task_id).is_empty();
        if done {
            if let Some(t) = self.ck.tasks.remove(task_id) {
                self.remember_completed(t);
            }
        }
        self.unsaved += 1;
    }

    /// The agent's own view of its work.
    pub fn view(&self) -> AgentView {
        AgentView {
            agent_id: self.ck.agent_id.clone(),
            tasks: self
                .ck
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.state))
                .collect(),
            pending_updates: self
                .ck
                .tasks
                .keys()
                .flat_map(|id| self.ck.updates.pending(id))
                .collect(),
            registered: self.registered,
            inbox: InboxStats::default(),
            spare_executors: 0,
        }
    }

    /// Checks what must hold between events (the agent actor calls it after each one in
    /// debug builds, so in every simulation): each task's newest unacknowledged update
    /// is of its current state, no update waits for a task the agent forgot, an ended
    /// task keeps its record until its updates are acknowledged, a task being killed is
    /// `KILLING` or ended, and a task runs only with a process.
    pub fn check(&self) -> Result<(), String> {
        for (id, u) in self.ck.updates.newest_pending() {
            let t = self
                .ck
                .tasks
                .get(id)
                .ok_or_else(|| format!("updates wait for task {id}, which the agent forgot"))?;
            if u.state != t.state {
                return Err(format!(
                    "task {id} is {} but its newest update says {}",
                    t.state, u.state
                ));
            }
            if u.uuid > self.ck.next_uuid {
                return Err(format!(
                    "update {} of task {id} is beyond the last uuid {}",
                    u.uuid, self.ck.next_uuid
                ));
            }
        }
        if self.ck.completed.len() > AGENT_COMPLETED_TASKS_LIMIT {
            return Err(format!(
                "{} completed tasks remembered",
                self.ck.completed.len()
            ));
        }
        for (id, t) in &self.ck.tasks {
            if t.state.is_terminal() != t.end.is_some() {
                return Err(format!(
                    "task {id} is {} but its end is {:?}",
                    t.state, t.end
                ));
            }
            if t.state.is_terminal() && self.ck.updates.pending(id).is_empty() {
                return Err(format!(
                    "task {id} ended ({}) with no update left to deliver",
                    t.state
                ));
            }
            if t.killing && !(t.state == TaskState::Killing || t.state.is_terminal()) {
                return Err(format!("task {id} is being killed but is {}", t.state));
            }
            if matches!(t.state, TaskState::Running | TaskState::Killing) && t.container.is_none() {
                return Err(format!("task {id} is {} without a process", t.state));
            }
        }
        Ok(())
    }

    /// Keeps an ended, acknowledged task among the latest completed ones.
    fn remember_completed(&mut self, t: TaskRecord) {
        let end = t.end.unwrap_or(TaskEnd {
            reason: None,
            message: String::new(),
            exit_code: None,
        });
        let mut spec = t.spec;
        spec.argv = shortened(spec.argv, COMPLETED_ARGV_BYTES);
        self.ck.completed.push_back(CompletedTask {
            spec,
            framework_id: t.framework_id,
            resources: t.resources,
            state: t.state,
            reason: end.reason,
            message: end.message,
            exit_code: end.exit_code,
        });
        while self.ck.completed.len() > AGENT_COMPLETED_TASKS_LIMIT {
            self.ck.completed.pop_front();
        }
    }

    /// Moves a task to `state` through the task state machine and queues its update.
    fn update(
        &mut self,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: String,
        exit_code: Option<i32>,
        now: Now,
    ) {
        let Some(t) = self.ck.tasks.get_mut(task_id) else {
            return;
        };
        // An ended task never changes again; a refused change is a bug in the caller.
        if let Err(e) = TaskStateMachine::at(t.state).transition(state) {
            debug_assert!(false, "task {task_id}: {e}");
            warn!(task = task_id, "not sending an update: {e}");
            return;
        }
        t.state = state;
        if state.is_terminal() {
            t.end = Some(TaskEnd {
                reason,
                message: message.clone(),
                exit_code,
            });
        }
        self.ck.next_uuid += 1;
        self.ck.updates.push(StatusUpdate {
            uuid: self.ck.next_uuid,
            task_id: task_id.into(),
            framework_id: t.framework_id.clone(),
            agent_id: self.ck.agent_id.clone(),
            state,
            reason,
            message,
            exit_code,
            unix_ms: now.unix_ms,
            actor: (state == TaskState::Running)
                .then(|| t.actor_at.clone())
                .flatten(),
        });
        self.unsaved += 1;
    }
}
