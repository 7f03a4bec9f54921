//! What an entity remembers of the idempotency keys its writes were made with: for each key the
//! fingerprint of the request it was first used for, when, and the (small) reply it got. Pure:
//! the entity actor asks [`Remembered::check`] before running a keyed command and calls
//! [`Remembered::remember`] after applying one.
//!
//! ```text
//! key unseen or expired ──▶ New: run it, remember (key, fingerprint, reply)
//! key seen, same fingerprint ──▶ Replay(first reply), nothing runs
//! key seen, other fingerprint ──▶ Reused: refused, nothing runs
//! ```

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::Retention;
use crate::wire::IdempotencyKey;

/// The longest reply kept for a replay. Entity replies to writes are summaries (a few hundred
/// bytes to a few KiB); a reply past this is not kept, only the fact that the key was used.
pub const MAX_KEPT_REPLY: usize = 64 * 1024;

/// One remembered key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The scoped key.
    pub key: String,
    /// Fingerprint of the request it was first used for; `None` for records kept before
    /// fingerprints existed (they match any request, as they did then).
    pub fingerprint: Option<[u8; 16]>,
    /// When it was first used, ms since the Unix epoch.
    pub at_ms: u64,
    /// The reply it got, unless it was larger than [`MAX_KEPT_REPLY`].
    pub reply: Option<Vec<u8>>,
}

/// What a key means for the command that carries it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not seen (or expired): run the command.
    New,
    /// Seen for this very request: answer with the first reply (`None`: it was too large to
    /// keep).
    Replay(Option<&'a [u8]>),
    /// Seen for a different request: refuse.
    Reused,
}

/// The keys an entity remembers, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    records: VecDeque<KeyRecord>,
}

impl Remembered {
    /// From records read back from storage.
    pub fn from_records(records: VecDeque<KeyRecord>) -> Self {
        Self { records }
    }

    /// The records, oldest first.
    #[cfg(test)]
    pub fn records(&self) -> &VecDeque<KeyRecord> {
        &self.records
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Forgets everything (the entity was erased).
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// What `key` means now.
    pub fn check(&self, key: &IdempotencyKey, now_ms: u64, keep: Retention) -> Seen<'_> {
        let Some(r) = self
            .records
            .iter()
            .rev()
            .find(|r| r.key == key.key && !expired(r, now_ms, keep))
        else {
            return Seen::New;
        };
        match r.fingerprint {
            Some(f) if f != key.fingerprint => Seen::Reused,
            _ => Seen::Replay(r.reply.as_deref()),
        }
    }

    /// Remembers `key` with the reply it got, dropping expired keys and the oldest past the
    /// count.
    pub fn remember(&mut self, key: &IdempotencyKey, reply: &[u8], now_ms: u64, keep: Retention) {
        self.records
            .retain(|r| r.key != key.key && !expired(r, now_ms, keep));
        self.records.push_back(KeyRecord {
            key: key.key.clone(),
            fingerprint: Some(key.fingerprint),
            at_ms: now_ms,
            reply: (reply.len() <= MAX_KEPT_REPLY).then(|| reply.to_vec()),
        });
        while self.records.len() > keep.max_keys.max(1) {
            self.records.pop_front();
        }
    }
}

fn expired(r: &KeyRecord, now_ms: u64, keep: Retention) -> bool {
    now_ms.saturating_sub(r.at_ms) >= keep.ttl_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Retention = Retention {
        ttl_ms: 1_000,
        max_keys: 2,
    };

    fn key(k: &str, f: u8) -> IdempotencyKey {
        IdempotencyKey {
            key: k.into(),
            fingerprint: [f; 16],
        }
    }

    #[test]
    fn same_request_replays_and_another_request_is_refused() {
        let mut r = Remembered::default();
        assert_eq!(r.check(&key("a", 1), 0, KEEP), Seen::New);
        r.remember(&key("a", 1), b"first", 0, KEEP);
        assert_eq!(
            r.check(&key("a", 1), 10, KEEP),
            Seen::Replay(Some(&b"first"[..]))
        );
        assert_eq!(r.check(&key("a", 2), 10, KEEP), Seen::Reused);
        assert_eq!(r.check(&key("b", 1), 10, KEEP), Seen::New);
    }

    #[test]
    fn keys_expire_by_time_and_by_count() {
        let mut r = Remembered::default();
        r.remember(&key("a", 1), b"1", 0, KEEP);
        assert_eq!(r.check(&key("a", 2), 999, KEEP), Seen::Reused);
        assert_eq!(r.check(&key("a", 2), 1_000, KEEP), Seen::New);
        r.remember(&key("b", 1), b"2", 500, KEEP);
        r.remember(&key("c", 1), b"3", 600, KEEP);
        assert_eq!(r.records().len(), 2, "count bound");
        assert_eq!(
            r.check(&key("a", 1), 600, KEEP),
            Seen::New,
            "oldest dropped"
        );
        // Expired records are dropped when a new key is remembered.
        r.remember(&key("d", 1), b"4", 1_550, KEEP);
        assert_eq!(
            r.records()
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>(),
            vec!["c", "d"]
        );
    }

    #[test]
    fn large_replies_are_not_kept_but_the_key_still_counts() {
        let mut r = Remembered::default();
        let big = vec![0u8; MAX_KEPT_REPLY + 1];
        r.remember(&key("a", 1), &big, 0, KEEP);
        assert_eq!(r.check(&key("a", 1), 1, KEEP), Seen::Replay(None));
        assert_eq!(r.check(&key("a", 9), 1, KEEP), Seen::Reused);
    }

    #[test]
    fn records_from_before_fingerprints_match_any_request() {
        let r = Remembered::from_records(
            [KeyRecord {
                key: "a".into(),
                fingerprint: None,
                at_ms: 0,
                reply: Some(b"old".to_vec()),
            }]
            .into(),
        );
        assert_eq!(
            r.check(&key("a", 5), 1, KEEP),
            Seen::Replay(Some(&b"old"[..]))
        );
    }
}
