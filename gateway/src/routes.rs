//! The public API: one warp filter hands every request to [`handle`], which routes by method and
//! path, reads the body under a cap, calls the owning entity through the cluster client, and maps
//! every outcome to JSON. One place sets `x-request-id` and `x-keelson-node`, logs, and counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use keelson_actors::{
    validate_id, CustomerAnswer, CustomerCommand, CustomerReply, DeviceAnswer, DeviceCommand,
    DeviceReply, DomainError,
};
use keelson_runtime::{
    decode_payload, encode_payload, Access, ClusterClient, ClusterConfig, Fault,
};
use rand::RngExt;
use serde::Serialize;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use warp::hyper::body::Bytes;

use crate::api;
use crate::body;
use crate::error::ApiError;
use crate::iot;
use crate::metrics;

/// What every handler needs.
pub struct Ctx {
    /// Entity client.
    pub client: ClusterClient,
    /// Configuration.
    pub cfg: ClusterConfig,
    /// Publishes desired state and commands to devices; `None` without `[mqtt]`.
    pub publisher: Option<keelson_bridge::Publisher>,
}

/// A successful answer.
pub(crate) struct Ok_ {
    status: StatusCode,
    body: String,
    node: String,
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

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::rng().random::<u64>()))
}

/// What identifies one client request.
pub struct Rq {
    /// `x-request-id`, given or generated.
    id: String,
    /// `Idempotency-Key`, if the client sent a usable one.
    idempotency_key: Option<String>,
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::rng().random::<u64>())
}

pub(crate) fn id_ok(field: &str, id: &str) -> Result<(), ApiError> {
    validate_id(field, id).map_err(ApiError::from)
}

