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
//! The duplicate cache is a cheap first line: the device actor dedupes durably anyway, so the edge
//! only remembers a 512-seq window per device, and at most `max_devices` devices.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use keelson_actors::{DomainError, SampleLimits};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// Topic prefix of every per-device topic.
pub const DEVICE_TOPIC_PREFIX: &str = "keelson/devices/";
/// Suffix of the telemetry topic, after the device id.
pub const TELEMETRY_SUFFIX: &str = "telemetry";
/// Suffix of the reported-twin topic, after the device id.
pub const REPORTED_SUFFIX: &str = "twin/reported";
/// Suffix of the command-acknowledgement topic, after the device id.
pub const ACK_SUFFIX: &str = "acks";
/// Where rejected messages are published, as built by [`deadletter`].
pub const DEADLETTER_TOPIC: &str = "keelson/deadletter";
/// Key in [`EdgeConfig::ranges`] whose ranges apply to every known kind unless the kind overrides them.
pub const ANY_KIND: &str = "*";

/// Seqs remembered per device, counting down from the highest seen.
const SEEN_WINDOW: u64 = 512;
const MAX_READINGS: usize = 32;
const MAX_STATE_KEYS: usize = 64;
const MAX_NAME_CHARS: usize = 32;
const MAX_ID_CHARS: usize = 64;
const MAX_TEXT_CHARS: usize = 256;
const DEADLETTER_TEXT_CHARS: usize = 1024;
const DEADLETTER_HEX_BYTES: usize = 256;

/// Limits and sensor ranges the edge enforces. Defaults live in [`EdgeConfig::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Sustained telemetry messages per second per device.
    pub rate_per_s: f64,
    /// Telemetry messages a device may send at once after being quiet.
    pub burst: f64,
    /// When a sample may have been taken (around the bridge clock), and how far its sequence
    /// number may jump: the same bounds the gateway and the device entity apply.
    pub samples: SampleLimits,
    /// Devices whose duplicate cache and rate limit are tracked; the least recently seen is evicted.
    pub max_devices: usize,
    /// Device kind → reading → inclusive (min, max) in canonical units. [`ANY_KIND`] applies to
    /// every kind the bridge knows; a kind's own entry overrides it.
    pub ranges: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        fn kind(readings: &[(&str, f64, f64)]) -> BTreeMap<String, (f64, f64)> {
            readings
                .iter()
                .map(|&(name, lo, hi)| (name.to_string(), (lo, hi)))
                .collect()
        }
        let battery = ("battery", 0.0, 100.0);
        let ranges = [
            (ANY_KIND, kind(&[battery])),
            (
                "temperature",
                kind(&[
                    ("temperature", -40.0, 80.0),
                    ("humidity", 0.0, 100.0),
                    battery,
                ]),
            ),
            (
                "humidity",
                kind(&[
                    ("humidity", 0.0, 100.0),
                    ("temperature", -40.0, 80.0),
                    battery,
                ]),
            ),
            (
                "wearable",
                kind(&[
                    ("heart_rate", 20.0, 250.0),
                    ("spo2", 50.0, 100.0),
                    ("skin_temperature", 20.0, 45.0),
                    ("steps", 0.0, 100_000.0),
                    battery,
                ]),
            ),
            ("camera", kind(&[("fps", 0.0, 120.0), battery])),
        ];
        EdgeConfig {
            max_payload_bytes: 16 * 1024,
            rate_per_s: 20.0,
            burst: 40.0,
            samples: SampleLimits::default(),
            max_devices: 100_000,
            ranges: ranges
                .into_iter()
                .map(|(k, r)| (k.to_string(), r))
                .collect(),
        }
    }
}

/// An [`EdgeConfig`] that cannot work, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edge config: {field}: {reason}")]
pub struct EdgeConfigError {
    /// Field path, e.g. `ranges.wearable.spo2`.
    pub field: String,
    /// What is wrong and what would work.
    pub reason: String,
}

