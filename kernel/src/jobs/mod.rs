//! The built-in jobs framework: runs one-off commands.
//!
//! Jobs queue in submission order and are placed first-fit on offers. A job that cannot be
//! placed records why (which resource no offer had enough of, how much the largest offer
//! had, or that no offer arrived at all), so `plexus ps` and the API can say it. When the
//! queue is empty the framework suppresses its offers; a new job revives them.
//!
//! With a store ([`Jobs::open`]) the framework keeps what it accepted across restarts of
//! the master process: every job and its history, the job numbering, and the framework
//! id of each role, which it re-subscribes under. A submission is answered once it is
//! durable ([`Jobs::durable`]). A kill is remembered as the job's desired state and sent
//! again whenever the job is heard of still running, so neither a lost message nor a
//! master restart undoes it.

pub mod store;

pub use store::{JobsBackend, JobsStore, Saved, StoreError};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::protocol::{Offer, TaskSpec};
use crate::reason::Reason;
use crate::resources::{Resources, RoleResources, ANY_ROLE};
use crate::scheduler::{DriverHandle, Scheduler};
use crate::status::StatusUpdate;
use crate::task::TaskState;

/// A job to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Name (defaults to the command).
    pub name: Option<String>,
    /// Command and arguments.
    pub argv: Vec<String>,
    /// What it needs.
    pub resources: Resources,
    /// The role it runs in (`None`: `*`); one of the roles the framework serves.
    pub role: Option<String>,
    /// The principal submitting it.
    pub owner: Option<String>,
    /// The OS user it runs as (`None`: its agent's default user).
    pub user: Option<String>,
}

/// Most roles one jobs framework serves (one registered framework each).
pub const MAX_JOB_ROLES: usize = 64;
/// Ended jobs kept for `ps` and the API; the oldest are forgotten first.
pub const MAX_ENDED_JOBS: usize = 10_000;
/// State changes kept per job: the first, and the latest ones.
pub const MAX_JOB_HISTORY_EVENTS: usize = 32;

/// Why a job cannot be killed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    /// No job has this task id.
    #[error("no job {0:?}")]
    NoSuchJob(TaskId),
    /// It has already ended.
    #[error("task {task_id} has already ended ({})", state.mesos_name())]
    Ended {
        /// The task.
        task_id: TaskId,
        /// How it ended.
        state: TaskState,
    },
}

/// One state change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The new state.
    pub state: TaskState,
    /// Reason.
    pub reason: Option<Reason>,
    /// Message.
    pub message: String,
    /// How the command ended (see [`StatusUpdate::exit_code`]).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Wall-clock milliseconds.
    pub unix_ms: u64,
}

/// A job's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Its task id.
    pub task_id: TaskId,
    /// Name.
    pub name: String,
    /// Command.
    pub argv: Vec<String>,
    /// What it needs.
    pub resources: Resources,
    /// The role it runs in.
    pub role: String,
    /// `None` while it waits for placement.
    pub state: Option<TaskState>,
    /// Why it is not placed yet.
    pub why_not_placed: Option<String>,
    /// Where it runs.
    pub agent_id: Option<AgentId>,
    /// State changes, oldest first.
    pub history: Vec<JobEvent>,
    /// A kill was asked for: it is sent again until the job has ended.
    #[serde(default)]
    pub kill_requested: bool,
    /// The principal that submitted it (kept in the store beside the job).
    #[serde(skip)]
    pub owner: Option<String>,
    /// The OS user it runs as (`None`: its agent's default user).
    #[serde(skip)]
    pub user: Option<String>,
}

/// Jobs by task id, in a persistent map (see [`Jobs::snapshot`]).
pub type JobMap = imbl::OrdMap<TaskId, Arc<JobStatus>>;

/// The jobs of one role, placed by that role's framework.
#[derive(Default)]
struct RoleQueue {
    pending: VecDeque<TaskId>,
    handle: Option<DriverHandle>,
    suppressed: bool,
}

#[derive(Default)]
struct Inner {
    next: u64,
    queues: BTreeMap<String, RoleQueue>,
    /// Shared structure: a reader's [`Jobs::snapshot`] costs nothing to take.
    jobs: JobMap,
    /// Each job's submission number.
    seq_of: BTreeMap<TaskId, u64>,
    /// Ended jobs, oldest first (at most `MAX_ENDED_JOBS`).
    ended: VecDeque<TaskId>,
    offers_seen: u64,
    subscribers: Vec<mpsc::UnboundedSender<(TaskId, TaskState)>>,
    /// What changed since the store was last written (only with a store).
    unsaved: Option<Unsaved>,
}

