//! keelson-runtime: the generic cluster runtime. It knows shards, nodes and entities, never
//! customers or devices.
//!
//! ```text
//! config ─▶ node::run ─┬─ storage (sled, one tree per shard, group commit)
//!                      ├─ member: ractor_cluster transport (links: mutual TLS from the cluster
//!                      │          CA, tls: certificates) + heartbeat + membership
//!                      │          (failure_detector decides up/down, publishes ClusterView)
//!                      ├─ keeper ─▶ shard_host (remotable; frame_check on every peer frame)
//!                      │     ─▶ shard_supervisor (per shard) ─▶ entity actors
//!                      │          (activation: idle/LRU passivation; restart_budget: backoff, quarantine;
//!                      │           entity_store: sealed envelope + journal; idempotency: keys kept)
//!                      └─ ops: /metrics /health /ready
//! client: (kind, id) ─shard_map─▶ owner ─wire─▶ owner's shard_host      (one hop, from any process)
//! ```
//!
//! Pure decisions (`shard_map`, `failure_detector`, `restart_budget`, `activation`, `config`) are
//! plain structs with unit tests; actors do the I/O. Bytes are made only in `codec`, frames are
//! defined only in `wire`.

mod activation;
mod backoff;
mod catch_up;
mod client;
mod clock;
mod codec;
pub mod config;
mod consensus;
mod control_plane;
mod entity;
mod entity_store;
mod failure_detector;
mod frame_check;

mod gateway_frames;
mod heartbeat;
mod idempotency;
mod keeper;
mod lease;
mod links;
mod load;
mod lsn;
mod map_follower;
mod member;
mod membership;
pub mod metrics;
pub mod node;
mod ops;
mod replication;
mod restart_budget;
mod rpc;
mod sealing;
mod shard_host;
mod shard_supervisor;
pub mod shutdown;
mod slow_nodes;
mod storage;
pub mod tls;
pub mod wire;

pub use activation::ActivationTable;
pub use backoff::Backoff;
pub use client::{Access, Answer, ClusterClient, RequestError};
pub use codec::CodecError;
pub use config::{ClusterConfig, ConfigError, EntityLimits, Limits, Member, Retention, Role};
pub use consensus::{MapWatch, ProposeError};
pub use control_plane::{ControlPlane, Proposer};
pub use entity::{
    decode_payload, encode_payload, now_ms, Entity, EntityContext, EntityError, EntityKey,
    EntityKinds, Handled, JournalRead,
};
pub use failure_detector::{FailureDetector, PeerState};
pub use keelson_rules::{
    entity_hash, plan, rendezvous_owner, shard_for, Health, MapCommand, MapError, Placement,
    PlanLimits, ShardId, ShardMap,
};
pub use map_follower::follow as follow_map;
pub use member::ClusterMember;
pub use membership::{ClusterView, MemberStatus};
pub use restart_budget::{RestartDecision, RestartPolicy, RestartTracker};
pub use slow_nodes::{NodeSample, SlowNodeDetector};
pub use storage::{StorageError, Store};
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
    #[error("the data directory holds a cluster of layout \"{0}\" but the configuration says \"{1}\"; changing nodes, shards or replication_factor of an existing cluster is not supported yet")]
    Layout(String, String),
    /// TLS material or credentials are missing or unusable.
    #[error("{0}")]
    Security(String),
    /// TLS material is missing or unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Re-exported so binaries can start ops endpoints for other roles.
pub use ops::serve as serve_ops;
