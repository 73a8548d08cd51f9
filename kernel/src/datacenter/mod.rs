//! The datacenter as a place to spawn actors: [`Datacenter`] is a framework whose tasks
//! are actors.
//!
//! A program connects as a framework (name, role, principal, failover timeout) and asks
//! for actors by type and [`Requirements`] (resources, placement constraints, a
//! timeout) instead of by machine. Each spawn becomes an *actor task*: the kernel places
//! it through offers like any task (DRF, roles, quotas, reservations and the
//! framework's own constraints all apply), the chosen agent starts an executor process
//! for it in the task's cgroup (see [`crate::executor`]) and the actor in it, and the
//! program gets an ordinary [`ActorRef`], linked to the supervisor it named.
//!
//! Supervision is the error-handling story, end to end, and each end reaches the
//! supervisor exactly once:
//! - the actor panics → `ActorFailed` with the panic text;
//! - it stops → `ActorTerminated` with its reason;
//! - its executor is OOM-killed or crosses another limit → `ActorTerminated` whose reason
//!   names the limit (`… (REASON_CONTAINER_LIMITATION_MEMORY)`);
//! - its machine is lost (`TASK_UNREACHABLE`/`TASK_LOST`, or the link to it drops) →
//!   `ActorTerminated` with a node-down reason ([`plexus_actors::is_node_down`]).
//!
//! In every case the task ends in the kernel and its resources return to the pool once.
//! [`crate::datacenter::supervisor::OneForOne`] restarts children through the kernel.

pub mod placement;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, Message, SupervisionEvent};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use plexus_actors::{DownReason, Node, NODE_DOWN};

use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::protocol::{ActorSpec, FrameworkInfo, Offer, TaskSpec};
use crate::reason::Reason;
use crate::resources::Resources;
use crate::scheduler::{DriverHandle, Scheduler, SchedulerDriver};
use crate::status::{ActorAt, StatusUpdate};
use crate::task::TaskState;

pub use placement::Constraint;
use placement::{HostCounts, Want};

/// How a program connects to the datacenter as a framework.
#[derive(Debug, Clone)]
pub struct DatacenterConfig {
    /// The framework's name.
    pub name: String,
    /// Its role (weights, quotas and reservations are per role).
    pub role: String,
    /// The principal it acts as (needed when the master has ACLs).
    pub principal: Option<String>,
    /// That principal's secret.
    pub secret: Option<String>,
    /// How long the kernel keeps its actors after losing it.
    pub failover_timeout: Duration,
    /// The executor's command: a program calling
    /// [`crate::executor::run_if_requested`] (default: this program).
    pub executor: Vec<String>,
    /// The OS user executors run as (`None`: the agents' default).
    pub user: Option<String>,
    /// How long an unused offer is held for spawns to come (held offers make a spawn
    /// start at once); then it is declined.
    pub offer_hold: Duration,
    /// How long to wait for a master to accept the subscription.
    pub connect_timeout: Duration,
}

