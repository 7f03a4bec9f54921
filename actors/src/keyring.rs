//! The cluster's API keys: one entity (`keyring/api-keys`), replicated like every other, holding
//! each key's name, role and SHA-256 hash, never the key. Gateways read it a few times a second,
//! so a revocation reaches every gateway within a second.
//!
//! ```text
//! keelson keys create ─▶ gateway: random key, shown once ─▶ Add{hash}   ─▶ keyring
//! keelson keys revoke ─▶ gateway ─────────────────────────▶ Revoke{name} ─▶ keyring
//! every gateway, every 250 ms ────────────────────────────▶ List ─▶ its in-memory index
//! ```

use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

use crate::validate::{invalid, validate_id, DomainError};

/// The one keyring's id.
pub const KEYRING_ID: &str = "api-keys";

/// Name of the bootstrap admin key (read from a file by each gateway, not stored here); it is
/// revoked like any other, by name.
pub const BOOTSTRAP_KEY_NAME: &str = "bootstrap-admin";

/// Most keys kept, revoked ones included (the oldest revoked go first).
pub const MAX_KEYS: usize = 1000;

/// One API key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id, the part of the key before the secret.
    pub id: String,
    /// Unique name among the live keys, e.g. `crm-web`.
    pub name: String,
    /// Role name.
    pub role: String,
    /// SHA-256 of the secret part.
    pub hash: [u8; 32],
    /// When it was made.
    pub created_ms: u64,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked.
    pub revoked_ms: Option<u64>,
}

/// Persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringState {
    /// Every key, in creation order.
    pub keys: Vec<ApiKeyRecord>,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringCommand {
    /// Store a new key.
    Add(ApiKeyRecord),
    /// Revoke the live key called `name`.
    Revoke {
        /// Name.
        name: String,
    },
    /// Every key.
    List,
}

impl KeyringCommand {
    /// Whether the command only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, KeyringCommand::List)
    }
}

/// Answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringAnswer {
    /// The key stored.
    Added(ApiKeyRecord),
    /// The key revoked.
    Revoked(ApiKeyRecord),
    /// Every key.
    Keys(Vec<ApiKeyRecord>),
}

/// A keyring command's result.
pub type KeyringReply = Result<KeyringAnswer, DomainError>;

/// The keyring entity.
pub struct Keyring;

impl Entity for Keyring {
    const KIND: &'static str = "keyring";
    const STATE_VERSION: u8 = 1;
    type State = KeyringState;
    type Command = KeyringCommand;
    type Reply = KeyringReply;

    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<KeyringState>,
        command: KeyringCommand,
    ) -> Result<Handled<KeyringReply>, EntityError> {
        let s = state.get_or_insert_with(KeyringState::default);
        Ok(match command {
            KeyringCommand::List => Handled::read(Ok(KeyringAnswer::Keys(s.keys.clone()))),
            KeyringCommand::Add(rec) => match add(s, rec) {
                Ok(r) => Handled::wrote(Ok(KeyringAnswer::Added(r))),
                Err(e) => Handled::read(Err(e)),
            },
            KeyringCommand::Revoke { name } => match revoke(s, &name, ctx.now_ms) {
                Ok(r) => Handled::wrote(Ok(KeyringAnswer::Revoked(r))),
                Err(e) => Handled::read(Err(e)),
            },
        })
    }
}

fn live<'a>(s: &'a mut KeyringState, name: &str) -> Option<&'a mut ApiKeyRecord> {
    s.keys
        .iter_mut()
        .find(|k| k.name == name && k.revoked_ms.is_none())
}

fn add(s: &mut KeyringState, rec: ApiKeyRecord) -> Result<ApiKeyRecord, DomainError> {
    validate_id("name", &rec.name)?;
    validate_id("id", &rec.id)?;
    if rec.name == BOOTSTRAP_KEY_NAME {
        return Err(invalid("name", "is reserved for the bootstrap admin key"));
    }
    if live(s, &rec.name).is_some() {
        return Err(DomainError::AlreadyExists {
            kind: "key".into(),
            id: rec.name,
        });
    }
    if s.keys.iter().any(|k| k.id == rec.id) {
        return Err(invalid("id", "is already used"));
    }
    if s.keys.len() >= MAX_KEYS {
        match s.keys.iter().position(|k| k.revoked_ms.is_some()) {
            Some(i) => {
                s.keys.remove(i);
            }
            None => {
                return Err(invalid(
                    "name",
                    format!("the keyring holds {MAX_KEYS} live keys; revoke one first"),
                ))
            }
        }
    }
    s.keys.push(rec.clone());
    Ok(rec)
}

