//! What the edge enforces: payload size, rate, sample window, tracked devices, and the
//! physical range of each reading by device kind. Defaults live in [`EdgeConfig::default`].

use std::collections::BTreeMap;

use keelson_actors::SampleLimits;
use serde::{Deserialize, Serialize};

use super::ANY_KIND;

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
    pub(super) fn range(&self, kind: &str, reading: &str) -> Option<(f64, f64)> {
        self.ranges
            .get(kind)
            .and_then(|r| r.get(reading))
            .or_else(|| self.ranges.get(ANY_KIND).and_then(|r| r.get(reading)))
            .copied()
    }
}
