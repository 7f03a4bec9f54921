//! The embedded MQTT broker (rumqttd), run by `keelson up` as its own `broker` process when
//! `[mqtt] broker = "embedded"`.
//!
//! ```text
//! keelson broker: check the port is free → rumqttd (own threads, MQTT 3.1.1 on mqtt.port,
//!                 every CONNECT checked by mqtt_auth) → wait until it accepts connections
//!                 → ops endpoint ready → run until stopped
//! every second: device credentials from the cluster's registry (through the gateway)
//! ```
//!
//! rumqttd keeps sessions and undelivered QoS 1 messages in memory: a broker restart loses
//! them, which is why devices publish at QoS 1 with a persistent session and resend what the
//! broker never confirmed.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{BrokerLocation, BROKER_NAME};
use keelson_runtime::config::Secret;

use crate::mqtt_auth::Authenticator;
use crate::mqtt_gate::{Gate, INTERNAL_USER};
use keelson_runtime::{ClusterConfig, ClusterView};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Why the broker could not run.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No `[mqtt]`, or an outside broker is configured.
    #[error("{0}")]
    NotEmbedded(&'static str),
    /// The MQTT port is taken.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// rumqttd did not start accepting connections.
    #[error("the embedded MQTT broker did not accept connections on {0} within 10 s")]
    NotListening(SocketAddr),
    /// The broker's certificate cannot be loaded.
    #[error(transparent)]
    Tls(keelson_runtime::tls::TlsError),
    /// The ops endpoint could not bind.
    #[error("cannot serve the broker's ops endpoint on {addr}: {source}")]
    Ops {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// rumqttd's configuration: one MQTT 3.1.1 listener on the internal `addr`, admitting only the
/// gate's internal login.
fn rumqttd_config(addr: SocketAddr, max_payload: usize, internal: &Secret) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5_000,
        // The broker refuses (and disconnects) anything larger; the bridge dead-letters what
        // passes the broker but fails its own checks.
        max_payload_size: max_payload.max(1024) * 64,
        max_inflight_count: 100,
        auth: Some(HashMap::from([(
            INTERNAL_USER.to_string(),
            internal.expose().to_string(),
        )])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".to_string(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // Per filter: 8 segments of 8 MiB of messages kept for slow or absent sessions.
            max_segment_size: 8 << 20,
            max_segment_count: 8,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Starts rumqttd on its own threads behind the gate on `addr`, and waits until both accept
/// connections.
pub async fn start_embedded(
    addr: SocketAddr,
    max_payload: usize,
    auth: Arc<Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<tokio::task::JoinHandle<()>, BrokerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Bind { addr, source })?;
    // An internal port for rumqttd on the address no member uses (see config).
    let internal = std::net::TcpListener::bind((INTERNAL_IP, 0))
        .and_then(|l| l.local_addr())
        .map_err(|source| BrokerError::Bind { addr, source })?;
    let secret = Secret::new(crate::mqtt_auth::random_password());
    let config = rumqttd_config(internal, max_payload, &secret);
    std::thread::Builder::new()
        .name("mqtt-broker".to_string())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|source| BrokerError::Bind { addr, source })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(internal).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(internal));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gate = Arc::new(Gate {
        auth,
        upstream: internal,
        internal: secret,
        max_packet: max_payload.max(1024) * 64 + 1024,
    });
    Ok(gate.spawn(listener, tls))
}

/// Where rumqttd listens, behind the gate.
const INTERNAL_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 254));