impl EdgeConfig {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), EdgeConfigError> {
        let bad = |field: String, reason: String| Err(EdgeConfigError { field, reason });
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes".into(), "must be at least 1".into());
        }
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0) {
            return bad(
                "rate_per_s".into(),
                format!("must be a positive number, got {}", self.rate_per_s),
            );
        }
        if !(self.burst.is_finite() && self.burst >= 1.0) {
            return bad(
                "burst".into(),
                format!("must be at least 1, got {}", self.burst),
            );
        }
        if self.max_devices == 0 {
            return bad("max_devices".into(), "must be at least 1".into());
        }
        if let Err(e) = self.samples.validate("samples") {
            return bad("samples".into(), e.to_string());
        }
        for (kind, readings) in &self.ranges {
            for (reading, &(lo, hi)) in readings {
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return bad(
                        format!("ranges.{kind}.{reading}"),
                        format!("must be finite with min ≤ max, got {lo}..{hi}"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The inclusive range of `reading` for a device of `kind`, if one is configured.
    fn range(&self, kind: &str, reading: &str) -> Option<(f64, f64)> {
        self.ranges
            .get(kind)
            .and_then(|r| r.get(reading))
            .or_else(|| self.ranges.get(ANY_KIND).and_then(|r| r.get(reading)))
            .copied()
    }
}

/// Why a message was rejected. `as_str` is the stable metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Payload larger than `max_payload_bytes`.
    TooLarge,
    /// Payload is not UTF-8.
    NotUtf8,
    /// Payload is not JSON.
    BadJson,
    /// JSON of the wrong shape: types, missing or unknown fields, names, counts.
    BadSchema,
    /// `device_id` differs from the id in the topic.
    DeviceMismatch,
    /// A unit that is unknown for its reading, or given for a reading not present.
    BadUnit,
    /// A reading outside its plausible range, or a timestamp too far in the future.
    OutOfRange,
    /// A seq this device already sent.
    Duplicate,
    /// The device exceeded its rate limit.
    RateLimited,
    /// The bridge does not know the device (decided by the bridge, not by [`Edge`]).
    UnknownDevice,
    /// The topic is not a device topic or its device id is invalid.
    BadTopic,
    /// The device entity refused the sample (e.g. its sequence number jumps too far past the
    /// highest it has); decided by the bridge from the entity's answer.
    Refused,
}

impl Reason {
    /// Every reason, for registering metric labels up front.
    pub const ALL: [Reason; 12] = [
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::BadJson,
        Reason::BadSchema,
        Reason::DeviceMismatch,
        Reason::BadUnit,
        Reason::OutOfRange,
        Reason::Duplicate,
        Reason::RateLimited,
        Reason::UnknownDevice,
        Reason::BadTopic,
        Reason::Refused,
    ];

    /// The snake_case label used in metrics and the deadletter document; never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::BadJson => "bad_json",
            Reason::BadSchema => "bad_schema",
            Reason::DeviceMismatch => "device_mismatch",
            Reason::BadUnit => "bad_unit",
            Reason::OutOfRange => "out_of_range",
            Reason::Duplicate => "duplicate",
            Reason::RateLimited => "rate_limited",
            Reason::UnknownDevice => "unknown_device",
            Reason::BadTopic => "bad_topic",
            Reason::Refused => "refused",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message the edge refused: the reason (a metric label) and a detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    /// Category.
    pub reason: Reason,
    /// The field and what is wrong with it.
    pub detail: String,
}

impl Rejected {
    /// A rejection with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
        }
    }

    /// For the bridge when a message comes from a device it has no record of.
    pub fn unknown_device(device_id: &str) -> Self {
        Self::new(
            Reason::UnknownDevice,
            format!("device \"{device_id}\" is not registered"),
        )
    }

    /// For the bridge when [`parse_topic`] does not recognise a topic.
    pub fn bad_topic(topic: &str) -> Self {
        Self::new(
            Reason::BadTopic,
            format!(
                "topic \"{topic}\" is not {DEVICE_TOPIC_PREFIX}{{id}}/{TELEMETRY_SUFFIX}|{REPORTED_SUFFIX}|{ACK_SUFFIX} with an id of 1-64 characters of A-Z a-z 0-9 _ -"
            ),
        )
    }
}

