//! Entity data at rest: every persisted state and journal record is sealed (AES-256-GCM) under
//! a key of its own entity, bound to where it is stored. Deleting an entity drops its key, so
//! what the storage engine still keeps of old values (sled is log-structured and frees old
//! bytes lazily) can no longer be read: crypto-shredding.
//!
//! ```text
//! plain ──seal(key, aad = kind/id[/seq])──▶ nonce (12) ‖ ciphertext ‖ tag (16)
//! ```

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// One entity's data key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A sealed value that does not open: wrong key, wrong place, or altered bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open (altered, misplaced or its key was destroyed)")]
pub struct Unsealable;

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .expect("the system random source works");
        Self(k)
    }

    fn key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte AES key"))
    }

    /// Seals `plain`, bound to `aad` (where it is stored).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("sealing a bounded value cannot fail");
        out.extend_from_slice(&body);
        out
    }

    /// Opens what [`DataKey::seal`] made for the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut body = body.to_vec();
        let plain = self
            .key()
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| Unsealable)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_with_its_key_and_place_only() {
        let k = DataKey::generate();
        let sealed = k.seal(b"customer/c1", b"ada@example.com");
        assert!(!sealed
            .windows(b"ada@example.com".len())
            .any(|w| w == b"ada@example.com"));
        assert_eq!(k.open(b"customer/c1", &sealed).unwrap(), b"ada@example.com");
        assert_eq!(k.open(b"customer/c2", &sealed), Err(Unsealable));
        assert_eq!(
            DataKey::generate().open(b"customer/c1", &sealed),
            Err(Unsealable)
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(k.open(b"customer/c1", &altered), Err(Unsealable));
        assert_eq!(k.open(b"customer/c1", &sealed[..5]), Err(Unsealable));
        assert_ne!(
            k.seal(b"a", b"x"),
            k.seal(b"a", b"x"),
            "fresh nonce each time"
        );
    }
}
