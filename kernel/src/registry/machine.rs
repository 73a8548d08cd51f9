//! The registry and the state machine that applies the committed log to it.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{JobRecord, JobsChange, MasterId, RegistryOp, RegistryRaft, RegistryReply};
use crate::ids::{AgentId, FrameworkId, TaskId};

/// Removed agents and frameworks remembered (the oldest removals are forgotten first).
pub const MAX_REMOVED: usize = 10_000;

/// What the masters agree on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Admitted agents and their node names.
    pub agents: BTreeMap<AgentId, String>,
    /// Removed agents and when (unix ms), until they are admitted again.
    pub removed_agents: BTreeMap<AgentId, u64>,
    /// Frameworks and their failover timeouts, ms.
    pub frameworks: BTreeMap<FrameworkId, u64>,
    /// Removed frameworks and when (unix ms).
    pub removed_frameworks: BTreeMap<FrameworkId, u64>,
    /// Roles' weights, in thousandths.
    pub weights: BTreeMap<String, u64>,
    /// The newest leader that said where its API is.
    pub leader: Option<LeaderRecord>,
    /// The built-in jobs framework's jobs.
    pub jobs: JobsImage,
    /// Roles' quotas set at runtime (`None`: cleared, even if the settings give one).
    pub quotas: BTreeMap<String, Option<crate::resources::Resources>>,
}

/// The built-in jobs framework's state, as the registry holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsImage {
    /// The next job number.
    pub next: u64,
    /// Every job kept (the framework forgets the oldest ended ones itself).
    pub jobs: BTreeMap<TaskId, JobRecord>,
    /// The framework id of each role.
    pub framework_ids: BTreeMap<String, FrameworkId>,
}

impl JobsImage {
    /// Applies one batch; true if it changed anything.
    fn apply(&mut self, c: &JobsChange) -> bool {
        let mut changed = false;
        if let Some(next) = c.next {
            changed |= std::mem::replace(&mut self.next, next) != next;
        }
        for r in &c.put {
            changed |= self.jobs.insert(r.job.task_id.clone(), r.clone()).as_ref() != Some(r);
        }
        for id in &c.delete {
            changed |= self.jobs.remove(id).is_some();
        }
        for (role, id) in &c.framework_ids {
            changed |= self.framework_ids.insert(role.clone(), id.clone()).as_ref() != Some(id);
        }
        changed
    }
}

/// A leader's word of where its API is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The master.
    pub master: MasterId,
    /// The term it leads in.
    pub term: u64,
    /// Its API's base URL.
    pub api: String,
}

/// Forgets the oldest entries of `removed` beyond [`MAX_REMOVED`].
fn bound<K: Ord + Clone>(removed: &mut BTreeMap<K, u64>) {
    while removed.len() > MAX_REMOVED {
        let oldest = removed
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
            .map(|(k, _)| k.clone())
            .expect("not empty");
        removed.remove(&oldest);
    }
}

impl Registry {
    /// The roles' weights and quotas set at runtime, as the master applies them (a
    /// weight of 0 thousandths is none).
    pub fn role_settings(&self) -> crate::master::config::RoleSettings {
        crate::master::config::RoleSettings {
            weights: self
                .weights
                .iter()
                .filter(|(_, milli)| **milli > 0)
                .map(|(role, milli)| (role.clone(), *milli as f64 / 1000.0))
                .collect(),
            quotas: self.quotas.clone(),
        }
    }

    /// The removed frameworks, oldest removal first.
    pub fn removed_in_order(&self) -> Vec<FrameworkId> {
        let mut by_time: Vec<(&u64, &FrameworkId)> = self
            .removed_frameworks
            .iter()
            .map(|(fw, unix_ms)| (unix_ms, fw))
            .collect();
        by_time.sort();
        by_time.into_iter().map(|(_, fw)| fw.clone()).collect()
    }

    /// Applies `op`; true if it changed anything.
    pub fn apply(&mut self, op: &RegistryOp) -> bool {
        match op {
            RegistryOp::AdmitAgent { agent_id, hostname } => {
                let back = self.removed_agents.remove(agent_id).is_some();
                let new = self.agents.insert(agent_id.clone(), hostname.clone());
                back || new.as_ref() != Some(hostname)
            }
            RegistryOp::RemoveAgent { agent_id, unix_ms } => {
                let was = self.agents.remove(agent_id).is_some();
                let new = self
                    .removed_agents
                    .insert(agent_id.clone(), *unix_ms)
                    .is_none();
                bound(&mut self.removed_agents);
                was || new
            }
            RegistryOp::AddFramework {
                framework_id,
                failover_timeout_ms,
            } => {
                if self.removed_frameworks.contains_key(framework_id) {
                    return false;
                }
                self.frameworks
                    .insert(framework_id.clone(), *failover_timeout_ms)
                    != Some(*failover_timeout_ms)
            }
            RegistryOp::RemoveFramework {
                framework_id,
                unix_ms,
            } => {
                let was = self.frameworks.remove(framework_id).is_some();
                let new = self
                    .removed_frameworks
                    .insert(framework_id.clone(), *unix_ms)
                    .is_none();
                bound(&mut self.removed_frameworks);
                was || new
            }
            RegistryOp::Leader { master, term, api } => {
                if self.leader.as_ref().is_some_and(|l| l.term > *term) {
                    return false;
                }
                let new = LeaderRecord {
                    master: *master,
                    term: *term,
                    api: api.clone(),
                };
                self.leader.replace(new.clone()) != Some(new)
            }
            RegistryOp::Jobs(c) => self.jobs.apply(c),
            RegistryOp::Batch(ops) => ops
                .iter()
                .fold(false, |changed, op| self.apply(op) | changed),
            RegistryOp::SetWeight { role, weight_milli } => {
                self.weights.insert(role.clone(), *weight_milli) != Some(*weight_milli)
            }
            RegistryOp::SetQuota { role, quota } => {
                self.quotas.insert(role.clone(), quota.clone()).as_ref() != Some(quota)
            }
        }
    }
}

