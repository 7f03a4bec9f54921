//! The supervision policy: how soon a failed entity restarts, and when it has failed too often and
//! is quarantined instead. Pure: the shard supervisor feeds it failures and acts on its decisions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart limits and delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window` before quarantine.
    pub max_restarts: u32,
    /// The sliding window the budget counts over.
    pub window: Duration,
    /// Delay before the first restart; doubles with each failure in the window.
    pub backoff_base: Duration,
    /// Longest delay before a restart.
    pub backoff_max: Duration,
    /// How long a quarantined entity refuses requests.
    pub quarantine: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(10),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            quarantine: Duration::from_secs(30),
        }
    }
}

/// What to do about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay.
    Restart {
        /// Backoff before the restart.
        after: Duration,
        /// Which restart within the window this is (1-based).
        attempt: u32,
    },
    /// The budget is spent: refuse requests until `until`.
    Quarantine {
        /// End of the cooldown.
        until: Instant,
    },
}

/// Failure history of one entity.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> RestartDecision {
        while let Some(first) = self.failures.front() {
            if now.saturating_duration_since(*first) >= policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let attempt = self.failures.len() as u32;
        if attempt > policy.max_restarts {
            self.failures.clear();
            return RestartDecision::Quarantine {
                until: now + policy.quarantine,
            };
        }
        let after =
            crate::backoff::Backoff::delay(policy.backoff_base, policy.backoff_max, attempt);
        RestartDecision::Restart { after, attempt }
    }

    /// True when no failure falls inside the window any more, so the tracker can be dropped.
    pub fn is_idle(&self, policy: &RestartPolicy, now: Instant) -> bool {
        self.failures
            .back()
            .is_none_or(|last| now.saturating_duration_since(*last) >= policy.window)
    }
}

#[cfg(test)]
#[path = "restart_budget_test.rs"]
mod tests;
