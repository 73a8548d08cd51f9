//! The simulated datacenter: masters (three by default, electing a leader with Raft),
//! agents and frameworks as real kernel actors on real `Node`s, over the simulated
//! network, with the simulated containerizer, on a current-thread runtime whose paused
//! clock jumps from event to event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_actors::{Node, NodeOptions};
use plexus_kernel::agent::{Agent, AgentConfig};
use plexus_kernel::master::leadership::{lead, start_supervisor, CurrentMaster};
use plexus_kernel::master::{MasterConfig, MasterSupervisorMsg};
use plexus_kernel::protocol::{AgentMsg, AgentView, ClusterState, FrameworkInfo, MasterMsg};
use plexus_kernel::registry::replica::{Replica, ReplicaConfig};
use plexus_kernel::registry::rt::seed_elections;
use plexus_kernel::registry::MemFile;
use plexus_kernel::resources::{Resources, RoleResources};
use plexus_kernel::scheduler::SchedulerDriver;
use plexus_kernel::supervision::FaultSwitch;
use plexus_net::{LocalIdentity, PeerAddr, SimFaults, SimNetwork};
use ractor::{call_t, Actor, ActorRef};
use tokio::time::Instant;

use crate::containerizer::{ExecutorHost, ExecutorStart, Machines};
use crate::disk::SimDisk;
use crate::faults::{Fault, FaultPlan, FaultRates};
use crate::framework::{FrameworkLog, SharedLog, SimScheduler};
use crate::invariants;
use crate::trace::{Recorder, Violation};
use crate::workload::{SimContext, Workload};

/// A deliberate defect switched on to prove that the invariants catch bugs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Agents ignore status-update acknowledgements.
    DropAcks,
    /// Agents do not report their completed tasks when they register.
    ForgetCompleted,
    /// The master does not keep kills for agents that are away.
    ForgetKills,
    /// Agents send updates before their checkpoint holds them.
    SendUnwritten,
}

impl Defect {
    /// Every defect, by its name on the command line.
    pub const ALL: [(&'static str, Defect); 4] = [
        ("drop-acks", Defect::DropAcks),
        ("forget-completed", Defect::ForgetCompleted),
        ("forget-kills", Defect::ForgetKills),
        ("send-unwritten", Defect::SendUnwritten),
    ];
}

/// What to simulate.
#[derive(Clone)]
pub struct SimConfig {
    /// The seed everything random is drawn from.
    pub seed: u64,
    /// Agents (one per simulated machine).
    pub agents: usize,
    /// Frameworks.
    pub frameworks: usize,
    /// Tasks each framework keeps running.
    pub tasks_per_framework: usize,
    /// Simulated time under faults.
    pub duration: Duration,
    /// Simulated time after every fault healed, before the final checks.
    pub settle: Duration,
    /// Fault rates.
    pub faults: FaultRates,
    /// Heartbeat period of every node.
    pub heartbeat_interval: Duration,
    /// Silence after which a node is declared down.
    pub node_down_timeout: Duration,
    /// The master's offer limit per framework and cycle (0: none).
    pub offer_limit: u32,
    /// Bytes of padding in every task's command: with many tasks per agent, an agent's
    /// state outgrows a message and its registrations go in parts.
    pub argv_bytes: usize,
    /// The largest frame every node's links carry.
    pub max_frame_bytes: u32,
    /// Trace lines kept in memory (the hash covers all of them).
    pub keep_trace: usize,
    /// A deliberate defect, if any.
    pub defect: Option<Defect>,
    /// User actors to run in the datacenter.
    pub workloads: Vec<Arc<dyn Workload>>,
    /// Masters: one runs alone (no Raft); more elect a leader and replicate the
    /// registry.
    pub masters: usize,
    /// The masters' election timeout (the shortest; the longest is twice it).
    pub election_timeout: Duration,
    /// The leading master's Raft heartbeat period.
    pub raft_heartbeat: Duration,
    /// How often an agent not registered tries again (a real agent's: 250 ms).
    pub agent_tick: Duration,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("agents", &self.agents)
            .field("frameworks", &self.frameworks)
            .field("duration", &self.duration)
            .field("faults", &self.faults)
            .field("defect", &self.defect)
            .field("masters", &self.masters)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            agents: 5,
            frameworks: 2,
            tasks_per_framework: 10,
            duration: Duration::from_secs(600),
            settle: Duration::from_secs(120),
            faults: FaultRates::default(),
            heartbeat_interval: Duration::from_secs(2),
            node_down_timeout: Duration::from_secs(10),
            offer_limit: MasterConfig::default().offer_limit,
            argv_bytes: 0,
            max_frame_bytes: 16 << 20,
            keep_trace: 200,
            defect: None,
            workloads: Vec::new(),
            masters: 3,
            // Slower than a real cluster's (400 ms, 50 ms): Raft's heartbeats would
            // otherwise be most of what a simulation spends its time on.
            election_timeout: Duration::from_millis(1000),
            raft_heartbeat: Duration::from_millis(250),
            agent_tick: Duration::from_secs(2),
        }
    }
}

