//! The watcher: one local actor per node that monitors local actors on behalf of peers
//! (remote proxies, remote supervisors) and of the name registry, and reports each end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};

use crate::node::NodeInner;
use crate::session::Session;
use crate::wire::{DownReason, Wire};

pub(crate) enum WatcherMsg {
    /// Report the end of local actor `pid` to `session`'s peer. `monitored`: the watcher
    /// already monitors it (set up when it was spawned for that peer, so that an end
    /// right after the spawn still reports its real reason).
    Watch {
        pid: u64,
        session: Arc<Session>,
        monitored: bool,
    },
    /// Local actor `pid` holds a cluster-wide name; release it when it ends.
    Registered { pid: u64 },
}

impl ractor::Message for WatcherMsg {}

pub(crate) struct Watcher;

pub(crate) struct WatcherState {
    node: Weak<NodeInner>,
    watchers: BTreeMap<u64, Vec<Arc<Session>>>,
    registered: BTreeSet<u64>,
    /// Ends of monitored actors nobody was watching yet: an actor spawned for a peer can
    /// end before the `Watch` naming that peer is handled (supervision events come
    /// first); the `Watch` then reports this reason.
    early_ends: BTreeMap<u64, DownReason>,
}

/// Most early ends remembered (each is taken by the `Watch` that follows it).
const MAX_EARLY_ENDS: usize = 10_000;

impl WatcherState {
    fn monitored(&self, pid: u64) -> bool {
        self.watchers.contains_key(&pid) || self.registered.contains(&pid)
    }

    fn ended(&mut self, pid: u64, reason: DownReason) {
        if !self.monitored(pid) {
            if self.early_ends.len() >= MAX_EARLY_ENDS {
                self.early_ends.pop_first();
            }
            self.early_ends.insert(pid, reason);
            return;
        }
        for s in self.watchers.remove(&pid).unwrap_or_default() {
            if s.is_alive() {
                s.send_or_drop(&Wire::Down {
                    pid,
                    reason: reason.clone(),
                });
            }
            s.linked_children.lock().expect("session lock").remove(&pid);
        }
        if self.registered.remove(&pid) {
            if let Some(n) = self.node.upgrade() {
                n.release_local_pid(pid);
            }
        }
    }
}

impl Actor for Watcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = Weak<NodeInner>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        node: Weak<NodeInner>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WatcherState {
            node,
            watchers: BTreeMap::new(),
            registered: BTreeSet::new(),
            early_ends: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: WatcherMsg,
        st: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        let pid = match &msg {
            WatcherMsg::Watch { pid, .. } | WatcherMsg::Registered { pid } => *pid,
        };
        let early = match &msg {
            WatcherMsg::Watch { .. } => st.early_ends.remove(&pid),
            WatcherMsg::Registered { .. } => None,
        };
        let cell = ractor::registry::where_is_pid(ActorId::Local(pid));
        let Some(cell) = cell.filter(|_| early.is_none()) else {
            if let WatcherMsg::Watch { session, .. } = msg {
                session.send_or_drop(&Wire::Down {
                    pid,
                    reason: early.unwrap_or(DownReason::NoProc),
                });
                session
                    .linked_children
                    .lock()
                    .expect("session lock")
                    .remove(&pid);
            } else if let Some(n) = st.node.upgrade() {
                n.release_local_pid(pid);
            }
            return Ok(());
        };
        let pre_monitored = matches!(
            msg,
            WatcherMsg::Watch {
                monitored: true,
                ..
            }
        );
        if !pre_monitored && !st.monitored(pid) {
            myself.get_cell().monitor(cell.clone());
        }
        match msg {
            WatcherMsg::Watch { session, .. } => st.watchers.entry(pid).or_default().push(session),
            WatcherMsg::Registered { .. } => {
                st.registered.insert(pid);
            }
        }
        // It may have ended before the monitor was in place (a monitor in place since
        // the spawn reports the end itself).
        if !pre_monitored && cell.get_status() >= ActorStatus::Stopping {
            st.ended(pid, DownReason::Terminated(None));
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut WatcherState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match evt {
            SupervisionEvent::ActorTerminated(c, _, r) => (c, DownReason::Terminated(r)),
            SupervisionEvent::ActorFailed(c, e) => (c, DownReason::Failed(e.to_string())),
            _ => return Ok(()),
        };
        st.ended(cell.get_id().pid(), reason);
        Ok(())
    }
}

/// Supervisor of the shared (unlinked) proxies: ignores their ends.
pub(crate) struct ProxyHost;

impl Actor for ProxyHost {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        _evt: SupervisionEvent,
        _st: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}
