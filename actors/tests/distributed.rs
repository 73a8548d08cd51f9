//! Distributed actors between in-process nodes, over QUIC and over the simulated network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_actors::{is_node_down, InboxGauge, Node, NodeOptions, RemoteMessage, SendError};
use plexus_net::tls::{self, TlsMaterial};
use plexus_net::{LocalIdentity, QuicTransport, Roles, SimFaults, SimNetwork, Transport};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc;

#[derive(Debug, RemoteMessage)]
enum EchoMsg {
    Ping(u64),
    Echo(String, RpcReplyPort<String>),
    Count {
        reply: RpcReplyPort<u64>,
    },
    Panic(String),
    Quit,
    /// Never answered (the port is kept).
    Hold(RpcReplyPort<u64>),
}

struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = u64;
    type Arguments = u64;
    async fn pre_start(&self, _: ActorRef<EchoMsg>, start: u64) -> Result<u64, ActorProcessingErr> {
        Ok(start)
    }
    async fn handle(
        &self,
        me: ActorRef<EchoMsg>,
        m: EchoMsg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match m {
            EchoMsg::Ping(k) => *n += k,
            EchoMsg::Echo(s, r) => {
                let _ = r.send(format!("echo:{s}"));
            }
            EchoMsg::Count { reply } => {
                let _ = reply.send(*n);
            }
            EchoMsg::Panic(text) => panic!("{text}"),
            EchoMsg::Quit => me.stop(Some("asked to quit".into())),
            EchoMsg::Hold(port) => std::mem::forget(port),
        }
        Ok(())
    }
}

/// Forwards every supervision event it gets, as text, to the test.
struct Sup;

impl Actor for Sup {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;
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
        let line = match e {
            SupervisionEvent::ActorTerminated(c, _, r) => {
                format!(
                    "terminated {} node_down={} {}",
                    c.get_id(),
                    is_node_down(r.as_deref()),
                    r.unwrap_or_default()
                )
            }
            SupervisionEvent::ActorFailed(c, err) => format!("failed {} {err}", c.get_id()),
            _ => return Ok(()),
        };
        let _ = tx.send(line);
        Ok(())
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a supervision event within 30 s")
        .expect("supervisor alive")
}

fn opts() -> NodeOptions {
    NodeOptions {
        peers: vec![],
        call_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(100),
        node_down_timeout: Duration::from_millis(500),
        connect_all: true,
    }
}

trait Cluster {
    fn transport(&self, name: &str, incarnation: u64) -> Arc<dyn Transport>;
    fn crash(&self, name: &str);
}

struct Quic {
    dir: tempfile::TempDir,
    transports: std::sync::Mutex<Vec<(String, Arc<dyn Transport>)>>,
}

impl Quic {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        tls::init_ca(dir.path(), "t").unwrap();
        Quic {
            dir,
            transports: Default::default(),
        }
    }
}

impl Cluster for Quic {
    fn transport(&self, name: &str, incarnation: u64) -> Arc<dyn Transport> {
        let (c, k) = tls::issue(self.dir.path(), self.dir.path(), name, Roles::ALL).unwrap();
        let m = TlsMaterial::load(&self.dir.path().join("ca.pem"), &c, &k).unwrap();
        // A restarted node binds a new port; peers learn it from its hello.
        let addr = "127.0.0.1:0".parse().unwrap();
        let t: Arc<dyn Transport> = QuicTransport::bind(
            LocalIdentity {
                cluster: "t".into(),
                name: name.into(),
                incarnation,
                addr,
                roles: Roles::ALL,
            },
            &m,
            1 << 20,
        )
        .unwrap();
        self.transports
            .lock()
            .unwrap()
            .push((name.into(), t.clone()));
        t
    }
    fn crash(&self, name: &str) {
        // Closing the endpoint stands in for the process vanishing: the peers' heartbeats stop.
        for (n, t) in self.transports.lock().unwrap().iter() {
            if n == name {
                t.shutdown();
            }
        }
    }
}

struct Sim {
    net: SimNetwork,
    port: AtomicU16,
}

impl Sim {
    fn new() -> Self {
        Sim {
            net: SimNetwork::new(9, SimFaults::default()),
            port: AtomicU16::new(1),
        }
    }
}

