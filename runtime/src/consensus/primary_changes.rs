//! The last change of primary of every shard, as this node applied it from the log: who led
//! before, who leads now, at which map version, and whether it was a promotion (the old primary
//! was dropped) or a hand-over (it stayed in sync). Written by the state machine before it
//! publishes the map, so a node reading a published map can tell exactly whom it was promoted
//! over, even when it never looked at the shard between two changes.
//!
//! ```text
//! apply(cmd) ─▶ before/after placement ─▶ primary changed? ─▶ record(shard, change) ─▶ publish
//!                                                             last(shard) ◀── takeover
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keelson_rules::promotion::promoted_over;
use keelson_rules::{Placement, ShardId};

/// One change of a shard's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryChange {
    /// The map version that made it.
    pub version: u64,
    /// The primary before.
    pub from: String,
    /// The primary after.
    pub to: String,
    /// True when `to` was promoted over `from` (not handed the shard by it).
    pub promoted: bool,
}

impl PrimaryChange {
    /// The change from `before` to `after` made at `version`, if the primary changed.
    pub fn between(before: &Placement, after: &Placement, version: u64) -> Option<Self> {
        (before.primary != after.primary).then(|| Self {
            version,
            from: before.primary.clone(),
            to: after.primary.clone(),
            promoted: promoted_over(&after.primary, before, after).is_some(),
        })
    }
}

/// Per shard, the last change of primary applied on this node; cheap to clone. Empty for a
/// shard whose changes arrived in a snapshot (nothing was applied one by one).
#[derive(Debug, Clone, Default)]
pub struct PrimaryChanges(Arc<Mutex<HashMap<u32, PrimaryChange>>>);

impl PrimaryChanges {
    /// Records `change` of `shard`.
    pub fn record(&self, shard: ShardId, change: PrimaryChange) {
        self.0
            .lock()
            .expect("primary changes lock")
            .insert(shard.0, change);
    }

    /// The last change of `shard`'s primary applied here, if any.
    pub fn last(&self, shard: ShardId) -> Option<PrimaryChange> {
        self.0
            .lock()
            .expect("primary changes lock")
            .get(&shard.0)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(primary: &str, in_sync: &[&str]) -> Placement {
        Placement {
            epoch: 1,
            primary: primary.into(),
            in_sync: in_sync.iter().map(|s| s.to_string()).collect(),
            learners: vec![],
        }
    }

    #[test]
    fn a_change_says_whether_the_old_primary_was_dropped() {
        let before = placement("n1", &["n2"]);
        let promoted = PrimaryChange::between(&before, &placement("n2", &[]), 7).unwrap();
        assert_eq!(
            promoted,
            PrimaryChange {
                version: 7,
                from: "n1".into(),
                to: "n2".into(),
                promoted: true
            }
        );
        let handed = PrimaryChange::between(&before, &placement("n2", &["n1"]), 8).unwrap();
        assert!(!handed.promoted);
        assert_eq!(
            PrimaryChange::between(&before, &placement("n1", &[]), 9),
            None
        );
    }

    #[test]
    fn the_last_change_of_each_shard_is_kept() {
        let changes = PrimaryChanges::default();
        let c = |v: u64, to: &str| PrimaryChange {
            version: v,
            from: "n1".into(),
            to: to.into(),
            promoted: true,
        };
        changes.record(ShardId(3), c(5, "n2"));
        changes.record(ShardId(3), c(9, "n3"));
        assert_eq!(changes.last(ShardId(3)), Some(c(9, "n3")));
        assert_eq!(changes.last(ShardId(4)), None);
    }
}
