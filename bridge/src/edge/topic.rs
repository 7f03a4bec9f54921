//! Which device a message is from and what kind it is, read from its topic.

use super::{Reason, Rejected, ACK_SUFFIX, DEVICE_TOPIC_PREFIX, REPORTED_SUFFIX, TELEMETRY_SUFFIX};

/// Which per-device topic a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceTopic {
    /// `keelson/devices/{id}/telemetry`
    Telemetry,
    /// `keelson/devices/{id}/twin/reported`
    Reported,
    /// `keelson/devices/{id}/acks`
    Ack,
}

/// Splits a device topic into its kind and device id; `None` if it is not one or the id is invalid.
pub fn parse_topic(topic: &str) -> Option<(DeviceTopic, &str)> {
    let rest = topic.strip_prefix(DEVICE_TOPIC_PREFIX)?;
    let (id, suffix) = rest.split_once('/')?;
    let kind = match suffix {
        TELEMETRY_SUFFIX => DeviceTopic::Telemetry,
        REPORTED_SUFFIX => DeviceTopic::Reported,
        ACK_SUFFIX => DeviceTopic::Ack,
        _ => return None,
    };
    valid_device_id(id).then_some((kind, id))
}

/// Device ids in topics: the actors' id rule ([`keelson_actors::validate_id`]: 1-64 characters of
/// `A-Z a-z 0-9 _ - . :`) without `.` and `:`, which a device topic has never accepted. MQTT's
/// own special characters (`/`, `+`, `#`) are outside both rules.
fn valid_device_id(id: &str) -> bool {
    keelson_actors::validate_id("device_id", id).is_ok() && !id.contains(['.', ':'])
}

/// The device id in a topic, checked again by each message kind.
pub(super) fn check_topic_device(topic_device: &str) -> Result<(), Rejected> {
    if valid_device_id(topic_device) {
        Ok(())
    } else {
        Err(Rejected::new(
            Reason::BadTopic,
            format!(
                "device id {topic_device:?} in the topic must be 1-64 characters of A-Z a-z 0-9 _ -"
            ),
        ))
    }
}
