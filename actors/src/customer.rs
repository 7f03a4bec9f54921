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

use keelson_runtime::{
    decode_payload, encode_payload, Entity, EntityContext, EntityError, Handled,
};
use serde::{Deserialize, Serialize};

use crate::device::validate_ref;
use crate::validate::{self, invalid, DomainError};

/// Which channels the customer agreed to be contacted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Marketing e-mail.
    #[serde(default)]
    pub email: bool,
    /// Text messages.
    #[serde(default)]
    pub sms: bool,
    /// Phone calls.
    #[serde(default)]
    pub phone: bool,
}

/// One recorded interaction (a call, an order, a ticket...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// Position in the list, from 1.
    pub seq: u64,
    /// What kind of interaction, e.g. `call`, `order`, `ticket`.
    pub kind: String,
    /// What it was about, e.g. an order or ticket reference.
    pub item: String,
    /// When it happened, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A support ticket opened for a device alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// `t-{alert_id}`: one ticket per alert.
    pub id: String,
    /// The alert it is about.
    pub alert_id: String,
    /// The device that raised it.
    pub device_id: String,
    /// What happened, for a person.
    pub summary: String,
    /// `open`, or `acknowledged` once the device acknowledged the command sent for it.
    pub status: String,
    /// When it was opened, ms since the Unix epoch.
    pub opened_ms: u64,
    /// The command whose acknowledgement was recorded.
    pub command_id: Option<String>,
    /// That acknowledgement's status, e.g. `ok`.
    pub ack_status: Option<String>,
    /// What happened since, oldest first.
    pub notes: Vec<String>,
}

/// Status of a ticket just opened.
pub const TICKET_OPEN: &str = "open";

/// Status of a ticket whose command the device acknowledged.
pub const TICKET_ACKNOWLEDGED: &str = "acknowledged";

/// A customer as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    /// Id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Consent flags.
    pub consent: Consent,
    /// Interactions recorded before they moved to the journal (version 2 states), oldest
    /// first; numbered before the journal's.
    pub early_interactions: Vec<Interaction>,
    /// Incremented on every change.
    pub version: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last change, ms since the Unix epoch.
    pub updated_ms: u64,
    /// The last [`MAX_TICKETS`] tickets, oldest first.
    pub tickets: Vec<Ticket>,
    /// Devices registered to this customer, oldest first: what an erasure removes.
    pub devices: Vec<String>,
}

/// A customer as returned: everything but its tickets, which are read with `ListTickets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerView {
    /// Id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Consent flags.
    pub consent: Consent,
    /// Interactions recorded; read them all, by page, with `GET /v1/customers/{id}/interactions`.
    pub interaction_count: u64,
    /// The last [`VIEW_INTERACTIONS`] interactions, oldest first.
    pub interactions: Vec<Interaction>,
    /// Devices registered to this customer.
    pub devices: Vec<String>,
    /// Incremented on every change.
    pub version: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last change, ms since the Unix epoch.
    pub updated_ms: u64,
}

/// Fields of a new customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCustomer {
    /// Full name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Consent flags.
    pub consent: Consent,
}

/// A partial update: `None` leaves a field alone; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPatch {
    /// New name.
    pub name: Option<String>,
    /// New or cleared e-mail.
    pub email: Option<Option<String>>,
    /// New or cleared phone.
    pub phone: Option<Option<String>>,
    /// New or cleared company.
    pub company: Option<Option<String>>,
    /// New tag list.
    pub tags: Option<Vec<String>>,
    /// New consent flags.
    pub consent: Option<Consent>,
}

/// A new interaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInteraction {
    /// Kind.
    pub kind: String,
    /// Item.
    pub item: String,
    /// When; now if absent.
    pub at_ms: Option<u64>,
}

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
    /// Append an interaction. Answers `Customer`.
    AddInteraction(NewInteraction),
    /// Open a ticket for a device alert; the ticket for that alert, if among the last
    /// [`MAX_TICKETS`], is returned as is. Answers `Ticket`.
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

/// Most interactions kept per customer; the oldest are not dropped, the append is refused.
pub const MAX_INTERACTIONS: u64 = 100_000;

