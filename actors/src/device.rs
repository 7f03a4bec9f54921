//! The Device entity: which customer owns it, its kind and firmware, and its last telemetry.
//! Persisted as [`DeviceState`] behind `STATE_VERSION`.

use std::collections::BTreeMap;

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

use crate::validate::{self, invalid, DomainError};

/// A device as stored and as returned.
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
    /// Last value of each reading.
    pub last_readings: BTreeMap<String, f64>,
    /// When the last telemetry was taken, ms since the Unix epoch.
    pub last_telemetry_ms: Option<u64>,
    /// Telemetry messages received.
    pub telemetry_count: u64,
    /// Incremented on every change.
    pub version: u64,
    /// Registration time.
    pub created_ms: u64,
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

/// One telemetry message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Reading name to value.
    pub readings: BTreeMap<String, f64>,
    /// When it was taken; now if absent.
    pub at_ms: Option<u64>,
}

/// Commands a device accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeviceCommand {
    /// Register; fails if it exists.
    Register(NewDevice),
    /// Read.
    Get,
    /// Record telemetry.
    Telemetry(Telemetry),
}

/// The answer: the device after the command, or why it was refused.
pub type DeviceReply = Result<DeviceState, DomainError>;

/// The device entity kind.
pub struct Device;

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
                if t.readings.is_empty() {
                    return Err(invalid("readings", "must hold at least one reading"));
                }
                if t.readings.len() > 64 {
                    return Err(invalid("readings", "at most 64 readings per message"));
                }
                for (name, v) in &t.readings {
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
            DeviceCommand::Get => Ok(()),
        }
    }
}

impl Entity for Device {
    const KIND: &'static str = "device";
    const STATE_VERSION: u8 = 1;
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
            (DeviceCommand::Register(_), Some(_)) => {
                Handled::read(Err(DomainError::AlreadyExists {
                    kind: Self::KIND.into(),
                    id: ctx.id.into(),
                }))
            }
            (DeviceCommand::Register(d), None) => {
                let created = DeviceState {
                    id: ctx.id.to_string(),
                    customer_id: d.customer_id,
                    kind: d.kind,
                    firmware: d.firmware,
                    last_readings: BTreeMap::new(),
                    last_telemetry_ms: None,
                    telemetry_count: 0,
                    version: 1,
                    created_ms: ctx.now_ms,
                };
                *state = Some(created.clone());
                Handled::wrote(Ok(created))
            }
            (_, None) => Handled::read(Err(DomainError::NotFound {
                kind: Self::KIND.into(),
                id: ctx.id.into(),
            })),
            (DeviceCommand::Get, Some(s)) => Handled::read(Ok(s.clone())),
            (DeviceCommand::Telemetry(t), Some(s)) => {
                s.last_readings.extend(t.readings);
                s.last_telemetry_ms = Some(t.at_ms.unwrap_or(ctx.now_ms));
                s.telemetry_count += 1;
                s.version += 1;
                Handled::wrote(Ok(s.clone()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> EntityContext<'static> {
        EntityContext {
            id: "d1",
            now_ms: 50,
        }
    }

    fn register() -> DeviceCommand {
        DeviceCommand::Register(NewDevice {
            customer_id: "c1".into(),
            kind: "temperature".into(),
            firmware: "1.0.3".into(),
        })
    }

    #[test]
    fn register_then_telemetry_updates_last_readings() {
        let mut s = None;
        assert!(Device::handle(&ctx(), &mut s, register()).unwrap().changed);
        let t = Telemetry {
            readings: [("celsius".to_string(), 21.5)].into(),
            at_ms: Some(40),
        };
        let d = Device::handle(&ctx(), &mut s, DeviceCommand::Telemetry(t))
            .unwrap()
            .reply
            .unwrap();
        assert_eq!(d.last_readings["celsius"], 21.5);
        assert_eq!(
            (d.last_telemetry_ms, d.telemetry_count, d.version),
            (Some(40), 1, 2)
        );
    }

    #[test]
    fn bad_telemetry_is_refused_and_changes_nothing() {
        let mut s = None;
        Device::handle(&ctx(), &mut s, register()).unwrap();
        let before = s.clone();
        let t = Telemetry {
            readings: [("celsius".to_string(), f64::NAN)].into(),
            at_ms: None,
        };
        let h = Device::handle(&ctx(), &mut s, DeviceCommand::Telemetry(t)).unwrap();
        assert!(!h.changed);
        assert!(
            matches!(h.reply, Err(DomainError::Invalid { ref field, .. }) if field == "readings.celsius")
        );
        assert_eq!(s, before);
    }

    #[test]
    fn telemetry_for_an_unregistered_device_is_not_found() {
        let t = Telemetry {
            readings: [("x".to_string(), 1.0)].into(),
            at_ms: None,
        };
        let h = Device::handle(&ctx(), &mut None, DeviceCommand::Telemetry(t)).unwrap();
        assert!(matches!(h.reply, Err(DomainError::NotFound { .. })));
    }
}
