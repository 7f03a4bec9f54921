//! `[cluster]`: the cluster's name, size, timing and frame limits, and their checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::entities::RawEntities;

/// `[cluster]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Name of the cluster; part of every node's identity.
    pub name: String,
    /// Shared secret every process proves it knows before joining (on top of its certificate).
    /// Prefer `cookie_file` or `KEELSON_COOKIE`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// File holding the cookie, relative to this file.
    #[serde(default)]
    pub cookie_file: Option<PathBuf>,
    /// Number of shards (fixed for the life of the data).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Directory holding each node's data and the cluster's logs, relative to this file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A peer silent this long is marked down.
    #[serde(default = "default_failure_timeout_ms")]
    pub failure_timeout_ms: u64,
    /// How often each process pings each peer.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Copies of every shard (primary plus followers); capped at the node count.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    /// Deadline of one request from the gateway to a node.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Lets `/v1/debug/fault` make an entity panic or fail. Never enable in production.
    #[serde(default)]
    pub fault_injection: bool,
    /// Log level when `RUST_LOG` is unset.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Largest frame a process sends to or takes from a peer, in bytes; a bigger one is refused.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u64,
    /// A shard-copy page stops adding records once it holds this many bytes (at least one record).
    #[serde(default = "default_copy_page_bytes")]
    pub copy_page_bytes: u64,
}

/// Smallest `cluster.max_frame_bytes`.
pub const MIN_FRAME_BYTES: u64 = 1 << 20;
/// Largest `cluster.max_frame_bytes`: the codec refuses to decode more than 64 MiB.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;
/// Room in a frame beyond its values: names, ids, encodings, ractor's own envelope.
pub const FRAME_ENVELOPE_BYTES: u64 = 64 << 10;

/// About how many bytes the shard map of `shards` shards takes as one frame (JSON, a primary,
/// `rf - 1` followers and a learner per shard, names up to 32 bytes).
pub fn shard_map_bytes(shards: u32, rf: usize) -> u64 {
    u64::from(shards) * (48 + 36 * (rf as u64 + 1)) + 4096
}

fn default_shards() -> u32 {
    256
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_failure_timeout_ms() -> u64 {
    1000
}
fn default_heartbeat_interval_ms() -> u64 {
    150
}
fn default_replication_factor() -> usize {
    2
}
fn default_request_timeout_ms() -> u64 {
    5000
}
fn default_log_level() -> String {
    "info".to_string()
}
/// 4 MiB: four times the default entity limit, so a copy page (1 MiB) and the largest entity
/// fit with room to spare, and the shard map of up to ~16,000 shards; small enough that one
/// frame holds the link (one session per peer, frames in order) for only a few milliseconds.
fn default_max_frame_bytes() -> u64 {
    4 << 20
}
/// 1 MiB: a page takes about a millisecond of a loopback link and a few on a LAN, so the live
/// writes a learner also receives are never queued long behind a page.
fn default_copy_page_bytes() -> u64 {
    1 << 20
}

/// Checks `[cluster]` on its own (names, counts, timing).
pub(super) fn validate(c: &RawCluster, problems: &mut Vec<String>) {
    if c.name.trim().is_empty() {
        problems.push("cluster.name: must not be empty".to_string());
    }
    if !(1..=65_536).contains(&c.shards) {
        problems.push(format!(
            "cluster.shards: {} is out of range 1..=65536",
            c.shards
        ));
    }
    if !(100..=60_000).contains(&c.failure_timeout_ms) {
        problems.push(format!(
            "cluster.failure_timeout_ms: {} is out of range 100..=60000",
            c.failure_timeout_ms
        ));
    }
    if c.heartbeat_interval_ms < 10 || c.heartbeat_interval_ms * 3 > c.failure_timeout_ms {
        problems.push(format!(
            "cluster.heartbeat_interval_ms: {} must be at least 10 and at most a third of failure_timeout_ms ({})",
            c.heartbeat_interval_ms, c.failure_timeout_ms
        ));
    }
    if c.replication_factor == 0 || c.replication_factor > 5 {
        problems.push(format!(
            "cluster.replication_factor: {} is out of range 1..=5",
            c.replication_factor
        ));
    }
    if !(100..=600_000).contains(&c.request_timeout_ms) {
        problems.push(format!(
            "cluster.request_timeout_ms: {} is out of range 100..=600000",
            c.request_timeout_ms
        ));
    }
    if !["trace", "debug", "info", "warn", "error"].contains(&c.log_level.as_str()) {
        problems.push(format!(
            "cluster.log_level: \"{}\" is not one of trace, debug, info, warn, error",
            c.log_level
        ));
    }
}

/// Frames between processes: one frame must carry a copy page with the largest entity beside it,
/// and the whole shard map (a gateway reads it in one frame).
pub(super) fn frame_limits(c: &RawCluster, e: &RawEntities, problems: &mut Vec<String>) {
    let frame = c.max_frame_bytes;
    if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&frame) {
        problems.push(format!(
            "cluster.max_frame_bytes: {frame} is outside {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES}"
        ));
        return;
    }
    if c.copy_page_bytes == 0 || c.copy_page_bytes > frame / 2 {
        problems.push(format!(
            "cluster.copy_page_bytes: {} is outside 1..={} (half of max_frame_bytes)",
            c.copy_page_bytes,
            frame / 2
        ));
    }
    let need = e.max_state_bytes + c.copy_page_bytes + FRAME_ENVELOPE_BYTES;
    if need > frame {
        problems.push(format!(
            "cluster.max_frame_bytes: {frame} cannot carry a copy page (copy_page_bytes = {}) beside the largest entity (entities.max_state_bytes = {}); raise it to at least {need}",
            c.copy_page_bytes, e.max_state_bytes
        ));
    }
    let map = shard_map_bytes(c.shards, c.replication_factor);
    if map > frame {
        problems.push(format!(
            "cluster.max_frame_bytes: {frame} cannot carry the shard map of {} shards (about {map} bytes); raise it or use fewer shards",
            c.shards
        ));
    }
}
