//! The public API: one warp filter hands every request to [`handle`], which resolves it in the
//! route table, admits it, calls the owning entity through the cluster client, and maps every
//! outcome to JSON. One place sets the headers, logs, and counts.
//!
//! ```text
//! route table ─▶ admission (503, 401, 429, 405/404, 403) ─▶ idempotency key (409, 422)
//!             ─▶ dispatch ─▶ handler ─▶ audit ─▶ mask ─▶ reply (headers) ─▶ log + count
//! ```
//!
//! - `admission`: whether the request may be served, step by step.
//! - `reply`: the HTTP answer and its headers.

mod admission;
mod reply;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_actors::{CustomerCommand, DeviceCommand};
use rand::RngExt;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::hyper::body::Bytes;

use crate::authz;
use crate::error::ApiError;
use crate::handler::{Ctx, Outcome, Rq};
use crate::route_table::{self, Handler, Permission, Resolved, Route};
use crate::{customers, devices, idempotency, iot, keys, local, metrics};

use admission::Admitted;
use reply::Reply;

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::rng().random::<u64>()))
}

/// The query string's parameters by name (`?a` is `a` = "").
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
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
    let mut rid = Rq {
        id: request_id(&headers),
        idempotency_key: None,
        principal: None,
        replayed: AtomicBool::new(false),
        rate: None,
    };
    let query = parse_query(&query);
    let resolved = route_table::resolve(method.as_str(), &path);
    let label = match &resolved {
        Resolved::Route(r, _) => r.path,
        _ => "other",
    };
    // The permit in `_admitted` is held until the answer is built.
    let (outcome, _admitted) =
        match admission::admit(&ctx, &method, &resolved, &headers, &mut rid).await {
            Err(e) => (Err(e), None),
            Ok(a) => (
                serve(&ctx, &a, &headers, &query, body, &mut rid).await,
                Some(a),
            ),
        };
    let allow = match &resolved {
        Resolved::MethodNotAllowed(methods) => Some(methods.join(", ")),
        _ => None,
    };
    let reply = Reply::new(outcome, &ctx.cfg.gateway.name);
    record(&rid, &method, &path, label, &reply, started.elapsed());
    reply.into_response(&rid, allow)
}

/// Serves an admitted request: binds its idempotency key, dispatches it, audits a change, and
/// masks personal data when the principal may not see it.
async fn serve(
    ctx: &Ctx,
    a: &Admitted<'_, '_>,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Result<Vec<u8>, ApiError>,
    rid: &mut Rq,
) -> Outcome {
    let out = match keyed(ctx, a.route, a.params, headers, &body, rid) {
        Err(e) => Err(e),
        Ok(in_flight) => {
            let out = dispatch(ctx, a.route, a.params, query, body, rid).await;
            if let (Some(guard), Ok(_)) = (in_flight, &out) {
                guard.succeeded();
            }
            out
        }
    };
    audit(a.route, a.params, rid, &out);
    match out {
        Ok(mut o) if a.mask => {
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&o.body) {
                authz::mask_json(&mut v);
                o.body = v.to_string();
            }
            Ok(o)
        }
        other => other,
    }
}

/// Counts the request and logs it, once, whatever its outcome.
fn record(rid: &Rq, method: &Method, path: &str, label: &str, reply: &Reply, elapsed: Duration) {
    let m = metrics::http();
    m.requests
        .with_label_values(&[label, method.as_str(), reply.status.as_str()])
        .inc();
    m.latency
        .with_label_values(&[label])
        .observe(elapsed.as_secs_f64());
    let principal = rid
        .principal
        .as_ref()
        .map(|p| p.name.as_str())
        .unwrap_or("-");
    tracing::info!(request_id = %rid.id, %method, %path, route = label, principal, status = reply.status.as_u16(), node = %reply.node, latency_us = elapsed.as_micros() as u64, "request");
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
        Permission::WriteData
            | Permission::EraseCustomer
            | Permission::ManageKeys
            | Permission::ManageCluster
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

/// The handler that serves `r`.
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
        Handler::Health => local::health(ctx),
        Handler::Ready => local::ready(ctx),
        Handler::OpenApi => Ok(local::openapi(ctx)),
        Handler::CreateCustomer => customers::create_customer(ctx, body, rid).await,
        Handler::GetCustomer => {
            customers::customer(ctx, id, CustomerCommand::Get, rid, StatusCode::OK).await
        }
        Handler::PatchCustomer => customers::patch_customer(ctx, id, body, rid).await,
        Handler::DeleteCustomer => crate::erasure::erase_customer(ctx, id, query, rid).await,
        Handler::AddInteraction => customers::add_interaction(ctx, id, body, rid).await,
        Handler::ListInteractions => customers::list_interactions(ctx, id, query, rid).await,
        Handler::InteractionsBatch => crate::recommendations::batch(ctx, body, rid).await,
        Handler::Recommendations => crate::recommendations::recommend(ctx, id, query, rid).await,
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
        Handler::Cluster => Ok(local::cluster(ctx)),
        Handler::Shards => Ok(local::shards(ctx)),
        Handler::RemoveNode => {
            crate::membership::remove_node(ctx, params.get("name").copied().unwrap_or(""), rid)
                .await
        }
        Handler::Locate => local::locate(ctx, params.get("kind").copied().unwrap_or(""), id),
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
