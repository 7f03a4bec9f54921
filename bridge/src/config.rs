//! `[mqtt]` and `[iot]` of `nodes.toml`: where devices' MQTT broker is, the edge limits and the
//! anomaly thresholds. The runtime does not know these sections: it passes their tables through
//! ([`ClusterConfig::section`]) and lets [`SECTIONS`] check them when the file is loaded, so a
//! broken `[mqtt]` is refused at start-up with the field named, like any other.
//!
//! ```text
//! load(path) ─▶ runtime: its own sections ─┐
//!              [mqtt], [iot] ─▶ MqttSection / IotSection::check ─▶ problems, ports, hosts
//! later: mqtt(cfg), iot(cfg) ─▶ the checked values, from the tables the runtime kept
//!        embedded_broker(cfg), tls_subjects(cfg) ─▶ what `keelson up` and `keelson init` add
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use keelson_runtime::config::{ConfigError, Section, SectionCheck};
use keelson_runtime::tls::Subject;
use keelson_runtime::ClusterConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Name of the embedded broker's process (its log, pid file and certificate: `broker.pem`).
pub const BROKER_NAME: &str = "broker";
/// What the broker is, in its certificate (`broker.broker.keelson`) and `keelson up`'s run file.
pub const BROKER_KIND: &str = "broker";
/// Name of the certificate an outside MQTT broker (Mosquitto) serves TLS with.
pub const EXTERNAL_BROKER_CERT: &str = "mqtt-broker";

/// `[mqtt]`: devices' broker and the bridge's edge limits; absent: no MQTT.
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttSection;

/// `[iot]`: anomaly detection and the sample window.
#[derive(Debug, Clone, Copy, Default)]
pub struct IotSection;

/// The sections of `nodes.toml` this crate owns, for [`keelson_runtime::config::load_with`].
pub static SECTIONS: &[&dyn Section] = &[&MqttSection, &IotSection];

/// Reads and validates `nodes.toml` with `[mqtt]` and `[iot]`.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    keelson_runtime::config::load_with(path, SECTIONS)
}

/// Parses and validates TOML text with `[mqtt]` and `[iot]`.
pub fn parse(text: &str, base_dir: &Path) -> Result<ClusterConfig, ConfigError> {
    keelson_runtime::config::parse_with(text, base_dir, SECTIONS)
}

/// Only `[mqtt]` of the whole file: errors keep their line and column.
#[derive(Deserialize)]
struct MqttOnly {
    #[serde(default)]
    mqtt: Option<RawMqtt>,
}

/// Only `[iot]` of the whole file.
#[derive(Deserialize)]
struct IotOnly {
    #[serde(default)]
    iot: RawIot,
}

impl Section for MqttSection {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn check(&self, text: &str) -> Result<SectionCheck, String> {
        let raw: MqttOnly = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut check = SectionCheck::default();
        if let Some(m) = raw
            .mqtt
            .as_ref()
            .and_then(|m| validate_mqtt(m, &mut check.problems))
        {
            check.listens = m.listens();
            check.hosts = vec![m.addr.ip()];
        }
        Ok(check)
    }
}

impl Section for IotSection {
    fn name(&self) -> &'static str {
        "iot"
    }

    fn check(&self, text: &str) -> Result<SectionCheck, String> {
        let raw: IotOnly = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut check = SectionCheck::default();
        validate_iot(&raw.iot, &mut check.problems);
        Ok(check)
    }
}

/// The section `name` as the runtime kept it; it was checked when the file was loaded.
fn raw_section<T: DeserializeOwned>(cfg: &ClusterConfig, name: &str) -> Option<T> {
    let table = cfg.section(name)?.clone();
    Some(
        toml::Value::Table(table)
            .try_into()
            .unwrap_or_else(|e| panic!("[{name}] was checked when nodes.toml was loaded: {e}")),
    )
}

/// `[mqtt]` of `cfg`; `None` without the section.
pub fn mqtt(cfg: &ClusterConfig) -> Option<MqttConfig> {
    validate_mqtt(&raw_section(cfg, "mqtt")?, &mut Vec::new())
}

/// `[iot]` of `cfg` (defaults without the section).
pub fn iot(cfg: &ClusterConfig) -> IotConfig {
    validate_iot(
        &raw_section(cfg, "iot").unwrap_or_default(),
        &mut Vec::new(),
    )
}

/// The embedded broker as a process of `keelson up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedBroker {
    /// Its name: [`BROKER_NAME`].
    pub name: &'static str,
    /// What it is: [`BROKER_KIND`].
    pub kind: &'static str,
    /// Where devices connect.
    pub mqtt_addr: SocketAddr,
    /// Its `/metrics`, `/health` and `/ready`.
    pub ops_addr: SocketAddr,
}

