//! The gateway's collectors, registered once in the process registry. Every route of the route
//! table, every denial reason and handshake result is exported at 0 from start-up, so the 5xx
//! ratio and the per-route panels read 0 on a healthy gateway, never "No data".

use std::sync::OnceLock;

use keelson_runtime::metrics::{latency_buckets, registry};
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::route_table::{Route, ROUTES};

/// HTTP collectors.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Requests by route, method and status.
    pub requests: IntCounterVec,
    /// Latency by route.
    pub latency: HistogramVec,
    /// Requests refused by authentication or authorization, by reason.
    pub auth_denied: IntCounterVec,
    /// TLS handshakes on the API port, by result.
    pub tls_handshakes: IntCounterVec,
    /// Requests and connections refused to protect the gateway, by reason.
    pub shed: IntCounterVec,
    /// Refreshes of the served recommendation model, by result.
    pub model_refreshes: IntCounterVec,
    /// Recommendations answered from a model copy missing writes made before them.
    pub model_stale: IntCounter,
    /// The served model's version (the lowest partition version in it).
    pub model_version: IntGauge,
    /// Neighbour entries in the served model.
    pub model_entries: IntGauge,
}

static HTTP: OnceLock<HttpMetrics> = OnceLock::new();

/// The 5xx statuses the gateway answers (internal error; unavailable: no primary, no majority,
/// shed; timeout), exported at 0 for every route so that `status=~"5.."` always matches.
pub const SERVER_ERRORS: &[u16] = &[500, 503, 504];

/// The statuses exported at 0 for `route` from the start: its success and every server error.
fn known_statuses(route: &Route) -> impl Iterator<Item = u16> {
    std::iter::once(route.response.0).chain(SERVER_ERRORS.iter().copied())
}

/// The gateway's collectors.
pub fn http() -> &'static HttpMetrics {
    HTTP.get_or_init(|| {
        let m = HttpMetrics {
            requests: requests(),
            latency: latency(),
            auth_denied: labelled(
                "keelson_auth_denied_total",
                "Requests refused: no or bad credentials (401) or a missing permission (403), by reason.",
                "reason",
                &[
                    "missing_credentials",
                    "malformed_credentials",
                    "bad_key",
                    "revoked_key",
                    "bad_token",
                    "forbidden",
                ],
            ),
            tls_handshakes: labelled(
                "keelson_tls_handshakes_total",
                "TLS handshakes on the API port, by result (ok, failed, timeout).",
                "result",
                &["ok", "failed", "timeout"],
            ),
            shed: labelled(
                "keelson_http_shed_total",
                "Requests refused at once to protect the gateway (in_flight: 503; rate_limited: 429; connections: closed at accept; body_timeout: 408).",
                "reason",
                &["in_flight", "rate_limited", "connections", "body_timeout"],
            ),
            model_refreshes: labelled(
                "keelson_model_refreshes_total",
                "Refreshes of the gateway's copy of the recommendation model, by result (changed, unchanged, failed).",
                "result",
                &["changed", "unchanged", "failed"],
            ),
            model_stale: IntCounter::new(
                "keelson_model_stale_answers_total",
                "Recommendations answered from a model copy that did not yet hold every write made through this gateway before them.",
            )
            .expect("valid metric"),
            model_version: IntGauge::new(
                "keelson_model_version",
                "Version of the recommendation model this gateway serves (updates counted by its least advanced partition).",
            )
            .expect("valid metric"),
            model_entries: IntGauge::new(
                "keelson_model_neighbour_entries",
                "Neighbour entries in the recommendation model this gateway serves.",
            )
            .expect("valid metric"),
        };
        register(&m.model_refreshes);
        register(&m.model_stale);
        register(&m.model_version);
        register(&m.model_entries);
        register(&m.shed);
        register(&m.tls_handshakes);
        register(&m.auth_denied);
        register(&m.requests);
        register(&m.latency);
        m
    })
}

fn register<C: Collector + Clone + 'static>(c: &C) {
    registry()
        .register(Box::new(c.clone()))
        .expect("registered once");
}

/// A counter with one label, every value in `values` exported at 0.
fn labelled(name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    for v in values {
        c.with_label_values(&[*v]);
    }
    c
}

/// Requests by route, method and status, every route's known statuses at 0.
fn requests() -> IntCounterVec {
    let requests = IntCounterVec::new(
        Opts::new(
            "keelson_http_requests_total",
            "HTTP requests by route, method and status.",
        ),
        &["route", "method", "status"],
    )
    .expect("valid metric");
    for route in ROUTES {
        for status in known_statuses(route) {
            requests.with_label_values(&[route.path, route.method, &status.to_string()]);
        }
    }
    requests
}

/// Latency by route, every route's series present from the start.
fn latency() -> HistogramVec {
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "keelson_http_request_duration_seconds",
            "HTTP request latency by route.",
        )
        .buckets(latency_buckets()),
        &["route"],
    )
    .expect("valid metric");
    for route in ROUTES {
        latency.with_label_values(&[route.path]);
    }
    latency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_exports_its_success_and_every_server_error_from_the_start() {
        http();
        // What is exported, read before anything here could create a series by asking for it.
        let text = keelson_runtime::metrics::render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keelson_http_requests_total{"))
            .collect();
        for route in ROUTES {
            for status in known_statuses(route) {
                let want = [
                    format!("method=\"{}\"", route.method),
                    format!("route=\"{}\"", route.path),
                    format!("status=\"{status}\""),
                ];
                assert!(
                    lines
                        .iter()
                        .any(|l| want.iter().all(|w| l.contains(w.as_str()))),
                    "no {} {} {status} in {lines:#?}",
                    route.method,
                    route.path
                );
            }
            let route_label = format!("route=\"{}\"", route.path);
            assert!(
                text.lines().any(|l| {
                    l.starts_with("keelson_http_request_duration_seconds_count{")
                        && l.contains(&route_label)
                }),
                "no latency series for {}",
                route.path
            );
        }
    }
}
