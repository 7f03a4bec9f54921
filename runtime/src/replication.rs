//! Replication of a shard's writes from its primary to its followers, and the moves between
//! them. The decisions are `keelson_rules`' (acks, follower, hand_over); this layer does the I/O.
//!
//! ```text
//! primary: entity write ─▶ Replicator ─Replicate─▶ follower: apply or refuse (stale)
//!                              └ ack rules: confirm / step down / Shrink through consensus
//! catch_up: a learner ─Copy pages─▶ from the primary ─▶ Join (in sync)
//! hand_over: planner ─HandOver─▶ primary: depose, drain, propose Handoff
//! takeover: promoted over a primary ─▶ serve once its lease support has run out
//! ```

pub mod catch_up;
pub mod follower;
pub mod hand_over;
pub mod primary;
pub mod takeover;

pub use primary::Replicator;
