//! The `Master` actor: glue between the node's messages and [`MasterCore`].
//!
//! It resolves the actors of registering agents and subscribing schedulers, watches them
//! with monitors, turns every message into a core [`Event`] stamped with the time, and
//! carries out the core's [`Effect`]s. It decides nothing itself.

use std::collections::BTreeMap;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use plexus_actors::{InboxGauge, Node};

use super::assembly::Assembler;
use super::config::MasterConfig;
use super::core::{Effect, Event, FrameworkAuthority, MasterCore, Now, ToAgent, ToScheduler};
use super::session::{FrameworkSession, SessionArgs, SessionMsg};
use super::view::Publisher;
use crate::protocol::*;

/// Period of the master's tick (timeouts, table eviction).
pub const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The master actor.
pub struct Master {
    node: Node,
    cfg: MasterConfig,
    generation: u32,
}

impl Master {
    /// A master on `node`.
    pub fn new(node: Node, cfg: MasterConfig) -> Self {
        Self::generation(node, cfg, 0)
    }

    /// The `generation`th master its supervisor started on `node` (its ids differ from
    /// those of every other master, of this node's incarnation or another).
    pub fn generation(node: Node, cfg: MasterConfig, generation: u32) -> Self {
        Master {
            node,
            cfg,
            generation,
        }
    }

    /// What this master's minted ids start with: its node's name and incarnation, the
    /// term it leads in and its generation, so that no two masters (of several, started
    /// at once, one restarted, or one leading again) mint the same id.
    fn epoch(&self) -> u32 {
        let term = self.cfg.leading.as_ref().map_or(0, |(t, _)| *t)
            ^ (u64::from(self.cfg.epoch_salt) << 40);
        let inc = self.node.incarnation() ^ term.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // FNV-1a of the node's name: the same on every run.
        let name = self.node.name().bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let mixed = (inc ^ (inc >> 32)) as u32 ^ name;
        mixed.wrapping_add(self.generation.wrapping_mul(0x9e37_79b9))
    }
}

/// Tells every agent and scheduler this node knows of that a new master leads, so they
/// register and subscribe with it at once rather than when they find the old one gone.
fn tell_master_changed(node: &Node) {
    let node = node.clone();
    tokio::spawn(async move {
        let (mut agents, mut schedulers) = (0, 0);
        for name in node.names_under(plexus_actors::names::AGENT_PREFIX) {
            if let Ok(Some(a)) = node.whereis::<AgentMsg>(&name).await {
                if a.cast(AgentMsg::MasterChanged).is_ok() {
                    agents += 1;
                }
            }
        }
        for name in node.names_under(plexus_actors::names::SCHEDULER_PREFIX) {
            if let Ok(Some(s)) = node.whereis::<SchedulerMsg>(&name).await {
                if s.cast(SchedulerMsg::MasterChanged).is_ok() {
                    schedulers += 1;
                }
            }
        }
        info!(
            agents,
            schedulers, "told agents and schedulers that this master leads"
        );
    });
}

enum Watched {
    Agent(AgentId),
    Framework(FrameworkId),
}

/// The master actor's state: the core, and the actors its ids stand for.
pub struct MasterState {
    core: MasterCore,
    start: Instant,
    agents: BTreeMap<AgentId, ActorRef<AgentMsg>>,
    /// Each connected framework's session.
    sessions: BTreeMap<FrameworkId, ActorRef<SessionMsg>>,
    /// Each connected framework's scheduler (told directly when its session fails).
    schedulers: BTreeMap<FrameworkId, ActorRef<SchedulerMsg>>,
    watched: BTreeMap<ActorId, Watched>,
    /// The master's bounded inbox.
    inbox: InboxGauge,
    /// Keeps the read model up to date.
    publisher: Publisher,
    /// When the read model was last published.
    published_at: Instant,
    /// A publish is due (a `Publish` message is on its way).
    publish_due: bool,
    /// Registrations that came in parts, until they are whole.
    assembler: Assembler,
}

impl MasterState {
    fn now(&self) -> Now {
        Now {
            elapsed: self.start.elapsed(),
            unix_ms: plexus_net::clock::unix_ms(),
        }
    }

    fn handle(&mut self, me: &ActorRef<MasterMsg>, ev: Event) {
        let now = self.now();
        self.core.handle(now, ev);
        self.carry_out(me);
    }

