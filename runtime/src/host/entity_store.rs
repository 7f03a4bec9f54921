//! What the runtime persists for one entity, and how: an envelope under `kind/id` holding the
//! entity's data key and, sealed under it, the state, the remembered idempotency keys and the
//! length of its journal; and the journal itself, one sealed record per key `kind/id\0j{seq}`,
//! so appending costs one small write however long the journal is.
//!
//! ```text
//! kind/id            ──▶ Envelope v2 { key, sealed(Body { state, keys, journal_len }) }
//! kind/id\0j{seq:x}  ──▶ sealed(record)                       (seq = 1..=journal_len)
//! ```
//!
//! Older values load as they were written: envelope v1 (keys without fingerprints, not sealed)
//! and, before that, the bare state. They are sealed the next time the entity is written.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::host::idempotency::{KeyRecord, Remembered};
use crate::host::sealing::{DataKey, Unsealable};
use crate::storage::Store;
use crate::wire::codec;
use keelson_rules::shard_map::ShardId;

/// Version byte of the first envelope (keys without fingerprints, not sealed).
const ENVELOPE_V1: u8 = 0xE0;
/// Version byte of the sealed envelope.
const ENVELOPE_V2: u8 = 0xE1;
/// Version byte of the body sealed inside an envelope v2.
const BODY_V1: u8 = 1;

/// Envelope v1: the replies to the last keyed writes, by key.
#[derive(Debug, Default, Serialize, Deserialize)]
struct EnvelopeV1 {
    state: Option<Vec<u8>>,
    recent: VecDeque<(String, Vec<u8>)>,
}

/// Envelope v2: the entity's key, and everything else sealed under it.
#[derive(Serialize, Deserialize)]
struct Envelope {
    key: DataKey,
    sealed: Vec<u8>,
}

/// What an envelope v2 seals.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Body {
    state: Option<Vec<u8>>,
    keys: Remembered,
    journal_len: u64,
}

/// [`Body`] borrowed, for encoding without a copy of the state: the same encoding (serde writes
/// a byte slice and a byte vector alike).
#[derive(Serialize)]
struct BodyRef<'a> {
    state: Option<&'a [u8]>,
    keys: &'a Remembered,
    journal_len: u64,
}

/// One entity as loaded: its encoded state (in the entity crate's own versioned encoding), its
/// remembered keys, its journal's length and its data key (`None` until first sealed).
#[derive(Debug, Default)]
pub struct Persisted {
    /// Encoded state; `None` when absent or deleted.
    pub state: Option<Vec<u8>>,
    /// Idempotency keys of the last keyed writes.
    pub keys: Remembered,
    /// Records in the journal.
    pub journal_len: u64,
    /// The key everything is sealed under.
    pub key: Option<DataKey>,
}

/// Where an entity's value is bound to when sealed.
fn aad(kind: &str, id: &str) -> Vec<u8> {
    format!("{kind}/{id}").into_bytes()
}

/// The storage id of record `seq` of entity `id`'s journal: after the entity's own id, with a
/// separator no entity id contains, in an order that sorts by `seq`.
pub fn journal_id(id: &str, seq: u64) -> String {
    format!("{id}\u{0}j{seq:016x}")
}

/// Loads entity `kind/id` of `shard`.
pub fn load(store: &Store, shard: ShardId, kind: &str, id: &str) -> Result<Persisted, String> {
    let bad =
        |e: &dyn std::fmt::Display| format!("stored state of {kind}/{id} does not decode: {e}");
    let Some(bytes) = store.get(shard, kind, id).map_err(|e| e.to_string())? else {
        return Ok(Persisted::default());
    };
    match bytes.first() {
        Some(&ENVELOPE_V2) => {
            let env = codec::decode::<Envelope>(ENVELOPE_V2, &bytes).map_err(|e| bad(&e))?;
            let plain = env
                .key
                .open(&aad(kind, id), &env.sealed)
                .map_err(|e| bad(&e))?;
            let body = codec::decode::<Body>(BODY_V1, &plain).map_err(|e| bad(&e))?;
            Ok(Persisted {
                state: body.state,
                keys: body.keys,
                journal_len: body.journal_len,
                key: Some(env.key),
            })
        }
        Some(&ENVELOPE_V1) => {
            let old = codec::decode::<EnvelopeV1>(ENVELOPE_V1, &bytes).map_err(|e| bad(&e))?;
            // Their age is unknown: they count from now.
            let at_ms = crate::clock::now_ms();
            let records = old
                .recent
                .into_iter()
                .map(|(key, reply)| KeyRecord {
                    key,
                    fingerprint: None,
                    at_ms,
                    reply: Some(reply),
                })
                .collect();
            Ok(Persisted {
                state: old.state,
                keys: Remembered::from_records(records),
                ..Persisted::default()
            })
        }
        // Values written before the envelope existed are the bare state.
        _ => Ok(Persisted {
            state: Some(bytes),
            ..Persisted::default()
        }),
    }
}

