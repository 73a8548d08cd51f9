//! Typed settings for every plexus role.
//!
//! Settings are layered, each layer overriding the one before it:
//! built-in defaults → a TOML file → `PLEXUS_*` environment variables → command-line flags.
//! Nested keys use `__` in environment variables (`PLEXUS_TLS__CA_CERT`), and list keys
//! (`peers`) take comma-separated values there. After loading, every value is validated;
//! an error names the offending key and value.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors raised while loading or validating settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, environment or overrides could not be read or parsed, for a reason that
    /// names no single key (a TOML syntax error, say).
    #[error("configuration error: {0}")]
    Load(String),
    /// A key that no setting has.
    #[error("unknown key `{key}` (known keys here: {known})")]
    UnknownKey {
        /// The dotted key.
        key: String,
        /// The keys allowed at that level.
        known: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid value for `{key}`: {value:?}: {reason}")]
    Invalid {
        /// The dotted key that holds the bad value.
        key: String,
        /// The bad value, as text.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The largest `max_frame_bytes` a node accepts (64 MiB); the wire codec refuses larger claims.
pub const MAX_FRAME_LIMIT: u32 = 64 * 1024 * 1024;

/// A peer to join: its node name and the address it listens on, written `name@host:port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr {
    /// The peer's node name (also the name its certificate must carry).
    pub name: String,
    /// The peer's QUIC listen address.
    pub addr: SocketAddr,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// Why a `name@host:port` text is not a [`PeerAddr`]; an `std::error::Error`, so `?`
/// carries it into `anyhow` and other error types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddrError {
    /// There is no `@`.
    #[error("{0:?} is not NAME@HOST:PORT")]
    Shape(String),
    /// The name part is not a valid node name.
    #[error("bad node name {name:?}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// What a name must be.
        reason: String,
    },
    /// The address part is not `ip:port`.
    #[error("bad address {addr:?}: {reason} (an IP address and port, like 127.0.0.1:7400)")]
    Addr {
        /// The address given.
        addr: String,
        /// Why it did not parse.
        reason: String,
    },
}

impl std::str::FromStr for PeerAddr {
    type Err = PeerAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, addr) = s
            .split_once('@')
            .ok_or_else(|| PeerAddrError::Shape(s.to_string()))?;
        validate_node_name(name).map_err(|reason| PeerAddrError::Name {
            name: name.to_string(),
            reason,
        })?;
        let addr = addr
            .parse()
            .map_err(|e: std::net::AddrParseError| PeerAddrError::Addr {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        Ok(PeerAddr {
            name: name.to_string(),
            addr,
        })
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks that a node name is usable as a certificate DNS name: 1–63 characters of
/// lowercase ASCII letters, digits, `-` and `.`, starting with a letter or digit.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let starts_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !starts_ok {
        return Err(
            "a node name is 1-63 characters of a-z, 0-9, '-' and '.', starting with a letter or digit"
                .to_string(),
        );
    }
    Ok(())
}

/// Where a node finds its TLS material.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM file of the cluster CA certificate.
    pub ca_cert: Option<PathBuf>,
    /// PEM file of this node's certificate, signed by the cluster CA and naming this node.
    pub cert: Option<PathBuf>,
    /// PEM file of this node's private key.
    pub key: Option<PathBuf>,
    /// Development mode: when no paths are given, create a CA and this node's certificate
    /// under `<state_dir>/tls` on first start.
    pub dev: bool,
}

