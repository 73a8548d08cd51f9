//! Multi-process tests of what an authenticated peer may do: `plexus master` and
//! `plexus agent` processes on 127.0.0.x, and a rogue in this test process holding a
//! valid certificate from the cluster's CA, speaking the node protocol by hand.

mod common;
#[path = "../kernel/tests/common/mod.rs"]
mod events;
use common::kcluster::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus::client::Client;
use plexus_actors::__private::Wire;
use plexus_actors::Node;
use plexus_config::NodeSettings;
use plexus_kernel::api::SubmitJob;
use plexus_kernel::protocol::{FrameworkInfo, Offer, TaskSpec};
use plexus_kernel::reason::Reason;
use plexus_kernel::resources::Resources;
use plexus_kernel::scheduler::{DriverHandle, Scheduler, SchedulerDriver};
use plexus_kernel::status::StatusUpdate;
use plexus_kernel::task::TaskState;
use plexus_net::tls::{self, TlsMaterial};
use plexus_net::{PeerAddr, QuicTransport, Role, Transport};

/// What the rogue received from each node it dialed.
type Seen = Arc<Mutex<Vec<(String, Wire)>>>;

/// A rogue node: a valid certificate with `role`, links to the nodes it dialed, a
/// heartbeat on each so they stay up, and `claims` (names) re-sent at every beat.
struct Rogue {
    seen: Seen,
    /// One message per round of claims sent on a link.
    rounds: std::sync::mpsc::Receiver<()>,
    links: usize,
    _rt: tokio::runtime::Runtime,
}

/// A QUIC transport for `name` with a certificate from the cluster's CA carrying
/// `role` (call inside a runtime).
fn rogue_transport(c: &KCluster, name: &str, role: Role) -> Arc<QuicTransport> {
    let (cert, key) = tls::issue(c.dir.path(), c.dir.path(), name, role).unwrap();
    let m = TlsMaterial::load(&c.dir.path().join("ca.pem"), &cert, &key).unwrap();
    common::raw_transport(name, &m)
}

impl Rogue {
    fn start(c: &KCluster, name: &str, role: Role, targets: &[PeerAddr], claims: &[&str]) -> Rogue {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen: Seen = Arc::default();
        let claims: Vec<String> = claims.iter().map(|s| s.to_string()).collect();
        let (round, rounds) = std::sync::mpsc::channel();
        rt.block_on(async {
            let t = rogue_transport(c, name, role);
            for target in targets {
                let link = t.dial(target.clone()).await.unwrap();
                tokio::spawn(drive(link, seen.clone(), claims.clone(), round.clone()));
            }
            // Nodes dial back (the cluster meshes): the rogue speaks on those links too.
            let (t2, seen2, claims2) = (t.clone(), seen.clone(), claims.clone());
            tokio::spawn(async move {
                while let Some(link) = t2.accept().await {
                    tokio::spawn(drive(link, seen2.clone(), claims2.clone(), round.clone()));
                }
            });
            // The transport lives as long as the runtime.
            std::mem::forget(t);
        });
        Rogue {
            seen,
            rounds,
            links: targets.len(),
            _rt: rt,
        }
    }

    /// Waits until the rogue has sent `n` more rounds of claims on each link it dialed.
    fn wait_rounds(&self, n: usize) {
        while self.rounds.try_recv().is_ok() {}
        for _ in 0..n * self.links {
            self.rounds
                .recv_timeout(Duration::from_secs(10))
                .expect("the rogue keeps claiming");
        }
    }

    /// Messages and calls the nodes sent to the rogue's actors.
    fn traffic(&self) -> Vec<(String, Wire)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w)| {
                matches!(
                    w,
                    Wire::Cast { .. } | Wire::Call { .. } | Wire::Spawn { .. }
                )
            })
            .cloned()
            .collect()
    }
}

