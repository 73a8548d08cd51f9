//! A node: one process's membership in the cluster.
//!
//! A [`Node`] owns a transport, keeps one session per connected peer (dialing configured
//! and gossiped peers, redialing lost ones with backoff), dispatches the peers' frames to
//! local actors, runs the failure detector, spawns registered actor types for peers, and
//! replicates the cluster-wide name table.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorRef, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use plexus_config::NodeSettings;
use plexus_net::codec;
use plexus_net::tls::TlsMaterial;
use plexus_net::{
    CloseKind, DialTag, FrameReceiver, Link, LinkKey, LocalIdentity, NetError, PeerAddr,
    QuicTransport, Roles, Transport,
};

use crate::detector::{FailureDetector, Verdict};
use crate::error::{ActorsError, SendError};
use crate::inbox::{Inbox, InboxGauge};
use crate::names::{rule, Claim, NameEntry, NameTable};
use crate::session::{PendingSpawn, Session};
use crate::watcher::{ProxyHost, Watcher, WatcherMsg};
use crate::wire::{DownReason, Wire};

/// Prefix of the exit reason a supervisor or monitor sees when a remote actor's node
/// died, was cut off, or left. See [`is_node_down`].
pub const NODE_DOWN: &str = "plexus:node-down";

/// Prefix of the exit reason of a local actor stopped because its remote parent's node
/// went down.
pub const PARENT_NODE_DOWN: &str = "plexus:parent-node-down";

/// True when an exit reason says the actor's node went down (not that the actor itself
/// stopped or failed).
pub fn is_node_down(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.starts_with(NODE_DOWN))
}

/// Tunables of a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Peers to join at start and keep connected to.
    pub peers: Vec<PeerAddr>,
    /// Timeout of spawn requests and other node-level requests.
    pub call_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is declared down.
    pub node_down_timeout: Duration,
    /// Mesh with every node the peers know of (see `NodeSettings::connect_all`).
    pub connect_all: bool,
}

impl From<&NodeSettings> for NodeOptions {
    fn from(s: &NodeSettings) -> Self {
        NodeOptions {
            peers: s.peers.clone(),
            call_timeout: s.call_timeout,
            heartbeat_interval: s.heartbeat_interval,
            node_down_timeout: s.node_down_timeout,
            connect_all: s.connect_all,
        }
    }
}

impl Default for NodeOptions {
    fn default() -> Self {
        (&NodeSettings::default()).into()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A spawn a peer asked for.
struct PeerSpawn<'a> {
    id: u64,
    type_name: &'a str,
    msg_type: &'a str,
    args: &'a [u8],
    linked: bool,
    grant_to: Option<&'a str>,
}

trait Factory: Send + Sync {
    fn msg_type(&self) -> &'static str;
    /// The roles of the peers that may spawn this type here.
    fn exports(&self) -> Roles;
    fn spawn(
        &self,
        args: &[u8],
        supervisor: Option<ActorCell>,
    ) -> BoxFuture<Result<ActorCell, String>>;
}

struct TypedFactory<A, F> {
    make: F,
    exports: Roles,
    _a: PhantomData<fn() -> A>,
}

impl<A, F> Factory for TypedFactory<A, F>
where
    A: Actor,
    A::Arguments: DeserializeOwned,
    F: Fn() -> A + Send + Sync + 'static,
{
    fn msg_type(&self) -> &'static str {
        std::any::type_name::<A::Msg>()
    }

    fn exports(&self) -> Roles {
        self.exports
    }

    fn spawn(
        &self,
        args: &[u8],
        supervisor: Option<ActorCell>,
    ) -> BoxFuture<Result<ActorCell, String>> {
        let args: Result<A::Arguments, _> = codec::decode(args);
        let actor = (self.make)();
        Box::pin(async move {
            let args = args.map_err(|e| format!("bad spawn arguments: {e}"))?;
            let r = match supervisor {
                Some(s) => Actor::spawn_linked(None, actor, args, s).await,
                None => Actor::spawn(None, actor, args).await,
            };
            r.map(|(a, _)| a.get_cell()).map_err(|e| e.to_string())
        })
    }
}

pub(crate) struct NodeInner {
    transport: Arc<dyn Transport>,
    ident: LocalIdentity,
    opts: NodeOptions,
    start: Instant,
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    known: Mutex<BTreeMap<String, SocketAddr>>,
    /// Per peer, the link of the last session with it that ended (told to the peer when
    /// dialing it again, so it can tell a lost session from a dial race).
    lost_links: Mutex<BTreeMap<String, LinkKey>>,
    dialing: Mutex<BTreeSet<String>>,
    types: RwLock<BTreeMap<String, Arc<dyn Factory>>>,
    names: Mutex<NameTable>,
    watcher: OnceLock<ActorRef<WatcherMsg>>,
    proxy_host: OnceLock<ActorCell>,
    next_id: AtomicU64,
    leaving: AtomicBool,
    changes: watch::Sender<u64>,
    /// Woken with `changes`, for this node's own waits: one `Notify` wakes its waiters
    /// in the order they began waiting (a watch channel spreads its waiters over several
    /// and wakes them in an order of its runtime's random choosing), so that a simulated
    /// run's waits end in the same order every time.
    changed: tokio::sync::Notify,
    /// Bounded inboxes of local actors, by pid.
    inboxes: RwLock<BTreeMap<u64, Arc<Inbox>>>,
    /// Frames refused from peers, by operation (see [`Node::refusals`]).
    refusals: Mutex<BTreeMap<Refused, u64>>,
    /// Local actors granted to peers by name, whether or not a session with them is up
    /// (see [`Node::spawn_remote_granted`]); ended actors are pruned as the table grows.
    name_grants: Mutex<BTreeMap<String, BTreeSet<u64>>>,
    /// Local actors only peers of some roles may reach (see [`Node::restrict`]).
    restricted: Mutex<BTreeMap<u64, Roles>>,
    /// Decides whether an authenticated peer may have a session (see [`Node::admit_with`]).
    admission: RwLock<Option<Admission>>,
    /// Proxies of a peer that went down, waiting for word of how their actor ended, by
    /// peer name and actor id (see [`Node::remote_cell_linked_deferred`]).
    parked: Mutex<BTreeMap<(String, u64), Vec<crate::session::Deferred>>>,
}

/// A node's admission rule: `Err(why)` refuses the peer (by name and roles).
pub type Admission = Arc<dyn Fn(&str, Roles) -> Result<(), String> + Send + Sync>;

/// An operation a peer asked for and was refused (see [`Node::refusals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refused {
    /// A message to an actor it cannot reach (not named, not spawned for it).
    Cast,
    /// A call to an actor it cannot reach.
    Call,
    /// A monitor of an actor it cannot reach.
    Watch,
    /// Stopping an actor it does not supervise.
    Stop,
    /// A spawn of a type not exported to its roles.
    Spawn,
    /// A name its roles or node name do not allow, or one another node holds.
    Register,
    /// A session the node's admission rule refused (see [`Node::admit_with`]).
    Peer,
}

impl Refused {
    /// Every operation, in order.
    pub const ALL: [Refused; 7] = [
        Refused::Cast,
        Refused::Call,
        Refused::Watch,
        Refused::Stop,
        Refused::Spawn,
        Refused::Register,
        Refused::Peer,
    ];

