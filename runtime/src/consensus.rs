//! The control plane: the shard map is a replicated state machine, changed only through an
//! openraft log that every configured node votes on. Two nodes that each see a different majority
//! can never commit different maps for the same version.
//!
//! ```text
//! planner (on the raft leader) ─propose(MapCommand)─▶ raft log ─commit─▶ MapStateMachine
//!                                                      ▲   │                    │ apply
//!   primaries: Shrink/Join ─propose (forwarded)────────┘   │ RaftRpc (ractor)   ▼
//!                                                         peers      watch<Arc<ShardMap>>
//!                                                                      ▶ shard host, client, ops
//! ```
//!
//! The log and the state machine live in the node's sled database (`raft_log`, `raft_state`),
//! fsynced before openraft is told they are durable; a restarted cluster resumes from the newest
//! committed map.

pub mod control_plane;
mod join;
mod log_store;
pub mod map_follower;
mod network;
mod planning;
pub mod primary_changes;
pub mod removal;
mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use keelson_rules::shard_map::{MapCommand, MapError, ShardMap};

pub use log_store::LogStore;
pub use network::{
    fetch_map, propose, propose_via, request_drain, serve_raft_rpc, ProposeError,
    RaftNetworkFactory,
};
pub use state_machine::MapStateMachine;

/// A request to the map state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRequest(pub MapCommand);

/// The outcome of one applied request: the new map version, or why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapResponse(pub Result<u64, MapError>);

openraft::declare_raft_types!(
    /// openraft's type configuration for the shard-map log.
    pub MapRaft:
        D = MapRequest,
        R = MapResponse,
);

/// The openraft instance.
pub type Raft = openraft::Raft<MapRaft>;

/// A node's raft id, derived from its name so it never depends on file order.
pub fn node_id(name: &str) -> u64 {
    keelson_rules::shard_map::entity_hash("keelson.raft.node", name)
}

/// Raft ids of the configured nodes, with their names as openraft node records.
pub fn members(nodes: &[String]) -> BTreeMap<u64, BasicNode> {
    nodes
        .iter()
        .map(|n| (node_id(n), BasicNode { addr: n.clone() }))
        .collect()
}

/// openraft timing: elections must beat the 1 s failover budget even when a leader is frozen.
pub fn raft_config(cluster: &str, failure_timeout: Duration) -> openraft::Config {
    let hb = (failure_timeout.as_millis() as u64 / 10).clamp(20, 200);
    openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: hb,
        election_timeout_min: hb * 3,
        election_timeout_max: hb * 6,
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 200,
        // A chunk's bytes travel as a JSON array (up to 4 characters a byte): 128 KiB makes
        // frames of at most ~512 KiB, well inside the smallest `cluster.max_frame_bytes` (1 MiB).
        snapshot_max_chunk_size: 128 * 1024,
        ..Default::default()
    }
}

/// The map as published to the rest of the process.
pub type MapWatch = watch::Receiver<Arc<ShardMap>>;
