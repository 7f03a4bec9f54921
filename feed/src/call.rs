//! One command to an entity of the model (`taste`, `item-model`) and its decoded reply: what
//! every part of the feed sends.

use keelson_runtime::{decode_payload, encode_payload, Access, ClusterClient};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::FeedError;

/// Sends `cmd` to `kind`/`id`; the answering node and its reply.
pub(crate) async fn call<C: Serialize, R: DeserializeOwned>(
    client: &ClusterClient,
    kind: &'static str,
    id: &str,
    cmd: &C,
    request_id: &str,
    access: Access,
) -> Result<(String, R), FeedError> {
    let answer = client
        .send(kind, id, encode_payload(cmd), request_id, None, access)
        .await?;
    let reply = decode_payload(&answer.reply).map_err(|e| FeedError::decode(kind, e))?;
    Ok((answer.node, reply))
}
