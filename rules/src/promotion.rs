//! When a down primary may be replaced. The lease a primary holds lasts `lease(ft)`; the
//! consensus leader promotes a replacement only once the primary has been marked down (no
//! heartbeat answer for the failure timeout `ft`) for `promotion_delay(ft)` more. The delay is
//! longer than the lease by at least a tenth of the timeout, so a primary cut off from the
//! majority has stopped serving before anyone else starts.
//!
//! ```text
//! last answer ──ft──▶ marked down ──promotion_delay──▶ Health::Down ──▶ planner may Promote
//! last majority ping ──lease──▶ old primary stops serving          (lease < promotion_delay)
//! Promote F applied on F ──▶ F serves once takeover_done: enough nodes applied the new map (their
//!                            answers stop counting for the old primary) and gave it no support
//!                            for a lease — the old primary may have been cut off from the
//!                            leader only, still answered by the followers
//! ```

use std::time::Duration;

use crate::planner::Health;
use crate::shard_map::Placement;

/// How long answers from a majority let a primary keep serving, for failure timeout `ft`.
pub fn lease(ft: Duration) -> Duration {
    ft / 4
}

/// How long a primary must have been down before it is replaced, for failure timeout `ft`.
pub fn promotion_delay(ft: Duration) -> Duration {
    ft * 2 / 5
}

/// What the failure detector says of a node, as the planner reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Answering heartbeats.
    Up,
    /// Marked down this long ago.
    DownFor(Duration),
    /// Not heard from yet, or in a state that is neither.
    Unknown,
}

/// The planner's view of `node`: down counts only once the node's lease has surely run out.
/// The planner's own node is always up.
pub fn health(is_me: bool, seen: Seen, delay: Duration) -> Health {
    match seen {
        _ if is_me => Health::Up,
        Seen::Up => Health::Up,
        Seen::DownFor(d) if d >= delay => Health::Down,
        _ => Health::Unknown,
    }
}

/// The primary `me` replaced by promotion when the shard went from `old` to `new` (not by a
/// hand-over, which keeps the old primary as an in-sync follower after it stopped writing).
pub fn promoted_over<'a>(me: &str, old: &'a Placement, new: &Placement) -> Option<&'a str> {
    let promoted =
        new.primary == me && old.primary != me && !new.replicas().any(|n| *n == old.primary);
    promoted.then_some(old.primary.as_str())
}

/// What one node says of the support it gives the old primary, as the new primary last heard
/// it (in a heartbeat answer) or knows it (for itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// It has applied the map that made the promotion (or a newer one): from then on it gives the
    /// old primary no support the old primary counts (see `lease::counts`), until the old primary
    /// has caught up and knows it was replaced.
    pub applied: bool,
    /// Since it last gave the old primary support that counted (None: not since it started).
    pub since_support: Option<Duration>,
}

/// Whether a node promoted over an old primary may start serving: once enough of the other
/// nodes (itself included, the old primary excluded) have applied the new map and gave the old
/// primary no support for a whole lease, the old primary cannot hold a majority any more.
/// `reports` holds one per such node heard from; `nodes` counts every shard-hosting node.
///
/// The old primary needs `nodes / 2` supporters besides itself; of the `nodes - 1` others, at
/// least `nodes - nodes / 2` must be clean. A primary that died or froze was given no support
/// for longer than the promotion delay, so the first heartbeat answers after the map change
/// are enough; one cut off from the consensus leader but not from its followers keeps serving
/// until its support runs out, and the new one waits that long.
pub fn takeover_done(nodes: usize, lease: Duration, reports: &[Report]) -> bool {
    let clean = reports
        .iter()
        .filter(|r| r.applied && r.since_support.is_none_or(|d| d >= lease))
        .count();
    clean >= nodes - nodes / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_promotion_delay_exceeds_the_lease_by_a_margin_for_every_timeout() {
        // Every failure timeout the configuration accepts (100 ms ..= 60 s), to the millisecond.
        for t in 100..=60_000u64 {
            let ft = ms(t);
            assert!(promotion_delay(ft) > lease(ft), "{t} ms");
            assert!(promotion_delay(ft) - lease(ft) >= ft / 10, "{t} ms");
        }
    }

    fn placement(primary: &str, in_sync: &[&str]) -> Placement {
        Placement {
            epoch: 1,
            primary: primary.into(),
            in_sync: in_sync.iter().map(|s| s.to_string()).collect(),
            learners: vec![],
        }
    }

    #[test]
    fn a_promotion_is_told_from_a_hand_over() {
        let old = placement("n1", &["n2", "n3"]);
        assert_eq!(
            promoted_over("n2", &old, &placement("n2", &["n3"])),
            Some("n1")
        );
        assert_eq!(
            promoted_over("n2", &old, &placement("n2", &["n3", "n1"])),
            None,
            "a hand-over keeps the old primary in sync"
        );
        assert_eq!(promoted_over("n3", &old, &placement("n2", &["n3"])), None);
        assert_eq!(promoted_over("n1", &old, &old), None);
    }

    fn report(applied: bool, since_ms: Option<u64>) -> Report {
        Report {
            applied,
            since_support: since_ms.map(ms),
        }
    }

    #[test]
    fn a_takeover_needs_enough_clean_nodes() {
        let lease = ms(250);
        let clean = report(true, Some(300));
        let never = report(true, None);
        let supporting = report(true, Some(100));
        let behind = report(false, Some(900));
        // 3 nodes: the old primary needs 1 supporter, so both others must be clean.
        assert!(takeover_done(3, lease, &[clean, never]));
        assert!(!takeover_done(3, lease, &[clean, supporting]));
        assert!(!takeover_done(3, lease, &[clean, behind]));
        assert!(!takeover_done(3, lease, &[clean]), "not heard from");
        // 4 nodes: it needs 2, so 2 of the 3 others clean are enough.
        assert!(takeover_done(4, lease, &[clean, never, supporting]));
        assert!(!takeover_done(4, lease, &[clean, behind, supporting]));
        // 5 nodes: it needs 2 of 4, so 3 clean.
        assert!(!takeover_done(
            5,
            lease,
            &[clean, never, supporting, behind]
        ));
        assert!(takeover_done(5, lease, &[clean, never, clean, behind]));
    }

    #[test]
    fn down_counts_only_after_the_delay_and_never_for_the_planner_itself() {
        let d = ms(400);
        assert_eq!(health(false, Seen::DownFor(ms(399)), d), Health::Unknown);
        assert_eq!(health(false, Seen::DownFor(ms(400)), d), Health::Down);
        assert_eq!(health(false, Seen::Up, d), Health::Up);
        assert_eq!(health(false, Seen::Unknown, d), Health::Unknown);
        assert_eq!(health(true, Seen::DownFor(ms(9_999)), d), Health::Up);
    }
}
