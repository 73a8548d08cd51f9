//! What an authenticated peer may do to a node: a valid certificate proves who the peer
//! is; its roles and what it was handed decide what it may do. Each test speaks the wire
//! protocol directly, as a hostile peer would.

use std::net::SocketAddr;
use std::time::Duration;

use plexus_actors::__private::{DownReason, Wire};
use plexus_actors::names::{NameRule, MASTER_NAME};
use plexus_actors::{Node, NodeOptions, Refused, RemoteMessage};
use plexus_net::{Link, LocalIdentity, Role, Roles, SimFaults, SimNetwork, SimTransport};
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};

#[derive(Debug, RemoteMessage)]
enum Probe {
    Get(RpcReplyPort<u64>),
}

struct Holder;

impl Actor for Holder {
    type Msg = Probe;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Probe>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Probe>,
        m: Probe,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match m {
            Probe::Get(r) => r.send(7)?,
        }
        Ok(())
    }
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], i))
}

fn ident(name: &str, roles: Roles, port: u16) -> LocalIdentity {
    LocalIdentity {
        cluster: "t".into(),
        name: name.into(),
        incarnation: 1,
        addr: addr(port),
        roles,
    }
}

fn opts(peers: Vec<plexus_net::PeerAddr>) -> NodeOptions {
    NodeOptions {
        peers,
        call_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(100),
        node_down_timeout: Duration::from_secs(30),
        connect_all: false,
    }
}

async fn node(net: &SimNetwork, name: &str, roles: impl Into<Roles>, port: u16) -> Node {
    let t = net.bind(ident(name, roles.into(), port), 1 << 20).unwrap();
    Node::start_with(t, opts(vec![])).await.unwrap()
}

/// A master node `m` whose actor holds the master's name, and an agent node `b`
/// connected to it.
async fn master_and_agent(seed: u64) -> (SimNetwork, Node, Node, ActorRef<Probe>) {
    let net = SimNetwork::new(seed, SimFaults::default());
    let master = node(&net, "m", Role::Master, 1).await;
    let agent = node(&net, "b", Role::Agent, 2).await;
    agent.join(master.peer_addr());
    master
        .wait_for_peers(&["b"], Duration::from_secs(10))
        .await
        .unwrap();
    let (named, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    master.register(MASTER_NAME, &named).unwrap();
    (net, master, agent, named)
}

/// A peer that speaks frames by hand: dials `to` and reads everything it is sent in the
/// background, handing back the frames as they come.
struct Rogue {
    tx: plexus_net::FrameSender,
    rx: tokio::sync::mpsc::UnboundedReceiver<Wire>,
    /// Frames received while waiting for replies.
    seen: Vec<Wire>,
    _t: std::sync::Arc<SimTransport>,
}

impl Rogue {
    async fn dial(
        net: &SimNetwork,
        name: &str,
        roles: impl Into<Roles>,
        port: u16,
        to: &Node,
    ) -> Rogue {
        let t = net.bind(ident(name, roles.into(), port), 1 << 20).unwrap();
        let Link { tx, mut rx, .. } = plexus_net::Transport::dial(&*t, to.peer_addr())
            .await
            .unwrap();
        let (out, frames) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(f)) = rx.next().await {
                let Ok(w) = plexus_net::codec::decode::<Wire>(&f) else {
                    return;
                };
                if out.send(w).is_err() {
                    return;
                }
            }
        });
        Rogue {
            tx,
            rx: frames,
            seen: Vec::new(),
            _t: t,
        }
    }

    fn send(&self, w: &Wire) {
        self.tx.send(w).unwrap();
    }

    /// Waits for the reply to call `id`: the node handles a link's frames in order, so
    /// everything sent before the call has been dealt with.
    async fn reply(&mut self, id: u64) -> Result<serde_bytes::ByteBuf, String> {
        let wait = async {
            while let Some(w) = self.rx.recv().await {
                match w {
                    Wire::Reply { id: got, body } if got == id => return body,
                    w => self.seen.push(w),
                }
            }
            panic!("the node closed the link");
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("the node answers the call")
    }
}

