//! Messages between masters, agents and schedulers, and the data they carry.

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use plexus_actors::RemoteMessage;

pub use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::reason::Reason;
use crate::resources::{Resources, RoleResources};
use crate::status::{ActorAt, StatusUpdate};
use crate::task::TaskState;

/// Cluster-wide name of the master actor.
pub const MASTER_NAME: &str = "plexus.master";

/// Cluster-wide name of an agent actor.
pub fn agent_name(agent_id: &str) -> String {
    format!("plexus.agent:{agent_id}")
}

/// A task a framework asks to launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique id (chosen by the framework).
    pub task_id: TaskId,
    /// Human-readable name.
    pub name: String,
    /// Command and arguments.
    pub argv: Vec<String>,
    /// What it needs.
    pub resources: Resources,
    /// The OS user it runs as (`None`: its agent's default user); the master's ACLs
    /// decided it may.
    pub user: Option<String>,
    /// For an actor task: the actor its executor hosts. `argv` is then the executor's
    /// command (a program that calls `plexus::executor::run_if_requested`).
    pub actor: Option<Box<ActorSpec>>,
}

/// The actor of an actor task: started by the agent in the task's executor process, and
/// reachable by its framework's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorSpec {
    /// The actor type, as the executor registered it.
    pub type_name: String,
    /// The Rust type name of its messages (checked against the executor's).
    pub msg_type: String,
    /// Its arguments, encoded with `plexus_net::codec`.
    pub args: Vec<u8>,
    /// The node that may reach the actor (the framework's).
    pub owner: String,
}

/// Most bytes an actor task's encoded arguments may take.
pub const MAX_ACTOR_ARGS_BYTES: usize = 64 << 10;

/// Most bytes a task's command and arguments may take together: what an agent
/// re-registers for every task it runs must stay far below a message's size limit.
pub const MAX_TASK_ARGV_BYTES: usize = 64 << 10;
/// Most arguments a task's command may have.
pub const MAX_TASK_ARGS: usize = 4_096;
/// Most bytes a task's name may take.
pub const MAX_TASK_NAME_BYTES: usize = 1_024;
/// Most bytes a task id may take.
pub const MAX_TASK_ID_BYTES: usize = 256;

impl TaskSpec {
    /// What makes the spec larger than a task may be (every accepted task must fit in
    /// its agent's re-registration), naming the field, its size and the limit.
    pub fn size_problem(&self) -> Option<String> {
        if self.task_id.len() > MAX_TASK_ID_BYTES {
            return Some(format!(
                "task id takes {} bytes; at most {MAX_TASK_ID_BYTES}",
                self.task_id.len()
            ));
        }
        if let Some(u) = &self.user {
            if let Some(p) = user_problem(u) {
                return Some(p);
            }
        }
        if let Some(a) = &self.actor {
            if a.args.len() > MAX_ACTOR_ARGS_BYTES {
                return Some(format!(
                    "actor arguments take {} bytes; at most {MAX_ACTOR_ARGS_BYTES}",
                    a.args.len()
                ));
            }
            let names = a.type_name.len() + a.msg_type.len() + a.owner.len();
            if names > MAX_TASK_NAME_BYTES {
                return Some(format!(
                    "actor type, message type and owner take {names} bytes; at most {MAX_TASK_NAME_BYTES}"
                ));
            }
            if self.argv.is_empty() {
                return Some("an actor task needs the executor's command in argv".into());
            }
        }
        command_size_problem(&self.argv, &self.name)
    }
}

/// Most bytes of an OS user's name (or `UID:GID`).
pub const MAX_TASK_USER_BYTES: usize = 64;

/// What is wrong with `user` as the OS user of a task, if anything.
pub fn user_problem(user: &str) -> Option<String> {
    let ok = !user.is_empty()
        && user.len() <= MAX_TASK_USER_BYTES
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    (!ok).then(|| {
        format!(
            "user {user:?} must be 1 to {MAX_TASK_USER_BYTES} letters, digits, `_`, `-`, `.`              (a user name, or UID:GID)"
        )
    })
}

/// What makes a command (`argv`) or a name larger than a task's may be, naming the
/// field, its size and the limit.
pub fn command_size_problem(argv: &[String], name: &str) -> Option<String> {
    let argv_bytes: usize = argv.iter().map(String::len).sum();
    if argv.len() > MAX_TASK_ARGS {
        Some(format!(
            "argv has {} arguments; at most {MAX_TASK_ARGS}",
            argv.len()
        ))
    } else if argv_bytes > MAX_TASK_ARGV_BYTES {
        Some(format!(
            "argv takes {argv_bytes} bytes; at most {MAX_TASK_ARGV_BYTES} (pass large data in a file)"
        ))
    } else if name.len() > MAX_TASK_NAME_BYTES {
        Some(format!(
            "name takes {} bytes; at most {MAX_TASK_NAME_BYTES}",
            name.len()
        ))
    } else {
        None
    }
}

