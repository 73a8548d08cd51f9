//! Multi-process kernel tests: a `plexus master` and `plexus agent` processes on
//! 127.0.0.x, driven through the HTTP API the way an operator drives them, and (for
//! acknowledgements) by a framework running in this test process.

mod common;
use common::kcluster::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr};
use plexus_kernel::api::TaskView;
use plexus_kernel::protocol::{AgentId, FrameworkInfo, Offer, OfferId, TaskId, TaskSpec};
use plexus_kernel::reason::Reason;
use plexus_kernel::resources::Resources;
use plexus_kernel::scheduler::{DriverHandle, Scheduler, SchedulerDriver};
use plexus_kernel::status::StatusUpdate;
use plexus_kernel::task::TaskState;

#[test]
fn two_hundred_jobs_finish_across_three_agents_and_resources_return() {
    let c = KCluster::start("spread", 3);
    let api = c.client();
    let total = c.client().state().unwrap().total;
    assert_eq!(total.cpus_milli, 12_000);
    let ids: Vec<String> = (0..200)
        .map(|i| {
            api.submit(&job(
                vec!["/bin/sh".into(), "-c".into(), format!("echo job {i}")],
                0.1,
                32,
            ))
            .unwrap()
        })
        .collect();
    let tasks = c.wait_tasks("200 jobs finished", Duration::from_secs(180), |ts| {
        ids.iter().all(|id| {
            ts.iter()
                .any(|t| &t.task_id == id && t.state == "TASK_FINISHED")
        })
    });
    let agents: std::collections::BTreeSet<&str> =
        tasks.iter().filter_map(|t| t.agent_id.as_deref()).collect();
    assert_eq!(agents.len(), 3, "the jobs ran on every agent: {agents:?}");
    // Every agent's resources are free again, and nothing is held by tasks or offers.
    let s = c.wait_state("resources returned", Duration::from_secs(30), |s| {
        s.used.cpus_milli == 0 && s.used.mem_mb == 0 && s.agents.iter().all(|a| a.free == a.total)
    });
    assert_eq!(s.total, total);
    // A job's output is in its sandbox, readable through the API.
    let (out, _) = api.logs(&ids[7], "stdout", 0).unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "job 7\n");
    // And the returned resources are offered again: new work is placed.
    let again = api
        .submit(&job(vec!["/bin/true".into()], 4.0, 4096))
        .unwrap();
    c.wait_tasks(
        "a whole-agent job after the 200",
        Duration::from_secs(60),
        |ts| {
            ts.iter()
                .any(|t| t.task_id == again && t.state == "TASK_FINISHED")
        },
    );
}

#[test]
fn a_task_over_its_memory_limit_fails_with_the_memory_reason() {
    let c = KCluster::start("oom", 1);
    let isolation = c.client().agents().unwrap()[0].isolation.clone();
    if !isolation.contains("cgroup") {
        eprintln!(
            "SKIPPED: the agent runs without cgroups here ({isolation}), so no memory limit \
             can be enforced by the kernel's OOM killer"
        );
        return;
    }
    let api = c.client();
    let hog = api
        .submit(&job(
            vec![
                "python3".into(),
                "-c".into(),
                "a = bytearray(400 * 1024 * 1024); import time; time.sleep(30)".into(),
            ],
            0.5,
            64,
        ))
        .unwrap();
    let ts = c.wait_tasks("the memory hog to fail", Duration::from_secs(60), |ts| {
        ts.iter()
            .any(|t| t.task_id == hog && t.state == "TASK_FAILED")
    });
    let t = ts.iter().find(|t| t.task_id == hog).unwrap();
    assert_eq!(t.reason, Some(Reason::ContainerLimitationMemory), "{t:#?}");
}

