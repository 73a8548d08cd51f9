//! Executors: the processes that host actor tasks.
//!
//! An actor task is placed like any task; its agent then starts the task's executor, a
//! program of the framework (usually the framework's own binary) that calls
//! [`run_if_requested`] at the top of `main`. Started by an agent, that call never
//! returns: the process becomes a plexus node named for this executor alone
//! (`xN.AGENT`), with a short-lived certificate its agent issued for it (see
//! `plexus_net::tls::ExecutorIssuer`), dials its agent, and hosts the actor types it
//! registered. The agent spawns the task's actor in it and grants it to the framework's
//! node; everything else about the actor (its messages, its supervision) is the actors
//! layer's. Started any other way, the call returns at once and the program goes on.
//!
//! One executor process hosts one actor task, inside the task's own cgroup: the task's
//! resources are exactly its limits, a memory hog is OOM-killed alone, and an executor
//! that dies ends exactly one task.
//!
//! ```no_run
//! # use ractor::{Actor, ActorRef, ActorProcessingErr};
//! # struct Worker;
//! # impl Actor for Worker { type Msg = (); type State = (); type Arguments = ();
//! #   async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) } }
//! fn main() {
//!     plexus_kernel::executor::run_if_requested(|types| {
//!         types.register("worker", || Worker);
//!     });
//!     // ... the program's own work (for example, a framework placing workers)
//! }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor::Actor;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr, TlsSettings};
use plexus_net::Role;

/// Environment variable with an executor's settings ([`ExecutorSettings`] as JSON).
pub const ENV_SETTINGS: &str = "PLEXUS_EXECUTOR";
/// Environment variable with an executor's private key (PEM).
pub const ENV_KEY: &str = "PLEXUS_EXECUTOR_KEY";

/// Exit status of an executor that could not start (bad settings, no node).
pub const EXIT_SETUP_FAILED: i32 = 70;
/// Exit status of an executor whose agent stayed away longer than its recovery timeout.
pub const EXIT_AGENT_LOST: i32 = 71;

/// What an agent tells the executor it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorSettings {
    /// The executor's node name (`xN.AGENT`), which its certificate names.
    pub node: String,
    /// The cluster's name.
    pub cluster: String,
    /// Its agent's node name and address.
    pub agent: String,
    /// Where its agent listens.
    pub agent_addr: SocketAddr,
    /// The address to listen on (its agent's host).
    pub listen_ip: IpAddr,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// Its certificate chain (PEM): its certificate, then its agent's executor CA.
    pub chain_pem: String,
    /// How long it waits for a lost agent to come back before it exits, ms.
    pub agent_recovery_timeout_ms: u64,
    /// Heartbeat period of its links, ms.
    pub heartbeat_interval_ms: u64,
    /// A peer silent for this long is down, ms.
    pub node_down_timeout_ms: u64,
}

/// Issues executors' identities: an agent's executor CA (`plexus_net::tls::ExecutorIssuer`)
/// on real machines; in simulations, where the simulated network carries roles without
/// certificates, names only.
pub trait IssueExecutors: std::fmt::Debug + Send + Sync + 'static {
    /// Executor `n`'s identity, valid for `valid_for`.
    fn issue(
        &self,
        n: u64,
        valid_for: Duration,
    ) -> Result<plexus_net::tls::ExecutorIdentity, String>;
    /// The cluster CA (PEM) executors trust.
    fn root_pem(&self) -> String;
}

impl IssueExecutors for plexus_net::tls::ExecutorIssuer {
    fn issue(
        &self,
        n: u64,
        valid_for: Duration,
    ) -> Result<plexus_net::tls::ExecutorIdentity, String> {
        plexus_net::tls::ExecutorIssuer::issue(self, n, valid_for).map_err(|e| e.to_string())
    }

    fn root_pem(&self) -> String {
        plexus_net::tls::ExecutorIssuer::root_pem(self).to_string()
    }
}

/// The actor types an executor hosts, registered by the program.
pub struct ExecutorTypes {
    node: Node,
}

