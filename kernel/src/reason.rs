//! Why a task's state changed: Mesos's reason names, as a closed enum.
//!
//! A [`Reason`] travels (in status updates, the task table, agent checkpoints and the API)
//! as its Mesos name, e.g. `REASON_CONTAINER_LIMITATION_MEMORY`, so JSON readers and tools
//! written for Mesos read it as they would there, and an encoded reason is the same bytes
//! as the string it replaced.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Why a task's state changed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The Mesos name, e.g. `REASON_TASK_KILLED`.
            pub fn mesos_name(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    /// The launch was invalid (bad offer, id, command or resources).
    TaskInvalid = "REASON_TASK_INVALID",
    /// The task's agent disconnected from the master.
    AgentDisconnected = "REASON_AGENT_DISCONNECTED",
    /// The task's agent was removed after its removal timeout.
    AgentRemoved = "REASON_AGENT_REMOVED",
    /// The task's agent re-registered (and reported the task, or not).
    AgentReregistered = "REASON_AGENT_REREGISTERED",
    /// An answer to a reconciliation request.
    Reconciliation = "REASON_RECONCILIATION",
    /// The task went over its memory limit.
    ContainerLimitationMemory = "REASON_CONTAINER_LIMITATION_MEMORY",
    /// The task's sandbox grew past its `disk`.
    ContainerLimitationDisk = "REASON_CONTAINER_LIMITATION_DISK",
    /// The task crossed another limit of its container (its `pids` limit).
    ContainerLimitation = "REASON_CONTAINER_LIMITATION",
    /// The command failed (non-zero exit or a signal).
    CommandExecutorFailed = "REASON_COMMAND_EXECUTOR_FAILED",
    /// The container could not be launched.
    ContainerLaunchFailed = "REASON_CONTAINER_LAUNCH_FAILED",
    /// The task was killed on request.
    TaskKilled = "REASON_TASK_KILLED",
    /// What ran the task on the agent failed (its supervisor ended it).
    ExecutorTerminated = "REASON_EXECUTOR_TERMINATED",
    /// The actor of an actor task failed (panicked or returned an error).
    ActorFailed = "REASON_ACTOR_FAILED",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.mesos_name())
    }
}

/// A name that is not a known reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.mesos_name() == s)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.mesos_name().to_string()
    }
}

impl TryFrom<String> for Reason {
    type Error = UnknownReason;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_as_their_mesos_names() {
        for r in Reason::ALL {
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.mesos_name()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), *r);
            // Encoded, a reason is the bytes of its name as a string.
            let as_string = plexus_net::codec::encode(&r.mesos_name().to_string()).unwrap();
            assert_eq!(plexus_net::codec::encode(r).unwrap(), as_string);
        }
        assert_eq!(
            "REASON_NOPE".parse::<Reason>(),
            Err(UnknownReason("REASON_NOPE".into()))
        );
        assert!(serde_json::from_str::<Reason>("\"REASON_NOPE\"").is_err());
    }
}
