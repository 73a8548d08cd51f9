//! A ready-made supervisor for placed actors: Erlang/OTP's `one_for_one`.
//!
//! [`OneForOne`] starts its children through a [`Datacenter`], linked to itself, and
//! restarts a child that ends (whatever the reason: a panic, a memory limit, a lost
//! machine) through the kernel again, preferring another agent than the one it was on.
//! Restarts wait with exponential backoff; more than `max_restarts` within `period`
//! and the supervisor gives up and stops with a reason naming the child, as an OTP
//! supervisor does, so that its own supervisor decides what comes next.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Datacenter, DatacenterError, Requirements};
use crate::ids::AgentId;

/// One child: what to spawn, and where it may go.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The child's name in its supervisor.
    pub name: String,
    /// Its actor type (registered by the executor).
    pub type_name: String,
    /// The Rust name of its message type.
    pub msg_type: String,
    /// Its encoded arguments (the same at every restart).
    pub args: Vec<u8>,
    /// Its requirements.
    pub requirements: Requirements,
}

impl ChildSpec {
    /// Child `name`: an actor of `type_name` handling `M`, started with `args`.
    pub fn new<M: ractor::Message, A: Serialize>(
        name: &str,
        type_name: &str,
        args: &A,
        requirements: Requirements,
    ) -> Result<ChildSpec, DatacenterError> {
        let args = plexus_net::codec::encode(args).map_err(|e| DatacenterError::Invalid {
            type_name: type_name.into(),
            why: format!("arguments: {e}"),
        })?;
        Ok(ChildSpec {
            name: name.into(),
            type_name: type_name.into(),
            msg_type: std::any::type_name::<M>().into(),
            args,
            requirements,
        })
    }
}

/// How often children may be restarted, and how soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Most restarts of one child within `period`; one more and the supervisor gives up.
    pub max_restarts: u32,
    /// The window restarts are counted in.
    pub period: Duration,
    /// Wait before the first restart of a child; doubled at each restart in the window.
    pub backoff_min: Duration,
    /// Longest wait before a restart.
    pub backoff_max: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What happened to a child (for observers: logs, tests, dashboards).
#[derive(Debug, Clone, PartialEq)]
pub enum ChildEvent {
    /// It started (again) on an agent.
    Started {
        /// The child.
        child: String,
        /// Its actor (a remote id: its executor node and pid).
        actor: ActorId,
        /// Its agent.
        agent: Option<AgentId>,
        /// Its task.
        task_id: String,
        /// Starts so far, this one included.
        starts: u32,
    },
    /// Its actor failed, with the error text (a panic's message).
    Failed {
        /// The child.
        child: String,
        /// Its actor.
        actor: ActorId,
        /// The text.
        error: String,
    },
    /// Its actor ended, with the reason.
    Terminated {
        /// The child.
        child: String,
        /// Its actor.
        actor: ActorId,
        /// The reason.
        reason: Option<String>,
    },
    /// It could not be started this time (it is tried again, counting as a restart).
    NotStarted {
        /// The child.
        child: String,
        /// Why.
        error: String,
    },
    /// Restarted too often: the supervisor stopped.
    GaveUp {
        /// The child.
        child: String,
    },
}

/// Messages of a [`OneForOne`] supervisor.
#[derive(Debug)]
pub enum OneForOneMsg {
    /// The current actor of child `name`, if it runs.
    Child(String, RpcReplyPort<Option<ActorCell>>),
    /// Start child `name` (internal).
    Start(String),
    /// A start finished (internal).
    Started(
        String,
        Result<ActorCell, DatacenterError>,
        Option<AgentId>,
        String,
    ),
}

impl ractor::Message for OneForOneMsg {}

/// The `one_for_one` supervisor actor (see the module docs).
pub struct OneForOne {
    dc: Datacenter,
    intensity: Intensity,
    observer: Option<mpsc::UnboundedSender<ChildEvent>>,
}

