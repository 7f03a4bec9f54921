//! The Device entity: which customer owns it, its telemetry (deduplicated by sequence number,
//! a recent window and a per-minute history), the alerts its readings raise, its twin, and the
//! commands sent to it. Persisted as [`DeviceState`] behind `STATE_VERSION`; version 1 states
//! are upgraded on load.
//!
//! ```text
//! bridge ──Ingest{seq}──▶ telemetry (SeqWindow drops redeliveries) ──▶ anomaly::Detector
//!                                                                      └─▶ Alert{id = "{device}-{seq}"}
//! bridge ──AlertTicket / IssueCommand / CommandSent / CommandAck / AlertAckRecorded──▶ alerts, commands
//! device ──ReportTwin──▶ twin.reported      operator ──PatchDesired──▶ twin.desired ──▶ delta
//! gateway ──Register / Get / Telemetry (HTTP, no seq)──▶ the same paths
//! ```
//!
//! Every write is idempotent: a redelivered message finds its effect already recorded and
//! changes nothing, answering what the first delivery answered.

mod alerts;
mod anomaly;
mod commands;
mod sample_limits;
mod telemetry;
mod twin;
mod v1;

use std::collections::{BTreeMap, VecDeque};

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

use crate::validate::{self, invalid, DomainError};

pub(crate) use alerts::validate_ref;
pub use alerts::{Alert, MAX_ALERTS, MAX_REF_LEN};
pub use anomaly::{AnomalyConfig, Range, ALERT_COOLDOWN_MS, MAX_TRACKED_READINGS};
pub use commands::{CommandAck, CommandRecord, MAX_COMMANDS};
pub use sample_limits::{SampleLimits, MAX_SEQ};
pub use telemetry::{
    Bucket, ReadingStats, Sample, TelemetryView, BUCKET_MS, HISTORY_BUCKETS, RECENT_SAMPLES,
    SEQ_WINDOW,
};
pub use twin::{twin_map_to_json, Twin, TwinValue, TwinView, MAX_TWIN_KEYS, MAX_TWIN_TEXT};

/// Most readings in one telemetry message.
pub const MAX_READINGS_PER_MESSAGE: usize = 64;

/// Alerts included in a [`DeviceView`], newest last.
pub const VIEW_ALERTS: usize = 10;

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Id.
    pub id: String,
    /// Owning customer's id.
    pub customer_id: String,
    /// Kind, e.g. `temperature`, `humidity`, `wearable`, `camera`.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
    /// Latest value of each reading, by sample time.
    pub last_readings: BTreeMap<String, f64>,
    /// When the latest telemetry was taken, ms since the Unix epoch.
    pub last_telemetry_ms: Option<u64>,
    /// Telemetry messages accepted (duplicates not counted).
    pub telemetry_count: u64,
    /// Incremented on every change.
    pub version: u64,
    /// Registration time.
    pub created_ms: u64,
    /// Sequence numbers seen, recent samples and history.
    pub(crate) telemetry: telemetry::TelemetryLog,
    /// Anomaly detector memory.
    pub(crate) detector: anomaly::Detector,
    /// The last [`MAX_ALERTS`] alerts, newest last.
    pub(crate) alerts: VecDeque<Alert>,
    /// Reported and desired configuration.
    pub(crate) twin: Twin,
    /// The last [`MAX_COMMANDS`] commands, newest last.
    pub(crate) commands: VecDeque<CommandRecord>,
}

/// A device as returned by `Get`, `Register` and `Telemetry`: its summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Owning customer's id.
    pub customer_id: String,
    /// Kind.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
    /// Latest value of each reading.
    pub last_readings: BTreeMap<String, f64>,
    /// When the latest telemetry was taken, ms since the Unix epoch.
    pub last_telemetry_ms: Option<u64>,
    /// Telemetry messages accepted.
    pub telemetry_count: u64,
    /// Incremented on every change.
    pub version: u64,
    /// Registration time.
    pub created_ms: u64,
    /// Highest telemetry sequence number accepted.
    pub highest_seq: Option<u64>,
    /// Version of the twin's reported state.
    pub twin_reported_version: u64,
    /// Version of the twin's desired state.
    pub twin_desired_version: u64,
    /// The last [`VIEW_ALERTS`] alerts, newest last.
    pub alerts: Vec<Alert>,
}

/// Fields of a new device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    /// Owning customer.
    pub customer_id: String,
    /// Kind.
    pub kind: String,
    /// Firmware version.
    pub firmware: String,
}

