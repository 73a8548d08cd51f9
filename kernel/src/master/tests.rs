//! The master's rules, one test each, against [`MasterCore`] alone: no runtime, no
//! actors, time given by hand.

use std::time::Duration;

use proptest::prelude::*;

use super::core::*;
use super::MasterConfig;
use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::protocol::{
    AgentRegistration, AgentTask, CompletedTask, FrameworkCall, FrameworkInfo, Offer, TaskSpec,
};
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

fn drain(c: &mut MasterCore) -> Vec<Effect> {
    std::iter::from_fn(|| c.poll_effect()).collect()
}

fn res(cpus: f64, mem_mb: u64) -> Resources {
    Resources::new(cpus, mem_mb)
}

fn registration(agent: &str, cpus: f64, tasks: Vec<AgentTask>) -> AgentRegistration {
    AgentRegistration {
        agent_id: agent.into(),
        hostname: format!("{agent}.example"),
        resources: RoleResources::unreserved(res(cpus, 4096)),
        tasks,
        isolation: "none".into(),
        completed: vec![],
        problem: None,
        attempt: 0,
        parts: 0,
        attributes: Default::default(),
    }
}

fn framework(name: &str, role: &str, failover_secs: f64) -> FrameworkInfo {
    FrameworkInfo {
        id: None,
        name: name.into(),
        principal: None,
        role: role.into(),
        failover_timeout_secs: failover_secs,
    }
}

fn spec(id: &str, cpus: f64, mem_mb: u64) -> TaskSpec {
    TaskSpec {
        task_id: id.into(),
        name: id.into(),
        argv: vec!["sleep".into(), "1".into()],
        resources: res(cpus, mem_mb),
        user: None,
        actor: None,
    }
}

/// A task an agent reports running when it registers.
fn reported(id: &str, fw: &str, cpus: f64, mem_mb: u64) -> AgentTask {
    AgentTask {
        spec: spec(id, cpus, mem_mb),
        framework_id: fw.into(),
        resources: RoleResources::unreserved(res(cpus, mem_mb)),
        state: TaskState::Running,
    }
}

fn offers(effects: &[Effect], fw: &str) -> Vec<Offer> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scheduler {
                framework_id,
                msg: ToScheduler::Offers(o),
            } if framework_id == fw => Some(o.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn updates(effects: &[Effect]) -> Vec<StatusUpdate> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scheduler {
                msg: ToScheduler::Update(u),
                ..
            } => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn agent_msgs(effects: &[Effect], agent: &str) -> Vec<ToAgent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Agent { agent_id, msg } if agent_id == agent => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn agent_update(fw: &str, agent: &str, task: &str, state: TaskState, uuid: u64) -> Event {
    Event::Update(StatusUpdate {
        uuid,
        task_id: task.into(),
        framework_id: fw.into(),
        agent_id: agent.into(),
        state,
        reason: None,
        message: String::new(),
        exit_code: None,
        unix_ms: 0,
        actor: None,
    })
}

/// `fw` uses `offer_ids` to launch `tasks`, refusing nothing it leaves.
fn accept(fw: &str, offer_ids: Vec<OfferId>, tasks: Vec<TaskSpec>) -> Event {
    call(
        fw,
        FrameworkCall::Accept {
            offer_ids,
            tasks,
            refuse_secs: 0.0,
        },
    )
}

/// Framework `fw` makes `call`.
fn call(fw: &str, call: FrameworkCall) -> Event {
    Event::Framework {
        framework_id: fw.into(),
        call,
    }
}

/// One agent `a1` (4 cpus) and one framework in role `*`, with the offer it got.
fn cluster(failover_secs: f64) -> (MasterCore, FrameworkId, Offer) {
    let mut c = MasterCore::new(MasterConfig::default());
    c.handle(
        at(0),
        Event::AgentRegistered(registration("a1", 4.0, vec![])),
    );
    let fw = c
        .subscribe(
            at(0),
            framework("jobs", "*", failover_secs),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    drain(&mut c);
    c.handle(at(0), Event::Allocate);
    let o = offers(&drain(&mut c), &fw);
    assert_eq!(o.len(), 1, "one agent, one offer");
    (c, fw, o[0].clone())
}

/// `cluster` with task `t1` running on `a1`.
fn running(failover_secs: f64) -> (MasterCore, FrameworkId) {
    let (mut c, fw, o) = cluster(failover_secs);
    c.handle(at(0), accept(&fw, vec![o.id], vec![spec("t1", 1.0, 128)]));
    c.handle(at(0), agent_update(&fw, "a1", "t1", TaskState::Running, 7));
    drain(&mut c);
    (c, fw)
}

fn task_state(c: &MasterCore, id: &str) -> Option<TaskState> {
    c.state()
        .tasks
        .iter()
        .find(|t| t.task_id == id)
        .map(|t| t.state)
}

#[test]
fn a_valid_accept_launches_on_the_offers_agent_and_returns_the_rest() {
    let (mut c, fw, o) = cluster(60.0);
    c.handle(
        at(1),
        accept(&fw, vec![o.id.clone()], vec![spec("t1", 1.0, 128)]),
    );
    let fx = drain(&mut c);
    let run = agent_msgs(&fx, "a1");
    assert!(
        matches!(&run[..], [ToAgent::Run { spec, .. }] if spec.task_id == "t1"),
        "{fx:?}"
    );
    assert_eq!(task_state(&c, "t1"), Some(TaskState::Staging));
    // The offer is used up; what the task did not take is offered again.
    c.handle(at(2), Event::Allocate);
    let again = offers(&drain(&mut c), &fw);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].resources.total().cpus(), 3.0);
    assert!(c.state().offers.iter().all(|x| x.id != o.id));
}