    /// The operation's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Cast => "cast",
            Refused::Call => "call",
            Refused::Watch => "watch",
            Refused::Stop => "stop",
            Refused::Spawn => "spawn",
            Refused::Register => "register",
            Refused::Peer => "peer",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().expect("node lock")
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("ident", &self.inner.ident)
            .finish()
    }
}

/// A connected peer, as seen by [`Node::peers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Node name.
    pub name: String,
    /// Its current incarnation.
    pub incarnation: u64,
    /// Its address.
    pub addr: SocketAddr,
    /// Calls to its actors awaiting a reply (given up once their caller's timeout,
    /// or `UNTIMED_CALL_LIMIT_MS`, passed).
    pub pending_calls: usize,
}

fn new_incarnation() -> u64 {
    plexus_net::clock::unix_nanos()
}

impl Node {
    /// Starts a node on QUIC from settings: loads (or, in dev mode, creates) the TLS
    /// material, binds the listen address and joins the configured peers. Its roles are
    /// those of its certificate; a certificate made in dev mode carries every role (see
    /// [`Node::start_as`]).
    pub async fn start(settings: &NodeSettings) -> Result<Node, ActorsError> {
        Node::start_as(settings, Roles::ALL).await
    }

    /// As [`Node::start`]; a certificate made in dev mode carries `dev_roles`.
    pub async fn start_as(settings: &NodeSettings, dev_roles: Roles) -> Result<Node, ActorsError> {
        let tls = match (&settings.tls.ca_cert, &settings.tls.cert, &settings.tls.key) {
            (Some(ca), Some(c), Some(k)) => TlsMaterial::load(ca, c, k)?,
            _ => {
                let dir = settings.state_dir.join("tls");
                let (m, created) =
                    TlsMaterial::dev(&dir, &settings.cluster, &settings.name, dev_roles)?;
                if created {
                    info!(dir = %dir.display(), "development mode: created TLS certificates");
                }
                m
            }
        };
        let ident = LocalIdentity {
            cluster: settings.cluster.clone(),
            name: settings.name.clone(),
            incarnation: new_incarnation(),
            addr: settings.listen,
            roles: tls.roles()?,
        };
        let t = QuicTransport::bind(ident, &tls, settings.max_frame_bytes)?;
        Node::start_with(t, settings.into()).await
    }

    /// Starts a node on any transport (QUIC, or the simulated network).
    pub async fn start_with(
        transport: Arc<dyn Transport>,
        opts: NodeOptions,
    ) -> Result<Node, ActorsError> {
        let ident = transport.identity().clone();
        let inner = Arc::new(NodeInner {
            transport,
            ident,
            opts,
            start: Instant::now(),
            sessions: Mutex::new(BTreeMap::new()),
            known: Mutex::new(BTreeMap::new()),
            lost_links: Mutex::new(BTreeMap::new()),
            dialing: Mutex::new(BTreeSet::new()),
            types: RwLock::new(BTreeMap::new()),
            names: Mutex::new(NameTable::default()),
            watcher: OnceLock::new(),
            proxy_host: OnceLock::new(),
            next_id: AtomicU64::new(1),
            leaving: AtomicBool::new(false),
            changes: watch::channel(0).0,
            changed: tokio::sync::Notify::new(),
            inboxes: RwLock::new(BTreeMap::new()),
            refusals: Mutex::new(BTreeMap::new()),
            name_grants: Mutex::new(BTreeMap::new()),
            restricted: Mutex::new(BTreeMap::new()),
            admission: RwLock::new(None),
            parked: Mutex::new(BTreeMap::new()),
        });
        let actor_err = |e: ractor::SpawnErr| ActorsError::Actor(e.to_string());
        let (w, _) = Actor::spawn(None, Watcher, Arc::downgrade(&inner))
            .await
            .map_err(actor_err)?;
        assert!(inner.watcher.set(w).is_ok(), "a node's watcher is set once");
        let (h, _) = Actor::spawn(None, ProxyHost, ()).await.map_err(actor_err)?;
        assert!(
            inner.proxy_host.set(h.get_cell()).is_ok(),
            "a node's proxy host is set once"
        );

        let n = inner.clone();
        tokio::spawn(async move {
            while let Some(link) = n.transport.accept().await {
                n.install(link);
            }
        });
        tokio::spawn(heartbeats(Arc::downgrade(&inner)));
        for p in inner.opts.peers.clone() {
            lock(&inner.known).insert(p.name.clone(), p.addr);
            inner.keep_connected(p.name.clone());
        }
        info!(node = %inner.ident.name, addr = %inner.ident.addr, incarnation = inner.ident.incarnation, "node started");
        Ok(Node { inner })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.ident.name
    }

    /// Stops keeping a link to `peer` (joined, or learned of): no more dials to it once
    /// its session ends. For peers known to be gone for good (an ended executor).
    pub fn forget(&self, peer: &str) {
        lock(&self.inner.known).remove(peer);
        lock(&self.inner.lost_links).remove(peer);
    }

    /// Sets the rule deciding which authenticated peers may have a session with this
    /// node (checked on every new link; a refused peer's link is closed, the refusal
    /// logged and counted as [`Refused::Peer`]). An agent admits of its executors only
    /// those it runs now, so an executor's identity is worth nothing once it ended.
    pub fn admit_with(&self, rule: Admission) {
        *self.inner.admission.write().expect("admission lock") = Some(rule);
    }

    /// The name of this node's cluster.
    pub fn cluster(&self) -> &str {
        &self.inner.ident.cluster
    }

    /// This node's roles (from its certificate).
    pub fn roles(&self) -> Roles {
        self.inner.ident.roles
    }

    /// What peers asked for and were refused so far, by operation.
    pub fn refusals(&self) -> BTreeMap<Refused, u64> {
        lock(&self.inner.refusals).clone()
    }