/// Device credentials as the cluster's registry holds them: `Ok(None)` when unchanged since the
/// version given, else the version and each device's hash.
pub type CredentialsFetch = Box<
    dyn Fn(
            Option<u64>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<Option<(u64, HashMap<String, String>)>, String>> + Send>,
        > + Send
        + Sync,
>;

/// How often the broker rereads the device credentials: a rotation takes effect within it.
const CREDENTIALS_REFRESH: Duration = Duration::from_secs(1);

/// Rereads the device credentials every [`CREDENTIALS_REFRESH`], keeping the last ones (and
/// saying so once) while the cluster cannot answer.
async fn refresh_credentials(auth: Arc<Authenticator>, fetch: CredentialsFetch) {
    let mut failing = false;
    loop {
        match fetch(auth.version()).await {
            Ok(Some((version, devices))) => {
                tracing::info!(
                    version,
                    devices = devices.len(),
                    "device credentials loaded"
                );
                auth.apply(version, devices);
                failing = false;
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read device credentials; keeping the last ones");
                }
                failing = true;
            }
        }
        tokio::time::sleep(CREDENTIALS_REFRESH).await;
    }
}

/// The broker's TLS acceptor (its certificate, reloaded when the files change) when
/// `tls.enabled`, and the reloader's task.
fn broker_tls(
    cfg: &ClusterConfig,
) -> Result<(Option<TlsAcceptor>, Option<JoinHandle<()>>), BrokerError> {
    if !cfg.tls.enabled {
        return Ok((None, None));
    }
    let (server, reloader) = keelson_runtime::tls::Pki::new(&cfg.tls)
        .tls_server(BROKER_NAME)
        .map_err(BrokerError::Tls)?;
    Ok((
        Some(TlsAcceptor::from(server)),
        Some(reloader.spawn(Duration::from_secs(2))),
    ))
}

/// Runs the `broker` process of `keelson up` until `stop`; device credentials come from `fetch`.
pub async fn run(
    cfg: ClusterConfig,
    fetch: CredentialsFetch,
    stop: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let mqtt = crate::config::mqtt(&cfg).ok_or(BrokerError::NotEmbedded(
        "nodes.toml has no [mqtt] section: there is no broker to run",
    ))?;
    let BrokerLocation::Embedded { ops_addr } = mqtt.broker else {
        return Err(BrokerError::NotEmbedded(
            "mqtt.broker names an outside broker: nothing to run here",
        ));
    };
    keelson_runtime::metrics::init("broker", "broker");
    // Registered now, so refusals and ACL denials read 0 before the first one.
    crate::metrics::get();
    let addr = mqtt.addr;
    let max = mqtt.max_payload_bytes;
    let service = crate::mqtt_auth::service_secret(&cfg);
    if service.is_none() {
        tracing::warn!(file = %crate::mqtt_auth::service_secret_file(&cfg).display(), "no MQTT service secret: the bridge and publisher cannot connect (run `keelson init`)");
    }
    let auth = Arc::new(Authenticator::new(service));
    let refresh = tokio::spawn(refresh_credentials(auth.clone(), fetch));
    let (tls, reload) = broker_tls(&cfg)?;
    let gate = start_embedded(addr, max, auth.clone(), tls.clone()).await?;
    let ready = Arc::new(AtomicBool::new(true));
    let (_view_tx, view) = tokio::sync::watch::channel(ClusterView {
        me: BROKER_NAME.to_string(),
        members: vec![],
        made: None,
    });
    let (trigger, shutdown) = keelson_runtime::shutdown::channel();
    let ops = keelson_runtime::serve_ops(
        ops_addr,
        ready,
        view,
        cfg.auth.metrics_token.clone(),
        shutdown,
    )
    .await
    .map_err(|source| BrokerError::Ops {
        addr: ops_addr,
        source,
    })?;
    let scheme = if tls.is_some() { "mqtts" } else { "mqtt" };
    tracing::info!(url = %format!("{scheme}://{addr}"), ops = %ops_addr, "embedded MQTT broker ready");
    stop.await;
    tracing::info!("stopping the embedded MQTT broker");
    trigger.fire();
    refresh.abort();
    gate.abort();
    if let Some(r) = reload {
        r.abort();
    }
    let _ = ops.await;
    Ok(())
}
