//! The agent's rules, one test each, against [`AgentCore`] alone: no runtime, no
//! processes, no disk, time given by hand.

use std::path::PathBuf;
use std::time::Duration;

use super::core::*;
use crate::containerizer::shim::ExitRecord;
use crate::containerizer::{ContainerError, ContainerInfo, ExitInfo};
use crate::ids::TaskId;
use crate::master::Now;
use crate::protocol::TaskSpec;
use crate::reason::Reason;
use crate::resources::{Resources, RoleResources};
use crate::status::StatusUpdate;
use crate::task::TaskState;

fn at(secs: u64) -> Now {
    Now {
        elapsed: Duration::from_secs(secs),
        unix_ms: 1_700_000_000_000 + secs * 1000,
    }
}

fn spec(id: &str) -> TaskSpec {
    TaskSpec {
        task_id: id.into(),
        name: id.into(),
        argv: vec!["sleep".into(), "9".into()],
        resources: Resources::new(1.0, 64),
        user: None,
        actor: None,
    }
}

fn container(id: &str) -> ContainerInfo {
    ContainerInfo {
        task_id: id.into(),
        sandbox: PathBuf::from(format!("/sandboxes/{id}")),
        shim_pid: 4242,
        cgroups: Vec::new(),
        cgroup_v2: false,
    }
}

fn exit(record: ExitRecord) -> ExitInfo {
    ExitInfo {
        record: Some(record),
        oom_killed: false,
    }
}

/// A fresh agent, registered, its checkpoint written.
fn agent() -> AgentCore {
    let (mut core, effects) = AgentCore::recover(Checkpoint::default(), None, "node-a", at(0));
    assert_eq!(effects, vec![Effect::DestroyOrphans { keep: vec![] }]);
    core.on_registered();
    core
}

/// Writes the checkpoint and takes the updates due.
fn sent(core: &mut AgentCore, now: Now) -> Vec<StatusUpdate> {
    core.saved();
    core.due_updates(now)
}

fn states(updates: &[StatusUpdate]) -> Vec<TaskState> {
    updates.iter().map(|u| u.state).collect()
}

/// A task launched and running, its update acknowledged.
fn running(core: &mut AgentCore, id: &str) {
    core.run("fw-1".into(), spec(id), RoleResources::default());
    core.launched(id, Ok(container(id)), at(1));
    for u in sent(core, at(1)) {
        core.ack(id, u.uuid);
    }
}

#[test]
fn a_task_is_launched_once_it_is_recorded_and_reported_running() {
    let mut core = agent();
    assert!(core.run("fw-1".into(), spec("t1"), RoleResources::default()));
    // Nothing starts before the checkpoint records it: the task waits, unwritten.
    assert!(core.unsaved() > 0);
    assert_eq!(
        core.view().tasks,
        vec![(TaskId::from("t1"), TaskState::Staging)]
    );
    // The same launch again (a resent message) records nothing more.
    assert!(!core.run("fw-1".into(), spec("t1"), RoleResources::default()));
    let e = core.saved();
    assert!(
        matches!(&e[..], [Effect::Launch { task_id, spec }] if task_id == "t1" && spec.argv[0] == "sleep")
    );
    assert!(core.saved().is_empty(), "launched once");
    core.launched("t1", Ok(container("t1")), at(1));
    let u = sent(&mut core, at(1));
    assert_eq!(states(&u), vec![TaskState::Running]);
    assert_eq!(
        (u[0].framework_id.as_str(), u[0].agent_id.as_str()),
        ("fw-1", "node-a")
    );
    assert_eq!(u[0].unix_ms, at(1).unix_ms, "stamped with the time given");
}

#[test]
fn a_task_killed_before_its_record_is_written_is_never_launched() {
    let mut core = agent();
    core.run("fw-1".into(), spec("t1"), RoleResources::default());
    core.kill("t1", at(1));
    assert!(core.saved().is_empty());
    assert_eq!(states(&core.due_updates(at(1))), vec![TaskState::Killed]);
}

