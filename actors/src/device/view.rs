//! A device as returned by `Get`, `Register` and `Telemetry`: its summary, with the twin's
//! versions and the latest alerts (read the rest with `GetTelemetry`, `GetTwin`, `ListAlerts`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alerts::Alert;
use super::state::DeviceState;

/// Alerts included in a [`DeviceView`], newest last.
pub const VIEW_ALERTS: usize = 10;

/// A device as returned by `Get`, `Register` and `Telemetry`: its summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Owning customer's id.
    pub customer_id: String,
    /// Kind.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
    /// Latest value of each reading.
    pub last_readings: BTreeMap<String, f64>,
    /// When the latest telemetry was taken, ms since the Unix epoch.
    pub last_telemetry_ms: Option<u64>,
    /// Telemetry messages accepted.
    pub telemetry_count: u64,
    /// Incremented on every change.
    pub version: u64,
    /// Registration time.
    pub created_ms: u64,
    /// Highest telemetry sequence number accepted.
    pub highest_seq: Option<u64>,
    /// Version of the twin's reported state.
    pub twin_reported_version: u64,
    /// Version of the twin's desired state.
    pub twin_desired_version: u64,
    /// The last [`VIEW_ALERTS`] alerts, newest last.
    pub alerts: Vec<Alert>,
}

impl DeviceState {
    /// The summary returned to callers.
    pub fn view(&self) -> DeviceView {
        DeviceView {
            id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            kind: self.kind.clone(),
            firmware: self.firmware.clone(),
            last_readings: self.last_readings.clone(),
            last_telemetry_ms: self.last_telemetry_ms,
            telemetry_count: self.telemetry_count,
            version: self.version,
            created_ms: self.created_ms,
            highest_seq: self.telemetry.seqs.highest,
            twin_reported_version: self.twin.reported_version,
            twin_desired_version: self.twin.desired_version,
            alerts: self
                .alerts
                .iter()
                .skip(self.alerts.len().saturating_sub(VIEW_ALERTS))
                .cloned()
                .collect(),
        }
    }
}
