//! The status-update stream: at-least-once, in-order delivery of a task's updates.
//!
//! An agent keeps one stream per task. Updates are sent in order; the head is resent
//! with exponential backoff until the framework acknowledges it (by uuid), then the next
//! is sent. The whole manager is plain data, checkpointed to disk by the agent after
//! every change, so an agent restart loses no update. Times are offsets on the caller's
//! clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, FrameworkId, TaskId};
use crate::reason::Reason;
use crate::task::TaskState;

/// First resend interval.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Largest resend interval.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One status update of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// Unique id; the acknowledgement names it.
    pub uuid: u64,
    /// The task.
    pub task_id: TaskId,
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The agent the task runs on.
    pub agent_id: AgentId,
    /// The new state.
    pub state: TaskState,
    /// Why (Mesos-like reason, e.g. `REASON_CONTAINER_LIMITATION_MEMORY`).
    pub reason: Option<Reason>,
    /// Human-readable detail.
    pub message: String,
    /// How the command's process ended, shell-style, for an update that reports it:
    /// its exit status, 128 + N for a death by signal N, 126 when the command could not
    /// be executed, 127 when it was not found.
    pub exit_code: Option<i32>,
    /// Wall-clock milliseconds since the Unix epoch, for people.
    pub unix_ms: u64,
    /// Where the actor of an actor task runs (in its `TASK_RUNNING` update).
    pub actor: Option<ActorAt>,
}

/// Where the actor of an actor task runs: what its framework needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorAt {
    /// The executor node hosting it.
    pub node: String,
    /// That node's address.
    pub addr: std::net::SocketAddr,
    /// The actor's id on that node.
    pub pid: u64,
}

/// The update as agents wrote it before actor tasks (read from their checkpoints).
#[derive(Deserialize)]
struct StatusUpdateV2 {
    uuid: u64,
    task_id: TaskId,
    framework_id: FrameworkId,
    agent_id: AgentId,
    state: TaskState,
    reason: Option<Reason>,
    message: String,
    exit_code: Option<i32>,
    unix_ms: u64,
}

#[derive(Deserialize)]
struct StreamV2 {
    pending: VecDeque<StatusUpdateV2>,
    next_send: Option<Duration>,
    backoff: Duration,
    done: bool,
}

/// The streams as agents wrote them before actor tasks.
#[derive(Deserialize)]
pub(crate) struct StatusUpdateManagerV2 {
    streams: BTreeMap<TaskId, StreamV2>,
}

impl From<StatusUpdateManagerV2> for StatusUpdateManager {
    fn from(m: StatusUpdateManagerV2) -> StatusUpdateManager {
        let streams = m
            .streams
            .into_iter()
            .map(|(id, s)| {
                let pending = s
                    .pending
                    .into_iter()
                    .map(|u| StatusUpdate {
                        uuid: u.uuid,
                        task_id: u.task_id,
                        framework_id: u.framework_id,
                        agent_id: u.agent_id,
                        state: u.state,
                        reason: u.reason,
                        message: u.message,
                        exit_code: u.exit_code,
                        unix_ms: u.unix_ms,
                        actor: None,
                    })
                    .collect();
                let stream = Stream {
                    pending,
                    next_send: s.next_send,
                    backoff: s.backoff,
                    done: s.done,
                };
                (id, stream)
            })
            .collect();
        StatusUpdateManager { streams }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stream {
    pending: VecDeque<StatusUpdate>,
    /// When the head is next due to be sent; `None`: due now.
    next_send: Option<Duration>,
    backoff: Duration,
    /// A terminal update was acknowledged: the stream is done.
    done: bool,
}

/// The result of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// It acknowledged the head; the next update (if any) is now due.
    Accepted,
    /// It names no pending head (a duplicate or stale acknowledgement): ignored.
    Ignored,
}

/// All status-update streams of an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdateManager {
    streams: BTreeMap<TaskId, Stream>,
}

impl StatusUpdateManager {
    /// Queues `u` behind the task's earlier updates.
    pub fn push(&mut self, u: StatusUpdate) {
        let s = self.streams.entry(u.task_id.clone()).or_insert(Stream {
            pending: VecDeque::new(),
            next_send: None,
            backoff: INITIAL_BACKOFF,
            done: false,
        });
        if s.pending.is_empty() {
            s.next_send = None;
            s.backoff = INITIAL_BACKOFF;
        }
        s.pending.push_back(u);
    }

