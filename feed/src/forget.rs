//! Taking an erased customer out of the model: its taste removes every item (each removal
//! numbered and journaled like an interaction), every partition is brought up to the last
//! removal (which takes away exactly what the customer's interactions added), and then drops
//! the customer's id. The taste itself is erased after this, by the caller.
//!
//! ```text
//! taste Forget ─▶ seq (0: nothing was counted) ─▶ every partition: Apply{heads: [(c, seq)]}
//!   ─▶ behind? the removals from the journal (deliver's repair) ─▶ Forget{c, seq} ─▶ id dropped
//! ```
//!
//! Every step is idempotent: a failed erasure sent again finishes what the first one started.

use futures_util::future::try_join_all;
use keelson_actors::{item_model_id, ItemModelAnswer, ItemModelCommand, ItemModelReply};
use keelson_actors::{TasteAnswer, TasteCommand};
use keelson_recommend::ITEM_PARTITIONS;
use keelson_runtime::Access;

use crate::call::call;
use crate::deliver::{bring_up_to_date, taste};
use crate::error::FeedError;
use crate::Sink;

/// Removes `customer` from every partition's counts and drops its id there.
pub(crate) async fn forget(f: &Sink, customer: &str, request_id: &str) -> Result<(), FeedError> {
    let cmd = TasteCommand::Forget;
    let (node, reply) = taste(f, customer, &cmd, request_id, Access::write(None)).await?;
    let seq = match reply {
        Ok(TasteAnswer::Forgetting { seq }) => seq,
        other => return Err(FeedError::not_expected("taste", node, other)),
    };
    if seq == 0 {
        return Ok(());
    }
    let heads = [(customer.to_string(), seq)];
    bring_up_to_date(f, &Default::default(), &heads, request_id).await?;
    let drops = (0..ITEM_PARTITIONS).map(|k| drop_id(f, k, customer, seq, request_id));
    try_join_all(drops).await?;
    tracing::info!(
        partitions = ITEM_PARTITIONS,
        "an erased customer's counts were taken out of the model"
    );
    Ok(())
}

/// Partition `k` drops `customer`'s id, now at `seq`.
async fn drop_id(
    f: &Sink,
    k: u32,
    customer: &str,
    seq: u64,
    request_id: &str,
) -> Result<(), FeedError> {
    let cmd = ItemModelCommand::Forget {
        customer: customer.to_string(),
        seq,
    };
    // Naturally idempotent (it drops the id only at `seq`), so no idempotency key: a key
    // would be remembered by the partition, and it names the customer.
    let (node, reply): (String, ItemModelReply) = call(
        &f.client,
        "item-model",
        &item_model_id(k),
        &cmd,
        request_id,
        Access::write(None),
    )
    .await?;
    match reply {
        Ok(ItemModelAnswer::Forgot { held }) if held.is_none() || held == Some(seq) => Ok(()),
        Ok(ItemModelAnswer::Forgot { .. }) => Err(FeedError::Behind {
            partition: k,
            customers: 1,
        }),
        other => Err(FeedError::not_expected("item-model", node, other)),
    }
}
