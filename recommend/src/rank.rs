//! A customer's recommendations: each candidate item is scored by the customer's items among
//! its nearest neighbours, each lending its weight times its similarity (candidate-side
//! item-kNN, as Dacrema et al.'s ItemKNN: a candidate's own top-k decides who may vote for it).
//! Items the customer already has are left out, and each candidate names the items that
//! contributed most ("because").
//!
//! ```text
//! for candidate j not in history: score[j] = Σ_{i in history ∩ neighbours(j)} w_i · s(j, i)
//! partitions score the candidates whose rows they own ─▶ Scores::merge ─▶ top(limit)
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Items named as the reason for one recommendation, at most.
pub const MAX_BECAUSE: usize = 3;

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The item.
    pub item: String,
    /// Its score (only the order means something).
    pub score: f64,
    /// The customer's items that contributed most, largest first.
    pub because: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Candidate {
    score: f64,
    because: Vec<(String, f64)>,
}

/// Candidate scores being summed up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    candidates: HashMap<String, Candidate>,
}

impl Scores {
    /// Adds to candidate `j` what each of the customer's items says of it: `from` holds (item,
    /// the customer's weight of it, its similarity to `j`) for the items among `j`'s neighbours.
    pub fn add_candidate(&mut self, j: &str, from: &[(&str, u32, f64)]) {
        if from.is_empty() {
            return;
        }
        let c = self.candidates.entry(j.to_string()).or_default();
        for (i, w, s) in from {
            let part = f64::from(*w) * s;
            c.score += part;
            c.because.push((i.to_string(), part));
        }
        keep_largest(&mut c.because);
    }

    /// Adds another partition's scores.
    pub fn merge(&mut self, other: Scores) {
        for (j, o) in other.candidates {
            let c = self.candidates.entry(j).or_default();
            c.score += o.score;
            c.because.extend(o.because);
            keep_largest(&mut c.because);
        }
    }

    /// How many candidates have a score.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// True when nothing scored.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The best `limit` candidates `keep` allows, best first (ties by name).
    pub fn top(&self, limit: usize, keep: impl Fn(&str) -> bool) -> Vec<Scored> {
        let mut all: Vec<(&String, &Candidate)> = self
            .candidates
            .iter()
            .filter(|(j, c)| c.score > 0.0 && keep(j))
            .collect();
        all.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));
        all.truncate(limit);
        all.into_iter()
            .map(|(j, c)| {
                let mut because = c.because.clone();
                keep_largest(&mut because);
                Scored {
                    item: j.clone(),
                    score: c.score,
                    because: because.into_iter().map(|(i, _)| i).collect(),
                }
            })
            .collect()
    }
}

/// The best `limit` of candidates scored apart (each partition scores only the candidates it
/// owns, so no item comes twice): best first, ties by name.
pub fn best(mut all: Vec<Scored>, limit: usize) -> Vec<Scored> {
    all.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.item.cmp(&b.item))
    });
    all.truncate(limit);
    all
}

/// Keeps the [`MAX_BECAUSE`] largest contributions, largest first (ties by name), one per item.
fn keep_largest(because: &mut Vec<(String, f64)>) {
    because.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut seen = std::collections::HashSet::new();
    because.retain(|(i, _)| seen.insert(i.clone()));
    because.truncate(MAX_BECAUSE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_add_up_history_weights_times_similarity() {
        let mut s = Scores::default();
        s.add_candidate("x", &[("a", 2, 0.5)]);
        s.add_candidate("y", &[("a", 2, 0.1), ("b", 1, 0.8)]);
        s.add_candidate("z", &[]);
        let top = s.top(10, |_| true);
        let items: Vec<&str> = top.iter().map(|r| r.item.as_str()).collect();
        // x: 2*0.5 = 1.0; y: 2*0.1 + 0.8 = 1.0 -> tie broken by name; z: nothing.
        assert_eq!(items, ["x", "y"]);
        assert!((top[1].score - 1.0).abs() < 1e-12);
        assert_eq!(top[1].because, ["b", "a"], "b gave 0.8, a 0.2");
        assert_eq!(s.top(10, |j| j != "x")[0].item, "y");
        assert_eq!(s.top(1, |_| true).len(), 1);
    }

    #[test]
    fn partitions_merge_into_the_same_ranking() {
        let mut whole = Scores::default();
        whole.add_candidate("x", &[("a", 1, 0.3)]);
        whole.add_candidate("y", &[("a", 1, 0.2), ("b", 3, 0.2)]);
        let mut p1 = Scores::default();
        p1.add_candidate("x", &[("a", 1, 0.3)]);
        let mut p2 = Scores::default();
        p2.add_candidate("y", &[("a", 1, 0.2), ("b", 3, 0.2)]);
        p1.merge(p2);
        assert_eq!(p1.top(10, |_| true), whole.top(10, |_| true));
        assert_eq!(p1.top(10, |_| true)[0].item, "y");
        assert_eq!(p1.len(), 2);
        let parts = [p1.top(10, |j| j == "x"), p1.top(10, |j| j != "x")].concat();
        assert_eq!(best(parts, 10), whole.top(10, |_| true));
    }
}
