//! How much an interaction says about a customer's interest in an item: a weight per kind, added
//! up per item and capped, so one customer who views an item a thousand times counts no more
//! than one who bought it twice.
//!
//! ```text
//! (kind, item) ─▶ kind_weight ─▶ Profile: weight[item] = min(sum, MAX_WEIGHT)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The interaction kinds and what each adds to the customer's weight of the item. A purchase
/// says more than a view. Persisted in meaning: changing a weight changes the model.
pub const KINDS: &[(&str, u32)] = &[
    ("view", 1),
    ("click", 1),
    ("device_usage", 1),
    ("like", 2),
    ("rating", 2),
    ("add_to_cart", 2),
    ("device_owned", 3),
    ("purchase", 4),
];

/// The most a customer's interactions with one item add up to.
pub const MAX_WEIGHT: u32 = 8;

/// The most distinct items of one customer the model counts: its first ones. A customer with
/// more (a bot, a shared account) would add a pair per item it has on every new one; past this
/// its new items are left out, so each interaction costs at most this many pairs.
pub const MAX_PROFILE_ITEMS: usize = 1_000;

/// The weight of an interaction of `kind`; None for a kind the model does not know.
pub fn kind_weight(kind: &str) -> Option<u32> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, w)| *w)
}

/// A customer's weight of every item it interacted with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Item to weight (1..=MAX_WEIGHT).
    pub weights: BTreeMap<String, u32>,
}

impl Profile {
    /// The weight of `item` (0 when never seen).
    pub fn weight(&self, item: &str) -> u32 {
        self.weights.get(item).copied().unwrap_or(0)
    }

    /// Adds `w` to `item`'s weight (capped); returns the weight before and after (equal when
    /// nothing changed: the weight was capped, or the item is new and the profile full).
    pub fn add(&mut self, item: &str, w: u32) -> (u32, u32) {
        let before = self.weight(item);
        if before == 0 && self.weights.len() >= MAX_PROFILE_ITEMS {
            return (0, 0);
        }
        let after = before.saturating_add(w).min(MAX_WEIGHT);
        if after != before {
            self.weights.insert(item.to_string(), after);
        }
        (before, after)
    }

    /// Items by weight, heaviest first (ties by name).
    pub fn items(&self) -> impl Iterator<Item = (&String, u32)> {
        self.weights.iter().map(|(i, w)| (i, *w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purchase_counts_more_than_a_view_and_weights_are_capped() {
        assert!(kind_weight("purchase").unwrap() > kind_weight("view").unwrap());
        assert_eq!(kind_weight("teleport"), None);
        let mut p = Profile::default();
        assert_eq!(p.add("a", 4), (0, 4));
        assert_eq!(p.add("a", 4), (4, 8));
        assert_eq!(p.add("a", 4), (8, 8), "capped");
        assert_eq!(p.weight("b"), 0);
    }

    #[test]
    fn a_full_profile_counts_no_new_item_but_still_its_own() {
        let mut p = Profile::default();
        for i in 0..MAX_PROFILE_ITEMS {
            assert_eq!(p.add(&format!("i{i}"), 1), (0, 1));
        }
        assert_eq!(p.add("one-too-many", 4), (0, 0));
        assert_eq!(p.add("i0", 1), (1, 2));
        assert_eq!(p.weights.len(), MAX_PROFILE_ITEMS);
    }
}
