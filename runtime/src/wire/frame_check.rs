//! A node never trusts a peer's numbers. Every frame a node takes from a peer (entity requests,
//! replicated writes and their answers, read-index questions, copy requests and pages,
//! hand-overs, consensus messages) passes a check here before any shard number, epoch, lsn,
//! offset or length in it is used: shard ids against the shard count, epochs and lsns against
//! what they can be, lengths against byte limits, node names against the configuration.
//!
//! ```text
//! peer ──frame──▶ handler ──frame_check::decode + check_*──▶ ok: use it
//!                                  └─ FrameError ──▶ typed answer on the reply port
//!                                                    + keelson_bad_frames_total{reason}
//!                                                    + one log line (names and numbers, no payload)
//! ```
//!
//! The checks are pure (a decoded frame and the node's limits in, a refusal out); [`refuse`] is
//! the one place a refusal is counted and logged.

use crate::config::valid_name;
use crate::config::ClusterConfig;
use crate::lsn::{epoch_base, epoch_of};
use crate::metrics;
use crate::wire::{
    self, CopyRequest, EntityRequest, FrameError, HandOver, ReadIndex, ReplicaWrite,
};
use keelson_rules::shard_map::{MapCommand, ShardId, ShardMap};

/// Longest entity kind, bytes. Kinds are short constants (`customer`, `device`).
pub const MAX_KIND_BYTES: usize = 64;
/// Longest entity id, bytes: the API allows 64 characters; room for composite internal ids.
pub const MAX_ID_BYTES: usize = 1024;
/// Longest member name, bytes (the configuration allows 32).
pub const MAX_NAME_BYTES: usize = 32;
/// Longest request id, bytes (the gateway takes at most 128 from a client).
pub const MAX_REQUEST_ID_BYTES: usize = 256;
/// Longest idempotency key, bytes, after the gateway scoped it to its client.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 1024;
/// Longest copy resume key: a stored key is `kind 0x00 id`.
pub const MAX_RESUME_KEY_BYTES: usize = MAX_KIND_BYTES + 1 + MAX_ID_BYTES;
/// Highest epoch a shard can reach: an lsn is `epoch << 40 | counter`, so a larger epoch would
/// not fit in the lsn's 24 high bits (and `epoch_base` would silently wrap).
pub const MAX_EPOCH: u64 = (1 << 24) - 1;
/// How far a peer's epoch for a shard may run ahead of this node's map. Maps lag by the few
/// changes in flight, never by a thousand; a write claiming an epoch far ahead would otherwise
/// fence the real primary (and depose this node) until the map got there, which is never.
pub const MAX_EPOCH_AHEAD: u64 = 1024;
/// Most records in one copy page: the count bound beside the byte budget.
pub const MAX_PAGE_RECORDS: usize = 512;
/// Largest consensus snapshot, bytes: the shard map of 65,536 shards in JSON is ~15 MiB; a chunk
/// offset past this is refused before openraft seeks to it (it would allocate up to the offset).
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;
/// Most entries in one AppendEntries (openraft sends at most `max_payload_entries`, 300).
pub const MAX_APPEND_ENTRIES: usize = 4096;

/// The byte limits of frames between nodes, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame payload a node takes from (or sends to) a peer (`cluster.max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// Largest entity value carried by a replicated write or a copied record
    /// (`entities.max_state_bytes`: nothing larger can be written, so nothing larger is sent).
    pub max_value_bytes: usize,
    /// A copy page stops adding records once it holds this many bytes (`cluster.copy_page_bytes`).
    pub copy_page_bytes: usize,
}

impl FrameLimits {
    /// The limits `cfg` sets.
    pub fn of(cfg: &ClusterConfig) -> Self {
        Self {
            max_frame_bytes: cfg.max_frame_bytes,
            max_value_bytes: cfg.entity_limits.max_state_bytes,
            copy_page_bytes: cfg.copy_page_bytes,
        }
    }

    /// Generous limits for unit tests.
    #[cfg(test)]
    pub fn for_test() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_value_bytes: 64 << 10,
            copy_page_bytes: 16 << 10,
        }
    }
}

/// Counts and logs a refused frame (names and numbers only, never its payload).
pub fn refuse(frame: &str, e: &FrameError) {
    metrics::get()
        .bad_frames
        .with_label_values(&[e.reason()])
        .inc();
    tracing::warn!(frame, reason = e.reason(), error = %e, "refused a frame from a peer");
}

