//! Multi-process tests of actors placed by resources: `plexus master` and `plexus agent`
//! processes on 127.0.0.x, the `placed_workers` example as the framework program (a
//! `one_for_one` supervisor of workers placed through the kernel) and as the executors
//! the agents start for its workers.

mod common;
use common::kcluster::*;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr, TlsSettings};
use plexus_net::tls;

/// The example program (built with the tests).
fn program() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_plexus"))
        .parent()
        .unwrap()
        .join("examples/placed_workers");
    assert!(p.is_file(), "{} is built with the tests", p.display());
    p
}

/// The framework program, driven by lines on its stdin, read line by line.
struct Framework {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Framework {
    fn start(c: &KCluster, args: &[&str]) -> Framework {
        let dir = c.dir.path();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_udp("127.0.0.1"))
            .parse()
            .unwrap();
        let cfg = node_toml(dir, "workers", plexus_net::Role::Client, listen, "");
        let cfg_path = dir.join("workers.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut child = Command::new(program())
            .args(["--config", &cfg_path.display().to_string()])
            .args(["--master", &format!("{MASTER}@{}", c.master_addr)])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("workers.log")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Framework {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line starting with `prefix` (earlier ones are kept in `seen`).
    fn expect(&mut self, c: &KCluster, prefix: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => {
                    let log = std::fs::read_to_string(c.dir.path().join("workers.log"))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    panic!(
                        "no line starting {prefix:?} within {timeout:?}; seen: {:#?}\n--- framework ---\n{}\n{}",
                        self.seen,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                        c.logs()
                    );
                }
            }
        }
    }
}

impl Drop for Framework {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `started W on AGENT (task T, start N)` → (W, AGENT, T, N).
fn started(line: &str) -> (String, String, String, u32) {
    let w: Vec<&str> = line.split_whitespace().collect();
    let n = w[7].trim_end_matches(')').parse().unwrap();
    (
        w[1].into(),
        w[3].into(),
        w[5].trim_end_matches(',').into(),
        n,
    )
}

const T: Duration = Duration::from_secs(60);

/// Where a worker is, by its `started` lines.
fn agent_of(f: &Framework, worker: &str) -> String {
    f.seen
        .iter()
        .rev()
        .filter(|l| l.starts_with("started "))
        .map(|l| started(l))
        .find(|s| s.0 == worker)
        .map(|s| s.1)
        .unwrap()
}

#[test]
fn placed_workers_are_spread_and_every_failure_reaches_their_supervisor_which_restarts_them() {
    let mut c = KCluster::start_opts(
        "pw",
        3,
        "60s",
        "",
        "",
        "executor_recovery_timeout = \"3s\"\n",
        &|_| {},
    );
    let mut f = Framework::start(
        &c,
        &[
            "--workers",
            "2",
            "--unique-host",
            "--mem-mb",
            "64",
            "--cpus",
            "0.1",
        ],
    );
    f.expect(&c, "connected as framework", T);
    let mut first = [
        started(&f.expect(&c, "started ", T)),
        started(&f.expect(&c, "started ", T)),
    ];
    first.sort();
    let [a, b] = first;
    assert_eq!((a.0.as_str(), b.0.as_str()), ("w1", "w2"));
    assert_ne!(a.1, b.1, "unique host: {a:?} {b:?}");
    f.say("ping w1");
    assert!(f.expect(&c, "pong ", T).starts_with("pong w1 in process"));

    // A panic: the supervisor hears ActorFailed with its text, and starts w1 again.
    f.say("panic w1 the worker tripped");
    assert_eq!(f.expect(&c, "failed ", T), "failed w1: the worker tripped");
    let again = started(&f.expect(&c, "started ", T));
    assert_eq!((again.0.as_str(), again.3), ("w1", 2));
    f.say("ping w1");
    f.expect(&c, "pong w1", T);
    // The API shows actor tasks with their type and the executor node of their actor.
    let tasks = c.wait_tasks("the failed worker's end", T, |ts| {
        ts.iter()
            .any(|t| t.task_id.as_str() == a.2.as_str() && t.state == "TASK_FAILED")
    });
    let w2 = tasks
        .iter()
        .find(|t| t.task_id.as_str() == b.2.as_str())
        .unwrap();
    assert_eq!(w2.actor_type.as_deref(), Some("worker"));
    let node = w2.actor_node.clone().unwrap();
    assert_eq!(
        plexus_net::tls::executor_agent(&node),
        Some(b.1.as_str()),
        "{node}"
    );
    let failed = tasks
        .iter()
        .find(|t| t.task_id.as_str() == a.2.as_str())
        .unwrap();
    assert_eq!(
        (failed.state.as_str(), failed.message.as_str()),
        ("TASK_FAILED", "the worker tripped")
    );

    // An OOM kill: past its 64 MB, the executor is killed; the reason names the limit.
    f.say("hog w2 256");
    let t = f.expect(&c, "terminated ", T);
    assert!(
        t.starts_with("terminated w2: ") && t.contains("REASON_CONTAINER_LIMITATION_MEMORY"),
        "{t}"
    );
    let again = started(&f.expect(&c, "started ", T));
    assert_eq!((again.0.as_str(), again.3), ("w2", 2));

    // The machine of w1 is lost: a node-down termination, and w1 starts again on the
    // agent that has neither w1 nor w2 (unique host).
    let lost = agent_of(&f, "w1");
    let w2_at = agent_of(&f, "w2");
    c.agent(&lost).kill9();
    let t = f.expect(&c, "terminated ", T);
    assert!(t.starts_with("terminated w1: plexus:node-down"), "{t}");
    let again = started(&f.expect(&c, "started ", T));
    assert_eq!((again.0.as_str(), again.3), ("w1", 3));
    assert!(
        again.1 != lost && again.1 != w2_at,
        "{again:?}: lost {lost}, w2 on {w2_at}"
    );

    // One more unique worker has no host left: it waits, saying why, ...
    f.say("extra w3");
    let p = f.expect(&c, "pending w3", T);
    assert!(
        p.ends_with("every offer with room breaks the constraint unique host for \"worker\""),
        "{p}"
    );
    // ... until an agent with room joins (the lost one, back).
    c.agent(&lost).spawn();
    let placed = f.expect(&c, "placed w3 on ", T);
    assert_eq!(placed, format!("placed w3 on {lost}"));

    // Every task that ended gave its resources back once: what is used is what the
    // running workers hold (three, unless a link flapped under load and a worker was
    // replaced meanwhile: then its old task is being killed and is not counted).
    c.wait_tasks("resources of ended workers returned", T, |ts| {
        let running = ts.iter().filter(|t| t.state == "TASK_RUNNING").count() as u64;
        let used = c.client().state().map(|s| s.used).unwrap_or_default();
        running >= 2 && used.mem_mb == running * 64 && used.cpus_milli == running * 100
    });
    f.say("quit");
    let _ = f.child.wait();
}

/// Starts an in-process node named `name` with `tls` that dials `peer`.
async fn rogue(dir: &std::path::Path, name: &str, tls: TlsSettings, peer: PeerAddr) -> Node {
    let s = NodeSettings {
        name: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![peer],
        tls,
        state_dir: dir.join(name),
        ..NodeSettings::default()
    };
    Node::start(&s).await.unwrap()
}

/// Waits until `n` holds no link (the peer it dialed closed it).
async fn closed(n: &Node) {
    let mut changes = n.changes();
    let end = tokio::time::Instant::now() + T;
    while !n.peers().is_empty() {
        let r = tokio::time::timeout_at(end, changes.changed()).await;
        assert!(
            matches!(r, Ok(Ok(()))),
            "{} still has a link to {:?}",
            n.name(),
            n.peers().iter().map(|p| &p.name).collect::<Vec<_>>()
        );
    }
}

/// Writes an executor identity to files in `dir`.
fn identity_files(dir: &std::path::Path, id: &tls::ExecutorIdentity) -> TlsSettings {
    let cert = dir.join(format!("{}.pem", id.node));
    let key = dir.join(format!("{}.key", id.node));
    std::fs::write(&cert, &id.chain_pem).unwrap();
    std::fs::write(&key, &id.key_pem).unwrap();
    TlsSettings {
        ca_cert: Some(dir.join("ca.pem")),
        cert: Some(cert),
        key: Some(key),
        dev: false,
    }
}

#[test]
fn a_forged_or_spent_executor_identity_is_refused_and_logged() {
    let c = KCluster::start("ex", 2);
    let dir = c.dir.path().to_path_buf();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a1 = PeerAddr {
        name: "ex-a1".into(),
        addr: c.agent_addrs[0],
    };
    let issuer = |agent: &str| {
        let (cert, key) = tls::executor_ca_paths(&dir, agent);
        tls::ExecutorIssuer::load(agent, &cert, &key, &dir.join("ca.pem")).unwrap()
    };
    // Forged: an executor of ex-a1 by name, signed with ex-a2's executor CA.
    let forged = {
        let (ca_cert, ca_key) = tls::executor_ca_paths(&dir, "ex-a2");
        let ca_pem = std::fs::read_to_string(ca_cert).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_key).unwrap()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["x1.ex-a1".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "x1.ex-a1");
        p.distinguished_name.push(
            rcgen::DnType::OrganizationalUnitName,
            "plexus-roles:executor",
        );
        let cert = p.signed_by(&key, &issuer).unwrap();
        tls::ExecutorIdentity {
            node: "x1.ex-a1".into(),
            chain_pem: format!("{}{ca_pem}", cert.pem()),
            key_pem: key.serialize_pem(),
        }
    };
    let t = identity_files(&dir, &forged);
    let n = rt.block_on(rogue(&dir, "x1.ex-a1", t, a1.clone()));
    c.agents[0].wait_log_lines(
        &[
            "refused peer connection",
            "executor CA of agent \"ex-a2\" issued a certificate for \"x1.ex-a1\"",
        ],
        0,
        T,
    );
    rt.block_on(closed(&n));
    rt.block_on(n.leave());