/// Settings of the master role (`[master]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MasterSettings {
    /// Address of the operator HTTP API.
    pub api_listen: SocketAddr,
    /// How long an unreachable agent's tasks wait before they are `TASK_GONE`.
    #[serde(with = "humantime_serde")]
    pub agent_removal_timeout: Duration,
    /// With several masters: how long a new leader waits for the agents the registry
    /// admitted to re-register before it answers that a task it does not know is
    /// unknown (frameworks then launch its work again).
    #[serde(with = "humantime_serde")]
    pub agent_reregister_timeout: Duration,
    /// Longest pause between allocation cycles.
    #[serde(with = "humantime_serde")]
    pub allocation_interval: Duration,
    /// DRF weights of roles, `role = 2.0` (roles not listed weigh 1).
    pub weights: std::collections::BTreeMap<String, f64>,
    /// Quota limits of roles, `role = "cpus:8;mem:16384"` (Mesos resource syntax).
    pub quotas: std::collections::BTreeMap<String, String>,
    /// Most offers one framework gets per allocation cycle (0: no limit).
    pub offer_limit: u32,
    /// Roles the built-in jobs framework serves besides `*` and the roles named in
    /// `weights` and `quotas` (one registered framework per role).
    pub job_roles: Vec<String>,
    /// Host names the API answers to besides `localhost`, the loopback addresses and
    /// its listen address (requests naming another `Host` are refused).
    pub api_hosts: Vec<String>,
    /// Serve the API over HTTPS with this node's certificate (issue it with `--host` for
    /// the names clients use); clients then authenticate with a bearer token or with a
    /// `client` certificate of the cluster CA, which names their principal.
    pub api_tls: bool,
    /// Web origins (`https://dash.example.com`) whose pages may call the API from a
    /// browser (CORS); empty, the default: no page of another origin may read an answer.
    pub api_cors_origins: Vec<String>,
    /// Longest an API request may take, headers, body and answer (a client sending a
    /// byte at a time is cut off).
    #[serde(with = "humantime_serde")]
    pub api_request_timeout: Duration,
    /// Principals that may call the API, each with a bearer token in a file (besides
    /// `admin`, whose token the master makes in `STATE_DIR/master/api.token`).
    pub principals: Vec<PrincipalSettings>,
    /// Who may do what (`[master.acls]`); without it every principal may do everything
    /// but run tasks as root.
    pub acls: Option<AclSettings>,
    /// Every master of the cluster, this one included, `name@host:port` (their node
    /// listen addresses): they elect one leader with Raft and replicate the registry.
    /// Empty (the default): this is the only master.
    pub peers: Vec<PeerAddr>,
    /// The shortest election timeout (the longest is twice it): followers elect another
    /// leader after three to four times it without word from theirs; a leader cut off
    /// from a majority stops leading after twice it.
    #[serde(with = "humantime_serde")]
    pub election_timeout: Duration,
    /// How often the leader tells the other masters it leads.
    #[serde(with = "humantime_serde")]
    pub raft_heartbeat_interval: Duration,
    /// Registry writes between two snapshots; each master keeps half as many entries
    /// of its log before its last snapshot, and one further behind catches up from
    /// the leader's snapshot.
    pub registry_snapshot_every: u64,
}

/// Authorization rules (`[master.acls]`), in the spirit of Mesos's ACLs: each list
/// holds rules that allow; once the table is given, what no rule allows is denied (403).
/// The master's own admin principal is allowed everything but running tasks as root,
/// which only a `run_tasks` rule naming `root` allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AclSettings {
    /// Which principals' frameworks may register in which roles.
    pub register_frameworks: Vec<AclRule>,
    /// Who may submit jobs (run tasks) in which roles as which OS users.
    pub run_tasks: Vec<AclRule>,
    /// Who may kill the tasks of which owners.
    pub kill_tasks: Vec<AclRule>,
    /// Who may see the tasks of which owners.
    pub view_tasks: Vec<AclRule>,
    /// Who may read the output of the tasks of which owners.
    pub read_logs: Vec<AclRule>,
    /// Who may change the weights of which roles.
    pub update_weights: Vec<AclRule>,
    /// Who may change the quotas of which roles.
    pub update_quotas: Vec<AclRule>,
}

/// One rule: `principals` may act on the objects named by the other lists; `"*"` is
/// any (but never `root` among `users`). Lists a rule's kind does not use are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AclRule {
    /// The principals the rule is for.
    pub principals: Vec<String>,
    /// Roles (`register_frameworks`, `run_tasks`, `update_weights`, `update_quotas`).
    pub roles: Vec<String>,
    /// OS users tasks may run as (`run_tasks`).
    pub users: Vec<String>,
    /// Principals whose tasks are concerned (`kill_tasks`, `view_tasks`, `read_logs`).
    pub owners: Vec<String>,
}

impl Default for AclRule {
    fn default() -> Self {
        let any = || vec!["*".to_string()];
        AclRule {
            principals: Vec::new(),
            roles: any(),
            users: any(),
            owners: any(),
        }
    }
}