/// A telemetry message that passed every check, readings in canonical units.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Device id (equal to the topic's).
    pub device_id: String,
    /// The device's sequence number, ≥ 1.
    pub seq: u64,
    /// When the readings were taken, ms since the Unix epoch.
    pub at_ms: u64,
    /// Reading name → value in canonical units (°C, %, bpm).
    pub readings: BTreeMap<String, f64>,
}

/// A scalar value of reported twin state.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// A finite number.
    Number(f64),
    /// A string of at most 256 characters.
    Text(String),
}

/// A device's reported twin state.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedTwin {
    /// The device's version of its state, if it sends one.
    pub version: Option<u64>,
    /// Key → value; 1-64 keys.
    pub state: BTreeMap<String, Scalar>,
}

/// How a device answered a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Done.
    Ok,
    /// Tried and failed.
    Failed,
    /// Refused without trying.
    Rejected,
}

impl AckStatus {
    /// The status as devices send it.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Ok => "ok",
            AckStatus::Failed => "failed",
            AckStatus::Rejected => "rejected",
        }
    }
}

/// A device's acknowledgement of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandAckMsg {
    /// The command acknowledged.
    pub command_id: String,
    /// Outcome.
    pub status: AckStatus,
    /// Free text from the device, at most 256 characters.
    pub detail: Option<String>,
}

/// Which per-device topic a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceTopic {
    /// `keelson/devices/{id}/telemetry`
    Telemetry,
    /// `keelson/devices/{id}/twin/reported`
    Reported,
    /// `keelson/devices/{id}/acks`
    Ack,
}

/// Splits a device topic into its kind and device id; `None` if it is not one or the id is invalid.
pub fn parse_topic(topic: &str) -> Option<(DeviceTopic, &str)> {
    let rest = topic.strip_prefix(DEVICE_TOPIC_PREFIX)?;
    let (id, suffix) = rest.split_once('/')?;
    let kind = match suffix {
        TELEMETRY_SUFFIX => DeviceTopic::Telemetry,
        REPORTED_SUFFIX => DeviceTopic::Reported,
        ACK_SUFFIX => DeviceTopic::Ack,
        _ => return None,
    };
    valid_device_id(id).then_some((kind, id))
}