/// A framework's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// Set when re-subscribing after a failover.
    pub id: Option<FrameworkId>,
    /// Name.
    pub name: String,
    /// Who runs it.
    pub principal: Option<String>,
    /// Its role (`*` for none).
    pub role: String,
    /// How long its tasks outlive a disconnection.
    pub failover_timeout_secs: f64,
}

/// An offer of one agent's resources to one framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Offer id.
    pub id: OfferId,
    /// The framework it is for.
    pub framework_id: FrameworkId,
    /// The agent.
    pub agent_id: AgentId,
    /// The agent's node name.
    pub hostname: String,
    /// What is offered, per role.
    pub resources: RoleResources,
    /// The agent's attributes.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// The master's view of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Task id.
    pub task_id: TaskId,
    /// Name.
    pub name: String,
    /// Its framework.
    pub framework_id: FrameworkId,
    /// Its agent.
    pub agent_id: AgentId,
    /// Current state.
    pub state: TaskState,
    /// Reason of the last update.
    pub reason: Option<Reason>,
    /// Message of the last update.
    pub message: String,
    /// What it holds.
    pub resources: RoleResources,
    /// Command.
    pub argv: Vec<String>,
    /// For an actor task: its actor's type.
    pub actor_type: Option<String>,
    /// For an actor task: the executor node its actor runs on, once it does.
    pub actor_node: Option<String>,
}

/// An agent's view of a task it runs (sent when re-registering).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTask {
    /// The task.
    pub spec: TaskSpec,
    /// Its framework.
    pub framework_id: FrameworkId,
    /// Resources it holds, per role.
    pub resources: RoleResources,
    /// Its state on the agent.
    pub state: TaskState,
}

/// What an agent tells the master when it (re-)registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRegistration {
    /// Stable agent id (kept across agent restarts).
    pub agent_id: AgentId,
    /// Node name (for people and logs).
    pub hostname: String,
    /// Its total resources, per role.
    pub resources: RoleResources,
    /// Tasks it runs now, and ended ones whose updates are not yet acknowledged.
    pub tasks: Vec<AgentTask>,
    /// How it isolates tasks.
    pub isolation: String,
    /// Its most recently completed tasks (ended, updates acknowledged), oldest first: a
    /// restarted master learns their history from them.
    pub completed: Vec<CompletedTask>,
    /// Why it cannot take tasks now (e.g. its checkpoint cannot be written), if so.
    pub problem: Option<String>,
    /// Which of the agent's registrations this is: parts of another are not joined to
    /// it.
    pub attempt: u64,
    /// How many [`RegistrationPart`]s carry the rest of its tasks (0: all are here).
    pub parts: u32,
    /// What operators say about the machine (`rack = "r1"`), matched by placement
    /// constraints.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Tasks of a registration too large for one message (see [`AgentRegistration::split`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationPart {
    /// The agent.
    pub agent_id: AgentId,
    /// The registration it belongs to ([`AgentRegistration::attempt`]).
    pub attempt: u64,
    /// Its place among the registration's parts, from 0.
    pub index: u32,
    /// Tasks.
    pub tasks: Vec<AgentTask>,
    /// Completed tasks.
    pub completed: Vec<CompletedTask>,
}

impl TaskSpec {
    /// About how many bytes the spec takes encoded (more, never less).
    pub fn approx_bytes(&self) -> usize {
        const FIXED_BYTES: usize = 256;
        const PER_ARG_BYTES: usize = 10;
        FIXED_BYTES
            + self.task_id.len()
            + self.name.len()
            + self
                .argv
                .iter()
                .map(|a| a.len() + PER_ARG_BYTES)
                .sum::<usize>()
    }
}

