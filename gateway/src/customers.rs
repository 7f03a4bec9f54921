//! Customer routes: create, read, change, interactions (append and page), and fault injection.

use std::collections::HashMap;

use keelson_actors::{CustomerAnswer, CustomerCommand, TasteInteraction};
use keelson_runtime::Fault;
use warp::http::StatusCode;

use crate::api;
use crate::body;
use crate::error::ApiError;
use crate::handler::{
    id_ok, new_id_for, ok, query_u64, send_customer, unexpected_answer, with_node, Ctx, Ok_,
    Outcome, Rq,
};

pub(crate) async fn customer(
    ctx: &Ctx,
    id: &str,
    cmd: CustomerCommand,
    rid: &Rq,
    status: StatusCode,
) -> Outcome {
    id_ok("id", id)?;
    cmd.validate()?;
    let (node, reply) = send_customer(ctx, id, cmd, rid, None).await?;
    match reply {
        Ok(CustomerAnswer::Customer(c)) => ok(status, &node, &c),
        Ok(CustomerAnswer::Deleted) => Ok(Ok_ {
            status,
            body: String::new(),
            node,
            location: None,
        }),
        Ok(_) => Err(unexpected_answer("customer", &node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

pub(crate) async fn create_customer(
    ctx: &Ctx,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    let req: api::CreateCustomer = body::json(&body?)?;
    let id = match &req.id {
        Some(id) => {
            id_ok("id", id)?;
            id.clone()
        }
        None => new_id_for("c", rid),
    };
    let mut out = customer(
        ctx,
        &id,
        CustomerCommand::Create(req.into_new()),
        rid,
        StatusCode::CREATED,
    )
    .await?;
    out.location = Some(format!("/v1/customers/{id}"));
    Ok(out)
}

pub(crate) async fn patch_customer(
    ctx: &Ctx,
    id: &str,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    let patch = body::json::<api::PatchCustomer>(&body?)?.into_patch();
    if patch == keelson_actors::CustomerPatch::default() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "request body: names no field to change",
        ));
    }
    customer(ctx, id, CustomerCommand::Update(patch), rid, StatusCode::OK).await
}

pub(crate) async fn add_interaction(
    ctx: &Ctx,
    id: &str,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    let cmd =
        CustomerCommand::AddInteraction(body::json::<api::AddInteraction>(&body?)?.into_new());
    cmd.validate()?;
    let (node, reply) = send_customer(ctx, id, cmd, rid, None).await?;
    match reply {
        Ok(CustomerAnswer::InteractionAdded {
            interaction,
            version,
        }) => {
            let one = TasteInteraction {
                id: format!("interaction-{}", interaction.seq),
                kind: interaction.kind.clone(),
                item: interaction.item.clone(),
            };
            let model = crate::recommendations::feed_one(ctx, id, one).await;
            ok(
                StatusCode::CREATED,
                &node,
                &api::InteractionAdded {
                    customer_id: id,
                    interaction: &interaction,
                    version,
                    model,
                },
            )
        }
        Ok(_) => Err(unexpected_answer("customer", &node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

pub(crate) async fn list_interactions(
    ctx: &Ctx,
    id: &str,
    query: &HashMap<String, String>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    crate::handler::only_query(query, &["after", "limit"])?;
    let after = query_u64(query, "after", 0, 0..=u64::MAX)?;
    let max = u64::from(keelson_actors::MAX_INTERACTION_PAGE);
    let limit = query_u64(query, "limit", 100, 1..=max)? as u32;
    let cmd = CustomerCommand::ListInteractions { after, limit };
    match send_customer(ctx, id, cmd, rid, None).await? {
        (node, Ok(CustomerAnswer::Interactions { items, total })) => {
            let next_after = (items.len() == limit as usize)
                .then(|| items.last().map(|i| i.seq))
                .flatten()
                .filter(|last| *last < total);
            ok(
                StatusCode::OK,
                &node,
                &serde_json::json!({"customer_id": id, "interactions": items, "total": total, "next_after": next_after}),
            )
        }
        (node, Ok(_)) => Err(unexpected_answer("customer", &node)),
        (node, Err(e)) => Err(with_node(e, &node)),
    }
}

pub(crate) async fn fault(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    if !ctx.cfg.fault_injection {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault_injection_disabled",
            "fault injection is disabled (cluster.fault_injection = false)",
        ));
    }
    id_ok("id", id)?;
    if kind != "customer" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("field `kind`: faults can be injected into customers, not \"{kind}\""),
        ));
    }
    let req: api::InjectFault = body::json(&body?)?;
    let fault = match req.mode {
        api::FaultMode::Panic => Fault::Panic,
        api::FaultMode::Error => Fault::Error,
    };
    let (node, _) = send_customer(ctx, id, CustomerCommand::Get, rid, Some(fault)).await?;
    ok(
        StatusCode::OK,
        &node,
        &serde_json::json!({"injected": true}),
    )
}