impl OneForOne {
    /// A supervisor starting its children through `dc`.
    pub fn new(dc: Datacenter, intensity: Intensity) -> OneForOne {
        OneForOne {
            dc,
            intensity,
            observer: None,
        }
    }

    /// Also tells `observer` what happens to the children.
    pub fn observed(mut self, observer: mpsc::UnboundedSender<ChildEvent>) -> OneForOne {
        self.observer = Some(observer);
        self
    }

    fn tell(&self, e: ChildEvent) {
        if let Some(o) = &self.observer {
            if o.send(e).is_err() {
                tracing::debug!("the supervisor's observer is gone");
            }
        }
    }
}

/// A child's state in its supervisor.
pub struct Child {
    spec: ChildSpec,
    actor: Option<ActorCell>,
    agent: Option<AgentId>,
    restarts: VecDeque<Instant>,
    starts: u32,
}

/// A [`OneForOne`] supervisor's state.
pub struct OneForOneState {
    children: BTreeMap<String, Child>,
    by_actor: BTreeMap<ActorId, String>,
    /// Ends of actors not (yet) known as children, oldest first: a child's reference
    /// is linked to this supervisor before its start is answered, so its end can come
    /// first; the answer then finds it here.
    early_ends: VecDeque<(ActorId, Result<Option<String>, String>)>,
}

/// Most ends of unknown actors remembered (see `OneForOneState::early_ends`).
const MAX_EARLY_ENDS: usize = 1_024;

impl OneForOne {
    fn start(&self, me: &ActorRef<OneForOneMsg>, child: &Child) {
        let mut req = child.spec.requirements.clone();
        if let Some(a) = &child.agent {
            req = req.avoid_agent(a.clone());
        }
        let name = child.spec.name.clone();
        let pending = self.dc.request_encoded(
            Some(me.get_cell()),
            &child.spec.type_name,
            &child.spec.msg_type,
            child.spec.args.clone(),
            req,
        );
        let dc = self.dc.clone();
        let me = me.clone();
        tokio::spawn(async move {
            let (r, task_id) = match pending {
                Ok(p) => {
                    let task_id = p.task_id().to_string();
                    (p.placed().await, task_id)
                }
                Err(e) => (Err(e), String::new()),
            };
            let agent = r.as_ref().ok().and_then(|c| dc.agent_of(c));
            if let Err(e) = me.cast(OneForOneMsg::Started(name, r, agent, task_id)) {
                tracing::debug!("supervisor gone: {e}");
            }
        });
    }

    /// The child `name` ended: restart it after its backoff, or give up.
    fn restart(
        &self,
        me: &ActorRef<OneForOneMsg>,
        st: &mut OneForOneState,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(c) = st.children.get_mut(name) else {
            return Ok(());
        };
        c.actor = None;
        let now = Instant::now();
        c.restarts.push_back(now);
        while c
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.intensity.period)
        {
            c.restarts.pop_front();
        }
        let n = c.restarts.len() as u32;
        if n > self.intensity.max_restarts {
            self.tell(ChildEvent::GaveUp { child: name.into() });
            let why = format!(
                "child {name:?} ended {n} times within {:?}: giving up (one_for_one, max_restarts {})",
                self.intensity.period, self.intensity.max_restarts
            );
            warn!("{why}");
            me.stop(Some(why));
            return Ok(());
        }
        let wait = self
            .intensity
            .backoff_min
            .saturating_mul(1 << (n - 1).min(16))
            .min(self.intensity.backoff_max);
        info!(child = name, restarts_in_period = n, ?wait, "restarting");
        let name = name.to_string();
        me.send_after(wait, move || OneForOneMsg::Start(name));
        Ok(())
    }
}

impl Actor for OneForOne {
    type Msg = OneForOneMsg;
    type State = OneForOneState;
    type Arguments = Vec<ChildSpec>;

