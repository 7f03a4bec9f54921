//! Which entities are active on this node, in least-recently-used order: decides passivation when
//! an entity has been idle too long or the node-wide cap on active entities is reached. Pure: the
//! shard host touches it on every request and passivates what it returns.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Active entities with their last use.
#[derive(Debug)]
pub struct ActivationTable<K> {
    cap: usize,
    idle_timeout: Duration,
    next_seq: u64,
    entries: HashMap<K, (u64, Instant)>,
    by_age: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash> ActivationTable<K> {
    /// A table holding at most `cap` entities, passivating those idle for `idle_timeout`.
    pub fn new(cap: usize, idle_timeout: Duration) -> Self {
        Self {
            cap: cap.max(1),
            idle_timeout,
            next_seq: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// Marks `key` used at `now`; returns the least recently used entities to passivate so the
    /// table stays within its cap (never `key` itself).
    pub fn touch(&mut self, key: &K, now: Instant) -> Vec<K> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((old, _)) = self.entries.insert(key.clone(), (seq, now)) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(seq, key.clone());
        let mut evicted = Vec::new();
        while self.entries.len() > self.cap {
            let (_, oldest) = self.by_age.pop_first().expect("entries and by_age agree");
            self.entries.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    /// Forgets `key` (it stopped for another reason).
    pub fn remove(&mut self, key: &K) {
        if let Some((seq, _)) = self.entries.remove(key) {
            self.by_age.remove(&seq);
        }
    }

    /// Removes and returns every entity idle for longer than the idle timeout.
    pub fn take_idle(&mut self, now: Instant) -> Vec<K> {
        let mut idle = Vec::new();
        while let Some((_, key)) = self.by_age.first_key_value() {
            let (_, last) = self.entries[key];
            if now.saturating_duration_since(last) <= self.idle_timeout {
                break;
            }
            let (_, key) = self.by_age.pop_first().expect("checked above");
            self.entries.remove(&key);
            idle.push(key);
        }
        idle
    }

    /// Number of active entities.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entity is active.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[path = "activation_test.rs"]
mod tests;