/// Keeps a rogue's link up with heartbeats, re-sends its claims at every beat, and
/// records what the node sends.
async fn drive(
    mut link: plexus_net::Link,
    seen: Seen,
    claims: Vec<String>,
    round: std::sync::mpsc::Sender<()>,
) {
    let peer = link.peer.name.clone();
    let mut beat = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            f = link.rx.next() => match f {
                Ok(Some(f)) => match plexus_net::codec::decode::<Wire>(&f) {
                    Ok(w) => seen.lock().unwrap().push((peer.clone(), w)),
                    Err(e) => eprintln!("rogue: undecodable frame from {peer}: {e}"),
                },
                other => {
                    eprintln!("rogue: link to {peer} ended: {other:?}");
                    return;
                }
            },
            _ = beat.tick() => {
                let mut frames = vec![Wire::Heartbeat];
                frames.extend(claims.iter().map(|n| Wire::Register {
                    name: n.clone(),
                    pid: 1,
                    msg_type: "plexus_kernel::protocol::MasterMsg".into(),
                    rank: u64::MAX,
                }));
                for w in frames {
                    if let Err(e) = link.tx.send(&w) {
                        eprintln!("rogue: cannot send to {peer}: {e}");
                        return;
                    }
                }
                if round.send(()).is_err() {
                    return;
                }
            }
        }
    }
}

fn peer(name: &str, addr: SocketAddr) -> PeerAddr {
    PeerAddr {
        name: name.into(),
        addr,
    }
}

#[test]
fn a_rogue_with_a_valid_certificate_cannot_take_the_masters_or_an_agents_name_even_while_the_master_is_paused(
) {
    let c = KCluster::start("rogue", 2);
    let id = c.client().submit(&job(sleeper(1), 0.1, 32)).unwrap();
    c.wait_tasks("the task runs", Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.task_id == id && t.state == "TASK_RUNNING")
    });
    let mut targets = vec![peer(MASTER, c.master_addr)];
    for (a, addr) in c.agents.iter().zip(&c.agent_addrs) {
        targets.push(peer(&a.name, *addr));
    }
    // "aaa" sorts before every node: with lowest-name-wins its claims would win. One
    // rogue holds an agent certificate, one a client certificate.
    let claims = ["plexus.master", "plexus.agent:rogue-a2"];
    let agent_rogue = Rogue::start(&c, "aaa", Role::Agent, &targets, &claims);
    let client_rogue = Rogue::start(&c, "aab", Role::Client, &targets, &claims);

    // The master stops answering until every agent has declared it down: they drop its
    // names and look for a master again while the rogues keep claiming them.
    let master_down = ["peer down", "peer=master"];
    let before: Vec<usize> = c.agents.iter().map(|a| a.log_lines(&master_down)).collect();
    c.master.signal("STOP");
    for (a, seen) in c.agents.iter().zip(before) {
        a.wait_log_lines(&master_down, seen, Duration::from_secs(30));
    }
    // A few more rounds of claims against agents without a master.
    for r in [&agent_rogue, &client_rogue] {
        r.wait_rounds(3);
    }
    c.master.signal("CONT");

    c.wait_state(
        "both agents back with the real master",
        Duration::from_secs(30),
        |s| {
            s.agents
                .iter()
                .filter(|a| a.status == plexus_kernel::protocol::AgentStatus::Active)
                .count()
                == 2
        },
    );
    // The master also lost the agents while paused; they re-register with the task.
    c.wait_tasks("the task running again", Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.task_id == id && t.state == "TASK_RUNNING")
    });
    assert_eq!(running(&sleeper(1)), 1);
    for r in [&agent_rogue, &client_rogue] {
        let traffic = r.traffic();
        assert!(
            traffic.is_empty(),
            "a node sent the rogue {traffic:?}\n{}",
            c.logs()
        );
    }
    assert!(c.metric("plexus_wire_refusals_total{op=\"register\"}") >= 4.0);
    for p in std::iter::once(&c.master).chain(&c.agents) {
        let log = std::fs::read_to_string(&p.log).unwrap();
        assert!(
            log.contains("refused") && log.contains("plexus.master"),
            "{}: {log}",
            p.name
        );
    }
}

