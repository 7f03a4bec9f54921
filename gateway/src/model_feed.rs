//! Feeds interactions to the recommender: each customer's interactions are recorded in its
//! `taste` (which counts each id once and numbers every weight change), then every `item-model`
//! partition is brought up to each customer's last number. A partition that missed numbers
//! (a delivery lost to a failed gateway call, a retried batch) says so, and is sent the missing
//! deltas rebuilt from the customer's journal, so an acknowledged interaction is in every
//! partition exactly once.
//!
//! Interactions recorded one at a time on a customer are queued and fed by one task, which
//! feeds what queues up within 100 ms in one go (so a busy customer route costs the model a
//! few writes per batch, not 33 per interaction). The route answers `"model": "queued"`, not
//! "counted": a gateway that stops with interactions still queued loses them for the model
//! (the customer's own list keeps them). `POST /v1/interactions:batch` answers only once every
//! partition has its interactions.
//!
//! ```text
//! customer route ─▶ Feeder queue ─▶ run_feeder: drain ─▶ feed (retried until it succeeds)
//! [(customer, interactions)] ─Record─▶ taste/{customer} ─▶ outcomes, deltas, head
//!   ─Apply{part of each delta, heads}─▶ model_writer (group commit) ─▶ item-model/p0..p31
//!   ─▶ behind[(customer, last)]
//!   ─Deltas{after: last}─▶ taste ─Apply─▶ that partition           (until none is behind)
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use keelson_actors::{
    ModelUpdate, Recorded, TasteAnswer, TasteCommand, TasteInteraction, TasteReply,
};
use keelson_recommend::{Delta, ITEM_PARTITIONS};
use keelson_runtime::Access;
use warp::http::StatusCode;

use crate::error::ApiError;
use crate::handler::{call_for, with_node, Ctx, Rq};
use crate::model_queue::Queued;

/// Most interactions fed in one go by the feeder.
const FEEDER_BATCH: usize = 1_000;

/// How long the feeder waits for more after the first interaction of a batch: a busy route
/// costs the model a few writes per this interval, not 33 per interaction.
const FEEDER_LINGER: Duration = Duration::from_millis(100);

