//! One feed: each customer's interactions are recorded in its `taste` (which counts each id
//! once and numbers every weight change), then every `item-model` partition is brought up to
//! each customer's last number. A partition that missed numbers (a delivery lost to a failed
//! call, a retried batch, another process feeding the same customer) says so, and is sent the
//! missing deltas rebuilt from the customer's journal, so an acknowledged interaction is in
//! every partition exactly once.
//!
//! ```text
//! [(customer, interactions)] ─Record─▶ taste/{customer} ─▶ outcomes, deltas, head
//!   ─Apply{part of each delta, heads}─▶ writer (group commit) ─▶ item-model/p0..p63
//!   ─▶ behind[(customer, last)]
//!   ─Deltas{after: last}─▶ taste ─Apply─▶ that partition           (until none is behind)
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use keelson_actors::{
    ModelUpdate, Recorded, TasteAnswer, TasteCommand, TasteInteraction, TasteReply,
};
use keelson_recommend::{Delta, ITEM_PARTITIONS};
use keelson_runtime::Access;
use tokio::sync::OnceCell;

use crate::call::call;
use crate::error::FeedError;
use crate::Sink;

/// Tastes recorded at once.
const CONCURRENT_TASTES: usize = 16;

/// Rounds of repair before a partition still behind fails the feed.
const REPAIR_ROUNDS: usize = 4;

/// One customer's deltas, by number.
type Deltas = Vec<(u64, Delta)>;

/// What one customer's taste said: (customer, outcomes, its last number).
type Taken = (String, Vec<Recorded>, u64);

/// Records each customer's interactions and brings every partition up to date. Returns each
/// customer's outcomes, in the order given.
pub(crate) async fn feed(
    f: &Sink,
    by_customer: Vec<(String, Vec<TasteInteraction>)>,
    request_id: &str,
) -> Result<Vec<(String, Vec<Recorded>)>, FeedError> {
    let recorded: Vec<Result<Taken, FeedError>> =
        stream::iter(by_customer.into_iter().map(|(customer, list)| async move {
            let cmd = TasteCommand::Record(list);
            let (node, reply) = taste(f, &customer, &cmd, request_id, Access::write(None)).await?;
            match reply {
                Ok(TasteAnswer::Recorded { outcomes, seq }) => Ok((customer, outcomes, seq)),
                other => Err(FeedError::not_expected("taste", node, other)),
            }
        }))
        .buffered(CONCURRENT_TASTES)
        .collect()
        .await;
    let recorded = recorded.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut deltas: HashMap<String, Deltas> = HashMap::new();
    let mut heads = Vec::new();
    for (customer, outcomes, head) in &recorded {
        heads.push((customer.clone(), *head));
        let mine = deltas.entry(customer.clone()).or_default();
        for o in outcomes {
            if let Recorded::Applied {
                seq,
                delta: Some(d),
            } = o
            {
                mine.push((*seq, d.clone()));
            }
        }
    }
    bring_up_to_date(f, &deltas, &heads, request_id).await?;
    Ok(recorded.into_iter().map(|(c, o, _)| (c, o)).collect())
}

/// Sends every partition its part of `deltas`, with the customers' `heads`, then repairs
/// whatever a partition reports missing.
pub(crate) async fn bring_up_to_date(
    f: &Sink,
    deltas: &HashMap<String, Deltas>,
    heads: &[(String, u64)],
    request_id: &str,
) -> Result<(), FeedError> {
    let first = split(deltas.iter().map(|(c, l)| (c.as_str(), l.as_slice())));
    // A customer's journal is read once for every partition missing the same numbers (after a
    // lost delivery, or an erasure's removals, that is all of them).
    let journal = Journal::default();
    let journal = &journal;
    let parts = first
        .into_iter()
        .zip(0..ITEM_PARTITIONS)
        .map(|(updates, k)| async move {
            let mut behind = apply(f, k, updates, heads).await?;
            for _ in 0..REPAIR_ROUNDS {
                if behind.is_empty() {
                    return Ok(());
                }
                let mut missing = Vec::new();
                for (customer, last) in &behind {
                    let rebuilt = journal.parts(f, customer, *last, request_id).await?;
                    missing.extend(rebuilt[k as usize].iter().cloned());
                }
                tracing::info!(
                    partition = k,
                    customers = behind.len(),
                    "item model partition was behind; sending the deltas it missed"
                );
                behind = apply(f, k, missing, heads).await?;
            }
            if behind.is_empty() {
                Ok(())
            } else {
                Err(FeedError::Behind {
                    partition: k,
                    customers: behind.len(),
                })
            }
        });
    futures_util::future::try_join_all(parts).await.map(|_| ())
}

