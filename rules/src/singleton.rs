//! Whether this node runs the cluster's singletons (the MQTT bridge session): it takes them only
//! as consensus leader holding its lease, and keeps them through a lease lapse shorter than a
//! grace period, so a node under load whose heartbeat answers come back a little late does not
//! drop and retake the session over and over (each time the broker redelivers everything not yet
//! acknowledged, which adds load, which delays heartbeats: a loop that never settles). Losing
//! leadership ends the hold at once. The grace is safe because what a singleton does is
//! idempotent and its external resource enforces one holder (the broker hands the session to
//! the newest connection); it only bounds how long a cut-off node may keep trying.

/// The hold, fed what the node observes on its own clock `T`.
#[derive(Debug, Clone)]
pub struct Singleton<T> {
    grace: std::time::Duration,
    holding: bool,
    /// Since when the lease has been missing while holding.
    lapsed_since: Option<T>,
}

impl<T> Singleton<T>
where
    T: Copy + Ord + std::ops::Add<std::time::Duration, Output = T>,
{
    /// Not holding; keeps holding through lease lapses shorter than `grace`.
    pub fn new(grace: std::time::Duration) -> Self {
        Self {
            grace,
            holding: false,
            lapsed_since: None,
        }
    }

    /// Whether to hold the singletons at `now`, given leadership and the lease then.
    pub fn observe(&mut self, leader: bool, lease: bool, now: T) -> bool {
        self.holding = match (leader, lease, self.holding) {
            (false, _, _) => false,
            (true, true, _) => true,
            (true, false, false) => false,
            (true, false, true) => {
                let since = *self.lapsed_since.get_or_insert(now);
                now < since + self.grace
            }
        };
        if lease || !self.holding {
            self.lapsed_since = None;
        }
        self.holding
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);
    impl std::ops::Add<Duration> for Ms {
        type Output = Ms;
        fn add(self, d: Duration) -> Ms {
            Ms(self.0 + d.as_millis() as u64)
        }
    }

    fn rule() -> Singleton<Ms> {
        Singleton::new(Duration::from_millis(1000))
    }

    #[test]
    fn it_is_taken_only_by_a_leader_holding_its_lease() {
        let mut s = rule();
        assert!(!s.observe(false, true, Ms(0)));
        assert!(!s.observe(true, false, Ms(100)), "no lease: not taken");
        assert!(s.observe(true, true, Ms(200)));
    }

    #[test]
    fn a_lapse_shorter_than_the_grace_keeps_it() {
        let mut s = rule();
        assert!(s.observe(true, true, Ms(0)));
        assert!(s.observe(true, false, Ms(100)));
        assert!(s.observe(true, false, Ms(1099)));
        assert!(s.observe(true, true, Ms(1100)), "lease back");
        // A new lapse starts a new grace.
        assert!(s.observe(true, false, Ms(1200)));
        assert!(s.observe(true, false, Ms(2199)));
    }

    #[test]
    fn a_lapse_as_long_as_the_grace_ends_it_until_the_lease_returns() {
        let mut s = rule();
        assert!(s.observe(true, true, Ms(0)));
        assert!(s.observe(true, false, Ms(100)));
        assert!(!s.observe(true, false, Ms(1100)));
        assert!(
            !s.observe(true, false, Ms(1150)),
            "not retaken without a lease"
        );
        assert!(s.observe(true, true, Ms(1200)));
    }

    #[test]
    fn losing_leadership_ends_it_at_once() {
        let mut s = rule();
        assert!(s.observe(true, true, Ms(0)));
        assert!(!s.observe(false, true, Ms(10)));
        assert!(s.observe(true, true, Ms(20)));
        assert!(s.observe(true, false, Ms(30)));
        assert!(!s.observe(false, false, Ms(40)));
        assert!(
            !s.observe(true, false, Ms(50)),
            "leader again but without a lease: the old grace does not carry over"
        );
    }
}
