//! Support tickets opened for device alerts, one per alert, and the acknowledgement recorded on
//! each. Both steps are idempotent so the bridge can redeliver them.
//!
//! ```text
//! OpenTicket{alert_id} ──▶ Ticket{id = "t-{alert_id}", open}   (again: the same ticket)
//! RecordTicketAck{alert_id} ──▶ acknowledged + note             (first acknowledgement wins)
//! ```

use super::state::{CustomerState, Ticket, TICKET_ACKNOWLEDGED, TICKET_OPEN};
use crate::validate::{self, validate_ref, DomainError};

/// Tickets kept per customer; the oldest are dropped.
pub const MAX_TICKETS: usize = 200;

/// Longest ticket summary, in characters.
pub const MAX_TICKET_SUMMARY: usize = 500;

/// Longest acknowledgement status, in characters.
pub const MAX_TICKET_ACK_STATUS: usize = 64;

/// The id of the ticket for `alert_id`.
pub fn ticket_id(alert_id: &str) -> String {
    format!("t-{alert_id}")
}

/// Checks the fields of `OpenTicket`.
pub(super) fn check_open(
    alert_id: &str,
    device_id: &str,
    summary: &str,
) -> Result<(), DomainError> {
    validate_ref("alert_id", alert_id)?;
    validate::validate_id("device_id", device_id)?;
    validate::text("summary", summary, MAX_TICKET_SUMMARY)
}

/// Checks the fields of `RecordTicketAck`.
pub(super) fn check_ack(alert_id: &str, command_id: &str, status: &str) -> Result<(), DomainError> {
    validate_ref("alert_id", alert_id)?;
    validate_ref("command_id", command_id)?;
    validate::text("status", status, MAX_TICKET_ACK_STATUS)
}

impl CustomerState {
    /// Opens the ticket for `alert_id` unless it is kept already; returns it and whether it is new.
    pub(super) fn open_ticket(
        &mut self,
        alert_id: String,
        device_id: String,
        summary: String,
        now_ms: u64,
    ) -> (Ticket, bool) {
        if let Some(t) = self.tickets.iter().find(|t| t.alert_id == alert_id) {
            return (t.clone(), false);
        }
        let ticket = Ticket {
            id: ticket_id(&alert_id),
            alert_id,
            device_id,
            summary,
            status: TICKET_OPEN.into(),
            opened_ms: now_ms,
            command_id: None,
            ack_status: None,
            notes: Vec::new(),
        };
        self.tickets.push(ticket.clone());
        if self.tickets.len() > MAX_TICKETS {
            self.tickets.remove(0);
        }
        self.touch(now_ms);
        (ticket, true)
    }

    /// Records the first acknowledgement on the ticket for `alert_id`; returns it and whether it
    /// changed.
    pub(super) fn record_ticket_ack(
        &mut self,
        alert_id: &str,
        command_id: String,
        status: String,
        now_ms: u64,
    ) -> Result<(Ticket, bool), DomainError> {
        let ticket = self
            .tickets
            .iter_mut()
            .find(|t| t.alert_id == alert_id)
            .ok_or_else(|| DomainError::NotFound {
                kind: "ticket".into(),
                id: ticket_id(alert_id),
            })?;
        if ticket.ack_status.is_some() {
            return Ok((ticket.clone(), false));
        }
        ticket
            .notes
            .push(format!("command {command_id} acknowledged: {status}"));
        ticket.status = TICKET_ACKNOWLEDGED.into();
        ticket.command_id = Some(command_id);
        ticket.ack_status = Some(status);
        let ticket = ticket.clone();
        self.touch(now_ms);
        Ok((ticket, true))
    }
}
