//! Commands sent to a device (e.g. `maintenance-check`, `reboot`) and their acknowledgements.
//!
//! ```text
//! IssueCommand{id} ──▶ record (same id again: the existing record, unchanged)
//! CommandSent{id}  ──▶ sent = true
//! CommandAck{id}   ──▶ ack = first status and time; later acks are ignored
//! ```

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::twin::{check_entry, TwinValue};
use crate::validate::{self, invalid, validate_ref, DomainError};

/// Commands kept per device, newest last.
pub const MAX_COMMANDS: usize = 100;

/// Most parameters one command carries.
pub const MAX_COMMAND_PARAMS: usize = 32;

/// Longest acknowledgement status, in characters.
pub const MAX_ACK_STATUS: usize = 64;

/// A device's acknowledgement of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAck {
    /// What the device said, e.g. `ok`, `failed`, `rejected`.
    pub status: String,
    /// When it was recorded, ms since the Unix epoch.
    pub at_ms: u64,
}

/// One command issued to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Id chosen by the issuer; issuing the same id again changes nothing while the record is
    /// among the last [`MAX_COMMANDS`].
    pub id: String,
    /// What to do, e.g. `maintenance-check`.
    pub name: String,
    /// Its parameters.
    pub params: BTreeMap<String, TwinValue>,
    /// The alert it answers, if any.
    pub alert_id: Option<String>,
    /// When it was issued, ms since the Unix epoch.
    pub created_ms: u64,
    /// Whether it was sent to the device.
    pub sent: bool,
    /// The device's first acknowledgement.
    pub ack: Option<CommandAck>,
}

/// Checks an `IssueCommand`'s fields without any state.
pub(crate) fn check_issue(
    id: &str,
    name: &str,
    params: &BTreeMap<String, TwinValue>,
    alert_id: Option<&str>,
) -> Result<(), DomainError> {
    validate_ref("id", id)?;
    validate::validate_id("name", name)?;
    if params.len() > MAX_COMMAND_PARAMS {
        return Err(invalid(
            "params",
            format!("at most {MAX_COMMAND_PARAMS} parameters"),
        ));
    }
    params
        .iter()
        .try_for_each(|(k, v)| check_entry("params", k, v))?;
    alert_id.map_or(Ok(()), |a| validate_ref("alert_id", a))
}

/// Checks a `CommandAck`'s fields without any state.
pub(crate) fn check_ack(id: &str, status: &str) -> Result<(), DomainError> {
    validate_ref("id", id)?;
    validate::text("status", status, MAX_ACK_STATUS)
}

/// The command `id`, if kept.
pub(crate) fn find<'a>(
    commands: &'a VecDeque<CommandRecord>,
    id: &str,
) -> Option<&'a CommandRecord> {
    commands.iter().find(|c| c.id == id)
}

/// The command `id` to change, or `NotFound`.
pub(crate) fn find_mut<'a>(
    commands: &'a mut VecDeque<CommandRecord>,
    id: &str,
) -> Result<&'a mut CommandRecord, DomainError> {
    commands
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| DomainError::NotFound {
            kind: "command".into(),
            id: id.into(),
        })
}

/// Adds `command`, dropping the oldest beyond [`MAX_COMMANDS`].
pub(crate) fn push(commands: &mut VecDeque<CommandRecord>, command: CommandRecord) {
    commands.push_back(command);
    while commands.len() > MAX_COMMANDS {
        commands.pop_front();
    }
}