fn valid_device_id(id: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The document published to [`DEADLETTER_TOPIC`] for a rejected message.
pub fn deadletter(topic: &str, payload: &[u8], r: &Rejected, now_ms: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Deadletter<'a> {
        topic: &'a str,
        reason: &'static str,
        detail: &'a str,
        at_ms: u64,
        payload_bytes: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_hex: Option<String>,
    }
    let (text, hex) = match std::str::from_utf8(payload) {
        Ok(s) => {
            let end = s
                .char_indices()
                .nth(DEADLETTER_TEXT_CHARS)
                .map_or(s.len(), |(i, _)| i);
            (Some(&s[..end]), None)
        }
        Err(_) => {
            let head = &payload[..payload.len().min(DEADLETTER_HEX_BYTES)];
            (
                None,
                Some(head.iter().map(|b| format!("{b:02x}")).collect()),
            )
        }
    };
    let doc = Deadletter {
        topic,
        reason: r.reason.as_str(),
        detail: &r.detail,
        at_ms: now_ms,
        payload_bytes: payload.len(),
        payload: text,
        payload_hex: hex,
    };
    serde_json::to_vec(&doc).expect("a struct of strings and integers always serializes")
}

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
        let raw = telemetry_schema(&root)?;
        if raw.device_id != topic_device {
            return Err(Rejected::new(
                Reason::DeviceMismatch,
                format!(
                    "device_id: \"{}\" differs from \"{topic_device}\" in the topic",
                    raw.device_id
                ),
            ));
        }
        let readings = normalise_units(&raw)?;
        check_ranges(&self.config, kind, &raw, &readings, now_ms)?;

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
        let root = parse_payload(payload, self.config.max_payload_bytes)?;
        let obj = as_object(&root, "payload")?;
        only_fields(obj, &["version", "state"])?;
        let version = match obj.get("version") {
            None => None,
            Some(v) => Some(uint(v, "version", 0)?),
        };
        let state = as_object(required(obj, "state")?, "state")?;
        count(state.len(), 1, MAX_STATE_KEYS, "state", "key")?;
        let mut out = BTreeMap::new();
        for (key, value) in state {
            let field = format!("state.{}", key_path(key));
            check_name(key, &field)?;
            let scalar = match value {
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Number(n) => Scalar::Number(finite(n, &field)?),
                Value::String(s) => Scalar::Text(text(s, &field, MAX_TEXT_CHARS)?.to_string()),
                other => {
                    return Err(schema(format!(
                        "{field}: expected a boolean, number or string, got {}",
                        type_name(other)
                    )))
                }
            };
            out.insert(key.clone(), scalar);
        }
        Ok(ReportedTwin {
            version,
            state: out,
        })
    }

    /// Checks one payload from `keelson/devices/{topic_device}/acks`.
    pub fn check_ack(&self, topic_device: &str, payload: &[u8]) -> Result<CommandAckMsg, Rejected> {
        check_topic_device(topic_device)?;
        let root = parse_payload(payload, self.config.max_payload_bytes)?;
        let obj = as_object(&root, "payload")?;
        only_fields(obj, &["command_id", "status", "detail"])?;
        let command_id = string(required(obj, "command_id")?, "command_id")?;
        if !(1..=MAX_ID_CHARS).contains(&command_id.len())
            || !command_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(schema(format!(
                "command_id: {command_id:?} must be 1-64 characters of A-Z a-z 0-9 _ - . :"
            )));
        }
        let status = match string(required(obj, "status")?, "status")? {
            "ok" => AckStatus::Ok,
            "failed" => AckStatus::Failed,
            "rejected" => AckStatus::Rejected,
            other => {
                return Err(schema(format!(
                    "status: {other:?} is not one of \"ok\", \"failed\", \"rejected\""
                )))
            }
        };
        let detail = match obj.get("detail") {
            None => None,
            Some(v) => Some(text(string(v, "detail")?, "detail", MAX_TEXT_CHARS)?.to_string()),
        };
        Ok(CommandAckMsg {
            command_id: command_id.to_string(),
            status,
            detail,
        })
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

/// Which of the `SEEN_WINDOW` seqs ending at the highest seen have been seen: 72 bytes per device
/// rather than a set of 512 numbers. A seq older than the window passes (the actor dedupes it).
#[derive(Debug, Default)]
struct SeenWindow {
    /// Highest seq seen; 0 before the first (seqs start at 1).
    top: u64,
    /// Bit `i` is set if `top - i` was seen.
    bits: [u64; (SEEN_WINDOW / 64) as usize],
}

