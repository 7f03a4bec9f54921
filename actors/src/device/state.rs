//! The device as persisted today (`STATE_VERSION` 2): identity, latest readings and the parts
//! each other file owns (telemetry log, detector, alerts, twin, commands). Version 1 lives in
//! `v1` and converts into this shape.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::alerts::Alert;
use super::anomaly::Detector;
use super::commands::CommandRecord;
use super::telemetry::TelemetryLog;
use super::twin::Twin;
use crate::validate::{self, invalid, DomainError};

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Id.
    pub id: String,
    /// Owning customer's id.
    pub customer_id: String,
    /// Kind, e.g. `temperature`, `humidity`, `wearable`, `camera`.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
    /// Latest value of each reading, by sample time.
    pub last_readings: BTreeMap<String, f64>,
    /// When the latest telemetry was taken, ms since the Unix epoch.
    pub last_telemetry_ms: Option<u64>,
    /// Telemetry messages accepted (duplicates not counted).
    pub telemetry_count: u64,
    /// Incremented on every change.
    pub version: u64,
    /// Registration time.
    pub created_ms: u64,
    /// Sequence numbers seen, recent samples and history.
    pub(crate) telemetry: TelemetryLog,
    /// Anomaly detector memory.
    pub(crate) detector: Detector,
    /// The last [`MAX_ALERTS`](super::MAX_ALERTS) alerts, newest last.
    pub(crate) alerts: VecDeque<Alert>,
    /// Reported and desired configuration.
    pub(crate) twin: Twin,
    /// The last [`MAX_COMMANDS`](super::MAX_COMMANDS) commands, newest last.
    pub(crate) commands: VecDeque<CommandRecord>,
}

/// Fields of a new device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    /// Owning customer.
    pub customer_id: String,
    /// Kind.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
}

/// Checks the fields of a new device.
pub(super) fn check_new(d: &NewDevice) -> Result<(), DomainError> {
    validate::validate_id("customer_id", &d.customer_id)?;
    if d.kind.is_empty()
        || d.kind.len() > 32
        || !d.kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        return Err(invalid("kind", "must be 1-32 characters of a-z and _"));
    }
    validate::text("firmware", &d.firmware, 64)
}

impl DeviceState {
    /// The device `id` as registered at `now_ms`: version 1, nothing recorded yet.
    pub(super) fn new(id: &str, d: NewDevice, now_ms: u64) -> Self {
        Self {
            id: id.to_string(),
            customer_id: d.customer_id,
            kind: d.kind,
            firmware: d.firmware,
            last_readings: BTreeMap::new(),
            last_telemetry_ms: None,
            telemetry_count: 0,
            version: 1,
            created_ms: now_ms,
            telemetry: Default::default(),
            detector: Default::default(),
            alerts: VecDeque::new(),
            twin: Twin::default(),
            commands: VecDeque::new(),
        }
    }

    /// Counts a change, if there was one.
    pub(super) fn bump(&mut self, changed: bool) {
        if changed {
            self.version = self.version.saturating_add(1);
        }
    }

    /// Keeps the device but forgets its owner and the alerts raised for them; returns whether
    /// anything changed (a device without an owner is left alone).
    pub(super) fn detach(&mut self) -> bool {
        if self.customer_id.is_empty() {
            return false;
        }
        self.customer_id.clear();
        self.alerts.clear();
        self.bump(true);
        true
    }
}
