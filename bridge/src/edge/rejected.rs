//! Why a message was refused ([`Reason`], a stable metric label, and [`Rejected`] with the field
//! at fault), and the dead letter published for it on [`super::DEADLETTER_TOPIC`].

use std::fmt;

use serde::Serialize;

use super::{ACK_SUFFIX, DEVICE_TOPIC_PREFIX, REPORTED_SUFFIX, TELEMETRY_SUFFIX};

/// Characters of a UTF-8 payload quoted in its dead letter.
const DEADLETTER_TEXT_CHARS: usize = 1024;
/// Bytes of a binary payload quoted (as hex) in its dead letter.
const DEADLETTER_HEX_BYTES: usize = 256;

/// Why a message was rejected. `as_str` is the stable metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Payload larger than `max_payload_bytes`.
    TooLarge,
    /// Payload is not UTF-8.
    NotUtf8,
    /// Payload is not JSON.
    BadJson,
    /// JSON of the wrong shape: types, missing or unknown fields, names, counts.
    BadSchema,
    /// `device_id` differs from the id in the topic.
    DeviceMismatch,
    /// A unit that is unknown for its reading, or given for a reading not present.
    BadUnit,
    /// A reading outside its plausible range, or a timestamp too far in the future.
    OutOfRange,
    /// A seq this device already sent.
    Duplicate,
    /// The device exceeded its rate limit.
    RateLimited,
    /// The bridge does not know the device (decided by the bridge, not by [`Edge`]).
    UnknownDevice,
    /// The topic is not a device topic or its device id is invalid.
    BadTopic,
    /// The device entity refused the sample (e.g. its sequence number jumps too far past the
    /// highest it has); decided by the bridge from the entity's answer.
    Refused,
}

impl Reason {
    /// Every reason, for registering metric labels up front.
    pub const ALL: [Reason; 12] = [
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::BadJson,
        Reason::BadSchema,
        Reason::DeviceMismatch,
        Reason::BadUnit,
        Reason::OutOfRange,
        Reason::Duplicate,
        Reason::RateLimited,
        Reason::UnknownDevice,
        Reason::BadTopic,
        Reason::Refused,
    ];

    /// The snake_case label used in metrics and the deadletter document; never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::BadJson => "bad_json",
            Reason::BadSchema => "bad_schema",
            Reason::DeviceMismatch => "device_mismatch",
            Reason::BadUnit => "bad_unit",
            Reason::OutOfRange => "out_of_range",
            Reason::Duplicate => "duplicate",
            Reason::RateLimited => "rate_limited",
            Reason::UnknownDevice => "unknown_device",
            Reason::BadTopic => "bad_topic",
            Reason::Refused => "refused",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message the edge refused: the reason (a metric label) and a detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejected {
    /// Category.
    pub reason: Reason,
    /// The field and what is wrong with it.
    pub detail: String,
}

impl Rejected {
    /// A rejection with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejected {
            reason,
            detail: detail.into(),
        }
    }

    /// For the bridge when a message comes from a device it has no record of.
    pub fn unknown_device(device_id: &str) -> Self {
        Self::new(
            Reason::UnknownDevice,
            format!("device \"{device_id}\" is not registered"),
        )
    }

    /// For the bridge when [`parse_topic`] does not recognise a topic.
    pub fn bad_topic(topic: &str) -> Self {
        Self::new(
            Reason::BadTopic,
            format!(
                "topic \"{topic}\" is not {DEVICE_TOPIC_PREFIX}{{id}}/{TELEMETRY_SUFFIX}|{REPORTED_SUFFIX}|{ACK_SUFFIX} with an id of 1-64 characters of A-Z a-z 0-9 _ -"
            ),
        )
    }
}

/// The document published to [`DEADLETTER_TOPIC`] for a rejected message.
pub fn deadletter(topic: &str, payload: &[u8], r: &Rejected, now_ms: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Deadletter<'a> {
        topic: &'a str,
        reason: &'static str,
        detail: &'a str,
        at_ms: u64,
        payload_bytes: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_hex: Option<String>,
    }
    let (text, hex) = match std::str::from_utf8(payload) {
        Ok(s) => {
            let end = s
                .char_indices()
                .nth(DEADLETTER_TEXT_CHARS)
                .map_or(s.len(), |(i, _)| i);
            (Some(&s[..end]), None)
        }
        Err(_) => {
            let head = &payload[..payload.len().min(DEADLETTER_HEX_BYTES)];
            (
                None,
                Some(head.iter().map(|b| format!("{b:02x}")).collect()),
            )
        }
    };
    let doc = Deadletter {
        topic,
        reason: r.reason.as_str(),
        detail: &r.detail,
        at_ms: now_ms,
        payload_bytes: payload.len(),
        payload: text,
        payload_hex: hex,
    };
    serde_json::to_vec(&doc).expect("a struct of strings and integers always serializes")
}
