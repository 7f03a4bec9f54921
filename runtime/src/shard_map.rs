//! Where an entity lives: a fixed hash places `(kind, id)` on a shard, rendezvous hashing places a
//! shard on a node, and the [`ShardMap`] records that placement under an ownership epoch.
//!
//! The hash is FNV-1a (64 bit) with a splitmix64 finaliser: fixed forever, because it decides where
//! persisted data lives. Never replace it with std's randomly seeded hasher.

use serde::{Deserialize, Serialize};

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

/// Who owns each shard, under which epoch. With one copy of the data the map is derived from the
/// configured node list; the epoch lets later, replicated maps fence stale owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    epoch: u64,
    nodes: Vec<String>,
    owners: Vec<u16>,
}

impl ShardMap {
    /// The map that rendezvous hashing gives for `nodes`, at `epoch`.
    pub fn rendezvous(epoch: u64, nodes: &[String], shard_count: u32) -> Self {
        assert!(!nodes.is_empty(), "a shard map needs at least one node");
        assert!(nodes.len() <= usize::from(u16::MAX), "too many nodes");
        let owners = (0..shard_count)
            .map(|s| rendezvous_owner(ShardId(s), nodes).expect("nodes is not empty") as u16)
            .collect();
        Self {
            epoch,
            nodes: nodes.to_vec(),
            owners,
        }
    }

    /// The ownership epoch of this map.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.owners.len() as u32
    }

    /// Name of the node owning `shard`.
    pub fn owner(&self, shard: ShardId) -> &str {
        &self.nodes[usize::from(self.owners[shard.0 as usize])]
    }

    /// The shard and owner of an entity.
    pub fn locate(&self, kind: &str, id: &str) -> (ShardId, &str) {
        let shard = shard_for(kind, id, self.shard_count());
        (shard, self.owner(shard))
    }

    /// Shards owned by `node`, ascending.
    pub fn shards_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = ShardId> + 'a {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, o)| self.nodes[usize::from(**o)] == node)
            .map(|(s, _)| ShardId(s as u32))
    }

    /// Shard counts per node, in configuration order.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut counts = vec![0usize; self.nodes.len()];
        for o in &self.owners {
            counts[usize::from(*o)] += 1;
        }
        self.nodes.iter().cloned().zip(counts).collect()
    }
}

#[cfg(test)]
#[path = "shard_map_test.rs"]
mod tests;
