//! A session: this node's state about one connected peer incarnation — its link, pending
//! calls and spawns, the proxies standing in for its actors, and the local actors linked
//! to parents on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::concurrency::OneshotSender;
use ractor::{ActorCell, ActorId, RpcReplyPort};

use plexus_net::{FrameSender, Hello, LinkKey, NetError, Roles};

use crate::proxy::{ProxyArgs, RemoteProxy, FAIL_VARIANT};
use crate::wire::{DownReason, Wire};

/// A spawn request waiting for its answer.
pub(crate) struct PendingSpawn {
    pub supervisor: Option<ActorCell>,
    pub done: OneshotSender<Result<ActorCell, String>>,
}

struct ProxyEntry {
    cell: ActorCell,
    gone: Arc<AtomicBool>,
    linked: bool,
    /// When the peer goes down, this proxy waits this long for word of how its actor
    /// ended (see `Node::remote_cell_linked_deferred`) before it ends as node-down.
    defer: Option<std::time::Duration>,
}

/// A proxy whose end waits after its peer went down (see `Session::take_deferred`).
pub(crate) struct Deferred {
    pub pid: u64,
    pub cell: ActorCell,
    pub gone: Arc<AtomicBool>,
    pub wait: std::time::Duration,
}

/// Ends a proxy as its remote actor ended: a failure with its text, or a stop.
pub(crate) fn end_proxy(cell: &ActorCell, gone: &AtomicBool, reason: &DownReason) {
    gone.store(true, Ordering::SeqCst);
    match reason {
        DownReason::Failed(text) => {
            let fail = ractor::message::SerializedMessage::Cast {
                variant: FAIL_VARIANT.to_string(),
                args: text.clone().into_bytes(),
                metadata: None,
            };
            if let Err(err) = cell.send_serialized(fail) {
                tracing::debug!("a proxy stopped before its actor's failure reached it: {err}");
            }
        }
        DownReason::Terminated(r) => cell.stop(r.clone()),
        DownReason::NoProc => cell.stop(Some("noproc".into())),
    }
}

struct LinkSlot {
    id: u64,
    key: LinkKey,
    outbound: bool,
    tx: FrameSender,
}

pub(crate) struct Session {
    pub peer: Hello,
    pub peer_id: u64,
    /// What the peer may do, from its certificate.
    pub peer_roles: Roles,
    /// Local actors spawned for the peer: it may reach and stop them (pruned of ended
    /// ones as it grows).
    pub granted: Mutex<BTreeSet<u64>>,
    link: RwLock<LinkSlot>,
    alive: AtomicBool,
    /// Microseconds since the node's start when the last frame arrived.
    pub last_heard: AtomicU64,
    /// Something was sent since the heartbeat loop last looked.
    sent: AtomicBool,
    next_call: AtomicU64,
    calls: Mutex<BTreeMap<u64, PendingCall>>,
    pub spawns: Mutex<BTreeMap<u64, PendingSpawn>>,
    proxies: Mutex<BTreeMap<u64, Vec<ProxyEntry>>>,
    pub linked_children: Mutex<BTreeSet<u64>>,
    proxy_host: ActorCell,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("session lock")
}

/// Size of a session's granted set from which ended actors are pruned (at each doubling).
const GRANTED_PRUNE_AT: usize = 1024;

/// Most calls awaiting a reply from one peer; a call past it fails at once.
pub const MAX_PENDING_CALLS: usize = 65_536;
/// How long a call made without a timeout waits for its reply before it fails.
pub const UNTIMED_CALL_LIMIT_MS: u64 = 300_000;