impl AgentRegistration {
    /// Splits the registration so that each message takes at most about `budget_bytes`:
    /// the header keeps what fits beside the agent's own fields, and parts carry the
    /// rest in order. A task larger than the budget alone still goes, alone in a part.
    pub fn split(mut self, budget_bytes: usize) -> (AgentRegistration, Vec<RegistrationPart>) {
        let mut chunks: Vec<(Vec<AgentTask>, Vec<CompletedTask>)> = vec![Default::default()];
        let mut used = 0;
        let mut room = |bytes: usize, chunks: &mut Vec<(Vec<AgentTask>, Vec<CompletedTask>)>| {
            let last = chunks.last().expect("one chunk at least");
            if used + bytes > budget_bytes && !(last.0.is_empty() && last.1.is_empty()) {
                chunks.push(Default::default());
                used = 0;
            }
            used += bytes;
        };
        for t in std::mem::take(&mut self.tasks) {
            room(t.spec.approx_bytes(), &mut chunks);
            chunks.last_mut().expect("a chunk").0.push(t);
        }
        for t in std::mem::take(&mut self.completed) {
            room(t.spec.approx_bytes() + t.message.len(), &mut chunks);
            chunks.last_mut().expect("a chunk").1.push(t);
        }
        let mut chunks = chunks.into_iter();
        let (tasks, completed) = chunks.next().expect("one chunk at least");
        self.tasks = tasks;
        self.completed = completed;
        let parts: Vec<RegistrationPart> = chunks
            .enumerate()
            .map(|(i, (tasks, completed))| RegistrationPart {
                agent_id: self.agent_id.clone(),
                attempt: self.attempt,
                index: u32::try_from(i).expect("parts fit in u32"),
                tasks,
                completed,
            })
            .collect();
        self.parts = u32::try_from(parts.len()).expect("parts fit in u32");
        (self, parts)
    }

    /// Puts the registration back together from its header and all its parts (in any
    /// order); says what is wrong if they do not make one.
    pub fn join(mut self, mut parts: Vec<RegistrationPart>) -> Result<AgentRegistration, String> {
        parts.sort_by_key(|p| p.index);
        let indices: Vec<u32> = parts.iter().map(|p| p.index).collect();
        if indices != (0..self.parts).collect::<Vec<u32>>() {
            return Err(format!(
                "registration {} of {} has parts {indices:?}; it needs 0..{}",
                self.attempt, self.agent_id, self.parts
            ));
        }
        if let Some(p) = parts
            .iter()
            .find(|p| p.agent_id != self.agent_id || p.attempt != self.attempt)
        {
            return Err(format!(
                "part {} belongs to registration {} of {}, not {} of {}",
                p.index, p.attempt, p.agent_id, self.attempt, self.agent_id
            ));
        }
        for p in parts {
            self.tasks.extend(p.tasks);
            self.completed.extend(p.completed);
        }
        self.parts = 0;
        Ok(self)
    }
}

/// A task an agent ran to its end and whose updates were all acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedTask {
    /// The task.
    pub spec: TaskSpec,
    /// Its framework.
    pub framework_id: FrameworkId,
    /// What it held, per role.
    pub resources: RoleResources,
    /// How it ended (a terminal state).
    pub state: TaskState,
    /// Why.
    pub reason: Option<Reason>,
    /// The last update's message.
    pub message: String,
    /// How the command's process ended, shell-style (see [`StatusUpdate`]).
    pub exit_code: Option<i32>,
}

/// What a framework asks of the master (see [`MasterMsg::Framework`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FrameworkCall {
    /// Accept offers, launching tasks on them; leftovers are declined with `refuse_secs`.
    Accept {
        /// Offers used (all of one agent).
        offer_ids: Vec<OfferId>,
        /// Tasks to launch.
        tasks: Vec<TaskSpec>,
        /// Decline filter for what is left.
        refuse_secs: f64,
    },
    /// Decline offers.
    Decline {
        /// Offers declined.
        offer_ids: Vec<OfferId>,
        /// Do not offer these agents again to this framework for this long.
        refuse_secs: f64,
    },
    /// Kill a task.
    Kill {
        /// The task.
        task_id: TaskId,
    },
    /// Acknowledge a status update.
    Acknowledge {
        /// The task.
        task_id: TaskId,
        /// The update's uuid.
        uuid: u64,
    },
    /// Ask for the state of tasks (empty: all of the framework's: implicit reconciliation).
    Reconcile {
        /// Tasks to reconcile.
        task_ids: Vec<TaskId>,
    },
    /// Stop offers to the framework.
    Suppress,
    /// Resume offers and clear filters.
    Revive,
    /// The framework is done: its tasks are killed and it is removed.
    Teardown,
}

