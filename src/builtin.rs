//! Actor types every `plexus node` registers, so any node (or a program that joined the
//! cluster) can spawn them remotely: `plexus.echo` (answers, counts, can be told to fail),
//! `plexus.oneshot` (stops right after starting; used to time remote spawn),
//! `plexus.probe` (checks cast, call, spawn and name lookup from its node to another) and
//! `plexus.keeper` (a supervisor that keeps one echo child alive somewhere in the cluster).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plexus_actors::{is_node_down, Node, RemoteMessage};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};

/// Registered type name of [`Echo`].
pub const ECHO: &str = "plexus.echo";
/// Registered type name of [`Oneshot`].
pub const ONESHOT: &str = "plexus.oneshot";
/// Registered type name of [`Probe`].
pub const PROBE: &str = "plexus.probe";
/// Registered type name of [`Keeper`].
pub const KEEPER: &str = "plexus.keeper";

/// The name under which each node registers its own echo actor: `echo@NODE`.
pub fn echo_name(node: &str) -> String {
    format!("echo@{node}")
}

/// Messages of [`Echo`].
#[derive(Debug, RemoteMessage)]
pub enum EchoMsg {
    /// Adds to the counter.
    Ping(u64),
    /// Answers `echo:TEXT`.
    Echo(String, RpcReplyPort<String>),
    /// Answers the counter.
    Count(RpcReplyPort<u64>),
    /// Panics with the text.
    Panic(String),
    /// Stops with reason `asked to quit`.
    Quit,
}

/// Answers, counts, and fails on request.
#[derive(Debug, Default)]
pub struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = u64;
    type Arguments = u64;

    async fn pre_start(&self, _: ActorRef<EchoMsg>, start: u64) -> Result<u64, ActorProcessingErr> {
        Ok(start)
    }

    async fn handle(
        &self,
        me: ActorRef<EchoMsg>,
        msg: EchoMsg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EchoMsg::Ping(k) => *n += k,
            EchoMsg::Echo(s, r) => {
                reply_or_log(r.send(format!("echo:{s}")));
            }
            EchoMsg::Count(r) => {
                reply_or_log(r.send(*n));
            }
            EchoMsg::Panic(text) => panic!("{text}"),
            EchoMsg::Quit => me.stop(Some("asked to quit".into())),
        }
        Ok(())
    }
}

/// Stops as soon as it has started.
#[derive(Debug, Default)]
pub struct Oneshot;

impl Actor for Oneshot {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_start(
        &self,
        me: ActorRef<EchoMsg>,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        me.stop(None);
        Ok(())
    }
}

/// Messages of [`Probe`].
#[derive(Debug, RemoteMessage)]
pub enum ProbeMsg {
    /// From the probe's node to node `target`: remote spawn, casts, calls, and a lookup
    /// of `echo@target`. Answers a summary or what failed.
    Check(String, RpcReplyPort<Result<String, String>>),
}

/// Checks the distribution layer from its node to another.
#[derive(Debug)]
pub struct Probe {
    node: Node,
}

async fn check(node: &Node, target: &str) -> Result<String, String> {
    let e: ActorRef<EchoMsg> = node
        .spawn_remote(target, ECHO, &0u64)
        .await
        .map_err(|e| format!("spawn: {e}"))?;
    for _ in 0..10 {
        e.cast(EchoMsg::Ping(1)).map_err(|e| format!("cast: {e}"))?;
    }
    let n = call_t!(e, EchoMsg::Count, 5000).map_err(|e| format!("call: {e}"))?;
    if n != 10 {
        return Err(format!("counted {n} of 10 casts"));
    }
    let name = echo_name(target);
    let mut found = None;
    for _ in 0..100 {
        found = node
            .whereis::<EchoMsg>(&name)
            .await
            .map_err(|e| format!("whereis: {e}"))?;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = found.ok_or_else(|| format!("{name} not found"))?;
    let got = call_t!(r, EchoMsg::Echo, 5000, node.name().to_string())
        .map_err(|e| format!("call {name}: {e}"))?;
    e.stop(None);
    Ok(format!(
        "{} -> {target}: spawn, 10 casts, call, whereis {name} -> {got}",
        node.name()
    ))
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ProbeMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Check(target, reply) => {
                reply_or_log(reply.send(check(&self.node, &target).await));
            }
        }
        Ok(())
    }
}

/// Arguments of [`Keeper`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeeperArgs {
    /// Nodes the child may run on, in order of preference.
    pub candidates: Vec<String>,
}

/// One thing a [`Keeper`] saw, with the wall-clock time it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperEvent {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// `started NODE`, `node-down NODE: REASON`, `failed NODE: TEXT`, `exited NODE`.
    pub what: String,
}

/// What a [`Keeper`] reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// Where the child runs now.
    pub child_node: Option<String>,
    /// Everything seen, oldest first.
    pub events: Vec<KeeperEvent>,
}

/// Messages of [`Keeper`].
#[derive(Debug, RemoteMessage)]
pub enum KeeperMsg {
    /// Answers the status.
    Status(RpcReplyPort<KeeperStatus>),
    /// Calls the child (`Echo`) and answers its reply.
    CallChild(String, RpcReplyPort<Result<String, String>>),
    /// Tries again to start the child (sent to itself while no candidate is up).
    Retry,
}

