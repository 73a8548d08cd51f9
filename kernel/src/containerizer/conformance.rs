//! The contract every [`Containerizer`] keeps, as a suite both implementations run: the
//! process containerizer on real processes (`kernel/tests/conformance.rs`) and the
//! simulated one (`simulations/tests/conformance.rs`). A simulation is only as good as
//! its fakes; this suite is what keeps the simulated containerizer honest.
//!
//! A [`Subject`] says how to make its containerizer run each [`Behavior`]; the suite
//! checks what the agent relies on: exit codes and the states they map to, a kill with
//! its grace period, re-adoption by a new containerizer (an agent restart), the limits
//! (memory, disk, processes) and the reasons they end a task with, and a command that
//! does not exist.

use std::sync::Arc;
use std::time::Duration;

use super::shim::ExitRecord;
use super::{
    classify, exit_code, BoxFuture, ContainerError, ContainerInfo, Containerizer, ExitInfo,
    LaunchSpec,
};
use crate::reason::Reason;
use crate::resources::Resources;
use crate::task::TaskState;

/// Longest a suite step waits for a task to end.
pub const END_TIMEOUT: Duration = Duration::from_secs(60);

/// A way a task's command behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Exits at once with this status.
    Exit(i32),
    /// Runs until killed, and stops at SIGTERM.
    Forever,
    /// Runs until killed, ignoring SIGTERM.
    IgnoreTerm,
    /// Grows past any memory limit.
    OverMemory,
    /// Writes more than 10 MB to its sandbox, then runs on.
    OverDisk,
    /// Forks without end.
    ForkLoop,
    /// Names a command that does not exist.
    Missing,
}

/// A containerizer under test.
pub trait Subject: Send + Sync {
    /// The containerizer (the same one on every call).
    fn containerizer(&self) -> Arc<dyn Containerizer>;
    /// A new containerizer over the same machine, as after an agent restart.
    fn restarted(&self) -> Arc<dyn Containerizer>;
    /// The command line that behaves so, for the task `task_id`.
    fn argv(&self, b: Behavior, task_id: &str) -> Vec<String>;
    /// Whether memory limits are enforced here (if not, the memory check is skipped).
    fn enforces_memory(&self) -> bool;
    /// Whether a task's processes are limited here (if not, the fork check is skipped).
    fn enforces_pids(&self) -> bool;
    /// Resolves once a launched task's command runs (a kill before that is a kill of a
    /// task that never started, which has rules of its own).
    fn started<'a>(&'a self, info: &'a ContainerInfo) -> BoxFuture<'a, ()>;
}

async fn launch(
    c: &dyn Containerizer,
    id: &str,
    argv: Vec<String>,
    mem_mb: u64,
) -> Result<ContainerInfo, ContainerError> {
    launch_with(c, id, argv, Resources::new(0.5, mem_mb)).await
}

async fn launch_with(
    c: &dyn Containerizer,
    id: &str,
    argv: Vec<String>,
    resources: Resources,
) -> Result<ContainerInfo, ContainerError> {
    c.launch(LaunchSpec {
        task_id: id.into(),
        argv,
        resources,
        user: None,
        env: Vec::new(),
    })
    .await
}

async fn ended(c: &dyn Containerizer, info: &ContainerInfo) -> ExitInfo {
    tokio::time::timeout(END_TIMEOUT, c.wait(info))
        .await
        .unwrap_or_else(|_| panic!("task {} did not end", info.task_id))
}

/// Waits for a task that does not stop by itself to be ended `FAILED` with `reason`
/// (a limit crossed), frees it, and returns its message.
pub async fn ended_by(c: &dyn Containerizer, info: &ContainerInfo, reason: Reason) -> String {
    let (state, got, msg) = classify(&ended(c, info).await, false);
    assert_eq!((state, got), (TaskState::Failed, Some(reason)), "{msg}");
    c.destroy(info).await;
    msg
}

/// Exit statuses come back as recorded, and map to `FINISHED` (0) or `FAILED`.
pub async fn exit_codes(s: &dyn Subject) {
    let c = s.containerizer();
    for (code, state) in [(0, TaskState::Finished), (3, TaskState::Failed)] {
        let id = format!("exit-{code}");
        let info = launch(&*c, &id, s.argv(Behavior::Exit(code), &id), 64)
            .await
            .expect("launches");
        let exit = ended(&*c, &info).await;
        assert_eq!(exit.record, Some(ExitRecord::Exited(code)), "{id}");
        assert_eq!(exit_code(&exit), Some(code));
        assert_eq!(classify(&exit, false).0, state, "{id}");
        assert!(!c.is_running(&info));
        c.destroy(&info).await;
    }
}

