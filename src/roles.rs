//! Starting the kernel's roles on a node: the master (with the built-in jobs framework and
//! the operator API) and the agent.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plexus_actors::Node;
use plexus_config::NodeSettings;
use plexus_kernel::agent::{
    detect_resources, AgentConfig, AgentSpec, AgentSupervisor, AgentSupervisorMsg,
};
use plexus_kernel::api::{ApiContext, ApiSpec, ApiSupervisor, ApiSupervisorMsg};
use plexus_kernel::containerizer::cgroups::CgroupMode;
use plexus_kernel::containerizer::logs::LogLimits;
use plexus_kernel::containerizer::{ProcessContainerizer, TaskLimits};
use plexus_kernel::jobs::{Jobs, JobsBackend, JobsStore, MAX_JOB_ROLES};
use plexus_kernel::master::{MasterConfig, MasterSupervisorMsg};
use plexus_kernel::protocol::{AgentMsg, FrameworkInfo, MasterMsg};
use plexus_kernel::registry::replica::{Replica, ReplicaConfig};
use plexus_kernel::resources::{validate_role, Resources, RoleResources, ANY_ROLE};
use plexus_kernel::scheduler::SchedulerDriver;
use plexus_kernel::supervision::{FaultSwitch, RestartPolicy};
use ractor::{Actor, ActorRef};

pub use plexus_kernel::master::leadership::CurrentMaster;
use plexus_kernel::master::leadership::{lead, start_supervisor, Leading};

/// A running master.
pub struct MasterHandle {
    /// The master's supervisor, while a master runs here.
    pub supervisor: CurrentMaster,
    /// Ends when the supervisor gives up on the master (or, with several masters, when
    /// this one's Raft stops).
    pub ended: tokio::task::JoinHandle<()>,
    /// With several masters: this one's replica of the registry.
    pub replica: Option<Arc<Replica>>,
    /// The built-in jobs framework.
    pub jobs: Jobs,
    /// The HTTP API's supervisor.
    pub api: ActorRef<ApiSupervisorMsg>,
    /// Ends when the API's supervisor gives up on it.
    pub api_ended: tokio::task::JoinHandle<()>,
}

impl MasterHandle {
    /// The master actor running now (none while its supervisor restarts it).
    pub async fn master(&self) -> anyhow::Result<Option<ActorRef<MasterMsg>>> {
        let sup = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(sup) = sup else { return Ok(None) };
        ractor::call_t!(sup, MasterSupervisorMsg::Current, 5000)
            .context("asking the master's supervisor")
    }
}

/// Starts the master, the jobs framework and the API on `node`.
pub async fn start_master(node: &Node, s: &NodeSettings) -> anyhow::Result<MasterHandle> {
    let mut quotas = std::collections::BTreeMap::new();
    for (role, text) in &s.master.quotas {
        let q = Resources::parse(text).map_err(|e| {
            anyhow::anyhow!("invalid value for `master.quotas.{role}`: {text:?}: {e}")
        })?;
        quotas.insert(role.clone(), q);
    }
    let dir = s.state_dir.join("master");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the master's state directory {}", dir.display()))?;
    let access = std::sync::Arc::new(api_access(s, &dir)?);
    let cfg = MasterConfig {
        agent_removal_timeout: s.master.agent_removal_timeout,
        agent_reregister_timeout: s.master.agent_reregister_timeout,
        allocation_interval: s.master.allocation_interval,
        weights: s.master.weights.clone(),
        quotas,
        offer_limit: s.master.offer_limit,
        acls: access.acls().clone(),
        credentials: access.credentials(),
        ..MasterConfig::default()
    };
    let role_changes = cfg.role_changes.clone();
    let reads = cfg.reads.clone();
    let supervisor = CurrentMaster::default();
    let roles = job_roles(s)?;
    let (ended, replica, jobs) = if s.master.peers.is_empty() {
        let (sup, ended) = start_supervisor(node, cfg)
            .await
            .context("starting the master")?;
        *supervisor.lock().unwrap_or_else(|p| p.into_inner()) = Some(sup);
        let store = JobsStore::open(&dir.join("jobs.redb"))?;
        let (jobs, framework_ids) = Jobs::open(&roles, JobsBackend::Local(Arc::new(store)))?;
        for role in &roles {
            let info = jobs_info(role, framework_ids.get(role).cloned());
            SchedulerDriver::start(node, info, jobs.scheduler_for(role), JOBS_SUBSCRIBE)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("starting the jobs framework of role {role:?}: {e}")
                })?;
        }
        (ended, None, jobs)
    } else {
        let replica = Arc::new(start_replica(node, s, &dir).await?);
        let scheme = if s.master.api_tls { "https" } else { "http" };
        let mut api_addr = s.master.api_listen;
        if api_addr.ip().is_unspecified() {
            api_addr.set_ip(node.addr().ip());
        }
        let api = format!("{scheme}://{api_addr}");
        // The jobs live in the registry; the framework runs on whichever master leads.
        let backend = JobsBackend::Replicated(replica.clone());
        let (jobs, _) = Jobs::open(&roles, backend.clone())?;
        jobs.trust_unknown();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(run_jobs_while_leading(
            node.clone(),
            jobs.clone(),
            backend,
            rx,
        ));
        let lead = lead(
            node.clone(),
            cfg,
            replica.clone(),
            api,
            supervisor.clone(),
            Some(tx),
        );
        (tokio::spawn(lead), Some(replica), jobs)
    };
    // Bound once: a restarted API serves on the same socket.
    let listener = std::net::TcpListener::bind(s.master.api_listen).with_context(|| {
        format!(
            "binding the API at {} (`master.api_listen`)",
            s.master.api_listen
        )
    })?;
    let ctx = ApiContext {
        jobs: jobs.clone(),
        node: node.clone(),
        reads,
        access,
        roles: role_changes,
        standby: replica.clone(),
    };
    let spec = ApiSpec::new(node.clone(), listener, ctx, FaultSwitch::default());
    let (api, api_ended) =
        Actor::spawn(None, ApiSupervisor::new(spec, RestartPolicy::default()), ())
            .await
            .context("starting the HTTP API")?;
    tracing::info!(api = %s.master.api_listen, "master started");
    Ok(MasterHandle {
        supervisor,
        ended,
        replica,
        jobs,
        api,
        api_ended,
    })
}

