//! The bounds every device sample is held to, whichever way it arrives (MQTT through the bridge's
//! edge, HTTP through the gateway, and again in the device entity itself): when it may have been
//! taken, and how far its sequence number may jump. Pure; the caller passes the clock.

use serde::{Deserialize, Serialize};

use crate::validate::{invalid, DomainError};

/// Largest sequence number accepted: 2^53, the largest integer every JSON reader holds exactly.
pub const MAX_SEQ: u64 = 1 << 53;

/// Time and sequence bounds of device samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleLimits {
    /// A sample taken later than this after now is refused (device clocks run fast).
    pub max_future_ms: u64,
    /// A sample taken earlier than this before now is refused (devices buffer while offline).
    pub max_past_ms: u64,
    /// A sequence number more than this above the highest accepted is refused, so one corrupt
    /// or hostile number cannot make every later message look like an old redelivery.
    pub max_seq_jump: u64,
}

impl Default for SampleLimits {
    fn default() -> Self {
        Self {
            max_future_ms: 60 * 60 * 1000,
            max_past_ms: 30 * 24 * 60 * 60 * 1000,
            max_seq_jump: 1_000_000,
        }
    }
}

impl SampleLimits {
    /// Whether a sample taken at `at_ms` (field `field`) may be recorded at `now_ms`.
    pub fn check_time(&self, field: &str, at_ms: u64, now_ms: u64) -> Result<(), DomainError> {
        if at_ms > now_ms.saturating_add(self.max_future_ms) {
            return Err(invalid(
                field,
                format!(
                    "{at_ms} is {} ms ahead of now ({now_ms}); at most {} ms ahead is accepted",
                    at_ms - now_ms,
                    self.max_future_ms
                ),
            ));
        }
        if at_ms < now_ms.saturating_sub(self.max_past_ms) {
            return Err(invalid(
                field,
                format!(
                    "{at_ms} is {} ms before now ({now_ms}); at most {} ms back is accepted",
                    now_ms - at_ms,
                    self.max_past_ms
                ),
            ));
        }
        Ok(())
    }

    /// Whether `seq` may follow `highest` (the highest accepted so far, if any).
    pub fn check_seq(&self, seq: u64, highest: Option<u64>) -> Result<(), DomainError> {
        if seq > MAX_SEQ {
            return Err(invalid("seq", format!("{seq} is above {MAX_SEQ}")));
        }
        if let Some(h) = highest {
            if seq > h.saturating_add(self.max_seq_jump) {
                return Err(invalid(
                    "seq",
                    format!(
                        "{seq} jumps {} past the highest accepted ({h}); at most {} is accepted",
                        seq - h,
                        self.max_seq_jump
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the bounds themselves (from configuration).
    pub fn validate(&self, field: &str) -> Result<(), DomainError> {
        if self.max_future_ms == 0 || self.max_past_ms == 0 || self.max_seq_jump == 0 {
            return Err(invalid(field, "every bound must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn times_outside_the_window_are_refused_naming_the_field() {
        let l = SampleLimits::default();
        assert!(l.check_time("ts", NOW, NOW).is_ok());
        assert!(l.check_time("ts", NOW + l.max_future_ms, NOW).is_ok());
        let e = l
            .check_time("ts", NOW + l.max_future_ms + 1, NOW)
            .unwrap_err();
        assert!(e.to_string().contains("ts"), "{e}");
        assert!(l.check_time("ts", u64::MAX, NOW).is_err());
        assert!(l.check_time("at_ms", 0, NOW).is_err());
        assert!(l.check_time("at_ms", NOW - l.max_past_ms, NOW).is_ok());
        // At the edges of the clock itself nothing overflows.
        assert!(l.check_time("ts", u64::MAX, u64::MAX).is_ok());
        assert!(l.check_time("ts", 0, 0).is_ok());
    }

    #[test]
    fn sequence_numbers_may_not_jump_or_reach_the_edge_of_their_type() {
        let l = SampleLimits::default();
        assert!(l.check_seq(1, None).is_ok());
        assert!(l.check_seq(MAX_SEQ, None).is_ok());
        assert!(l.check_seq(MAX_SEQ + 1, None).is_err());
        assert!(l.check_seq(u64::MAX, Some(5)).is_err());
        assert!(
            l.check_seq(0, None).is_ok(),
            "HTTP samples are numbered from 0"
        );
        assert!(l.check_seq(5 + l.max_seq_jump, Some(5)).is_ok());
        let e = l.check_seq(6 + l.max_seq_jump, Some(5)).unwrap_err();
        assert!(e.to_string().contains("seq"), "{e}");
        // Going back is the duplicate window's business, not this check's.
        assert!(l.check_seq(1, Some(MAX_SEQ)).is_ok());
    }
}