    /// This node's incarnation (new at every start).
    pub fn incarnation(&self) -> u64 {
        self.inner.ident.incarnation
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> SocketAddr {
        self.inner.ident.addr
    }

    /// This node as a peer address (`name@addr`).
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            name: self.inner.ident.name.clone(),
            addr: self.inner.ident.addr,
        }
    }

    /// The node's options.
    pub fn options(&self) -> &NodeOptions {
        &self.inner.opts
    }

    /// The peers connected now, by name.
    pub fn peers(&self) -> Vec<PeerInfo> {
        lock(&self.inner.sessions)
            .values()
            .map(|s| PeerInfo {
                name: s.peer.name.clone(),
                incarnation: s.peer.incarnation,
                addr: s.peer.addr,
                pending_calls: s.pending_calls(),
            })
            .collect()
    }

    /// A receiver that changes whenever this node's view of the cluster does: peers up
    /// or down, names registered or dropped, calls given up. Wait on it instead of
    /// polling [`Node::peers`] or [`Node::whereis`].
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Connects to `peer` (and keeps reconnecting while it is known).
    pub fn join(&self, peer: PeerAddr) {
        lock(&self.inner.known).insert(peer.name.clone(), peer.addr);
        self.inner.keep_connected(peer.name);
    }

    /// Waits until every node in `names` is connected.
    pub async fn wait_for_peers(
        &self,
        names: &[&str],
        timeout: Duration,
    ) -> Result<(), ActorsError> {
        let all = || {
            let s = lock(&self.inner.sessions);
            names.iter().all(|n| s.contains_key(*n))
        };
        tokio::time::timeout(timeout, async {
            loop {
                let changed = self.inner.changed.notified();
                tokio::pin!(changed);
                // Waiting from here on: a change after the check below wakes it.
                changed.as_mut().enable();
                if all() {
                    break;
                }
                changed.await;
            }
        })
        .await
        .map_err(|_| ActorsError::Timeout {
            what: format!("connecting to {names:?}"),
            node: self.name().to_string(),
            after: timeout,
        })
    }

    /// Registers an actor type that peers with any of the roles `exports` may spawn here
    /// by `type_name`. `make` builds the actor; the spawn arguments travel encoded. A
    /// spawn from a peer without such a role is refused (and counted in
    /// [`Node::refusals`]).
    pub fn register_type<A, F>(&self, type_name: &str, exports: impl Into<Roles>, make: F)
    where
        A: Actor,
        A::Arguments: DeserializeOwned,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.inner.types.write().expect("types lock").insert(
            type_name.to_string(),
            Arc::new(TypedFactory {
                make,
                exports: exports.into(),
                _a: PhantomData,
            }),
        );
    }

    /// Spawns an actor of registered type `type_name` on `node` (this node included).
    pub async fn spawn_remote<M: Message, Args: Serialize>(
        &self,
        node: &str,
        type_name: &str,
        args: &Args,
    ) -> Result<ActorRef<M>, ActorsError> {
        self.spawn_inner(None, node, type_name, args).await
    }

    /// Spawns an actor of registered type `type_name` on `node`, linked to `supervisor`:
    /// the supervisor gets the child's supervision events as for a local child, and a
    /// termination whose reason satisfies [`is_node_down`] if the child's node goes down.
    /// If the supervisor's node goes down, the child is stopped.
    pub async fn spawn_remote_linked<M: Message, Args: Serialize>(
        &self,
        supervisor: ActorCell,
        node: &str,
        type_name: &str,
        args: &Args,
    ) -> Result<ActorRef<M>, ActorsError> {
        self.spawn_inner(Some(supervisor), node, type_name, args)
            .await
    }

    /// Spawns an actor of registered type `type_name`, handling messages of the type
    /// named `msg_type`, from encoded `args` on `node` (not this one), for this node and
    /// also for peer `grant_to`, which may then message and monitor it (but not stop
    /// it). For a kernel that starts actors on behalf of programs whose message types it
    /// does not know.
    pub async fn spawn_remote_granted(
        &self,
        node: &str,
        type_name: &str,
        msg_type: &str,
        args: Vec<u8>,
        grant_to: &str,
    ) -> Result<ActorCell, ActorsError> {
        self.spawn_encoded(
            None,
            node,
            type_name,
            msg_type,
            args,
            Some(grant_to.to_string()),
        )
        .await
    }

    async fn spawn_inner<M: Message, Args: Serialize>(
        &self,
        supervisor: Option<ActorCell>,
        node: &str,
        type_name: &str,
        args: &Args,
    ) -> Result<ActorRef<M>, ActorsError> {
        let spawn_err = |reason: String| ActorsError::Spawn {
            type_name: type_name.to_string(),
            node: node.to_string(),
            reason,
        };
        let bytes = codec::encode(args).map_err(|e| spawn_err(e.to_string()))?;
        let msg_type = std::any::type_name::<M>();
        self.spawn_encoded(supervisor, node, type_name, msg_type, bytes, None)
            .await
            .map(Into::into)
    }

    async fn spawn_encoded(
        &self,
        supervisor: Option<ActorCell>,
        node: &str,
        type_name: &str,
        msg_type: &str,
        bytes: Vec<u8>,
        grant_to: Option<String>,
    ) -> Result<ActorCell, ActorsError> {
        let spawn_err = |reason: String| ActorsError::Spawn {
            type_name: type_name.to_string(),
            node: node.to_string(),
            reason,
        };
        if node == self.name() {
            let f = self.inner.factory(type_name, msg_type).map_err(spawn_err)?;
            let cell = f.spawn(&bytes, supervisor).await.map_err(spawn_err)?;
            return Ok(cell);
        }
        let session = self.inner.session(node)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = ractor::concurrency::oneshot();
        let linked = supervisor.is_some();
        lock(&session.spawns).insert(
            id,
            PendingSpawn {
                supervisor,
                done: tx,
            },
        );
        session.send(&Wire::Spawn {
            id,
            type_name: type_name.to_string(),
            msg_type: msg_type.to_string(),
            args: bytes,
            linked,
            grant_to,
        })?;
        let after = self.inner.opts.call_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(Ok(cell))) => Ok(cell),
            Ok(Ok(Err(reason))) => Err(spawn_err(reason)),
            Ok(Err(_)) => Err(spawn_err(format!("node {node} went down"))),
            Err(_) => {
                lock(&session.spawns).remove(&id);
                Err(ActorsError::Timeout {
                    what: format!("spawn of {type_name:?}"),
                    node: node.to_string(),
                    after,
                })
            }
        }
    }

    /// Registers a local actor under a cluster-wide `name`. The name is released when the
    /// actor ends.
    pub fn register<M: Message>(&self, name: &str, actor: &ActorRef<M>) -> Result<(), ActorsError> {
        self.register_ranked(name, actor, 0)
    }

    /// Registers a local actor under `name` with a claim of `rank`: a claim of another
    /// node with a higher rank takes the name from it, one with a lower rank never does
    /// (a master leading in Raft term T claims the master's name with rank T, so the name
    /// follows the election, whichever claims each node heard first).
    pub fn register_ranked<M: Message>(
        &self,
        name: &str,
        actor: &ActorRef<M>,
        rank: u64,
    ) -> Result<(), ActorsError> {
        let id = actor.get_id();
        if !id.is_local() {
            return Err(ActorsError::Actor(format!(
                "only local actors can be registered; {id} is remote"
            )));
        }
        let entry = NameEntry {
            node: self.name().to_string(),
            pid: id.pid(),
            msg_type: std::any::type_name::<M>().to_string(),
            rank: if crate::names::ranked(name) { rank } else { 0 },
        };
        let exclusive = crate::names::rule(name, self.name(), self.roles())
            .exclusive()
            .map_err(|reason| ActorsError::NameRefused {
                name: name.to_string(),
                reason,
            })?;
        {
            let mut names = lock(&self.inner.names);
            if let Some(cur) = names.get(name) {
                let outranked = cur.node != entry.node && cur.rank < entry.rank;
                if (cur.node != entry.node || cur.pid != entry.pid) && !outranked {
                    return Err(ActorsError::NameTaken {
                        name: name.to_string(),
                        node: cur.node.clone(),
                    });
                }
            }
            if let Claim::Lost { holder } = names.claim_as(name, entry.clone(), exclusive) {
                return Err(ActorsError::NameTaken {
                    name: name.to_string(),
                    node: holder.node,
                });
            }
        }
        self.inner.broadcast(&Wire::Register {
            name: name.to_string(),
            pid: entry.pid,
            msg_type: entry.msg_type,
            rank: entry.rank,
        });
        if let Some(w) = self.inner.watcher.get() {
            if let Err(e) = w.cast(WatcherMsg::Registered { pid: entry.pid }) {
                debug!("node stopping, watcher gone: {e}");
            }
        }
        self.inner.bump();
        Ok(())
    }

    /// Lets only peers with one of `roles` reach the local actor `id` (send to it, call
    /// it, watch it), whatever names it holds: a name is public, but the masters' Raft
    /// messages, say, are for masters alone. Lifted when the actor's names are released
    /// at its end.
    pub fn restrict(&self, id: ActorId, roles: Roles) {
        assert!(id.is_local(), "only a local actor can be restricted");
        lock(&self.inner.restricted).insert(id.pid(), roles);
    }

    /// Drops every name the local actor `id` holds (a supervisor frees the names of a
    /// child that failed before starting another, which claims them again).
    pub fn unregister_actor(&self, id: ActorId) {
        if id.is_local() {
            self.inner.release_local_pid(id.pid());
        }
    }

    /// Bounds the inbox of the local actor `id` to `limit_msgs` messages from peers:
    /// past it, what peers send it is shed and counted (see [`crate::inbox`]). The
    /// actor calls [`InboxGauge::handled`] for each message it takes; dropping the
    /// gauge lifts the bound.
    pub fn bound_inbox(&self, id: ActorId, limit_msgs: usize) -> InboxGauge {
        assert!(id.is_local(), "only a local actor's inbox can be bounded");
        let inbox = Inbox::new(limit_msgs);
        self.inner
            .inboxes
            .write()
            .expect("inboxes lock")
            .insert(id.pid(), inbox.clone());
        InboxGauge {
            inbox,
            owner: Some((Arc::downgrade(&self.inner), id.pid())),
        }
    }

    /// The names this node knows that start with `prefix`, in order (a new leading
    /// master tells every `plexus.agent:` and `plexus.scheduler:` it knows of).
    pub fn names_under(&self, prefix: &str) -> Vec<String> {
        lock(&self.inner.names).names_under(prefix)
    }

    /// The node holding `name`, as this node knows it.
    pub fn name_holder(&self, name: &str) -> Option<String> {
        lock(&self.inner.names).get(name).map(|e| e.node.clone())
    }

    /// Drops this node's registration of `name`.
    pub fn unregister(&self, name: &str) {
        if lock(&self.inner.names).release(name, self.name()) {
            self.inner.broadcast(&Wire::Unregister {
                name: name.to_string(),
            });
        }
    }

    /// Sends `msg` to `to` as `cast` does, but says when it cannot go: a message for a
    /// remote actor is encoded here, so one that would not fit in a frame is refused
    /// with its size and the limit instead of being dropped on the way. (An actor that
    /// ends meanwhile is still only heard of through its monitors and supervisor.)
    pub fn cast_checked<M: Message>(&self, to: &ActorRef<M>, msg: M) -> Result<(), SendError> {
        if to.get_id().is_local() {
            return to
                .cast(msg)
                .map_err(|e| SendError::Gone(format!("{:?}", to.get_id()), e.to_string()));
        }
        let m = msg
            .serialize()
            .map_err(|e| SendError::Encode(e.to_string()))?;
        let bytes = match &m {
            ractor::message::SerializedMessage::Cast { args, .. } => args.len(),
            ractor::message::SerializedMessage::Call { args, .. } => args.len(),
            ractor::message::SerializedMessage::CallReply(_, args) => args.len(),
        };
        let limit_bytes = self.max_message_bytes();
        if bytes > limit_bytes {
            return Err(SendError::TooLarge { bytes, limit_bytes });
        }
        to.get_cell()
            .send_serialized(m)
            .map_err(|e| SendError::Gone(format!("{:?}", to.get_id()), e.to_string()))
    }

    /// The most bytes a message to a remote actor may take (what a frame carries beside
    /// it subtracted).
    pub fn max_message_bytes(&self) -> usize {
        self.inner
            .transport
            .max_frame_bytes()
            .saturating_sub(crate::wire::FRAME_OVERHEAD_BYTES)
    }

    /// Looks up a cluster-wide name from any node. A remote actor comes back as an
    /// ordinary `ActorRef` whose messages travel to it.
    ///
    /// Consistency: each node keeps its own copy of the name table, updated by the
    /// registering node's broadcast. A name registered on another node is found here once
    /// that broadcast arrived (one message delay on a connected link), so a lookup right
    /// after a remote `register` may answer `None`; [`Node::whereis_wait`] waits for it.
    /// Names of a node that goes down are dropped everywhere; two nodes claiming one
    /// name resolve to the same holder on every node.
    pub async fn whereis<M: Message>(
        &self,
        name: &str,
    ) -> Result<Option<ActorRef<M>>, ActorsError> {
        let Some(e) = lock(&self.inner.names).get(name).cloned() else {
            return Ok(None);
        };
        let expected = std::any::type_name::<M>();
        if e.msg_type != expected {
            return Err(ActorsError::TypeMismatch {
                name: name.to_string(),
                expected: expected.to_string(),
                actual: e.msg_type,
            });
        }
        if e.node == self.name() {
            return Ok(ractor::registry::where_is_pid(ActorId::Local(e.pid)).map(Into::into));
        }
        let session = self.inner.session(&e.node)?;
        let cell = session
            .proxy(e.pid, None, true)
            .await
            .map_err(ActorsError::Actor)?;
        Ok(Some(cell.into()))
    }

    /// A reference to actor `pid` of peer `node` (connected, or connecting within the
    /// call timeout), known from elsewhere (an actor task's status update). The peer
    /// answers only if that actor is reachable by this node (named, or granted to it);
    /// otherwise the reference ends at once with a no-such-actor reason. Its end
    /// reaches monitors as for any remote actor.
    pub async fn remote_actor<M: Message>(
        &self,
        node: &str,
        pid: u64,
    ) -> Result<ActorRef<M>, ActorsError> {
        self.remote_cell(node, pid).await.map(Into::into)
    }

    /// A reference to actor `pid` of peer `node`, linked to `supervisor`, which then
    /// hears the actor's end as for a child (see [`Node::remote_actor`]). Stopping the
    /// reference asks the peer to stop the actor, which it does only if this node may.
    pub async fn remote_cell_linked(
        &self,
        node: &str,
        pid: u64,
        supervisor: ActorCell,
    ) -> Result<ActorCell, ActorsError> {
        self.proxy_of(node, pid, Some(supervisor)).await
    }

    /// As [`Node::remote_cell_linked`], except that when `node` goes down the reference
    /// waits up to `defer` for word of how the actor ended ([`Node::remote_ended`]: a
    /// kernel that knows the actor's process was killed for its memory says so) before
    /// its supervisor hears a node-down termination. Either way, it hears once.
    pub async fn remote_cell_linked_deferred(
        &self,
        node: &str,
        pid: u64,
        supervisor: ActorCell,
        defer: Duration,
    ) -> Result<ActorCell, ActorsError> {
        self.proxy_of_deferred(node, pid, Some(supervisor), Some(defer))
            .await
    }

    /// A reference to peer `node`'s actor `pid` (waiting up to the call timeout for the
    /// link), linked to `supervisor` if given, that asks the peer for the actor's end.
    async fn proxy_of(
        &self,
        node: &str,
        pid: u64,
        supervisor: Option<ActorCell>,
    ) -> Result<ActorCell, ActorsError> {
        self.proxy_of_deferred(node, pid, supervisor, None).await
    }

    async fn proxy_of_deferred(
        &self,
        node: &str,
        pid: u64,
        supervisor: Option<ActorCell>,
        defer: Option<Duration>,
    ) -> Result<ActorCell, ActorsError> {
        let names = [node];
        self.wait_for_peers(&names, self.inner.opts.call_timeout)
            .await?;
        let session = self.inner.session(node)?;
        session
            .proxy_deferred(pid, supervisor, true, defer)
            .await
            .map_err(ActorsError::Actor)
    }

    /// Ends this node's references to peer `node`'s actor `pid` as if the actor had
    /// ended as `how` says: their supervisors and monitors hear that end, once, and the
    /// peer is not asked to stop anything. For a kernel that learns first, by another
    /// path, how a remote actor ended (its process was killed for its memory limit).
    /// References already ended are not touched.
    pub fn remote_ended(&self, node: &str, pid: u64, how: crate::wire::DownReason) {
        let parked = lock(&self.inner.parked).remove(&(node.to_string(), pid));
        for d in parked.into_iter().flatten() {
            crate::session::end_proxy(&d.cell, &d.gone, &how);
        }
        if let Ok(s) = self.inner.session(node) {
            s.remote_down(pid, how);
        }
    }

    /// As [`Node::remote_actor`], untyped.
    pub async fn remote_cell(&self, node: &str, pid: u64) -> Result<ActorCell, ActorsError> {
        if node == self.name() {
            return ractor::registry::where_is_pid(ActorId::Local(pid))
                .ok_or_else(|| ActorsError::Actor(format!("no actor {pid} on node {node}")));
        }
        self.proxy_of(node, pid, None).await
    }

    /// As [`Node::whereis`], but waits up to `timeout` for the name to be registered
    /// (or to reach this node): the registry is eventually consistent, so right after
    /// another node registers a name, this node may not know it yet.
    pub async fn whereis_wait<M: Message>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<ActorRef<M>, ActorsError> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = self.whereis(name).await? {
                return Ok(r);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(ActorsError::Timeout {
                    what: format!("waiting for the name {name:?}"),
                    node: self.name().to_string(),
                    after: timeout,
                });
            }
        }
    }

    /// True once the node has left or halted.
    pub fn is_stopped(&self) -> bool {
        self.inner.leaving.load(Ordering::SeqCst)
    }

    /// Stops this node as a crash would: no goodbye to anyone, every link dropped, the
    /// transport and the node's own actors stopped (the caller stops its actors). Peers
    /// notice only by silence. For simulations of machine failure.
    pub fn halt(&self) {
        let n = &self.inner;
        if n.leaving.swap(true, Ordering::SeqCst) {
            return;
        }
        n.transport.shutdown();
        let sessions: Vec<_> = lock(&n.sessions).values().cloned().collect();
        for s in sessions {
            s.close_link("halted");
            n.session_down(&s, "this node halted");
        }
        if let Some(w) = n.watcher.get() {
            w.stop(None);
        }
        if let Some(h) = n.proxy_host.get() {
            h.stop(None);
        }
        info!(node = %n.ident.name, "node halted");
    }

    /// Leaves the cluster: tells every peer, closes every link and stops the transport.
    pub async fn leave(&self) {
        let n = &self.inner;
        if n.leaving.swap(true, Ordering::SeqCst) {
            return;
        }
        let sessions: Vec<_> = lock(&n.sessions).values().cloned().collect();
        for s in sessions {
            s.send_or_drop(&Wire::Leave {
                reason: "node leaving".into(),
            });
            n.session_down(&s, "this node is leaving");
        }
        n.transport.shutdown();
        if let Some(w) = n.watcher.get() {
            w.stop(None);
        }
        if let Some(h) = n.proxy_host.get() {
            h.stop(None);
        }
        info!(node = %n.ident.name, "node left the cluster");
    }
}

