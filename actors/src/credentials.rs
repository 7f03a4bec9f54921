//! Devices' MQTT credentials: one registry entity (`mqtt-credentials/devices`), replicated like
//! every other, holding each device's password hash (Mosquitto's `$7$` PBKDF2-SHA512 format, so
//! the same record serves the embedded broker and a Mosquitto password file), never a password.
//! Its version rises on every change, so brokers reread it only when it changed.

use std::collections::BTreeMap;

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

use crate::validate::{invalid, validate_id, DomainError};

/// The registry's id.
pub const CREDENTIALS_ID: &str = "devices";

/// Most devices with credentials in one registry.
pub const MAX_DEVICE_CREDENTIALS: usize = 20_000;

/// One device's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredential {
    /// Password hash, `$7$iterations$salt$hash`.
    pub hash: String,
    /// When it was issued.
    pub issued_ms: u64,
    /// Rotations so far (1 for the first).
    pub generation: u32,
}

/// Persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsState {
    /// Rises on every change.
    pub version: u64,
    /// By device id.
    pub devices: BTreeMap<String, DeviceCredential>,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialsCommand {
    /// Issue or rotate a device's credential (the old one stops working).
    Issue {
        /// Device.
        device_id: String,
        /// New hash.
        hash: String,
    },
    /// Every credential, unless the registry is still at `unless_version`.
    List {
        /// The version the caller has.
        unless_version: Option<u64>,
    },
    /// Remove a device's credential (its device was erased); again: nothing changes.
    Revoke {
        /// Device.
        device_id: String,
    },
}

impl CredentialsCommand {
    /// Whether it only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, CredentialsCommand::List { .. })
    }
}

/// Answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialsAnswer {
    /// The credential issued.
    Issued {
        /// Its generation.
        generation: u32,
        /// Registry version after it.
        version: u64,
    },
    /// Everything.
    All(CredentialsState),
    /// Nothing changed since the version asked about.
    Unchanged(u64),
    /// The device holds no credential (any more); the registry's version.
    Revoked(u64),
}

/// A credentials command's result.
pub type CredentialsReply = Result<CredentialsAnswer, DomainError>;

/// The registry entity.
pub struct Credentials;

impl Entity for Credentials {
    const KIND: &'static str = "mqtt-credentials";
    const STATE_VERSION: u8 = 1;
    type State = CredentialsState;
    type Command = CredentialsCommand;
    type Reply = CredentialsReply;

    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<CredentialsState>,
        command: CredentialsCommand,
    ) -> Result<Handled<CredentialsReply>, EntityError> {
        let s = state.get_or_insert_with(CredentialsState::default);
        Ok(match command {
            CredentialsCommand::List { unless_version } if unless_version == Some(s.version) => {
                Handled::read(Ok(CredentialsAnswer::Unchanged(s.version)))
            }
            CredentialsCommand::List { .. } => Handled::read(Ok(CredentialsAnswer::All(s.clone()))),
            CredentialsCommand::Issue { device_id, hash } => {
                if let Err(e) = validate_id("device_id", &device_id) {
                    return Ok(Handled::read(Err(e)));
                }
                if !hash.starts_with("$7$") || hash.len() > 256 {
                    return Ok(Handled::read(Err(invalid("hash", "is not a $7$ hash"))));
                }
                if !s.devices.contains_key(&device_id) && s.devices.len() >= MAX_DEVICE_CREDENTIALS
                {
                    return Ok(Handled::read(Err(invalid(
                        "device_id",
                        format!("{MAX_DEVICE_CREDENTIALS} devices already hold credentials"),
                    ))));
                }
                let generation = s
                    .devices
                    .get(&device_id)
                    .map_or(1, |d| d.generation.saturating_add(1));
                s.devices.insert(
                    device_id,
                    DeviceCredential {
                        hash,
                        issued_ms: ctx.now_ms,
                        generation,
                    },
                );
                s.version = s.version.saturating_add(1);
                Handled::wrote(Ok(CredentialsAnswer::Issued {
                    generation,
                    version: s.version,
                }))
            }
            CredentialsCommand::Revoke { device_id } => {
                if s.devices.remove(&device_id).is_none() {
                    return Ok(Handled::read(Ok(CredentialsAnswer::Revoked(s.version))));
                }
                s.version = s.version.saturating_add(1);
                Handled::wrote(Ok(CredentialsAnswer::Revoked(s.version)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut Option<CredentialsState>, c: CredentialsCommand) -> Handled<CredentialsReply> {
        Credentials::handle(&EntityContext::new(CREDENTIALS_ID, 5), s, c).unwrap()
    }

    #[test]
    fn issuing_twice_rotates_and_bumps_the_version() {
        let mut s = None;
        let issue = |h: &str| CredentialsCommand::Issue {
            device_id: "d1".into(),
            hash: h.into(),
        };
        assert_eq!(
            run(&mut s, issue("$7$1$a$b")).reply,
            Ok(CredentialsAnswer::Issued {
                generation: 1,
                version: 1
            })
        );
        assert_eq!(
            run(&mut s, issue("$7$1$c$d")).reply,
            Ok(CredentialsAnswer::Issued {
                generation: 2,
                version: 2
            })
        );
        assert_eq!(s.as_ref().unwrap().devices["d1"].hash, "$7$1$c$d");
        assert_eq!(
            run(
                &mut s,
                CredentialsCommand::List {
                    unless_version: Some(2)
                }
            )
            .reply,
            Ok(CredentialsAnswer::Unchanged(2))
        );
        assert!(matches!(
            run(
                &mut s,
                CredentialsCommand::List {
                    unless_version: Some(1)
                }
            )
            .reply,
            Ok(CredentialsAnswer::All(_))
        ));
    }

    #[test]
    fn bad_ids_and_hashes_change_nothing() {
        let mut s = None;
        let r = run(
            &mut s,
            CredentialsCommand::Issue {
                device_id: "a b".into(),
                hash: "$7$x".into(),
            },
        );
        assert!(!r.changed && r.reply.is_err());
        let r = run(
            &mut s,
            CredentialsCommand::Issue {
                device_id: "d".into(),
                hash: "plain".into(),
            },
        );
        assert!(!r.changed && r.reply.is_err());
        assert_eq!(s.unwrap().version, 0);
    }
}
