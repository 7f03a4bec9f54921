//! `/v1/keys`: API keys made, listed and revoked through the cluster's keyring entity, and the
//! loop that keeps this gateway's view of the keyring fresh.

use std::sync::Arc;

use keelson_actors::{ApiKeyRecord, KeyringAnswer, KeyringCommand, KeyringReply, KEYRING_ID};
use keelson_runtime::{Access, ClusterClient};
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use crate::authz::Role;
use crate::body;
use crate::error::ApiError;
use crate::handler::{call_entity, ok, with_node, Ctx, Outcome, Rq};
use crate::identity::{self, Identities};

/// `POST /v1/keys`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    role: String,
}

/// A key as listed: never the secret, never the hash.
#[derive(Debug, Serialize)]
struct KeyView<'a> {
    name: &'a str,
    id: &'a str,
    role: &'a str,
    created_ms: u64,
    created_by: &'a str,
    revoked_ms: Option<u64>,
}

fn view(r: &ApiKeyRecord) -> KeyView<'_> {
    KeyView {
        name: &r.name,
        id: &r.id,
        role: &r.role,
        created_ms: r.created_ms,
        created_by: &r.created_by,
        revoked_ms: r.revoked_ms,
    }
}

async fn send(
    client: &ClusterClient,
    cmd: KeyringCommand,
    request_id: &str,
) -> Result<(String, KeyringReply), ApiError> {
    let access = Access::of(cmd.is_read(), None);
    call_entity(
        client, "keyring", KEYRING_ID, &cmd, request_id, None, access,
    )
    .await
}

fn unexpected(node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "keyring answered with an unexpected kind of reply",
        )
    }
}

/// Makes a key; its secret is in this answer and nowhere else.
pub async fn create(ctx: &Ctx, body: Result<Vec<u8>, ApiError>, rid: &Rq) -> Outcome {
    let req: CreateKey = body::json(&body?)?;
    let role = Role::parse(&req.role)
        .filter(|r| *r != Role::Customer)
        .ok_or_else(|| {
            ApiError::field(
                "role",
                format!(
                    "\"{}\" is not one of admin, operator, agent, viewer (customers sign in with a JWT)",
                    req.role
                ),
            )
        })?;
    let (id, key, hash) = identity::new_key();
    let rec = ApiKeyRecord {
        id,
        name: req.name,
        role: role.as_str().to_string(),
        hash,
        created_ms: keelson_runtime::now_ms(),
        created_by: rid
            .principal
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        revoked_ms: None,
    };
    let (node, reply) = send(&ctx.client, KeyringCommand::Add(rec), &rid.id).await?;
    match reply {
        Ok(KeyringAnswer::Added(r)) => {
            ctx.identities.add_now(&r);
            ok(
                StatusCode::CREATED,
                &node,
                &serde_json::json!({"name": r.name, "id": r.id, "role": r.role, "created_ms": r.created_ms, "key": key}),
            )
        }
        Ok(_) => Err(unexpected(&node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

/// Every key, without secrets.
pub async fn list(ctx: &Ctx, rid: &Rq) -> Outcome {
    let (node, reply) = send(&ctx.client, KeyringCommand::List, &rid.id).await?;
    match reply {
        Ok(KeyringAnswer::Keys(keys)) => ok(
            StatusCode::OK,
            &node,
            &serde_json::json!({"keys": keys.iter().map(view).collect::<Vec<_>>()}),
        ),
        Ok(_) => Err(unexpected(&node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

/// Revokes the live key called `name`; this gateway refuses it at once, the others within
/// [`identity::REFRESH`].
pub async fn revoke(ctx: &Ctx, name: &str, rid: &Rq) -> Outcome {
    crate::handler::id_ok("name", name)?;
    let (node, reply) = send(
        &ctx.client,
        KeyringCommand::Revoke {
            name: name.to_string(),
        },
        &rid.id,
    )
    .await?;
    match reply {
        Ok(KeyringAnswer::Revoked(r)) => {
            ctx.identities.revoke_now(&r);
            ok(StatusCode::OK, &node, &view(&r))
        }
        Ok(_) => Err(unexpected(&node)),
        Err(e) => Err(with_node(e, &node)),
    }
}

/// Rereads the keyring every [`identity::REFRESH`]; while the cluster cannot answer, the last
/// keyring read stays in force (and the bootstrap key always works, unless revoked).
pub fn spawn_refresh(
    client: ClusterClient,
    identities: Arc<Identities>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            match send(&client, KeyringCommand::List, "keyring-refresh").await {
                Ok((_, Ok(KeyringAnswer::Keys(keys)))) => {
                    identities.apply(&keys);
                    if failing {
                        tracing::info!(keys = keys.len(), "keyring readable again");
                    }
                    failing = false;
                }
                Ok((_, other)) => {
                    tracing::warn!(reply = ?other.err(), "keyring refresh: unexpected answer");
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e.message, "keyring refresh failed; keeping the last keys read");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(identity::REFRESH).await;
        }
    })
}
