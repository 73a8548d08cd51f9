//! The `Task` actor: one per task on an agent, linked to the agent, owning the task's
//! process through the containerizer: it launches it (or re-adopts it after an agent
//! restart), waits for it, kills it, and frees it once it ended.
//!
//! The agent decides (states, updates, checkpoints); the task actor carries out. Its
//! supervision policy, stated by the agent: a task actor is never restarted. If it fails,
//! the agent kills the task's process, frees it, and ends the task `TASK_FAILED` with
//! `REASON_EXECUTOR_TERMINATED`, so a failure inside the agent is a task failure its
//! framework hears about, not a process nobody watches.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::containerizer::{ContainerInfo, Containerizer, ExitInfo, LaunchSpec};
use crate::ids::TaskId;
use crate::protocol::AgentMsg;
use crate::supervision::FaultSwitch;

/// Messages of a task actor (local only).
#[derive(Debug)]
pub enum TaskMsg {
    /// Launch (or re-adopt) the task.
    Start,
    /// Kill the task: SIGTERM, then SIGKILL after `grace`.
    Kill {
        /// Time between the two signals.
        grace: Duration,
    },
    /// The task's process ended.
    Exited(ExitInfo),
}

impl ractor::Message for TaskMsg {}

/// What a task actor starts from.
pub struct TaskArgs {
    /// The task.
    pub task_id: TaskId,
    /// Launch this; `None` to re-adopt `container`.
    pub launch: Option<LaunchSpec>,
    /// The task's container, when re-adopting.
    pub container: Option<ContainerInfo>,
    /// Its agent, told `Launched` and `Exited`.
    pub agent: ActorRef<AgentMsg>,
}

/// The task actor.
pub struct TaskActor {
    containerizer: Arc<dyn Containerizer>,
    fault: FaultSwitch,
}

impl TaskActor {
    /// Task actors running tasks through `containerizer`; `fault` makes one panic (tests).
    pub fn new(containerizer: Arc<dyn Containerizer>, fault: FaultSwitch) -> Self {
        TaskActor {
            containerizer,
            fault,
        }
    }
}

/// A task actor's state.
pub struct TaskActorState {
    args: TaskArgs,
    container: Option<ContainerInfo>,
    /// A kill came (before the launch ended, or since).
    kill: Option<Duration>,
    waiter: Option<JoinHandle<()>>,
}

impl TaskActor {
    fn wait_for(&self, me: &ActorRef<TaskMsg>, st: &mut TaskActorState, info: ContainerInfo) {
        let wait = self.containerizer.wait(&info);
        let me = me.clone();
        st.waiter = Some(tokio::spawn(async move {
            let exit = wait.await;
            if let Err(e) = me.cast(TaskMsg::Exited(exit)) {
                debug!("task actor gone before its task ended: {e}");
            }
        }));
        if let Some(grace) = st.kill {
            tokio::spawn(self.containerizer.kill(&info, grace));
        }
        st.container = Some(info);
    }

    fn tell_agent(st: &TaskActorState, msg: AgentMsg) {
        if let Err(e) = st.args.agent.cast(msg) {
            debug!(task = %st.args.task_id, "agent gone: {e}");
        }
    }

    async fn start(&self, me: &ActorRef<TaskMsg>, st: &mut TaskActorState) {
        let Some(spec) = st.args.launch.take() else {
            let info = st
                .args
                .container
                .clone()
                .expect("re-adopting needs a container");
            self.wait_for(me, st, info);
            return;
        };
        let result = self.containerizer.launch(spec).await;
        if let Ok(info) = &result {
            self.wait_for(me, st, info.clone());
        }
        let failed = result.is_err();
        Self::tell_agent(
            st,
            AgentMsg::Launched {
                task_id: st.args.task_id.clone(),
                result,
            },
        );
        if failed {
            me.stop(None);
        }
    }
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskActorState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        me: ActorRef<TaskMsg>,
        args: TaskArgs,
    ) -> Result<TaskActorState, ActorProcessingErr> {
        me.cast(TaskMsg::Start)?;
        Ok(TaskActorState {
            args,
            container: None,
            kill: None,
            waiter: None,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<TaskMsg>,
        msg: TaskMsg,
        st: &mut TaskActorState,
    ) -> Result<(), ActorProcessingErr> {
        self.fault.check("a task actor");
        match msg {
            TaskMsg::Start => self.start(&me, st).await,
            TaskMsg::Kill { grace } => {
                if st.kill.is_none() {
                    st.kill = Some(grace);
                    if let Some(info) = &st.container {
                        tokio::spawn(self.containerizer.kill(info, grace));
                    }
                }
            }
            TaskMsg::Exited(exit) => {
                // Its end is told once what it held is free.
                if let Some(info) = &st.container {
                    self.containerizer.destroy(info).await;
                }
                Self::tell_agent(
                    st,
                    AgentMsg::Exited {
                        task_id: st.args.task_id.clone(),
                        exit,
                    },
                );
                me.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<TaskMsg>,
        st: &mut TaskActorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(w) = st.waiter.take() {
            w.abort();
        }
        Ok(())
    }
}
