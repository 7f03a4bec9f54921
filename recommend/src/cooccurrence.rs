//! The item-to-item counts, kept up to date one interaction at a time. When a customer's weight
//! of item `j` goes from `a` to `b`, every other item `i` it has (weight `w_i`) gains
//! `w_i * (b - a)` of co-occurrence with `j`, and `j`'s norm gains `b² - a²`:
//!
//! ```text
//! C[i][j] = Σ_customers w_ui · w_uj        norm[j] = Σ_customers w_uj²     customers[j] = #u
//! Profile.add(j) ─▶ Delta{item j, a, b, pairs: [(i, w_i)]} ─▶ Counts::apply (rows it owns)
//! ```
//!
//! Rows are partitioned (each partition applies the rows it owns) while every partition keeps
//! every item's norm and customer count, which similarity needs for both ends of a pair. All
//! integers: applying the same deltas in any order gives the same counts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::signal::Profile;

/// What one interaction changes in the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The item interacted with.
    pub item: String,
    /// The customer's weight of it before.
    pub before: u32,
    /// And after.
    pub after: u32,
    /// The customer's other items with their weights (before this interaction).
    pub pairs: Vec<(String, u32)>,
}

impl Delta {
    /// Records an interaction of weight `w` with `item` in `profile`; the delta it makes, or None
    /// when the weight was already capped.
    pub fn record(profile: &mut Profile, item: &str, w: u32) -> Option<Self> {
        let (before, after) = profile.add(item, w);
        (after != before).then(|| Self {
            item: item.to_string(),
            before,
            after,
            pairs: profile
                .items()
                .filter(|(i, _)| i.as_str() != item)
                .map(|(i, w)| (i.clone(), w))
                .collect(),
        })
    }
}

/// Co-occurrence counts of the rows a partition owns, and every item's norm and popularity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Σ over customers of the squared weight, per item.
    pub norms: HashMap<String, u64>,
    /// How many customers have the item.
    pub customers: HashMap<String, u64>,
    /// C[i][j] for the rows `i` this partition owns.
    pub rows: HashMap<String, HashMap<String, u64>>,
}

impl Counts {
    /// Applies `d`, to the rows `owns` says are this partition's.
    pub fn apply(&mut self, d: &Delta, owns: impl Fn(&str) -> bool) {
        let gain = u64::from(d.after - d.before);
        let sq = |w: u32| u64::from(w) * u64::from(w);
        *self.norms.entry(d.item.clone()).or_default() += sq(d.after) - sq(d.before);
        if d.before == 0 {
            *self.customers.entry(d.item.clone()).or_default() += 1;
        }
        let own_row = owns(&d.item);
        for (other, w) in &d.pairs {
            let c = u64::from(*w) * gain;
            if own_row {
                *self
                    .rows
                    .entry(d.item.clone())
                    .or_default()
                    .entry(other.clone())
                    .or_default() += c;
            }
            if owns(other) {
                *self
                    .rows
                    .entry(other.clone())
                    .or_default()
                    .entry(d.item.clone())
                    .or_default() += c;
            }
        }
    }

    /// Row `item` (empty when it co-occurs with nothing).
    pub fn row(&self, item: &str) -> Option<&HashMap<String, u64>> {
        self.rows.get(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts straight from the definition, over final profiles.
    fn batch(profiles: &[Profile]) -> Counts {
        let mut c = Counts::default();
        for p in profiles {
            for (i, wi) in p.items() {
                *c.norms.entry(i.clone()).or_default() += u64::from(wi * wi);
                *c.customers.entry(i.clone()).or_default() += 1;
                for (j, wj) in p.items().filter(|(j, _)| *j != i) {
                    *c.rows
                        .entry(i.clone())
                        .or_default()
                        .entry(j.clone())
                        .or_default() += u64::from(wi * wj);
                }
            }
        }
        c
    }

    #[test]
    fn incremental_counts_equal_the_definition() {
        let events = [
            (0, "a", 1),
            (0, "b", 4),
            (1, "a", 2),
            (0, "a", 4),
            (1, "c", 1),
            (1, "a", 8),
            (2, "b", 1),
            (2, "c", 1),
            (0, "c", 1),
        ];
        let mut profiles = vec![Profile::default(); 3];
        let mut inc = Counts::default();
        for (u, item, w) in events {
            if let Some(d) = Delta::record(&mut profiles[u], item, w) {
                inc.apply(&d, |_| true);
            }
        }
        assert_eq!(inc, batch(&profiles));
        // Customer 0 holds a=5 (1+4), b=4: C[a][b] gets 5*4 from it.
        assert_eq!(inc.rows["a"]["b"], 20);
        assert_eq!(inc.rows["a"]["c"], 5 + 8);
        assert_eq!(inc.norms["a"], 25 + 64);
        assert_eq!(inc.customers["c"], 3);
    }

    #[test]
    fn partitions_together_hold_every_row_once_and_every_norm() {
        let mut p = Profile::default();
        let mut even = Counts::default();
        let mut odd = Counts::default();
        let owns_even = |i: &str| i.len() % 2 == 0;
        for item in ["x", "yy", "z", "ww"] {
            let d = Delta::record(&mut p, item, 1).unwrap();
            even.apply(&d, owns_even);
            odd.apply(&d, |i| !owns_even(i));
        }
        assert_eq!(even.norms, odd.norms);
        assert!(even.rows.keys().all(|k| owns_even(k)));
        assert!(odd.rows.keys().all(|k| !owns_even(k)));
        assert_eq!(even.rows.len() + odd.rows.len(), 4);
        assert_eq!(odd.rows["x"]["yy"], even.rows["yy"]["x"]);
    }

    #[test]
    fn a_capped_weight_changes_nothing() {
        let mut p = Profile::default();
        assert!(Delta::record(&mut p, "a", 8).is_some());
        assert_eq!(Delta::record(&mut p, "a", 1), None);
    }
}
