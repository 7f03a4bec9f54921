//! The item-to-item counts, kept up to date one interaction at a time. When a customer's weight
//! of item `j` goes from `a` to `b`, every other item `i` it has (weight `w_i`) gains
//! `w_i * (b - a)` of co-occurrence with `j`, and `j`'s norm gains `b² - a²`:
//!
//! ```text
//! C[i][j] = Σ_customers w_ui · w_uj        norm[j] = Σ_customers w_uj²     customers[j] = #u
//! Profile.add(j) ─▶ Delta{item j, a, b, pairs: [(i, w_i)]} ─▶ Counts::apply (rows it owns)
//! erasure: each item j in turn ─▶ Delta{item j, w_j, 0, pairs: the items still there}
//!   (takes away exactly what the customer added; counts at zero are dropped)
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

    /// About how many bytes it takes encoded (what an answer carrying many is bounded by).
    pub fn encoded_size(&self) -> usize {
        16 + self.item.len() + self.pairs.iter().map(|(i, _)| i.len() + 9).sum::<usize>()
    }

    /// Takes `item` out of `profile`: the delta that undoes everything its weight added (the
    /// customer's erasure removes its items one by one), or None when it is not there.
    pub fn remove(profile: &mut Profile, item: &str) -> Option<Self> {
        let before = profile.weights.remove(item)?;
        Some(Self {
            item: item.to_string(),
            before,
            after: 0,
            pairs: profile.items().map(|(i, w)| (i.clone(), w)).collect(),
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
    /// Applies `d`, to the rows `owns` says are this partition's: adds what a rise of the
    /// weight adds, takes away what a fall takes away (a removal takes away exactly what the
    /// rises to that weight added), and drops what falls to zero.
    pub fn apply(&mut self, d: &Delta, owns: impl Fn(&str) -> bool) {
        let sq = |w: u32| u64::from(w) * u64::from(w);
        let rise = d.after >= d.before;
        let (lo, hi) = if rise {
            (d.before, d.after)
        } else {
            (d.after, d.before)
        };
        let gain = u64::from(hi - lo);
        adjust(&mut self.norms, &d.item, sq(hi) - sq(lo), rise);
        if lo == 0 && hi > 0 {
            adjust(&mut self.customers, &d.item, 1, rise);
        }
        let own_row = owns(&d.item);
        for (other, w) in &d.pairs {
            let c = u64::from(*w) * gain;
            if own_row {
                adjust_cell(&mut self.rows, &d.item, other, c, rise);
            }
            if owns(other) {
                adjust_cell(&mut self.rows, other, &d.item, c, rise);
            }
        }
    }

    /// Row `item` (empty when it co-occurs with nothing).
    pub fn row(&self, item: &str) -> Option<&HashMap<String, u64>> {
        self.rows.get(item)
    }
}

/// Adds `by` to `map[key]` (`up`) or takes it away, dropping the entry at zero. A count never
/// goes below zero: a removal takes away only what was added.
fn adjust(map: &mut HashMap<String, u64>, key: &str, by: u64, up: bool) {
    if up {
        if by > 0 {
            *map.entry(key.to_string()).or_default() += by;
        }
        return;
    }
    if let Some(v) = map.get_mut(key) {
        *v = v.saturating_sub(by);
        if *v == 0 {
            map.remove(key);
        }
    }
}

/// [`adjust`] on cell `rows[row][col]`, dropping a row left empty.
fn adjust_cell(
    rows: &mut HashMap<String, HashMap<String, u64>>,
    row: &str,
    col: &str,
    by: u64,
    up: bool,
) {
    if up {
        if by > 0 {
            *rows
                .entry(row.to_string())
                .or_default()
                .entry(col.to_string())
                .or_default() += by;
        }
        return;
    }
    if let Some(r) = rows.get_mut(row) {
        adjust(r, col, by, false);
        if r.is_empty() {
            rows.remove(row);
        }
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
        let owns_even = |i: &str| i.len().is_multiple_of(2);
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
    fn removing_a_customer_item_by_item_leaves_the_counts_of_the_others() {
        let events = [
            (0, "a", 1),
            (1, "a", 4),
            (0, "b", 4),
            (1, "c", 2),
            (0, "c", 1),
            (1, "a", 4),
            (2, "b", 1),
            (0, "a", 8),
        ];
        let mut profiles = vec![Profile::default(); 3];
        let mut inc = Counts::default();
        for (u, item, w) in events {
            if let Some(d) = Delta::record(&mut profiles[u], item, w) {
                inc.apply(&d, |_| true);
            }
        }
        let items: Vec<String> = profiles[0].weights.keys().cloned().collect();
        for item in &items {
            let d = Delta::remove(&mut profiles[0], item).unwrap();
            assert_eq!(d.after, 0);
            inc.apply(&d, |_| true);
        }
        assert!(profiles[0].weights.is_empty());
        assert_eq!(Delta::remove(&mut profiles[0], "a"), None);
        assert_eq!(inc, batch(&profiles[1..]));
        // Only customer 1 has both a and c; b is customer 2's alone, with nothing beside it.
        assert_eq!(inc.rows["a"]["c"], 8 * 2);
        assert!(!inc.rows.contains_key("b"));
        assert_eq!(inc.customers["b"], 1);
        // Removing everyone leaves nothing at all (no item name kept at zero).
        for p in profiles.iter_mut() {
            let items: Vec<String> = p.weights.keys().cloned().collect();
            for item in &items {
                inc.apply(&Delta::remove(p, item).unwrap(), |_| true);
            }
        }
        assert_eq!(inc, Counts::default());
    }

    #[test]
    fn a_capped_weight_changes_nothing() {
        let mut p = Profile::default();
        assert!(Delta::record(&mut p, "a", 8).is_some());
        assert_eq!(Delta::record(&mut p, "a", 1), None);
    }
}
