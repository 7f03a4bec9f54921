//! Node-to-node messages. These are the wire, not the domain: every frame is a versioned
//! [`codec`] blob carried in one of two remotable ractor messages, so the ractor
//! derive only ever sees `Vec<u8>` and a change here never changes ractor's variant tags.
//!
//! ```text
//! client ──ShardHostRpc::Request(EntityRequest)──▶ owner's shard host ──▶ EntityReply
//! membership ──HeartbeatRpc::Ping(Ping)──▶ peer's heartbeat responder ──▶ Pong
//! ```

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

pub mod codec;
pub mod frame_check;
pub mod gateway_frames;
pub mod rpc;

use crate::config::Role;
use codec::CodecError;

/// Version byte of every frame in this module. 3: idempotency keys carry a request fingerprint,
/// replays are marked, entity size and key-reuse errors. 4: heartbeats carry the sender's map
/// version and the lease support the responder gave.
pub const WIRE_VERSION: u8 = 4;

/// Process-group name of a node's shard host. Explicit constant: never derived from a type name.
pub fn shard_host_group(node: &str) -> String {
    format!("keelson.v1.shard_host.{node}")
}

/// Process-group name of a process's heartbeat responder.
pub fn heartbeat_group(member: &str) -> String {
    format!("keelson.v1.heartbeat.{member}")
}

/// The remotable message of the shard host: one RPC carrying an encoded [`EntityRequest`] and
/// answered with an encoded [`EntityReply`].
#[derive(RactorClusterMessage)]
pub enum ShardHostRpc {
    /// An entity request.
    #[rpc]
    Request(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Periodic housekeeping (idle passivation); local only.
    Tick,
    /// The shard map changed; local only.
    MapChanged,
    /// A write from a shard's primary to a follower: an encoded [`ReplicaWrite`], answered with
    /// an encoded [`ReplicaAck`].
    #[rpc]
    Replicate(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A follower asks the primary whether it is still in sync before serving a read: an encoded
    /// [`ReadIndex`], answered with an encoded `bool`.
    #[rpc]
    ReadIndex(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A learner asks the primary for one page of the shard: an encoded [`CopyRequest`],
    /// answered with an encoded [`CopyPage`].
    #[rpc]
    Copy(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// The consensus leader asks a shard's primary to hand it to an in-sync follower: an encoded
    /// [`HandOver`], answered with an encoded `Result<(), String>` once the primary has stopped
    /// writing and the change is committed (or refused).
    #[rpc]
    HandOver(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// A planned change of primary, carried out by the primary giving the shard up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOver {
    /// Shard.
    pub shard: u32,
    /// The shard's epoch the plan was made at.
    pub epoch: u64,
    /// The in-sync follower to take over.
    pub to: String,
}

/// One replicated write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaWrite {
    /// Shard.
    pub shard: u32,
    /// The sending primary.
    pub primary: String,
    /// The primary's epoch for the shard.
    pub epoch: u64,
    /// Log sequence number (`epoch << 40 | counter`).
    pub lsn: u64,
    /// Entity kind.
    pub kind: String,
    /// Entity id.
    pub id: String,
    /// New value, or `None` for a deletion.
    pub value: Option<Vec<u8>>,
}

/// A follower's question before it serves a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndex {
    /// Shard.
    pub shard: u32,
    /// The follower asking.
    pub follower: String,
}

/// What a node reports of its load in every heartbeat answer (see `cluster::load`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Entity requests in flight on the node.
    pub inflight: u32,
    /// CPU used by the node's process over the last sample, in thousandths of one core.
    pub cpu_permille: u32,
}

/// A follower's answer to a [`ReplicaWrite`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaAck {
    /// Applied (or already newer) and durable per the flush policy.
    Applied,
    /// The follower knows a newer epoch: the sender is no longer primary.
    Stale {
        /// The follower's epoch for the shard.
        epoch: u64,
    },
    /// The follower could not apply it.
    Failed(String),
    /// The frame broke a rule every frame from a peer is checked against (see `frame_check`);
    /// nothing was applied.
    Refused(FrameError),
}

/// Why a node refused a frame from a peer. Sent back where the frame has a reply port; it names
/// fields and numbers, never the frame's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum FrameError {
    /// The bytes do not decode as the frame the message carries.
    #[error("{frame} frame does not decode: {reason}")]
    Malformed {
        /// Which frame.
        frame: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A frame, value or field is longer than its limit.
    #[error("{what} is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A shard number outside `0..count`.
    #[error("shard {shard} does not exist: this cluster has shards 0..{count}")]
    NoSuchShard {
        /// The shard named.
        shard: u32,
        /// The configured shard count.
        count: u32,
    },
    /// An epoch, lsn, offset or count that cannot be right.
    #[error("{field} {value} is out of range: {expected}")]
    OutOfRange {
        /// Which field.
        field: String,
        /// Its value.
        value: u64,
        /// What it should have been.
        expected: String,
    },
    /// A node name that is not one of the cluster's nodes.
    #[error("{field} names no node of this cluster")]
    UnknownNode {
        /// Which field.
        field: String,
    },
}

impl FrameError {
    /// Every value of [`FrameError::reason`], for pre-initialised metric labels.
    pub const REASONS: &'static [&'static str] = crate::metrics::known::FRAME_REFUSALS;

    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Malformed { .. } => "malformed",
            FrameError::TooLarge { .. } => "too_large",
            FrameError::NoSuchShard { .. } => "bad_shard",
            FrameError::OutOfRange { .. } => "out_of_range",
            FrameError::UnknownNode { .. } => "unknown_node",
        }
    }
}