/// One telemetry message posted over HTTP, without a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Reading name to value.
    pub readings: BTreeMap<String, f64>,
    /// When it was taken; now if absent.
    pub at_ms: Option<u64>,
    /// The time bounds it is held to.
    pub limits: SampleLimits,
}

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

/// The outcome of an `Ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestOutcome {
    /// The sequence number was seen before: nothing changed.
    pub duplicate: bool,
    /// The alert this sample raised (on a duplicate: raised earlier, if still kept).
    pub alert: Option<Alert>,
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

/// The device entity kind.
pub struct Device;

fn check_readings(readings: &BTreeMap<String, f64>) -> Result<(), DomainError> {
    if readings.is_empty() {
        return Err(invalid("readings", "must hold at least one reading"));
    }
    if readings.len() > MAX_READINGS_PER_MESSAGE {
        return Err(invalid(
            "readings",
            format!("at most {MAX_READINGS_PER_MESSAGE} readings per message"),
        ));
    }
    for (name, v) in readings {
        validate::validate_id(&format!("readings.{name}"), name)?;
        if !v.is_finite() {
            return Err(invalid(
                format!("readings.{name}"),
                "must be a finite number",
            ));
        }
    }
    Ok(())
}

impl DeviceCommand {
    /// Checks the command's fields without any state.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            DeviceCommand::Register(d) => {
                validate::validate_id("customer_id", &d.customer_id)?;
                if d.kind.is_empty()
                    || d.kind.len() > 32
                    || !d.kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    return Err(invalid("kind", "must be 1-32 characters of a-z and _"));
                }
                validate::text("firmware", &d.firmware, 64)
            }
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

/// An answer and whether the state changed to give it.
type Applied = Result<(DeviceAnswer, bool), DomainError>;

impl DeviceState {
    fn new(id: &str, d: NewDevice, now_ms: u64) -> Self {
        Self {
            id: id.to_string(),
            customer_id: d.customer_id,
            kind: d.kind,
            firmware: d.firmware,
            last_readings: BTreeMap::new(),
            last_telemetry_ms: None,
            telemetry_count: 0,
            version: 1,
            created_ms: now_ms,
            telemetry: Default::default(),
            detector: Default::default(),
            alerts: VecDeque::new(),
            twin: Twin::default(),
            commands: VecDeque::new(),
        }
    }

    /// The summary returned to callers.
    pub fn view(&self) -> DeviceView {
        DeviceView {
            id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            kind: self.kind.clone(),
            firmware: self.firmware.clone(),
            last_readings: self.last_readings.clone(),
            last_telemetry_ms: self.last_telemetry_ms,
            telemetry_count: self.telemetry_count,
            version: self.version,
            created_ms: self.created_ms,
            highest_seq: self.telemetry.seqs.highest,
            twin_reported_version: self.twin.reported_version,
            twin_desired_version: self.twin.desired_version,
            alerts: self
                .alerts
                .iter()
                .skip(self.alerts.len().saturating_sub(VIEW_ALERTS))
                .cloned()
                .collect(),
        }
    }

