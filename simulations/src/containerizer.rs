//! The simulated containerizer: tasks are simulated processes on simulated machines.
//!
//! Every process's fate (how long it runs, how it exits, whether it outgrows its memory
//! limit) is drawn from the simulation's seed when it starts. Processes outlive their
//! agent (like real ones) and die with their machine. The shared [`Machines`] table also
//! watches one invariant directly: no task of one launch runs twice at the same time.
//!
//! Commands named `sim` are scripted instead, for tests that need a given behaviour (the
//! containerizer conformance suite): `sim exit N`, `sim forever`, `sim ignore-term`,
//! `sim oom`, `sim over-disk` (past a `disk` it asked for), `sim fork-loop`; `sim missing`
//! is a command that does not exist. As on real agents, a process that crosses a limit
//! is ended at once with the limit recorded (the real shim's `limited …`).
//!
//! A launch whose environment holds executor settings (an actor task) starts a simulated
//! executor: the [`ExecutorHost`] the world installed brings up a node of that name on
//! the machine, which dials its agent and hosts the workload's actor types, and halts
//! when the process ends (a kill, its machine's crash, or an OOM kill drawn from the
//! seed). Executors do not exit on their own otherwise: their actor decides.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_kernel::containerizer::shim::{ExitRecord, Limit};
use plexus_kernel::containerizer::{
    BoxFuture, ContainerError, ContainerInfo, Containerizer, ExitInfo, LaunchSpec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::trace::Recorder;

/// How a simulated process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
    Oom,
    /// Crossed its disk or pids limit.
    Limited(Limit),
    /// Its machine died: nothing recorded.
    Vanished,
}

struct Proc {
    task_id: String,
    machine: String,
    end: watch::Sender<Option<End>>,
    /// It ignores SIGTERM (a kill ends it only after the grace period).
    ignores_term: bool,
}

/// A scripted command's fate: how it ends (`None`: only when killed) and after how long,
/// and whether it ignores SIGTERM.
struct Script {
    end: Option<End>,
    after: Duration,
    ignores_term: bool,
}

/// The script of a `sim ...` command; `Err` for `sim missing` or a script not known.
fn script(argv: &[String]) -> Option<Result<Script, String>> {
    if argv.first().map(String::as_str) != Some("sim") {
        return None;
    }
    let soon = Duration::from_millis(10);
    let words: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let s = |end, ignores_term| {
        Ok(Script {
            end,
            after: soon,
            ignores_term,
        })
    };
    Some(match words.as_slice() {
        ["exit", n] => match n.parse() {
            Ok(c) => s(Some(End::Exit(c)), false),
            Err(_) => Err(format!("bad exit status {n:?}")),
        },
        ["forever"] => s(None, false),
        ["ignore-term"] => s(None, true),
        ["oom"] => s(Some(End::Oom), false),
        ["over-disk"] => s(Some(End::Limited(Limit::Disk)), false),
        ["fork-loop"] => s(Some(End::Limited(Limit::Pids)), false),
        ["missing"] => Err("not found in PATH".into()),
        other => Err(format!("no such script {other:?}")),
    })
}

/// An executor process to bring up (see [`ExecutorHost`]).
pub struct ExecutorStart {
    /// What the agent told it.
    pub settings: plexus_kernel::executor::ExecutorSettings,
    /// Its machine.
    pub machine: String,
    /// Its simulated pid.
    pub pid: u32,
    /// Resolves when its process ends.
    pub ended: BoxFuture<'static, ()>,
}

/// Brings up simulated executors (installed by the world, which has the network).
pub type ExecutorHost = Arc<dyn Fn(ExecutorStart) -> BoxFuture<'static, ()> + Send + Sync>;

struct Inner {
    executor_host: Option<ExecutorHost>,
    rng: ChaCha8Rng,
    next_pid: u32,
    procs: BTreeMap<u32, Proc>,
    /// Pids of each task's processes (kept until destroyed).
    by_task: BTreeMap<String, Vec<u32>>,
    failure_rate: f64,
    rec: Recorder,
    /// Processes no longer end on their own (the run is being checked).
    frozen: bool,
    /// How often each machine crashed: a launch begun before a crash starts nothing.
    crashes: BTreeMap<String, u64>,
}

impl Inner {
    fn running(&self, task_id: &str) -> Vec<(String, u32)> {
        self.by_task
            .get(task_id)
            .into_iter()
            .flatten()
            .filter_map(|pid| self.procs.get(pid).map(|p| (pid, p)))
            .filter(|(_, p)| p.end.borrow().is_none())
            .map(|(pid, p)| (p.machine.clone(), *pid))
            .collect()
    }
}

/// The processes of every simulated machine of one simulation.
#[derive(Clone)]
pub struct Machines {
    inner: Arc<Mutex<Inner>>,
}