impl DatacenterConfig {
    /// A framework called `name` in role `*`, whose executor is this program.
    pub fn new(name: &str) -> DatacenterConfig {
        let exe = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        DatacenterConfig {
            name: name.to_string(),
            role: "*".into(),
            principal: None,
            secret: None,
            failover_timeout: Duration::from_secs(60),
            executor: vec![exe],
            user: None,
            offer_hold: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// What a spawned actor needs and where it may go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    /// Cpus, memory and disk (ports: see `ports`).
    pub resources: Resources,
    /// How many ports it takes.
    pub ports: u64,
    /// Where it may be placed.
    pub constraints: Vec<Constraint>,
    /// Longest wait for placement and start (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Agents to use only when no other has room (where it just failed).
    pub avoid: BTreeSet<AgentId>,
    /// The executor command for this actor (`None`: the framework's).
    pub executor: Option<Vec<String>>,
}

impl Requirements {
    /// `cpus` cpus and `mem_mb` MB of memory.
    pub fn new(cpus: f64, mem_mb: u64) -> Requirements {
        Requirements {
            resources: Resources::new(cpus, mem_mb),
            ..Default::default()
        }
    }

    /// Also `disk_mb` MB of disk in its sandbox.
    pub fn disk_mb(mut self, disk_mb: u64) -> Self {
        self.resources.disk_mb = disk_mb;
        self
    }

    /// Also `n` ports.
    pub fn ports(mut self, n: u64) -> Self {
        self.ports = n;
        self
    }

    /// Not on a host with another live actor of `group`.
    pub fn unique_host(mut self, group: &str) -> Self {
        self.constraints.push(Constraint::UniqueHost {
            group: group.into(),
        });
        self
    }

    /// At most `max` live actors of `group` per host.
    pub fn max_per_host(mut self, group: &str, max: u32) -> Self {
        self.constraints.push(Constraint::MaxPerHost {
            group: group.into(),
            max,
        });
        self
    }

    /// Only on agents whose attribute `name` is `value`.
    pub fn attribute_equals(mut self, name: &str, value: &str) -> Self {
        self.constraints.push(Constraint::AttributeEquals {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Only on agents whose attribute `name` matches `pattern` (`*`: any run).
    pub fn attribute_like(mut self, name: &str, pattern: &str) -> Self {
        self.constraints.push(Constraint::AttributeLike {
            name: name.into(),
            pattern: pattern.into(),
        });
        self
    }

    /// Hosts the actor in executor `argv` instead of the framework's executor.
    pub fn executor(mut self, argv: Vec<String>) -> Self {
        self.executor = Some(argv);
        self
    }

    /// Prefers agents other than `agent` (used only when nothing else has room).
    pub fn avoid_agent(mut self, agent: AgentId) -> Self {
        self.avoid.insert(agent);
        self
    }

    /// Gives up if not placed and started within `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Why a spawn or a connection did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DatacenterError {
    /// The master refused the framework, or none answered.
    #[error("cannot connect as framework {name:?}: {why}")]
    Connect {
        /// The framework.
        name: String,
        /// Why.
        why: String,
    },
    /// The arguments could not be encoded, or a requirement is invalid.
    #[error("invalid spawn of {type_name:?}: {why}")]
    Invalid {
        /// The actor type.
        type_name: String,
        /// What is wrong.
        why: String,
    },
    /// Not placed and started in time.
    #[error("task {task_id} ({type_name:?}) was not started within {after:?}: {why}")]
    Timeout {
        /// The task.
        task_id: TaskId,
        /// The actor type.
        type_name: String,
        /// The time allowed.
        after: Duration,
        /// Why it was still pending.
        why: String,
    },
    /// Cancelled before it started.
    #[error("task {task_id} was cancelled")]
    Cancelled {
        /// The task.
        task_id: TaskId,
    },
    /// The task ended before its actor was reachable.
    #[error("task {task_id} ended {state} before its actor started: {message}{}", reason.map(|r| format!(" ({r})")).unwrap_or_default())]
    Ended {
        /// The task.
        task_id: TaskId,
        /// Its final state.
        state: TaskState,
        /// Why.
        reason: Option<Reason>,
        /// The message.
        message: String,
    },
    /// The datacenter handle is gone.
    #[error("the datacenter handle was shut down")]
    Closed,
}

/// Where a spawn stands.
#[derive(Debug)]
enum Phase {
    /// Waiting for placement, for the reason given.
    Pending { why: String },
    /// Launched on an agent; waiting for its actor.
    Launched,
    /// Its actor runs: the program's reference to it is being made.
    Attaching,
    /// Its actor runs and the program has a reference.
    Running { at: ActorAt, cell: ActorId },
    /// Its actor ended (or its reference did) but the kernel has not ended the task yet.
    Ending,
}

/// One spawn asked of the datacenter.
struct Spawn {
    spec: TaskSpec,
    want: Want,
    supervisor: Option<ActorCell>,
    phase: Phase,
    agent: Option<AgentId>,
    host: Option<String>,
    /// Told once the actor is reachable (or never will be).
    done: Option<oneshot::Sender<Result<ActorCell, DatacenterError>>>,
    /// Why it is pending (`None` once placed), for whoever watches.
    why: watch::Sender<Option<String>>,
    /// Where its reference was made to point.
    attached_to: Option<ActorAt>,
    /// When it was launched, or the kernel last spoke of it since.
    heard_at: Option<Instant>,
}

impl Spawn {
    /// Tells the requester how the spawn ended (once; later answers are dropped).
    fn answer(&mut self, r: Result<ActorCell, DatacenterError>) {
        if let Some(done) = self.done.take() {
            if done.send(r).is_err() {
                debug!(task = %self.spec.task_id, "the spawner stopped waiting");
            }
        }
    }

    fn set(&mut self, phase: Phase) {
        let why = match &phase {
            Phase::Pending { why } => Some(why.clone()),
            _ => None,
        };
        self.why.send_if_modified(|w| {
            let changed = *w != why;
            *w = why;
            changed
        });
        tracing::trace!(task = %self.spec.task_id, phase = ?phase, "spawn phase");
        self.phase = phase;
    }
}

/// Most spawns one datacenter handle tracks at once (pending and live).
pub const MAX_SPAWNS: usize = 100_000;

/// What the framework knows (shared by the handle, the scheduler and the lifeline).
struct Books {
    node: Node,
    role: String,
    driver: Option<DriverHandle>,
    offers: BTreeMap<OfferId, (Offer, Instant)>,
    queue: VecDeque<TaskId>,
    spawns: BTreeMap<TaskId, Spawn>,
    by_actor: BTreeMap<ActorId, TaskId>,
    offer_hold: Duration,
    revived: bool,
    suppressed: bool,
    lifeline: Option<ActorRef<LifelineMsg>>,
    me: Weak<Mutex<Books>>,
}

type Shared = Arc<Mutex<Books>>;

fn lock(b: &Shared) -> MutexGuard<'_, Books> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

impl Books {
    /// Live actors per group and host (placed and not yet ended in the kernel).
    fn counts(&self) -> HostCounts {
        let mut c = HostCounts::new();
        for s in self.spawns.values() {
            let Some(host) = &s.host else { continue };
            for k in &s.want.constraints {
                if let Constraint::UniqueHost { group } | Constraint::MaxPerHost { group, .. } = k {
                    *c.entry(group.clone())
                        .or_default()
                        .entry(host.clone())
                        .or_default() += 1;
                }
            }
        }
        c
    }

    /// Places what waits on the offers held; asks for offers if none are.
    fn place(&mut self) {
        let Some(driver) = self.driver.clone() else {
            return;
        };
        self.decline_expired(&driver);
        if self.queue.is_empty() {
            return;
        }
        if self.offers.is_empty() {
            if !self.revived {
                self.revived = true;
                self.suppressed = false;
                driver.revive();
            }
            for id in &self.queue {
                if let Some(s) = self.spawns.get_mut(id) {
                    s.set(Phase::Pending {
                        why: "waiting for offers".into(),
                    });
                }
            }
            return;
        }
        let wants: Vec<Want> = self
            .queue
            .iter()
            .filter_map(|id| self.spawns.get(id).map(|s| s.want.clone()))
            .collect();
        let offers: Vec<Offer> = self.offers.values().map(|(o, _)| o.clone()).collect();
        let (placed, why) = placement::place(&wants, &offers, &self.role, &self.counts());
        let mut per_offer: BTreeMap<usize, Vec<TaskSpec>> = BTreeMap::new();
        for p in placed {
            let Some(s) = self.spawns.get_mut(&p.task_id) else {
                continue;
            };
            let o = &offers[p.offer];
            s.spec.resources = p.resources;
            s.set(Phase::Launched);
            s.heard_at = Some(Instant::now());
            s.agent = Some(o.agent_id.clone());
            s.host = Some(o.hostname.clone());
            per_offer.entry(p.offer).or_default().push(s.spec.clone());
        }
        for (i, tasks) in per_offer {
            let o = &offers[i];
            self.offers.remove(&o.id);
            let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
            self.queue.retain(|q| !ids.contains(q));
            if let Err(e) = driver.launch(vec![o.id.clone()], tasks, Duration::ZERO) {
                for id in ids {
                    if let Some(s) = self.spawns.get_mut(&id) {
                        s.set(Phase::Pending {
                            why: format!("the launch could not be sent: {e}"),
                        });
                        s.agent = None;
                        s.host = None;
                        self.queue.push_back(id);
                    }
                }
            }
        }
        for (id, why) in why {
            if let Some(s) = self.spawns.get_mut(&id) {
                s.set(Phase::Pending { why });
            }
        }
    }

    /// Declines offers held longer than the hold time; with nothing waiting, also
    /// stops offers until the next spawn.
    fn decline_expired(&mut self, driver: &DriverHandle) {
        let now = Instant::now();
        let expired: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= self.offer_hold)
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            self.offers.remove(id);
        }
        driver.decline(expired, Duration::from_secs(1));
        if self.queue.is_empty() && self.offers.is_empty() && !self.suppressed {
            self.suppressed = true;
            self.revived = false;
            driver.suppress();
        }
    }

    /// Gives up the spawns launched longer than [`LAUNCH_WORD_TIMEOUT`] ago of which
    /// the kernel said nothing since.
    fn give_up_unheard(&mut self, driver: &DriverHandle) {
        let now = Instant::now();
        let unheard: Vec<TaskId> = self
            .spawns
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Launched))
            .filter(|(_, s)| {
                s.heard_at
                    .is_some_and(|t| now.duration_since(t) >= LAUNCH_WORD_TIMEOUT)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in unheard {
            let Some(mut s) = self.spawns.remove(&id) else {
                continue;
            };
            warn!(task = %id, "no word of the launched task within {LAUNCH_WORD_TIMEOUT:?}; killing it and giving it up");
            driver.kill(&id);
            let e = DatacenterError::Ended {
                task_id: id.clone(),
                state: TaskState::Unknown,
                reason: None,
                message: format!("no word of its launch within {LAUNCH_WORD_TIMEOUT:?}"),
            };
            s.answer(Err(e));
        }
    }

    fn update(&mut self, u: &StatusUpdate) {
        let Some(s) = self.spawns.get_mut(&u.task_id) else {
            if !u.state.is_terminal() && u.state != TaskState::Unknown {
                // A task of this handle it no longer follows (given up while the
                // kernel had no word of it): nothing may hold resources for it.
                debug!(task = %u.task_id, state = %u.state, "killing a task no spawn follows");
                if let Some(d) = &self.driver {
                    d.kill(&u.task_id);
                }
            }
            return;
        };
        s.heard_at = Some(Instant::now());
        match (u.state, &u.actor) {
            (TaskState::Running, Some(at)) if matches!(s.phase, Phase::Launched) => {
                s.set(Phase::Attaching);
                self.attach(u.task_id.clone(), at.clone());
            }
            (TaskState::Running, Some(at)) if s.attached_to.as_ref().is_some_and(|a| a != at) => {
                // Attached to what the ahead-of-time word named, which the agent's own
                // update contradicts: the task is not trusted on.
                warn!(task = %u.task_id, told = ?s.attached_to, running = ?at, "the actor runs elsewhere than told; killing its task");
                if let Some(d) = &self.driver {
                    d.kill(&u.task_id);
                }
            }
            (TaskState::Unreachable, _) => self.ended(u),
            (state, _) if state.is_terminal() => self.ended(u),
            _ => {}
        }
    }

    /// The actor of `task_id` answers at `at` (ahead of its running update).
    fn actor_up(&mut self, task_id: &str, at: &ActorAt) {
        let Some(s) = self.spawns.get_mut(task_id) else {
            return;
        };
        if !matches!(s.phase, Phase::Launched) {
            return;
        }
        // Only an executor of the agent the task was launched on may host it.
        let host = plexus_net::tls::executor_agent(&at.node);
        if host.is_none() || host != s.host.as_deref() {
            warn!(task = %task_id, executor = %at.node, agent = ?s.host, "told the actor runs on a node that is no executor of its agent; waiting for its update");
            return;
        }
        s.set(Phase::Attaching);
        self.attach(task_id.into(), at.clone());
    }

    /// Makes the program's reference to the actor of `task_id`, now running at `at`.
    fn attach(&mut self, task_id: TaskId, at: ActorAt) {
        let Some(s) = self.spawns.get_mut(&task_id) else {
            return;
        };
        s.attached_to = Some(at.clone());
        let supervisor = s.supervisor.clone();
        let node = self.node.clone();
        let books = self.me.clone();
        tokio::spawn(async move {
            node.join(plexus_config::PeerAddr {
                name: at.node.clone(),
                addr: at.addr,
            });
            // A lost link to the executor waits a node-down timeout for the kernel's
            // word on how the actor ended (its executor OOM-killed, its machine lost).
            let defer = node.options().node_down_timeout;
            let cell = match supervisor {
                Some(sup) => {
                    node.remote_cell_linked_deferred(&at.node, at.pid, sup, defer)
                        .await
                }
                None => node.remote_cell(&at.node, at.pid).await,
            };
            let Some(books) = books.upgrade() else { return };
            lock(&books).attached(&task_id, at, cell.map_err(|e| e.to_string()));
        });
    }

    fn attached(&mut self, task_id: &TaskId, at: ActorAt, cell: Result<ActorCell, String>) {
        let Some(s) = self.spawns.get_mut(task_id) else {
            return;
        };
        if !matches!(s.phase, Phase::Attaching) {
            // The task ended meanwhile (its end was told to the requester).
            return;
        }
        match cell {
            Ok(cell) => {
                if let Some(l) = &self.lifeline {
                    l.get_cell().monitor(cell.clone());
                }
                self.by_actor.insert(cell.get_id(), task_id.clone());
                s.set(Phase::Running {
                    at,
                    cell: cell.get_id(),
                });
                s.answer(Ok(cell));
            }
            Err(why) => {
                warn!(task = %task_id, "cannot reach the actor: {why}; killing its task");
                s.set(Phase::Ending);
                if let Some(d) = &self.driver {
                    d.kill(task_id);
                }
                let e = DatacenterError::Ended {
                    task_id: task_id.clone(),
                    state: TaskState::Running,
                    reason: None,
                    message: format!("its actor could not be reached: {why}"),
                };
                s.answer(Err(e));
            }
        }
    }

    /// The kernel ended (or lost) the task: its supervisor hears how, once.
    fn ended(&mut self, u: &StatusUpdate) {
        let Some(mut s) = self.spawns.remove(&u.task_id) else {
            return;
        };
        self.queue.retain(|q| *q != u.task_id);
        if u.state == TaskState::Unreachable {
            // Restarted elsewhere by its supervisor; should its agent come back, the
            // kernel ends it there.
            if let Some(d) = &self.driver {
                d.kill(&u.task_id);
            }
        }
        match s.phase {
            Phase::Running { at, cell } => {
                self.by_actor.remove(&cell);
                let how = down_reason(u);
                self.node.remote_ended(&at.node, at.pid, how);
                // One executor per actor task: it is gone with the task.
                self.node.forget(&at.node);
            }
            Phase::Ending => {}
            _ => {
                let e = DatacenterError::Ended {
                    task_id: u.task_id.clone(),
                    state: u.state,
                    reason: u.reason,
                    message: u.message.clone(),
                };
                s.answer(Err(e));
            }
        }
        self.place();
    }

    /// The program's reference to an actor ended (the actor ended, its link dropped,
    /// or the program stopped it): the task is killed unless the kernel ended it.
    fn actor_gone(&mut self, cell: &ActorId) {
        let Some(task_id) = self.by_actor.remove(cell) else {
            return;
        };
        let Some(s) = self.spawns.get_mut(&task_id) else {
            return;
        };
        s.set(Phase::Ending);
        if let Some(d) = &self.driver {
            d.kill(&task_id);
        }
    }

    fn cancel(&mut self, task_id: &TaskId) {
        let Some(s) = self.spawns.get_mut(task_id) else {
            return;
        };
        s.answer(Err(DatacenterError::Cancelled {
            task_id: task_id.clone(),
        }));
        if matches!(s.phase, Phase::Pending { .. }) {
            self.spawns.remove(task_id);
            self.queue.retain(|q| q != task_id);
        } else if let Some(d) = &self.driver {
            d.kill(task_id);
        }
    }
}

/// How the kernel's end of a task reaches the references to its actor.
fn down_reason(u: &StatusUpdate) -> DownReason {
    let reason = u.reason.map(|r| format!(" ({r})")).unwrap_or_default();
    match (u.state, u.reason) {
        (TaskState::Failed, Some(Reason::ActorFailed)) => DownReason::Failed(u.message.clone()),
        (TaskState::Unreachable | TaskState::Lost | TaskState::Gone | TaskState::Dropped, _) => {
            DownReason::Terminated(Some(format!(
                "{NODE_DOWN} {}: {}{reason}",
                u.agent_id, u.message
            )))
        }
        (TaskState::Finished, _) => DownReason::Terminated(Some(u.message.clone())),
        _ => DownReason::Terminated(Some(format!("{}{reason}", u.message))),
    }
}

/// The framework's scheduler: holds offers, places spawns on them, follows their tasks.
struct Placer {
    books: Shared,
}

impl Scheduler for Placer {
    fn registered(&mut self, driver: &DriverHandle, framework_id: &str) {
        info!(framework = framework_id, "datacenter connected");
        let mut b = lock(&self.books);
        b.driver = Some(driver.clone());
        b.offers.clear();
        b.revived = false;
        driver.reconcile(Vec::new());
        b.place();
    }

    fn offers(&mut self, _driver: &DriverHandle, offers: Vec<Offer>) {
        let mut b = lock(&self.books);
        let now = Instant::now();
        for o in offers {
            b.offers.insert(o.id.clone(), (o, now));
        }
        b.revived = false;
        b.place();
    }

    fn rescinded(&mut self, _driver: &DriverHandle, offer_id: &str) {
        lock(&self.books).offers.remove(&OfferId::from(offer_id));
    }

    fn update(&mut self, _driver: &DriverHandle, u: &StatusUpdate) {
        lock(&self.books).update(u);
    }

    fn actor_up(&mut self, _driver: &DriverHandle, task_id: &str, at: &ActorAt) {
        lock(&self.books).actor_up(task_id, at);
    }
}

/// Messages of the lifeline (none: it only hears the ends of the actors it monitors).
#[derive(Debug)]
pub enum LifelineMsg {}

impl ractor::Message for LifelineMsg {}

/// Monitors every placed actor's reference, so that a task whose actor is gone (or
/// unreachable from here) does not hold its resources on.
struct Lifeline {
    books: Weak<Mutex<Books>>,
}

impl Actor for Lifeline {
    type Msg = LifelineMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<LifelineMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<LifelineMsg>,
        evt: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) = &evt
        {
            if let Some(b) = self.books.upgrade() {
                lock(&b).actor_gone(&c.get_id());
            }
        }
        Ok(())
    }
}

/// A program's handle on the datacenter (see the module docs).
#[derive(Clone)]
pub struct Datacenter {
    books: Shared,
    node: Node,
    framework_id: FrameworkId,
    driver: ActorRef<crate::protocol::SchedulerMsg>,
    lifeline: ActorRef<LifelineMsg>,
    executor: Vec<String>,
    user: Option<String>,
    seq: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Datacenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datacenter")
            .field("framework_id", &self.framework_id)
            .finish_non_exhaustive()
    }
}

