//! Distributed actors in one program: three nodes with certificates from one cluster CA,
//! a counter actor spawned on another node, casts and calls to it, a cluster-wide name,
//! and a supervisor that restarts its remote child elsewhere when the child's node dies.
//!
//! Run it with `cargo run --example counter`. The three nodes live in this one process on
//! 127.0.0.1 for the demonstration; in a datacenter each is a process of its own on its own
//! machine, started the same way from its settings.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use plexus::actors::{is_node_down, Node, RemoteMessage};
use plexus::config::{NodeSettings, PeerAddr, TlsSettings};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::mpsc;

/// The counter's messages. `RemoteMessage` makes them travel between nodes; a variant with
/// an `RpcReplyPort` is a call whose answer travels back.
#[derive(Debug, RemoteMessage)]
enum Counter {
    Add(u64),
    Get(RpcReplyPort<u64>),
}

/// A counter: its state starts at the spawn argument.
struct CounterActor;

impl Actor for CounterActor {
    type Msg = Counter;
    type State = u64;
    type Arguments = u64;

    async fn pre_start(&self, _: ActorRef<Counter>, start: u64) -> Result<u64, ActorProcessingErr> {
        Ok(start)
    }

    async fn handle(
        &self,
        _: ActorRef<Counter>,
        msg: Counter,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Counter::Add(k) => *n += k,
            Counter::Get(reply) => {
                // The caller may have given up waiting; nothing to do then.
                reply.send(*n).ok();
            }
        }
        Ok(())
    }
}

/// Settings of node `name`, with a certificate issued by the CA in `ca_dir`, listening on
/// a free port of 127.0.0.1, joining `peers`.
fn settings(ca_dir: &Path, name: &str, peers: &[PeerAddr]) -> anyhow::Result<NodeSettings> {
    let (cert, key) = plexus::net::tls::issue(ca_dir, ca_dir, name, plexus::net::Role::Client)?;
    Ok(NodeSettings {
        name: name.into(),
        listen: "127.0.0.1:0".parse()?,
        peers: peers.to_vec(),
        tls: TlsSettings {
            ca_cert: Some(ca_dir.join("ca.pem")),
            cert: Some(cert),
            key: Some(key),
            dev: false,
        },
        heartbeat_interval: Duration::from_millis(100),
        node_down_timeout: Duration::from_millis(600),
        state_dir: ca_dir.join(name),
        ..NodeSettings::default()
    })
}

/// A supervisor keeping one counter alive on some node other than its own: when the
/// counter's node goes down, it starts a new one on the next node in `nodes`.
struct Keeper {
    node: Node,
    nodes: Vec<String>,
    events: mpsc::UnboundedSender<String>,
}

struct KeeperState {
    child: ActorRef<Counter>,
    on: usize,
}

impl Keeper {
    async fn start_child(
        &self,
        me: &ActorRef<()>,
        on: usize,
    ) -> Result<KeeperState, ActorProcessingErr> {
        let node = &self.nodes[on];
        let child = self
            .node
            .spawn_remote_linked(me.get_cell(), node, "counter", &100u64)
            .await?;
        self.events
            .send(format!("keeper: child started on {node}"))?;
        Ok(KeeperState { child, on })
    }
}

impl Actor for Keeper {
    type Msg = ();
    type State = KeeperState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<()>, _: ()) -> Result<KeeperState, ActorProcessingErr> {
        self.start_child(&me, 0).await
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<()>,
        event: SupervisionEvent,
        st: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorTerminated(cell, _, reason) = &event {
            if cell.get_id() == st.child.get_id() && is_node_down(reason.as_deref()) {
                self.events.send(format!(
                    "keeper: child's node is down ({})",
                    reason.as_deref().unwrap_or_default()
                ))?;
                let next = (st.on + 1) % self.nodes.len();
                *st = self.start_child(&me, next).await?;
            }
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // One cluster CA; every node gets a certificate naming it (`plexus certs` does the
    // same from the command line).
    plexus::net::tls::init_ca(dir.path(), "plexus")?;

    let n1 = Node::start(&settings(dir.path(), "n1", &[])?).await?;
    let seed: PeerAddr = format!("n1@{}", n1.addr()).parse()?; // a typed error: `?` works
    let n2 = Node::start(&settings(dir.path(), "n2", std::slice::from_ref(&seed))?).await?;
    let n3 = Node::start(&settings(dir.path(), "n3", &[seed])?).await?;
    // Nodes that may host counters say so; a spawn of an unknown type is refused.
    for n in [&n2, &n3] {
        n.register_type("counter", plexus::net::Role::Client, || CounterActor);
    }
    n1.wait_for_peers(&["n2", "n3"], Duration::from_secs(10))
        .await?;
    n2.wait_for_peers(&["n3"], Duration::from_secs(10)).await?;
    println!("cluster: n1, n2, n3 connected over QUIC with mutual TLS");

    // Spawn on another node; the reference works as a local one.
    let c: ActorRef<Counter> = n1.spawn_remote("n2", "counter", &0u64).await?;
    for _ in 0..10 {
        c.cast(Counter::Add(1))?;
    }
    let n = call_t!(c, Counter::Get, 1000)?;
    println!("counter on n2 after 10 casts from n1: {n}");
    assert_eq!(n, 10);

    // A cluster-wide name: registered on n2, looked up from n1.
    let (named, _) = Actor::spawn(None, CounterActor, 42).await?;
    n2.register("counter.main", &named)?;
    let found: ActorRef<Counter> = n1
        .whereis_wait("counter.main", Duration::from_secs(5))
        .await
        .context("looking up counter.main")?;
    println!(
        "counter.main (on n2) = {}",
        call_t!(found, Counter::Get, 1000)?
    );

    // Supervision across nodes: the keeper on n1 keeps a counter on n3, then on n2.
    let (tx, mut events) = mpsc::unbounded_channel();
    let keeper = Keeper {
        node: n1.clone(),
        nodes: vec!["n3".into(), "n2".into()],
        events: tx,
    };
    let (k, _) = Actor::spawn(None, keeper, ()).await?;
    println!("{}", events.recv().await.context("keeper stopped")?);
    // n3's machine dies: nobody says goodbye; n1 notices the silence.
    n3.halt();
    println!("n3 halted");
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .context("no word from the keeper")?
            .context("keeper stopped")?;
        println!("{e}");
    }
    k.stop(None);
    for n in [&n1, &n2] {
        n.leave().await;
    }
    println!("done");
    Ok(())
}