async fn heartbeats(node: std::sync::Weak<NodeInner>) {
    let period = match node.upgrade() {
        Some(n) => n.opts.heartbeat_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        if n.leaving.load(Ordering::SeqCst) {
            return;
        }
        let now = n.now();
        let sessions: Vec<_> = lock(&n.sessions).values().cloned().collect();
        let instant = tokio::time::Instant::now();
        for s in sessions {
            if s.expire_calls(instant) > 0 {
                n.bump();
            }
            let heard = Duration::from_micros(s.last_heard.load(Ordering::Relaxed));
            let d = FailureDetector::new(heard, n.opts.node_down_timeout);
            match d.check(now) {
                Verdict::Alive => {
                    // Like Erlang's ticks: only an idle link needs a heartbeat; any frame
                    // tells the peer this node is alive.
                    if !s.sent_since_last_check() {
                        s.send_or_drop(&Wire::Heartbeat);
                        s.sent_since_last_check();
                    }
                }
                Verdict::Down { silent_for } => {
                    let reason = format!(
                        "no frame for {} ms (timeout {} ms)",
                        silent_for.as_millis(),
                        n.opts.node_down_timeout.as_millis()
                    );
                    s.close_link(&reason);
                    n.session_down(&s, &reason);
                }
            }
        }
    }
}

