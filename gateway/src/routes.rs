//! The public API: one warp filter hands every request to [`handle`], which resolves it in the
//! route table, authenticates and authorizes it, calls the owning entity through the cluster
//! client, and maps every outcome to JSON. One place sets `x-request-id` and `x-keelson-node`,
//! logs, and counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use keelson_actors::{CustomerCommand, DeviceAnswer, DeviceCommand};
use rand::RngExt;
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use warp::hyper::body::Bytes;

use crate::api;
use crate::authz::{self, Decision};
use crate::error::ApiError;
use crate::handler::{id_ok, ok, send_device, Ctx, Ok_, Outcome, Rq};
use crate::identity::AuthFailure;
use crate::route_table::{self, Handler, Permission, Resolved, Route};
use crate::{customers, devices, idempotency, iot, keys, metrics};

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::rng().random::<u64>()))
}

/// Handles one request; never fails (every error becomes a JSON response).
///
/// ```text
/// route table ─▶ open route? ─no─▶ authenticate (401) ─▶ 404 / 405 ─▶ authorize (403)
///             ─▶ customer principal on a device? look the owner up (403) ─▶ handler ─▶ mask
/// ```
pub async fn handle(
    ctx: Arc<Ctx>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Result<Vec<u8>, ApiError>,
) -> Response<Bytes> {
    let started = Instant::now();
    let mut rid = Rq {
        id: request_id(&headers),
        idempotency_key: None,
        principal: None,
        replayed: AtomicBool::new(false),
        rate: None,
    };
    let query: HashMap<String, String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    let resolved = route_table::resolve(method.as_str(), &path);
    let label = match &resolved {
        Resolved::Route(r, _) => r.path,
        _ => "other",
    };
    let mut allow = None;
    let open = matches!(&resolved, Resolved::Route(r, _) if r.permission == Permission::Open);
    // Health checks are answered even at the limit; everything else needs a permit, at once.
    let permit = if open { None } else { Some(ctx.gate.admit()) };
    let admitted = match permit {
        Some(Err(e)) => Err(e),
        _ => admit(&ctx, &method, &resolved, &headers, &mut rid).await,
    };
    let outcome = match admitted {
        Err(e) => Err(e),
        Ok(mask) => {
            let Resolved::Route(r, params) = &resolved else {
                unreachable!("admit lets only resolved routes through")
            };
            let out = match keyed(&ctx, r, params, &headers, &body, &mut rid) {
                Err(e) => Err(e),
                Ok(in_flight) => {
                    let out = dispatch(&ctx, r, params, &query, body, &rid).await;
                    if let (Some(guard), Ok(_)) = (in_flight, &out) {
                        guard.succeeded();
                    }
                    out
                }
            };
            audit(r, params, &rid, &out);
            match out {
                Ok(mut o) if mask => {
                    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&o.body) {
                        authz::mask_json(&mut v);
                        o.body = v.to_string();
                    }
                    Ok(o)
                }
                other => other,
            }
        }
    };
    if let Resolved::MethodNotAllowed(methods) = &resolved {
        allow = Some(methods.join(", "));
    }
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
        .with_label_values(&[label, method.as_str(), status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[label])
        .observe(elapsed.as_secs_f64());
    let principal = rid
        .principal
        .as_ref()
        .map(|p| p.name.as_str())
        .unwrap_or("-");
    tracing::info!(request_id = %rid.id, %method, %path, route = label, principal, status = status.as_u16(), node = %node, latency_us = elapsed.as_micros() as u64, "request");
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
    if let Some(a) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        h.insert("allow", a);
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    if rid.replayed.load(Ordering::Acquire) {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(st) = rid.rate {
        // IETF RateLimit header fields (draft 7): the policy, then where this principal stands.
        let window = st.limit.burst.div_ceil(st.limit.per_second.max(1));
        if let Ok(v) = HeaderValue::from_str(&format!("{};w={window}", st.limit.burst)) {
            h.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!(
            "limit={}, remaining={}, reset={}",
            st.limit.burst, st.remaining, st.reset_secs
        )) {
            h.insert("ratelimit", v);
        }
    }
    resp
}

/// Authentication, then routing errors, then authorization. `Ok(mask)` lets the request through.
async fn admit(
    ctx: &Ctx,
    method: &Method,
    resolved: &Resolved<'_>,
    headers: &HeaderMap,
    rid: &mut Rq,
) -> Result<bool, ApiError> {
    if let Resolved::Route(r, _) = resolved {
        if r.permission == Permission::Open {
            return Ok(false);
        }
    }
    let principal = ctx.identities.authenticate(headers).map_err(|f| {
        metrics::http().auth_denied.with_label_values(&[f.reason()]).inc();
        let detail = match &f {
            AuthFailure::BadToken(why) => why.as_str(),
            _ => "",
        };
        tracing::warn!(request_id = %rid.id, reason = f.reason(), detail, "unauthenticated request refused");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer <API key or JWT>` with a valid credential",
        )
    })?;
    rid.principal = Some(principal.clone());
    match ctx.gate.count(principal.role.as_str(), &principal.name) {
        Some(Ok(standing)) => rid.rate = Some(standing),
        Some(Err((standing, e))) => {
            rid.rate = Some(standing);
            tracing::debug!(request_id = %rid.id, principal = %principal.name, "rate limited");
            return Err(e);
        }
        None => {}
    }
    let (route, params) = match resolved {
        Resolved::Route(r, p) => (*r, p),
        Resolved::MethodNotAllowed(allowed) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{method} is not allowed here; this path allows {}",
                    allowed.join(", ")
                ),
            ))
        }
        Resolved::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such endpoint; see GET /v1/openapi.json",
            ))
        }
    };
    let forbidden = |p: Permission| {
        metrics::http()
            .auth_denied
            .with_label_values(&["forbidden"])
            .inc();
        tracing::warn!(request_id = %rid.id, principal = %principal.name, role = principal.role.as_str(), route = route.path, method = route.method, permission = p.as_str(), "forbidden");
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the `{}` permission, which role `{}` does not hold here",
                p.as_str(),
                principal.role.as_str()
            ),
        )
    };
    match authz::decide(route, &principal, params.get("id").copied()) {
        Decision::Allow { mask } => Ok(mask),
        Decision::Deny(p) => Err(forbidden(p)),
        Decision::AllowIfOwnsDevice(device) => {
            // The answer must not say whether the device exists: anything but "yours" is 403.
            let owned = match send_device(ctx, &device, DeviceCommand::Get, rid).await {
                Ok((_, Ok(DeviceAnswer::Device(d)))) => {
                    Some(d.customer_id.as_str()) == principal.customer.as_deref()
                }
                Ok(_) => false,
                Err(e) if e.status.is_server_error() => return Err(e),
                Err(_) => false,
            };
            if owned {
                Ok(false)
            } else {
                Err(forbidden(route.permission))
            }
        }
    }
}

/// Binds the request's `Idempotency-Key` (on writes; reads ignore it) and marks it in flight.
fn keyed(
    ctx: &Ctx,
    r: &Route,
    params: &route_table::Params<'_>,
    headers: &HeaderMap,
    body: &Result<Vec<u8>, ApiError>,
    rid: &mut Rq,
) -> Result<Option<idempotency::InFlight>, ApiError> {
    let Some(key) = idempotency::parse(headers)? else {
        return Ok(None);
    };
    if r.method == "GET" {
        return Ok(None);
    }
    let principal = rid.principal.as_ref().map_or("-", |p| p.name.as_str());
    let mut named: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, *v)).collect();
    named.sort_unstable();
    let bound = idempotency::bind(
        principal,
        &key,
        r.method,
        r.path,
        &named,
        body.as_deref().unwrap_or_default(),
    );
    let guard = ctx.keys.begin(&bound).map_err(|refusal| refusal.error())?;
    rid.idempotency_key = Some(bound);
    Ok(Some(guard))
}

/// Every successful change of personal data or credentials is logged with who made it.
fn audit(route: &Route, params: &route_table::Params<'_>, rid: &Rq, out: &Outcome) {
    let changes = matches!(
        route.permission,
        Permission::WriteData | Permission::EraseCustomer | Permission::ManageKeys
    ) && route.method != "GET";
    if changes && out.is_ok() {
        let principal = rid
            .principal
            .as_ref()
            .map(|p| p.name.as_str())
            .unwrap_or("-");
        let target = params
            .get("id")
            .or(params.get("name"))
            .copied()
            .unwrap_or("-");
        tracing::info!(target: "keelson::audit", request_id = %rid.id, principal, method = route.method, route = route.path, entity = target, "changed");
    }
}

async fn dispatch(
    ctx: &Ctx,
    r: &Route,
    params: &route_table::Params<'_>,
    query: &HashMap<String, String>,
    body: Result<Vec<u8>, ApiError>,
    rid: &Rq,
) -> Outcome {
    let id = params.get("id").copied().unwrap_or("");
    match r.handler {
        Handler::Health => ok(
            StatusCode::OK,
            &ctx.cfg.gateway.name,
            &serde_json::json!({"status": "ok"}),
        ),
        Handler::Ready => ready(ctx),
        Handler::OpenApi => Ok(local_json(ctx, &crate::openapi::document())),
        Handler::CreateCustomer => customers::create_customer(ctx, body, rid).await,
        Handler::GetCustomer => {
            customers::customer(ctx, id, CustomerCommand::Get, rid, StatusCode::OK).await
        }
        Handler::PatchCustomer => customers::patch_customer(ctx, id, body, rid).await,
        Handler::DeleteCustomer => crate::erasure::erase_customer(ctx, id, query, rid).await,
        Handler::AddInteraction => customers::add_interaction(ctx, id, body, rid).await,
        Handler::ListInteractions => customers::list_interactions(ctx, id, query, rid).await,
        Handler::Tickets => iot::tickets(ctx, id, query, rid).await,
        Handler::CreateDevice => devices::create_device(ctx, body, rid).await,
        Handler::GetDevice => {
            devices::device(ctx, id, DeviceCommand::Get, rid, StatusCode::OK).await
        }
        Handler::PostTelemetry => devices::telemetry(ctx, id, body, rid).await,
        Handler::GetTelemetry => iot::telemetry(ctx, id, query, rid).await,
        Handler::GetTwin => iot::twin(ctx, id, rid).await,
        Handler::PatchDesired => iot::patch_desired(ctx, id, body, rid).await,
        Handler::PostCommand => iot::post_command(ctx, id, body, rid).await,
        Handler::GetCommands => iot::commands(ctx, id, query, rid).await,
        Handler::GetAlerts => iot::alerts(ctx, id, query, rid).await,
        Handler::DeviceCredentials => crate::device_credentials::issue(ctx, id, rid).await,
        Handler::MqttCredentials => crate::device_credentials::list(ctx, query, rid).await,
        Handler::Cluster => Ok(cluster(ctx)),
        Handler::Shards => Ok(shards(ctx)),
        Handler::Locate => locate(ctx, params.get("kind").copied().unwrap_or(""), id),
        Handler::CreateKey => keys::create(ctx, body, rid).await,
        Handler::ListKeys => keys::list(ctx, rid).await,
        Handler::RevokeKey => {
            keys::revoke(ctx, params.get("name").copied().unwrap_or(""), rid).await
        }
        Handler::Fault => {
            customers::fault(
                ctx,
                params.get("kind").copied().unwrap_or(""),
                id,
                body,
                rid,
            )
            .await
        }
    }
}

fn ready(ctx: &Ctx) -> Outcome {
    let view = ctx.client.view();
    let up = view.members.iter().filter(|m| m.state == "up").count();
    if up == 0 {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "this gateway sees no node up",
        ));
    }
    ok(
        StatusCode::OK,
        &ctx.cfg.gateway.name,
        &serde_json::json!({"status": "ready", "nodes_up": up}),
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
        gateway_limits: api::GatewayLimits {
            open_files: ctx.open_files,
            max_connections: ctx.cfg.limits.max_connections,
            max_in_flight: ctx.cfg.limits.max_in_flight,
        },
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