type Err = StorageError<MasterId>;
type Membership = StoredMembership<MasterId, BasicNode>;

/// The last snapshot built or installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<MasterId, BasicNode>,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Inner {
    registry: Registry,
    last_applied: Option<LogId<MasterId>>,
    membership: Membership,
    snapshot: Option<Stored>,
    /// Snapshots built so far (names them).
    built: u64,
    /// Where snapshots are kept (none: in memory only, for tests of the log alone).
    file: Option<crate::statefile::StateFile>,
}

impl Inner {
    /// Makes `s` the current snapshot, on disk first when there is a file.
    fn keep(&mut self, s: Stored) -> Result<(), Err> {
        if let Some(f) = &mut self.file {
            let sig = Some(s.meta.signature());
            let bytes = plexus_net::codec::encode(&s)
                .map_err(|e| StorageIOError::write_snapshot(sig.clone(), AnyError::new(&e)))?;
            f.write(&bytes)
                .map_err(|e| StorageIOError::write_snapshot(sig, AnyError::new(&e)))?;
        }
        self.snapshot = Some(s);
        Ok(())
    }
}

/// The registry as the committed log made it, with its snapshots. Cheap to clone (the
/// clones share it).
#[derive(Debug, Clone, Default)]
pub struct RegistryMachine {
    inner: Arc<Mutex<Inner>>,
}

impl RegistryMachine {
    /// The state machine whose snapshots are kept in the state file `base` on `disk`
    /// (written whole, checksummed and synced before the snapshot is used: the log is
    /// purged only up to a snapshot on disk). Starts from the newest snapshot there.
    pub fn on(
        disk: Arc<dyn crate::statefile::Disk>,
        base: &std::path::Path,
    ) -> Result<RegistryMachine, crate::statefile::StateFileError> {
        let mut file = crate::statefile::StateFile::on(disk, base);
        let mut inner = Inner::default();
        if let Some(bytes) = file.read()? {
            let stored: Stored = plexus_net::codec::decode(&bytes).map_err(|e| {
                crate::statefile::StateFileError::Io {
                    path: base.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("registry snapshot: {e}"),
                    ),
                }
            })?;
            inner.registry = plexus_net::codec::decode(&stored.data).map_err(|e| {
                crate::statefile::StateFileError::Io {
                    path: base.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("registry in snapshot {}: {e}", stored.meta.snapshot_id),
                    ),
                }
            })?;
            inner.last_applied = stored.meta.last_log_id;
            inner.membership = stored.meta.last_membership.clone();
            inner.snapshot = Some(stored);
        }
        inner.file = Some(file);
        Ok(RegistryMachine {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest leader's record, as applied so far.
    pub fn leader(&self) -> Option<LeaderRecord> {
        self.lock().registry.leader.clone()
    }

    /// A copy of the registry as applied so far.
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }
}

impl RaftSnapshotBuilder<RegistryRaft> for RegistryMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<RegistryRaft>, Err> {
        let mut g = self.lock();
        let data = plexus_net::codec::encode(&g.registry)
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        g.built += 1;
        let id = match g.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, g.built),
            None => format!("none-{}", g.built),
        };
        let meta = SnapshotMeta {
            last_log_id: g.last_applied,
            last_membership: g.membership.clone(),
            snapshot_id: id,
        };
        g.keep(Stored {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<RegistryRaft> for RegistryMachine {
    type SnapshotBuilder = RegistryMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<MasterId>>, Membership), Err> {
        let g = self.lock();
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<RegistryReply>, Err>
    where
        I: IntoIterator<Item = Entry<RegistryRaft>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut g = self.lock();
        let mut out = Vec::new();
        for e in entries {
            assert!(
                g.last_applied.is_none_or(|l| l.index < e.log_id.index),
                "applied {} after {:?}",
                e.log_id,
                g.last_applied
            );
            g.last_applied = Some(e.log_id);
            let changed = match e.payload {
                EntryPayload::Blank => false,
                EntryPayload::Normal(op) => g.registry.apply(&op),
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(e.log_id), m);
                    true
                }
            };
            out.push(RegistryReply { changed });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> RegistryMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<MasterId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let data = snapshot.into_inner();
        let registry: Registry = plexus_net::codec::decode(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let mut g = self.lock();
        g.keep(Stored {
            meta: meta.clone(),
            data,
        })?;
        g.registry = registry;
        g.last_applied = meta.last_log_id;
        g.membership = meta.last_membership.clone();
        tracing::info!(
            index = ?meta.last_log_id.map(|l| l.index),
            "registry snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RegistryRaft>>, Err> {
        Ok(self.lock().snapshot.clone().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