    fn apply(&mut self, now_ms: u64, command: DeviceCommand) -> Applied {
        use DeviceAnswer as A;
        match command {
            DeviceCommand::Register(_) => Err(DomainError::AlreadyExists {
                kind: Device::KIND.into(),
                id: self.id.clone(),
            }),
            DeviceCommand::Get => Ok((A::Device(self.view()), false)),
            DeviceCommand::Telemetry(t) => {
                let at_ms = t.at_ms.unwrap_or(now_ms);
                t.limits.check_time("at_ms", at_ms, now_ms)?;
                let seq = self.telemetry.seqs.next();
                t.limits.check_seq(seq, self.telemetry.seqs.highest)?;
                let (_, changed) =
                    self.ingest(seq, at_ms, t.readings, &AnomalyConfig::default())?;
                Ok((A::Device(self.view()), changed))
            }
            DeviceCommand::Ingest {
                seq,
                at_ms,
                readings,
                anomaly,
                limits,
            } => {
                limits.check_time("ts", at_ms, now_ms)?;
                if !self.telemetry.seqs.is_duplicate(seq) {
                    limits.check_seq(seq, self.telemetry.seqs.highest)?;
                }
                let (outcome, changed) = self.ingest(seq, at_ms, readings, &anomaly)?;
                Ok((A::Ingested(outcome), changed))
            }
            DeviceCommand::GetTelemetry { since_ms } => {
                Ok((A::Telemetry(self.telemetry.view(since_ms)), false))
            }
            DeviceCommand::ReportTwin { state, version } => {
                let changed = self.twin.report(state, version, now_ms)?;
                self.bump(changed);
                Ok((A::Twin(self.twin.view()), changed))
            }
            DeviceCommand::PatchDesired {
                patch,
                expected_version,
            } => {
                let changed = self.twin.patch_desired(patch, expected_version, now_ms)?;
                self.bump(changed);
                Ok((A::Twin(self.twin.view()), changed))
            }
            DeviceCommand::GetTwin => Ok((A::Twin(self.twin.view()), false)),
            DeviceCommand::IssueCommand {
                id,
                name,
                params,
                alert_id,
            } => self.issue_command(id, name, params, alert_id, now_ms),
            DeviceCommand::CommandSent { id } => self.command_sent(&id),
            DeviceCommand::CommandAck { id, status } => self.command_ack(&id, status, now_ms),
            DeviceCommand::AlertTicket {
                alert_id,
                ticket_id,
            } => {
                let (alert, changed) = alerts::update(&mut self.alerts, &alert_id, |a| {
                    alerts::set_once(&mut a.ticket_id, ticket_id)
                })?;
                self.bump(changed);
                Ok((A::Alert(alert), changed))
            }
            DeviceCommand::AlertAckRecorded { alert_id } => {
                let (alert, changed) = alerts::update(&mut self.alerts, &alert_id, |a| {
                    alerts::set_flag(&mut a.ack_recorded)
                })?;
                self.bump(changed);
                Ok((A::Alert(alert), changed))
            }
            DeviceCommand::ListAlerts => {
                Ok((A::Alerts(self.alerts.iter().cloned().collect()), false))
            }
            DeviceCommand::ListCommands => {
                Ok((A::Commands(self.commands.iter().cloned().collect()), false))
            }
            DeviceCommand::Erase { .. } => unreachable!("handled with the state in Device::handle"),
        }
    }

    fn bump(&mut self, changed: bool) {
        if changed {
            self.version = self.version.saturating_add(1);
        }
    }

    fn ingest(
        &mut self,
        seq: u64,
        at_ms: u64,
        readings: BTreeMap<String, f64>,
        cfg: &AnomalyConfig,
    ) -> Result<(IngestOutcome, bool), DomainError> {
        if self.telemetry.seqs.is_duplicate(seq) {
            let id = self.alert_id(seq);
            let alert = self.alerts.iter().find(|a| a.id == id).cloned();
            return Ok((
                IngestOutcome {
                    duplicate: true,
                    alert,
                },
                false,
            ));
        }
        let new_names = readings
            .keys()
            .filter(|k| !self.last_readings.contains_key(*k))
            .count();
        if self.last_readings.len() + new_names > MAX_TRACKED_READINGS {
            return Err(invalid(
                "readings",
                format!("a device tracks at most {MAX_TRACKED_READINGS} distinct readings"),
            ));
        }
        self.telemetry.seqs.accept(seq);
        if self.last_telemetry_ms.is_none_or(|last| at_ms >= last) {
            self.last_readings
                .extend(readings.iter().map(|(k, v)| (k.clone(), *v)));
            self.last_telemetry_ms = Some(at_ms);
        } else {
            // An older sample only fills in readings never seen.
            for (k, v) in &readings {
                self.last_readings.entry(k.clone()).or_insert(*v);
            }
        }
        self.telemetry_count = self.telemetry_count.saturating_add(1);
        let alert = self
            .detector
            .observe(cfg, at_ms, &readings)
            .map(|trip| Alert {
                id: self.alert_id(seq),
                seq,
                at_ms,
                reading: trip.reading,
                value: trip.value,
                reason: trip.reason,
                customer_id: self.customer_id.clone(),
                ticket_id: None,
                command_id: None,
                command_sent: false,
                ack_status: None,
                ack_recorded: false,
            });
        if let Some(a) = &alert {
            alerts::push(&mut self.alerts, a.clone());
        }
        self.telemetry.record(Sample {
            seq,
            at_ms,
            readings,
        });
        self.bump(true);
        Ok((
            IngestOutcome {
                duplicate: false,
                alert,
            },
            true,
        ))
    }

