//! Hosting entities: the node's shard host takes entity requests for the shards it serves, one
//! supervisor per shard runs the entity actors, and each entity's state is persisted sealed.
//!
//! ```text
//! keeper ─restarts─▶ shard_host ─check (rules::reads)─▶ shard_supervisor(shard) ─▶ entity actor
//!                      │ activation: idle / LRU passivation       │ restart_budget: backoff,
//!                      └ replication::follower: peer writes       │ quarantine
//!                                                                 └ entity_store: sealed envelope
//!                                                                   + journal; idempotency keys;
//!                                                                   checkpoint: when a replaying
//!                                                                   kind writes its whole state
//! ```

pub mod activation;
pub mod checkpoint;
pub mod entity;
pub mod entity_actor;
pub mod entity_kinds;
pub mod entity_store;
pub mod idempotency;
pub mod keeper;
pub mod sealing;
pub mod shard_host;
pub mod shard_supervisor;