/// Refuses a frame over the byte limit before decoding it.
pub fn size(what: &str, bytes: usize, limit: usize) -> Result<(), FrameError> {
    if bytes > limit {
        return Err(FrameError::TooLarge {
            what: what.to_string(),
            bytes: bytes as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// Checks a frame's size, then decodes it.
pub fn decode<T: serde::de::DeserializeOwned>(
    frame: &str,
    bytes: &[u8],
    limits: &FrameLimits,
) -> Result<T, FrameError> {
    size(
        &format!("{frame} frame"),
        bytes.len(),
        limits.max_frame_bytes,
    )?;
    wire::decode(bytes).map_err(|e| FrameError::Malformed {
        frame: frame.to_string(),
        reason: e.to_string(),
    })
}

/// A shard number from a peer, checked against the shard count.
pub fn shard(shard: u32, count: u32) -> Result<ShardId, FrameError> {
    if shard >= count {
        return Err(FrameError::NoSuchShard { shard, count });
    }
    Ok(ShardId(shard))
}

fn text(field: &str, value: &str, limit: usize) -> Result<(), FrameError> {
    size(field, value.len(), limit)
}

fn node(field: &str, name: &str, nodes: &[String]) -> Result<(), FrameError> {
    if name.len() > MAX_NAME_BYTES || !nodes.iter().any(|n| n == name) {
        return Err(FrameError::UnknownNode {
            field: field.to_string(),
        });
    }
    Ok(())
}

fn range(field: &str, value: u64, ok: bool, expected: impl Into<String>) -> Result<(), FrameError> {
    if !ok {
        return Err(FrameError::OutOfRange {
            field: field.to_string(),
            value,
            expected: expected.into(),
        });
    }
    Ok(())
}

/// An epoch from a peer: at most [`MAX_EPOCH`] and at most [`MAX_EPOCH_AHEAD`] past this node's.
pub fn epoch(field: &str, epoch: u64, map_epoch: u64) -> Result<(), FrameError> {
    let ceiling = map_epoch.saturating_add(MAX_EPOCH_AHEAD).min(MAX_EPOCH);
    range(
        field,
        epoch,
        epoch <= ceiling,
        format!("at most {ceiling} (this node's map is at epoch {map_epoch})"),
    )
}

fn entity(kind: &str, id: &str) -> Result<(), FrameError> {
    text("kind", kind, MAX_KIND_BYTES)?;
    text("id", id, MAX_ID_BYTES)
}

/// An entity request: the shard exists, the names fit.
pub fn entity_request(req: &EntityRequest, shard_count: u32) -> Result<(), FrameError> {
    shard(req.shard, shard_count)?;
    entity(&req.kind, &req.id)?;
    text("request_id", &req.request_id, MAX_REQUEST_ID_BYTES)?;
    if let Some(k) = &req.idempotency_key {
        text("idempotency key", &k.key, MAX_IDEMPOTENCY_KEY_BYTES)?;
    }
    range(
        "epoch",
        req.epoch,
        req.epoch <= MAX_EPOCH,
        format!("at most {MAX_EPOCH}"),
    )
}

/// A replicated write: the shard exists, the primary is a node, the epoch is plausible for this
/// node's map, the lsn belongs to that epoch, the value fits.
pub fn replica_write(
    w: &ReplicaWrite,
    shard_count: u32,
    nodes: &[String],
    map_epoch: u64,
    limits: &FrameLimits,
) -> Result<ShardId, FrameError> {
    let s = shard(w.shard, shard_count)?;
    node("primary", &w.primary, nodes)?;
    epoch("epoch", w.epoch, map_epoch)?;
    range(
        "lsn",
        w.lsn,
        epoch_of(w.lsn) == w.epoch && w.lsn > epoch_base(w.epoch),
        format!(
            "an lsn of epoch {} (epoch << 40 | counter, counter >= 1)",
            w.epoch
        ),
    )?;
    entity(&w.kind, &w.id)?;
    if let Some(v) = &w.value {
        size("value", v.len(), limits.max_value_bytes)?;
    }
    Ok(s)
}

/// A follower's read-index question.
pub fn read_index(
    q: &ReadIndex,
    shard_count: u32,
    nodes: &[String],
) -> Result<ShardId, FrameError> {
    let s = shard(q.shard, shard_count)?;
    node("follower", &q.follower, nodes)?;
    Ok(s)
}

/// A learner's copy request.
pub fn copy_request(
    req: &CopyRequest,
    shard_count: u32,
    nodes: &[String],
) -> Result<ShardId, FrameError> {
    let s = shard(req.shard, shard_count)?;
    node("learner", &req.learner, nodes)?;
    if let Some(after) = &req.after {
        size("resume key", after.len(), MAX_RESUME_KEY_BYTES)?;
    }
    Ok(s)
}

/// A hand-over order.
pub fn hand_over(
    h: &HandOver,
    shard_count: u32,
    nodes: &[String],
    map_epoch: u64,
) -> Result<ShardId, FrameError> {
    let s = shard(h.shard, shard_count)?;
    node("to", &h.to, nodes)?;
    epoch("epoch", h.epoch, map_epoch)?;
    Ok(s)
}

/// A follower's `Stale { epoch }` answer to a write at `write_epoch`: a newer epoch, but not
/// one far beyond it (that would depose this primary until the map got there, which is never).
pub fn stale_epoch(epoch: u64, write_epoch: u64) -> Result<(), FrameError> {
    let ceiling = write_epoch.saturating_add(MAX_EPOCH_AHEAD).min(MAX_EPOCH);
    range(
        "stale epoch",
        epoch,
        epoch > write_epoch && epoch <= ceiling,
        format!("in {}..={ceiling}", write_epoch.saturating_add(1)),
    )
}

/// One copied record `(kind, id, lsn, value)`.
pub type CopyRecord = (String, String, u64, Option<Vec<u8>>);

/// A copy page from the primary: bounded in count and bytes, every record plausible for this
/// node's map, and a page that is not the last one moves the copy forward.
pub fn copy_page(
    records: &[CopyRecord],
    next: Option<&[u8]>,
    done: bool,
    after: Option<&[u8]>,
    map_epoch: u64,
    limits: &FrameLimits,
) -> Result<(), FrameError> {
    range(
        "records",
        records.len() as u64,
        records.len() <= MAX_PAGE_RECORDS,
        format!("at most {MAX_PAGE_RECORDS} per page"),
    )?;
    let ceiling = map_epoch.saturating_add(MAX_EPOCH_AHEAD).min(MAX_EPOCH);
    for (kind, id, lsn, value) in records {
        entity(kind, id)?;
        range(
            "record lsn",
            *lsn,
            *lsn > 0 && epoch_of(*lsn) <= ceiling,
            format!("an lsn of an epoch up to {ceiling}"),
        )?;
        if let Some(v) = value {
            size("record value", v.len(), limits.max_value_bytes)?;
        }
    }
    if !done {
        let Some(next) = next else {
            return Err(FrameError::OutOfRange {
                field: "next".to_string(),
                value: 0,
                expected: "a resume key on every page but the last".to_string(),
            });
        };
        size("resume key", next.len(), MAX_RESUME_KEY_BYTES)?;
        // Keys are scanned in order: a page that does not move past `after` would loop forever.
        if after.is_some_and(|a| next <= a) || records.is_empty() {
            return Err(FrameError::OutOfRange {
                field: "next".to_string(),
                value: next.len() as u64,
                expected: "a key after the one asked for, with records".to_string(),
            });
        }
    }
    Ok(())
}

/// A consensus snapshot chunk: where it goes must stay within [`MAX_SNAPSHOT_BYTES`].
pub fn snapshot_chunk(offset: u64, len: usize) -> Result<(), FrameError> {
    let end = offset.checked_add(len as u64);
    range(
        "snapshot offset",
        offset,
        end.is_some_and(|e| e <= MAX_SNAPSHOT_BYTES),
        format!("a chunk ending within {MAX_SNAPSHOT_BYTES} bytes"),
    )
}

/// A shard map from a peer (a gateway follows the nodes' map): the cluster's shard count, every
/// member a valid name, every replica a member, every epoch one an lsn can carry. Any other map
/// would make the receiver's shard numbers wrong.
pub fn shard_map(map: &ShardMap, expected: &ShardMap) -> Result<(), FrameError> {
    range(
        "map shard count",
        u64::from(map.shard_count()),
        map.shard_count() == expected.shard_count(),
        format!("{} (this cluster's)", expected.shard_count()),
    )?;
    if map.nodes().is_empty() || !map.nodes().iter().all(|n| valid_name(n)) {
        return Err(FrameError::UnknownNode {
            field: "map nodes".to_string(),
        });
    }
    for (_, p) in map.iter() {
        range(
            "map epoch",
            p.epoch,
            p.epoch <= MAX_EPOCH,
            format!("at most {MAX_EPOCH}"),
        )?;
        for n in p.replicas() {
            node("map replica", n, map.nodes())?;
        }
    }
    Ok(())
}

/// Longest host name a node may advertise (DNS allows 253).
pub const MAX_HOST_BYTES: usize = 253;

/// A map change a peer asks this node to propose: its shard exists; a joining node's name is
/// a member name, its host a host name or IP address, its ports not 0.
pub fn map_command(cmd: &MapCommand, shard_count: u32) -> Result<(), FrameError> {
    if let Some(s) = cmd.shard() {
        return shard(s, shard_count).map(|_| ());
    }
    let name = match cmd {
        MapCommand::AddNode { node, addr } => {
            text("joining host", &addr.host, MAX_HOST_BYTES)?;
            let host_ok = !addr.host.is_empty()
                && addr
                    .host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
            range("joining host", 0, host_ok, "a host name or an IP address")?;
            for (field, port) in [
                ("cluster port", addr.cluster_port),
                ("ops port", addr.ops_port),
            ] {
                range(field, u64::from(port), port != 0, "1..=65535")?;
            }
            node
        }
        MapCommand::DrainNode { node, .. } | MapCommand::RemoveNode { node } => node,
        _ => return Ok(()),
    };
    if !valid_name(name) {
        return Err(FrameError::UnknownNode {
            field: "member name".to_string(),
        });
    }
    Ok(())
}

/// A consensus AppendEntries' entry count.
pub fn append_entries(entries: usize) -> Result<(), FrameError> {
    range(
        "entries",
        entries as u64,
        entries <= MAX_APPEND_ENTRIES,
        format!("at most {MAX_APPEND_ENTRIES}"),
    )
}

#[cfg(test)]
#[path = "frame_check_test.rs"]
mod tests;
