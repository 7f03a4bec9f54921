//! What Keelson's recommendations are compared with, in the same run: the most popular items
//! the user has not seen, and random unseen items (seeded).

use std::collections::{BTreeSet, HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::Row;

/// The items of `rows`, held by most users first (ties by name): the popularity baseline's order.
pub fn by_popularity(rows: &[Row]) -> Vec<String> {
    let mut holders: HashMap<&str, HashSet<&str>> = HashMap::new();
    for r in rows {
        holders.entry(&r.item).or_default().insert(&r.user);
    }
    let mut all: Vec<(&str, usize)> = holders.iter().map(|(i, u)| (*i, u.len())).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all.into_iter().map(|(i, _)| i.to_string()).collect()
}

/// The first `k` of `by_popularity` (most popular first) not in `seen`.
pub fn popular(by_popularity: &[String], seen: &BTreeSet<String>, k: usize) -> Vec<String> {
    by_popularity
        .iter()
        .filter(|i| !seen.contains(*i))
        .take(k)
        .cloned()
        .collect()
}

/// Seeded random picks from the catalogue.
#[derive(Debug)]
pub struct RandomPicks {
    rng: rand::rngs::StdRng,
}

impl RandomPicks {
    /// Picks seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// `k` distinct random items of `catalogue` not in `seen`.
    pub fn pick(&mut self, catalogue: &[String], seen: &BTreeSet<String>, k: usize) -> Vec<String> {
        let mut unseen: Vec<&String> = catalogue.iter().filter(|i| !seen.contains(*i)).collect();
        unseen.shuffle(&mut self.rng);
        unseen.into_iter().take(k).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_skip_seen_items() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let seen: BTreeSet<String> = ["a".to_string()].into();
        assert_eq!(popular(&all, &seen, 2), ["b", "c"]);
        let picks = RandomPicks::new(1).pick(&all, &seen, 3);
        assert_eq!(picks.len(), 3);
        assert!(!picks.contains(&"a".to_string()));
        assert_eq!(RandomPicks::new(1).pick(&all, &seen, 3), picks, "seeded");
    }

    #[test]
    fn popularity_counts_users_not_rows() {
        let row = |user: &str, item: &str| Row {
            user: user.into(),
            item: item.into(),
            rating: 1.0,
            at: 0,
        };
        // x: one user three times; y and z: two users each (tie by name).
        let rows = [
            row("u1", "x"),
            row("u1", "x"),
            row("u1", "x"),
            row("u1", "z"),
            row("u2", "z"),
            row("u2", "y"),
            row("u3", "y"),
        ];
        assert_eq!(by_popularity(&rows), ["y", "z", "x"]);
    }
}
