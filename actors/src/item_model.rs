//! One partition of the item model (`item-model/p{k}`, k < `ITEM_PARTITIONS`): the
//! co-occurrence rows of the items it owns, every item's norm and popularity, and, per customer,
//! the last of its sequence numbers applied. A customer's deltas reach every partition (each
//! needs the norms), so each partition applies them in order, once: a number already applied is a
//! duplicate, one past a gap is left for the caller to fill from the customer's journal.
//! An Apply is persisted as the updates it applied, one journal record that replays into the
//! state (`Entity::REPLAYS`): a partition's whole state, which grows with the catalogue, is
//! written only when the runtime checkpoints it, not once per Apply.
//!
//! ```text
//! Apply{updates (customer, seq, delta), heads} ─▶ seq <= last: duplicate │ seq = last+1: apply
//!                                                  └▶ behind: customers whose last < their head
//! Neighbours{params, unless, after} ─▶ the neighbour lists of the rows it owns (a page of
//!                                     them, by item), and their items' customer counts
//! Rows{unless, after}              ─▶ the rows it owns as counted (a page), and its items'
//!                                     norms and customer counts (what EASE is solved from)
//! Forget{customer, seq}            ─▶ last = seq (its erasure's removals all applied)? the
//!                                     customer's id is dropped : nothing changes
//! ```

use std::collections::HashMap;

use keelson_recommend::{neighbours, partition_of, Counts, Delta, SimParams, ITEM_PARTITIONS};
use keelson_runtime::{
    decode_payload, encode_payload, Entity, EntityContext, EntityError, Handled,
};
use serde::{Deserialize, Serialize};

use crate::validate::{invalid, DomainError};

/// The id of partition `k`.
pub fn item_model_id(k: u32) -> String {
    format!("p{k}")
}

/// Most updates in one Apply.
pub const MAX_MODEL_BATCH: usize = 20_000;

/// Neighbour entries in one page of a Neighbours answer (about 1 MiB encoded; a page holds at
/// least one item).
pub const NEIGHBOUR_PAGE_ENTRIES: usize = 50_000;

/// One item's neighbours, best first.
pub type NeighbourList = (String, Vec<(String, f64)>);

/// Persisted state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemModelState {
    /// Rows owned, norms and popularity of all.
    pub counts: Counts,
    /// Per customer, the last sequence number applied.
    pub last: HashMap<String, u64>,
    /// Deltas applied in all (the model's version on this partition).
    pub version: u64,
    /// The owned rows' neighbour lists by item, computed since the last change (not persisted).
    #[serde(skip)]
    cache: Vec<NeighbourList>,
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
    /// The neighbour lists of the rows this partition owns, by item name, from the first
    /// after `after`; `Unchanged` when its version is `unless`.
    Neighbours {
        /// Tuning.
        params: SimParams,
        /// The version the asker holds already.
        unless: Option<u64>,
        /// The last item of the previous page.
        after: Option<String>,
    },
    /// Everything this partition counts (for checking against a recomputation).
    Counts,
    /// The rows this partition owns as counted, by item name, from the first after `after`;
    /// `Unchanged` when its version is `unless`.
    Rows {
        /// The version the asker holds already.
        unless: Option<u64>,
        /// The last item of the previous page.
        after: Option<String>,
    },
    /// The end of a customer's erasure: once its last number applied is `seq` (the removal
    /// of its last item), its id is dropped. At any other number nothing changes.
    Forget {
        /// Customer.
        customer: String,
        /// Its last number: the last removal.
        seq: u64,
    },
}

impl ItemModelCommand {
    /// Whether it only reads.
    pub fn is_read(&self) -> bool {
        !matches!(
            self,
            ItemModelCommand::Apply { .. } | ItemModelCommand::Forget { .. }
        )
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
    /// A page of neighbour lists.
    Neighbours {
        /// (item, its neighbours best first), by item name.
        lists: Vec<NeighbourList>,
        /// (item, customers) for the items of this partition, on the first page only.
        popularity: Vec<(String, u64)>,
        /// True when a page after this one holds more.
        more: bool,
        /// Version computed at.
        version: u64,
    },
    /// The version asked about is still the current one.
    Unchanged {
        /// Version.
        version: u64,
    },
    /// The counts.
    Counts(Counts),
    /// A page of rows.
    Rows {
        /// (item, its co-occurrences), by item name.
        rows: Vec<CountRow>,
        /// (item, norm, customers) for the items of this partition, on the first page only.
        items: Vec<(String, u64, u64)>,
        /// True when a page after this one holds more.
        more: bool,
        /// Version read at.
        version: u64,
    },
    /// What Forget found: the customer's last number applied before (None: it held none, or
    /// no longer does); dropped when it was the one asked for.
    Forgot {
        /// The last number it held.
        held: Option<u64>,
    },
}

/// One row of co-occurrence counts.
pub type CountRow = (String, Vec<(String, u64)>);

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

    /// An Apply is persisted as the updates it applied; the whole state now and then.
    const REPLAYS: bool = true;