/// Messages to the master.
#[derive(Debug, RemoteMessage)]
pub enum MasterMsg {
    /// An agent (re-)registers; it registered `agent_name(agent_id)` first. With
    /// `parts` above 0, the rest of its tasks come in as many `RegisterAgentPart`s.
    RegisterAgent(AgentRegistration),
    /// Part of a registration too large for one message.
    RegisterAgentPart(RegistrationPart),
    /// A status update from an agent.
    Update(StatusUpdate),
    /// The actor of an actor task answers at `at`: told to its framework at once, ahead
    /// of the task's `TASK_RUNNING` update (which follows once the agent wrote it), so
    /// that a spawn returns without waiting for that write.
    ActorUp {
        /// The agent running the task.
        agent_id: AgentId,
        /// The task.
        task_id: TaskId,
        /// Where its actor is.
        at: ActorAt,
    },
    /// An agent can no longer take tasks (`problem`), or can again (`None`).
    AgentHealth {
        /// The agent.
        agent_id: AgentId,
        /// What is wrong.
        problem: Option<String>,
    },
    /// A scheduler subscribes (or re-subscribes); it registered `scheduler` first.
    Subscribe {
        /// The framework.
        info: FrameworkInfo,
        /// Cluster-wide name of its driver actor.
        scheduler: String,
        /// The secret of `info.principal`, which proves the framework is that principal
        /// (checked, never kept or shown).
        secret: Option<String>,
        /// Answers the framework id, or why it is refused.
        reply: RpcReplyPort<Result<FrameworkId, String>>,
    },
    /// A framework's request.
    Framework {
        /// The framework.
        framework_id: FrameworkId,
        /// What it asks.
        call: FrameworkCall,
    },
    /// Apply the roles' weights and quotas operators set (in the master's process: a
    /// peer can only ask for what is already there to be applied).
    RolesChanged,
    /// The cluster's whole state, copied by the master (for tests and tools; the API
    /// reads the master's published [`crate::master::ReadModel`] instead).
    State(RpcReplyPort<ClusterState>),
    /// Periodic and on-demand allocation (internal).
    Allocate,
    /// Timer checks: agent removal, framework failover (internal).
    Tick,
    /// Publish the read model (internal; at most one per publish interval).
    Publish,
}

/// Messages to a scheduler driver.
#[derive(Debug, RemoteMessage)]
pub enum SchedulerMsg {
    /// The master accepted the subscription (sent before any offer).
    Subscribed(FrameworkId),
    /// Try to subscribe again after losing the master (internal).
    Resubscribe,
    /// New offers.
    Offers(Vec<Offer>),
    /// An offer is no longer valid.
    Rescind(OfferId),
    /// A task's status changed.
    Update(StatusUpdate),
    /// The actor of actor task `task_id` answers at `at` (its `TASK_RUNNING` update
    /// follows).
    ActorUp {
        /// The task.
        task_id: TaskId,
        /// Where its actor is.
        at: ActorAt,
    },
    /// The master refused something.
    Error(String),
    /// Answers once the scheduler was told it is registered (local use).
    AwaitRegistered(RpcReplyPort<()>),
    /// The master lost this framework's session: subscribe again (with the framework
    /// id, within the failover timeout, the tasks are still there).
    Disconnected(String),
    /// A new master leads: subscribe again with it at once (sent by the new leader to
    /// every scheduler name it knows).
    MasterChanged,
}

/// Messages to an agent.
#[derive(Debug, RemoteMessage)]
pub enum AgentMsg {
    /// Launch a task.
    Run {
        /// Its framework.
        framework_id: FrameworkId,
        /// The task.
        spec: TaskSpec,
        /// Resources it holds, per role.
        resources: RoleResources,
    },
    /// Kill a task.
    Kill {
        /// The task.
        task_id: TaskId,
    },
    /// The framework acknowledged an update.
    Ack {
        /// The task.
        task_id: TaskId,
        /// The update's uuid.
        uuid: u64,
    },
    /// Read a task's sandbox file from `offset`.
    ReadFile {
        /// The task.
        task_id: TaskId,
        /// `stdout` or `stderr`.
        file: String,
        /// Offset in the stream (counting every byte the task wrote to it).
        offset: u64,
        /// Answers the offset the bytes start at (later than `offset` when older output
        /// was rotated away) and the bytes (at most 1 MiB), or why not.
        reply: RpcReplyPort<Result<(u64, Vec<u8>), String>>,
    },
    /// Registration answered (internal retries stop).
    Registered,
    /// The agent's own view: its tasks and unacknowledged updates.
    Inspect {
        /// Answers the view.
        reply: RpcReplyPort<AgentView>,
    },
    /// Periodic work: resend due updates, (re-)register (internal).
    Tick,
    /// Write the checkpoint, then send the updates it covers (internal; one per burst of
    /// changes, so a burst costs one write).
    Persist,
    /// A launch finished (internal).
    Launched {
        /// The task.
        task_id: TaskId,
        /// Its container, or why it could not start.
        result: Result<crate::containerizer::ContainerInfo, crate::containerizer::ContainerError>,
    },
    /// The executor of an actor task hosts its actor, or could not start it (internal).
    ActorStarted {
        /// The task.
        task_id: TaskId,
        /// Where the actor runs, or why it does not.
        result: Result<crate::status::ActorAt, String>,
    },
    /// A pre-started executor's launch finished (internal).
    SpareLaunched {
        /// Its node name.
        name: String,
        /// Its container, or why it could not start.
        result: Result<crate::containerizer::ContainerInfo, crate::containerizer::ContainerError>,
    },
    /// A pre-started executor's process ended (internal).
    SpareEnded {
        /// Its node name.
        name: String,
    },
    /// Time to pre-start the next executor like the one task `task_id` took (internal).
    SpareDue {
        /// The task.
        task_id: TaskId,
    },
    /// The reference to task `task_id`'s actor ended with its executor's link while the
    /// executor may still run: make a new one (internal).
    Reattach {
        /// The task.
        task_id: TaskId,
    },
    /// A pre-started executor may have been idle too long (internal).
    SpareIdle {
        /// Its node name.
        name: String,
    },
    /// A task's process ended (internal).
    Exited {
        /// The task.
        task_id: TaskId,
        /// How its process ended (classified by the agent, which knows whether it was
        /// killing the task).
        exit: crate::containerizer::ExitInfo,
    },
    /// A new master leads: register with it at once (sent by the new leader to every
    /// agent name it knows).
    MasterChanged,
}

