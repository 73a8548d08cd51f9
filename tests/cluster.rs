//! Multi-process tests: real `plexus node` processes on 127.0.0.1, 127.0.0.2 and
//! 127.0.0.3, and this test process joining them as a fourth node.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plexus::builtin::{self, EchoMsg, KeeperArgs, KeeperMsg, ProbeMsg};
use plexus_actors::{is_node_down, Node};
use plexus_config::{NodeSettings, PeerAddr};
use plexus_net::tls::{self, TlsMaterial};
use plexus_net::{NetError, Transport};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

const HEARTBEAT_MS: u64 = 100;
const DOWN_MS: u64 = 1000;

struct Proc {
    name: String,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
}

impl Cluster {
    /// Starts n1, n2, n3 as `plexus node` processes on 127.0.0.1..3.
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        tls::init_ca(dir.path(), "plexus").unwrap();
        let names = ["n1", "n2", "n3"];
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|i| {
                let ip = format!("127.0.0.{i}");
                format!("{ip}:{}", free_udp(&ip)).parse().unwrap()
            })
            .collect();
        let mut procs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let t = certs(dir.path(), name);
            let peers: Vec<String> = (0..i)
                .map(|j| format!("\"{}@{}\"", names[j], addrs[j]))
                .collect();
            let cfg = format!(
                "name = \"{name}\"\nlisten = \"{}\"\npeers = [{}]\nstate_dir = \"{}\"\n\
                 heartbeat_interval = \"{HEARTBEAT_MS}ms\"\nnode_down_timeout = \"{DOWN_MS}ms\"\n\
                 [tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                addrs[i],
                peers.join(", "),
                dir.path().join(name).display(),
                t.ca_cert.unwrap().display(),
                t.cert.unwrap().display(),
                t.key.unwrap().display(),
            );
            let cfg_path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&cfg_path, cfg).unwrap();
            let log = dir.path().join(format!("{name}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_plexus"))
                .args(["node", "--config"])
                .arg(&cfg_path)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            procs.push(Proc {
                name: name.to_string(),
                addr: addrs[i],
                child,
                log,
            });
        }
        Cluster { dir, procs }
    }

    fn settings(&self, name: &str) -> NodeSettings {
        NodeSettings {
            name: name.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: self
                .procs
                .iter()
                .map(|p| PeerAddr {
                    name: p.name.clone(),
                    addr: p.addr,
                })
                .collect(),
            tls: certs(self.dir.path(), name),
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
            node_down_timeout: Duration::from_millis(DOWN_MS),
            state_dir: self.dir.path().join(name),
            ..NodeSettings::default()
        }
    }

    /// This test process, joined to the cluster as node `t`, once it sees all three.
    async fn join(&self) -> Node {
        let node = Node::start(&self.settings("t")).await.unwrap();
        node.wait_for_peers(&["n1", "n2", "n3"], Duration::from_secs(60))
            .await
            .unwrap();
        node
    }

    fn proc(&self, name: &str) -> &Proc {
        self.procs.iter().find(|p| p.name == name).unwrap()
    }
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_casts_calls_spawns_and_looks_up() {
    let c = Cluster::start();
    let t = c.join().await;
    let names = ["n1", "n2", "n3"];
    for from in names {
        let probe: ActorRef<ProbeMsg> = t.spawn_remote(from, builtin::PROBE, &()).await.unwrap();
        for to in names.iter().filter(|n| **n != from) {
            // the probe's node may still be meshing with `to`
            let summary = eventually(&format!("{from} -> {to}"), Duration::from_secs(30), || {
                let probe = probe.clone();
                let to = to.to_string();
                async move {
                    call_t!(probe, ProbeMsg::Check, 10_000, to)
                        .ok()
                        .and_then(|r| r.ok())
                }
            })
            .await;
            assert!(summary.contains(&format!("echo:{from}")), "{summary}");
        }
    }
}

/// Forwards supervision events of its children to the test.
struct Sup;