/// A principal of the API (`[[master.principals]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSettings {
    /// Its name (ACLs and task owners name it).
    pub name: String,
    /// A file whose first line is its bearer token (at least 16 bytes); without one the
    /// principal authenticates only with a `client` certificate naming it (`api_tls`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for MasterSettings {
    fn default() -> Self {
        MasterSettings {
            api_listen: "127.0.0.1:5050".parse().expect("static address"),
            agent_removal_timeout: Duration::from_secs(60),
            agent_reregister_timeout: Duration::from_secs(10),
            allocation_interval: Duration::from_secs(1),
            weights: Default::default(),
            quotas: Default::default(),
            offer_limit: 64,
            job_roles: Vec::new(),
            api_hosts: Vec::new(),
            api_cors_origins: Vec::new(),
            api_tls: false,
            api_request_timeout: Duration::from_secs(30),
            principals: Vec::new(),
            acls: None,
            peers: Vec::new(),
            election_timeout: Duration::from_millis(150),
            raft_heartbeat_interval: Duration::from_millis(50),
            registry_snapshot_every: 1_000,
        }
    }
}

/// Settings of the agent role (`[agent]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Resources to offer, Mesos syntax (`cpus:4;mem:8192;ports:[31000-32000]`); empty:
    /// detected from the machine.
    pub resources: String,
    /// Static reservations, `role = "cpus:1;mem:512"` (taken out of the resources).
    pub reservations: std::collections::BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when a task is killed.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// Isolate tasks with cgroups when the machine allows (else rlimits).
    pub cgroups: bool,
    /// The user tasks run as when the agent runs as root (a name, or `UID:GID`); `root`
    /// only if set so on purpose.
    pub task_user: String,
    /// Exit with an error when the agent has not registered with a master this long after
    /// it started (`0s`: keep trying for ever, logging why it cannot join).
    #[serde(with = "humantime_serde")]
    pub register_timeout: Duration,
    /// Most processes and threads one task may have (its `pids` cgroup); a refused fork
    /// ends the task with `REASON_CONTAINER_LIMITATION`. 0: no limit.
    pub task_max_pids: u64,
    /// Most of one task's stdout (and as much of its stderr) kept on disk, MB, over the
    /// live file and its rotations; older output is dropped.
    pub task_log_max_mb: u64,
    /// Rotated files kept per stream besides the live one (`stdout.1` …).
    pub task_log_rotations: u32,
    /// Free disk kept for the agent's own state, MB: no task starts below it, task
    /// output is dropped rather than written, and detected `disk` leaves it out.
    pub disk_floor_mb: u64,
    /// How often each task's memory (OOM) and pids counters are checked.
    #[serde(with = "humantime_serde")]
    pub limit_check_interval: Duration,
    /// How often each task's sandbox is measured against its `disk`.
    #[serde(with = "humantime_serde")]
    pub disk_check_interval: Duration,
    /// How long an executor whose agent is gone waits for it to come back before it
    /// exits (ending its actor): a restarted agent re-adopts its executors within it.
    #[serde(with = "humantime_serde")]
    pub executor_recovery_timeout: Duration,
    /// What operators say about the machine, `rack = "r1"`, matched by the placement
    /// constraints of actor tasks (keys and values: at most 128 printable characters).
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            resources: String::new(),
            reservations: Default::default(),
            kill_grace: Duration::from_secs(3),
            cgroups: true,
            task_user: "nobody".into(),
            register_timeout: Duration::ZERO,
            task_max_pids: 4096,
            task_log_max_mb: 20,
            task_log_rotations: 1,
            disk_floor_mb: 256,
            limit_check_interval: Duration::from_millis(250),
            disk_check_interval: Duration::from_secs(5),
            attributes: Default::default(),
            executor_recovery_timeout: Duration::from_secs(60),
        }
    }
}

