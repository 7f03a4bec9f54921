//! keelson-gateway: the public HTTP API. It joins the cluster as a member that hosts no shards,
//! and sends each request straight to the node that owns the entity.
//!
//! ```text
//! client ──HTTPS──▶ server (TLS, hyper) ──▶ routes::handle ──route_table──▶ identity (401)
//!        ──authz (403)──▶ body (64 KiB cap) ──api (strict JSON)──▶ command ──ClusterClient──▶ owner node
//!                         error (JSON, status, Retry-After) ◀─────────────────────────────┘
//! keys: /v1/keys ──▶ keyring entity ◀── every 250 ms ── keys::spawn_refresh ──▶ identity
//! openapi: GET /v1/openapi.json, generated from route_table
//! ```
//!
//! Only this crate knows HTTP.

mod api;
mod authz;
mod body;
mod client;
mod customers;
mod device_credentials;
mod devices;
mod erasure;
mod error;
mod handler;
mod idempotency;
mod identity;
mod iot;
mod keys;
mod limits;
mod metrics;
mod openapi;
mod route_table;
mod routes;
mod server;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use identity::Identities;
use keelson_runtime::{
    shutdown, ClusterClient, ClusterConfig, ClusterMember, RuntimeError, ShardMap,
};

pub use client::{api_client, base_url, tool_key, ApiClient};
pub use error::ApiError;
pub use identity::new_bootstrap_key;
pub use openapi::document as openapi_document;

/// Connections the kernel may queue before the gateway accepts them: enough for a burst of
/// thousands of clients connecting at once (the kernel caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 8192;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
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

    let identities = Arc::new(
        Identities::new(cfg.auth.admin_key().as_ref(), cfg.auth.jwt.as_ref())
            .map_err(|e| RuntimeError::Security(e.to_string()))?,
    );
    if cfg.auth.admin_key().is_none() {
        tracing::warn!(file = %cfg.auth.admin_key_file.display(), "no bootstrap admin key: only keys from the keyring and JWTs are accepted");
    }
    let keyring_task = keys::spawn_refresh(client.clone(), identities.clone());

    let (trigger, shutdown_rx) = shutdown::channel();
    let http_addr = cfg.gateway_http;
    // The API runs on a runtime of its own: however many requests it is busy with, the cluster
    // member's heartbeats keep their threads, so an overloaded gateway is never mistaken for a
    // dead one (and never sees the nodes as dead).
    let http_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
        .thread_name("keelson-http")
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Spawn("HTTP runtime", e.to_string()))?;
    // Registered with the API's runtime, which serves it.
    let listener = {
        let _enter = http_rt.enter();
        listen(http_addr)
    }
    .map_err(|e| RuntimeError::Bind {
        what: "http",
        addr: http_addr,
        source: e,
    })?;
    let (tls, reload_task) = if cfg.tls.enabled {
        let pki = keelson_runtime::tls::Pki::new(&cfg.tls);
        let (server_cfg, reloader) = pki
            .https_server(&me)
            .map_err(|e| RuntimeError::Security(e.to_string()))?;
        (
            Some(tokio_rustls::TlsAcceptor::from(server_cfg)),
            Some(reloader.spawn(std::time::Duration::from_secs(2))),
        )
    } else {
        tracing::warn!(http = %http_addr, "TLS is off (tls.enabled = false): plain HTTP on loopback only");
        (None, None)
    };
    let mqtt_tls = keelson_bridge::MqttTls::for_cluster(&cfg)
        .map_err(|e| RuntimeError::Security(e.to_string()))?;
    let publisher = cfg.mqtt.as_ref().map(|m| {
        keelson_bridge::Publisher::start(
            m.addr,
            &format!("keelson-pub-{}", me.name),
            keelson_bridge::service_secret(&cfg).as_ref(),
            &mqtt_tls,
            m.max_payload_bytes * 64,
        )
    });
    let open_files = limits::raise_open_files();
    tracing::info!(open_files, "open-file limit");
    let gate = Arc::new(limits::Gate::new(&cfg.limits));
    let gate_task = gate.spawn_housekeeping();
    let ctx = Arc::new(handler::Ctx {
        identities,
        client,
        cfg: cfg.clone(),
        publisher,
        keys: idempotency::Keys::new(
            std::time::Duration::from_millis(cfg.entity_limits.keys.ttl_ms),
            100_000,
        ),
        gate: gate.clone(),
        edge: keelson_bridge::edge_config(&cfg),
        open_files,
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http_task = http_rt.spawn(server::serve(
        ctx,
        listener,
        tls,
        shutdown_rx.clone().wait(),
    ));

    let ready = Arc::new(AtomicBool::new(false));
    let ops_task = keelson_runtime::serve_ops(
        me.ops_addr,
        ready.clone(),
        member.view(),
        cfg.auth.metrics_token.clone(),
        shutdown_rx,
    )
    .await
    .map_err(|e| RuntimeError::Bind {
        what: "ops",
        addr: me.ops_addr,
        source: e,
    })?;
    ready.store(true, Ordering::Release);
    tracing::info!(api = %format!("{scheme}://{http_addr}"), ops = %me.ops_addr, "gateway ready");

    stop.await;

    tracing::info!("stopping gateway");
    ready.store(false, Ordering::Release);
    trigger.fire();
    let _ = http_task.await;
    let _ = ops_task.await;
    health_watch.abort();
    keyring_task.abort();
    gate_task.abort();
    if let Some(t) = reload_task {
        t.abort();
    }
    http_rt.shutdown_background();
    member.leave().await;
    tracing::info!("gateway stopped");
    Ok(())
}
