//! What the consensus leader changes in the shard map, decided from the map and who is up.
//! Pure: the control plane feeds it and proposes what it returns, one command per shard at most.
//!
//! In order of urgency:
//! 1. a down primary is replaced by an up in-sync follower (none: the shard stays unavailable);
//! 2. a down follower or learner is dropped, so primaries stop waiting for it;
//! 3. a shard missing one of its preferred nodes (rendezvous order) gets it as a learner, or any
//!    node if it is under-replicated, at most `max_copies` copies running cluster-wide, so a
//!    returning node does not start a storm;
//! 4. a shard whose preferred primary is back in sync is handed back to it, at most
//!    `max_handoffs` per round;
//! 5. once the preferred nodes are all in place, a spare follower beyond the replication factor
//!    is dropped.
//!
//! A node not heard from yet (starting up) is neither given work nor given up on.

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

/// What the planner knows of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answering heartbeats.
    Up,
    /// Marked down by the failure detector.
    Down,
    /// Not heard from yet (starting): neither used nor given up on.
    Unknown,
}

/// The commands to propose now.
pub fn plan(
    map: &ShardMap,
    health: &dyn Fn(&str) -> Health,
    limits: PlanLimits,
) -> Vec<MapCommand> {
    let up = |n: &str| health(n) == Health::Up;
    let down = |n: &str| health(n) == Health::Down;
    let mut out = Vec::new();
    let mut copies = map.iter().map(|(_, p)| p.learners.len()).sum::<usize>();
    let mut handoffs = 0;
    for (shard, p) in map.iter() {
        let (s, epoch) = (shard.0, p.epoch);
        if down(&p.primary) {
            if let Some(to) = p.in_sync.iter().find(|n| up(n)) {
                out.push(MapCommand::Promote {
                    shard: s,
                    epoch,
                    to: to.clone(),
                });
            }
            continue;
        }
        if let Some(node) = p.in_sync.iter().chain(&p.learners).find(|n| down(n)) {
            out.push(MapCommand::Shrink {
                shard: s,
                epoch,
                node: node.clone(),
            });
            continue;
        }
        let preferred = map.preferred(shard);
        let holders: HashSet<&String> = p.replicas().collect();
        // A preferred node that is up gets a copy even past the replication factor; the extra
        // follower is dropped once the preferred ones are all in place.
        let missing = preferred.iter().find(|n| !holders.contains(n) && up(n));
        let spare = map.nodes().iter().find(|n| !holders.contains(n) && up(n));
        let learner = match missing {
            Some(n) => Some(n),
            None if holders.len() < map.replication_factor() => spare,
            None => None,
        };
        if let Some(node) = learner {
            if copies < limits.max_copies && p.learners.is_empty() {
                copies += 1;
                out.push(MapCommand::AddLearner {
                    shard: s,
                    epoch,
                    node: node.clone(),
                });
            }
            continue;
        }
        let best = &preferred[0];
        if *best != p.primary && p.in_sync.contains(best) {
            if up(best) && handoffs < limits.max_handoffs {
                handoffs += 1;
                out.push(MapCommand::Handoff {
                    shard: s,
                    epoch,
                    to: best.clone(),
                });
            }
            continue;
        }
        let placed = preferred
            .iter()
            .all(|n| *n == p.primary || p.in_sync.contains(n));
        if placed && p.learners.is_empty() && 1 + p.in_sync.len() > map.replication_factor() {
            if let Some(extra) = p.in_sync.iter().find(|n| !preferred.contains(n)) {
                out.push(MapCommand::Shrink {
                    shard: s,
                    epoch,
                    node: extra.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "planner_test.rs"]
mod tests;