/// A spawn asked for and not yet answered.
pub struct PendingSpawn {
    task_id: TaskId,
    type_name: String,
    timeout: Option<Duration>,
    rx: oneshot::Receiver<Result<ActorCell, DatacenterError>>,
    why: watch::Receiver<Option<String>>,
    books: Shared,
}

impl PendingSpawn {
    /// The actor task's id.
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// Why it is not placed yet (`None` once it is).
    pub fn why_pending(&self) -> Option<String> {
        why_pending(&self.books, &self.task_id)
    }

    /// Follows why it is not placed yet: the value changes with each new reason and
    /// becomes `None` once it is placed.
    pub fn reasons(&self) -> watch::Receiver<Option<String>> {
        self.why.clone()
    }

    /// Cancels it: a pending spawn is dropped; a placed one's task is killed.
    pub fn cancel(&self) {
        lock(&self.books).cancel(&self.task_id);
    }

    /// Waits until its actor is reachable, or why it never will be.
    pub async fn placed(mut self) -> Result<ActorCell, DatacenterError> {
        let r = match self.timeout {
            None => (&mut self.rx).await,
            Some(t) => match tokio::time::timeout(t, &mut self.rx).await {
                Ok(r) => r,
                Err(_) => {
                    let why = self.why_pending().unwrap_or_else(|| "starting".into());
                    self.cancel();
                    return Err(DatacenterError::Timeout {
                        task_id: self.task_id.clone(),
                        type_name: self.type_name.clone(),
                        after: t,
                        why,
                    });
                }
            },
        };
        r.unwrap_or(Err(DatacenterError::Closed))
    }
}