    /// Acknowledges update `uuid` of `task_id`.
    pub fn ack(&mut self, task_id: &str, uuid: u64) -> Ack {
        let Some(s) = self.streams.get_mut(task_id) else {
            return Ack::Ignored;
        };
        if s.pending.front().map(|u| u.uuid) != Some(uuid) {
            return Ack::Ignored;
        }
        let u = s.pending.pop_front().expect("head checked");
        s.next_send = None;
        s.backoff = INITIAL_BACKOFF;
        if u.state.is_terminal() && s.pending.is_empty() {
            s.done = true;
            self.streams.remove(task_id);
        }
        Ack::Accepted
    }

    /// The updates due at `now` (each task's head, at most one per task), marking them
    /// sent and scheduling their resend with backoff.
    pub fn due(&mut self, now: Duration) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        for s in self.streams.values_mut() {
            let Some(head) = s.pending.front() else {
                continue;
            };
            if s.next_send.is_none_or(|t| t <= now) {
                out.push(head.clone());
                s.next_send = Some(now + s.backoff);
                s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
            }
        }
        out
    }

    /// When the next update falls due, if any is pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.streams
            .values()
            .filter(|s| !s.pending.is_empty())
            .map(|s| s.next_send.unwrap_or(Duration::ZERO))
            .min()
    }

    /// Forces every head to be due now (e.g. after reconnecting to the master).
    pub fn resend_all(&mut self) {
        for s in self.streams.values_mut() {
            s.next_send = None;
            s.backoff = INITIAL_BACKOFF;
        }
    }

    /// Unacknowledged updates of `task_id`, oldest first.
    pub fn pending(&self, task_id: &str) -> Vec<StatusUpdate> {
        self.streams
            .get(task_id)
            .map(|s| s.pending.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest unacknowledged update of each task that has one, by task.
    pub fn newest_pending(&self) -> impl Iterator<Item = (&TaskId, &StatusUpdate)> {
        self.streams
            .iter()
            .filter_map(|(id, s)| s.pending.back().map(|u| (id, u)))
    }

    /// Number of unacknowledged updates.
    pub fn pending_count(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(task: &str, uuid: u64, state: TaskState) -> StatusUpdate {
        StatusUpdate {
            uuid,
            task_id: task.into(),
            framework_id: "f".into(),
            agent_id: "a".into(),
            state,
            reason: None,
            message: String::new(),
            exit_code: None,
            unix_ms: 0,
            actor: None,
        }
    }

    #[test]
    fn in_order_resent_until_acked() {
        let s = Duration::from_secs;
        let mut m = StatusUpdateManager::default();
        m.push(u("t", 1, TaskState::Running));
        m.push(u("t", 2, TaskState::Finished));
        assert_eq!(
            m.due(s(0)).iter().map(|x| x.uuid).collect::<Vec<_>>(),
            vec![1]
        );
        assert!(m.due(s(0)).is_empty(), "not resent before its backoff");
        assert_eq!(m.due(s(1))[0].uuid, 1, "resent after 1 s");
        assert!(m.due(s(2)).is_empty(), "backoff doubled to 2 s");
        assert_eq!(m.due(s(3))[0].uuid, 1);
        assert_eq!(
            m.ack("t", 2),
            Ack::Ignored,
            "only the head can be acknowledged"
        );
        assert_eq!(m.ack("t", 1), Ack::Accepted);
        assert_eq!(m.due(s(3))[0].uuid, 2, "next is due at once");
        assert_eq!(m.ack("t", 2), Ack::Accepted);
        assert_eq!(m.pending_count(), 0);
        assert!(m.due(s(100)).is_empty());
        assert_eq!(m.ack("t", 2), Ack::Ignored, "duplicate acks are harmless");
    }

    #[test]
    fn checkpoint_round_trip_keeps_pending() {
        let mut m = StatusUpdateManager::default();
        m.push(u("a", 1, TaskState::Running));
        m.push(u("b", 2, TaskState::Failed));
        assert_eq!(m.due(Duration::ZERO).len(), 2);
        let bytes = plexus_net::codec::encode(&m).unwrap();
        let back: StatusUpdateManager = plexus_net::codec::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.pending("b")[0].state, TaskState::Failed);
    }
}
