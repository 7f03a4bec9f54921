//! The primary's lease: a node may act as primary only while a majority of the nodes (itself
//! included) has answered a heartbeat it sent less than `duration` ago. The consensus leader
//! promotes a replacement only after the primary has been down for longer than that, so a node
//! cut off from the majority stops serving before anyone else starts.
//!
//! [`LeaseTracker`] decides (the pure rule `keelson_rules::lease`, on the node's clock);
//! [`Lease`] is the shared, lock-free answer the shard host reads on every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_rules::lease::Majority;

/// Heartbeat answers from peers, by the time their ping was sent, and how long they hold.
#[derive(Debug)]
pub struct LeaseTracker {
    rule: keelson_rules::lease::LeaseTracker<Instant>,
    duration: Duration,
}

impl LeaseTracker {
    /// A tracker for a node with a lease quorum of `nodes` nodes, `inside` it or not.
    pub fn new(nodes: usize, inside: bool, duration: Duration) -> Self {
        let rule = if inside {
            keelson_rules::lease::LeaseTracker::new(nodes)
        } else {
            keelson_rules::lease::LeaseTracker::outside(nodes)
        };
        Self { rule, duration }
    }

    /// Forgets `peer`'s answers (it left the cluster).
    pub fn forget(&mut self, peer: &str) {
        self.rule.forget(peer);
    }

    /// `peer` answered a ping sent at `sent`.
    pub fn acked(&mut self, peer: &str, sent: Instant) {
        self.rule.acked(peer, sent);
    }

    /// Until when this node holds the lease, given the answers so far (`None`: never had it).
    pub fn valid_until(&self) -> Option<Instant> {
        match self.rule.majority() {
            Majority::Alone => Some(Instant::now() + Duration::from_secs(3600)),
            Majority::Missing => None,
            Majority::Since(t) => Some(t + self.duration),
        }
    }
}

/// The lease as the rest of the node reads it; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lease {
    origin: Instant,
    until_us: Arc<AtomicU64>,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            until_us: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Lease {
    /// Publishes a new expiry.
    pub fn set(&self, until: Option<Instant>) {
        let us = until
            .map(|t| t.saturating_duration_since(self.origin).as_micros() as u64)
            .unwrap_or(0);
        self.until_us.store(us, Ordering::Release);
    }

    /// True while the lease holds.
    pub fn is_valid(&self) -> bool {
        (self.origin.elapsed().as_micros() as u64) < self.until_us.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_majority_of_fresh_answers_holds_the_lease() {
        let t0 = Instant::now();
        let mut t = LeaseTracker::new(4, true, ms(300));
        assert_eq!(t.valid_until(), None);
        t.acked("n2", t0);
        assert_eq!(t.valid_until(), None, "2 of 4 is not a majority");
        t.acked("n3", t0 + ms(50));
        // The second-freshest answer bounds the lease: n2's ping at t0.
        assert_eq!(t.valid_until(), Some(t0 + ms(300)));
        t.acked("n4", t0 + ms(100));
        assert_eq!(t.valid_until(), Some(t0 + ms(350)));
        // Older answers never move it back.
        t.acked("n4", t0);
        assert_eq!(t.valid_until(), Some(t0 + ms(350)));
    }

    #[test]
    fn a_single_node_cluster_always_holds_it() {
        assert!(LeaseTracker::new(1, true, ms(300)).valid_until().unwrap() > Instant::now());
    }

    #[test]
    fn the_shared_lease_expires() {
        let l = Lease::default();
        assert!(!l.is_valid());
        l.set(Some(Instant::now() + ms(200)));
        assert!(l.is_valid());
        l.set(Some(Instant::now() - ms(1)));
        assert!(!l.is_valid());
    }
}