/// Changes not yet in the store, and how many changes there were in all.
#[derive(Default)]
struct Unsaved {
    jobs: BTreeSet<TaskId>,
    deleted: BTreeSet<TaskId>,
    framework_ids: BTreeMap<String, FrameworkId>,
    next: bool,
    /// Changes made so far (the store has them once `durable` reaches this).
    generation: u64,
}

/// The jobs framework's shared state: submit, list and kill jobs from anywhere.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    changes: watch::Sender<u64>,
    /// How far the store holds the changes.
    durable: watch::Sender<Durable>,
    /// Whether the master's `TASK_UNKNOWN` says a job is on no agent (see
    /// [`Jobs::trust_unknown`]).
    unknown_is_lost: Arc<std::sync::atomic::AtomicBool>,
}

/// How far the store holds the framework's changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Durable {
    /// How many times what the framework held was replaced ([`Jobs::take_back`]).
    epoch: u64,
    /// The generation of changes of this epoch the store holds (all of them up to it
    /// are written, or were dropped at the start of the epoch).
    generation: u64,
    /// The generation the store held when the epoch began: a change of the epoch
    /// before up to it was written, one after it was dropped.
    written_before: u64,
}

/// Changes were dropped before they were written: this master stopped leading and
/// took back what the registry holds instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the change was dropped before it was written: this master no longer leads")]
pub struct ChangesDropped;

impl Default for Jobs {
    /// A jobs framework serving role `*` only.
    fn default() -> Self {
        Jobs::new(&[ANY_ROLE.to_string()])
    }
}

/// Most bytes of a job's command that make its name when it is given none.
pub const DEFAULT_NAME_BYTES: usize = 64;

