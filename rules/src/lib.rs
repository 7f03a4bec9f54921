//! keelson-rules: the decisions that keep data safe, as pure functions. No async, no I/O, no
//! locks, no clock of its own: the runtime feeds them what it observed and performs what they
//! return, and the model checker (`tests/failover_model.rs`) explores them exhaustively.
//!
//! ```text
//! shard_map   where an entity lives; placements under epochs; MapCommand apply (the fence)
//! balance     the placement to aim for: every node within one of its fair share, fewest moves
//! planner     the consensus leader's map changes, from the map and who is up
//! promotion   when a down primary may be replaced (after its lease has surely run out)
//! lease       a primary serves only while a majority answered its recent heartbeats
//! acks        the primary's reading of follower answers: confirm / step down / drop
//! follower    a follower's verdict on a replicated write: apply / stale / step down
//! reads       who may answer a request, read-index grants, which copy a read goes to
//! hand_over   the steps of a planned primary move
//! retry       which failed requests the client may send again
//! singleton   whether this node runs the cluster's singletons (leader, lease, a grace)
//! voters      who votes in consensus as nodes join and leave (odd, at most five)
//! ```

pub mod acks;
pub mod balance;
pub mod follower;
pub mod hand_over;
pub mod lease;
pub mod planner;
pub mod promotion;
pub mod reads;
pub mod retry;
pub mod shard_map;
pub mod singleton;
pub mod voters;

pub use planner::{plan, Health, PlanLimits};
pub use shard_map::{
    entity_hash, rendezvous_owner, shard_for, MapCommand, MapError, Placement, ShardId, ShardMap,
};
