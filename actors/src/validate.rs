//! Field rules shared by every entity, and the domain errors a command can return.
//!
//! [`validate_id`] is THE id rule: every id a client names (customers, devices, readings, API
//! keys...) is checked by it, whether it arrives over HTTP (the gateway) or MQTT (the bridge),
//! so an id accepted on one path is accepted on the other. [`validate_ref`] is the same rule with
//! room for the ids built from other ids (alerts, commands, tickets).

use serde::{Deserialize, Serialize};

/// A command refused by the entity's rules. Maps to a 4xx at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    /// The entity does not exist.
    #[error("{kind} \"{id}\" does not exist")]
    NotFound {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
    },
    /// Create on an entity that exists.
    #[error("{kind} \"{id}\" already exists")]
    AlreadyExists {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
    },
    /// A field breaks a rule.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// Field path, e.g. `email` or `tags[2]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Longest id built from other ids (alert, command and ticket ids), in characters.
pub const MAX_REF_LEN: usize = 128;

/// Longest id a client names, in characters (bytes: every allowed character is ASCII).
pub const MAX_ID_LEN: usize = 64;

/// THE id rule, shared by HTTP (gateway) and MQTT (bridge): an id is 1-64 characters of
/// `A-Z a-z 0-9 _ - . :`.
///
/// Why these characters: an id travels unescaped in URL paths (`/v1/devices/{id}`), MQTT topic
/// levels (no `/`, `+` or `#`), metric labels and log lines, and is built into other ids
/// (`{device}-{seq}`, `t-{alert}`); ASCII letters, digits and `_ - . :` are safe in all of them
/// and need no decoding. Why 64: room for a UUID or a prefixed name, while an id built from one
/// (`{device}-{seq}`, `t-{alert}`) still fits in [`MAX_REF_LEN`]. `field` names the field in the
/// error, which says what is allowed.
pub fn validate_id(field: &str, id: &str) -> Result<(), DomainError> {
    validate_id_up_to(field, id, MAX_ID_LEN)
}

/// Checks an id built from other ids: 1-[`MAX_REF_LEN`] characters of `A-Z a-z 0-9 _ - . :`.
pub(crate) fn validate_ref(field: &str, id: &str) -> Result<(), DomainError> {
    validate_id_up_to(field, id, MAX_REF_LEN)
}

/// An id of 1-`max` characters of `A-Z a-z 0-9 _ - . :`.
fn validate_id_up_to(field: &str, id: &str, max: usize) -> Result<(), DomainError> {
    if id.is_empty() || id.len() > max {
        return Err(invalid(
            field,
            format!("must be 1-{max} characters, got {}", id.len()),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.:".contains(*c)))
    {
        return Err(invalid(
            field,
            format!("character {c:?} is not allowed (use A-Z a-z 0-9 _ - . :)"),
        ));
    }
    Ok(())
}

/// A required text of at most `max` characters, not blank.
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    // Bounded in bytes (what is stored and sent), not characters.
    if value.len() > max {
        return Err(invalid(
            field,
            format!("must be at most {max} bytes of UTF-8, got {}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// An e-mail address: one `@` with text on both sides and a dot in the domain.
pub(crate) fn email(field: &str, value: &str) -> Result<(), DomainError> {
    text(field, value, 254)?;
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !value.contains(' ') =>
        {
            Ok(())
        }
        _ => Err(invalid(
            field,
            // Personal data is never echoed back (nor into logs that record errors).
            "is not an e-mail address (expected name@domain.tld)".to_string(),
        )),
    }
}

/// A phone number: digits with optional `+`, spaces, dashes and parentheses; 5-20 digits.
pub(crate) fn phone(field: &str, value: &str) -> Result<(), DomainError> {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    if !value
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()".contains(c))
        || !(5..=20).contains(&digits)
    {
        return Err(invalid(
            field,
            "is not a phone number (5-20 digits, optionally with +, spaces, -, ( and ))",
        ));
    }
    Ok(())
}

/// Tags: at most 32, each 1-40 characters of `a-z 0-9 - _`, no duplicates.
pub(crate) fn tags(field: &str, tags: &[String]) -> Result<(), DomainError> {
    if tags.len() > 32 {
        return Err(invalid(field, "at most 32 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= 40
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(invalid(
                format!("{field}[{i}]"),
                "must be 1-40 characters of a-z 0-9 - _",
            ));
        }
        if tags[..i].contains(t) {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("duplicate tag \"{t}\""),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("id", "c-1_x.y:z").is_ok());
        assert!(validate_id("id", "").is_err());
        assert!(validate_id("id", &"a".repeat(65)).is_err());
        assert_eq!(
            validate_id("id", "a/b"),
            Err(invalid(
                "id",
                "character '/' is not allowed (use A-Z a-z 0-9 _ - . :)"
            ))
        );
    }

    #[test]
    fn emails_phones_tags() {
        assert!(email("email", "a@b.io").is_ok());
        for bad in ["a", "a@b", "@b.io", "a b@c.io", "a@b@c.io"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        assert!(phone("phone", "+1 (555) 123-4567").is_ok());
        assert!(phone("phone", "12").is_err());
        assert!(phone("phone", "call me").is_err());
        assert!(tags("tags", &["vip".into(), "b2b".into()]).is_ok());
        assert_eq!(
            tags("tags", &["vip".into(), "vip".into()]),
            Err(invalid("tags[1]", "duplicate tag \"vip\""))
        );
        assert!(tags("tags", &["VIP".into()]).is_err());
    }
}