impl SeenWindow {
    fn contains(&self, seq: u64) -> bool {
        if seq > self.top || self.top - seq >= SEEN_WINDOW {
            return false;
        }
        let i = self.top - seq;
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn insert(&mut self, seq: u64) {
        if seq > self.top {
            self.shift(seq - self.top);
            self.top = seq;
        } else if self.top - seq >= SEEN_WINDOW {
            return;
        }
        let i = self.top - seq;
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Ages every remembered seq by `n` positions; those pushed past the window are forgotten.
    fn shift(&mut self, n: u64) {
        if n >= SEEN_WINDOW {
            self.bits = Default::default();
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        for w in (0..self.bits.len()).rev() {
            let from = w.checked_sub(words);
            let hi = from.map_or(0, |f| self.bits[f] << bits);
            let lo = match from.and_then(|f| f.checked_sub(1)) {
                Some(f) if bits > 0 => self.bits[f] >> (64 - bits),
                _ => 0,
            };
            self.bits[w] = hi | lo;
        }
    }
}

/// A token bucket refilled at `rate_per_s` up to `burst`.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    updated_ms: u64,
}

impl TokenBucket {
    fn full(burst: f64, now_ms: u64) -> Self {
        TokenBucket {
            tokens: burst,
            updated_ms: now_ms,
        }
    }

    /// Takes a token if there is one. A clock that goes backwards refills nothing.
    fn take(&mut self, now_ms: u64, rate_per_s: f64, burst: f64) -> bool {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms);
        self.tokens = (self.tokens + elapsed_ms as f64 * rate_per_s / 1000.0).min(burst);
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The telemetry fields, typed but not yet checked against the topic, units or ranges.
struct RawTelemetry<'a> {
    device_id: &'a str,
    seq: u64,
    ts: u64,
    readings: Vec<(&'a str, f64)>,
    units: Vec<(&'a str, &'a str)>,
}

fn telemetry_schema(root: &Value) -> Result<RawTelemetry<'_>, Rejected> {
    let obj = as_object(root, "payload")?;
    only_fields(obj, &["device_id", "seq", "ts", "readings", "units"])?;
    let device_id = string(required(obj, "device_id")?, "device_id")?;
    let seq = uint(required(obj, "seq")?, "seq", 1)?;
    let ts = uint(required(obj, "ts")?, "ts", 1)?;
    let readings_obj = as_object(required(obj, "readings")?, "readings")?;
    count(readings_obj.len(), 1, MAX_READINGS, "readings", "reading")?;
    let mut readings = Vec::with_capacity(readings_obj.len());
    for (name, value) in readings_obj {
        let field = format!("readings.{}", key_path(name));
        check_name(name, &field)?;
        let Value::Number(n) = value else {
            return Err(schema(format!(
                "{field}: expected a number, got {}",
                type_name(value)
            )));
        };
        readings.push((name.as_str(), finite(n, &field)?));
    }
    let mut units = Vec::new();
    if let Some(u) = obj.get("units") {
        for (name, unit) in as_object(u, "units")? {
            let field = format!("units.{}", key_path(name));
            units.push((name.as_str(), string(unit, &field)?));
        }
    }
    Ok(RawTelemetry {
        device_id,
        seq,
        ts,
        readings,
        units,
    })
}

/// Which units a reading may be sent in, and its canonical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Temperature,
    Percent,
    Rate,
    Other,
}

impl Quantity {
    fn of(reading: &str) -> Self {
        match reading {
            "temperature" | "skin_temperature" => Quantity::Temperature,
            "humidity" | "spo2" | "battery" => Quantity::Percent,
            "heart_rate" => Quantity::Rate,
            _ => Quantity::Other,
        }
    }

    /// Symbol of the canonical unit, for messages.
    fn symbol(self) -> &'static str {
        match self {
            Quantity::Temperature => " °C",
            Quantity::Percent => " %",
            Quantity::Rate => " bpm",
            Quantity::Other => "",
        }
    }

    /// `value` in `unit` converted to the canonical unit; `None` if the unit is not one of ours.
    fn normalise(self, value: f64, unit: &str) -> Option<f64> {
        match (self, unit) {
            (Quantity::Temperature, "C") | (Quantity::Percent, "%") | (Quantity::Rate, "bpm") => {
                Some(value)
            }
            (Quantity::Temperature, "F") => Some((value - 32.0) * 5.0 / 9.0),
            (Quantity::Temperature, "K") => Some(value - 273.15),
            (Quantity::Percent, "1") => Some(value * 100.0),
            (Quantity::Rate, "Hz") => Some(value * 60.0),
            _ => None,
        }
    }

    fn accepted_units(self) -> &'static str {
        match self {
            Quantity::Temperature => "C, F or K",
            Quantity::Percent => "% or 1 (a 0..1 ratio)",
            Quantity::Rate => "bpm or Hz",
            Quantity::Other => "none: this reading takes no unit",
        }
    }
}

fn normalise_units(raw: &RawTelemetry<'_>) -> Result<BTreeMap<String, f64>, Rejected> {
    let mut readings: BTreeMap<String, f64> = raw
        .readings
        .iter()
        .map(|&(name, v)| (name.to_string(), v))
        .collect();
    for &(name, unit) in &raw.units {
        let field = format!("units.{}", key_path(name));
        let Some(value) = readings.get_mut(name) else {
            return Err(Rejected::new(
                Reason::BadUnit,
                format!("{field}: there is no reading \"{name}\" to apply it to"),
            ));
        };
        let quantity = Quantity::of(name);
        *value = quantity.normalise(*value, unit).ok_or_else(|| {
            Rejected::new(
                Reason::BadUnit,
                format!(
                    "{field}: unknown unit {unit:?} (use {})",
                    quantity.accepted_units()
                ),
            )
        })?;
    }
    Ok(readings)
}

