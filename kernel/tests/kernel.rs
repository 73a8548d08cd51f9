//! Master, agents and frameworks as actors on in-process nodes over QUIC, with real
//! task processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr, TlsSettings};
use plexus_kernel::agent::{AgentConfig, AgentSpec, AgentSupervisor};
use plexus_kernel::containerizer::cgroups::CgroupMode;
use plexus_kernel::containerizer::ProcessContainerizer;
use plexus_kernel::jobs::{JobRequest, Jobs};
use plexus_kernel::master::{MasterConfig, MasterSpec, MasterSupervisor, MasterSupervisorMsg};
use plexus_kernel::protocol::*;
use plexus_kernel::resources::{Resources, RoleResources};
use plexus_kernel::scheduler::{DriverHandle, Scheduler, SchedulerDriver};
use plexus_kernel::status::StatusUpdate;
use plexus_kernel::supervision::{FaultSwitch, RestartPolicy};
use plexus_kernel::task::TaskState;
use ractor::{call_t, Actor, ActorRef};

struct Cluster {
    dir: tempfile::TempDir,
    master_node: Node,
    sup: ActorRef<MasterSupervisorMsg>,
    /// What the master publishes for the API.
    reads: plexus_kernel::master::ReadModel,
    _agents: Vec<Node>,
}

/// The roles a test node gets by its name: `master…` is a master, `agent…` or `a…` an
/// agent, any other a client.
fn test_roles(name: &str) -> plexus_net::Roles {
    use plexus_net::Role;
    if name.starts_with("master") {
        Role::Master.into()
    } else if name.starts_with('a') {
        Role::Agent.into()
    } else {
        Role::Client.into()
    }
}

fn settings(dir: &std::path::Path, name: &str, peers: Vec<PeerAddr>) -> NodeSettings {
    let (c, k) = plexus_net::tls::issue(dir, dir, name, test_roles(name)).unwrap();
    NodeSettings {
        name: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers,
        tls: TlsSettings {
            ca_cert: Some(dir.join("ca.pem")),
            cert: Some(c),
            key: Some(k),
            dev: false,
        },
        heartbeat_interval: Duration::from_millis(100),
        node_down_timeout: Duration::from_millis(600),
        state_dir: dir.join(name),
        ..NodeSettings::default()
    }
}

/// Starts agent `name` with `cpus` and `mem` MB (`size`), panicking once a switch of
/// `faults` (task actors, the agent) is tripped, its checkpoint on `disk`.
async fn start_agent(
    dir: &std::path::Path,
    name: &str,
    master: &Node,
    (cpus, mem): (f64, u64),
    (fault, agent_fault): (&FaultSwitch, &FaultSwitch),
    disk: Arc<dyn plexus_kernel::statefile::Disk>,
) -> Node {
    let node = Node::start(&settings(dir, name, vec![master.peer_addr()]))
        .await
        .unwrap();
    let state_dir = dir.join(name).join("agent");
    let containerizer = ProcessContainerizer::new(
        state_dir.join("sandboxes"),
        vec![env!("CARGO_BIN_EXE_plexus-kernel-shim").into()],
        CgroupMode::Unavailable {
            why: "not needed by this test".into(),
        },
    );
    let cfg = AgentConfig {
        agent_id: None,
        resources: RoleResources::unreserved(Resources::new(cpus, mem)),
        state_dir,
        kill_grace: Duration::from_secs(2),
        tick: Duration::from_millis(100),
        drop_acknowledgements: false,
        forget_completed_tasks: false,
        send_unwritten_updates: false,
        fault: fault.clone(),
        agent_fault: agent_fault.clone(),
        disk,
        inbox_limit_msgs: plexus_kernel::agent::AGENT_INBOX_LIMIT_MSGS,
        executors: None,
        attributes: Default::default(),
        executor_recovery: std::time::Duration::from_secs(60),
    };
    Actor::spawn(
        None,
        AgentSupervisor::new(
            AgentSpec::new(node.clone(), cfg, Arc::new(containerizer)),
            RestartPolicy::default(),
        ),
        (),
    )
    .await
    .unwrap();
    node
}

impl Cluster {
    async fn start(agents: usize) -> Cluster {
        Self::start_with(agents, MasterConfig::default(), 4.0, 4096).await
    }

    async fn start_with(agents: usize, cfg: MasterConfig, cpus: f64, mem: u64) -> Cluster {
        let none = FaultSwitch::default();
        Self::start_full(agents, cfg, cpus, mem, &none, &none).await
    }

