//! `[limits]`: what bounds one client and the gateway as a whole. Rates are per principal (an API
//! key, a token's subject, a device) and per role; the rest caps the gateway's work in progress
//! and its connections so overload is refused fast instead of queued.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[limits.rate]`: requests per second each principal of a role may make, and the burst it may
/// spend at once. 0 means unlimited for that role.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Operators of the whole cluster.
    #[serde(default = "default_rate_admin")]
    pub admin: u32,
    /// SREs and tooling (chaos runs, dashboards).
    #[serde(default = "default_rate_operator")]
    pub operator: u32,
    /// Support agents working on customers.
    #[serde(default = "default_rate_agent")]
    pub agent: u32,
    /// Read-only users.
    #[serde(default = "default_rate_viewer")]
    pub viewer: u32,
    /// A customer reading its own data.
    #[serde(default = "default_rate_customer")]
    pub customer: u32,
    /// The burst, as seconds of the rate: a principal may send `rate × burst_secs` requests at
    /// once before it is paced.
    #[serde(default = "default_burst_secs")]
    pub burst_secs: u32,
}

impl Default for RawRate {
    fn default() -> Self {
        Self {
            admin: default_rate_admin(),
            operator: default_rate_operator(),
            agent: default_rate_agent(),
            viewer: default_rate_viewer(),
            customer: default_rate_customer(),
            burst_secs: default_burst_secs(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Per-principal rates.
    #[serde(default)]
    pub rate: RawRate,
    /// Requests the gateway works on at once; past it a request is answered 503 at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Open client connections the gateway keeps; past it new connections are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest wait for a request's headers; also how long an idle keep-alive connection is
    /// kept open waiting for its next request.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Longest wait for a request's body once its headers are in.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            rate: RawRate::default(),
            max_in_flight: default_max_in_flight(),
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
        }
    }
}

// Service roles get room for bulk jobs and benchmarks from one key; people and customers get
// what an interactive client needs. A burst of 2 s absorbs a page load or a retry storm.
fn default_rate_admin() -> u32 {
    100_000
}
fn default_rate_operator() -> u32 {
    100_000
}
fn default_rate_agent() -> u32 {
    1_000
}
fn default_rate_viewer() -> u32 {
    200
}
fn default_rate_customer() -> u32 {
    20
}
fn default_burst_secs() -> u32 {
    2
}
// A fraction of a second of work at the gateway's full speed (about 30,000 requests/s on two
// cores): enough that a burst of 10,000 connections is mostly served, few enough that every
// request admitted still meets its deadline.
fn default_max_in_flight() -> usize {
    8_192
}
fn default_max_connections() -> usize {
    20_000
}
// envoy's and hyper's usual defaults for slow clients are in this range.
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}

/// How long and how many idempotency keys an entity remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A key older than this is forgotten.
    pub ttl_ms: u64,
    /// At most this many keys are kept, the oldest dropped first.
    pub max_keys: usize,
}

/// What bounds one entity. The same on every node (it comes from the cluster configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityLimits {
    /// Largest encoded state an entity may persist; a write past it is refused.
    pub max_state_bytes: usize,
    /// How long and how many idempotency keys each entity remembers.
    pub keys: Retention,
}

impl Default for EntityLimits {
    fn default() -> Self {
        Self {
            max_state_bytes: 1024 * 1024,
            keys: Retention {
                ttl_ms: 24 * 3600 * 1000,
                max_keys: 32,
            },
        }
    }
}

/// One role's rate: `per_second` sustained, `burst` at once; `None` when unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests that may be sent at once.
    pub burst: u32,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Rates by role name (`admin`, `operator`, `agent`, `viewer`, `customer`).
    pub rates: Vec<(&'static str, Option<RateLimit>)>,
    /// Requests in progress at once.
    pub max_in_flight: usize,
    /// Open connections.
    pub max_connections: usize,
    /// Header-read deadline.
    pub header_timeout: Duration,
    /// Body-read deadline.
    pub body_timeout: Duration,
}

impl Limits {
    /// The rate of `role`, `None` when unlimited or unknown.
    pub fn rate(&self, role: &str) -> Option<RateLimit> {
        self.rates
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, l)| *l)
    }
}

impl Default for Limits {
    fn default() -> Self {
        validate(&RawLimits::default(), &mut Vec::new())
    }
}

fn check_range(problems: &mut Vec<String>, field: &str, value: u64, min: u64, max: u64) {
    if !(min..=max).contains(&value) {
        problems.push(format!("limits.{field}: {value} is outside {min}..={max}"));
    }
}

/// Checks `[limits]`, reporting each problem with its field.
pub fn validate(raw: &RawLimits, problems: &mut Vec<String>) -> Limits {
    let r = &raw.rate;
    check_range(problems, "rate.burst_secs", r.burst_secs.into(), 1, 60);
    let rates = [
        ("admin", r.admin),
        ("operator", r.operator),
        ("agent", r.agent),
        ("viewer", r.viewer),
        ("customer", r.customer),
    ]
    .into_iter()
    .map(|(role, per_second)| {
        check_range(
            problems,
            &format!("rate.{role}"),
            per_second.into(),
            0,
            1_000_000,
        );
        let limit = (per_second > 0).then(|| RateLimit {
            per_second,
            burst: per_second.saturating_mul(r.burst_secs.max(1)),
        });
        (role, limit)
    })
    .collect();
    check_range(
        problems,
        "max_in_flight",
        raw.max_in_flight as u64,
        1,
        1_000_000,
    );
    check_range(
        problems,
        "max_connections",
        raw.max_connections as u64,
        16,
        1_000_000,
    );
    for (field, v) in [
        ("header_timeout_ms", raw.header_timeout_ms),
        ("body_timeout_ms", raw.body_timeout_ms),
    ] {
        check_range(problems, field, v, 100, 3_600_000);
    }
    Limits {
        rates,
        max_in_flight: raw.max_in_flight,
        max_connections: raw.max_connections,
        header_timeout: Duration::from_millis(raw.header_timeout_ms),
        body_timeout: Duration::from_millis(raw.body_timeout_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rates_scale_the_burst() {
        let mut problems = Vec::new();
        let l = validate(&RawLimits::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            l.rate("customer"),
            Some(RateLimit {
                per_second: 20,
                burst: 40
            })
        );
        assert_eq!(l.rate("nobody"), None);
    }

    #[test]
    fn zero_is_unlimited_and_out_of_range_values_name_their_field() {
        let mut raw = RawLimits::default();
        raw.rate.viewer = 0;
        raw.rate.burst_secs = 0;
        raw.max_in_flight = 0;
        raw.header_timeout_ms = 5;
        let mut problems = Vec::new();
        let l = validate(&raw, &mut problems);
        assert_eq!(l.rate("viewer"), None);
        assert!(problems
            .iter()
            .any(|p| p.starts_with("limits.rate.burst_secs")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("limits.max_in_flight")));
        assert!(problems
            .iter()
            .any(|p| p.starts_with("limits.header_timeout_ms")));
    }
}
