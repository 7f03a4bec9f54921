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
    /// Requests refused by authentication or authorization, by reason.
    pub auth_denied: IntCounterVec,
    /// TLS handshakes on the API port, by result.
    pub tls_handshakes: IntCounterVec,
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
        let auth_denied = IntCounterVec::new(
            Opts::new(
                "keelson_auth_denied_total",
                "Requests refused: no or bad credentials (401) or a missing permission (403), by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in [
            "missing_credentials",
            "malformed_credentials",
            "bad_key",
            "revoked_key",
            "bad_token",
            "forbidden",
        ] {
            auth_denied.with_label_values(&[reason]);
        }
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "keelson_tls_handshakes_total",
                "TLS handshakes on the API port, by result (ok, failed, timeout).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["ok", "failed", "timeout"] {
            tls_handshakes.with_label_values(&[r]);
        }
        registry()
            .register(Box::new(tls_handshakes.clone()))
            .expect("registered once");
        registry()
            .register(Box::new(auth_denied.clone()))
            .expect("registered once");
        registry()
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry()
            .register(Box::new(latency.clone()))
            .expect("registered once");
        HttpMetrics {
            requests,
            latency,
            auth_denied,
            tls_handshakes,
        }
    })
}
