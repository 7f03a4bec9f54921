//! Where an entity lives: a fixed hash places `(kind, id)` on a shard, rendezvous hashing places a
//! shard on a node, and the [`ShardMap`] records that placement under an ownership epoch.
//!
//! The hash is FNV-1a (64 bit) with a splitmix64 finaliser: fixed forever, because it decides where
//! persisted data lives. Never replace it with std's randomly seeded hasher.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::balance;

mod members;

pub use members::NodeAddr;

/// Index of a shard, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u32);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable 64-bit hash of an entity address. The 0xff separator keeps `("ab","c")` and
/// `("a","bc")` apart (it never occurs in UTF-8).
pub fn entity_hash(kind: &str, id: &str) -> u64 {
    let h = fnv1a(FNV_OFFSET, kind.as_bytes());
    let h = fnv1a(h, &[0xff]);
    mix(fnv1a(h, id.as_bytes()))
}

/// The shard an entity belongs to.
pub fn shard_for(kind: &str, id: &str, shard_count: u32) -> ShardId {
    ShardId((entity_hash(kind, id) % u64::from(shard_count)) as u32)
}

/// Rendezvous (highest random weight) score of `node` for `shard`.
fn rendezvous_score(node: &str, shard: ShardId) -> u64 {
    let h = fnv1a(FNV_OFFSET, node.as_bytes());
    let h = fnv1a(h, &[0xff]);
    mix(fnv1a(h, &shard.0.to_le_bytes()))
}

/// The balancer's tie-break: the rendezvous score.
fn score(node: &str, shard: u32) -> u64 {
    rendezvous_score(node, ShardId(shard))
}

/// Index into `nodes` of the node that owns `shard` (ties broken by name, so it is total).
pub fn rendezvous_owner(shard: ShardId, nodes: &[String]) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            rendezvous_score(a, shard)
                .cmp(&rendezvous_score(b, shard))
                .then_with(|| b.cmp(a))
        })
        .map(|(i, _)| i)
}

/// Placement of one shard: its primary, the followers that hold every acknowledged write
/// (in sync), the followers still copying (learners), and the epoch that fences stale owners.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// Bumped on every change of this shard's placement.
    pub epoch: u64,
    /// The node that takes writes.
    pub primary: String,
    /// Followers holding every acknowledged write; only these can be promoted.
    pub in_sync: Vec<String>,
    /// Followers receiving new writes while they copy the shard.
    pub learners: Vec<String>,
}

impl Placement {
    /// Every node holding (or copying) this shard.
    pub fn replicas(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.primary)
            .chain(&self.in_sync)
            .chain(&self.learners)
    }

    /// True when `node` is the primary or an in-sync follower.
    pub fn serves(&self, node: &str) -> bool {
        self.primary == node || self.in_sync.iter().any(|n| n == node)
    }
}

/// A change to the shard map, committed through the consensus log. Persisted: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MapCommand {
    /// Promote an in-sync follower because the primary is down.
    Promote {
        /// Shard.
        shard: u32,
        /// Epoch the proposer saw.
        epoch: u64,
        /// The follower to promote.
        to: String,
    },
    /// Drop a follower or learner (it is down or fell behind).
    Shrink {
        /// Shard.
        shard: u32,
        /// Epoch the proposer saw.
        epoch: u64,
        /// The follower.
        node: String,
    },
    /// Start copying the shard to a node.
    AddLearner {
        /// Shard.
        shard: u32,
        /// Epoch the proposer saw.
        epoch: u64,
        /// The node.
        node: String,
    },
    /// A learner has caught up: it joins the in-sync set.
    Join {
        /// Shard.
        shard: u32,
        /// Epoch the proposer saw.
        epoch: u64,
        /// The node.
        node: String,
    },
    /// Hand the primary role to an in-sync follower (to balance the primaries, or to empty a
    /// draining node).
    Handoff {
        /// Shard.
        shard: u32,
        /// Epoch the proposer saw.
        epoch: u64,
        /// The in-sync follower to become primary.
        to: String,
    },
    /// A node joins the cluster (or, already a member, tells where it is now): from now on it
    /// may be given copies.
    AddNode {
        /// Its name.
        node: String,
        /// Where it listens.
        addr: NodeAddr,
    },
    /// A node is to leave: its copies are made elsewhere and its primaries handed over, and
    /// it is given nothing new.
    DrainNode {
        /// Its name.
        node: String,
        /// How many members were not draining when it was proposed ([`ShardMap::drain`]
        /// checked the replication factor against it); refused if that changed since.
        active: u32,
    },
    /// A drained node that holds nothing any more leaves the cluster.
    RemoveNode {
        /// Its name.
        node: String,
    },
}

