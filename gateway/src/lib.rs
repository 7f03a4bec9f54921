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
//! Parts: `server` (listener, TLS, body cap) hands requests to `routes` (admission, dispatch,
//! reply), which calls the handlers (`customers`, `devices`, `iot`, `keys`,
//! `device_credentials`, `erasure`, `local`) through `handler` (context, entity calls).
//! `route_table` declares every route once; `authz`, `identity`, `limits` and `idempotency` are
//! the rules admission and writes follow; `openapi` and `metrics` are generated from the table.
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
mod local;
mod membership;
mod metrics;
mod model_index;
mod openapi;
mod recommendations;
mod route_table;
mod routes;
mod server;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use identity::Identities;
use keelson_runtime::shutdown::ShutdownTrigger;
use keelson_runtime::{
    shutdown, ClusterClient, ClusterConfig, ClusterMember, RuntimeError, ShardMap,
};
use tokio::task::JoinHandle;

pub use client::{api_client, base_url, tool_key, ApiClient};
pub use error::ApiError;
pub use identity::new_bootstrap_key;
pub use openapi::document as openapi_document;

/// Connections the kernel may queue before the gateway accepts them: enough for a burst of
/// thousands of clients connecting at once (the kernel caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 8192;

/// Runs the gateway until `stop` resolves.
pub async fn run(cfg: ClusterConfig, stop: impl Future<Output = ()>) -> Result<(), RuntimeError> {
    let gateway = Gateway::start(&cfg).await?;
    stop.await;
    gateway.stop().await;
    Ok(())
}

/// The running gateway's parts, in start-up order; [`Gateway::stop`] takes them down in reverse.
struct Gateway {
    member: ClusterMember,
    health_watch: JoinHandle<()>,
    keyring_task: JoinHandle<()>,
    trigger: ShutdownTrigger,
    http_rt: tokio::runtime::Runtime,
    reload_task: Option<JoinHandle<()>>,
    gate_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
    ops_task: JoinHandle<()>,
    ready: Arc<AtomicBool>,
    /// The model feed, flushed at stop: single interactions acknowledged as `queued` go in.
    feed: keelson_feed::ModelFeed,
}

/// How long a stopping gateway waits for the interactions it queued for the model.
const FEED_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

impl Gateway {
    /// Start-up, one step after the other; the first that fails is the error.
    async fn start(cfg: &ClusterConfig) -> Result<Self, RuntimeError> {
        let me = &cfg.gateway;
        keelson_runtime::metrics::init(&me.name, "gateway");
        metrics::http();
        tracing::info!(gateway = %me.name, cluster = %cfg.name, "starting gateway");

        let (member, client) = join(cfg).await?;
        let health_watch = client.spawn_health_watch();
        let identities = identities(cfg)?;
        let keyring_task = keys::spawn_refresh(client.clone(), identities.clone());

        let (trigger, shutdown_rx) = shutdown::channel();
        let http_rt = http_runtime()?;
        let listener = bind_api(&http_rt, cfg.gateway_http)?;
        let (tls, reload_task) = api_tls(cfg)?;
        let publisher = mqtt_publisher(cfg)?;
        let open_files = limits::raise_open_files();
        tracing::info!(open_files, "open-file limit");
        let gate = Arc::new(limits::Gate::new(&cfg.limits));
        let gate_task = gate.spawn_housekeeping();
        let model = model_index::ServedModel::new();
        let served = model.clone();
        let feed = keelson_feed::ModelFeed::start(client.clone(), Arc::new(move || served.wrote()));
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
            edge: keelson_bridge::edge_config(cfg),
            open_files,
            feed: feed.clone(),
            model: model.clone(),
        });
        http_rt.spawn(model.run_refresher(ctx.client.clone()));
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
        tracing::info!(api = %format!("{scheme}://{}", cfg.gateway_http), ops = %me.ops_addr, "gateway ready");
        Ok(Gateway {
            member,
            health_watch,
            keyring_task,
            trigger,
            http_rt,
            reload_task,
            gate_task,
            http_task,
            ops_task,
            ready,
            feed,
        })
    }

    /// Shutdown: start-up backwards. Not ready, both servers told to stop and drained, the
    /// model feed's queue flushed, the background loops ended, then the cluster is told this
    /// member leaves.
    async fn stop(self) {
        tracing::info!("stopping gateway");
        self.ready.store(false, Ordering::Release);
        self.trigger.fire();
        let _ = self.ops_task.await;
        let _ = self.http_task.await;
        // No request is left to queue more: what was queued goes to the model before leaving.
        if tokio::time::timeout(FEED_FLUSH, self.feed.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                wait_ms = FEED_FLUSH.as_millis() as u64,
                "stopping with interactions still queued for the recommendation model: they are not counted"
            );
        }
        self.gate_task.abort();
        if let Some(t) = self.reload_task {
            t.abort();
        }
        self.http_rt.shutdown_background();
        self.keyring_task.abort();
        self.health_watch.abort();
        self.member.leave().await;
        tracing::info!("gateway stopped");
    }
}

