//! Leading: with several masters, the master actor runs only in the one that leads.
//!
//! [`lead`] watches this master's [`Lease`](crate::registry::replica::Lease): when it
//! begins, the master writes where its API is (a registry write, which also proves a
//! quorum follows it) and starts a master (under its supervisor) for that term; when it
//! lapses or a newer term begins, that master is stopped with what it linked. The master
//! itself takes no message once its lease no longer holds its term.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus_actors::Node;
use ractor::{Actor, ActorRef};
use tracing::{debug, error, info, warn};

use super::config::REGISTRY_WRITES_QUEUED;
use super::{MasterConfig, MasterSpec, MasterSupervisor, MasterSupervisorMsg, RegistryLink};
use crate::registry::replica::Replica;
use crate::registry::RegistryOp;
use crate::supervision::RestartPolicy;

/// The supervisor of the master running in this process, if one runs (with several
/// masters, only while this one leads).
pub type CurrentMaster = Arc<Mutex<Option<ActorRef<MasterSupervisorMsg>>>>;

/// A change of this master's leadership: the term it leads in from now on (after its
/// master started), or none (before its master is stopped); `lead` waits for the
/// answer before going on, so what runs only on the leader starts and stops in step.
pub type Leading = (Option<u64>, tokio::sync::oneshot::Sender<()>);

/// Tells `watcher` of a leadership change and waits until it has acted on it.
async fn tell(watcher: Option<&tokio::sync::mpsc::Sender<Leading>>, term: Option<u64>) {
    let Some(w) = watcher else { return };
    let (done, acted) = tokio::sync::oneshot::channel();
    if w.send((term, done)).await.is_err() {
        debug!("nobody watches this master's leadership any more");
        return;
    }
    if acted.await.is_err() {
        debug!("the leadership watcher ended before it acted");
    }
}

/// Starts a master under its supervisor.
pub async fn start_supervisor(
    node: &Node,
    cfg: MasterConfig,
) -> Result<(ActorRef<MasterSupervisorMsg>, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
    let spec = MasterSpec::new(node.clone(), cfg);
    Actor::spawn(
        None,
        MasterSupervisor::new(spec, RestartPolicy::default()),
        (),
    )
    .await
}

fn set(current: &CurrentMaster, v: Option<ActorRef<MasterSupervisorMsg>>) {
    *current.lock().unwrap_or_else(|p| p.into_inner()) = v;
}

/// Runs a master while this one leads (see the module's documentation), keeping
/// `current` up to date and telling `watcher` (see [`Leading`]). Returns when a
/// master's supervisor gives up on it.
pub async fn lead(
    node: Node,
    cfg: MasterConfig,
    replica: Arc<Replica>,
    api: String,
    current: CurrentMaster,
    watcher: Option<tokio::sync::mpsc::Sender<Leading>>,
) {
    let lease = replica.lease();
    let mut term: Option<u64> = None;
    let mut starts: u32 = 0;
    let mut running: Option<(ActorRef<MasterSupervisorMsg>, tokio::task::JoinHandle<()>)> = None;
    let mut writer: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let now = match running.as_mut() {
            Some((_, ended)) => tokio::select! {
                t = lease.changed_from(term) => t,
                r = ended => {
                    if let Err(e) = r {
                        error!("the master's supervisor ended abnormally: {e}");
                    }
                    return;
                }
            },
            None => lease.changed_from(term).await,
        };
        if let Some((sup, ended)) = running.take() {
            set(&current, None);
            tell(watcher.as_ref(), None).await;
            stop_leading(sup, ended).await;
            info!(term = ?term, "stopped leading");
        }
        if let Some(w) = writer.take() {
            w.abort();
        }
        term = now;
        let Some(t) = now else { continue };
        let said = RegistryOp::Leader {
            master: replica.id,
            term: t,
            api: api.clone(),
        };
        if let Err(e) = replica.write(said).await {
            warn!(term = t, "not leading after all: {e}");
            continue;
        }
        let (writes, queued) = tokio::sync::mpsc::channel(REGISTRY_WRITES_QUEUED);
        writer = Some(tokio::spawn(write_registry(replica.clone(), queued)));
        let mut c = cfg.clone();
        c.leading = Some((t, lease.clone()));
        let registry = replica.registry();
        // Roles' weights and quotas as the registry holds them (set through any leader).
        c.role_changes.replace(registry.role_settings());
        let removed_frameworks = registry.removed_in_order();
        c.registry = Some(RegistryLink {
            admitted: registry.agents.into_keys().collect(),
            removed_frameworks,
            frameworks: registry.frameworks,
            writes,
        });
        c.epoch_salt = starts;
        starts = starts.wrapping_add(1);
        match start_supervisor(&node, c).await {
            Ok((sup, ended)) => {
                set(&current, Some(sup.clone()));
                running = Some((sup, ended));
                info!(term = t, "leading: the master runs here");
                tell(watcher.as_ref(), Some(t)).await;
            }
            Err(e) => {
                error!("cannot start the leading master: {e}");
                return;
            }
        }
    }
}

/// Most registry writes of the master put in one Raft entry.
const REGISTRY_BATCH: usize = 1_024;

/// Writes the leading master's registry changes in order, what queued up meanwhile in
/// one entry, until the master is gone.
async fn write_registry(
    replica: Arc<Replica>,
    mut queued: tokio::sync::mpsc::Receiver<RegistryOp>,
) {
    let mut ops = Vec::new();
    while queued.recv_many(&mut ops, REGISTRY_BATCH).await > 0 {
        let op = match ops.len() {
            1 => ops.pop().expect("one write"),
            _ => RegistryOp::Batch(std::mem::take(&mut ops)),
        };
        if let Err(e) = replica.write(op).await {
            warn!("a registry write of the master failed: {e}");
        }
    }
}

/// Stops a master that no longer leads: its supervisor first (so it is not restarted),
/// then the master with what it linked.
async fn stop_leading(sup: ActorRef<MasterSupervisorMsg>, ended: tokio::task::JoinHandle<()>) {
    let master = ractor::call_t!(sup, MasterSupervisorMsg::Current, 5000)
        .ok()
        .flatten();
    sup.stop(Some("no longer leading".into()));
    if let Err(e) = ended.await {
        debug!("the master's supervisor ended abnormally: {e}");
    }
    if let Some(m) = master {
        m.stop_children(Some("the master no longer leads".into()));
        let stopped = m
            .stop_and_wait(
                Some("no longer leading".into()),
                Some(Duration::from_secs(5)),
            )
            .await;
        if let Err(e) = stopped {
            debug!("stopping the master: {e}");
        }
    }
}
