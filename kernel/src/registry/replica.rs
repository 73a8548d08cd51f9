//! A master's replica of the registry: its Raft, its storage and its peers, and the
//! lease that says whether it may lead.
//!
//! Masters are named in `master.peers`; each has the id of its place in that list sorted
//! by name ([`master_ids`]), so every master derives the same ids from the same list.
//! On a first start (an empty log) every master proposes the same membership; openraft
//! takes it once.
//!
//! A leader leads only while a quorum answered it recently: [`Lease`] holds until
//! [`ReplicaConfig::lease`] after the last quorum acknowledgement openraft reports. The
//! lease ends before a follower may start an election, so a leader cut off from its
//! quorum (or paused) stops offering before another master can be elected.

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft, RaftMetrics, ServerState};
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use plexus_actors::Node;
use plexus_net::Role;

use super::net::{raft_name, RaftMsg, RaftNet, RaftPeer};
use super::{LogStore, MasterId, Registry, RegistryMachine, RegistryOp, RegistryRaft};
use crate::statefile::Disk;

/// Why a replica could not start or write.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The peers list does not name this master, or names one twice.
    #[error("invalid value for `master.peers`: {0}")]
    Peers(String),
    /// The Raft log could not be opened.
    #[error(transparent)]
    Log(#[from] super::LogStoreError),
    /// The snapshot could not be read.
    #[error("registry snapshot: {0}")]
    Snapshot(#[from] crate::statefile::StateFileError),
    /// openraft refused the settings or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// This master does not lead (the leader's id, if known).
    #[error("not the leader (the leader is master {0:?})")]
    NotLeader(Option<MasterId>),
}

/// How a master's replica runs.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Every master's node name, this one's included.
    pub peers: Vec<String>,
    /// Where the log and snapshots are kept.
    pub dir: PathBuf,
    /// The disk the snapshots are on.
    pub disk: Arc<dyn Disk>,
    /// The leader's heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// The shortest election timeout, ms (the longest is twice it).
    pub election_timeout_ms: u64,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// Where the log is kept: `None`, a redb file in `dir`; else this file in memory (a
    /// simulated master's).
    pub log_in: Option<super::MemFile>,
}

impl ReplicaConfig {
    /// How long a leader leads after its last quorum acknowledgement: twice the
    /// shortest election timeout. A follower that voted for a leader starts an election
    /// only after openraft's leader lease (the longest election timeout, twice the
    /// shortest) and an election timeout more have passed since it last heard from it,
    /// at least three times the shortest: a leader's lease ends a third of that earlier.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms * 2)
    }
}

/// Each master's id: its place (from 1) in the peers sorted by name.
pub fn master_ids(peers: &[String]) -> Result<BTreeMap<MasterId, String>, ReplicaError> {
    let mut names: Vec<&String> = peers.iter().collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(ReplicaError::Peers(format!(
            "{peers:?} names a master twice"
        )));
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (i as MasterId + 1, n.clone()))
        .collect())
}

/// Whether this master may act as the leader now: set by the replica as Raft reports,
/// read by the master before each offer and launch, watched by what starts and stops the
/// leading master.
#[derive(Debug, Clone)]
pub struct Lease(Arc<watch::Sender<Option<(u64, Instant)>>>);

impl Default for Lease {
    fn default() -> Self {
        Lease(Arc::new(watch::channel(None).0))
    }
}

impl Lease {
    /// The term led, while the lease holds at `now`.
    pub fn term_at(&self, now: Instant) -> Option<u64> {
        let held = *self.0.borrow();
        held.and_then(|(term, until)| (now < until).then_some(term))
    }

    /// The term led, while the lease holds now.
    pub fn term(&self) -> Option<u64> {
        self.term_at(Instant::now())
    }