/// Most interactions returned in one page.
pub const MAX_INTERACTION_PAGE: u32 = 1_000;

/// Interactions included in a [`CustomerView`], the most recent.
pub const VIEW_INTERACTIONS: u64 = 20;

/// Most devices one customer may own.
pub const MAX_DEVICES: usize = 1_000;

/// Tickets kept per customer; the oldest are dropped.
pub const MAX_TICKETS: usize = 200;

/// Longest ticket summary, in characters.
pub const MAX_TICKET_SUMMARY: usize = 500;

/// Longest acknowledgement status, in characters.
pub const MAX_TICKET_ACK_STATUS: usize = 64;

/// The customer entity kind.
pub struct Customer;

fn check_new(c: &NewCustomer) -> Result<(), DomainError> {
    validate::text("name", &c.name, 200)?;
    if let Some(e) = &c.email {
        validate::email("email", e)?;
    }
    if let Some(p) = &c.phone {
        validate::phone("phone", p)?;
    }
    if let Some(co) = &c.company {
        validate::text("company", co, 200)?;
    }
    validate::tags("tags", &c.tags)
}

fn check_patch(p: &CustomerPatch) -> Result<(), DomainError> {
    if let Some(n) = &p.name {
        validate::text("name", n, 200)?;
    }
    if let Some(Some(e)) = &p.email {
        validate::email("email", e)?;
    }
    if let Some(Some(ph)) = &p.phone {
        validate::phone("phone", ph)?;
    }
    if let Some(Some(co)) = &p.company {
        validate::text("company", co, 200)?;
    }
    if let Some(t) = &p.tags {
        validate::tags("tags", t)?;
    }
    Ok(())
}