#[test]
fn no_update_goes_out_before_it_is_written_or_while_unregistered() {
    let mut core = agent();
    core.run("fw-1".into(), spec("t1"), RoleResources::default());
    core.launched("t1", Ok(container("t1")), at(1));
    assert!(core.unsaved() > 0);
    assert!(core.due_updates(at(1)).is_empty(), "not written yet");
    core.on_master_lost();
    core.saved();
    assert!(core.due_updates(at(1)).is_empty(), "no master");
    assert!(core.needs_tick());
    core.on_registered();
    assert_eq!(states(&core.due_updates(at(1))), vec![TaskState::Running]);
}

#[test]
fn a_launch_that_fails_fails_the_task_with_the_shells_exit_code() {
    let mut core = agent();
    core.run("fw-1".into(), spec("t1"), RoleResources::default());
    let err = ContainerError::NotFound {
        task: "t1".into(),
        command: "nope".into(),
        why: "not found in PATH".into(),
    };
    core.launched("t1", Err(err), at(1));
    let u = sent(&mut core, at(1));
    assert_eq!(states(&u), vec![TaskState::Failed]);
    assert_eq!(u[0].reason, Some(Reason::ContainerLaunchFailed));
    assert_eq!(u[0].exit_code, Some(127));
}

#[test]
fn a_kill_before_the_launch_ends_kills_at_once_and_the_launch_changes_nothing() {
    let mut core = agent();
    core.run("fw-1".into(), spec("t1"), RoleResources::default());
    let e = core.kill("t1", at(1));
    assert_eq!(
        e,
        vec![Effect::Signal {
            task_id: "t1".into()
        }]
    );
    core.launched("t1", Ok(container("t1")), at(2));
    assert_eq!(states(&sent(&mut core, at(2))), vec![TaskState::Killed]);
    // A second kill does nothing.
    assert!(core.kill("t1", at(3)).is_empty());
}

#[test]
fn a_kill_of_a_running_task_is_killing_until_its_process_ends() {
    let mut core = agent();
    running(&mut core, "t1");
    let e = core.kill("t1", at(2));
    assert_eq!(
        e,
        vec![Effect::Signal {
            task_id: "t1".into()
        }]
    );
    assert!(core.kill("t1", at(2)).is_empty(), "one signal per kill");
    core.exited("t1", &exit(ExitRecord::Signaled(15)), at(3));
    let u = sent(&mut core, at(3));
    assert_eq!(states(&u), vec![TaskState::Killing]);
    // The stream is in order: KILLED follows once KILLING is acknowledged.
    core.ack("t1", u[0].uuid);
    let u = sent(&mut core, at(3));
    assert_eq!(states(&u), vec![TaskState::Killed]);
    assert_eq!(u[0].exit_code, Some(143));
}

#[test]
fn exits_are_classified_and_an_ended_task_never_changes() {
    let mut core = agent();
    for (id, record, want) in [
        ("ok", ExitRecord::Exited(0), TaskState::Finished),
        ("bad", ExitRecord::Exited(3), TaskState::Failed),
    ] {
        running(&mut core, id);
        core.exited(id, &exit(record), at(2));
        let u = sent(&mut core, at(2));
        assert_eq!(states(&u), vec![want]);
        core.exited(id, &exit(ExitRecord::Exited(0)), at(3));
        assert!(core.kill(id, at(3)).is_empty());
        core.launched(id, Ok(container(id)), at(3));
        let view = core.view();
        assert_eq!(
            view.tasks,
            vec![(TaskId::from(id), want)],
            "{id} changed after it ended"
        );
        assert_eq!(view.pending_updates, u, "no update after the end");
        core.ack(id, u[0].uuid);
    }
    running(&mut core, "oom");
    let oom = ExitInfo {
        record: Some(ExitRecord::Signaled(9)),
        oom_killed: true,
    };
    core.exited("oom", &oom, at(4));
    let u = sent(&mut core, at(4));
    assert_eq!(u[0].reason, Some(Reason::ContainerLimitationMemory));
}

