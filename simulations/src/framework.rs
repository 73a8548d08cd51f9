//! A simulated framework: keeps a number of tasks of seeded sizes running, records every
//! status update it receives and checks that each task's updates arrive in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_kernel::protocol::{AgentId, FrameworkId, Offer, OfferId, TaskId, TaskSpec};
use plexus_kernel::resources::Resources;
use plexus_kernel::scheduler::{DriverHandle, Scheduler};
use plexus_kernel::status::StatusUpdate;
use plexus_kernel::task::TaskState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::Recorder;

/// What one framework knows of its tasks.
#[derive(Default)]
pub struct FrameworkLog {
    /// Its framework id, once subscribed.
    pub framework_id: Option<FrameworkId>,
    /// Every task it launched, with the simulated time (ms) of the launch.
    pub launched: BTreeMap<TaskId, u64>,
    /// The last state it heard of each task.
    pub last: BTreeMap<TaskId, TaskState>,
    /// Highest agent update uuid seen per task, whether that update was terminal, and
    /// the state it reported.
    seen: BTreeMap<TaskId, (u64, bool, TaskState)>,
    /// Tasks not known to be terminal.
    pub live: BTreeSet<TaskId>,
    /// Tasks whose agent reported their end (not the master), and that agent.
    pub ended_on: BTreeMap<TaskId, AgentId>,
    /// Simulated time (ms) of the last offer received.
    pub last_offer_ms: Option<u64>,
    /// The driver, once subscribed.
    pub handle: Option<DriverHandle>,
    /// Offers are suppressed (it has all the tasks it wants).
    pub suppressed: bool,
    /// Launches nothing more (the run is being checked).
    pub frozen: bool,
    /// Tasks it asked to kill.
    pub kill_requested: BTreeSet<TaskId>,
}

/// Chance that a framework kills a task when it hears it is running.
const KILL_CHANCE: f64 = 0.05;
/// Chance that a framework kills a task when it hears its agent is away.
const KILL_AWAY_CHANCE: f64 = 0.3;

/// Shared handle on a framework's log.
pub type SharedLog = Arc<Mutex<FrameworkLog>>;

/// The scheduler of a simulated framework.
pub struct SimScheduler {
    name: String,
    rng: ChaCha8Rng,
    target: usize,
    /// Padding in every task's command.
    argv_bytes: usize,
    next: u64,
    log: SharedLog,
    rec: Recorder,
}

impl SimScheduler {
    /// A scheduler named `name` keeping `target` tasks running, each with `argv_bytes`
    /// of padding in its command, with sizes drawn from `seed`.
    pub fn new(
        name: &str,
        seed: u64,
        (target, argv_bytes): (usize, usize),
        log: SharedLog,
        rec: Recorder,
    ) -> Self {
        SimScheduler {
            name: name.to_string(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            target,
            argv_bytes,
            next: 0,
            log,
            rec,
        }
    }
}

impl Scheduler for SimScheduler {
    fn registered(&mut self, driver: &DriverHandle, framework_id: &str) {
        let mut g = self.log.lock().expect("log lock");
        g.framework_id = Some(framework_id.into());
        g.handle = Some(driver.clone());
        // A subscription revives the framework, and a suppression it sent before may
        // arrive after it: say again what it wants.
        if g.suppressed && g.live.len() >= self.target {
            driver.suppress();
        } else {
            g.suppressed = false;
            driver.revive();
        }
        // A master that restarted forgot the kills asked of it: ask again.
        for t in g.kill_requested.intersection(&g.live) {
            driver.kill(t);
        }
        // After a (re-)subscription, learn the state of everything not known to be over,
        // and of tasks to kill that a master called unknown: `TASK_UNKNOWN` is no proof
        // that a task is dead (its agent may be back later), so a kill is asked again
        // when one turns out to run.
        let mut ask: Vec<TaskId> = g.live.iter().cloned().collect();
        ask.extend(
            g.kill_requested
                .iter()
                .filter(|t| g.last.get(*t) == Some(&TaskState::Unknown))
                .cloned(),
        );
        if !ask.is_empty() {
            driver.reconcile(ask);
        }
    }

    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let mut g = self.log.lock().expect("log lock");
        g.last_offer_ms = Some(self.rec.now_ms());
        if g.frozen {
            let ids: Vec<OfferId> = offers.into_iter().map(|o| o.id).collect();
            driver.decline(ids, Duration::from_secs(1));
            return;
        }
        let budget = driver.launch_budget_bytes();
        for offer in offers {
            let mut left = offer.resources.total();
            let mut tasks: Vec<TaskSpec> = Vec::new();
            let mut bytes = 0;
            // A launch stays within one message; more tasks go on later offers.
            while g.live.len() + tasks.len() < self.target && bytes < budget / 2 {
                let want = Resources::new(
                    (self.rng.random_range(1..=10) as f64) / 10.0,
                    self.rng.random_range(1..=8) * 128,
                );
                let Some(rest) = left.checked_sub(&want) else {
                    break;
                };
                left = rest;
                self.next += 1;
                let name = format!("{}-t{}", self.name, self.next);
                tasks.push(TaskSpec {
                    task_id: TaskId::from(&name),
                    name,
                    argv: if self.argv_bytes == 0 {
                        vec!["simulated".into()]
                    } else {
                        vec!["simulated".into(), "x".repeat(self.argv_bytes)]
                    },
                    resources: want,
                    user: None,
                    actor: None,
                });
                bytes += tasks.last().map_or(0, TaskSpec::approx_bytes);
            }
            let refuse = Duration::from_secs(self.rng.random_range(1..=5));
            if tasks.is_empty() {
                driver.decline(vec![offer.id], refuse);
                continue;
            }
            let now = self.rec.now_ms();
            let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
            if let Err(e) = driver.launch(vec![offer.id], tasks, refuse) {
                // Never launched: nothing to expect of them.
                self.rec
                    .note(format_args!("{}: a launch was not sent: {e}", self.name));
                continue;
            }
            for id in ids {
                g.launched.insert(id.clone(), now);
                g.live.insert(id.clone());
                g.last.insert(id, TaskState::Staging);
            }
        }
        if g.live.len() >= self.target && !g.suppressed {
            // Like a well-behaved Mesos framework: no offers while it wants nothing.
            g.suppressed = true;
            driver.suppress();
        }
    }

