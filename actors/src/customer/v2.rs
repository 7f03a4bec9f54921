//! Version 2 of the persisted customer state: interactions inline, no device list. Frozen:
//! loaded states of this version keep their interactions as the early ones.

use serde::{Deserialize, Serialize};

use super::state::{self, Consent, Interaction, Ticket};

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

impl From<CustomerState> for state::CustomerState {
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
