//! The primary's lease: a node may act as primary only while a majority of the nodes (itself
//! included) has answered a heartbeat it sent less than the lease duration ago. The lease is
//! counted from when the ping was *sent*, so it never outlives what the answering peers saw.
//!
//! Generic over the clock (`Instant` in the node, ticks in the model checker).

use std::collections::HashMap;

/// Whether answers from a majority are on hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Majority<T> {
    /// A single-node cluster: the node is a majority on its own.
    Alone,
    /// Not enough answers yet.
    Missing,
    /// The oldest send time among the freshest majority of answers: the lease runs from it.
    Since(T),
}

/// Heartbeat answers from peers, by the time their ping was sent.
#[derive(Debug, Clone)]
pub struct LeaseTracker<T> {
    /// Answers needed besides this node's own.
    need: usize,
    acks: HashMap<String, T>,
}

impl<T: Copy + Ord> LeaseTracker<T> {
    /// A tracker for a node of a quorum of `nodes` (this one included): it needs `nodes / 2`
    /// answers besides its own.
    pub fn new(nodes: usize) -> Self {
        Self {
            need: nodes / 2,
            acks: HashMap::new(),
        }
    }

    /// A tracker for a node outside the quorum of `nodes` (one that joined later): its own
    /// word is no vote, so it needs answers from a majority, `nodes / 2 + 1`.
    pub fn outside(nodes: usize) -> Self {
        Self {
            need: nodes / 2 + 1,
            acks: HashMap::new(),
        }
    }

    /// `peer` answered a ping sent at `sent`. Older answers never move the lease back.
    pub fn acked(&mut self, peer: &str, sent: T) {
        let e = self.acks.entry(peer.to_string()).or_insert(sent);
        *e = (*e).max(sent);
    }

    /// Forgets `peer`'s answers (it may have granted its support elsewhere).
    pub fn forget(&mut self, peer: &str) {
        self.acks.remove(peer);
    }

    /// From when the freshest majority of answers holds.
    pub fn majority(&self) -> Majority<T> {
        majority_needing(self.need, self.acks.values().copied())
    }
}

/// Whether a peer's heartbeat answer may extend this node's lease: not if the peer has applied a
/// newer shard map than this node. Such a peer may already serve as primary of a shard this node
/// still thinks it leads (it was promoted while this node was cut off or frozen); its support
/// must not keep this node serving. The node regains its lease once it has caught up on the map.
pub fn counts(peer_map_version: u64, my_map_version: u64) -> bool {
    peer_map_version <= my_map_version
}

/// The send time that a majority of `nodes` (the caller included) answered at or after, given the
/// peers' latest answered send times.
pub fn majority_since<T: Copy + Ord>(nodes: usize, acks: impl Iterator<Item = T>) -> Majority<T> {
    majority_needing(nodes / 2, acks)
}

/// The send time that `need` peers answered at or after.
fn majority_needing<T: Copy + Ord>(need: usize, acks: impl Iterator<Item = T>) -> Majority<T> {
    if need == 0 {
        return Majority::Alone;
    }
    let mut sent: Vec<T> = acks.collect();
    sent.sort_unstable_by(|a, b| b.cmp(a));
    sent.get(need - 1)
        .map_or(Majority::Missing, |t| Majority::Since(*t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_of_fresh_answers_holds_the_lease() {
        let mut t = LeaseTracker::<u64>::new(4);
        assert_eq!(t.majority(), Majority::Missing);
        t.acked("n2", 0);
        assert_eq!(t.majority(), Majority::Missing, "2 of 4 is not a majority");
        t.acked("n3", 50);
        // The second-freshest answer bounds the lease: n2's ping at 0.
        assert_eq!(t.majority(), Majority::Since(0));
        t.acked("n4", 100);
        assert_eq!(t.majority(), Majority::Since(50));
        // Older answers never move it back.
        t.acked("n4", 0);
        assert_eq!(t.majority(), Majority::Since(50));
        t.forget("n4");
        assert_eq!(t.majority(), Majority::Since(0));
    }

    #[test]
    fn a_peer_with_a_newer_map_gives_no_support() {
        assert!(counts(4, 4));
        assert!(counts(3, 4));
        assert!(!counts(5, 4));
    }

    #[test]
    fn a_node_outside_the_quorum_needs_a_majority_of_it_besides_itself() {
        let mut t = LeaseTracker::<u64>::outside(4);
        t.acked("n1", 10);
        t.acked("n2", 20);
        assert_eq!(
            t.majority(),
            Majority::Missing,
            "2 of 4 voters is no majority"
        );
        t.acked("n3", 30);
        assert_eq!(t.majority(), Majority::Since(10));
        assert_eq!(
            LeaseTracker::<u64>::outside(1).majority(),
            Majority::Missing
        );
    }

    #[test]
    fn a_single_node_cluster_always_holds_it() {
        assert_eq!(LeaseTracker::<u64>::new(1).majority(), Majority::Alone);
    }
}