    fn update(&mut self, driver: &DriverHandle, u: &StatusUpdate) {
        let mut g = self.log.lock().expect("log lock");
        if !g.launched.contains_key(&u.task_id) {
            return;
        }
        if u.uuid != 0 {
            let (max, ended, max_state) = g
                .seen
                .get(&u.task_id)
                .copied()
                .unwrap_or((0, false, u.state));
            if u.uuid == max && u.state != max_state {
                self.rec.violation(
                    "updates-durable",
                    format!(
                        "{}: update {} of task {} said {:?}, and now {:?}: its agent sent an update it then forgot",
                        self.name, u.uuid, u.task_id, max_state, u.state
                    ),
                );
            }
            if u.uuid < max {
                self.rec.violation(
                    "updates-in-order",
                    format!(
                        "{}: update {} ({:?}) of task {} arrived after update {max}",
                        self.name, u.uuid, u.state, u.task_id
                    ),
                );
            } else if u.uuid > max && ended {
                self.rec.violation(
                    "updates-in-order",
                    format!(
                        "{}: task {} got {:?} after its terminal update",
                        self.name, u.task_id, u.state
                    ),
                );
            }
            if u.uuid >= max {
                let ended = ended || u.state.is_terminal();
                g.seen.insert(u.task_id.clone(), (u.uuid, ended, u.state));
            }
        }
        g.last.insert(u.task_id.clone(), u.state);
        if u.uuid != 0 && u.state.is_terminal() {
            g.ended_on.insert(u.task_id.clone(), u.agent_id.clone());
        }
        if u.state.is_terminal() || u.state == TaskState::Unknown {
            g.live.remove(&u.task_id);
        } else {
            g.live.insert(u.task_id.clone());
        }
        // Kills now and then: of running tasks, and of tasks whose agent is away (the
        // kill must still reach the task when the agent is back).
        let chance = match u.state {
            TaskState::Running if u.uuid != 0 => KILL_CHANCE,
            TaskState::Unreachable => KILL_AWAY_CHANCE,
            _ => 0.0,
        };
        // A master that restarted learnt of the task from its agent: it knows nothing of
        // the kill asked of the one before.
        let reconciled = u.reason == Some(plexus_kernel::reason::Reason::Reconciliation);
        let runs = matches!(
            u.state,
            TaskState::Staging | TaskState::Starting | TaskState::Running
        );
        if reconciled && runs && !g.frozen && g.kill_requested.contains(&u.task_id) {
            driver.kill(&u.task_id);
        }
        if chance > 0.0 && !g.frozen && self.rng.random_bool(chance) {
            g.kill_requested.insert(u.task_id.clone());
            driver.kill(&u.task_id);
        }
        if g.suppressed && g.live.len() < self.target {
            g.suppressed = false;
            driver.revive();
        }
    }
}
