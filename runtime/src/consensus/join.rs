//! A node that is not a seed asks to be a member: it proposes `AddNode` (its name and the
//! address it advertises) through any seed it can reach, until one commits it. A joined node
//! that restarts does the same, so a new address reaches the map. The consensus leader then
//! adds it to the openraft membership as a learner (`planning`), which sends it the log.
//!
//! ```text
//! start ─▶ every seed in turn: RaftRpc::Propose(AddNode) ─▶ committed? done
//!                 └─ not connected / no leader / refused ─▶ back off (100 ms → 2 s), again
//! ```

use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::Joining;
use crate::consensus::{propose_via, ProposeError};
use keelson_rules::shard_map::{MapCommand, MapError, NodeAddr};

/// Proposes the joining node until a seed commits it; returns the map version it joined at.
pub(super) fn spawn(
    joining: Joining,
    seeds: Vec<String>,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let me = &joining.member;
        let cmd = MapCommand::AddNode {
            node: me.name.clone(),
            addr: NodeAddr {
                host: joining.advertise_host.clone(),
                cluster_port: me.cluster_addr.port(),
                ops_port: me.ops_addr.port(),
            },
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempts = 0u32;
        loop {
            for seed in &seeds {
                match propose_via(seed, cmd.clone(), timeout).await {
                    Ok(version) => {
                        tracing::info!(node = %me.name, via = %seed, version, advertise = %joining.advertise_host, "joined the cluster");
                        return;
                    }
                    Err(ProposeError::Refused(MapError::Members(why))) => {
                        tracing::error!(node = %me.name, via = %seed, reason = %why, "the cluster refused this node");
                    }
                    Err(e) => tracing::debug!(via = %seed, error = %e, "join attempt failed"),
                }
            }
            attempts += 1;
            if attempts.is_multiple_of(20) {
                tracing::warn!(node = %me.name, attempts, seeds = ?seeds, "still trying to join: no seed node committed this node yet");
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    })
}