impl Cluster for Sim {
    fn transport(&self, name: &str, incarnation: u64) -> Arc<dyn Transport> {
        let addr = SocketAddr::from(([10, 0, 0, 1], self.port.fetch_add(1, Ordering::SeqCst)));
        self.net
            .bind(
                LocalIdentity {
                    cluster: "t".into(),
                    name: name.into(),
                    incarnation,
                    addr,
                    roles: Roles::ALL,
                },
                1 << 20,
            )
            .unwrap()
    }
    fn crash(&self, name: &str) {
        self.net.crash(name);
    }
}

async fn pair(c: &dyn Cluster) -> (Node, Node) {
    let a = Node::start_with(c.transport("a", 1), opts()).await.unwrap();
    let mut o = opts();
    o.peers = vec![a.peer_addr()];
    let b = Node::start_with(c.transport("b", 1), o).await.unwrap();
    for n in [&a, &b] {
        n.register_type("echo", Roles::ALL, || Echo);
    }
    b.wait_for_peers(&["a"], Duration::from_secs(20))
        .await
        .unwrap();
    a.wait_for_peers(&["b"], Duration::from_secs(20))
        .await
        .unwrap();
    (a, b)
}

async fn remote_cast_call_and_spawn(c: &dyn Cluster) {
    let (a, _b) = pair(c).await;
    let e: ActorRef<EchoMsg> = a.spawn_remote("b", "echo", &5u64).await.unwrap();
    assert!(!e.get_id().is_local());
    for _ in 0..100 {
        e.cast(EchoMsg::Ping(1)).unwrap();
    }
    assert_eq!(
        call_t!(e, EchoMsg::Echo, 5000, "hi".to_string()).unwrap(),
        "echo:hi"
    );
    let n = call_t!(e, |reply| EchoMsg::Count { reply }, 5000).unwrap();
    assert_eq!(n, 105, "casts arrive before a later call, in order");
    let err = a
        .spawn_remote::<EchoMsg, _>("b", "nope", &0u64)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = a
        .spawn_remote::<EchoMsg, _>("b", "echo", &"not a number")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad spawn arguments"), "{err}");
}

async fn unanswered_calls_are_given_up(c: &dyn Cluster) {
    let (a, _b) = pair(c).await;
    let e: ActorRef<EchoMsg> = a.spawn_remote("b", "echo", &0u64).await.unwrap();
    for _ in 0..3 {
        assert!(call_t!(e, EchoMsg::Hold, 300).is_err(), "no answer comes");
    }
    // The caller gave up; within a heartbeat or two so does the node.
    let pending = || {
        a.peers()
            .iter()
            .find(|p| p.name == "b")
            .map(|p| p.pending_calls)
    };
    let mut changes = a.changes();
    let given_up = async {
        while pending() != Some(0) {
            changes.changed().await.expect("the node runs");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), given_up)
        .await
        .unwrap_or_else(|_| panic!("calls still pending: {:?}", pending()));
}

