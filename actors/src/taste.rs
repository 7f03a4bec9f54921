//! A customer's taste: what the recommender knows of one customer (its weight of each item it
//! interacted with), fed by interactions that each carry an id and count once. Every
//! interaction that changes a weight gets the next sequence number and one journal record, and
//! yields the co-occurrence delta the item-model partitions apply; a delta lost on the way can be
//! made again from the journal, so the partitions reach every customer's last number.
//!
//! ```text
//! Record[{id, kind, item}] ─▶ id among the latest MAX_TASTE_IDS? Duplicate{seq}
//!                            : Profile.add ─▶ seq+1, journal record, Applied{seq, delta}
//! Deltas{after}            ─▶ the deltas after `after`, rebuilt from the journal (repair)
//! Profile                  ─▶ every item's weight and the last seq
//! Forget                   ─▶ each item removed in turn: seq+1 and a journal record each (the
//!                             deltas take the customer out of the counts); Records refused from
//!                             then on, until Erase deletes what is left
//! ```

mod record;

use std::collections::{BTreeMap, VecDeque};

use keelson_recommend::{kind_weight, Delta, Profile, KINDS};
use keelson_runtime::{Entity, EntityContext, EntityError, Handled};
use serde::{Deserialize, Serialize};

use crate::validate::{invalid, validate_id, validate_ref, DomainError};
pub use record::TasteRecord;

/// Most interaction ids remembered per customer: the latest ones. An id sent again after this
/// many newer ones counts again (the window a retry must fall in, like an idempotency key's TTL).
pub const MAX_TASTE_IDS: usize = 10_000;

/// Most interactions in one Record command, and deltas in one Deltas answer.
pub const MAX_TASTE_BATCH: usize = 1_000;

/// About the most bytes of deltas one answer carries (well under the cluster's frame limit):
/// a customer of a thousand items makes deltas of a thousand pairs each, and a Record of a
/// thousand new items half a million pairs. Past it, a Deltas answer ends its page early and a
/// Recorded answer leaves the deltas out (the feed reads them from the journal).
pub const MAX_DELTA_BYTES: usize = 1024 * 1024;

/// Persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasteState {
    /// Weight per item.
    pub profile: Profile,
    /// The last sequence number given (= journal length).
    pub seq: u64,
    /// Interaction id to the sequence number it got (0: it changed no weight), for the latest
    /// [`MAX_TASTE_IDS`] ids.
    pub ids: BTreeMap<String, u64>,
    /// Those ids, oldest first.
    pub recent: VecDeque<String>,
}

/// One interaction as recorded for the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasteInteraction {
    /// The client's id for it: a second interaction with the same id is the same one.
    pub id: String,
    /// Its kind (`view`, `purchase`, ...).
    pub kind: String,
    /// The item.
    pub item: String,
}

/// Commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TasteCommand {
    /// Records interactions, in order.
    Record(Vec<TasteInteraction>),
    /// The deltas of the sequence numbers after `after` (at most [`MAX_TASTE_BATCH`]).
    Deltas {
        /// The last number the caller has.
        after: u64,
    },
    /// The profile.
    Profile,
    /// Forgets everything: the weights, the ids and the journal (the customer's erasure).
    Erase,
    /// Starts the customer's erasure: removes every item (each removal numbered and journaled
    /// like an interaction, so the partitions take the customer out of their counts) and the
    /// ids, and refuses interactions from then on. Answers `Forgetting`; sent again, it
    /// removes nothing more.
    Forget,
}

impl TasteCommand {
    /// Whether it only reads.
    pub fn is_read(&self) -> bool {
        !matches!(
            self,
            TasteCommand::Record(_) | TasteCommand::Erase | TasteCommand::Forget
        )
    }
}

/// What became of one interaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded {
    /// Counted now: its number and the delta to apply (None when the weight was capped, with
    /// number 0, or when the answer had no room left for it: then it is read from the journal).
    Applied {
        /// Its sequence number (0 when it changed no weight).
        seq: u64,
        /// What it changes in the counts.
        delta: Option<Delta>,
    },
    /// Counted before under this id.
    Duplicate {
        /// The number it got then.
        seq: u64,
    },
    /// Refused, with why; nothing changed.
    Refused(DomainError),
}

/// Answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TasteAnswer {
    /// One outcome per interaction, in order, and the last sequence number after them.
    Recorded {
        /// Outcomes.
        outcomes: Vec<Recorded>,
        /// Last number.
        seq: u64,
    },
    /// Deltas by number, ascending, and the last number.
    Deltas {
        /// (seq, delta).
        deltas: Vec<(u64, Delta)>,
        /// Last number.
        seq: u64,
    },
    /// The profile and the last number.
    Profile {
        /// Item weights.
        profile: Profile,
        /// Last number.
        seq: u64,
    },
    /// Nothing is left of it.
    Erased,
    /// Every item is removed: the partitions must reach `seq` (the last removal) before the
    /// taste is erased.
    Forgetting {
        /// Last number.
        seq: u64,
    },
}

/// A taste command's result.
pub type TasteReply = Result<TasteAnswer, DomainError>;

