//! `DELETE /v1/cluster/nodes/{name}`: an admin removes a node. The gateway checks what it can
//! see (a member; enough nodes left for the replication factor; the voting nodes left up a
//! majority) and asks a node that is up to propose the drain; the planner then copies the
//! node's shards elsewhere, hands its primaries over and removes it, and the node stops.

use warp::http::StatusCode;

use crate::error::ApiError;
use crate::handler::{ok, Ctx, Outcome, Rq};
use keelson_runtime::{MapError, ProposeError};

/// The answer: the node is draining.
#[derive(Debug, serde::Serialize)]
struct Removal<'a> {
    node: &'a str,
    state: &'static str,
    /// Copies it holds now (primaries included), to be moved elsewhere.
    copies: usize,
    map_version: u64,
}

/// Starts removing node `name`.
pub(crate) async fn remove_node(ctx: &Ctx, name: &str, rid: &Rq) -> Outcome {
    if !keelson_runtime::config::valid_name(name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("field `name`: {name:?} is not a node name (lower-case letters, digits and '-', 1 to 32, starting with a letter)"),
        ));
    }
    let map = ctx.client.map();
    if !map.nodes().iter().any(|n| n == name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no node named \"{name}\" in the cluster"),
        ));
    }
    let view = ctx.client.view();
    let up = |n: &str| view.state_of(n) == Some("up");
    let cmd = map
        .removal(name, &ctx.cfg.node_names(), &up)
        .map_err(refused)?;
    let copies = map
        .iter()
        .filter(|(_, p)| p.replicas().any(|n| n == name))
        .count();
    let mut last = String::from("no node is up");
    for node in map.nodes().iter().filter(|n| up(n)) {
        match keelson_runtime::request_drain(node, cmd.clone(), ctx.cfg.request_timeout).await {
            Ok(version) => {
                tracing::info!(target: "keelson::audit", request_id = %rid.id, node = name, version, "node removal started");
                let body = Removal {
                    node: name,
                    state: "draining",
                    copies,
                    map_version: version,
                };
                return ok(StatusCode::ACCEPTED, &ctx.cfg.gateway.name, &body);
            }
            Err(ProposeError::Refused(e)) => return Err(refused(e)),
            Err(ProposeError::NoLeader(e)) => last = e,
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the removal could not be proposed: {last}"),
    )
    .retry(1))
}

/// 409 with the map's reason.
fn refused(e: MapError) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "removal_refused", e.to_string())
}