#[test]
fn an_actors_place_reaches_its_framework_ahead_only_from_its_agent_while_starting() {
    let (mut c, fw, o) = cluster(60.0);
    let mut actor = spec("t1", 1.0, 128);
    actor.actor = Some(Box::new(crate::protocol::ActorSpec {
        type_name: "worker".into(),
        msg_type: "W".into(),
        args: vec![],
        owner: "fw-node".into(),
    }));
    c.handle(
        at(1),
        accept(&fw, vec![o.id], vec![actor, spec("t2", 1.0, 128)]),
    );
    drain(&mut c);
    let place = crate::status::ActorAt {
        node: "x1.a1.example".into(),
        addr: "127.0.0.1:5000".parse().unwrap(),
        pid: 3,
    };
    let up = |agent: &str, task: &str| Event::ActorUp {
        agent_id: agent.into(),
        task_id: task.into(),
        at: place.clone(),
    };
    let told = |fx: &[Effect]| -> Vec<TaskId> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Scheduler {
                    framework_id,
                    msg: ToScheduler::ActorUp { task_id, .. },
                } if *framework_id == fw => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    };
    // Another agent's word, a command task, an unknown task: nothing is told.
    for ev in [up("a2", "t1"), up("a1", "t2"), up("a1", "nope")] {
        c.handle(at(2), ev);
        assert!(told(&drain(&mut c)).is_empty());
    }
    c.handle(at(2), up("a1", "t1"));
    assert_eq!(told(&drain(&mut c)), vec![TaskId::from("t1")]);
    // Once ended, it is not told again.
    c.handle(at(3), agent_update(&fw, "a1", "t1", TaskState::Failed, 9));
    drain(&mut c);
    c.handle(at(3), up("a1", "t1"));
    assert!(told(&drain(&mut c)).is_empty());
    assert_eq!(task_state(&c, "t1"), Some(TaskState::Failed));
}

#[test]
fn invalid_launches_end_task_error_with_the_reason() {
    let (mut c, fw, o) = cluster(60.0);
    let mut no_cmd = spec("nocmd", 1.0, 64);
    no_cmd.argv = vec![" ".into()];
    // A spec too large to be re-registered, whichever framework sends it.
    let mut long = spec("long", 1.0, 64);
    long.argv
        .push("x".repeat(crate::protocol::MAX_TASK_ARGV_BYTES));
    let cases = vec![
        (spec("", 1.0, 64), "empty task id"),
        (no_cmd, "empty command"),
        (long, "argv takes 65542 bytes; at most 65536"),
        (spec("zero", 0.0, 0), "a task needs some cpus or mem"),
        (spec("huge", 64.0, 64), "resources not in the offer"),
        (spec("ok", 1.0, 64), ""),
        (spec("ok", 1.0, 64), "task id \"ok\" is already used"),
    ];
    let (specs, wants): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    c.handle(at(1), accept(&fw, vec![o.id], specs));
    let ups = updates(&drain(&mut c));
    let errors: Vec<&str> = wants.iter().copied().filter(|w| !w.is_empty()).collect();
    assert_eq!(ups.len(), errors.len(), "{ups:?}");
    for (u, want) in ups.iter().zip(errors) {
        assert_eq!(u.state, TaskState::Error);
        assert_eq!(u.reason, Some(Reason::TaskInvalid));
        assert!(u.message.starts_with(want), "{:?} vs {want:?}", u.message);
    }
    assert_eq!(task_state(&c, "ok"), Some(TaskState::Staging));
    assert_eq!(task_state(&c, "zero"), Some(TaskState::Error));
}

