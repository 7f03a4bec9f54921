//! Version 1 of the persisted customer state, before tickets. Frozen: loaded states of this
//! version are converted by [`From`] to version 2 with no tickets, then on to today's shape.

use serde::{Deserialize, Serialize};

use super::state::{Consent, Interaction};
use super::v2;

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

impl From<CustomerState> for v2::CustomerState {
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