#[test]
fn kill_9_of_an_agent_makes_its_tasks_unreachable_and_a_restart_readopts_them() {
    let mut c = KCluster::start("kill", 3);
    let api = c.client();
    let ids: Vec<(String, Vec<String>)> = (0..9)
        .map(|i| {
            let argv = sleeper(i);
            (api.submit(&job(argv.clone(), 0.1, 16)).unwrap(), argv)
        })
        .collect();
    let tasks = c.wait_tasks("9 tasks running", Duration::from_secs(60), |ts| {
        ids.iter().all(|(id, _)| {
            ts.iter()
                .any(|t| &t.task_id == id && t.state == "TASK_RUNNING")
        })
    });
    // The agent with the most tasks (at least 3 of 9) is the victim.
    let mut per_agent: std::collections::BTreeMap<AgentId, Vec<TaskId>> = Default::default();
    for t in &tasks {
        per_agent
            .entry(t.agent_id.clone().unwrap())
            .or_default()
            .push(t.task_id.clone());
    }
    let (victim, victim_tasks) = per_agent.into_iter().max_by_key(|(_, v)| v.len()).unwrap();
    let argv_of = |id: &str| ids.iter().find(|(i, _)| i == id).unwrap().1.clone();

    c.agent(&victim).kill9();
    let killed_at = Instant::now();
    c.wait_tasks(
        "the victim's tasks unreachable",
        Duration::from_secs(30),
        |ts| {
            victim_tasks.iter().all(|id| {
                ts.iter()
                    .any(|t| &t.task_id == id && t.state == "TASK_UNREACHABLE")
            })
        },
    );
    let detected = killed_at.elapsed();
    // Detection is `node_down_timeout` after the last heartbeat; allow as much again for
    // a loaded machine and the API polling.
    eprintln!("tasks unreachable {detected:?} after kill -9");
    assert!(
        detected <= Duration::from_millis(2 * DOWN_MS),
        "tasks unreachable after {detected:?} (detection time {DOWN_MS} ms)"
    );
    // The framework was told, and the processes kept running without their agent.
    let ts = api.tasks().unwrap();
    for id in &victim_tasks {
        let t = ts.iter().find(|t| &t.task_id == id).unwrap();
        assert!(
            t.history.iter().any(|e| e.state == TaskState::Unreachable),
            "the jobs framework saw TASK_UNREACHABLE: {t:#?}"
        );
        assert_eq!(running(&argv_of(id)), 1, "{id} still runs");
    }
    // One task dies while its agent is away: the restarted agent must report it.
    let dead = victim_tasks[0].clone();
    let st = Command::new("pkill")
        .args(["-9", "-f", &exactly(&argv_of(&dead))])
        .status()
        .unwrap();
    assert!(st.success());

    c.agent(&victim).spawn();
    let ts = c.wait_tasks("the victim's tasks back", Duration::from_secs(60), |ts| {
        victim_tasks.iter().all(|id| {
            ts.iter().any(|t| {
                &t.task_id == id
                    && if *id == dead {
                        t.state == "TASK_FAILED"
                    } else {
                        t.state == "TASK_RUNNING"
                            && t.history.iter().any(|e| e.state == TaskState::Unreachable)
                    }
            })
        })
    });
    assert_eq!(ts.len(), ids.len(), "no task was launched again: {ts:#?}");
    for (id, argv) in &ids {
        let t = ts.iter().find(|t| &t.task_id == id).unwrap();
        if *id == dead {
            assert_eq!(running(argv), 0);
            continue;
        }
        assert_eq!(t.state, "TASK_RUNNING", "{t:#?}");
        assert_eq!(running(argv), 1, "{id} runs exactly once");
    }
    // Re-adopted tasks are still the agent's to kill.
    let readopted = victim_tasks[1].clone();
    api.kill(&readopted).unwrap();
    c.wait_tasks(
        "the re-adopted task killed",
        Duration::from_secs(30),
        |ts| {
            ts.iter()
                .any(|t| t.task_id == readopted && t.state == "TASK_KILLED")
        },
    );
    assert_eq!(running(&argv_of(&readopted)), 0);
}

/// What the explicit-acknowledgement framework saw.
#[derive(Default)]
struct Seen {
    handle: Option<DriverHandle>,
    launched: bool,
    auto_ack: bool,
    updates: Vec<(Instant, StatusUpdate)>,
}

/// Launches one task on its first offer and acknowledges only when told to.
struct Manual {
    seen: Arc<Mutex<Seen>>,
    argv: Vec<String>,
}