/// A learner's request for one page of a shard copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// Shard.
    pub shard: u32,
    /// The learner.
    pub learner: String,
    /// Resume after this key (`kind 0x00 id`), or from the start.
    pub after: Option<Vec<u8>>,
}

/// One page of a shard copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyPage {
    /// Records `(kind, id, lsn, value)`; `done` when this is the last page.
    Records {
        /// The records.
        records: Vec<(String, String, u64, Option<Vec<u8>>)>,
        /// Key to resume after.
        next: Option<Vec<u8>>,
        /// True on the last page.
        done: bool,
    },
    /// The node asked is not the shard's primary, or the asker is not its learner.
    Refused(String),
}

/// Process-group name of a node's consensus endpoint.
pub fn raft_group(node: &str) -> String {
    format!("keelson.v1.raft.{node}")
}

/// The remotable message of a node's consensus endpoint. Every payload is a versioned frame of
/// openraft's own (serde) types; see `consensus::network`.
#[derive(RactorClusterMessage)]
pub enum RaftRpc {
    /// openraft AppendEntries.
    #[rpc]
    Append(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// openraft Vote.
    #[rpc]
    Vote(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// openraft InstallSnapshot.
    #[rpc]
    Snapshot(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// A shard-map change, forwarded to the leader.
    #[rpc]
    Propose(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// The shard map this node has applied.
    #[rpc]
    GetMap(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Start removing a node: a `DrainNode` command and nothing else (a gateway may ask this
    /// for an admin; it may propose no other change).
    #[rpc]
    Drain(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The remotable message of the heartbeat responder.
#[derive(RactorClusterMessage)]
pub enum HeartbeatRpc {
    /// An encoded [`Ping`], answered with an encoded [`Pong`].
    #[rpc]
    Ping(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// A fault an operator may inject into an entity to exercise supervision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// The entity panics while handling the request.
    Panic,
    /// The entity's handler returns an error.
    Error,
}

/// A command for one entity, addressed by `(kind, id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRequest {
    /// Correlates logs across processes.
    pub request_id: String,
    /// Entity kind.
    pub kind: String,
    /// Entity id.
    pub id: String,
    /// The shard the sender computed; checked by the receiver.
    pub shard: u32,
    /// The shard-map epoch the sender routed with; checked by the receiver.
    pub epoch: u64,
    /// Injected fault, refused unless the node allows fault injection.
    pub fault: Option<Fault>,
    /// True when the command only reads (it may be retried, and served by a replica).
    pub read: bool,
    /// The client's idempotency key: the entity applies a write with the same key once.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The kind-specific command, encoded by its entity crate.
    pub payload: Vec<u8>,
}

/// A client's idempotency key and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The key, already scoped to the client that chose it (a client's key never matches
    /// another client's).
    pub key: String,
    /// A digest of the request the key was first used for: the same key with another
    /// fingerprint is refused, never answered with the first request's reply.
    pub fingerprint: [u8; 16],
}

/// The answer to an [`EntityRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntityReply {
    /// The entity's encoded reply.
    Ok(Vec<u8>),
    /// The runtime could not get an answer from the entity.
    Err(RemoteError),
    /// The reply the entity gave when it first applied this idempotency key, sent again.
    Replayed(Vec<u8>),
}

/// Runtime failures a node reports back to the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The receiver does not own the shard in the sender's epoch.
    #[error("node {node} does not own shard {shard} in epoch {epoch} (owner: {owner})")]
    NotOwner {
        /// Receiving node.
        node: String,
        /// Shard.
        shard: u32,
        /// Epoch of the request.
        epoch: u64,
        /// The owner the receiver knows.
        owner: String,
    },
    /// No entity kind of that name is registered.
    #[error("unknown entity kind \"{0}\"")]
    UnknownKind(String),
    /// The request or its payload did not decode.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The entity crashed while handling this request; it is being restarted.
    #[error(
        "entity {kind}/{id} failed while handling this request ({reason}); it restarts from its persisted state"
    )]
    EntityFailed {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
        /// Failure reason.
        reason: String,
    },
    /// The entity failed too often and refuses requests for a while.
    #[error("entity {kind}/{id} is quarantined for {retry_after_ms} ms more after repeated failures; last failure: {reason}")]
    Quarantined {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
        /// Last failure reason.
        reason: String,
        /// Remaining cooldown.
        retry_after_ms: u64,
    },
    /// The entity's state could not be read or written.
    #[error("storage error: {0}")]
    Storage(String),
    /// A fault was requested but the node does not allow fault injection.
    #[error("fault injection is disabled on node {0}")]
    FaultInjectionDisabled(String),
    /// The entity did not answer in time.
    #[error("entity did not answer within {0} ms")]
    Timeout(u64),
    /// The node has not heard from a majority recently enough to act as primary.
    #[error("node {0} has lost contact with the majority and stopped serving as primary")]
    NoLease(String),
    /// The write may or may not have been applied: the primary applied it but could not
    /// confirm it on its followers (lost its role, or no majority to drop a follower).
    #[error("write on shard {shard} not confirmed: {reason}")]
    WriteNotConfirmed {
        /// Shard.
        shard: u32,
        /// Why.
        reason: String,
    },
    /// The node has as many entity requests in progress as it takes; nothing was applied.
    #[error("node {node} is at its limit of {limit} entity requests in progress")]
    Overloaded {
        /// The node.
        node: String,
        /// Its limit.
        limit: u32,
    },
    /// The idempotency key was first used for a different request; nothing was applied.
    #[error("idempotency key already used for a different request to {kind}/{id}")]
    IdempotencyKeyReused {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
    },
    /// The write would make the entity's persisted state larger than the node allows; nothing
    /// was applied.
    #[error("{kind}/{id} would take {bytes} bytes, more than the limit of {limit} bytes")]
    EntityTooLarge {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
        /// Encoded size the write would have produced.
        bytes: u64,
        /// The limit (`entities.max_state_bytes`).
        limit: u64,
    },
}

/// Heartbeat request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Sender name.
    pub from: String,
    /// Sequence number, echoed in the [`Pong`].
    pub seq: u64,
    /// Version of the shard map the sender has applied: the answer supports the sender's lease
    /// only if the responder's map is not newer (`keelson_rules::lease::counts`).
    pub map_version: u64,
}

/// Heartbeat answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Responder name.
    pub from: String,
    /// Responder role.
    pub role: Role,
    /// Echo of the ping's sequence number.
    pub seq: u64,
    /// When the responder process started (ms since the Unix epoch): changes on restart.
    pub incarnation: u64,
    /// Version of the shard map the responder has applied (0 for a gateway).
    pub map_version: u64,
    /// The responder's load.
    pub load: LoadReport,
    /// Per node: (the node's map version, ms since the responder last gave it lease support at
    /// that version), for its recent versions (a node promoted over an old primary waits until
    /// enough nodes report none below the promotion's version for a lease).
    pub support: Vec<(String, Vec<(u64, u64)>)>,
}

/// Encodes a frame.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(WIRE_VERSION, value).expect("wire types always encode")
}

/// Decodes a frame.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    codec::decode(WIRE_VERSION, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let req = EntityRequest {
            request_id: "r1".into(),
            kind: "customer".into(),
            id: "c1".into(),
            shard: 7,
            epoch: 1,
            fault: Some(Fault::Panic),
            read: false,
            idempotency_key: Some(IdempotencyKey {
                key: "k".into(),
                fingerprint: [7; 16],
            }),
            payload: vec![1, 2, 3],
        };
        assert_eq!(decode::<EntityRequest>(&encode(&req)).unwrap(), req);
        let reply = EntityReply::Err(RemoteError::Quarantined {
            kind: "customer".into(),
            id: "c1".into(),
            reason: "boom".into(),
            retry_after_ms: 10,
        });
        assert_eq!(decode::<EntityReply>(&encode(&reply)).unwrap(), reply);
    }

    #[test]
    fn group_names_are_stable() {
        assert_eq!(shard_host_group("n1"), "keelson.v1.shard_host.n1");
        assert_eq!(heartbeat_group("gateway"), "keelson.v1.heartbeat.gateway");
    }
}
