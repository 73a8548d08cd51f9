//! `plexus bench failover --processes`: three `plexus master` processes and three
//! agents on 127.0.0.x, each task a real `sleep`; the leader is killed (`kill -9`) again
//! and again, and each time the wall clock runs from the kill until (a) another master
//! answers the API as leader, (b) it has every agent registered, (c) a job submitted to
//! it once it leads runs (its first offer came before that). The killed master is then
//! started again and follows, and the cluster runs steady for a moment, before the next
//! round.
//!
//! The masters poll nothing for the figures: the benchmark asks their APIs (redirects
//! not followed: a standby answers 307) as often as it can, so each figure carries up to
//! a few milliseconds of that asking.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use plexus_kernel::api::{ClusterSummary, SubmitJob};
use plexus_kernel::protocol::AgentStatus;
use plexus_net::Role;

use plexus::client::{leadership_status, single_leader, Client};

const MASTERS: usize = 3;
const AGENTS: usize = 3;
/// Longest wait for any one step before the benchmark gives up, saying which.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the cluster runs steady before the next kill.
const STEADY: Duration = Duration::from_secs(2);
/// Pause between two askings of the APIs.
const POLL: Duration = Duration::from_millis(2);

/// One `plexus` process of the benchmark's cluster.
struct Proc {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(std::env::current_exe()?)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("PLEXUS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a plexus process")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("kill -9")?;
            c.wait().context("reaping a killed process")?;
        }
        Ok(())
    }
}

/// The cluster; every process is killed when it is dropped.
struct Cluster {
    /// Configurations, certificates, state and logs; removed with the cluster.
    _dir: tempfile::TempDir,
    masters: Vec<Proc>,
    agents: Vec<Proc>,
    apis: Vec<String>,
    token: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.masters.iter_mut().chain(self.agents.iter_mut()) {
            if let Err(e) = p.kill9() {
                eprintln!("stopping a benchmark process: {e:#}");
            }
        }
        // The tasks the agents started are theirs to kill; once the agents are gone
        // whatever is left of them is ended here.
        let marker = format!("^sleep {}", sleep_prefix().replace('.', "\\."));
        if let Err(e) = Command::new("pkill").args(["-9", "-f", &marker]).status() {
            eprintln!("pkill: {e}");
        }
    }
}

/// How the benchmark's `sleep` tasks begin their argument: long, and naming this run.
fn sleep_prefix() -> String {
    format!("6000.{}", std::process::id())
}