async fn registry_across_nodes(c: &dyn Cluster) {
    let (a, b) = pair(c).await;
    let (local, _) = Actor::spawn(None, Echo, 0).await.unwrap();
    a.register("svc", &local).unwrap();
    let found = wait_whereis(&b, "svc").await;
    assert_eq!(
        call_t!(found, EchoMsg::Echo, 5000, "x".to_string()).unwrap(),
        "echo:x"
    );
    let err = b
        .register("svc", &Actor::spawn(None, Echo, 0).await.unwrap().0)
        .unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    assert!(
        b.whereis::<u64>("svc").await.is_err(),
        "typed lookups check the message type"
    );
    local.stop(None);
    for _ in 0..200 {
        if b.whereis::<EchoMsg>("svc").await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the name of a stopped actor is released cluster-wide");
}

/// An actor with a bounded inbox whose `Ping(0)` blocks it until the test opens a gate.
struct Slow {
    gauge: Arc<std::sync::OnceLock<InboxGauge>>,
    blocked: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
}

impl Actor for Slow {
    type Msg = EchoMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(
        &self,
        _: ActorRef<EchoMsg>,
        m: EchoMsg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        self.gauge.get().expect("bounded before use").handled();
        match m {
            EchoMsg::Ping(0) => {
                self.blocked.notify_one();
                self.gate.notified().await;
            }
            EchoMsg::Ping(k) => *n += k,
            EchoMsg::Count { reply } => reply.send(*n)?,
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }
}

async fn a_full_inbox_sheds_what_peers_send(c: &dyn Cluster) {
    let (a, b) = pair(c).await;
    let slow = Slow {
        gauge: Arc::default(),
        blocked: Arc::default(),
        gate: Arc::default(),
    };
    let (gauge, blocked, gate) = (slow.gauge.clone(), slow.blocked.clone(), slow.gate.clone());
    let (local, _) = Actor::spawn(None, slow, ()).await.unwrap();
    gauge.set(b.bound_inbox(local.get_id(), 5)).unwrap();
    b.register("slow", &local).unwrap();
    let remote = wait_whereis(&a, "slow").await;
    remote.cast(EchoMsg::Ping(0)).unwrap();
    blocked.notified().await;
    for _ in 0..20 {
        remote.cast(EchoMsg::Ping(1)).unwrap();
    }
    // Sent after the casts, so it arrives after them, to a full inbox: refused at once.
    call_t!(remote, |reply| EchoMsg::Count { reply }, 30_000).unwrap_err();
    let g = gauge.get().unwrap();
    assert_eq!(
        (g.queued_msgs(), g.shed_total(), g.limit_msgs()),
        (5, 16, 5)
    );
    gate.notify_one();
    // A call from the actor's own node is not counted, and queues behind the pings.
    let n = call_t!(local, |reply| EchoMsg::Count { reply }, 5000).unwrap();
    assert_eq!(n, 5, "the five queued pings were handled, the rest shed");
    assert_eq!(g.queued_msgs(), 0);
    // With room again, peers are heard again.
    let n = call_t!(remote, |reply| EchoMsg::Count { reply }, 5000).unwrap();
    assert_eq!(n, 5);
}

async fn an_oversized_message_is_refused_and_the_link_stays_up(c: &dyn Cluster) {
    let (a, _b) = pair(c).await;
    let e: ActorRef<EchoMsg> = a.spawn_remote("b", "echo", &0u64).await.unwrap();
    // Over the frame limit, again and again for three node-down timeouts: each is
    // refused, and none counts as traffic that would stand in for a heartbeat.
    let huge = "x".repeat(17 << 20);
    let mut every = tokio::time::interval(Duration::from_millis(100));
    let until = tokio::time::Instant::now() + opts().node_down_timeout * 3;
    while tokio::time::Instant::now() < until {
        every.tick().await;
        e.cast(EchoMsg::Echo(
            huge.clone(),
            ractor::concurrency::oneshot().0.into(),
        ))
        .unwrap();
    }
    let peers: Vec<String> = a.peers().into_iter().map(|p| p.name).collect();
    assert_eq!(peers, vec!["b".to_string()], "the link stayed up");
    assert_eq!(
        call_t!(e, EchoMsg::Echo, 5000, "still there".to_string()).unwrap(),
        "echo:still there"
    );
    // A sender that asks is told, with the size and the limit, and the message that
    // fits still goes.
    let refused = a
        .cast_checked(
            &e,
            EchoMsg::Echo(huge, ractor::concurrency::oneshot().0.into()),
        )
        .unwrap_err();
    match refused {
        SendError::TooLarge { bytes, limit_bytes } => {
            assert!(bytes > 17 << 20, "{bytes}");
            assert_eq!(limit_bytes, a.max_message_bytes());
            // These transports take frames of 1 MiB.
            assert!(
                limit_bytes < 1 << 20 && limit_bytes > (1 << 20) - 1024,
                "{limit_bytes}"
            );
        }
        other => panic!("{other}"),
    }
    let before = call_t!(e, |reply| EchoMsg::Count { reply }, 5000).unwrap();
    a.cast_checked(&e, EchoMsg::Ping(7)).unwrap();
    let after = call_t!(e, |reply| EchoMsg::Count { reply }, 5000).unwrap();
    assert_eq!(after, before + 7);
}

async fn wait_whereis(n: &Node, name: &str) -> ActorRef<EchoMsg> {
    for _ in 0..400 {
        if let Some(r) = n.whereis::<EchoMsg>(name).await.unwrap() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never became visible on {}", n.name());
}

async fn linked_child_failure_and_exit(c: &dyn Cluster) {
    let (a, _b) = pair(c).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (sup, _) = Actor::spawn(None, Sup, tx).await.unwrap();
    let child: ActorRef<EchoMsg> = a
        .spawn_remote_linked(sup.get_cell(), "b", "echo", &0u64)
        .await
        .unwrap();
    child
        .cast(EchoMsg::Panic("boom: disk on fire".into()))
        .unwrap();
    let ev = next_event(&mut rx).await;
    assert!(
        ev.starts_with("failed") && ev.contains("boom: disk on fire"),
        "{ev}"
    );
    let child: ActorRef<EchoMsg> = a
        .spawn_remote_linked(sup.get_cell(), "b", "echo", &0u64)
        .await
        .unwrap();
    child.cast(EchoMsg::Quit).unwrap();
    let ev = next_event(&mut rx).await;
    assert!(
        ev.starts_with("terminated")
            && ev.contains("node_down=false")
            && ev.contains("asked to quit"),
        "{ev}"
    );
}

async fn node_down_reaches_supervisor_and_monitor(c: &dyn Cluster) {
    let (a, b) = pair(c).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (sup, _) = Actor::spawn(None, Sup, tx).await.unwrap();
    let child: ActorRef<EchoMsg> = a
        .spawn_remote_linked(sup.get_cell(), "b", "echo", &0u64)
        .await
        .unwrap();
    // and an unlinked one, watched by a monitor
    let (mtx, mut mrx) = mpsc::unbounded_channel();
    let (mon, _) = Actor::spawn(None, Sup, mtx).await.unwrap();
    let other: ActorRef<EchoMsg> = a.spawn_remote("b", "echo", &0u64).await.unwrap();
    mon.get_cell().monitor(other.get_cell());
    assert_eq!(
        call_t!(child, EchoMsg::Echo, 5000, "up".to_string()).unwrap(),
        "echo:up"
    );
    let t0 = tokio::time::Instant::now();
    c.crash("b");
    let ev = next_event(&mut rx).await;
    assert!(
        ev.starts_with("terminated") && ev.contains("node_down=true"),
        "{ev}"
    );
    let took = t0.elapsed();
    let bound = 2 * opts().node_down_timeout;
    assert!(
        took <= bound,
        "node-down seen after {took:?}, bound {bound:?}"
    );
    let ev = next_event(&mut mrx).await;
    assert!(ev.contains("node_down=true"), "{ev}");
    assert!(
        child.cast(EchoMsg::Ping(1)).is_err(),
        "messages to a dead node's actors fail fast"
    );
    drop(b);
}

async fn new_incarnation_is_reconnected_and_old_refs_fail(c: &dyn Cluster) {
    let (a, b) = pair(c).await;
    let old: ActorRef<EchoMsg> = a.spawn_remote("b", "echo", &0u64).await.unwrap();
    c.crash("b");
    b.leave().await;
    let mut o = opts();
    o.peers = vec![a.peer_addr()];
    let b2 = Node::start_with(c.transport("b", 2), o).await.unwrap();
    b2.register_type("echo", Roles::ALL, || Echo);
    for _ in 0..400 {
        if a.peers()
            .iter()
            .any(|p| p.name == "b" && p.incarnation == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        a.peers()
            .iter()
            .any(|p| p.name == "b" && p.incarnation == 2),
        "a reconnects to the new incarnation"
    );
    for _ in 0..400 {
        if old.cast(EchoMsg::Ping(1)).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        old.cast(EchoMsg::Ping(1)).is_err(),
        "a ref to the old incarnation fails fast"
    );
    let fresh: ActorRef<EchoMsg> = a.spawn_remote("b", "echo", &1u64).await.unwrap();
    assert_eq!(
        call_t!(fresh, |reply| EchoMsg::Count { reply }, 5000).unwrap(),
        1
    );
}

macro_rules! both {
    ($($t:ident),*) => {
        mod quic { use super::*; $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $t() { super::$t(&Quic::new()).await }
        )* }
        mod sim { use super::*; $(
            #[tokio::test(start_paused = true)]
            async fn $t() { super::$t(&Sim::new()).await }
        )* }
    };
}

both!(
    remote_cast_call_and_spawn,
    an_oversized_message_is_refused_and_the_link_stays_up,
    a_full_inbox_sheds_what_peers_send,
    registry_across_nodes,
    linked_child_failure_and_exit,
    node_down_reaches_supervisor_and_monitor,
    new_incarnation_is_reconnected_and_old_refs_fail,
    unanswered_calls_are_given_up
);
