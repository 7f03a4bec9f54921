//! keelson-bridge: the only crate that speaks MQTT.
//!
//! ```text
//! devices ──MQTT──▶ broker (embedded rumqttd `broker` process, or Mosquitto)
//!                     │ one persistent QoS 1 session, held by the consensus leader
//!                     ▼
//!                   bridge ──edge (schema, units, ranges, duplicates, rate)──▶ device actors
//!                     │  alert ─▶ ticket (customer actor) ─▶ command (publisher) ─▶ device
//!                     └─ rejects ─▶ keelson/deadletter
//! gateway ──publisher──▶ desired state and commands from the HTTP API
//! ```
//!
//! - `config`: `[mqtt]` and `[iot]` of nodes.toml, read and checked here (the runtime passes
//!   them through), and the broker's place beside the members (process, certificate).
//! - `broker`: the embedded broker process.
//! - `bridge`: the singleton session and the anomaly chain.
//! - `edge`: the checks every message passes before an actor sees it.
//! - `publisher`: QoS 1 publishes confirmed by the broker.
//! - `mqtt_auth`: who may connect (device passwords, service identities).
//! - `mqtt_acl`: what each identity may publish and subscribe to.
//! - `mqtt_gate`: the embedded broker's front door, enforcing both before rumqttd.
//! - `topics`: topic names.
//! - `simulator`: simulated devices for the tour and benchmarks.

mod bridge;
mod broker;
pub mod config;
mod edge;
mod metrics;
mod mqtt_acl;
mod mqtt_auth;
mod mqtt_gate;
mod publisher;
mod simulator;
pub mod topics;
mod transport;

pub use bridge::{
    command_payload, edge_config, publish_command, service, BridgeSettings, ALERT_COMMAND,
};
pub use broker::{run as run_broker, start_embedded, BrokerError, CredentialsFetch};
pub use edge::{
    check_sample, deadletter, parse_topic, Accepted, AckStatus, CommandAckMsg, DeviceTopic, Edge,
    EdgeConfig, EdgeConfigError, Reason, Rejected, ReportedTwin, Scalar, ACK_SUFFIX, ANY_KIND,
    DEADLETTER_TOPIC, DEVICE_TOPIC_PREFIX, REPORTED_SUFFIX, TELEMETRY_SUFFIX,
};
pub use mqtt_acl::{may_publish, may_subscribe, Identity};
pub use mqtt_auth::{
    hash_password, random_password, service_secret, service_secret_file, verify_password,
    Authenticator, Refusal, SERVICE_PREFIX, SERVICE_SECRET_ENV,
};
pub use publisher::{PublishError, Publisher};
pub use simulator::{
    devices as simulated_devices, register, simulate, SimulateError, SimulateOptions,
    SimulateReport,
};
pub use transport::MqttTls;
