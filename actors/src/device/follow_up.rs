//! The steps after an alert, as the bridge drives them: a ticket opened, a command issued, sent
//! and acknowledged, the acknowledgement recorded on the ticket. Each step sets its mark once, on
//! the command record and on the alert it answers, so a redelivered step changes nothing.
//!
//! ```text
//! AlertTicket{alert_id}        ──▶ alert.ticket_id
//! IssueCommand{id, alert_id}   ──▶ CommandRecord + alert.command_id
//! CommandSent{id}              ──▶ record.sent + alert.command_sent
//! CommandAck{id, status}       ──▶ record.ack + alert.ack_status (first acknowledgement wins)
//! AlertAckRecorded{alert_id}   ──▶ alert.ack_recorded
//! ```

use std::collections::BTreeMap;

use super::alerts::{self, Alert};
use super::commands::{self, CommandAck, CommandRecord};
use super::protocol::{Applied, DeviceAnswer};
use super::state::DeviceState;
use super::twin::TwinValue;

impl DeviceState {
    /// Notes the ticket opened for `alert_id`.
    pub(super) fn alert_ticket(&mut self, alert_id: &str, ticket_id: String) -> Applied {
        let (alert, changed) = alerts::update(&mut self.alerts, alert_id, |a| {
            alerts::set_once(&mut a.ticket_id, ticket_id)
        })?;
        self.bump(changed);
        Ok((DeviceAnswer::Alert(alert), changed))
    }

    /// Notes that the acknowledgement for `alert_id` was recorded on its ticket.
    pub(super) fn alert_ack_recorded(&mut self, alert_id: &str) -> Applied {
        let (alert, changed) = alerts::update(&mut self.alerts, alert_id, |a| {
            alerts::set_flag(&mut a.ack_recorded)
        })?;
        self.bump(changed);
        Ok((DeviceAnswer::Alert(alert), changed))
    }

    /// Records command `id` (again: the existing record, unchanged) and names it on its alert.
    pub(super) fn issue_command(
        &mut self,
        id: String,
        name: String,
        params: BTreeMap<String, TwinValue>,
        alert_id: Option<String>,
        now_ms: u64,
    ) -> Applied {
        if let Some(existing) = commands::find(&self.commands, &id) {
            return Ok((DeviceAnswer::Command(existing.clone()), false));
        }
        if let Some(a) = &alert_id {
            alerts::update(&mut self.alerts, a, |alert| {
                alerts::set_once(&mut alert.command_id, id.clone())
            })?;
        }
        let record = CommandRecord {
            id,
            name,
            params,
            alert_id,
            created_ms: now_ms,
            sent: false,
            ack: None,
        };
        commands::push(&mut self.commands, record.clone());
        self.bump(true);
        Ok((DeviceAnswer::Command(record), true))
    }

    /// Marks command `id` sent, on its record and its alert.
    pub(super) fn command_sent(&mut self, id: &str) -> Applied {
        let command = commands::find_mut(&mut self.commands, id)?;
        let mut changed = alerts::set_flag(&mut command.sent);
        let record = command.clone();
        changed |= self.alert_of_command(record.alert_id.as_deref(), id, |a| {
            alerts::set_flag(&mut a.command_sent)
        });
        self.bump(changed);
        Ok((DeviceAnswer::Command(record), changed))
    }

    /// Records the first acknowledgement of command `id`, on its record and its alert.
    pub(super) fn command_ack(&mut self, id: &str, status: String, now_ms: u64) -> Applied {
        let command = commands::find_mut(&mut self.commands, id)?;
        if command.ack.is_some() {
            return Ok((DeviceAnswer::Command(command.clone()), false));
        }
        // An acknowledged command was evidently sent, even if that step was never recorded.
        command.sent = true;
        command.ack = Some(CommandAck {
            status: status.clone(),
            at_ms: now_ms,
        });
        let record = command.clone();
        self.alert_of_command(record.alert_id.as_deref(), id, |a| {
            a.command_sent = true;
            alerts::set_once(&mut a.ack_status, status)
        });
        self.bump(true);
        Ok((DeviceAnswer::Command(record), true))
    }

    /// Applies `step` to the alert the command `command_id` answers, if that alert is still kept
    /// and names this command; returns whether it changed.
    fn alert_of_command(
        &mut self,
        alert_id: Option<&str>,
        command_id: &str,
        step: impl FnOnce(&mut Alert) -> bool,
    ) -> bool {
        let Some(alert) = alert_id.and_then(|a| self.alerts.iter_mut().find(|x| x.id == a)) else {
            return false;
        };
        alert.command_id.as_deref() == Some(command_id) && step(alert)
    }
}