fn refused(n: &Node, op: Refused) -> u64 {
    n.refusals().get(&op).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reaches_only_what_it_was_handed_and_stops_only_what_it_supervises() {
    let net = SimNetwork::new(1, SimFaults::default());
    let master = node(&net, "m", Role::Master, 1).await;
    let (hidden, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    let (named, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    master.register(MASTER_NAME, &named).unwrap();
    let mut rogue = Rogue::dial(&net, "aaa", Role::Agent, 2, &master).await;

    // A stop of every actor id the counter could have handed out, a message and a
    // monitor for the actor that holds no name.
    let top = hidden.get_id().pid().max(named.get_id().pid()) + 50;
    for pid in 0..top {
        rogue.send(&Wire::Stop {
            pid,
            reason: Some("mine now".into()),
        });
    }
    rogue.send(&Wire::Cast {
        to: hidden.get_id().pid(),
        body: vec![0],
    });
    rogue.send(&Wire::Watch {
        pid: hidden.get_id().pid(),
    });
    rogue.send(&Wire::Call {
        to: hidden.get_id().pid(),
        id: 1,
        body: vec![0],
    });
    let e = rogue.reply(1).await.unwrap_err();
    assert!(e.contains("no actor"), "{e}");

    assert_eq!(hidden.get_status(), ActorStatus::Running);
    assert_eq!(named.get_status(), ActorStatus::Running);
    assert_eq!(refused(&master, Refused::Stop), top);
    assert_eq!(refused(&master, Refused::Cast), 1);
    assert_eq!(refused(&master, Refused::Call), 1);
    assert_eq!(refused(&master, Refused::Watch), 1);
    // The refused message and monitor are answered as for an actor that does not
    // exist: whether an id is in use is not told.
    let noproc = Wire::Down {
        pid: hidden.get_id().pid(),
        reason: DownReason::NoProc,
    };
    assert_eq!(rogue.seen.iter().filter(|w| **w == noproc).count(), 2);

    // The named actor is public: a call to it is delivered (and fails only to decode).
    rogue.send(&Wire::Call {
        to: named.get_id().pid(),
        id: 2,
        body: vec![],
    });
    let e = rogue.reply(2).await.unwrap_err();
    assert!(!e.contains("no actor"), "{e}");
    assert_eq!(refused(&master, Refused::Call), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_carry_authority_go_by_role_and_are_never_taken_from_a_live_holder() {
    let (net, master, agent, _m_actor) = master_and_agent(2).await;
    let (b_actor, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    agent.register("plexus.agent:b", &b_actor).unwrap();
    agent
        .whereis_wait::<Probe>(MASTER_NAME, Duration::from_secs(10))
        .await
        .unwrap();
    master
        .whereis_wait::<Probe>("plexus.agent:b", Duration::from_secs(10))
        .await
        .unwrap();
    let before = refused(&agent, Refused::Register);

    // "aaa" sorts before every real node: with lowest-name-wins it would take any name.
    for (name, roles, port) in [("aaa", Roles::from(Role::Agent), 3), ("aab", Roles::ALL, 4)] {
        for target in [&agent, &master] {
            let mut rogue = Rogue::dial(&net, name, roles, port, target).await;
            for claim in [
                MASTER_NAME,
                "plexus.agent:b",
                "plexus.agent:m",
                "plexus.master:x",
            ] {
                rogue.send(&Wire::Register {
                    name: claim.into(),
                    pid: 1,
                    msg_type: std::any::type_name::<Probe>().into(),
                    // The highest rank does not lift the rule on who may hold a name. (A
                    // master outranking the holder of the master's name is an election's
                    // outcome: `ranked_claims_on_the_masters_name_follow_the_newest_term`.)
                    rank: if roles.has(Role::Master) { 0 } else { u64::MAX },
                });
            }
            rogue.send(&Wire::Call {
                to: u64::MAX,
                id: 9,
                body: vec![],
            });
            assert!(rogue.reply(9).await.is_err());
            drop(rogue);
            net.crash(name);
        }
    }
    for n in [&master, &agent] {
        let m = n.whereis::<Probe>(MASTER_NAME).await.unwrap().unwrap();
        let b = n.whereis::<Probe>("plexus.agent:b").await.unwrap().unwrap();
        assert_eq!(ractor::call_t!(m, Probe::Get, 5000).unwrap(), 7);
        assert_eq!(ractor::call_t!(b, Probe::Get, 5000).unwrap(), 7);
        assert!(n
            .whereis::<Probe>("plexus.master:x")
            .await
            .unwrap()
            .is_none());
    }
    // aaa (agent): 4 names refused; aab (every role): the live holders' two names
    // refused, `plexus.agent:m` refused (not its own), `plexus.master:x` allowed.
    assert_eq!(refused(&agent, Refused::Register) - before, 4 + 3);
    assert!(matches!(
        plexus_actors::names::rule(MASTER_NAME, "aaa", Role::Client.into()),
        NameRule::Refused(_)
    ));
    // The node's own check says the same for local registrations.
    let e = agent.register(MASTER_NAME, &b_actor).unwrap_err();
    assert!(e.to_string().contains("master role"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_actor_is_reached_only_by_peers_of_its_roles_whatever_its_name() {
    let net = SimNetwork::new(5, SimFaults::default());
    let master = node(&net, "m", Role::Master, 1).await;
    let (raft, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    master.register("plexus.master:raft:m", &raft).unwrap();
    master.restrict(raft.get_id(), Role::Master.into());
    let to = raft.get_id().pid();

    let mut agent = Rogue::dial(&net, "aaa", Role::Agent, 2, &master).await;
    agent.send(&Wire::Cast { to, body: vec![0] });
    agent.send(&Wire::Call {
        to,
        id: 1,
        body: vec![],
    });
    let e = agent.reply(1).await.unwrap_err();
    assert!(e.contains("no actor"), "{e}");
    assert_eq!(refused(&master, Refused::Cast), 1);
    assert_eq!(refused(&master, Refused::Call), 1);

    // Another master's call is delivered (and fails only to decode).
    let mut peer = Rogue::dial(&net, "m2", Role::Master, 3, &master).await;
    peer.send(&Wire::Call {
        to,
        id: 2,
        body: vec![],
    });
    let e = peer.reply(2).await.unwrap_err();
    assert!(!e.contains("no actor"), "{e}");
    assert_eq!(refused(&master, Refused::Call), 1);
}

/// Waits until `n` sees `name` held by node `want`.
async fn held_by(n: &Node, name: &str, want: &str) {
    let mut changes = n.changes();
    let wait = async {
        while n.name_holder(name).as_deref() != Some(want) {
            changes.changed().await.expect("node running");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{} sees {name:?} held by {want}", n.name()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranked_claims_on_the_masters_name_follow_the_newest_term() {
    let (net, m1, agent, _m1_actor) = master_and_agent(4).await;
    let m2 = node(&net, "m2", Role::Master, 3).await;
    m2.join(m1.peer_addr());
    agent.join(m2.peer_addr());
    for n in [&m1, &agent] {
        n.wait_for_peers(&["m2"], Duration::from_secs(10))
            .await
            .unwrap();
    }
    held_by(&m2, MASTER_NAME, "m").await;

    // m2, leading in term 2, takes the name from m's claim of rank 0 on every node.
    let (m2_actor, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    m2.register_ranked(MASTER_NAME, &m2_actor, 2).unwrap();
    for n in [&m1, &m2, &agent] {
        held_by(n, MASTER_NAME, "m2").await;
    }
    let found = agent.whereis::<Probe>(MASTER_NAME).await.unwrap().unwrap();
    assert_eq!(ractor::call_t!(found, Probe::Get, 5000).unwrap(), 7);

    // A stale leader (term 1) cannot take it back; the leader of term 3 does.
    let (stale, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    let e = m1.register_ranked(MASTER_NAME, &stale, 1).unwrap_err();
    assert!(e.to_string().contains("m2"), "{e}");
    m1.register_ranked(MASTER_NAME, &stale, 3).unwrap();
    for n in [&m1, &m2, &agent] {
        held_by(n, MASTER_NAME, "m").await;
    }
    // The outranked holder's release changes nothing for the others.
    m2.unregister(MASTER_NAME);
    assert_eq!(agent.name_holder(MASTER_NAME).as_deref(), Some("m"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_spawn_needs_a_type_exported_to_the_callers_role() {
    let net = SimNetwork::new(3, SimFaults::default());
    let host = node(&net, "host", Role::Agent, 1).await;
    host.register_type("holder", Role::Master, || Holder);
    let client = node(&net, "c", Role::Client, 2).await;
    let master = node(&net, "m", Role::Master, 3).await;
    for n in [&client, &master] {
        n.join(host.peer_addr());
        n.wait_for_peers(&["host"], Duration::from_secs(10))
            .await
            .unwrap();
    }
    let e = client
        .spawn_remote::<Probe, _>("host", "holder", &())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not export"), "{e}");
    assert_eq!(refused(&host, Refused::Spawn), 1);
    let r: ActorRef<Probe> = master.spawn_remote("host", "holder", &()).await.unwrap();
    assert_eq!(ractor::call_t!(r, Probe::Get, 5000).unwrap(), 7);
}

/// Cases of [`random_frames_and_handshakes_from_an_authenticated_peer_change_nothing_but_refusals`]:
/// `PLEXUS_FUZZ_CASES` (a million for a full run; fewer by default to keep the suite quick).
fn fuzz_cases() -> u64 {
    std::env::var("PLEXUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// One random protocol message, biased toward what could do harm: the node's real
/// actor ids, the names that carry authority, the types it hosts.
fn random_wire(rng: &mut impl rand::Rng, pids: &[u64]) -> Wire {
    let pid = |rng: &mut dyn rand::RngCore| -> u64 {
        match rng.next_u32() % 4 {
            0 => u64::from(rng.next_u32()),
            1 => rng.next_u64(),
            _ => pids[(rng.next_u32() as usize) % pids.len()],
        }
    };
    let bytes = |rng: &mut dyn rand::RngCore| -> Vec<u8> {
        let n = (rng.next_u32() % 48) as usize;
        (0..n).map(|_| rng.next_u32() as u8).collect()
    };
    let names = [
        MASTER_NAME,
        "plexus.master:standby",
        "plexus.agent:m",
        "plexus.agent:rogue",
        "plexus.scheduler:m:1:jobs",
        "plexus.scheduler:rogue:1:jobs",
        "plexus.anything",
        "svc",
    ];
    let name =
        |rng: &mut dyn rand::RngCore| names[(rng.next_u32() as usize) % names.len()].to_string();
    let text = |rng: &mut dyn rand::RngCore| String::from_utf8_lossy(&bytes(rng)).into_owned();
    match rng.random_range(0..14u32) {
        0 => Wire::Heartbeat,
        1 => Wire::Cast {
            to: pid(rng),
            body: bytes(rng),
        },
        2 => Wire::Call {
            to: pid(rng),
            id: rng.next_u64(),
            body: bytes(rng),
        },
        3 => Wire::Reply {
            id: rng.next_u64(),
            body: if rng.random() {
                Ok(serde_bytes::ByteBuf::from(bytes(rng)))
            } else {
                Err(text(rng))
            },
        },
        4 => Wire::Spawn {
            id: rng.next_u64(),
            type_name: if rng.random() {
                "holder".into()
            } else {
                text(rng)
            },
            msg_type: if rng.random() {
                std::any::type_name::<Probe>().into()
            } else {
                text(rng)
            },
            args: bytes(rng),
            linked: rng.random(),
            grant_to: rng.random::<bool>().then(|| text(rng)),
        },
        5 => Wire::Spawned {
            id: rng.next_u64(),
            result: if rng.random() {
                Ok(pid(rng))
            } else {
                Err(text(rng))
            },
        },
        6 => Wire::Watch { pid: pid(rng) },
        7 => Wire::Down {
            pid: pid(rng),
            reason: match rng.random_range(0..3u32) {
                0 => DownReason::NoProc,
                1 => DownReason::Failed(text(rng)),
                _ => DownReason::Terminated(Some(text(rng))),
            },
        },
        8 | 9 => Wire::Stop {
            pid: pid(rng),
            reason: Some(text(rng)),
        },
        10 | 11 => Wire::Register {
            name: name(rng),
            pid: pid(rng),
            msg_type: std::any::type_name::<Probe>().into(),
            rank: pid(rng),
        },
        12 => Wire::Unregister { name: name(rng) },
        _ => Wire::Peers {
            peers: vec![(
                if rng.random() { "b".into() } else { text(rng) },
                SocketAddr::from(([10, 9, 9, 9], rng.random_range(1..60_000u16))),
            )],
        },
    }
}

/// A client-role peer with a valid identity sends random frames (and, now and then,
/// bytes that are no frame, and a new handshake with random incarnation, address and
/// dial tag). The node must not crash, must keep every name and actor it had, and must
/// keep serving its real peers; what it refused is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_and_handshakes_from_an_authenticated_peer_change_nothing_but_refusals() {
    use rand::{Rng, RngCore, SeedableRng};
    let cases = fuzz_cases();
    let (net, master, agent, named) = master_and_agent(4).await;
    master.register_type("holder", Role::Master, || Holder);
    let (hidden, _) = Actor::spawn(None, Holder, ()).await.unwrap();
    let pids: Vec<u64> = (0..8)
        .map(|k| named.get_id().pid() + k)
        .chain([hidden.get_id().pid()])
        .collect();
    let from_agent = agent
        .whereis_wait::<Probe>(MASTER_NAME, Duration::from_secs(10))
        .await
        .unwrap();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut port = 100u16;
    let mut rogue: Option<(plexus_net::FrameSender, std::sync::Arc<SimTransport>)> = None;
    let (mut sent, mut handshakes, mut garbage) = (0u64, 0u64, 0u64);
    while sent < cases {
        if rogue.as_ref().is_none_or(|(tx, _)| tx.closed().is_some()) || rng.random_ratio(1, 200) {
            // A new handshake: a new incarnation at a new address, a random dial tag.
            if let Some((_, t)) = rogue.take() {
                plexus_net::Transport::shutdown(&*t);
            }
            port = port.wrapping_add(1).max(100);
            let mut id = ident("rogue", Role::Client.into(), port);
            id.incarnation = rng.next_u64();
            let t = net.bind(id, 1 << 20).unwrap();
            let tag = plexus_net::DialTag {
                dial: rng.next_u64(),
                replaces: rng.random::<bool>().then(|| plexus_net::LinkKey {
                    dialer_incarnation: rng.next_u64(),
                    dial: rng.next_u64(),
                }),
            };
            handshakes += 1;
            match plexus_net::Transport::dial_tagged(&*t, master.peer_addr(), tag).await {
                Ok(Link { tx, mut rx, .. }) => {
                    tokio::spawn(async move { while let Ok(Some(_)) = rx.next().await {} });
                    rogue = Some((tx, t));
                }
                Err(_) => continue,
            }
        }
        let (tx, _) = rogue.as_ref().unwrap();
        let r = if rng.random_ratio(1, 2_000) {
            garbage += 1;
            let junk: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
            tx.send_raw(&junk)
        } else {
            tx.send(&random_wire(&mut rng, &pids))
        };
        sent += 1;
        if r.is_err() {
            rogue = None;
        }
        if sent % 1_000 == 0 {
            // Keep pace with the node: a real peer's call goes through in between.
            assert_eq!(ractor::call_t!(from_agent, Probe::Get, 10_000).unwrap(), 7);
        }
    }
    assert_eq!(named.get_status(), ActorStatus::Running);
    assert_eq!(hidden.get_status(), ActorStatus::Running);
    for n in [&master, &agent] {
        let m = n.whereis::<Probe>(MASTER_NAME).await.unwrap().unwrap();
        assert_eq!(ractor::call_t!(m, Probe::Get, 10_000).unwrap(), 7);
        for kernel in [
            "plexus.agent:m",
            "plexus.agent:rogue",
            "plexus.anything",
            "plexus.master:standby",
        ] {
            assert!(
                n.whereis::<Probe>(kernel).await.unwrap().is_none(),
                "{kernel} on {}",
                n.name()
            );
        }
    }
    let refusals = master.refusals();
    let total: u64 = refusals.values().sum();
    println!(
        "fuzz: {sent} frames ({garbage} not frames), {handshakes} handshakes; refused {total}: {refusals:?}"
    );
    assert!(refusals.get(&Refused::Stop).copied().unwrap_or(0) > 0);
}
