//! `[entities]`: entity lifecycle and supervision (passivation, restart budget, size and
//! idempotency bounds), and their checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::{EntityLimits, Retention};
use crate::restart_budget::RestartPolicy;

/// Largest `entities.max_state_bytes` allowed: an entity's value must fit in one frame between
/// nodes with room to spare.
pub const MAX_STATE_BYTES: u64 = 8 * 1024 * 1024;

/// `[entities]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntities {
    /// An entity idle this long is passivated.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Most entities active on one node; the least recently used is passivated beyond it.
    #[serde(default = "default_max_active")]
    pub max_active: usize,
    /// Restarts allowed in `restart_window_secs` before quarantine.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Window of the restart budget.
    #[serde(default = "default_restart_window_secs")]
    pub restart_window_secs: u64,
    /// First restart delay; doubles per failure in the window.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest restart delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How long a quarantined entity refuses requests.
    #[serde(default = "default_quarantine_secs")]
    pub quarantine_secs: u64,
    /// Largest encoded state one entity may persist, in bytes; a write past it is refused.
    #[serde(default = "default_max_state_bytes")]
    pub max_state_bytes: u64,
    /// How long an entity remembers an idempotency key (and the reply it got).
    #[serde(default = "default_idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
    /// How many idempotency keys each entity remembers; the oldest are forgotten first.
    #[serde(default = "default_idempotency_keys")]
    pub idempotency_keys: usize,
}

impl Default for RawEntities {
    fn default() -> Self {
        Self {
            idle_timeout_secs: default_idle_timeout_secs(),
            max_active: default_max_active(),
            max_restarts: default_max_restarts(),
            restart_window_secs: default_restart_window_secs(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            quarantine_secs: default_quarantine_secs(),
            max_state_bytes: default_max_state_bytes(),
            idempotency_ttl_secs: default_idempotency_ttl_secs(),
            idempotency_keys: default_idempotency_keys(),
        }
    }
}

fn default_idle_timeout_secs() -> u64 {
    300
}
fn default_max_state_bytes() -> u64 {
    1024 * 1024
}
fn default_idempotency_ttl_secs() -> u64 {
    24 * 3600
}
fn default_idempotency_keys() -> usize {
    32
}
fn default_max_active() -> usize {
    1_000_000
}
fn default_max_restarts() -> u32 {
    5
}
fn default_restart_window_secs() -> u64 {
    10
}
fn default_backoff_base_ms() -> u64 {
    50
}
fn default_backoff_max_ms() -> u64 {
    2000
}
fn default_quarantine_secs() -> u64 {
    30
}

/// Checks `[entities]` on its own (the frame limits check it against `[cluster]`).
pub(super) fn validate(e: &RawEntities, problems: &mut Vec<String>) {
    if e.idle_timeout_secs == 0 {
        problems.push("entities.idle_timeout_secs: must be at least 1".to_string());
    }
    if e.max_active == 0 {
        problems.push("entities.max_active: must be at least 1".to_string());
    }
    if !(4096..=MAX_STATE_BYTES).contains(&e.max_state_bytes) {
        problems.push(format!(
            "entities.max_state_bytes: {} is outside 4096..={MAX_STATE_BYTES} (a value must fit in one frame between nodes)",
            e.max_state_bytes
        ));
    }
    if e.idempotency_ttl_secs == 0 || e.idempotency_ttl_secs > 30 * 24 * 3600 {
        problems.push(format!(
            "entities.idempotency_ttl_secs: {} is outside 1..=2592000 (30 days)",
            e.idempotency_ttl_secs
        ));
    }
    if !(1..=1000).contains(&e.idempotency_keys) {
        problems.push(format!(
            "entities.idempotency_keys: {} is outside 1..=1000",
            e.idempotency_keys
        ));
    }
    if e.max_restarts == 0 {
        problems.push("entities.max_restarts: must be at least 1".to_string());
    }
    if e.restart_window_secs == 0 {
        problems.push("entities.restart_window_secs: must be at least 1".to_string());
    }
    if e.backoff_base_ms > e.backoff_max_ms {
        problems.push(format!(
            "entities.backoff_base_ms: {} is larger than backoff_max_ms ({})",
            e.backoff_base_ms, e.backoff_max_ms
        ));
    }
}

/// The supervision policy `[entities]` describes.
pub(super) fn restart_policy(e: &RawEntities) -> RestartPolicy {
    RestartPolicy {
        max_restarts: e.max_restarts,
        window: Duration::from_secs(e.restart_window_secs),
        backoff_base: Duration::from_millis(e.backoff_base_ms),
        backoff_max: Duration::from_millis(e.backoff_max_ms),
        quarantine: Duration::from_secs(e.quarantine_secs),
    }
}

/// The size and idempotency bounds `[entities]` describes.
pub(super) fn entity_limits(e: &RawEntities) -> EntityLimits {
    EntityLimits {
        max_state_bytes: e.max_state_bytes as usize,
        keys: Retention {
            ttl_ms: e.idempotency_ttl_secs * 1000,
            max_keys: e.idempotency_keys,
        },
    }
}
