//! What a customer accepts and answers: [`CustomerCommand`], its stateless field checks (the
//! gateway runs them before sending, the entity again before applying), and [`CustomerAnswer`].
//! Both enums are on the wire by variant index: new variants go at the end.

use serde::{Deserialize, Serialize};

use super::interactions::{self, NewInteraction};
use super::profile::{self, CustomerPatch, NewCustomer};
use super::state::{Interaction, Ticket};
use super::tickets;
use super::view::CustomerView;
use crate::validate::{self, DomainError};

/// Commands a customer accepts. New variants go at the end: the index is on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerCommand {
    /// Create; fails if it exists. Answers `Customer`.
    Create(NewCustomer),
    /// Read. Answers `Customer`.
    Get,
    /// Change some fields. Answers `Customer`.
    Update(CustomerPatch),
    /// Delete. Answers `Deleted`.
    Delete,
    /// Append an interaction. Answers `InteractionAdded`.
    AddInteraction(NewInteraction),
    /// Open a ticket for a device alert; the ticket for that alert, if among the last
    /// [`MAX_TICKETS`](super::MAX_TICKETS), is returned as is. Answers `Ticket`.
    OpenTicket {
        /// The alert.
        alert_id: String,
        /// The device that raised it.
        device_id: String,
        /// What happened, for a person.
        summary: String,
    },
    /// Record that the device acknowledged the command sent for the alert; only the first
    /// acknowledgement counts. Answers `Ticket`.
    RecordTicketAck {
        /// The alert whose ticket it is.
        alert_id: String,
        /// The command acknowledged.
        command_id: String,
        /// What the device said, e.g. `ok`.
        status: String,
    },
    /// Read the tickets kept. Answers `Tickets`.
    ListTickets,
    /// Read up to `limit` interactions numbered after `after`. Answers `Interactions`.
    ListInteractions {
        /// Sequence number to start after (0: from the first).
        after: u64,
        /// Most interactions to return.
        limit: u32,
    },
    /// Record that a device is registered to this customer (again: nothing changes). Answers
    /// `Customer`.
    LinkDevice {
        /// The device.
        device_id: String,
    },
}

/// What a customer command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerAnswer {
    /// The customer after the command.
    Customer(CustomerView),
    /// The customer was deleted.
    Deleted,
    /// One ticket.
    Ticket(Ticket),
    /// Every ticket kept, oldest first.
    Tickets(Vec<Ticket>),
    /// An interaction just recorded, and the customer's version after it.
    InteractionAdded {
        /// The interaction.
        interaction: Interaction,
        /// The customer's version.
        version: u64,
    },
    /// A page of interactions, oldest first.
    Interactions {
        /// The page.
        items: Vec<Interaction>,
        /// Interactions recorded in all.
        total: u64,
    },
}

/// The answer, or why the command was refused.
pub type CustomerReply = Result<CustomerAnswer, DomainError>;

impl CustomerCommand {
    /// Checks the command's fields without any state: the gateway calls this before sending, the
    /// entity again before applying.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            CustomerCommand::Create(c) => profile::check_new(c),
            CustomerCommand::Update(p) => profile::check_patch(p),
            CustomerCommand::AddInteraction(i) => interactions::check_new(i),
            CustomerCommand::OpenTicket {
                alert_id,
                device_id,
                summary,
            } => tickets::check_open(alert_id, device_id, summary),
            CustomerCommand::RecordTicketAck {
                alert_id,
                command_id,
                status,
            } => tickets::check_ack(alert_id, command_id, status),
            CustomerCommand::ListInteractions { limit, .. } => interactions::check_page(*limit),
            CustomerCommand::LinkDevice { device_id } => {
                validate::validate_id("device_id", device_id)
            }
            CustomerCommand::Get | CustomerCommand::Delete | CustomerCommand::ListTickets => Ok(()),
        }
    }

    /// Whether the command only reads (and so may be served by a follower).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            CustomerCommand::Get
                | CustomerCommand::ListTickets
                | CustomerCommand::ListInteractions { .. }
        )
    }
}
