//! [`MasterSupervisor`]: the root of the master process's tree.
//!
//! Its child, the [`Master`] actor, is restarted under a [`RestartPolicy`] (backoff, and
//! an intensity limit past which the supervisor fails and the process exits). A restarted
//! master starts empty and rebuilds as after a master process restart: agents see the
//! old one go, find the new one under [`MASTER_NAME`] and re-register with their tasks;
//! frameworks re-subscribe.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tracing::{error, warn};

use plexus_actors::Node;

use super::{Master, MasterConfig};
use crate::protocol::{MasterMsg, MASTER_NAME};
use crate::supervision::{Decision, RestartBudget, RestartPolicy};

/// Messages of the supervisor (local only).
#[derive(Debug)]
pub enum MasterSupervisorMsg {
    /// Start the master again (after its backoff).
    Restart,
    /// The current master, if one runs.
    Current(RpcReplyPort<Option<ActorRef<MasterMsg>>>),
}

impl ractor::Message for MasterSupervisorMsg {}

/// The master process's root supervisor.
pub struct MasterSupervisor {
    node: Node,
    cfg: MasterConfig,
    policy: RestartPolicy,
}

impl MasterSupervisor {
    /// A supervisor that runs a master of `cfg` on `node`, restarting it under `policy`.
    pub fn new(node: Node, cfg: MasterConfig, policy: RestartPolicy) -> Self {
        MasterSupervisor { node, cfg, policy }
    }

    async fn start_master(
        &self,
        me: &ActorRef<MasterSupervisorMsg>,
        generation: u32,
    ) -> Result<ActorRef<MasterMsg>, ActorProcessingErr> {
        let (m, _) = Actor::spawn_linked(
            None,
            Master::generation(self.node.clone(), self.cfg.clone(), generation),
            (),
            me.get_cell(),
        )
        .await?;
        Ok(m)
    }
}

/// The supervisor's state.
pub struct MasterSupervisorState {
    master: Option<ActorRef<MasterMsg>>,
    budget: RestartBudget,
    start: Instant,
    /// Restarts so far.
    pub restarts: u64,
}

impl Actor for MasterSupervisor {
    type Msg = MasterSupervisorMsg;
    type State = MasterSupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let master = self.start_master(&me, 0).await?;
        Ok(MasterSupervisorState {
            master: Some(master),
            budget: RestartBudget::new(self.policy),
            start: Instant::now(),
            restarts: 0,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MasterSupervisorMsg::Restart => {
                match self.start_master(&me, (st.restarts + 1) as u32).await {
                    Ok(m) => {
                        st.restarts += 1;
                        st.master = Some(m);
                        warn!(restarts = st.restarts, "master restarted");
                    }
                    Err(e) => self.failed(&me, st, &format!("restart failed: {e}"))?,
                }
            }
            MasterSupervisorMsg::Current(reply) => {
                if reply.send(st.master.clone()).is_err() {
                    tracing::debug!("asker left before its answer");
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &evt {
            SupervisionEvent::ActorFailed(c, e) => (c, format!("failed: {e}")),
            SupervisionEvent::ActorTerminated(c, _, reason) => (
                c,
                format!("stopped: {}", reason.as_deref().unwrap_or("no reason")),
            ),
            _ => return Ok(()),
        };
        if st
            .master
            .as_ref()
            .is_some_and(|m| m.get_id() == cell.get_id())
        {
            st.master = None;
            self.failed(&me, st, &why)?;
        }
        Ok(())
    }
}

impl MasterSupervisor {
    /// The master is gone: restart it after its backoff, or give up.
    fn failed(
        &self,
        me: &ActorRef<MasterSupervisorMsg>,
        st: &mut MasterSupervisorState,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        // Free the name now: the new master claims it in its start.
        self.node.unregister(MASTER_NAME);
        match st.budget.on_failure(st.start.elapsed()) {
            Decision::Restart { after } => {
                warn!("master {why}; restarting in {} ms", after.as_millis());
                me.send_after(after, || MasterSupervisorMsg::Restart);
                Ok(())
            }
            Decision::Escalate { failures } => {
                let p = st.budget.policy();
                error!(
                    "master {why}; {failures} failures within {} s: giving up",
                    p.window.as_secs()
                );
                Err(From::from(format!(
                    "the master failed {failures} times within {} s (last: {why})",
                    p.window.as_secs()
                )))
            }
        }
    }
}