#[test]
fn an_ended_task_is_forgotten_once_its_updates_are_acknowledged() {
    let mut core = agent();
    running(&mut core, "t1");
    core.exited("t1", &exit(ExitRecord::Exited(0)), at(2));
    let u = sent(&mut core, at(2));
    assert_eq!(core.view().tasks.len(), 1);
    // A stale acknowledgement changes nothing.
    core.ack("t1", u[0].uuid + 100);
    assert_eq!(core.unsaved(), 0);
    core.ack("t1", u[0].uuid);
    assert!(core.view().tasks.is_empty());
    assert!(core.unsaved() > 0, "forgetting it is written down");
    assert!(!core.needs_tick());
}

#[test]
fn unacknowledged_updates_are_resent_with_backoff_and_at_once_after_registering() {
    let mut core = agent();
    core.run("fw-1".into(), spec("t1"), RoleResources::default());
    core.launched("t1", Ok(container("t1")), at(1));
    assert_eq!(sent(&mut core, at(1)).len(), 1);
    assert!(core.due_updates(at(1)).is_empty(), "not again at once");
    assert_eq!(core.due_updates(at(3)).len(), 1, "again after the backoff");
    core.on_registered();
    assert_eq!(core.due_updates(at(3)).len(), 1, "again to a new master");
}

#[test]
fn a_failed_task_actor_fails_its_task_and_reaps_its_process() {
    let mut core = agent();
    running(&mut core, "t1");
    let e = core.task_actor_failed("t1", "boom", at(2));
    assert_eq!(
        e,
        vec![Effect::Reap {
            container: container("t1")
        }]
    );
    let u = sent(&mut core, at(2));
    assert_eq!(states(&u), vec![TaskState::Failed]);
    assert_eq!(u[0].reason, Some(Reason::ExecutorTerminated));
    assert!(u[0].message.contains("boom"));
    // Its (late) exit changes nothing.
    core.exited("t1", &exit(ExitRecord::Exited(0)), at(3));
    assert_eq!(core.view().pending_updates, u);
}

#[test]
fn a_restarted_agent_adopts_running_tasks_fails_half_launched_ones_and_keeps_its_updates() {
    let mut core = agent();
    running(&mut core, "live");
    core.run("fw-1".into(), spec("half"), RoleResources::default());
    running(&mut core, "done");
    core.exited("done", &exit(ExitRecord::Exited(0)), at(2));
    let ck = core.checkpoint().clone();
    let (mut again, effects) = AgentCore::recover(ck, None, "other-name", at(0));
    assert_eq!(
        again.agent_id(),
        "node-a",
        "the checkpointed id wins over the node name"
    );
    assert_eq!(
        effects,
        vec![
            Effect::Adopt {
                task_id: "live".into(),
                container: container("live")
            },
            Effect::DestroyOrphans {
                keep: vec![container("done"), container("live")]
            },
        ]
    );
    again.on_registered();
    let u = sent(&mut again, at(1));
    let mut got: Vec<(TaskId, TaskState)> =
        u.iter().map(|u| (u.task_id.clone(), u.state)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("done".into(), TaskState::Finished),
            ("half".into(), TaskState::Failed)
        ]
    );
    let reg = again.registration(
        "host",
        &RoleResources::default(),
        "none",
        &Default::default(),
    );
    assert_eq!(reg.tasks.len(), 3);
    // A configured id wins over the checkpoint's.
    let (named, _) = AgentCore::recover(Checkpoint::default(), Some("a-7"), "n", at(0));
    assert_eq!(named.agent_id(), "a-7");
}

/// What a test knows of a task's actor, to feed the core only what a real one would.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    New,
    Launching,
    Running,
    Gone,
}