/// Feeds queued interactions until every sender is gone: whatever queued up while the last
/// feed ran goes in the next, retried (with backoff) until the model took it.
pub async fn run_feeder(ctx: Arc<Ctx>, mut rx: tokio::sync::mpsc::Receiver<Queued>) {
    let rid = Rq {
        id: "model-feed".to_string(),
        idempotency_key: None,
        principal: None,
        replayed: std::sync::atomic::AtomicBool::new(false),
        rate: None,
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + FEEDER_LINGER;
        while batch.len() < FEEDER_BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(q)) => batch.push(q),
                _ => break,
            }
        }
        let mut by_customer: Vec<(String, Vec<TasteInteraction>)> = Vec::new();
        for (customer, i) in batch {
            match by_customer.iter_mut().find(|(c, _)| *c == customer) {
                Some((_, list)) => list.push(i),
                None => by_customer.push((customer, vec![i])),
            }
        }
        let mut pause = Duration::from_millis(50);
        while let Err(e) = feed(&ctx, by_customer.clone(), &rid).await {
            tracing::warn!(error = %e.message, interactions = by_customer.iter().map(|(_, l)| l.len()).sum::<usize>(), "recommendation model not updated yet; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// Tastes recorded at once.
const CONCURRENT_TASTES: usize = 16;

/// Rounds of repair before a partition still behind fails the request.
const REPAIR_ROUNDS: usize = 4;

/// One customer's deltas, by number.
type Deltas = Vec<(u64, Delta)>;

/// What one customer's taste said: (customer, outcomes, its last number).
type Taken = (String, Vec<Recorded>, u64);

/// Records each customer's interactions and brings every partition up to date. Returns each
/// customer's outcomes, in the order given.
pub(crate) async fn feed(
    ctx: &Ctx,
    by_customer: Vec<(String, Vec<TasteInteraction>)>,
    rid: &Rq,
) -> Result<Vec<(String, Vec<Recorded>)>, ApiError> {
    let recorded: Vec<Result<Taken, ApiError>> =
        stream::iter(by_customer.into_iter().map(|(customer, list)| async move {
            let cmd = TasteCommand::Record(list);
            let (node, reply): (String, TasteReply) = call_for(
                ctx,
                "taste",
                &customer,
                &cmd,
                rid,
                None,
                Access::of(false, None),
            )
            .await?;
            match reply {
                Ok(TasteAnswer::Recorded { outcomes, seq }) => Ok((customer, outcomes, seq)),
                Ok(_) => Err(unexpected("taste", &node)),
                Err(e) => Err(with_node(e, &node)),
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
    bring_up_to_date(ctx, &deltas, &heads, rid).await?;
    Ok(recorded.into_iter().map(|(c, o, _)| (c, o)).collect())
}

/// Sends every partition its part of `deltas`, with the customers' `heads`, then repairs
/// whatever a partition reports missing.
async fn bring_up_to_date(
    ctx: &Ctx,
    deltas: &HashMap<String, Deltas>,
    heads: &[(String, u64)],
    rid: &Rq,
) -> Result<(), ApiError> {
    let parts = (0..ITEM_PARTITIONS).map(|k| async move {
        let mut behind = apply(ctx, k, deltas, heads).await?;
        let mut journal: HashMap<(String, u64), Deltas> = HashMap::new();
        for _ in 0..REPAIR_ROUNDS {
            if behind.is_empty() {
                return Ok(());
            }
            let mut missing: HashMap<String, Deltas> = HashMap::new();
            for (customer, last) in &behind {
                let key = (customer.clone(), *last);
                if !journal.contains_key(&key) {
                    journal.insert(key.clone(), taste_deltas(ctx, customer, *last, rid).await?);
                }
                missing.insert(customer.clone(), journal[&key].clone());
            }
            tracing::info!(partition = k, customers = behind.len(), "item model partition was behind; sending the deltas it missed");
            behind = apply(ctx, k, &missing, heads).await?;
        }
        if behind.is_empty() {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "model_not_updated",
                format!(
                    "item-model partition p{k} is still behind for {} customer(s); retry (interactions are counted once by id)",
                    behind.len()
                ),
            ))
        }
    });
    futures_util::future::try_join_all(parts).await.map(|_| ())
}

/// One Apply to partition `k` (through its writer, merged with whatever else is waiting): its
/// part of `deltas`; what it is still missing.
async fn apply(
    ctx: &Ctx,
    k: u32,
    deltas: &HashMap<String, Deltas>,
    heads: &[(String, u64)],
) -> Result<Vec<(String, u64)>, ApiError> {
    let updates = deltas
        .iter()
        .flat_map(|(customer, list)| {
            list.iter().map(move |(seq, d)| ModelUpdate {
                customer: customer.clone(),
                seq: *seq,
                delta: d.for_partition(k),
            })
        })
        .collect();
    let mine: std::collections::HashSet<&str> = heads.iter().map(|(c, _)| c.as_str()).collect();
    let behind = ctx.writers.apply(k, updates, heads.to_vec()).await?;
    // The merged answer names other requests' customers too.
    Ok(behind
        .into_iter()
        .filter(|(c, _)| mine.contains(c.as_str()))
        .collect())
}

/// `customer`'s deltas after number `after`, rebuilt from its journal (all of them, page by page).
async fn taste_deltas(ctx: &Ctx, customer: &str, after: u64, rid: &Rq) -> Result<Deltas, ApiError> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let cmd = TasteCommand::Deltas { after: from };
        let (node, reply): (String, TasteReply) = call_for(
            ctx,
            "taste",
            customer,
            &cmd,
            rid,
            None,
            Access::of(true, None),
        )
        .await?;
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
            Ok(_) => return Err(unexpected("taste", &node)),
            Err(e) => return Err(with_node(e, &node)),
        }
    }
}

fn unexpected(kind: &str, node: &str) -> ApiError {
    crate::handler::unexpected_answer(kind, node)
}