/// Joins the cluster as a member without shards, and follows its shard map.
async fn join(cfg: &ClusterConfig) -> Result<(ClusterMember, ClusterClient), RuntimeError> {
    let mut member = ClusterMember::join(cfg, &cfg.gateway).await?;
    let initial = ShardMap::initial(&cfg.node_names(), cfg.shards, cfg.replication_factor);
    let (map, refresh) = keelson_runtime::follow_map(initial, member.view(), cfg.failure_timeout);
    // Nodes that join are dialled too, once the map names them.
    member.follow_map(cfg, map.clone());
    let client = ClusterClient::new(map, member.view(), cfg.request_timeout).with_refresh(refresh);
    Ok((member, client))
}

/// Who may prove what: the bootstrap admin key and the JWT issuer (keyring keys come later).
fn identities(cfg: &ClusterConfig) -> Result<Arc<Identities>, RuntimeError> {
    let identities = Arc::new(
        Identities::new(cfg.auth.admin_key().as_ref(), cfg.auth.jwt.as_ref())
            .map_err(|e| RuntimeError::Security(e.to_string()))?,
    );
    if cfg.auth.admin_key().is_none() {
        tracing::warn!(file = %cfg.auth.admin_key_file.display(), "no bootstrap admin key: only keys from the keyring and JWTs are accepted");
    }
    Ok(identities)
}

/// The API runs on a runtime of its own: however many requests it is busy with, the cluster
/// member's heartbeats keep their threads, so an overloaded gateway is never mistaken for a
/// dead one (and never sees the nodes as dead).
fn http_runtime() -> Result<tokio::runtime::Runtime, RuntimeError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
        .thread_name("keelson-http")
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Spawn("HTTP runtime", e.to_string()))
}

/// The API's listener, registered with the API's runtime, which serves it.
fn bind_api(
    http_rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, RuntimeError> {
    let _enter = http_rt.enter();
    listen(addr).map_err(|e| RuntimeError::Bind {
        what: "http",
        addr,
        source: e,
    })
}

fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The API's TLS acceptor and the task reloading its certificate, or neither with TLS off.
fn api_tls(
    cfg: &ClusterConfig,
) -> Result<(Option<tokio_rustls::TlsAcceptor>, Option<JoinHandle<()>>), RuntimeError> {
    if !cfg.tls.enabled {
        tracing::warn!(http = %cfg.gateway_http, "TLS is off (tls.enabled = false): plain HTTP on loopback only");
        return Ok((None, None));
    }
    let pki = keelson_runtime::tls::Pki::new(&cfg.tls);
    let (server_cfg, reloader) = pki
        .https_server(&cfg.gateway)
        .map_err(|e| RuntimeError::Security(e.to_string()))?;
    Ok((
        Some(tokio_rustls::TlsAcceptor::from(server_cfg)),
        Some(reloader.spawn(std::time::Duration::from_secs(2))),
    ))
}

/// Publishes desired state and commands to devices; `None` without `[mqtt]`.
fn mqtt_publisher(cfg: &ClusterConfig) -> Result<Option<keelson_bridge::Publisher>, RuntimeError> {
    let mqtt_tls = keelson_bridge::MqttTls::for_cluster(cfg)
        .map_err(|e| RuntimeError::Security(e.to_string()))?;
    let publisher = keelson_bridge::config::mqtt(cfg).map(|m| {
        keelson_bridge::Publisher::start(
            m.addr,
            &format!("keelson-pub-{}", cfg.gateway.name),
            keelson_bridge::service_secret(cfg).as_ref(),
            &mqtt_tls,
            m.max_payload_bytes * 64,
        )
    });
    Ok(publisher)
}
