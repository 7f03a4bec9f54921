//! The MQTT topics Keelson uses: the one topic table, for the bridge, the edge checks and the
//! HTTP gateway's publishes. Names on the wire: never derive them from anything else.
//!
//! ```text
//! device ──▶ keelson/devices/{id}/telemetry      readings (QoS 1)
//! device ──▶ keelson/devices/{id}/twin/reported  reported state
//! device ──▶ keelson/devices/{id}/acks           command acknowledgements
//! device ◀── keelson/devices/{id}/commands       commands
//! device ◀── keelson/devices/{id}/twin/desired   desired state (retained)
//! bridge ──▶ keelson/deadletter                  rejected messages with the reason
//! ```

/// Topic prefix of every per-device topic.
pub const DEVICE_PREFIX: &str = "keelson/devices/";
/// Suffix of the telemetry topic, after the device id.
pub const TELEMETRY_SUFFIX: &str = "telemetry";
/// Suffix of the reported-twin topic, after the device id.
pub const REPORTED_SUFFIX: &str = "twin/reported";
/// Suffix of the command-acknowledgement topic, after the device id.
pub const ACK_SUFFIX: &str = "acks";
/// Suffix of the command topic, after the device id.
pub const COMMANDS_SUFFIX: &str = "commands";
/// Suffix of the desired-twin topic, after the device id.
pub const DESIRED_SUFFIX: &str = "twin/desired";
/// Where rejected messages are published.
pub const DEADLETTER: &str = "keelson/deadletter";

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
    format!("{DEVICE_PREFIX}{device}/{COMMANDS_SUFFIX}")
}

/// Desired state for one device.
pub fn desired(device: &str) -> String {
    format!("{DEVICE_PREFIX}{device}/{DESIRED_SUFFIX}")
}

/// Telemetry of one device.
pub fn telemetry(device: &str) -> String {
    format!("{DEVICE_PREFIX}{device}/{TELEMETRY_SUFFIX}")
}

/// Reported twin state of one device.
pub fn reported(device: &str) -> String {
    format!("{DEVICE_PREFIX}{device}/{REPORTED_SUFFIX}")
}

/// Acknowledgements of one device.
pub fn acks(device: &str) -> String {
    format!("{DEVICE_PREFIX}{device}/{ACK_SUFFIX}")
}

/// The device id in a `keelson/devices/{id}/...` topic.
pub fn device_of(topic: &str) -> Option<&str> {
    topic.strip_prefix(DEVICE_PREFIX)?.split('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_and_the_builders_agree() {
        for (filter, built) in [
            (TELEMETRY_FILTER, telemetry("+")),
            (REPORTED_FILTER, reported("+")),
            (ACKS_FILTER, acks("+")),
            (COMMANDS_FILTER, commands("+")),
        ] {
            assert_eq!(filter, built);
        }
        assert_eq!(device_of(&desired("d-1")), Some("d-1"));
    }
}