/// A kill sends SIGTERM, then SIGKILL once the grace period passed; either way the task
/// ends `KILLED`.
pub async fn kill_with_grace(s: &dyn Subject) {
    let c = s.containerizer();
    let polite = launch(&*c, "polite", s.argv(Behavior::Forever, "polite"), 64)
        .await
        .expect("launches");
    let stubborn = launch(
        &*c,
        "stubborn",
        s.argv(Behavior::IgnoreTerm, "stubborn"),
        64,
    )
    .await
    .expect("launches");
    s.started(&polite).await;
    s.started(&stubborn).await;
    assert!(c.is_running(&polite) && c.is_running(&stubborn));
    c.kill(&polite, Duration::from_secs(30)).await;
    c.kill(&stubborn, Duration::from_millis(300)).await;
    let exit = ended(&*c, &polite).await;
    assert_eq!(
        exit.record,
        Some(ExitRecord::Signaled(15)),
        "SIGTERM was enough"
    );
    let exit2 = ended(&*c, &stubborn).await;
    assert_eq!(
        exit2.record,
        Some(ExitRecord::Signaled(9)),
        "SIGKILL after grace"
    );
    for (exit, info) in [(exit, polite), (exit2, stubborn)] {
        let (state, reason, _) = classify(&exit, true);
        assert_eq!(
            (state, reason),
            (TaskState::Killed, Some(Reason::TaskKilled))
        );
        c.destroy(&info).await;
    }
}

/// A new containerizer (the agent restarted) re-adopts a running task from its
/// checkpointed info: sees it run, kills it, hears it end, frees it.
pub async fn readopt_after_restart(s: &dyn Subject) {
    let c = s.containerizer();
    let info = launch(&*c, "adopted", s.argv(Behavior::Forever, "adopted"), 64)
        .await
        .expect("launches");
    s.started(&info).await;
    let again = s.restarted();
    assert!(again.is_running(&info), "the task outlives its agent");
    again.kill(&info, Duration::from_secs(30)).await;
    let exit = ended(&*again, &info).await;
    assert!(
        matches!(exit.record, Some(ExitRecord::Signaled(_))),
        "{exit:?}"
    );
    again.destroy(&info).await;
    assert!(!again.is_running(&info));
}

/// A task over its memory limit ends `FAILED` with the memory reason. Returns false
/// when the subject does not enforce memory limits (nothing was checked).
pub async fn memory_limit(s: &dyn Subject) -> bool {
    if !s.enforces_memory() {
        return false;
    }
    let c = s.containerizer();
    let info = launch(&*c, "hog", s.argv(Behavior::OverMemory, "hog"), 64)
        .await
        .expect("launches");
    ended_by(&*c, &info, Reason::ContainerLimitationMemory).await;
    true
}

/// A task past its `disk` ends `FAILED` with the disk reason; a fork loop, with the
/// container-limitation reason (where processes are limited). Both are ended by the
/// containerizer: the commands would run on.
pub async fn disk_and_pids_limits(s: &dyn Subject) {
    let c = s.containerizer();
    let disk = Resources {
        disk_mb: 10,
        ..Resources::new(0.5, 64)
    };
    let filler = launch_with(&*c, "filler", s.argv(Behavior::OverDisk, "filler"), disk)
        .await
        .expect("launches");
    ended_by(&*c, &filler, Reason::ContainerLimitationDisk).await;
    if !s.enforces_pids() {
        return;
    }
    let bomb = launch(&*c, "bomb", s.argv(Behavior::ForkLoop, "bomb"), 64)
        .await
        .expect("launches");
    ended_by(&*c, &bomb, Reason::ContainerLimitation).await;
}

/// A command that does not exist fails the launch (no process, exit code 127); so does
/// an empty one.
pub async fn unknown_command(s: &dyn Subject) {
    let c = s.containerizer();
    let err = launch(&*c, "missing", s.argv(Behavior::Missing, "missing"), 64)
        .await
        .expect_err("nothing to run");
    assert!(matches!(err, ContainerError::NotFound { .. }), "{err}");
    assert_eq!(err.exit_code(), 127);
    let empty = launch(&*c, "empty", Vec::new(), 64).await;
    assert!(empty.is_err(), "an empty command does not launch");
}

/// The whole suite; returns whether the memory limit was checked.
pub async fn run_all(s: &dyn Subject) -> bool {
    exit_codes(s).await;
    kill_with_grace(s).await;
    readopt_after_restart(s).await;
    unknown_command(s).await;
    disk_and_pids_limits(s).await;
    memory_limit(s).await
}
