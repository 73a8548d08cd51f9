//! `FrameworkSession`: one actor per subscribed framework, linked to the master, holding
//! the framework's scheduler and carrying the master's messages to it.
//!
//! The master never touches a scheduler's actor: it hands messages to the framework's
//! session and goes on, so a framework that is slow, far away or gone costs the master
//! one local cast. The session watches the scheduler; when the scheduler ends, the
//! session ends, and the master (its supervisor) counts the framework disconnected.
//!
//! Policy: a session is never restarted. If one fails, the master counts its framework
//! disconnected (its offers are rescinded, its tasks keep running for its failover
//! timeout) and tells the scheduler, which re-subscribes with its framework id and finds
//! its tasks where it left them.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{debug, info};

use crate::ids::FrameworkId;
use crate::protocol::SchedulerMsg;
use crate::supervision::FaultSwitch;

/// Messages of a session (local only).
#[derive(Debug)]
pub enum SessionMsg {
    /// Carry this to the scheduler.
    Send(SchedulerMsg),
}

impl ractor::Message for SessionMsg {}

/// What a session starts from.
pub struct SessionArgs {
    /// The framework.
    pub framework_id: FrameworkId,
    /// Its scheduler's actor.
    pub scheduler: ActorRef<SchedulerMsg>,
}

/// The session actor.
pub struct FrameworkSession {
    fault: FaultSwitch,
}

impl FrameworkSession {
    /// Sessions that panic on their next message once `fault` is tripped (tests).
    pub fn new(fault: FaultSwitch) -> Self {
        FrameworkSession { fault }
    }
}

impl Actor for FrameworkSession {
    type Msg = SessionMsg;
    type State = SessionArgs;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        me: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionArgs, ActorProcessingErr> {
        me.get_cell().monitor(args.scheduler.get_cell());
        Ok(args)
    }

    async fn handle(
        &self,
        _me: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionArgs,
    ) -> Result<(), ActorProcessingErr> {
        self.fault.check("a framework session");
        match msg {
            SessionMsg::Send(m) => {
                if let Err(e) = st.scheduler.cast(m) {
                    // Its monitor reports the loss; the session ends then.
                    debug!(framework = %st.framework_id, "scheduler unreachable: {e}");
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SessionMsg>,
        evt: SupervisionEvent,
        st: &mut SessionArgs,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) = &evt
        {
            if c.get_id() == st.scheduler.get_id() {
                info!(framework = %st.framework_id, "scheduler gone: {evt}");
                me.stop(Some("scheduler gone".into()));
            }
        }
        Ok(())
    }
}