proptest::proptest! {
    /// After any sequence of what the agent can be told (launches, their ends, kills,
    /// exits, acknowledgements, failed task actors, checkpoint writes, restarts from the
    /// last written checkpoint, the master lost and found), the core's invariants hold.
    #[test]
    fn the_agents_invariants_hold_after_any_events(
        ops in proptest::collection::vec((0u8..10, 0usize..3, 0i32..3), 1..80),
    ) {
        let ids = ["t0", "t1", "t2"];
        let mut core = agent();
        let mut written = core.checkpoint().clone();
        let mut phase = [Phase::New; 3];
        for (step, (op, i, code)) in ops.into_iter().enumerate() {
            let now = at(step as u64);
            let id = ids[i];
            match op {
                0 if phase[i] == Phase::New => {
                    core.run("fw-1".into(), spec(id), RoleResources::default());
                    phase[i] = Phase::Launching;
                }
                1 if phase[i] == Phase::Launching => {
                    core.launched(id, Ok(container(id)), now);
                    phase[i] = Phase::Running;
                }
                2 if phase[i] == Phase::Launching => {
                    let err = ContainerError::Launch { task: id.into(), reason: "no".into() };
                    core.launched(id, Err(err), now);
                    phase[i] = Phase::Gone;
                }
                3 => {
                    core.kill(id, now);
                }
                4 if phase[i] == Phase::Running => {
                    core.exited(id, &exit(ExitRecord::Exited(code)), now);
                    phase[i] = Phase::Gone;
                }
                5 => {
                    let head = core.view().pending_updates.into_iter().find(|u| u.task_id == id);
                    if let Some(u) = head {
                        core.ack(id, u.uuid);
                    }
                }
                6 if matches!(phase[i], Phase::Launching | Phase::Running) => {
                    core.task_actor_failed(id, "boom", now);
                    phase[i] = Phase::Gone;
                }
                7 => {
                    core.saved();
                    written = core.checkpoint().clone();
                    core.due_updates(now);
                }
                8 => {
                    let (again, _) = AgentCore::recover(written.clone(), None, "node-a", now);
                    core = again;
                    for (k, p) in phase.iter_mut().enumerate() {
                        *p = match core.checkpoint().tasks.get(ids[k]) {
                            None => Phase::New,
                            Some(t) if !t.state.is_terminal() && t.container.is_some() => Phase::Running,
                            Some(_) => Phase::Gone,
                        };
                    }
                }
                9 if core.registered() => core.on_master_lost(),
                9 => core.on_registered(),
                _ => continue,
            }
            proptest::prop_assert_eq!(core.check(), Ok(()), "after step {} (op {})", step, op);
        }
    }
}

#[test]
fn an_acknowledged_ended_task_is_remembered_as_completed_and_reported() {
    let mut core = agent();
    running(&mut core, "t1");
    core.exited("t1", &exit(ExitRecord::Exited(3)), at(2));
    let u = sent(&mut core, at(2));
    core.ack("t1", u[0].uuid);
    let reg = core.registration(
        "host",
        &RoleResources::default(),
        "none",
        &Default::default(),
    );
    assert!(reg.tasks.is_empty());
    assert_eq!(reg.completed.len(), 1);
    let c = &reg.completed[0];
    assert_eq!(
        (c.spec.task_id.as_str(), c.state, c.exit_code),
        ("t1", TaskState::Failed, Some(3))
    );
    assert_eq!(c.message, u[0].message);
    // It survives a restart, and the history is bounded.
    let (mut again, _) = AgentCore::recover(core.checkpoint().clone(), None, "n", at(0));
    assert_eq!(
        again
            .registration("h", &RoleResources::default(), "none", &Default::default())
            .completed
            .len(),
        1
    );
    again.on_registered();
    for i in 0..AGENT_COMPLETED_TASKS_LIMIT + 5 {
        let id = format!("x{i}");
        running(&mut again, &id);
        again.exited(&id, &exit(ExitRecord::Exited(0)), at(3));
        for u in sent(&mut again, at(3)) {
            again.ack(&id, u.uuid);
        }
    }
    let reg = again.registration("h", &RoleResources::default(), "none", &Default::default());
    assert_eq!(reg.completed.len(), AGENT_COMPLETED_TASKS_LIMIT);
    assert_eq!(
        reg.completed.last().unwrap().spec.task_id,
        format!("x{}", AGENT_COMPLETED_TASKS_LIMIT + 4)
    );
    assert_eq!(again.check(), Ok(()));
}

