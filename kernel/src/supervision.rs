//! Restart policies of the kernel's supervisors, and the switch tests use to make a
//! supervised actor fail.
//!
//! Every child of a kernel supervisor has a stated policy, as in Erlang/OTP:
//!
//! - **restart** ([`RestartPolicy`]): the child is started again after a backoff that
//!   doubles with each failure in the intensity window; more than `max_restarts` failures
//!   within `window` and the supervisor gives up and **escalates** (fails itself, so its
//!   own supervisor, or the process, decides);
//! - **escalate** at once: the child's failure is the supervisor's.
//!
//! [`RestartBudget`] is the decision, kept free of clocks and timers so it is tested
//! rule by rule; [`Restarter`], the supervisor of one child (the master, the agent),
//! feeds it the time of each failure.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{debug, error, warn};

use plexus_actors::Node;

/// How a supervisor restarts a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts within `window`; one more failure escalates.
    pub max_restarts: u32,
    /// The intensity window.
    pub window: Duration,
    /// Delay before the first restart in a window.
    pub backoff_initial: Duration,
    /// Longest delay before a restart.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    /// Five restarts a minute, from 100 ms to 5 s apart.
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// What a supervisor does about a failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart {
        /// The backoff.
        after: Duration,
    },
    /// Too many failures: fail the supervisor.
    Escalate {
        /// Failures counted in the window.
        failures: u32,
    },
}

/// The failures of one child within its policy's window.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    policy: RestartPolicy,
    /// Times of the failures still inside the window, oldest first (at most
    /// `max_restarts + 1` are kept).
    failures: VecDeque<Duration>,
}

impl RestartBudget {
    /// A budget with no failures yet.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            failures: VecDeque::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Records a failure at `now` (on any monotonic clock) and decides.
    pub fn on_failure(&mut self, now: Duration) -> Decision {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.policy.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let n = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if n > self.policy.max_restarts {
            self.failures.pop_front();
            return Decision::Escalate { failures: n };
        }
        let doublings = (n - 1).min(20);
        let after = self
            .policy
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.policy.backoff_max);
        debug_assert!(self.failures.len() <= self.policy.max_restarts as usize);
        Decision::Restart { after }
    }
}

/// A one-shot switch that makes an actor panic on its next message: how tests inject
/// a failure into a supervised actor without a message any peer could send. Cloning
/// shares the switch.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    /// Arms the switch.
    pub fn trip(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the switch is armed (it has not made anything panic yet).
    pub fn is_armed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Panics if the switch was armed (disarming it), naming `who`.
    pub fn check(&self, who: &str) {
        if self.0.swap(false, Ordering::SeqCst) {
            panic!("fault injected into {who}");
        }
    }
}

/// What a [`Restarter`] starts: its child of each generation.
pub trait ChildSpec: Send + Sync + 'static {
    /// The child actor.
    type Child: Actor;
    /// The child of `generation` (0 first, then 1 for the first restart, ...) and its
    /// arguments.
    fn make(&self, generation: u32) -> (Self::Child, <Self::Child as Actor>::Arguments);
    /// What the child is, for logs ("the master").
    fn what(&self) -> &'static str;
    /// The node the child runs on (its names are freed when it ends).
    fn node(&self) -> &Node;
}

/// Messages of a [`Restarter`] (local only).
#[derive(Debug)]
pub enum RestarterMsg<M> {
    /// Start the child again (after its backoff).
    Restart,
    /// The child running now, if one runs.
    Current(RpcReplyPort<Option<ActorRef<M>>>),
    /// The child running now if it is not `newer_than`; else the next one, once it is
    /// started (a restart can be awaited without polling). At most
    /// [`MAX_CHILD_WAITERS`] wait; more are answered by dropping the reply.
    Started {
        /// The child the asker already knows, if any.
        newer_than: Option<ractor::ActorId>,
        /// Answers the child.
        reply: RpcReplyPort<ActorRef<M>>,
    },
}

/// Most askers waiting for a [`Restarter`]'s next child.
pub const MAX_CHILD_WAITERS: usize = 64;

impl<M: ractor::Message> ractor::Message for RestarterMsg<M> {}

/// A supervisor of one child, restarted under a [`RestartPolicy`]: when the child fails
/// or stops, the actors it linked are stopped, the names it held are freed, and another
/// is started after the backoff; past the intensity limit the supervisor fails itself
/// (escalates).
pub struct Restarter<S: ChildSpec> {
    spec: S,
    policy: RestartPolicy,
}

impl<S: ChildSpec> Restarter<S> {
    /// A supervisor starting `spec`'s child under `policy`.
    pub fn new(spec: S, policy: RestartPolicy) -> Self {
        Restarter { spec, policy }
    }