    fn alert_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.id)
    }

    fn issue_command(
        &mut self,
        id: String,
        name: String,
        params: BTreeMap<String, TwinValue>,
        alert_id: Option<String>,
        now_ms: u64,
    ) -> Applied {
        if let Some(existing) = commands::find(&self.commands, &id) {
            return Ok((DeviceAnswer::Command(existing.clone()), false));
        }
        if let Some(a) = &alert_id {
            alerts::update(&mut self.alerts, a, |alert| {
                alerts::set_once(&mut alert.command_id, id.clone())
            })?;
        }
        let record = CommandRecord {
            id,
            name,
            params,
            alert_id,
            created_ms: now_ms,
            sent: false,
            ack: None,
        };
        commands::push(&mut self.commands, record.clone());
        self.bump(true);
        Ok((DeviceAnswer::Command(record), true))
    }

    /// Applies `step` to the alert the command `command_id` answers, if that alert is still kept
    /// and names this command; returns whether it changed.
    fn alert_of_command(
        &mut self,
        alert_id: Option<&str>,
        command_id: &str,
        step: impl FnOnce(&mut Alert) -> bool,
    ) -> bool {
        let Some(alert) = alert_id.and_then(|a| self.alerts.iter_mut().find(|x| x.id == a)) else {
            return false;
        };
        alert.command_id.as_deref() == Some(command_id) && step(alert)
    }

    fn command_sent(&mut self, id: &str) -> Applied {
        let command = commands::find_mut(&mut self.commands, id)?;
        let mut changed = alerts::set_flag(&mut command.sent);
        let record = command.clone();
        changed |= self.alert_of_command(record.alert_id.as_deref(), id, |a| {
            alerts::set_flag(&mut a.command_sent)
        });
        self.bump(changed);
        Ok((DeviceAnswer::Command(record), changed))
    }

    fn command_ack(&mut self, id: &str, status: String, now_ms: u64) -> Applied {
        let command = commands::find_mut(&mut self.commands, id)?;
        if command.ack.is_some() {
            return Ok((DeviceAnswer::Command(command.clone()), false));
        }
        // An acknowledged command was evidently sent, even if that step was never recorded.
        command.sent = true;
        command.ack = Some(CommandAck {
            status: status.clone(),
            at_ms: now_ms,
        });
        let record = command.clone();
        self.alert_of_command(record.alert_id.as_deref(), id, |a| {
            a.command_sent = true;
            alerts::set_once(&mut a.ack_status, status)
        });
        self.bump(true);
        Ok((DeviceAnswer::Command(record), true))
    }
}

impl Entity for Device {
    const KIND: &'static str = "device";
    const STATE_VERSION: u8 = 2;
    type State = DeviceState;
    type Command = DeviceCommand;
    type Reply = DeviceReply;

    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<DeviceState>,
        command: DeviceCommand,
    ) -> Result<Handled<DeviceReply>, EntityError> {
        if let Err(e) = command.validate() {
            return Ok(Handled::read(Err(e)));
        }
        Ok(match (command, state.as_mut()) {
            (DeviceCommand::Erase { .. }, None) => Handled::read(Ok(DeviceAnswer::Erased)),
            (DeviceCommand::Erase { detach: false }, Some(_)) => {
                *state = None;
                Handled::wrote(Ok(DeviceAnswer::Erased))
            }
            (DeviceCommand::Erase { detach: true }, Some(s)) => {
                if s.customer_id.is_empty() {
                    return Ok(Handled::read(Ok(DeviceAnswer::Device(s.view()))));
                }
                s.customer_id.clear();
                s.alerts.clear();
                s.version = s.version.saturating_add(1);
                Handled::wrote(Ok(DeviceAnswer::Device(s.view())))
            }
            (DeviceCommand::Register(d), None) => {
                let created = DeviceState::new(ctx.id, d, ctx.now_ms);
                let view = created.view();
                *state = Some(created);
                Handled::wrote(Ok(DeviceAnswer::Device(view)))
            }
            (_, None) => Handled::read(Err(DomainError::NotFound {
                kind: Self::KIND.into(),
                id: ctx.id.into(),
            })),
            (command, Some(s)) => match s.apply(ctx.now_ms, command) {
                Ok((answer, true)) => Handled::wrote(Ok(answer)),
                Ok((answer, false)) => Handled::read(Ok(answer)),
                Err(e) => Handled::read(Err(e)),
            },
        })
    }

    fn upgrade(version: u8, body: &[u8]) -> Option<DeviceState> {
        match version {
            v1::VERSION => Self::decode_body::<v1::DeviceState>(version, body)
                .ok()
                .map(DeviceState::from),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "device_test.rs"]
mod tests;
