//! User actors in the simulated datacenter.
//!
//! A [`Workload`] registers its actor types on the simulated nodes, starts its actors once
//! the datacenter is up, and checks its own invariants at the end. [`SupervisedService`]
//! is the built-in one: a `one_for_one` supervisor on the master's machine keeps workers
//! running, each an actor task placed by the kernel through a `Datacenter` in an executor
//! of its own on some agent; workers crash now and then (times drawn from the seed),
//! executors are OOM-killed, and machines crash under them. Its invariant,
//! `supervision`: every end of a worker reaches its supervisor exactly once (a failure,
//! a termination naming a limit, or a node-down termination), and the workers are all
//! back once the faults heal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_actors::{Node, RemoteMessage};
use plexus_kernel::containerizer::BoxFuture;
use plexus_kernel::datacenter::supervisor::{ChildEvent, ChildSpec, Intensity, OneForOne};
use plexus_kernel::datacenter::{Datacenter, DatacenterConfig, Requirements};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::Recorder;

/// What a workload gets when the datacenter is up.
#[derive(Clone)]
pub struct SimContext {
    /// The master's node (a place for supervisors that must outlive agent crashes).
    pub master: Node,
    /// Names of the agents' nodes.
    pub agents: Vec<String>,
    /// The trace and violations.
    pub rec: Recorder,
}

/// User actors to run in the simulated datacenter.
pub trait Workload: Send + Sync + 'static {
    /// Called for every agent node at every start (register actor types here).
    fn install_agent(&self, _node: &Node) {}
    /// Called for the master's node once.
    fn install_master(&self, _node: &Node) {}
    /// Called for every executor node a simulated agent starts for an actor task
    /// (register the actor types placed by resources here).
    fn install_executor(&self, _node: &Node) {}
    /// Starts the workload's actors.
    fn start(&self, ctx: SimContext) -> BoxFuture<'static, ()>;
    /// The cluster comes to rest before the final checks: stop injecting failures, so
    /// that what is in flight lands before the checks look.
    fn freeze(&self) {}
    /// Checks the workload's invariants at the end (after faults healed).
    fn check(&self, _rec: &Recorder) {}
}

/// Type name of the built-in worker actor.
pub const WORKER: &str = "sim.worker";

/// Messages of a worker.
#[derive(Debug, RemoteMessage)]
pub enum WorkerMsg {
    /// Fail now (a simulated bug).
    Crash,
}

#[derive(Default)]
struct Books {
    /// Workers that failed, as `(node id, pid)`.
    failed: BTreeSet<(u64, u64)>,
    /// Workers whose end the supervisor heard of, and how many times (once, always).
    reported: BTreeMap<(u64, u64), u32>,
    /// Workers the supervisor knows it started (a spawn whose answer was lost with its
    /// connection failed for the supervisor: that worker is not its to be told about).
    known: BTreeSet<(u64, u64)>,
    /// Workers no longer fail (the final checks are near).
    frozen: bool,
    /// The service's handle on the datacenter (its pending spawns say why they wait).
    dc: Option<Datacenter>,
    /// Workers started (and confirmed running).
    started: u64,
}

fn key(id: ActorId) -> (u64, u64) {
    match id {
        ActorId::Remote { node_id, pid } => (node_id, pid),
        ActorId::Local(pid) => (0, pid),
    }
}

/// Workers on agents, kept running by a supervisor on the master's machine.
#[derive(Clone)]
pub struct SupervisedService {
    replicas: usize,
    /// Mean simulated time between a worker's crashes.
    mean_life: Duration,
    seed: u64,
    books: Arc<Mutex<Books>>,
}

impl SupervisedService {
    /// `replicas` workers, each crashing after a seeded time of mean `mean_life`.
    pub fn new(replicas: usize, mean_life: Duration, seed: u64) -> Self {
        SupervisedService {
            replicas,
            mean_life,
            seed,
            books: Arc::default(),
        }
    }

    /// Workers that failed, ends the supervisor heard of, and workers running now.
    pub fn counts(&self) -> (usize, usize, u64) {
        let b = self.books.lock().expect("books lock");
        (
            b.failed.len(),
            b.reported.len(),
            b.started.saturating_sub(b.reported.len() as u64),
        )
    }
}

struct Worker {
    node: Node,
    books: Arc<Mutex<Books>>,
    mean_life: Duration,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = u64;

    async fn pre_start(
        &self,
        me: ActorRef<WorkerMsg>,
        seed: u64,
    ) -> Result<(), ActorProcessingErr> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let u: f64 = rng.random::<f64>().max(1e-9);
        let life = self.mean_life.mul_f64(-u.ln());
        me.send_after(life, || WorkerMsg::Crash);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Crash => {
                if self.node.is_stopped() {
                    // Its machine is gone; a dead machine's actors do nothing.
                    me.stop(None);
                    return Ok(());
                }
                let id = (plexus_net::node_id(self.node.name()), me.get_id().pid());
                let mut b = self.books.lock().expect("books lock");
                if b.frozen {
                    return Ok(());
                }
                b.failed.insert(id);
                Err("simulated worker bug".into())
            }
        }
    }
}