/// Checks one interaction's fields. Its id may be built from other ids (`device-usage-{device}-
/// {day}`), so it may be as long as a reference.
fn check(i: &TasteInteraction) -> Result<u32, DomainError> {
    validate_ref("id", &i.id)?;
    validate_id("item", &i.item)?;
    kind_weight(&i.kind).ok_or_else(|| {
        let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        invalid(
            "kind",
            format!("{:?} is not one of {}", i.kind, known.join(", ")),
        )
    })
}

/// The taste entity.
pub struct Taste;

impl Entity for Taste {
    const KIND: &'static str = "taste";
    const STATE_VERSION: u8 = 1;
    type State = TasteState;
    type Command = TasteCommand;
    type Reply = TasteReply;

    fn handle(
        ctx: &EntityContext<'_>,
        state: &mut Option<TasteState>,
        command: TasteCommand,
    ) -> Result<Handled<TasteReply>, EntityError> {
        match command {
            TasteCommand::Record(list) => Ok(record(state, list)),
            TasteCommand::Deltas { after } => {
                let none = TasteState::default();
                let s = state.as_ref().unwrap_or(&none);
                let deltas = record::deltas(ctx, s, after, MAX_TASTE_BATCH)?;
                Ok(Handled::read(Ok(TasteAnswer::Deltas {
                    deltas,
                    seq: s.seq,
                })))
            }
            TasteCommand::Profile => {
                let (profile, seq) = state
                    .as_ref()
                    .map(|s| (s.profile.clone(), s.seq))
                    .unwrap_or_default();
                Ok(Handled::read(Ok(TasteAnswer::Profile { profile, seq })))
            }
            TasteCommand::Forget => Ok(forget(state)),
            TasteCommand::Erase => Ok(if state.take().is_some() {
                Handled::wrote(Ok(TasteAnswer::Erased))
            } else {
                Handled::read(Ok(TasteAnswer::Erased))
            }),
        }
    }
}

impl TasteState {
    /// Its erasure has started (`Forget`): it had weights and has none. Weights only ever rise
    /// otherwise, so no other taste is numbered and empty.
    pub fn erasing(&self) -> bool {
        self.seq > 0 && self.profile.weights.is_empty()
    }

    fn remember(&mut self, id: String, seq: u64) {
        self.ids.insert(id.clone(), seq);
        self.recent.push_back(id);
        while self.recent.len() > MAX_TASTE_IDS {
            if let Some(old) = self.recent.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

fn record(state: &mut Option<TasteState>, list: Vec<TasteInteraction>) -> Handled<TasteReply> {
    if list.len() > MAX_TASTE_BATCH {
        return Handled::read(Err(invalid(
            "interactions",
            format!("{} in one command; at most {MAX_TASTE_BATCH}", list.len()),
        )));
    }
    let s = state.get_or_insert_with(TasteState::default);
    if s.erasing() {
        let refused = Recorded::Refused(invalid(
            "customer_id",
            "the customer is being erased: its interactions are no longer counted",
        ));
        return Handled::read(Ok(TasteAnswer::Recorded {
            outcomes: vec![refused; list.len()],
            seq: s.seq,
        }));
    }
    let mut outcomes = Vec::with_capacity(list.len());
    let mut append = Vec::new();
    let mut room = MAX_DELTA_BYTES;
    for i in list {
        let w = match check(&i) {
            Ok(w) => w,
            Err(e) => {
                outcomes.push(Recorded::Refused(e));
                continue;
            }
        };
        if let Some(seq) = s.ids.get(&i.id) {
            outcomes.push(Recorded::Duplicate { seq: *seq });
            continue;
        }
        let mut delta = Delta::record(&mut s.profile, &i.item, w);
        let seq = match &delta {
            Some(d) => {
                s.seq += 1;
                append.push(TasteRecord::of(d).encode());
                s.seq
            }
            None => 0,
        };
        if let Some(d) = &delta {
            room = room.saturating_sub(d.encoded_size());
            if room == 0 {
                delta = None;
            }
        }
        s.remember(i.id, seq);
        outcomes.push(Recorded::Applied { seq, delta });
    }
    let changed = outcomes
        .iter()
        .any(|o| matches!(o, Recorded::Applied { .. }));
    Handled {
        reply: Ok(TasteAnswer::Recorded {
            outcomes,
            seq: s.seq,
        }),
        changed,
        append,
    }
}

/// Removes every item, each under the next number with its journal record, and the ids.
fn forget(state: &mut Option<TasteState>) -> Handled<TasteReply> {
    let Some(s) = state.as_mut() else {
        return Handled::read(Ok(TasteAnswer::Forgetting { seq: 0 }));
    };
    let items: Vec<String> = s.profile.weights.keys().cloned().collect();
    let had_ids = !s.ids.is_empty();
    let mut append = Vec::with_capacity(items.len());
    for item in items {
        if let Some(d) = Delta::remove(&mut s.profile, &item) {
            s.seq += 1;
            append.push(TasteRecord::of(&d).encode());
        }
    }
    s.ids.clear();
    s.recent.clear();
    Handled {
        reply: Ok(TasteAnswer::Forgetting { seq: s.seq }),
        changed: !append.is_empty() || had_ids,
        append,
    }
}

#[cfg(test)]
#[path = "taste_test.rs"]
mod tests;