/// A supervisor that keeps one [`Echo`] child running on one of its candidate nodes:
/// restarted in place when it fails, moved to a surviving node when its node goes down.
#[derive(Debug)]
pub struct Keeper {
    node: Node,
}

/// State of a [`Keeper`].
#[derive(Debug)]
pub struct KeeperState {
    args: KeeperArgs,
    child: Option<(ActorRef<EchoMsg>, String)>,
    status: KeeperStatus,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Keeper {
    async fn start_child(
        &self,
        me: &ActorRef<KeeperMsg>,
        st: &mut KeeperState,
        avoid: Option<&str>,
    ) {
        let up: Vec<String> = self.node.peers().into_iter().map(|p| p.name).collect();
        let ordered = st
            .args
            .candidates
            .iter()
            .filter(|c| Some(c.as_str()) != avoid)
            .filter(|c| *c == self.node.name() || up.contains(c));
        for cand in ordered {
            let r = self
                .node
                .spawn_remote_linked::<EchoMsg, _>(me.get_cell(), cand, ECHO, &0u64)
                .await;
            if let Ok(child) = r {
                st.status.events.push(KeeperEvent {
                    unix_ms: unix_ms(),
                    what: format!("started {cand}"),
                });
                st.status.child_node = Some(cand.clone());
                st.child = Some((child, cand.clone()));
                return;
            }
        }
        st.status.child_node = None;
        st.status.events.push(KeeperEvent {
            unix_ms: unix_ms(),
            what: "no candidate node available; retrying".into(),
        });
        me.send_after(Duration::from_millis(200), || KeeperMsg::Retry);
    }
}

impl Actor for Keeper {
    type Msg = KeeperMsg;
    type State = KeeperState;
    type Arguments = KeeperArgs;

    async fn pre_start(
        &self,
        _: ActorRef<KeeperMsg>,
        args: KeeperArgs,
    ) -> Result<KeeperState, ActorProcessingErr> {
        Ok(KeeperState {
            args,
            child: None,
            status: KeeperStatus::default(),
        })
    }

    async fn post_start(
        &self,
        me: ActorRef<KeeperMsg>,
        st: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        self.start_child(&me, st, None).await;
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<KeeperMsg>,
        msg: KeeperMsg,
        st: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            KeeperMsg::Status(r) => {
                reply_or_log(r.send(st.status.clone()));
            }
            KeeperMsg::Retry => {
                if st.child.is_none() {
                    self.start_child(&me, st, None).await;
                }
            }
            KeeperMsg::CallChild(text, r) => {
                let res = match &st.child {
                    Some((c, _)) => {
                        call_t!(c, EchoMsg::Echo, 5000, text).map_err(|e| e.to_string())
                    }
                    None => Err("no child".into()),
                };
                reply_or_log(r.send(res));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<KeeperMsg>,
        evt: SupervisionEvent,
        st: &mut KeeperState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(cell) = evt.actor_cell() else {
            return Ok(());
        };
        let Some((child, where_)) = st.child.clone() else {
            return Ok(());
        };
        if cell.get_id() != child.get_id() {
            return Ok(());
        }
        let (what, avoid) = match &evt {
            SupervisionEvent::ActorTerminated(_, _, r) if is_node_down(r.as_deref()) => (
                format!("node-down {where_}: {}", r.clone().unwrap_or_default()),
                Some(where_.clone()),
            ),
            SupervisionEvent::ActorTerminated(_, _, r) => (
                format!("exited {where_}: {}", r.clone().unwrap_or_default()),
                None,
            ),
            SupervisionEvent::ActorFailed(_, e) => (format!("failed {where_}: {e}"), None),
            _ => return Ok(()),
        };
        st.status.events.push(KeeperEvent {
            unix_ms: unix_ms(),
            what,
        });
        st.child = None;
        self.start_child(&me, st, avoid.as_deref()).await;
        Ok(())
    }
}

/// Registers the built-in actor types on `node`, for peers with any of the roles
/// `exports` to spawn.
pub fn register_all(node: &Node, exports: plexus_net::Roles) {
    node.register_type(ECHO, exports, || Echo);
    node.register_type(ONESHOT, exports, || Oneshot);
    let n = node.clone();
    node.register_type(PROBE, exports, move || Probe { node: n.clone() });
    let n = node.clone();
    node.register_type(KEEPER, exports, move || Keeper { node: n.clone() });
}

/// Registers the built-in types and starts this node's `echo@NODE`.
///
/// On a plain actor node (`plexus node`) every peer may spawn them: that node exists to
/// host actors.
pub async fn install(node: &Node) -> Result<ActorRef<EchoMsg>, plexus_actors::ActorsError> {
    register_all(node, plexus_net::Roles::ALL);
    let (echo, _) = Actor::spawn(None, Echo, 0)
        .await
        .map_err(|e| plexus_actors::ActorsError::Actor(e.to_string()))?;
    node.register(&echo_name(node.name()), &echo)?;
    Ok(echo)
}

/// A reply whose caller may have given up: nothing to do but say so.
fn reply_or_log<T>(sent: Result<(), ractor::MessagingErr<T>>) {
    if let Err(e) = sent {
        tracing::debug!("a caller left before its answer: {e}");
    }
}
