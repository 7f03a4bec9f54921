//! Authentication: turns `Authorization: Bearer <credential>` into a [`Principal`], or says why
//! not. Two kinds of credential:
//!
//! - **API keys** `kk_<id>.<secret>`: the id finds the record (from the cluster's keyring,
//!   refreshed every [`REFRESH`], or the bootstrap admin key read from a file at start), the
//!   SHA-256 of the secret is compared in constant time. Keys are never stored, only hashes.
//! - **JWTs** from the identity provider of `[auth.jwt]`: the algorithm is pinned per key (HS256
//!   for the shared secret, RS256 or ES256 for the public key), so a token cannot pick its own
//!   check: `alg: none`, an HS256 token signed with the public key, or any other algorithm is
//!   refused. `exp`, `nbf`, `iss`, `aud` and `sub` are required and checked.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keelson_actors::{ApiKeyRecord, BOOTSTRAP_KEY_NAME};
use keelson_runtime::config::{JwtSettings, PublicKeyAlgorithm, Secret};
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::http::HeaderMap;

use crate::authz::{Principal, Role, Via};

/// How often a gateway rereads the keyring.
pub const REFRESH: Duration = Duration::from_millis(250);

/// Why a request is not authenticated (the label of `keelson_auth_denied_total{reason}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <credential>`.
    Malformed,
    /// No such key, or the secret does not match.
    BadKey,
    /// The key was revoked.
    Revoked,
    /// The JWT was refused; why, for the log (never the token).
    BadToken(String),
}

impl AuthFailure {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_credentials",
            AuthFailure::Malformed => "malformed_credentials",
            AuthFailure::BadKey => "bad_key",
            AuthFailure::Revoked => "revoked_key",
            AuthFailure::BadToken(_) => "bad_token",
        }
    }
}

#[derive(Debug, Clone)]
struct KeyEntry {
    name: String,
    role: Role,
    hash: [u8; 32],
    revoked: bool,
}

/// SHA-256 of a key's secret part.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new key: (id, the whole key to show once, the hash to store).
pub fn new_key() -> (String, String, [u8; 32]) {
    let mut rng = rand::rng();
    let id = format!("{:012x}", rng.random::<u64>() & 0xffff_ffff_ffff);
    let secret = random_secret();
    let hash = hash_secret(&secret);
    (id.clone(), format!("kk_{id}.{secret}"), hash)
}

/// 32 random bytes, base64url without padding.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A bootstrap admin key in its file format.
pub fn new_bootstrap_key() -> String {
    format!("kk_bootstrap.{}", random_secret())
}

/// Splits `kk_<id>.<secret>`.
fn parse_key(k: &str) -> Option<(&str, &str)> {
    let (id, secret) = k.strip_prefix("kk_")?.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

struct JwtCheck {
    key: DecodingKey,
    validation: Validation,
}

/// Everything that can prove an identity to this gateway.
pub struct Identities {
    keys: RwLock<HashMap<String, KeyEntry>>,
    bootstrap: Option<[u8; 32]>,
    hs256: Option<JwtCheck>,
    public: Option<(Algorithm, JwtCheck)>,
    role_claim: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("keys", &self.keys.read().map(|k| k.len()).unwrap_or(0))
            .field("bootstrap", &self.bootstrap.is_some())
            .finish()
    }
}

fn validation(alg: Algorithm, j: &JwtSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[&j.issuer]);
    v.set_audience(&[&j.audience]);
    v.leeway = j.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

/// A JWT configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwt: {0}")]
pub struct JwtConfigError(String);