#[test]
fn checkpoints_of_the_earlier_layouts_are_read() {
    /// A task spec before task users.
    #[derive(serde::Serialize)]
    struct OldSpec {
        task_id: String,
        name: String,
        argv: Vec<String>,
        resources: crate::resources::Resources,
    }
    let old_spec = |id: &str| {
        let s = spec(id);
        OldSpec {
            task_id: s.task_id.to_string(),
            name: s.name,
            argv: s.argv,
            resources: s.resources,
        }
    };
    #[derive(serde::Serialize)]
    struct OldRecord {
        spec: OldSpec,
        framework_id: String,
        resources: RoleResources,
        state: TaskState,
        container: Option<ContainerInfo>,
        killing: bool,
    }
    #[derive(serde::Serialize)]
    struct Old {
        agent_id: String,
        next_uuid: u64,
        tasks: std::collections::BTreeMap<String, OldRecord>,
        updates: crate::status::StatusUpdateManager,
    }
    let mut tasks = std::collections::BTreeMap::new();
    tasks.insert(
        "t1".to_string(),
        OldRecord {
            spec: old_spec("t1"),
            framework_id: "fw-1".into(),
            resources: RoleResources::default(),
            state: TaskState::Running,
            container: Some(container("t1")),
            killing: false,
        },
    );
    let old = Old {
        agent_id: "a-1".into(),
        next_uuid: 4,
        tasks,
        updates: Default::default(),
    };
    let bytes = plexus_net::codec::encode(&old).unwrap();
    let ck = Checkpoint::decode(&bytes).unwrap();
    assert_eq!((ck.agent_id.as_str(), ck.next_uuid), ("a-1", 4));
    assert_eq!(ck.tasks["t1"].container, Some(container("t1")));
    assert!(ck.completed.is_empty());
    assert!(Checkpoint::decode(b"garbage").is_err());
    // With completed-task history, before task users.
    #[derive(serde::Serialize)]
    struct V1Record {
        spec: OldSpec,
        framework_id: String,
        resources: RoleResources,
        state: TaskState,
        container: Option<ContainerInfo>,
        killing: bool,
        end: Option<super::core::TaskEnd>,
    }
    #[derive(serde::Serialize)]
    struct V1Completed {
        spec: OldSpec,
        framework_id: String,
        resources: RoleResources,
        state: TaskState,
        reason: Option<crate::reason::Reason>,
        message: String,
        exit_code: Option<i32>,
    }
    #[derive(serde::Serialize)]
    struct V1 {
        agent_id: String,
        next_uuid: u64,
        tasks: std::collections::BTreeMap<String, V1Record>,
        updates: crate::status::StatusUpdateManager,
        completed: Vec<V1Completed>,
    }
    let v1 = V1 {
        agent_id: "a-1".into(),
        next_uuid: 9,
        tasks: [(
            "t2".to_string(),
            V1Record {
                spec: old_spec("t2"),
                framework_id: "fw-1".into(),
                resources: RoleResources::default(),
                state: TaskState::Running,
                container: Some(container("t2")),
                killing: true,
                end: None,
            },
        )]
        .into(),
        updates: Default::default(),
        completed: vec![V1Completed {
            spec: old_spec("t0"),
            framework_id: "fw-1".into(),
            resources: RoleResources::default(),
            state: TaskState::Finished,
            reason: None,
            message: "done".into(),
            exit_code: Some(0),
        }],
    };
    let ck = Checkpoint::decode(&plexus_net::codec::encode(&v1).unwrap()).unwrap();
    assert_eq!(ck.tasks["t2"].spec, spec("t2"));
    assert!(ck.tasks["t2"].killing);
    assert_eq!(ck.completed[0].spec, spec("t0"));
    assert_eq!(ck.completed[0].message, "done");
}

