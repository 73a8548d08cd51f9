//! The master's task table: every task it knows, indexed by agent, with a cap on how many
//! ended tasks it keeps.
//!
//! A task's state lives in one place, its [`TaskStateMachine`]; the record's
//! [`TaskInfo`] view is built from it, so the table cannot hold a state the machine did
//! not allow.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::protocol::{TaskInfo, TaskSpec};
use crate::reason::Reason;
use crate::resources::RoleResources;
use crate::task::{IllegalTransition, TaskState, TaskStateMachine};

/// One task as the master knows it.
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    pub task_id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub resources: RoleResources,
    pub argv: Vec<String>,
    sm: TaskStateMachine,
    pub reason: Option<Reason>,
    pub message: String,
    /// Its framework asked to kill it: the kill is sent again whenever its agent
    /// re-registers reporting it still running, until it ends.
    pub kill_requested: bool,
    /// For an actor task: its actor's type.
    pub actor_type: Option<String>,
    /// For an actor task: the executor node its actor runs on, once it does.
    pub actor_node: Option<String>,
}

impl TaskRecord {
    /// A task of `spec` given `resources` on `agent_id`, in `state`.
    pub fn new(
        framework_id: &str,
        agent_id: &str,
        spec: &TaskSpec,
        resources: RoleResources,
        state: TaskState,
    ) -> Self {
        TaskRecord {
            task_id: spec.task_id.clone(),
            name: spec.name.clone(),
            framework_id: framework_id.into(),
            agent_id: agent_id.into(),
            resources,
            argv: spec.argv.clone(),
            sm: TaskStateMachine::at(state),
            reason: None,
            message: String::new(),
            kill_requested: false,
            actor_type: spec.actor.as_ref().map(|a| a.type_name.clone()),
            actor_node: None,
        }
    }

    pub fn state(&self) -> TaskState {
        self.sm.state()
    }

    pub fn is_terminal(&self) -> bool {
        self.sm.state().is_terminal()
    }

    /// Moves the task to `to` (as the state machine allows), recording why.
    pub fn transition(
        &mut self,
        to: TaskState,
        reason: Option<Reason>,
        message: String,
    ) -> Result<(), IllegalTransition> {
        self.sm.transition(to)?;
        self.reason = reason;
        self.message = message;
        Ok(())
    }

    /// The task as frameworks and operators see it.
    pub fn info(&self) -> TaskInfo {
        TaskInfo {
            task_id: self.task_id.clone(),
            name: self.name.clone(),
            framework_id: self.framework_id.clone(),
            agent_id: self.agent_id.clone(),
            state: self.state(),
            reason: self.reason,
            message: self.message.clone(),
            resources: self.resources.clone(),
            argv: self.argv.clone(),
            actor_type: self.actor_type.clone(),
            actor_node: self.actor_node.clone(),
        }
    }
}

/// Every task the master knows, by id and by agent, and the ended ones oldest first.
#[derive(Debug, Default)]
pub(crate) struct TaskTable {
    tasks: BTreeMap<TaskId, TaskRecord>,
    /// The ids of each agent's tasks (so agent events need no table scan).
    by_agent: BTreeMap<AgentId, BTreeSet<TaskId>>,
    /// Ended tasks, oldest first.
    completed: VecDeque<TaskId>,
    /// Tasks added, changed or forgotten since [`TaskTable::take_changed`] was last
    /// called (at most the table's ids plus those forgotten since: the master takes them
    /// every time it publishes its read model).
    changed: BTreeSet<TaskId>,
}

impl TaskTable {
    pub fn get(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    /// Replaces why the task is in its state (its own update says it better).
    pub fn note(&mut self, id: &str, reason: Option<Reason>, message: String) {
        if let Some(t) = self.tasks.get_mut(id) {
            t.reason = reason;
            t.message = message;
            self.changed.insert(t.task_id.clone());
        }
    }

    /// Notes that the task's framework asked to kill it.
    pub fn request_kill(&mut self, id: &str) {
        if let Some(t) = self.tasks.get_mut(id) {
            t.kill_requested = true;
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.tasks.contains_key(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Adds a task (replacing one of the same id); an ended one counts as completed.
    pub fn insert(&mut self, t: TaskRecord) {
        let id = t.task_id.clone();
        self.remove(&id);
        self.by_agent
            .entry(t.agent_id.clone())
            .or_default()
            .insert(id.clone());
        if t.is_terminal() {
            self.completed.push_back(id.clone());
        }
        self.changed.insert(id.clone());
        self.tasks.insert(id, t);
    }

    /// Records where an actor task's actor runs.
    pub fn set_actor_node(&mut self, id: &str, node: &str) {
        if let Some(t) = self.tasks.get_mut(id) {
            if t.actor_node.as_deref() != Some(node) {
                t.actor_node = Some(node.to_string());
                self.changed.insert(t.task_id.clone());
            }
        }
    }

    /// Moves a task to `to`. Returns whether it changed; an illegal transition leaves it
    /// as it was.
    pub fn transition(
        &mut self,
        id: &str,
        to: TaskState,
        reason: Option<Reason>,
        message: String,
    ) -> Result<(), TransitionError> {
        let t = self.tasks.get_mut(id).ok_or(TransitionError::Unknown)?;
        t.transition(to, reason, message)
            .map_err(TransitionError::Illegal)?;
        self.changed.insert(t.task_id.clone());
        if to.is_terminal() {
            self.completed.push_back(id.into());
        }
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            self.changed.insert(t.task_id.clone());
            if let Some(set) = self.by_agent.get_mut(&t.agent_id) {
                set.remove(id);
                if set.is_empty() {
                    self.by_agent.remove(&t.agent_id);
                }
            }
        }
    }

    /// The ids of the tasks added, changed or forgotten since the last call, in id order.
    pub fn take_changed(&mut self) -> BTreeSet<TaskId> {
        std::mem::take(&mut self.changed)
    }

    /// Ids of the agent's tasks that have not ended, in id order.
    pub fn live_of_agent(&self, agent: &str) -> Vec<TaskId> {
        self.by_agent
            .get(agent)
            .into_iter()
            .flatten()
            .filter(|id| self.tasks.get(*id).is_some_and(|t| !t.is_terminal()))
            .cloned()
            .collect()
    }

    /// Forgets the oldest ended tasks beyond `keep`.
    pub fn evict_completed(&mut self, keep: usize) {
        while self.completed.len() > keep {
            let Some(id) = self.completed.pop_front() else {
                break;
            };
            if self.tasks.get(&id).is_some_and(|t| t.is_terminal()) {
                self.remove(&id);
            }
        }
    }
}

/// Why a task could not be moved to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TransitionError {
    /// The table has no such task.
    #[error("unknown task")]
    Unknown,
    /// The state machine does not allow it.
    #[error(transparent)]
    Illegal(IllegalTransition),
}