    /// A cluster whose agents' task actors panic once `task_fault` is tripped.
    async fn start_full(
        agents: usize,
        cfg: MasterConfig,
        cpus: f64,
        mem: u64,
        task_fault: &FaultSwitch,
        agent_fault: &FaultSwitch,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        plexus_net::tls::init_ca(dir.path(), "plexus").unwrap();
        let master_node = Node::start(&settings(dir.path(), "master", vec![]))
            .await
            .unwrap();
        let reads = cfg.reads.clone();
        let (sup, _) = Actor::spawn(
            None,
            MasterSupervisor::new(
                MasterSpec::new(master_node.clone(), cfg),
                RestartPolicy::default(),
            ),
            (),
        )
        .await
        .unwrap();
        let mut nodes = Vec::new();
        for i in 0..agents {
            nodes.push(
                start_agent(
                    dir.path(),
                    &format!("agent{i}"),
                    &master_node,
                    (cpus, mem),
                    (task_fault, agent_fault),
                    Arc::new(plexus_kernel::agent::RealDisk),
                )
                .await,
            );
        }
        let c = Cluster {
            dir,
            master_node,
            sup,
            reads,
            _agents: nodes,
        };
        c.wait(|s| {
            s.agents
                .iter()
                .filter(|a| a.status == AgentStatus::Active)
                .count()
                == agents
        })
        .await;
        c
    }

    /// The master the supervisor runs now (none while it restarts).
    async fn master(&self) -> Option<ActorRef<MasterMsg>> {
        call_t!(self.sup, MasterSupervisorMsg::Current, 5000).unwrap()
    }

    async fn try_state(&self) -> Option<ClusterState> {
        call_t!(self.master().await?, MasterMsg::State, 5000).ok()
    }

    async fn state(&self) -> ClusterState {
        self.try_state().await.expect("the master answers")
    }

    async fn wait(&self, f: impl Fn(&ClusterState) -> bool) -> ClusterState {
        for _ in 0..600 {
            if let Some(s) = self.try_state().await.filter(|s| f(s)) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "cluster never reached the expected state: {:#?}",
            self.state().await
        );
    }
}

async fn start_jobs(c: &Cluster) -> Jobs {
    let jobs = Jobs::default();
    drive_jobs(c, &jobs).await;
    jobs
}