impl ExecutorTypes {
    /// Registers actor type `type_name`, which the executor's agent may start here (the
    /// name a framework spawns it by; its arguments are decoded from the spawn).
    pub fn register<A, F>(&self, type_name: &str, make: F)
    where
        A: Actor,
        A::Arguments: DeserializeOwned,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.node.register_type(type_name, Role::Agent, make);
    }

    /// The executor's node.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

/// Runs this process as an executor if an agent started it as one (then never returns);
/// otherwise returns at once. `register` registers the actor types it hosts.
pub fn run_if_requested(register: impl FnOnce(&ExecutorTypes)) {
    let Ok(json) = std::env::var(ENV_SETTINGS) else {
        return;
    };
    // An actor's panic is an expected failure, reported to its supervisor with its text:
    // say it in one line (a backtrace would cost memory the task may not have).
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("plexus executor: panic{at}: {text}");
    }));
    let code = match run(&json, register) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plexus executor: {e}");
            EXIT_SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn run(json: &str, register: impl FnOnce(&ExecutorTypes)) -> Result<i32, String> {
    let settings: ExecutorSettings =
        serde_json::from_str(json).map_err(|e| format!("{ENV_SETTINGS}: {e}"))?;
    let key = std::env::var(ENV_KEY).map_err(|e| format!("{ENV_KEY}: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(serve(settings, key, register))
}

/// Writes the executor's TLS files into `dir` (its key readable by it alone).
fn write_tls(dir: &Path, s: &ExecutorSettings, key: &str) -> Result<TlsSettings, String> {
    let at = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
    let ca = dir.join("ca.pem");
    let cert = dir.join(format!("{}.pem", s.node));
    let key_path = dir.join(format!("{}.key", s.node));
    std::fs::write(&ca, &s.ca_pem).map_err(|e| at(&ca, e))?;
    std::fs::write(&cert, &s.chain_pem).map_err(|e| at(&cert, e))?;
    plexus_net::tls::write_private(&key_path, key).map_err(|e| at(&key_path, e))?;
    Ok(TlsSettings {
        ca_cert: Some(ca),
        cert: Some(cert),
        key: Some(key_path),
        dev: false,
    })
}

async fn serve(
    s: ExecutorSettings,
    key: String,
    register: impl FnOnce(&ExecutorTypes),
) -> Result<i32, String> {
    let sandbox = std::env::var_os("PLEXUS_SANDBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let state_dir = sandbox.join("executor");
    let tls = write_tls(&state_dir.join("tls"), &s, &key)?;
    let settings = NodeSettings {
        name: s.node.clone(),
        cluster: s.cluster.clone(),
        listen: SocketAddr::new(s.listen_ip, 0),
        peers: vec![PeerAddr {
            name: s.agent.clone(),
            addr: s.agent_addr,
        }],
        tls,
        state_dir,
        heartbeat_interval: Duration::from_millis(s.heartbeat_interval_ms),
        node_down_timeout: Duration::from_millis(s.node_down_timeout_ms),
        connect_all: false,
        ..NodeSettings::default()
    };
    let node = Node::start(&settings).await.map_err(|e| e.to_string())?;
    register(&ExecutorTypes { node: node.clone() });
    tracing::info!(node = %s.node, agent = %s.agent, "executor started");
    let lost_for = Duration::from_millis(s.agent_recovery_timeout_ms);
    wait_for_agent_loss(&node, &s.agent, lost_for).await;
    tracing::warn!(agent = %s.agent, "the agent stayed away for {lost_for:?}: the executor exits");
    node.leave().await;
    Ok(EXIT_AGENT_LOST)
}

/// Resolves once `agent` has been disconnected for `lost_for` on end (the executor's
/// actors then have no one accounting for them).
async fn wait_for_agent_loss(node: &Node, agent: &str, lost_for: Duration) {
    let mut changes = node.changes();
    let connected = |node: &Node| node.peers().iter().any(|p| p.name == agent);
    loop {
        while connected(node) {
            if changes.changed().await.is_err() {
                return;
            }
        }
        let back = tokio::time::timeout(lost_for, async {
            while !connected(node) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if back.is_err() {
            return;
        }
    }
}