impl Identities {
    /// The bootstrap key (if any) and the JWT settings (if any); the keyring comes later.
    pub fn new(
        bootstrap: Option<&Secret>,
        jwt: Option<&JwtSettings>,
    ) -> Result<Self, JwtConfigError> {
        let bootstrap = bootstrap.and_then(|k| parse_key(k.expose()).map(|(_, s)| hash_secret(s)));
        let (mut hs256, mut public, mut role_claim) = (None, None, "role".to_string());
        if let Some(j) = jwt {
            role_claim = j.role_claim.clone();
            if let Some(s) = &j.hs256_secret {
                hs256 = Some(JwtCheck {
                    key: DecodingKey::from_secret(s.expose().as_bytes()),
                    validation: validation(Algorithm::HS256, j),
                });
            }
            if let Some((pem, alg)) = &j.public_key {
                let (alg, key) = match alg {
                    PublicKeyAlgorithm::Rs256 => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)),
                    PublicKeyAlgorithm::Es256 => (Algorithm::ES256, DecodingKey::from_ec_pem(pem)),
                };
                let key = key.map_err(|e| {
                    JwtConfigError(format!("public_key_file: not a {alg:?} public key: {e}"))
                })?;
                public = Some((
                    alg,
                    JwtCheck {
                        key,
                        validation: validation(alg, j),
                    },
                ));
            }
        }
        Ok(Self {
            keys: RwLock::new(HashMap::new()),
            bootstrap,
            hs256,
            public,
            role_claim,
        })
    }

    /// Replaces the known keys with the keyring's.
    pub fn apply(&self, records: &[ApiKeyRecord]) {
        let index = records
            .iter()
            .filter_map(|r| {
                Some((
                    r.id.clone(),
                    KeyEntry {
                        name: r.name.clone(),
                        role: Role::parse(&r.role)?,
                        hash: r.hash,
                        revoked: r.revoked_ms.is_some(),
                    },
                ))
            })
            .collect();
        *self.keys.write().expect("key index lock") = index;
    }

    /// Knows one new key at once (the gateway that made it need not wait for a refresh).
    pub fn add_now(&self, rec: &ApiKeyRecord) {
        if let Some(role) = Role::parse(&rec.role) {
            self.keys.write().expect("key index lock").insert(
                rec.id.clone(),
                KeyEntry {
                    name: rec.name.clone(),
                    role,
                    hash: rec.hash,
                    revoked: rec.revoked_ms.is_some(),
                },
            );
        }
    }

    /// Marks one key revoked at once (the gateway that revoked it need not wait for a refresh).
    pub fn revoke_now(&self, rec: &ApiKeyRecord) {
        let mut keys = self.keys.write().expect("key index lock");
        keys.entry(rec.id.clone())
            .and_modify(|k| k.revoked = true)
            .or_insert(KeyEntry {
                name: rec.name.clone(),
                role: Role::Admin,
                hash: rec.hash,
                revoked: true,
            });
    }

    /// Who sent `headers`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthFailure> {
        let Some(h) = headers.get("authorization") else {
            return Err(AuthFailure::Missing);
        };
        let cred = h
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|c| !c.is_empty())
            .ok_or(AuthFailure::Malformed)?;
        if cred.starts_with("kk_") {
            self.api_key(cred)
        } else {
            self.jwt(cred)
        }
    }

    fn api_key(&self, cred: &str) -> Result<Principal, AuthFailure> {
        let (id, secret) = parse_key(cred).ok_or(AuthFailure::Malformed)?;
        let presented = hash_secret(secret);
        let keys = self.keys.read().expect("key index lock");
        if id == "bootstrap" {
            let stored = self.bootstrap.ok_or(AuthFailure::BadKey)?;
            if !bool::from(stored.ct_eq(&presented)) {
                return Err(AuthFailure::BadKey);
            }
            if keys.get("bootstrap").is_some_and(|k| k.revoked) {
                return Err(AuthFailure::Revoked);
            }
            return Ok(Principal {
                name: BOOTSTRAP_KEY_NAME.to_string(),
                role: Role::Admin,
                customer: None,
                via: Via::ApiKey,
            });
        }
        let k = keys.get(id).ok_or(AuthFailure::BadKey)?;
        if !bool::from(k.hash.ct_eq(&presented)) {
            return Err(AuthFailure::BadKey);
        }
        if k.revoked {
            return Err(AuthFailure::Revoked);
        }
        Ok(Principal {
            name: k.name.clone(),
            role: k.role,
            customer: None,
            via: Via::ApiKey,
        })
    }

    fn jwt(&self, token: &str) -> Result<Principal, AuthFailure> {
        let bad = |m: String| AuthFailure::BadToken(m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| bad(format!("not a usable JWT: {e}")))?;
        let check = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            alg => self
                .public
                .as_ref()
                .filter(|(a, _)| *a == alg)
                .map(|(_, c)| c),
        }
        .ok_or_else(|| bad(format!("algorithm {:?} is not accepted", header.alg)))?;
        let data = jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(
            token,
            &check.key,
            &check.validation,
        )
        .map_err(|e| bad(format!("refused: {e}")))?;
        let claims = data.claims;
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| keelson_actors::validate_id("sub", s).is_ok())
            .ok_or_else(|| bad("`sub` is not a usable id".into()))?;
        let role = claims
            .get(&self.role_claim)
            .and_then(|v| v.as_str())
            .and_then(Role::parse)
            .ok_or_else(|| bad(format!("claim `{}` names no known role", self.role_claim)))?;
        Ok(Principal {
            name: format!("jwt:{sub}"),
            role,
            customer: (role == Role::Customer).then(|| sub.to_string()),
            via: Via::Jwt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn settings(public: Option<(Vec<u8>, PublicKeyAlgorithm)>) -> JwtSettings {
        JwtSettings {
            issuer: "https://idp.test".into(),
            audience: "keelson".into(),
            hs256_secret: Some(Secret::new(SECRET)),
            public_key: public,
            role_claim: "role".into(),
            leeway_secs: 0,
        }
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", v.parse().unwrap());
        h
    }

    fn now() -> u64 {
        keelson_runtime::now_ms() / 1000
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"sub":"ada","role":"customer","iss":"https://idp.test","aud":"keelson","exp":now()+600,"nbf":now()-10})
    }

    #[test]
    fn tokens_are_checked_in_full() {
        let ids = Identities::new(None, Some(&settings(None))).unwrap();
        let p = ids
            .authenticate(&headers(&format!("Bearer {}", hs(good()))))
            .unwrap();
        assert_eq!(
            (p.role, p.customer.as_deref()),
            (Role::Customer, Some("ada"))
        );
        let mut cases = vec![];
        for (field, value) in [
            ("exp", json!(now() - 5)),
            ("nbf", json!(now() + 600)),
            ("aud", json!("other")),
            ("iss", json!("https://evil.test")),
            ("role", json!("root")),
            ("sub", json!("has space")),
        ] {
            let mut c = good();
            c[field] = value;
            cases.push((field, hs(c)));
        }
        let mut no_exp = good();
        no_exp.as_object_mut().unwrap().remove("exp");
        cases.push(("no exp", hs(no_exp)));
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        cases.push(("forged", forged));
        // alg none: header {"alg":"none"}, no signature.
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        cases.push((
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg":"none","typ":"JWT"})),
                b64(good())
            ),
        ));
        for (what, token) in cases {
            let r = ids.authenticate(&headers(&format!("Bearer {token}")));
            assert!(matches!(r, Err(AuthFailure::BadToken(_))), "{what}: {r:?}");
        }
    }

    #[test]
    fn an_asymmetric_key_cannot_be_used_as_an_hmac_secret() {
        let kp = rcgen::KeyPair::generate().unwrap();
        let public_pem = kp.public_key_pem();
        let ids = Identities::new(
            None,
            Some(&settings(Some((
                public_pem.clone().into_bytes(),
                PublicKeyAlgorithm::Es256,
            )))),
        )
        .unwrap();
        let es = encode(
            &Header::new(Algorithm::ES256),
            &good(),
            &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(ids.authenticate(&headers(&format!("Bearer {es}"))).is_ok());
        // Algorithm confusion: HS256 "signed" with the public key's bytes.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert!(ids
            .authenticate(&headers(&format!("Bearer {confused}")))
            .is_err());
        // An algorithm no key is configured for.
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &good(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            ids.authenticate(&headers(&format!("Bearer {hs384}"))),
            Err(AuthFailure::BadToken(_))
        ));
    }

    #[test]
    fn api_keys_match_by_hash_and_honour_revocation() {
        let boot = new_bootstrap_key();
        let ids = Identities::new(Some(&Secret::new(boot.clone())), None).unwrap();
        let (id, key, hash) = new_key();
        let rec = ApiKeyRecord {
            id,
            name: "crm-web".into(),
            role: "agent".into(),
            hash,
            created_ms: 1,
            created_by: "t".into(),
            revoked_ms: None,
        };
        assert_eq!(
            ids.authenticate(&headers(&format!("Bearer {key}"))),
            Err(AuthFailure::BadKey)
        );
        ids.apply(std::slice::from_ref(&rec));
        let p = ids
            .authenticate(&headers(&format!("Bearer {key}")))
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), ("crm-web", Role::Agent));
        let wrong = format!("{}x", &key[..key.len() - 1]);
        assert_eq!(
            ids.authenticate(&headers(&format!("Bearer {wrong}"))),
            Err(AuthFailure::BadKey)
        );
        ids.revoke_now(&rec);
        assert_eq!(
            ids.authenticate(&headers(&format!("Bearer {key}"))),
            Err(AuthFailure::Revoked)
        );
        assert_eq!(
            ids.authenticate(&headers(&format!("Bearer {boot}")))
                .unwrap()
                .role,
            Role::Admin
        );
        assert_eq!(
            ids.authenticate(&HeaderMap::new()),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            ids.authenticate(&headers("Basic abc")),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            ids.authenticate(&headers("Bearer kk_nodot")),
            Err(AuthFailure::Malformed)
        );
    }
}
