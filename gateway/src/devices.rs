//! Device routes: register (linked to its customer first), read, and HTTP telemetry held to the
//! same rules as MQTT.

use keelson_actors::{CustomerCommand, CustomerReply, DeviceAnswer, DeviceCommand, DomainError};
use keelson_feed::devices::day_of;
use keelson_runtime::Access;
use warp::http::StatusCode;

use crate::api;
use crate::body;
use crate::error::ApiError;
use crate::handler::{
    call_entity, id_ok, new_id_for, ok, send_device, unexpected_answer, with_node, Ctx, Outcome, Rq,
};

pub(crate) async fn device(
    ctx: &Ctx,
    id: &str,
    cmd: DeviceCommand,
    rid: &Rq,
    status: StatusCode,
) -> Outcome {
    id_ok("id", id)?;
    cmd.validate()?;
    let (node, reply) = send_device(ctx, id, cmd, rid).await?;
    match reply {
        Ok(DeviceAnswer::Device(d)) => ok(status, &node, &d),
        Ok(_) => Err(unexpected_answer("device", &node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

pub(crate) async fn create_device(ctx: &Ctx, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
    let req: api::CreateDevice = body::json(&body?)?;
    let id = match &req.id {
        Some(id) => {
            id_ok("id", id)?;
            id.clone()
        }
        None => new_id_for("d", rid),
    };
    let cmd = DeviceCommand::Register(req.into_new());
    cmd.validate()?;
    let DeviceCommand::Register(new) = &cmd else {
        unreachable!("built above")
    };
    // A device belongs to an existing customer, which lists it (what an erasure removes) before
    // the device exists.
    let link = CustomerCommand::LinkDevice {
        device_id: id.clone(),
    };
    // Linking is idempotent by itself: it does not take the request's key, so a replay is
    // reported only for the device's own answer.
    let linked: (String, CustomerReply) = call_entity(
        &ctx.client,
        "customer",
        &new.customer_id,
        &link,
        &rid.id,
        None,
        Access::write(None),
    )
    .await?;
    match linked {
        (_, Ok(_)) => {}
        (_, Err(DomainError::NotFound { .. })) => {
            return Err(ApiError::field(
                "customer_id",
                format!("customer \"{}\" does not exist", new.customer_id),
            ))
        }
        (node, Err(e)) => return Err(with_node(e, &node)),
    }
    let (customer, kind) = (new.customer_id.clone(), new.kind.clone());
    let mut out = device(ctx, &id, cmd, rid, StatusCode::CREATED).await?;
    crate::recommendations::feed_one(ctx, &customer, keelson_feed::devices::owned(&id, &kind))
        .await;
    out.location = Some(format!("/v1/devices/{id}"));
    Ok(out)
}

/// Telemetry over HTTP is held to the same rules as over MQTT (the edge's time window and the
/// device kind's physical ranges), then to the entity's own.
pub(crate) async fn telemetry(
    ctx: &Ctx,
    id: &str,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    id_ok("id", id)?;
    let t = body::json::<api::PostTelemetry>(&body?)?.into_telemetry(ctx.edge.samples);
    let cmd = DeviceCommand::Telemetry(t);
    cmd.validate()?;
    let DeviceCommand::Telemetry(t) = &cmd else {
        unreachable!("built above")
    };
    let (kind, customer, last_ms) = match send_device(ctx, id, DeviceCommand::Get, rid).await? {
        (_, Ok(DeviceAnswer::Device(d))) => (d.kind, d.customer_id, d.last_telemetry_ms),
        (node, Ok(_)) => return Err(unexpected_answer("device", &node)),
        (node, Err(e)) => return Err(with_node(e, &node)),
    };
    let now = keelson_runtime::now_ms();
    let at_ms = t.at_ms.unwrap_or(now);
    keelson_bridge::check_sample(&ctx.edge, Some(&kind), &t.readings, at_ms, now).map_err(|r| {
        match r.detail.split_once(": ") {
            Some((field, why)) => ApiError::field(field, why),
            None => ApiError::field("readings", r.detail),
        }
    })?;
    let out = device(ctx, id, cmd, rid, StatusCode::OK).await?;
    // A day of use counts once: only its first reading is fed (the feed counts it once by id
    // anyway; this spares the model a write per reading).
    let first_today = last_ms.is_none_or(|l| day_of(l) != day_of(at_ms));
    if !customer.is_empty() && first_today {
        let used = keelson_feed::devices::used(id, &kind, at_ms);
        crate::recommendations::feed_one(ctx, &customer, used).await;
    }
    Ok(out)
}
