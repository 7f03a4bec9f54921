//! `Idempotency-Key`: binding a client's key to the request it was first sent with.
//!
//! ```text
//! header ─▶ parse (400 if malformed) ─▶ scope to the principal ─▶ fingerprint(method, route,
//!   path parameters, body) ─▶ recently seen here with another fingerprint? 422
//!   ─▶ same key in flight here? 409 ─▶ entity: same fingerprint replays, another one 422
//! ```
//!
//! The entity that a keyed write changes keeps the durable record (key, fingerprint, small reply),
//! so a retry is answered once even across a failover. The gateway's own memory adds what one
//! entity cannot see: a key reused on another route or entity, and a key whose first request is
//! still running.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keelson_runtime::IdempotencyKey;
use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, StatusCode};

use crate::error::ApiError;

/// Longest key accepted, in bytes (the IETF draft leaves it open; Stripe allows 255).
pub const MAX_KEY_LEN: usize = 255;

/// The client's key, if it sent one; 400 when the header is present but unusable.
pub fn parse(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("header `Idempotency-Key`: {why}"),
        )
    };
    if values.next().is_some() {
        return Err(bad("sent more than once"));
    }
    let s = v
        .to_str()
        .map_err(|_| bad("must be visible ASCII characters"))?;
    if s.is_empty() || s.len() > MAX_KEY_LEN {
        return Err(bad(&format!("must be 1 to {MAX_KEY_LEN} bytes long")));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be visible ASCII characters, without spaces"));
    }
    Ok(Some(s.to_string()))
}

/// The body as compared: canonical JSON (keys sorted, no whitespace) when it is JSON, so the same
/// request re-encoded by a retrying client still matches; the raw bytes otherwise.
fn canonical_body(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.to_string().into_bytes(),
        Err(_) => body.to_vec(),
    }
}

/// Binds `key`, chosen by `principal`, to this request.
pub fn bind(
    principal: &str,
    key: &str,
    method: &str,
    route: &str,
    params: &[(&str, &str)],
    body: &[u8],
) -> IdempotencyKey {
    let scoped = Sha256::new()
        .chain_update(principal.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut h = Sha256::new()
        .chain_update(method.as_bytes())
        .chain_update([0])
        .chain_update(route.as_bytes());
    for (name, value) in params {
        h.update([0]);
        h.update(name.as_bytes());
        h.update([b'=']);
        h.update(value.as_bytes());
    }
    h.update([0]);
    h.update(canonical_body(body));
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&h.finalize()[..16]);
    IdempotencyKey {
        key: hex(&scoped[..16]),
        fingerprint,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An id for an entity created by a keyed request that names none: the same key makes the same
/// id, so a retried create reaches the entity that remembers the key.
pub fn derived_id(prefix: &str, key: &IdempotencyKey) -> String {
    format!("{prefix}-{}", &key.key[..16])
}

/// What the gateway remembers of recent keys.
pub struct Keys {
    inner: Mutex<Inner>,
    ttl: Duration,
    cap: usize,
}

#[derive(Default)]
struct Inner {
    in_flight: HashSet<String>,
    seen: HashMap<String, ([u8; 16], Instant)>,
    order: VecDeque<String>,
}

/// Why a keyed request may not go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key was used here for another request.
    Reused,
    /// The key's first request is still running.
    InFlight,
}

impl Refusal {
    /// The API error.
    pub fn error(&self) -> ApiError {
        match self {
            Refusal::Reused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "header `Idempotency-Key`: this key was already used for a different request; nothing was applied (use a new key for a new request)",
            ),
            Refusal::InFlight => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_flight",
                    "header `Idempotency-Key`: a request with this key is still being processed; retry it once that one has been answered",
                )
            },
        }
    }
}

/// Marks a key in flight until dropped.
pub struct InFlight {
    keys: Arc<Keys>,
    key: IdempotencyKey,
}

