//! The model trained and asked in one process, without the cluster: what the cluster's answers
//! are checked against, and a quick way to compare tunings.
//!
//! ```text
//! train rows ─▶ Profile per user + Counts (one partition) ─▶ every item's neighbours ─▶ Index
//!   ─▶ per test user: top k unseen ─▶ metrics::Accumulator
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::cooccurrence::{Counts, Delta};
use crate::data::Row;
use crate::index::Index;
use crate::metrics::{Accumulator, Report};
use crate::rank::Scored;
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

    /// Every item's neighbours under `params`, best first.
    pub fn neighbour_table(&self, params: &SimParams) -> Vec<(String, Vec<(String, f64)>)> {
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

    /// What the cluster serves from, built from these counts under `params`.
    pub fn index(&self, params: &SimParams) -> Index {
        Index::build(
            self.neighbour_table(params),
            self.counts.customers.iter().map(|(i, c)| (i.clone(), *c)),
        )
    }

    /// What the cluster serves from while the catalogue is small enough for EASE: the lists
    /// [`crate::ease::solve`] gives for these counts, with the cluster's λ and neighbours.
    pub fn ease_index(&self) -> Result<Index, crate::ease::EaseError> {
        let lists =
            crate::ease::solve_counts(&self.counts, crate::ease::LAMBDA, crate::ease::NEIGHBOURS)?;
        Ok(Index::build(
            lists,
            self.counts.customers.iter().map(|(i, c)| (i.clone(), *c)),
        ))
    }

    /// The top `k` for `user` from `index` (nothing for an unknown user).
    pub fn recommend(&self, user: &str, k: usize, index: &Index) -> Vec<Scored> {
        let Some(p) = self.profiles.get(user) else {
            return Vec::new();
        };
        let history: Vec<(&str, u32)> = p.items().map(|(i, w)| (i.as_str(), w)).collect();
        index.recommend(&history, k)
    }

    /// Metrics at `k` over `test`, with a catalogue of `catalogue` items.
    pub fn evaluate(
        &self,
        test: &BTreeMap<String, BTreeSet<String>>,
        k: usize,
        params: &SimParams,
        catalogue: usize,
    ) -> Report {
        self.evaluate_index(test, k, &self.index(params), catalogue)
    }

    /// Metrics at `k` over `test` of the recommendations `index` makes.
    pub fn evaluate_index(
        &self,
        test: &BTreeMap<String, BTreeSet<String>>,
        k: usize,
        index: &Index,
        catalogue: usize,
    ) -> Report {
        let mut acc = Accumulator::new(k);
        for (user, held) in test {
            let ranked: Vec<String> = self
                .recommend(user, k, index)
                .into_iter()
                .map(|s| s.item)
                .collect();
            let relevant: HashSet<String> = held.iter().cloned().collect();
            acc.add(&ranked, &relevant);
        }
        acc.report(catalogue)
    }
}