    /// Waits until the lease is held or given up (a term, or none) differently from
    /// `was`, and says how it is now.
    pub async fn changed_from(&self, was: Option<u64>) -> Option<u64> {
        let mut rx = self.0.subscribe();
        loop {
            let now = rx.borrow_and_update().map(|(t, _)| t);
            if now != was {
                return now;
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    fn set(&self, v: Option<(u64, Instant)>) {
        // The term only: a renewal of the same term wakes nobody.
        self.0.send_if_modified(|cur| {
            let changed = cur.map(|(t, _)| t) != v.map(|(t, _)| t);
            *cur = v;
            changed
        });
    }
}

/// What openraft's metrics say of this master's leadership: the term and the lease's end
/// if it leads. `seen` is when the metrics were read.
pub fn leading(
    m: &RaftMetrics<MasterId, BasicNode>,
    id: MasterId,
    lease: Duration,
    seen: Instant,
) -> Option<(u64, Instant)> {
    if m.state != ServerState::Leader || m.current_leader != Some(id) {
        return None;
    }
    let ack_ms = m.millis_since_quorum_ack?;
    let acked = seen.checked_sub(Duration::from_millis(ack_ms))?;
    Some((m.current_term, acked + lease))
}

/// A committed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Whether it changed the registry.
    pub changed: bool,
    /// Its place in the log.
    pub index: u64,
}

/// A master's replica of the registry.
pub struct Replica {
    /// This master's id.
    pub id: MasterId,
    /// Every master's id and node name.
    pub masters: BTreeMap<MasterId, String>,
    raft: Raft<RegistryRaft>,
    machine: RegistryMachine,
    peer: ActorRef<RaftMsg>,
    lease: Lease,
}

impl Replica {
    /// Starts the replica of the master on `node`: opens its log and snapshot, starts
    /// Raft and the actor other masters reach it by, and keeps its [`Lease`].
    pub async fn start(node: &Node, cfg: ReplicaConfig) -> Result<Replica, ReplicaError> {
        let masters = master_ids(&cfg.peers)?;
        let id = masters
            .iter()
            .find(|(_, n)| n.as_str() == node.name())
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                ReplicaError::Peers(format!(
                    "{:?} does not name this master, {:?}",
                    cfg.peers,
                    node.name()
                ))
            })?;
        cfg.disk.create_dir_all(&cfg.dir).map_err(|e| {
            ReplicaError::Peers(format!("cannot create {}: {e}", cfg.dir.display()))
        })?;
        let path = cfg.dir.join("registry.redb");
        let log = match &cfg.log_in {
            None => LogStore::open(&path)?,
            Some(file) => LogStore::open_in(file.clone(), &path)?,
        };
        let machine = RegistryMachine::on(cfg.disk.clone(), &cfg.dir.join("registry.snapshot"))?;
        let rc = openraft::Config {
            cluster_name: node.cluster().to_string(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.snapshot_every / 2,
            snapshot_max_chunk_size: 256 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let raft = Raft::new(
            id,
            Arc::new(rc),
            RaftNet::new(node.clone()),
            log,
            machine.clone(),
        )
        .await
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let (peer, _) = Actor::spawn(None, RaftPeer, raft.clone())
            .await
            .map_err(|e| ReplicaError::Raft(format!("starting the Raft actor: {e}")))?;
        node.register(&raft_name(node.name()), &peer)
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        node.restrict(peer.get_id(), Role::Master.into());
        let members: BTreeMap<MasterId, BasicNode> = masters
            .iter()
            .map(|(id, name)| (*id, BasicNode::new(name)))
            .collect();
        if !raft
            .is_initialized()
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?
        {
            // Every master proposes the same membership; the first to win an election
            // commits it, the others' proposals are then refused as already initialized.
            if let Err(e) = raft.initialize(members).await {
                debug!("initialize: {e}");
            }
        }
        let lease = Lease::default();
        tokio::spawn(keep_lease(raft.clone(), id, cfg.lease(), lease.clone()));
        info!(master = id, masters = ?masters, "registry replica started");
        Ok(Replica {
            id,
            masters,
            raft,
            machine,
            peer,
            lease,
        })
    }

    /// The registry as this master applied it.
    pub fn registry(&self) -> Registry {
        self.machine.registry()
    }

    /// The API of the master leading now, when it said where it is (none while no master
    /// leads, or before the leader's word is applied here).
    pub fn leader_api(&self) -> Option<String> {
        let (leader, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_leader?, m.current_term)
        };
        self.machine
            .leader()
            .filter(|l| l.master == leader && l.term == term)
            .map(|l| l.api)
    }

    /// This master's lease (whether it may lead now).
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// This master's Raft (for waiting on its metrics).
    pub fn raft(&self) -> &Raft<RegistryRaft> {
        &self.raft
    }

    /// openraft's metrics of this master.
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<RaftMetrics<MasterId, BasicNode>> {
        self.raft.metrics()
    }

    /// The node name of master `id`.
    pub fn name_of(&self, id: MasterId) -> Option<&str> {
        self.masters.get(&id).map(String::as_str)
    }

    /// Appends `op` to the log and waits until it is committed and applied; only the
    /// leader can.
    pub async fn write(&self, op: RegistryOp) -> Result<Written, ReplicaError> {
        match self.raft.client_write(op).await {
            Ok(r) => Ok(Written {
                changed: r.data.changed,
                index: r.log_id.index,
            }),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            )) => Err(ReplicaError::NotLeader(f.leader_id)),
            Err(e) => Err(ReplicaError::Raft(e.to_string())),
        }
    }

    /// Stops Raft and the actor other masters reach it by.
    pub async fn shutdown(&self) {
        self.lease.set(None);
        self.peer.stop(Some("the master stops".into()));
        if let Err(e) = self.raft.shutdown().await {
            warn!("stopping Raft: {e}");
        }
    }
}

