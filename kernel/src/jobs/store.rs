//! Where the jobs framework keeps what it accepted: an embedded database (redb) in the
//! master's state directory, so a master process that restarts still has every job,
//! pending, running or ended, and re-subscribes under the framework ids it had.
//!
//! What is kept: each job (its status and history) under its task id, with the order it
//! was submitted in; the next job number; the framework id of each role. Changes are
//! written in batches ([`JobsStore::write`]), one transaction each, synced before it
//! returns; the jobs framework answers a submission only once its batch is written.
//!
//! With several masters the jobs live in the replicated registry instead
//! ([`JobsBackend::Replicated`]): each batch is one registry write, committed by a
//! majority of the masters before it counts as written, so whichever master leads next
//! takes back every job that was answered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use super::JobStatus;
use crate::ids::{FrameworkId, TaskId};
use crate::registry::replica::Replica;
use crate::registry::{JobRecord, JobsChange, JobsImage, RegistryOp};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Who submitted each job and the OS user it runs as, beside the job (stores written
/// before principals had no such table; their jobs have neither).
const ACCESS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_access");
const NEXT_KEY: &str = "next";
const FRAMEWORK_PREFIX: &str = "framework:";

/// Errors of the jobs store, naming its file (or the replicated registry).
#[derive(Debug, thiserror::Error)]
#[error("jobs store {path}: {what}")]
pub struct StoreError {
    /// The database file.
    pub path: PathBuf,
    /// What went wrong.
    pub what: String,
}

/// Where the jobs framework keeps its jobs: its master's own database, or the
/// registry the masters replicate.
#[derive(Clone)]
pub enum JobsBackend {
    /// One master's database file.
    Local(Arc<JobsStore>),
    /// The masters' replicated registry (writes succeed only on the leader).
    Replicated(Arc<Replica>),
}

impl std::fmt::Debug for JobsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobsBackend::Local(s) => f.debug_tuple("Local").field(s).finish(),
            JobsBackend::Replicated(r) => f.debug_tuple("Replicated").field(&r.id).finish(),
        }
    }
}

/// How the replicated registry is named in errors.
const REGISTRY_NAME: &str = "(the masters' replicated registry)";

impl JobsBackend {
    /// Everything kept.
    pub fn load(&self) -> Result<Saved, StoreError> {
        match self {
            JobsBackend::Local(s) => s.load(),
            JobsBackend::Replicated(r) => Ok(from_image(r.registry().jobs)),
        }
    }

    /// Writes `batch`; returns it with the outcome once it is durable (or failed).
    pub async fn write(&self, batch: Batch) -> (Batch, Result<(), StoreError>) {
        match self {
            JobsBackend::Local(s) => {
                let (s, b) = (s.clone(), batch.clone());
                let path = s.path.clone();
                let r = tokio::task::spawn_blocking(move || s.write(&b))
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError {
                            path,
                            what: format!("its writer failed: {e}"),
                        })
                    });
                (batch, r)
            }
            JobsBackend::Replicated(r) => {
                let op = RegistryOp::Jobs(to_change(&batch));
                let written = r.write(op).await.map(|_| ()).map_err(|e| StoreError {
                    path: PathBuf::from(REGISTRY_NAME),
                    what: e.to_string(),
                });
                (batch, written)
            }
        }
    }
}

/// A batch as a registry change.
pub fn to_change(b: &Batch) -> JobsChange {
    JobsChange {
        next: b.next,
        put: b
            .put
            .iter()
            .map(|(seq, job)| JobRecord {
                seq: *seq,
                job: job.clone(),
                owner: job.owner.clone(),
                user: job.user.clone(),
            })
            .collect(),
        delete: b.delete.clone(),
        framework_ids: b.framework_ids.clone(),
    }
}

/// What the registry holds, as a store's contents.
pub fn from_image(image: JobsImage) -> Saved {
    let mut jobs: Vec<(u64, JobStatus)> = image
        .jobs
        .into_values()
        .map(|r| {
            let mut job = r.job;
            job.owner = r.owner;
            job.user = r.user;
            (r.seq, job)
        })
        .collect();
    jobs.sort_by_key(|(seq, _)| *seq);
    Saved {
        next: image.next,
        jobs,
        framework_ids: image.framework_ids,
    }
}

/// What a store holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Saved {
    /// The next job number.
    pub next: u64,
    /// Every job with its submission number, in submission order.
    pub jobs: Vec<(u64, JobStatus)>,
    /// The framework id of each role.
    pub framework_ids: BTreeMap<String, FrameworkId>,
}

/// Changes to write together.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    /// The next job number, if it changed.
    pub next: Option<u64>,
    /// Jobs to write (new or changed), with their submission numbers.
    pub put: Vec<(u64, JobStatus)>,
    /// Jobs to forget.
    pub delete: Vec<TaskId>,
    /// Framework ids to remember, by role.
    pub framework_ids: Vec<(String, FrameworkId)>,
}

impl Batch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.next.is_none()
            && self.put.is_empty()
            && self.delete.is_empty()
            && self.framework_ids.is_empty()
    }
}

/// The jobs framework's database.
pub struct JobsStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for JobsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsStore")
            .field("path", &self.path)
            .finish()
    }
}