/// Most time the jobs framework takes to subscribe to the master of its own process.
const JOBS_SUBSCRIBE: Duration = Duration::from_secs(30);

/// The built-in jobs framework of `role`, under the id it had (its tasks are its own).
fn jobs_info(role: &str, id: Option<plexus_kernel::ids::FrameworkId>) -> FrameworkInfo {
    FrameworkInfo {
        id,
        name: if role == ANY_ROLE {
            "jobs".into()
        } else {
            format!("jobs-{role}")
        },
        principal: Some("plexus".into()),
        role: role.to_string(),
        failover_timeout_secs: 3600.0,
    }
}

/// With several masters: runs the jobs framework while this master leads. When it
/// begins to lead, the framework takes back the jobs the registry holds and subscribes
/// under the ids the registry names (the leader before had them: the tasks stay the
/// framework's); when it stops leading, the framework's drivers stop before its master
/// does, so only the leader's framework ever acts.
async fn run_jobs_while_leading(
    node: Node,
    jobs: Jobs,
    backend: JobsBackend,
    mut leading: tokio::sync::mpsc::Receiver<Leading>,
) {
    let mut drivers: Vec<ActorRef<plexus_kernel::protocol::SchedulerMsg>> = Vec::new();
    while let Some((term, done)) = leading.recv().await {
        for d in drivers.drain(..) {
            if let Err(e) = d
                .stop_and_wait(Some("no longer leading".into()), Some(JOBS_SUBSCRIBE))
                .await
            {
                tracing::warn!("stopping a jobs framework driver: {e}");
            }
        }
        if let Some(term) = term {
            match backend.load() {
                Ok(saved) => {
                    let ids = jobs.take_back(saved);
                    tracing::info!(
                        term,
                        jobs = jobs.list().len(),
                        "the jobs framework runs here"
                    );
                    for role in jobs.roles() {
                        let info = jobs_info(&role, ids.get(&role).cloned());
                        let sched = jobs.scheduler_for(&role);
                        match SchedulerDriver::start(&node, info, sched, JOBS_SUBSCRIBE).await {
                            Ok((d, _)) => drivers.push(d),
                            Err(e) => tracing::error!(
                                "the jobs framework of role {role:?} did not start: {e}"
                            ),
                        }
                    }
                }
                Err(e) => tracing::error!("the jobs framework cannot run: {e}"),
            }
        }
        if done.send(()).is_err() {
            tracing::debug!("leadership changed again before the jobs framework followed");
        }
    }
}

