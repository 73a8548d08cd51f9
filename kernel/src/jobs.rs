//! The built-in jobs framework: runs one-off commands.
//!
//! Jobs queue in submission order and are placed first-fit on offers. A job that cannot be
//! placed records why (which resource no offer had enough of, how much the largest offer
//! had, or that no offer arrived at all), so `plexus ps` and the API can say it. When the
//! queue is empty the framework suppresses its offers; a new job revives them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::protocol::{Offer, TaskSpec};
use crate::resources::{Resources, RoleResources};
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
}

/// One state change of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The new state.
    pub state: TaskState,
    /// Reason.
    pub reason: Option<String>,
    /// Message.
    pub message: String,
    /// Wall-clock milliseconds.
    pub unix_ms: u64,
}

/// A job's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Its task id.
    pub task_id: String,
    /// Name.
    pub name: String,
    /// Command.
    pub argv: Vec<String>,
    /// What it needs.
    pub resources: Resources,
    /// `None` while it waits for placement.
    pub state: Option<TaskState>,
    /// Why it is not placed yet.
    pub why_not_placed: Option<String>,
    /// Where it runs.
    pub agent_id: Option<String>,
    /// State changes, oldest first.
    pub history: Vec<JobEvent>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    pending: VecDeque<String>,
    jobs: BTreeMap<String, JobStatus>,
    handle: Option<DriverHandle>,
    suppressed: bool,
    offers_seen: u64,
    subscribers: Vec<mpsc::UnboundedSender<(String, TaskState)>>,
}

/// The jobs framework's shared state: submit, list and kill jobs from anywhere.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    changes: watch::Sender<u64>,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            inner: Arc::default(),
            changes: watch::channel(0).0,
        }
    }
}

fn unix_ms() -> u64 {
    plexus_net::clock::unix_ms()
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("jobs lock")
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// Queues a job; returns its task id, or why it is refused.
    pub fn submit(&self, req: JobRequest) -> Result<String, String> {
        if req.argv.first().is_none_or(|a| a.trim().is_empty()) {
            return Err("empty command".into());
        }
        if req.resources.cpus_milli == 0 && req.resources.mem_mb == 0 {
            return Err("a job needs some cpus or mem".into());
        }
        let mut g = self.lock();
        g.next += 1;
        let id = format!("job-{}-{}", unix_ms(), g.next);
        let name = req.name.clone().unwrap_or_else(|| req.argv.join(" "));
        g.jobs.insert(
            id.clone(),
            JobStatus {
                task_id: id.clone(),
                name,
                argv: req.argv,
                resources: req.resources,
                state: None,
                why_not_placed: Some("waiting for offers".into()),
                agent_id: None,
                history: Vec::new(),
            },
        );
        let was_idle = g.pending.is_empty();
        g.pending.push_back(id.clone());
        if g.suppressed || was_idle {
            // New work: offers again, and without the filters of offers declined while
            // there was nothing to run.
            g.suppressed = false;
            if let Some(h) = &g.handle {
                h.revive();
            }
        }
        drop(g);
        self.changed();
        Ok(id)
    }

    /// One job.
    pub fn get(&self, task_id: &str) -> Option<JobStatus> {
        self.lock().jobs.get(task_id).cloned()
    }

    /// All jobs, by id.
    pub fn list(&self) -> Vec<JobStatus> {
        self.lock().jobs.values().cloned().collect()
    }

    /// Kills a job (or drops it from the queue).
    pub fn kill(&self, task_id: &str) -> Result<(), String> {
        let mut g = self.lock();
        let Some(j) = g.jobs.get_mut(task_id) else {
            return Err(format!("no job {task_id:?}"));
        };
        match j.state {
            None => {
                j.state = Some(TaskState::Killed);
                j.why_not_placed = None;
                j.history.push(JobEvent {
                    state: TaskState::Killed,
                    reason: None,
                    message: "killed before placement".into(),
                    unix_ms: unix_ms(),
                });
                g.pending.retain(|p| p != task_id);
            }
            Some(s) if s.is_terminal() => {}
            Some(_) => match &g.handle {
                Some(h) => h.kill(task_id),
                None => return Err("the jobs framework is not connected".into()),
            },
        }
        drop(g);
        self.changed();
        Ok(())
    }

    /// Every state change of every job from now on, as `(task_id, state)`, in the order
    /// the framework saw them.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<(String, TaskState)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// A receiver that changes whenever any job changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The scheduler to start with [`crate::scheduler::SchedulerDriver::start`].
    pub fn scheduler(&self) -> Box<dyn Scheduler> {
        Box::new(JobsScheduler { jobs: self.clone() })
    }
}

struct JobsScheduler {
    jobs: Jobs,
}

fn short_of(want: &Resources, have: &Resources) -> Option<String> {
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
    fn registered(&mut self, driver: &DriverHandle, _framework_id: &str) {
        let mut g = self.jobs.lock();
        g.handle = Some(driver.clone());
        if g.suppressed || !g.pending.is_empty() {
            g.suppressed = false;
            driver.revive();
        }
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
                }
            })
            .collect();
        let mut still = VecDeque::new();
        while let Some(id) = g.pending.pop_front() {
            let Some(j) = g.jobs.get(&id) else { continue };
            let best = slots
                .iter_mut()
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
                    slot.launch.push(TaskSpec {
                        task_id: id.clone(),
                        name: j.name.clone(),
                        argv: j.argv.clone(),
                        resources: j.resources.clone(),
                    });
                }
                None => still.push_back(id),
            }
        }
        g.pending = still;
        for slot in slots {
            for t in &slot.launch {
                if let Some(j) = g.jobs.get_mut(&t.task_id) {
                    j.state = Some(TaskState::Staging);
                    j.why_not_placed = None;
                    j.agent_id = Some(slot.offer.agent_id.clone());
                }
            }
            if slot.launch.is_empty() {
                driver.decline(vec![slot.offer.id], Duration::from_secs(1));
            } else {
                driver.launch(vec![slot.offer.id], slot.launch, Duration::from_millis(200));
            }
        }
        let pending: Vec<String> = g.pending.iter().cloned().collect();
        for id in pending {
            if let Some(j) = g.jobs.get_mut(&id) {
                j.why_not_placed = Some(match short_of(&j.resources, &largest) {
                    Some(what) => format!("no agent offers enough {what}"),
                    None => "offers were used by earlier jobs; waiting for more".into(),
                });
            }
        }
        if g.pending.is_empty() && !g.suppressed {
            g.suppressed = true;
            driver.suppress();
        }
        drop(g);
        self.jobs.changed();
    }

    fn update(&mut self, _driver: &DriverHandle, u: &StatusUpdate) {
        let mut g = self.jobs.lock();
        if let Some(j) = g.jobs.get_mut(&u.task_id) {
            let dup = j
                .history
                .last()
                .is_some_and(|e| e.state == u.state && e.message == u.message);
            j.state = Some(u.state);
            if !u.agent_id.is_empty() {
                j.agent_id = Some(u.agent_id.clone());
            }
            if !dup {
                j.history.push(JobEvent {
                    state: u.state,
                    reason: u.reason.clone(),
                    message: u.message.clone(),
                    unix_ms: u.unix_ms,
                });
                g.subscribers
                    .retain(|s| s.send((u.task_id.clone(), u.state)).is_ok());
            }
        }
        drop(g);
        self.jobs.changed();
    }
}