#[test]
fn a_checkpoint_from_before_actor_tasks_is_read_with_its_pending_updates() {
    use std::collections::BTreeMap;
    use std::time::Duration;
    #[derive(serde::Serialize)]
    struct V2Spec {
        task_id: String,
        name: String,
        argv: Vec<String>,
        resources: crate::resources::Resources,
        user: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct V2Record {
        spec: V2Spec,
        framework_id: String,
        resources: RoleResources,
        state: TaskState,
        container: Option<ContainerInfo>,
        killing: bool,
        end: Option<super::core::TaskEnd>,
    }
    #[derive(serde::Serialize)]
    struct V2Update {
        uuid: u64,
        task_id: String,
        framework_id: String,
        agent_id: String,
        state: TaskState,
        reason: Option<crate::reason::Reason>,
        message: String,
        exit_code: Option<i32>,
        unix_ms: u64,
    }
    #[derive(serde::Serialize)]
    struct V2Stream {
        pending: Vec<V2Update>,
        next_send: Option<Duration>,
        backoff: Duration,
        done: bool,
    }
    #[derive(serde::Serialize)]
    struct V2Updates {
        streams: BTreeMap<String, V2Stream>,
    }
    #[derive(serde::Serialize)]
    struct V2 {
        agent_id: String,
        next_uuid: u64,
        tasks: BTreeMap<String, V2Record>,
        updates: V2Updates,
        completed: Vec<()>,
    }
    let s = spec("t3");
    let v2 = V2 {
        agent_id: "a-1".into(),
        next_uuid: 2,
        tasks: [(
            "t3".to_string(),
            V2Record {
                spec: V2Spec {
                    task_id: "t3".into(),
                    name: s.name.clone(),
                    argv: s.argv.clone(),
                    resources: s.resources.clone(),
                    user: Some("nobody".into()),
                },
                framework_id: "fw-1".into(),
                resources: RoleResources::default(),
                state: TaskState::Running,
                container: Some(container("t3")),
                killing: false,
                end: None,
            },
        )]
        .into(),
        updates: V2Updates {
            streams: [(
                "t3".to_string(),
                V2Stream {
                    pending: vec![V2Update {
                        uuid: 2,
                        task_id: "t3".into(),
                        framework_id: "fw-1".into(),
                        agent_id: "a-1".into(),
                        state: TaskState::Running,
                        reason: None,
                        message: "running".into(),
                        exit_code: None,
                        unix_ms: 5,
                    }],
                    next_send: None,
                    backoff: Duration::from_secs(1),
                    done: false,
                },
            )]
            .into(),
        },
        completed: Vec::new(),
    };
    let ck = Checkpoint::decode(&plexus_net::codec::encode(&v2).unwrap()).unwrap();
    assert_eq!(ck.tasks["t3"].spec.user.as_deref(), Some("nobody"));
    assert_eq!(ck.tasks["t3"].spec.actor, None);
    let pending = ck.updates.pending("t3");
    assert_eq!(pending.len(), 1, "the unacknowledged update is kept");
    assert_eq!(
        (pending[0].uuid, pending[0].message.as_str()),
        (2, "running")
    );
    // What this agent writes now reads back, and says its format.
    let bytes = ck.encode().unwrap();
    assert!(bytes.starts_with(b"plexusCK"));
    assert_eq!(Checkpoint::decode(&bytes).unwrap(), ck);
    let mut future = bytes.clone();
    future[8] = 99;
    let e = Checkpoint::decode(&future).unwrap_err().to_string();
    assert!(e.contains("format Some(99)"), "{e}");
}

#[test]
fn a_completed_tasks_command_is_kept_short() {
    let mut core = agent();
    let mut long = spec("t1");
    long.argv = vec!["echo".into(), "a".repeat(600), "b".repeat(600), "c".into()];
    core.run("fw-1".into(), long, RoleResources::default());
    core.saved();
    core.launched("t1", Ok(container("t1")), at(1));
    for u in sent(&mut core, at(1)) {
        core.ack("t1", u.uuid);
    }
    core.exited("t1", &exit(ExitRecord::Exited(0)), at(2));
    for u in sent(&mut core, at(2)) {
        core.ack("t1", u.uuid);
    }
    let reg = core.registration("h", &RoleResources::default(), "none", &Default::default());
    let argv = &reg.completed[0].spec.argv;
    assert_eq!(argv.len(), 3, "{argv:?}");
    assert_eq!((argv[0].as_str(), argv[2].as_str()), ("echo", "…"));
}

fn actor_spec(id: &str) -> TaskSpec {
    let mut s = spec(id);
    s.argv = vec!["/bin/program".into()];
    s.actor = Some(Box::new(crate::protocol::ActorSpec {
        type_name: "worker".into(),
        msg_type: "Work".into(),
        args: vec![1, 2],
        owner: "framework-node".into(),
    }));
    s
}

fn actor_at(node: &str) -> crate::status::ActorAt {
    crate::status::ActorAt {
        node: node.into(),
        addr: "127.0.0.2:7000".parse().unwrap(),
        pid: 7,
    }
}

/// An actor task whose executor runs and whose actor started, its updates acknowledged.
fn actor_running(core: &mut AgentCore, id: &str) -> String {
    assert!(core.run("fw-1".into(), actor_spec(id), RoleResources::default()));
    let launches = core.saved();
    let [Effect::Launch { .. }] = launches.as_slice() else {
        panic!("one launch expected: {launches:?}");
    };
    let exec = core.task(id).unwrap().executor.clone().unwrap();
    core.launched(id, Ok(container(id)), at(1));
    assert!(core
        .actor_started(id, Ok(actor_at(&exec)), at(1))
        .is_empty());
    drain(core, at(1));
    exec
}

/// Every update due, each acknowledged in turn, in order.
fn drain(core: &mut AgentCore, now: Now) -> Vec<StatusUpdate> {
    let mut all = Vec::new();
    loop {
        let u = sent(core, now);
        if u.is_empty() {
            return all;
        }
        for x in &u {
            core.ack(&x.task_id, x.uuid);
        }
        all.extend(u);
    }
}

#[test]
fn an_actor_task_runs_once_its_actor_answers_and_says_where_it_is() {
    let mut core = agent();
    core.run("fw-1".into(), actor_spec("a1"), RoleResources::default());
    core.run("fw-1".into(), actor_spec("a2"), RoleResources::default());
    core.saved();
    let e1 = core.task("a1").unwrap().executor.clone().unwrap();
    let e2 = core.task("a2").unwrap().executor.clone().unwrap();
    assert_ne!(e1, e2, "never reused");
    for e in [&e1, &e2] {
        assert_eq!(plexus_net::tls::executor_agent(e), Some("node-a"), "{e}");
    }
    core.launched("a1", Ok(container("a1")), at(1));
    let u = sent(&mut core, at(1));
    assert_eq!(
        states(&u),
        [TaskState::Starting],
        "not running before its actor is"
    );
    assert_eq!(u[0].actor, None);
    core.ack("a1", u[0].uuid);
    core.actor_started("a1", Ok(actor_at(&e1)), at(2));
    let u = sent(&mut core, at(2));
    assert_eq!(states(&u), [TaskState::Running]);
    assert_eq!(u[0].actor, Some(actor_at(&e1)));
}

#[test]
fn an_actor_that_fails_ends_its_task_failed_with_its_text_once_its_executor_is_gone() {
    let mut core = agent();
    actor_running(&mut core, "a1");
    let effects = core.actor_ended("a1", ActorEnd::Failed("boom".into()));
    assert_eq!(
        effects,
        vec![Effect::Signal {
            task_id: "a1".into()
        }]
    );
    assert!(
        core.actor_ended("a1", ActorEnd::Failed("again".into()))
            .is_empty(),
        "once"
    );
    assert!(
        sent(&mut core, at(2)).is_empty(),
        "running until the executor is gone"
    );
    core.exited("a1", &exit(ExitRecord::Signaled(15)), at(3));
    let u = sent(&mut core, at(3));
    assert_eq!(states(&u), [TaskState::Failed]);
    assert_eq!(u[0].reason, Some(Reason::ActorFailed));
    assert_eq!(u[0].message, "boom");
}

#[test]
fn an_actor_that_stops_finishes_its_task() {
    let mut core = agent();
    actor_running(&mut core, "a1");
    core.actor_ended("a1", ActorEnd::Stopped(Some("done".into())));
    core.exited("a1", &exit(ExitRecord::Signaled(15)), at(3));
    let u = sent(&mut core, at(3));
    assert_eq!(states(&u), [TaskState::Finished]);
    assert_eq!(u[0].message, "the actor stopped: done");
}

#[test]
fn an_executor_killed_for_its_memory_says_so_whatever_its_actor_said() {
    let mut core = agent();
    actor_running(&mut core, "a1");
    core.actor_ended("a1", ActorEnd::Failed("allocation failed".into()));
    let oom = ExitInfo {
        record: Some(ExitRecord::Signaled(9)),
        oom_killed: true,
    };
    core.exited("a1", &oom, at(3));
    let u = sent(&mut core, at(3));
    assert_eq!(u[0].reason, Some(Reason::ContainerLimitationMemory));
    // Without a word from the actor too.
    actor_running(&mut core, "a2");
    core.exited("a2", &oom, at(4));
    let u = sent(&mut core, at(4));
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Failed, Some(Reason::ContainerLimitationMemory))
    );
}

