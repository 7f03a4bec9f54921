//! openraft's transport over the cluster link: each node runs one remotable [`RaftRpcServer`]
//! in the process group `keelson.v1.raft.<node>`; peers reach it with ractor RPCs whose payloads
//! are versioned JSON frames of openraft's own types. Every frame is checked before openraft
//! sees it (size, entry count, snapshot offsets and shape, proposed shard), and every answer is
//! an `Answer`: openraft's result or a typed refusal.

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
use crate::wire::frame_check::{self, FrameLimits};
use crate::wire::{self, FrameError, RaftRpc, WIRE_VERSION};
use keelson_rules::shard_map::{MapCommand, MapError, ShardMap};

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

/// Every answer of the consensus endpoint: openraft's own result, or why the frame was refused
/// before openraft saw it (see `frame_check`).
#[derive(Debug, Serialize, Deserialize)]
enum Answer<T> {
    Done(T),
    Refused(FrameError),
}

/// Decodes and checks a frame from a peer; a refusal is counted and logged.
fn take<T: DeserializeOwned>(
    frame_name: &str,
    b: &[u8],
    limits: &FrameLimits,
    check: impl FnOnce(&T) -> Result<(), FrameError>,
) -> Result<T, FrameError> {
    let checked = frame_check::size(
        &format!("{frame_name} frame"),
        b.len(),
        limits.max_frame_bytes,
    )
    .and_then(|()| {
        unframe::<T>(b).map_err(|reason| FrameError::Malformed {
            frame: frame_name.to_string(),
            reason,
        })
    })
    .and_then(|v| check(&v).map(|()| v));
    if let Err(e) = &checked {
        frame_check::refuse(frame_name, e);
    }
    checked
}

/// A snapshot sent whole in one chunk must hold a map of this cluster's shape: a map of another
/// shard count would make every shard number this node uses wrong.
fn snapshot_shape(req: &InstallSnapshotRequest<MapRaft>, map: &ShardMap) -> Result<(), FrameError> {
    frame_check::snapshot_chunk(req.offset, req.data.len())?;
    if req.offset != 0 || !req.done {
        return Ok(());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&req.data).map_err(|e| FrameError::Malformed {
            frame: "snapshot data".to_string(),
            reason: e.to_string(),
        })?;
    let shards = v["map"]["shards"].as_array().map_or(0, Vec::len) as u64;
    if shards != u64::from(map.shard_count()) {
        return Err(FrameError::OutOfRange {
            field: "snapshot shard count".to_string(),
            value: shards,
            expected: format!("{} (this cluster's)", map.shard_count()),
        });
    }
    let nodes: Vec<&str> = v["map"]["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    if nodes != map.nodes().iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(FrameError::UnknownNode {
            field: "snapshot nodes".to_string(),
        });
    }
    Ok(())
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
        let answer: Answer<Result<Resp, RaftError<u64, E>>> = unframe(&bytes)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        match answer {
            Answer::Done(res) => {
                res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Answer::Refused(e) => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other(format!("{} refused the frame: {e}", self.name)),
            ))),
        }
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
    cmd: keelson_rules::shard_map::MapCommand,
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
            match unframe::<Answer<Result<u64, ProposeError>>>(&bytes)
                .map_err(ProposeError::NoLeader)?
            {
                Answer::Done(r) => r,
                Answer::Refused(e) => Err(ProposeError::NoLeader(format!(
                    "{} refused the proposal: {e}",
                    leader.addr
                ))),
            }
        }
        Err(e) => Err(ProposeError::NoLeader(e.to_string())),
    }
}

/// Asks node `peer` to start removing a node: `cmd` must be a `DrainNode` (the only change a
/// gateway may ask for).
pub async fn request_drain(
    peer: &str,
    cmd: keelson_rules::shard_map::MapCommand,
    timeout: Duration,
) -> Result<u64, ProposeError> {
    ask(peer, RaftRpc::Drain, &cmd, timeout).await
}

/// Asks `peer` to propose `cmd` (it forwards to the leader): how a node that is not a member
/// of the consensus yet (one joining) gets a change committed.
pub async fn propose_via(
    peer: &str,
    cmd: keelson_rules::shard_map::MapCommand,
    timeout: Duration,
) -> Result<u64, ProposeError> {
    ask(peer, RaftRpc::Propose, &cmd, timeout).await
}

