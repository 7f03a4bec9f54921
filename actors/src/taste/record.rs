//! The journal record of one counted interaction, and the deltas rebuilt from the journal: the
//! profile as it was before record `s` is today's profile with every later record undone
//! (newest first, each weight set back to its `before`).

use keelson_recommend::{Delta, Profile};
use keelson_runtime::{decode_payload, encode_payload, EntityContext, EntityError};
use serde::{Deserialize, Serialize};

use super::{TasteState, MAX_DELTA_BYTES};

/// One journal record: the item and its weight before and after. Persisted: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasteRecord {
    /// The item.
    pub item: String,
    /// Weight before.
    pub before: u32,
    /// Weight after.
    pub after: u32,
}

impl TasteRecord {
    /// The record of `d`.
    pub fn of(d: &Delta) -> Self {
        Self {
            item: d.item.clone(),
            before: d.before,
            after: d.after,
        }
    }

    /// Its journal bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_payload(self)
    }
}

/// The deltas of numbers `after + 1 ..= min(seq, after + limit)`, ending early once they hold
/// about [`MAX_DELTA_BYTES`] (at least one).
pub(super) fn deltas(
    ctx: &EntityContext<'_>,
    s: &TasteState,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Delta)>, EntityError> {
    if after >= s.seq {
        return Ok(Vec::new());
    }
    // Every record after `after`, to undo them from today's profile.
    let mut records: Vec<(u64, TasteRecord)> = Vec::new();
    let mut from = after;
    while from < s.seq {
        let page = ctx.journal(from, 1_000)?;
        if page.is_empty() {
            return Err(EntityError(format!(
                "journal ends at {from}, state says {}",
                s.seq
            )));
        }
        for (seq, bytes) in page {
            let r: TasteRecord = decode_payload(&bytes)
                .map_err(|e| EntityError(format!("taste record {seq} does not decode: {e}")))?;
            records.push((seq, r));
            from = seq;
        }
    }
    let mut profile: Profile = s.profile.clone();
    for (_, r) in records.iter().rev() {
        set(&mut profile, &r.item, r.before);
    }
    let mut out = Vec::new();
    let mut bytes = 0;
    for (seq, r) in records.into_iter().take(limit) {
        if !out.is_empty() && bytes >= MAX_DELTA_BYTES {
            break;
        }
        let pairs = profile
            .items()
            .filter(|(i, _)| **i != r.item)
            .map(|(i, w)| (i.clone(), w))
            .collect();
        set(&mut profile, &r.item, r.after);
        let d = Delta {
            item: r.item,
            before: r.before,
            after: r.after,
            pairs,
        };
        bytes += d.encoded_size();
        out.push((seq, d));
    }
    Ok(out)
}

fn set(p: &mut Profile, item: &str, w: u32) {
    if w == 0 {
        p.weights.remove(item);
    } else {
        p.weights.insert(item.to_string(), w);
    }
}