/// Handles one request; never fails (every error becomes a JSON response).
pub async fn handle(
    ctx: Arc<Ctx>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Result<Vec<u8>, ApiError>,
) -> Response<Bytes> {
    let started = Instant::now();
    let rid = Rq {
        id: request_id(&headers),
        idempotency_key: idempotency_key(&headers),
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let query: HashMap<String, String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    let (route, outcome) = route(&ctx, &method, &segs, &query, body, &rid).await;
    let (status, text, node, location, retry_after) = match outcome {
        Ok(o) => (o.status, o.body, o.node, o.location, None),
        Err(e) => {
            let node = e
                .node
                .clone()
                .unwrap_or_else(|| ctx.cfg.gateway.name.clone());
            (e.status, e.body(), node, None, e.retry_after)
        }
    };
    let elapsed = started.elapsed();
    let m = metrics::http();
    m.requests
        .with_label_values(&[route, method.as_str(), status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    tracing::info!(request_id = %rid.id, %method, %path, route, status = status.as_u16(), node = %node, latency_us = elapsed.as_micros() as u64, "request");
    let mut resp = Response::new(Bytes::from(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&rid.id) {
        h.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&node) {
        h.insert("x-keelson-node", v);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert("location", l);
    }
    if let Some(s) = retry_after {
        h.insert("retry-after", HeaderValue::from(s));
    }
    resp
}

async fn route(
    ctx: &Ctx,
    method: &Method,
    segs: &[&str],
    query: &HashMap<String, String>,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> (&'static str, Outcome) {
    let m = method.clone();
    match segs {
        ["v1", "customers"] if m == Method::POST => {
            ("customers", create_customer(ctx, body, rid).await)
        }
        ["v1", "customers", id] if m == Method::GET => (
            "customer",
            customer(ctx, id, CustomerCommand::Get, rid, StatusCode::OK).await,
        ),
        ["v1", "customers", id] if m == Method::PATCH => {
            ("customer", patch_customer(ctx, id, body, rid).await)
        }
        ["v1", "customers", id] if m == Method::DELETE => (
            "customer",
            customer(
                ctx,
                id,
                CustomerCommand::Delete,
                rid,
                StatusCode::NO_CONTENT,
            )
            .await,
        ),
        ["v1", "customers", id, "interactions"] if m == Method::POST => {
            ("interactions", add_interaction(ctx, id, body, rid).await)
        }
        ["v1", "devices"] if m == Method::POST => ("devices", create_device(ctx, body, rid).await),
        ["v1", "devices", id] if m == Method::GET => (
            "device",
            device(ctx, id, DeviceCommand::Get, rid, StatusCode::OK).await,
        ),
        ["v1", "devices", id, "telemetry"] if m == Method::POST => {
            ("telemetry", telemetry(ctx, id, body, rid).await)
        }
        ["v1", "devices", id, "telemetry"] if m == Method::GET => (
            "telemetry_history",
            iot::telemetry(ctx, id, query, rid).await,
        ),
        ["v1", "devices", id, "twin"] if m == Method::GET => {
            ("twin", iot::twin(ctx, id, rid).await)
        }
        ["v1", "devices", id, "twin", "desired"] if m == Method::PATCH => {
            ("twin_desired", iot::patch_desired(ctx, id, body, rid).await)
        }
        ["v1", "devices", id, "commands"] if m == Method::POST => {
            ("commands", iot::post_command(ctx, id, body, rid).await)
        }
        ["v1", "devices", id, "commands"] if m == Method::GET => {
            ("commands", iot::commands(ctx, id, rid).await)
        }
        ["v1", "devices", id, "alerts"] if m == Method::GET => {
            ("alerts", iot::alerts(ctx, id, rid).await)
        }
        ["v1", "customers", id, "tickets"] if m == Method::GET => {
            ("tickets", iot::tickets(ctx, id, rid).await)
        }
        ["v1", "cluster"] if m == Method::GET => ("cluster", Ok(cluster(ctx))),
        ["v1", "cluster", "shards"] if m == Method::GET => ("shards", Ok(shards(ctx))),
        ["v1", "cluster", "locate", kind, id] if m == Method::GET => {
            ("locate", locate(ctx, kind, id))
        }
        ["v1", "debug", "fault", kind, id] if m == Method::POST => {
            ("fault", fault(ctx, kind, id, body, rid).await)
        }
        ["v1", "customers"]
        | ["v1", "customers", _]
        | ["v1", "customers", _, "interactions"]
        | ["v1", "devices"]
        | ["v1", "devices", _]
        | ["v1", "devices", _, "telemetry"]
        | ["v1", "devices", _, "twin"]
        | ["v1", "devices", _, "twin", "desired"]
        | ["v1", "devices", _, "commands"]
        | ["v1", "devices", _, "alerts"]
        | ["v1", "customers", _, "tickets"]
        | ["v1", "cluster"]
        | ["v1", "cluster", "shards"]
        | ["v1", "cluster", "locate", _, _]
        | ["v1", "debug", "fault", _, _] => (
            "other",
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here"),
            )),
        ),
        _ => (
            "other",
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint; see README for the API",
            )),
        ),
    }
}

pub(crate) async fn send_customer(
    ctx: &Ctx,
    id: &str,
    cmd: CustomerCommand,
    rid: &Rq,
    fault: Option<Fault>,
) -> Result<(String, CustomerReply), ApiError> {
    let access = if cmd.is_read() && fault.is_none() {
        Access::read()
    } else {
        Access::write(rid.idempotency_key.clone())
    };
    let a = ctx
        .client
        .send("customer", id, encode_payload(&cmd), &rid.id, fault, access)
        .await?;
    let reply = decode_payload::<CustomerReply>(&a.reply).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("customer reply does not decode: {e}"),
        )
    })?;
    Ok((a.node, reply))
}

pub(crate) async fn send_device(
    ctx: &Ctx,
    id: &str,
    cmd: DeviceCommand,
    rid: &Rq,
) -> Result<(String, DeviceReply), ApiError> {
    let access = if cmd.is_read() {
        Access::read()
    } else {
        Access::write(rid.idempotency_key.clone())
    };
    let a = ctx
        .client
        .send("device", id, encode_payload(&cmd), &rid.id, None, access)
        .await?;
    let reply = decode_payload::<DeviceReply>(&a.reply).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("device reply does not decode: {e}"),
        )
    })?;
    Ok((a.node, reply))
}

pub(crate) fn with_node(e: DomainError, node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::from(e)
    }
}

/// A 500 for an entity that answered a command with the wrong kind of answer.
fn unexpected_answer(kind: &str, node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{kind} answered with an unexpected kind of reply"),
        )
    }
}

