//! keelson-gateway: the public HTTP API. It joins the cluster as a member that hosts no shards,
//! and sends each request straight to the node that owns the entity.
//!
//! ```text
//! client ──HTTP/JSON──▶ routes::handle ──body (64 KiB cap) ──api (strict JSON)──▶ command
//!                             │                                                     │
//!                             └──error (JSON, status, Retry-After) ◀── ClusterClient ┘ ──▶ owner node
//! ```
//!
//! Only this crate knows HTTP.

mod api;
mod body;
mod error;
mod iot;
mod metrics;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keelson_runtime::{
    shutdown, ClusterClient, ClusterConfig, ClusterMember, RuntimeError, ShardMap,
};
use warp::Filter;

pub use error::ApiError;

/// Reads the body under its cap and hands the request to the router.
async fn serve_one<S, B>(
    ctx: Arc<routes::Ctx>,
    method: warp::http::Method,
    path: String,
    query: String,
    headers: warp::http::HeaderMap,
    len: Option<u64>,
    stream: S,
) -> warp::http::Response<warp::hyper::body::Bytes>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send,
    B: bytes::Buf,
{
    // A declared length over the cap is refused unread unless it is small enough to drain.
    let body = if len.is_some_and(|l| l > 1024 * 1024) {
        Err(body::too_large())
    } else {
        body::read_capped(Box::pin(stream)).await
    };
    routes::handle(ctx, method, path, query, headers, body).await
}

/// Runs the gateway until `stop` resolves.
pub async fn run(cfg: ClusterConfig, stop: impl Future<Output = ()>) -> Result<(), RuntimeError> {
    let me = cfg.gateway.clone();
    keelson_runtime::metrics::init(&me.name, "gateway");
    metrics::http();
    tracing::info!(gateway = %me.name, cluster = %cfg.name, "starting gateway");

    let member = ClusterMember::join(&cfg, &me).await?;
    let initial = ShardMap::initial(&cfg.node_names(), cfg.shards, cfg.replication_factor);
    let (map, refresh) = keelson_runtime::follow_map(initial, member.view(), cfg.failure_timeout);
    let client = ClusterClient::new(map, member.view(), cfg.request_timeout).with_refresh(refresh);
    let health_watch = client.spawn_health_watch();

    let (trigger, shutdown_rx) = shutdown::channel();
    let http_addr = cfg.gateway_http;
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| RuntimeError::Bind {
            what: "http",
            addr: http_addr,
            source: e,
        })?;
    let publisher = cfg.mqtt.as_ref().map(|m| {
        keelson_bridge::Publisher::start(
            m.addr,
            &format!("keelson-pub-{}", me.name),
            m.max_payload_bytes * 64,
        )
    });
    let ctx = Arc::new(routes::Ctx {
        client,
        cfg: cfg.clone(),
        publisher,
    });
    let api = warp::any()
        .map(move || ctx.clone())
        .and(warp::method())
        .and(warp::path::full().map(|p: warp::path::FullPath| p.as_str().to_string()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(serve_one);
    let http_task = tokio::spawn(
        warp::serve(api)
            .incoming(listener)
            .graceful(shutdown_rx.clone().wait())
            .run(),
    );

    let ready = Arc::new(AtomicBool::new(false));
    let ops_task =
        keelson_runtime::serve_ops(me.ops_addr, ready.clone(), member.view(), shutdown_rx)
            .await
            .map_err(|e| RuntimeError::Bind {
                what: "ops",
                addr: me.ops_addr,
                source: e,
            })?;
    ready.store(true, Ordering::Release);
    tracing::info!(http = %http_addr, ops = %me.ops_addr, "gateway ready");

    stop.await;

    tracing::info!("stopping gateway");
    ready.store(false, Ordering::Release);
    trigger.fire();
    let _ = http_task.await;
    let _ = ops_task.await;
    health_watch.abort();
    member.leave().await;
    tracing::info!("gateway stopped");
    Ok(())
}