/// Settings of one plexus node (every role runs on a node).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// This node's name, unique in the cluster; certificates name it.
    pub name: String,
    /// Cluster name; nodes of different clusters refuse each other.
    pub cluster: String,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Peers to join at start (`name@host:port`).
    pub peers: Vec<PeerAddr>,
    /// TLS material.
    pub tls: TlsSettings,
    /// Largest frame accepted or sent, in bytes.
    pub max_frame_bytes: u32,
    /// Default timeout of remote calls made through the node's helpers.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// How often a heartbeat is sent to each connected peer.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A peer silent for this long is declared down.
    #[serde(with = "humantime_serde")]
    pub node_down_timeout: Duration,
    /// Directory for this node's persistent state.
    pub state_dir: PathBuf,
    /// Runtime threads: 1 runs the node on one thread (lowest message latency, like one
    /// Erlang scheduler), N > 1 on N worker threads, 0 on one worker per core.
    pub worker_threads: usize,
    /// Connect to every node the peers know of, so the cluster is a full mesh (Erlang's
    /// `connect_all`). With `false` a node keeps only the links it dials or is dialed on:
    /// agents that talk only to their master need no link to each other.
    pub connect_all: bool,
    /// The master role's settings.
    pub master: MasterSettings,
    /// The agent role's settings.
    pub agent: AgentSettings,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            name: "node1".into(),
            cluster: "plexus".into(),
            listen: "127.0.0.1:7400".parse().expect("static address"),
            peers: Vec::new(),
            tls: TlsSettings::default(),
            max_frame_bytes: 16 * 1024 * 1024,
            call_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(250),
            node_down_timeout: Duration::from_secs(2),
            state_dir: PathBuf::from("/var/lib/plexus"),
            worker_threads: 1,
            connect_all: true,
            master: MasterSettings::default(),
            agent: AgentSettings::default(),
        }
    }
}

/// What is wrong with `o` as a web origin (`scheme://host[:port]`), if anything.
pub fn origin_problem(o: &str) -> Option<String> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    });
    (!ok).then(|| "must be an origin, http(s)://HOST[:PORT], with no path or `*`".to_string())
}

