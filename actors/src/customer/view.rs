//! A customer as returned to callers: the contact record with its device list, its interaction
//! count and its last interactions read from the journal; tickets are left out (read them with
//! `ListTickets`).

use keelson_runtime::{EntityContext, EntityError};
use serde::{Deserialize, Serialize};

use super::state::{Consent, CustomerState, Interaction};

/// Interactions included in a [`CustomerView`], the most recent.
pub const VIEW_INTERACTIONS: u64 = 20;

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

impl CustomerState {
    /// The customer as returned, with its last interactions read from the journal.
    pub fn view(&self, ctx: &EntityContext<'_>) -> Result<CustomerView, EntityError> {
        let count = self.interaction_count(ctx);
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
}