/// What a simulation found.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of the whole trace: same seed and settings ⇒ same hash.
    pub trace_hash: u64,
    /// Lines in the whole trace.
    pub trace_lines: u64,
    /// The last lines of the trace (all of it when kept).
    pub trace_tail: Vec<String>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Tasks launched by the frameworks.
    pub tasks_launched: usize,
    /// Faults injected.
    pub faults: usize,
}

/// The role whose weight the simulation writes to the registry, to check that no
/// acknowledged write is lost.
const MARK_ROLE: &str = "sim-mark";

/// The name of master `i`.
fn names_at(w: &World, i: usize) -> String {
    w.master_peers[i].name.clone()
}

/// Simulated address of node number `i`.
fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5050))
}

/// One simulated machine running an agent.
struct Machine {
    name: String,
    addr: SocketAddr,
    node: Option<Node>,
    agent: Option<ActorRef<AgentMsg>>,
    state_dir: PathBuf,
    /// Its disk (the agent's checkpoint).
    disk: Arc<SimDisk>,
    /// Crashed and not yet restarted.
    down: bool,
    /// It came back without its state directory at least once.
    lost_state: bool,
}

/// One simulated machine running a master.
struct MasterHost {
    name: String,
    addr: SocketAddr,
    node: Option<Node>,
    /// The master running here, while one does (this one leads, or is the only one).
    current: CurrentMaster,
    replica: Option<Arc<Replica>>,
    /// The tasks running the master while this one leads, and noting when it does.
    leading: Option<Vec<tokio::task::JoinHandle<()>>>,
    /// Its disk: the Raft log, and the registry's snapshots.
    log: MemFile,
    disk: Arc<SimDisk>,
    /// Makes its master actor panic on its next message (a master crash its supervisor
    /// restarts).
    fault: FaultSwitch,
    /// What its master publishes while it leads.
    reads: plexus_kernel::master::ReadModel,
    down: bool,
}

/// What the leading master's read model shows.
pub(crate) struct LeaderView {
    /// Tasks it knows running.
    pub(crate) running_tasks: usize,
    /// Agents registered with it.
    pub(crate) active_agents: usize,
}

/// The running datacenter.
pub(crate) struct World {
    pub(crate) cfg: SimConfig,
    pub(crate) net: SimNetwork,
    pub(crate) rec: Recorder,
    pub(crate) machines: Machines,
    /// The operators' machine, never crashed: supervisors of workloads run there.
    pub(crate) ops_node: Node,
    masters: Mutex<Vec<MasterHost>>,
    /// Every master's name and address (what agents and frameworks join).
    master_peers: Vec<PeerAddr>,
    hosts: Mutex<Vec<Machine>>,
    pub(crate) frameworks: Vec<(String, SharedLog, Node)>,
}

fn options(cfg: &SimConfig, peers: Vec<PeerAddr>) -> NodeOptions {
    NodeOptions {
        peers,
        call_timeout: Duration::from_secs(10),
        heartbeat_interval: cfg.heartbeat_interval,
        node_down_timeout: cfg.node_down_timeout,
        connect_all: false,
    }
}

/// The roles a simulated node's certificate would carry: masters are masters, every
/// other node an agent.
fn sim_roles(name: &str) -> plexus_net::Roles {
    if name.starts_with("master") {
        plexus_net::Role::Master.into()
    } else if plexus_net::tls::executor_agent(name).is_some() {
        plexus_net::Role::Executor.into()
    } else {
        plexus_net::Role::Agent.into()
    }
}

