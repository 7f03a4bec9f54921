//! One partition of the item model (`item-model/p{k}`, k < `ITEM_PARTITIONS`): the
//! co-occurrence rows of the items it owns, every item's norm and popularity, and, per customer,
//! the last of its sequence numbers applied. A customer's deltas reach every partition (each
//! needs the norms), so each partition applies them in order, once: a number already applied is a
//! duplicate, one past a gap is left for the caller to fill from the customer's journal.
//!
//! ```text
//! Apply{updates (customer, seq, delta), heads} ─▶ seq <= last: duplicate │ seq = last+1: apply
//!                                                  └▶ behind: customers whose last < their head
//! Score{history, limit, params} ─▶ this partition's candidates, scored ─▶ top `limit`
//! Popular{limit}                ─▶ items by customer count
//! ```

use std::collections::HashMap;

use keelson_recommend::{
    neighbours, partition_of, Counts, Delta, Scored, Scores, SimParams, ITEM_PARTITIONS,
};
use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

use crate::validate::{invalid, DomainError};

/// The id of partition `k`.
pub fn item_model_id(k: u32) -> String {
    format!("p{k}")
}

/// Most customers' items sent in one Score, and updates in one Apply.
pub const MAX_MODEL_BATCH: usize = 20_000;

/// Persisted state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemModelState {
    /// Rows owned, norms and popularity of all.
    pub counts: Counts,
    /// Per customer, the last sequence number applied.
    pub last: HashMap<String, u64>,
    /// Deltas applied in all (the model's version on this partition).
    pub version: u64,
    /// Neighbour lists computed since the last change, by item and tuning (not persisted).
    #[serde(skip)]
    cache: HashMap<String, Vec<(String, f64)>>,
    #[serde(skip)]
    cached_for: Option<(u64, SimParamsKey)>,
}

type SimParamsKey = (usize, u64, u64, u64);

fn key(p: &SimParams) -> SimParamsKey {
    (
        p.neighbours,
        p.shrink.to_bits(),
        p.alpha.to_bits(),
        p.beta.to_bits(),
    )
}

/// One customer's delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUpdate {
    /// Customer.
    pub customer: String,
    /// Its sequence number.
    pub seq: u64,
    /// The part of the delta this partition needs.
    pub delta: Delta,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemModelCommand {
    /// Applies updates (each customer's in ascending order); reports the customers, among those
    /// named in `updates` or `heads`, whose last applied number is below their head.
    Apply {
        /// Updates.
        updates: Vec<ModelUpdate>,
        /// (customer, last number it gave), for customers whose updates may not all have come.
        heads: Vec<(String, u64)>,
    },
    /// Scores this partition's candidates for a customer with `history` (item, weight).
    Score {
        /// The customer's items.
        history: Vec<(String, u32)>,
        /// How many to return.
        limit: u32,
        /// Tuning.
        params: SimParams,
    },
    /// Items by how many customers have them.
    Popular {
        /// How many.
        limit: u32,
    },
    /// Everything this partition counts (for checking against a recomputation).
    Counts,
}

impl ItemModelCommand {
    /// Whether it only reads.
    pub fn is_read(&self) -> bool {
        !matches!(self, ItemModelCommand::Apply { .. })
    }
}

/// Answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemModelAnswer {
    /// What Apply did.
    Applied {
        /// Updates applied now.
        applied: u64,
        /// Updates applied before.
        duplicates: u64,
        /// (customer, last applied) for customers still behind their head.
        behind: Vec<(String, u64)>,
        /// Version after.
        version: u64,
    },
    /// Scored candidates, best first.
    Scored {
        /// Candidates.
        items: Vec<Scored>,
        /// Version scored at.
        version: u64,
    },
    /// Popular items, most first.
    Popular {
        /// (item, customers).
        items: Vec<(String, u64)>,
        /// Version.
        version: u64,
    },
    /// The counts.
    Counts(Counts),
}

/// An item-model command's result.
pub type ItemModelReply = Result<ItemModelAnswer, DomainError>;

/// The partition number in `id` (`p{k}`, k < ITEM_PARTITIONS).
fn partition(id: &str) -> Result<u32, DomainError> {
    id.strip_prefix('p')
        .and_then(|k| k.parse::<u32>().ok())
        .filter(|k| *k < ITEM_PARTITIONS && item_model_id(*k) == id)
        .ok_or_else(|| {
            invalid(
                "id",
                format!("item-model partitions are p0..p{}", ITEM_PARTITIONS - 1),
            )
        })
}

