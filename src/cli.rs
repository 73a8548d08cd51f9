//! Command-line parsing and dispatch for the `plexus` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use plexus::logging::{init as init_logging, LogFormat};

/// plexus: a datacenter operating-system kernel built on distributed actors.
#[derive(Debug, Parser)]
#[command(name = "plexus", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,plexus_actors=debug`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the cluster CA and node certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a bare node: join its peers and host remote actors until SIGINT/SIGTERM.
    Node(NodeArgs),
    /// Run a master and an agent in this one process (development TLS under
    /// `.plexus/dev`, API at http://127.0.0.1:5050).
    Dev(DevArgs),
    /// Run a master (with the built-in jobs framework and the HTTP API).
    Master(MasterArgs),
    /// Run an agent that joins the master at NAME@HOST:PORT.
    Agent(AgentArgs),
    /// Submit a command as a job, print its output and state changes until it ends, and
    /// exit with its exit code.
    Run(RunArgs),
    /// List tasks (running and pending; --all for ended ones too).
    Ps {
        #[command(flatten)]
        api: ApiArgs,
        /// Include ended tasks.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Kill a task.
    Kill {
        #[command(flatten)]
        api: ApiArgs,
        /// The task id.
        task: String,
    },
    /// Print a task's stdout (or --stderr).
    Logs {
        #[command(flatten)]
        api: ApiArgs,
        /// The task id.
        task: String,
        /// Keep printing new output until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// List agents.
    Agents {
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Simulate a whole datacenter under seeded faults and check its invariants:
    /// `--seed N`, a sweep `--seeds 1..1000`, or `--replay N` with the full trace.
    Sim(Box<plexus::simcli::SimArgs>),
    /// Benchmarks, one figure per printed line (`plexus <figure> key=value ...`).
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Where the master's API is.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Master API URL.
    #[arg(long, env = "PLEXUS_API", default_value = "http://127.0.0.1:5050")]
    pub api: String,
}

/// `plexus dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address of the HTTP API, e.g. 127.0.0.1:5050 (`master.api_listen`).
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Resources the agent offers, e.g. `cpus:4;mem:8192` (`agent.resources`).
    #[arg(long)]
    pub resources: Option<String>,
}

/// `plexus master`.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address of the HTTP API, e.g. 127.0.0.1:5050 (`master.api_listen`).
    #[arg(long)]
    pub api_listen: Option<String>,
}

/// `plexus agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The master node, NAME@HOST:PORT; with several masters, any of them or all,
    /// comma-separated (the agent registers with whichever leads).
    #[arg(long)]
    pub master: String,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Resources the agent offers, e.g. `cpus:4;mem:8192` (`agent.resources`).
    #[arg(long)]
    pub resources: Option<String>,
    /// Exit with an error if not registered with the master this long after starting,
    /// e.g. `30s` (`agent.register_timeout`; default: keep trying).
    #[arg(long)]
    pub register_timeout: Option<String>,
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    use plexus_kernel::api::{MAX_JOB_CPUS, MIN_JOB_CPUS};
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() || !(MIN_JOB_CPUS..=MAX_JOB_CPUS).contains(&v) {
        return Err(format!(
            "cpus must be from {MIN_JOB_CPUS} to {MAX_JOB_CPUS}, not {s}"
        ));
    }
    Ok(v)
}

