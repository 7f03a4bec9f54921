//! An alert, step by step: a ticket on the customer, the ticket on the device, a command
//! recorded and published, then marked sent. Each step is idempotent on the alert id and skipped
//! when the alert already records it, so a redelivered message resumes the chain.

use std::collections::BTreeMap;

use keelson_actors::{CustomerCommand, DeviceCommand, TwinValue};

use super::{Bridge, Transient, ALERT_COMMAND};
use crate::metrics;
use crate::publisher::Publisher;
use crate::topics;

impl Bridge {
    /// Ticket, command, bookkeeping: each step skipped when already recorded on the alert.
    pub(super) async fn alert_chain(
        &self,
        device: &str,
        mut alert: keelson_actors::Alert,
    ) -> Result<(), Transient> {
        if alert.ticket_id.is_none() {
            let summary = format!("device {device}: {}", alert.reason);
            let reply = self
                .customer(
                    &alert.customer_id.clone(),
                    CustomerCommand::OpenTicket {
                        alert_id: alert.id.clone(),
                        device_id: device.to_string(),
                        summary,
                    },
                    format!("ticket-{}", alert.id),
                )
                .await?;
            let ticket_id = match reply {
                Ok(answer) => ticket_id_of(&answer, &alert.id),
                Err(e) => {
                    tracing::warn!(alert = %alert.id, error = %e, "no ticket for alert");
                    return Ok(());
                }
            };
            metrics::get().tickets.inc();
            self.device(
                device,
                DeviceCommand::AlertTicket {
                    alert_id: alert.id.clone(),
                    ticket_id: ticket_id.clone(),
                },
                Some(format!("ticket-{}", alert.id)),
            )
            .await?
            .map_err(|e| Transient(e.to_string()))?;
            alert.ticket_id = Some(ticket_id);
        }
        if !alert.command_sent {
            let id = format!("cmd-{}", alert.id);
            let params = BTreeMap::from([
                ("alert_id".to_string(), TwinValue::Text(alert.id.clone())),
                (
                    "reading".to_string(),
                    TwinValue::Text(alert.reading.clone()),
                ),
                ("value".to_string(), TwinValue::Number(alert.value)),
            ]);
            self.device(
                device,
                DeviceCommand::IssueCommand {
                    id: id.clone(),
                    name: ALERT_COMMAND.to_string(),
                    params: params.clone(),
                    alert_id: Some(alert.id.clone()),
                },
                Some(format!("issue-{id}")),
            )
            .await?
            .map_err(|e| Transient(e.to_string()))?;
            self.publish_command(device, &id, ALERT_COMMAND, &params, "alert")
                .await?;
        }
        Ok(())
    }

    /// Publishes a recorded command and marks it sent once the broker has it.
    async fn publish_command(
        &self,
        device: &str,
        id: &str,
        name: &str,
        params: &BTreeMap<String, TwinValue>,
        origin: &str,
    ) -> Result<(), Transient> {
        publish_command(&self.publisher, device, id, name, params)
            .await
            .map_err(|e| Transient(e.to_string()))?;
        metrics::get().commands.with_label_values(&[origin]).inc();
        self.device(
            device,
            DeviceCommand::CommandSent { id: id.to_string() },
            Some(format!("sent-{id}")),
        )
        .await?
        .map_err(|e| Transient(e.to_string()))?;
        Ok(())
    }
}

fn ticket_id_of(answer: &keelson_actors::CustomerAnswer, alert_id: &str) -> String {
    match answer {
        keelson_actors::CustomerAnswer::Ticket(t) => t.id.clone(),
        _ => format!("t-{alert_id}"),
    }
}

/// The JSON a device receives on `keelson/devices/{id}/commands`.
pub fn command_payload(id: &str, name: &str, params: &BTreeMap<String, TwinValue>) -> Vec<u8> {
    let params: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    serde_json::to_vec(&serde_json::json!({"command_id": id, "name": name, "params": params}))
        .expect("serialises")
}

/// Publishes a command to its device (QoS 1, confirmed by the broker).
pub async fn publish_command(
    publisher: &Publisher,
    device: &str,
    id: &str,
    name: &str,
    params: &BTreeMap<String, TwinValue>,
) -> Result<(), crate::publisher::PublishError> {
    publisher
        .publish(
            &topics::commands(device),
            command_payload(id, name, params),
            false,
        )
        .await
}