async fn start_node(
    net: &SimNetwork,
    cfg: &SimConfig,
    name: &str,
    addr: SocketAddr,
    peers: Vec<PeerAddr>,
) -> Node {
    let ident = LocalIdentity {
        cluster: "sim".into(),
        name: name.to_string(),
        incarnation: plexus_net::clock::unix_nanos(),
        addr,
        roles: sim_roles(name),
    };
    let t = net
        .bind(ident, cfg.max_frame_bytes)
        .expect("simulated addresses are unique");
    Node::start_with(t, options(cfg, peers))
        .await
        .expect("a simulated node starts")
}

/// Executors' identities in the simulation: the simulated network carries every node's
/// roles without certificates, so an executor's identity is its name.
#[derive(Debug)]
struct SimExecutorNames {
    agent: String,
}

impl plexus_kernel::executor::IssueExecutors for SimExecutorNames {
    fn issue(
        &self,
        n: u64,
        _valid_for: Duration,
    ) -> Result<plexus_net::tls::ExecutorIdentity, String> {
        Ok(plexus_net::tls::ExecutorIdentity {
            node: plexus_net::tls::executor_node_name(&self.agent, n),
            chain_pem: String::new(),
            key_pem: String::new(),
        })
    }

    fn root_pem(&self) -> String {
        String::new()
    }
}

/// Brings up a simulated executor: a node of its name on its machine (an address of
/// its own, `11.x.y.z`, from its pid), hosting the workloads' actor types, that dials
/// its agent and halts when its process ends.
fn executor_host(net: SimNetwork, cfg: SimConfig, rec: Recorder) -> ExecutorHost {
    Arc::new(move |x: ExecutorStart| {
        let (net, cfg, rec) = (net.clone(), cfg.clone(), rec.clone());
        Box::pin(async move {
            let p = x.pid;
            let addr = SocketAddr::from(([11, (p >> 16) as u8, (p >> 8) as u8, p as u8], 5050));
            let agent = PeerAddr {
                name: x.settings.agent.clone(),
                addr: x.settings.agent_addr,
            };
            let node = start_node(&net, &cfg, &x.settings.node, addr, vec![agent]).await;
            for w in &cfg.workloads {
                w.install_executor(&node);
            }
            rec.note(format_args!(
                "executor {} up on {} (process {p})",
                x.settings.node, x.machine
            ));
            x.ended.await;
            node.halt();
        })
    })
}