impl InFlight {
    /// The request was answered with success: remember its fingerprint.
    pub fn succeeded(self) {
        let mut g = self.keys.inner.lock().expect("idempotency lock");
        let now = Instant::now();
        if g.seen
            .insert(self.key.key.clone(), (self.key.fingerprint, now))
            .is_none()
        {
            g.order.push_back(self.key.key.clone());
        }
        while g.order.len() > self.keys.cap {
            if let Some(old) = g.order.pop_front() {
                g.seen.remove(&old);
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut g) = self.keys.inner.lock() {
            g.in_flight.remove(&self.key.key);
        }
    }
}

impl Keys {
    /// Remembers up to `cap` keys for `ttl`.
    pub fn new(ttl: Duration, cap: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            cap,
        })
    }

    /// Lets the keyed request go ahead (marking it in flight) or says why not.
    pub fn begin(self: &Arc<Self>, key: &IdempotencyKey) -> Result<InFlight, Refusal> {
        let mut g = self.inner.lock().expect("idempotency lock");
        let now = Instant::now();
        // Forget the expired, oldest first.
        while let Some(old) = g.order.front() {
            match g.seen.get(old) {
                Some((_, at)) if now.duration_since(*at) < self.ttl => break,
                _ => {
                    let old = g.order.pop_front().expect("front exists");
                    g.seen.remove(&old);
                }
            }
        }
        if let Some((f, _)) = g.seen.get(&key.key) {
            if *f != key.fingerprint {
                return Err(Refusal::Reused);
            }
        }
        if !g.in_flight.insert(key.key.clone()) {
            return Err(Refusal::InFlight);
        }
        Ok(InFlight {
            keys: self.clone(),
            key: key.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(key: &str, body: &[u8]) -> IdempotencyKey {
        bind(
            "alice",
            key,
            "PATCH",
            "/v1/customers/{id}",
            &[("id", "c1")],
            body,
        )
    }

    #[test]
    fn the_key_is_scoped_and_the_fingerprint_covers_route_params_and_body() {
        let a = k("k1", br#"{"name":"A","tags":[]}"#);
        assert_eq!(
            a,
            k("k1", br#"{ "tags": [], "name": "A" }"#),
            "canonical JSON"
        );
        assert_ne!(a.fingerprint, k("k1", br#"{"name":"B"}"#).fingerprint);
        let other_entity = bind(
            "alice",
            "k1",
            "PATCH",
            "/v1/customers/{id}",
            &[("id", "c2")],
            br#"{"name":"A","tags":[]}"#,
        );
        assert_eq!(a.key, other_entity.key);
        assert_ne!(a.fingerprint, other_entity.fingerprint);
        let other_route = bind(
            "alice",
            "k1",
            "POST",
            "/v1/customers/{id}/interactions",
            &[("id", "c1")],
            br#"{"name":"A","tags":[]}"#,
        );
        assert_ne!(a.fingerprint, other_route.fingerprint);
        let bob = bind(
            "bob",
            "k1",
            "PATCH",
            "/v1/customers/{id}",
            &[("id", "c1")],
            br#"{"name":"A","tags":[]}"#,
        );
        assert_ne!(a.key, bob.key, "another principal's key never matches");
        assert_eq!(a.key.len(), 32);
        assert_eq!(derived_id("c", &a).len(), 18);
    }

    #[test]
    fn in_flight_and_reuse_are_refused_and_success_is_remembered() {
        let keys = Keys::new(Duration::from_secs(60), 2);
        let a = k("k1", b"{}");
        let first = keys.begin(&a).unwrap();
        assert_eq!(keys.begin(&a).err(), Some(Refusal::InFlight));
        first.succeeded();
        let again = keys
            .begin(&a)
            .expect("same request again goes to the entity, which replays");
        drop(again);
        assert_eq!(
            keys.begin(&k("k1", b"{\"x\":1}")).err(),
            Some(Refusal::Reused)
        );
        // A failed first request is not remembered: the key may be used again.
        drop(keys.begin(&k("k2", b"{}")).unwrap());
        drop(keys.begin(&k("k2", b"{\"y\":2}")).unwrap());
        // Bounded by count.
        keys.begin(&k("k3", b"{}")).unwrap().succeeded();
        keys.begin(&k("k4", b"{}")).unwrap().succeeded();
        drop(
            keys.begin(&k("k1", b"{\"x\":1}"))
                .expect("k1 was forgotten"),
        );
    }

    #[test]
    fn malformed_headers_are_refused_naming_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(parse(&h).unwrap(), None);
        h.insert("idempotency-key", "ok-key".parse().unwrap());
        assert_eq!(parse(&h).unwrap().as_deref(), Some("ok-key"));
        h.insert("idempotency-key", "has space".parse().unwrap());
        assert!(parse(&h).unwrap_err().message.contains("Idempotency-Key"));
        h.insert("idempotency-key", "x".repeat(256).parse().unwrap());
        assert_eq!(parse(&h).unwrap_err().status, StatusCode::BAD_REQUEST);
        h.insert("idempotency-key", "a".parse().unwrap());
        h.append("idempotency-key", "b".parse().unwrap());
        assert!(parse(&h).unwrap_err().message.contains("more than once"));
    }
}