/// Takes the supervisor's events into the books.
async fn follow(
    mut events: tokio::sync::mpsc::UnboundedReceiver<ChildEvent>,
    books: Arc<Mutex<Books>>,
    rec: Recorder,
) {
    while let Some(e) = events.recv().await {
        let mut b = books.lock().expect("books lock");
        match e {
            ChildEvent::Started {
                child,
                actor,
                agent,
                ..
            } => {
                b.started += 1;
                b.known.insert(key(actor));
                rec.note(format_args!(
                    "workload worker {child} {actor:?} started on {}",
                    agent.as_deref().unwrap_or("?")
                ));
            }
            ChildEvent::Failed {
                child,
                actor,
                error,
            } => {
                *b.reported.entry(key(actor)).or_insert(0) += 1;
                rec.note(format_args!(
                    "workload worker {child} {actor:?} failed: {error}"
                ));
            }
            ChildEvent::Terminated {
                child,
                actor,
                reason,
            } => {
                *b.reported.entry(key(actor)).or_insert(0) += 1;
                rec.note(format_args!(
                    "workload worker {child} {actor:?} terminated: {reason:?}"
                ));
            }
            ChildEvent::NotStarted { child, error } => {
                rec.note(format_args!("workload worker {child} not started: {error}"));
            }
            ChildEvent::GaveUp { child } => {
                rec.violation(
                    "supervision",
                    format!("the supervisor gave up on {child}, which it may restart without end"),
                );
            }
        }
    }
}

impl Workload for SupervisedService {
    fn install_executor(&self, node: &Node) {
        let (n, books, mean_life) = (node.clone(), self.books.clone(), self.mean_life);
        node.register_type(WORKER, plexus_net::Role::Agent, move || Worker {
            node: n.clone(),
            books: books.clone(),
            mean_life,
        });
    }

    fn start(&self, ctx: SimContext) -> BoxFuture<'static, ()> {
        let me = self.clone();
        Box::pin(async move {
            let mut cfg = DatacenterConfig::new("sim.service");
            cfg.executor = vec!["sim-executor".into()];
            let dc = match Datacenter::connect(&ctx.master, cfg).await {
                Ok(dc) => dc,
                Err(e) => {
                    ctx.rec
                        .violation("supervision", format!("the service did not connect: {e}"));
                    return;
                }
            };
            me.books.lock().expect("books lock").dc = Some(dc.clone());
            let mut seed = me.seed;
            let children: Result<Vec<ChildSpec>, _> = (0..me.replicas)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let req = Requirements::new(0.1, 64);
                    ChildSpec::new::<WorkerMsg, _>(&format!("w{i}"), WORKER, &seed, req)
                })
                .collect();
            let children = match children {
                Ok(c) => c,
                Err(e) => {
                    ctx.rec
                        .violation("supervision", format!("bad child spec: {e}"));
                    return;
                }
            };
            // Restarted without end: the faults never stop a worker for good.
            let intensity = Intensity {
                max_restarts: u32::MAX,
                period: Duration::from_secs(1),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(follow(rx, me.books.clone(), ctx.rec.clone()));
            let sup = OneForOne::new(dc, intensity).observed(tx);
            if let Err(e) = Actor::spawn(None, sup, children).await {
                ctx.rec.violation(
                    "supervision",
                    format!("the service's supervisor did not start: {e}"),
                );
            }
        })
    }

    fn freeze(&self) {
        self.books.lock().expect("books lock").frozen = true;
    }

    fn check(&self, rec: &Recorder) {
        let (_, _, running) = self.counts();
        let b = self.books.lock().expect("books lock");
        // A worker not running must be waiting for room, saying why (the other
        // frameworks' tasks may hold every agent's resources when the run comes to rest).
        let pending = b.dc.as_ref().map(|d| d.pending()).unwrap_or_default();
        if running + pending.len() as u64 != self.replicas as u64 {
            rec.violation(
                "supervision",
                format!(
                    "{running} worker(s) running and {} waiting ({pending:?}) after the faults healed; the supervisor keeps {}",
                    pending.len(),
                    self.replicas
                ),
            );
        }
        for (node, pid) in b.failed.iter().filter(|w| b.known.contains(w)) {
            if !b.reported.contains_key(&(*node, *pid)) {
                rec.violation(
                    "supervision",
                    format!(
                        "worker pid {pid} on node #{node:016x} failed but its supervisor was never told"
                    ),
                );
            }
        }
        for ((node, pid), n) in b.reported.iter().filter(|(_, n)| **n > 1) {
            rec.violation(
                "supervision",
                format!("the supervisor was told {n} times of the end of worker pid {pid} on node #{node:016x}"),
            );
        }
    }
}