impl Scheduler for Manual {
    fn registered(&mut self, driver: &DriverHandle, _: &str) {
        self.seen.lock().unwrap().handle = Some(driver.clone());
    }
    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        let mut seen = self.seen.lock().unwrap();
        let mut ids: Vec<OfferId> = offers.into_iter().map(|o| o.id).collect();
        if !seen.launched && !ids.is_empty() {
            seen.launched = true;
            let first = ids.remove(0);
            driver
                .launch(
                    vec![first],
                    vec![TaskSpec {
                        task_id: "acked".into(),
                        name: "acked".into(),
                        argv: self.argv.clone(),
                        resources: Resources::new(0.1, 16),
                        user: None,
                        actor: None,
                    }],
                    Duration::from_secs(3600),
                )
                .unwrap();
        }
        if !ids.is_empty() {
            driver.decline(ids, Duration::from_secs(3600));
        }
    }
    fn update(&mut self, driver: &DriverHandle, u: &StatusUpdate) {
        let mut seen = self.seen.lock().unwrap();
        seen.updates.push((Instant::now(), u.clone()));
        if seen.auto_ack && u.uuid != 0 {
            driver.acknowledge(u);
        }
    }
}

impl Seen {
    /// Copies of agent update `uuid` received after `after`.
    fn copies(&self, uuid: u64, after: Instant) -> usize {
        self.updates
            .iter()
            .filter(|(t, u)| u.uuid == uuid && *t > after)
            .count()
    }
}

