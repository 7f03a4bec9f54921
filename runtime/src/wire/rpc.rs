//! The one way a node calls another node's shard host: find it in its process group, call with a
//! deadline, and say what went wrong with a typed error.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;

use crate::wire::{self, ShardHostRpc};

/// Why a call to a shard host got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No session to the node (it is down, or not yet connected).
    #[error("not connected to {0}")]
    NotConnected(String),
    /// The node did not answer within the deadline.
    #[error("{node} did not answer within {after:?}")]
    Timeout {
        /// The node.
        node: String,
        /// The deadline.
        after: Duration,
    },
    /// The session ended before the answer came.
    #[error("connection to {0} lost")]
    Lost(String),
}

impl From<RpcError> for String {
    fn from(e: RpcError) -> Self {
        e.to_string()
    }
}

/// Calls `node`'s shard host with `body` in the RPC variant `build`, waiting at most `timeout`.
pub async fn call_host(
    node: &str,
    build: fn(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) -> ShardHostRpc,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, RpcError> {
    let Some(cell) = ractor::pg::get_members(&wire::shard_host_group(node))
        .into_iter()
        .next()
    else {
        return Err(RpcError::NotConnected(node.to_string()));
    };
    let host: ActorRef<ShardHostRpc> = cell.into();
    match host.call(|r| build(body, r), Some(timeout)).await {
        Ok(CallResult::Success(b)) => Ok(b),
        Ok(CallResult::Timeout) => Err(RpcError::Timeout {
            node: node.to_string(),
            after: timeout,
        }),
        _ => Err(RpcError::Lost(node.to_string())),
    }
}

/// Asks `primary` to hand `shard` (at `epoch`) over to `to` (see `replication::hand_over`): the
/// planner's one call for a planned move.
pub async fn hand_over(primary: &str, shard: u32, epoch: u64, to: &str) -> Result<(), String> {
    let req = wire::encode(&wire::HandOver {
        shard,
        epoch,
        to: to.to_string(),
    });
    let bytes = call_host(primary, ShardHostRpc::HandOver, req, Duration::from_secs(3)).await?;
    wire::decode::<Result<(), String>>(&bytes).map_err(|e| e.to_string())?
}
