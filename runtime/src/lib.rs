//! keelson-runtime: the generic cluster runtime. It knows shards, nodes and entities, never
//! customers or devices. The safety rules it follows (placement, planner, lease, promotion,
//! acks, follower writes, reads, hand-over, retries) are the pure crate `keelson_rules`; this
//! crate feeds them what it observed and performs what they return.
//!
//! ```text
//! config       the cluster file, validated (nodes, shards, limits, security)
//! node         one linear start-up of a node's parts; shutdown runs it backwards
//! cluster/     member (transport), links (mutual TLS), heartbeat, membership, failure_detector,
//!              lease, load: who is up and whether this node may act
//! consensus/   the openraft log of the shard map (log_store, network, state_machine),
//!              control_plane, planning (the leader's planner loop), map_follower (non-voters)
//! replication/ primary (the write path), follower (peer writes, read index, copy pages),
//!              catch_up (learners), hand_over (planned primary moves)
//! host/        shard_host, shard_supervisor, entity (the contract), entity_actor, entity_kinds,
//!              entity_store, activation, keeper,
//!              idempotency, sealing: where entities run and persist
//! client/      ClusterClient: routing, replica choice, retry, slow_nodes
//! wire/        frames (wire.rs), codec, rpc, frame_check, gateway_frames
//! storage, metrics, ops, shutdown, clock, backoff, lsn, restart_budget, tls
//! ```
//!
//! ```text
//! client: (kind, id) ─shard_map─▶ owner ─wire─▶ owner's host::shard_host ─▶ entity actor
//!                                                   └─ write ─▶ replication::primary ─▶ followers
//! ```
//!
//! Bytes are made only in `wire::codec`, frames are defined only in `wire`.

mod backoff;
mod client;
mod clock;
mod cluster;
pub mod config;
mod consensus;
mod host;
mod lsn;
pub mod metrics;
pub mod node;
mod ops;
mod replication;
mod restart_budget;
pub mod shutdown;
mod storage;
pub mod tls;
pub mod wire;

pub use backoff::Backoff;
pub use client::slow_nodes::{NodeSample, SlowNodeDetector};
pub use client::{Access, Answer, ClusterClient, RequestError};
pub use cluster::failure_detector::{FailureDetector, PeerState};
pub use cluster::member::ClusterMember;
pub use cluster::membership::{ClusterView, MemberStatus};
pub use config::{ClusterConfig, ConfigError, EntityLimits, Limits, Member, Retention, Role};
pub use consensus::control_plane::{ControlPlane, Proposer};
pub use consensus::map_follower::follow as follow_map;
pub use consensus::{request_drain, MapWatch, ProposeError};
pub use host::activation::ActivationTable;
pub use host::entity::{
    decode_payload, encode_payload, now_ms, Entity, EntityContext, EntityError, EntityKey, Handled,
    JournalRead,
};
pub use host::entity_kinds::EntityKinds;
pub use keelson_rules::{
    entity_hash, plan, rendezvous_owner, shard_for, Health, MapCommand, MapError, Placement,
    PlanLimits, ShardId, ShardMap,
};
pub use restart_budget::{RestartDecision, RestartPolicy, RestartTracker};
pub use storage::{StorageError, Store};
pub use wire::codec::CodecError;
pub use wire::{Fault, IdempotencyKey, RemoteError};

/// Failures starting or running a process.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node name is not in the configuration.
    #[error("no node named \"{0}\" in the configuration (nodes: {1})")]
    UnknownNode(String, String),
    /// A port could not be bound.
    #[error("cannot bind the {what} port {addr}: {source}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An actor failed to start.
    #[error("cannot start the {0}: {1}")]
    Spawn(&'static str, String),
    /// The stored consensus log was made for another cluster layout.
    #[error("the data directory holds a cluster of layout \"{0}\" but the configuration says \"{1}\": the [[node]] entries (the seeds, which vote), shards and replication_factor of an existing cluster stay as they were; add a node with `keelson node --name NAME --host IP --cluster-port P --ops-port Q` and take one out with `keelson nodes remove NAME`")]
    Layout(String, String),
    /// TLS material or credentials are missing or unusable.
    #[error("{0}")]
    Security(String),
    /// This node was removed from the cluster; its data is stale.
    #[error("node \"{0}\" was removed from the cluster (shard map version {1}): its data dir {2} is no longer needed; to bring the machine back, delete that directory and start it as a new node (--host ...)")]
    Removed(String, u64, std::path::PathBuf),
    /// TLS material is missing or unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Re-exported so binaries can start ops endpoints for other roles.
pub use ops::serve as serve_ops;