    fn replay(
        id: &str,
        state: &mut Option<ItemModelState>,
        record: &[u8],
    ) -> Result<(), EntityError> {
        let me = partition(id).map_err(|e| EntityError(e.to_string()))?;
        let updates: Vec<ModelUpdate> = decode_payload(record)
            .map_err(|e| EntityError(format!("an Apply record does not decode: {e}")))?;
        state
            .get_or_insert_with(ItemModelState::default)
            .apply(me, updates, Vec::new());
        Ok(())
    }

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
                let (answer, applied) = s.apply(me, updates, heads);
                if applied.is_empty() {
                    Handled::read(Ok(answer))
                } else {
                    // The updates applied are the change: replayed in order, they apply again.
                    Handled::appended(Ok(answer), encode_payload(&applied))
                }
            }
            ItemModelCommand::Neighbours {
                params,
                unless,
                after,
            } => Handled::read(Ok(if unless == Some(s.version) {
                ItemModelAnswer::Unchanged { version: s.version }
            } else {
                s.neighbours_page(me, &params, after.as_deref())
            })),
            ItemModelCommand::Counts => {
                Handled::read(Ok(ItemModelAnswer::Counts(s.counts.clone())))
            }
            ItemModelCommand::Forget { customer, seq } => {
                let held = s.last.get(&customer).copied();
                if held == Some(seq) {
                    s.last.remove(&customer);
                    Handled::wrote(Ok(ItemModelAnswer::Forgot { held }))
                } else {
                    Handled::read(Ok(ItemModelAnswer::Forgot { held }))
                }
            }
            ItemModelCommand::Rows { unless, after } => {
                Handled::read(Ok(if unless == Some(s.version) {
                    ItemModelAnswer::Unchanged { version: s.version }
                } else {
                    s.rows_page(me, after.as_deref())
                }))
            }
        })
    }
}

impl ItemModelState {
    /// Applies what follows each customer's last number; the answer, and the updates applied.
    fn apply(
        &mut self,
        me: u32,
        updates: Vec<ModelUpdate>,
        heads: Vec<(String, u64)>,
    ) -> (ItemModelAnswer, Vec<ModelUpdate>) {
        let (mut applied, mut duplicates) = (0u64, 0u64);
        let mut done = Vec::new();
        let mut wanted: HashMap<String, u64> = heads.into_iter().collect();
        for u in updates {
            let head = wanted.entry(u.customer.clone()).or_default();
            *head = (*head).max(u.seq);
            let last = self.last.get(&u.customer).copied().unwrap_or(0);
            if u.seq <= last {
                duplicates += 1;
            } else if u.seq == last + 1 {
                self.counts.apply(&u.delta, |i| partition_of(i) == me);
                self.last.insert(u.customer.clone(), u.seq);
                applied += 1;
                done.push(u);
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
        let answer = ItemModelAnswer::Applied {
            applied,
            duplicates,
            behind,
            version: self.version,
        };
        (answer, done)
    }

    /// The page of rows after item `after` (the first also carries this partition's items'
    /// norms and customer counts).
    fn rows_page(&self, me: u32, after: Option<&str>) -> ItemModelAnswer {
        let mut names: Vec<&String> = self
            .counts
            .rows
            .keys()
            .filter(|i| after.is_none_or(|a| i.as_str() > a))
            .collect();
        names.sort();
        let (mut rows, mut entries) = (Vec::new(), 0usize);
        let mut more = false;
        for i in names {
            let row = &self.counts.rows[i];
            if !rows.is_empty() && entries + row.len() > NEIGHBOUR_PAGE_ENTRIES {
                more = true;
                break;
            }
            entries += row.len();
            let mut r: Vec<(String, u64)> = row
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(j, c)| (j.clone(), *c))
                .collect();
            r.sort();
            rows.push((i.clone(), r));
        }
        let items = if after.is_none() {
            let mut mine: Vec<(String, u64, u64)> = self
                .counts
                .norms
                .iter()
                .filter(|(i, n)| **n > 0 && partition_of(i) == me)
                .map(|(i, n)| {
                    let c = self.counts.customers.get(i).copied().unwrap_or(0);
                    (i.clone(), *n, c)
                })
                .collect();
            mine.sort();
            mine
        } else {
            Vec::new()
        };
        ItemModelAnswer::Rows {
            rows,
            items,
            more,
            version: self.version,
        }
    }

    /// The page of neighbour lists after item `after` (the first page also carries this
    /// partition's items' customer counts).
    fn neighbours_page(&mut self, me: u32, p: &SimParams, after: Option<&str>) -> ItemModelAnswer {
        let k = key(p);
        if self.cached_for != Some((self.version, k)) {
            let c = &self.counts;
            let mut lists: Vec<NeighbourList> = c
                .rows
                .iter()
                .map(|(j, row)| (j.clone(), neighbours(j, row, &c.norms, &c.customers, p)))
                .filter(|(_, n)| !n.is_empty())
                .collect();
            lists.sort_by(|a, b| a.0.cmp(&b.0));
            self.cache = lists;
            self.cached_for = Some((self.version, k));
        }
        let start = after.map_or(0, |a| self.cache.partition_point(|(j, _)| j.as_str() <= a));
        let (mut end, mut entries) = (start, 0usize);
        while end < self.cache.len()
            && (end == start || entries + self.cache[end].1.len() <= NEIGHBOUR_PAGE_ENTRIES)
        {
            entries += self.cache[end].1.len();
            end += 1;
        }
        let popularity = if after.is_none() {
            let mut mine: Vec<(String, u64)> = self
                .counts
                .customers
                .iter()
                .filter(|(i, c)| **c > 0 && partition_of(i) == me)
                .map(|(i, c)| (i.clone(), *c))
                .collect();
            mine.sort();
            mine
        } else {
            Vec::new()
        };
        ItemModelAnswer::Neighbours {
            lists: self.cache[start..end].to_vec(),
            popularity,
            more: end < self.cache.len(),
            version: self.version,
        }
    }
}

#[cfg(test)]
#[path = "item_model_test.rs"]
mod tests;