/// How often a peer that still cannot be joined is reported again (the first failure and
/// every change of reason are reported at once).
const JOIN_FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// The failed dials to one peer, so that the joining side says why it cannot join (at error
/// level: nothing works until it can) without repeating itself at every retry.
#[derive(Default)]
struct JoinFailures {
    count: u64,
    last_reason: String,
    last_report: Option<Instant>,
}

impl JoinFailures {
    fn failed(&mut self, peer: &str, addr: SocketAddr, e: &NetError, retry_in: Duration) {
        self.count += 1;
        let reason = e.to_string();
        let due = self
            .last_report
            .is_none_or(|t| t.elapsed() >= JOIN_FAILURE_REPORT_INTERVAL);
        if reason == self.last_reason && !due {
            debug!(%peer, %addr, "dial failed again: {reason}");
            return;
        }
        let what = match e {
            NetError::Refused { .. }
            | NetError::Handshake(_)
            | NetError::Closed(_)
            | NetError::Tls(_) => "refused",
            _ => "unreachable",
        };
        tracing::error!(
            %peer, %addr, attempts = self.count,
            "cannot join {peer} at {addr} ({what}): {reason}; retrying (next in {} ms)",
            retry_in.as_millis()
        );
        self.last_reason = reason;
        self.last_report = Some(Instant::now());
    }
}

impl NodeInner {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn session(&self, node: &str) -> Result<Arc<Session>, ActorsError> {
        lock(&self.sessions)
            .get(node)
            .cloned()
            .ok_or_else(|| ActorsError::NotConnected(node.to_string()))
    }

    fn factory(&self, type_name: &str, msg_type: &str) -> Result<Arc<dyn Factory>, String> {
        let f = self
            .types
            .read()
            .expect("types lock")
            .get(type_name)
            .cloned()
            .ok_or_else(|| format!("node {} has no actor type {type_name:?}", self.ident.name))?;
        if f.msg_type() != msg_type {
            return Err(format!(
                "actor type {type_name:?} handles {}, not {msg_type}",
                f.msg_type()
            ));
        }
        Ok(f)
    }

