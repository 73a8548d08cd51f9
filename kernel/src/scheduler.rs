//! The framework API: implement [`Scheduler`], start it with [`SchedulerDriver::start`].
//!
//! The driver is an actor on the framework's node. It subscribes to the master, calls the
//! scheduler with offers, rescinds and status updates, acknowledges updates after the
//! scheduler has seen them (implicit acknowledgement), and re-subscribes with the same
//! framework id when the master is lost, so a framework back within its failover timeout
//! keeps its tasks.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{debug, error, info, warn};

use plexus_actors::{Node, SendError};

use crate::protocol::*;
use crate::status::{ActorAt, StatusUpdate};

/// What a framework does with offers and updates.
pub trait Scheduler: Send + 'static {
    /// Subscribed (or re-subscribed) as `framework_id`.
    fn registered(&mut self, _driver: &DriverHandle, _framework_id: &str) {}
    /// New offers: accept some with [`DriverHandle::launch`], decline the rest.
    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>);
    /// An offer was withdrawn.
    fn rescinded(&mut self, _driver: &DriverHandle, _offer_id: &str) {}
    /// A task's status changed (acknowledged by the driver afterwards).
    fn update(&mut self, driver: &DriverHandle, update: &StatusUpdate);
    /// The actor of actor task `task_id` answers at `at`, ahead of the task's
    /// `TASK_RUNNING` update (which carries the same place).
    fn actor_up(&mut self, _driver: &DriverHandle, _task_id: &str, _at: &ActorAt) {}
    /// The master reported an error.
    fn error(&mut self, _driver: &DriverHandle, message: &str) {
        warn!("framework error: {message}");
    }
}

/// The calls a scheduler can make.
#[derive(Clone)]
pub struct DriverHandle {
    master: ActorRef<MasterMsg>,
    framework_id: FrameworkId,
    node: Node,
}

impl DriverHandle {
    /// This framework's id.
    pub fn framework_id(&self) -> &str {
        &self.framework_id
    }

    /// Sends a request to the master. A master that cannot be reached loses it; the
    /// driver re-subscribes when the master is back and reconciles.
    fn call(&self, call: FrameworkCall) {
        if let Err(e) = self.try_call(call) {
            debug!(framework = %self.framework_id, "not sent: {e}");
        }
    }

    fn try_call(&self, call: FrameworkCall) -> Result<(), SendError> {
        let msg = MasterMsg::Framework {
            framework_id: self.framework_id.clone(),
            call,
        };
        self.node.cast_checked(&self.master, msg)
    }

    /// Launches `tasks` on the offers (of one agent); the rest is declined for `refuse`.
    /// A launch that cannot be sent is an error: too large for one message (keep the
    /// tasks' specs within [`DriverHandle::launch_budget_bytes`]), or no master. Its
    /// tasks were then not launched, and its offers are rescinded in time.
    pub fn launch(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskSpec>,
        refuse: Duration,
    ) -> Result<(), SendError> {
        let r = self.try_call(FrameworkCall::Accept {
            offer_ids,
            tasks,
            refuse_secs: refuse.as_secs_f64(),
        });
        if let Err(e @ SendError::TooLarge { .. }) = &r {
            error!(framework = %self.framework_id, "a launch was not sent: {e}");
        }
        r
    }

    /// About how many bytes of task specs ([`TaskSpec::approx_bytes`]) one launch may
    /// carry.
    pub fn launch_budget_bytes(&self) -> usize {
        self.node.max_message_bytes() / 2
    }

    /// Declines offers; their agents are not offered again for `refuse`.
    pub fn decline(&self, offer_ids: Vec<OfferId>, refuse: Duration) {
        self.call(FrameworkCall::Decline {
            offer_ids,
            refuse_secs: refuse.as_secs_f64(),
        });
    }

    /// Kills a task.
    pub fn kill(&self, task_id: &str) {
        self.call(FrameworkCall::Kill {
            task_id: task_id.into(),
        });
    }

    /// Acknowledges an update explicitly (the driver does it implicitly by default).
    pub fn acknowledge(&self, u: &StatusUpdate) {
        self.call(FrameworkCall::Acknowledge {
            task_id: u.task_id.clone(),
            uuid: u.uuid,
        });
    }

    /// Asks for the state of `task_ids` (empty: every task of the framework).
    pub fn reconcile(&self, task_ids: Vec<TaskId>) {
        self.call(FrameworkCall::Reconcile { task_ids });
    }

    /// Stops offers.
    pub fn suppress(&self) {
        self.call(FrameworkCall::Suppress);
    }

    /// Resumes offers and clears decline filters.
    pub fn revive(&self) {
        self.call(FrameworkCall::Revive);
    }

    /// Ends the framework: its tasks are killed.
    pub fn teardown(&self) {
        self.call(FrameworkCall::Teardown);
    }
}