impl Actor for Sup {
    type Msg = ();
    type State = tokio::sync::mpsc::UnboundedSender<String>;
    type Arguments = tokio::sync::mpsc::UnboundedSender<String>;
    async fn pre_start(
        &self,
        _: ActorRef<()>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        e: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(_, err) = e {
            let _ = tx.send(err.to_string());
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_panic_reaches_the_supervisor_with_its_text() {
    let c = Cluster::start();
    let t = c.join().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (sup, _) = Actor::spawn(None, Sup, tx).await.unwrap();
    let child: ActorRef<EchoMsg> = t
        .spawn_remote_linked(sup.get_cell(), "n2", builtin::ECHO, &0u64)
        .await
        .unwrap();
    child
        .cast(EchoMsg::Panic("sector 7G overheated".into()))
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("sector 7G overheated"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_child_node_restarts_child_on_a_survivor() {
    let mut c = Cluster::start();
    let t = c.join().await;
    let keeper: ActorRef<KeeperMsg> = t
        .spawn_remote(
            "n1",
            builtin::KEEPER,
            &KeeperArgs {
                candidates: vec!["n2".into(), "n3".into()],
            },
        )
        .await
        .unwrap();
    // the keeper starts its child on n2 once n1 is meshed with n2
    eventually("child on n2", Duration::from_secs(30), || {
        let k = keeper.clone();
        async move {
            let s = call_t!(k, KeeperMsg::Status, 5000).ok()?;
            (s.child_node.as_deref() == Some("n2")).then_some(())
        }
    })
    .await;
    assert_eq!(
        call_t!(keeper, KeeperMsg::CallChild, 5000, "a".to_string()).unwrap(),
        Ok("echo:a".to_string())
    );

    let n2 = c.procs.iter_mut().find(|p| p.name == "n2").unwrap();
    let killed_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    n2.child.kill().unwrap(); // SIGKILL
    n2.child.wait().unwrap();

    let status = eventually("child restarted on n3", Duration::from_secs(30), || {
        let k = keeper.clone();
        async move {
            let s = call_t!(k, KeeperMsg::Status, 5000).ok()?;
            (s.child_node.as_deref() == Some("n3")).then_some(s)
        }
    })
    .await;
    let down = status
        .events
        .iter()
        .find(|e| e.what.starts_with("node-down n2"))
        .expect("a node-down event for n2");
    assert!(
        is_node_down(down.what.split_once(": ").map(|x| x.1)),
        "{down:?}"
    );
    let detection = down.unix_ms.saturating_sub(killed_ms);
    assert!(
        detection <= 2 * DOWN_MS,
        "node-down seen {detection} ms after kill -9; bound {} ms",
        2 * DOWN_MS
    );
    assert_eq!(
        call_t!(keeper, KeeperMsg::CallChild, 5000, "b".to_string()).unwrap(),
        Ok("echo:b".to_string())
    );
}

async fn still_serves(t: &Node, c: &Cluster) {
    let probe: ActorRef<ProbeMsg> = t.spawn_remote("n1", builtin::PROBE, &()).await.unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call_t!(probe, ProbeMsg::Check, 10_000, "n2".to_string()).unwrap();
        if r.is_ok() {
            return;
        }
        if Instant::now() > end {
            let (n1, n2) = (c.proc("n1").log_text(), c.proc("n2").log_text());
            panic!("n1 no longer serves: {r:?}\n--- n1 log\n{n1}\n--- n2 log\n{n2}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_mentions(p: &Proc, needle: &str) {
    eventually(
        &format!("{} logging {needle:?}", p.name),
        Duration::from_secs(20),
        || async { p.log_text().contains(needle).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_and_logged() {
    let c = Cluster::start();
    let t = c.join().await;
    let n1 = c.proc("n1");
    let target = PeerAddr {
        name: "n1".into(),
        addr: n1.addr,
    };

    // a certificate from another CA
    let other = tempfile::tempdir().unwrap();
    tls::init_ca(other.path(), "plexus").unwrap();
    let (oc, ok) = tls::issue(other.path(), other.path(), "x1", plexus_net::Role::Client).unwrap();
    let m = TlsMaterial::load(&other.path().join("ca.pem"), &oc, &ok).unwrap();
    assert!(raw_transport("x1", &m).dial(target.clone()).await.is_err());

    // a valid certificate that names another node
    let (bc, bk) = tls::issue(c.dir.path(), c.dir.path(), "n9", plexus_net::Role::Client).unwrap();
    let m = TlsMaterial::load(&c.dir.path().join("ca.pem"), &bc, &bk).unwrap();
    let e = raw_transport("mallory", &m)
        .dial(target.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    log_mentions(n1, "names another node").await;

    // no certificate at all
    let ca = std::fs::read(c.dir.path().join("ca.pem")).unwrap();
    let ca = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap(),
    )));
    let attempt = async {
        let conn = ep.connect(n1.addr, "n1")?.await?;
        let (mut s, mut r) = conn.open_bi().await?;
        s.write_all(&[0, 0, 0, 0]).await?;
        let mut b = [0u8; 4];
        r.read(&mut b).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .unwrap()
        .is_err());

    log_mentions(n1, "refused peer connection").await;
    still_serves(&t, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_oversized_frames_close_only_that_connection() {
    let c = Cluster::start();
    let t = c.join().await;
    let n1 = c.proc("n1");
    let target = PeerAddr {
        name: "n1".into(),
        addr: n1.addr,
    };
    let cases: [(&str, Vec<u8>); 3] = [
        ("g1", {
            let mut v = 6u32.to_le_bytes().to_vec();
            v.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa]);
            v
        }),
        ("g2", {
            let mut v = 100u32.to_le_bytes().to_vec();
            v.extend_from_slice(&[1, 2, 3]);
            v
        }),
        ("g3", u32::MAX.to_le_bytes().to_vec()),
    ];
    for (name, bytes) in cases {
        let (gc, gk) =
            tls::issue(c.dir.path(), c.dir.path(), name, plexus_net::Role::Client).unwrap();
        let m = TlsMaterial::load(&c.dir.path().join("ca.pem"), &gc, &gk).unwrap();
        let tr = raw_transport(name, &m);
        let mut link = tr.dial(target.clone()).await.unwrap();
        link.tx.send_raw(&bytes).unwrap();
        if name == "g2" {
            link.tx.close("truncating on purpose");
        }
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match link.rx.next().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("n1 closes the connection");
        assert!(
            matches!(ended, Err(NetError::Closed(_)) | Ok(None)),
            "{ended:?}"
        );
    }
    log_mentions(n1, "undecodable frame").await;
    log_mentions(n1, "inside a frame").await;
    log_mentions(n1, "exceeds the limit").await;
    assert!(!n1.log_text().contains("panicked"));
    still_serves(&t, &c).await;
}