    fn carry_out(&mut self, me: &ActorRef<MasterMsg>) {
        while let Some(e) = self.core.poll_effect() {
            match e {
                Effect::Scheduler { framework_id, msg } => {
                    if let Some(s) = self.sessions.get(&framework_id) {
                        if let Err(e) = s.cast(SessionMsg::Send(scheduler_msg(msg))) {
                            // Its end is reported as a supervision event.
                            debug!(framework = %framework_id, "session gone: {e}");
                        }
                    }
                }
                Effect::Agent { agent_id, msg } => {
                    if let Some(a) = self.agents.get(&agent_id) {
                        if let Err(e) = a.cast(agent_msg(msg)) {
                            debug!(agent = %agent_id, "agent unreachable: {e}");
                        }
                    }
                }
                Effect::AllocateAfter(delay) => {
                    me.send_after(delay, || MasterMsg::Allocate);
                }
                Effect::Registry(op) => self.write_registry(op),
            }
        }
    }

    /// Queues a registry write; one that finds the queue full is dropped (and said).
    fn write_registry(&self, op: crate::registry::RegistryOp) {
        let Some(link) = &self.core.config().registry else {
            debug_assert!(false, "a registry write without a registry");
            return;
        };
        if let Err(e) = link.writes.try_send(op) {
            warn!("a registry write is dropped: {e}");
        }
    }

    /// Publishes the read model now if it was not published within the interval, else
    /// once the interval is over: readers see a change within it, and a busy master
    /// publishes at most once per interval whatever its load.
    fn publish_soon(&mut self, me: &ActorRef<MasterMsg>, interval: std::time::Duration) {
        let since = self.published_at.elapsed();
        if since >= interval {
            self.publish(interval);
        } else if !self.publish_due {
            self.publish_due = true;
            me.send_after(interval - since, || MasterMsg::Publish);
        }
    }

    fn publish(&mut self, interval: std::time::Duration) {
        let t = std::time::Instant::now();
        let model = self.core.config().reads.clone();
        self.publisher
            .publish(&mut self.core, InboxStats::of(&self.inbox), &model);
        self.published_at = Instant::now();
        let took = t.elapsed();
        if took > interval / 4 {
            warn!("publishing the read model took {took:?}");
        }
    }

    fn watch(&mut self, me: &ActorRef<MasterMsg>, cell: ractor::ActorCell, w: Watched) {
        me.get_cell().monitor(cell.clone());
        self.watched.insert(cell.get_id(), w);
    }
}

fn scheduler_msg(m: ToScheduler) -> SchedulerMsg {
    match m {
        ToScheduler::Subscribed(id) => SchedulerMsg::Subscribed(id),
        ToScheduler::Offers(o) => SchedulerMsg::Offers(o),
        ToScheduler::Rescind(id) => SchedulerMsg::Rescind(id),
        ToScheduler::Update(u) => SchedulerMsg::Update(u),
        ToScheduler::Error(e) => SchedulerMsg::Error(e),
        ToScheduler::ActorUp { task_id, at } => SchedulerMsg::ActorUp { task_id, at },
    }
}

fn agent_msg(m: ToAgent) -> AgentMsg {
    match m {
        ToAgent::Registered => AgentMsg::Registered,
        ToAgent::Run {
            framework_id,
            spec,
            resources,
        } => AgentMsg::Run {
            framework_id,
            spec,
            resources,
        },
        ToAgent::Kill { task_id } => AgentMsg::Kill { task_id },
        ToAgent::Ack { task_id, uuid } => AgentMsg::Ack { task_id, uuid },
    }
}

impl Master {
    async fn register_agent(
        &self,
        me: &ActorRef<MasterMsg>,
        st: &mut MasterState,
        reg: AgentRegistration,
    ) {
        let actor = match self
            .node
            .whereis::<AgentMsg>(&agent_name(&reg.agent_id))
            .await
        {
            Ok(Some(a)) => a,
            other => {
                warn!(agent = %reg.agent_id, "cannot reach registering agent: {other:?}");
                return;
            }
        };
        st.watch(me, actor.get_cell(), Watched::Agent(reg.agent_id.clone()));
        st.agents.insert(reg.agent_id.clone(), actor);
        st.handle(me, Event::AgentRegistered(reg));
    }