/// Subscribes `jobs` with the cluster's master, in role `*`.
async fn drive_jobs(c: &Cluster, jobs: &Jobs) {
    let info = FrameworkInfo {
        id: None,
        name: "jobs".into(),
        principal: None,
        role: "*".into(),
        failover_timeout_secs: 60.0,
    };
    SchedulerDriver::start(
        &c.master_node,
        info,
        jobs.scheduler(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
}

/// Waits (at most a minute) until the jobs satisfy `f`, looking again at every change.
async fn wait_jobs(jobs: &Jobs, f: impl Fn(&[plexus_kernel::jobs::JobStatus]) -> bool) {
    let mut changes = jobs.changes();
    let reached = async {
        while !f(&jobs.list()) {
            changes.changed().await.expect("the jobs framework runs");
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), reached)
        .await
        .is_err()
    {
        panic!("jobs never reached the expected state: {:#?}", jobs.list());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_completion_across_agents_and_resources_return() {
    let c = Cluster::start(3).await;
    let jobs = start_jobs(&c).await;
    let ids: Vec<TaskId> = (0..60)
        .map(|i| {
            jobs.submit(JobRequest {
                name: None,
                argv: vec!["/bin/sh".into(), "-c".into(), format!("echo job {i}")],
                resources: Resources::new(0.5, 64),
                role: None,
                owner: None,
                user: None,
            })
            .unwrap()
        })
        .collect();
    wait_jobs(&jobs, |js| {
        js.iter().all(|j| j.state == Some(TaskState::Finished))
    })
    .await;
    let agents: std::collections::BTreeSet<_> =
        jobs.list().into_iter().filter_map(|j| j.agent_id).collect();
    assert!(agents.len() >= 2, "tasks spread over agents: {agents:?}");
    let s = c
        .wait(|s| s.used.cpus_milli == 0 && s.tasks.iter().all(|t| t.state.is_terminal()))
        .await;
    assert_eq!(s.tasks.len(), ids.len());
    assert_eq!(s.total.cpus_milli, 12_000);
    // a job no agent can hold says why
    let big = jobs
        .submit(JobRequest {
            name: Some("huge".into()),
            argv: vec!["true".into()],
            resources: Resources::new(1.0, 100_000),
            role: None,
            owner: None,
            user: None,
        })
        .unwrap();
    wait_jobs(&jobs, |js| {
        js.iter().any(|j| {
            j.task_id == big
                && j.why_not_placed
                    .as_deref()
                    .is_some_and(|w| w.contains("mem"))
        })
    })
    .await;
}

/// A job as the registry would hold it, `state` on agent `agent` (`scratch` numbers it).
fn held_job(
    scratch: &Jobs,
    argv: &[&str],
    state: TaskState,
    agent: &str,
) -> plexus_kernel::jobs::JobStatus {
    let id = scratch.submit(half_cpu_job(argv)).unwrap();
    let mut j = scratch.get(&id).unwrap();
    j.state = Some(state);
    j.agent_id = Some(agent.into());
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_a_job_whose_launch_was_lost_is_placed_again_and_one_that_ran_is_lost() {
    let c = Cluster::start(1).await;
    // What a new leader's jobs framework takes back from the registry: one job placed
    // whose launch went down with the old leader, one that had started on an agent that
    // went down with it. The master knows neither.
    let scratch = Jobs::default();
    let placed = held_job(&scratch, &["true"], TaskState::Staging, "a0");
    let started = held_job(&scratch, &["sleep", "300"], TaskState::Running, "gone");
    let store = plexus_kernel::jobs::JobsStore::open(&c.dir.path().join("jobs.redb")).unwrap();
    let backend = plexus_kernel::jobs::JobsBackend::Local(Arc::new(store));
    let (jobs, _) = Jobs::open(&["*".to_string()], backend).unwrap();
    jobs.trust_unknown();
    jobs.take_back(plexus_kernel::jobs::Saved {
        next: 3,
        jobs: vec![(1, placed.clone()), (2, started.clone())],
        framework_ids: Default::default(),
    });
    drive_jobs(&c, &jobs).await;
    wait_jobs(&jobs, |js| {
        let state = |id: &TaskId| js.iter().find(|j| &j.task_id == id).and_then(|j| j.state);
        state(&placed.task_id) == Some(TaskState::Finished)
            && state(&started.task_id) == Some(TaskState::Lost)
    })
    .await;
    let again = jobs.get(&placed.task_id).unwrap();
    assert!(
        again
            .history
            .iter()
            .any(|e| e.message.contains("placed again")),
        "{again:#?}"
    );
    let s = c.state().await;
    assert_eq!(
        s.tasks
            .iter()
            .filter(|t| t.task_id == placed.task_id)
            .count(),
        1,
        "launched once, by this master"
    );
}

/// A job of half a cpu and 64 MB running `argv`.
fn half_cpu_job(argv: &[&str]) -> JobRequest {
    JobRequest {
        name: None,
        argv: argv.iter().map(|a| a.to_string()).collect(),
        resources: Resources::new(0.5, 64),
        role: None,
        owner: None,
        user: None,
    }
}

/// Submits a job of half a cpu and waits until it runs; returns its task id.
async fn submit_running(jobs: &Jobs, argv: &[&str]) -> TaskId {
    let task = jobs.submit(half_cpu_job(argv)).unwrap();
    wait_jobs(jobs, |js| {
        js.iter()
            .any(|j| j.task_id == task && j.state == Some(TaskState::Running))
    })
    .await;
    task
}

/// A scheduler that launches what the test tells it to on the first offer.
struct Scripted {
    launches: Vec<TaskSpec>,
    updates: Arc<Mutex<Vec<StatusUpdate>>>,
    handle: Arc<Mutex<Option<DriverHandle>>>,
}

impl Scheduler for Scripted {
    fn registered(&mut self, driver: &DriverHandle, _: &str) {
        *self.handle.lock().unwrap() = Some(driver.clone());
    }
    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let mut offers = offers.into_iter();
        if let Some(o) = offers.next() {
            let tasks = std::mem::take(&mut self.launches);
            driver
                .launch(vec![o.id], tasks, Duration::from_secs(1))
                .unwrap();
        }
        let rest: Vec<OfferId> = offers.map(|o| o.id).collect();
        if !rest.is_empty() {
            driver.decline(rest, Duration::from_secs(1));
        }
    }
    fn update(&mut self, _driver: &DriverHandle, u: &StatusUpdate) {
        self.updates.lock().unwrap().push(u.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_launches_become_task_error_and_the_master_stays_up() {
    let c = Cluster::start(1).await;
    let updates = Arc::new(Mutex::new(Vec::new()));
    let spec = |id: &str, argv: Vec<&str>, r: Resources| TaskSpec {
        task_id: id.into(),
        name: id.into(),
        argv: argv.into_iter().map(String::from).collect(),
        resources: r,
        user: None,
        actor: None,
    };
    let sched = Scripted {
        launches: vec![
            spec("too-big", vec!["true"], Resources::new(64.0, 64)),
            spec("empty", vec![], Resources::new(0.1, 16)),
            spec("nothing", vec!["true"], Resources::default()),
            spec("good", vec!["true"], Resources::new(0.1, 16)),
            spec("good", vec!["true"], Resources::new(0.1, 16)),
        ],
        updates: updates.clone(),
        handle: Default::default(),
    };
    let info = FrameworkInfo {
        id: None,
        name: "scripted".into(),
        principal: None,
        role: "*".into(),
        failover_timeout_secs: 10.0,
    };
    SchedulerDriver::start(
        &c.master_node,
        info,
        Box::new(sched),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    for _ in 0..400 {
        let u = updates.lock().unwrap().clone();
        if u.iter()
            .any(|x| x.task_id == "good" && x.state == TaskState::Finished)
            && u.iter().filter(|x| x.state == TaskState::Error).count() >= 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let u = updates.lock().unwrap().clone();
    let err = |id: &str| {
        u.iter()
            .find(|x| x.task_id == id && x.state == TaskState::Error)
            .map(|x| x.message.clone())
    };
    assert!(
        err("too-big")
            .unwrap()
            .contains("resources not in the offer"),
        "{u:#?}"
    );
    assert!(err("empty").unwrap().contains("empty command"));
    assert!(err("nothing").unwrap().contains("cpus or mem"));
    assert!(
        u.iter().any(|x| x.task_id == "good"
            && x.state == TaskState::Error
            && x.message.contains("already used")),
        "duplicate id refused: {u:#?}"
    );
    assert!(u
        .iter()
        .any(|x| x.task_id == "good" && x.state == TaskState::Finished));
    assert!(
        c.state().await.agents.len() == 1,
        "the master still answers"
    );
}

async fn wait_updates(
    updates: &Mutex<Vec<StatusUpdate>>,
    f: impl Fn(&[StatusUpdate]) -> bool,
) -> Vec<StatusUpdate> {
    for _ in 0..600 {
        let u = updates.lock().unwrap().clone();
        if f(&u) {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the framework never saw the expected updates: {:#?}",
        updates.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_within_the_timeout_keeps_tasks_and_after_it_kills_them() {
    let c = Cluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    // The framework's node uses the cluster's CA.
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(c.dir.path().join(f), dir.path().join(f)).unwrap();
    }
    let fw_settings = settings(dir.path(), "fw", vec![c.master_node.peer_addr()]);
    let info = FrameworkInfo {
        id: None,
        name: "failover".into(),
        principal: None,
        role: "*".into(),
        failover_timeout_secs: 2.0,
    };
    let sleeper = format!("300.{}77", std::process::id());
    let start = |info: FrameworkInfo, launches: Vec<TaskSpec>| {
        let fw_settings = fw_settings.clone();
        async move {
            let node = Node::start(&fw_settings).await.unwrap();
            node.wait_for_peers(&["master"], Duration::from_secs(20))
                .await
                .unwrap();
            let updates = Arc::new(Mutex::new(Vec::new()));
            let handle = Arc::new(Mutex::new(None));
            let sched = Scripted {
                launches,
                updates: updates.clone(),
                handle: handle.clone(),
            };
            let r = SchedulerDriver::start(&node, info, Box::new(sched), Duration::from_secs(20))
                .await
                .map(|(_, id)| id);
            (node, r, updates, handle)
        }
    };
    let (node, id, updates, _) = start(
        info.clone(),
        vec![TaskSpec {
            task_id: "svc".into(),
            name: "svc".into(),
            argv: vec!["sleep".into(), sleeper.clone()],
            resources: Resources::new(0.5, 32),
            user: None,
            actor: None,
        }],
    )
    .await;
    let id = id.unwrap();
    wait_updates(&updates, |u| {
        u.iter()
            .any(|x| x.task_id == "svc" && x.state == TaskState::Running)
    })
    .await;

    // The framework's process goes away and comes back within its failover timeout.
    node.leave().await;
    c.wait(|s| {
        s.frameworks
            .iter()
            .any(|f| f.id == id && f.status == FrameworkStatus::Disconnected)
    })
    .await;
    let back = FrameworkInfo {
        id: Some(id.clone()),
        ..info.clone()
    };
    let (node, again, updates, handle) = start(back.clone(), vec![]).await;
    assert_eq!(again.unwrap(), id, "re-subscribed under the same id");
    let h = handle.lock().unwrap().clone().unwrap();
    // Explicit reconciliation: a known task and one the master never saw.
    h.reconcile(vec!["svc".into(), "never-launched".into()]);
    let u = wait_updates(&updates, |u| {
        u.iter()
            .any(|x| x.task_id == "svc" && x.state == TaskState::Running)
            && u.iter()
                .any(|x| x.task_id == "never-launched" && x.state == TaskState::Unknown)
    })
    .await;
    assert!(u
        .iter()
        .filter(|x| x.task_id == "svc")
        .all(|x| x.reason == Some(plexus_kernel::reason::Reason::Reconciliation)));
    // Implicit reconciliation: every task of the framework.
    updates.lock().unwrap().clear();
    h.reconcile(vec![]);
    wait_updates(&updates, |u| {
        u.iter()
            .any(|x| x.task_id == "svc" && x.state == TaskState::Running)
    })
    .await;
    let s = c.state().await;
    assert_eq!(
        s.tasks.iter().find(|t| t.task_id == "svc").unwrap().state,
        TaskState::Running,
        "the task outlived the framework's absence"
    );

    // Gone for longer than the failover timeout: its tasks are killed, it is removed.
    node.leave().await;
    // (with no framework left, nothing holds resources: the task's came back)
    c.wait(|s| {
        s.frameworks.iter().all(|f| f.id != id)
            && s.tasks
                .iter()
                .any(|t| t.task_id == "svc" && t.state == TaskState::Killed)
            && s.used.cpus_milli == 0
    })
    .await;
    let (_node, late, ..) = start(back, vec![]).await;
    let e = late.unwrap_err();
    assert!(e.contains("unknown framework id"), "{e}");
}

/// Takes one 1-cpu task from each offer and declines the rest without a filter, so the
/// allocator decides who gets each next cpu.
struct OneAtATime {
    role: String,
    launched: Arc<Mutex<Vec<String>>>,
    handle: Arc<Mutex<Option<DriverHandle>>>,
}

impl Scheduler for OneAtATime {
    fn registered(&mut self, driver: &DriverHandle, _: &str) {
        *self.handle.lock().unwrap() = Some(driver.clone());
    }
    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        for o in offers {
            let fits = o.resources.total().contains(&Resources::new(1.0, 512));
            if !fits {
                driver.decline(vec![o.id], Duration::ZERO);
                continue;
            }
            let mut l = self.launched.lock().unwrap();
            let id = format!("{}-{}", self.role, l.len());
            let argv = vec![
                "sleep".into(),
                format!("300.{}{}", std::process::id(), l.len()),
            ];
            l.push(id.clone());
            driver
                .launch(
                    vec![o.id],
                    vec![TaskSpec {
                        task_id: id.clone().into(),
                        name: id,
                        argv,
                        resources: Resources::new(1.0, 512),
                        user: None,
                        actor: None,
                    }],
                    Duration::ZERO,
                )
                .unwrap();
        }
    }
    fn update(&mut self, _: &DriverHandle, _: &StatusUpdate) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_drf_splits_a_saturated_agent_two_to_one() {
    let cfg = MasterConfig {
        weights: [("gold".to_string(), 2.0)].into_iter().collect(),
        ..MasterConfig::default()
    };
    let c = Cluster::start_with(1, cfg, 6.0, 6144).await;
    let mut frameworks = Vec::new();
    for role in ["gold", "silver"] {
        let launched = Arc::new(Mutex::new(Vec::new()));
        let handle = Arc::new(Mutex::new(None));
        let info = FrameworkInfo {
            id: None,
            name: role.into(),
            principal: None,
            role: role.into(),
            failover_timeout_secs: 0.0,
        };
        let sched = OneAtATime {
            role: role.into(),
            launched: launched.clone(),
            handle: handle.clone(),
        };
        SchedulerDriver::start(
            &c.master_node,
            info,
            Box::new(sched),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        frameworks.push((role, launched, handle));
    }
    let s = c
        .wait(|s| {
            s.tasks
                .iter()
                .filter(|t| t.state == TaskState::Running)
                .count()
                == 6
        })
        .await;
    let of = |role: &str| {
        s.tasks
            .iter()
            .filter(|t| t.task_id.starts_with(role) && !t.state.is_terminal())
            .count()
    };
    assert_eq!((of("gold"), of("silver")), (4, 2), "{:#?}", s.frameworks);
    for (_, _, h) in &frameworks {
        h.lock().unwrap().clone().unwrap().teardown();
    }
    c.wait(|s| s.tasks.iter().all(|t| t.state.is_terminal()) && s.used.cpus_milli == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_panics_is_restarted_and_rebuilt_from_its_agents() {
    let fault = FaultSwitch::default();
    let cfg = MasterConfig {
        fault: fault.clone(),
        ..MasterConfig::default()
    };
    let c = Cluster::start_with(2, cfg, 4.0, 4096).await;
    let jobs = start_jobs(&c).await;
    let task = submit_running(&jobs, &["sleep", "300"]).await;
    let first = c.master().await.unwrap().get_id();
    fault.trip();
    // Its next message (the tick, at the latest) makes it panic; the supervisor starts
    // another, which the agents register with, bringing the running task back.
    let s = c
        .wait(|s| {
            s.agents
                .iter()
                .filter(|a| a.status == AgentStatus::Active)
                .count()
                == 2
                && s.tasks
                    .iter()
                    .any(|t| t.task_id == task && t.state == TaskState::Running)
        })
        .await;
    assert_ne!(c.master().await.unwrap().get_id(), first, "{s:#?}");
    let t = s.tasks.iter().find(|t| t.task_id == task).unwrap();
    // Learnt from the agent's registration, or from its running update sent again (not
    // yet acknowledged when the master failed).
    assert!(
        ["recovered from agent", "running"].contains(&t.message.as_str()),
        "{t:?}"
    );
    // The new master hears the task's end.
    let agent = c
        .master_node
        .whereis::<AgentMsg>(&agent_name(&t.agent_id))
        .await
        .unwrap()
        .unwrap();
    agent
        .cast(AgentMsg::Kill {
            task_id: task.clone(),
        })
        .unwrap();
    c.wait(|s| {
        s.tasks
            .iter()
            .any(|t| t.task_id == task && t.state == TaskState::Killed)
    })
    .await;
}

/// A master node whose supervisor gives up at the master's first failure, with the
/// switch that makes it fail.
async fn master_without_restarts(
    dir: &std::path::Path,
) -> (
    Node,
    FaultSwitch,
    ActorRef<MasterSupervisorMsg>,
    tokio::task::JoinHandle<()>,
) {
    plexus_net::tls::init_ca(dir, "plexus").unwrap();
    let node = Node::start(&settings(dir, "master", vec![])).await.unwrap();
    let fault = FaultSwitch::default();
    let cfg = MasterConfig {
        fault: fault.clone(),
        ..MasterConfig::default()
    };
    let policy = RestartPolicy {
        max_restarts: 0,
        ..RestartPolicy::default()
    };
    let (sup, ended) = Actor::spawn(
        None,
        MasterSupervisor::new(MasterSpec::new(node.clone(), cfg), policy),
        (),
    )
    .await
    .unwrap();
    (node, fault, sup, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_keeps_failing_makes_its_supervisor_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let (node, fault, sup, ended) = master_without_restarts(dir.path()).await;
    fault.trip();
    ended.await.unwrap();
    assert_eq!(sup.get_status(), ractor::ActorStatus::Stopped);
    assert!(node
        .whereis::<MasterMsg>(MASTER_NAME)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_actor_that_panics_ends_its_task_failed_and_its_process_is_killed() {
    let fault = FaultSwitch::default();
    let none = FaultSwitch::default();
    let c = Cluster::start_full(1, MasterConfig::default(), 4.0, 4096, &fault, &none).await;
    let jobs = start_jobs(&c).await;
    // The task tells its pid through a FIFO.
    let fifo = common::fifo(c.dir.path(), "pid");
    let script = format!("echo $$ > {} && exec sleep 300", fifo.display());
    let task = submit_running(&jobs, &["/bin/sh", "-c", &script]).await;
    let pid: i32 = common::read_line(&fifo).await.parse().expect("a pid");
    // The kill reaches the task's actor, which panics on it.
    fault.trip();
    jobs.kill(&task).unwrap();
    wait_jobs(&jobs, |js| {
        js.iter()
            .any(|j| j.task_id == task && j.state == Some(TaskState::Failed))
    })
    .await;
    let j = jobs.list().into_iter().find(|j| j.task_id == task).unwrap();
    assert_eq!(
        j.history.last().unwrap().reason,
        Some(plexus_kernel::reason::Reason::ExecutorTerminated),
        "{j:#?}"
    );
    // Its process does not outlive it (SIGTERM, then SIGKILL after the 2 s grace).
    common::wait_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_session_that_panics_disconnects_its_framework_which_comes_back_with_its_tasks()
{
    let session_fault = FaultSwitch::default();
    let cfg = MasterConfig {
        session_fault: session_fault.clone(),
        ..MasterConfig::default()
    };
    let c = Cluster::start_with(1, cfg, 4.0, 4096).await;
    let jobs = start_jobs(&c).await;
    let first = submit_running(&jobs, &["sleep", "300"]).await;
    let fw = c.state().await.frameworks[0].id.clone();
    // The session fails on the next message it carries: the offers for the next job.
    // The framework is disconnected, re-subscribes under its id, and gets its offers.
    session_fault.trip();
    let second = submit_running(&jobs, &["sleep", "300"]).await;
    assert!(!session_fault.is_armed(), "the session failed on the way");
    let s = c.state().await;
    assert_eq!(s.frameworks.len(), 1, "{s:#?}");
    assert_eq!(
        (s.frameworks[0].id.as_str(), s.frameworks[0].status),
        (fw.as_str(), FrameworkStatus::Connected)
    );
    for t in [&first, &second] {
        assert!(s
            .tasks
            .iter()
            .any(|x| &x.task_id == t && x.state == TaskState::Running));
        jobs.kill(t).unwrap();
    }
    wait_jobs(&jobs, |js| {
        js.iter().all(|j| j.state == Some(TaskState::Killed))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_panics_is_restarted_and_keeps_its_running_tasks() {
    let agent_fault = FaultSwitch::default();
    let none = FaultSwitch::default();
    let c = Cluster::start_full(1, MasterConfig::default(), 4.0, 4096, &none, &agent_fault).await;
    let jobs = start_jobs(&c).await;
    let task = submit_running(&jobs, &["sleep", "300"]).await;
    let name = agent_name("agent0");
    let node = &c.master_node;
    let first = node.whereis::<AgentMsg>(&name).await.unwrap().unwrap();
    // It panics on this call; its supervisor starts another, which re-adopts the
    // running task from its checkpoint and registers its name again.
    let mut changes = node.changes();
    agent_fault.trip();
    assert!(call_t!(first, |reply| AgentMsg::Inspect { reply }, 5000).is_err());
    let again = async {
        loop {
            if let Some(a) = node.whereis::<AgentMsg>(&name).await.unwrap() {
                if a.get_id() != first.get_id() {
                    return a;
                }
            }
            changes.changed().await.expect("the node runs");
        }
    };
    let again = tokio::time::timeout(Duration::from_secs(60), again)
        .await
        .expect("a new agent registers its name");
    // The re-adopted task is the new agent's to kill.
    again
        .cast(AgentMsg::Kill {
            task_id: task.clone(),
        })
        .unwrap();
    wait_jobs(&jobs, |js| {
        js.iter()
            .any(|j| j.task_id == task && j.state == Some(TaskState::Killed))
    })
    .await;
}

/// The API token of the tests' `admin` principal.
const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// API access for a server at `addr`: the tests' token only.
fn test_access(addr: std::net::SocketAddr) -> std::sync::Arc<plexus_kernel::api::auth::ApiAccess> {
    let mut a = plexus_kernel::api::auth::ApiAccess::new(addr, &[]);
    a.add_token("admin", TEST_TOKEN);
    std::sync::Arc::new(a)
}

/// One HTTP/1.0 GET with the tests' token: the status code and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|b| b.1).unwrap_or("");
    (code, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_panics_is_restarted_on_the_same_socket_and_serves_the_same_state() {
    use plexus_kernel::api::{ApiContext, ApiMsg, ApiSpec, ApiSupervisor};
    use plexus_kernel::supervision::RestarterMsg;
    let c = Cluster::start(1).await;
    let jobs = start_jobs(&c).await;
    let task = submit_running(&jobs, &["sleep", "300"]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fault = FaultSwitch::default();
    let ctx = ApiContext {
        jobs: jobs.clone(),
        node: c.master_node.clone(),
        reads: c.reads.clone(),
        access: test_access(addr),
        roles: Default::default(),
        standby: None,
    };
    let spec = ApiSpec::new(c.master_node.clone(), listener, ctx, fault.clone());
    let (sup, _) = Actor::spawn(None, ApiSupervisor::new(spec, RestartPolicy::default()), ())
        .await
        .unwrap();
    let started = |newer_than| {
        let sup = sup.clone();
        async move {
            call_t!(
                sup,
                |reply| RestarterMsg::Started { newer_than, reply },
                30_000
            )
            .unwrap()
        }
    };
    let first = started(None).await;
    assert_eq!(call_t!(first, ApiMsg::Address, 5000).unwrap(), addr);
    assert_eq!(http_get(addr, "/health").await, (200, "ok\n".to_string()));
    fault.trip();
    assert!(call_t!(first, ApiMsg::Address, 5000).is_err(), "it panics");
    let second = started(Some(first.get_id())).await;
    assert_ne!(second.get_id(), first.get_id());
    assert_eq!(call_t!(second, ApiMsg::Address, 5000).unwrap(), addr);
    let (code, body) = http_get(addr, &format!("/api/v1/tasks/{task}")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("TASK_RUNNING"), "{body}");
}

/// The machine's disk, except that every write fails while `full` is set.
#[derive(Debug, Default)]
struct FillableDisk {
    full: std::sync::atomic::AtomicBool,
}

impl plexus_kernel::statefile::Disk for FillableDisk {
    fn read(&self, path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
        plexus_kernel::agent::RealDisk.read(path)
    }

    fn write(&self, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device (test)",
            ));
        }
        plexus_kernel::agent::RealDisk.write(path, bytes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_write_its_checkpoint_takes_no_tasks_and_says_why_until_it_can() {
    let c = Cluster::start(0).await;
    let disk = Arc::new(FillableDisk::default());
    let none = FaultSwitch::default();
    let _agent = start_agent(
        c.dir.path(),
        "agentx",
        &c.master_node,
        (4.0, 4096),
        (&none, &none),
        disk.clone(),
    )
    .await;
    c.wait(|s| s.agents.len() == 1 && s.agents[0].status == AgentStatus::Active)
        .await;
    let jobs = start_jobs(&c).await;
    disk.full.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = jobs
        .submit(JobRequest {
            name: None,
            argv: vec!["sleep".into(), "300".into()],
            resources: Resources::new(1.0, 64),
            role: None,
            owner: None,
            user: None,
        })
        .unwrap();
    // The launch cannot be recorded: the agent says so, is offered no more, and starts
    // nothing it could not account for after a restart.
    let s = c
        .wait(|s| {
            s.agents[0]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("checkpoint"))
        })
        .await;
    assert!(
        s.offers.iter().all(|o| o.agent_id != s.agents[0].id),
        "{:?}",
        s.offers
    );
    let t = s.tasks.iter().find(|t| t.task_id == first).unwrap();
    assert_eq!(t.state, TaskState::Staging, "{t:?}");
    // Space again: it records the task, starts it, and takes tasks again.
    disk.full.store(false, std::sync::atomic::Ordering::SeqCst);
    c.wait(|s| {
        s.agents[0].problem.is_none()
            && s.tasks
                .iter()
                .any(|t| t.task_id == first && t.state == TaskState::Running)
    })
    .await;
    let second = submit_running(&jobs, &["sleep", "300"]).await;
    assert_ne!(second, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_unhealthy_once_no_master_runs() {
    use plexus_kernel::api::{ApiContext, ApiSpec, ApiSupervisor};
    let dir = tempfile::tempdir().unwrap();
    let (node, fault, _sup, ended) = master_without_restarts(dir.path()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = ApiContext {
        jobs: Jobs::default(),
        node: node.clone(),
        reads: plexus_kernel::master::ReadModel::default(),
        access: test_access(addr),
        roles: Default::default(),
        standby: None,
    };
    let spec = ApiSpec::new(node.clone(), listener, ctx, FaultSwitch::default());
    let (_api, _) = Actor::spawn(None, ApiSupervisor::new(spec, RestartPolicy::default()), ())
        .await
        .unwrap();
    assert_eq!(http_get(addr, "/health").await, (200, "ok\n".to_string()));
    fault.trip();
    ended.await.unwrap();
    let (code, body) = http_get(addr, "/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("master: not running"), "{body}");
}
