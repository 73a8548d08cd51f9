//! `plexus bench launch`: trivial tasks end to end through an in-process master and agent.
//!
//! One node in this process runs a master, the built-in jobs framework and an agent with
//! the agent's real containerizer (sandbox, shim, cgroups when the machine has them).
//! Figures, one per line, in the spirit of `benches/peers/slurm/run.sh`:
//!
//! - `launch_latency_ms`: submit → `TASK_RUNNING`, tasks one after another on an idle
//!   cluster (each waits for the previous one to finish);
//! - `run_latency_ms`: submit → `TASK_FINISHED` for the same tasks (what `srun` measures);
//! - `launch_throughput`: all `--tasks` submitted at once, first submit → all finished;
//! - `launch_latency_loaded_ms`: submit → `TASK_RUNNING` within that burst;
//! - `agent_idle_rss_mb`: resident memory of a separate, idle `plexus agent` process.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr};
use plexus_kernel::jobs::JobRequest;
use plexus_kernel::protocol::{AgentStatus, MasterMsg, TaskId};
use plexus_kernel::resources::Resources;
use plexus_kernel::task::TaskState;
use ractor::{call_t, ActorRef};
use tokio::sync::mpsc::UnboundedReceiver;

use super::remote::{pct, tls_with, Reaper};
use plexus_net::{Role, Roles};

/// Sizes of the launch benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchOpts {
    /// Tasks in the throughput burst.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Tasks timed one after another for the latency figures.
    #[arg(long, default_value_t = 100)]
    pub sequential: usize,
    /// The agent's resources (tasks take 0.01 cpus and 8 MB each).
    #[arg(long, default_value = "cpus:32;mem:65536;disk:100000")]
    pub resources: String,
    /// Run tasks without cgroups (address-space rlimit only).
    #[arg(long)]
    pub no_cgroups: bool,
    /// Skip the idle-agent memory figure.
    #[arg(long)]
    pub no_rss: bool,
}

/// One latency figure line: p50 and p99 in ms of `v`, and how many.
pub(crate) fn ms_line(what: &str, mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return format!("plexus {what} n=0");
    }
    v.sort();
    format!(
        "plexus {what} p50={:.2} p99={:.2} n={}",
        pct(&v, 0.5) / 1000.0,
        pct(&v, 0.99) / 1000.0,
        v.len()
    )
}

fn true_job() -> JobRequest {
    JobRequest {
        name: None,
        argv: vec!["/bin/true".into()],
        resources: Resources::new(0.01, 8),
        role: None,
        owner: None,
        user: None,
    }
}

