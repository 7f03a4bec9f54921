//! What one client and the gateway as a whole may do at once.
//!
//! ```text
//! request ─▶ in-flight permit? no ─▶ 503 overloaded (Retry-After: 1), at once
//!         ─▶ authenticated ─▶ principal's rate (governor, per role) ─no─▶ 429 (Retry-After,
//!            RateLimit-*) ─▶ handler
//! ```
//!
//! Rates are GCRA buckets per principal (key name or token subject), with one quota per role
//! from `[limits.rate]`. The in-flight cap is a semaphore that is never waited on: past it the
//! request is refused, so overload turns into fast 503s instead of a queue that misses every
//! deadline.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use keelson_runtime::config::{Limits, RateLimit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;

use crate::error::ApiError;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// A principal's standing after a request was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The role's quota.
    pub limit: RateLimit,
    /// Requests left in the burst.
    pub remaining: u32,
    /// Seconds until the burst is full again (at most), or until the next request is allowed.
    pub reset_secs: u64,
}

/// The gateway's limits, shared by every request.
pub struct Gate {
    rates: HashMap<&'static str, (RateLimit, Keyed)>,
    in_flight: Arc<Semaphore>,
    clock: DefaultClock,
}

impl Gate {
    /// From validated `[limits]`.
    pub fn new(limits: &Limits) -> Self {
        let rates = limits
            .rates
            .iter()
            .filter_map(|(role, l)| {
                let l = (*l)?;
                let per_second = NonZeroU32::new(l.per_second)?;
                let burst = NonZeroU32::new(l.burst).unwrap_or(per_second);
                let quota = Quota::per_second(per_second).allow_burst(burst);
                Some((
                    *role,
                    (
                        l,
                        RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                    ),
                ))
            })
            .collect();
        Self {
            rates,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            clock: DefaultClock::default(),
        }
    }

    /// A permit to work on one request, or a 503 at once.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            crate::metrics::http()
                .shed
                .with_label_values(&["in_flight"])
                .inc();
            ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the gateway is at its limit of requests in progress; retry shortly",
                )
            }
        })
    }

    /// Counts one request of `principal` (of `role`): its standing, or a 429 with when to retry.
    /// `None` when the role is unlimited.
    pub fn count(
        &self,
        role: &str,
        principal: &str,
    ) -> Option<Result<Standing, (Standing, ApiError)>> {
        let (limit, limiter) = self.rates.get(role)?;
        let full_in = |remaining: u32| {
            let missing = limit.burst.saturating_sub(remaining);
            u64::from(missing).div_ceil(u64::from(limit.per_second.max(1)))
        };
        Some(match limiter.check_key(&principal.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Standing {
                    limit: *limit,
                    remaining,
                    reset_secs: full_in(remaining),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                crate::metrics::http()
                    .shed
                    .with_label_values(&["rate_limited"])
                    .inc();
                let standing = Standing {
                    limit: *limit,
                    remaining: 0,
                    reset_secs: secs.max(1),
                };
                let err = ApiError {
                    retry_after: Some(secs.max(1)),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "this principal may make {} requests per second (bursts of {}) as role `{role}`; retry in {} ms",
                            limit.per_second,
                            limit.burst,
                            wait.as_millis().max(1)
                        ),
                    )
                };
                Err((standing, err))
            }
        })
    }

    /// Forgets principals whose buckets are full again: keeps the per-principal state bounded by
    /// the principals active in the last seconds.
    pub fn forget_idle(&self) {
        for (_, limiter) in self.rates.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Spawns the periodic [`Gate::forget_idle`].
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gate = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                gate.forget_idle();
            }
        })
    }
}

/// Raises this process's open-file limit to its hard limit (each connection is a file); returns
/// the soft limit now in force.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_runtime::config::{RawLimits, RawRate};

    fn gate(customer: u32, in_flight: usize) -> Gate {
        let raw = RawLimits {
            rate: RawRate {
                customer,
                burst_secs: 1,
                ..RawRate::default()
            },
            max_in_flight: in_flight,
            ..RawLimits::default()
        };
        let mut problems = Vec::new();
        let l = keelson_runtime::config::validate_limits(&raw, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        Gate::new(&l)
    }

    #[test]
    fn a_burst_past_the_quota_is_refused_per_principal_with_when_to_retry() {
        let g = gate(5, 10);
        for i in 0..5 {
            let s = g.count("customer", "alice").unwrap().unwrap();
            assert_eq!(s.remaining, 4 - i);
        }
        let (s, e) = g.count("customer", "alice").unwrap().unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(s.remaining, 0);
        assert!(
            g.count("customer", "bob").unwrap().is_ok(),
            "another principal is unaffected"
        );
        assert!(
            g.count("nobody", "alice").is_none(),
            "unknown roles are not rate limited here"
        );
    }

    #[test]
    fn past_the_in_flight_cap_requests_are_refused_at_once() {
        let g = gate(5, 2);
        let a = g.admit().unwrap();
        let _b = g.admit().unwrap();
        let e = g.admit().unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        drop(a);
        assert!(g.admit().is_ok());
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        assert!(raise_open_files() >= 1024);
    }
}