/// Each partition's updates (by partition number) of the customers' deltas: every delta split
/// once, not once per partition.
fn split<'a>(deltas: impl Iterator<Item = (&'a str, &'a [(u64, Delta)])>) -> Vec<Vec<ModelUpdate>> {
    let mut parts: Vec<Vec<ModelUpdate>> = vec![Vec::new(); ITEM_PARTITIONS as usize];
    for (customer, list) in deltas {
        for (seq, d) in list {
            for (part, delta) in parts.iter_mut().zip(d.split()) {
                part.push(ModelUpdate {
                    customer: customer.to_string(),
                    seq: *seq,
                    delta,
                });
            }
        }
    }
    parts
}

/// Customers' deltas rebuilt from their journals during one feed, split by partition, each
/// (customer, after) read once however many partitions ask for it at the same time.
#[derive(Default)]
struct Journal(std::sync::Mutex<HashMap<(String, u64), Rebuilt>>);

/// One customer's updates after one number, by partition, once read.
type Rebuilt = Arc<OnceCell<Arc<Vec<Vec<ModelUpdate>>>>>;

impl Journal {
    async fn parts(
        &self,
        f: &Sink,
        customer: &str,
        after: u64,
        request_id: &str,
    ) -> Result<Arc<Vec<Vec<ModelUpdate>>>, FeedError> {
        let cell = self
            .0
            .lock()
            .expect("journal cache lock")
            .entry((customer.to_string(), after))
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let deltas = taste_deltas(f, customer, after, request_id).await?;
            Ok(Arc::new(split(std::iter::once((
                customer,
                deltas.as_slice(),
            )))))
        })
        .await
        .cloned()
    }
}

/// One Apply of `updates` to partition `k` (through its writer, merged with whatever else is
/// waiting); what it is still missing.
async fn apply(
    f: &Sink,
    k: u32,
    updates: Vec<ModelUpdate>,
    heads: &[(String, u64)],
) -> Result<Vec<(String, u64)>, FeedError> {
    let mine: HashSet<&str> = heads.iter().map(|(c, _)| c.as_str()).collect();
    let behind = f.writers.apply(k, updates, heads.to_vec()).await?;
    // The merged answer names other feeds' customers too.
    Ok(behind
        .into_iter()
        .filter(|(c, _)| mine.contains(c.as_str()))
        .collect())
}

/// `customer`'s deltas after number `after`, rebuilt from its journal (all of them, page by page).
async fn taste_deltas(
    f: &Sink,
    customer: &str,
    after: u64,
    request_id: &str,
) -> Result<Deltas, FeedError> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let cmd = TasteCommand::Deltas { after: from };
        let (node, reply) = taste(f, customer, &cmd, request_id, Access::read()).await?;
        match reply {
            Ok(TasteAnswer::Deltas { deltas, seq }) => {
                let Some(last) = deltas.last().map(|(s, _)| *s) else {
                    return Ok(out);
                };
                out.extend(deltas);
                if last >= seq {
                    return Ok(out);
                }
                from = last;
            }
            other => return Err(FeedError::not_expected("taste", node, other)),
        }
    }
}

/// One command to `customer`'s taste: (answering node, reply).
pub(crate) async fn taste(
    f: &Sink,
    customer: &str,
    cmd: &TasteCommand,
    request_id: &str,
    access: Access,
) -> Result<(String, TasteReply), FeedError> {
    call(&f.client, "taste", customer, cmd, request_id, access).await
}
