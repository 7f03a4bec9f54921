//! The model trained and asked in one process, without the cluster: what the cluster's answers
//! are checked against, and a quick way to compare tunings.
//!
//! ```text
//! train rows ─▶ Profile per user + Counts (one partition) ─▶ per test user: neighbours of
//! each item ─▶ Scores ─▶ top k unseen ─▶ metrics::Accumulator
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::cooccurrence::{Counts, Delta};
use crate::data::Row;
use crate::metrics::{Accumulator, Report};
use crate::rank::{Scored, Scores};
use crate::signal::Profile;
use crate::similarity::{neighbours, SimParams};

/// A model trained in memory.
#[derive(Debug, Default)]
pub struct Model {
    /// Per user, its profile.
    pub profiles: BTreeMap<String, Profile>,
    /// All counts, in one partition.
    pub counts: Counts,
}

impl Model {
    /// Trains on `rows`, each an interaction of weight `w`.
    pub fn train(rows: &[Row], w: u32) -> Self {
        let mut m = Model::default();
        for r in rows {
            let p = m.profiles.entry(r.user.clone()).or_default();
            if let Some(d) = Delta::record(p, &r.item, w) {
                m.counts.apply(&d, |_| true);
            }
        }
        m
    }

    /// Every item's neighbours under `params`.
    pub fn neighbour_table(&self, params: &SimParams) -> HashMap<String, Vec<(String, f64)>> {
        self.counts
            .rows
            .iter()
            .map(|(item, row)| {
                let n = neighbours(
                    item,
                    row,
                    &self.counts.norms,
                    &self.counts.customers,
                    params,
                );
                (item.clone(), n)
            })
            .collect()
    }

    /// The top `k` for `user` from `table` (nothing for an unknown user).
    pub fn recommend(
        &self,
        user: &str,
        k: usize,
        table: &HashMap<String, Vec<(String, f64)>>,
    ) -> Vec<Scored> {
        let Some(p) = self.profiles.get(user) else {
            return Vec::new();
        };
        let mut scores = Scores::default();
        for (j, n) in table {
            if p.weight(j) > 0 {
                continue;
            }
            let from: Vec<(&str, u32, f64)> = n
                .iter()
                .filter_map(|(i, s)| {
                    let w = p.weight(i);
                    (w > 0).then_some((i.as_str(), w, *s))
                })
                .collect();
            scores.add_candidate(j, &from);
        }
        scores.top(k, |j| p.weight(j) == 0)
    }

    /// Metrics at `k` over `test`, with a catalogue of `catalogue` items.
    pub fn evaluate(
        &self,
        test: &BTreeMap<String, BTreeSet<String>>,
        k: usize,
        params: &SimParams,
        catalogue: usize,
    ) -> Report {
        let table = self.neighbour_table(params);
        let mut acc = Accumulator::new(k);
        for (user, held) in test {
            let ranked: Vec<String> = self
                .recommend(user, k, &table)
                .into_iter()
                .map(|s| s.item)
                .collect();
            let relevant: HashSet<String> = held.iter().cloned().collect();
            acc.add(&ranked, &relevant);
        }
        acc.report(catalogue)
    }
}