/// Joins the other masters of `master.peers` and starts this one's replica of the
/// registry.
async fn start_replica(
    node: &Node,
    s: &NodeSettings,
    dir: &std::path::Path,
) -> anyhow::Result<Replica> {
    for p in &s.master.peers {
        if p.name != node.name() {
            node.join(p.clone());
        }
    }
    let cfg = ReplicaConfig {
        peers: s.master.peers.iter().map(|p| p.name.clone()).collect(),
        dir: dir.join("registry"),
        disk: Arc::new(plexus_kernel::statefile::RealDisk),
        heartbeat_ms: s.master.raft_heartbeat_interval.as_millis() as u64,
        election_timeout_ms: s.master.election_timeout.as_millis() as u64,
        snapshot_every: s.master.registry_snapshot_every,
        log_in: None,
    };
    Ok(Replica::start(node, cfg).await?)
}

/// Who may call the API: `admin` with the master's own token (made once in
/// `STATE_DIR/master/api.token` and left where the CLI finds it), and the principals of
/// `master.principals`.
pub fn api_access(
    s: &NodeSettings,
    master_dir: &std::path::Path,
) -> anyhow::Result<plexus_kernel::api::auth::ApiAccess> {
    use plexus_kernel::api::auth::{self, ADMIN_PRINCIPAL};
    let mut access = auth::ApiAccess::new(s.master.api_listen, &s.master.api_hosts);
    access.request_timeout_ms = s.master.api_request_timeout.as_millis() as u64;
    access.set_cors_origins(s.master.api_cors_origins.clone());
    let mut names = std::collections::BTreeSet::from([ADMIN_PRINCIPAL.to_string()]);
    for (i, p) in s.master.principals.iter().enumerate() {
        if p.name.is_empty() || !names.insert(p.name.clone()) {
            anyhow::bail!(
                "invalid value for `master.principals[{i}].name`: {:?} (empty, `{ADMIN_PRINCIPAL}`, or named twice)",
                p.name
            );
        }
        if let Some(file) = &p.token_file {
            access
                .add_token_file(&p.name, file)
                .with_context(|| format!("`master.principals[{i}].token_file`"))?;
        }
    }
    if s.master.api_tls {
        let t = &s.tls;
        let (Some(ca), Some(cert), Some(key)) = (&t.ca_cert, &t.cert, &t.key) else {
            anyhow::bail!("`master.api_tls` needs [tls] ca_cert, cert and key");
        };
        let m = plexus_net::tls::TlsMaterial::load(ca, cert, key)
            .context("loading the API's certificate (`master.api_tls`)")?;
        access.set_tls(m.https_server_config()?);
    }
    if let Some(acls) = &s.master.acls {
        check_acl_principals(acls, &names)?;
    }
    access.set_acls(plexus_kernel::acl::Acls::new(
        s.master.acls.clone(),
        Some(ADMIN_PRINCIPAL.to_string()),
    ));
    let (token, made) = auth::ensure_token_file(&master_dir.join("api.token"))?;
    access.add_token(ADMIN_PRINCIPAL, &token);
    if made {
        tracing::info!(file = %master_dir.join("api.token").display(), "made the API token of principal {ADMIN_PRINCIPAL}");
    }
    leave_cli_credential(s.master.api_listen, &token);
    Ok(access)
}

