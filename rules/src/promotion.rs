//! When a down primary may be replaced. The lease a primary holds lasts `lease(ft)`; the
//! consensus leader promotes a replacement only once the primary has been marked down (no
//! heartbeat answer for the failure timeout `ft`) for `promotion_delay(ft)` more. The delay is
//! longer than the lease by at least a tenth of the timeout, so a primary cut off from the
//! majority has stopped serving before anyone else starts.
//!
//! ```text
//! last answer ──ft──▶ marked down ──promotion_delay──▶ Health::Down ──▶ planner may Promote
//! last majority ping ──lease──▶ old primary stops serving          (lease < promotion_delay)
//! ```

use std::time::Duration;

use crate::planner::Health;

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
