//! Alerts a device raised and how far the bridge got with each: ticket opened, command sent,
//! acknowledgement recorded. Every step is a flag set once, so a redelivered step changes nothing
//! and a restarted bridge can resume an unfinished chain from the alert alone.
//!
//! ```text
//! Ingest ──▶ Alert{id = "{device}-{seq}"} ──AlertTicket──▶ ticket_id
//!                                          ──IssueCommand{alert_id}──▶ command_id
//!                                          ──CommandSent──▶ command_sent
//!                                          ──CommandAck──▶ ack_status
//!                                          ──AlertAckRecorded──▶ ack_recorded
//! ```

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::validate::DomainError;

/// Alerts kept per device, newest last.
pub const MAX_ALERTS: usize = 50;

/// One anomaly and its follow-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{device_id}-{seq}`: the same for every delivery of the sample.
    pub id: String,
    /// Sequence number of the sample that raised it.
    pub seq: u64,
    /// When that sample was taken, ms since the Unix epoch.
    pub at_ms: u64,
    /// Reading that tripped.
    pub reading: String,
    /// Its value.
    pub value: f64,
    /// Why, e.g. `temperature 71.2 above max 60`.
    pub reason: String,
    /// The device's owner.
    pub customer_id: String,
    /// Support ticket opened for it.
    pub ticket_id: Option<String>,
    /// Command issued to the device for it.
    pub command_id: Option<String>,
    /// Whether that command was sent to the device.
    pub command_sent: bool,
    /// The device's acknowledgement of that command.
    pub ack_status: Option<String>,
    /// Whether the acknowledgement was recorded on the ticket.
    pub ack_recorded: bool,
}

/// Adds `alert`, dropping the oldest beyond [`MAX_ALERTS`].
pub(crate) fn push(alerts: &mut VecDeque<Alert>, alert: Alert) {
    alerts.push_back(alert);
    while alerts.len() > MAX_ALERTS {
        alerts.pop_front();
    }
}

/// Applies `step` to the alert `id`. Returns the alert afterwards and whether it changed, or
/// `NotFound` for an id not kept.
pub(crate) fn update(
    alerts: &mut VecDeque<Alert>,
    id: &str,
    step: impl FnOnce(&mut Alert) -> bool,
) -> Result<(Alert, bool), DomainError> {
    let alert = alerts
        .iter_mut()
        .find(|a| a.id == id)
        .ok_or_else(|| DomainError::NotFound {
            kind: "alert".into(),
            id: id.into(),
        })?;
    let changed = step(alert);
    Ok((alert.clone(), changed))
}

/// Sets `slot` to `value` unless it is already set; returns whether it changed.
pub(crate) fn set_once<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(value);
    true
}

/// Sets `flag`; returns whether it changed.
pub(crate) fn set_flag(flag: &mut bool) -> bool {
    !std::mem::replace(flag, true)
}
