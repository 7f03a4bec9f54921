//! The Customer entity: contact details, tags, consent flags and an append-only list of
//! interactions. Persisted as [`CustomerState`] behind `STATE_VERSION`.

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

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

/// A customer as stored and as returned.
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
    /// Interactions, oldest first.
    pub interactions: Vec<Interaction>,
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

/// Commands a customer accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerCommand {
    /// Create; fails if it exists.
    Create(NewCustomer),
    /// Read.
    Get,
    /// Change some fields.
    Update(CustomerPatch),
    /// Delete.
    Delete,
    /// Append an interaction.
    AddInteraction(NewInteraction),
}

/// The answer: the customer after the command (`None` after a delete) or why it was refused.
pub type CustomerReply = Result<Option<CustomerState>, DomainError>;

/// Most interactions kept per customer; the oldest are not dropped, the append is refused.
pub const MAX_INTERACTIONS: usize = 10_000;

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
            CustomerCommand::Get | CustomerCommand::Delete => Ok(()),
        }
    }
}

impl Entity for Customer {
    const KIND: &'static str = "customer";
    const STATE_VERSION: u8 = 1;
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
                    interactions: Vec::new(),
                    version: 1,
                    created_ms: ctx.now_ms,
                    updated_ms: ctx.now_ms,
                };
                *state = Some(created.clone());
                Handled::wrote(Ok(Some(created)))
            }
            (_, None) => Handled::read(Err(not_found())),
            (CustomerCommand::Get, Some(s)) => Handled::read(Ok(Some(s.clone()))),
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
                s.version += 1;
                s.updated_ms = ctx.now_ms;
                Handled::wrote(Ok(Some(s.clone())))
            }
            (CustomerCommand::Delete, Some(_)) => {
                *state = None;
                Handled::wrote(Ok(None))
            }
            (CustomerCommand::AddInteraction(i), Some(s)) => {
                if s.interactions.len() >= MAX_INTERACTIONS {
                    return Ok(Handled::read(Err(invalid(
                        "interactions",
                        format!(
                            "customer already has the maximum of {MAX_INTERACTIONS} interactions"
                        ),
                    ))));
                }
                s.interactions.push(Interaction {
                    seq: s.interactions.len() as u64 + 1,
                    kind: i.kind,
                    item: i.item,
                    at_ms: i.at_ms.unwrap_or(ctx.now_ms),
                });
                s.version += 1;
                s.updated_ms = ctx.now_ms;
                Handled::wrote(Ok(Some(s.clone())))
            }
        })
    }
}

#[cfg(test)]
#[path = "customer_test.rs"]
mod tests;