    // Spent: a genuine identity of ex-a1's that it never gave to a running executor
    // (as one of an executor that ended) is refused by the agent, which says so.
    let spent = issuer("ex-a1").issue(77, Duration::from_secs(600)).unwrap();
    let t = identity_files(&dir, &spent);
    let n = rt.block_on(rogue(&dir, &spent.node, t, a1.clone()));
    c.agents[0].wait_log_lines(&["refused", "runs no executor \"x77.ex-a1\""], 0, T);
    rt.block_on(closed(&n));
    rt.block_on(n.leave());

    // A genuine executor identity cannot pose as the master or an agent: its claims on
    // their names are refused by the master, which says so.
    let live = issuer("ex-a2").issue(5, Duration::from_secs(600)).unwrap();
    let t = identity_files(&dir, &live);
    let m = tls::TlsMaterial::load(
        t.ca_cert.as_ref().unwrap(),
        t.cert.as_ref().unwrap(),
        t.key.as_ref().unwrap(),
    )
    .unwrap();
    rt.block_on(async {
        let transport = raw_transport(&live.node, &m);
        let master = PeerAddr {
            name: MASTER.into(),
            addr: c.master_addr,
        };
        let link = plexus_net::Transport::dial(&*transport, master)
            .await
            .unwrap();
        for name in ["plexus.master", "plexus.agent:ex-a2"] {
            link.tx
                .send(&plexus_actors::__private::Wire::Register {
                    name: name.into(),
                    pid: 1,
                    msg_type: "x".into(),
                    rank: u64::MAX,
                })
                .unwrap();
        }
        c.master
            .wait_log_lines(&["refused", "x5.ex-a2", "plexus.master"], 0, T);
        c.master
            .wait_log_lines(&["refused", "x5.ex-a2", "plexus.agent:ex-a2"], 0, T);
    });
    // The master still holds its name: jobs run.
    let st = c.client().state().unwrap();
    assert_eq!(st.agents.len(), 2);
}