impl NodeSettings {
    /// Checks the masters' settings (`master.peers`, the election's timings).
    fn validate_masters(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        let m = &self.master;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        if m.raft_heartbeat_interval.is_zero() {
            return Err(bad(
                "master.raft_heartbeat_interval",
                ms(m.raft_heartbeat_interval),
                "must be positive",
            ));
        }
        if m.registry_snapshot_every < 2 {
            return Err(bad(
                "master.registry_snapshot_every",
                m.registry_snapshot_every.to_string(),
                "must be at least 2",
            ));
        }
        if m.election_timeout < m.raft_heartbeat_interval * 3 {
            return Err(bad(
                "master.election_timeout",
                ms(m.election_timeout),
                "must be at least three times master.raft_heartbeat_interval",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &m.peers {
            if !names.insert(p.name.as_str()) {
                return Err(bad("master.peers", p.to_string(), "names a master twice"));
            }
        }
        Ok(())
    }

    /// Checks every value; the error names the first bad key and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        validate_node_name(&self.name).map_err(|r| bad("name", self.name.clone(), &r))?;
        if self.cluster.is_empty() {
            return Err(bad("cluster", self.cluster.clone(), "must not be empty"));
        }
        if !(1024..=MAX_FRAME_LIMIT).contains(&self.max_frame_bytes) {
            return Err(bad(
                "max_frame_bytes",
                self.max_frame_bytes.to_string(),
                "must be between 1024 and 67108864 (64 MiB)",
            ));
        }
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        if self.call_timeout.is_zero() {
            return Err(bad(
                "call_timeout",
                ms(self.call_timeout),
                "must be positive",
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(bad(
                "heartbeat_interval",
                ms(self.heartbeat_interval),
                "must be positive",
            ));
        }
        if self.node_down_timeout < self.heartbeat_interval * 2 {
            return Err(bad(
                "node_down_timeout",
                ms(self.node_down_timeout),
                "must be at least twice heartbeat_interval",
            ));
        }
        self.validate_masters()?;
        if self.agent.executor_recovery_timeout < self.node_down_timeout {
            return Err(bad(
                "agent.executor_recovery_timeout",
                ms(self.agent.executor_recovery_timeout),
                "must be at least node_down_timeout",
            ));
        }
        for (k, v) in &self.agent.attributes {
            let printable = |t: &str| {
                !t.is_empty()
                    && t.len() <= 128
                    && t.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            };
            if !printable(k) || !printable(v) {
                return Err(bad(
                    &format!("agent.attributes.{k}"),
                    v.clone(),
                    "keys and values must be 1 to 128 printable ASCII characters",
                ));
            }
        }
        if self.worker_threads > 1024 {
            return Err(bad(
                "worker_threads",
                self.worker_threads.to_string(),
                "must be at most 1024 (0 means one per core)",
            ));
        }
        for (role, w) in &self.master.weights {
            if !(w.is_finite() && *w > 0.0) {
                return Err(bad(
                    &format!("master.weights.{role}"),
                    w.to_string(),
                    "must be a positive number",
                ));
            }
        }
        if self.master.allocation_interval.is_zero() {
            return Err(bad(
                "master.allocation_interval",
                ms(self.master.allocation_interval),
                "must be positive",
            ));
        }
        for o in &self.master.api_cors_origins {
            if let Some(why) = origin_problem(o) {
                return Err(bad("master.api_cors_origins", o.clone(), &why));
            }
        }
        let a = &self.agent;
        if a.task_log_max_mb == 0 || a.task_log_max_mb > 1 << 20 {
            return Err(bad(
                "agent.task_log_max_mb",
                a.task_log_max_mb.to_string(),
                "must be between 1 and 1048576",
            ));
        }
        if a.task_log_rotations > 100 {
            return Err(bad(
                "agent.task_log_rotations",
                a.task_log_rotations.to_string(),
                "must be at most 100",
            ));
        }
        for (key, d) in [
            ("agent.limit_check_interval", a.limit_check_interval),
            ("agent.disk_check_interval", a.disk_check_interval),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(bad(key, ms(d), "must be positive and at most 1h"));
            }
        }
        if let Some(p) = self.peers.iter().find(|p| p.name == self.name) {
            return Err(bad(
                "peers",
                p.to_string(),
                "a node cannot list itself as a peer",
            ));
        }
        let tls = &self.tls;
        let given = [&tls.ca_cert, &tls.cert, &tls.key]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if given != 0 && given != 3 {
            return Err(bad(
                "tls",
                format!(
                    "ca_cert={:?} cert={:?} key={:?}",
                    tls.ca_cert, tls.cert, tls.key
                ),
                "give all of ca_cert, cert and key, or none (with dev = true)",
            ));
        }
        if self.master.api_tls && given != 3 {
            return Err(bad(
                "master.api_tls",
                "true".into(),
                "needs [tls] ca_cert, cert and key: the API presents this node's certificate \
                 (issue it with `plexus certs issue DIR NAME --role master --host HOST`)",
            ));
        }
        if given == 0 && !tls.dev {
            return Err(bad(
                "tls",
                "no certificate paths".into(),
                "set tls.ca_cert, tls.cert and tls.key (see `plexus certs`), or tls.dev = true",
            ));
        }
        for (key, path) in [
            ("tls.ca_cert", &tls.ca_cert),
            ("tls.cert", &tls.cert),
            ("tls.key", &tls.key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return Err(bad(key, p.display().to_string(), "no such file"));
                }
            }
        }
        Ok(())
    }
}

/// A value given on the command line for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// A single value (parsed like the TOML value would be).
    One(String),
    /// A list value.
    Many(Vec<String>),
}

impl From<String> for Override {
    fn from(s: String) -> Self {
        Override::One(s)
    }
}

impl From<&str> for Override {
    fn from(s: &str) -> Self {
        Override::One(s.to_string())
    }
}

/// Builds settings of type `T` from the four layers and validates nothing: callers validate.
///
/// * `file`: optional TOML file; a missing file given explicitly is an error.
/// * `env_prefix`: usually `"PLEXUS"`; variables `PLEXUS_KEY` / `PLEXUS_SECTION__KEY`.
/// * `overrides`: `(dotted key, value)` pairs from command-line flags, applied last.
pub fn load_layered<T>(
    file: Option<&Path>,
    env_prefix: &str,
    overrides: &[(&str, Override)],
) -> Result<T, ConfigError>
where
    T: Serialize + serde::de::DeserializeOwned + Default,
{
    let defaults = config::Config::try_from(&T::default()).map_err(|e| explain(None, e))?;
    let mut b = config::Config::builder().add_source(defaults);
    if let Some(f) = file {
        if !f.is_file() {
            return Err(ConfigError::Invalid {
                key: "--config".into(),
                value: f.display().to_string(),
                reason: "no such file".into(),
            });
        }
        b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
    }
    // Only variables naming a known key: other programs' `PLEXUS_*` variables (a client's
    // `PLEXUS_API`, say) are not settings of this role. The file stays strict.
    let known: Vec<String> = defaults_keys::<T>()?;
    let pre = format!("{env_prefix}_");
    let vars: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.strip_prefix(&pre).is_some_and(|rest| {
                let top = rest.split("__").next().unwrap_or_default().to_lowercase();
                known.contains(&top)
            })
        })
        .collect();
    b = b.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("peers")
            .with_list_parse_key("master.job_roles")
            .try_parsing(true)
            .source(Some(vars)),
    );
    for (k, v) in overrides {
        b = match v {
            Override::One(v) => b.set_override(*k, v.as_str()),
            Override::Many(vs) => b.set_override(*k, vs.clone()),
        }
        .map_err(|e| explain(None, e))?;
    }
    let built = b.build().map_err(|e| explain(None, e))?;
    built
        .clone()
        .try_deserialize()
        .map_err(|e| explain(Some(&built), e))
}

