//! The bridge's settings, read from `[mqtt]` and `[iot]`, and the edge's rules (which the
//! gateway applies to HTTP telemetry too).

use std::net::SocketAddr;

use keelson_actors::{AnomalyConfig, SampleLimits};
use keelson_runtime::ClusterConfig;

use crate::edge::EdgeConfig;

/// The bridge's settings, from `[mqtt]` and `[iot]`.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Client id of the cluster's one session.
    pub client_id: String,
    /// Broker address.
    pub broker: SocketAddr,
    /// Edge limits.
    pub edge: EdgeConfig,
    /// Anomaly detection.
    pub anomaly: AnomalyConfig,
    /// Largest message.
    pub max_payload: usize,
    /// The MQTT service secret (the bridge logs in as a service).
    pub password: Option<keelson_runtime::config::Secret>,
    /// TLS to the broker.
    pub tls: crate::MqttTls,
}

/// The edge's rules from the cluster config: what the bridge checks every MQTT message against,
/// and what the gateway checks HTTP telemetry against.
pub fn edge_config(cfg: &ClusterConfig) -> EdgeConfig {
    let defaults = EdgeConfig::default();
    let d = defaults.samples;
    let iot = crate::config::iot(cfg);
    let samples = SampleLimits {
        max_future_ms: iot.max_future_ms.unwrap_or(d.max_future_ms),
        max_past_ms: iot.max_past_ms.unwrap_or(d.max_past_ms),
        max_seq_jump: iot.max_seq_jump.unwrap_or(d.max_seq_jump),
    };
    match crate::config::mqtt(cfg) {
        Some(m) => EdgeConfig {
            max_payload_bytes: m.max_payload_bytes,
            rate_per_s: m.rate_per_device,
            burst: m.burst,
            samples,
            ..defaults
        },
        None => EdgeConfig {
            samples,
            ..defaults
        },
    }
}

impl BridgeSettings {
    /// From the cluster config; `None` without `[mqtt]`.
    pub fn from_config(cfg: &ClusterConfig) -> Option<Self> {
        let m = crate::config::mqtt(cfg)?;
        let iot = crate::config::iot(cfg);
        let edge = edge_config(cfg);
        let mut anomaly = AnomalyConfig::default();
        if let Some(a) = iot.ewma_alpha {
            anomaly.alpha = a;
        }
        if let Some(z) = iot.z_threshold {
            anomaly.z_threshold = z;
        }
        if let Some(w) = iot.warmup {
            anomaly.warmup = w;
        }
        for (reading, (min, max)) in &iot.thresholds {
            anomaly.thresholds.insert(
                reading.clone(),
                keelson_actors::Range {
                    min: *min,
                    max: *max,
                },
            );
        }
        Some(Self {
            client_id: format!("keelson-bridge-{}", cfg.name),
            broker: m.addr,
            edge,
            anomaly,
            max_payload: m.max_payload_bytes,
            password: crate::mqtt_auth::service_secret(cfg),
            tls: crate::MqttTls::for_cluster(cfg).unwrap_or_else(|e| {
                tracing::error!(error = %e, "no TLS for MQTT: the bridge cannot reach a TLS broker");
                crate::MqttTls::default()
            }),
        })
    }
}
