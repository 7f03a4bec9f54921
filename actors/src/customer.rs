//! The Customer entity: contact details, tags, consent flags, the devices it owns, the support
//! tickets opened for their alerts, and an append-only list of interactions kept in the entity's
//! journal (one record each, read by page). Persisted as [`CustomerState`] behind
//! `STATE_VERSION`; version 1 and 2 states are upgraded on load.
//!
//! ```text
//! gateway ──Create / Get / Update / Delete / AddInteraction──▶ contact record ──▶ CustomerView
//! bridge ──OpenTicket{alert_id}──▶ ticket "t-{alert_id}" (again: the same ticket)
//!        ──RecordTicketAck{alert_id}──▶ acknowledged, first acknowledgement wins
//! ```
//!
//! The parts, each a file under `customer/`:
//!
//! ```text
//! protocol ── CustomerCommand (checked by validate) ──▶ Customer::handle ──▶ CustomerAnswer
//!                                                         │ create, update   ── profile
//!                                                         │ interactions     ── interactions (journal)
//!                                                         │ device links     ── devices
//!                                                         │ tickets          ── tickets
//!                                                         └ the reply's view ── view
//! state (version 3) ◀── v2 ◀── v1: older persisted shapes, upgraded on load
//! ```

mod devices;
mod interactions;
mod profile;
mod protocol;
mod state;
mod tickets;
mod v1;
mod v2;
mod view;

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};

use crate::validate::DomainError;

pub use devices::MAX_DEVICES;
pub use interactions::{NewInteraction, MAX_INTERACTIONS, MAX_INTERACTION_PAGE};
pub use profile::{CustomerPatch, NewCustomer};
pub use protocol::{CustomerAnswer, CustomerCommand, CustomerReply};
pub use state::{Consent, CustomerState, Interaction, Ticket, TICKET_ACKNOWLEDGED, TICKET_OPEN};
pub use tickets::{ticket_id, MAX_TICKETS};
pub use view::{CustomerView, VIEW_INTERACTIONS};

/// The customer entity kind.
pub struct Customer;

/// `reply`, as a write if the state changed to give it.
fn answered(reply: CustomerReply, changed: bool) -> Handled<CustomerReply> {
    if changed {
        Handled::wrote(reply)
    } else {
        Handled::read(reply)
    }
}

/// Runs a command on a customer that exists (other than `Delete`, which removes the state).
fn apply(
    ctx: &EntityContext<'_>,
    s: &mut CustomerState,
    command: CustomerCommand,
) -> Result<Handled<CustomerReply>, EntityError> {
    use CustomerAnswer as A;
    use CustomerCommand as C;
    Ok(match command {
        C::Create(_) => Handled::read(Err(DomainError::AlreadyExists {
            kind: Customer::KIND.into(),
            id: ctx.id.into(),
        })),
        C::Get => Handled::read(Ok(A::Customer(s.view(ctx)?))),
        C::Update(p) => {
            s.update(p, ctx.now_ms);
            Handled::wrote(Ok(A::Customer(s.view(ctx)?)))
        }
        C::Delete => unreachable!("handled with the state in Customer::handle"),
        C::AddInteraction(i) => match s.add_interaction(ctx, i) {
            Ok((interaction, record)) => {
                let version = s.version;
                Handled::appended(
                    Ok(A::InteractionAdded {
                        interaction,
                        version,
                    }),
                    record,
                )
            }
            Err(e) => Handled::read(Err(e)),
        },
        C::ListInteractions { after, limit } => Handled::read(Ok(A::Interactions {
            items: s.interactions(ctx, after, limit as usize)?,
            total: s.interaction_count(ctx),
        })),
        C::LinkDevice { device_id } => match s.link_device(device_id, ctx.now_ms) {
            Ok(changed) => answered(Ok(A::Customer(s.view(ctx)?)), changed),
            Err(e) => Handled::read(Err(e)),
        },
        C::OpenTicket {
            alert_id,
            device_id,
            summary,
        } => {
            let (ticket, opened) = s.open_ticket(alert_id, device_id, summary, ctx.now_ms);
            answered(Ok(A::Ticket(ticket)), opened)
        }
        C::RecordTicketAck {
            alert_id,
            command_id,
            status,
        } => match s.record_ticket_ack(&alert_id, command_id, status, ctx.now_ms) {
            Ok((ticket, changed)) => answered(Ok(A::Ticket(ticket)), changed),
            Err(e) => Handled::read(Err(e)),
        },
        C::ListTickets => Handled::read(Ok(A::Tickets(s.tickets.clone()))),
    })
}

impl Entity for Customer {
    const KIND: &'static str = "customer";
    const STATE_VERSION: u8 = 3;
    type State = CustomerState;
    type Command = CustomerCommand;
    type Reply = CustomerReply;

    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<CustomerState>,
        command: CustomerCommand,
    ) -> Result<Handled<CustomerReply>, EntityError> {
        if let Err(e) = command.validate() {
            return Ok(Handled::read(Err(e)));
        }
        match (command, state.as_mut()) {
            (CustomerCommand::Create(c), None) => {
                let created = CustomerState::create(ctx.id, c, ctx.now_ms);
                let view = created.view(ctx)?;
                *state = Some(created);
                Ok(Handled::wrote(Ok(CustomerAnswer::Customer(view))))
            }
            (CustomerCommand::Delete, Some(_)) => {
                *state = None;
                Ok(Handled::wrote(Ok(CustomerAnswer::Deleted)))
            }
            (_, None) => Ok(Handled::read(Err(DomainError::NotFound {
                kind: Self::KIND.into(),
                id: ctx.id.into(),
            }))),
            (command, Some(s)) => apply(ctx, s, command),
        }
    }

    fn upgrade(version: u8, body: &[u8]) -> Option<CustomerState> {
        match version {
            v1::VERSION => Self::decode_body::<v1::CustomerState>(version, body)
                .ok()
                .map(|old| v2::CustomerState::from(old).into()),
            v2::VERSION => Self::decode_body::<v2::CustomerState>(version, body)
                .ok()
                .map(CustomerState::from),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "customer_test.rs"]
mod tests;
