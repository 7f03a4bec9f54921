//! How alike two items are, from their counts, and each item's nearest neighbours.
//!
//! ```text
//! s(i, j) = C[i][j] / (norm_i^α · norm_j^(1-α) + shrink) / customers_j^β
//! ```
//!
//! `norm` is the sum of squared weights, so α = ½ is the cosine; α above ½ lowers the
//! similarity of an item to itself-like popular ones less than to rare ones. The shrink term
//! (Dacrema et al. 2019, tuned item-kNN) discounts pairs seen by few customers; β (as in
//! RP³β) pushes down neighbours everybody has. Only the `neighbours` most similar items of each
//! item count when ranking.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The similarity's tuning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimParams {
    /// Neighbours kept per item.
    pub neighbours: usize,
    /// Added to the denominator.
    pub shrink: f64,
    /// Weight of the first item's norm (½: cosine).
    pub alpha: f64,
    /// Popularity penalty on the neighbour.
    pub beta: f64,
}

/// The tuning Keelson serves with: candidate-side item-kNN, 200 neighbours, shrink 10, α 0.4
/// (a candidate's own norm weighs less than its neighbour's: popular candidates are held back
/// less than by the cosine). Chosen by comparing about twenty tunings on MovieLens-100k's
/// seed-1 split, with no separate validation split (README, Recommendations).
impl Default for SimParams {
    fn default() -> Self {
        Self {
            neighbours: 200,
            shrink: 10.0,
            alpha: 0.4,
            beta: 0.0,
        }
    }
}

impl SimParams {
    /// The similarity of `i` to `j` from their co-occurrence `c`, norms and customer counts.
    pub fn similarity(&self, c: u64, norm_i: u64, norm_j: u64, customers_j: u64) -> f64 {
        self.similarity_from(c, (norm_i as f64).powf(self.alpha), norm_j, customers_j)
    }

    /// [`SimParams::similarity`] with `norm_i^α` worked out already (it is the same for a
    /// whole row).
    fn similarity_from(&self, c: u64, norm_i_alpha: f64, norm_j: u64, customers_j: u64) -> f64 {
        if c == 0 {
            return 0.0;
        }
        let den = norm_i_alpha * (norm_j as f64).powf(1.0 - self.alpha) + self.shrink;
        let pop = if self.beta == 0.0 {
            1.0
        } else {
            (customers_j.max(1) as f64).powf(self.beta)
        };
        c as f64 / den / pop
    }
}

/// The `params.neighbours` items most similar to `item` (best first, ties by name), from its
/// row of co-occurrences and every item's norm and customer count.
pub fn neighbours(
    item: &str,
    row: &HashMap<String, u64>,
    norms: &HashMap<String, u64>,
    customers: &HashMap<String, u64>,
    params: &SimParams,
) -> Vec<(String, f64)> {
    let norm_i = norms.get(item).copied().unwrap_or(0);
    let norm_i_alpha = (norm_i as f64).powf(params.alpha);
    let mut all: Vec<(String, f64)> = row
        .iter()
        .map(|(j, c)| {
            let norm_j = norms.get(j).copied().unwrap_or(0);
            let cust_j = customers.get(j).copied().unwrap_or(0);
            (
                j.clone(),
                params.similarity_from(*c, norm_i_alpha, norm_j, cust_j),
            )
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    let k = params.neighbours.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    let by = |a: &(String, f64), b: &(String, f64)| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if k < all.len() {
        all.select_nth_unstable_by(k - 1, by);
        all.truncate(k);
    }
    all.sort_by(by);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn cosine_with_shrink_by_hand() {
        // Two customers each hold a (1) and b (1); a third holds b alone.
        let cosine = SimParams {
            alpha: 0.5,
            ..SimParams::default()
        };
        let p = SimParams {
            shrink: 0.0,
            ..cosine
        };
        let s = p.similarity(2, 2, 3, 3);
        assert!((s - 2.0 / (6f64).sqrt()).abs() < 1e-12, "{s}");
        let shrunk = cosine.similarity(2, 2, 3, 3);
        assert!((shrunk - 2.0 / ((6f64).sqrt() + 10.0)).abs() < 1e-12);
        assert_eq!(p.similarity(0, 2, 3, 3), 0.0);
        // α 0.4: the first item's norm counts 2^0.4, the second's 3^0.6.
        let served = SimParams::default().similarity(2, 2, 3, 3);
        let den = 2f64.powf(0.4) * 3f64.powf(0.6) + 10.0;
        assert!((served - 2.0 / den).abs() < 1e-12);
    }

    #[test]
    fn popular_neighbours_are_pushed_down_by_beta() {
        let p = SimParams {
            shrink: 0.0,
            beta: 1.0,
            ..SimParams::default()
        };
        assert!(p.similarity(2, 4, 4, 1) > p.similarity(2, 4, 4, 10));
    }

    #[test]
    fn only_the_nearest_neighbours_are_kept_best_first() {
        let norms = map(&[("a", 4), ("b", 4), ("c", 4), ("d", 100)]);
        let customers = map(&[("a", 4), ("b", 4), ("c", 4), ("d", 100)]);
        let row = map(&[("b", 3), ("c", 1), ("d", 4)]);
        let p = SimParams {
            neighbours: 2,
            shrink: 0.0,
            alpha: 0.5,
            ..SimParams::default()
        };
        let n = neighbours("a", &row, &norms, &customers, &p);
        let names: Vec<&str> = n.iter().map(|(i, _)| i.as_str()).collect();
        // b: 3/4 = 0.75; d: 4/20 = 0.2; c: 1/4 = 0.25.
        assert_eq!(names, ["b", "c"]);
        assert!((n[0].1 - 0.75).abs() < 1e-12);
    }
}