/// Turns the `config` crate's error into one that names the key and the value once.
fn explain(built: Option<&config::Config>, e: config::ConfigError) -> ConfigError {
    use config::ConfigError as C;
    let (key, reason) = match e {
        C::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => (key, format!("expected {expected}, not {unexpected}")),
        C::At {
            key: Some(key),
            error,
            ..
        } => (key, error.to_string()),
        C::Message(m) => return unknown_key(None, &m).unwrap_or(ConfigError::Load(m)),
        other => return ConfigError::Load(other.to_string()),
    };
    if let Some(unknown) = unknown_key(Some(&key), &reason) {
        return unknown;
    }
    let value = built
        .and_then(|c| c.get::<config::Value>(&key).ok())
        .map(|v| v.to_string())
        .unwrap_or_default();
    let reason = if reason.contains("expected a duration") {
        "expected a duration with its unit, like \"3s\", \"250ms\" or \"1m\"".to_string()
    } else {
        reason
    };
    ConfigError::Invalid { key, value, reason }
}

/// serde's "unknown field `x`, expected one of ..." as an [`ConfigError::UnknownKey`]
/// naming the whole dotted key.
fn unknown_key(parent: Option<&str>, message: &str) -> Option<ConfigError> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let known = rest
        .trim_start_matches(", expected one of ")
        .trim_start_matches(", expected ")
        .to_string();
    let key = match parent {
        Some(p) => format!("{p}.{field}"),
        None => field.to_string(),
    };
    Some(ConfigError::UnknownKey { key, known })
}

/// The top-level keys of `T`'s defaults.
fn defaults_keys<T: Serialize + Default>() -> Result<Vec<String>, ConfigError> {
    let c = config::Config::builder()
        .add_source(config::Config::try_from(&T::default()).map_err(|e| explain(None, e))?)
        .build()
        .map_err(|e| explain(None, e))?;
    let table: config::Map<String, config::Value> =
        c.try_deserialize().map_err(|e| explain(None, e))?;
    Ok(table.into_keys().collect())
}