fn check_ranges(
    config: &EdgeConfig,
    kind: Option<&str>,
    raw: &RawTelemetry<'_>,
    readings: &BTreeMap<String, f64>,
    now_ms: u64,
) -> Result<(), Rejected> {
    let out = |detail: String| Err(Rejected::new(Reason::OutOfRange, detail));
    if let Err(e) = config.samples.check_time("ts", raw.ts, now_ms) {
        return out(field_detail(e));
    }
    check_sample_ranges(config, kind, readings, |name| {
        raw.units
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|&(_, unit)| {
                let original = raw.readings.iter().find(|(n, _)| *n == name)?.1;
                Some(format!(" (sent as {original:?} {unit})"))
            })
            .unwrap_or_default()
    })
}

/// `field: reason`, as every rejection detail reads.
pub(crate) fn field_detail(e: DomainError) -> String {
    match e {
        DomainError::Invalid { field, reason } => format!("{field}: {reason}"),
        other => other.to_string(),
    }
}

/// Checks one sample that reached Keelson without MQTT (the gateway's `POST
/// /v1/devices/{id}/telemetry`) with the edge's own rules: its time window and, for a device of
/// a known `kind`, the physical range of every reading. The detail names the field.
pub fn check_sample(
    config: &EdgeConfig,
    kind: Option<&str>,
    readings: &BTreeMap<String, f64>,
    at_ms: u64,
    now_ms: u64,
) -> Result<(), Rejected> {
    if let Err(e) = config.samples.check_time("at_ms", at_ms, now_ms) {
        return Err(Rejected::new(Reason::OutOfRange, field_detail(e)));
    }
    check_sample_ranges(config, kind, readings, |_| String::new())
}

/// Every reading finite and, for a known kind, inside its configured range; `sent` describes
/// how a reading was sent (its unit) for the message.
fn check_sample_ranges(
    config: &EdgeConfig,
    kind: Option<&str>,
    readings: &BTreeMap<String, f64>,
    sent: impl Fn(&str) -> String,
) -> Result<(), Rejected> {
    let out = |detail: String| Err(Rejected::new(Reason::OutOfRange, detail));
    for (name, &value) in readings {
        let field = format!("readings.{}", key_path(name));
        let symbol = Quantity::of(name).symbol();
        if !value.is_finite() {
            return out(format!(
                "{field}: {value}{symbol} after unit conversion is not a finite number"
            ));
        }
        let Some(kind) = kind else { continue };
        if let Some((lo, hi)) = config.range(kind, name) {
            if !(lo..=hi).contains(&value) {
                let sent = sent(name);
                return out(format!(
                    "{field}: {value:?}{symbol}{sent} is outside {lo}..{hi} for a {kind} device"
                ));
            }
        }
    }
    Ok(())
}

fn check_topic_device(topic_device: &str) -> Result<(), Rejected> {
    if valid_device_id(topic_device) {
        Ok(())
    } else {
        Err(Rejected::new(
            Reason::BadTopic,
            format!(
                "device id {topic_device:?} in the topic must be 1-64 characters of A-Z a-z 0-9 _ -"
            ),
        ))
    }
}

