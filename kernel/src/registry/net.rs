//! Raft's messages between masters, carried as plexus remote messages over the masters'
//! QUIC links.
//!
//! Each master runs a [`RaftPeer`] actor named [`raft_name`]`(node)`, restricted to peers
//! with the master role (an agent or a client with a valid certificate reaches nothing of
//! it). [`RaftNet`] is openraft's network: a client per target master that finds that
//! actor by name and calls it, each call bounded by the time openraft gives it.

// openraft's network traits return its error types (over 200 bytes).
#![allow(clippy::result_large_err)]

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, Raft};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::debug;

use plexus_actors::{Node, RemoteMessage};

use super::{MasterId, RegistryRaft};

/// Prefix of the masters' Raft actors' names (held only by master-role nodes).
pub const RAFT_PREFIX: &str = "plexus.master:raft:";

/// The name of master `node`'s Raft actor.
pub fn raft_name(node: &str) -> String {
    format!("{RAFT_PREFIX}{node}")
}

/// What a master answers a Raft call: openraft's response, or why it could not.
pub type RaftAnswer<T> = Result<T, String>;

/// Raft's calls from one master to another.
#[derive(Debug, RemoteMessage)]
pub enum RaftMsg {
    /// Log entries (or a heartbeat) from the leader.
    Append(
        AppendEntriesRequest<RegistryRaft>,
        RpcReplyPort<RaftAnswer<AppendEntriesResponse<MasterId>>>,
    ),
    /// A candidate asks for this master's vote.
    Vote(
        VoteRequest<MasterId>,
        RpcReplyPort<RaftAnswer<VoteResponse<MasterId>>>,
    ),
    /// A chunk of a snapshot, for a master whose log is behind the compaction point.
    Snapshot(
        InstallSnapshotRequest<RegistryRaft>,
        RpcReplyPort<RaftAnswer<InstallSnapshotResponse<MasterId>>>,
    ),
}

/// The actor that hands other masters' Raft calls to this master's Raft.
pub struct RaftPeer;

impl Actor for RaftPeer {
    type Msg = RaftMsg;
    type State = Raft<RegistryRaft>;
    type Arguments = Raft<RegistryRaft>;

    async fn pre_start(
        &self,
        _: ActorRef<RaftMsg>,
        raft: Raft<RegistryRaft>,
    ) -> Result<Raft<RegistryRaft>, ActorProcessingErr> {
        Ok(raft)
    }

    async fn handle(
        &self,
        _: ActorRef<RaftMsg>,
        msg: RaftMsg,
        raft: &mut Raft<RegistryRaft>,
    ) -> Result<(), ActorProcessingErr> {
        // Answered in its own task: a vote is never stuck behind a slow append, and the
        // Raft core orders what it is handed.
        let raft = raft.clone();
        tokio::spawn(async move {
            let sent = match msg {
                RaftMsg::Append(rpc, reply) => reply
                    .send(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
                    .is_ok(),
                RaftMsg::Vote(rpc, reply) => reply
                    .send(raft.vote(rpc).await.map_err(|e| e.to_string()))
                    .is_ok(),
                RaftMsg::Snapshot(rpc, reply) => reply
                    .send(raft.install_snapshot(rpc).await.map_err(|e| e.to_string()))
                    .is_ok(),
            };
            if !sent {
                debug!("a Raft caller stopped waiting for its answer");
            }
        });
        Ok(())
    }
}

/// openraft's network: Raft calls to the other masters through their [`RaftPeer`]s.
/// A target's [`BasicNode::addr`] is its node name.
#[derive(Clone)]
pub struct RaftNet {
    node: Node,
}

impl RaftNet {
    /// The network of the master on `node`.
    pub fn new(node: Node) -> Self {
        RaftNet { node }
    }
}

impl RaftNetworkFactory<RegistryRaft> for RaftNet {
    type Network = RaftClient;

    async fn new_client(&mut self, target: MasterId, node: &BasicNode) -> RaftClient {
        RaftClient {
            node: self.node.clone(),
            target,
            name: node.addr.clone(),
        }
    }
}

/// Raft calls to one master.
pub struct RaftClient {
    node: Node,
    target: MasterId,
    /// The target's node name.
    name: String,
}

type Failed<E = openraft::error::Infallible> =
    RPCError<MasterId, BasicNode, RaftError<MasterId, E>>;

impl RaftClient {
    /// Calls the target's Raft actor with what `make` builds, within `ttl`.
    async fn call<T, E>(
        &self,
        ttl: Duration,
        make: impl FnOnce(RpcReplyPort<RaftAnswer<T>>) -> RaftMsg,
    ) -> Result<T, Failed<E>>
    where
        T: Send + 'static,
        E: std::error::Error,
    {
        let unreachable =
            |why: String| RPCError::Unreachable(Unreachable::new(&AnyError::error(why)));
        let peer = match self.node.whereis::<RaftMsg>(&raft_name(&self.name)).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(unreachable(format!(
                    "master {} ({}) is not connected",
                    self.target, self.name
                )))
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        match peer.call(make, Some(ttl)).await {
            Ok(CallResult::Success(Ok(answer))) => Ok(answer),
            Ok(CallResult::Success(Err(why))) => Err(RPCError::Network(NetworkError::new(
                &AnyError::error(format!("master {}: {why}", self.name)),
            ))),
            Ok(CallResult::Timeout) => Err(unreachable(format!(
                "master {} did not answer within {} ms",
                self.name,
                ttl.as_millis()
            ))),
            Ok(CallResult::SenderError) => {
                Err(unreachable(format!("master {} went away", self.name)))
            }
            Err(e) => Err(unreachable(format!("master {}: {e}", self.name))),
        }
    }
}

impl RaftNetwork<RegistryRaft> for RaftClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<RegistryRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MasterId>, Failed> {
        self.call(option.hard_ttl(), |r| RaftMsg::Append(rpc, r))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<RegistryRaft>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MasterId>, Failed<InstallSnapshotError>> {
        self.call(option.hard_ttl(), |r| RaftMsg::Snapshot(rpc, r))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MasterId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MasterId>, Failed> {
        self.call(option.hard_ttl(), |r| RaftMsg::Vote(rpc, r))
            .await
    }
}