async fn customer(
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

async fn create_customer(ctx: &Ctx, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
    let req: api::CreateCustomer = body::json(&body?)?;
    let id = match &req.id {
        Some(id) => {
            id_ok("id", id)?;
            id.clone()
        }
        None => new_id("c"),
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

async fn patch_customer(ctx: &Ctx, id: &str, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
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

async fn add_interaction(
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
        Ok(CustomerAnswer::Customer(c)) => {
            let last = c
                .interactions
                .last()
                .expect("an interaction was just added");
            ok(
                StatusCode::CREATED,
                &node,
                &api::InteractionAdded {
                    customer_id: &c.id,
                    interaction: last,
                    version: c.version,
                },
            )
        }
        Ok(CustomerAnswer::Deleted) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "customer vanished while adding an interaction",
        )),
        Ok(_) => Err(unexpected_answer("customer", &node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

async fn device(ctx: &Ctx, id: &str, cmd: DeviceCommand, rid: &Rq, status: StatusCode) -> Outcome {
    id_ok("id", id)?;
    cmd.validate()?;
    let (node, reply) = send_device(ctx, id, cmd, rid).await?;
    match reply {
        Ok(DeviceAnswer::Device(d)) => ok(status, &node, &d),
        Ok(_) => Err(unexpected_answer("device", &node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

async fn create_device(ctx: &Ctx, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
    let req: api::CreateDevice = body::json(&body?)?;
    let id = match &req.id {
        Some(id) => {
            id_ok("id", id)?;
            id.clone()
        }
        None => new_id("d"),
    };
    let cmd = DeviceCommand::Register(req.into_new());
    cmd.validate()?;
    let DeviceCommand::Register(new) = &cmd else {
        unreachable!("built above")
    };
    // A device belongs to an existing customer.
    match send_customer(ctx, &new.customer_id, CustomerCommand::Get, rid, None).await? {
        (_, Ok(_)) => {}
        (_, Err(DomainError::NotFound { .. })) => {
            return Err(ApiError::field(
                "customer_id",
                format!("customer \"{}\" does not exist", new.customer_id),
            ))
        }
        (node, Err(e)) => return Err(with_node(e, &node)),
    }
    let mut out = device(ctx, &id, cmd, rid, StatusCode::CREATED).await?;
    out.location = Some(format!("/v1/devices/{id}"));
    Ok(out)
}

async fn telemetry(ctx: &Ctx, id: &str, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
    id_ok("id", id)?;
    let t = body::json::<api::PostTelemetry>(&body?)?.into_telemetry();
    device(ctx, id, DeviceCommand::Telemetry(t), rid, StatusCode::OK).await
}

async fn fault(
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

fn cluster(ctx: &Ctx) -> Ok_ {
    let view = ctx.client.view();
    let map = ctx.client.map();
    let counts: std::collections::HashMap<String, usize> = map.counts().into_iter().collect();
    let info = api::ClusterInfo {
        cluster: ctx.cfg.name.clone(),
        gateway: ctx.cfg.gateway.name.clone(),
        map_version: map.version(),
        shards: map.shard_count(),
        replication_factor: map.replication_factor(),
        under_replicated: map
            .iter()
            .filter(|(_, p)| 1 + p.in_sync.len() < map.replication_factor())
            .count(),
        learners: map.iter().map(|(_, p)| p.learners.len()).sum(),
        members: view
            .members
            .into_iter()
            .map(|status| api::ClusterMemberInfo {
                shards_owned: counts.get(&status.name).copied().unwrap_or(0),
                shards_following: map
                    .iter()
                    .filter(|(_, p)| p.in_sync.contains(&status.name))
                    .count(),
                shards_learning: map
                    .iter()
                    .filter(|(_, p)| p.learners.contains(&status.name))
                    .count(),
                status,
            })
            .collect(),
    };
    local_json(ctx, &info)
}

/// A 200 the gateway answers itself, from what it knows of the cluster.
fn local_json(ctx: &Ctx, body: &impl serde::Serialize) -> Ok_ {
    Ok_ {
        status: StatusCode::OK,
        body: serde_json::to_string(body).expect("serialises"),
        node: ctx.cfg.gateway.name.clone(),
        location: None,
    }
}

fn shards(ctx: &Ctx) -> Ok_ {
    let map = ctx.client.map();
    let info = api::ShardsInfo {
        map_version: map.version(),
        shards: map
            .iter()
            .map(|(shard, p)| api::ShardInfo {
                shard: shard.0,
                placement: p,
            })
            .collect(),
    };
    local_json(ctx, &info)
}

fn locate(ctx: &Ctx, kind: &str, id: &str) -> Outcome {
    if kind != "customer" && kind != "device" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("field `kind`: \"{kind}\" is not one of customer, device"),
        ));
    }
    id_ok("id", id)?;
    let map = ctx.client.map();
    let (shard, owner) = map.locate(kind, id);
    let view = ctx.client.view();
    let state = view.state_of(owner).unwrap_or("unknown").to_string();
    ok(
        StatusCode::OK,
        &ctx.cfg.gateway.name,
        &api::Location {
            kind,
            id,
            shard: shard.0,
            owner,
            owner_state: &state,
            epoch: map.epoch(shard),
        },
    )
}
