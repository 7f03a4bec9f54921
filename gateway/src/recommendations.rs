//! The recommender's routes: bulk ingestion (`POST /v1/interactions:batch`) and a customer's
//! recommendations (`GET /v1/customers/{id}/recommendations`). The model itself lives in the
//! cluster (`taste` per customer, `item-model` partitions); this module only fans out and merges.
//!
//! ```text
//! batch ─▶ check each item ─▶ group by customer ─▶ model_feed::feed ─▶ a result per item
//! recommendations ─▶ taste Profile ─▶ empty? Popular(p0) : Score on every partition ─▶ merge
//!   ─▶ top `limit` (filled up with popular items it has not seen)
//! ```

use std::collections::HashMap;

use keelson_actors::{
    item_model_id, validate_id, ItemModelAnswer, ItemModelCommand, ItemModelReply, Recorded,
    TasteAnswer, TasteCommand, TasteInteraction, TasteReply, MAX_TASTE_BATCH,
};
use keelson_recommend::{best, kind_weight, Scored, SimParams, ITEM_PARTITIONS};
use keelson_runtime::Access;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use crate::body;
use crate::error::ApiError;
use crate::handler::{
    call_for, id_ok, ok, query_u64, unexpected_answer, with_node, Ctx, Outcome, Rq,
};
use crate::model_feed::feed;

/// The latest `at_ms` accepted: the last millisecond of year 9999.
const MAX_AT_MS: u64 = 253_402_300_799_999;

/// Most recommendations asked for at once.
pub const MAX_RECOMMENDATIONS: u64 = 100;

/// `POST /v1/interactions:batch`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionsBatch {
    /// Up to 1,000 interactions.
    pub interactions: Vec<BatchInteraction>,
}

/// One interaction of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInteraction {
    /// The client's id: counted once per customer, however often it is sent.
    pub id: String,
    /// Customer.
    pub customer_id: String,
    /// `view`, `purchase`, ...
    pub kind: String,
    /// Item.
    pub item: String,
    /// When (ms since the Unix epoch), at most year 9999; checked, not used by the model
    /// (which weighs what happened, not when).
    pub at_ms: Option<u64>,
}

/// What became of one interaction of a batch.
#[derive(Debug, Serialize)]
struct ItemResult {
    id: String,
    customer_id: String,
    /// `applied`, `duplicate` or `refused`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(crate) async fn batch(ctx: &Ctx, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
    let req: InteractionsBatch = body::json(&body?)?;
    if req.interactions.is_empty() || req.interactions.len() > MAX_TASTE_BATCH {
        return Err(ApiError::field(
            "interactions",
            format!(
                "{} given; 1..={MAX_TASTE_BATCH} per request",
                req.interactions.len()
            ),
        ));
    }
    let mut results: Vec<ItemResult> = Vec::with_capacity(req.interactions.len());
    // Per customer, the interactions sent and where each one's result goes.
    let mut by_customer: Vec<(String, Vec<TasteInteraction>, Vec<usize>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (n, i) in req.interactions.into_iter().enumerate() {
        let refused = validate_id(&format!("interactions[{n}].customer_id"), &i.customer_id)
            .err()
            .map(|e| e.to_string())
            .or_else(|| {
                i.at_ms.filter(|t| *t > MAX_AT_MS).map(|t| {
                    format!("field `interactions[{n}].at_ms`: {t} is past year 9999 (at most {MAX_AT_MS})")
                })
            });
        results.push(ItemResult {
            id: i.id.clone(),
            customer_id: i.customer_id.clone(),
            status: "refused",
            error: refused.clone(),
        });
        if refused.is_some() {
            continue;
        }
        let slot = *index.entry(i.customer_id.clone()).or_insert_with(|| {
            by_customer.push((i.customer_id.clone(), Vec::new(), Vec::new()));
            by_customer.len() - 1
        });
        by_customer[slot].1.push(TasteInteraction {
            id: i.id,
            kind: i.kind,
            item: i.item,
        });
        by_customer[slot].2.push(n);
    }
    let places: Vec<Vec<usize>> = by_customer.iter().map(|(_, _, p)| p.clone()).collect();
    let sent = by_customer.into_iter().map(|(c, l, _)| (c, l)).collect();
    let outcomes = feed(ctx, sent, rid).await?;
    let (mut applied, mut duplicates) = (0u64, 0u64);
    for ((_, list), places) in outcomes.into_iter().zip(places) {
        for (o, n) in list.into_iter().zip(places) {
            let r = &mut results[n];
            match o {
                Recorded::Applied { .. } => {
                    r.status = "applied";
                    applied += 1;
                }
                Recorded::Duplicate { .. } => {
                    r.status = "duplicate";
                    duplicates += 1;
                }
                Recorded::Refused(e) => r.error = Some(format!("interactions[{n}]: {e}")),
            }
        }
    }
    let refused = results.len() as u64 - applied - duplicates;
    ok(
        StatusCode::OK,
        "gateway",
        &serde_json::json!({"applied": applied, "duplicates": duplicates, "refused": refused, "results": results}),
    )
}

/// Queues one interaction recorded on the customer (`POST /v1/customers/{id}/interactions`,
/// number `seq` there) for the model, under the id `interaction-{seq}` (so a replayed request
/// counts once); kinds the model does not weigh are left out. What the model does with it:
/// `queued` or `not_weighed`.
pub(crate) async fn feed_one(
    ctx: &Ctx,
    customer: &str,
    seq: u64,
    kind: &str,
    item: &str,
) -> &'static str {
    if kind_weight(kind).is_none() || validate_id("item", item).is_err() {
        return "not_weighed";
    }
    let one = TasteInteraction {
        id: format!("interaction-{seq}"),
        kind: kind.to_string(),
        item: item.to_string(),
    };
    ctx.feeder.queue((customer.to_string(), one)).await;
    "queued"
}