#[test]
fn offers_that_are_unknown_or_not_ones_own_are_refused() {
    let (mut c, fw, o) = cluster(60.0);
    let other = c
        .subscribe(
            at(0),
            framework("other", "*", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    drain(&mut c);
    c.handle(
        at(1),
        accept(&other, vec![o.id.clone()], vec![spec("stolen", 1.0, 64)]),
    );
    let ups = updates(&drain(&mut c));
    assert_eq!(ups[0].state, TaskState::Error);
    assert!(ups[0].message.contains("belongs to another framework"));
    // The owner still has it.
    assert!(c.state().offers.iter().any(|x| x.id == o.id));
    c.handle(
        at(1),
        accept(&fw, vec!["offer-999".into()], vec![spec("late", 1.0, 64)]),
    );
    let ups = updates(&drain(&mut c));
    assert!(ups[0].message.contains("is not valid"), "{ups:?}");
}

#[test]
fn a_lost_agent_rescinds_its_offers_and_its_tasks_become_unreachable() {
    let (mut c, fw) = running(60.0);
    c.handle(at(1), Event::Allocate);
    let open = offers(&drain(&mut c), &fw);
    assert_eq!(open.len(), 1);
    c.handle(
        at(2),
        Event::AgentLost {
            agent_id: "a1".into(),
        },
    );
    let fx = drain(&mut c);
    assert!(fx.contains(&Effect::Scheduler {
        framework_id: fw.clone(),
        msg: ToScheduler::Rescind(open[0].id.clone()),
    }));
    let ups = updates(&fx);
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, TaskState::Unreachable);
    assert_eq!(ups[0].reason, Some(Reason::AgentDisconnected));
    assert_eq!(c.state().offers_outstanding, 0);
    assert_eq!(
        c.agent_status("a1"),
        Some(AgentLink::Unreachable {
            since: Duration::from_secs(2)
        })
    );
}

#[test]
fn a_reregistering_agent_brings_back_the_tasks_it_reports_and_the_others_are_gone() {
    let (mut c, fw, o) = cluster(60.0);
    c.handle(
        at(0),
        accept(
            &fw,
            vec![o.id],
            vec![spec("kept", 1.0, 64), spec("lost", 1.0, 64)],
        ),
    );
    c.handle(
        at(1),
        Event::AgentLost {
            agent_id: "a1".into(),
        },
    );
    drain(&mut c);
    let kept = reported("kept", &fw, 1.0, 64);
    c.handle(
        at(5),
        Event::AgentRegistered(registration("a1", 4.0, vec![kept])),
    );
    let fx = drain(&mut c);
    let ups = updates(&fx);
    let by_task = |id: &str| ups.iter().find(|u| u.task_id == id).unwrap().clone();
    assert_eq!(by_task("kept").state, TaskState::Running);
    assert_eq!(by_task("kept").reason, Some(Reason::AgentReregistered));
    assert_eq!(by_task("lost").state, TaskState::Gone);
    assert_eq!(agent_msgs(&fx, "a1"), vec![ToAgent::Registered]);
    // What `kept` holds is not offered again.
    c.handle(at(6), Event::Allocate);
    let o = offers(&drain(&mut c), &fw);
    assert_eq!(o[0].resources.total().cpus(), 3.0);
}

#[test]
fn an_unreachable_agent_is_removed_after_its_timeout_and_its_tasks_are_gone() {
    let (mut c, fw) = running(60.0);
    c.handle(
        at(10),
        Event::AgentLost {
            agent_id: "a1".into(),
        },
    );
    drain(&mut c);
    c.handle(at(69), Event::Tick);
    assert!(
        updates(&drain(&mut c)).is_empty(),
        "59 s of the 60 s timeout"
    );
    c.handle(at(70), Event::Tick);
    let ups = updates(&drain(&mut c));
    assert_eq!(ups.len(), 1);
    assert_eq!(
        (ups[0].state, ups[0].reason),
        (TaskState::Gone, Some(Reason::AgentRemoved))
    );
    assert!(c.agent_status("a1").is_none());
    // Coming back later with the task: the cluster gave up on it, so it is killed.
    let t1 = reported("t1", &fw, 1.0, 128);
    c.handle(
        at(80),
        Event::AgentRegistered(registration("a1", 4.0, vec![t1])),
    );
    let fx = drain(&mut c);
    assert_eq!(
        agent_msgs(&fx, "a1"),
        vec![
            ToAgent::Registered,
            ToAgent::Kill {
                task_id: "t1".into()
            }
        ]
    );
}

#[test]
fn a_disconnected_framework_is_removed_after_its_failover_timeout() {
    let (mut c, fw) = running(30.0);
    c.handle(
        at(100),
        Event::FrameworkDisconnected {
            framework_id: fw.clone(),
        },
    );
    assert_eq!(c.framework_connected(&fw), Some(false));
    c.handle(at(129), Event::Tick);
    assert!(agent_msgs(&drain(&mut c), "a1").is_empty());
    // Back within the timeout it keeps its tasks...
    let mut back = framework("jobs", "*", 30.0);
    back.id = Some(fw.clone());
    assert_eq!(
        c.subscribe(at(0), back.clone(), FrameworkAuthority::Kernel)
            .unwrap(),
        fw
    );
    assert_eq!(task_state(&c, "t1"), Some(TaskState::Running));
    // ...but a second disconnection past the timeout kills them and forgets it.
    c.handle(
        at(200),
        Event::FrameworkDisconnected {
            framework_id: fw.clone(),
        },
    );
    c.handle(at(230), Event::Tick);
    let fx = drain(&mut c);
    assert_eq!(
        agent_msgs(&fx, "a1"),
        vec![ToAgent::Kill {
            task_id: "t1".into()
        }]
    );
    assert_eq!(c.framework_connected(&fw), None);
    assert_eq!(
        c.subscribe(at(0), back, FrameworkAuthority::Kernel),
        Err(SubscribeError::UnknownFramework(fw))
    );
}

#[test]
fn kills_reach_the_agent_only_for_the_frameworks_own_live_tasks() {
    let (mut c, fw) = running(60.0);
    let other = c
        .subscribe(
            at(0),
            framework("other", "*", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    drain(&mut c);
    c.handle(
        at(1),
        call(
            &fw,
            FrameworkCall::Kill {
                task_id: "nope".into(),
            },
        ),
    );
    let fx = drain(&mut c);
    assert_eq!(
        fx,
        vec![Effect::Scheduler {
            framework_id: fw.clone(),
            msg: ToScheduler::Error("kill: unknown task \"nope\"".into())
        }]
    );
    c.handle(
        at(1),
        call(
            &other,
            FrameworkCall::Kill {
                task_id: "t1".into(),
            },
        ),
    );
    assert!(agent_msgs(&drain(&mut c), "a1").is_empty(), "not its task");
    c.handle(
        at(1),
        call(
            &fw,
            FrameworkCall::Kill {
                task_id: "t1".into(),
            },
        ),
    );
    assert_eq!(
        agent_msgs(&drain(&mut c), "a1"),
        vec![ToAgent::Kill {
            task_id: "t1".into()
        }]
    );
}

#[test]
fn a_terminal_update_frees_resources_and_updates_of_a_removed_framework_are_acknowledged_by_the_master(
) {
    let (mut c, fw) = running(60.0);
    c.handle(at(1), Event::Allocate);
    drain(&mut c);
    c.handle(at(1), agent_update(&fw, "a1", "t1", TaskState::Finished, 8));
    let fx = drain(&mut c);
    assert_eq!(updates(&fx)[0].state, TaskState::Finished);
    assert!(fx.iter().any(|e| matches!(e, Effect::AllocateAfter(_))));
    c.handle(
        at(1),
        call(
            &fw,
            FrameworkCall::Decline {
                offer_ids: c.state().offers.iter().map(|o| o.id.clone()).collect(),
                refuse_secs: 0.0,
            },
        ),
    );
    c.handle(at(2), Event::Allocate);
    assert_eq!(offers(&drain(&mut c), &fw)[0].resources.total().cpus(), 4.0);

    let (mut c, fw) = running(60.0);
    c.handle(at(1), call(&fw, FrameworkCall::Teardown));
    assert_eq!(
        agent_msgs(&drain(&mut c), "a1"),
        vec![ToAgent::Kill {
            task_id: "t1".into()
        }]
    );
    c.handle(at(2), agent_update(&fw, "a1", "t1", TaskState::Killed, 9));
    assert_eq!(
        agent_msgs(&drain(&mut c), "a1"),
        vec![ToAgent::Ack {
            task_id: "t1".into(),
            uuid: 9
        }]
    );
}

#[test]
fn a_late_update_cannot_move_an_ended_task() {
    let (mut c, fw) = running(60.0);
    c.handle(at(1), agent_update(&fw, "a1", "t1", TaskState::Failed, 8));
    c.handle(at(2), agent_update(&fw, "a1", "t1", TaskState::Running, 9));
    assert_eq!(task_state(&c, "t1"), Some(TaskState::Failed));
}

#[test]
fn reconciliation_reports_known_tasks_and_unknown_ones() {
    let (mut c, fw) = running(60.0);
    c.handle(
        at(1),
        call(
            &fw,
            FrameworkCall::Reconcile {
                task_ids: vec!["t1".into(), "x".into()],
            },
        ),
    );
    let ups = updates(&drain(&mut c));
    assert_eq!(ups[0].state, TaskState::Running);
    assert_eq!(ups[1].state, TaskState::Unknown);
    assert!(ups.iter().all(|u| u.reason == Some(Reason::Reconciliation)));
}

/// A master beginning to lead with `admitted` in the registry, and what it writes there.
fn leading_core(
    admitted: &[&str],
) -> (
    MasterCore,
    tokio::sync::mpsc::Receiver<crate::registry::RegistryOp>,
) {
    leading_core_with(admitted, &[])
}

/// As [`leading_core`], the registry holding `frameworks` too (with failover timeouts, s).
fn leading_core_with(
    admitted: &[&str],
    frameworks: &[(&str, u64)],
) -> (
    MasterCore,
    tokio::sync::mpsc::Receiver<crate::registry::RegistryOp>,
) {
    let (writes, written) = tokio::sync::mpsc::channel(16);
    let cfg = MasterConfig {
        agent_reregister_timeout: Duration::from_secs(10),
        registry: Some(super::RegistryLink {
            admitted: admitted.iter().map(|a| AgentId::from(*a)).collect(),
            frameworks: frameworks
                .iter()
                .map(|(f, secs)| (FrameworkId::from(*f), secs * 1000))
                .collect(),
            removed_frameworks: Vec::new(),
            writes,
        }),
        ..MasterConfig::default()
    };
    (MasterCore::new(cfg), written)
}

fn registry_writes(effects: &[Effect]) -> Vec<crate::registry::RegistryOp> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Registry(op) => Some(op.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_framework_of_the_registry_not_back_within_its_failover_timeout_loses_its_tasks() {
    use crate::registry::RegistryOp;
    let (mut c, _) = leading_core_with(&["a1"], &[("f-gone", 30), ("f-back", 30)]);
    let gone = FrameworkId::from("f-gone");
    let t1 = reported("t1", &gone, 1.0, 128);
    let t2 = reported("t2", "f-back", 1.0, 128);
    c.handle(
        at(1),
        Event::AgentRegistered(registration("a1", 4.0, vec![t1, t2])),
    );
    let back = c
        .subscribe(
            at(1),
            FrameworkInfo {
                id: Some("f-back".into()),
                ..framework("b", "*", 30.0)
            },
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    assert!(
        registry_writes(&drain(&mut c)).is_empty(),
        "both are in the registry as they are"
    );
    c.handle(at(29), Event::Tick);
    assert!(agent_msgs(&drain(&mut c), "a1").is_empty(), "29 s of 30");
    c.handle(at(30), Event::Tick);
    let fx = drain(&mut c);
    assert_eq!(
        agent_msgs(&fx, "a1"),
        vec![ToAgent::Kill {
            task_id: "t1".into()
        }],
        "only the task of the framework that did not come back"
    );
    assert_eq!(
        registry_writes(&fx),
        vec![RegistryOp::RemoveFramework {
            framework_id: gone.clone(),
            unix_ms: at(30).unix_ms
        }]
    );
    let again = c.subscribe(
        at(0),
        FrameworkInfo {
            id: Some(gone.clone()),
            ..framework("g", "*", 30.0)
        },
        FrameworkAuthority::Kernel,
    );
    assert_eq!(again, Err(SubscribeError::UnknownFramework(gone.clone())));
    // An agent back later with a task of it: killed at once.
    let t3 = reported("t3", &gone, 1.0, 128);
    c.handle(
        at(40),
        Event::AgentRegistered(registration("a2", 4.0, vec![t3])),
    );
    assert!(agent_msgs(&drain(&mut c), "a2").contains(&ToAgent::Kill {
        task_id: "t3".into()
    }));
    assert_eq!(task_state(&c, "t2"), Some(TaskState::Running));
    assert_eq!(back, FrameworkId::from("f-back"));
}

#[test]
fn a_leader_writes_a_framework_new_to_the_registry_and_its_removal() {
    use crate::registry::RegistryOp;
    let (mut c, _) = leading_core(&[]);
    let fw = c
        .subscribe(at(0), framework("f", "*", 2.5), FrameworkAuthority::Kernel)
        .unwrap();
    assert_eq!(
        registry_writes(&drain(&mut c)),
        vec![RegistryOp::AddFramework {
            framework_id: fw.clone(),
            failover_timeout_ms: 2_500
        }]
    );
    c.handle(at(1), call(&fw, FrameworkCall::Teardown));
    assert_eq!(
        registry_writes(&drain(&mut c)),
        vec![RegistryOp::RemoveFramework {
            framework_id: fw,
            unix_ms: at(1).unix_ms
        }]
    );
}

fn reconcile(fw: &FrameworkId, ids: &[&str]) -> Event {
    call(
        fw,
        FrameworkCall::Reconcile {
            task_ids: ids.iter().map(|i| TaskId::from(*i)).collect(),
        },
    )
}

#[test]
fn a_new_leader_answers_unknown_only_once_the_registrys_agents_are_back() {
    let (mut c, _) = leading_core(&["a1", "a2"]);
    let fw = c
        .subscribe(at(0), framework("f", "*", 60.0), FrameworkAuthority::Kernel)
        .unwrap();
    drain(&mut c);
    c.handle(at(1), reconcile(&fw, &["t1", "t2"]));
    assert!(
        updates(&drain(&mut c)).is_empty(),
        "a1 and a2 may have them"
    );
    let t1 = reported("t1", &fw, 1.0, 128);
    c.handle(
        at(2),
        Event::AgentRegistered(registration("a1", 4.0, vec![t1])),
    );
    drain(&mut c);
    c.handle(at(3), reconcile(&fw, &["t2"]));
    assert!(updates(&drain(&mut c)).is_empty(), "a2 may still have t2");
    c.handle(
        at(4),
        Event::AgentRegistered(registration("a2", 4.0, vec![])),
    );
    let ups = updates(&drain(&mut c));
    let got: Vec<(&str, TaskState)> = ups.iter().map(|u| (u.task_id.as_str(), u.state)).collect();
    assert_eq!(
        got,
        vec![
            ("t1", TaskState::Running),
            ("t2", TaskState::Unknown),
            ("t2", TaskState::Unknown)
        ]
    );
    c.handle(at(5), reconcile(&fw, &["t3"]));
    assert_eq!(updates(&drain(&mut c))[0].state, TaskState::Unknown);
}

#[test]
fn agents_of_the_registry_not_back_within_the_timeout_are_given_up_on() {
    let (mut c, _) = leading_core(&["a1"]);
    let fw = c
        .subscribe(at(0), framework("f", "*", 60.0), FrameworkAuthority::Kernel)
        .unwrap();
    drain(&mut c);
    c.handle(at(1), reconcile(&fw, &["t1"]));
    c.handle(at(9), Event::Tick);
    assert!(
        updates(&drain(&mut c)).is_empty(),
        "9 s of the 10 s timeout"
    );
    c.handle(at(10), Event::Tick);
    let ups = updates(&drain(&mut c));
    assert_eq!(ups.len(), 1);
    assert_eq!(
        (ups[0].state, ups[0].reason),
        (TaskState::Unknown, Some(Reason::Reconciliation))
    );
}

#[test]
fn a_leader_writes_agents_new_to_the_registry_and_their_removal() {
    use crate::registry::RegistryOp;
    let (mut c, _) = leading_core(&["a1"]);
    c.handle(
        at(0),
        Event::AgentRegistered(registration("a1", 4.0, vec![])),
    );
    c.handle(
        at(0),
        Event::AgentRegistered(registration("a2", 4.0, vec![])),
    );
    let writes: Vec<RegistryOp> = drain(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Registry(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes,
        vec![RegistryOp::AdmitAgent {
            agent_id: "a2".into(),
            hostname: "a2.example".into()
        }],
        "a1 is in the registry already"
    );
    c.handle(
        at(1),
        Event::AgentLost {
            agent_id: "a1".into(),
        },
    );
    c.handle(at(61), Event::Tick);
    let removed: Vec<Effect> = drain(&mut c)
        .into_iter()
        .filter(|e| matches!(e, Effect::Registry(_)))
        .collect();
    assert_eq!(
        removed,
        vec![Effect::Registry(RegistryOp::RemoveAgent {
            agent_id: "a1".into(),
            unix_ms: at(61).unix_ms
        })]
    );
}

#[test]
fn a_single_master_writes_no_registry_and_answers_unknown_at_once() {
    let (mut c, fw) = running(60.0);
    assert!(!drain(&mut c)
        .iter()
        .any(|e| matches!(e, Effect::Registry(_))));
    c.handle(at(1), reconcile(&fw, &["x"]));
    assert_eq!(updates(&drain(&mut c))[0].state, TaskState::Unknown);
}

#[test]
fn quota_caps_what_a_role_is_offered() {
    let mut cfg = MasterConfig::default();
    cfg.quotas.insert("capped".into(), res(1.0, 512));
    let mut c = MasterCore::new(cfg);
    c.handle(
        at(0),
        Event::AgentRegistered(registration("a1", 4.0, vec![])),
    );
    let fw = c
        .subscribe(
            at(0),
            framework("c", "capped", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    c.handle(at(0), Event::Allocate);
    let o = offers(&drain(&mut c), &fw);
    let total: Resources = o.iter().fold(Resources::default(), |mut s, o| {
        s.add(&o.resources.total());
        s
    });
    assert!(res(1.0, 512).contains(&total), "offered {total}");
}

#[test]
fn weights_split_agents_by_weighted_share() {
    let mut cfg = MasterConfig::default();
    cfg.weights.insert("heavy".into(), 3.0);
    let mut c = MasterCore::new(cfg);
    for i in 0..8 {
        c.handle(
            at(0),
            Event::AgentRegistered(registration(&format!("a{i}"), 1.0, vec![])),
        );
    }
    let heavy = c
        .subscribe(
            at(0),
            framework("h", "heavy", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    let light = c
        .subscribe(
            at(0),
            framework("l", "light", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    c.handle(at(0), Event::Allocate);
    let fx = drain(&mut c);
    assert_eq!(
        (offers(&fx, &heavy).len(), offers(&fx, &light).len()),
        (6, 2)
    );
}

#[test]
fn the_same_events_make_the_same_decisions() {
    let run = || {
        let (mut c, fw) = running(60.0);
        c.handle(at(1), Event::Allocate);
        c.handle(
            at(2),
            Event::AgentLost {
                agent_id: "a1".into(),
            },
        );
        c.handle(
            at(3),
            Event::AgentRegistered(registration("a1", 4.0, vec![])),
        );
        c.handle(at(4), Event::Allocate);
        c.handle(
            at(5),
            call(&fw, FrameworkCall::Reconcile { task_ids: vec![] }),
        );
        drain(&mut c)
    };
    assert_eq!(run(), run());
}

/// Any sequence of framework and agent events keeps the books: each framework's
/// allocation is its live tasks' resources plus its offers (checked inside `handle`
/// after every event in debug builds; here once more at the end). And the read model,
/// published now and then from the changes alone, shows exactly the core's tasks.
#[derive(Debug, Clone)]
enum Step {
    Register(u8),
    Lose(u8),
    Allocate,
    AcceptFirst { tasks: u8, cpus_tenths: u8 },
    DeclineAll,
    Finish(u8),
    Disconnect,
    Resubscribe,
    Tick(u16),
    Teardown,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3).prop_map(Step::Register),
        (0u8..3).prop_map(Step::Lose),
        Just(Step::Allocate),
        (0u8..4, 1u8..30).prop_map(|(tasks, cpus_tenths)| Step::AcceptFirst { tasks, cpus_tenths }),
        Just(Step::DeclineAll),
        (0u8..12).prop_map(Step::Finish),
        Just(Step::Disconnect),
        Just(Step::Resubscribe),
        (1u16..120).prop_map(Step::Tick),
        Just(Step::Teardown),
    ]
}

proptest! {
    #[test]
    fn the_books_balance_after_any_events(steps in proptest::collection::vec(step(), 1..80)) {
        let mut c = MasterCore::new(MasterConfig {
            agent_removal_timeout: Duration::from_secs(30),
            max_completed_tasks: 4,
            ..MasterConfig::default()
        });
        let reads = super::view::ReadModel::default();
        let mut publisher = super::view::Publisher::default();
        let mut fw = c.subscribe(at(0), framework("p", "*", 20.0), FrameworkAuthority::Kernel).unwrap();
        let mut t = 0u64;
        let mut next_task = 0u32;
        let mut open: Vec<Offer> = Vec::new();
        let mut launched: Vec<(TaskId, AgentId)> = Vec::new();
        for s in steps {
            t += 1;
            match s {
                Step::Register(a) => {
                    let agent = format!("a{a}");
                    let mine: Vec<AgentTask> = Vec::new();
                    c.handle(at(t), Event::AgentRegistered(registration(&agent, 2.0, mine)));
                }
                Step::Lose(a) => c.handle(at(t), Event::AgentLost { agent_id: format!("a{a}").into() }),
                Step::Allocate => c.handle(at(t), Event::Allocate),
                Step::AcceptFirst { tasks, cpus_tenths } => {
                    if let Some(o) = open.first().cloned() {
                        let specs: Vec<TaskSpec> = (0..tasks)
                            .map(|_| {
                                next_task += 1;
                                spec(&format!("t{next_task}"), f64::from(cpus_tenths) / 10.0, 16)
                            })
                            .collect();
                        for s in &specs {
                            launched.push((s.task_id.clone(), o.agent_id.clone()));
                        }
                        c.handle(at(t), call(&fw, FrameworkCall::Accept {
                            offer_ids: vec![o.id],
                            tasks: specs,
                            refuse_secs: 1.0 } ));
                    }
                }
                Step::DeclineAll => c.handle(at(t), call(&fw, FrameworkCall::Decline {
                    offer_ids: open.iter().map(|o| o.id.clone()).collect(),
                    refuse_secs: 5.0 } )),
                Step::Finish(i) => {
                    if let Some((task, agent)) = launched.get(usize::from(i)).cloned() {
                        c.handle(at(t), agent_update(&fw, &agent, &task, TaskState::Finished, u64::from(i) + 1));
                    }
                }
                Step::Disconnect => c.handle(at(t), Event::FrameworkDisconnected { framework_id: fw.clone() }),
                Step::Resubscribe => {
                    let mut info = framework("p", "*", 20.0);
                    info.id = Some(fw.clone());
                    if c.subscribe(at(0), info, FrameworkAuthority::Kernel).is_err() {
                        fw = c.subscribe(at(0), framework("p", "*", 20.0), FrameworkAuthority::Kernel).unwrap();
                    }
                }
                Step::Tick(secs) => {
                    t += u64::from(secs);
                    c.handle(at(t), Event::Tick);
                }
                Step::Teardown => c.handle(at(t), call(&fw, FrameworkCall::Teardown )),
            }
            for e in drain(&mut c) {
                if let Effect::Scheduler { msg: ToScheduler::Offers(o), .. } = e {
                    open.extend(o);
                }
            }
            let live: Vec<OfferId> = c.state().offers.iter().map(|o| o.id.clone()).collect();
            open.retain(|o| live.contains(&o.id));
            prop_assert_eq!(c.check_books(), Ok(()));
            if t.is_multiple_of(3) {
                publisher.publish(&mut c, Default::default(), &reads);
                let v = reads.current();
                let shown: Vec<_> = v.tasks.values().map(|t| (**t).clone()).collect();
                prop_assert_eq!(shown, c.state().tasks);
                prop_assert_eq!(&*v.agents, &c.state().agents);
            }
        }
    }
}

/// After a restart the master knows nothing; agents come back with their tasks, then the
/// frameworks with their ids.
#[test]
fn a_restarted_master_takes_tasks_from_agents_and_frameworks_back_under_their_ids() {
    let (_, fw) = running(60.0);
    let t1 = reported("t1", &fw, 1.0, 128);
    let t2 = reported("t2", &fw, 1.0, 128);
    let mut c = MasterCore::with_epoch(MasterConfig::default(), 1);
    c.handle(
        at(0),
        Event::AgentRegistered(registration("a1", 4.0, vec![t1, t2])),
    );
    // Another framework subscribes first: what the absent one's tasks hold is not offered.
    let other = c
        .subscribe(
            at(0),
            framework("other", "*", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    assert_ne!(other, fw, "ids do not repeat across a restart");
    c.handle(at(1), Event::Allocate);
    let o = offers(&drain(&mut c), &other);
    assert_eq!(o[0].resources.total().cpus(), 2.0);
    // A task ends before its framework is back: what it held is free again.
    c.handle(at(2), agent_update(&fw, "a1", "t2", TaskState::Finished, 3));
    // The framework comes back under its id, holding its running task.
    let mut back = framework("jobs", "*", 60.0);
    back.id = Some(fw.clone());
    assert_eq!(
        c.subscribe(at(0), back, FrameworkAuthority::Kernel),
        Ok(fw.clone())
    );
    assert_eq!(c.check_books(), Ok(()));
    let s = c.state();
    let share = s.frameworks.iter().find(|f| f.id == fw).unwrap().share;
    assert!(share > 0.0, "its task is charged to it");
    let later = c
        .subscribe(
            at(0),
            framework("later", "*", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    assert!(![fw.as_str(), other.as_str()].contains(&later.as_str()));
}

#[test]
fn a_removed_frameworks_running_tasks_keep_their_resources_until_they_end() {
    let (mut c, fw) = running(60.0);
    c.handle(at(1), call(&fw, FrameworkCall::Teardown));
    let next = c
        .subscribe(
            at(0),
            framework("next", "*", 60.0),
            FrameworkAuthority::Kernel,
        )
        .unwrap();
    c.handle(at(2), Event::Allocate);
    let o = offers(&drain(&mut c), &next);
    assert_eq!(
        o[0].resources.total().cpus(),
        3.0,
        "t1 is still being killed"
    );
    c.handle(at(3), agent_update(&fw, "a1", "t1", TaskState::Killed, 9));
    c.handle(
        at(3),
        call(
            &next,
            FrameworkCall::Decline {
                offer_ids: vec![o[0].id.clone()],
                refuse_secs: 0.0,
            },
        ),
    );
    c.handle(at(4), Event::Allocate);
    assert_eq!(
        offers(&drain(&mut c), &next)[0].resources.total().cpus(),
        4.0
    );
}

#[test]
fn a_kill_is_sent_again_when_the_agent_comes_back_until_the_task_ends() {
    let (mut c, fw) = running(60.0);
    let kill = || {
        call(
            &FrameworkId::from("fw-00000000-1"),
            FrameworkCall::Kill {
                task_id: "t1".into(),
            },
        )
    };
    assert_eq!(fw, "fw-00000000-1");
    c.handle(
        at(1),
        Event::AgentLost {
            agent_id: "a1".into(),
        },
    );
    drain(&mut c);
    // Asked while the agent is away: nothing can be sent now...
    c.handle(at(2), kill());
    assert!(agent_msgs(&drain(&mut c), "a1").is_empty());
    // ...and it is sent once the agent is back, still running the task.
    let back =
        || Event::AgentRegistered(registration("a1", 4.0, vec![reported("t1", &fw, 1.0, 128)]));
    // (And again if it was lost on the way: the agent re-registers still running it.)
    for t in [3, 4] {
        c.handle(at(t), back());
        let msgs = agent_msgs(&drain(&mut c), "a1");
        let kill = ToAgent::Kill {
            task_id: "t1".into(),
        };
        assert!(msgs.contains(&kill), "at {t} s: {msgs:?}");
    }
    // Once the task ended, never again.
    c.handle(at(5), agent_update(&fw, "a1", "t1", TaskState::Killed, 9));
    drain(&mut c);
    c.handle(
        at(6),
        Event::AgentRegistered(registration("a1", 4.0, vec![])),
    );
    let msgs = agent_msgs(&drain(&mut c), "a1");
    assert!(
        !msgs.iter().any(|m| matches!(m, ToAgent::Kill { .. })),
        "{msgs:?}"
    );
}

fn completed(id: &str, fw: &str, state: TaskState) -> CompletedTask {
    CompletedTask {
        spec: spec(id, 1.0, 128),
        framework_id: fw.into(),
        resources: RoleResources::unreserved(res(1.0, 128)),
        state,
        reason: None,
        message: format!("{id} ended"),
        exit_code: Some(0),
    }
}

#[test]
fn a_restarted_master_learns_completed_tasks_from_the_agents() {
    let mut c = MasterCore::with_epoch(MasterConfig::default(), 7);
    let mut reg = registration("a1", 4.0, vec![reported("live", "fw-old", 1.0, 128)]);
    reg.completed = vec![
        completed("done", "fw-old", TaskState::Finished),
        completed("failed", "fw-old", TaskState::Failed),
    ];
    c.handle(at(0), Event::AgentRegistered(reg));
    drain(&mut c);
    assert_eq!(task_state(&c, "live"), Some(TaskState::Running));
    assert_eq!(task_state(&c, "done"), Some(TaskState::Finished));
    assert_eq!(task_state(&c, "failed"), Some(TaskState::Failed));
    let s = c.state();
    let done = s.tasks.iter().find(|t| t.task_id == "done").unwrap();
    assert_eq!(
        (done.message.as_str(), done.agent_id.as_str()),
        ("done ended", "a1")
    );
    // What completed tasks held is free: only the live task's cpu is used.
    assert_eq!(s.used.cpus(), 1.0, "{s:?}");
    assert_eq!(c.check_books(), Ok(()));
}

#[test]
fn a_task_that_completed_while_its_agent_was_away_ends_as_it_did_not_gone() {
    let (mut c, fw) = running(60.0);
    c.handle(
        at(1),
        Event::AgentLost {
            agent_id: "a1".into(),
        },
    );
    drain(&mut c);
    let mut reg = registration("a1", 4.0, vec![]);
    reg.completed = vec![completed("t1", &fw, TaskState::Finished)];
    c.handle(at(2), Event::AgentRegistered(reg));
    let ups = updates(&drain(&mut c));
    assert_eq!(task_state(&c, "t1"), Some(TaskState::Finished));
    assert!(
        ups.iter()
            .any(|u| u.task_id == "t1" && u.state == TaskState::Finished),
        "{ups:?}"
    );
    assert_eq!(c.state().used.cpus(), 0.0);
    assert_eq!(c.check_books(), Ok(()));
}

#[test]
fn an_agent_that_takes_no_tasks_is_not_offered_until_it_can_again() {
    let (mut c, fw, o) = cluster(60.0);
    c.handle(
        at(1),
        Event::AgentHealth {
            agent_id: "a1".into(),
            problem: Some("cannot write its checkpoint: disk full".into()),
        },
    );
    let fx = drain(&mut c);
    assert!(
        fx.iter().any(
            |e| matches!(e, Effect::Scheduler { msg: ToScheduler::Rescind(id), .. } if *id == o.id)
        ),
        "its offer is withdrawn: {fx:?}"
    );
    c.handle(at(2), Event::Allocate);
    assert!(offers(&drain(&mut c), &fw).is_empty());
    let s = c.state();
    assert_eq!(
        s.agents[0].problem.as_deref(),
        Some("cannot write its checkpoint: disk full")
    );
    assert_eq!(c.check_books(), Ok(()));
    // A restarted master hears it at registration.
    let mut again = MasterCore::with_epoch(MasterConfig::default(), 9);
    let mut reg = registration("a1", 4.0, vec![]);
    reg.problem = Some("full".into());
    again.handle(at(0), Event::AgentRegistered(reg));
    assert_eq!(again.state().agents[0].problem.as_deref(), Some("full"));
    // Healthy again: offered again.
    c.handle(
        at(3),
        Event::AgentHealth {
            agent_id: "a1".into(),
            problem: None,
        },
    );
    c.handle(at(3), Event::Allocate);
    assert_eq!(offers(&drain(&mut c), &fw).len(), 1);
}

#[test]
fn a_framework_acts_on_its_authority_its_id_stays_with_it_and_root_needs_a_rule() {
    let mut c = MasterCore::new(MasterConfig::default());
    c.handle(
        at(0),
        Event::AgentRegistered(registration("a1", 4.0, vec![])),
    );
    let alice = FrameworkAuthority::Principal("alice".into());
    let fw = c
        .subscribe(at(0), framework("a", "*", 60.0), alice.clone())
        .unwrap();
    // Another principal cannot take its id over; the same one re-subscribes.
    let mut again = framework("a", "*", 60.0);
    again.id = Some(fw.clone());
    for other in [
        FrameworkAuthority::Principal("mallory".into()),
        FrameworkAuthority::Anonymous,
    ] {
        let e = c.subscribe(at(0), again.clone(), other).unwrap_err();
        assert!(matches!(e, SubscribeError::Forbidden(_)), "{e}");
    }
    assert_eq!(c.subscribe(at(0), again, alice), Ok(fw.clone()));
    drain(&mut c);
    c.handle(at(1), Event::Allocate);
    let o = offers(&drain(&mut c), &fw);
    // Without ACLs a task may ask for a user, but not for root.
    let mut root = spec("root", 1.0, 64);
    root.user = Some("root".into());
    let mut nobody = spec("nobody", 1.0, 64);
    nobody.user = Some("nobody".into());
    c.handle(
        at(2),
        accept(&fw, vec![o[0].id.clone()], vec![root, nobody]),
    );
    let ups = updates(&drain(&mut c));
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(
        (ups[0].task_id.as_str(), ups[0].reason),
        ("root", Some(Reason::TaskInvalid))
    );
    assert!(
        ups[0].message.contains("as user \"root\""),
        "{}",
        ups[0].message
    );
    assert_eq!(task_state(&c, "nobody"), Some(TaskState::Staging));
}

#[test]
fn roles_weights_and_quotas_change_at_runtime_over_the_settings() {
    let mut cfg = MasterConfig::default();
    cfg.weights.insert("prod".into(), 2.0);
    cfg.quotas.insert("batch".into(), Resources::new(1.0, 64));
    let shared = cfg.role_changes.clone();
    let mut c = MasterCore::new(cfg);
    let state = |c: &MasterCore| {
        c.role_states()
            .into_iter()
            .map(|r| (r.role, r.weight, r.quota.map(|q| q.cpus())))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        state(&c),
        [("batch".into(), 1.0, Some(1.0)), ("prod".into(), 2.0, None)]
    );
    shared.set("prod", Some(5.0), None).unwrap();
    shared.set("batch", None, Some(None)).unwrap();
    shared
        .set("dev", Some(0.5), Some(Some(Resources::new(2.0, 128))))
        .unwrap();
    assert!(shared.set("bad role!", Some(1.0), None).is_err());
    assert!(shared.set("prod", Some(f64::NAN), None).is_err());
    c.handle(at(1), Event::RolesChanged);
    assert_eq!(
        state(&c),
        [("dev".into(), 0.5, Some(2.0)), ("prod".into(), 5.0, None)],
        "the batch quota was cleared, over the settings"
    );
    // A restarted master actor starts from the same changes.
    let again = MasterCore::new(MasterConfig {
        weights: [("prod".to_string(), 2.0)].into(),
        role_changes: shared,
        ..MasterConfig::default()
    });
    assert_eq!(state(&again)[1], ("prod".into(), 5.0, None));
}

#[test]
fn a_framework_that_subscribes_again_gets_its_offers_anew() {
    let (mut c, fw, o) = cluster(60.0);
    // Its scheduler subscribes again while connected (a retry, or a new scheduler
    // process): what was offered before is not in its hands.
    c.subscribe(
        at(1),
        FrameworkInfo {
            id: Some(fw.clone()),
            ..framework("jobs", "*", 60.0)
        },
        FrameworkAuthority::Kernel,
    )
    .unwrap();
    let fx = drain(&mut c);
    let rescinded = fx.iter().position(
        |e| matches!(e, Effect::Scheduler { msg: ToScheduler::Rescind(id), .. } if *id == o.id),
    );
    let subscribed = fx.iter().position(|e| {
        matches!(
            e,
            Effect::Scheduler {
                msg: ToScheduler::Subscribed(_),
                ..
            }
        )
    });
    assert!(
        rescinded.is_some() && rescinded < subscribed,
        "the old offer is rescinded before the answer: {fx:?}"
    );
    assert_eq!(c.check_books(), Ok(()));
    c.handle(at(2), Event::Allocate);
    let again = offers(&drain(&mut c), &fw);
    assert_eq!(again.len(), 1, "the agent is offered again");
    assert_ne!(again[0].id, o.id);
    assert_eq!(again[0].resources.total().cpus(), 4.0);
}

#[test]
fn a_framework_the_registry_holds_as_removed_may_not_come_back_after_a_failover() {
    let (writes, _written) = tokio::sync::mpsc::channel(16);
    let cfg = MasterConfig {
        registry: Some(super::RegistryLink {
            admitted: [AgentId::from("a1")].into(),
            frameworks: std::collections::BTreeMap::new(),
            removed_frameworks: vec![FrameworkId::from("f-gone")],
            writes,
        }),
        ..MasterConfig::default()
    };
    let mut c = MasterCore::new(cfg);
    let again = c.subscribe(
        at(0),
        FrameworkInfo {
            id: Some("f-gone".into()),
            ..framework("g", "*", 30.0)
        },
        FrameworkAuthority::Kernel,
    );
    assert_eq!(
        again,
        Err(SubscribeError::UnknownFramework("f-gone".into()))
    );
    // Its task, brought back by its agent, is killed.
    let t1 = reported("t1", "f-gone", 1.0, 128);
    c.handle(
        at(1),
        Event::AgentRegistered(registration("a1", 4.0, vec![t1])),
    );
    assert!(agent_msgs(&drain(&mut c), "a1").contains(&ToAgent::Kill {
        task_id: "t1".into()
    }));
}