/// Sends `cmd` to `peer`'s consensus endpoint as `build` and reads the proposal's answer.
async fn ask(
    peer: &str,
    build: fn(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) -> RaftRpc,
    cmd: &keelson_rules::shard_map::MapCommand,
    timeout: Duration,
) -> Result<u64, ProposeError> {
    let bytes = call(peer, build, frame(cmd), timeout)
        .await
        .map_err(ProposeError::NoLeader)?;
    match unframe::<Answer<Result<u64, ProposeError>>>(&bytes).map_err(ProposeError::NoLeader)? {
        Answer::Done(r) => r,
        Answer::Refused(e) => Err(ProposeError::NoLeader(format!(
            "{peer} refused the proposal: {e}"
        ))),
    }
}

/// Fetches the shard map applied by node `from`.
pub async fn fetch_map(from: &str, timeout: Duration) -> Result<ShardMap, String> {
    let bytes = call(from, RaftRpc::GetMap, frame(&()), timeout).await?;
    match unframe::<Answer<ShardMap>>(&bytes)? {
        Answer::Done(map) => Ok(map),
        Answer::Refused(e) => Err(format!("{from} refused the map request: {e}")),
    }
}

/// The consensus endpoint actor.
pub struct RaftRpcServer;

/// Its state.
pub struct RaftServerState {
    node: String,
    raft: Arc<Raft>,
    map: MapWatch,
    timeout: Duration,
    frames: FrameLimits,
}

/// Starts the consensus endpoint of `node`.
pub async fn serve_raft_rpc(
    node: &str,
    raft: Arc<Raft>,
    map: MapWatch,
    timeout: Duration,
    frames: FrameLimits,
) -> Result<ActorRef<RaftRpc>, ractor::SpawnErr> {
    let (actor, _) = Actor::spawn(
        None,
        RaftRpcServer,
        RaftServerState {
            node: node.to_string(),
            raft,
            map,
            timeout,
            frames,
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
        // openraft calls may wait on I/O: answer from a task so the mailbox never blocks. Every
        // frame is checked first; a refused one is answered `Refused`, never dropped silently.
        let raft = st.raft.clone();
        let limits = st.frames;
        let map = st.map.borrow().clone();
        match msg {
            RaftRpc::Append(b, reply) => {
                tokio::spawn(async move {
                    let answer = match take::<AppendEntriesRequest<MapRaft>>(
                        "raft_append",
                        &b,
                        &limits,
                        |r| frame_check::append_entries(r.entries.len()),
                    ) {
                        Ok(req) => Answer::Done(raft.append_entries(req).await),
                        Err(e) => Answer::Refused(e),
                    };
                    let _ = reply.send(frame(&answer));
                });
            }
            RaftRpc::Vote(b, reply) => {
                tokio::spawn(async move {
                    let answer =
                        match take::<VoteRequest<u64>>("raft_vote", &b, &limits, |_| Ok(())) {
                            Ok(req) => Answer::Done(raft.vote(req).await),
                            Err(e) => Answer::Refused(e),
                        };
                    let _ = reply.send(frame(&answer));
                });
            }
            RaftRpc::Snapshot(b, reply) => {
                tokio::spawn(async move {
                    let answer = match take::<InstallSnapshotRequest<MapRaft>>(
                        "raft_snapshot",
                        &b,
                        &limits,
                        |r| snapshot_shape(r, &map),
                    ) {
                        Ok(req) => Answer::Done(raft.install_snapshot(req).await),
                        Err(e) => Answer::Refused(e),
                    };
                    let _ = reply.send(frame(&answer));
                });
            }
            RaftRpc::Propose(b, reply) => {
                let timeout = st.timeout;
                tokio::spawn(async move {
                    let answer = match take::<MapCommand>("raft_propose", &b, &limits, |c| {
                        frame_check::map_command(c, map.shard_count())
                    }) {
                        // Not the leader: forward once (a joining node asks any seed).
                        Ok(cmd) => Answer::Done(propose(&raft, cmd, timeout).await),
                        Err(e) => Answer::Refused(e),
                    };
                    let _ = reply.send(frame(&answer));
                });
            }
            RaftRpc::GetMap(_, reply) => {
                let _ = reply.send(frame(&Answer::Done(&*map)));
            }
            RaftRpc::Drain(b, reply) => {
                let timeout = st.timeout;
                tokio::spawn(async move {
                    let answer = match take::<MapCommand>("raft_drain", &b, &limits, |c| match c {
                        MapCommand::DrainNode { .. } => {
                            frame_check::map_command(c, map.shard_count())
                        }
                        _ => Err(crate::wire::FrameError::Malformed {
                            frame: "raft_drain".into(),
                            reason: "not a DrainNode command".into(),
                        }),
                    }) {
                        Ok(cmd) => Answer::Done(propose(&raft, cmd, timeout).await),
                        Err(e) => Answer::Refused(e),
                    };
                    let _ = reply.send(frame(&answer));
                });
            }
        }
        Ok(())
    }
}
