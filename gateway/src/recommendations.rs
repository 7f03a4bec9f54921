//! The recommender's routes: bulk ingestion (`POST /v1/interactions:batch`) and a customer's
//! recommendations (`GET /v1/customers/{id}/recommendations`). The model itself lives in the
//! cluster (`taste` per customer, `item-model` partitions); recommendations are read from this
//! gateway's copy of the partitions' neighbour lists (`model_index`).
//!
//! ```text
//! batch ─▶ check each item ─▶ group by customer ─▶ keelson_feed (taste, partitions) ─▶ a result per item
//! recommendations ─▶ taste Profile ─▶ the served Index: top `limit` of what it has not seen
//!   (filled up with the most popular items it has not seen)
//! ```

use std::collections::{HashMap, HashSet};

use keelson_actors::{
    validate_id, Recorded, TasteAnswer, TasteCommand, TasteInteraction, TasteReply, MAX_TASTE_BATCH,
};
use keelson_recommend::{kind_weight, Scored};
use keelson_runtime::Access;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use crate::body;
use crate::error::ApiError;
use crate::handler::{
    call_for, id_ok, ok, only_query, query_u64, unexpected_answer, with_node, Ctx, Outcome, Rq,
};

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
    let outcomes = ctx.feed.feed(sent, &rid.id).await?;
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

/// Queues one interaction of `customer` for the model (counted once by its id, so a replayed
/// request counts once); kinds the model does not weigh are left out. What the model does with
/// it: `queued` or `not_weighed`.
pub(crate) async fn feed_one(ctx: &Ctx, customer: &str, one: TasteInteraction) -> &'static str {
    if kind_weight(&one.kind).is_none() || validate_id("item", &one.item).is_err() {
        return "not_weighed";
    }
    ctx.feed.queue(customer, one).await;
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
    only_query(query, &["limit"])?;
    let limit = query_u64(query, "limit", 10, 1..=MAX_RECOMMENDATIONS)? as usize;
    // At the taste's primary: its live entity holds the profile decoded, where a follower
    // would decode the whole stored taste (and first ask the primary whether it is in sync).
    let (node, reply): (String, TasteReply) = call_for(
        ctx,
        "taste",
        id,
        &TasteCommand::Profile,
        rid,
        None,
        Access::primary_read(),
    )
    .await?;
    let profile = match reply {
        Ok(TasteAnswer::Profile { profile, .. }) => profile,
        Ok(_) => return Err(unexpected_answer("taste", &node)),
        Err(e) => return Err(with_node(e, &node)),
    };
    let history: Vec<(&str, u32)> = profile.items().map(|(i, w)| (i.as_str(), w)).collect();
    let served = ctx.model.current().await;
    let mut items = served.index.recommend(&history, limit);
    if items.len() < limit {
        // No history, or too little signal: the most popular items it has not seen.
        let have: HashSet<String> = items.iter().map(|s| s.item.clone()).collect();
        let fill = served
            .index
            .popular(limit - items.len(), |i| {
                profile.weight(i) > 0 || have.contains(i)
            })
            .into_iter()
            .map(|(item, customers)| Scored {
                item,
                score: customers as f64,
                because: Vec::new(),
            });
        items.extend(fill);
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
        &serde_json::json!({"customer_id": id, "items": items, "model_version": served.version}),
    )
}
