//! A master and agents as `plexus` processes on 127.0.0.x, driven through the HTTP API
//! the way an operator drives them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus::client::Client;
use plexus_kernel::api::{ClusterSummary, SubmitJob, TaskView};
use plexus_net::tls;

use super::*;

pub const HEARTBEAT_MS: u64 = 100;
pub const DOWN_MS: u64 = 1000;
pub const MASTER: &str = "master";

/// One `plexus` process that can be killed and started again with the same arguments.
pub struct Proc {
    pub name: String,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let st = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{signal} {pid}");
    }

    /// How many lines of its log contain every one of `words`.
    pub fn log_lines(&self, words: &[&str]) -> usize {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        t.lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .count()
    }

    /// Waits until more than `seen` lines of its log contain every one of `words` (a
    /// paused process's peers say so in their logs; nothing else tells).
    pub fn wait_log_lines(&self, words: &[&str], seen: usize, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.log_lines(words) <= seen {
            assert!(
                Instant::now() < end,
                "no new log line with {words:?} from {} within {timeout:?}:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A master and `n` agents as separate processes, sharing one CA.
pub struct KCluster {
    pub dir: tempfile::TempDir,
    pub master_addr: SocketAddr,
    pub api: String,
    pub master: Proc,
    pub agents: Vec<Proc>,
    /// The agents' QUIC addresses, in the order of `agents`.
    pub agent_addrs: Vec<SocketAddr>,
    /// The API token of the tests' principal (`test`, in the master's settings).
    pub token: String,
}

pub fn node_toml(
    dir: &Path,
    name: &str,
    role: plexus_net::Role,
    listen: SocketAddr,
    extra: &str,
) -> String {
    let t = certs_as(dir, name, role);
    format!(
        "name = \"{name}\"\nlisten = \"{listen}\"\nstate_dir = \"{}\"\n\
         heartbeat_interval = \"{HEARTBEAT_MS}ms\"\nnode_down_timeout = \"{DOWN_MS}ms\"\n{extra}\
         [tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join(name).display(),
        t.ca_cert.unwrap().display(),
        t.cert.unwrap().display(),
        t.key.unwrap().display(),
    )
}

impl KCluster {
    /// Starts the master on 127.0.0.1 and agents `{tag}-a1`.. on 127.0.0.2.., each with
    /// 4 cpus and 4096 MB, and waits until all are registered.
    pub fn start(tag: &str, agents: usize) -> KCluster {
        Self::start_with(tag, agents, "60s")
    }

    /// As [`KCluster::start`], with the master's `agent_removal_timeout`.
    pub fn start_with(tag: &str, agents: usize, removal_timeout: &str) -> KCluster {
        Self::start_full(tag, agents, removal_timeout, "", &|_| {})
    }

    /// As [`KCluster::start_with`], with `node` (top-level settings lines) in every
    /// node's configuration, and `prepare` called with each agent's state directory
    /// before the agent starts.
    pub fn start_full(
        tag: &str,
        agents: usize,
        removal_timeout: &str,
        node: &str,
        prepare: &dyn Fn(&Path),
    ) -> KCluster {
        Self::start_opts(tag, agents, removal_timeout, node, "", "", prepare)
    }

    /// As [`KCluster::start_full`], with `master_extra` (lines of the `[master]` table)
    /// in the master's configuration and `agent_extra` (of `[agent]`) in the agents'.
    #[allow(clippy::too_many_arguments)]
    pub fn start_opts(
        tag: &str,
        agents: usize,
        removal_timeout: &str,
        node: &str,
        master_extra: &str,
        agent_extra: &str,
        prepare: &dyn Fn(&Path),
    ) -> KCluster {
        let dir = tempfile::tempdir().unwrap();
        tls::init_ca(dir.path(), "plexus").unwrap();
        let master_addr: SocketAddr = format!("127.0.0.1:{}", free_udp("127.0.0.1"))
            .parse()
            .unwrap();
        let api_addr = format!("127.0.0.1:{}", free_tcp("127.0.0.1"));
        // The tests call the API as a principal of their own, whose token exists before
        // the master starts.
        let token = format!("test-token-{:016}", std::process::id());
        let token_file = dir.path().join("test.token");
        std::fs::write(&token_file, &token).unwrap();
        let cfg = format!(
            "{}[master]\napi_listen = \"{api_addr}\"\nallocation_interval = \"200ms\"\n\
             agent_removal_timeout = \"{removal_timeout}\"\n{master_extra}\
             [[master.principals]]\nname = \"test\"\ntoken_file = \"{}\"\n",
            node_toml(
                dir.path(),
                MASTER,
                plexus_net::Role::Master,
                master_addr,
                node
            ),
            token_file.display()
        );
        let cfg_path = dir.path().join("master.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        // An API over HTTPS is reached trusting the cluster's CA (each test is a process).
        let scheme = if master_extra.contains("api_tls = true") {
            std::env::set_var("PLEXUS_CA", dir.path().join("ca.pem"));
            "https"
        } else {
            "http"
        };
        let mut master = Proc {
            name: MASTER.into(),
            args: vec![
                "master".into(),
                "--config".into(),
                cfg_path.display().to_string(),
            ],
            log: dir.path().join("master.log"),
            child: None,
        };
        master.spawn();
        let mut procs = Vec::new();
        let mut agent_addrs = Vec::new();
        for i in 1..=agents {
            let name = format!("{tag}-a{i}");
            let ip = format!("127.0.0.{}", i + 1);
            let listen: SocketAddr = format!("{ip}:{}", free_udp(&ip)).parse().unwrap();
            agent_addrs.push(listen);
            let cfg = format!(
                "{}[agent]\nresources = \"cpus:4;mem:4096;disk:10000\"\nkill_grace = \"1s\"\n{agent_extra}",
                node_toml(dir.path(), &name, plexus_net::Role::Agent, listen, node)
            );
            let cfg_path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&cfg_path, cfg).unwrap();
            prepare(&dir.path().join(&name));
            let mut p = Proc {
                name: name.clone(),
                args: vec![
                    "agent".into(),
                    "--master".into(),
                    format!("{MASTER}@{master_addr}"),
                    "--config".into(),
                    cfg_path.display().to_string(),
                ],
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            p.spawn();
            procs.push(p);
        }
        let c = KCluster {
            dir,
            master_addr,
            api: format!("{scheme}://{api_addr}"),
            master,
            agents: procs,
            agent_addrs,
            token,
        };
        c.wait_state("all agents registered", Duration::from_secs(60), |s| {
            s.agents
                .iter()
                .filter(|a| a.status == plexus_kernel::protocol::AgentStatus::Active)
                .count()
                == agents
        });
        c
    }

    /// `Bearer TOKEN` of the tests' principal.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Status and body of a GET of `path` on the API.
    pub fn get(&self, path: &str) -> (u16, String) {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = http
            .get(&format!("{}{path}", self.api))
            .header("Authorization", self.bearer())
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    /// A counter's value in the master's `/metrics` (`name{labels}` as printed).
    pub fn metric(&self, series: &str) -> f64 {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
    }

    /// An API client with the tests' token.
    pub fn client(&self) -> Client {
        Client::with_token(&self.api, Some(self.token.clone()))
    }

    pub fn logs(&self) -> String {
        let mut out = format!("--- {} ---\n{}\n", self.master.name, self.master.log_tail());
        for a in &self.agents {
            out += &format!("--- {} ---\n{}\n", a.name, a.log_tail());
        }
        out
    }

    /// Polls the API until `f` holds, or fails the test with the last state and the logs.
    pub fn wait_state(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&ClusterSummary) -> bool,
    ) -> ClusterSummary {
        let c = self.client();
        let end = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < end {
            if let Ok(s) = c.state() {
                if f(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; last state: {last:#?}\n{}",
            self.logs()
        );
    }

    /// Polls the task list until `f` holds.
    pub fn wait_tasks(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&[TaskView]) -> bool,
    ) -> Vec<TaskView> {
        let c = self.client();
        let end = Instant::now() + timeout;
        let mut last = Vec::new();
        while Instant::now() < end {
            if let Ok(t) = c.tasks() {
                if f(&t) {
                    return t;
                }
                last = t;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; last tasks: {last:#?}\n{}",
            self.logs()
        );
    }

    pub fn agent(&mut self, name: &str) -> &mut Proc {
        self.agents.iter_mut().find(|a| a.name == name).unwrap()
    }
}

impl Drop for KCluster {
    fn drop(&mut self) {
        self.master.kill9();
        for a in &mut self.agents {
            a.kill9();
        }
        // Tasks outlive their agent by design: stop this cluster's task processes, then
        // their shims (whose command lines name this cluster's directory).
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("^sleep 300\\.{}", std::process::id())])
            .status();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &self.dir.path().display().to_string()])
            .status();
    }
}

/// A unique long-running command: `sleep 300.<pid><i>`.
pub fn sleeper(i: usize) -> Vec<String> {
    vec!["sleep".into(), format!("300.{}{i:03}", std::process::id())]
}

/// How many processes run exactly `argv`.
pub fn running(argv: &[String]) -> usize {
    pids_of(argv).len()
}

/// A `pgrep -f` / `pkill -f` pattern matching exactly the command line `argv`.
pub fn exactly(argv: &[String]) -> String {
    format!("^{}$", argv.join(" ").replace('.', "\\."))
}

/// The processes running exactly `argv`.
pub fn pids_of(argv: &[String]) -> Vec<i32> {
    let out = Command::new("pgrep")
        .args(["-f", &exactly(argv)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

pub fn job(argv: Vec<String>, cpus: f64, mem: u64) -> SubmitJob {
    SubmitJob {
        argv,
        cpus,
        mem,
        disk: 0,
        name: None,
        role: None,
        user: None,
    }
}