impl Machines {
    /// Processes whose fates are drawn from `seed`; `failure_rate` of them crash.
    pub fn new(seed: u64, failure_rate: f64, rec: Recorder) -> Self {
        Machines {
            inner: Arc::new(Mutex::new(Inner {
                executor_host: None,
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_6368_696e_6573),
                next_pid: 1000,
                procs: BTreeMap::new(),
                by_task: BTreeMap::new(),
                failure_rate,
                rec,
                frozen: false,
                crashes: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("machines lock")
    }

    /// The containerizer of `machine`.
    pub fn containerizer(&self, machine: &str) -> SimContainerizer {
        SimContainerizer {
            machine: machine.to_string(),
            machines: self.clone(),
        }
    }

    /// Brings executors up with `host` from now on.
    pub fn host_executors_with(&self, host: ExecutorHost) {
        self.lock().executor_host = Some(host);
    }

    /// The machine died: every process on it is gone, with nothing recorded.
    pub fn crash(&self, machine: &str) {
        let mut g = self.lock();
        *g.crashes.entry(machine.to_string()).or_default() += 1;
        g.rec
            .note(format_args!("machine {machine} lost its processes"));
        for p in g.procs.values().filter(|p| p.machine == machine) {
            p.end.send_if_modified(|e| {
                if e.is_none() {
                    *e = Some(End::Vanished);
                    true
                } else {
                    false
                }
            });
        }
    }

    /// From now on no process ends on its own (crashes and kills still end them), so
    /// that final checks see a cluster at rest rather than one mid-update.
    pub fn freeze(&self) {
        let mut g = self.lock();
        g.frozen = true;
        g.rec
            .note(format_args!("processes frozen for the final checks"));
    }

    /// Live processes of `task_id`, as `(machine, pid)`.
    pub fn running(&self, task_id: &str) -> Vec<(String, u32)> {
        self.lock().running(task_id)
    }

    /// Number of live processes.
    pub fn live(&self) -> usize {
        self.lock()
            .procs
            .values()
            .filter(|p| p.end.borrow().is_none())
            .count()
    }

    fn finish(&self, pid: u32, how: End) {
        let g = self.lock();
        if let Some(p) = g.procs.get(&pid) {
            let ended = p.end.send_if_modified(|e| {
                if e.is_none() {
                    *e = Some(how);
                    true
                } else {
                    false
                }
            });
            if ended {
                g.rec.note(format_args!(
                    "process {pid} of {} on {} ended {how:?}",
                    p.task_id, p.machine
                ));
            }
        }
    }
}

/// One machine's containerizer.
#[derive(Clone)]
pub struct SimContainerizer {
    machine: String,
    machines: Machines,
}

impl Containerizer for SimContainerizer {
    fn isolation(&self) -> String {
        "simulated".into()
    }

    fn launch(
        &self,
        spec: LaunchSpec,
    ) -> BoxFuture<'static, Result<ContainerInfo, ContainerError>> {
        let m = self.machines.clone();
        let machine = self.machine.clone();
        Box::pin(async move {
            if spec.argv.is_empty() || spec.argv[0].is_empty() {
                return Err(ContainerError::Launch {
                    task: spec.task_id,
                    reason: "empty command".into(),
                });
            }
            let scripted = match script(&spec.argv) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(why)) => {
                    return Err(ContainerError::NotFound {
                        task: spec.task_id,
                        command: spec.argv.join(" "),
                        why,
                    })
                }
            };
            let executor = spec
                .env
                .iter()
                .find(|(k, _)| k == plexus_kernel::executor::ENV_SETTINGS)
                .map(|(_, v)| serde_json::from_str::<plexus_kernel::executor::ExecutorSettings>(v));
            let executor = match executor {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    return Err(ContainerError::Launch {
                        task: spec.task_id,
                        reason: format!("executor settings: {e}"),
                    })
                }
            };
            let crashes = |g: &Inner| g.crashes.get(&machine).copied().unwrap_or(0);
            let boot = crashes(&m.lock());
            // Starting a process takes a moment.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let (pid, life, end) = {
                let mut g = m.lock();
                if crashes(&g) != boot {
                    // The machine crashed meanwhile: nothing was started.
                    return Err(ContainerError::Launch {
                        task: spec.task_id,
                        reason: format!("{machine} crashed while starting the task"),
                    });
                }
                let twice = g.running(&spec.task_id);
                if let Some((other, _)) = twice.first() {
                    g.rec.violation(
                        "no-task-twice",
                        format!(
                            "task {} started on {machine} while it still runs on {other}",
                            spec.task_id
                        ),
                    );
                }
                g.next_pid += 1;
                let pid = g.next_pid;
                let (life, end, ignores_term) = match &scripted {
                    Some(sc) => (sc.after, sc.end, sc.ignores_term),
                    // An executor lives until killed, or outgrows its memory.
                    None if executor.is_some() => {
                        let secs = g.rng.random_range(5.0..600.0);
                        let roll: f64 = g.rng.random();
                        let end = (roll < g.failure_rate * 0.2).then_some(End::Oom);
                        (Duration::from_secs_f64(secs), end, false)
                    }
                    None => {
                        let secs = g.rng.random_range(5.0..600.0);
                        let roll: f64 = g.rng.random();
                        let fail = g.failure_rate;
                        let end = if roll < fail * 0.2 {
                            End::Oom
                        } else if roll < fail * 0.25 {
                            End::Limited(Limit::Disk)
                        } else if roll < fail * 0.3 {
                            End::Limited(Limit::Pids)
                        } else if roll < fail * 0.6 {
                            End::Signal(11)
                        } else if roll < fail {
                            End::Exit(1)
                        } else {
                            End::Exit(0)
                        };
                        (Duration::from_secs_f64(secs), Some(end), false)
                    }
                };
                let (tx, _) = watch::channel(None);
                g.by_task.entry(spec.task_id.clone()).or_default().push(pid);
                g.procs.insert(
                    pid,
                    Proc {
                        task_id: spec.task_id.clone(),
                        machine: machine.clone(),
                        end: tx,
                        ignores_term,
                    },
                );
                let ends = end.map_or_else(|| "when killed".into(), |e| format!("{e:?}"));
                g.rec.note(format_args!(
                    "process {pid} of {} on {machine} started, ends {ends} in {:.3} s",
                    spec.task_id,
                    life.as_secs_f64()
                ));
                if let (Some(settings), Some(host)) = (executor, g.executor_host.clone()) {
                    let mut rx = g.procs[&pid].end.subscribe();
                    let ended: BoxFuture<'static, ()> = Box::pin(async move {
                        if rx.wait_for(|e| e.is_some()).await.is_err() {
                            tracing::debug!("the process table is gone");
                        }
                    });
                    tokio::spawn(host(ExecutorStart {
                        settings,
                        machine: machine.clone(),
                        pid,
                        ended,
                    }));
                }
                (pid, life, end)
            };
            if let Some(end) = end {
                let m2 = m.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(life).await;
                    if !m2.lock().frozen {
                        m2.finish(pid, end);
                    }
                });
            }
            Ok(ContainerInfo {
                task_id: spec.task_id.clone(),
                sandbox: PathBuf::from(format!("/sim/{machine}/{}", spec.task_id)),
                shim_pid: pid,
                cgroups: Vec::new(),
                cgroup_v2: false,
            })
        })
    }

    fn wait(&self, info: &ContainerInfo) -> BoxFuture<'static, ExitInfo> {
        let rx = self
            .machines
            .lock()
            .procs
            .get(&info.shim_pid)
            .map(|p| p.end.subscribe());
        Box::pin(async move {
            let end = match rx {
                Some(mut rx) => rx.wait_for(|e| e.is_some()).await.ok().and_then(|e| *e),
                None => Some(End::Vanished),
            };
            match end {
                Some(End::Exit(c)) => ExitInfo {
                    record: Some(ExitRecord::Exited(c)),
                    oom_killed: false,
                },
                Some(End::Signal(s)) => ExitInfo {
                    record: Some(ExitRecord::Signaled(s)),
                    oom_killed: false,
                },
                Some(End::Oom) => ExitInfo {
                    record: Some(ExitRecord::Limited(
                        Limit::Memory,
                        "memory limit exceeded: the kernel OOM-killed a process of the task".into(),
                    )),
                    oom_killed: true,
                },
                Some(End::Limited(l)) => ExitInfo {
                    record: Some(ExitRecord::Limited(
                        l,
                        format!("the task crossed its {} limit", l.as_str()),
                    )),
                    oom_killed: false,
                },
                Some(End::Vanished) | None => ExitInfo {
                    record: None,
                    oom_killed: false,
                },
            }
        })
    }

    fn kill(&self, info: &ContainerInfo, grace: Duration) -> BoxFuture<'static, ()> {
        let m = self.machines.clone();
        let pid = info.shim_pid;
        let stubborn = m.lock().procs.get(&pid).is_some_and(|p| p.ignores_term);
        Box::pin(async move {
            if stubborn {
                tokio::time::sleep(grace).await;
                m.finish(pid, End::Signal(9));
            } else {
                // A simulated task stops at SIGTERM, a moment later.
                tokio::time::sleep(Duration::from_millis(10)).await;
                m.finish(pid, End::Signal(15));
            }
        })
    }

    fn is_running(&self, info: &ContainerInfo) -> bool {
        self.machines
            .lock()
            .procs
            .get(&info.shim_pid)
            .is_some_and(|p| p.end.borrow().is_none())
    }

    fn destroy(&self, info: &ContainerInfo) -> BoxFuture<'static, ()> {
        self.free(info);
        Box::pin(async {})
    }

    fn sandbox_of(&self, _task_id: &str) -> Option<PathBuf> {
        None
    }
}

impl SimContainerizer {
    /// Forgets an ended process (a simulated machine frees at once).
    fn free(&self, info: &ContainerInfo) {
        let mut g = self.machines.lock();
        if g.procs
            .get(&info.shim_pid)
            .is_some_and(|p| p.end.borrow().is_some())
        {
            g.procs.remove(&info.shim_pid);
            if let Some(v) = g.by_task.get_mut(&info.task_id) {
                v.retain(|p| *p != info.shim_pid);
                if v.is_empty() {
                    g.by_task.remove(&info.task_id);
                }
            }
        }
    }
}