/// `plexus run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Cpus (fractional, at least 0.01).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, value_parser = parse_cpus)]
    pub cpus: f64,
    /// Memory in MB.
    #[arg(long, default_value_t = 64)]
    pub mem: u64,
    /// Disk in MB, enforced on the task's sandbox (0: not enforced).
    #[arg(long, default_value_t = 0)]
    pub disk: u64,
    /// Role: `*` (default), or a role the jobs framework serves (see `master.job_roles`).
    #[arg(long)]
    pub role: Option<String>,
    /// OS user to run the task as (default: the agent's `agent.task_user`); the master's
    /// ACLs must allow it (root only when a rule names it).
    #[arg(long)]
    pub user: Option<String>,
    /// Name of the job.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the task id and return at once (the job runs on; Ctrl-C does not cancel it).
    #[arg(long, short)]
    pub detach: bool,
    /// Do not print the task's stdout and stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Kill the job if it has not ended this long after submission, e.g. `30s`, `5m`
    /// (exit code 124).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Print state changes as JSON lines (the task's output is not printed).
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `plexus bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Remote call RTT, cast throughput and remote spawn latency between two processes on
    /// loopback (this one and a `plexus node` it starts), and local ractor baselines.
    Remote(crate::bench::remote::RemoteOpts),
    /// One allocation cycle of the DRF allocator alone at 20,000 agents and 2,000 frameworks.
    Allocator(crate::bench::allocator::AllocatorOpts),
    /// Trivial tasks (`/bin/true`) end to end through an in-process master and agent:
    /// launch latency, throughput, and an idle agent process's memory.
    Launch(crate::bench::launch::LaunchOpts),
    /// Actors placed by resources through an in-process master and agent: from `spawn`
    /// to the placed actor's first reply.
    PlacedSpawn(crate::bench::placed::PlacedOpts),
    /// The leading master's crash in a simulated datacenter (3 masters, 10,000 agents,
    /// 100,000 tasks): simulated time to a new leader, every agent re-registered, the
    /// first offer; with `--processes`, wall-clock figures of real masters and agents.
    Failover(crate::bench::failover::FailoverOpts),
}

/// Settings flags of every server command; they override the file and `PLEXUS_*`
/// variables.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// TOML settings file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Node name (must match its certificate).
    #[arg(long)]
    pub name: Option<String>,
    /// QUIC listen address, e.g. 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory for the node's state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Settings flags of the commands that join a cluster.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Peer to join, NAME@HOST:PORT (repeatable; replaces the file's list).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Development TLS: create a CA and certificate under the state dir if none is given.
    #[arg(long)]
    pub dev: bool,
}

impl CommonArgs {
    /// Loads and validates the node settings from all layers: `extra` overrides (from
    /// the command's own flags) apply before these flags.
    pub fn settings_with(
        &self,
        mut o: Vec<(&'static str, plexus_config::Override)>,
    ) -> anyhow::Result<plexus_config::NodeSettings> {
        if let Some(n) = &self.name {
            o.push(("name", n.as_str().into()));
        }
        if let Some(l) = &self.listen {
            o.push(("listen", l.as_str().into()));
        }
        if let Some(d) = &self.state_dir {
            o.push(("state_dir", d.display().to_string().into()));
        }
        Ok(plexus_config::load_node(self.config.as_deref(), &o)?)
    }
}

impl NodeArgs {
    /// Loads and validates the node settings from all layers.
    pub fn settings(&self) -> anyhow::Result<plexus_config::NodeSettings> {
        self.settings_with(Vec::new())
    }

    /// As [`NodeArgs::settings`], with extra overrides applied before the flags.
    pub fn settings_with(
        &self,
        mut o: Vec<(&'static str, plexus_config::Override)>,
    ) -> anyhow::Result<plexus_config::NodeSettings> {
        if !self.peers.is_empty() {
            o.push(("peers", plexus_config::Override::Many(self.peers.clone())));
        }
        if self.dev {
            o.push(("tls.dev", "true".into()));
        }
        self.common.settings_with(o)
    }
}

/// `plexus certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a new cluster CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory for the CA files (created if missing).
        dir: PathBuf,
        /// Cluster name recorded in the CA's subject.
        #[arg(long, default_value = "plexus")]
        cluster: String,
    },
    /// Issue a certificate for NODE with its roles, signed by the CA in DIR (writes
    /// NODE.pem, NODE.key).
    Issue {
        /// Directory holding ca.pem and ca.key.
        dir: PathBuf,
        /// Node name the certificate names (must match the node's `name` setting).
        node: String,
        /// What the node may be: master, agent, executor or client (several separated by
        /// commas, e.g. `master,agent` for a node running both).
        #[arg(long, value_parser = parse_roles)]
        role: plexus_net::Roles,
        /// Where to write the node's files (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A host name or IP address the node also answers HTTPS under (a master whose
        /// API serves HTTPS: `--host 127.0.0.1 --host master.example.com`); repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

fn parse_roles(s: &str) -> Result<plexus_net::Roles, String> {
    s.parse()
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

async fn run_node(settings: plexus_config::NodeSettings) -> anyhow::Result<()> {
    let node = plexus_actors::Node::start_as(&settings, plexus_net::Role::Client.into())
        .await
        .context("starting the node")?;
    plexus::builtin::install(&node).await?;
    let sig = wait_for_signal().await?;
    tracing::info!("{sig}: leaving the cluster");
    node.leave().await;
    Ok(())
}

/// Adds `key = v` to the overrides when the flag was given.
fn opt(
    o: &mut Vec<(&'static str, plexus_config::Override)>,
    key: &'static str,
    v: &Option<String>,
) {
    if let Some(v) = v {
        o.push((key, v.as_str().into()));
    }
}

fn dev_settings(a: &DevArgs) -> anyhow::Result<plexus_config::NodeSettings> {
    let mut o = vec![
        ("name", "dev".into()),
        ("state_dir", ".plexus/dev".into()),
        ("tls.dev", "true".into()),
    ];
    opt(&mut o, "master.api_listen", &a.api_listen);
    opt(&mut o, "agent.resources", &a.resources);
    a.common.settings_with(o)
}

fn master_settings(a: &MasterArgs) -> anyhow::Result<plexus_config::NodeSettings> {
    let mut o = Vec::new();
    opt(&mut o, "master.api_listen", &a.api_listen);
    a.node.settings_with(o)
}

fn agent_settings(a: &AgentArgs) -> anyhow::Result<plexus_config::NodeSettings> {
    let mut o = Vec::new();
    opt(&mut o, "agent.resources", &a.resources);
    opt(&mut o, "agent.register_timeout", &a.register_timeout);
    let mut s = a.node.settings_with(o)?;
    for m in a.master.split(',').map(str::trim) {
        let p: plexus_config::PeerAddr = m
            .parse()
            .with_context(|| format!("bad --master {:?} (in {:?})", m, a.master))?;
        if !s.peers.contains(&p) {
            s.peers.push(p);
        }
    }
    Ok(s)
}

/// Waits until the agent has registered with a master; an error after `timeout`.
async fn await_registration(
    handle: &plexus::roles::AgentHandle,
    timeout: std::time::Duration,
    s: &plexus_config::NodeSettings,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(agent) = handle.agent().await? {
            let view = ractor::call_t!(
                agent,
                |reply| plexus_kernel::protocol::AgentMsg::Inspect { reply },
                5000
            )
            .map_err(|e| anyhow::anyhow!("asking the agent: {e}"))?;
            if view.registered {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let masters: Vec<String> = s.peers.iter().map(|p| p.to_string()).collect();
            anyhow::bail!(
                "not registered with the master ({}) within `agent.register_timeout` = {} \
                 (the errors above say why)",
                masters.join(", "),
                humantime::format_duration(timeout)
            );
        }
    }
}

/// Resolves when the supervisor behind `ended` gave up (never, without one).
async fn gave_up(ended: Option<&mut tokio::task::JoinHandle<()>>) {
    match ended {
        Some(e) => {
            if let Err(err) = e.await {
                tracing::error!("a supervisor ended abnormally: {err}");
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves, naming it, when the supervisor of the master or of its HTTP API gave up.
async fn master_gave_up(m: Option<&mut plexus::roles::MasterHandle>) -> &'static str {
    match m {
        Some(m) => tokio::select! {
            _ = gave_up(Some(&mut m.ended)) => "the master",
            _ = gave_up(Some(&mut m.api_ended)) => "the HTTP API",
        },
        None => std::future::pending().await,
    }
}

async fn run_role(s: plexus_config::NodeSettings, master: bool, agent: bool) -> anyhow::Result<()> {
    let mut dev_roles = Vec::new();
    if master {
        dev_roles.push(plexus_net::Role::Master);
    }
    if agent {
        dev_roles.push(plexus_net::Role::Agent);
    }
    let node = plexus_actors::Node::start_as(&s, plexus_net::Roles::of(&dev_roles))
        .await
        .context("starting the node")?;
    // On a master or an agent only kernel nodes may start the built-in actors: a
    // client's actors run on executors, never inside the kernel's processes.
    plexus::builtin::register_all(
        &node,
        plexus_net::Roles::of(&[plexus_net::Role::Master, plexus_net::Role::Agent]),
    );
    let mut m = if master {
        Some(plexus::roles::start_master(&node, &s).await?)
    } else {
        None
    };
    let mut a = None;
    if agent {
        let h = plexus::roles::start_agent(&node, &s, plexus::roles::own_shim()?).await?;
        let timeout = s.agent.register_timeout;
        if !timeout.is_zero() {
            tokio::select! {
                r = await_registration(&h, timeout, &s) => r?,
                sig = wait_for_signal() => {
                    tracing::info!("{}: stopping", sig?);
                    node.leave().await;
                    return Ok(());
                }
            }
        }
        a = Some(h);
    }
    // Runs until a signal, or until a supervisor gives up on its child.
    let result = tokio::select! {
        sig = wait_for_signal() => {
            tracing::info!("{}: stopping (running tasks keep running)", sig?);
            Ok(())
        }
        what = master_gave_up(m.as_mut()) => {
            Err(anyhow::anyhow!("{what} kept failing and its supervisor gave up (see the errors above)"))
        }
        _ = gave_up(a.as_mut().map(|a| &mut a.ended)) => {
            Err(anyhow::anyhow!("the agent kept failing and its supervisor gave up (see the errors above)"))
        }
    };
    if let Some(m) = m {
        m.api.stop(Some("the node is stopping".into()));
        if let Err(e) = m.api_ended.await {
            tracing::debug!("the API's supervisor ended abnormally: {e}");
        }
    }
    node.leave().await;
    result
}

fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    Ok(b.enable_all().build()?)
}

/// Runs `plexus sim ...` as `plexus-sim ...` (same flags) when that program is installed
/// next to this one; returns only if it is not.
fn hand_over_to_sim_program() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this program")?;
    let sim = exe.with_file_name(plexus::simcli::SIM_PROGRAM);
    if !sim.is_file() {
        tracing::debug!("{} not found: simulating in this process", sim.display());
        return Ok(());
    }
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "sim") {
        args.remove(i);
    }
    let e = std::process::Command::new(&sim).args(args).exec();
    Err(anyhow::Error::new(e).context(format!("starting {}", sim.display())))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A simulation's kernel logs describe simulated faults: keep them out of the way
    // unless asked for.
    let quiet = matches!(cli.command, Command::Sim(_)) && cli.log == "info";
    if matches!(
        cli.command,
        Command::Sim(_) | Command::Ps { .. } | Command::Agents { .. } | Command::Logs { .. }
    ) {
        // Output commands end quietly when their reader goes away (`| head`).
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging(cli.log_format, if quiet { "off" } else { &cli.log })?;
    match cli.command {
        Command::Node(args) => {
            let settings = args.settings()?;
            runtime(settings.worker_threads)?.block_on(run_node(settings))?
        }
        Command::Dev(a) => {
            let s = dev_settings(&a)?;
            runtime(s.worker_threads)?.block_on(run_role(s, true, true))?
        }
        Command::Master(a) => {
            let s = master_settings(&a)?;
            runtime(s.worker_threads)?.block_on(run_role(s, true, false))?
        }
        Command::Agent(a) => {
            let s = agent_settings(&a)?;
            runtime(s.worker_threads)?.block_on(run_role(s, false, true))?
        }
        Command::Run(r) => {
            let c = plexus::client::Client::new(&r.api.api);
            let job = plexus_kernel::api::SubmitJob {
                argv: r.command,
                cpus: r.cpus,
                mem: r.mem,
                disk: r.disk,
                name: r.name,
                role: r.role,
                user: r.user,
            };
            let o = plexus::client::RunOptions {
                detach: r.detach,
                json: r.json,
                quiet: r.quiet,
                timeout: r.timeout,
            };
            return Ok(match plexus::client::run(&c, job, &o) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("plexus: error: {}", error_text(&e));
                    ExitCode::from(plexus::client::exit::NOT_RUN)
                }
            });
        }
        Command::Ps { api, all, json } => {
            plexus::client::ps(&plexus::client::Client::new(&api.api), all, json)?
        }
        Command::Kill { api, task } => match plexus::client::Client::new(&api.api).kill(&task)? {
            plexus::client::KillAnswer::Killing => println!("killing {task}"),
            plexus::client::KillAnswer::AlreadyEnded(why) => anyhow::bail!("{why}"),
        },
        Command::Logs {
            api,
            task,
            follow,
            stderr,
        } => {
            let file = if stderr { "stderr" } else { "stdout" };
            plexus::client::logs(&plexus::client::Client::new(&api.api), &task, file, follow)?
        }
        Command::Agents { api, json } => {
            plexus::client::agents(&plexus::client::Client::new(&api.api), json)?
        }
        Command::Sim(a) => {
            hand_over_to_sim_program()?;
            if !plexus::simcli::main(*a)? {
                use std::io::Write;
                if let Err(e) = std::io::stdout().flush() {
                    eprintln!("plexus: writing the results: {e}");
                }
                std::process::exit(1);
            }
        }
        Command::Bench(BenchCommand::Allocator(o)) => crate::bench::allocator::run(o)?,
        Command::Bench(BenchCommand::Failover(o)) => crate::bench::failover::run(o)?,
        Command::Bench(BenchCommand::Launch(o)) => {
            let threads = plexus_config::NodeSettings::default().worker_threads;
            runtime(threads)?.block_on(crate::bench::launch::run(o))?
        }
        Command::Bench(BenchCommand::PlacedSpawn(o)) => {
            runtime(2)?.block_on(crate::bench::placed::run(o))?
        }
        Command::Bench(BenchCommand::Remote(o)) => {
            let threads = plexus_config::NodeSettings::default().worker_threads;
            runtime(threads)?.block_on(crate::bench::remote::run(o))?
        }
        Command::Certs(CertsCommand::Init { dir, cluster }) => {
            let p = plexus_net::tls::init_ca(&dir, &cluster)?;
            println!("created cluster CA {}", p.display());
        }
        Command::Certs(CertsCommand::Issue {
            dir,
            node,
            out,
            role,
            hosts,
        }) => {
            let out = out.unwrap_or_else(|| dir.clone());
            let (c, k) = plexus_net::tls::issue_for_hosts(&dir, &out, &node, role, &hosts)?;
            println!("issued {} and {} (roles: {role})", c.display(), k.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An error and its causes, each said once: a cause whose text its context already holds
/// (many errors print their source) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if out.contains(&t) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&t);
    }
    out
}

/// Parses arguments, runs the command, and maps errors to a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plexus: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}
