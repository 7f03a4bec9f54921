//! Each accepted message to its device actor: telemetry (and, for an alert, the chain), reported
//! twin state, command acknowledgements (recorded on the alert's ticket). What the actor refuses
//! is dead-lettered with the field at fault.

use keelson_actors::{CustomerCommand, DeviceAnswer, DeviceCommand, DomainError, TwinValue};

use super::{now_ms, Bridge, Transient};
use crate::edge::{Accepted, CommandAckMsg, Rejected, ReportedTwin, Scalar};
use crate::metrics;

/// A dead letter for a message the device entity refused, with the field at fault.
fn refused(e: DomainError) -> Rejected {
    Rejected::new(crate::edge::Reason::Refused, crate::edge::field_detail(e))
}

impl Bridge {
    pub(super) async fn telemetry(
        &self,
        device: &str,
        a: Accepted,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Transient> {
        let cmd = DeviceCommand::Ingest {
            seq: a.seq,
            at_ms: a.at_ms,
            readings: a.readings,
            anomaly: self.settings.anomaly.clone(),
            limits: self.settings.edge.samples,
        };
        let key = format!("ingest-{}", a.seq);
        let alert = match self.device(device, cmd, Some(key)).await? {
            Ok(DeviceAnswer::Ingested(out)) => {
                if !out.duplicate && out.alert.is_some() {
                    metrics::get().anomalies.inc();
                }
                out.alert
            }
            // Refused by the actor's own validation: nothing to retry; dead-lettered with why.
            Err(e) => return self.reject(topic, payload, refused(e)).await,
            Ok(_) => None,
        };
        self.usage(device, a.at_ms).await?;
        match alert {
            Some(alert) => self.alert_chain(device, alert).await,
            None => Ok(()),
        }
    }

    pub(super) async fn reported(
        &self,
        device: &str,
        r: ReportedTwin,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Transient> {
        let state = r.state.into_iter().map(|(k, v)| (k, scalar(v))).collect();
        let key = r.version.map(|v| format!("reported-{v}"));
        // A stale version is answered without a change; a refused report is dead-lettered.
        let reply = self
            .device(
                device,
                DeviceCommand::ReportTwin {
                    state,
                    version: r.version,
                },
                key.or_else(|| Some(format!("reported-at-{}", now_ms()))),
            )
            .await?;
        match reply {
            Err(e) => self.reject(topic, payload, refused(e)).await,
            Ok(_) => Ok(()),
        }
    }

    pub(super) async fn ack(
        &self,
        device: &str,
        a: CommandAckMsg,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Transient> {
        let status = a.status.as_str().to_string();
        let reply = self
            .device(
                device,
                DeviceCommand::CommandAck {
                    id: a.command_id.clone(),
                    status: status.clone(),
                },
                Some(format!("ack-{}", a.command_id)),
            )
            .await?;
        let record = match reply {
            Ok(DeviceAnswer::Command(c)) => c,
            // An ack for a command the device never had: nothing to record, and said so.
            Err(e) => return self.reject(topic, payload, refused(e)).await,
            Ok(_) => return Ok(()),
        };
        metrics::get()
            .command_acks
            .with_label_values(&[status.as_str()])
            .inc();
        let Some(alert_id) = record.alert_id else {
            return Ok(());
        };
        let customer = match self.device(device, DeviceCommand::Get, None).await? {
            Ok(DeviceAnswer::Device(d)) => d.customer_id,
            _ => return Ok(()),
        };
        let _ = self
            .customer(
                &customer,
                CustomerCommand::RecordTicketAck {
                    alert_id: alert_id.clone(),
                    command_id: record.id.clone(),
                    status,
                },
                format!("ticket-ack-{alert_id}"),
            )
            .await?;
        let _ = self
            .device(
                device,
                DeviceCommand::AlertAckRecorded {
                    alert_id: alert_id.clone(),
                },
                Some(format!("ack-recorded-{alert_id}")),
            )
            .await?;
        Ok(())
    }
}

fn scalar(s: Scalar) -> TwinValue {
    match s {
        Scalar::Bool(b) => TwinValue::Bool(b),
        Scalar::Number(n) => TwinValue::Number(n),
        Scalar::Text(t) => TwinValue::Text(t),
    }
}