/// The broker `keelson up` runs, when `[mqtt] broker = "embedded"`.
pub fn embedded_broker(cfg: &ClusterConfig) -> Option<EmbeddedBroker> {
    let m = mqtt(cfg)?;
    match m.broker {
        BrokerLocation::Embedded { ops_addr } => Some(EmbeddedBroker {
            name: BROKER_NAME,
            kind: BROKER_KIND,
            mqtt_addr: m.addr,
            ops_addr,
        }),
        BrokerLocation::External => None,
    }
}

/// The certificates the broker needs beside the members': the embedded broker's, or the one
/// an outside broker's TLS listener serves ([`EXTERNAL_BROKER_CERT`]).
pub fn tls_subjects(cfg: &ClusterConfig) -> Vec<Subject> {
    let Some(m) = mqtt(cfg) else {
        return Vec::new();
    };
    let name = match m.broker {
        BrokerLocation::Embedded { .. } => BROKER_NAME,
        BrokerLocation::External => EXTERNAL_BROKER_CERT,
    };
    vec![Subject {
        name: name.to_string(),
        kind: BROKER_KIND,
        ip: m.addr.ip(),
    }]
}

/// `[mqtt]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `"embedded"` (`keelson up` runs a broker) or `"mqtt://host:port"` (an outside broker).
    #[serde(default = "default_broker")]
    pub broker: String,
    /// Embedded broker: address to listen on.
    #[serde(default = "default_host")]
    pub host: String,
    /// Embedded broker: MQTT port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Embedded broker: port of its `/metrics`, `/health` and `/ready`.
    #[serde(default = "default_ops_port")]
    pub ops_port: u16,
    /// Largest message accepted, bytes (bigger ones are dead-lettered or refused by the broker).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Telemetry messages per second each device may send on average.
    #[serde(default = "default_rate")]
    pub rate_per_device: f64,
    /// Messages a device may send in a burst above its rate.
    #[serde(default = "default_burst")]
    pub burst: f64,
}

/// `[iot]` as written: anomaly detection.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIot {
    /// EWMA smoothing factor, 0 < alpha < 1.
    pub ewma_alpha: Option<f64>,
    /// Standard deviations from the EWMA mean that make a reading anomalous.
    pub z_threshold: Option<f64>,
    /// Readings seen before the z-score may fire.
    pub warmup: Option<u32>,
    /// Static limits per reading name, e.g. `temperature = { min = -20, max = 60 }`.
    #[serde(default)]
    pub thresholds: BTreeMap<String, RawRange>,
    /// A sample taken more than this after now is refused (default 1 hour).
    pub max_future_ms: Option<u64>,
    /// A sample taken more than this before now is refused (default 30 days).
    pub max_past_ms: Option<u64>,
    /// A sequence number more than this above the device's highest is refused and
    /// dead-lettered (default 1,000,000).
    pub max_seq_jump: Option<u64>,
}

/// A static limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    /// Lowest normal value.
    pub min: Option<f64>,
    /// Highest normal value.
    pub max: Option<f64>,
}

fn default_broker() -> String {
    "embedded".to_string()
}
fn default_host() -> String {
    "127.0.0.1".to_string()
}
fn default_port() -> u16 {
    1883
}
fn default_ops_port() -> u16 {
    9105
}
fn default_max_payload() -> usize {
    16 * 1024
}
fn default_rate() -> f64 {
    20.0
}
fn default_burst() -> f64 {
    40.0
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerLocation {
    /// `keelson up` runs it (the [`BROKER_NAME`] process), listening on [`MqttConfig::addr`].
    Embedded {
        /// Its ops endpoint.
        ops_addr: SocketAddr,
    },
    /// Someone else runs it.
    External,
}

/// Validated `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Embedded or external.
    pub broker: BrokerLocation,
    /// The broker's MQTT address.
    pub addr: SocketAddr,
    /// Largest message, bytes.
    pub max_payload_bytes: usize,
    /// Per-device rate, messages/s.
    pub rate_per_device: f64,
    /// Per-device burst.
    pub burst: f64,
}

/// Validated `[iot]`: absent values take the bridge's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IotConfig {
    /// EWMA smoothing factor.
    pub ewma_alpha: Option<f64>,
    /// z-score threshold.
    pub z_threshold: Option<f64>,
    /// Warm-up readings.
    pub warmup: Option<u32>,
    /// Static limits by reading: (min, max).
    pub thresholds: BTreeMap<String, (Option<f64>, Option<f64>)>,
    /// Time window of samples: (before now, after now), ms; defaults when `None`.
    pub max_past_ms: Option<u64>,
    /// See [`RawIot::max_future_ms`].
    pub max_future_ms: Option<u64>,
    /// See [`RawIot::max_seq_jump`].
    pub max_seq_jump: Option<u64>,
}

