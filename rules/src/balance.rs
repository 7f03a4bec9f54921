//! Where every shard's copies and primary should be: every node within one of its fair share of
//! copies, primaries as even as the copies allow, reached from the current placement with as
//! few moves as possible. A copy that can stay stays; only an over-full node gives copies away,
//! only to an under-full one, so adding a fifth node to four moves about a fifth of the copies
//! (all of them to the new node) and nothing else.
//!
//! ```text
//! current holders ∩ eligible ─▶ trim sets past rf (from the fullest node) ─▶ fill sets short of
//! rf (to the emptiest node) ─▶ Balance only: move copies fullest → emptiest until within one
//! ─▶ keep each primary where it is ─▶ Balance only: move primaries along chains of sets from
//! the node with the most to one with at least two fewer, until no chain is left
//! ```
//!
//! Pure and deterministic: ties go by a per-shard score (rendezvous), never by map order of a
//! hash table, so every consensus leader computes the same target from the same map. Applying
//! the target and computing again gives the same target (it is a fixed point), so the planner
//! converges instead of moving shards back and forth.

/// A node's score for a shard (higher is preferred): breaks ties deterministically.
pub type Score<'a> = &'a dyn Fn(&str, u32) -> u64;

/// One shard as the balancer sees it: who holds it now and who is its primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holders {
    /// Nodes holding or copying the shard, best first (primary, in-sync, learners).
    pub nodes: Vec<String>,
    /// The current primary, if it is still eligible.
    pub primary: Option<String>,
}

/// How far the target may move from the current placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only what redundancy needs: copies past rf dropped, copies short of rf added, primaries
    /// kept. While a node is down: moving shards for balance then would only add hand-overs
    /// to a failover, and move them back when the node returns.
    Repair,
    /// Repair, then even out copies and primaries over `eligible`.
    Balance,
}

/// The target of every shard: its replicas, primary first. `eligible` are the nodes that may
/// keep copies, `takes` says which of them may be given new ones (a node still starting keeps
/// what it has but gets nothing new); `rf` is capped at the number eligible.
pub fn balance(
    current: Vec<Holders>,
    eligible: &[String],
    takes: &dyn Fn(&str) -> bool,
    rf: usize,
    mode: Mode,
    score: Score,
) -> Vec<Vec<String>> {
    if eligible.is_empty() {
        return current.into_iter().map(|h| h.nodes).collect();
    }
    let rf = rf.clamp(1, eligible.len());
    let mut b = Balancer {
        eligible,
        takes: eligible.iter().map(|n| takes(n)).collect(),
        score,
        sets: Vec::new(),
        copies: vec![0; eligible.len()],
    };
    let mut primaries = Vec::with_capacity(current.len());
    for h in current {
        let mut set: Vec<usize> = h.nodes.iter().filter_map(|n| b.index(n)).collect();
        set.dedup();
        for &n in &set {
            b.copies[n] += 1;
        }
        b.sets.push(set);
        primaries.push(h.primary.as_deref().and_then(|n| b.index(n)));
    }
    b.trim(rf);
    b.fill(rf);
    if mode == Mode::Balance {
        b.spread();
    }
    let primaries = b.primaries(primaries, mode == Mode::Balance);
    b.sets
        .iter()
        .zip(primaries)
        .map(|(set, p)| {
            // A shard with no eligible copy left has an empty target (it stays unavailable).
            p.into_iter()
                .chain(set.iter().copied().filter(|n| Some(*n) != p))
                .map(|n| eligible[n].clone())
                .collect()
        })
        .collect()
}

struct Balancer<'a> {
    eligible: &'a [String],
    /// Per node: may it be given new copies.
    takes: Vec<bool>,
    score: Score<'a>,
    /// Per shard: indices into `eligible`.
    sets: Vec<Vec<usize>>,
    /// Per node: copies it holds in `sets`.
    copies: Vec<usize>,
}

