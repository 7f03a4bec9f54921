//! `DELETE /v1/customers/{id}`: erasing a customer everywhere (GDPR Art. 17).
//!
//! ```text
//! customer Get ─▶ its devices ─▶ each: Erase (telemetry, alerts, twin, commands; or detach
//!   with ?devices=detach) and its MQTT credential revoked ─▶ the model's feed flushed ─▶ the
//!   customer taken out of the model's counts (feed forget) ─▶ taste Erase (the recommender's
//!   weights, ids and journal) ─▶ customer Delete (its record, tickets, journal of
//!   interactions, kept idempotency replies, and the key they were sealed under)
//! ```
//!
//! Every step is idempotent, so a retried erasure finishes what a failed one started; the
//! customer is deleted last, so a failure part-way leaves it listing what is still to erase.

use std::collections::HashMap;

use keelson_actors::{
    CredentialsCommand, CustomerAnswer, CustomerCommand, DeviceAnswer, DeviceCommand, DomainError,
    TasteAnswer, TasteCommand, TasteReply,
};
use keelson_runtime::Access;
use warp::http::StatusCode;

use crate::error::ApiError;
use crate::handler::{call_entity, id_ok, send_customer, with_node, Ctx, Outcome, Rq};

/// Erases customer `id` and, unless `?devices=detach`, its devices.
pub async fn erase_customer(
    ctx: &Ctx,
    id: &str,
    query: &HashMap<String, String>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    crate::handler::only_query(query, &["devices"])?;
    let detach = match query.get("devices").map(String::as_str) {
        None | Some("erase") => false,
        Some("detach") => true,
        Some(_) => {
            return Err(ApiError::field(
                "devices",
                "must be `erase` (the default) or `detach`",
            ))
        }
    };
    let devices = match send_customer(ctx, id, CustomerCommand::Get, rid, None).await? {
        (_, Ok(CustomerAnswer::Customer(c))) => c.devices,
        (node, Err(e)) => return Err(with_node(e, &node)),
        (node, Ok(_)) => return Err(unexpected(&node)),
    };
    for device in &devices {
        let cmd = DeviceCommand::Erase { detach };
        let (node, reply): (String, keelson_actors::DeviceReply) = call_entity(
            &ctx.client,
            "device",
            device,
            &cmd,
            &rid.id,
            None,
            Access::write(None),
        )
        .await?;
        match reply {
            Ok(DeviceAnswer::Erased | DeviceAnswer::Device(_)) => {}
            Err(e) => return Err(with_node(e, &node)),
            Ok(_) => return Err(unexpected(&node)),
        }
        if !detach {
            let revoke = CredentialsCommand::Revoke {
                device_id: device.clone(),
            };
            if let (node, Err(e)) = crate::device_credentials::send(ctx, revoke, rid).await? {
                return Err(with_node(e, &node));
            }
        }
    }
    // What it interacted with, as the recommender counted it; first, whatever of it is still
    // queued for the model goes in, so that nothing fed later brings it back.
    if tokio::time::timeout(ctx.cfg.request_timeout, ctx.feed.flush())
        .await
        .is_err()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_not_updated",
            "interactions queued for the recommendation model were not fed in time; retry the erasure",
        ));
    }
    // Out of the model's counts, and its id out of every partition, before its taste goes.
    if let Err(e) = ctx.feed.forget(id, &rid.id).await {
        tracing::warn!(request_id = %rid.id, error = %e, "an erasure could not take the customer out of the model yet");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_not_updated",
            "the customer could not be taken out of the recommendation model yet; retry the erasure",
        ));
    }
    let (node, reply): (String, TasteReply) = call_entity(
        &ctx.client,
        "taste",
        id,
        &TasteCommand::Erase,
        &rid.id,
        None,
        Access::write(None),
    )
    .await?;
    match reply {
        Ok(TasteAnswer::Erased) => {}
        Err(e) => return Err(with_node(e, &node)),
        Ok(_) => return Err(unexpected(&node)),
    }
    match send_customer(ctx, id, CustomerCommand::Delete, rid, None).await? {
        (node, Ok(CustomerAnswer::Deleted)) => {
            tracing::info!(target: "keelson::audit", request_id = %rid.id, customer = id, devices = devices.len(), detach, "customer erased");
            crate::handler::empty(StatusCode::NO_CONTENT, &node)
        }
        (node, Err(DomainError::NotFound { .. })) => {
            crate::handler::empty(StatusCode::NO_CONTENT, &node)
        }
        (node, Err(e)) => Err(with_node(e, &node)),
        (node, Ok(_)) => Err(unexpected(&node)),
    }
}

fn unexpected(node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an entity answered an erasure step with an unexpected kind of reply",
        )
    }
}
