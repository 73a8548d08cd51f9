//! `plexus bench placed-spawn`: actors placed by resources, from `spawn` to the first
//! reply of the placed actor.
//!
//! One node in this process runs a master, an agent with its real containerizer
//! (sandbox, shim, cgroups) and a framework holding a [`plexus::Datacenter`]. The
//! executor is this very program (`main` starts with `run_if_requested`), which hosts
//! the `plexus.bench.echo` actor. Each spawn asks for 1 cpu and 32 MB (a cpu quota below
//! one would throttle the executor's start); the time runs
//! from the request to the first answer of the actor, through offers held by the
//! framework, the master's launch, the agent's checkpoint, the executor process's start
//! and its QUIC handshake with the agent and then with the framework. Figures:
//!
//! - `placed_spawn_warm_ms`: the agent holds a pre-started executor of the framework
//!   (it keeps one ready once the framework ran an actor task there), which takes the
//!   task: no process start, one handshake less; the actor starts in it while the agent
//!   writes the launch, and the framework hears where it is as soon as that write is
//!   done (ahead of the `TASK_RUNNING` update, which is written and sent after);
//! - `placed_spawn_cold_ms`: the executor process must start (spawns with no
//!   pre-started executor ready: each waits for the previous one's end);
//! - `placed_spawn_placing_ms`: request → launched on an offer held by the framework;
//! - `placed_spawn_starting_ms`: launched → the actor reachable (the agent's checkpoint,
//!   the executor's start, its handshakes, the spawn in it, the `TASK_RUNNING` update);
//! - `placed_spawn_first_reply_ms`: reachable → its first reply.

use std::time::{Duration, Instant};

use anyhow::Context;
use plexus::{Datacenter, DatacenterConfig, Requirements};
use plexus_actors::{Node, RemoteMessage};
use plexus_kernel::protocol::{agent_name, AgentMsg};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::launch::{bench_node, ms_line, wait_agents};

/// The actor type the `plexus` executor hosts for this benchmark.
pub const ECHO: &str = "plexus.bench.echo";

/// Messages of the benchmark's actor.
#[derive(Debug, RemoteMessage)]
pub enum Echo {
    /// Answers its argument.
    Ping(u64, RpcReplyPort<u64>),
}

/// An actor that answers pings.
pub struct EchoActor;

impl Actor for EchoActor {
    type Msg = Echo;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Echo>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Echo>,
        m: Echo,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let Echo::Ping(x, reply) = m;
        if reply.send(x).is_err() {
            tracing::debug!("the pinger stopped waiting");
        }
        Ok(())
    }
}

/// Sizes of the placed-spawn benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct PlacedOpts {
    /// Spawns timed (after 3 not timed).
    #[arg(long, default_value_t = 50)]
    pub spawns: usize,
}

/// Runs the benchmark, printing each figure as soon as it is measured.
pub async fn run(o: PlacedOpts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = bench_node(dir.path(), "bench-placed")?;
    s.agent.resources = "cpus:32;mem:65536;disk:100000".into();
    s.master.allocation_interval = Duration::from_millis(100);
    let node = Node::start(&s).await?;
    let handle = plexus::roles::start_master(&node, &s).await?;
    let master = handle
        .master()
        .await?
        .context("the master is not running")?;
    plexus::roles::start_agent(&node, &s, plexus::roles::own_shim()?).await?;
    wait_agents(&master, 1).await?;
    let dc = Datacenter::connect(&node, DatacenterConfig::new("bench-placed")).await?;
    let req = Requirements::new(1.0, 32).timeout(Duration::from_secs(60));
    let agent: ActorRef<AgentMsg> = node
        .whereis(&agent_name(node.name()))
        .await?
        .context("no agent actor")?;
    let mut warm = Vec::new();
    for i in 0..o.spawns + 3 {
        // A pre-started executor is ready (the first one follows the first spawn).
        if i > 0 {
            wait_spares(&agent, 1).await?;
        }
        let t0 = Instant::now();
        let a: ActorRef<Echo> = dc.spawn(ECHO, &(), req.clone()).await?;
        let x = call_t!(a, Echo::Ping, 10_000, i as u64)?;
        anyhow::ensure!(x == i as u64, "echo answered {x} to {i}");
        if i >= 3 {
            warm.push(t0.elapsed());
        }
        dc.kill(&a.get_cell());
    }
    println!("{}", ms_line("placed_spawn_warm_ms", warm));
    let (mut cold, mut placing, mut starting, mut reply) = (vec![], vec![], vec![], vec![]);
    let exe = std::env::current_exe()?.display().to_string();
    for i in 0..o.spawns + 3 {
        // An executor command of its own (the argument is not read), so no pre-started
        // executor fits: this spawn starts its process. The one pre-started after it
        // is let come up first, not to compete with the next spawn for the cpus.
        let req = req
            .clone()
            .executor(vec![exe.clone(), format!("--cold={i}")]);
        let spares = spare_count(&agent).await?;
        let t0 = Instant::now();
        let p = dc.request::<Echo, _>(None, ECHO, &(), req)?;
        let mut why = p.reasons();
        while why.borrow_and_update().is_some() {
            why.changed().await.context("the spawn ended")?;
        }
        let t1 = Instant::now();
        let a: ActorRef<Echo> = p.placed().await?.into();
        let t2 = Instant::now();
        let x = call_t!(a, Echo::Ping, 10_000, i as u64)?;
        let t3 = Instant::now();
        anyhow::ensure!(x == i as u64, "echo answered {x} to {i}");
        if i >= 3 {
            cold.push(t3 - t0);
            placing.push(t1 - t0);
            starting.push(t2 - t1);
            reply.push(t3 - t2);
        }
        dc.kill(&a.get_cell());
        wait_spares(&agent, spares + 1).await?;
    }
    println!("{}", ms_line("placed_spawn_cold_ms", cold));
    println!("{}", ms_line("placed_spawn_placing_ms", placing));
    println!("{}", ms_line("placed_spawn_starting_ms", starting));
    println!("{}", ms_line("placed_spawn_first_reply_ms", reply));
    dc.shutdown().await;
    Ok(())
}

/// How many pre-started executors the agent holds ready.
async fn spare_count(agent: &ActorRef<AgentMsg>) -> anyhow::Result<usize> {
    Ok(call_t!(agent, |reply| AgentMsg::Inspect { reply }, 5000)?.spare_executors)
}

/// Waits until the agent holds `n` pre-started executors ready.
async fn wait_spares(agent: &ActorRef<AgentMsg>, n: usize) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    loop {
        tick.tick().await;
        if spare_count(agent).await? >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < end,
            "{n} pre-started executors not ready within 30 s"
        );
    }
}
