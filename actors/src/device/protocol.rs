//! What a device accepts and answers: [`DeviceCommand`], its stateless field checks, and
//! [`DeviceAnswer`]. Both enums are on the wire by variant index: new variants go at the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alerts::Alert;
use super::anomaly::AnomalyConfig;
use super::commands::{self, CommandRecord};
use super::ingest::{check_readings, IngestOutcome, Telemetry};
use super::sample_limits::SampleLimits;
use super::state::{self, NewDevice};
use super::telemetry::TelemetryView;
use super::twin::{self, TwinValue, TwinView};
use super::view::DeviceView;
use crate::validate::{validate_ref, DomainError};

/// Commands a device accepts. New variants go at the end: the index is on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceCommand {
    /// Register; fails if it exists. Answers `Device`.
    Register(NewDevice),
    /// Read the summary. Answers `Device`.
    Get,
    /// Record telemetry that has no sequence number (HTTP): an ingest numbered after the highest
    /// seen, judged with the default anomaly configuration. Answers `Device`.
    Telemetry(Telemetry),
    /// Record one telemetry message; a sequence number seen before changes nothing. Answers
    /// `Ingested`.
    Ingest {
        /// Sequence number, per device, from the edge.
        seq: u64,
        /// When the readings were taken, ms since the Unix epoch.
        at_ms: u64,
        /// Reading name to value, already in canonical units (°C, %, bpm...).
        readings: BTreeMap<String, f64>,
        /// How to judge the readings.
        anomaly: AnomalyConfig,
        /// The time and sequence bounds it is held to.
        limits: SampleLimits,
    },
    /// Read recent samples and history from `since_ms` on. Answers `Telemetry`.
    GetTelemetry {
        /// Earliest sample time wanted, ms since the Unix epoch.
        since_ms: u64,
    },
    /// The device reports its state; merged into `reported`. Answers `Twin`.
    ReportTwin {
        /// Keys to set.
        state: BTreeMap<String, TwinValue>,
        /// The device's version of this report; one not above the stored version is stale.
        version: Option<u64>,
    },
    /// Change the desired state. Answers `Twin`.
    PatchDesired {
        /// Keys to set, or to delete with `None`.
        patch: BTreeMap<String, Option<TwinValue>>,
        /// Refuse unless the desired state is at this version.
        expected_version: Option<u64>,
    },
    /// Read the twin. Answers `Twin`.
    GetTwin,
    /// Record a command to the device; the same id again changes nothing. Answers `Command`.
    IssueCommand {
        /// Id chosen by the issuer.
        id: String,
        /// What to do, e.g. `maintenance-check`.
        name: String,
        /// Parameters.
        params: BTreeMap<String, TwinValue>,
        /// The alert it answers, if any.
        alert_id: Option<String>,
    },
    /// The command was sent to the device. Answers `Command`.
    CommandSent {
        /// Command id.
        id: String,
    },
    /// The device acknowledged the command; only the first acknowledgement counts. Answers
    /// `Command`.
    CommandAck {
        /// Command id.
        id: String,
        /// What the device said, e.g. `ok`, `failed`, `rejected`.
        status: String,
    },
    /// A ticket was opened for the alert. Answers `Alert`.
    AlertTicket {
        /// Alert id.
        alert_id: String,
        /// Ticket id.
        ticket_id: String,
    },
    /// The alert's acknowledgement was recorded on its ticket. Answers `Alert`.
    AlertAckRecorded {
        /// Alert id.
        alert_id: String,
    },
    /// Read the alerts kept. Answers `Alerts`.
    ListAlerts,
    /// Read the commands kept. Answers `Commands`.
    ListCommands,
    /// The owning customer is being erased: delete the device with its telemetry, alerts, twin
    /// and commands (answers `Erased`), or, with `detach`, keep the device but forget its owner
    /// and its alerts (answers `Device`). Again: nothing more changes.
    Erase {
        /// Keep the device, without its owner.
        detach: bool,
    },
}

/// What a device command answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceAnswer {
    /// The device's summary.
    Device(DeviceView),
    /// An ingest's outcome.
    Ingested(IngestOutcome),
    /// The twin.
    Twin(TwinView),
    /// Recent samples and history.
    Telemetry(TelemetryView),
    /// One command.
    Command(CommandRecord),
    /// One alert.
    Alert(Alert),
    /// Every alert kept, newest last.
    Alerts(Vec<Alert>),
    /// Every command kept, newest last.
    Commands(Vec<CommandRecord>),
    /// The device was deleted (or was not there).
    Erased,
}

/// The answer, or why the command was refused.
pub type DeviceReply = Result<DeviceAnswer, DomainError>;

/// An answer and whether the state changed to give it.
pub(super) type Applied = Result<(DeviceAnswer, bool), DomainError>;

impl DeviceCommand {
    /// Checks the command's fields without any state.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            DeviceCommand::Register(d) => state::check_new(d),
            DeviceCommand::Telemetry(t) => {
                check_readings(&t.readings)?;
                t.limits.validate("limits")
            }
            DeviceCommand::Ingest {
                readings,
                anomaly,
                limits,
                ..
            } => {
                check_readings(readings)?;
                anomaly.validate("anomaly")?;
                limits.validate("limits")
            }
            DeviceCommand::ReportTwin { state, .. } => twin::check_report(state),
            DeviceCommand::PatchDesired { patch, .. } => twin::check_patch(patch),
            DeviceCommand::IssueCommand {
                id,
                name,
                params,
                alert_id,
            } => commands::check_issue(id, name, params, alert_id.as_deref()),
            DeviceCommand::CommandSent { id } => validate_ref("id", id),
            DeviceCommand::CommandAck { id, status } => commands::check_ack(id, status),
            DeviceCommand::AlertTicket {
                alert_id,
                ticket_id,
            } => {
                validate_ref("alert_id", alert_id)?;
                validate_ref("ticket_id", ticket_id)
            }
            DeviceCommand::AlertAckRecorded { alert_id } => validate_ref("alert_id", alert_id),
            DeviceCommand::Get
            | DeviceCommand::GetTelemetry { .. }
            | DeviceCommand::GetTwin
            | DeviceCommand::ListAlerts
            | DeviceCommand::ListCommands
            | DeviceCommand::Erase { .. } => Ok(()),
        }
    }

    /// Whether the command only reads (and so may be served by a follower).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            DeviceCommand::Get
                | DeviceCommand::GetTelemetry { .. }
                | DeviceCommand::GetTwin
                | DeviceCommand::ListAlerts
                | DeviceCommand::ListCommands
        )
    }
}
