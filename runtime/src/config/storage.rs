//! `[storage]`: when a write reaches the disk, and the page cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[storage]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `"on_write"`: every write is fsynced (group commit) before it is acknowledged.
    /// `"periodic"`: writes are flushed every `flush_interval_ms`; a crash may lose that window.
    #[serde(default = "default_flush")]
    pub flush: String,
    /// Flush period for `flush = "periodic"`.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// sled page cache per node, in MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            flush: default_flush(),
            flush_interval_ms: default_flush_interval_ms(),
            cache_mb: default_cache_mb(),
        }
    }
}

fn default_flush() -> String {
    "on_write".to_string()
}
fn default_flush_interval_ms() -> u64 {
    500
}
fn default_cache_mb() -> u64 {
    256
}

/// When a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync (grouped across concurrent writers) before acknowledging.
    OnWrite,
    /// Background flush every interval; a crash may lose the last interval.
    Periodic(Duration),
}

/// Checks `[storage]` and reads its flush policy.
pub(super) fn validate(s: &RawStorage, problems: &mut Vec<String>) -> FlushPolicy {
    match s.flush.as_str() {
        "on_write" => FlushPolicy::OnWrite,
        "periodic" => {
            if !(1..=60_000).contains(&s.flush_interval_ms) {
                problems.push(format!(
                    "storage.flush_interval_ms: {} is out of range 1..=60000",
                    s.flush_interval_ms
                ));
            }
            FlushPolicy::Periodic(Duration::from_millis(s.flush_interval_ms))
        }
        other => {
            problems.push(format!(
                "storage.flush: \"{other}\" is not one of \"on_write\", \"periodic\""
            ));
            FlushPolicy::OnWrite
        }
    }
}