#[test]
fn a_stop_frame_from_a_peer_is_refused_logged_and_counted_and_the_master_keeps_working() {
    let c = KCluster::start("stopframe", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let replied = rt.block_on(async {
        let t = rogue_transport(&c, "mallory", Role::Client);
        let mut link = t.dial(peer(MASTER, c.master_addr)).await.unwrap();
        // Every actor id from the counter's start: the master, its supervisor, the API.
        for pid in 0..2_000 {
            link.tx
                .send(&Wire::Stop {
                    pid,
                    reason: Some("taken over".into()),
                })
                .unwrap();
        }
        link.tx
            .send(&Wire::Call {
                to: u64::MAX,
                id: 1,
                body: vec![],
            })
            .unwrap();
        loop {
            match link.rx.next_decoded::<Wire>().await {
                Ok(Some(Wire::Reply { id: 1, body })) => return body,
                Ok(Some(_)) => continue,
                other => panic!("the master closed the link: {other:?}"),
            }
        }
    });
    assert!(replied.is_err());
    // The master still decides: a job submitted now runs to completion.
    let id = c
        .client()
        .submit(&job(vec!["true".into()], 0.1, 32))
        .unwrap();
    c.wait_tasks("the job finishes", Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.task_id == id && t.state == "TASK_FINISHED")
    });
    let (status, health) = c.get("/health");
    assert_eq!((status, health.trim()), (200, "ok"));
    assert_eq!(c.metric("plexus_wire_refusals_total{op=\"stop\"}"), 2_000.0);
    let log = std::fs::read_to_string(&c.master.log).unwrap();
    assert!(
        log.contains("refused") && log.contains("mallory") && log.contains("op=\"stop\"")
            || log.contains("op=stop"),
        "{log}"
    );
}