impl World {
    pub(crate) async fn build(cfg: SimConfig) -> Arc<World> {
        let net = SimNetwork::new(
            cfg.seed,
            SimFaults {
                drop_rate: cfg.faults.drop_rate,
                min_delay: cfg.faults.min_delay,
                max_delay: cfg.faults.max_delay,
                break_on_loss: true,
            },
        );
        net.keep_trace(cfg.keep_trace);
        let describer = Arc::new(plexus_actors::FrameDescriber::default());
        net.describe_frames_with(Arc::new(move |from: &str, to: &str, body: &[u8]| {
            describer.describe(from, to, body)
        }));
        let rec = Recorder::new(net.clone());
        let machines = Machines::new(cfg.seed, cfg.faults.task_failure_rate, rec.clone());
        machines.host_executors_with(executor_host(net.clone(), cfg.clone(), rec.clone()));
        // The simulated machines' disks are in memory: their paths are names only, the
        // same at every run (the trace holds them, in errors an agent reports).
        let masters: Vec<MasterHost> = (1..=cfg.masters.max(1))
            .map(|i| MasterHost {
                name: if cfg.masters <= 1 {
                    "master".into()
                } else {
                    format!("master-{i}")
                },
                addr: addr_of(i),
                node: None,
                current: CurrentMaster::default(),
                replica: None,
                leading: None,
                log: MemFile::default(),
                disk: Arc::new(SimDisk::default()),
                fault: FaultSwitch::default(),
                reads: Default::default(),
                down: true,
            })
            .collect();
        let master_peers: Vec<PeerAddr> = masters
            .iter()
            .map(|m| PeerAddr {
                name: m.name.clone(),
                addr: m.addr,
            })
            .collect();
        let ops_node = start_node(&net, &cfg, "ops", addr_of(90), master_peers.clone()).await;
        let hosts = (0..cfg.agents)
            .map(|i| Machine {
                name: format!("agent-{i:05}"),
                addr: addr_of(1000 + i),
                node: None,
                agent: None,
                state_dir: PathBuf::from(format!("/sim/agent-{i:05}")),
                disk: Arc::new(SimDisk::default()),
                down: true,
                lost_state: false,
            })
            .collect();
        let mut frameworks = Vec::new();
        for j in 0..cfg.frameworks {
            let name = format!("fw-{j:03}");
            let node = start_node(&net, &cfg, &name, addr_of(100 + j), master_peers.clone()).await;
            frameworks.push((name, Arc::new(Mutex::new(FrameworkLog::default())), node));
        }
        let w = Arc::new(World {
            cfg,
            net,
            rec,
            machines,
            ops_node,
            masters: Mutex::new(masters),
            master_peers,
            hosts: Mutex::new(hosts),
            frameworks,
        });
        for i in 0..w.cfg.masters.max(1) {
            w.start_master(i).await;
        }
        for i in 0..w.cfg.agents {
            w.start_agent(i).await;
        }
        for w8 in &w.cfg.workloads {
            w8.install_master(&w.ops_node);
        }
        for (j, (name, log, node)) in w.frameworks.iter().enumerate() {
            let info = FrameworkInfo {
                id: None,
                name: name.clone(),
                principal: None,
                role: "*".into(),
                failover_timeout_secs: 3600.0,
            };
            let sched = SimScheduler::new(
                name,
                w.cfg.seed.wrapping_mul(31).wrapping_add(j as u64),
                (w.cfg.tasks_per_framework, w.cfg.argv_bytes),
                log.clone(),
                w.rec.clone(),
            );
            if let Err(e) =
                SchedulerDriver::start(node, info, Box::new(sched), Duration::from_secs(120)).await
            {
                w.rec
                    .violation("liveness", format!("{name} could not subscribe: {e}"));
            }
        }
        w
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, Vec<Machine>> {
        self.hosts.lock().expect("hosts lock")
    }

    fn masters(&self) -> std::sync::MutexGuard<'_, Vec<MasterHost>> {
        self.masters.lock().expect("masters lock")
    }

    /// Names of the masters' machines.
    pub(crate) fn master_names(&self) -> Vec<String> {
        self.master_peers.iter().map(|p| p.name.clone()).collect()
    }

    /// The master's settings in the simulation.
    fn master_config(&self, i: usize) -> MasterConfig {
        let (fault, reads) = {
            let m = &self.masters()[i];
            (m.fault.clone(), m.reads.clone())
        };
        MasterConfig {
            agent_removal_timeout: Duration::from_secs(600),
            allocation_interval: Duration::from_secs(1),
            offer_limit: self.cfg.offer_limit,
            forget_kills: self.cfg.defect == Some(Defect::ForgetKills),
            fault,
            reads,
            ..MasterConfig::default()
        }
    }

    /// Starts master `i`'s machine: alone, its master at once; one of several, its
    /// replica of the registry and the master while it leads.
    async fn start_master(&self, i: usize) {
        let (name, addr, log, disk, current) = {
            let m = &self.masters()[i];
            (
                m.name.clone(),
                m.addr,
                m.log.clone(),
                m.disk.clone(),
                m.current.clone(),
            )
        };
        let peers: Vec<PeerAddr> = self
            .master_peers
            .iter()
            .filter(|p| p.name != name)
            .cloned()
            .collect();
        let node = start_node(&self.net, &self.cfg, &name, addr, peers).await;
        let mcfg = self.master_config(i);
        let (replica, leading) = if self.cfg.masters <= 1 {
            let (sup, _) = start_supervisor(&node, mcfg)
                .await
                .expect("the master starts");
            *current.lock().expect("current lock") = Some(sup);
            (None, None)
        } else {
            let rcfg = ReplicaConfig {
                peers: self.master_names(),
                dir: PathBuf::from(format!("/sim/{name}/registry")),
                disk,
                heartbeat_ms: self.cfg.raft_heartbeat.as_millis() as u64,
                election_timeout_ms: self.cfg.election_timeout.as_millis() as u64,
                snapshot_every: 64,
                log_in: Some(log),
            };
            let replica = Arc::new(
                Replica::start(&node, rcfg)
                    .await
                    .expect("a simulated master's replica starts"),
            );
            let api = format!("sim://{name}");
            let task = tokio::spawn(lead(
                node.clone(),
                mcfg,
                replica.clone(),
                api,
                current,
                None,
            ));
            // Leadership changes, in the trace.
            let (lease, rec, who) = (replica.lease(), self.rec.clone(), name.clone());
            let notes = tokio::spawn(async move {
                let mut was = None;
                loop {
                    was = lease.changed_from(was).await;
                    match was {
                        Some(t) => rec.note(format_args!("{who} leads in term {t}")),
                        None => rec.note(format_args!("{who} no longer leads")),
                    }
                }
            });
            (Some(replica), Some(vec![task, notes]))
        };
        let mut ms = self.masters();
        let m = &mut ms[i];
        m.node = Some(node);
        m.replica = replica;
        m.leading = leading;
        m.down = false;
    }

