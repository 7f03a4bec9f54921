//! Exponential backoff, written once: a delay that starts at `base` and doubles with every
//! failure up to `max`. Pure: callers sleep for what it returns.

use std::time::Duration;

/// Delays between attempts: `base`, `2·base`, `4·base`, … capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never longer than `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }

    /// The delay before attempt number `attempt` (1-based) of a run of failures.
    pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        base.saturating_mul(factor).min(max)
    }

    /// The delay to wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Self::delay(self.base, self.max, self.failures)
    }

    /// After a success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::new(ms(100), ms(500));
        let seen: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }

    #[test]
    fn a_long_run_of_failures_never_overflows() {
        assert_eq!(
            Backoff::delay(Duration::from_secs(1), Duration::from_secs(30), u32::MAX),
            Duration::from_secs(30)
        );
        assert_eq!(Backoff::delay(ms(50), ms(2000), 1), ms(50));
        assert_eq!(Backoff::delay(ms(50), ms(2000), 0), ms(50));
    }
}
