//! Top-N ranking metrics at a cut-off k, averaged over test users, and catalogue coverage.
//!
//! ```text
//! precision = hits / k            recall = hits / |held out|        hit rate = [hits > 0]
//! NDCG = Σ_hit 1/log2(rank+1) / Σ_{r=1..min(k, |held out|)} 1/log2(r+1)     (ranks from 1)
//! coverage = distinct items recommended to anyone / items in the catalogue
//! ```

use std::collections::HashSet;

use serde::Serialize;

/// One user's metrics at k.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct AtK {
    /// Share of the k slots that hold a held-out item.
    pub precision: f64,
    /// Share of the held-out items found in the top k.
    pub recall: f64,
    /// Discounted gain against the best possible ordering.
    pub ndcg: f64,
    /// 1 when any held-out item is in the top k.
    pub hit_rate: f64,
}

/// `ranked`'s metrics at `k` against the user's held-out `relevant` items (not empty).
pub fn at_k(ranked: &[String], relevant: &HashSet<String>, k: usize) -> AtK {
    let gain = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
    let mut hits = 0usize;
    let mut dcg = 0.0;
    for (r, item) in ranked.iter().take(k).enumerate() {
        if relevant.contains(item) {
            hits += 1;
            dcg += gain(r + 1);
        }
    }
    let ideal: f64 = (1..=k.min(relevant.len())).map(gain).sum();
    AtK {
        precision: hits as f64 / k as f64,
        recall: hits as f64 / relevant.len() as f64,
        ndcg: if ideal > 0.0 { dcg / ideal } else { 0.0 },
        hit_rate: if hits > 0 { 1.0 } else { 0.0 },
    }
}

/// Averages over users, with coverage.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Report {
    /// Test users measured.
    pub users: usize,
    /// Mean precision at k.
    pub precision: f64,
    /// Mean recall at k.
    pub recall: f64,
    /// Mean NDCG at k.
    pub ndcg: f64,
    /// Mean hit rate at k.
    pub hit_rate: f64,
    /// Distinct items recommended / catalogue size.
    pub coverage: f64,
}

/// Adds up users' metrics.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    k: usize,
    users: usize,
    sum: AtK,
    recommended: HashSet<String>,
}

impl Accumulator {
    /// An empty accumulator at cut-off `k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// Adds one user's ranking against its held-out items.
    pub fn add(&mut self, ranked: &[String], relevant: &HashSet<String>) {
        let m = at_k(ranked, relevant, self.k);
        self.users += 1;
        self.sum.precision += m.precision;
        self.sum.recall += m.recall;
        self.sum.ndcg += m.ndcg;
        self.sum.hit_rate += m.hit_rate;
        self.recommended.extend(ranked.iter().take(self.k).cloned());
    }

    /// The averages, with coverage over a catalogue of `catalogue` items.
    pub fn report(&self, catalogue: usize) -> Report {
        let n = self.users.max(1) as f64;
        Report {
            users: self.users,
            precision: self.sum.precision / n,
            recall: self.sum.recall / n,
            ndcg: self.sum.ndcg / n,
            hit_rate: self.sum.hit_rate / n,
            coverage: self.recommended.len() as f64 / catalogue.max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|i| i.to_string()).collect()
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn metrics_by_hand() {
        // Hits at ranks 1 and 3 of 4 slots; 3 held out.
        let m = at_k(&s(&["a", "x", "b", "y"]), &set(&["a", "b", "c"]), 4);
        assert_eq!(m.precision, 0.5);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((m.ndcg - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.hit_rate, 1.0);
        // A perfect ranking of fewer held-out items than k has NDCG 1.
        assert!((at_k(&s(&["a", "x"]), &set(&["a"]), 2).ndcg - 1.0).abs() < 1e-12);
        assert_eq!(at_k(&s(&["x"]), &set(&["a"]), 10), AtK::default());
    }

    #[test]
    fn averages_and_coverage() {
        let mut acc = Accumulator::new(2);
        acc.add(&s(&["a", "b"]), &set(&["a"]));
        acc.add(&s(&["a", "c"]), &set(&["z"]));
        let r = acc.report(10);
        assert_eq!(r.users, 2);
        assert_eq!(r.precision, 0.25);
        assert_eq!(r.hit_rate, 0.5);
        assert!((r.coverage - 0.3).abs() < 1e-12);
    }
}
