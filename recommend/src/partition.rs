//! Which item-model partition owns an item's row: a fixed hash of the item id modulo
//! [`ITEM_PARTITIONS`]. Persisted in meaning: changing either moves every row.

use crate::cooccurrence::Delta;

/// How many partitions hold the item rows. Each is one entity, so the model's encoded size is
/// at most this many times `entities.max_state_bytes` (64 MiB with the default 1 MiB: about
/// ten million co-occurrence entries; MovieLens-100k's full data set makes two million).
pub const ITEM_PARTITIONS: u32 = 64;

/// The partition owning `item`'s row (FNV-1a 64 of its bytes, modulo [`ITEM_PARTITIONS`]).
pub fn partition_of(item: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in item.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(ITEM_PARTITIONS)) as u32
}

impl Delta {
    /// The part of this delta partition `p` needs: every pair when it owns the item's row, else
    /// only the pairs whose other item's row it owns (the norm change goes to every partition).
    pub fn for_partition(&self, p: u32) -> Delta {
        let own = partition_of(&self.item) == p;
        Delta {
            item: self.item.clone(),
            before: self.before,
            after: self.after,
            pairs: self
                .pairs
                .iter()
                .filter(|(i, _)| own || partition_of(i) == p)
                .cloned()
                .collect(),
        }
    }
}

impl Delta {
    /// Every partition's part of this delta at once, by partition number: what
    /// [`Delta::for_partition`] gives each, with each pair's partition worked out once (a
    /// customer of a thousand items makes deltas of a thousand pairs, for 64 partitions).
    pub fn split(&self) -> Vec<Delta> {
        let own = partition_of(&self.item) as usize;
        let mut parts: Vec<Delta> = (0..ITEM_PARTITIONS)
            .map(|_| Delta {
                item: self.item.clone(),
                before: self.before,
                after: self.after,
                pairs: Vec::new(),
            })
            .collect();
        parts[own].pairs = self.pairs.clone();
        for pair in &self.pairs {
            let p = partition_of(&pair.0) as usize;
            if p != own {
                parts[p].pairs.push(pair.clone());
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cooccurrence::Counts;
    use crate::signal::Profile;

    #[test]
    fn the_partition_of_an_item_never_changes() {
        // Fixed values: a change here moves every stored row.
        assert_eq!(partition_of("item-1"), partition_of("item-1"));
        assert_eq!(partition_of(""), (0xcbf2_9ce4_8422_2325u64 % 64) as u32);
        let spread: std::collections::HashSet<u32> =
            (0..1000).map(|i| partition_of(&i.to_string())).collect();
        assert_eq!(spread.len(), ITEM_PARTITIONS as usize);
    }

    #[test]
    fn partitions_fed_their_parts_hold_what_one_fed_everything_holds() {
        let mut p = Profile::default();
        let mut whole = Counts::default();
        let mut parts = vec![Counts::default(); ITEM_PARTITIONS as usize];
        for n in 0..40 {
            let d = Delta::record(&mut p, &format!("i{}", n % 17), 1 + n % 3).unwrap();
            whole.apply(&d, |_| true);
            for (k, part) in parts.iter_mut().enumerate() {
                let k = k as u32;
                part.apply(&d.for_partition(k), |i| partition_of(i) == k);
            }
        }
        for (k, part) in parts.iter().enumerate() {
            assert_eq!(part.norms, whole.norms);
            for (item, row) in &part.rows {
                assert_eq!(partition_of(item), k as u32);
                assert_eq!(row, &whole.rows[item]);
            }
        }
        let rows: usize = parts.iter().map(|p| p.rows.len()).sum();
        assert_eq!(rows, whole.rows.len());
    }

    #[test]
    fn a_delta_split_at_once_gives_each_partition_its_part() {
        let mut p = Profile::default();
        for n in 0..300 {
            let d = Delta::record(&mut p, &format!("item-{n}"), 1 + n % 4).unwrap();
            let split = d.split();
            assert_eq!(split.len(), ITEM_PARTITIONS as usize);
            for (k, part) in split.iter().enumerate() {
                assert_eq!(*part, d.for_partition(k as u32), "delta {n}, partition {k}");
            }
        }
    }
}