/// Size → UTF-8 → JSON syntax → a JSON tree. A number JSON allows but f64 cannot hold (`1e400`) is
/// a schema error naming its field, not a syntax error.
fn parse_payload(payload: &[u8], max_bytes: usize) -> Result<Value, Rejected> {
    if payload.len() > max_bytes {
        return Err(Rejected::new(
            Reason::TooLarge,
            format!(
                "payload is {} bytes, the limit is {max_bytes}",
                payload.len()
            ),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejected::new(
            Reason::NotUtf8,
            format!(
                "payload is not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    // Skipping a value checks syntax without converting numbers, so overflow cannot show up here.
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|e| Rejected::new(Reason::BadJson, format!("payload is not JSON: {e}")))?;
    let ctx = RefCell::new(TreeContext::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let tree = Tree { ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    tree.map_err(|e| {
        let ctx = ctx.into_inner();
        let field = if ctx.path.is_empty() {
            "payload".to_string()
        } else {
            ctx.path.concat()
        };
        // serde_json has no error kind for overflow; its message is the only signal.
        let reason = if ctx.duplicate || e.to_string().starts_with("number out of range") {
            Reason::BadSchema
        } else {
            Reason::BadJson
        };
        Rejected::new(reason, format!("{field}: {e}"))
    })
}

/// Builds a [`Value`] while tracking the path being parsed: on error, `path` is left pointing at
/// the value that failed. Also rejects repeated keys, which `Value` would silently collapse.
struct Tree<'p> {
    ctx: &'p RefCell<TreeContext>,
}

#[derive(Default)]
struct TreeContext {
    /// Segments of the path to the value being parsed: `readings`, `.temperature`, `[2]`.
    path: Vec<String>,
    /// The failure was a repeated key: a schema problem, not a syntax one.
    duplicate: bool,
}

impl<'de> DeserializeSeed<'de> for Tree<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.ctx
                .borrow_mut()
                .path
                .push(format!("[{}]", items.len()));
            let item = seq.next_element_seed(Tree { ctx: self.ctx })?;
            self.ctx.borrow_mut().path.pop();
            match item {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let dot = if self.ctx.borrow().path.is_empty() {
                ""
            } else {
                "."
            };
            self.ctx
                .borrow_mut()
                .path
                .push(format!("{dot}{}", key_path(&key)));
            if obj.contains_key(&key) {
                self.ctx.borrow_mut().duplicate = true;
                return Err(de::Error::custom("field appears twice"));
            }
            let value = map.next_value_seed(Tree { ctx: self.ctx })?;
            self.ctx.borrow_mut().path.pop();
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}

fn schema(detail: String) -> Rejected {
    Rejected::new(Reason::BadSchema, detail)
}

/// A key as it appears in a field path: bare if it is a valid name, quoted otherwise.
fn key_path(key: &str) -> String {
    if is_name(key) {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn is_name(s: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_name(name: &str, field: &str) -> Result<(), Rejected> {
    if is_name(name) {
        Ok(())
    } else {
        Err(schema(format!(
            "{field}: name must be 1-32 characters of a-z 0-9 _"
        )))
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.chars().count() <= 32 => format!("a string ({s:?})"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn as_object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, Rejected> {
    v.as_object()
        .ok_or_else(|| schema(format!("{field}: expected an object, got {}", type_name(v))))
}

fn only_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Rejected> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(schema(format!(
            "unknown field {k:?} (expected {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a Value, Rejected> {
    obj.get(field)
        .ok_or_else(|| schema(format!("{field}: missing")))
}

fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, Rejected> {
    v.as_str()
        .ok_or_else(|| schema(format!("{field}: expected a string, got {}", type_name(v))))
}

fn text<'a>(s: &'a str, field: &str, max_chars: usize) -> Result<&'a str, Rejected> {
    let n = s.chars().count();
    if n > max_chars {
        return Err(schema(format!(
            "{field}: {n} characters, the limit is {max_chars}"
        )));
    }
    Ok(s)
}

fn uint(v: &Value, field: &str, min: u64) -> Result<u64, Rejected> {
    v.as_u64().filter(|&n| n >= min).ok_or_else(|| {
        schema(format!(
            "{field}: expected an integer ≥ {min}, got {}",
            type_name(v)
        ))
    })
}

fn finite(n: &Number, field: &str) -> Result<f64, Rejected> {
    n.as_f64()
        .filter(|v| v.is_finite())
        .ok_or_else(|| schema(format!("{field}: {n} is not a finite number")))
}

fn count(n: usize, min: usize, max: usize, field: &str, what: &str) -> Result<(), Rejected> {
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(schema(format!(
            "{field}: {n} entries, expected {min}-{max} (one per {what})"
        )))
    }
}

#[cfg(test)]
#[path = "edge_test.rs"]
mod tests;