/// Every principal an ACL rule names must be configured (or `*`): a misspelt name would
/// silently allow nobody.
fn check_acl_principals(
    acls: &plexus_config::AclSettings,
    names: &std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    let lists = [
        ("register_frameworks", &acls.register_frameworks),
        ("run_tasks", &acls.run_tasks),
        ("kill_tasks", &acls.kill_tasks),
        ("view_tasks", &acls.view_tasks),
        ("read_logs", &acls.read_logs),
        ("update_weights", &acls.update_weights),
        ("update_quotas", &acls.update_quotas),
    ];
    for (kind, rules) in lists {
        for (i, r) in rules.iter().enumerate() {
            let key = format!("master.acls.{kind}[{i}]");
            if r.principals.is_empty() {
                anyhow::bail!("invalid value for `{key}.principals`: [] (name at least one principal, or \"*\")");
            }
            for p in r.principals.iter().chain(&r.owners) {
                if p != "*" && !names.contains(p) {
                    anyhow::bail!(
                        "invalid value in `{key}`: {p:?} is not a principal (known: {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            for u in &r.users {
                if u != "*" {
                    if let Some(e) = plexus_kernel::protocol::user_problem(u) {
                        anyhow::bail!("invalid value in `{key}.users`: {e}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Copies the admin token where the CLI of this machine's user looks for the API at
/// `listen` (see [`crate::client::credential_path`]); a failure is said, not fatal:
/// `PLEXUS_TOKEN_FILE` still works.
fn leave_cli_credential(listen: std::net::SocketAddr, token: &str) {
    let hosts: Vec<String> = if listen.ip().is_unspecified() {
        vec![
            format!("127.0.0.1:{}", listen.port()),
            format!("localhost:{}", listen.port()),
        ]
    } else {
        vec![listen.to_string()]
    };
    for h in hosts {
        let Some(path) = crate::client::credential_path(&h) else {
            tracing::warn!("no HOME: the CLI must be given the API token (PLEXUS_TOKEN_FILE)");
            return;
        };
        if let Err(e) = plexus_net::tls::write_private(&path, &format!("{token}\n")) {
            tracing::warn!(file = %path.display(), "cannot leave the API token for the CLI: {e}");
        }
    }
}

/// The roles the built-in jobs framework serves: `*`, `master.job_roles`, and the roles
/// given weights or quotas, each once, in order.
pub fn job_roles(s: &NodeSettings) -> anyhow::Result<Vec<String>> {
    let mut roles = std::collections::BTreeSet::from([ANY_ROLE.to_string()]);
    let named = s.master.job_roles.iter().map(|r| ("master.job_roles", r));
    let weighted = s.master.weights.keys().map(|r| ("master.weights", r));
    let quota = s.master.quotas.keys().map(|r| ("master.quotas", r));
    for (key, role) in named.chain(weighted).chain(quota) {
        validate_role(role)
            .map_err(|e| anyhow::anyhow!("invalid value for `{key}`: {role:?}: {e}"))?;
        roles.insert(role.clone());
    }
    anyhow::ensure!(
        roles.len() <= MAX_JOB_ROLES,
        "invalid value for `master.job_roles`: {} roles in all; at most {MAX_JOB_ROLES}",
        roles.len()
    );
    Ok(roles.into_iter().collect())
}

/// The agent's resources from its settings: `agent.resources` (or the machine's), with
/// `agent.reservations` set aside for their roles.
pub fn agent_resources(s: &NodeSettings) -> anyhow::Result<RoleResources> {
    let bad = |key: &str, value: &str, e: &dyn std::fmt::Display| {
        anyhow::anyhow!("invalid value for `{key}`: {value:?}: {e}")
    };
    let mut total = if s.agent.resources.trim().is_empty() {
        let mut r = detect_resources();
        // Disk offered is what is free less the floor kept for the agent's own state.
        let free_mb = s
            .state_dir
            .ancestors()
            .find_map(plexus_kernel::containerizer::shim::free_mb);
        if let Some(free_mb) = free_mb {
            r.disk_mb = r.disk_mb.min(free_mb.saturating_sub(s.agent.disk_floor_mb));
        }
        r
    } else {
        Resources::parse(&s.agent.resources)
            .map_err(|e| bad("agent.resources", &s.agent.resources, &e))?
    };
    let mut rr = RoleResources::default();
    for (role, text) in &s.agent.reservations {
        let key = format!("agent.reservations.{role}");
        if role == ANY_ROLE || role.is_empty() {
            return Err(bad(&key, text, &"reservations are for named roles"));
        }
        let r = Resources::parse(text).map_err(|e| bad(&key, text, &e))?;
        total = total
            .checked_sub(&r)
            .ok_or_else(|| bad(&key, text, &"more than the agent has"))?;
        rr.0.insert(role.clone(), r);
    }
    rr.0.insert(ANY_ROLE.into(), total);
    Ok(rr)
}

/// A running agent.
pub struct AgentHandle {
    /// The agent's supervisor.
    pub supervisor: ActorRef<AgentSupervisorMsg>,
    /// Ends when the supervisor gives up on the agent.
    pub ended: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    /// The agent actor running now (none while its supervisor restarts it).
    pub async fn agent(&self) -> anyhow::Result<Option<ActorRef<AgentMsg>>> {
        ractor::call_t!(self.supervisor, AgentSupervisorMsg::Current, 5000)
            .context("asking the agent's supervisor")
    }
}

/// Starts the agent on `node`; tasks run under `shim` (program and leading arguments).
pub async fn start_agent(
    node: &Node,
    s: &NodeSettings,
    shim: Vec<OsString>,
) -> anyhow::Result<AgentHandle> {
    let resources = agent_resources(s)?;
    let state_dir = s.state_dir.join("agent");
    let mode = if s.agent.cgroups {
        CgroupMode::detect(&s.name)
    } else {
        CgroupMode::Unavailable {
            why: "disabled by `agent.cgroups = false`".into(),
        }
    };
    if let CgroupMode::Unavailable { why } = &mode {
        tracing::warn!("tasks get no cgroup isolation, only an address-space rlimit: {why}");
    }
    let limits = TaskLimits {
        max_pids: (s.agent.task_max_pids > 0).then_some(s.agent.task_max_pids),
        logs: LogLimits {
            max_bytes: s.agent.task_log_max_mb << 20,
            rotations: s.agent.task_log_rotations,
        },
        disk_floor_mb: s.agent.disk_floor_mb,
        check_interval_ms: s.agent.limit_check_interval.as_millis() as u64,
        disk_check_interval_ms: s.agent.disk_check_interval.as_millis() as u64,
    };
    let mut c =
        ProcessContainerizer::new(state_dir.join("sandboxes"), shim, mode).with_limits(limits);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ids = plexus_kernel::containerizer::lookup_user(&s.agent.task_user).map_err(|e| {
            anyhow::anyhow!(
                "invalid value for `agent.task_user`: {:?}: {e}",
                s.agent.task_user
            )
        })?;
        tracing::info!(user = %s.agent.task_user, uid = ids.0, gid = ids.1, "tasks run as this user");
        c = c.with_task_ids(ids);
    } else {
        tracing::warn!(
            "the agent does not run as root: tasks run as its own user, not `agent.task_user` ({:?})",
            s.agent.task_user
        );
    }
    let cfg = AgentConfig {
        agent_id: None,
        resources,
        state_dir,
        kill_grace: s.agent.kill_grace,
        tick: Duration::from_millis(250),
        drop_acknowledgements: false,
        forget_completed_tasks: false,
        send_unwritten_updates: false,
        fault: plexus_kernel::supervision::FaultSwitch::default(),
        agent_fault: plexus_kernel::supervision::FaultSwitch::default(),
        disk: Arc::new(plexus_kernel::agent::RealDisk),
        inbox_limit_msgs: plexus_kernel::agent::AGENT_INBOX_LIMIT_MSGS,
        executors: executor_issuer(s),
        attributes: s.agent.attributes.clone(),
        executor_recovery: s.agent.executor_recovery_timeout,
    };
    let (supervisor, ended) = Actor::spawn(
        None,
        AgentSupervisor::new(
            AgentSpec::new(node.clone(), cfg, Arc::new(c)),
            RestartPolicy::default(),
        ),
        (),
    )
    .await
    .context("starting the agent")?;
    Ok(AgentHandle { supervisor, ended })
}

/// The agent's executor CA (`NAME.executors.pem`/`.key` beside its certificate), if
/// it has one: without it the agent runs no actor tasks.
fn executor_issuer(s: &NodeSettings) -> Option<Arc<dyn plexus_kernel::executor::IssueExecutors>> {
    let (dir, root) = match (&s.tls.cert, &s.tls.ca_cert) {
        (Some(cert), Some(ca)) => (cert.parent()?.to_path_buf(), ca.clone()),
        _ => {
            let dir = s.state_dir.join("tls");
            let root = plexus_net::tls::ca_paths(&dir).0;
            (dir, root)
        }
    };
    let (cert, key) = plexus_net::tls::executor_ca_paths(&dir, &s.name);
    if !cert.exists() {
        tracing::info!(
            "no executor CA at {}: this agent runs no actor tasks (`plexus certs issue` makes one with an agent's certificate)",
            cert.display()
        );
        return None;
    }
    match plexus_net::tls::ExecutorIssuer::load(&s.name, &cert, &key, &root) {
        Ok(i) => Some(Arc::new(i) as Arc<dyn plexus_kernel::executor::IssueExecutors>),
        Err(e) => {
            tracing::warn!("this agent runs no actor tasks: {e}");
            None
        }
    }
}

/// The shim command: `plexus-shim` next to this program when it is there (it starts
/// faster), else `[current_exe, "__shim"]`.
pub fn own_shim() -> anyhow::Result<Vec<OsString>> {
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("plexus-shim");
    if sibling.is_file() {
        return Ok(vec![sibling.into()]);
    }
    Ok(vec![exe.into(), "__shim".into()])
}

#[cfg(test)]
mod acl_example_tests {
    use super::*;

    #[test]
    fn the_example_acl_file_loads_and_names_only_its_principals() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/master-acls.toml");
        // Parsed as the master parses it (its certificates are not there to check).
        let s: NodeSettings = plexus_config::load_layered(Some(&path), "PLEXUS", &[]).unwrap();
        let acls = s.master.acls.clone().expect("the example has ACLs");
        let mut names: std::collections::BTreeSet<String> =
            s.master.principals.iter().map(|p| p.name.clone()).collect();
        names.insert(plexus_kernel::api::auth::ADMIN_PRINCIPAL.into());
        check_acl_principals(&acls, &names).unwrap();
        names.remove("oncall");
        let e = check_acl_principals(&acls, &names).unwrap_err().to_string();
        assert!(e.contains("\"oncall\" is not a principal"), "{e}");
    }
}