#[test]
fn an_executor_that_ends_before_its_actor_fails_its_task() {
    let mut core = agent();
    actor_running(&mut core, "a1");
    core.exited("a1", &exit(ExitRecord::Exited(0)), at(3));
    let u = sent(&mut core, at(3));
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Failed, Some(Reason::ExecutorTerminated))
    );
    assert!(
        u[0].message.starts_with("the executor ended"),
        "{}",
        u[0].message
    );
}

#[test]
fn an_actor_that_cannot_start_stops_its_executor_and_fails_its_task() {
    let mut core = agent();
    core.run("fw-1".into(), actor_spec("a1"), RoleResources::default());
    core.saved();
    core.launched("a1", Ok(container("a1")), at(1));
    let effects = core.actor_started("a1", Err("no actor type \"worker\"".into()), at(2));
    assert_eq!(
        effects,
        vec![Effect::Signal {
            task_id: "a1".into()
        }]
    );
    core.exited("a1", &exit(ExitRecord::Signaled(15)), at(3));
    let u = drain(&mut core, at(3));
    assert_eq!(states(&u), [TaskState::Starting, TaskState::Failed]);
    assert!(u[1].message.contains("no actor type"), "{}", u[1].message);
}

#[test]
fn a_killed_actor_task_is_killed_not_failed() {
    let mut core = agent();
    actor_running(&mut core, "a1");
    core.kill("a1", at(2));
    core.exited("a1", &exit(ExitRecord::Signaled(15)), at(3));
    let u = drain(&mut core, at(3));
    assert_eq!(states(&u), [TaskState::Killing, TaskState::Killed]);
}

#[test]
fn a_recovered_agent_never_names_an_executor_as_one_minted_before_its_crash() {
    let mut core = agent();
    let first = core.mint_executor();
    let minted_unwritten = core.mint_executor();
    let mut ck = core.checkpoint().clone();
    // The crash came before the second number was written.
    ck.last_executor -= 1;
    let (mut again, _) = AgentCore::recover(ck, None, "node-a", at(5));
    let next = again.mint_executor();
    assert_ne!(next, minted_unwritten);
    assert_ne!(next, first);
    let n: u64 = next[1..next.find('.').unwrap()].parse().unwrap();
    assert!(n > EXECUTOR_NUMBERS_SKIPPED_ON_RECOVERY, "{next}");
}
