//! Streaming anomaly detection over a device's readings: static thresholds per reading, and an
//! exponentially weighted mean and variance whose z-score flags a value far from the usual.
//!
//! ```text
//! sample ──▶ for each reading (name order):
//!              threshold tripped? ─┐
//!              z-score tripped (after warmup)? ─┴─▶ in cooldown for this reading? skip : Trip
//!            then fold the value into the reading's EWMA (always)
//! ```
//!
//! At most one [`Trip`] per sample: the first reading that trips outside its cooldown.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{self, invalid, DomainError};

/// After an alert for a reading, no new one for the same reading within this many ms of sample
/// time, so a stuck sensor does not raise one per message.
pub const ALERT_COOLDOWN_MS: u64 = 60_000;

/// Most readings whose statistics a device tracks.
pub const MAX_TRACKED_READINGS: usize = 128;

/// Allowed bounds of one reading; either side may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Range {
    /// Lowest normal value.
    pub min: Option<f64>,
    /// Highest normal value.
    pub max: Option<f64>,
}

impl Range {
    fn new(min: Option<f64>, max: Option<f64>) -> Self {
        Self { min, max }
    }
}

/// How the detector judges readings; sent with every ingest so it can change without a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Static bounds per reading name.
    pub thresholds: BTreeMap<String, Range>,
    /// EWMA smoothing factor, in (0, 1]: the weight of the newest value.
    pub alpha: f64,
    /// A value this many standard deviations from the EWMA mean is anomalous.
    pub z_threshold: f64,
    /// Values a reading's EWMA must have folded in before its z-score may fire.
    pub warmup: u32,
}

impl Default for AnomalyConfig {
    /// Bounds for DHT22-like sensors and wearables: °C, %, bpm.
    fn default() -> Self {
        Self {
            thresholds: [
                ("temperature", Range::new(Some(-20.0), Some(60.0))),
                ("humidity", Range::new(None, Some(95.0))),
                ("heart_rate", Range::new(Some(35.0), Some(180.0))),
                ("battery", Range::new(Some(5.0), None)),
            ]
            .into_iter()
            .map(|(k, r)| (k.to_string(), r))
            .collect(),
            alpha: 0.1,
            z_threshold: 4.0,
            warmup: 30,
        }
    }
}

impl AnomalyConfig {
    /// Checks the configuration; fields are named under `field`, e.g. `anomaly.alpha`.
    pub fn validate(&self, field: &str) -> Result<(), DomainError> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(invalid(format!("{field}.alpha"), "must be in (0, 1]"));
        }
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            return Err(invalid(
                format!("{field}.z_threshold"),
                "must be a finite number above 0",
            ));
        }
        if self.thresholds.len() > MAX_TRACKED_READINGS {
            return Err(invalid(
                format!("{field}.thresholds"),
                format!("at most {MAX_TRACKED_READINGS} readings"),
            ));
        }
        for (name, r) in &self.thresholds {
            let at = format!("{field}.thresholds.{name}");
            validate::validate_id(&at, name)?;
            for (side, v) in [("min", r.min), ("max", r.max)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(invalid(format!("{at}.{side}"), "must be a finite number"));
                }
            }
            if let (Some(lo), Some(hi)) = (r.min, r.max) {
                if lo > hi {
                    return Err(invalid(at, format!("min {lo} is above max {hi}")));
                }
            }
        }
        Ok(())
    }
}

/// Exponentially weighted mean and variance of one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Values folded in.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Variance.
    pub var: f64,
}

impl Ewma {
    /// How many standard deviations `v` is from the mean; `None` while there is no spread.
    pub fn z(&self, v: f64) -> Option<f64> {
        (self.n > 0 && self.var > 0.0).then(|| (v - self.mean).abs() / self.var.sqrt())
    }

    /// Folds `v` in.
    pub fn update(&mut self, v: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = v;
            self.var = 0.0;
        } else {
            let diff = v - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
    }
}

/// A reading that tripped the detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    /// Reading name.
    pub reading: String,
    /// Its value.
    pub value: f64,
    /// Why, e.g. `temperature 71.2 above max 60`.
    pub reason: String,
}

/// The detector's memory for one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// EWMA per reading.
    pub stats: BTreeMap<String, Ewma>,
    /// Sample time of the last alert per reading, for the cooldown.
    pub last_alert_ms: BTreeMap<String, u64>,
}

fn threshold(name: &str, v: f64, range: &Range) -> Option<String> {
    match (range.min, range.max) {
        (_, Some(max)) if v > max => Some(format!("{name} {v} above max {max}")),
        (Some(min), _) if v < min => Some(format!("{name} {v} below min {min}")),
        _ => None,
    }
}

impl Detector {
    /// Judges one sample taken at `at_ms` and folds its values in. Returns the first reading that
    /// trips outside its cooldown; the cooldown restarts for it.
    pub fn observe(
        &mut self,
        cfg: &AnomalyConfig,
        at_ms: u64,
        readings: &BTreeMap<String, f64>,
    ) -> Option<Trip> {
        let mut trip = None;
        for (name, &v) in readings {
            let stats = self.stats.entry(name.clone()).or_default();
            if trip.is_none() {
                let reason = cfg
                    .thresholds
                    .get(name)
                    .and_then(|r| threshold(name, v, r))
                    .or_else(|| {
                        let z = stats.z(v).filter(|_| stats.n >= u64::from(cfg.warmup))?;
                        (z > cfg.z_threshold)
                            .then(|| format!("{name} z-score {z:.1} over {}", cfg.z_threshold))
                    });
                let cooling = self
                    .last_alert_ms
                    .get(name)
                    .is_some_and(|&last| last.abs_diff(at_ms) < ALERT_COOLDOWN_MS);
                if let Some(reason) = reason.filter(|_| !cooling) {
                    self.last_alert_ms.insert(name.clone(), at_ms);
                    trip = Some(Trip {
                        reading: name.clone(),
                        value: v,
                        reason,
                    });
                }
            }
            stats.update(v, cfg.alpha);
        }
        trip
    }
}
