//! What the consensus leader changes in the shard map, decided from the map and who is up.
//! Pure: the control plane feeds it and proposes what it returns, one command per shard at most.
//!
//! In order of urgency:
//! 1. a down primary is replaced by an up in-sync follower (none: the shard stays unavailable);
//! 2. a down follower or learner is dropped, so primaries stop waiting for it;
//! 3. every other change moves the shard towards its target ([`ShardMap::targets`] over the
//!    nodes that are up: while one is not, only what redundancy needs; once all are, balanced;
//!    always the fewest moves from here): a target node lacking a copy gets one
//!    as a learner, at most `max_copies` copies running cluster-wide, so a joining or returning
//!    node does not start a storm; a copy in progress the target no longer wants is stopped;
//! 4. a shard whose target primary is in sync is handed to it, at most `max_handoffs` per round;
//! 5. once the target nodes are all in place, a follower outside the target is dropped;
//! 6. a draining node (given nothing, its copies moved by 3–5) that holds nothing is removed.
//!
//! A node not heard from yet (starting up) is neither given work nor given up on.

use std::collections::HashSet;

use crate::balance::Mode;
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
    // Copies stay on nodes neither down nor draining and go only to nodes that are up; shards
    // move for balance only while every node is up.
    let eligible: Vec<String> = map.active_nodes().filter(|n| !down(n)).cloned().collect();
    let mode = if map.nodes().iter().all(|n| up(n)) {
        Mode::Balance
    } else {
        Mode::Repair
    };
    let targets = map.targets(&eligible, &up, mode);
    for (shard, p) in map.iter() {
        let (s, epoch) = (shard.0, p.epoch);
        if down(&p.primary) {
            let staying = p.in_sync.iter().find(|n| up(n) && !map.is_draining(n));
            if let Some(to) = staying.or_else(|| p.in_sync.iter().find(|n| up(n))) {
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
        let target = &targets[shard.0 as usize];
        let holders: HashSet<&String> = p.replicas().collect();
        // A target node that is up and lacks a copy gets one; the copy it replaces is dropped
        // once the target is in place.
        if let Some(node) = target.iter().find(|n| !holders.contains(n) && up(n)) {
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
        // A copy in progress the target no longer wants is stopped.
        if let Some(node) = p.learners.iter().find(|n| !target.contains(n)) {
            out.push(MapCommand::Shrink {
                shard: s,
                epoch,
                node: node.clone(),
            });
            continue;
        }
        let Some(best) = target.first() else {
            continue;
        };
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
        let placed = target
            .iter()
            .all(|n| *n == p.primary || p.in_sync.contains(n));
        if placed && p.learners.is_empty() {
            if let Some(extra) = p.in_sync.iter().find(|n| !target.contains(n)) {
                out.push(MapCommand::Shrink {
                    shard: s,
                    epoch,
                    node: extra.clone(),
                });
            }
        }
    }
    // A draining node that holds nothing any more leaves.
    for node in map.nodes().iter().filter(|n| map.is_draining(n)) {
        if map.holds_nothing(node) {
            out.push(MapCommand::RemoveNode { node: node.clone() });
        }
    }
    out
}

#[cfg(test)]
#[path = "planner_test.rs"]
mod tests;