impl MqttConfig {
    /// Addresses this process set listens on (the embedded broker's), by config key.
    pub fn listens(&self) -> Vec<(&'static str, SocketAddr)> {
        match self.broker {
            BrokerLocation::Embedded { ops_addr } => {
                vec![("port", self.addr), ("ops_port", ops_addr)]
            }
            BrokerLocation::External => vec![],
        }
    }
}

/// Checks `[mqtt]`.
fn validate_mqtt(m: &RawMqtt, problems: &mut Vec<String>) -> Option<MqttConfig> {
    if !(256..=16 * 1024 * 1024).contains(&m.max_payload_bytes) {
        problems.push(format!(
            "mqtt.max_payload_bytes: {} is out of range 256..=16777216",
            m.max_payload_bytes
        ));
    }
    if !(m.rate_per_device > 0.0 && m.rate_per_device <= 10_000.0) {
        problems.push(format!(
            "mqtt.rate_per_device: {} must be above 0 and at most 10000",
            m.rate_per_device
        ));
    }
    if !(m.burst >= 1.0 && m.burst <= 100_000.0) {
        problems.push(format!(
            "mqtt.burst: {} must be between 1 and 100000",
            m.burst
        ));
    }
    let (broker, addr) = if m.broker == "embedded" {
        let ip: IpAddr = match m.host.parse() {
            Ok(ip) => ip,
            Err(_) => {
                problems.push(format!("mqtt.host: \"{}\" is not an IP address", m.host));
                return None;
            }
        };
        if m.port == 0 || m.ops_port == 0 || m.port == m.ops_port {
            problems.push("mqtt: port and ops_port must be two different ports, not 0".to_string());
            return None;
        }
        let ops_addr = SocketAddr::new(ip, m.ops_port);
        (
            BrokerLocation::Embedded { ops_addr },
            SocketAddr::new(ip, m.port),
        )
    } else {
        let Some(rest) = m.broker.strip_prefix("mqtt://") else {
            problems.push(format!(
                "mqtt.broker: \"{}\" is neither \"embedded\" nor mqtt://host:port",
                m.broker
            ));
            return None;
        };
        match rest.trim_end_matches('/').parse::<SocketAddr>() {
            Ok(addr) => (BrokerLocation::External, addr),
            Err(_) => {
                problems.push(format!(
                    "mqtt.broker: \"{rest}\" is not host:port with an IP address host (e.g. mqtt://127.0.0.1:1883)"
                ));
                return None;
            }
        }
    };
    Some(MqttConfig {
        broker,
        addr,
        max_payload_bytes: m.max_payload_bytes,
        rate_per_device: m.rate_per_device,
        burst: m.burst,
    })
}

/// Checks `[iot]`.
fn validate_iot(i: &RawIot, problems: &mut Vec<String>) -> IotConfig {
    if let Some(a) = i.ewma_alpha {
        if !(a > 0.0 && a < 1.0) {
            problems.push(format!("iot.ewma_alpha: {a} must be between 0 and 1"));
        }
    }
    if let Some(z) = i.z_threshold {
        if !(z > 0.0 && z <= 100.0) {
            problems.push(format!(
                "iot.z_threshold: {z} must be above 0 and at most 100"
            ));
        }
    }
    if let Some(w) = i.warmup {
        if w > 100_000 {
            problems.push(format!("iot.warmup: {w} is above 100000"));
        }
    }
    for (field, v, max) in [
        ("max_future_ms", i.max_future_ms, 366 * 24 * 3600 * 1000u64),
        ("max_past_ms", i.max_past_ms, 10 * 366 * 24 * 3600 * 1000),
        ("max_seq_jump", i.max_seq_jump, 1 << 53),
    ] {
        if let Some(v) = v.filter(|v| !(1..=max).contains(v)) {
            problems.push(format!("iot.{field}: {v} is outside 1..={max}"));
        }
    }
    for (name, r) in &i.thresholds {
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            problems.push(format!(
                "iot.thresholds.{name}: reading names are 1-32 characters of a-z, 0-9 and _"
            ));
        }
        match (r.min, r.max) {
            (None, None) => problems.push(format!("iot.thresholds.{name}: give min, max or both")),
            (Some(lo), Some(hi)) if lo >= hi => problems.push(format!(
                "iot.thresholds.{name}: min {lo} must be below max {hi}"
            )),
            _ => {}
        }
    }
    IotConfig {
        max_past_ms: i.max_past_ms,
        max_future_ms: i.max_future_ms,
        max_seq_jump: i.max_seq_jump,
        ewma_alpha: i.ewma_alpha,
        z_threshold: i.z_threshold,
        warmup: i.warmup,
        thresholds: i
            .thresholds
            .iter()
            .map(|(k, r)| (k.clone(), (r.min, r.max)))
            .collect(),
    }
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