/// A call awaiting its reply.
struct PendingCall {
    port: RpcReplyPort<Vec<u8>>,
    /// When it is given up (the caller's timeout, or `UNTIMED_CALL_LIMIT_MS`).
    deadline: tokio::time::Instant,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        peer: Hello,
        peer_roles: Roles,
        link_id: u64,
        key: LinkKey,
        outbound: bool,
        tx: FrameSender,
        now_us: u64,
        proxy_host: ActorCell,
    ) -> Self {
        Session {
            peer_id: plexus_net::node_id(&peer.name),
            peer,
            peer_roles,
            granted: Mutex::new(BTreeSet::new()),
            link: RwLock::new(LinkSlot {
                id: link_id,
                key,
                outbound,
                tx,
            }),
            alive: AtomicBool::new(true),
            last_heard: AtomicU64::new(now_us),
            sent: AtomicBool::new(false),
            next_call: AtomicU64::new(1),
            calls: Mutex::new(BTreeMap::new()),
            spawns: Mutex::new(BTreeMap::new()),
            proxies: Mutex::new(BTreeMap::new()),
            linked_children: Mutex::new(BTreeSet::new()),
            proxy_host,
        }
    }

    /// Records that local actor `pid` was spawned for the peer.
    pub fn grant(&self, pid: u64) {
        let mut g = lock(&self.granted);
        if g.len() >= GRANTED_PRUNE_AT && g.len().is_power_of_two() {
            g.retain(|p| ractor::registry::where_is_pid(ActorId::Local(*p)).is_some());
        }
        g.insert(pid);
    }

    /// True when local actor `pid` was spawned for the peer.
    pub fn granted(&self, pid: u64) -> bool {
        lock(&self.granted).contains(&pid)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Marks the session dead; true for the caller that did it.
    pub fn kill(&self) -> bool {
        self.alive.swap(false, Ordering::SeqCst)
    }

    pub fn link_id(&self) -> u64 {
        self.link.read().expect("link lock").id
    }

    /// The key of the link the session runs on, as both ends name it.
    pub fn link_key(&self) -> LinkKey {
        self.link.read().expect("link lock").key
    }

    pub fn outbound(&self) -> bool {
        self.link.read().expect("link lock").outbound
    }

    /// Replaces the link (a duplicate connection won the dial race); closes the old one.
    pub fn swap_link(&self, id: u64, key: LinkKey, outbound: bool, tx: FrameSender) {
        let old = std::mem::replace(
            &mut *self.link.write().expect("link lock"),
            LinkSlot {
                id,
                key,
                outbound,
                tx,
            },
        );
        old.tx
            .close_as(plexus_net::CloseKind::Duplicate, "duplicate connection");
    }

    pub fn close_link(&self, reason: &str) {
        self.link.read().expect("link lock").tx.close(reason);
    }

    /// Queues `w` on the link. Only what was queued counts as traffic: a message that
    /// could not be (over the frame limit) does not stand in for a heartbeat, and is
    /// said at error level, naming its size and the limit.
    pub fn send(&self, w: &Wire) -> Result<(), NetError> {
        let r = self.link.read().expect("link lock").tx.send(w);
        match &r {
            Ok(()) => self.sent.store(true, Ordering::Relaxed),
            Err(NetError::Codec(e)) => {
                tracing::error!(peer = %self.peer.name, "a message to the peer was not sent: {e}");
            }
            Err(_) => {}
        }
        r
    }

    /// Sends `w` when losing it is harmless: the link is closing, and its end is dealt
    /// with where the session ends (callers are told, watchers get `Down`). A failure is
    /// logged, not returned.
    pub fn send_or_drop(&self, w: &Wire) {
        if let Err(e) = self.send(w) {
            tracing::debug!(peer = %self.peer.name, "not sent, the link is closing: {e}");
        }
    }

    /// Whether anything was sent since the last call (which clears it).
    pub fn sent_since_last_check(&self) -> bool {
        self.sent.swap(false, Ordering::Relaxed)
    }

    /// Waits while the link's send queue is over its high-water mark.
    pub async fn ready(&self) {
        let tx = self.link.read().expect("link lock").tx.clone();
        tx.ready().await;
    }

    pub fn call(&self, pid: u64, body: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) {
        if !self.is_alive() {
            return; // dropping the port fails the call at once
        }
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let limit = reply
            .get_timeout()
            .unwrap_or(std::time::Duration::from_millis(UNTIMED_CALL_LIMIT_MS));
        {
            let mut calls = lock(&self.calls);
            if calls.len() >= MAX_PENDING_CALLS {
                tracing::warn!(peer = %self.peer.name, "{MAX_PENDING_CALLS} calls await replies: failing a new one");
                return; // dropping the port fails the call at once
            }
            calls.insert(
                id,
                PendingCall {
                    port: reply,
                    deadline: tokio::time::Instant::now() + limit,
                },
            );
        }
        if self.send(&Wire::Call { to: pid, id, body }).is_err() {
            lock(&self.calls).remove(&id);
        }
    }

    /// Calls awaiting a reply from this peer.
    pub fn pending_calls(&self) -> usize {
        lock(&self.calls).len()
    }

    /// Gives up the calls whose caller stopped waiting or whose time is up (dropping a
    /// port fails its call). Returns how many it gave up.
    pub fn expire_calls(&self, now: tokio::time::Instant) -> usize {
        let mut calls = lock(&self.calls);
        let before = calls.len();
        calls.retain(|_, c| !c.port.is_closed() && c.deadline > now);
        before - calls.len()
    }

    pub fn reply(&self, id: u64, body: Result<Vec<u8>, String>) {
        if let Some(c) = lock(&self.calls).remove(&id) {
            // An error answer drops the port, which fails the call. A send that fails
            // means the caller stopped waiting: nobody is left to tell.
            match body {
                Ok(b) => {
                    if c.port.send(b).is_err() {
                        tracing::debug!(peer = %self.peer.name, "a reply came after its caller gave up");
                    }
                }
                Err(e) => tracing::info!(peer = %self.peer.name, "a call failed there: {e}"),
            }
        }
    }

    /// A proxy for the peer's actor `pid`: linked to `supervisor`, or else the shared
    /// unlinked one. New unlinked proxies ask the peer to report the actor's end.
    pub async fn proxy(
        self: &Arc<Self>,
        pid: u64,
        supervisor: Option<ActorCell>,
        watch: bool,
    ) -> Result<ActorCell, String> {
        self.proxy_deferred(pid, supervisor, watch, None).await
    }

    /// As [`Session::proxy`]; with `defer`, a linked proxy whose end, when the peer goes
    /// down, waits that long for word of how its actor ended.
    pub async fn proxy_deferred(
        self: &Arc<Self>,
        pid: u64,
        supervisor: Option<ActorCell>,
        watch: bool,
        defer: Option<std::time::Duration>,
    ) -> Result<ActorCell, String> {
        let linked = supervisor.is_some();
        if !linked {
            if let Some(e) = lock(&self.proxies)
                .get(&pid)
                .and_then(|v| v.iter().find(|e| !e.linked))
            {
                return Ok(e.cell.clone());
            }
        }
        if !self.is_alive() {
            return Err(format!("node {} is down", self.peer.name));
        }
        let gone = Arc::new(AtomicBool::new(false));
        let args = ProxyArgs {
            session: self.clone(),
            pid,
            gone: gone.clone(),
        };
        let id = ActorId::Remote {
            node_id: self.peer_id,
            pid,
        };
        let sup = supervisor.unwrap_or_else(|| self.proxy_host.clone());
        let (r, _) = ractor::ActorRuntime::spawn_linked_remote(None, RemoteProxy, id, args, sup)
            .await
            .map_err(|e| e.to_string())?;
        let cell = r.get_cell();
        {
            // Checked under the table's lock: a session that went down while the proxy
            // started has ended the proxies it found, and this one is not among them.
            let mut proxies = lock(&self.proxies);
            if !self.is_alive() {
                drop(proxies);
                gone.store(true, Ordering::SeqCst);
                let why = format!(
                    "{} {}: it went down as the reference was made",
                    crate::node::NODE_DOWN,
                    self.peer.name
                );
                cell.stop(Some(why.clone()));
                return Err(why);
            }
            proxies.entry(pid).or_default().push(ProxyEntry {
                cell: cell.clone(),
                gone,
                linked,
                defer,
            });
        }
        if watch {
            self.send_or_drop(&Wire::Watch { pid });
        }
        Ok(cell)
    }

    /// Drops a stopped proxy from the table.
    /// (All proxies of one remote actor share its id; an entry is known by its flag.)
    pub fn forget_proxy(&self, pid: u64, gone: &Arc<AtomicBool>) {
        let mut p = lock(&self.proxies);
        if let Some(v) = p.get_mut(&pid) {
            v.retain(|e| !Arc::ptr_eq(&e.gone, gone));
            if v.is_empty() {
                p.remove(&pid);
            }
        }
    }

    /// The peer's actor `pid` ended: end every proxy of it the same way.
    pub fn remote_down(&self, pid: u64, reason: DownReason) {
        let entries = lock(&self.proxies).remove(&pid).unwrap_or_default();
        for e in entries {
            end_proxy(&e.cell, &e.gone, &reason);
        }
    }

    /// Takes out the proxies whose end waits when the peer goes down (before
    /// [`Session::fail_all`] ends the others).
    pub(crate) fn take_deferred(&self) -> Vec<Deferred> {
        let mut out = Vec::new();
        let mut all = lock(&self.proxies);
        for (pid, v) in all.iter_mut() {
            v.retain(|e| match e.defer {
                Some(wait) => {
                    out.push(Deferred {
                        pid: *pid,
                        cell: e.cell.clone(),
                        gone: e.gone.clone(),
                        wait,
                    });
                    false
                }
                None => true,
            });
        }
        all.retain(|_, v| !v.is_empty());
        out
    }

    /// The peer is gone: fail every call and spawn, stop every proxy with `reason`, and
    /// stop the local actors linked to parents there.
    pub fn fail_all(&self, proxy_reason: &str, child_reason: &str) {
        lock(&self.calls).clear();
        for (_, p) in std::mem::take(&mut *lock(&self.spawns)) {
            if p.done.send(Err(proxy_reason.to_string())).is_err() {
                tracing::debug!("the spawner stopped waiting");
            }
        }
        let all = std::mem::take(&mut *lock(&self.proxies));
        for e in all.into_values().flatten() {
            e.gone.store(true, Ordering::SeqCst);
            e.cell.stop(Some(proxy_reason.to_string()));
        }
        for pid in std::mem::take(&mut *lock(&self.linked_children)) {
            if let Some(c) = ractor::registry::where_is_pid(ActorId::Local(pid)) {
                c.stop(Some(child_reason.to_string()));
            }
        }
    }
}
