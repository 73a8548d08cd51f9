//! Command-line parsing and dispatch for the `plexus` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

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

/// How log lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the cluster CA and node certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a bare node: join its peers and host remote actors until SIGINT/SIGTERM.
    Node(NodeArgs),
    /// Run a master and an agent in this one process (development).
    Dev(RoleArgs),
    /// Run a master (with the built-in jobs framework and the HTTP API).
    Master(RoleArgs),
    /// Run an agent that joins the master at NAME@HOST:PORT.
    Agent {
        /// The master node, NAME@HOST:PORT.
        #[arg(long)]
        master: String,
        #[command(flatten)]
        role: RoleArgs,
    },
    /// Submit a command as a job and follow its state changes.
    Run(RunArgs),
    /// List tasks (running and pending; --all for ended ones too).
    Ps {
        #[command(flatten)]
        api: ApiArgs,
        /// Include ended tasks.
        #[arg(long)]
        all: bool,
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
    },
    /// Simulate a whole datacenter under seeded faults and check its invariants:
    /// `--seed N`, a sweep `--seeds 1..1000`, or `--replay N` with the full trace.
    Sim(crate::sim::SimArgs),
    /// Benchmarks, one figure per printed line (`plexus <figure> key=value ...`).
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Where the master's API is, and output format.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Master API URL.
    #[arg(long, env = "PLEXUS_API", default_value = "http://127.0.0.1:5050")]
    pub api: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of the server roles.
#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address of the HTTP API (master and dev), e.g. 127.0.0.1:5050.
    #[arg(long)]
    pub api_listen: Option<String>,
    /// Resources the agent offers, e.g. `cpus:4;mem:8192` (agent and dev).
    #[arg(long)]
    pub resources: Option<String>,
}

/// `plexus run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Cpus (fractional).
    #[arg(long, default_value_t = 0.1)]
    pub cpus: f64,
    /// Memory in MB.
    #[arg(long, default_value_t = 64)]
    pub mem: u64,
    /// Role (the built-in jobs framework runs in `*`).
    #[arg(long)]
    pub role: Option<String>,
    /// Name of the job.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the task id and return at once.
    #[arg(long, short)]
    pub detach: bool,
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
}

/// Settings flags shared by every role; they override the file and `PLEXUS_*` variables.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// TOML settings file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Node name (must match its certificate).
    #[arg(long)]
    pub name: Option<String>,
    /// QUIC listen address, e.g. 127.0.0.1:7400.
    #[arg(long)]
    pub listen: Option<String>,
    /// Peer to join, NAME@HOST:PORT (repeatable; replaces the file's list).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Directory for the node's state.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Development TLS: create a CA and certificate under the state dir if none is given.
    #[arg(long)]
    pub dev: bool,
}

impl NodeArgs {
    /// Loads and validates the node settings from all layers.
    pub fn settings(&self) -> anyhow::Result<plexus_config::NodeSettings> {
        self.settings_with(Vec::new())
    }