async fn wait_seen(what: &str, seen: &Mutex<Seen>, f: impl Fn(&Seen) -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if f(&seen.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = seen.lock().unwrap();
    let u: Vec<_> = s.updates.iter().map(|(_, u)| u).collect();
    panic!("timed out waiting for {what}; updates seen: {u:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_updates_are_resent_survive_an_agent_restart_and_stop_when_acked() {
    let mut c = KCluster::start("ack", 1);
    let s = NodeSettings {
        name: "ack-fw".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![PeerAddr {
            name: MASTER.into(),
            addr: c.master_addr,
        }],
        tls: certs(c.dir.path(), "ack-fw"),
        heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
        node_down_timeout: Duration::from_millis(DOWN_MS),
        state_dir: c.dir.path().join("ack-fw"),
        ..NodeSettings::default()
    };
    let node = Node::start(&s).await.unwrap();
    node.wait_for_peers(&[MASTER], Duration::from_secs(30))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let argv = sleeper(900);
    let info = FrameworkInfo {
        id: None,
        name: "manual".into(),
        principal: None,
        role: "*".into(),
        failover_timeout_secs: 60.0,
    };
    let t0 = Instant::now();
    let sched = Manual {
        seen: seen.clone(),
        argv: argv.clone(),
    };
    SchedulerDriver::start_with(&node, info, Box::new(sched), false, Duration::from_secs(30))
        .await
        .unwrap();

    // Not acknowledged: the same update keeps coming, with growing gaps.
    wait_seen("three copies of the first update", &seen, |s| {
        s.updates
            .iter()
            .find(|(_, u)| u.uuid != 0)
            .is_some_and(|(_, first)| s.copies(first.uuid, t0) >= 3)
    })
    .await;
    let first = {
        let s = seen.lock().unwrap();
        let first = s
            .updates
            .iter()
            .find(|(_, u)| u.uuid != 0)
            .unwrap()
            .1
            .clone();
        assert_eq!(first.state, TaskState::Running);
        let times: Vec<Instant> = s
            .updates
            .iter()
            .filter(|(_, u)| u.uuid == first.uuid)
            .map(|(t, _)| *t)
            .collect();
        assert!(
            times[2] - times[1] > times[1] - times[0],
            "resends back off: {times:?}"
        );
        assert!(
            s.updates.iter().all(|(_, u)| u.uuid == 0 || u == &first),
            "every copy is the same update"
        );
        first
    };
    assert_eq!(running(&argv), 1);

    // The agent dies and comes back before the acknowledgement: the update is not lost.
    c.agents[0].kill9();
    c.agents[0].spawn();
    let restarted = Instant::now();
    wait_seen("the update again from the restarted agent", &seen, |s| {
        s.copies(first.uuid, restarted) >= 1
    })
    .await;
    assert_eq!(running(&argv), 1, "the task was re-adopted, not run again");

    // Acknowledge it (and everything after): resends stop, and the next updates flow.
    let acked_at = {
        let mut s = seen.lock().unwrap();
        s.auto_ack = true;
        s.handle.as_ref().unwrap().acknowledge(&first);
        s.handle.as_ref().unwrap().kill("acked");
        Instant::now()
    };
    wait_seen("the kill's updates", &seen, |s| {
        s.updates
            .iter()
            .any(|(_, u)| u.uuid != 0 && u.state == TaskState::Killed)
    })
    .await;
    // No event marks the absence of a resend; watch for well over the 1 s first backoff.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = seen.lock().unwrap();
    assert_eq!(
        s.copies(first.uuid, acked_at + Duration::from_millis(500)),
        0,
        "an acknowledged update is not resent"
    );
    let later: Vec<&StatusUpdate> = s
        .updates
        .iter()
        .filter(|(t, u)| *t > acked_at && u.uuid != 0 && u.uuid != first.uuid)
        .map(|(_, u)| u)
        .collect();
    let states: Vec<TaskState> = later.iter().map(|u| u.state).collect();
    assert_eq!(
        states,
        vec![TaskState::Killing, TaskState::Killed],
        "each later update once, in order (acknowledged at once)"
    );
    assert_eq!(running(&argv), 0);
}

#[test]
fn malformed_api_requests_get_clear_errors_and_the_master_stays_up() {
    let c = KCluster::start("api", 1);
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: &str, body: &str| {
        let mut r = http
            .post(&format!("{}{path}", c.api))
            .header("content-type", "application/json")
            .header("Authorization", c.bearer())
            .send(body)
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        (r.status().as_u16(), text)
    };
    let cases = [
        ("{not json", "bad request body"),
        (r#"{"argv": ["true"], "cpu": 1}"#, "unknown field `cpu`"),
        (
            r#"{"argv": ["true"], "cpus": -1}"#,
            "cpus must be a number from 0.01",
        ),
        (r#"{"argv": []}"#, "the command must not be empty"),
        (r#"{"argv": ["true"], "mem": "lots"}"#, "bad request body"),
        (
            r#"{"argv": ["true"], "role": "prod"}"#,
            "role \"prod\" is not served",
        ),
        (r#"{"argv": ["true"], "cpus": 0, "mem": 0}"#, "cpus must be"),
        (r#"{"argv": ["true"], "mem": 0}"#, "mem must be from 4"),
    ];
    for (body, want) in cases {
        let (status, text) = post("/api/v1/jobs", body);
        assert_eq!(status, 400, "{body} -> {status} {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(want), "{body} -> {err:?}, wanted {want:?}");
    }
    let (status, text) = post("/api/v1/tasks/nope/kill", "");
    assert_eq!(status, 404, "{text}");
    let mut r = http
        .get(&format!("{}/api/v1/tasks/nope", c.api))
        .header("Authorization", c.bearer())
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.body_mut().read_to_string().unwrap().contains("nope"));
    let r = http
        .get(&format!("{}/api/v1/tasks/x/logs?offset=minus", c.api))
        .header("Authorization", c.bearer())
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Nothing was accepted, and the master still serves.
    let api = c.client();
    assert!(api.tasks().unwrap().is_empty());
    let ok = api.submit(&job(vec!["/bin/true".into()], 0.1, 16)).unwrap();
    c.wait_tasks(
        "a good job after the bad ones",
        Duration::from_secs(60),
        |ts| {
            ts.iter()
                .any(|t| t.task_id == ok && t.state == "TASK_FINISHED")
        },
    );
    // The metrics come from the master's published view, which follows within 100 ms.
    c.wait_state("the view counts the task", Duration::from_secs(10), |s| {
        s.tasks_by_state.get("TASK_FINISHED") == Some(&1)
    });
    let mut m = http
        .get(&format!("{}/metrics", c.api))
        .header("Authorization", c.bearer())
        .call()
        .unwrap();
    let metrics = m.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains("plexus_tasks{state=\"TASK_FINISHED\"} 1"),
        "{metrics}"
    );
    // Lists take only what they know, and name what they do not.
    for (query, want) in [
        ("state=RUNNING", "state \"RUNNING\" is not a task state"),
        ("limit=0", "limit must be from 1 to 1000, not 0"),
        ("limit=5000", "limit must be from 1 to 1000, not 5000"),
        ("colour=red", "unknown field `colour`"),
        ("active=maybe", "bad query"),
    ] {
        let mut r = http
            .get(&format!("{}/api/v1/tasks?{query}", c.api))
            .header("Authorization", c.bearer())
            .call()
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        assert_eq!(r.status().as_u16(), 400, "{query} -> {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(want), "{query} -> {err:?}, wanted {want:?}");
    }
}

/// The task of `id` in `ts`, if listed.
fn find<'a>(ts: &'a [TaskView], id: &str) -> Option<&'a TaskView> {
    ts.iter().find(|t| t.task_id == id)
}

#[test]
fn kill_9_of_the_master_loses_no_task_and_every_job_stays_killable() {
    let mut c = KCluster::start("mrestart", 3);
    let api = c.client();
    let long: Vec<(String, Vec<String>)> = (0..6)
        .map(|i| {
            let argv = sleeper(i);
            (api.submit(&job(argv.clone(), 0.1, 16)).unwrap(), argv)
        })
        .collect();
    let short: Vec<String> = (0..6)
        .map(|_| api.submit(&job(vec!["true".into()], 0.1, 16)).unwrap())
        .collect();
    let is =
        |ts: &[TaskView], id: &str, state: &str| find(ts, id).is_some_and(|t| t.state == state);
    c.wait_tasks(
        "long ones running, short ones finished",
        Duration::from_secs(60),
        |ts| {
            long.iter().all(|(id, _)| is(ts, id, "TASK_RUNNING"))
                && short.iter().all(|id| is(ts, id, "TASK_FINISHED"))
        },
    );
    let framework = api.state().unwrap().frameworks[0].id.clone();

    c.master.kill9();
    // One task ends while there is no master.
    let (gone, gone_argv) = long[0].clone();
    let st = Command::new("pkill")
        .args(["-9", "-f", &exactly(&gone_argv)])
        .status()
        .unwrap();
    assert!(st.success());
    c.master.spawn();

    let ts = c.wait_tasks("every task known again", Duration::from_secs(60), |ts| {
        long[1..].iter().all(|(id, _)| is(ts, id, "TASK_RUNNING"))
            && is(ts, &gone, "TASK_FAILED")
            && short.iter().all(|id| is(ts, id, "TASK_FINISHED"))
    });
    assert_eq!(
        ts.len(),
        long.len() + short.len(),
        "nothing lost, nothing added: {ts:#?}"
    );
    // The jobs keep their history from before the restart.
    for id in &short {
        let t = find(&ts, id).unwrap();
        assert!(
            t.history.iter().any(|e| e.state == TaskState::Running),
            "{t:#?}"
        );
    }
    // The jobs framework is back under its id, which no other framework got.
    let s = api.state().unwrap();
    assert_eq!(s.frameworks.len(), 1, "{:#?}", s.frameworks);
    assert_eq!(s.frameworks[0].id, framework);
    // A task re-reported by its agent is still its job's to kill.
    let (victim, victim_argv) = long[1].clone();
    api.kill(&victim).unwrap();
    c.wait_tasks(
        "the re-reported task killed",
        Duration::from_secs(30),
        |ts| is(ts, &victim, "TASK_KILLED"),
    );
    assert_eq!(running(&victim_argv), 0);
    for (id, argv) in &long[2..] {
        assert_eq!(running(argv), 1, "{id} runs exactly once");
    }
    // Every update was acknowledged: no agent keeps resending one the master cannot place.
    let log = std::fs::read_to_string(&c.master.log).unwrap();
    let unknown = log.matches("update for an unknown task").count();
    assert!(
        unknown <= 3,
        "{unknown} updates for unknown tasks:\n{}",
        c.logs()
    );
}

/// Waits (at most 30 s) until no process runs `argv`: on each one's end, through a
/// pidfd, which becomes readable when the process exits.
fn wait_stopped(c: &KCluster, argv: &[String]) {
    for pid in pids_of(argv) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            continue; // already gone
        }
        let mut p = libc::pollfd {
            fd: fd as i32,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, then the fd this function opened is closed.
        let ready = unsafe {
            let n = libc::poll(&mut p, 1, 30_000);
            libc::close(fd as i32);
            n
        };
        assert_eq!(ready, 1, "{argv:?} (pid {pid}) still runs\n{}", c.logs());
    }
    assert_eq!(running(argv), 0, "{argv:?} started again\n{}", c.logs());
}

#[test]
fn a_kill_sent_while_the_agent_is_paused_is_carried_out_whatever_the_pause() {
    // Node-down after 1 s, agent removal 3 s after that.
    let mut c = KCluster::start_with("pause", 1, "3s");
    let api = c.client();
    let agent = c.agents[0].name.clone();
    // Paused only while the kill is asked for (shorter than the node-down timeout);
    // until the master finds the agent unreachable; until it gives the agent's tasks up.
    for (i, pause) in ["short", "unreachable", "removed"].into_iter().enumerate() {
        let argv = sleeper(20 + i);
        let id = api.submit(&job(argv.clone(), 0.1, 16)).unwrap();
        c.wait_tasks("the task running", Duration::from_secs(60), |ts| {
            find(ts, &id).is_some_and(|t| t.state == "TASK_RUNNING")
        });
        c.agent(&agent).signal("STOP");
        api.kill(&id).unwrap();
        match pause {
            "unreachable" => {
                c.wait_state("the agent unreachable", Duration::from_secs(60), |s| {
                    s.agents
                        .iter()
                        .any(|a| a.status != plexus_kernel::protocol::AgentStatus::Active)
                });
            }
            "removed" => {
                c.wait_tasks("the task given up", Duration::from_secs(60), |ts| {
                    find(ts, &id).is_some_and(|t| t.state == "TASK_GONE")
                });
            }
            _ => {}
        }
        c.agent(&agent).signal("CONT");
        let ts = c.wait_tasks("the task ended", Duration::from_secs(60), |ts| {
            find(ts, &id).is_some_and(|t| t.state == "TASK_KILLED" || t.state == "TASK_GONE")
        });
        eprintln!("pause {pause}: {}", find(&ts, &id).unwrap().state);
        wait_stopped(&c, &argv);
        c.wait_state("the agent back", Duration::from_secs(60), |s| {
            s.agents
                .iter()
                .all(|a| a.status == plexus_kernel::protocol::AgentStatus::Active)
        });
    }
}

#[test]
fn a_kill_survives_a_master_restart_while_the_agent_is_paused() {
    let mut c = KCluster::start("pausemaster", 1);
    let api = c.client();
    let agent = c.agents[0].name.clone();
    let argv = sleeper(30);
    let id = api.submit(&job(argv.clone(), 0.1, 16)).unwrap();
    c.wait_tasks("the task running", Duration::from_secs(60), |ts| {
        find(ts, &id).is_some_and(|t| t.state == "TASK_RUNNING")
    });
    c.agent(&agent).signal("STOP");
    api.kill(&id).unwrap();
    c.master.kill9();
    c.master.spawn();
    c.agent(&agent).signal("CONT");
    c.wait_tasks("the task killed", Duration::from_secs(60), |ts| {
        find(ts, &id).is_some_and(|t| t.state == "TASK_KILLED")
    });
    wait_stopped(&c, &argv);
}

/// The resident memory of process `pid`, in MB.
fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// Reads every page of `path` once; returns the pages read. Only `next` is parsed: the
/// rest of a page is skipped, so that the readers' own work stays small beside the
/// master's.
fn read_all_pages(api: &str, bearer: &str, path: &str) -> usize {
    #[derive(serde::Deserialize)]
    struct Next {
        next: Option<String>,
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let url = format!("{api}{path}?limit=1000{after}");
        let mut r = agent
            .get(&url)
            .header("Authorization", bearer)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        pages += 1;
        match serde_json::from_slice::<Next>(&body).unwrap().next {
            Some(n) => after = format!("&after={n}"),
            None => return pages,
        }
    }
}

#[test]
fn readers_cannot_starve_the_master_agents_stay_reachable_and_memory_stays_bounded() {
    let c = KCluster::start("readers", 3);
    let api = c.client();
    // 150 tasks carrying 60 KiB of command each: 9 MB of task data, which every full
    // read of the task list copied on the master's loop before reads were published.
    let pad = "x".repeat(60_000);
    let mut ids = Vec::new();
    for i in 0..150 {
        let argv = vec![
            "sh".into(),
            "-c".into(),
            format!("exec sleep 300.{}{i:03}", std::process::id()),
            pad.clone(),
        ];
        ids.push(api.submit(&job(argv, 0.05, 8)).unwrap());
    }
    c.wait_tasks("150 tasks running", Duration::from_secs(120), |ts| {
        ts.iter().filter(|t| t.state == "TASK_RUNNING").count() == 150
    });
    // A traversal page by page lists every task once.
    let listed = api.tasks().unwrap();
    let unique: std::collections::BTreeSet<&str> =
        listed.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!((listed.len(), unique.len()), (150, 150));
    let master_pid = c.master.child.as_ref().unwrap().id();
    let bearer = c.bearer();
    let rss_before = rss_mb(master_pid);
    // 32 readers at once, each reading the whole task list three times and the agents,
    // the summary and the metrics as often.
    let pages: usize = std::thread::scope(|s| {
        let readers: Vec<_> = (0..32)
            .map(|_| {
                s.spawn(|| {
                    let mut pages = 0;
                    for _ in 0..3 {
                        pages += read_all_pages(&c.api, &bearer, "/api/v1/tasks");
                        pages += read_all_pages(&c.api, &bearer, "/api/v1/agents");
                        let client = c.client();
                        client.state().unwrap();
                    }
                    pages
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).sum()
    });
    let rss_after = rss_mb(master_pid);
    eprintln!("{pages} pages read; master RSS {rss_before} MB before, {rss_after} MB after");
    // Every page stayed within its budget: the task list took several.
    assert!(pages >= 32 * 3 * 9, "{pages} pages");
    // No agent was ever declared unreachable: the master's failure detection kept pace.
    let log = std::fs::read_to_string(&c.master.log).unwrap();
    assert_eq!(log.matches("agent unreachable").count(), 0, "{}", c.logs());
    let ts = api.tasks().unwrap();
    for id in &ids {
        let t = find(&ts, id).unwrap();
        assert_eq!(t.state, "TASK_RUNNING", "{t:#?}");
        assert!(
            t.history.iter().all(|e| e.state != TaskState::Unreachable),
            "{id} was unreachable: {:?}",
            t.history
        );
    }
    let s = api.state().unwrap();
    assert!(s
        .agents
        .iter()
        .all(|a| a.status == plexus_kernel::protocol::AgentStatus::Active));
    // What readers ask for is bounded by their pages, not by the cluster's size.
    assert!(
        rss_after < rss_before + 512,
        "the master grew from {rss_before} MB to {rss_after} MB"
    );
}

#[test]
fn an_agent_whose_tasks_outgrow_a_message_re_registers_in_parts_and_keeps_them() {
    // Frames of 1 MiB, and 40 tasks of 60 KiB of command each on one agent: its
    // re-registration takes 2.4 MB, more than twice what one message may carry.
    let mut c = KCluster::start_full("parts", 1, "60s", "max_frame_bytes = 1048576\n", &|_| {});
    let api = c.client();
    let pad = "x".repeat(60_000);
    let argvs: Vec<Vec<String>> = (0..40)
        .map(|i| {
            vec![
                "sh".into(),
                "-c".into(),
                format!("exec {}", sleeper(i).join(" ")),
                pad.clone(),
            ]
        })
        .collect();
    let ids: Vec<String> = argvs
        .iter()
        .map(|a| api.submit(&job(a.clone(), 0.05, 8)).unwrap())
        .collect();
    c.wait_tasks("40 tasks running", Duration::from_secs(120), |ts| {
        ts.iter().filter(|t| t.state == "TASK_RUNNING").count() == 40
    });
    let agent = c.agents[0].name.clone();
    c.agent(&agent).kill9();
    c.wait_tasks("the tasks unreachable", Duration::from_secs(30), |ts| {
        ts.iter().filter(|t| t.state == "TASK_UNREACHABLE").count() == 40
    });
    c.agent(&agent).spawn();
    let ts = c.wait_tasks("the tasks back", Duration::from_secs(60), |ts| {
        ids.iter().all(|id| {
            find(ts, id).is_some_and(|t| {
                t.state == "TASK_RUNNING"
                    && t.history.iter().any(|e| e.state == TaskState::Unreachable)
            })
        })
    });
    assert_eq!(ts.len(), 40, "no task was launched again");
    // The shell execs the sleep: that is the process to find.
    let process = |i: usize| sleeper(i);
    for i in 0..40 {
        assert_eq!(
            running(&process(i)),
            1,
            "{:?} runs exactly once",
            process(i)
        );
    }
    // Nothing was refused for its size on the way.
    let logs = std::fs::read_to_string(&c.master.log).unwrap()
        + &std::fs::read_to_string(&c.agents[0].log).unwrap();
    assert!(!logs.contains("at most"), "{}", c.logs());
    // And its tasks are still its to kill.
    api.kill(&ids[0]).unwrap();
    c.wait_tasks("the first task killed", Duration::from_secs(30), |ts| {
        find(ts, &ids[0]).is_some_and(|t| t.state == "TASK_KILLED")
    });
    assert_eq!(running(&process(0)), 0);
}

/// A tmpfs mounted at a directory until dropped (a small disk to fill).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs at {} (needs root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let st = Command::new("umount").arg("-l").arg(&self.0).status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

/// The largest file under `dir`.
fn largest_file(dir: &Path) -> Option<(PathBuf, u64)> {
    let mut best: Option<(PathBuf, u64)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let m = e.metadata().unwrap();
        let found = if m.is_dir() {
            largest_file(&e.path())
        } else {
            Some((e.path(), m.len()))
        };
        if let Some((p, n)) = found {
            if best.as_ref().is_none_or(|b| n > b.1) {
                best = Some((p, n));
            }
        }
    }
    best
}

#[test]
fn a_full_state_disk_holds_updates_until_they_are_durable_and_reports_only_what_happened() {
    // The agent's state directory (checkpoint and sandboxes) is a 2 MiB tmpfs, and no
    // free space is kept back from tasks' output, so a task can fill it.
    let mounted = std::cell::RefCell::new(Vec::new());
    let c = KCluster::start_opts(
        "fulldisk",
        1,
        "60s",
        "",
        "",
        "disk_floor_mb = 0\n",
        &|dir| mounted.borrow_mut().push(Tmpfs::mount(dir, "2m")),
    );
    let state_dir = mounted.borrow()[0].0.clone();
    let api = c.client();
    // A task fills the disk with its output, then exits 0: that is what is reported
    // (its end is recorded in room taken before it started).
    let filler = api
        .submit(&job(
            vec![
                "sh".into(),
                "-c".into(),
                "head -c 8000000 /dev/zero; exit 0".into(),
            ],
            0.1,
            16,
        ))
        .unwrap();
    let ts = c.wait_tasks("the filler ended", Duration::from_secs(60), |ts| {
        find(ts, &filler).is_some_and(|t| terminal_name(&t.state))
    });
    let t = find(&ts, &filler).unwrap();
    assert_eq!(
        (t.state.as_str(), t.exit_code),
        ("TASK_FINISHED", Some(0)),
        "{t:#?}"
    );
    // A task whose record does not fit on the full disk: the agent cannot checkpoint
    // it, so it starts nothing, says why, and is offered nothing more.
    let marker = format!("300.{}999", std::process::id());
    let big = api
        .submit(&job(
            vec![
                "sh".into(),
                "-c".into(),
                format!("exec sleep {marker}"),
                "x".repeat(60_000),
            ],
            0.1,
            16,
        ))
        .unwrap();
    let s = c.wait_state("the agent's problem", Duration::from_secs(60), |s| {
        s.agents[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("cannot write its checkpoint"))
    });
    eprintln!("problem: {:?}", s.agents[0].problem);
    let waiting = api.submit(&job(vec!["true".into()], 0.1, 16)).unwrap();
    assert_eq!(api.task(&waiting).unwrap().state, "PENDING");
    let t = api.task(&big).unwrap();
    assert_eq!(t.state, "TASK_STAGING", "{t:#?}");
    let sleeper_argv = vec!["sleep".to_string(), marker];
    assert_eq!(running(&sleeper_argv), 0, "started before it was recorded");
    // Space again: the filler's output is cut away. The agent writes its checkpoint,
    // starts the task, and takes tasks again.
    let (out, size) = largest_file(&state_dir).unwrap();
    assert!(size > 1 << 20, "{} is {size} bytes", out.display());
    std::fs::File::options()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(0)
        .unwrap();
    let ts = c.wait_tasks("the tasks placed", Duration::from_secs(60), |ts| {
        find(ts, &big).is_some_and(|t| t.state == "TASK_RUNNING")
            && find(ts, &waiting).is_some_and(|t| t.state == "TASK_FINISHED")
    });
    assert_eq!(running(&sleeper_argv), 1);
    let t = find(&ts, &filler).unwrap();
    assert!(
        t.history.iter().all(|e| e.state != TaskState::Failed),
        "{t:#?}"
    );
    assert_eq!(api.state().unwrap().agents[0].problem, None);
    api.kill(&big).unwrap();
    c.wait_tasks("the big task killed", Duration::from_secs(30), |ts| {
        find(ts, &big).is_some_and(|t| t.state == "TASK_KILLED")
    });
    drop(c);
}

/// Whether an API state name is an ended task's.
fn terminal_name(state: &str) -> bool {
    TaskState::ALL
        .iter()
        .any(|s| s.is_terminal() && s.mesos_name() == state)
}