    /// Master `i`'s machine crashes: its processes end at once; its disk keeps what
    /// was written.
    pub(crate) async fn crash_master(&self, i: usize) {
        let (name, node, replica, leading, current) = {
            let mut ms = self.masters();
            let m = &mut ms[i];
            if m.down {
                return;
            }
            m.down = true;
            let current = m.current.lock().expect("current lock").take();
            (
                m.name.clone(),
                m.node.take(),
                m.replica.take(),
                m.leading.take(),
                current,
            )
        };
        self.net.crash(&name);
        for t in leading.into_iter().flatten() {
            t.abort();
        }
        if let Some(sup) = current {
            sup.kill();
        }
        if let Some(r) = replica {
            r.shutdown().await;
        }
        if let Some(n) = node {
            n.halt();
        }
    }

    /// The master that leads now (its lease holds), with its supervisor.
    fn leader(&self) -> Option<(usize, ActorRef<MasterSupervisorMsg>)> {
        let ms = self.masters();
        ms.iter().enumerate().find_map(|(i, m)| {
            let leads = m
                .replica
                .as_ref()
                .map_or(!m.down, |r| r.lease().term().is_some());
            let sup = m.current.lock().expect("current lock").clone()?;
            leads.then_some((i, sup))
        })
    }

    /// The role weight the simulation writes to the registry, as each live master's
    /// registry holds it.
    pub(crate) fn registry_marks(&self) -> Vec<(String, Option<u64>)> {
        self.masters()
            .iter()
            .filter_map(|m| {
                let r = m.replica.as_ref()?;
                Some((m.name.clone(), r.registry().weights.get(MARK_ROLE).copied()))
            })
            .collect()
    }

    /// Writes mark `n` through the leader's replica; true once acknowledged.
    async fn write_mark(&self, n: u64) -> bool {
        let replica = {
            let ms = self.masters();
            ms.iter()
                .filter_map(|m| m.replica.clone())
                .find(|r| r.lease().term().is_some())
        };
        let Some(r) = replica else { return false };
        let op = plexus_kernel::registry::RegistryOp::SetWeight {
            role: MARK_ROLE.into(),
            weight_milli: n,
        };
        r.write(op).await.is_ok()
    }

    /// The leading master's read model, while one leads.
    pub(crate) fn leader_view(&self) -> Option<LeaderView> {
        let (i, _) = self.leader()?;
        let v = self.masters()[i].reads.current();
        let running = v
            .tasks
            .values()
            .filter(|t| t.state == plexus_kernel::task::TaskState::Running)
            .count();
        let active = v
            .agents
            .iter()
            .filter(|a| a.status == plexus_kernel::protocol::AgentStatus::Active)
            .count();
        Some(LeaderView {
            running_tasks: running,
            active_agents: active,
        })
    }

    /// The leading master's index, if one leads.
    pub(crate) fn leader_index_now(&self) -> Option<usize> {
        self.leader().map(|(i, _)| i)
    }

    /// When the first framework last received an offer (simulated ms).
    pub(crate) fn last_offer_ms(&self) -> Option<u64> {
        let (_, log, _) = self.frameworks.first()?;
        log.lock().expect("log lock").last_offer_ms
    }