#[derive(Debug, Serialize)]
struct Recommendation {
    item: String,
    score: f64,
    because: Vec<String>,
}

pub(crate) async fn recommend(
    ctx: &Ctx,
    id: &str,
    query: &HashMap<String, String>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    if let Some(k) = query.keys().find(|k| k.as_str() != "limit") {
        return Err(ApiError::field(
            k,
            "unknown query parameter (`limit` is accepted)",
        ));
    }
    let limit = query_u64(query, "limit", 10, 1..=MAX_RECOMMENDATIONS)? as usize;
    let (node, reply): (String, TasteReply) = call_for(
        ctx,
        "taste",
        id,
        &TasteCommand::Profile,
        rid,
        None,
        Access::of(true, None),
    )
    .await?;
    let profile = match reply {
        Ok(TasteAnswer::Profile { profile, .. }) => profile,
        Ok(_) => return Err(unexpected_answer("taste", &node)),
        Err(e) => return Err(with_node(e, &node)),
    };
    let history: Vec<(String, u32)> = profile.items().map(|(i, w)| (i.clone(), w)).collect();
    let mut items: Vec<Scored> = Vec::new();
    let mut version = u64::MAX;
    if !history.is_empty() {
        let params = SimParams::default();
        let parts = (0..ITEM_PARTITIONS).map(|k| {
            let cmd = ItemModelCommand::Score {
                history: history.clone(),
                limit: limit as u32,
                params,
            };
            async move { model_call(ctx, k, &cmd, rid).await }
        });
        let mut all = Vec::new();
        for answer in futures_util::future::try_join_all(parts).await? {
            if let ItemModelAnswer::Scored { items, version: v } = answer {
                version = version.min(v);
                all.extend(items);
            }
        }
        items = best(all, limit);
    }
    if items.len() < limit {
        // No history, or too little signal: the most popular items it has not seen.
        let cmd = ItemModelCommand::Popular {
            limit: (limit + history.len()) as u32,
        };
        if let ItemModelAnswer::Popular {
            items: popular,
            version: v,
        } = model_call(ctx, 0, &cmd, rid).await?
        {
            version = version.min(v);
            let have: std::collections::HashSet<String> =
                items.iter().map(|s| s.item.clone()).collect();
            let fill = popular
                .into_iter()
                .filter(|(i, _)| profile.weight(i) == 0 && !have.contains(i))
                .take(limit - items.len())
                .map(|(item, customers)| Scored {
                    item,
                    score: customers as f64,
                    because: Vec::new(),
                });
            items.extend(fill);
        }
    }
    let items: Vec<Recommendation> = items
        .into_iter()
        .map(|s| Recommendation {
            item: s.item,
            score: s.score,
            because: s.because,
        })
        .collect();
    ok(
        StatusCode::OK,
        &node,
        &serde_json::json!({"customer_id": id, "items": items, "model_version": if version == u64::MAX { 0 } else { version }}),
    )
}

async fn model_call(
    ctx: &Ctx,
    k: u32,
    cmd: &ItemModelCommand,
    rid: &Rq,
) -> Result<ItemModelAnswer, ApiError> {
    let (node, reply): (String, ItemModelReply) = call_for(
        ctx,
        "item-model",
        &item_model_id(k),
        cmd,
        rid,
        None,
        Access::of(true, None),
    )
    .await?;
    reply.map_err(|e| with_node(e, &node))
}