fn free_udp(ip: &str) -> anyhow::Result<SocketAddr> {
    let s = UdpSocket::bind(format!("{ip}:0")).with_context(|| format!("binding {ip}"))?;
    Ok(s.local_addr()?)
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn node_toml(dir: &Path, name: &str, role: Role, listen: SocketAddr) -> anyhow::Result<String> {
    let (cert, key) =
        plexus_net::tls::issue_for_hosts(dir, dir, name, role, &["127.0.0.1".into()])?;
    Ok(format!(
        "name = \"{name}\"\ncluster = \"bench\"\nlisten = \"{listen}\"\nstate_dir = \"{}\"\n\
         [tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join(name).display(),
        dir.join("ca.pem").display(),
        cert.display(),
        key.display()
    ))
}

impl Cluster {
    fn start() -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        plexus_net::tls::init_ca(dir.path(), "bench")?;
        let token = format!("bench-token-{:016}", std::process::id());
        let token_file = dir.path().join("bench.token");
        std::fs::write(&token_file, &token)?;
        let names: Vec<String> = (1..=MASTERS).map(|i| format!("m{i}")).collect();
        let addrs = (0..MASTERS)
            .map(|_| free_udp("127.0.0.1"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let peers: Vec<String> = names
            .iter()
            .zip(&addrs)
            .map(|(n, a)| format!("{n}@{a}"))
            .collect();
        let quoted: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
        let mut masters = Vec::new();
        let mut apis = Vec::new();
        for (name, addr) in names.iter().zip(&addrs) {
            let api = free_tcp()?;
            let cfg = format!(
                "{}[master]\napi_listen = \"{api}\"\npeers = [{}]\n\
                 [[master.principals]]\nname = \"bench\"\ntoken_file = \"{}\"\n",
                node_toml(dir.path(), name, Role::Master, *addr)?,
                quoted.join(", "),
                token_file.display()
            );
            masters.push(Self::proc(dir.path(), name, cfg, &["master"])?);
            apis.push(format!("http://{api}"));
        }
        let mut agents = Vec::new();
        let all = peers.join(",");
        for i in 1..=AGENTS {
            let name = format!("a{i}");
            let listen = free_udp(&format!("127.0.0.{}", i + 1))?;
            let cfg = format!(
                "{}[agent]\nresources = \"cpus:4;mem:4096;disk:1000\"\nkill_grace = \"1s\"\n",
                node_toml(dir.path(), &name, Role::Agent, listen)?
            );
            agents.push(Self::proc(
                dir.path(),
                &name,
                cfg,
                &["agent", "--master", &all],
            )?);
        }
        Ok(Cluster {
            _dir: dir,
            masters,
            agents,
            apis,
            token,
        })
    }

    /// Writes `name`'s configuration and starts it as `plexus ARGS --config FILE`.
    fn proc(dir: &Path, name: &str, cfg: String, args: &[&str]) -> anyhow::Result<Proc> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, cfg)?;
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--config".into(), path.display().to_string()]);
        let mut p = Proc {
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    /// How master `i` answers a read (see [`leadership_status`]).
    fn status(&self, i: usize) -> Option<u16> {
        leadership_status(&self.apis[i], Some(&self.token), Duration::from_secs(2))
    }

    /// The master among `alive` that answers as leader while every other sends its
    /// clients to it, if there is one now.
    fn leader_now(&self, alive: &[usize]) -> Option<usize> {
        let statuses: Vec<Option<u16>> = alive.iter().map(|i| self.status(*i)).collect();
        single_leader(&statuses).map(|k| alive[k])
    }

    fn client(&self, i: usize) -> Client {
        Client::with_token(&self.apis[i], Some(self.token.clone()))
    }

    fn active_agents(&self, i: usize) -> usize {
        self.client(i)
            .state()
            .map(|s: ClusterSummary| {
                s.agents
                    .iter()
                    .filter(|a| a.status == AgentStatus::Active)
                    .count()
            })
            .unwrap_or(0)
    }

    fn running(&self, i: usize, id: &str) -> bool {
        self.client(i).tasks().is_ok_and(|ts| {
            ts.iter()
                .any(|t| t.task_id == id && t.state == "TASK_RUNNING")
        })
    }

    /// A `sleep` job whose command line names this run (so what is left can be found).
    fn job(&self, n: usize) -> SubmitJob {
        SubmitJob {
            argv: vec!["sleep".into(), format!("{}{n:03}", sleep_prefix())],
            cpus: 0.1,
            mem: 16,
            disk: 0,
            name: None,
            role: None,
            user: None,
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.masters.iter().chain(&self.agents) {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out += &format!("--- {} ---\n", p.log.display());
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
        out
    }

    /// Asks `look` until it answers, as often as [`POLL`] allows, for at most
    /// [`STEP_TIMEOUT`]; past that the error names `what` and shows the logs' tails.
    fn until<T>(&self, what: &str, mut look: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
        let end = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(v) = look() {
                return Ok(v);
            }
            if Instant::now() >= end {
                anyhow::bail!("no {what} within {STEP_TIMEOUT:?}\n{}", self.logs());
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Wall-clock times of one failover, from the kill.
struct Round {
    elected: Duration,
    registered: Duration,
    job_running: Duration,
}

/// Kills the leader, times the failover, and starts the killed master again as a
/// follower.
fn round(c: &mut Cluster, n: usize) -> anyhow::Result<Round> {
    let all: Vec<usize> = (0..MASTERS).collect();
    let old = c.until("leader before the kill", || c.leader_now(&all))?;
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != old).collect();
    let killed = Instant::now();
    c.masters[old].kill9()?;
    let new = c.until("new leader", || c.leader_now(&rest))?;
    let elected = killed.elapsed();
    c.until("every agent registered with the new leader", || {
        (c.active_agents(new) == AGENTS).then_some(())
    })?;
    let registered = killed.elapsed();
    let id = c
        .client(new)
        .submit(&c.job(n))
        .context("submitting to the new leader")?;
    c.until("the new job running", || c.running(new, &id).then_some(()))?;
    let job_running = killed.elapsed();
    c.masters[old].spawn()?;
    c.until("the killed master back, following", || {
        (c.status(old) == Some(307)).then_some(())
    })?;
    // The next failover is one of a steady cluster: the master just back has followed
    // the leader for a while (a master that joined a moment ago still holds its
    // startup vote, and delays the next election by one election timeout).
    std::thread::sleep(STEADY);
    Ok(Round {
        elected,
        registered,
        job_running,
    })
}

/// Runs `failovers` rounds and prints each, then the medians.
pub fn run(failovers: usize) -> anyhow::Result<()> {
    anyhow::ensure!(failovers > 0, "--failovers must be at least 1, not 0");
    let mut c = Cluster::start()?;
    let all: Vec<usize> = (0..MASTERS).collect();
    let first = c.until("first leader", || c.leader_now(&all))?;
    c.until("every agent registered", || {
        (c.active_agents(first) == AGENTS).then_some(())
    })?;
    // Work for the agents to bring back when they re-register.
    for n in 0..AGENTS {
        let id = c.client(first).submit(&c.job(n))?;
        c.until("a first job running", || {
            c.running(first, &id).then_some(())
        })?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut rounds = Vec::new();
    for i in 0..failovers {
        let r = round(&mut c, AGENTS + i)?;
        println!(
            "plexus failover_processes_run n={} elected_ms={:.1} registered_ms={:.1} job_running_ms={:.1}",
            i + 1,
            ms(r.elected),
            ms(r.registered),
            ms(r.job_running)
        );
        rounds.push(r);
    }
    let shape = format!("masters={MASTERS} agents={AGENTS} failovers={failovers}");
    let of = |f: fn(&Round) -> Duration| rounds.iter().map(|r| ms(f(r))).collect();
    super::failover::print_medians(
        "failover_processes",
        &[
            ("elected_ms", of(|r| r.elected)),
            ("registered_ms", of(|r| r.registered)),
            ("job_running_ms", of(|r| r.job_running)),
        ],
        &shape,
    );
    Ok(())
}