/// The envelope to store for `p` (sealed under its key, made if it has none), or `None` (a
/// tombstone) when there is neither state, key nor journal.
pub fn envelope(kind: &str, id: &str, p: &mut Persisted) -> Result<Option<Vec<u8>>, String> {
    if p.state.is_none() && p.keys.is_empty() && p.journal_len == 0 {
        return Ok(None);
    }
    let body = codec::encode(
        BODY_V1,
        &BodyRef {
            state: p.state.as_deref(),
            keys: &p.keys,
            journal_len: p.journal_len,
        },
    )
    .map_err(|e| e.to_string())?;
    let key = p.key.get_or_insert_with(DataKey::generate);
    let env = Envelope {
        sealed: key.seal(&aad(kind, id), &body),
        key: key.clone(),
    };
    codec::encode(ENVELOPE_V2, &env)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Record `seq` of the journal, sealed under `key`.
pub fn seal_record(key: &DataKey, kind: &str, id: &str, seq: u64, record: &[u8]) -> Vec<u8> {
    key.seal(&aad(kind, &journal_id(id, seq)), record)
}

/// Up to `limit` journal records after `after` (of `len`), opened with `key`.
#[allow(clippy::too_many_arguments)]
pub fn read_journal(
    store: &Store,
    shard: ShardId,
    kind: &str,
    id: &str,
    key: Option<&DataKey>,
    len: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let Some(key) = key else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut seq = after.saturating_add(1);
    while seq <= len && out.len() < limit {
        let plain = open_record(store, shard, kind, id, key, seq)?
            .ok_or_else(|| format!("journal record {seq} of {kind}/{id} is missing"))?
            .map_err(|e| format!("journal record {seq} of {kind}/{id}: {e}"))?;
        out.push((seq, plain));
        seq += 1;
    }
    Ok(out)
}

/// The records after `after` as far as they run without a gap, opened with `key`: the records of
/// a kind that replays its journal, written since its last checkpoint. A record that does not
/// open under `key` ends them too (it was sealed under the key of an erased earlier entity of
/// the same id, and is garbage).
pub fn read_tail(
    store: &Store,
    shard: ShardId,
    kind: &str,
    id: &str,
    key: Option<&DataKey>,
    after: u64,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let Some(key) = key else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut seq = after.saturating_add(1);
    loop {
        match open_record(store, shard, kind, id, key, seq)? {
            None => return Ok(out),
            Some(Ok(plain)) => out.push((seq, plain)),
            Some(Err(e)) => {
                tracing::warn!(kind, id, seq, error = %e, "a journal record after the last checkpoint does not open: ignored with everything after it");
                return Ok(out);
            }
        }
        seq += 1;
    }
}

/// Journal record `seq` of `kind`/`id`: absent, opened under `key`, or why it does not open.
fn open_record(
    store: &Store,
    shard: ShardId,
    kind: &str,
    id: &str,
    key: &DataKey,
    seq: u64,
) -> Result<Option<Result<Vec<u8>, Unsealable>>, String> {
    let jid = journal_id(id, seq);
    let sealed = store.get(shard, kind, &jid).map_err(|e| e.to_string())?;
    Ok(sealed.map(|sealed| key.open(&aad(kind, &jid), &sealed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_body_encodes_as_the_owned_one_decodes() {
        let state = Some(vec![1u8, 2, 3]);
        let keys = Remembered::default();
        let bytes = codec::encode(
            BODY_V1,
            &BodyRef {
                state: state.as_deref(),
                keys: &keys,
                journal_len: 7,
            },
        )
        .unwrap();
        let back = codec::decode::<Body>(BODY_V1, &bytes).unwrap();
        assert_eq!((back.state, back.journal_len), (state, 7));
    }
}
