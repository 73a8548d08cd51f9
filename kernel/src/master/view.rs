//! The master's read model: the cluster as readers see it, published by the master
//! actor and read without it.
//!
//! Operators, the HTTP API and `/metrics` read a lot and often; the master actor also
//! runs failure detection and allocation. So readers never ask the master: it publishes
//! a [`ClusterView`] into a [`ReadModel`] at most every `publish_interval` while
//! anything changes, and a reader takes the latest one — an `Arc`, whatever the
//! cluster's size — and pages through it on its own thread, for as long as it likes.
//!
//! Task views live in a persistent ordered map (`imbl::OrdMap`, shared structure): a
//! publish costs what changed since the last one, not the whole task table, and pages
//! are ranges of it by task id.

use std::sync::Arc;

use tokio::sync::watch;

use crate::ids::TaskId;
use crate::protocol::{AgentState, FrameworkState, InboxStats, TaskInfo};
use crate::resources::Resources;

use super::core::MasterCore;

/// The cluster as the master last published it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Counts publishes of the master that made it (0: nothing published yet).
    pub generation: u64,
    /// Agents, by id.
    pub agents: Arc<Vec<AgentState>>,
    /// Frameworks, by id.
    pub frameworks: Arc<Vec<FrameworkState>>,
    /// Tasks, by id.
    pub tasks: imbl::OrdMap<TaskId, Arc<TaskInfo>>,
    /// Total resources of active agents.
    pub total: Resources,
    /// Resources held by tasks and offers.
    pub used: Resources,
    /// Outstanding offers.
    pub offers_outstanding: usize,
    /// Duration of the last allocation cycle, in microseconds.
    pub last_allocation_us: u64,
    /// The master's inbox.
    pub inbox: InboxStats,
    /// Roles' weights and quotas in force.
    pub roles: Arc<Vec<super::core::RoleState>>,
}

/// Where the master publishes its [`ClusterView`] and readers take it. Cloning shares
/// it: the process hands one to its masters (one after another, as their supervisor
/// restarts them) and to its API.
#[derive(Clone)]
pub struct ReadModel {
    tx: Arc<watch::Sender<Arc<ClusterView>>>,
}

impl Default for ReadModel {
    fn default() -> Self {
        ReadModel {
            tx: Arc::new(watch::Sender::new(Arc::new(ClusterView::default()))),
        }
    }
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadModel(generation {})", self.current().generation)
    }
}

impl ReadModel {
    /// The latest view (no copy: readers share it).
    pub fn current(&self) -> Arc<ClusterView> {
        self.tx.borrow().clone()
    }

    /// Follows the views as they are published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.tx.subscribe()
    }

    fn publish(&self, view: ClusterView) {
        self.tx.send_replace(Arc::new(view));
    }
}

/// The master actor's side: the task map it keeps up to date from the core's changes.
#[derive(Default)]
pub(crate) struct Publisher {
    tasks: imbl::OrdMap<TaskId, Arc<TaskInfo>>,
    generation: u64,
}

impl Publisher {
    /// Publishes the core's state into `model`: the tasks that changed since the last
    /// publish, and everything else afresh (agents and frameworks are few beside tasks).
    pub fn publish(&mut self, core: &mut MasterCore, inbox: InboxStats, model: &ReadModel) {
        for (id, info) in core.take_task_changes() {
            match info {
                Some(t) => {
                    self.tasks.insert(id, Arc::new(t));
                }
                None => {
                    self.tasks.remove(&id);
                }
            }
        }
        self.generation += 1;
        model.publish(ClusterView {
            generation: self.generation,
            agents: Arc::new(core.agent_states()),
            frameworks: Arc::new(core.framework_states()),
            tasks: self.tasks.clone(),
            total: core.total(),
            used: core.used(),
            offers_outstanding: core.offers_outstanding(),
            last_allocation_us: core.last_allocation_us(),
            inbox,
            roles: Arc::new(core.role_states()),
        });
    }
}