impl JobsStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<JobsStore, StoreError> {
        let err = |what: String| StoreError {
            path: path.to_path_buf(),
            what,
        };
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        let store = JobsStore {
            db,
            path: path.to_path_buf(),
        };
        // Both tables exist from the start, so reads never meet a missing one.
        store.write(&Batch::default())?;
        Ok(store)
    }

    fn err(&self, what: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }

    fn enc<T: serde::Serialize>(&self, v: &T) -> Result<Vec<u8>, StoreError> {
        plexus_net::codec::encode(v).map_err(|e| self.err(e))
    }

    /// Everything the store holds.
    pub fn load(&self) -> Result<Saved, StoreError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut saved = Saved::default();
        let meta = r.open_table(META).map_err(|e| self.err(e))?;
        for entry in meta.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (key, value) = (k.value(), v.value());
            if key == NEXT_KEY {
                saved.next = plexus_net::codec::decode(value)
                    .map_err(|e| self.err(format!("{NEXT_KEY}: {e}")))?;
            } else if let Some(role) = key.strip_prefix(FRAMEWORK_PREFIX) {
                let id: FrameworkId = plexus_net::codec::decode(value)
                    .map_err(|e| self.err(format!("{key}: {e}")))?;
                saved.framework_ids.insert(role.to_string(), id);
            }
        }
        let jobs = r.open_table(JOBS).map_err(|e| self.err(e))?;
        let access = r.open_table(ACCESS).map_err(|e| self.err(e))?;
        for entry in jobs.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let mut job: (u64, JobStatus) = plexus_net::codec::decode(v.value())
                .map_err(|e| self.err(format!("job {}: {e}", k.value())))?;
            if let Some(a) = access.get(k.value()).map_err(|e| self.err(e))? {
                (job.1.owner, job.1.user) = plexus_net::codec::decode(a.value())
                    .map_err(|e| self.err(format!("access of job {}: {e}", k.value())))?;
            }
            saved.jobs.push(job);
        }
        saved.jobs.sort_by_key(|(seq, _)| *seq);
        Ok(saved)
    }

    /// Writes `batch` in one transaction; returns once it is durable.
    pub fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut jobs = txn.open_table(JOBS).map_err(|e| self.err(e))?;
            let mut access = txn.open_table(ACCESS).map_err(|e| self.err(e))?;
            if let Some(next) = batch.next {
                meta.insert(NEXT_KEY, self.enc(&next)?.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for (role, id) in &batch.framework_ids {
                let key = format!("{FRAMEWORK_PREFIX}{role}");
                meta.insert(key.as_str(), self.enc(id)?.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for (seq, job) in &batch.put {
                jobs.insert(job.task_id.as_str(), self.enc(&(seq, job))?.as_slice())
                    .map_err(|e| self.err(e))?;
                if job.owner.is_some() || job.user.is_some() {
                    let who = self.enc(&(&job.owner, &job.user))?;
                    access
                        .insert(job.task_id.as_str(), who.as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
            for id in &batch.delete {
                jobs.remove(id.as_str()).map_err(|e| self.err(e))?;
                access.remove(id.as_str()).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    fn job(id: &str) -> JobStatus {
        JobStatus {
            task_id: id.into(),
            name: id.into(),
            argv: vec!["true".into()],
            resources: Resources::new(0.1, 32),
            role: "*".into(),
            state: None,
            why_not_placed: None,
            agent_id: None,
            history: Vec::new(),
            kill_requested: false,
            owner: Some("alice".into()),
            user: None,
        }
    }

    #[test]
    fn what_is_written_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        let s = JobsStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap(), Saved::default());
        s.write(&Batch {
            next: Some(3),
            put: vec![(2, job("b")), (1, job("a")), (3, job("c"))],
            delete: vec![],
            framework_ids: vec![("*".into(), "fw-1".into())],
        })
        .unwrap();
        s.write(&Batch {
            delete: vec!["b".into()],
            ..Batch::default()
        })
        .unwrap();
        drop(s);
        let back = JobsStore::open(&path).unwrap().load().unwrap();
        assert_eq!(back.next, 3);
        let ids: Vec<&str> = back.jobs.iter().map(|(_, j)| j.task_id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["a", "c"],
            "in submission order, without the deleted one"
        );
        assert_eq!(back.framework_ids["*"], "fw-1");
    }

    #[test]
    fn the_registry_keeps_what_a_store_keeps_owners_and_users_included() {
        let mut reg = crate::registry::Registry::default();
        let mut c = job("c");
        c.user = Some("nobody".into());
        let first = Batch {
            next: Some(3),
            put: vec![(2, job("b")), (1, job("a")), (3, c)],
            delete: vec![],
            framework_ids: vec![("*".into(), "fw-1".into())],
        };
        assert!(reg.apply(&RegistryOp::Jobs(to_change(&first))));
        let second = Batch {
            delete: vec!["b".into()],
            ..Batch::default()
        };
        assert!(reg.apply(&RegistryOp::Jobs(to_change(&second))));
        assert!(
            !reg.apply(&RegistryOp::Jobs(to_change(&second))),
            "a batch applied again changes nothing"
        );
        let back = from_image(reg.jobs);
        assert_eq!(back.next, 3);
        let jobs: Vec<(&str, Option<&str>, Option<&str>)> = back
            .jobs
            .iter()
            .map(|(_, j)| (j.task_id.as_str(), j.owner.as_deref(), j.user.as_deref()))
            .collect();
        assert_eq!(
            jobs,
            vec![
                ("a", Some("alice"), None),
                ("c", Some("alice"), Some("nobody"))
            ],
            "in submission order, with who they belong to"
        );
        assert_eq!(back.framework_ids["*"], "fw-1");
    }

    #[test]
    fn a_store_that_is_not_a_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        std::fs::write(&path, b"not a database at all").unwrap();
        let e = JobsStore::open(&path).unwrap_err();
        assert!(e.to_string().contains("jobs.redb"), "{e}");
    }
}
