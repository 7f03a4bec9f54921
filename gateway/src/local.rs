//! Answers the gateway gives itself, from what it knows of the cluster: liveness, readiness,
//! the API description, the members and their shards, the shard map, where an entity lives.
//! No entity is called.

use warp::http::StatusCode;

use crate::api;
use crate::error::ApiError;
use crate::handler::{id_ok, ok, Ctx, Ok_, Outcome};

/// `GET /health`: the process is up.
pub(crate) fn health(ctx: &Ctx) -> Outcome {
    ok(
        StatusCode::OK,
        &ctx.cfg.gateway.name,
        &serde_json::json!({"status": "ok"}),
    )
}

/// `GET /v1/openapi.json`
pub(crate) fn openapi(ctx: &Ctx) -> Ok_ {
    local_json(ctx, &crate::openapi::document())
}

/// `GET /ready`: the gateway sees at least one node up.
pub(crate) fn ready(ctx: &Ctx) -> Outcome {
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

/// `GET /v1/cluster`
pub(crate) fn cluster(ctx: &Ctx) -> Ok_ {
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
                draining: map.is_draining(&status.name),
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

/// `GET /v1/cluster/shards`
pub(crate) fn shards(ctx: &Ctx) -> Ok_ {
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

/// `GET /v1/cluster/locate/{kind}/{id}`
pub(crate) fn locate(ctx: &Ctx, kind: &str, id: &str) -> Outcome {
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