    /// Registers an agent once its registration is whole.
    async fn registration_in(
        &self,
        me: &ActorRef<MasterMsg>,
        st: &mut MasterState,
        agent: AgentId,
        whole: Result<Option<AgentRegistration>, String>,
    ) {
        match whole {
            Ok(Some(reg)) => self.register_agent(me, st, reg).await,
            Ok(None) => {}
            Err(e) => warn!(agent = %agent, "a registration was refused: {e}"),
        }
    }

    /// On whose authority a subscribing framework acts: the kernel's, when its driver
    /// runs in this node (the built-in frameworks run only on the leader, and the name
    /// rules let a node hold only `plexus.scheduler:NODE:…` names of its own); else the
    /// principal it names, if its secret proves it.
    fn authority(
        &self,
        info: &FrameworkInfo,
        scheduler: &str,
        secret: Option<&str>,
    ) -> Result<FrameworkAuthority, String> {
        let kernel_node = scheduler
            .strip_prefix(plexus_actors::names::SCHEDULER_PREFIX)
            .and_then(|rest| rest.split(':').next())
            .is_some_and(|n| n == self.node.name());
        if kernel_node {
            return Ok(FrameworkAuthority::Kernel);
        }
        match (&info.principal, secret) {
            (None, _) => Ok(FrameworkAuthority::Anonymous),
            (Some(p), Some(s)) if self.cfg.credentials.verify(p, s) => {
                Ok(FrameworkAuthority::Principal(p.clone()))
            }
            (Some(p), _) => Err(format!(
                "framework principal {p:?} failed authentication (no secret, or not its own)"
            )),
        }
    }

    async fn subscribe(
        &self,
        me: &ActorRef<MasterMsg>,
        st: &mut MasterState,
        info: FrameworkInfo,
        scheduler: String,
        authority: FrameworkAuthority,
    ) -> Result<FrameworkId, String> {
        let sched = match self.node.whereis::<SchedulerMsg>(&scheduler).await {
            Ok(Some(s)) => s,
            other => return Err(format!("cannot reach scheduler {scheduler:?}: {other:?}")),
        };
        let now = st.now();
        let id = st
            .core
            .subscribe(now, info, authority)
            .map_err(|e| e.to_string())?;
        let (session, _) = Actor::spawn_linked(
            None,
            FrameworkSession::new(self.cfg.session_fault.clone()),
            SessionArgs {
                framework_id: id.clone(),
                scheduler: sched.clone(),
            },
            me.get_cell(),
        )
        .await
        .map_err(|e| format!("starting the framework's session: {e}"))?;
        st.watched
            .insert(session.get_id(), Watched::Framework(id.clone()));
        if let Some(old) = st.sessions.insert(id.clone(), session) {
            // Re-subscribed from a new scheduler: the old session is no longer current.
            old.stop(Some("replaced by a new subscription".into()));
        }
        st.schedulers.insert(id.clone(), sched);
        st.carry_out(me);
        Ok(id)
    }
}

impl Actor for Master {
    type Msg = MasterMsg;
    type State = MasterState;
    type Arguments = ();

