//! The gateway's collectors, registered once in the process registry.

use std::sync::OnceLock;

use keelson_runtime::metrics::{latency_buckets, registry};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// HTTP collectors.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Requests by route, method and status.
    pub requests: IntCounterVec,
    /// Latency by route.
    pub latency: HistogramVec,
}

static HTTP: OnceLock<HttpMetrics> = OnceLock::new();

/// The gateway's collectors.
pub fn http() -> &'static HttpMetrics {
    HTTP.get_or_init(|| {
        let requests = IntCounterVec::new(
            Opts::new(
                "keelson_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "keelson_http_request_duration_seconds",
                "HTTP request latency by route.",
            )
            .buckets(latency_buckets()),
            &["route"],
        )
        .expect("valid metric");
        registry()
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry()
            .register(Box::new(latency.clone()))
            .expect("registered once");
        HttpMetrics { requests, latency }
    })
}
