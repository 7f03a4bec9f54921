//! The HTTP answer built from a request's outcome: status, JSON body, and every header the
//! gateway sets (`x-request-id`, `x-keelson-node`, `location`, `retry-after`, `allow`,
//! `www-authenticate`, `idempotent-replayed`, the RateLimit fields).

use std::sync::atomic::Ordering;

use warp::http::{HeaderMap, HeaderValue, Response, StatusCode};
use warp::hyper::body::Bytes;

use crate::handler::{Outcome, Rq};
use crate::limits::Standing;

/// What is answered, success or error alike.
pub(super) struct Reply {
    /// HTTP status.
    pub(super) status: StatusCode,
    /// JSON body (empty for a success without one).
    pub(super) body: String,
    /// The node that answered (the gateway itself when no node did).
    pub(super) node: String,
    /// `location` of a created entity.
    location: Option<String>,
    /// Seconds the client should wait before retrying.
    retry_after: Option<u64>,
}

impl Reply {
    /// The reply for `outcome`; `gateway` names the node when the error came from no node.
    pub(super) fn new(outcome: Outcome, gateway: &str) -> Self {
        match outcome {
            Ok(o) => Reply {
                status: o.status,
                body: o.body,
                node: o.node,
                location: o.location,
                retry_after: None,
            },
            Err(e) => Reply {
                status: e.status,
                body: e.body(),
                node: e.node.clone().unwrap_or_else(|| gateway.to_string()),
                location: None,
                retry_after: e.retry_after,
            },
        }
    }

    /// The response, with `allow` set when the path allows other methods.
    pub(super) fn into_response(self, rid: &Rq, allow: Option<String>) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::from(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&rid.id) {
            h.insert("x-request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.node) {
            h.insert("x-keelson-node", v);
        }
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert("location", l);
        }
        if let Some(s) = self.retry_after {
            h.insert("retry-after", HeaderValue::from(s));
        }
        if let Some(a) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            h.insert("allow", a);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        if rid.replayed.load(Ordering::Acquire) {
            h.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        if let Some(st) = rid.rate {
            rate_limit_headers(h, st);
        }
        resp
    }
}

/// IETF RateLimit header fields (draft 7): the policy, then where this principal stands.
fn rate_limit_headers(h: &mut HeaderMap, st: Standing) {
    let window = st.limit.burst.div_ceil(st.limit.per_second.max(1));
    if let Ok(v) = HeaderValue::from_str(&format!("{};w={window}", st.limit.burst)) {
        h.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "limit={}, remaining={}, reset={}",
        st.limit.burst, st.remaining, st.reset_secs
    )) {
        h.insert("ratelimit", v);
    }
}
