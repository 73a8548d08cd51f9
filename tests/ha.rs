//! Three `plexus master` processes and three agents on 127.0.0.x: one master leads, the
//! others send API clients to it; when the leader is killed or paused another takes over,
//! the agents re-register with their tasks (nothing restarts, nothing runs twice), the
//! jobs framework runs on the new leader with every job accepted before, and new jobs are
//! accepted; a master that comes back follows.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::kcluster::{job, node_toml, pids_of, sleeper, Proc};
use common::{free_tcp, free_udp};
use plexus::client::{leadership_status, single_leader, Client};
use plexus_kernel::api::{ClusterSummary, SubmitJob, TaskView};
use plexus_kernel::protocol::AgentStatus;

const MASTERS: usize = 3;
const AGENTS: usize = 3;

struct Ha {
    dir: tempfile::TempDir,
    masters: Vec<Proc>,
    apis: Vec<String>,
    agents: Vec<Proc>,
    token: String,
}

impl Ha {
    fn start(tag: &str) -> Ha {
        Ha::start_with(tag, "")
    }

    /// Starts the cluster, each master's `[master]` section given `master_toml` too.
    fn start_with(tag: &str, master_toml: &str) -> Ha {
        let dir = tempfile::tempdir().unwrap();
        plexus_net::tls::init_ca(dir.path(), "plexus").unwrap();
        let token = format!("test-token-{:016}", std::process::id());
        let token_file = dir.path().join("test.token");
        std::fs::write(&token_file, &token).unwrap();
        let names: Vec<String> = (1..=MASTERS).map(|i| format!("master{i}-{tag}")).collect();
        let addrs: Vec<SocketAddr> = names
            .iter()
            .map(|_| {
                format!("127.0.0.1:{}", free_udp("127.0.0.1"))
                    .parse()
                    .unwrap()
            })
            .collect();
        let peers: Vec<String> = names
            .iter()
            .zip(&addrs)
            .map(|(n, a)| format!("\"{n}@{a}\""))
            .collect();
        let mut masters = Vec::new();
        let mut apis = Vec::new();
        for (name, addr) in names.iter().zip(&addrs) {
            let api = format!("127.0.0.1:{}", free_tcp("127.0.0.1"));
            let cfg = format!(
                "{}[master]\napi_listen = \"{api}\"\nallocation_interval = \"200ms\"\n\
                 {master_toml}peers = [{}]\n\
                 [[master.principals]]\nname = \"test\"\ntoken_file = \"{}\"\n",
                node_toml(dir.path(), name, plexus_net::Role::Master, *addr, ""),
                peers.join(", "),
                token_file.display()
            );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, cfg).unwrap();
            let mut p = Proc {
                name: name.clone(),
                args: vec![
                    "master".into(),
                    "--config".into(),
                    path.display().to_string(),
                ],
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            p.spawn();
            masters.push(p);
            apis.push(format!("http://{api}"));
        }
        let all: Vec<String> = names
            .iter()
            .zip(&addrs)
            .map(|(n, a)| format!("{n}@{a}"))
            .collect();
        let mut agents = Vec::new();
        for i in 1..=AGENTS {
            let name = format!("{tag}-a{i}");
            let ip = format!("127.0.0.{}", i + 1);
            let listen: SocketAddr = format!("{ip}:{}", free_udp(&ip)).parse().unwrap();
            let cfg = format!(
                "{}[agent]\nresources = \"cpus:4;mem:4096;disk:10000\"\nkill_grace = \"1s\"\n",
                node_toml(dir.path(), &name, plexus_net::Role::Agent, listen, "")
            );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, cfg).unwrap();
            let mut p = Proc {
                name: name.clone(),
                args: vec![
                    "agent".into(),
                    "--master".into(),
                    all.join(","),
                    "--config".into(),
                    path.display().to_string(),
                ],
                log: dir.path().join(format!("{name}.log")),
                child: None,
            };
            p.spawn();
            agents.push(p);
        }
        let ha = Ha {
            dir,
            masters,
            apis,
            agents,
            token,
        };
        ha.wait_state(0, "a leader with every agent", |s| active(s) == AGENTS);
        ha
    }

    /// A client of master `i`'s API (it follows the redirects of a standby).
    fn client(&self, i: usize) -> Client {
        Client::with_token(&self.apis[i], Some(self.token.clone()))
    }

    /// How master `i` answers a read (see [`leadership_status`]).
    fn status(&self, i: usize) -> Option<u16> {
        leadership_status(&self.apis[i], Some(&self.token), Duration::from_secs(5))
    }

    /// The master that leads: the one that answers the API itself, every other live one
    /// sending its clients away.
    fn leader(&self, alive: &[usize]) -> usize {
        self.eventually("a single leader", || {
            let statuses: Vec<Option<u16>> = alive.iter().map(|i| self.status(*i)).collect();
            single_leader(&statuses)
                .map(|k| alive[k])
                .ok_or_else(|| format!("{:?}", alive.iter().zip(&statuses).collect::<Vec<_>>()))
        })
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for p in self.masters.iter().chain(&self.agents) {
            out += &format!("--- {} ---\n{}\n", p.name, p.log_tail());
        }
        out
    }

    /// What `look` finds, once it finds it: the processes give no signal but their API,
    /// so it is asked again, soon at first and then less often (up to every 200 ms),
    /// for at most a minute; past that the test fails with the last answer and the logs.
    fn eventually<T>(&self, what: &str, mut look: impl FnMut() -> Result<T, String>) -> T {
        let end = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(5);
        loop {
            match look() {
                Ok(v) => return v,
                Err(last) if Instant::now() >= end => {
                    panic!(
                        "timed out waiting for {what}; last: {last}\n{}",
                        self.logs()
                    )
                }
                Err(_) => {}
            }
            std::thread::park_timeout(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Asks master `via`'s API until `f` holds.
    fn wait_state(
        &self,
        via: usize,
        what: &str,
        f: impl Fn(&ClusterSummary) -> bool,
    ) -> ClusterSummary {
        let c = self.client(via);
        self.eventually(what, || match c.state() {
            Ok(s) if f(&s) => Ok(s),
            Ok(s) => Err(format!("{s:#?}")),
            Err(e) => Err(format!("{e:#}")),
        })
    }

    /// Submits `j` through master `i`; its task id. A submission the master dropped
    /// because it stopped leading meanwhile (a lease lost under load) is sent again, as
    /// the answer says to; any other refusal fails the test, with the masters' logs.
    fn submit(&self, i: usize, j: &SubmitJob) -> String {
        self.eventually("the job accepted", || match self.client(i).submit(j) {
            Ok(id) => Ok(id),
            Err(e) if format!("{e:#}").contains("dropped before it was written") => {
                Err(format!("{e:#}"))
            }
            Err(e) => panic!("submitting {:?}: {e:#}\n{}", j.argv, self.logs()),
        })
    }

    /// `PUT /api/v1/roles/{role}` with `body` on master `i`; its status and answer.
    fn put_role(&self, i: usize, role: &str, body: &str) -> (u16, String) {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = http
            .put(&format!("{}/api/v1/roles/{role}", self.apis[i]))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn wait_tasks(&self, via: usize, what: &str, f: impl Fn(&[TaskView]) -> bool) {
        let c = self.client(via);
        self.eventually(what, || match c.tasks() {
            Ok(t) if f(&t) => Ok(()),
            Ok(t) => Err(format!("{t:#?}")),
            Err(e) => Err(format!("{e:#}")),
        })
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        for p in self.masters.iter_mut().chain(self.agents.iter_mut()) {
            if p.child.is_some() {
                // A paused process cannot die of SIGKILL until it runs again.
                p.signal("CONT");
            }
            p.kill9();
        }
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-f", &format!("^sleep 300\\.{}", std::process::id())])
            .status();
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-f", &self.dir.path().display().to_string()])
            .status();
    }
}

fn active(s: &ClusterSummary) -> usize {
    s.agents
        .iter()
        .filter(|a| a.status == AgentStatus::Active)
        .count()
}

/// Whether job `id` is listed, waiting for placement.
fn pending(tasks: &[TaskView], id: &str) -> bool {
    tasks
        .iter()
        .any(|t| t.task_id == id && t.state == "PENDING" && t.owner.as_deref() == Some("test"))
}

fn in_state(tasks: &[TaskView], ids: &[String], state: &str) -> bool {
    ids.iter()
        .all(|id| tasks.iter().any(|t| &t.task_id == id && t.state == state))
}

fn running(tasks: &[TaskView], ids: &[String]) -> bool {
    ids.iter().all(|id| {
        tasks
            .iter()
            .any(|t| &t.task_id == id && t.state == "TASK_RUNNING")
    })
}

#[test]
fn killing_the_leader_elects_another_that_keeps_every_task_and_takes_new_jobs() {
    let mut ha = Ha::start("hk");
    let all: Vec<usize> = (0..MASTERS).collect();
    let first = ha.leader(&all);
    // A role's weight and quota, set on the leader, are the registry's.
    let (status, body) = ha.put_role(first, "batch", r#"{"weight": 3, "quota": "cpus:1"}"#);
    assert_eq!(status, 202, "{body}");
    let batch = |s: &ClusterSummary| {
        s.roles.iter().any(|r| {
            r.role == "batch" && r.weight == 3.0 && r.quota.as_ref().map(|q| q.cpus()) == Some(1.0)
        })
    };
    ha.wait_state(first, "the role's weight and quota in force", batch);
    // Submitted through a standby: the client follows it to the leader.
    let standby = (first + 1) % MASTERS;
    let argv: Vec<Vec<String>> = (0..2).map(sleeper).collect();
    let ids: Vec<String> = argv
        .iter()
        .map(|a| ha.submit(standby, &job(a.clone(), 0.1, 32)))
        .collect();
    ha.wait_tasks(standby, "the tasks run", |t| running(t, &ids));
    let pids: Vec<Vec<i32>> = ha.eventually("the tasks' processes", || {
        let pids: Vec<Vec<i32>> = argv.iter().map(|a| pids_of(a)).collect();
        let started = pids.iter().all(|p| p.len() == 1);
        started.then_some(pids.clone()).ok_or(format!("{pids:?}"))
    });
    // Two jobs as big as an agent: one takes the agent that has no task, the other
    // is accepted and waits.
    let big = ha.submit(first, &job(sleeper(8), 0.1, 4096));
    let waiting = ha.submit(first, &job(sleeper(9), 0.1, 4096));
    ha.wait_tasks(first, "one big job runs, the other waits", |t| {
        running(t, std::slice::from_ref(&big)) && pending(t, &waiting)
    });

    ha.masters[first].kill9();
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != first).collect();
    let second = ha.leader(&rest);
    assert_ne!(second, first);
    ha.wait_state(second, "every agent re-registered", |s| active(s) == AGENTS);
    ha.wait_state(second, "the role's weight and quota, kept", batch);
    ha.wait_tasks(second, "the same tasks run", |t| running(t, &ids));
    // Nothing restarted, nothing runs twice.
    let after: Vec<Vec<i32>> = argv.iter().map(|a| pids_of(a)).collect();
    assert_eq!(after, pids);
    // The jobs framework runs on the new leader with every job the old one accepted:
    // the running ones its own still, the waiting one still waiting.
    ha.wait_tasks(
        second,
        "the jobs, known to the new leader's jobs framework",
        |t| {
            pending(t, &waiting)
                && ids.iter().all(|id| {
                    t.iter()
                        .any(|v| &v.task_id == id && v.owner.as_deref() == Some("test"))
                })
        },
    );

    let new = sleeper(2);
    let id = ha.submit(rest[0], &job(new.clone(), 0.1, 32));
    ha.wait_tasks(second, "a new job runs", |t| {
        running(t, std::slice::from_ref(&id))
    });
    assert_eq!(pids_of(&new).len(), 1);

    // The killed master comes back and follows: it sends clients to the leader.
    ha.masters[first].spawn();
    assert_eq!(ha.leader(&all), second);
    ha.wait_tasks(first, "the tasks, through the returning master", |t| {
        running(t, &ids)
    });
}

#[test]
fn a_paused_leader_steps_down_and_nothing_runs_twice() {
    let ha = Ha::start("hp");
    let all: Vec<usize> = (0..MASTERS).collect();
    let first = ha.leader(&all);
    let argv = sleeper(0);
    let id = ha.submit(first, &job(argv.clone(), 0.1, 32));
    ha.wait_tasks(first, "the task runs", |t| {
        running(t, std::slice::from_ref(&id))
    });
    // Running as the kernel says, its process seen once it has started the command.
    let pid = ha.eventually("the task's process", || {
        let p = pids_of(&argv);
        (p.len() == 1).then_some(p.clone()).ok_or(format!("{p:?}"))
    });

    // Paused for longer than the election timeout: another master leads meanwhile.
    ha.masters[first].signal("STOP");
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != first).collect();
    let second = ha.leader(&rest);
    ha.wait_state(second, "every agent re-registered", |s| active(s) == AGENTS);
    let argv2 = sleeper(1);
    let id2 = ha.submit(second, &job(argv2.clone(), 0.1, 32));
    ha.wait_tasks(second, "a new job runs", |t| {
        running(t, &[id.clone(), id2.clone()])
    });

    // It wakes, finds a newer term and follows.
    ha.masters[first].signal("CONT");
    assert_eq!(ha.leader(&all), second);
    ha.wait_tasks(second, "both tasks still run", |t| {
        running(t, &[id.clone(), id2.clone()])
    });
    assert_eq!(pids_of(&argv), pid, "the first task never restarted");
    assert_eq!(pids_of(&argv2).len(), 1, "the second runs once");
}

#[test]
fn a_master_back_after_the_log_was_compacted_catches_up_by_snapshot_and_can_lead() {
    let mut ha = Ha::start_with("hs", "registry_snapshot_every = 8\n");
    let all: Vec<usize> = (0..MASTERS).collect();
    let first = ha.leader(&all);
    let (behind, other) = ((first + 1) % MASTERS, (first + 2) % MASTERS);
    ha.masters[behind].kill9();
    // Every job, run to its end one after the other, is a handful of registry writes:
    // the log is compacted well past where the killed master stopped.
    let mut done: Vec<String> = Vec::new();
    for _ in 0..6 {
        let id = ha.submit(first, &job(vec!["true".into()], 0.1, 32));
        done.push(id);
        ha.wait_tasks(first, "the job finishes", |t| {
            in_state(t, &done, "TASK_FINISHED")
        });
    }
    let installed = ha.masters[behind].log_lines(&["registry snapshot installed"]);
    ha.masters[behind].spawn();
    ha.eventually(
        "the returning master installs the leader's snapshot",
        || {
            let now = ha.masters[behind].log_lines(&["registry snapshot installed"]);
            (now > installed).then_some(()).ok_or(now.to_string())
        },
    );
    // With the other follower gone, a job is written by the leader and the returning
    // master alone; then the leader goes and the other follower comes back. Only the
    // returning master's log holds that job, so it is the one elected.
    ha.masters[other].kill9();
    let last = sleeper(0);
    let last_id = ha.submit(first, &job(last.clone(), 0.1, 32));
    ha.wait_tasks(first, "the last job runs", |t| {
        running(t, std::slice::from_ref(&last_id))
    });
    ha.masters[first].kill9();
    ha.masters[other].spawn();
    assert_eq!(ha.leader(&[behind, other]), behind);
    ha.wait_state(behind, "every agent re-registered", |s| active(s) == AGENTS);
    ha.wait_tasks(behind, "every job, from the snapshot and after it", |t| {
        in_state(t, &done, "TASK_FINISHED") && running(t, std::slice::from_ref(&last_id))
    });
    assert_eq!(pids_of(&last).len(), 1, "the last job runs once");
}
