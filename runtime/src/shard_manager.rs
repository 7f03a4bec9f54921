//! What the consensus leader changes in the shard map, decided from the map and who is up.
//! Pure: the control plane feeds it and proposes what it returns, one command per shard at most.
//!
//! In order of urgency:
//! 1. a down primary is replaced by an up in-sync follower (none: the shard stays unavailable);
//! 2. a down follower or learner is dropped, so primaries stop waiting for it;
//! 3. an under-replicated shard gets a learner, preferred node first, at most `max_copies` copies
//!    running cluster-wide, so a returning node does not start a storm;
//! 4. a shard whose preferred primary is back in sync is handed back to it, at most
//!    `max_handoffs` per round.

use std::collections::HashSet;

use crate::shard_map::{MapCommand, ShardMap};

/// Limits on background movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Learners copying at once, cluster-wide.
    pub max_copies: usize,
    /// Primary handoffs per planning round.
    pub max_handoffs: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_copies: 8,
            max_handoffs: 4,
        }
    }
}

/// The commands to propose now.
pub fn plan(map: &ShardMap, up: &dyn Fn(&str) -> bool, limits: PlanLimits) -> Vec<MapCommand> {
    let mut out = Vec::new();
    let mut copies = map.iter().map(|(_, p)| p.learners.len()).sum::<usize>();
    let mut handoffs = 0;
    for (shard, p) in map.iter() {
        let (s, epoch) = (shard.0, p.epoch);
        if !up(&p.primary) {
            if let Some(to) = p.in_sync.iter().find(|n| up(n)) {
                out.push(MapCommand::Promote {
                    shard: s,
                    epoch,
                    to: to.clone(),
                });
            }
            continue;
        }
        if let Some(node) = p.in_sync.iter().chain(&p.learners).find(|n| !up(n)) {
            out.push(MapCommand::Shrink {
                shard: s,
                epoch,
                node: node.clone(),
            });
            continue;
        }
        let holders: HashSet<&String> = p.replicas().collect();
        if holders.len() < map.replication_factor() && copies < limits.max_copies {
            let preferred = map.preferred(shard);
            let candidate = preferred
                .iter()
                .chain(map.nodes())
                .find(|n| !holders.contains(n) && up(n));
            if let Some(node) = candidate {
                copies += 1;
                out.push(MapCommand::AddLearner {
                    shard: s,
                    epoch,
                    node: node.clone(),
                });
                continue;
            }
        }
        let best = &map.preferred(shard)[0];
        if *best != p.primary && p.in_sync.contains(best) && handoffs < limits.max_handoffs {
            handoffs += 1;
            out.push(MapCommand::Handoff {
                shard: s,
                epoch,
                to: best.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "shard_manager_test.rs"]
mod tests;