    fn broadcast(&self, w: &Wire) {
        for s in lock(&self.sessions).values() {
            s.send_or_drop(w);
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
        self.changed.notify_waiters();
    }

    pub(crate) fn release_local_pid(&self, pid: u64) {
        lock(&self.restricted).remove(&pid);
        let names = lock(&self.names).release_pid(&self.ident.name, pid);
        for name in names {
            self.broadcast(&Wire::Unregister { name });
        }
    }

    /// Keeps dialing `name` (with backoff) until a session with it exists.
    fn keep_connected(self: &Arc<Self>, name: String) {
        if !lock(&self.dialing).insert(name.clone()) {
            return;
        }
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            let mut failures = JoinFailures::default();
            loop {
                let Some(n) = node.upgrade() else { return };
                let addr = lock(&n.known).get(&name).copied();
                let done = n.leaving.load(Ordering::SeqCst)
                    || lock(&n.sessions).contains_key(&name)
                    || addr.is_none();
                let Some(addr) = addr.filter(|_| !done) else {
                    lock(&n.dialing).remove(&name);
                    return;
                };
                let tag = DialTag {
                    dial: n.next_id.fetch_add(1, Ordering::Relaxed),
                    replaces: lock(&n.lost_links).get(&name).copied(),
                };
                let dial = n.transport.dial_tagged(
                    PeerAddr {
                        name: name.clone(),
                        addr,
                    },
                    tag,
                );
                drop(n);
                match dial.await {
                    Ok(link) => {
                        if let Some(n) = node.upgrade() {
                            lock(&n.dialing).remove(&name);
                            n.install(link);
                        }
                        return;
                    }
                    Err(e) => {
                        failures.failed(&name, addr, &e, backoff);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    fn install(self: &Arc<Self>, link: Link) {
        let Link {
            peer,
            peer_roles,
            outbound,
            tx,
            rx,
            key,
            replaces,
        } = link;
        if self.leaving.load(Ordering::SeqCst) {
            tx.close_as(CloseKind::Leaving, "node leaving");
            return;
        }
        let admission = self.admission.read().expect("admission lock").clone();
        if let Some(admit) = admission {
            if let Err(why) = admit(&peer.name, peer_roles) {
                let n = {
                    let mut r = lock(&self.refusals);
                    let n = r.entry(Refused::Peer).or_insert(0);
                    *n += 1;
                    *n
                };
                // Said at the first refusal, then at every doubling.
                if n.is_power_of_two() {
                    warn!(node = %self.ident.name, peer = %peer.name, roles = %peer_roles, op = Refused::Peer.as_str(), refused_total = n, "refused: {why}");
                }
                tx.close(&format!("refused by {}: {why}", self.ident.name));
                return;
            }
        }
        let link_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let my_id = plexus_net::node_id(&self.ident.name);
        let peer_id = plexus_net::node_id(&peer.name);
        let mut sessions = lock(&self.sessions);
        if let Some(cur) = sessions.get(&peer.name).cloned() {
            let same = cur.peer.incarnation == peer.incarnation;
            if same && replaces != Some(cur.link_key()) {
                // A dial race (the dialer did not lose the session on this link; both ends
                // decide alike): both keep the connection dialed by the lower node id.
                let dialer = |out: bool| if out { my_id } else { peer_id };
                if dialer(outbound) < dialer(cur.outbound()) {
                    cur.swap_link(link_id, key, outbound, tx);
                    drop(sessions);
                    // What went out on the losing link is gone with it: the names the
                    // peer must know go again.
                    self.announce_names(&cur);
                    tokio::spawn(reader(self.clone(), cur, link_id, rx));
                } else {
                    tx.close_as(CloseKind::Duplicate, "duplicate connection");
                }
                return;
            }
            if peer.incarnation < cur.peer.incarnation {
                tx.close("stale incarnation");
                return;
            }
            // Either the peer restarted, or the dialer lost the session on this very link
            // and dialed again before the other end noticed: start afresh on both sides,
            // so that both re-announce their names and both see the interruption.
            let reason = if same {
                "the peer reconnected (its previous connection was lost)".to_string()
            } else {
                format!("restarted as incarnation {}", peer.incarnation)
            };
            sessions.remove(&peer.name);
            drop(sessions);
            cur.close_link(&reason);
            self.session_down(&cur, &reason);
            sessions = lock(&self.sessions);
        }
        let host = self.proxy_host.get().expect("proxy host started").clone();
        let s = Arc::new(Session::new(
            peer.clone(),
            peer_roles,
            link_id,
            key,
            outbound,
            tx,
            self.now().as_micros() as u64,
            host,
        ));
        sessions.insert(peer.name.clone(), s.clone());
        let mesh = self.opts.connect_all;
        // An executor is its agent's and its framework's peer, not the mesh's: it is not
        // announced (others would dial it in vain: its agent admits only its own).
        let meshed = |roles: Roles| roles != Roles::of(&[plexus_net::Role::Executor]);
        let peers: Vec<(String, SocketAddr)> = if mesh {
            sessions
                .values()
                .filter(|x| meshed(x.peer_roles))
                .map(|x| (x.peer.name.clone(), x.peer.addr))
                .collect()
        } else {
            Vec::new()
        };
        if mesh && meshed(peer_roles) {
            // Tell the others about the newcomer, so the whole cluster meshes promptly.
            let newcomer = Wire::Peers {
                peers: vec![(peer.name.clone(), peer.addr)],
            };
            for other in sessions.values().filter(|x| x.peer.name != peer.name) {
                other.send_or_drop(&newcomer);
            }
        }
        drop(sessions);
        lock(&self.known).insert(peer.name.clone(), peer.addr);
        info!(node = %self.ident.name, peer = %peer.name, incarnation = peer.incarnation, "peer up");
        if mesh {
            s.send_or_drop(&Wire::Peers { peers });
        }
        self.announce_names(&s);
        tokio::spawn(reader(self.clone(), s, link_id, rx));
        self.bump();
    }

    /// Sends this node's registered names to the peer of `s`.
    fn announce_names(&self, s: &Session) {
        for (name, e) in lock(&self.names).held_by(&self.ident.name) {
            s.send_or_drop(&Wire::Register {
                name,
                pid: e.pid,
                msg_type: e.msg_type,
                rank: e.rank,
            });
        }
    }

    /// The peer of `s` is gone (down, cut off, restarted or left).
    fn session_down(self: &Arc<Self>, s: &Arc<Session>, reason: &str) {
        if !s.kill() {
            return;
        }
        {
            let mut sessions = lock(&self.sessions);
            if sessions
                .get(&s.peer.name)
                .is_some_and(|c| Arc::ptr_eq(c, s))
            {
                sessions.remove(&s.peer.name);
            }
        }
        lock(&self.lost_links).insert(s.peer.name.clone(), s.link_key());
        warn!(node = %self.ident.name, peer = %s.peer.name, "peer down: {reason}");
        let who = format!("{} (incarnation {})", s.peer.name, s.peer.incarnation);
        self.park(
            &s.peer.name,
            s.take_deferred(),
            format!("{NODE_DOWN} {who}: {reason}"),
        );
        s.fail_all(
            &format!("{NODE_DOWN} {who}: {reason}"),
            &format!("{PARENT_NODE_DOWN} {who}: {reason}"),
        );
        lock(&self.names).release_node(&s.peer.name);
        self.bump();
        if !self.leaving.load(Ordering::SeqCst) && lock(&self.known).contains_key(&s.peer.name) {
            self.keep_connected(s.peer.name.clone());
        }
    }

    /// Parks `deferred` proxies of `peer`, which went down: each ends as [`Node::remote_ended`]
    /// says within its wait, or else with `reason`.
    fn park(self: &Arc<Self>, peer: &str, deferred: Vec<crate::session::Deferred>, reason: String) {
        for d in deferred {
            let key = (peer.to_string(), d.pid);
            let wait = d.wait;
            let gone = d.gone.clone();
            lock(&self.parked).entry(key.clone()).or_default().push(d);
            let node = Arc::downgrade(self);
            let reason = reason.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let Some(n) = node.upgrade() else { return };
                let mut parked = lock(&n.parked);
                let Some(v) = parked.get_mut(&key) else {
                    return;
                };
                let Some(i) = v.iter().position(|d| Arc::ptr_eq(&d.gone, &gone)) else {
                    return;
                };
                let d = v.remove(i);
                if v.is_empty() {
                    parked.remove(&key);
                }
                drop(parked);
                crate::session::end_proxy(&d.cell, &d.gone, &DownReason::Terminated(Some(reason)));
            });
        }
    }

    fn link_lost(self: &Arc<Self>, s: &Arc<Session>, link_id: u64, kind: CloseKind, reason: &str) {
        if s.link_id() != link_id || kind == CloseKind::Duplicate {
            return; // a superseded duplicate; the session lives on its other link
        }
        self.session_down(s, reason);
    }

    /// Counts a message from `s` for the local actor `to` into its bounded inbox, if it
    /// has one; false when the inbox is full and the message is shed.
    fn admit(&self, s: &Session, to: u64) -> bool {
        let inboxes = self.inboxes.read().expect("inboxes lock");
        let Some(inbox) = inboxes.get(&to) else {
            return true;
        };
        if inbox.admit() {
            return true;
        }
        let shed = inbox.shed_total();
        // Said at the first, then at every doubling of the count.
        if shed.is_power_of_two() {
            warn!(actor = to, peer = %s.peer.name, shed, limit = inbox.limit_msgs(), "inbox full: shedding messages from peers");
        }
        false
    }

    fn inbox_limit(&self, to: u64) -> usize {
        let inboxes = self.inboxes.read().expect("inboxes lock");
        inboxes.get(&to).map_or(0, |i| i.limit_msgs())
    }

    /// Lifts the bound of `pid`'s inbox, if it is still `inbox`.
    pub(crate) fn release_inbox(&self, pid: u64, inbox: &Arc<Inbox>) {
        let mut inboxes = self.inboxes.write().expect("inboxes lock");
        if inboxes.get(&pid).is_some_and(|i| Arc::ptr_eq(i, inbox)) {
            inboxes.remove(&pid);
        }
    }

    /// Counts and logs a refused operation (the first of each kind, then at every
    /// doubling of its count, so that a flood of refused frames does not flood the log).
    /// The link stays up: a refusal is an answer, not a failure.
    fn refuse(&self, s: &Session, op: Refused, what: std::fmt::Arguments<'_>) {
        let n = {
            let mut r = lock(&self.refusals);
            let n = r.entry(op).or_insert(0);
            *n += 1;
            *n
        };
        if n.is_power_of_two() {
            warn!(node = %self.ident.name, peer = %s.peer.name, roles = %s.peer_roles, op = op.as_str(), refused_total = n, "refused: {what}");
        }
    }

    /// True when the peer of `s` may send to local actor `pid`: the actor holds a name
    /// (names are public) or was spawned for that peer. An actor id is not a capability:
    /// one guessed from the counter reaches nothing else.
    fn reachable(&self, s: &Session, pid: u64) -> bool {
        if let Some(roles) = lock(&self.restricted).get(&pid) {
            if !roles.any(s.peer_roles) {
                return false;
            }
        }
        s.granted(pid)
            || lock(&self.names).names_pid(&self.ident.name, pid)
            || lock(&self.name_grants)
                .get(&s.peer.name)
                .is_some_and(|g| g.contains(&pid))
    }

    /// Grants local actor `pid` to peer `node` by name (see [`Node::spawn_remote_granted`]).
    /// Ended actors are pruned whenever the peer's grants reach a power of two.
    fn grant_by_name(&self, node: &str, pid: u64) {
        let mut all = lock(&self.name_grants);
        let g = all.entry(node.to_string()).or_default();
        g.insert(pid);
        if g.len().is_power_of_two() && g.len() >= 64 {
            g.retain(|p| ractor::registry::where_is_pid(ActorId::Local(*p)).is_some());
        }
    }

    async fn dispatch(self: &Arc<Self>, s: &Arc<Session>, msg: Wire) {
        match msg {
            Wire::Heartbeat => {}
            Wire::Cast { to, .. } if !self.reachable(s, to) => {
                self.refuse(
                    s,
                    Refused::Cast,
                    format_args!("a message to actor {to}, which it cannot reach"),
                );
                s.send_or_drop(&Wire::Down {
                    pid: to,
                    reason: DownReason::NoProc,
                });
            }
            Wire::Call { to, id, .. } if !self.reachable(s, to) => {
                self.refuse(
                    s,
                    Refused::Call,
                    format_args!("a call to actor {to}, which it cannot reach"),
                );
                s.send_or_drop(&Wire::Reply {
                    id,
                    body: Err(format!("no actor {to} on node {}", self.ident.name)),
                });
            }
            Wire::Watch { pid } if !self.reachable(s, pid) => {
                self.refuse(
                    s,
                    Refused::Watch,
                    format_args!("a monitor of actor {pid}, which it cannot reach"),
                );
                s.send_or_drop(&Wire::Down {
                    pid,
                    reason: DownReason::NoProc,
                });
            }
            // Only the node an actor was spawned for (its supervisor's, when linked) may
            // stop it: every actor spawned for a peer is granted to it.
            Wire::Stop { pid, .. } if !s.granted(pid) => {
                self.refuse(
                    s,
                    Refused::Stop,
                    format_args!("stopping actor {pid}, which it does not supervise"),
                );
            }
            Wire::Cast { to, .. } if !self.admit(s, to) => {}
            Wire::Call { to, id, .. } if !self.admit(s, to) => {
                let limit = self.inbox_limit(to);
                s.send_or_drop(&Wire::Reply {
                    id,
                    body: Err(format!(
                        "actor {to} on node {} is overloaded ({limit} messages queued): the call was shed",
                        self.ident.name
                    )),
                });
            }
            Wire::Cast { to, body } => match ractor::registry::where_is_pid(ActorId::Local(to)) {
                Some(c) => {
                    if let Err(e) = c.send_serialized(crate::private::cast(body)) {
                        debug!(actor = to, "a cast came as the actor stopped: {e}");
                    }
                }
                None => {
                    s.send_or_drop(&Wire::Down {
                        pid: to,
                        reason: DownReason::NoProc,
                    });
                }
            },
            Wire::Call { to, id, body } => {
                let Some(c) = ractor::registry::where_is_pid(ActorId::Local(to)) else {
                    s.send_or_drop(&Wire::Reply {
                        id,
                        body: Err(format!("no actor {to} on node {}", self.ident.name)),
                    });
                    return;
                };
                let (tx, rx) = ractor::concurrency::oneshot::<Vec<u8>>();
                let m = ractor::message::SerializedMessage::Call {
                    variant: String::new(),
                    args: body,
                    reply: tx.into(),
                    metadata: None,
                };
                if c.send_serialized(m).is_err() {
                    s.send_or_drop(&Wire::Reply {
                        id,
                        body: Err("actor stopped".into()),
                    });
                    return;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let body = rx
                        .await
                        .map(serde_bytes::ByteBuf::from)
                        .map_err(|_| "the actor dropped the call".to_string());
                    s.send_or_drop(&Wire::Reply { id, body });
                });
            }
            Wire::Reply { id, body } => s.reply(id, body.map(|b| b.into_vec())),
            Wire::Spawn {
                id,
                type_name,
                msg_type,
                args,
                linked,
                grant_to,
            } => {
                let node = self.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let spawn = PeerSpawn {
                        id,
                        type_name: &type_name,
                        msg_type: &msg_type,
                        args: &args,
                        linked,
                        grant_to: grant_to.as_deref(),
                    };
                    node.spawn_for_peer(&s, spawn).await
                });
            }
            Wire::Spawned { id, result } => {
                let Some(p) = lock(&s.spawns).remove(&id) else {
                    // Its requester gave up waiting: do not leave an orphan behind.
                    if let Ok(pid) = result {
                        s.send_or_drop(&Wire::Stop {
                            pid,
                            reason: Some("spawn request timed out".into()),
                        });
                    }
                    return;
                };
                let r = match result {
                    Ok(pid) => s.proxy(pid, p.supervisor, false).await,
                    Err(e) => Err(e),
                };
                if p.done.send(r).is_err() {
                    debug!("the spawner stopped waiting");
                }
            }
            Wire::Watch { pid } => {
                if let Some(w) = self.watcher.get() {
                    let watch = WatcherMsg::Watch {
                        pid,
                        session: s.clone(),
                        monitored: false,
                    };
                    if let Err(e) = w.cast(watch) {
                        debug!("node stopping, watcher gone: {e}");
                    }
                }
            }
            Wire::Down { pid, reason } => s.remote_down(pid, reason),
            Wire::Stop { pid, reason } => {
                lock(&s.linked_children).remove(&pid);
                if let Some(c) = ractor::registry::where_is_pid(ActorId::Local(pid)) {
                    c.stop(reason);
                }
            }
            Wire::Register {
                name,
                pid,
                msg_type,
                rank,
            } => {
                let exclusive = match rule(&name, &s.peer.name, s.peer_roles).exclusive() {
                    Ok(x) => x,
                    Err(reason) => {
                        self.refuse(s, Refused::Register, format_args!("{reason}"));
                        return;
                    }
                };
                let e = NameEntry {
                    node: s.peer.name.clone(),
                    pid,
                    msg_type,
                    rank: if crate::names::ranked(&name) { rank } else { 0 },
                };
                if let Claim::Lost { holder } = lock(&self.names).claim_as(&name, e, exclusive) {
                    if exclusive {
                        self.refuse(
                            s,
                            Refused::Register,
                            format_args!("claim of {name:?}, held by live node {}", holder.node),
                        );
                    } else {
                        debug!(%name, holder = %holder.node, peer = %s.peer.name, "name claim lost");
                    }
                }
                self.bump();
            }
            Wire::Unregister { name } => {
                lock(&self.names).release(&name, &s.peer.name);
            }
            Wire::Peers { peers } => {
                if !self.opts.connect_all {
                    return;
                }
                for (name, addr) in peers {
                    if name == self.ident.name {
                        continue;
                    }
                    // Only news: a peer cannot re-point a node this one already knows.
                    let new = match lock(&self.known).entry(name.clone()) {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(addr);
                            true
                        }
                        std::collections::btree_map::Entry::Occupied(_) => false,
                    };
                    if new && !lock(&self.sessions).contains_key(&name) {
                        self.keep_connected(name);
                    }
                }
            }
            Wire::Leave { reason } => {
                lock(&self.known).remove(&s.peer.name);
                let r = format!("left the cluster ({reason})");
                s.close_link(&r);
                self.session_down(s, &r);
            }
        }
    }

    async fn spawn_for_peer(&self, s: &Arc<Session>, spawn: PeerSpawn<'_>) {
        let PeerSpawn {
            id,
            type_name,
            msg_type,
            args,
            linked,
            grant_to,
        } = spawn;
        let res = match self.factory(type_name, msg_type) {
            Ok(f) if !f.exports().any(s.peer_roles) => {
                let why = format!(
                    "node {} does not export actor type {type_name:?} to {} (roles: {})",
                    self.ident.name, s.peer.name, s.peer_roles
                );
                self.refuse(s, Refused::Spawn, format_args!("{why}"));
                Err(why)
            }
            Ok(f) => f.spawn(args, None).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(cell) => {
                let pid = cell.get_id().pid();
                s.grant(pid);
                if let Some(other) = grant_to {
                    // Both by name: they reach it again after reconnecting (an agent
                    // restarted re-adopts the actor tasks of its executors).
                    self.grant_by_name(other, pid);
                    self.grant_by_name(&s.peer.name, pid);
                }
                if linked {
                    lock(&s.linked_children).insert(pid);
                    if !s.is_alive() {
                        // The session ended while the child started (after it stopped the
                        // session's children): the child's parent is gone.
                        lock(&s.linked_children).remove(&pid);
                        cell.stop(Some(format!(
                            "{PARENT_NODE_DOWN} {}: its session ended while the child started",
                            s.peer.name
                        )));
                        return;
                    }
                }
                // Monitored before the peer learns of it, so however soon it ends, its
                // end (with its reason) reaches the watcher.
                let watcher = self.watcher.get();
                if let Some(w) = watcher {
                    w.get_cell().monitor(cell.clone());
                }
                s.send_or_drop(&Wire::Spawned {
                    id,
                    result: Ok(pid),
                });
                if let Some(w) = watcher {
                    let watch = WatcherMsg::Watch {
                        pid,
                        session: s.clone(),
                        monitored: true,
                    };
                    if let Err(e) = w.cast(watch) {
                        debug!("node stopping, watcher gone: {e}");
                    }
                }
            }
            Err(e) => {
                s.send_or_drop(&Wire::Spawned { id, result: Err(e) });
            }
        }
    }
}

