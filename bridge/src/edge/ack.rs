//! Command acknowledgements: which command (an id by the actors' one id rule), its outcome and
//! the device's note.

use serde_json::Value;

use super::json::{as_object, only_fields, required, schema, string, text};
use super::{Rejected, MAX_TEXT_CHARS};

/// How a device answered a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Done.
    Ok,
    /// Tried and failed.
    Failed,
    /// Refused without trying.
    Rejected,
}

impl AckStatus {
    /// The status as devices send it.
    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Ok => "ok",
            AckStatus::Failed => "failed",
            AckStatus::Rejected => "rejected",
        }
    }
}

/// A device's acknowledgement of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandAckMsg {
    /// The command acknowledged.
    pub command_id: String,
    /// Outcome.
    pub status: AckStatus,
    /// Free text from the device, at most 256 characters.
    pub detail: Option<String>,
}

/// The schema of an acknowledgement.
pub(super) fn parse(root: &Value) -> Result<CommandAckMsg, Rejected> {
    let obj = as_object(root, "payload")?;
    only_fields(obj, &["command_id", "status", "detail"])?;
    let command_id = string(required(obj, "command_id")?, "command_id")?;
    if keelson_actors::validate_id("command_id", command_id).is_err() {
        return Err(schema(format!(
            "command_id: {command_id:?} must be 1-64 characters of A-Z a-z 0-9 _ - . :"
        )));
    }
    let status = match string(required(obj, "status")?, "status")? {
        "ok" => AckStatus::Ok,
        "failed" => AckStatus::Failed,
        "rejected" => AckStatus::Rejected,
        other => {
            return Err(schema(format!(
                "status: {other:?} is not one of \"ok\", \"failed\", \"rejected\""
            )))
        }
    };
    let detail = match obj.get("detail") {
        None => None,
        Some(v) => Some(text(string(v, "detail")?, "detail", MAX_TEXT_CHARS)?.to_string()),
    };
    Ok(CommandAckMsg {
        command_id: command_id.to_string(),
        status,
        detail,
    })
}
