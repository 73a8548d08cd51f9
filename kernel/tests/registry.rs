//! The replicated registry on three masters over real QUIC links: one leads, its writes
//! reach every master, a new leader takes over when it goes, and a master that was away
//! catches up (by snapshot when the others compacted their logs past it).

use std::sync::Arc;
use std::time::Duration;

use plexus_actors::Node;
use plexus_config::{NodeSettings, PeerAddr, TlsSettings};
use plexus_kernel::registry::replica::{Replica, ReplicaConfig};
use plexus_kernel::registry::{MasterId, RegistryOp};
use plexus_net::Roles;

const NAMES: [&str; 3] = ["m1", "m2", "m3"];

fn settings(dir: &std::path::Path, name: &str, port: u16) -> NodeSettings {
    let (c, k) =
        plexus_net::tls::issue(dir, dir, name, Roles::from(plexus_net::Role::Master)).unwrap();
    let peers = NAMES
        .iter()
        .enumerate()
        .filter(|(_, n)| **n != name)
        .map(|(i, n)| PeerAddr {
            name: n.to_string(),
            addr: format!("127.0.0.1:{}", port_of(port, i)).parse().unwrap(),
        })
        .collect();
    NodeSettings {
        name: name.into(),
        listen: format!("127.0.0.1:{}", port_of(port, index(name)))
            .parse()
            .unwrap(),
        peers,
        tls: TlsSettings {
            ca_cert: Some(dir.join("ca.pem")),
            cert: Some(c),
            key: Some(k),
            dev: false,
        },
        heartbeat_interval: Duration::from_millis(100),
        node_down_timeout: Duration::from_millis(600),
        state_dir: dir.join(name),
        ..NodeSettings::default()
    }
}

fn index(name: &str) -> usize {
    NAMES.iter().position(|n| *n == name).unwrap()
}

fn port_of(base: u16, i: usize) -> u16 {
    base + i as u16
}

/// A free base port for three listeners.
fn free_base() -> u16 {
    loop {
        let l = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base < 65_000
            && (1..3).all(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

struct Master {
    node: Node,
    replica: Replica,
}

async fn start(dir: &std::path::Path, name: &str, base: u16) -> Master {
    let node = Node::start(&settings(dir, name, base)).await.unwrap();
    let cfg = ReplicaConfig {
        peers: NAMES.iter().map(|n| n.to_string()).collect(),
        dir: dir.join(name).join("registry"),
        disk: Arc::new(plexus_kernel::statefile::RealDisk),
        heartbeat_ms: 100,
        election_timeout_ms: 500,
        snapshot_every: 8,
        log_in: None,
    };
    let replica = Replica::start(&node, cfg).await.unwrap();
    Master { node, replica }
}

/// The master that leads, once one does (waiting on the first's view of the leader).
async fn leader(masters: &[&Master]) -> MasterId {
    let m = masters[0].replica.raft().metrics();
    let ids: Vec<MasterId> = masters.iter().map(|m| m.replica.id).collect();
    let mut w = m.clone();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let l = w.borrow_and_update().current_leader;
            if let Some(l) = l.filter(|l| ids.contains(l)) {
                return l;
            }
            w.changed().await.unwrap();
        }
    })
    .await
    .expect("a leader is elected");
    let lm = masters.iter().find(|m| m.replica.id == found).unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        lm.replica.lease().changed_from(None),
    )
    .await
    .expect("the leader holds its lease");
    found
}

fn admit(i: u32) -> RegistryOp {
    RegistryOp::AdmitAgent {
        agent_id: format!("a{i}").into(),
        hostname: format!("h{i}"),
    }
}

async fn applied(m: &Master, index: u64) {
    m.replica
        .raft()
        .wait(Some(Duration::from_secs(20)))
        .applied_index_at_least(Some(index), "applied")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_elected_its_writes_reach_every_master_and_a_new_one_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    plexus_net::tls::init_ca(dir.path(), "plexus").unwrap();
    let base = free_base();
    let mut masters = Vec::new();
    for n in NAMES {
        masters.push(start(dir.path(), n, base).await);
    }
    let all: Vec<&Master> = masters.iter().collect();
    let first = leader(&all).await;
    let lead = |id: MasterId| masters.iter().position(|m| m.replica.id == id).unwrap();
    let l = lead(first);
    let w = masters[l].replica.write(admit(1)).await.unwrap();
    assert!(w.changed);
    // A follower cannot write; it names the leader.
    let f = (l + 1) % 3;
    let e = masters[f].replica.write(admit(2)).await.unwrap_err();
    assert!(e.to_string().contains("not the leader"), "{e}");
    let at = masters[l]
        .replica
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .unwrap()
        .index;
    for m in &masters {
        applied(m, at).await;
        assert!(m
            .replica
            .registry()
            .agents
            .contains_key(&plexus_kernel::ids::AgentId::from("a1")));
    }

    // The leader goes: the other two elect one of themselves, which writes on.
    let gone = masters.remove(l);
    gone.replica.shutdown().await;
    gone.node.halt();
    let rest: Vec<&Master> = masters.iter().collect();
    let second = leader(&rest).await;
    assert_ne!(second, first);
    let l2 = masters.iter().position(|m| m.replica.id == second).unwrap();
    // Enough writes for the survivors to snapshot and purge their logs past the one away.
    let mut at = 0;
    for i in 2..30 {
        at = masters[l2].replica.write(admit(i)).await.unwrap().index;
    }
    masters[l2]
        .replica
        .raft()
        .wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > 3),
            "the log is compacted",
        )
        .await
        .unwrap();

    // It comes back with its log and snapshot, and catches up by snapshot.
    let name = NAMES[first as usize - 1];
    drop(gone);
    let back = start(dir.path(), name, base).await;
    applied(&back, at).await;
    assert_eq!(back.replica.registry(), masters[l2].replica.registry());
    assert_eq!(back.replica.registry().agents.len(), 29);
}