/// Arguments of the driver actor.
pub struct DriverArgs {
    /// The framework.
    pub info: FrameworkInfo,
    /// The scheduler.
    pub scheduler: Box<dyn Scheduler>,
    /// Acknowledge updates after the scheduler saw them.
    pub implicit_acks: bool,
    /// Cluster-wide name the driver registers (the master finds it by this name).
    pub name: String,
    /// The secret of `info.principal`, sent when subscribing.
    pub secret: Option<String>,
}

/// The driver actor.
pub struct SchedulerDriver {
    node: Node,
}

/// The driver's state.
pub struct DriverState {
    info: FrameworkInfo,
    scheduler: Box<dyn Scheduler>,
    handle: Option<DriverHandle>,
    implicit_acks: bool,
    name: String,
    secret: Option<String>,
    /// Callers waiting for the registration.
    awaiting: Vec<RpcReplyPort<()>>,
}

/// Why a subscription did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SubscribeFailure {
    /// No master answered (yet): worth trying again.
    #[error("{0}")]
    Unanswered(String),
    /// The master answered no (a bad framework, or not allowed): final.
    #[error("{0}")]
    Refused(String),
}

/// Whether the master's name now points at another actor than `current` (a new master
/// leads). The new leader's claim reaches a node before its word that it leads (both go
/// on one link, in order), so whoever is told looks here.
pub(crate) async fn master_moved(node: &Node, current: Option<ractor::ActorId>) -> bool {
    match node.whereis::<MasterMsg>(MASTER_NAME).await {
        Ok(Some(found)) => current != Some(found.get_id()),
        _ => false,
    }
}

async fn subscribe(
    node: &Node,
    info: &FrameworkInfo,
    secret: Option<&str>,
    name: &str,
) -> Result<FrameworkId, SubscribeFailure> {
    let unanswered = |e: String| SubscribeFailure::Unanswered(e);
    let master = node
        .whereis::<MasterMsg>(MASTER_NAME)
        .await
        .map_err(|e| unanswered(e.to_string()))?
        .ok_or_else(|| unanswered("no master is known yet".to_string()))?;
    let answer = ractor::call_t!(
        master,
        |reply| MasterMsg::Subscribe {
            info: info.clone(),
            scheduler: name.to_string(),
            secret: secret.map(str::to_string),
            reply
        },
        10_000
    )
    .map_err(|e| unanswered(format!("subscribe: {e}")))?;
    answer.map_err(SubscribeFailure::Refused)
}

impl SchedulerDriver {
    /// Starts a driver for `scheduler` on `node` and subscribes it, retrying until a
    /// master answers or `timeout` passes; returns the driver and the framework id.
    pub async fn start(
        node: &Node,
        info: FrameworkInfo,
        scheduler: Box<dyn Scheduler>,
        timeout: Duration,
    ) -> Result<(ActorRef<SchedulerMsg>, FrameworkId), String> {
        Self::start_with(node, info, scheduler, true, timeout).await
    }

    /// As [`SchedulerDriver::start`]; with `implicit_acks` false the scheduler must call
    /// [`DriverHandle::acknowledge`] itself, and unacknowledged updates keep coming.
    pub async fn start_with(
        node: &Node,
        info: FrameworkInfo,
        scheduler: Box<dyn Scheduler>,
        implicit_acks: bool,
        timeout: Duration,
    ) -> Result<(ActorRef<SchedulerMsg>, FrameworkId), String> {
        Self::start_authenticated(node, info, None, scheduler, implicit_acks, timeout).await
    }