/// Status, `WWW-Authenticate` and body of a request to the API.
fn request(
    c: &KCluster,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, Option<String>, String) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", c.api);
    let mut r = match method {
        "GET" => {
            let mut b = http.get(&url);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            b.call().unwrap()
        }
        _ => {
            let mut b = http.post(&url).header("content-type", "application/json");
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            b.send(r#"{"argv": ["id"]}"#).unwrap()
        }
    };
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        challenge,
        r.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn the_api_answers_only_a_credential_on_a_host_that_names_it_within_its_time() {
    let c = KCluster::start_opts(
        "auth",
        1,
        "60s",
        "",
        "api_request_timeout = \"2s\"\napi_cors_origins = [\"http://dash.example\"]\n",
        "",
        &|_| {},
    );
    let bearer = ("Authorization", c.bearer());
    let wrong = (
        "Authorization",
        "Bearer 0123456789abcdef0123456789abcdef".to_string(),
    );
    for (method, path) in [
        ("GET", "/api/v1/state"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/jobs"),
        ("POST", "/api/v1/tasks/x/kill"),
    ] {
        for creds in [vec![], vec![wrong.clone()]] {
            let (status, challenge, body) = request(&c, method, path, &creds);
            assert_eq!(status, 401, "{method} {path}: {body}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
            assert!(body.contains("credential"), "{body}");
        }
    }
    assert!(
        c.client().tasks().unwrap().is_empty(),
        "nothing was submitted"
    );
    let (status, _, body) = request(&c, "GET", "/health", &[]);
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _, body) = request(&c, "GET", "/api/v1/state", std::slice::from_ref(&bearer));
    assert_eq!(status, 200, "{body}");
    // A page of another site whose name resolves here (DNS rebinding) is refused, with
    // or without a credential.
    let evil = ("Host", "evil.example:5050".to_string());
    for creds in [vec![evil.clone()], vec![evil.clone(), bearer.clone()]] {
        let (status, _, body) = request(&c, "GET", "/api/v1/state", &creds);
        assert_eq!(status, 421, "{body}");
        assert!(body.contains("evil.example"), "{body}");
    }
    // A body sent a byte at a time does not hold the connection past the timeout.
    use std::io::{Read, Write};
    let addr = c.api.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        bearer.0, bearer.1
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    loop {
        if s.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server still reads a trickled body after 60 s"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        c.client().tasks().unwrap().is_empty(),
        "nothing was submitted"
    );
    // Pages of the configured origin may call it from a browser, others may not.
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/api/v1/state", c.api);
    let allowed = |origin: &str| {
        let r = http
            .get(&url)
            .header("Authorization", c.bearer())
            .header("Origin", origin)
            .call()
            .unwrap();
        let h = r.headers().get("access-control-allow-origin");
        h.map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        allowed("http://dash.example").as_deref(),
        Some("http://dash.example")
    );
    assert_eq!(allowed("http://evil.example"), None);
    let preflight = http
        .options(&url)
        .header("Origin", "http://dash.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .call()
        .unwrap();
    assert_eq!(
        preflight.status().as_u16(),
        200,
        "a preflight needs no token"
    );
}

#[test]
fn a_task_runs_as_the_default_user_and_cannot_read_the_agents_key() {
    let c = KCluster::start("users", 1);
    // The directory holding the keys is as open as /etc: only the files' modes guard them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = c.dir.path().join(format!("{}.key", c.agents[0].name));
    let ca_key = c.dir.path().join("ca.key");
    let script = format!(
        "id -u; id -g; echo mine > own-file && cat own-file; cat {} {}",
        key.display(),
        ca_key.display()
    );
    let id = c
        .client()
        .submit(&job(vec!["sh".into(), "-c".into(), script], 0.1, 32))
        .unwrap();
    let ended = c.wait_tasks("the task ends", Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.task_id == id && (t.state == "TASK_FAILED" || t.state == "TASK_FINISHED"))
    });
    let t = ended.iter().find(|t| t.task_id == id).unwrap();
    let (out, _) = c.client().logs(&id, "stdout", 0).unwrap();
    let (err, _) = c.client().logs(&id, "stderr", 0).unwrap();
    let (out, err) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    assert_eq!(out, "65534\n65534\nmine\n", "stderr: {err}");
    assert_eq!(err.matches("Permission denied").count(), 2, "{err}");
    assert_eq!(t.state, "TASK_FAILED", "{t:?}");
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[test]
fn a_task_cannot_harm_its_agent_forks_output_and_disk_are_bounded() {
    let c = KCluster::start_opts(
        "bounds",
        1,
        "60s",
        "",
        "",
        "task_max_pids = 32\ntask_log_max_mb = 1\nlimit_check_interval = \"50ms\"\n\
         disk_check_interval = \"100ms\"\n",
        &|_| {},
    );
    let client = c.client();
    let bomb = client
        .submit(&job(sh("while :; do sleep 1000 & done"), 0.2, 64))
        .unwrap();
    let gb = 1u64 << 30;
    let chatty = client
        .submit(&job(
            sh(&format!("head -c {gb} /dev/zero; echo the end")),
            1.0,
            64,
        ))
        .unwrap();
    let filler = client
        .submit(&SubmitJob {
            disk: 10,
            ..job(
                sh("head -c 30000000 /dev/urandom > big; sleep 1000"),
                0.2,
                64,
            )
        })
        .unwrap();
    let ids = [&bomb, &chatty, &filler];
    let tasks = c.wait_tasks("the three tasks end", Duration::from_secs(120), |t| {
        t.iter()
            .filter(|t| ids.contains(&&t.task_id.to_string()))
            .filter(|t| {
                !["PENDING", "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"]
                    .contains(&t.state.as_str())
            })
            .count()
            == 3
    });
    let get = |id: &String| tasks.iter().find(|t| t.task_id.as_str() == id).unwrap();
    let (b, o, f) = (get(&bomb), get(&chatty), get(&filler));
    assert_eq!(
        (b.state.as_str(), b.reason),
        ("TASK_FAILED", Some(Reason::ContainerLimitation)),
        "{b:?}"
    );
    assert!(b.message.contains("pids limit of 32"), "{b:?}");
    assert_eq!(
        (f.state.as_str(), f.reason),
        ("TASK_FAILED", Some(Reason::ContainerLimitationDisk)),
        "{f:?}"
    );
    assert_eq!(o.state, "TASK_FINISHED", "{o:?}");
    // At most the configured 1 MB of the gigabyte stays on the agent's disk ...
    let sandbox = c
        .dir
        .path()
        .join(&c.agents[0].name)
        .join("agent/sandboxes")
        .join(chatty.as_str());
    let kept: u64 = std::fs::read_dir(&sandbox)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stdout"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(kept <= 1 << 20, "{kept} bytes of stdout kept");
    // ... and `plexus logs` reads it as one stream across the rotation.
    let (tail, next) = client.logs(chatty.as_str(), "stdout", 0).unwrap();
    assert_eq!(next, gb + 8, "offsets count every byte the task wrote");
    assert!(tail.ends_with(b"\0the end\n") && tail.len() as u64 <= 1 << 20);
}

#[test]
fn acls_decide_who_may_run_see_kill_and_read_which_tasks_and_root_needs_a_rule() {
    let tokens = tempfile::tempdir().unwrap();
    let token = |name: &str| {
        let t = format!("{name}-token-{:016}", std::process::id());
        std::fs::write(tokens.path().join(name), &t).unwrap();
        t
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let principals = ["alice", "bob"]
        .iter()
        .map(|n| {
            format!(
                "[[master.principals]]\nname = \"{n}\"\ntoken_file = \"{}\"\n",
                tokens.path().join(n).display()
            )
        })
        .collect::<String>();
    let acls = "[master.acls]\n\
        [[master.acls.run_tasks]]\nprincipals = [\"alice\"]\nusers = [\"nobody\"]\n\
        [[master.acls.view_tasks]]\nprincipals = [\"alice\"]\nowners = [\"alice\"]\n\
        [[master.acls.view_tasks]]\nprincipals = [\"test\"]\n\
        [[master.acls.kill_tasks]]\nprincipals = [\"alice\"]\nowners = [\"alice\"]\n\
        [[master.acls.read_logs]]\nprincipals = [\"alice\"]\nowners = [\"alice\"]\n\
        [[master.acls.update_weights]]\nprincipals = [\"test\"]\n";
    let c = KCluster::start_opts(
        "acls",
        1,
        "60s",
        "",
        &format!("{acls}{principals}"),
        "",
        &|_| {},
    );
    let as_alice = Client::with_token(&c.api, Some(alice));
    let as_bob = Client::with_token(&c.api, Some(bob));
    let forbidden = |r: anyhow::Result<String>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("403") && e.contains("may not"), "{what}: {e}");
        e
    };
    let sleeper_job = |user: Option<&str>| SubmitJob {
        user: user.map(String::from),
        ..job(sleeper(1), 0.1, 32)
    };
    // Bob may run nothing; nobody may run as root, whatever the rules' wildcards.
    let e = forbidden(as_bob.submit(&sleeper_job(None)), "bob submits");
    assert!(e.contains("master.acls.run_tasks"), "{e}");
    for root in ["root", "0:0"] {
        let e = forbidden(
            as_alice.submit(&sleeper_job(Some(root))),
            "alice asks for root",
        );
        assert!(e.contains(root), "{e}");
    }
    assert_eq!(running(&sleeper(1)), 0, "no refused task ran");
    let id = as_alice.submit(&sleeper_job(Some("nobody"))).unwrap();
    c.wait_tasks("alice's task runs", Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.task_id.as_str() == id && t.state == "TASK_RUNNING")
    });
    // Bob can neither see, read nor kill it; alice can.
    let e = as_bob.task(&id).map(|_| String::new());
    forbidden(e, "bob looks at alice's task");
    assert!(as_bob.tasks().unwrap().is_empty(), "bob's list hides it");
    forbidden(
        as_bob.logs(&id, "stdout", 0).map(|_| String::new()),
        "bob reads alice's logs",
    );
    forbidden(
        as_bob.kill(&id).map(|_| String::new()),
        "bob kills alice's task",
    );
    assert_eq!(running(&sleeper(1)), 1, "alice's task still runs");
    let t = as_alice.task(&id).unwrap();
    assert_eq!(
        (t.owner.as_deref(), t.user.as_deref()),
        (Some("alice"), Some("nobody"))
    );
    as_alice.logs(&id, "stdout", 0).unwrap();
    as_alice.kill(&id).unwrap();
    c.wait_tasks("alice's task is killed", Duration::from_secs(30), |t| {
        t.iter()
            .any(|t| t.task_id.as_str() == id && t.state == "TASK_KILLED")
    });
    // Weights and quotas change only as the rules say.
    let put = |token: &str, body: &str| {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = http
            .put(&format!("{}/api/v1/roles/batch", c.api))
            .header("Authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let alice_token = std::fs::read_to_string(tokens.path().join("alice")).unwrap();
    let (status, body) = put(&alice_token, r#"{"weight": 3}"#);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("master.acls.update_weights"), "{body}");
    let (status, body) = put(&c.token, r#"{"quota": "cpus:1;mem:64"}"#);
    assert_eq!(status, 403, "no rule lets anyone change quotas: {body}");
    let (status, body) = put(&c.token, r#"{"weight": -1}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = put(&c.token, r#"{"weight": 3}"#);
    assert_eq!(status, 202, "{body}");
    c.wait_state("the weight is in force", Duration::from_secs(30), |s| {
        s.roles.iter().any(|r| r.role == "batch" && r.weight == 3.0)
    });
}

#[test]
fn a_task_cannot_forge_the_records_its_agent_reads() {
    let c = KCluster::start("records", 1);
    // The task replaces what would be its shim's records in its sandbox with its own
    // ("exited 0"; its agent's pid for a kill to signal), and tries the real ones.
    let script = "mv .plexus .old 2>/dev/null; mkdir -p .plexus; \
                  printf 'exited 0\\n' > .plexus/exit; printf '1\\n' > .plexus/pid; \
                  ls ../.meta >/dev/null 2>&1 && echo LISTED; \
                  echo 'exited 0' > ../.meta/$(basename $PWD)/exit 2>/dev/null && echo FORGED; \
                  exit 3";
    let id = c.client().submit(&job(sh(script), 0.1, 32)).unwrap();
    let ended = c.wait_tasks("the task ends", Duration::from_secs(30), |t| {
        t.iter().any(|t| {
            t.task_id.as_str() == id && ["TASK_FAILED", "TASK_FINISHED"].contains(&t.state.as_str())
        })
    });
    let t = ended.iter().find(|t| t.task_id.as_str() == id).unwrap();
    let (out, _) = c.client().logs(&id, "stdout", 0).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "",
        "the records were out of reach"
    );
    assert_eq!(
        (t.state.as_str(), t.exit_code),
        ("TASK_FAILED", Some(3)),
        "reported as it ended, not as the task wrote: {t:?}"
    );
}

/// Launches one queued task per offer and keeps every update.
struct Launcher {
    queue: Vec<TaskSpec>,
    updates: tokio::sync::mpsc::UnboundedSender<StatusUpdate>,
}

impl Scheduler for Launcher {
    fn offers(&mut self, driver: &DriverHandle, offers: Vec<Offer>) {
        for o in offers {
            match self.queue.pop() {
                Some(t) => driver
                    .launch(vec![o.id], vec![t], Duration::from_secs(1))
                    .unwrap(),
                None => driver.decline(vec![o.id], Duration::from_secs(3600)),
            }
        }
    }
    fn update(&mut self, _: &DriverHandle, u: &StatusUpdate) {
        // The test holds the receiver until it ends.
        self.updates.send(u.clone()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frameworks_prove_their_principal_and_the_acls_bound_their_roles_and_users() {
    let tokens = tempfile::tempdir().unwrap();
    let secret = format!("sched-secret-{:016}", std::process::id());
    std::fs::write(tokens.path().join("sched"), &secret).unwrap();
    let extra = format!(
        "[master.acls]\n\
         [[master.acls.register_frameworks]]\nprincipals = [\"sched\"]\nroles = [\"*\"]\n\
         [[master.acls.run_tasks]]\nprincipals = [\"sched\"]\nusers = [\"nobody\"]\n\
         [[master.acls.view_tasks]]\nprincipals = [\"test\"]\n\
         [[master.principals]]\nname = \"sched\"\ntoken_file = \"{}\"\n",
        tokens.path().join("sched").display()
    );
    let c = KCluster::start_opts("fwauth", 1, "60s", "", &extra, "", &|_| {});
    let s = NodeSettings {
        name: "fwauth-fw".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![PeerAddr {
            name: MASTER.into(),
            addr: c.master_addr,
        }],
        tls: common::certs_as(c.dir.path(), "fwauth-fw", Role::Client),
        state_dir: c.dir.path().join("fwauth-fw"),
        ..NodeSettings::default()
    };
    let node = Node::start(&s).await.unwrap();
    node.wait_for_peers(&[MASTER], Duration::from_secs(30))
        .await
        .unwrap();
    let info = |name: &str, principal: Option<&str>| FrameworkInfo {
        id: None,
        name: name.into(),
        principal: principal.map(String::from),
        role: "*".into(),
        failover_timeout_secs: 60.0,
    };
    let (updates, mut seen) = tokio::sync::mpsc::unbounded_channel();
    // A task says it runs on a FIFO any user may write to.
    let ready_dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ready_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ready = events::fifo(ready_dir.path(), "ready");
    std::fs::set_permissions(&ready, std::fs::Permissions::from_mode(0o622)).unwrap();
    let argv = sh(&format!(
        "echo > {}; {}",
        ready.display(),
        sleeper(7).join(" ")
    ));
    let task = |id: &str, user: &str| TaskSpec {
        task_id: id.into(),
        name: id.into(),
        argv: argv.clone(),
        resources: Resources::new(0.1, 16),
        user: Some(user.into()),
        actor: None,
    };
    let start = |name: &str, principal: Option<&str>, secret: Option<String>| {
        SchedulerDriver::start_authenticated(
            &node,
            info(name, principal),
            secret,
            Box::new(Launcher {
                // Popped from the end: root first.
                queue: vec![task("as-nobody", "nobody"), task("as-root", "root")],
                updates: updates.clone(),
            }),
            true,
            Duration::from_secs(5),
        )
    };
    // With ACLs, an anonymous framework and a wrong secret are refused.
    let e = start("anon", None, None).await.unwrap_err();
    assert!(e.contains("must authenticate"), "{e}");
    let e = start(
        "forged",
        Some("sched"),
        Some("not-the-secret-at-all".into()),
    )
    .await
    .unwrap_err();
    assert!(e.contains("failed authentication"), "{e}");
    let logged = c.master.log_lines(&["a subscription was refused"]);
    assert!(logged >= 2, "refusals are logged: {logged}");
    // The principal with its secret registers; its root task is refused, its nobody task runs.
    start("sched", Some("sched"), Some(secret)).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut root, mut nobody) = (None::<StatusUpdate>, None::<StatusUpdate>);
    while root.is_none()
        || nobody
            .as_ref()
            .is_none_or(|n| n.state != TaskState::Running)
    {
        let u = tokio::time::timeout_at(end, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("updates so far: {root:?} {nobody:?}"))
            .unwrap();
        match u.task_id.as_str() {
            "as-root" => root = Some(u),
            "as-nobody" => nobody = Some(u),
            _ => {}
        }
    }
    let root = root.unwrap();
    assert_eq!(root.state, TaskState::Error, "{root:?}");
    assert_eq!(root.reason, Some(Reason::TaskInvalid), "{root:?}");
    assert!(root.message.contains("as user \"root\""), "{root:?}");
    // RUNNING comes once the shim started; the command says when it runs.
    events::read_line(&ready).await;
    assert_eq!(running(&argv), 1, "only the permitted task runs");
}

#[test]
fn over_https_a_client_certificate_of_the_cluster_ca_is_a_credential_the_cli_uses() {
    let c = KCluster::start_opts(
        "https",
        1,
        "60s",
        "",
        "api_tls = true\n[[master.principals]]\nname = \"carol\"\n",
        "",
        &|_| {},
    );
    assert!(c.api.starts_with("https://"), "{}", c.api);
    let carol = common::certs_as(c.dir.path(), "carol", Role::Client);
    let agent = common::certs_as(c.dir.path(), "imposter", Role::Agent);
    let ca = c.dir.path().join("ca.pem");
    // A client with the CA and, maybe, a certificate, and no token.
    let as_cert = |cert: Option<&plexus_config::TlsSettings>| {
        std::env::remove_var("PLEXUS_CERT");
        std::env::remove_var("PLEXUS_KEY");
        if let Some(t) = cert {
            std::env::set_var("PLEXUS_CERT", t.cert.as_ref().unwrap());
            std::env::set_var("PLEXUS_KEY", t.key.as_ref().unwrap());
        }
        Client::with_token(&c.api, None)
    };
    let e = as_cert(None).tasks().unwrap_err().to_string();
    assert!(e.contains("401"), "no credential: {e}");
    let e = as_cert(Some(&agent)).tasks().unwrap_err().to_string();
    assert!(
        e.contains("401"),
        "an agent's certificate is no API credential: {e}"
    );
    let id = as_cert(Some(&carol))
        .submit(&job(sleeper(3), 0.1, 16))
        .unwrap();
    let t = c.client().task(&id).unwrap();
    assert_eq!(
        t.owner.as_deref(),
        Some("carol"),
        "the certificate names the principal"
    );
    // The CLI presents the certificate it is given, and needs no token.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["ps", "--api", &c.api])
        .env("PLEXUS_CA", &ca)
        .env("PLEXUS_CERT", carol.cert.as_ref().unwrap())
        .env("PLEXUS_KEY", carol.key.as_ref().unwrap())
        .env("PLEXUS_CREDENTIALS_DIR", empty.path())
        .env_remove("PLEXUS_TOKEN")
        .env_remove("PLEXUS_TOKEN_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&id) && stdout.contains("carol"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP gets no answer from an HTTPS API.
    let plain = Client::with_token(&c.api.replace("https://", "http://"), Some(c.token.clone()));
    assert!(plain.tasks().is_err());
}