/// Loads and validates [`NodeSettings`] from all layers.
pub fn load_node(
    file: Option<&Path>,
    overrides: &[(&str, Override)],
) -> Result<NodeSettings, ConfigError> {
    let s: NodeSettings = load_layered(file, "PLEXUS", overrides)?;
    s.validate()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn dev() -> Vec<(&'static str, Override)> {
        vec![("tls.dev", "true".into())]
    }

    #[test]
    fn layers_apply_in_order() {
        let f = file(
            "name = \"alpha\"\nlisten = \"127.0.0.2:7000\"\nheartbeat_interval = \"100ms\"\n\
             peers = [\"beta@127.0.0.3:7000\"]\n[tls]\ndev = true\n",
        );
        let mut o = dev();
        o.push(("listen", "127.0.0.9:7100".into()));
        o.push((
            "peers",
            Override::Many(vec!["gamma@127.0.0.4:1".into(), "delta@127.0.0.5:2".into()]),
        ));
        let s = load_node(Some(f.path()), &o).unwrap();
        assert_eq!(s.name, "alpha");
        assert_eq!(s.listen, "127.0.0.9:7100".parse().unwrap());
        assert_eq!(s.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(s.peers[1].name, "delta", "flags replace the file's peers");
        assert_eq!(s.node_down_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let f = file("name = \"Bad Name\"\n");
        let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
        assert!(e.contains("`name`") && e.contains("Bad Name"), "{e}");

        let f = file("heartbeat_interval = \"fast\"\n");
        let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
        assert!(e.contains("heartbeat_interval"), "{e}");

        let f = file("peers = [\"nonsense\"]\n");
        let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
        assert!(
            e.contains("nonsense") || e.contains("NAME@HOST:PORT"),
            "{e}"
        );

        let f = file("node_down_timeout = \"100ms\"\n");
        let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
        assert!(
            e.contains("node_down_timeout") && e.contains("100ms"),
            "{e}"
        );

        let f = file("typo_key = 1\n");
        let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
        assert!(e.contains("typo_key"), "{e}");

        for (text, key, value) in [
            (
                "[master]\napi_cors_origins = [\"*\"]\n",
                "master.api_cors_origins",
                "*",
            ),
            (
                "[master]\napi_cors_origins = [\"https://a.example/x\"]\n",
                "master.api_cors_origins",
                "/x",
            ),
            (
                "[agent]\ntask_log_max_mb = 0\n",
                "agent.task_log_max_mb",
                "0",
            ),
            (
                "[agent]\nlimit_check_interval = \"0s\"\n",
                "agent.limit_check_interval",
                "0ms",
            ),
            (
                "[master]\nregistry_snapshot_every = 1\n",
                "master.registry_snapshot_every",
                "1",
            ),
            (
                "[master]\nelection_timeout = \"100ms\"\n",
                "master.election_timeout",
                "100ms",
            ),
            (
                "[master]\nraft_heartbeat_interval = \"0s\"\n",
                "master.raft_heartbeat_interval",
                "0ms",
            ),
            (
                "[master]\npeers = [\"m1@127.0.0.1:1\", \"m1@127.0.0.2:1\"]\n",
                "master.peers",
                "m1@127.0.0.2:1",
            ),
        ] {
            let f = file(text);
            let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value), "{text}: {e}");
        }
        let f = file("[master]\napi_cors_origins = [\"https://dash.example.com:8443\"]\n");
        load_node(Some(f.path()), &dev()).unwrap();
    }

    /// Each error names the key and the value once, with what would be accepted.
    #[test]
    fn errors_name_key_value_and_remedy_once() {
        let cases = [
            ("typo_key = 1\n", &["unknown key `typo_key`", "listen"][..]),
            (
                "[master]\nbogus = 1\n",
                &["unknown key `master.bogus`", "api_listen"],
            ),
            (
                "listen = \"localhost:7400\"\n",
                &["`listen`", "localhost:7400", "socket address"],
            ),
            (
                "node_down_timeout = 3\n",
                &["`node_down_timeout`", "\"3\"", "\"3s\""],
            ),
            (
                "worker_threads = \"x\"\n",
                &["`worker_threads`", "\"x\"", "integer"],
            ),
            (
                "peers = [\"nonsense\"]\n",
                &["`peers[0]`", "nonsense", "NAME@HOST:PORT"],
            ),
        ];
        for (text, wanted) in cases {
            let f = file(text);
            let e = load_node(Some(f.path()), &dev()).unwrap_err().to_string();
            for w in wanted {
                assert!(e.contains(w), "{text:?}: {e:?} lacks {w:?}");
            }
            let first = e.split(':').next().unwrap();
            assert_eq!(e.matches(first).count(), 1, "said twice: {e:?}");
        }
    }

    #[test]
    fn tls_paths_are_all_or_none() {
        let e = load_node(None, &[("tls.ca_cert", "/etc/hostname".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tls`"), "{e}");
        let e = load_node(None, &[]).unwrap_err().to_string();
        assert!(e.contains("tls.dev"), "{e}");
    }

    #[test]
    fn env_layer_takes_known_keys_only() {
        // SAFETY of set_var: this test is the only one in this crate touching these names.
        std::env::set_var("PLEXUSCFGTEST_HEARTBEAT_INTERVAL", "300ms");
        std::env::set_var("PLEXUSCFGTEST_API", "http://127.0.0.1:5050");
        std::env::set_var("PLEXUSCFGTEST_TLS__DEV", "true");
        let s: NodeSettings = load_layered(None, "PLEXUSCFGTEST", &[]).unwrap();
        assert_eq!(s.heartbeat_interval, Duration::from_millis(300));
        assert!(s.tls.dev);
        std::env::set_var("PLEXUSCFGTEST_HEARTBEAT_INTERVAL", "soon");
        let e = load_layered::<NodeSettings>(None, "PLEXUSCFGTEST", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat_interval"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = load_node(Some(Path::new("/nonexistent/plexus.toml")), &dev())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/plexus.toml"), "{e}");
    }

    #[test]
    fn peer_addr_round_trips() {
        let p: PeerAddr = "n-1@127.0.0.1:9".parse().unwrap();
        assert_eq!(p.to_string(), "n-1@127.0.0.1:9");
        assert!("@127.0.0.1:9".parse::<PeerAddr>().is_err());
        assert!("x@notanaddr".parse::<PeerAddr>().is_err());
    }
}
