//! Who may connect to the MQTT broker. Nobody anonymous:
//!
//! - **Devices** log in with username = client id = their device id and the password issued by
//!   `POST /v1/devices/{id}/credentials`, stored in the cluster only as a Mosquitto `$7$` hash
//!   (PBKDF2-HMAC-SHA512), so one record serves the embedded broker and a Mosquitto password file.
//! - **Services** (the bridge, the gateway's publisher, Keelson's tools) log in with a client id
//!   that starts with [`SERVICE_PREFIX`], username = client id, and the cluster's MQTT service
//!   secret (`<data_dir>/run/mqtt-service.secret`, made by `keelson init`). Client ids with that
//!   prefix are refused to anyone else, so nobody can take over the bridge's persistent session.
//!
//! rumqttd 0.20 checks credentials at CONNECT only (an async hook, see [`Authenticator`]); it has
//! no per-topic ACL, so the embedded broker cannot stop one authenticated device publishing on
//! another's topic (Mosquitto can: `keelson mosquitto-config` writes the ACL patterns).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::RwLock;

use aws_lc_rs::pbkdf2;
use base64::Engine;
use keelson_runtime::config::{read_secret, Secret};
use keelson_runtime::ClusterConfig;
use rand::RngExt;
use subtle::ConstantTimeEq;

use crate::mqtt_acl::Identity;

/// Client ids (and usernames) reserved for Keelson's services.
pub const SERVICE_PREFIX: &str = "keelson-";

/// Environment variable that overrides the service secret file.
pub const SERVICE_SECRET_ENV: &str = "KEELSON_MQTT_SECRET";

/// PBKDF2 rounds of a new device password hash (the passwords are random, 32 bytes).
const ITERATIONS: u32 = 1000;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where the service secret lives.
pub fn service_secret_file(cfg: &ClusterConfig) -> PathBuf {
    cfg.data_dir.join("run").join("mqtt-service.secret")
}

/// The service secret: `KEELSON_MQTT_SECRET`, else the file.
pub fn service_secret(cfg: &ClusterConfig) -> Option<Secret> {
    match std::env::var(SERVICE_SECRET_ENV) {
        Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
        _ => read_secret(&service_secret_file(cfg)).ok(),
    }
}

/// A random password: 32 bytes, base64url.
pub fn random_password() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Mosquitto's `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 12-byte salt, 64 bytes.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 12] = rand::rng().random();
    let mut out = [0u8; 64];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(ITERATIONS).expect("non-zero"),
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!("$7${ITERATIONS}${}${}", B64.encode(salt), B64.encode(out))
}

/// Checks `password` against a `$7$` hash.
pub fn verify_password(password: &str, encoded: &str) -> bool {
    let mut parts = encoded.split('$');
    let (Some(""), Some("7"), Some(iter), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iter), Ok(salt), Ok(hash)) = (
        iter.parse::<u32>().ok().and_then(NonZeroU32::new),
        B64.decode(salt),
        B64.decode(hash),
    ) else {
        return false;
    };
    if iter.get() > 1_000_000 || hash.len() != 64 {
        return false;
    }
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iter,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

/// Why a CONNECT was refused (the label of `keelson_mqtt_auth_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No username or password.
    Anonymous,
    /// Username and client id differ.
    ClientIdMismatch,
    /// A reserved service id without the service secret.
    NotAService,
    /// Unknown device or wrong password.
    BadPassword,
}

impl Refusal {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Anonymous => "anonymous",
            Refusal::ClientIdMismatch => "client_id_mismatch",
            Refusal::NotAService => "not_a_service",
            Refusal::BadPassword => "bad_password",
        }
    }
}

/// The broker's view of who may connect: the service secret and the devices' hashes (refreshed
/// from the cluster's registry).
#[derive(Default)]
pub struct Authenticator {
    service: Option<Secret>,
    devices: RwLock<HashMap<String, String>>,
    version: RwLock<Option<u64>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("service", &self.service.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// With the service secret, if any (without it, no service may connect).
    pub fn new(service: Option<Secret>) -> Self {
        Self {
            service,
            ..Self::default()
        }
    }

    /// The registry version last applied.
    pub fn version(&self) -> Option<u64> {
        *self.version.read().expect("version lock")
    }

    /// Replaces the device hashes.
    pub fn apply(&self, version: u64, devices: HashMap<String, String>) {
        *self.devices.write().expect("devices lock") = devices;
        *self.version.write().expect("version lock") = Some(version);
    }

    /// Decides one CONNECT: who it is, or why not.
    pub fn check(&self, client_id: &str, user: &str, pass: &str) -> Result<Identity, Refusal> {
        if user.is_empty() || pass.is_empty() {
            return Err(Refusal::Anonymous);
        }
        if client_id != user {
            return Err(Refusal::ClientIdMismatch);
        }
        if user.starts_with(SERVICE_PREFIX) {
            return match &self.service {
                Some(s) if bool::from(s.expose().as_bytes().ct_eq(pass.as_bytes())) => {
                    Ok(Identity::Service(user.to_string()))
                }
                _ => Err(Refusal::NotAService),
            };
        }
        let hash = self
            .devices
            .read()
            .expect("devices lock")
            .get(user)
            .cloned();
        match hash {
            Some(h) if verify_password(pass, &h) => Ok(Identity::Device(user.to_string())),
            _ => Err(Refusal::BadPassword),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_look_like_mosquittos() {
        let h = hash_password("s3cret-password");
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[1], "7");
        assert_eq!(B64.decode(parts[3]).unwrap().len(), 12);
        assert_eq!(B64.decode(parts[4]).unwrap().len(), 64);
        assert!(verify_password("s3cret-password", &h));
        assert!(!verify_password("s3cret-passworD", &h));
        for bad in [
            "",
            "$7$",
            "$7$0$a$b",
            "$6$1$a$b",
            "$7$1000$!!$!!",
            &format!("{h}$x"),
        ] {
            assert!(!verify_password("s3cret-password", bad), "{bad}");
        }
    }

    #[test]
    fn connects_are_decided_by_identity_and_secret() {
        let a = Authenticator::new(Some(Secret::new("service-secret-123")));
        let mut devices = HashMap::new();
        devices.insert("d1".to_string(), hash_password("pw-d1"));
        a.apply(1, devices);
        assert_eq!(
            a.check("d1", "d1", "pw-d1"),
            Ok(Identity::Device("d1".into()))
        );
        assert_eq!(a.check("d1", "d1", "wrong"), Err(Refusal::BadPassword));
        assert_eq!(a.check("d2", "d2", "pw-d1"), Err(Refusal::BadPassword));
        assert_eq!(a.check("d1", "", ""), Err(Refusal::Anonymous));
        // A device cannot use another's client id, nor a service's.
        assert_eq!(
            a.check("keelson-bridge-local", "d1", "pw-d1"),
            Err(Refusal::ClientIdMismatch)
        );
        assert_eq!(
            a.check("keelson-bridge-local", "keelson-bridge-local", "pw-d1"),
            Err(Refusal::NotAService)
        );
        assert_eq!(
            a.check(
                "keelson-bridge-local",
                "keelson-bridge-local",
                "service-secret-123"
            ),
            Ok(Identity::Service("keelson-bridge-local".into()))
        );
        // Without a service secret no service gets in.
        let none = Authenticator::new(None);
        assert_eq!(
            none.check("keelson-x", "keelson-x", "anything"),
            Err(Refusal::NotAService)
        );
    }
}