    /// How many masters hold a lease now.
    pub(crate) fn leaders(&self) -> Vec<String> {
        self.masters()
            .iter()
            .filter(|m| {
                m.replica
                    .as_ref()
                    .is_some_and(|r| r.lease().term().is_some())
            })
            .map(|m| m.name.clone())
            .collect()
    }

    /// Names of the agents' machines.
    pub(crate) fn agent_names(&self) -> Vec<String> {
        self.hosts().iter().map(|m| m.name.clone()).collect()
    }

    /// Names of the agents that came back without their state at least once.
    pub(crate) fn agents_that_lost_state(&self) -> std::collections::BTreeSet<String> {
        self.hosts()
            .iter()
            .filter(|m| m.lost_state)
            .map(|m| m.name.clone())
            .collect()
    }

    async fn start_agent(&self, i: usize) {
        let (name, addr, state_dir, disk) = {
            let h = self.hosts();
            (
                h[i].name.clone(),
                h[i].addr,
                h[i].state_dir.clone(),
                h[i].disk.clone(),
            )
        };
        let node = start_node(&self.net, &self.cfg, &name, addr, self.master_peers.clone()).await;
        for w in &self.cfg.workloads {
            w.install_agent(&node);
        }
        let acfg = AgentConfig {
            agent_id: None,
            resources: RoleResources::unreserved(Resources::new(8.0, 16384)),
            state_dir,
            kill_grace: Duration::from_secs(5),
            tick: self.cfg.agent_tick,
            drop_acknowledgements: self.cfg.defect == Some(Defect::DropAcks),
            forget_completed_tasks: self.cfg.defect == Some(Defect::ForgetCompleted),
            send_unwritten_updates: self.cfg.defect == Some(Defect::SendUnwritten),
            fault: plexus_kernel::supervision::FaultSwitch::default(),
            agent_fault: plexus_kernel::supervision::FaultSwitch::default(),
            disk,
            inbox_limit_msgs: plexus_kernel::agent::AGENT_INBOX_LIMIT_MSGS,
            executors: Some(Arc::new(SimExecutorNames {
                agent: name.clone(),
            })),
            attributes: Default::default(),
            executor_recovery: std::time::Duration::from_secs(60),
        };
        let c = Arc::new(self.machines.containerizer(&name));
        let (agent, _) = Actor::spawn(None, Agent::new(node.clone(), acfg, c), ())
            .await
            .expect("the agent starts");
        let mut h = self.hosts();
        h[i].node = Some(node);
        h[i].agent = Some(agent);
        h[i].down = false;
    }

    fn crash_agent(&self, i: usize, lose_state: bool) {
        let (name, node, agent, dir, disk) = {
            let mut h = self.hosts();
            let m = &mut h[i];
            if m.down {
                return;
            }
            m.down = true;
            m.lost_state |= lose_state;
            (
                m.name.clone(),
                m.node.take(),
                m.agent.take(),
                m.state_dir.clone(),
                m.disk.clone(),
            )
        };
        self.net.crash(&name);
        if let Some(a) = agent {
            a.kill();
        }
        if let Some(n) = node {
            n.halt();
        }
        self.machines.crash(&name);
        disk.power_loss();
        if lose_state {
            disk.forget_under(&dir);
        }
    }

    /// Blocks traffic of `node` with everything it talks to (both ways unless `one_way`):
    /// a master with every other node, any other node with the masters.
    fn cut(&self, node: &str, one_way: bool, block: bool) {
        let masters = self.master_names();
        let others: Vec<String> = if masters.iter().any(|m| m == node) {
            self.agent_names()
                .into_iter()
                .chain(self.frameworks.iter().map(|f| f.0.clone()))
                .chain(masters.into_iter().filter(|m| m != node))
                .chain(["ops".to_string()])
                .collect()
        } else {
            masters
        };
        for o in others {
            if block {
                self.net.block(node, &o);
                if !one_way {
                    self.net.block(&o, node);
                }
            } else {
                self.net.unblock(node, &o);
                self.net.unblock(&o, node);
            }
        }
    }

    /// The leading master's index (the first master's when none leads now).
    fn leader_index(&self) -> usize {
        self.leader().map_or(0, |(i, _)| i)
    }