    async fn pre_start(
        &self,
        me: ActorRef<MasterMsg>,
        _: (),
    ) -> Result<MasterState, ActorProcessingErr> {
        match &self.cfg.leading {
            None => self.node.register(MASTER_NAME, &me)?,
            Some((term, _)) => {
                self.node.register_ranked(MASTER_NAME, &me, *term)?;
                tell_master_changed(&self.node);
            }
        }
        me.send_interval(TICK_INTERVAL, || MasterMsg::Tick);
        me.send_interval(self.cfg.allocation_interval, || MasterMsg::Allocate);
        Ok(MasterState {
            core: MasterCore::with_epoch(self.cfg.clone(), self.epoch()),
            start: Instant::now(),
            agents: BTreeMap::new(),
            sessions: BTreeMap::new(),
            schedulers: BTreeMap::new(),
            watched: BTreeMap::new(),
            inbox: self
                .node
                .bound_inbox(me.get_id(), self.cfg.inbox_limit_msgs),
            publisher: Publisher::default(),
            published_at: Instant::now() - self.cfg.publish_interval,
            publish_due: false,
            assembler: Assembler::default(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<MasterMsg>,
        msg: MasterMsg,
        st: &mut MasterState,
    ) -> Result<(), ActorProcessingErr> {
        self.cfg.fault.check("the master");
        st.inbox.handled();
        if let Some((term, lease)) = &self.cfg.leading {
            if lease.term() != Some(*term) {
                // Another master may lead by now: nothing is decided here any more.
                debug!(term, "not leading: a message is left unanswered");
                return Ok(());
            }
        }
        match msg {
            MasterMsg::RegisterAgent(reg) => {
                let agent = reg.agent_id.clone();
                let whole = st.assembler.header(reg, st.start.elapsed());
                self.registration_in(&me, st, agent, whole).await
            }
            MasterMsg::RegisterAgentPart(part) => {
                let agent = part.agent_id.clone();
                let whole = st.assembler.part(part, st.start.elapsed());
                self.registration_in(&me, st, agent, whole).await
            }
            MasterMsg::Subscribe {
                info,
                scheduler,
                secret,
                reply,
            } => {
                let (name, principal) = (info.name.clone(), info.principal.clone());
                let r = match self.authority(&info, &scheduler, secret.as_deref()) {
                    Ok(authority) => self.subscribe(&me, st, info, scheduler, authority).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &r {
                    warn!(framework = %name, ?principal, "a subscription was refused: {e}");
                }
                if reply.send(r).is_err() {
                    debug!("subscriber left before its answer");
                }
            }
            MasterMsg::State(reply) => {
                let mut state = st.core.state();
                state.inbox = InboxStats::of(&st.inbox);
                if reply.send(state).is_err() {
                    debug!("state asker left before its answer");
                }
            }
            MasterMsg::RolesChanged => st.handle(&me, Event::RolesChanged),
            MasterMsg::Allocate => {
                let t = std::time::Instant::now();
                st.handle(&me, Event::Allocate);
                st.core
                    .set_last_allocation_us(t.elapsed().as_micros() as u64);
            }
            MasterMsg::Update(u) => st.handle(&me, Event::Update(u)),
            MasterMsg::ActorUp {
                agent_id,
                task_id,
                at,
            } => st.handle(
                &me,
                Event::ActorUp {
                    agent_id,
                    task_id,
                    at,
                },
            ),
            MasterMsg::AgentHealth { agent_id, problem } => {
                st.handle(&me, Event::AgentHealth { agent_id, problem })
            }
            MasterMsg::Framework { framework_id, call } => {
                st.handle(&me, Event::Framework { framework_id, call })
            }
            MasterMsg::Tick => {
                let forgotten = st.assembler.expire(st.start.elapsed());
                if forgotten > 0 {
                    warn!("{forgotten} registrations left incomplete were forgotten");
                }
                st.handle(&me, Event::Tick)
            }
            MasterMsg::Publish => {
                st.publish_due = false;
                st.publish(self.cfg.publish_interval);
                return Ok(());
            }
        }
        st.publish_soon(&me, self.cfg.publish_interval);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<MasterMsg>,
        evt: SupervisionEvent,
        st: &mut MasterState,
    ) -> Result<(), ActorProcessingErr> {
        let cell = match &evt {
            SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) => {
                c.clone()
            }
            _ => return Ok(()),
        };
        // Only the current actor of an agent or framework speaks for it.
        match st.watched.remove(&cell.get_id()) {
            Some(Watched::Agent(id))
                if st
                    .agents
                    .get(&id)
                    .is_some_and(|a| a.get_id() == cell.get_id()) =>
            {
                st.agents.remove(&id);
                st.handle(&me, Event::AgentLost { agent_id: id });
            }
            Some(Watched::Framework(id))
                if st
                    .sessions
                    .get(&id)
                    .is_some_and(|s| s.get_id() == cell.get_id()) =>
            {
                st.sessions.remove(&id);
                let scheduler = st.schedulers.remove(&id);
                if let (SupervisionEvent::ActorFailed(_, e), Some(s)) = (&evt, scheduler) {
                    // The scheduler is still there: have it subscribe again.
                    warn!(framework = %id, "framework session failed: {e}");
                    if let Err(e) = s.cast(SchedulerMsg::Disconnected(format!(
                        "the master's session of this framework failed: {e}"
                    ))) {
                        debug!(framework = %id, "scheduler unreachable: {e}");
                    }
                }
                st.handle(&me, Event::FrameworkDisconnected { framework_id: id });
            }
            Some(_) => {}
            None => {}
        }
        Ok(())
    }
}