/// An agent's own view of its work (see [`AgentMsg::Inspect`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// The agent.
    pub agent_id: AgentId,
    /// Its tasks and their states, by task id.
    pub tasks: Vec<(TaskId, TaskState)>,
    /// Status updates not yet acknowledged, oldest first per task.
    pub pending_updates: Vec<crate::status::StatusUpdate>,
    /// Registered with a master.
    pub registered: bool,
    /// The agent's inbox (filled in by the agent actor).
    pub inbox: InboxStats,
    /// Pre-started executors ready to take an actor task (filled in by the agent actor).
    pub spare_executors: usize,
}

/// The state served by the operator API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Agents.
    pub agents: Vec<AgentState>,
    /// Frameworks.
    pub frameworks: Vec<FrameworkState>,
    /// Tasks.
    pub tasks: Vec<TaskInfo>,
    /// Total resources of active agents.
    pub total: Resources,
    /// Resources held by tasks and offers.
    pub used: Resources,
    /// Outstanding offers.
    pub offers_outstanding: usize,
    /// The outstanding offers themselves.
    #[serde(default)]
    pub offers: Vec<Offer>,
    /// Duration of the last allocation cycle, in microseconds.
    pub last_allocation_us: u64,
    /// The master's inbox (filled in by the master actor).
    pub inbox: InboxStats,
}

/// A bounded inbox's figures (see `plexus_actors::inbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxStats {
    /// Messages from peers queued (a lower bound).
    pub queued_msgs: usize,
    /// The bound.
    pub limit_msgs: usize,
    /// Messages shed since the actor started.
    pub shed_total: u64,
}

impl InboxStats {
    /// The figures of `gauge`.
    pub fn of(gauge: &plexus_actors::InboxGauge) -> InboxStats {
        InboxStats {
            queued_msgs: gauge.queued_msgs(),
            limit_msgs: gauge.limit_msgs(),
            shed_total: gauge.shed_total(),
        }
    }
}

/// One agent in [`ClusterState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// Id.
    pub id: AgentId,
    /// Node name.
    pub hostname: String,
    /// Connected or not.
    pub status: AgentStatus,
    /// Total resources.
    pub total: Resources,
    /// Free resources.
    pub free: Resources,
    /// Isolation in use.
    pub isolation: String,
    /// Why it takes no tasks now, if so (it is not offered meanwhile).
    pub problem: Option<String>,
}

/// Whether an agent is connected to the master (`active` / `unreachable` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Registered and connected.
    Active,
    /// Its connection was lost; its tasks are `TASK_UNREACHABLE`.
    Unreachable,
}

/// Whether a framework's scheduler is connected (`connected` / `disconnected` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameworkStatus {
    /// Subscribed and connected.
    Connected,
    /// Disconnected, within its failover timeout.
    Disconnected,
}

impl AgentStatus {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Unreachable => "unreachable",
        }
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl FrameworkStatus {
    /// The name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameworkStatus::Connected => "connected",
            FrameworkStatus::Disconnected => "disconnected",
        }
    }
}

impl std::fmt::Display for FrameworkStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One framework in [`ClusterState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkState {
    /// Id.
    pub id: FrameworkId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Connected or not.
    pub status: FrameworkStatus,
    /// Dominant share.
    pub share: f64,
}
