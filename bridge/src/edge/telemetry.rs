//! Telemetry: its schema, units converted to canonical ones, and the time window and physical
//! ranges every sample must fit (also applied to HTTP telemetry, by [`check_sample`]).

use std::collections::BTreeMap;

use keelson_actors::DomainError;
use serde_json::Value;

use super::json::{
    as_object, check_name, count, finite, key_path, only_fields, required, schema, string,
    type_name, uint,
};
use super::{EdgeConfig, Reason, Rejected};

/// Most readings in one message.
const MAX_READINGS: usize = 32;

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

/// The telemetry fields, typed but not yet checked against the topic, units or ranges.
pub(super) struct RawTelemetry<'a> {
    pub(super) device_id: &'a str,
    pub(super) seq: u64,
    pub(super) ts: u64,
    pub(super) readings: Vec<(&'a str, f64)>,
    pub(super) units: Vec<(&'a str, &'a str)>,
}

pub(super) fn parse(root: &Value) -> Result<RawTelemetry<'_>, Rejected> {
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

pub(super) fn normalise_units(raw: &RawTelemetry<'_>) -> Result<BTreeMap<String, f64>, Rejected> {
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

pub(super) fn check_ranges(
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