impl MapCommand {
    /// The shard it changes (none for a change of the members).
    pub fn shard(&self) -> Option<u32> {
        match self {
            MapCommand::Promote { shard, .. }
            | MapCommand::Shrink { shard, .. }
            | MapCommand::AddLearner { shard, .. }
            | MapCommand::Join { shard, .. }
            | MapCommand::Handoff { shard, .. } => Some(*shard),
            MapCommand::AddNode { .. }
            | MapCommand::DrainNode { .. }
            | MapCommand::RemoveNode { .. } => None,
        }
    }
}

/// Why a map command was refused. Refusal is normal: two proposers raced and one lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MapError {
    /// No such shard.
    #[error("shard {0} does not exist")]
    NoShard(u32),
    /// The shard changed since the proposer looked.
    #[error("shard {shard} is at epoch {current}, the command was for epoch {proposed}")]
    StaleEpoch {
        /// Shard.
        shard: u32,
        /// Its epoch now.
        current: u64,
        /// The epoch in the command.
        proposed: u64,
    },
    /// The command does not fit the placement.
    #[error("shard {shard}: {reason}")]
    Refused {
        /// Shard.
        shard: u32,
        /// Why.
        reason: String,
    },
    /// The change of the members is not possible.
    #[error("{0}")]
    Members(String),
}

/// The placement of every shard, agreed through consensus. `version` is the consensus log index
/// of the last change applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardMap {
    version: u64,
    nodes: Vec<String>,
    replication_factor: usize,
    shards: Vec<Placement>,
    /// Where the nodes that joined listen (the seed nodes' addresses are in nodes.toml).
    /// Absent from maps stored before nodes could join.
    #[serde(default)]
    addrs: BTreeMap<String, NodeAddr>,
    /// Members on their way out: given nothing new, emptied, then removed.
    #[serde(default)]
    draining: BTreeSet<String>,
}

impl ShardMap {
    /// The placement for `nodes` at rest: each shard's `rf` highest rendezvous scores, then
    /// balanced (see [`crate::balance`]) so every node holds within one of its fair share of
    /// copies and primaries; every replica in sync (there is no data yet), epoch 1.
    pub fn initial(nodes: &[String], shard_count: u32, rf: usize) -> Self {
        assert!(!nodes.is_empty(), "a shard map needs at least one node");
        let rf = rf.clamp(1, nodes.len());
        let ranked = (0..shard_count).map(|s| {
            let ranked = preference(ShardId(s), nodes);
            balance::Holders {
                primary: Some(ranked[0].clone()),
                nodes: ranked[..rf].to_vec(),
            }
        });
        let mode = balance::Mode::Balance;
        let shards = balance::balance(ranked.collect(), nodes, &|_| true, rf, mode, &score)
            .into_iter()
            .map(|target| Placement {
                epoch: 1,
                primary: target[0].clone(),
                in_sync: target[1..].to_vec(),
                learners: Vec::new(),
            })
            .collect();
        Self {
            version: 0,
            nodes: nodes.to_vec(),
            replication_factor: rf,
            shards,
            addrs: BTreeMap::new(),
            draining: BTreeSet::new(),
        }
    }

    /// Where every shard should be, primary first, if only `eligible` may keep copies and only
    /// those `takes` accepts may be given new ones: the
    /// fewest moves from here to a placement that has every shard's copies and, in
    /// [`balance::Mode::Balance`], every node within one of its fair share (see
    /// [`crate::balance`]).
    pub fn targets(
        &self,
        eligible: &[String],
        takes: &dyn Fn(&str) -> bool,
        mode: balance::Mode,
    ) -> Vec<Vec<String>> {
        let current = self
            .shards
            .iter()
            .map(|p| balance::Holders {
                nodes: p.replicas().cloned().collect(),
                primary: Some(p.primary.clone()).filter(|n| eligible.contains(n)),
            })
            .collect();
        balance::balance(
            current,
            eligible,
            takes,
            self.replication_factor,
            mode,
            &score,
        )
    }

    /// Consensus log index of the last change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sets the version after a change was applied at log index `v`.
    pub fn set_version(&mut self, v: u64) {
        self.version = v;
    }

    /// Configured nodes.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Copies per shard.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// Placement of `shard`.
    pub fn placement(&self, shard: ShardId) -> &Placement {
        &self.shards[shard.0 as usize]
    }

    /// Name of the primary of `shard`.
    pub fn owner(&self, shard: ShardId) -> &str {
        &self.placement(shard).primary
    }

    /// Epoch of `shard`.
    pub fn epoch(&self, shard: ShardId) -> u64 {
        self.placement(shard).epoch
    }

    /// The shard and primary of an entity.
    pub fn locate(&self, kind: &str, id: &str) -> (ShardId, &str) {
        let shard = shard_for(kind, id, self.shard_count());
        (shard, self.owner(shard))
    }