fn why_pending(books: &Shared, task_id: &TaskId) -> Option<String> {
    match &lock(books).spawns.get(task_id)?.phase {
        Phase::Pending { why } => Some(why.clone()),
        _ => None,
    }
}

impl Datacenter {
    /// Connects as a framework through `node` (which must reach the master).
    pub async fn connect(
        node: &Node,
        cfg: DatacenterConfig,
    ) -> Result<Datacenter, DatacenterError> {
        let connect_err = |why: String| DatacenterError::Connect {
            name: cfg.name.clone(),
            why,
        };
        if cfg.executor.first().is_none_or(|e| e.is_empty()) {
            return Err(connect_err("no executor command".into()));
        }
        let books = Arc::new_cyclic(|me| {
            Mutex::new(Books {
                node: node.clone(),
                role: cfg.role.clone(),
                driver: None,
                offers: BTreeMap::new(),
                queue: VecDeque::new(),
                spawns: BTreeMap::new(),
                by_actor: BTreeMap::new(),
                offer_hold: cfg.offer_hold,
                revived: false,
                suppressed: false,
                lifeline: None,
                me: me.clone(),
            })
        });
        let (lifeline, _) = Actor::spawn(
            None,
            Lifeline {
                books: Arc::downgrade(&books),
            },
            (),
        )
        .await
        .map_err(|e| connect_err(e.to_string()))?;
        lock(&books).lifeline = Some(lifeline.clone());
        let info = FrameworkInfo {
            id: None,
            name: cfg.name.clone(),
            principal: cfg.principal.clone(),
            role: cfg.role.clone(),
            failover_timeout_secs: cfg.failover_timeout.as_secs_f64(),
        };
        let placer = Placer {
            books: books.clone(),
        };
        let (driver, framework_id) = SchedulerDriver::start_authenticated(
            node,
            info,
            cfg.secret.clone(),
            Box::new(placer),
            true,
            cfg.connect_timeout,
        )
        .await
        .map_err(|why| {
            lifeline.stop(None);
            connect_err(why)
        })?;
        tokio::spawn(expire_offers(Arc::downgrade(&books), cfg.offer_hold));
        Ok(Datacenter {
            books,
            node: node.clone(),
            framework_id,
            driver,
            lifeline,
            executor: cfg.executor,
            user: cfg.user,
            seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// The framework id.
    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    /// The node the program runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Asks for an actor of `type_name` (registered by the executor) handling messages
    /// named `msg_type`, with encoded `args`, linked to `supervisor` if given.
    pub fn request_encoded(
        &self,
        supervisor: Option<ActorCell>,
        type_name: &str,
        msg_type: &str,
        args: Vec<u8>,
        req: Requirements,
    ) -> Result<PendingSpawn, DatacenterError> {
        let invalid = |why: String| DatacenterError::Invalid {
            type_name: type_name.to_string(),
            why,
        };
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let task_id: TaskId = format!(
            "{type_name}.{:x}.{n}",
            self.node.incarnation() & 0xffff_ffff
        )
        .into();
        let spec = TaskSpec {
            task_id: task_id.clone(),
            name: type_name.to_string(),
            argv: req
                .executor
                .clone()
                .unwrap_or_else(|| self.executor.clone()),
            resources: req.resources.clone(),
            user: self.user.clone(),
            actor: Some(Box::new(ActorSpec {
                type_name: type_name.to_string(),
                msg_type: msg_type.to_string(),
                args,
                owner: self.node.name().to_string(),
            })),
        };
        if let Some(p) = spec.size_problem() {
            return Err(invalid(p));
        }
        if req.resources.cpus_milli == 0 && req.resources.mem_mb == 0 {
            return Err(invalid("an actor task needs some cpus or memory".into()));
        }
        let (tx, rx) = oneshot::channel();
        let (why_tx, why_rx) = watch::channel(Some("waiting for offers".to_string()));
        let mut b = lock(&self.books);
        if b.spawns.len() >= MAX_SPAWNS {
            return Err(invalid(format!(
                "{MAX_SPAWNS} spawns are pending or live already"
            )));
        }
        let want = Want {
            task_id: task_id.clone(),
            resources: req.resources.clone(),
            ports: req.ports,
            constraints: req.constraints.clone(),
            avoid: req.avoid.clone(),
        };
        b.spawns.insert(
            task_id.clone(),
            Spawn {
                spec,
                want,
                supervisor,
                phase: Phase::Pending {
                    why: "waiting for offers".into(),
                },
                agent: None,
                host: None,
                done: Some(tx),
                why: why_tx,
                attached_to: None,
                heard_at: None,
            },
        );
        b.queue.push_back(task_id.clone());
        b.place();
        drop(b);
        Ok(PendingSpawn {
            task_id,
            type_name: type_name.to_string(),
            timeout: req.timeout,
            rx,
            why: why_rx,
            books: self.books.clone(),
        })
    }

    /// As [`Datacenter::request_encoded`], with typed arguments.
    pub fn request<M: Message, A: Serialize>(
        &self,
        supervisor: Option<ActorCell>,
        type_name: &str,
        args: &A,
        req: Requirements,
    ) -> Result<PendingSpawn, DatacenterError> {
        let bytes = plexus_net::codec::encode(args).map_err(|e| DatacenterError::Invalid {
            type_name: type_name.to_string(),
            why: format!("arguments: {e}"),
        })?;
        self.request_encoded(
            supervisor,
            type_name,
            std::any::type_name::<M>(),
            bytes,
            req,
        )
    }

    /// Spawns an actor of `type_name` placed by `req`, and waits for it.
    pub async fn spawn<M: Message, A: Serialize>(
        &self,
        type_name: &str,
        args: &A,
        req: Requirements,
    ) -> Result<ActorRef<M>, DatacenterError> {
        let cell = self
            .request::<M, A>(None, type_name, args, req)?
            .placed()
            .await?;
        Ok(cell.into())
    }

    /// Spawns an actor of `type_name` placed by `req`, linked to `supervisor`, and waits
    /// for it.
    pub async fn spawn_linked<M: Message, A: Serialize>(
        &self,
        supervisor: ActorCell,
        type_name: &str,
        args: &A,
        req: Requirements,
    ) -> Result<ActorRef<M>, DatacenterError> {
        let cell = self
            .request::<M, A>(Some(supervisor), type_name, args, req)?
            .placed()
            .await?;
        Ok(cell.into())
    }

    /// Stops a placed actor through the kernel (its task is killed; its supervisor
    /// hears `ActorTerminated` naming the kill).
    pub fn kill(&self, actor: &ActorCell) {
        let b = lock(&self.books);
        let Some(task_id) = b.by_actor.get(&actor.get_id()) else {
            return;
        };
        if let Some(d) = &b.driver {
            d.kill(task_id);
        }
    }

    /// The task of a placed actor.
    pub fn task_of(&self, actor: &ActorCell) -> Option<TaskId> {
        lock(&self.books).by_actor.get(&actor.get_id()).cloned()
    }

    /// The agent a placed actor runs on.
    pub fn agent_of(&self, actor: &ActorCell) -> Option<AgentId> {
        let b = lock(&self.books);
        let t = b.by_actor.get(&actor.get_id())?;
        b.spawns.get(t)?.agent.clone()
    }

    /// Spawns waiting for placement, with why, in the order they were asked for.
    pub fn pending(&self) -> Vec<(TaskId, String)> {
        let b = lock(&self.books);
        b.queue
            .iter()
            .filter_map(|id| match &b.spawns.get(id)?.phase {
                Phase::Pending { why } => Some((id.clone(), why.clone())),
                _ => None,
            })
            .collect()
    }

    /// Ends the framework: every actor task is killed and the framework removed.
    pub async fn shutdown(self) {
        let driver = lock(&self.books).driver.take();
        if let Some(d) = driver {
            d.teardown();
        }
        self.driver.stop(None);
        self.lifeline.stop(None);
    }
}

/// How long a launched spawn may go without a word from the kernel (its launch or
/// updates lost with a master that failed over) before it is given up: its task is
/// killed, should it exist, and its requester told.
pub const LAUNCH_WORD_TIMEOUT: Duration = Duration::from_secs(60);

/// Declines offers held too long, every half hold time, while the handle lives.
async fn expire_offers(books: Weak<Mutex<Books>>, hold: Duration) {
    let period = (hold / 2).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(b) = books.upgrade() else { return };
        let mut g = lock(&b);
        if let Some(d) = g.driver.clone() {
            g.decline_expired(&d);
            g.give_up_unheard(&d);
        }
    }
}