    /// Blocks (or unblocks) all traffic between the nodes of `a` and those of `b`.
    fn split(&self, a: &[String], b: &[String], block: bool) {
        for x in a {
            for y in b {
                if block {
                    self.net.block(x, y);
                    self.net.block(y, x);
                } else {
                    self.net.unblock(x, y);
                    self.net.unblock(y, x);
                }
            }
        }
    }

    async fn apply(self: &Arc<Self>, fault: Fault) {
        let rec = &self.rec;
        match fault {
            Fault::CrashAgent {
                agent,
                down_for,
                lose_state,
            } => {
                let i = agent % self.cfg.agents.max(1);
                rec.note(format_args!(
                    "fault crash agent-{i:05} for {:?} (state {})",
                    down_for,
                    if lose_state { "lost" } else { "kept" }
                ));
                self.crash_agent(i, lose_state);
                tokio::time::sleep(down_for).await;
                if self.hosts()[i].down {
                    rec.note(format_args!("fault restart agent-{i:05}"));
                    self.start_agent(i).await;
                }
            }
            Fault::Partition {
                agents,
                one_way,
                lasts,
            } => {
                let names: Vec<String> = agents
                    .iter()
                    .map(|a| format!("agent-{:05}", a % self.cfg.agents.max(1)))
                    .collect();
                rec.note(format_args!(
                    "fault partition {} from master{} for {lasts:?}",
                    names.join(","),
                    if one_way { " (one way)" } else { "" }
                ));
                for n in &names {
                    self.cut(n, one_way, true);
                }
                tokio::time::sleep(lasts).await;
                rec.note(format_args!("fault heal partition {}", names.join(",")));
                for n in &names {
                    self.cut(n, one_way, false);
                }
            }
            Fault::DiskFault { agent, kind, lasts } => {
                let i = agent % self.cfg.agents.max(1);
                let disk = self.hosts()[i].disk.clone();
                rec.note(format_args!(
                    "fault disk of agent-{i:05} {kind} for {lasts:?}"
                ));
                disk.set_fault(Some(kind));
                tokio::time::sleep(lasts).await;
                rec.note(format_args!("fault disk of agent-{i:05} well again"));
                disk.set_fault(None);
            }
            Fault::CrashMaster => {
                // It panics on its next message; its supervisor starts another, which
                // learns the cluster again from re-registering agents and frameworks.
                let i = self.leader_index();
                rec.note(format_args!(
                    "fault crash master actor on {}",
                    names_at(self, i)
                ));
                self.masters()[i].fault.trip();
            }
            Fault::CrashLeader { down_for } => {
                let i = self.leader_index();
                let name = names_at(self, i);
                rec.note(format_args!("fault crash {name} for {down_for:?}"));
                self.crash_master(i).await;
                tokio::time::sleep(down_for).await;
                rec.note(format_args!("fault restart {name}"));
                self.start_master(i).await;
            }
            Fault::IsolateLeader { agents, lasts } => {
                let i = self.leader_index();
                let leader = names_at(self, i);
                let with: std::collections::BTreeSet<String> = agents
                    .iter()
                    .map(|a| format!("agent-{:05}", a % self.cfg.agents.max(1)))
                    .collect();
                rec.note(format_args!(
                    "fault isolate {leader} with [{}] for {lasts:?}",
                    with.iter().cloned().collect::<Vec<_>>().join(",")
                ));
                let side: Vec<String> = std::iter::once(leader.clone()).chain(with).collect();
                let rest: Vec<String> = self
                    .master_names()
                    .into_iter()
                    .chain(self.agent_names())
                    .chain(self.frameworks.iter().map(|f| f.0.clone()))
                    .chain(["ops".to_string()])
                    .filter(|n| !side.contains(n))
                    .collect();
                self.split(&side, &rest, true);
                tokio::time::sleep(lasts).await;
                rec.note(format_args!("fault heal isolation of {leader}"));
                self.split(&side, &rest, false);
            }
            Fault::Pause { node, lasts } => {
                let name = match node {
                    0 => names_at(self, self.leader_index()),
                    n if n <= self.frameworks.len() => self.frameworks[n - 1].0.clone(),
                    n => format!("agent-{:05}", n % self.cfg.agents.max(1)),
                };
                rec.note(format_args!("fault pause {name} for {lasts:?}"));
                self.cut(&name, false, true);
                tokio::time::sleep(lasts).await;
                rec.note(format_args!("fault resume {name}"));
                self.cut(&name, false, false);
            }
        }
    }