    /// As [`NodeArgs::settings`], with extra overrides applied before the flags.
    pub fn settings_with(
        &self,
        extra: Vec<(&str, plexus_config::Override)>,
    ) -> anyhow::Result<plexus_config::NodeSettings> {
        use plexus_config::Override;
        let mut o: Vec<(&str, Override)> = extra;
        if let Some(n) = &self.name {
            o.push(("name", n.as_str().into()));
        }
        if let Some(l) = &self.listen {
            o.push(("listen", l.as_str().into()));
        }
        if !self.peers.is_empty() {
            o.push(("peers", Override::Many(self.peers.clone())));
        }
        if let Some(d) = &self.state_dir {
            o.push(("state_dir", d.display().to_string().into()));
        }
        if self.dev {
            o.push(("tls.dev", "true".into()));
        }
        Ok(plexus_config::load_node(self.config.as_deref(), &o)?)
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
    /// Issue a certificate for NODE signed by the CA in DIR (writes NODE.pem, NODE.key).
    Issue {
        /// Directory holding ca.pem and ca.key.
        dir: PathBuf,
        /// Node name the certificate names (must match the node's `name` setting).
        node: String,
        /// Where to write the node's files (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("bad --log filter {filter:?}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; Ok("SIGINT") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

async fn run_node(settings: plexus_config::NodeSettings) -> anyhow::Result<()> {
    let node = plexus_actors::Node::start(&settings)
        .await
        .context("starting the node")?;
    plexus::builtin::install(&node).await?;
    let sig = wait_for_signal().await?;
    tracing::info!("{sig}: leaving the cluster");
    node.leave().await;
    Ok(())
}

/// The runtime a node's `worker_threads` setting asks for.
pub fn role_settings(
    r: &RoleArgs,
    dev: bool,
    master: Option<&str>,
) -> anyhow::Result<plexus_config::NodeSettings> {
    use plexus_config::Override;
    let mut extra: Vec<(&str, Override)> = Vec::new();
    if dev {
        extra.push(("name", "dev".into()));
        extra.push(("state_dir", ".plexus/dev".into()));
        extra.push(("tls.dev", "true".into()));
    }
    if let Some(a) = &r.api_listen {
        extra.push(("master.api_listen", a.as_str().into()));
    }
    if let Some(res) = &r.resources {
        extra.push(("agent.resources", res.as_str().into()));
    }
    let mut s = r.node.settings_with(extra)?;
    if let Some(m) = master {
        let p: plexus_config::PeerAddr = m
            .parse()
            .map_err(|e| anyhow::anyhow!("bad --master {m:?}: {e}"))?;
        if !s.peers.contains(&p) {
            s.peers.push(p);
        }
    }
    Ok(s)
}

async fn run_role(s: plexus_config::NodeSettings, master: bool, agent: bool) -> anyhow::Result<()> {
    let node = plexus_actors::Node::start(&s)
        .await
        .context("starting the node")?;
    plexus::builtin::register_all(&node);
    let m = if master {
        Some(plexus::roles::start_master(&node, &s).await?)
    } else {
        None
    };
    if agent {
        plexus::roles::start_agent(&node, &s, plexus::roles::own_shim()?).await?;
    }
    let sig = wait_for_signal().await?;
    tracing::info!("{sig}: stopping (running tasks keep running)");
    if let Some(m) = m {
        m.api.stop(true).await;
    }
    node.leave().await;
    Ok(())
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

fn run(cli: Cli) -> anyhow::Result<()> {
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
    init_logging(cli.log_format, if quiet { "error" } else { &cli.log })?;
    match cli.command {
        Command::Node(args) => {
            let settings = args.settings()?;
            runtime(settings.worker_threads)?.block_on(run_node(settings))?
        }
        Command::Dev(r) => {
            let s = role_settings(&r, true, None)?;
            runtime(s.worker_threads)?.block_on(run_role(s, true, true))?
        }
        Command::Master(r) => {
            let s = role_settings(&r, false, None)?;
            runtime(s.worker_threads)?.block_on(run_role(s, true, false))?
        }
        Command::Agent { master, role } => {
            let s = role_settings(&role, false, Some(&master))?;
            runtime(s.worker_threads)?.block_on(run_role(s, false, true))?
        }
        Command::Run(r) => {
            let c = plexus::client::Client::new(&r.api.api);
            let job = plexus_kernel::api::SubmitJob {
                argv: r.command,
                cpus: r.cpus,
                mem: r.mem,
                disk: 0,
                name: r.name,
                role: r.role,
            };
            if !plexus::client::run(&c, job, r.detach, r.api.json)? {
                return Err(anyhow::anyhow!("the task did not finish successfully"));
            }
        }
        Command::Ps { api, all } => {
            plexus::client::ps(&plexus::client::Client::new(&api.api), all, api.json)?
        }
        Command::Kill { api, task } => {
            plexus::client::Client::new(&api.api).kill(&task)?;
            println!("killing {task}");
        }
        Command::Logs {
            api,
            task,
            follow,
            stderr,
        } => {
            let file = if stderr { "stderr" } else { "stdout" };
            plexus::client::logs(&plexus::client::Client::new(&api.api), &task, file, follow)?
        }
        Command::Agents { api } => {
            plexus::client::agents(&plexus::client::Client::new(&api.api), api.json)?
        }
        Command::Sim(a) => {
            if !crate::sim::main(a)? {
                use std::io::Write;
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
        }
        Command::Bench(BenchCommand::Allocator(o)) => crate::bench::allocator::run(o)?,
        Command::Bench(BenchCommand::Launch(o)) => {
            let threads = plexus_config::NodeSettings::default().worker_threads;
            runtime(threads)?.block_on(crate::bench::launch::run(o))?
        }
        Command::Bench(BenchCommand::Remote(o)) => {
            let threads = plexus_config::NodeSettings::default().worker_threads;
            runtime(threads)?.block_on(crate::bench::remote::run(o))?
        }
        Command::Certs(CertsCommand::Init { dir, cluster }) => {
            let p = plexus_net::tls::init_ca(&dir, &cluster)?;
            println!("created cluster CA {}", p.display());
        }
        Command::Certs(CertsCommand::Issue { dir, node, out }) => {
            let out = out.unwrap_or_else(|| dir.clone());
            let (c, k) = plexus_net::tls::issue(&dir, &out, &node)?;
            println!("issued {} and {}", c.display(), k.display());
        }
    }
    Ok(())
}

/// Parses arguments, runs the command, and maps errors to a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