/// A job's name when it is given none: its command line, cut to [`DEFAULT_NAME_BYTES`]
/// (on a character boundary, with `…` where it was cut).
fn default_name(argv: &[String]) -> String {
    let mut line = argv.join(" ");
    if line.len() > DEFAULT_NAME_BYTES {
        let mut end = DEFAULT_NAME_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

fn unix_ms() -> u64 {
    plexus_net::clock::unix_ms()
}

impl JobStatus {
    /// Records a state change, keeping the first and the latest ones.
    fn record(&mut self, e: JobEvent) {
        if self.history.len() >= MAX_JOB_HISTORY_EVENTS {
            self.history.remove(1);
        }
        self.history.push(e);
        debug_assert!(self.history.len() <= MAX_JOB_HISTORY_EVENTS);
    }
}

impl Inner {
    /// A job ended: it is kept among the latest `MAX_ENDED_JOBS` ended ones.
    fn ended(&mut self, id: &str) {
        self.ended.push_back(id.into());
        while self.ended.len() > MAX_ENDED_JOBS {
            let Some(old) = self.ended.pop_front() else {
                break;
            };
            self.jobs.remove(&old);
            self.seq_of.remove(&old);
            if let Some(u) = &mut self.unsaved {
                u.jobs.remove(&old);
                u.deleted.insert(old);
                u.generation += 1;
            }
        }
    }

    /// Notes that job `id` changed (to be written to the store, if there is one).
    fn touch(&mut self, id: &str) {
        if let Some(u) = &mut self.unsaved {
            u.jobs.insert(id.into());
            u.generation += 1;
        }
    }

    /// Takes what is to be written, and the generation it brings the store to.
    fn take_batch(&mut self) -> Option<(store::Batch, u64)> {
        let u = self.unsaved.as_mut()?;
        let mut batch = store::Batch {
            next: u.next.then_some(self.next),
            put: Vec::with_capacity(u.jobs.len()),
            delete: std::mem::take(&mut u.deleted).into_iter().collect(),
            framework_ids: std::mem::take(&mut u.framework_ids).into_iter().collect(),
        };
        u.next = false;
        for id in std::mem::take(&mut u.jobs) {
            if let (Some(j), Some(seq)) = (self.jobs.get(&id), self.seq_of.get(&id)) {
                batch.put.push((*seq, (**j).clone()));
            }
        }
        Some((batch, u.generation))
    }

    /// Puts back a batch that could not be written.
    fn restore_batch(&mut self, batch: store::Batch) {
        let Some(u) = &mut self.unsaved else { return };
        u.next |= batch.next.is_some();
        for (_, j) in batch.put {
            if !u.deleted.contains(&j.task_id) {
                u.jobs.insert(j.task_id);
            }
        }
        u.deleted.extend(batch.delete);
        for (role, id) in batch.framework_ids {
            u.framework_ids.entry(role).or_insert(id);
        }
    }
}

impl Jobs {
    /// A jobs framework serving `roles` (each needs its own registered framework: start
    /// one per role with [`Jobs::scheduler_for`]).
    pub fn new(roles: &[String]) -> Jobs {
        assert!(
            roles.len() <= MAX_JOB_ROLES,
            "at most {MAX_JOB_ROLES} job roles"
        );
        let mut inner = Inner::default();
        for r in roles {
            inner.queues.insert(r.clone(), RoleQueue::default());
        }
        Jobs {
            inner: Arc::new(Mutex::new(inner)),
            changes: watch::channel(0).0,
            durable: watch::channel(Durable::default()).0,
            unknown_is_lost: Arc::default(),
        }
    }

    /// Tells the framework that its masters keep the registry's agents (several
    /// masters): a master answers `TASK_UNKNOWN` only once every agent that may hold
    /// the task is back or given up on. Then, when it subscribes, the framework asks
    /// after every job it holds as placed; a job placed but unknown is placed again
    /// (its launch was lost when the master that made it stopped leading), and one that
    /// ran is lost. Without it (one master, whose restart forgets its agents) an unknown
    /// job waits for its agent to come back.
    pub fn trust_unknown(&self) {
        self.unknown_is_lost
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn unknown_is_lost(&self) -> bool {
        self.unknown_is_lost
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A jobs framework serving `roles` that keeps its jobs in `store`: what the store
    /// holds is taken back (pending jobs queue again in their order, running ones wait
    /// for their updates), and from now on every change is written to it in the
    /// background, in batches. Returns the framework id each role had, to re-subscribe
    /// under. Needs a tokio runtime.
    pub fn open(
        roles: &[String],
        store: JobsBackend,
    ) -> Result<(Jobs, BTreeMap<String, FrameworkId>), StoreError> {
        let saved = store.load()?;
        let jobs = Jobs::new(roles);
        let framework_ids = jobs.take_back(saved);
        tokio::spawn(write_behind(jobs.clone(), store));
        Ok((jobs, framework_ids))
    }

    /// Replaces what this framework holds with `saved` (a master that begins to lead
    /// takes back the jobs the registry holds): changes not yet written are dropped, and
    /// whoever waits for them is told ([`Jobs::durable`]). Returns the framework id each
    /// role had.
    pub fn take_back(&self, saved: Saved) -> BTreeMap<String, FrameworkId> {
        let mut g = self.lock();
        let generation = g.unsaved.as_ref().map_or(0, |u| u.generation);
        let roles: Vec<String> = g.queues.keys().cloned().collect();
        let subscribers = std::mem::take(&mut g.subscribers);
        *g = Inner::default();
        g.subscribers = subscribers;
        for r in roles {
            g.queues.insert(r, RoleQueue::default());
        }
        g.next = saved.next;
        for (seq, j) in saved.jobs {
            let id = j.task_id.clone();
            match j.state {
                None => match g.queues.get_mut(&j.role) {
                    Some(q) => q.pending.push_back(id.clone()),
                    // A role no longer served: it waits, saying so.
                    None => {
                        tracing::warn!(job = %id, role = %j.role, "a pending job of a role no longer served")
                    }
                },
                Some(s) if s.is_terminal() => g.ended.push_back(id.clone()),
                Some(_) => {}
            }
            g.seq_of.insert(id.clone(), seq);
            g.jobs.insert(id, Arc::new(j));
        }
        // What the store holds is all there is: nothing is waited for. (A new epoch,
        // under the lock: a batch taken before it is of the epoch before.)
        g.unsaved = Some(Unsaved {
            generation,
            ..Unsaved::default()
        });
        self.durable.send_modify(|d| {
            d.written_before = d.generation;
            d.epoch += 1;
            d.generation = generation;
        });
        drop(g);
        self.changed();
        saved.framework_ids
    }

    /// Waits until every change made before the call is in the store (at once without
    /// one). While the store cannot be written this waits; callers bound it. Fails when
    /// the changes were dropped instead ([`Jobs::take_back`]).
    pub async fn durable(&self) -> Result<(), ChangesDropped> {
        let (want, epoch) = {
            let g = self.lock();
            match &g.unsaved {
                Some(u) => (u.generation, self.durable.borrow().epoch),
                None => return Ok(()),
            }
        };
        let mut durable = self.durable.subscribe();
        let reached = durable
            .wait_for(|d| d.epoch != epoch || d.generation >= want)
            .await
            .map(|d| *d);
        match reached {
            Err(_) => {
                tracing::debug!("jobs framework gone before its changes were written");
                Ok(())
            }
            Ok(d) if d.epoch == epoch => Ok(()),
            // Written before what the framework held was replaced.
            Ok(d) if d.epoch == epoch + 1 && d.written_before >= want => Ok(()),
            Ok(_) => Err(ChangesDropped),
        }
    }

    /// The roles served, in order.
    pub fn roles(&self) -> Vec<String> {
        self.lock().queues.keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("jobs lock")
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Queues a job; returns its task id, or why it is refused.
    pub fn submit(&self, req: JobRequest) -> Result<TaskId, String> {
        if req.argv.first().is_none_or(|a| a.trim().is_empty()) {
            return Err("empty command".into());
        }
        if req.resources.cpus_milli == 0 && req.resources.mem_mb == 0 {
            return Err("a job needs some cpus or mem".into());
        }
        let role = req.role.clone().unwrap_or_else(|| ANY_ROLE.to_string());
        let mut g = self.lock();
        if !g.queues.contains_key(&role) {
            let served: Vec<&str> = g.queues.keys().map(String::as_str).collect();
            return Err(format!(
                "role {role:?} is not served by the built-in jobs framework (it serves {}; \
                 roles come from `master.job_roles`, `master.weights` and `master.quotas`)",
                served.join(", ")
            ));
        }
        g.next += 1;
        let seq = g.next;
        let id = TaskId::new(format!("job-{}-{}", unix_ms(), seq));
        g.seq_of.insert(id.clone(), seq);
        if let Some(u) = &mut g.unsaved {
            u.next = true;
        }
        let name = req.name.clone().unwrap_or_else(|| default_name(&req.argv));
        g.jobs.insert(
            id.clone(),
            Arc::new(JobStatus {
                task_id: id.clone(),
                name,
                argv: req.argv,
                resources: req.resources,
                role: role.clone(),
                state: None,
                why_not_placed: Some("waiting for offers".into()),
                agent_id: None,
                history: Vec::new(),
                kill_requested: false,
                owner: req.owner,
                user: req.user,
            }),
        );
        g.touch(&id);
        let q = g.queues.get_mut(&role).expect("role checked above");
        let was_idle = q.pending.is_empty();
        q.pending.push_back(id.clone());
        if q.suppressed || was_idle {
            // New work: offers again, and without the filters of offers declined while
            // there was nothing to run.
            q.suppressed = false;
            if let Some(h) = &q.handle {
                h.revive();
            }
        }
        drop(g);
        self.changed();
        Ok(id)
    }

    /// One job.
    pub fn get(&self, task_id: &str) -> Option<JobStatus> {
        self.lock().jobs.get(task_id).map(|j| (**j).clone())
    }

    /// All jobs, by id.
    pub fn list(&self) -> Vec<JobStatus> {
        self.lock().jobs.values().map(|j| (**j).clone()).collect()
    }

    /// Every job as it is now, to read at leisure: the map shares its structure with
    /// the live one, so taking it copies nothing and holds the lock only for a moment.
    pub fn snapshot(&self) -> JobMap {
        self.lock().jobs.clone()
    }

    /// Jobs waiting for placement, over all roles.
    pub fn pending_count(&self) -> usize {
        self.lock().queues.values().map(|q| q.pending.len()).sum()
    }

    /// Kills a job (or drops it from the queue). The kill is the job's desired state
    /// from now on: sent now if the framework is connected, and again whenever the job
    /// is heard of still running.
    pub fn kill(&self, task_id: &str) -> Result<(), KillError> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(task_id).map(Arc::make_mut) else {
            return Err(KillError::NoSuchJob(task_id.into()));
        };
        let role = j.role.clone();
        match j.state {
            None => {
                j.state = Some(TaskState::Killed);
                j.why_not_placed = None;
                j.record(JobEvent {
                    state: TaskState::Killed,
                    reason: None,
                    message: "killed before placement".into(),
                    exit_code: None,
                    unix_ms: unix_ms(),
                });
                if let Some(q) = g.queues.get_mut(&role) {
                    q.pending.retain(|p| p != task_id);
                }
                g.touch(task_id);
                g.ended(task_id);
            }
            Some(state) if state.is_terminal() => {
                return Err(KillError::Ended {
                    task_id: task_id.into(),
                    state,
                })
            }
            Some(_) => {
                j.kill_requested = true;
                g.touch(task_id);
                match g.queues.get(&role).and_then(|q| q.handle.as_ref()) {
                    Some(h) => h.kill(task_id),
                    None => tracing::info!(
                        task = task_id,
                        "kill kept until the jobs framework is connected"
                    ),
                }
            }
        }
        drop(g);
        self.changed();
        Ok(())
    }

    /// Every state change of every job from now on, as `(task_id, state)`, in the order
    /// the framework saw them.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<(TaskId, TaskState)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// A receiver that changes whenever any job changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The scheduler of role `*` to start with
    /// [`crate::scheduler::SchedulerDriver::start`].
    pub fn scheduler(&self) -> Box<dyn Scheduler> {
        self.scheduler_for(ANY_ROLE)
    }

    /// The scheduler placing the jobs of `role` (a framework registered in that role).
    pub fn scheduler_for(&self, role: &str) -> Box<dyn Scheduler> {
        assert!(
            self.lock().queues.contains_key(role),
            "role {role:?} not served"
        );
        Box::new(JobsScheduler {
            jobs: self.clone(),
            role: role.to_string(),
        })
    }
}

struct JobsScheduler {
    jobs: Jobs,
    role: String,
}

pub(crate) fn short_of(want: &Resources, have: &Resources) -> Option<String> {
    if have.cpus_milli < want.cpus_milli {
        return Some(format!(
            "cpus (needs {}, largest offer {})",
            want.cpus(),
            have.cpus()
        ));
    }
    if have.mem_mb < want.mem_mb {
        return Some(format!(
            "mem (needs {} MB, largest offer {} MB)",
            want.mem_mb, have.mem_mb
        ));
    }
    if have.disk_mb < want.disk_mb {
        return Some(format!(
            "disk (needs {} MB, largest offer {} MB)",
            want.disk_mb, have.disk_mb
        ));
    }
    if !have.ports.contains(&want.ports) {
        return Some(format!("ports (needs {})", want.ports));
    }
    None
}

impl Scheduler for JobsScheduler {
    fn registered(&mut self, driver: &DriverHandle, framework_id: &str) {
        let mut g = self.jobs.lock();
        if let Some(u) = &mut g.unsaved {
            u.framework_ids
                .insert(self.role.clone(), framework_id.into());
            u.generation += 1;
        }
        let q = g.queues.get_mut(&self.role).expect("served role");
        q.handle = Some(driver.clone());
        if q.suppressed || !q.pending.is_empty() {
            q.suppressed = false;
            driver.revive();
        }
        // Kills asked for while disconnected go out now; what the master knows of the
        // rest comes back through reconciliation.
        let mut placed = Vec::new();
        for j in g.jobs.values() {
            let live = j.state.is_some_and(|s| !s.is_terminal());
            if j.role != self.role || !live {
                continue;
            }
            if j.kill_requested {
                driver.kill(&j.task_id);
            }
            placed.push(j.task_id.clone());
        }
        if !self.jobs.unknown_is_lost() {
            driver.reconcile(Vec::new());
        } else if !placed.is_empty() {
            driver.reconcile(placed);
        }
        drop(g);
        self.jobs.changed();
    }

    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let mut g = self.jobs.lock();
        g.offers_seen += offers.len() as u64;
        let mut largest = Resources::default();
        // Jobs are spread: each goes to the offer with the most cpus left (then mem), so a
        // burst of jobs lands on every agent, not on the first offer that fits them all.
        struct Slot {
            offer: Offer,
            role: String,
            left: RoleResources,
            launch: Vec<TaskSpec>,
            /// About how many bytes the launch takes.
            bytes: usize,
        }
        let mut slots: Vec<Slot> = offers
            .into_iter()
            .map(|offer| {
                let total = offer.resources.total();
                if total.mem_mb > largest.mem_mb || total.cpus_milli > largest.cpus_milli {
                    largest = total;
                }
                let role = offer
                    .resources
                    .0
                    .keys()
                    .find(|k| *k != "*")
                    .cloned()
                    .unwrap_or_else(|| "*".into());
                Slot {
                    left: offer.resources.clone(),
                    offer,
                    role,
                    launch: Vec::new(),
                    bytes: 0,
                }
            })
            .collect();
        let mut still = VecDeque::new();
        let mut queue =
            std::mem::take(&mut g.queues.get_mut(&self.role).expect("served role").pending);
        let budget = driver.launch_budget_bytes();
        while let Some(id) = queue.pop_front() {
            let Some(j) = g.jobs.get(&id) else { continue };
            let spec = TaskSpec {
                task_id: id.clone(),
                name: j.name.clone(),
                argv: j.argv.clone(),
                resources: j.resources.clone(),
                user: j.user.clone(),
                actor: None,
            };
            let bytes = spec.approx_bytes();
            let best = slots
                .iter_mut()
                // A launch stays well within one message; the rest waits for more offers.
                .filter(|s| s.launch.is_empty() || s.bytes + bytes <= budget)
                .filter_map(|s| {
                    let t = s.left.take(&s.role, &j.resources)?;
                    let free = s.left.total();
                    Some(((free.cpus_milli, free.mem_mb), s, t))
                })
                // The first of equals wins, so placement follows the offer order.
                .fold(None, |acc: Option<(_, &mut Slot, _)>, x| match acc {
                    Some(a) if a.0 >= x.0 => Some(a),
                    _ => Some(x),
                });
            match best {
                Some((_, slot, taken)) => {
                    slot.left = slot.left.checked_sub(&taken).expect("taken from the offer");
                    slot.bytes += bytes;
                    slot.launch.push(spec);
                }
                None => still.push_back(id),
            }
        }
        let mut launches = Vec::new();
        for slot in slots {
            for t in &slot.launch {
                if let Some(j) = g.jobs.get_mut(&t.task_id).map(Arc::make_mut) {
                    j.state = Some(TaskState::Staging);
                    j.why_not_placed = None;
                    j.agent_id = Some(slot.offer.agent_id.clone());
                }
                g.touch(&t.task_id);
            }
            if slot.launch.is_empty() {
                driver.decline(vec![slot.offer.id], Duration::from_secs(1));
                continue;
            }
            launches.push((slot.offer.id, slot.launch));
        }
        for id in &still {
            if let Some(j) = g.jobs.get_mut(id).map(Arc::make_mut) {
                j.why_not_placed = Some(match short_of(&j.resources, &largest) {
                    Some(what) => format!("no agent offers enough {what}"),
                    None => "offers were used by earlier jobs; waiting for more".into(),
                });
            }
        }
        let q = g.queues.get_mut(&self.role).expect("served role");
        q.pending = still;
        if q.pending.is_empty() && !q.suppressed {
            q.suppressed = true;
            driver.suppress();
        }
        let stored = g.unsaved.is_some();
        drop(g);
        self.jobs.changed();
        if launches.is_empty() {
            return;
        }
        if !stored {
            send_launches(&self.jobs, driver, &self.role, launches);
            return;
        }
        // Launched only once the store says where each job went: a master that takes
        // over after a crash finds them placed, and never launches one a second time.
        let (jobs, driver, role) = (self.jobs.clone(), driver.clone(), self.role.clone());
        tokio::spawn(async move {
            match jobs.durable().await {
                Ok(()) => send_launches(&jobs, &driver, &role, launches),
                Err(e) => tracing::info!("jobs not launched: {e}"),
            }
        });
    }

    fn update(&mut self, driver: &DriverHandle, u: &StatusUpdate) {
        if u.state == TaskState::Unknown && self.jobs.unknown_is_lost() {
            self.unknown(driver, u);
            return;
        }
        let mut g = self.jobs.lock();
        if let Some(j) = g.jobs.get_mut(&u.task_id).map(Arc::make_mut) {
            let was = j.state;
            if was.is_some_and(|s| s.is_terminal() && s != u.state) {
                // A late or reconciled update of an ended job does not revive it.
                drop(g);
                return;
            }
            let dup = j
                .history
                .last()
                .is_some_and(|e| e.state == u.state && e.message == u.message);
            j.state = Some(u.state);
            if !u.agent_id.is_empty() {
                j.agent_id = Some(u.agent_id.clone());
            }
            let runs = matches!(
                u.state,
                TaskState::Staging | TaskState::Starting | TaskState::Running
            );
            if j.kill_requested && runs {
                // Still running although a kill was asked for (it was lost, or the
                // master restarted since): ask again.
                driver.kill(&u.task_id);
            }
            if !dup {
                j.record(JobEvent {
                    state: u.state,
                    reason: u.reason,
                    message: u.message.clone(),
                    exit_code: u.exit_code,
                    unix_ms: u.unix_ms,
                });
                g.subscribers
                    .retain(|s| s.send((u.task_id.clone(), u.state)).is_ok());
            }
            g.touch(&u.task_id);
            if u.state.is_terminal() && !was.is_some_and(TaskState::is_terminal) {
                g.ended(&u.task_id);
            }
        }
        drop(g);
        self.jobs.changed();
    }
}

impl JobsScheduler {
    /// No agent has the job (see [`Jobs::trust_unknown`]): one whose launch was lost is
    /// placed again; one that started is lost.
    fn unknown(&mut self, driver: &DriverHandle, u: &StatusUpdate) {
        let mut g = self.jobs.lock();
        let Some(j) = g.jobs.get_mut(&u.task_id).map(Arc::make_mut) else {
            return;
        };
        let Some(was) = j.state.filter(|s| !s.is_terminal()) else {
            return;
        };
        let again = was == TaskState::Staging && !j.kill_requested;
        let (state, message) = if again {
            (
                None,
                "its launch was lost with the master that made it; placed again",
            )
        } else {
            (Some(TaskState::Lost), "no agent has it any more")
        };
        tracing::warn!(job = %u.task_id, "unknown to the master: {message}");
        j.state = state;
        j.agent_id = None;
        j.record(JobEvent {
            state: state.unwrap_or(TaskState::Unknown),
            reason: u.reason,
            message: message.into(),
            exit_code: None,
            unix_ms: u.unix_ms,
        });
        g.touch(&u.task_id);
        if again {
            let q = g.queues.get_mut(&self.role).expect("served role");
            q.pending.push_back(u.task_id.clone());
            if q.suppressed {
                q.suppressed = false;
                driver.revive();
            }
        } else {
            g.subscribers
                .retain(|s| s.send((u.task_id.clone(), TaskState::Lost)).is_ok());
            g.ended(&u.task_id);
        }
        drop(g);
        self.jobs.changed();
    }
}

/// Sends each offer's launches; jobs whose launch could not be sent wait for the next
/// offers again, saying why.
fn send_launches(
    jobs: &Jobs,
    driver: &DriverHandle,
    role: &str,
    launches: Vec<(crate::ids::OfferId, Vec<TaskSpec>)>,
) {
    for (offer, launch) in launches {
        let ids: Vec<TaskId> = launch.iter().map(|t| t.task_id.clone()).collect();
        let Err(e) = driver.launch(vec![offer], launch, Duration::from_millis(200)) else {
            continue;
        };
        let mut g = jobs.lock();
        for id in ids {
            if let Some(j) = g.jobs.get_mut(&id).map(Arc::make_mut) {
                j.state = None;
                j.agent_id = None;
                j.why_not_placed = Some(format!("the launch could not be sent: {e}"));
            }
            g.touch(&id);
            let q = g.queues.get_mut(role).expect("served role");
            q.pending.push_back(id);
        }
        let q = g.queues.get_mut(role).expect("served role");
        if q.suppressed {
            q.suppressed = false;
            driver.revive();
        }
        drop(g);
        jobs.changed();
    }
}

/// Writes the jobs' changes to `store` in batches, as they come, until the framework is
/// gone. A batch that cannot be written (a full disk) is kept and tried again with
/// backoff, said at error level; meanwhile submissions wait for it.
async fn write_behind(jobs: Jobs, store: JobsBackend) {
    let mut changes = jobs.changes();
    let mut failures: u32 = 0;
    let mut epochs = jobs.durable.subscribe();
    loop {
        // The batch and the epoch it belongs to, read together under the lock.
        let (taken, epoch) = {
            let mut g = jobs.lock();
            (g.take_batch(), jobs.durable.borrow().epoch)
        };
        let Some((batch, generation)) = taken else {
            return;
        };
        if batch.is_empty() {
            reached(&jobs, epoch, generation);
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        match store.write(batch).await {
            (_, Ok(())) => {
                if failures > 0 {
                    tracing::info!(failed = failures, "jobs store written again");
                    failures = 0;
                }
                reached(&jobs, epoch, generation);
            }
            (batch, Err(e)) => {
                {
                    let mut g = jobs.lock();
                    if jobs.durable.borrow().epoch == epoch {
                        g.restore_batch(batch);
                    }
                }
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::error!(
                        failed = failures,
                        "{e}; submissions wait until it can be written"
                    );
                }
                let wait = WRITE_RETRY_MIN_MS
                    .saturating_mul(1 << failures.min(6))
                    .min(WRITE_RETRY_MAX_MS);
                // A new epoch (this master leads again) writes at once.
                let new_epoch = epochs.wait_for(|d| d.epoch != epoch);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = new_epoch => failures = 0,
                }
            }
        }
    }
}

/// The store holds the changes of `epoch` up to `generation` (nothing, if the epoch is
/// over: its changes were dropped).
fn reached(jobs: &Jobs, epoch: u64, generation: u64) {
    jobs.durable.send_if_modified(|d| {
        let newer = d.epoch == epoch && d.generation < generation;
        if newer {
            d.generation = generation;
        }
        newer
    });
}

/// First wait before writing the jobs store again after a write failed.
const WRITE_RETRY_MIN_MS: u64 = 100;
/// Longest wait between attempts to write the jobs store.
const WRITE_RETRY_MAX_MS: u64 = 5_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(i: usize) -> JobRequest {
        JobRequest {
            name: Some(format!("j{i}")),
            argv: vec!["true".into()],
            resources: Resources::new(0.1, 32),
            role: None,
            owner: None,
            user: None,
        }
    }

    #[tokio::test]
    async fn a_submission_dropped_by_a_new_leaders_take_back_is_not_answered_as_written() {
        let jobs = Jobs::new(&[ANY_ROLE.to_string()]);
        jobs.take_back(Saved::default());
        // No writer runs: the submission stays unwritten until the take-back drops it.
        jobs.submit(job(1)).unwrap();
        let waiter = tokio::spawn({
            let jobs = jobs.clone();
            async move { jobs.durable().await }
        });
        tokio::task::yield_now().await;
        jobs.take_back(Saved::default());
        assert_eq!(waiter.await.unwrap(), Err(ChangesDropped));
        assert!(jobs.list().is_empty(), "the store did not have it");
    }

    #[test]
    fn the_oldest_ended_jobs_are_forgotten_beyond_the_limit() {
        let jobs = Jobs::default();
        let ids: Vec<TaskId> = (0..=MAX_ENDED_JOBS)
            .map(|i| jobs.submit(job(i)).unwrap())
            .collect();
        let live = jobs.submit(job(usize::MAX)).unwrap();
        for id in &ids {
            jobs.kill(id).unwrap();
        }
        let listed: std::collections::BTreeSet<TaskId> =
            jobs.list().into_iter().map(|j| j.task_id).collect();
        assert_eq!(
            listed.len(),
            MAX_ENDED_JOBS + 1,
            "the limit, and the live one"
        );
        assert!(!listed.contains(&ids[0]), "the oldest ended job is gone");
        assert!(listed.contains(&ids[1]) && listed.contains(&live));
    }

    #[test]
    fn a_job_without_a_name_is_named_by_the_start_of_its_command() {
        assert_eq!(default_name(&["echo".into(), "hi".into()]), "echo hi");
        let long = default_name(&["echo".into(), "é".repeat(100)]);
        assert!(long.len() <= DEFAULT_NAME_BYTES + '…'.len_utf8(), "{long}");
        assert!(long.starts_with("echo éé") && long.ends_with('…'), "{long}");
    }

    #[test]
    fn a_jobs_history_keeps_its_first_and_latest_events() {
        let jobs = Jobs::default();
        let id = jobs.submit(job(0)).unwrap();
        let mut g = jobs.lock();
        let j = g.jobs.get_mut(&id).map(Arc::make_mut).unwrap();
        for i in 0..100 {
            j.record(JobEvent {
                state: TaskState::Running,
                reason: None,
                message: format!("event {i}"),
                exit_code: None,
                unix_ms: i,
            });
        }
        assert_eq!(j.history.len(), MAX_JOB_HISTORY_EVENTS);
        assert_eq!(j.history[0].message, "event 0");
        assert_eq!(j.history.last().unwrap().message, "event 99");
    }
}
