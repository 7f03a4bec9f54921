//! Accepting telemetry: one message is checked against its time and sequence bounds, dropped if
//! its sequence number was seen, else folded into the latest readings, judged by the detector
//! and recorded in the telemetry log.
//!
//! ```text
//! Ingest{seq} ─────────────┐
//! Telemetry (HTTP, no seq) ─┴▶ limits ─▶ SeqWindow: seen? ─yes─▶ the first delivery's outcome
//!                                                       └no──▶ last_readings, Detector ─▶ Alert{"{device}-{seq}"}
//!                                                               └▶ TelemetryLog (recent + history)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alerts::{self, Alert};
use super::anomaly::{AnomalyConfig, MAX_TRACKED_READINGS};
use super::sample_limits::SampleLimits;
use super::state::DeviceState;
use super::telemetry::Sample;
use crate::validate::{self, invalid, DomainError};

/// Most readings in one telemetry message.
pub const MAX_READINGS_PER_MESSAGE: usize = 64;

/// One telemetry message posted over HTTP, without a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Reading name to value.
    pub readings: BTreeMap<String, f64>,
    /// When it was taken; now if absent.
    pub at_ms: Option<u64>,
    /// The time bounds it is held to.
    pub limits: SampleLimits,
}

/// The outcome of an `Ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestOutcome {
    /// The sequence number was seen before: nothing changed.
    pub duplicate: bool,
    /// The alert this sample raised (on a duplicate: raised earlier, if still kept).
    pub alert: Option<Alert>,
}

/// Checks the readings of one message: 1-[`MAX_READINGS_PER_MESSAGE`], named by the id rule,
/// finite.
pub(super) fn check_readings(readings: &BTreeMap<String, f64>) -> Result<(), DomainError> {
    if readings.is_empty() {
        return Err(invalid("readings", "must hold at least one reading"));
    }
    if readings.len() > MAX_READINGS_PER_MESSAGE {
        return Err(invalid(
            "readings",
            format!("at most {MAX_READINGS_PER_MESSAGE} readings per message"),
        ));
    }
    for (name, v) in readings {
        validate::validate_id(&format!("readings.{name}"), name)?;
        if !v.is_finite() {
            return Err(invalid(
                format!("readings.{name}"),
                "must be a finite number",
            ));
        }
    }
    Ok(())
}

impl DeviceState {
    /// Records an HTTP message, numbered after the highest sequence seen and judged with the
    /// default anomaly configuration; returns whether the state changed.
    pub(super) fn record_telemetry(
        &mut self,
        t: Telemetry,
        now_ms: u64,
    ) -> Result<bool, DomainError> {
        let at_ms = t.at_ms.unwrap_or(now_ms);
        t.limits.check_time("at_ms", at_ms, now_ms)?;
        let seq = self.telemetry.seqs.next();
        t.limits.check_seq(seq, self.telemetry.seqs.highest)?;
        let (_, changed) = self.ingest(seq, at_ms, t.readings, &AnomalyConfig::default())?;
        Ok(changed)
    }

    /// Records a message numbered `seq` by the edge; a redelivery is not held to the sequence
    /// bounds (it changes nothing). Returns the outcome and whether the state changed.
    pub(super) fn record_ingest(
        &mut self,
        seq: u64,
        at_ms: u64,
        readings: BTreeMap<String, f64>,
        anomaly: &AnomalyConfig,
        limits: &SampleLimits,
        now_ms: u64,
    ) -> Result<(IngestOutcome, bool), DomainError> {
        limits.check_time("ts", at_ms, now_ms)?;
        if !self.telemetry.seqs.is_duplicate(seq) {
            limits.check_seq(seq, self.telemetry.seqs.highest)?;
        }
        self.ingest(seq, at_ms, readings, anomaly)
    }

    /// Folds sample `seq` in unless it was seen; returns the outcome and whether it changed.
    fn ingest(
        &mut self,
        seq: u64,
        at_ms: u64,
        readings: BTreeMap<String, f64>,
        cfg: &AnomalyConfig,
    ) -> Result<(IngestOutcome, bool), DomainError> {
        if self.telemetry.seqs.is_duplicate(seq) {
            return Ok((self.redelivered(seq), false));
        }
        self.check_tracked(&readings)?;
        self.telemetry.seqs.accept(seq);
        self.update_last_readings(at_ms, &readings);
        self.telemetry_count = self.telemetry_count.saturating_add(1);
        let alert = self.raise_alert(cfg, seq, at_ms, &readings);
        self.telemetry.record(Sample {
            seq,
            at_ms,
            readings,
        });
        self.bump(true);
        Ok((
            IngestOutcome {
                duplicate: false,
                alert,
            },
            true,
        ))
    }

    /// What a redelivery of sample `seq` answers: the alert it raised, if still kept.
    fn redelivered(&self, seq: u64) -> IngestOutcome {
        let id = self.alert_id(seq);
        let alert = self.alerts.iter().find(|a| a.id == id).cloned();
        IngestOutcome {
            duplicate: true,
            alert,
        }
    }

    /// Refuses readings that would take the device past [`MAX_TRACKED_READINGS`] names.
    fn check_tracked(&self, readings: &BTreeMap<String, f64>) -> Result<(), DomainError> {
        let new_names = readings
            .keys()
            .filter(|k| !self.last_readings.contains_key(*k))
            .count();
        if self.last_readings.len() + new_names > MAX_TRACKED_READINGS {
            return Err(invalid(
                "readings",
                format!("a device tracks at most {MAX_TRACKED_READINGS} distinct readings"),
            ));
        }
        Ok(())
    }

    /// Latest readings go by sample time: a newer sample overwrites, an older one only fills in
    /// readings never seen.
    fn update_last_readings(&mut self, at_ms: u64, readings: &BTreeMap<String, f64>) {
        if self.last_telemetry_ms.is_none_or(|last| at_ms >= last) {
            self.last_readings
                .extend(readings.iter().map(|(k, v)| (k.clone(), *v)));
            self.last_telemetry_ms = Some(at_ms);
        } else {
            for (k, v) in readings {
                self.last_readings.entry(k.clone()).or_insert(*v);
            }
        }
    }

    /// Feeds the detector; keeps and returns the alert it raises, if any.
    fn raise_alert(
        &mut self,
        cfg: &AnomalyConfig,
        seq: u64,
        at_ms: u64,
        readings: &BTreeMap<String, f64>,
    ) -> Option<Alert> {
        let alert = self
            .detector
            .observe(cfg, at_ms, readings)
            .map(|trip| Alert {
                id: self.alert_id(seq),
                seq,
                at_ms,
                reading: trip.reading,
                value: trip.value,
                reason: trip.reason,
                customer_id: self.customer_id.clone(),
                ticket_id: None,
                command_id: None,
                command_sent: false,
                ack_status: None,
                ack_recorded: false,
            });
        if let Some(a) = &alert {
            alerts::push(&mut self.alerts, a.clone());
        }
        alert
    }

    /// `{device}-{seq}`: the same for every delivery of the sample.
    fn alert_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.id)
    }
}