impl Balancer<'_> {
    fn index(&self, name: &str) -> Option<usize> {
        self.eligible.iter().position(|n| n == name)
    }

    fn score(&self, node: usize, shard: usize) -> u64 {
        (self.score)(&self.eligible[node], shard as u32)
    }

    /// A set past `rf` loses its copies on the fullest nodes (ties: the lowest score).
    fn trim(&mut self, rf: usize) {
        for s in 0..self.sets.len() {
            while self.sets[s].len() > rf {
                let (i, _) = self.sets[s]
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, &n)| {
                        // Among equally full nodes, keep the first (the primary) in place.
                        (self.copies[n], *i, std::cmp::Reverse(self.score(n, s)))
                    })
                    .expect("a set past rf is not empty");
                let n = self.sets[s].remove(i);
                self.copies[n] -= 1;
            }
        }
    }

    /// A set short of `rf` gains copies on the emptiest nodes that take copies (ties: the
    /// highest score), as many as there are.
    fn fill(&mut self, rf: usize) {
        for s in 0..self.sets.len() {
            while self.sets[s].len() < rf {
                let Some(n) = (0..self.eligible.len())
                    .filter(|&n| self.takes[n] && !self.sets[s].contains(&n))
                    .min_by_key(|&n| (self.copies[n], std::cmp::Reverse(self.score(n, s))))
                else {
                    break;
                };
                self.sets[s].push(n);
                self.copies[n] += 1;
            }
        }
    }

    /// Moves copies from the fullest nodes to the emptiest until every node is within one of
    /// every other. A follower's copy moves before a primary's (no hand-over needed); then the
    /// shard the receiver scores highest.
    fn spread(&mut self) {
        while let Some((s, full, empty)) = self.next_move() {
            let at = self.sets[s].iter().position(|&n| n == full).unwrap();
            self.sets[s][at] = empty;
            self.copies[full] -= 1;
            self.copies[empty] += 1;
        }
    }

    /// The next copy to move: (shard, from, to), from the fullest node that has a shard the
    /// emptiest node lacks.
    fn next_move(&self) -> Option<(usize, usize, usize)> {
        let mut by_count: Vec<usize> = (0..self.eligible.len()).collect();
        by_count.sort_by(|&a, &b| {
            (self.copies[a], &self.eligible[a]).cmp(&(self.copies[b], &self.eligible[b]))
        });
        for &full in by_count.iter().rev() {
            for &empty in &by_count {
                if self.copies[full] <= self.copies[empty] + 1 {
                    break;
                }
                if !self.takes[empty] {
                    continue;
                }
                let pick = (0..self.sets.len())
                    .filter(|&s| self.sets[s].contains(&full) && !self.sets[s].contains(&empty))
                    .max_by_key(|&s| (self.sets[s][0] != full, self.score(empty, s)));
                if let Some(s) = pick {
                    return Some((s, full, empty));
                }
            }
        }
        None
    }

    /// Each shard keeps its primary if it still holds a copy, else its first holder. When
    /// balancing, primaries then move along chains of sets (a → b in one shard, b → c in
    /// another) from the nodes with the most to one with at least two fewer, until none can.
    fn primaries(&self, current: Vec<Option<usize>>, rebalance: bool) -> Vec<Option<usize>> {
        let mut chosen: Vec<Option<usize>> = self
            .sets
            .iter()
            .zip(current)
            .map(|(set, p)| p.filter(|p| set.contains(p)).or(set.first().copied()))
            .collect();
        let mut count = vec![0usize; self.eligible.len()];
        for &p in chosen.iter().flatten() {
            count[p] += 1;
        }
        if !rebalance {
            return chosen;
        }
        while let Some(path) = self.primary_path(&chosen, &count) {
            let (first, last) = (chosen[path[0].0], path[path.len() - 1].1);
            for (s, to) in path {
                chosen[s] = Some(to);
            }
            count[first.expect("a path starts at a primary")] -= 1;
            count[last] += 1;
        }
        chosen
    }

    /// The shortest chain of primary moves (shard, new primary) from a node with the most
    /// primaries to one with at least two fewer, if there is one (breadth first, so every
    /// leader finds the same one).
    fn primary_path(
        &self,
        chosen: &[Option<usize>],
        count: &[usize],
    ) -> Option<Vec<(usize, usize)>> {
        let max = *count.iter().max()?;
        let mut sources: Vec<usize> = (0..count.len()).filter(|&n| count[n] == max).collect();
        sources.sort_by_key(|&n| &self.eligible[n]);
        let mut via: Vec<Option<(usize, usize)>> = vec![None; count.len()];
        let mut seen = vec![false; count.len()];
        let mut queue = std::collections::VecDeque::new();
        for &n in &sources {
            seen[n] = true;
            queue.push_back(n);
        }
        while let Some(x) = queue.pop_front() {
            for s in (0..self.sets.len()).filter(|&s| chosen[s] == Some(x)) {
                for &u in &self.sets[s] {
                    if seen[u] || !self.takes[u] {
                        continue;
                    }
                    seen[u] = true;
                    via[u] = Some((s, x));
                    if count[u] + 2 <= max {
                        let mut path = Vec::new();
                        let mut at = u;
                        while let Some((s, from)) = via[at] {
                            path.push((s, at));
                            at = from;
                        }
                        path.reverse();
                        return Some(path);
                    }
                    queue.push_back(u);
                }
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "balance_test.rs"]
mod tests;
