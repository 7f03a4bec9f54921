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
//!
//! The parts, each a file under `device/`:
//!
//! ```text
//! protocol ── DeviceCommand (checked by validate) ──▶ Device::handle ──▶ DeviceAnswer
//!                                                       │ telemetry in   ── ingest (sample_limits, telemetry, anomaly)
//!                                                       │ alert steps    ── follow_up (alerts, commands)
//!                                                       │ configuration  ── twin
//!                                                       └ the summary    ── view
//! state (version 2) ◀── v1: the older persisted shape, upgraded on load
//! ```

mod alerts;
mod anomaly;
mod commands;
mod follow_up;
mod ingest;
mod protocol;
mod sample_limits;
mod state;
mod telemetry;
mod twin;
mod v1;
mod view;

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};

use crate::validate::DomainError;

pub use alerts::{Alert, MAX_ALERTS};
pub use anomaly::{AnomalyConfig, Range, ALERT_COOLDOWN_MS, MAX_TRACKED_READINGS};
pub use commands::{CommandAck, CommandRecord, MAX_COMMANDS};
pub use ingest::{IngestOutcome, Telemetry, MAX_READINGS_PER_MESSAGE};
use protocol::Applied;
pub use protocol::{DeviceAnswer, DeviceCommand, DeviceReply};
pub use sample_limits::{SampleLimits, MAX_SEQ};
pub use state::{DeviceState, NewDevice};
pub use telemetry::{
    Bucket, ReadingStats, Sample, TelemetryView, BUCKET_MS, HISTORY_BUCKETS, RECENT_SAMPLES,
    SEQ_WINDOW,
};
pub use twin::{twin_map_to_json, Twin, TwinValue, TwinView, MAX_TWIN_KEYS, MAX_TWIN_TEXT};
pub use view::{DeviceView, VIEW_ALERTS};

/// The device entity kind.
pub struct Device;

impl DeviceState {
    /// Runs a command on a device that exists (other than `Erase`, which may remove the state).
    fn apply(&mut self, now_ms: u64, command: DeviceCommand) -> Applied {
        use DeviceAnswer as A;
        use DeviceCommand as C;
        match command {
            C::Register(_) => Err(DomainError::AlreadyExists {
                kind: Device::KIND.into(),
                id: self.id.clone(),
            }),
            C::Get => Ok((A::Device(self.view()), false)),
            C::Telemetry(t) => {
                let changed = self.record_telemetry(t, now_ms)?;
                Ok((A::Device(self.view()), changed))
            }
            C::Ingest {
                seq,
                at_ms,
                readings,
                anomaly,
                limits,
            } => {
                let (outcome, changed) =
                    self.record_ingest(seq, at_ms, readings, &anomaly, &limits, now_ms)?;
                Ok((A::Ingested(outcome), changed))
            }
            C::GetTelemetry { since_ms } => {
                Ok((A::Telemetry(self.telemetry.view(since_ms)), false))
            }
            C::ReportTwin { state, version } => {
                let changed = self.twin.report(state, version, now_ms)?;
                self.bump(changed);
                Ok((A::Twin(self.twin.view()), changed))
            }
            C::PatchDesired {
                patch,
                expected_version,
            } => {
                let changed = self.twin.patch_desired(patch, expected_version, now_ms)?;
                self.bump(changed);
                Ok((A::Twin(self.twin.view()), changed))
            }
            C::GetTwin => Ok((A::Twin(self.twin.view()), false)),
            C::ListAlerts => Ok((A::Alerts(self.alerts.iter().cloned().collect()), false)),
            C::ListCommands => Ok((A::Commands(self.commands.iter().cloned().collect()), false)),
            C::IssueCommand {
                id,
                name,
                params,
                alert_id,
            } => self.issue_command(id, name, params, alert_id, now_ms),
            C::CommandSent { id } => self.command_sent(&id),
            C::CommandAck { id, status } => self.command_ack(&id, status, now_ms),
            C::AlertTicket {
                alert_id,
                ticket_id,
            } => self.alert_ticket(&alert_id, ticket_id),
            C::AlertAckRecorded { alert_id } => self.alert_ack_recorded(&alert_id),
            C::Erase { .. } => unreachable!("handled with the state in Device::handle"),
        }
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
        let applied = match (command, state.as_mut()) {
            (DeviceCommand::Erase { .. }, None) => Ok((DeviceAnswer::Erased, false)),
            (DeviceCommand::Erase { detach: false }, Some(_)) => {
                *state = None;
                Ok((DeviceAnswer::Erased, true))
            }
            (DeviceCommand::Erase { detach: true }, Some(s)) => {
                let changed = s.detach();
                Ok((DeviceAnswer::Device(s.view()), changed))
            }
            (DeviceCommand::Register(d), None) => {
                let created = DeviceState::new(ctx.id, d, ctx.now_ms);
                let view = created.view();
                *state = Some(created);
                Ok((DeviceAnswer::Device(view), true))
            }
            (_, None) => Err(DomainError::NotFound {
                kind: Self::KIND.into(),
                id: ctx.id.into(),
            }),
            (command, Some(s)) => s.apply(ctx.now_ms, command),
        };
        Ok(match applied {
            Ok((answer, true)) => Handled::wrote(Ok(answer)),
            Ok((answer, false)) => Handled::read(Ok(answer)),
            Err(e) => Handled::read(Err(e)),
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