    pub(crate) async fn master_state(&self) -> Option<ClusterState> {
        let (_, sup) = self.leader()?;
        let m = call_t!(sup, MasterSupervisorMsg::Current, 30_000).ok()??;
        call_t!(m, MasterMsg::State, 30_000).ok()
    }

    pub(crate) async fn agent_views(&self) -> BTreeMap<String, AgentView> {
        let agents: Vec<(String, ActorRef<AgentMsg>)> = self
            .hosts()
            .iter()
            .filter_map(|m| m.agent.clone().map(|a| (m.name.clone(), a)))
            .collect();
        let mut out = BTreeMap::new();
        for (name, a) in agents {
            if let Ok(v) = call_t!(a, |reply| AgentMsg::Inspect { reply }, 30_000) {
                out.insert(name, v);
            }
        }
        out
    }
}

/// Runs one simulation on a fresh current-thread runtime with paused time.
pub fn run(cfg: SimConfig) -> SimReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        // A fixed epoch: the wall clock in the simulation is simulated too.
        plexus_net::clock::simulate(Duration::from_secs(1_700_000_000));
        // Masters' election timeouts from the seed too.
        seed_elections(Some(cfg.seed ^ 0x7261_6674));
        let r = simulate(cfg).await;
        seed_elections(None);
        plexus_net::clock::real();
        r
    })
}

async fn simulate(cfg: SimConfig) -> SimReport {
    let start = Instant::now();
    let plan = FaultPlan::draw(&cfg);
    let w = World::build(cfg.clone()).await;
    let faults = plan.faults.len();
    for (at, f) in plan.faults {
        let w = w.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            w.apply(f).await;
        });
    }
    for wl in &w.cfg.workloads {
        wl.start(SimContext {
            master: w.ops_node.clone(),
            agents: w.agent_names(),
            rec: w.rec.clone(),
        })
        .await;
    }
    // Continuous checks.
    let checker = {
        let w = w.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                invariants::one_leader(&w, false);
                if let Some(s) = w.master_state().await {
                    invariants::resources(&w.rec, &s);
                }
            }
        })
    };
    // Registry writes through whichever master leads, every 10 s.
    let acked = Arc::new(Mutex::new(None::<u64>));
    let writer = (w.cfg.masters > 1).then(|| {
        let (w, acked) = (w.clone(), acked.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            for n in 1u64.. {
                tick.tick().await;
                if w.write_mark(n).await {
                    *acked.lock().expect("acked lock") = Some(n);
                }
            }
        })
    });
    tokio::time::sleep_until(start + cfg.duration).await;
    // Every planned fault has ended by now; clean network from here on.
    w.rec.note(format_args!("faults over; settling"));
    w.net.set_faults(SimFaults {
        drop_rate: 0.0,
        min_delay: cfg.faults.min_delay,
        max_delay: cfg.faults.min_delay,
        break_on_loss: true,
    });
    w.net.heal();
    let settle_start = w.rec.now_ms();
    tokio::time::sleep(cfg.settle).await;
    // From here the cluster comes to rest: no process ends on its own and no framework
    // launches, so what is in flight lands before the final checks look.
    w.machines.freeze();
    for wl in &w.cfg.workloads {
        wl.freeze();
    }
    for (_, log, _) in &w.frameworks {
        let mut g = log.lock().expect("log lock");
        g.frozen = true;
        if let Some(h) = &g.handle {
            h.reconcile(g.live.iter().cloned().collect());
        }
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    checker.abort();
    if let Some(t) = writer {
        t.abort();
    }
    w.rec.note(format_args!("final checks"));
    invariants::final_checks(&w, settle_start).await;
    invariants::registry_writes_kept(&w, *acked.lock().expect("acked lock"));
    for wl in &w.cfg.workloads {
        wl.check(&w.rec);
    }
    let tasks_launched = w
        .frameworks
        .iter()
        .map(|(_, l, _)| l.lock().expect("log lock").launched.len())
        .sum();
    SimReport {
        seed: cfg.seed,
        trace_hash: w.net.trace_hash(),
        trace_lines: w.net.trace_lines(),
        trace_tail: w.net.trace(),
        violations: w.rec.violations(),
        tasks_launched,
        faults,
    }
}
