//! User actors in the simulated datacenter.
//!
//! A [`Workload`] registers its actor types on the simulated nodes, starts its actors once
//! the datacenter is up, and checks its own invariants at the end. [`SupervisedService`]
//! is the built-in one: a supervisor on the master's machine keeps workers running on
//! agents; workers crash now and then (times drawn from the seed) and machines crash
//! under them. Its invariant, `supervision`: every failed worker is reported to its
//! supervisor (as a failure, or as a node-down termination when its machine went too).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_actors::{Node, RemoteMessage};
use plexus_kernel::containerizer::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
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
    /// Workers whose end the supervisor heard of.
    reported: BTreeSet<(u64, u64)>,
    /// Workers the supervisor knows it started (a spawn whose answer was lost with its
    /// connection failed for the supervisor: that worker is not its to be told about).
    known: BTreeSet<(u64, u64)>,
    /// Workers no longer fail (the final checks are near).
    frozen: bool,
    restarts: u64,
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

struct Supervisor {
    node: Node,
    books: Arc<Mutex<Books>>,
    rec: Recorder,
}

/// Messages of the supervisor.
#[derive(Debug, RemoteMessage)]
enum SupMsg {
    /// Start a worker on some agent.
    Start,
}

struct SupState {
    agents: Vec<String>,
    next: usize,
    seed: u64,
}

impl Supervisor {
    async fn start_one(&self, me: &ActorRef<SupMsg>, st: &mut SupState) {
        let agent = st.agents[st.next % st.agents.len()].clone();
        st.next += 1;
        st.seed = st.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let r: Result<ActorRef<WorkerMsg>, _> = self
            .node
            .spawn_remote_linked(me.get_cell(), &agent, WORKER, &st.seed)
            .await;
        match r {
            Ok(w) => {
                let mut b = self.books.lock().expect("books lock");
                b.started += 1;
                b.known.insert(key(w.get_id()));
                drop(b);
                self.rec.note(format_args!(
                    "workload worker {:?} started on {agent}",
                    w.get_id()
                ));
            }
            Err(_) => {
                me.send_after(Duration::from_secs(2), || SupMsg::Start);
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupMsg;
    type State = SupState;
    type Arguments = (Vec<String>, usize, u64);

    async fn pre_start(
        &self,
        me: ActorRef<SupMsg>,
        (agents, replicas, seed): Self::Arguments,
    ) -> Result<SupState, ActorProcessingErr> {
        for _ in 0..replicas {
            me.cast(SupMsg::Start)?;
        }
        Ok(SupState {
            agents,
            next: 0,
            seed,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<SupMsg>,
        msg: SupMsg,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::Start => self.start_one(&me, st).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SupMsg>,
        evt: SupervisionEvent,
        _st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let child: Option<ActorCell> = match &evt {
            SupervisionEvent::ActorFailed(c, e) => {
                self.rec
                    .note(format_args!("workload worker {:?} failed: {e}", c.get_id()));
                Some(c.clone())
            }
            SupervisionEvent::ActorTerminated(c, _, reason) => {
                self.rec.note(format_args!(
                    "workload worker {:?} terminated: {reason:?}",
                    c.get_id()
                ));
                Some(c.clone())
            }
            _ => None,
        };
        if let Some(c) = child {
            {
                let mut b = self.books.lock().expect("books lock");
                b.reported.insert(key(c.get_id()));
                b.restarts += 1;
            }
            me.cast(SupMsg::Start)?;
        }
        Ok(())
    }
}

impl Workload for SupervisedService {
    fn install_agent(&self, node: &Node) {
        let (n, books, mean_life) = (node.clone(), self.books.clone(), self.mean_life);
        node.register_type(WORKER, plexus_net::Roles::ALL, move || Worker {
            node: n.clone(),
            books: books.clone(),
            mean_life,
        });
    }

    fn start(&self, ctx: SimContext) -> BoxFuture<'static, ()> {
        let me = self.clone();
        Box::pin(async move {
            let sup = Supervisor {
                node: ctx.master.clone(),
                books: me.books.clone(),
                rec: ctx.rec.clone(),
            };
            if let Err(e) =
                Actor::spawn(None, sup, (ctx.agents.clone(), me.replicas, me.seed)).await
            {
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
        if running != self.replicas as u64 {
            rec.violation(
                "supervision",
                format!(
                    "{running} worker(s) running after the faults healed; the supervisor keeps {}",
                    self.replicas
                ),
            );
        }
        let b = self.books.lock().expect("books lock");
        let unreported = b
            .failed
            .difference(&b.reported)
            .filter(|w| b.known.contains(w));
        for (node, pid) in unreported {
            rec.violation(
                "supervision",
                format!(
                    "worker pid {pid} on node #{node:016x} failed but its supervisor was never told"
                ),
            );
        }
    }
}