    /// As [`SchedulerDriver::start_with`], proving with `secret` that the framework is
    /// `info.principal` (needed when the master has ACLs).
    pub async fn start_authenticated(
        node: &Node,
        info: FrameworkInfo,
        secret: Option<String>,
        scheduler: Box<dyn Scheduler>,
        implicit_acks: bool,
        timeout: Duration,
    ) -> Result<(ActorRef<SchedulerMsg>, FrameworkId), String> {
        let name = format!(
            "plexus.scheduler:{}:{}:{}",
            node.name(),
            node.incarnation(),
            info.name
        );
        let (r, _) = Actor::spawn(
            None,
            SchedulerDriver { node: node.clone() },
            DriverArgs {
                info: info.clone(),
                scheduler,
                implicit_acks,
                name: name.clone(),
                secret: secret.clone(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let end = tokio::time::Instant::now() + timeout;
        loop {
            match subscribe(node, &info, secret.as_deref(), &name).await {
                Ok(id) => {
                    // The scheduler hears `registered` before this returns.
                    let left = end.saturating_duration_since(tokio::time::Instant::now());
                    let ms = left.as_millis().max(1000) as u64;
                    if let Err(e) = ractor::call_t!(r, SchedulerMsg::AwaitRegistered, ms) {
                        r.stop(None);
                        return Err(format!("the driver never registered: {e}"));
                    }
                    return Ok((r, id));
                }
                Err(SubscribeFailure::Unanswered(_)) if tokio::time::Instant::now() <= end => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => {
                    r.stop(None);
                    return Err(e.to_string());
                }
            }
        }
    }
}

impl Actor for SchedulerDriver {
    type Msg = SchedulerMsg;
    type State = DriverState;
    type Arguments = DriverArgs;

    async fn pre_start(
        &self,
        me: ActorRef<SchedulerMsg>,
        a: DriverArgs,
    ) -> Result<DriverState, ActorProcessingErr> {
        self.node.register(&a.name, &me)?;
        Ok(DriverState {
            info: a.info,
            scheduler: a.scheduler,
            handle: None,
            implicit_acks: a.implicit_acks,
            name: a.name,
            secret: a.secret,
            awaiting: Vec::new(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        st: &mut DriverState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Subscribed(id) => {
                let Ok(Some(master)) = self.node.whereis::<MasterMsg>(MASTER_NAME).await else {
                    me.send_after(Duration::from_millis(200), || SchedulerMsg::Resubscribe);
                    return Ok(());
                };
                me.get_cell().monitor(master.get_cell());
                st.info.id = Some(id.clone());
                if master.get_status() >= ractor::ActorStatus::Stopping {
                    // Ended before the monitor was set, so it will not report its end (a
                    // reference just made may still be starting: it will).
                    me.send_after(Duration::from_millis(200), || SchedulerMsg::Resubscribe);
                    return Ok(());
                }
                let h = DriverHandle {
                    master,
                    framework_id: id.clone(),
                    node: self.node.clone(),
                };
                st.scheduler.registered(&h, &id);
                st.handle = Some(h);
                for w in st.awaiting.drain(..) {
                    if w.send(()).is_err() {
                        debug!("a waiter for the subscription left");
                    }
                }
                info!(framework = %id, "subscribed");
            }
            SchedulerMsg::MasterChanged => {
                let current = st.handle.as_ref().map(|h| h.master.get_id());
                // Between subscriptions: again at once, under its id. (A first
                // subscription under way, without an id, is left to answer: a second
                // would make a second framework.)
                let subscribed = current.is_some() || st.info.id.is_some();
                if subscribed && master_moved(&self.node, current).await {
                    info!("a new master leads; subscribing with it");
                    st.handle = None;
                    me.send_message(SchedulerMsg::Resubscribe)?;
                }
            }
            SchedulerMsg::Resubscribe => {
                if st.handle.is_none() {
                    if let Err(e) =
                        subscribe(&self.node, &st.info, st.secret.as_deref(), &st.name).await
                    {
                        warn!("re-subscription failed: {e}");
                        me.send_after(Duration::from_millis(500), || SchedulerMsg::Resubscribe);
                    }
                }
            }
            SchedulerMsg::Offers(offers) => {
                if let Some(h) = st.handle.clone() {
                    st.scheduler.offers(&h, offers);
                }
            }
            SchedulerMsg::Rescind(id) => {
                if let Some(h) = st.handle.clone() {
                    st.scheduler.rescinded(&h, &id);
                }
            }
            SchedulerMsg::Update(u) => {
                if let Some(h) = st.handle.clone() {
                    st.scheduler.update(&h, &u);
                    if st.implicit_acks && u.uuid != 0 {
                        h.acknowledge(&u);
                    }
                }
            }
            SchedulerMsg::ActorUp { task_id, at } => {
                if let Some(h) = st.handle.clone() {
                    st.scheduler.actor_up(&h, &task_id, &at);
                }
            }
            SchedulerMsg::AwaitRegistered(reply) => {
                if st.handle.is_some() {
                    if reply.send(()).is_err() {
                        debug!("a waiter for the subscription left");
                    }
                } else {
                    st.awaiting.push(reply);
                }
            }
            SchedulerMsg::Disconnected(why) => {
                warn!("disconnected by the master ({why}); re-subscribing");
                st.handle = None;
                me.send_after(Duration::from_millis(200), || SchedulerMsg::Resubscribe);
            }
            SchedulerMsg::Error(e) => {
                if let Some(h) = st.handle.clone() {
                    st.scheduler.error(&h, &e);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SchedulerMsg>,
        evt: SupervisionEvent,
        st: &mut DriverState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(c, ..) | SupervisionEvent::ActorFailed(c, _) = &evt
        {
            if st
                .handle
                .as_ref()
                .is_some_and(|h| h.master.get_id() == c.get_id())
            {
                warn!("lost the master; re-subscribing");
                st.handle = None;
                me.send_after(Duration::from_millis(200), || SchedulerMsg::Resubscribe);
            }
        }
        Ok(())
    }
}