/// Waits for `state` of `id` on the event stream; returns when it was seen.
async fn wait_for(
    events: &mut UnboundedReceiver<(TaskId, TaskState)>,
    id: &str,
    state: TaskState,
) -> anyhow::Result<Instant> {
    let deadline = Duration::from_secs(60);
    loop {
        let (t, s) = tokio::time::timeout(deadline, events.recv())
            .await
            .context("no task update for 60 s")?
            .context("the jobs framework stopped")?;
        if t == id && s == state {
            return Ok(Instant::now());
        }
        if t == id && s.is_terminal() {
            anyhow::bail!("task {id} ended {s:?} instead of reaching {state:?}");
        }
    }
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// Settings of a benchmark's node `name` (master and agent in one), with a new CA and
/// its certificate in `dir`.
pub(crate) fn bench_node(dir: &std::path::Path, name: &str) -> anyhow::Result<NodeSettings> {
    plexus_net::tls::init_ca(dir, "bench")?;
    let mut s = NodeSettings {
        name: name.into(),
        cluster: "bench".into(),
        listen: "127.0.0.1:0".parse()?,
        // No executor role: a peer holding it must be named after the agent it serves.
        tls: tls_with(
            dir,
            name,
            Roles::of(&[Role::Master, Role::Agent, Role::Client]),
        )?,
        state_dir: dir.join("node"),
        ..NodeSettings::default()
    };
    s.master.api_listen = "127.0.0.1:0".parse()?;
    Ok(s)
}

/// Waits (up to 30 s) until `n` agents are registered and active.
pub(crate) async fn wait_agents(master: &ActorRef<MasterMsg>, n: usize) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let active = call_t!(master, MasterMsg::State, 5000)
            .map(|s| {
                s.agents
                    .iter()
                    .filter(|a| a.status == AgentStatus::Active)
                    .count()
            })
            .unwrap_or(0);
        if active >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < end,
            "only {active} of {n} agents registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the benchmark, printing each figure as soon as it is measured.
pub async fn run(o: LaunchOpts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = bench_node(dir.path(), "bench-launch")?;
    s.agent.resources = o.resources.clone();
    s.agent.cgroups = !o.no_cgroups;
    let node = Node::start(&s).await?;
    // The master, the jobs framework and the API, as `plexus master` starts them.
    let handle = plexus::roles::start_master(&node, &s).await?;
    let master = handle
        .master()
        .await?
        .context("the master is not running")?;
    let jobs = handle.jobs.clone();
    plexus::roles::start_agent(&node, &s, plexus::roles::own_shim()?).await?;
    wait_agents(&master, 1).await?;
    let mut events = jobs.subscribe();

    // Warm up, then one task at a time on an idle cluster.
    let mut running = Vec::new();
    let mut finished = Vec::new();
    for i in 0..o.sequential + 10 {
        let t0 = Instant::now();
        let id = jobs
            .submit(true_job())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let r = wait_for(&mut events, &id, TaskState::Running).await?;
        let f = wait_for(&mut events, &id, TaskState::Finished).await?;
        if i >= 10 {
            running.push(r - t0);
            finished.push(f - t0);
        }
    }
    println!("{}", ms_line("launch_latency_ms", running));
    println!("{}", ms_line("run_latency_ms", finished));

    // A burst: everything at once.
    let t0 = Instant::now();
    let mut submitted: BTreeMap<TaskId, Instant> = BTreeMap::new();
    for _ in 0..o.tasks {
        let id = jobs
            .submit(true_job())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        submitted.insert(id, Instant::now());
    }
    let mut loaded = Vec::with_capacity(o.tasks);
    let mut done = 0;
    while done < o.tasks {
        let (id, st) = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .context("no task update for 120 s")?
            .context("the jobs framework stopped")?;
        let Some(at) = submitted.get(&id) else {
            continue;
        };
        match st {
            TaskState::Running => loaded.push(at.elapsed()),
            TaskState::Finished => done += 1,
            s if s.is_terminal() => anyhow::bail!("task {id} ended {s:?}"),
            _ => {}
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "plexus launch_throughput tasks_per_s={:.0} n={}",
        o.tasks as f64 / dt,
        o.tasks
    );
    println!("{}", ms_line("launch_latency_loaded_ms", loaded));

    if !o.no_rss {
        let rss = idle_agent_rss(dir.path(), &node, &master).await?;
        println!("plexus agent_idle_rss_mb rss={rss:.1}");
    }
    node.leave().await;
    Ok(())
}

/// Starts a `plexus agent` process joined to this node's master, lets it settle, and
/// reads its resident memory.
async fn idle_agent_rss(
    dir: &std::path::Path,
    node: &Node,
    master: &ActorRef<MasterMsg>,
) -> anyhow::Result<f64> {
    let t = tls_with(dir, "bench-agent", Roles::of(&[Role::Agent]))?;
    let cfg = format!(
        "name = \"bench-agent\"\ncluster = \"bench\"\nlisten = \"127.0.0.1:0\"\n\
         state_dir = \"{}\"\n[tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [agent]\nresources = \"cpus:1;mem:1024\"\n",
        dir.join("agent").display(),
        t.ca_cert.as_ref().context("ca")?.display(),
        t.cert.as_ref().context("cert")?.display(),
        t.key.as_ref().context("key")?.display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, cfg)?;
    let PeerAddr { name, addr } = node.peer_addr();
    let child = Reaper(
        Command::new(std::env::current_exe()?)
            .args(["--log", "warn", "agent", "--master"])
            .arg(format!("{name}@{addr}"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the agent process")?,
    );
    wait_agents(master, 2).await?;
    // Idle: registered, heartbeating, nothing to run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_mb(child.0.id())
}
