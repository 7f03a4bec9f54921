//! What every handler needs: the context, the client's request, the outcome types, and the calls
//! to entities (with idempotency keys and replay marking). Handlers (`customers`, `devices`,
//! `iot`, `keys`, `device_credentials`, `erasure`) import this and nothing of the router.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keelson_actors::{
    validate_id, CustomerCommand, CustomerReply, DeviceCommand, DeviceReply, DomainError,
};
use keelson_runtime::{
    decode_payload, encode_payload, Access, ClusterClient, ClusterConfig, Fault, IdempotencyKey,
};
use rand::RngExt;
use serde::Serialize;
use warp::http::StatusCode;

use crate::authz::Principal;
use crate::error::ApiError;
use crate::identity::Identities;
use crate::{idempotency, limits};

/// What every handler needs.
pub struct Ctx {
    /// Who may prove what.
    pub identities: Arc<Identities>,
    /// Entity client.
    pub client: ClusterClient,
    /// Configuration.
    pub cfg: ClusterConfig,
    /// Publishes desired state and commands to devices; `None` without `[mqtt]`.
    pub publisher: Option<keelson_bridge::Publisher>,
    /// Idempotency keys recently used through this gateway.
    pub keys: Arc<idempotency::Keys>,
    /// Rate limits and the in-flight cap.
    pub gate: Arc<limits::Gate>,
    /// The rules device data is held to (shared with the MQTT edge).
    pub edge: keelson_bridge::EdgeConfig,
    /// The open-file limit in force, reported in `/v1/cluster`.
    pub open_files: u64,
    /// This gateway's feed of the recommendation model.
    pub feed: keelson_feed::ModelFeed,
    /// The recommendation model as this gateway serves it.
    pub model: Arc<crate::model_index::ServedModel>,
}

/// A successful answer.
pub(crate) struct Ok_ {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    pub(crate) node: String,
    pub(crate) location: Option<String>,
}

pub(crate) type Outcome = Result<Ok_, ApiError>;

pub(crate) fn ok<T: Serialize>(status: StatusCode, node: &str, value: &T) -> Outcome {
    Ok(Ok_ {
        status,
        body: serde_json::to_string(value).expect("API types serialise"),
        node: node.to_string(),
        location: None,
    })
}

/// What identifies one client request.
pub struct Rq {
    /// `x-request-id`, given or generated.
    pub(crate) id: String,
    /// `Idempotency-Key` bound to this request (writes only).
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    /// Who sent it, once authenticated.
    pub(crate) principal: Option<Principal>,
    /// Set when an entity answered with the reply it kept for the idempotency key.
    pub(crate) replayed: AtomicBool,
    /// The principal's rate standing, once counted.
    pub(crate) rate: Option<limits::Standing>,
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::rng().random::<u64>())
}

/// A new entity's id: derived from the idempotency key when there is one, so a retried create
/// reaches the same entity (which answers it from memory), random otherwise.
pub(crate) fn new_id_for(prefix: &str, rid: &Rq) -> String {
    match &rid.idempotency_key {
        Some(k) => idempotency::derived_id(prefix, k),
        None => new_id(prefix),
    }
}

pub(crate) fn id_ok(field: &str, id: &str) -> Result<(), ApiError> {
    validate_id(field, id).map_err(ApiError::from)
}

/// Sends one command to entity `kind/id` and decodes its reply: (answering node, reply).
pub(crate) async fn call_entity<C: Serialize, R: serde::de::DeserializeOwned>(
    client: &ClusterClient,
    kind: &str,
    id: &str,
    cmd: &C,
    request_id: &str,
    fault: Option<Fault>,
    access: Access,
) -> Result<(String, R), ApiError> {
    call(client, kind, id, cmd, request_id, fault, access)
        .await
        .map(|(node, reply, _)| (node, reply))
}

/// [`call_entity`], also saying whether the reply was the one kept for the idempotency key.
pub(crate) async fn call<C: Serialize, R: serde::de::DeserializeOwned>(
    client: &ClusterClient,
    kind: &str,
    id: &str,
    cmd: &C,
    request_id: &str,
    fault: Option<Fault>,
    access: Access,
) -> Result<(String, R, bool), ApiError> {
    let a = client
        .send(kind, id, encode_payload(cmd), request_id, fault, access)
        .await?;
    let reply = decode_payload::<R>(&a.reply).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{kind} reply does not decode: {e}"),
        )
    })?;
    Ok((a.node, reply, a.replayed))
}

/// A call made for the client's request `rid`: a replayed reply marks the whole answer.
pub(crate) async fn call_for<C: Serialize, R: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    cmd: &C,
    rid: &Rq,
    fault: Option<Fault>,
    access: Access,
) -> Result<(String, R), ApiError> {
    let (node, reply, replayed) = call(&ctx.client, kind, id, cmd, &rid.id, fault, access).await?;
    if replayed {
        rid.replayed.store(true, Ordering::Release);
    }
    Ok((node, reply))
}

pub(crate) async fn send_customer(
    ctx: &Ctx,
    id: &str,
    cmd: CustomerCommand,
    rid: &Rq,
    fault: Option<Fault>,
) -> Result<(String, CustomerReply), ApiError> {
    let access = Access::of(
        cmd.is_read() && fault.is_none(),
        rid.idempotency_key.clone(),
    );
    call_for(ctx, "customer", id, &cmd, rid, fault, access).await
}

pub(crate) async fn send_device(
    ctx: &Ctx,
    id: &str,
    cmd: DeviceCommand,
    rid: &Rq,
) -> Result<(String, DeviceReply), ApiError> {
    let access = Access::of(cmd.is_read(), rid.idempotency_key.clone());
    call_for(ctx, "device", id, &cmd, rid, None, access).await
}

/// A success without a body.
pub(crate) fn empty(status: StatusCode, node: &str) -> Outcome {
    Ok(Ok_ {
        status,
        body: String::new(),
        node: node.to_string(),
        location: None,
    })
}

pub(crate) fn with_node(e: DomainError, node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::from(e)
    }
}

pub(crate) use crate::error::unexpected_answer;

/// A query parameter as an integer in `range`, `default` when absent.
/// Refuses the first (by name) query parameter not in `accepted`, saying which are accepted.
pub(crate) fn only_query(
    query: &HashMap<String, String>,
    accepted: &[&str],
) -> Result<(), ApiError> {
    match query
        .keys()
        .filter(|k| !accepted.contains(&k.as_str()))
        .min()
    {
        None => Ok(()),
        Some(k) => {
            let names: Vec<String> = accepted.iter().map(|a| format!("`{a}`")).collect();
            Err(ApiError::field(
                k,
                format!("unknown query parameter (accepted: {})", names.join(", ")),
            ))
        }
    }
}

pub(crate) fn query_u64(
    query: &HashMap<String, String>,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                ApiError::field(
                    name,
                    format!(
                        "\"{}\" is not an integer in {}..={}",
                        v.chars().take(40).collect::<String>(),
                        range.start(),
                        range.end()
                    ),
                )
            }),
    }
}
