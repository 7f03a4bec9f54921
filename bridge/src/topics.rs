//! The MQTT topics Keelson uses. Names on the wire: never derive them from anything else.
//!
//! ```text
//! device ──▶ keelson/devices/{id}/telemetry      readings (QoS 1)
//! device ──▶ keelson/devices/{id}/twin/reported  reported state
//! device ──▶ keelson/devices/{id}/acks           command acknowledgements
//! device ◀── keelson/devices/{id}/commands       commands
//! device ◀── keelson/devices/{id}/twin/desired   desired state (retained)
//! bridge ──▶ keelson/deadletter                  rejected messages with the reason
//! ```

pub use crate::edge::DEADLETTER_TOPIC as DEADLETTER;

/// Every device's telemetry.
pub const TELEMETRY_FILTER: &str = "keelson/devices/+/telemetry";
/// Every device's reported twin state.
pub const REPORTED_FILTER: &str = "keelson/devices/+/twin/reported";
/// Every device's command acknowledgements.
pub const ACKS_FILTER: &str = "keelson/devices/+/acks";
/// Every device's commands (what a device simulator subscribes to).
pub const COMMANDS_FILTER: &str = "keelson/devices/+/commands";

/// Commands for one device.
pub fn commands(device: &str) -> String {
    format!("keelson/devices/{device}/commands")
}

/// Desired state for one device.
pub fn desired(device: &str) -> String {
    format!("keelson/devices/{device}/twin/desired")
}

/// Telemetry of one device.
pub fn telemetry(device: &str) -> String {
    format!("keelson/devices/{device}/telemetry")
}

/// Reported twin state of one device.
pub fn reported(device: &str) -> String {
    format!("keelson/devices/{device}/twin/reported")
}

/// Acknowledgements of one device.
pub fn acks(device: &str) -> String {
    format!("keelson/devices/{device}/acks")
}

/// The device id in a `keelson/devices/{id}/...` topic.
pub fn device_of(topic: &str) -> Option<&str> {
    topic.strip_prefix("keelson/devices/")?.split('/').next()
}
