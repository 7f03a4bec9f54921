//! The edge filter: every device message the bridge receives passes through here before it reaches
//! a device actor. Pure: no I/O, no clock; the caller passes `now_ms` and acts on the verdict.
//!
//! ```text
//! MQTT ──(topic, payload)──▶ parse_topic ──▶ Edge::check_telemetry ──Ok(Accepted)──▶ device actor
//!                                         ├─▶ Edge::check_reported ──Ok(ReportedTwin)─▶ device actor
//!                                         └─▶ Edge::check_ack ──────Ok(CommandAckMsg)─▶ command tracker
//!                                                    │
//!                                                    └─Err(Rejected)──▶ deadletter() ──▶ keelson/deadletter
//!                                                                      + metric label Reason::as_str()
//! ```
//!
//! Telemetry checks run in a fixed order so the first failure is the one reported: size → UTF-8 →
//! JSON syntax → schema → device id matches topic → units → ranges → duplicate → rate limit. Only a
//! message that passes every check consumes a rate-limit token and is remembered as seen.
//!
//! One file per job: `config` (limits and ranges), `topic` (which device, which kind),
//! `json` (payload to a JSON tree, field helpers), `telemetry`, `reported`, `ack` (each message
//! kind's schema), `window` (duplicates and rate per device), `rejected` (reasons and dead
//! letters).
//!
//! The duplicate cache is a cheap first line: the device actor dedupes durably anyway, so the edge
//! only remembers a 512-seq window per device, and at most `max_devices` devices.

use std::collections::{BTreeMap, HashMap};

mod ack;
mod config;
mod json;
mod rejected;
mod reported;
mod telemetry;
mod topic;
mod window;

pub use ack::{AckStatus, CommandAckMsg};
pub use config::{EdgeConfig, EdgeConfigError};
pub use rejected::{deadletter, Reason, Rejected};
pub use reported::{ReportedTwin, Scalar};
pub(crate) use telemetry::field_detail;
pub use telemetry::{check_sample, Accepted};
pub use topic::{parse_topic, DeviceTopic};

use json::parse_payload;
use topic::check_topic_device;
use window::{SeenWindow, TokenBucket};

pub use crate::topics::{
    ACK_SUFFIX, DEADLETTER as DEADLETTER_TOPIC, DEVICE_PREFIX as DEVICE_TOPIC_PREFIX,
    REPORTED_SUFFIX, TELEMETRY_SUFFIX,
};
/// Key in [`EdgeConfig::ranges`] whose ranges apply to every known kind unless the kind overrides them.
pub const ANY_KIND: &str = "*";

/// Longest text a device may send in a string field, in characters.
const MAX_TEXT_CHARS: usize = 256;

/// The edge filter: config plus per-device duplicate window and token bucket.
#[derive(Debug)]
pub struct Edge {
    config: EdgeConfig,
    devices: HashMap<String, DeviceSlot>,
    /// Touch counter → device id, oldest first; the eviction order.
    by_recency: BTreeMap<u64, String>,
    touches: u64,
}

#[derive(Debug)]
struct DeviceSlot {
    seen: SeenWindow,
    bucket: TokenBucket,
    touched: u64,
}

impl Edge {
    /// An edge enforcing `config`, tracking no devices yet.
    pub fn new(config: EdgeConfig) -> Result<Self, EdgeConfigError> {
        config.validate()?;
        Ok(Edge {
            config,
            devices: HashMap::new(),
            by_recency: BTreeMap::new(),
            touches: 0,
        })
    }

    /// The config in force.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Devices whose duplicate window and rate limit are currently tracked.
    pub fn tracked_devices(&self) -> usize {
        self.devices.len()
    }

    /// Whether `device_id` is currently tracked (not yet evicted).
    pub fn is_tracked(&self, device_id: &str) -> bool {
        self.devices.contains_key(device_id)
    }

    /// Checks one telemetry payload from `keelson/devices/{topic_device}/telemetry`. `kind` is the
    /// device's kind if the bridge knows it; ranges apply only then. Accepting records the seq and
    /// takes a rate-limit token; a rejection changes nothing, except that duplicates and
    /// rate-limited messages count as the device being seen for eviction.
    pub fn check_telemetry(
        &mut self,
        topic_device: &str,
        kind: Option<&str>,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Accepted, Rejected> {
        check_topic_device(topic_device)?;
        let root = parse_payload(payload, self.config.max_payload_bytes)?;
        let raw = telemetry::parse(&root)?;
        if raw.device_id != topic_device {
            return Err(Rejected::new(
                Reason::DeviceMismatch,
                format!(
                    "device_id: \"{}\" differs from \"{topic_device}\" in the topic",
                    raw.device_id
                ),
            ));
        }
        let readings = telemetry::normalise_units(&raw)?;
        telemetry::check_ranges(&self.config, kind, &raw, &readings, now_ms)?;

        let (rate_per_s, burst) = (self.config.rate_per_s, self.config.burst);
        let slot = self.slot(topic_device, now_ms);
        if slot.seen.contains(raw.seq) {
            return Err(Rejected::new(
                Reason::Duplicate,
                format!("seq: {} was already received from this device", raw.seq),
            ));
        }
        if !slot.bucket.take(now_ms, rate_per_s, burst) {
            return Err(Rejected::new(
                Reason::RateLimited,
                format!("device sends more than {rate_per_s} messages/s (burst {burst})"),
            ));
        }
        slot.seen.insert(raw.seq);
        Ok(Accepted {
            device_id: raw.device_id.to_string(),
            seq: raw.seq,
            at_ms: raw.ts,
            readings,
        })
    }

    /// Checks one payload from `keelson/devices/{topic_device}/twin/reported`.
    pub fn check_reported(
        &self,
        topic_device: &str,
        payload: &[u8],
    ) -> Result<ReportedTwin, Rejected> {
        check_topic_device(topic_device)?;
        reported::parse(&parse_payload(payload, self.config.max_payload_bytes)?)
    }

    /// Checks one payload from `keelson/devices/{topic_device}/acks`.
    pub fn check_ack(&self, topic_device: &str, payload: &[u8]) -> Result<CommandAckMsg, Rejected> {
        check_topic_device(topic_device)?;
        ack::parse(&parse_payload(payload, self.config.max_payload_bytes)?)
    }

    /// The device's slot, created if new (evicting the least recently seen at capacity), marked
    /// as the most recently seen.
    fn slot(&mut self, device_id: &str, now_ms: u64) -> &mut DeviceSlot {
        self.touches += 1;
        let touch = self.touches;
        if let Some(slot) = self.devices.get_mut(device_id) {
            self.by_recency.remove(&slot.touched);
            self.by_recency.insert(touch, device_id.to_string());
            slot.touched = touch;
        } else {
            while self.devices.len() >= self.config.max_devices {
                let Some((_, oldest)) = self.by_recency.pop_first() else {
                    break;
                };
                self.devices.remove(&oldest);
            }
            self.by_recency.insert(touch, device_id.to_string());
            self.devices.insert(
                device_id.to_string(),
                DeviceSlot {
                    seen: SeenWindow::default(),
                    bucket: TokenBucket::full(self.config.burst, now_ms),
                    touched: touch,
                },
            );
        }
        self.devices
            .get_mut(device_id)
            .expect("inserted or found just above")
    }
}

#[cfg(test)]
#[path = "edge_test.rs"]
mod tests;
