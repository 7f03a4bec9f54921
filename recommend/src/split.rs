//! Splits ratings into what the model learns from and what it is judged on, per user.
//!
//! ```text
//! RandomPerUser{share, seed}: each user's ratings shuffled (seeded), round(share · n) held out,
//!                              at least one when n >= 2, never all
//! LeaveLastOut:               each user's latest rating held out (ties: the later line), n >= 2
//! ```

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::Row;

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Protocol {
    /// A random share of each user's ratings is held out.
    RandomPerUser {
        /// Share held out (0.2 for 80/20).
        test_share: f64,
        /// Seed of the shuffle.
        seed: u64,
    },
    /// Each user's latest rating is held out.
    LeaveLastOut,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::RandomPerUser { test_share, seed } => write!(
                f,
                "per-user random {:.0}/{:.0} split, seed {seed}",
                (1.0 - test_share) * 100.0,
                test_share * 100.0
            ),
            Protocol::LeaveLastOut => write!(
                f,
                "leave-last-out by time (each user's latest rating held out)"
            ),
        }
    }
}

/// A split.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// What the model learns from, in the file's order.
    pub train: Vec<Row>,
    /// Per user, the items held out (none of them in that user's training rows).
    pub test: BTreeMap<String, BTreeSet<String>>,
}

/// Splits `rows` by `protocol`.
pub fn split(rows: &[Row], protocol: Protocol) -> Split {
    let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_user.entry(&r.user).or_default().push(i);
    }
    let mut held = vec![false; rows.len()];
    let mut rng = match protocol {
        Protocol::RandomPerUser { seed, .. } => Some(rand::rngs::StdRng::seed_from_u64(seed)),
        Protocol::LeaveLastOut => None,
    };
    for idx in by_user.values_mut() {
        let n = idx.len();
        if n < 2 {
            continue;
        }
        match (protocol, rng.as_mut()) {
            (Protocol::RandomPerUser { test_share, .. }, Some(rng)) => {
                idx.shuffle(rng);
                let k = ((n as f64 * test_share).round() as usize).clamp(1, n - 1);
                for &i in &idx[..k] {
                    held[i] = true;
                }
            }
            _ => {
                let last = idx
                    .iter()
                    .copied()
                    .max_by_key(|&i| (rows[i].at, i))
                    .expect("n >= 2");
                held[last] = true;
            }
        }
    }
    let mut out = Split::default();
    let mut trained: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if !held[i] {
            out.train.push(r.clone());
            trained.entry(&r.user).or_default().insert(&r.item);
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let seen = trained
            .get(r.user.as_str())
            .is_some_and(|s| s.contains(r.item.as_str()));
        if held[i] && !seen {
            out.test
                .entry(r.user.clone())
                .or_default()
                .insert(r.item.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n_users: usize, per_user: usize) -> Vec<Row> {
        (0..n_users)
            .flat_map(|u| {
                (0..per_user).map(move |i| Row {
                    user: format!("u{u}"),
                    item: format!("i{i}"),
                    rating: 1.0,
                    at: (per_user - i) as u64,
                })
            })
            .collect()
    }

    #[test]
    fn random_split_holds_out_a_fifth_per_user_and_repeats_with_its_seed() {
        let data = rows(3, 10);
        let p = Protocol::RandomPerUser {
            test_share: 0.2,
            seed: 1,
        };
        let s = split(&data, p);
        assert_eq!(s.train.len(), 24);
        assert!(s.test.values().all(|t| t.len() == 2));
        assert_eq!(split(&data, p).test, s.test, "same seed, same split");
        let other = split(
            &data,
            Protocol::RandomPerUser {
                test_share: 0.2,
                seed: 2,
            },
        );
        assert_ne!(other.test, s.test);
        for (u, t) in &s.test {
            assert!(s.train.iter().all(|r| &r.user != u || !t.contains(&r.item)));
        }
    }

    #[test]
    fn leave_last_out_holds_out_the_latest_and_skips_single_rating_users() {
        let mut data = rows(2, 3);
        data.push(Row {
            user: "solo".into(),
            item: "i0".into(),
            rating: 1.0,
            at: 9,
        });
        let s = split(&data, Protocol::LeaveLastOut);
        // Item i0 has the largest timestamp (per_user - 0).
        assert_eq!(s.test["u0"].iter().collect::<Vec<_>>(), ["i0"]);
        assert!(!s.test.contains_key("solo"));
        assert_eq!(s.train.len(), 5);
    }
}