async fn reader(node: Arc<NodeInner>, s: Arc<Session>, link_id: u64, mut rx: FrameReceiver) {
    let peer = s.peer.name.clone();
    let (kind, reason) = loop {
        match rx.next().await {
            // The session ended (its peer is down for this node, which told its
            // supervisors so): frames still arriving on its link are not acted on, or a
            // spawn could start a child no one above knows of.
            Ok(Some(_)) if !s.is_alive() => {
                break (CloseKind::Other, "its session ended".to_string())
            }
            Ok(Some(frame)) => {
                s.last_heard
                    .store(node.now().as_micros() as u64, Ordering::Relaxed);
                match codec::decode::<Wire>(&frame) {
                    Ok(m) => node.dispatch(&s, m).await,
                    Err(e) => {
                        let r = format!("undecodable frame from {peer}: {e}");
                        warn!(node = %node.ident.name, "closing connection: {r}");
                        if s.link_id() == link_id {
                            s.close_link(&r);
                        }
                        break (CloseKind::Other, r);
                    }
                }
            }
            Ok(None) => break (CloseKind::Other, "connection ended".to_string()),
            Err(NetError::Closed(r)) => break (r.kind, format!("connection closed: {r}")),
            Err(e) => {
                let r = format!("bad stream from {peer}: {e}");
                warn!(node = %node.ident.name, "closing connection: {r}");
                if s.link_id() == link_id {
                    s.close_link(&r);
                }
                break (CloseKind::Other, r);
            }
        }
    };
    node.link_lost(&s, link_id, kind, &reason);
}