/// The item-model partition entity.
pub struct ItemModel;

impl Entity for ItemModel {
    const KIND: &'static str = "item-model";
    const STATE_VERSION: u8 = 1;
    type State = ItemModelState;
    type Command = ItemModelCommand;
    type Reply = ItemModelReply;

    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<ItemModelState>,
        command: ItemModelCommand,
    ) -> Result<Handled<ItemModelReply>, EntityError> {
        let me = match partition(ctx.id) {
            Ok(k) => k,
            Err(e) => return Ok(Handled::read(Err(e))),
        };
        let s = state.get_or_insert_with(ItemModelState::default);
        Ok(match command {
            ItemModelCommand::Apply { updates, heads } => {
                if updates.len() > MAX_MODEL_BATCH || heads.len() > MAX_MODEL_BATCH {
                    return Ok(Handled::read(Err(invalid(
                        "updates",
                        format!("at most {MAX_MODEL_BATCH} per command"),
                    ))));
                }
                let answer = s.apply(me, updates, heads);
                let changed =
                    matches!(answer, ItemModelAnswer::Applied { applied, .. } if applied > 0);
                Handled {
                    reply: Ok(answer),
                    changed,
                    append: Vec::new(),
                }
            }
            ItemModelCommand::Score {
                history,
                limit,
                params,
            } => {
                if history.len() > MAX_MODEL_BATCH {
                    return Ok(Handled::read(Err(invalid(
                        "history",
                        format!("at most {MAX_MODEL_BATCH} items"),
                    ))));
                }
                let items = s.score(&history, limit as usize, &params);
                Handled::read(Ok(ItemModelAnswer::Scored {
                    items,
                    version: s.version,
                }))
            }
            ItemModelCommand::Popular { limit } => Handled::read(Ok(ItemModelAnswer::Popular {
                items: s.counts.popular(limit as usize),
                version: s.version,
            })),
            ItemModelCommand::Counts => {
                Handled::read(Ok(ItemModelAnswer::Counts(s.counts.clone())))
            }
        })
    }
}

impl ItemModelState {
    fn apply(
        &mut self,
        me: u32,
        updates: Vec<ModelUpdate>,
        heads: Vec<(String, u64)>,
    ) -> ItemModelAnswer {
        let (mut applied, mut duplicates) = (0u64, 0u64);
        let mut wanted: HashMap<String, u64> = heads.into_iter().collect();
        for u in updates {
            let head = wanted.entry(u.customer.clone()).or_default();
            *head = (*head).max(u.seq);
            let last = self.last.get(&u.customer).copied().unwrap_or(0);
            if u.seq <= last {
                duplicates += 1;
            } else if u.seq == last + 1 {
                self.counts.apply(&u.delta, |i| partition_of(i) == me);
                self.last.insert(u.customer, u.seq);
                applied += 1;
            }
        }
        if applied > 0 {
            self.version += applied;
            self.cache.clear();
            self.cached_for = None;
        }
        let mut behind: Vec<(String, u64)> = wanted
            .into_iter()
            .filter_map(|(c, head)| {
                let last = self.last.get(&c).copied().unwrap_or(0);
                (last < head).then_some((c, last))
            })
            .collect();
        behind.sort();
        ItemModelAnswer::Applied {
            applied,
            duplicates,
            behind,
            version: self.version,
        }
    }

    fn score(&mut self, history: &[(String, u32)], limit: usize, p: &SimParams) -> Vec<Scored> {
        let k = key(p);
        if self.cached_for != Some((self.version, k)) {
            self.cache.clear();
            self.cached_for = Some((self.version, k));
        }
        let weights: HashMap<&str, u32> = history.iter().map(|(i, w)| (i.as_str(), *w)).collect();
        let mut scores = Scores::default();
        let counts = &self.counts;
        for (j, row) in &counts.rows {
            if weights.contains_key(j.as_str()) {
                continue;
            }
            let n = self
                .cache
                .entry(j.clone())
                .or_insert_with(|| neighbours(j, row, &counts.norms, &counts.customers, p));
            let from: Vec<(&str, u32, f64)> = n
                .iter()
                .filter_map(|(i, s)| weights.get(i.as_str()).map(|w| (i.as_str(), *w, *s)))
                .collect();
            scores.add_candidate(j, &from);
        }
        scores.top(limit, |_| true)
    }
}

#[cfg(test)]
#[path = "item_model_test.rs"]
mod tests;
