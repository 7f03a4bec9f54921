//! The customer's contact record: what a new customer and a partial update carry, their field
//! rules, and creating and updating the record.
//!
//! ```text
//! Create(NewCustomer) ──check_new──▶ CustomerState (version 1)
//! Update(CustomerPatch) ──check_patch──▶ given fields replaced, version + 1
//! ```

use serde::{Deserialize, Serialize};

use super::state::{Consent, CustomerState};
use crate::validate::{self, DomainError};

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

/// Checks the fields of a new customer.
pub(super) fn check_new(c: &NewCustomer) -> Result<(), DomainError> {
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

/// Checks the fields a patch sets.
pub(super) fn check_patch(p: &CustomerPatch) -> Result<(), DomainError> {
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

impl CustomerState {
    /// The customer `id` as created at `now_ms`: version 1, no interactions, tickets or devices.
    pub(super) fn create(id: &str, c: NewCustomer, now_ms: u64) -> Self {
        Self {
            id: id.to_string(),
            name: c.name,
            email: c.email,
            phone: c.phone,
            company: c.company,
            tags: c.tags,
            consent: c.consent,
            early_interactions: Vec::new(),
            version: 1,
            created_ms: now_ms,
            updated_ms: now_ms,
            tickets: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// Replaces the fields the patch gives; counts as a change even if every value is the same.
    pub(super) fn update(&mut self, p: CustomerPatch, now_ms: u64) {
        if let Some(n) = p.name {
            self.name = n;
        }
        if let Some(e) = p.email {
            self.email = e;
        }
        if let Some(ph) = p.phone {
            self.phone = ph;
        }
        if let Some(co) = p.company {
            self.company = co;
        }
        if let Some(t) = p.tags {
            self.tags = t;
        }
        if let Some(c) = p.consent {
            self.consent = c;
        }
        self.touch(now_ms);
    }
}
