//! The customer's interactions: an append-only list, one journal record each, read by page.
//! Interactions from version 2 states stay in the state as the early ones and are numbered
//! before the journal's.
//!
//! ```text
//! AddInteraction ──▶ Interaction{seq = count + 1} ──▶ one journal record (refused past MAX_INTERACTIONS)
//! ListInteractions{after, limit} ──▶ early ones with seq > after, then the journal's
//! ```

use keelson_runtime::{decode_payload, encode_payload, EntityContext, EntityError};
use serde::{Deserialize, Serialize};

use super::state::{CustomerState, Interaction};
use crate::validate::{self, invalid, DomainError};

/// Most interactions kept per customer; the oldest are not dropped, the append is refused.
pub const MAX_INTERACTIONS: u64 = 100_000;

/// Most interactions returned in one page.
pub const MAX_INTERACTION_PAGE: u32 = 1_000;

/// A new interaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInteraction {
    /// Kind.
    pub kind: String,
    /// Item.
    pub item: String,
    /// When; now if absent.
    pub at_ms: Option<u64>,
}

/// Checks a new interaction's fields.
pub(super) fn check_new(i: &NewInteraction) -> Result<(), DomainError> {
    validate::text("kind", &i.kind, 40)?;
    validate::text("item", &i.item, 500)
}

/// Checks the size of a page asked for.
pub(super) fn check_page(limit: u32) -> Result<(), DomainError> {
    if !(1..=MAX_INTERACTION_PAGE).contains(&limit) {
        return Err(invalid(
            "limit",
            format!("{limit} is outside 1..={MAX_INTERACTION_PAGE}"),
        ));
    }
    Ok(())
}

impl CustomerState {
    /// Interactions recorded in all: the early ones and the journal's.
    pub(super) fn interaction_count(&self, ctx: &EntityContext<'_>) -> u64 {
        self.early_interactions.len() as u64 + ctx.journal_len
    }

    /// Up to `limit` interactions numbered after `after`: the early ones, then the journal's.
    pub(super) fn interactions(
        &self,
        ctx: &EntityContext<'_>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Interaction>, EntityError> {
        let early = self.early_interactions.len() as u64;
        let mut out: Vec<Interaction> = self
            .early_interactions
            .iter()
            .filter(|i| i.seq > after)
            .take(limit)
            .cloned()
            .collect();
        if out.len() < limit {
            let from = after.saturating_sub(early);
            for (_, bytes) in ctx.journal(from, limit - out.len())? {
                let i: Interaction = decode_payload(&bytes)
                    .map_err(|e| EntityError(format!("interaction record does not decode: {e}")))?;
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Numbers the interaction after the last one and returns it with the journal record to
    /// append; refused once [`MAX_INTERACTIONS`] are recorded.
    pub(super) fn add_interaction(
        &mut self,
        ctx: &EntityContext<'_>,
        i: NewInteraction,
    ) -> Result<(Interaction, Vec<u8>), DomainError> {
        let count = self.interaction_count(ctx);
        if count >= MAX_INTERACTIONS {
            return Err(invalid(
                "interactions",
                format!("customer already has the maximum of {MAX_INTERACTIONS} interactions"),
            ));
        }
        let interaction = Interaction {
            seq: count + 1,
            kind: i.kind,
            item: i.item,
            at_ms: i.at_ms.unwrap_or(ctx.now_ms),
        };
        self.touch(ctx.now_ms);
        let record = encode_payload(&interaction);
        Ok((interaction, record))
    }
}
