//! Gray-failure detection: a node that answers, but far slower or with far more errors than its
//! peers, is marked degraded so callers route around it where they have a choice (reads go to
//! another in-sync copy). Pure: fed one observation per node per period, returns the verdicts.
//!
//! ```text
//! per period: (node, latency EWMA, requests, errors) ──▶ SlowNodeDetector ──▶ degraded set
//!   degraded when latency ≥ 3 × the median of the others and ≥ 10 ms, or errors ≥ 20% of ≥ 10
//!   requests; healthy again after 3 periods in a row under 1.5 × that median with < 5% errors
//! ```

use std::collections::{BTreeMap, BTreeSet};

/// Latency at least this many times the others' median…
const SLOW_FACTOR: f64 = 3.0;
/// …and at least this slow (µs) before a node counts as slow: on an idle cluster tiny
/// differences mean nothing.
const SLOW_FLOOR_US: f64 = 10_000.0;
/// Error ratio that marks a node degraded.
const ERROR_RATIO: f64 = 0.2;
/// Requests needed in a period before its error ratio counts.
const MIN_REQUESTS: u64 = 10;
/// A degraded node must look healthy this many periods in a row to be cleared.
const CLEAR_AFTER: u32 = 3;

/// One node in one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSample {
    /// Latency EWMA, µs (0 when nothing was sent to it recently).
    pub latency_us: f64,
    /// Requests completed in the period.
    pub requests: u64,
    /// Of those, failed (timeouts, unavailable, lost connections).
    pub errors: u64,
}

/// Decides which nodes are degraded.
#[derive(Debug, Default)]
pub struct SlowNodeDetector {
    degraded: BTreeMap<String, u32>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl SlowNodeDetector {
    /// Feeds one period; returns the degraded nodes after it.
    pub fn observe(&mut self, samples: &BTreeMap<String, NodeSample>) -> BTreeSet<String> {
        for (name, s) in samples {
            let others = median(
                samples
                    .iter()
                    .filter(|(n, o)| *n != name && o.latency_us > 0.0)
                    .map(|(_, o)| o.latency_us)
                    .collect(),
            );
            let error_ratio = if s.requests >= MIN_REQUESTS {
                s.errors as f64 / s.requests as f64
            } else {
                0.0
            };
            let slow = others
                .is_some_and(|m| s.latency_us >= SLOW_FLOOR_US && s.latency_us >= SLOW_FACTOR * m);
            if slow || error_ratio >= ERROR_RATIO {
                if !self.degraded.contains_key(name) {
                    tracing::warn!(node = %name, latency_ms = s.latency_us / 1000.0, error_ratio, "node degraded: far slower or failing more than its peers");
                }
                self.degraded.insert(name.clone(), 0);
                continue;
            }
            if let Some(healthy_for) = self.degraded.get_mut(name) {
                let recovered =
                    others.is_none_or(|m| s.latency_us < 1.5 * m.max(1.0)) && error_ratio < 0.05;
                *healthy_for = if recovered { *healthy_for + 1 } else { 0 };
                if *healthy_for >= CLEAR_AFTER {
                    tracing::info!(node = %name, "node no longer degraded");
                    self.degraded.remove(name);
                }
            }
        }
        self.degraded.retain(|n, _| samples.contains_key(n));
        self.degraded.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency_ms: f64, requests: u64, errors: u64) -> NodeSample {
        NodeSample {
            latency_us: latency_ms * 1000.0,
            requests,
            errors,
        }
    }

    fn round(d: &mut SlowNodeDetector, n3: NodeSample) -> BTreeSet<String> {
        let samples = BTreeMap::from([
            ("n1".to_string(), sample(2.0, 100, 0)),
            ("n2".to_string(), sample(2.5, 100, 0)),
            ("n3".to_string(), n3),
        ]);
        d.observe(&samples)
    }

    #[test]
    fn a_node_far_slower_than_its_peers_is_degraded_until_it_recovers_for_three_periods() {
        let mut d = SlowNodeDetector::default();
        assert!(round(&mut d, sample(3.0, 100, 0)).is_empty());
        assert_eq!(
            round(&mut d, sample(40.0, 100, 0)),
            BTreeSet::from(["n3".to_string()])
        );
        // Better but not yet good enough, then good for three periods.
        assert!(round(&mut d, sample(5.0, 100, 0)).contains("n3"));
        assert!(round(&mut d, sample(2.0, 100, 0)).contains("n3"));
        assert!(round(&mut d, sample(2.0, 100, 0)).contains("n3"));
        assert!(round(&mut d, sample(2.0, 100, 0)).is_empty());
    }

    #[test]
    fn small_absolute_differences_and_few_requests_are_not_degradation() {
        let mut d = SlowNodeDetector::default();
        // 4x slower but only 8 ms: an idle cluster's noise.
        assert!(round(&mut d, sample(8.0, 100, 0)).is_empty());
        // All errors, but only 3 requests.
        assert!(round(&mut d, sample(2.0, 3, 3)).is_empty());
    }

    #[test]
    fn a_failing_node_is_degraded_by_its_error_ratio() {
        let mut d = SlowNodeDetector::default();
        assert!(round(&mut d, sample(2.0, 50, 20)).contains("n3"));
    }

    #[test]
    fn a_node_that_leaves_the_samples_is_forgotten() {
        let mut d = SlowNodeDetector::default();
        round(&mut d, sample(50.0, 100, 0));
        let only_two = BTreeMap::from([
            ("n1".to_string(), sample(2.0, 100, 0)),
            ("n2".to_string(), sample(2.0, 100, 0)),
        ]);
        assert!(d.observe(&only_two).is_empty());
    }
}
