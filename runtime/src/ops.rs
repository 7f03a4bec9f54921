//! The ops endpoint every process serves: `/metrics` (Prometheus text), `/health` (the process is
//! running), `/ready` (it has finished starting and can take traffic) and `/view` (who this
//! process believes is up, as JSON: what chaos runs use to time failure detection).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use warp::http::StatusCode;
use warp::Filter;

use crate::metrics;
use crate::shutdown::Shutdown;

/// Binds `addr` and serves the ops endpoints until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    view: tokio::sync::watch::Receiver<crate::membership::ClusterView>,
    shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let metrics_route = warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            metrics::render(),
            "content-type",
            "text/plain; version=0.0.4; charset=utf-8",
        )
    });
    let health = warp::path!("health").and(warp::get()).map(|| "ok\n");
    let ready_route = warp::path!("ready").and(warp::get()).map(move || {
        if ready.load(Ordering::Acquire) {
            warp::reply::with_status("ready\n", StatusCode::OK)
        } else {
            warp::reply::with_status("starting\n", StatusCode::SERVICE_UNAVAILABLE)
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