impl CustomerCommand {
    /// Checks the command's fields without any state: the gateway calls this before sending, the
    /// entity again before applying.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            CustomerCommand::Create(c) => check_new(c),
            CustomerCommand::Update(p) => check_patch(p),
            CustomerCommand::AddInteraction(i) => {
                validate::text("kind", &i.kind, 40)?;
                validate::text("item", &i.item, 500)
            }
            CustomerCommand::OpenTicket {
                alert_id,
                device_id,
                summary,
            } => {
                validate_ref("alert_id", alert_id)?;
                validate::validate_id("device_id", device_id)?;
                validate::text("summary", summary, MAX_TICKET_SUMMARY)
            }
            CustomerCommand::RecordTicketAck {
                alert_id,
                command_id,
                status,
            } => {
                validate_ref("alert_id", alert_id)?;
                validate_ref("command_id", command_id)?;
                validate::text("status", status, MAX_TICKET_ACK_STATUS)
            }
            CustomerCommand::ListInteractions { limit, .. } => {
                if !(1..=MAX_INTERACTION_PAGE).contains(limit) {
                    return Err(invalid(
                        "limit",
                        format!("{limit} is outside 1..={MAX_INTERACTION_PAGE}"),
                    ));
                }
                Ok(())
            }
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

/// The id of the ticket for `alert_id`.
pub fn ticket_id(alert_id: &str) -> String {
    format!("t-{alert_id}")
}

impl CustomerState {
    /// The customer as returned, with its last interactions read from the journal.
    pub fn view(&self, ctx: &EntityContext<'_>) -> Result<CustomerView, EntityError> {
        let journal_len = ctx.journal_len;
        let count = self.early_interactions.len() as u64 + journal_len;
        let recent = self.interactions(
            ctx,
            count.saturating_sub(VIEW_INTERACTIONS),
            VIEW_INTERACTIONS as usize,
        )?;
        Ok(CustomerView {
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            company: self.company.clone(),
            tags: self.tags.clone(),
            consent: self.consent,
            interaction_count: count,
            interactions: recent,
            devices: self.devices.clone(),
            version: self.version,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }

    /// Up to `limit` interactions numbered after `after`: the early ones, then the journal's.
    fn interactions(
        &self,
        ctx: &EntityContext<'_>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Interaction>, EntityError> {
        let early = self.early_interactions.len() as u64;
        let mut out: Vec<Interaction> = self
            .early_interactions
            .iter()
            .filter(|i| i.seq > after)
            .take(limit)
            .cloned()
            .collect();
        if out.len() < limit {
            let from = after.saturating_sub(early);
            for (_, bytes) in ctx.journal(from, limit - out.len())? {
                let i: Interaction = decode_payload(&bytes)
                    .map_err(|e| EntityError(format!("interaction record does not decode: {e}")))?;
                out.push(i);
            }
        }
        Ok(out)
    }

    fn touch(&mut self, now_ms: u64) {
        self.version = self.version.saturating_add(1);
        self.updated_ms = now_ms;
    }

    /// Opens the ticket for `alert_id` unless it is kept already; returns it and whether it is new.
    fn open_ticket(
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
    fn record_ticket_ack(
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
        let not_found = || DomainError::NotFound {
            kind: Self::KIND.into(),
            id: ctx.id.into(),
        };
        if let Err(e) = command.validate() {
            return Ok(Handled::read(Err(e)));
        }
        Ok(match (command, state.as_mut()) {
            (CustomerCommand::Create(_), Some(_)) => {
                Handled::read(Err(DomainError::AlreadyExists {
                    kind: Self::KIND.into(),
                    id: ctx.id.into(),
                }))
            }
            (CustomerCommand::Create(c), None) => {
                let created = CustomerState {
                    id: ctx.id.to_string(),
                    name: c.name,
                    email: c.email,
                    phone: c.phone,
                    company: c.company,
                    tags: c.tags,
                    consent: c.consent,
                    early_interactions: Vec::new(),
                    version: 1,
                    created_ms: ctx.now_ms,
                    updated_ms: ctx.now_ms,
                    tickets: Vec::new(),
                    devices: Vec::new(),
                };
                let view = created.view(ctx)?;
                *state = Some(created);
                Handled::wrote(Ok(CustomerAnswer::Customer(view)))
            }
            (_, None) => Handled::read(Err(not_found())),
            (CustomerCommand::Get, Some(s)) => {
                Handled::read(Ok(CustomerAnswer::Customer(s.view(ctx)?)))
            }
            (CustomerCommand::Update(p), Some(s)) => {
                if let Some(n) = p.name {
                    s.name = n;
                }
                if let Some(e) = p.email {
                    s.email = e;
                }
                if let Some(ph) = p.phone {
                    s.phone = ph;
                }
                if let Some(co) = p.company {
                    s.company = co;
                }
                if let Some(t) = p.tags {
                    s.tags = t;
                }
                if let Some(c) = p.consent {
                    s.consent = c;
                }
                s.touch(ctx.now_ms);
                Handled::wrote(Ok(CustomerAnswer::Customer(s.view(ctx)?)))
            }
            (CustomerCommand::Delete, Some(_)) => {
                *state = None;
                Handled::wrote(Ok(CustomerAnswer::Deleted))
            }
            (CustomerCommand::AddInteraction(i), Some(s)) => {
                let count = s.early_interactions.len() as u64 + ctx.journal_len;
                if count >= MAX_INTERACTIONS {
                    return Ok(Handled::read(Err(invalid(
                        "interactions",
                        format!(
                            "customer already has the maximum of {MAX_INTERACTIONS} interactions"
                        ),
                    ))));
                }
                let interaction = Interaction {
                    seq: count + 1,
                    kind: i.kind,
                    item: i.item,
                    at_ms: i.at_ms.unwrap_or(ctx.now_ms),
                };
                s.touch(ctx.now_ms);
                let record = encode_payload(&interaction);
                Handled::appended(
                    Ok(CustomerAnswer::InteractionAdded {
                        interaction,
                        version: s.version,
                    }),
                    record,
                )
            }
            (CustomerCommand::ListInteractions { after, limit }, Some(s)) => {
                let items = s.interactions(ctx, after, limit as usize)?;
                Handled::read(Ok(CustomerAnswer::Interactions {
                    items,
                    total: s.early_interactions.len() as u64 + ctx.journal_len,
                }))
            }
            (CustomerCommand::LinkDevice { device_id }, Some(s)) => {
                if s.devices.contains(&device_id) {
                    return Ok(Handled::read(Ok(CustomerAnswer::Customer(s.view(ctx)?))));
                }
                if s.devices.len() >= MAX_DEVICES {
                    return Ok(Handled::read(Err(invalid(
                        "customer_id",
                        format!("the customer already owns the maximum of {MAX_DEVICES} devices"),
                    ))));
                }
                s.devices.push(device_id);
                s.touch(ctx.now_ms);
                Handled::wrote(Ok(CustomerAnswer::Customer(s.view(ctx)?)))
            }
            (
                CustomerCommand::OpenTicket {
                    alert_id,
                    device_id,
                    summary,
                },
                Some(s),
            ) => {
                let (ticket, opened) = s.open_ticket(alert_id, device_id, summary, ctx.now_ms);
                if opened {
                    Handled::wrote(Ok(CustomerAnswer::Ticket(ticket)))
                } else {
                    Handled::read(Ok(CustomerAnswer::Ticket(ticket)))
                }
            }
            (
                CustomerCommand::RecordTicketAck {
                    alert_id,
                    command_id,
                    status,
                },
                Some(s),
            ) => match s.record_ticket_ack(&alert_id, command_id, status, ctx.now_ms) {
                Ok((ticket, true)) => Handled::wrote(Ok(CustomerAnswer::Ticket(ticket))),
                Ok((ticket, false)) => Handled::read(Ok(CustomerAnswer::Ticket(ticket))),
                Err(e) => Handled::read(Err(e)),
            },
            (CustomerCommand::ListTickets, Some(s)) => {
                Handled::read(Ok(CustomerAnswer::Tickets(s.tickets.clone())))
            }
        })
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

/// Version 1 of the persisted customer state, before tickets. Frozen: loaded states of this
/// version are converted by [`From`] with no tickets.
pub(crate) mod v1 {
    use serde::{Deserialize, Serialize};

    use super::{Consent, Interaction};

    /// `STATE_VERSION` of this shape.
    pub(crate) const VERSION: u8 = 1;

    /// A customer as version 1 stored it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(crate) struct CustomerState {
        pub id: String,
        pub name: String,
        pub email: Option<String>,
        pub phone: Option<String>,
        pub company: Option<String>,
        pub tags: Vec<String>,
        pub consent: Consent,
        pub interactions: Vec<Interaction>,
        pub version: u64,
        pub created_ms: u64,
        pub updated_ms: u64,
    }

    impl From<CustomerState> for super::v2::CustomerState {
        fn from(old: CustomerState) -> Self {
            Self {
                id: old.id,
                name: old.name,
                email: old.email,
                phone: old.phone,
                company: old.company,
                tags: old.tags,
                consent: old.consent,
                interactions: old.interactions,
                version: old.version,
                created_ms: old.created_ms,
                updated_ms: old.updated_ms,
                tickets: Vec::new(),
            }
        }
    }
}

/// Version 2 of the persisted customer state: interactions inline, no device list. Frozen:
/// loaded states of this version keep their interactions as the early ones.
pub(crate) mod v2 {
    use serde::{Deserialize, Serialize};

    use super::{Consent, Interaction, Ticket};

    /// `STATE_VERSION` of this shape.
    pub(crate) const VERSION: u8 = 2;

    /// A customer as version 2 stored it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(crate) struct CustomerState {
        pub id: String,
        pub name: String,
        pub email: Option<String>,
        pub phone: Option<String>,
        pub company: Option<String>,
        pub tags: Vec<String>,
        pub consent: Consent,
        pub interactions: Vec<Interaction>,
        pub version: u64,
        pub created_ms: u64,
        pub updated_ms: u64,
        pub tickets: Vec<Ticket>,
    }

    impl From<CustomerState> for super::CustomerState {
        fn from(old: CustomerState) -> Self {
            Self {
                id: old.id,
                name: old.name,
                email: old.email,
                phone: old.phone,
                company: old.company,
                tags: old.tags,
                consent: old.consent,
                early_interactions: old.interactions,
                version: old.version,
                created_ms: old.created_ms,
                updated_ms: old.updated_ms,
                tickets: old.tickets,
                devices: Vec::new(),
            }
        }
    }
}

#[cfg(test)]
#[path = "customer_test.rs"]
mod tests;
