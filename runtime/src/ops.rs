//! The ops endpoint every process serves: `/metrics` (Prometheus text), `/health` (the process is
//! running), `/ready` (it has finished starting, its essential actors run, and it can take
//! traffic) and `/view` (who this
//! process believes is up, as JSON: what chaos runs use to time failure detection).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use warp::http::StatusCode;
use warp::Filter;

use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::metrics;
use crate::shutdown::Shutdown;

/// What `/ready` answers: ready while every named condition holds, otherwise 503 naming the ones
/// that do not (a node: `started`, and `shard_host` while its shard host is being restarted).
#[derive(Debug, Clone)]
pub struct Readiness(Arc<Vec<(&'static str, Arc<AtomicBool>)>>);

impl Readiness {
    /// Ready when every flag is set.
    pub fn all(conditions: Vec<(&'static str, Arc<AtomicBool>)>) -> Self {
        Self(Arc::new(conditions))
    }

    /// The conditions that do not hold.
    pub fn missing(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(n, _)| *n)
            .collect()
    }
}

impl From<Arc<AtomicBool>> for Readiness {
    /// One flag: the process has started.
    fn from(started: Arc<AtomicBool>) -> Self {
        Self::all(vec![("started", started)])
    }
}

/// Binds `addr` and serves the ops endpoints until `shutdown`; `/metrics` asks for
/// `metrics_token` as a bearer token when one is given.
pub async fn serve(
    addr: SocketAddr,
    ready: impl Into<Readiness>,
    view: tokio::sync::watch::Receiver<crate::cluster::membership::ClusterView>,
    metrics_token: Option<Secret>,
    shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let metrics_route = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .map(move |auth: Option<String>| {
            let allowed = match &metrics_token {
                None => true,
                Some(t) => auth
                    .as_deref()
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .is_some_and(|given| {
                        bool::from(given.trim().as_bytes().ct_eq(t.expose().as_bytes()))
                    }),
            };
            if !allowed {
                return warp::reply::with_status(
                    warp::reply::with_header(
                        "send the metrics token as `Authorization: Bearer <token>`\n".to_string(),
                        "content-type",
                        "text/plain; charset=utf-8",
                    ),
                    StatusCode::UNAUTHORIZED,
                );
            }
            warp::reply::with_status(
                warp::reply::with_header(
                    metrics::render(),
                    "content-type",
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                StatusCode::OK,
            )
        });
    let health = warp::path!("health").and(warp::get()).map(|| "ok\n");
    let ready: Readiness = ready.into();
    let ready_route = warp::path!("ready").and(warp::get()).map(move || {
        let missing = ready.missing();
        if missing.is_empty() {
            warp::reply::with_status("ready\n".to_string(), StatusCode::OK)
        } else {
            warp::reply::with_status(
                format!("not ready: {}\n", missing.join(", ")),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    });
    let view_route = warp::path!("view")
        .and(warp::get())
        .map(move || warp::reply::json(&*view.borrow()));
    let routes = metrics_route.or(health).or(ready_route).or(view_route);
    Ok(tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
            .graceful(shutdown.wait())
            .run(),
    ))
}
