//! Item-to-item collaborative filtering, as pure code the cluster's actors run and the evaluator
//! measures. No async, no I/O.
//!
//! ```text
//! interaction(kind, item) ─▶ signal: the customer's weight of the item (kind-weighted, capped)
//!   ─▶ cooccurrence::Delta (the pairs with the customer's other items, exact integers)
//!   ─▶ Counts of the partition owning each row (+ every item's norm, everywhere)
//! serve:     up to ease::MAX_EASE_ITEMS items: ease::solve over all the counts; past that,
//!            each partition's similarity::neighbours (rows it owns, partition::partition_of)
//!            ─▶ index::Index (inverted) ─▶ recommend(history) ─▶ top N + because (rank)
//! measure:   data ─▶ split (per-user random 80/20, or leave-last-out) ─▶ metrics at 10
//! ```
//!
//! Counts are integers so the model updated one interaction at a time equals a recomputation
//! over the same interactions, whatever the order.

pub mod baseline;
pub mod cooccurrence;
pub mod data;
pub mod ease;
pub mod index;
pub mod metrics;
pub mod offline;
pub mod partition;
pub mod rank;
pub mod signal;
pub mod similarity;
pub mod split;

pub use cooccurrence::{Counts, Delta};
pub use index::Index;
pub use partition::{partition_of, ITEM_PARTITIONS};
pub use rank::Scored;
pub use signal::{kind_weight, Profile, KINDS, MAX_PROFILE_ITEMS, MAX_WEIGHT};
pub use similarity::{neighbours, SimParams};