    async fn pre_start(
        &self,
        me: ActorRef<OneForOneMsg>,
        specs: Vec<ChildSpec>,
    ) -> Result<OneForOneState, ActorProcessingErr> {
        let mut st = OneForOneState {
            children: BTreeMap::new(),
            by_actor: BTreeMap::new(),
            early_ends: VecDeque::new(),
        };
        for spec in specs {
            if st.children.contains_key(&spec.name) {
                return Err(format!("two children named {:?}", spec.name).into());
            }
            let c = Child {
                spec,
                actor: None,
                agent: None,
                restarts: VecDeque::new(),
                starts: 0,
            };
            self.start(&me, &c);
            st.children.insert(c.spec.name.clone(), c);
        }
        Ok(st)
    }

    async fn handle(
        &self,
        me: ActorRef<OneForOneMsg>,
        msg: OneForOneMsg,
        st: &mut OneForOneState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OneForOneMsg::Child(name, reply) => {
                let a = st.children.get(&name).and_then(|c| c.actor.clone());
                if reply.send(a).is_err() {
                    tracing::debug!("asker gone");
                }
            }
            OneForOneMsg::Start(name) => {
                if let Some(c) = st.children.get(&name) {
                    self.start(&me, c);
                }
            }
            OneForOneMsg::Started(name, result, agent, task_id) => {
                let Some(c) = st.children.get_mut(&name) else {
                    return Ok(());
                };
                match result {
                    Ok(cell) => {
                        c.starts += 1;
                        c.agent = agent.clone();
                        st.by_actor.insert(cell.get_id(), name.clone());
                        let actor = cell.get_id();
                        c.actor = Some(cell);
                        self.tell(ChildEvent::Started {
                            child: name.clone(),
                            actor,
                            agent,
                            task_id,
                            starts: c.starts,
                        });
                        let early = st.early_ends.iter().position(|(a, _)| *a == actor);
                        if let Some((_, event)) = early.and_then(|i| st.early_ends.remove(i)) {
                            // It ended before its start was answered.
                            st.by_actor.remove(&actor);
                            self.ended(&me, st, &name, actor, event)?;
                        }
                    }
                    Err(e) => {
                        warn!(child = %name, "not started: {e}");
                        self.tell(ChildEvent::NotStarted {
                            child: name.clone(),
                            error: e.to_string(),
                        });
                        self.restart(&me, st, &name)?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<OneForOneMsg>,
        evt: SupervisionEvent,
        st: &mut OneForOneState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, event) = match &evt {
            SupervisionEvent::ActorFailed(c, e) => (c, Err(e.to_string())),
            SupervisionEvent::ActorTerminated(c, _, r) => (c, Ok(r.clone())),
            _ => return Ok(()),
        };
        let Some(name) = st.by_actor.remove(&cell.get_id()) else {
            if st.early_ends.len() >= MAX_EARLY_ENDS {
                st.early_ends.pop_front();
            }
            st.early_ends.push_back((cell.get_id(), event));
            return Ok(());
        };
        self.ended(&me, st, &name, cell.get_id(), event)
    }
}

impl OneForOne {
    /// Child `name`'s actor ended (`Err`: failed, with the error; `Ok`: terminated,
    /// with the reason): its observer is told, and it is restarted.
    fn ended(
        &self,
        me: &ActorRef<OneForOneMsg>,
        st: &mut OneForOneState,
        name: &str,
        actor: ActorId,
        event: Result<Option<String>, String>,
    ) -> Result<(), ActorProcessingErr> {
        let name = name.to_string();
        match event {
            Err(error) => {
                warn!(child = %name, "failed: {error}");
                self.tell(ChildEvent::Failed {
                    child: name.clone(),
                    actor,
                    error,
                });
            }
            Ok(reason) => {
                info!(child = %name, ?reason, "terminated");
                self.tell(ChildEvent::Terminated {
                    child: name.clone(),
                    actor,
                    reason,
                });
            }
        }
        self.restart(me, st, &name)
    }
}
