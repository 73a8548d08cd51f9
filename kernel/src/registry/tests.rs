//! The registry's storage against openraft's storage suite, and the registry's rules.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::*;

/// A fresh log (in a temporary directory, kept alive by the guard) and state machine.
struct Fresh;

impl StoreBuilder<RegistryRaft, LogStore, RegistryMachine, tempfile::TempDir> for Fresh {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, RegistryMachine), StorageError<MasterId>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = LogStore::open(&dir.path().join("raft.redb")).expect("opens");
        let disk = std::sync::Arc::new(crate::statefile::RealDisk);
        let sm = RegistryMachine::on(disk, &dir.path().join("snapshot")).expect("opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_log_store_and_registry_pass_openrafts_storage_suite() {
    Suite::test_all(Fresh).expect("storage suite");
}

#[tokio::test]
async fn the_log_and_vote_outlive_the_process_that_wrote_them() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft.redb");
    let entry = |i: u64| Entry::<RegistryRaft> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(RegistryOp::SetWeight {
            role: "prod".into(),
            weight_milli: i * 1000,
        }),
    };
    {
        let mut log = LogStore::open(&path).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        let mut cb = Vec::new();
        for i in 1..=3 {
            cb.push(entry(i));
        }
        log.blocking_append(cb).await.unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let got = log.try_get_log_entries(1..4).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].log_id.index, 3);
}

#[tokio::test]
async fn a_snapshot_outlives_the_process_and_the_registry_restarts_from_it() {
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("snapshot");
    let disk = std::sync::Arc::new(crate::statefile::RealDisk);
    let admitted = {
        let mut sm = RegistryMachine::on(disk.clone(), &base).unwrap();
        let e = Entry::<RegistryRaft> {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 7),
            payload: EntryPayload::Normal(RegistryOp::AdmitAgent {
                agent_id: "a1".into(),
                hostname: "h1".into(),
            }),
        };
        sm.apply([e]).await.unwrap();
        sm.build_snapshot().await.unwrap();
        sm.registry()
    };
    let mut again = RegistryMachine::on(disk, &base).unwrap();
    assert_eq!(again.registry(), admitted);
    let (applied, _) = again.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(7));
    let snap = again.get_current_snapshot().await.unwrap().expect("kept");
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(7));
}

#[test]
fn a_removed_agent_is_remembered_until_admitted_again_and_a_removed_framework_stays_out() {
    let mut r = Registry::default();
    let admit = RegistryOp::AdmitAgent {
        agent_id: "a1".into(),
        hostname: "h1".into(),
    };
    assert!(r.apply(&admit));
    assert!(!r.apply(&admit), "the same admission changes nothing");
    assert!(r.apply(&RegistryOp::RemoveAgent {
        agent_id: "a1".into(),
        unix_ms: 5
    }));
    assert!(r.agents.is_empty());
    assert_eq!(r.removed_agents.get(&AgentId::from("a1")), Some(&5));
    assert!(
        r.apply(&admit),
        "an agent that comes back is admitted again"
    );
    assert!(r.removed_agents.is_empty());
    let add = RegistryOp::AddFramework {
        framework_id: "f1".into(),
        failover_timeout_ms: 60_000,
    };
    assert!(r.apply(&add));
    assert!(r.apply(&RegistryOp::RemoveFramework {
        framework_id: "f1".into(),
        unix_ms: 6
    }));
    assert!(!r.apply(&add));
    assert!(r.frameworks.is_empty());
}

#[test]
fn a_batch_applies_its_changes_in_order() {
    let mut r = Registry::default();
    let batch = RegistryOp::Batch(vec![
        RegistryOp::AdmitAgent {
            agent_id: "a1".into(),
            hostname: "h1".into(),
        },
        RegistryOp::AdmitAgent {
            agent_id: "a2".into(),
            hostname: "h2".into(),
        },
        RegistryOp::RemoveAgent {
            agent_id: "a1".into(),
            unix_ms: 9,
        },
    ]);
    assert!(r.apply(&batch));
    assert_eq!(r.agents.len(), 1);
    assert!(r.agents.contains_key(&AgentId::from("a2")));
    assert_eq!(r.removed_agents.get(&AgentId::from("a1")), Some(&9));
    assert!(!r.apply(&RegistryOp::Batch(Vec::new())));
}

#[test]
fn roles_weights_and_quotas_are_the_masters_settings_and_a_cleared_quota_stays_cleared() {
    let mut r = Registry::default();
    let cpus = crate::resources::Resources::new(2.0, 256);
    assert!(r.apply(&RegistryOp::Batch(vec![
        RegistryOp::SetWeight {
            role: "batch".into(),
            weight_milli: 2500,
        },
        RegistryOp::SetQuota {
            role: "batch".into(),
            quota: Some(cpus.clone()),
        },
        RegistryOp::SetQuota {
            role: "web".into(),
            quota: None,
        },
    ])));
    assert!(!r.apply(&RegistryOp::SetQuota {
        role: "web".into(),
        quota: None,
    }));
    let s = r.role_settings();
    assert_eq!(s.weights.get("batch"), Some(&2.5));
    assert_eq!(s.quotas.get("batch"), Some(&Some(cpus)));
    // Cleared at runtime: the settings' quota for it no longer holds.
    assert_eq!(s.quotas.get("web"), Some(&None));
}

#[test]
fn removals_are_remembered_up_to_a_bound_oldest_forgotten_first() {
    let mut r = Registry::default();
    for i in 0..=machine::MAX_REMOVED as u64 {
        r.apply(&RegistryOp::RemoveAgent {
            agent_id: format!("a{i}").into(),
            unix_ms: i,
        });
    }
    assert_eq!(r.removed_agents.len(), machine::MAX_REMOVED);
    assert!(!r.removed_agents.contains_key(&AgentId::from("a0")));
}
