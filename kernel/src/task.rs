//! The task state machine: Mesos's task states and the transitions between them.
//!
//! A task moves forward only: `Staging → Starting → Running → Killing → (terminal)`, with
//! failure states reachable from any live state. `Unreachable` (its agent is cut off) is
//! not terminal: the task can come back `Running` when its agent re-registers, or end
//! `Lost`/`Gone` when the agent is given up on. Terminal states never change.

use std::fmt;

use serde::{Deserialize, Serialize};

/// States of a task, as frameworks see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted by the master, on its way to the agent.
    #[serde(rename = "TASK_STAGING")]
    Staging,
    /// The agent is starting it.
    #[serde(rename = "TASK_STARTING")]
    Starting,
    /// Its process runs.
    #[serde(rename = "TASK_RUNNING")]
    Running,
    /// A kill was requested; waiting for the process to end.
    #[serde(rename = "TASK_KILLING")]
    Killing,
    /// Ended with exit code 0.
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    /// Ended with a non-zero exit, a signal, or a limit violation.
    #[serde(rename = "TASK_FAILED")]
    Failed,
    /// Ended because it was killed on request.
    #[serde(rename = "TASK_KILLED")]
    Killed,
    /// The launch was invalid; it never ran.
    #[serde(rename = "TASK_ERROR")]
    Error,
    /// Its agent was lost; it may or may not still run.
    #[serde(rename = "TASK_LOST")]
    Lost,
    /// It was dropped before launch (e.g. the agent went away).
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    /// Its agent is cut off; it may come back.
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    /// Its agent was removed for good; the task is gone.
    #[serde(rename = "TASK_GONE")]
    Gone,
    /// The master knows nothing of it (a reconciliation answer).
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    /// True for states a task never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
        )
    }

    /// Mesos's name, e.g. `TASK_RUNNING`.
    pub fn mesos_name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Every state.
    pub const ALL: [TaskState; 13] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::Unknown,
    ];
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.mesos_name())
    }
}

/// A refused transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The current state.
    pub from: TaskState,
    /// The state asked for.
    pub to: TaskState,
}

/// True when a task may go from `from` to `to`. Staying in a state is allowed (a
/// resent update), except that terminal states admit nothing else.
pub fn can_transition(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    if from == to {
        return true;
    }
    if from.is_terminal() || to == Staging || to == Unknown {
        return false;
    }
    match from {
        Staging => true,
        Starting => !matches!(to, Error | Dropped),
        Running => !matches!(to, Starting | Error | Dropped),
        Killing => matches!(to, Finished | Failed | Killed | Lost | Unreachable | Gone),
        Unreachable => !matches!(to, Error | Dropped),
        Unknown => to.is_terminal() || matches!(to, Running | Unreachable),
        _ => false,
    }
}

/// A task's current state, refusing illegal transitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateMachine {
    state: TaskState,
}

impl Default for TaskStateMachine {
    fn default() -> Self {
        TaskStateMachine {
            state: TaskState::Staging,
        }
    }
}

impl TaskStateMachine {
    /// A machine in `state` (e.g. recovered from a checkpoint).
    pub fn at(state: TaskState) -> Self {
        TaskStateMachine { state }
    }

    /// The current state.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// Moves to `to`, or refuses.
    pub fn transition(&mut self, to: TaskState) -> Result<(), IllegalTransition> {
        if can_transition(self.state, to) {
            self.state = to;
            Ok(())
        } else {
            Err(IllegalTransition {
                from: self.state,
                to,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use TaskState::*;

    #[test]
    fn lifecycle_and_refusals() {
        let mut m = TaskStateMachine::default();
        for s in [Starting, Running, Killing, Killed] {
            m.transition(s).unwrap();
        }
        assert_eq!(
            m.transition(Running),
            Err(IllegalTransition {
                from: Killed,
                to: Running
            })
        );
        let mut m = TaskStateMachine::at(Running);
        assert!(m.transition(Starting).is_err());
        m.transition(Unreachable).unwrap();
        m.transition(Running).unwrap();
        assert!(TaskStateMachine::at(Running).transition(Error).is_err());
    }

    proptest! {
        #[test]
        fn terminal_states_are_final(path in proptest::collection::vec(0usize..13, 1..30)) {
            let mut m = TaskStateMachine::default();
            let mut ended: Option<TaskState> = None;
            for i in path {
                let to = TaskState::ALL[i];
                let r = m.transition(to);
                if let Some(e) = ended {
                    prop_assert!(r.is_err() || to == e, "left terminal {e} for {to}");
                    prop_assert_eq!(m.state(), e);
                }
                if m.state().is_terminal() {
                    ended = Some(m.state());
                }
                prop_assert!(m.state() != Staging || ended.is_none());
            }
        }
    }
}