/// Keeps `lease` as Raft reports, and lets it lapse on time when reports stop.
async fn keep_lease(raft: Raft<RegistryRaft>, id: MasterId, lease_for: Duration, lease: Lease) {
    let mut metrics = raft.metrics();
    let mut was: Option<u64> = None;
    // When the report looked at came (its ages are counted from then, not from when the
    // lease is looked at again: a paused master wakes with an old report).
    let mut seen = Instant::now();
    loop {
        let held = {
            let m = metrics.borrow_and_update();
            // A lease run out is none (and its watchers are woken).
            leading(&m, id, lease_for, seen).filter(|(_, until)| *until > Instant::now())
        };
        lease.set(held);
        let term = held.map(|(t, _)| t);
        if term != was {
            match term {
                Some(t) => info!(master = id, term = t, "leading"),
                None => info!(master = id, "not leading"),
            }
            was = term;
        }
        // Looked at again on the next report, or when the lease would end.
        let recheck = held.map_or(lease_for, |(_, until)| {
            until.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    lease.set(None);
                    return;
                }
                seen = Instant::now();
            }
            _ = tokio::time::sleep(recheck.max(Duration::from_millis(1))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(
        state: ServerState,
        leader: Option<MasterId>,
        ack_ms: Option<u64>,
    ) -> RaftMetrics<MasterId, BasicNode> {
        let mut m = RaftMetrics::new_initial(2);
        m.state = state;
        m.current_leader = leader;
        m.current_term = 7;
        m.millis_since_quorum_ack = ack_ms;
        m
    }

    #[test]
    fn a_leader_leads_for_its_lease_after_the_last_quorum_acknowledgement_only() {
        let lease = Duration::from_millis(300);
        let seen = Instant::now() + Duration::from_secs(10);
        let held = leading(
            &metrics(ServerState::Leader, Some(2), Some(100)),
            2,
            lease,
            seen,
        );
        assert_eq!(held, Some((7, seen - Duration::from_millis(100) + lease)));
        // Not yet acknowledged by a quorum, following, or another's leadership: no lease.
        for m in [
            metrics(ServerState::Leader, Some(2), None),
            metrics(ServerState::Follower, Some(2), Some(0)),
            metrics(ServerState::Candidate, None, None),
            metrics(ServerState::Leader, Some(3), Some(0)),
        ] {
            assert_eq!(leading(&m, 2, lease, seen), None, "{m:?}");
        }
    }

    #[test]
    fn masters_are_numbered_by_name_whatever_the_order_they_are_listed_in() {
        let a = master_ids(&["m3".into(), "m1".into(), "m2".into()]).unwrap();
        let b = master_ids(&["m1".into(), "m2".into(), "m3".into()]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[&1], "m1");
        let e = master_ids(&["m1".into(), "m1".into()]).unwrap_err();
        assert!(e.to_string().contains("master.peers"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_lapses_on_time_and_wakes_its_watchers() {
        let lease = Lease::default();
        let until = Instant::now() + Duration::from_millis(300);
        lease.set(Some((4, until)));
        assert_eq!(lease.term(), Some(4));
        assert_eq!(lease.term_at(until), None, "over at its end");
        let w = lease.clone();
        let watcher = tokio::spawn(async move { w.changed_from(Some(4)).await });
        lease.set(Some((4, until + Duration::from_millis(100))));
        lease.set(None);
        assert_eq!(watcher.await.unwrap(), None);
    }
}
