//! Whether a request may be served, in the order the checks are made. Each step answers with the
//! error the client sees and counts the refusal where it happens.
//!
//! ```text
//! open route (/health, /ready) ──────────────────────────────────────────────▶ through
//! in-flight permit (503) ─▶ authenticate (401) ─▶ rate (429) ─▶ 405 / 404 ─▶ authorize (403)
//!   ─▶ customer principal on a device? look the owner up (403) ─▶ through, masked or not
//! ```
//!
//! The body was read (under its cap and deadline: 413, 408) by the server before any of this.

use keelson_actors::{DeviceAnswer, DeviceCommand};
use tokio::sync::OwnedSemaphorePermit;
use warp::http::{HeaderMap, Method, StatusCode};

use crate::authz::{self, Decision, Principal};
use crate::error::ApiError;
use crate::handler::{send_device, Ctx, Rq};
use crate::identity::AuthFailure;
use crate::metrics;
use crate::route_table::{Params, Permission, Resolved, Route};

/// A request let through: its route, and what it holds while it is served.
pub(super) struct Admitted<'a, 'p> {
    /// The route it resolved to.
    pub(super) route: &'static Route,
    /// The route's path parameters.
    pub(super) params: &'a Params<'p>,
    /// Whether personal data in the answer must be masked for this principal.
    pub(super) mask: bool,
    /// The in-flight permit, held until the answer is built (`None` on open routes).
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

/// Every admission step in order; the first refusal is the answer.
pub(super) async fn admit<'a, 'p>(
    ctx: &Ctx,
    method: &Method,
    resolved: &'a Resolved<'p>,
    headers: &HeaderMap,
    rid: &mut Rq,
) -> Result<Admitted<'a, 'p>, ApiError> {
    if let Resolved::Route(route, params) = resolved {
        // Health checks are answered even at the limit, without credentials.
        if route.permission == Permission::Open {
            return Ok(Admitted {
                route,
                params,
                mask: false,
                _permit: None,
            });
        }
    }
    // Everything else needs a permit, at once.
    let permit = ctx.gate.admit()?;
    let principal = authenticate(ctx, headers, rid)?;
    count_rate(ctx, &principal, rid)?;
    let (route, params) = routed(method, resolved)?;
    let mask = authorize(ctx, route, params, &principal, rid).await?;
    Ok(Admitted {
        route,
        params,
        mask,
        _permit: Some(permit),
    })
}

/// Who sent the request (recorded in `rid`), or a 401.
fn authenticate(ctx: &Ctx, headers: &HeaderMap, rid: &mut Rq) -> Result<Principal, ApiError> {
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
    Ok(principal)
}

/// Counts the request against the principal's rate (its standing recorded in `rid`), or a 429.
fn count_rate(ctx: &Ctx, principal: &Principal, rid: &mut Rq) -> Result<(), ApiError> {
    match ctx.gate.count(principal.role.as_str(), &principal.name) {
        Some(Ok(standing)) => rid.rate = Some(standing),
        Some(Err((standing, e))) => {
            rid.rate = Some(standing);
            tracing::debug!(request_id = %rid.id, principal = %principal.name, "rate limited");
            return Err(e);
        }
        None => {}
    }
    Ok(())
}

/// The route, or a 405 naming the methods the path allows, or a 404.
fn routed<'a, 'p>(
    method: &Method,
    resolved: &'a Resolved<'p>,
) -> Result<(&'static Route, &'a Params<'p>), ApiError> {
    match resolved {
        Resolved::Route(r, p) => Ok((r, p)),
        Resolved::MethodNotAllowed(allowed) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not allowed here; this path allows {}",
                allowed.join(", ")
            ),
        )),
        Resolved::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such endpoint; see GET /v1/openapi.json",
        )),
    }
}

/// Whether `principal` may use `route` here: `Ok(mask)`, or a 403.
async fn authorize(
    ctx: &Ctx,
    route: &Route,
    params: &Params<'_>,
    principal: &Principal,
    rid: &Rq,
) -> Result<bool, ApiError> {
    match authz::decide(route, principal, params.get("id").copied()) {
        Decision::Allow { mask } => Ok(mask),
        Decision::Deny(p) => Err(forbidden(route, principal, p, rid)),
        Decision::AllowIfOwnsDevice(device) => {
            if owns_device(ctx, &device, principal, rid).await? {
                Ok(false)
            } else {
                Err(forbidden(route, principal, route.permission, rid))
            }
        }
    }
}

/// Whether `device` belongs to the customer `principal` is. The answer must not say whether the
/// device exists: anything but "yours" is `false`; only a server error is passed on.
async fn owns_device(
    ctx: &Ctx,
    device: &str,
    principal: &Principal,
    rid: &Rq,
) -> Result<bool, ApiError> {
    match send_device(ctx, device, DeviceCommand::Get, rid).await {
        Ok((_, Ok(DeviceAnswer::Device(d)))) => {
            Ok(Some(d.customer_id.as_str()) == principal.customer.as_deref())
        }
        Ok(_) => Ok(false),
        Err(e) if e.status.is_server_error() => Err(e),
        Err(_) => Ok(false),
    }
}

/// The 403 for a principal without permission `p` on `route`, counted and logged.
fn forbidden(route: &Route, principal: &Principal, p: Permission, rid: &Rq) -> ApiError {
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
}