    /// Every shard with its placement.
    pub fn iter(&self) -> impl Iterator<Item = (ShardId, &Placement)> {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, p)| (ShardId(i as u32), p))
    }

    /// Shards whose primary is `node`, ascending.
    pub fn shards_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = ShardId> + 'a {
        self.iter()
            .filter(move |(_, p)| p.primary == node)
            .map(|(s, _)| s)
    }

    /// Primary shard counts per node, in configuration order.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.nodes
            .iter()
            .map(|n| (n.clone(), self.shards_of(n).count()))
            .collect()
    }

    /// Adds a node to the map's members (tests of placement only).
    #[cfg(test)]
    pub(crate) fn add_node_for_test(&mut self, node: &str) {
        self.nodes.push(node.to_string());
    }

    /// Sets every shard's placement to `targets` (primary first, the rest in sync), bumping
    /// the epochs of those that changed (tests of placement only).
    #[cfg(test)]
    pub(crate) fn replace_placements(&mut self, targets: &[Vec<String>]) {
        for (p, t) in self.shards.iter_mut().zip(targets) {
            let next = Placement {
                epoch: p.epoch,
                primary: t[0].clone(),
                in_sync: t[1..].to_vec(),
                learners: Vec::new(),
            };
            if *p != next {
                *p = Placement {
                    epoch: p.epoch + 1,
                    ..next
                };
            }
        }
    }

    /// Applies a command, or refuses it leaving the map unchanged.
    pub fn apply(&mut self, cmd: &MapCommand) -> Result<(), MapError> {
        let (shard, proposed, target) = match cmd {
            MapCommand::Promote { shard, epoch, to } | MapCommand::Handoff { shard, epoch, to } => {
                (*shard, *epoch, to)
            }
            MapCommand::Shrink { shard, epoch, node }
            | MapCommand::AddLearner { shard, epoch, node }
            | MapCommand::Join { shard, epoch, node } => (*shard, *epoch, node),
            MapCommand::AddNode { .. }
            | MapCommand::DrainNode { .. }
            | MapCommand::RemoveNode { .. } => return self.apply_to_members(cmd),
        };
        let known = self.nodes.clone();
        let draining = self.draining.contains(target);
        let p = self
            .shards
            .get_mut(shard as usize)
            .ok_or(MapError::NoShard(shard))?;
        if proposed != p.epoch {
            return Err(MapError::StaleEpoch {
                shard,
                current: p.epoch,
                proposed,
            });
        }
        let refuse = |reason: String| Err(MapError::Refused { shard, reason });
        if !known.contains(target) {
            return refuse(format!("unknown node \"{target}\""));
        }
        if draining && !matches!(cmd, MapCommand::Shrink { .. } | MapCommand::Promote { .. }) {
            return refuse(format!("\"{target}\" is draining: it is given nothing new"));
        }
        match cmd {
            MapCommand::Promote { to, .. } | MapCommand::Handoff { to, .. } => {
                let Some(i) = p.in_sync.iter().position(|n| n == to) else {
                    return refuse(format!("\"{to}\" is not an in-sync follower"));
                };
                let old = std::mem::replace(&mut p.primary, p.in_sync.remove(i));
                if matches!(cmd, MapCommand::Handoff { .. }) {
                    // The old primary holds every write: it stays in sync as a follower.
                    p.in_sync.push(old);
                }
            }
            MapCommand::Shrink { node, .. } => {
                if let Some(i) = p.in_sync.iter().position(|n| n == node) {
                    p.in_sync.remove(i);
                } else if let Some(i) = p.learners.iter().position(|n| n == node) {
                    p.learners.remove(i);
                } else {
                    return refuse(format!("\"{node}\" is not a follower"));
                }
            }
            MapCommand::AddLearner { node, .. } => {
                if p.replicas().any(|n| n == node) {
                    return refuse(format!("\"{node}\" already holds the shard"));
                }
                p.learners.push(node.clone());
            }
            MapCommand::Join { node, .. } => {
                let Some(i) = p.learners.iter().position(|n| n == node) else {
                    return refuse(format!("\"{node}\" is not a learner"));
                };
                p.learners.remove(i);
                p.in_sync.push(node.clone());
            }
            MapCommand::AddNode { .. }
            | MapCommand::DrainNode { .. }
            | MapCommand::RemoveNode { .. } => return refuse("not a change of a shard".into()),
        }
        p.epoch += 1;
        Ok(())
    }
}

/// Every node ranked by rendezvous score for `shard`, best first.
fn preference(shard: ShardId, nodes: &[String]) -> Vec<String> {
    let mut ranked: Vec<&String> = nodes.iter().collect();
    ranked.sort_by(|a, b| {
        rendezvous_score(b, shard)
            .cmp(&rendezvous_score(a, shard))
            .then_with(|| a.cmp(b))
    });
    ranked.into_iter().cloned().collect()
}

#[cfg(test)]
#[path = "shard_map_test.rs"]
mod tests;
