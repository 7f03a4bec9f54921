//! Devices' MQTT credentials: `POST /v1/devices/{id}/credentials` issues or rotates one (the
//! password is in that answer only; the cluster keeps its `$7$` hash), and
//! `GET /v1/mqtt/credentials` hands brokers the hashes (`?unless_version=` answers
//! `{"unchanged": true}` when nothing changed).

use std::collections::HashMap;

use keelson_actors::{
    CredentialsAnswer, CredentialsCommand, CredentialsReply, DeviceAnswer, DeviceCommand,
    CREDENTIALS_ID,
};
use keelson_runtime::Access;
use warp::http::StatusCode;

use crate::error::ApiError;
use crate::handler::{call_entity, id_ok, ok, send_device, with_node, Ctx, Outcome, Rq};

pub(crate) async fn send(
    ctx: &Ctx,
    cmd: CredentialsCommand,
    rid: &Rq,
) -> Result<(String, CredentialsReply), ApiError> {
    let access = Access::of(cmd.is_read(), None);
    call_entity(
        &ctx.client,
        "mqtt-credentials",
        CREDENTIALS_ID,
        &cmd,
        &rid.id,
        None,
        access,
    )
    .await
}

fn unexpected(node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the credentials registry answered with an unexpected kind of reply",
        )
    }
}

/// Issues or rotates device `id`'s credentials.
pub async fn issue(ctx: &Ctx, id: &str, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    if id.starts_with(keelson_bridge::SERVICE_PREFIX) {
        return Err(ApiError::field(
            "id",
            format!(
                "ids starting with \"{}\" are reserved for Keelson's services",
                keelson_bridge::SERVICE_PREFIX
            ),
        ));
    }
    match send_device(ctx, id, DeviceCommand::Get, rid).await? {
        (_, Ok(DeviceAnswer::Device(_))) => {}
        (node, Ok(_)) => return Err(unexpected(&node)),
        (node, Err(e)) => return Err(with_node(e, &node)),
    }
    let password = keelson_bridge::random_password();
    let cmd = CredentialsCommand::Issue {
        device_id: id.to_string(),
        hash: keelson_bridge::hash_password(&password),
    };
    let (node, reply) = send(ctx, cmd, rid).await?;
    match reply {
        Ok(CredentialsAnswer::Issued { generation, .. }) => ok(
            StatusCode::CREATED,
            &node,
            &serde_json::json!({"device_id": id, "username": id, "client_id": id, "password": password, "generation": generation}),
        ),
        Ok(_) => Err(unexpected(&node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

/// Every device's hash, for brokers.
pub async fn list(ctx: &Ctx, query: &HashMap<String, String>, rid: &Rq) -> Outcome {
    let unless_version = match query.get("unless_version") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::field("unless_version", format!("\"{v}\" is not a whole number"))
        })?),
    };
    let (node, reply) = send(ctx, CredentialsCommand::List { unless_version }, rid).await?;
    match reply {
        Ok(CredentialsAnswer::Unchanged(v)) => ok(
            StatusCode::OK,
            &node,
            &serde_json::json!({"version": v, "unchanged": true}),
        ),
        Ok(CredentialsAnswer::All(s)) => ok(
            StatusCode::OK,
            &node,
            &serde_json::json!({
                "version": s.version,
                "devices": s.devices.iter().map(|(id, c)| serde_json::json!({"device_id": id, "hash": c.hash, "generation": c.generation})).collect::<Vec<_>>(),
            }),
        ),
        Ok(_) => Err(unexpected(&node)),
        Err(e) => Err(with_node(e, &node)),
    }
}