fn revoke(s: &mut KeyringState, name: &str, now_ms: u64) -> Result<ApiKeyRecord, DomainError> {
    if let Some(k) = live(s, name) {
        k.revoked_ms = Some(now_ms);
        return Ok(k.clone());
    }
    if name == BOOTSTRAP_KEY_NAME && !s.keys.iter().any(|k| k.name == name) {
        // The bootstrap key is not stored; its revocation is.
        let rec = ApiKeyRecord {
            id: "bootstrap".into(),
            name: name.into(),
            role: "admin".into(),
            hash: [0; 32],
            created_ms: 0,
            created_by: "keelson up".into(),
            revoked_ms: Some(now_ms),
        };
        s.keys.push(rec.clone());
        return Ok(rec);
    }
    Err(DomainError::NotFound {
        kind: "key".into(),
        id: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, id: &str) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            name: name.into(),
            role: "agent".into(),
            hash: [7; 32],
            created_ms: 1,
            created_by: "t".into(),
            revoked_ms: None,
        }
    }

    fn run(s: &mut Option<KeyringState>, c: KeyringCommand) -> Handled<KeyringReply> {
        Keyring::handle(&EntityContext::new(KEYRING_ID, 99), s, c).unwrap()
    }

    #[test]
    fn a_name_is_unique_among_live_keys_and_free_again_after_revocation() {
        let mut s = None;
        assert!(run(&mut s, KeyringCommand::Add(rec("web", "a1"))).changed);
        let again = run(&mut s, KeyringCommand::Add(rec("web", "a2")));
        assert!(matches!(
            again.reply,
            Err(DomainError::AlreadyExists { .. })
        ));
        assert!(!again.changed);
        let r = run(&mut s, KeyringCommand::Revoke { name: "web".into() });
        assert!(matches!(r.reply, Ok(KeyringAnswer::Revoked(ref k)) if k.revoked_ms == Some(99)));
        assert!(run(&mut s, KeyringCommand::Add(rec("web", "a2"))).changed);
        let Ok(KeyringAnswer::Keys(keys)) = run(&mut s, KeyringCommand::List).reply else {
            panic!()
        };
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.iter().filter(|k| k.revoked_ms.is_none()).count(), 1);
    }

    #[test]
    fn unknown_names_and_reserved_names_are_refused() {
        let mut s = None;
        let r = run(
            &mut s,
            KeyringCommand::Revoke {
                name: "nope".into(),
            },
        );
        assert!(matches!(r.reply, Err(DomainError::NotFound { .. })));
        let r = run(&mut s, KeyringCommand::Add(rec(BOOTSTRAP_KEY_NAME, "b")));
        assert!(matches!(r.reply, Err(DomainError::Invalid { .. })));
        let r = run(&mut s, KeyringCommand::Add(rec("bad name", "c")));
        assert!(matches!(r.reply, Err(DomainError::Invalid { ref field, .. }) if field == "name"));
    }

    #[test]
    fn the_bootstrap_key_is_revoked_by_name() {
        let mut s = None;
        let r = run(
            &mut s,
            KeyringCommand::Revoke {
                name: BOOTSTRAP_KEY_NAME.into(),
            },
        );
        assert!(r.changed);
        let again = run(
            &mut s,
            KeyringCommand::Revoke {
                name: BOOTSTRAP_KEY_NAME.into(),
            },
        );
        assert!(matches!(again.reply, Err(DomainError::NotFound { .. })));
    }

    #[test]
    fn a_full_keyring_drops_its_oldest_revoked_key() {
        let mut s = Some(KeyringState::default());
        for i in 0..MAX_KEYS {
            let st = s.as_mut().unwrap();
            st.keys.push(rec(&format!("k{i}"), &format!("i{i}")));
        }
        let full = run(&mut s, KeyringCommand::Add(rec("extra", "x")));
        assert!(matches!(full.reply, Err(DomainError::Invalid { .. })));
        run(&mut s, KeyringCommand::Revoke { name: "k5".into() });
        assert!(run(&mut s, KeyringCommand::Add(rec("extra", "x"))).changed);
        let st = s.unwrap();
        assert_eq!(st.keys.len(), MAX_KEYS);
        assert!(!st.keys.iter().any(|k| k.name == "k5"));
    }
}