    async fn start_child(
        &self,
        me: &ActorRef<RestarterMsg<<S::Child as Actor>::Msg>>,
        generation: u32,
    ) -> Result<ActorRef<<S::Child as Actor>::Msg>, ActorProcessingErr> {
        let (child, args) = self.spec.make(generation);
        let (c, _) = Actor::spawn_linked(None, child, args, me.get_cell()).await?;
        Ok(c)
    }

    /// The child is gone: restart it after its backoff, or give up.
    fn failed(
        &self,
        me: &ActorRef<RestarterMsg<<S::Child as Actor>::Msg>>,
        st: &mut RestarterState<<S::Child as Actor>::Msg>,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let what = self.spec.what();
        match st.budget.on_failure(st.start.elapsed()) {
            Decision::Restart { after } => {
                warn!("{what} {why}; restarting in {} ms", after.as_millis());
                me.send_after(after, || RestarterMsg::Restart);
                Ok(())
            }
            Decision::Escalate { failures } => {
                let w = self.policy.window.as_secs();
                error!("{what} {why}; {failures} failures within {w} s: giving up");
                Err(From::from(format!(
                    "{what} failed {failures} times within {w} s (last: {why})"
                )))
            }
        }
    }
}

/// A [`Restarter`]'s state.
pub struct RestarterState<M> {
    child: Option<ActorRef<M>>,
    /// Askers waiting for the next child.
    waiters: Vec<RpcReplyPort<ActorRef<M>>>,
    budget: RestartBudget,
    start: tokio::time::Instant,
    restarts: u32,
}

impl<S: ChildSpec> Actor for Restarter<S> {
    type Msg = RestarterMsg<<S::Child as Actor>::Msg>;
    type State = RestarterState<<S::Child as Actor>::Msg>;
    type Arguments = ();

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let child = self.start_child(&me, 0).await?;
        Ok(RestarterState {
            child: Some(child),
            waiters: Vec::new(),
            budget: RestartBudget::new(self.policy),
            start: tokio::time::Instant::now(),
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
            RestarterMsg::Restart => match self.start_child(&me, st.restarts + 1).await {
                Ok(c) => {
                    st.restarts += 1;
                    for w in st.waiters.drain(..) {
                        if w.send(c.clone()).is_err() {
                            debug!("asker left before its answer");
                        }
                    }
                    st.child = Some(c);
                    warn!(restarts = st.restarts, "{} restarted", self.spec.what());
                }
                Err(e) => self.failed(&me, st, &format!("did not restart: {e}"))?,
            },
            RestarterMsg::Current(reply) => {
                if reply.send(st.child.clone()).is_err() {
                    debug!("asker left before its answer");
                }
            }
            RestarterMsg::Started { newer_than, reply } => match &st.child {
                Some(c) if Some(c.get_id()) != newer_than => {
                    if reply.send(c.clone()).is_err() {
                        debug!("asker left before its answer");
                    }
                }
                _ if st.waiters.len() >= MAX_CHILD_WAITERS => {
                    warn!(
                        "{MAX_CHILD_WAITERS} already wait for {}; refusing one more",
                        self.spec.what()
                    );
                }
                _ => st.waiters.push(reply),
            },
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
            .child
            .as_ref()
            .is_none_or(|c| c.get_id() != cell.get_id())
        {
            return Ok(());
        }
        st.child = None;
        // What it linked (sessions, task actors) goes with it; its names are freed
        // now, for the next one to claim.
        cell.stop_children(Some(format!("{} ended", self.spec.what())));
        self.spec.node().unregister_actor(cell.get_id());
        self.failed(&me, st, &why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(250),
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn restarts_back_off_and_too_many_in_the_window_escalate() {
        let mut b = RestartBudget::new(policy());
        let ms = Duration::from_millis;
        assert_eq!(b.on_failure(s(0)), Decision::Restart { after: ms(100) });
        assert_eq!(b.on_failure(s(1)), Decision::Restart { after: ms(200) });
        assert_eq!(b.on_failure(s(2)), Decision::Restart { after: ms(250) });
        assert_eq!(b.on_failure(s(3)), Decision::Escalate { failures: 4 });
    }

    #[test]
    fn failures_older_than_the_window_are_forgiven() {
        let mut b = RestartBudget::new(policy());
        for t in [0, 1, 2] {
            assert!(matches!(b.on_failure(s(t)), Decision::Restart { .. }));
        }
        // 10 s after the first, it no longer counts: three in the window again.
        assert!(matches!(b.on_failure(s(10)), Decision::Restart { .. }));
        assert!(
            matches!(b.on_failure(s(30)), Decision::Restart { after } if after == Duration::from_millis(100))
        );
    }

    #[test]
    fn a_tripped_switch_panics_once() {
        let f = FaultSwitch::default();
        f.check("nothing");
        f.trip();
        let shared = f.clone();
        assert!(std::panic::catch_unwind(|| shared.check("x")).is_err());
        f.check("disarmed");
    }
}
