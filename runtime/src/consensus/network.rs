//! openraft's transport over the cluster link: each node runs one remotable [`RaftRpcServer`]
//! in the process group `keelson.v1.raft.<node>`; peers reach it with ractor RPCs whose payloads
//! are versioned JSON frames of openraft's own types.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{MapRaft, MapRequest, MapWatch, Raft};
use crate::shard_map::{MapError, ShardMap};
use crate::wire::{self, RaftRpc, WIRE_VERSION};

fn frame<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    serde_json::to_writer(&mut out, v).expect("raft frames serialise");
    out
}

fn unframe<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((&WIRE_VERSION, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("frame version {v} is not {WIRE_VERSION}")),
        None => Err("empty frame".to_string()),
    }
}

/// Why a proposal did not change the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The map refused it (it changed meanwhile, or the command does not fit).
    #[error(transparent)]
    Refused(#[from] MapError),
    /// No leader could be reached: there is no majority, or an election is running.
    #[error("no consensus leader reachable ({0})")]
    NoLeader(String),
}

/// Calls `target`'s consensus endpoint.
async fn call(
    target: &str,
    build: fn(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) -> RaftRpc,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let Some(cell) = ractor::pg::get_members(&wire::raft_group(target))
        .into_iter()
        .next()
    else {
        return Err(format!("not connected to {target}"));
    };
    let actor: ActorRef<RaftRpc> = cell.into();
    match actor.call(|r| build(body, r), Some(timeout)).await {
        Ok(CallResult::Success(b)) => Ok(b),
        Ok(CallResult::Timeout) => Err(format!("{target} did not answer within {timeout:?}")),
        Ok(CallResult::SenderError) | Err(_) => Err(format!("connection to {target} lost")),
    }
}

/// Makes connections to peers for openraft.
#[derive(Debug, Clone, Default)]
pub struct RaftNetworkFactory;

/// One peer, as openraft sees it.
#[derive(Debug)]
pub struct Connection {
    target: u64,
    name: String,
}

impl openraft::network::RaftNetworkFactory<MapRaft> for RaftNetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            target,
            name: node.addr.clone(),
        }
    }
}

impl Connection {
    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        build: fn(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) -> RaftRpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let bytes = call(&self.name, build, frame(req), option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let res: Result<Resp, RaftError<u64, E>> = unframe(&bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<MapRaft> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MapRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(RaftRpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<MapRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, openraft::error::InstallSnapshotError>>,
    > {
        self.rpc(RaftRpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(RaftRpc::Vote, &rpc, &option).await
    }
}

/// Proposes `cmd`, forwarding to the leader when this node is not it.
pub async fn propose(
    raft: &Raft,
    cmd: crate::shard_map::MapCommand,
    timeout: Duration,
) -> Result<u64, ProposeError> {
    match raft.client_write(MapRequest(cmd.clone())).await {
        Ok(resp) => resp.data.0.map_err(ProposeError::from),
        Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
            let Some(leader) = f.leader_node else {
                return Err(ProposeError::NoLeader("election in progress".to_string()));
            };
            let bytes = call(&leader.addr, RaftRpc::Propose, frame(&cmd), timeout)
                .await
                .map_err(ProposeError::NoLeader)?;
            unframe::<Result<u64, ProposeError>>(&bytes).map_err(ProposeError::NoLeader)?
        }
        Err(e) => Err(ProposeError::NoLeader(e.to_string())),
    }
}

/// Fetches the shard map applied by node `from`.
pub async fn fetch_map(from: &str, timeout: Duration) -> Result<ShardMap, String> {
    let bytes = call(from, RaftRpc::GetMap, frame(&()), timeout).await?;
    unframe(&bytes)
}

/// The consensus endpoint actor.
pub struct RaftRpcServer;

/// Its state.
pub struct RaftServerState {
    node: String,
    raft: Arc<Raft>,
    map: MapWatch,
    timeout: Duration,
}

/// Starts the consensus endpoint of `node`.
pub async fn serve_raft_rpc(
    node: &str,
    raft: Arc<Raft>,
    map: MapWatch,
    timeout: Duration,
) -> Result<ActorRef<RaftRpc>, ractor::SpawnErr> {
    let (actor, _) = Actor::spawn(
        None,
        RaftRpcServer,
        RaftServerState {
            node: node.to_string(),
            raft,
            map,
            timeout,
        },
    )
    .await?;
    Ok(actor)
}

impl Actor for RaftRpcServer {
    type Msg = RaftRpc;
    type State = RaftServerState;
    type Arguments = RaftServerState;

    async fn pre_start(
        &self,
        myself: ActorRef<RaftRpc>,
        args: RaftServerState,
    ) -> Result<RaftServerState, ActorProcessingErr> {
        ractor::pg::join(wire::raft_group(&args.node), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<RaftRpc>,
        st: &mut RaftServerState,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(wire::raft_group(&st.node), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RaftRpc>,
        msg: RaftRpc,
        st: &mut RaftServerState,
    ) -> Result<(), ActorProcessingErr> {
        // openraft calls may wait on I/O: answer from a task so the mailbox never blocks.
        let raft = st.raft.clone();
        match msg {
            RaftRpc::Append(b, reply) => {
                tokio::spawn(async move {
                    let Ok(req) = unframe::<AppendEntriesRequest<MapRaft>>(&b) else {
                        return;
                    };
                    let _ = reply.send(frame(&raft.append_entries(req).await));
                });
            }
            RaftRpc::Vote(b, reply) => {
                tokio::spawn(async move {
                    let Ok(req) = unframe::<VoteRequest<u64>>(&b) else {
                        return;
                    };
                    let _ = reply.send(frame(&raft.vote(req).await));
                });
            }
            RaftRpc::Snapshot(b, reply) => {
                tokio::spawn(async move {
                    let Ok(req) = unframe::<InstallSnapshotRequest<MapRaft>>(&b) else {
                        return;
                    };
                    let _ = reply.send(frame(&raft.install_snapshot(req).await));
                });
            }
            RaftRpc::Propose(b, reply) => {
                let timeout = st.timeout;
                tokio::spawn(async move {
                    let result = match unframe(&b) {
                        Ok(cmd) => propose_local(&raft, cmd, timeout).await,
                        Err(e) => Err(ProposeError::NoLeader(format!("bad proposal frame: {e}"))),
                    };
                    let _ = reply.send(frame(&result));
                });
            }
            RaftRpc::GetMap(_, reply) => {
                let map = st.map.borrow().clone();
                let _ = reply.send(frame(&*map));
            }
        }
        Ok(())
    }
}

/// A proposal received from a peer: only the leader applies it; no second forward.
async fn propose_local(
    raft: &Raft,
    cmd: crate::shard_map::MapCommand,
    _timeout: Duration,
) -> Result<u64, ProposeError> {
    match raft.client_write(MapRequest(cmd)).await {
        Ok(resp) => resp.data.0.map_err(ProposeError::from),
        Err(e) => Err(ProposeError::NoLeader(e.to_string())),
    }
}
