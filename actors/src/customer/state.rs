//! The customer as persisted today (`STATE_VERSION` 3) and the records it holds: consent flags,
//! interactions and tickets. Older shapes live in `v1` and `v2` and convert into this one.

use serde::{Deserialize, Serialize};

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
    /// The last [`MAX_TICKETS`](super::MAX_TICKETS) tickets, oldest first.
    pub tickets: Vec<Ticket>,
    /// Devices registered to this customer, oldest first: what an erasure removes.
    pub devices: Vec<String>,
}

impl CustomerState {
    /// Records a change made at `now_ms`.
    pub(super) fn touch(&mut self, now_ms: u64) {
        self.version = self.version.saturating_add(1);
        self.updated_ms = now_ms;
    }
}
