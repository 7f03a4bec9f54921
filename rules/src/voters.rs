//! Who votes in consensus. The seeds of nodes.toml vote from the start and keep their votes
//! while they are members; nodes that joined are added (in name order, while they are up) until
//! the count is odd, at most [`MAX_VOTERS`]: a fifth node makes four seeds five voters, and the
//! majority needed grows with them. A drained and removed node loses its vote, and a joined node
//! takes its place when one is up. Never more than one vote changes per call, so the planner
//! moves openraft through single steps.

use std::collections::BTreeSet;

/// The most voters a cluster grows to by itself (more seeds stay voters).
pub const MAX_VOTERS: usize = 5;

/// The voters to have: from `current`, with the map's `members` (not draining, in any order),
/// `seeds` from nodes.toml and `up` (able to catch up with the log now).
pub fn voters(
    current: &BTreeSet<String>,
    members: &[String],
    seeds: &[String],
    up: &dyn Fn(&str) -> bool,
) -> BTreeSet<String> {
    let member = |n: &str| members.iter().any(|m| m == n);
    // A voter that is no member any more goes first.
    if let Some(gone) = current.iter().find(|v| !member(v)) {
        let mut next = current.clone();
        next.remove(gone);
        return next;
    }
    let seeds_kept = current.iter().filter(|v| seeds.contains(v)).count();
    let limit = MAX_VOTERS.max(seeds_kept);
    let wants_more = current.len() < limit && current.len().is_multiple_of(2);
    let wants_fewer = current.len() > limit
        || (current.len().is_multiple_of(2) && current.len() > seeds_kept && !wants_more);
    if wants_fewer {
        // Drop the last joined voter by name (seeds keep their votes).
        if let Some(v) = current.iter().rev().find(|v| !seeds.contains(v)) {
            let mut next = current.clone();
            next.remove(&v.clone());
            return next;
        }
    }
    if wants_more {
        let mut candidates: Vec<&String> = members
            .iter()
            .filter(|m| !current.contains(*m) && up(m))
            .collect();
        candidates.sort();
        if let Some(n) = candidates.first() {
            let mut next = current.clone();
            next.insert((*n).clone());
            return next;
        }
    }
    current.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_fifth_node_makes_four_seeds_five_voters_and_a_sixth_changes_nothing() {
        let seeds = list(&["n1", "n2", "n3", "n4"]);
        let up = |_: &str| true;
        let four = set(&["n1", "n2", "n3", "n4"]);
        assert_eq!(voters(&four, &seeds, &seeds, &up), four, "no one to add");
        let five = list(&["n1", "n2", "n3", "n4", "n5"]);
        assert_eq!(
            voters(&four, &five, &seeds, &up),
            set(&["n1", "n2", "n3", "n4", "n5"])
        );
        let six = list(&["n1", "n2", "n3", "n4", "n5", "n6"]);
        let now = set(&["n1", "n2", "n3", "n4", "n5"]);
        assert_eq!(voters(&now, &six, &seeds, &up), now, "odd and at the bound");
        // A joining node that is not up yet does not get a vote.
        assert_eq!(voters(&four, &five, &seeds, &|n| n != "n5"), four);
    }

    #[test]
    fn a_removed_voter_loses_its_vote_and_a_joined_node_takes_its_place() {
        let seeds = list(&["n1", "n2", "n3"]);
        let up = |_: &str| true;
        let now = set(&["n1", "n2", "n3"]);
        let members = list(&["n1", "n3", "n4"]);
        let step1 = voters(&now, &members, &seeds, &up);
        assert_eq!(step1, set(&["n1", "n3"]));
        assert_eq!(
            voters(&step1, &members, &seeds, &up),
            set(&["n1", "n3", "n4"])
        );
    }

    #[test]
    fn three_seeds_grow_to_five_one_vote_at_a_time() {
        let seeds = list(&["n1", "n2", "n3"]);
        let members = list(&["n1", "n2", "n3", "n4", "n5"]);
        let up = |_: &str| true;
        let mut v = set(&["n1", "n2", "n3"]);
        // Odd already: growing would need two at once; it stays until it is even.
        v = voters(&v, &members, &seeds, &up);
        assert_eq!(v, set(&["n1", "n2", "n3"]));
        let mut seen = vec![v.clone()];
        for _ in 0..4 {
            v = voters(&v, &members, &seeds, &up);
            seen.push(v.clone());
        }
        assert!(seen.iter().all(|s| s.len() <= 5));
    }
}
