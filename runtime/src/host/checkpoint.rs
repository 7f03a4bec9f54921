//! When an entity whose journal replays into its state ([`crate::Entity::REPLAYS`]) writes its
//! whole state again (a checkpoint) rather than only the records of a change.
//!
//! Between checkpoints a change costs one record; loading replays the records after the last
//! checkpoint. A checkpoint is due once the records since the last one outweigh the state they
//! change (twice its size, at least [`MIN_STATE_BYTES`]), or are [`MAX_RECORDS`] many: writing
//! then costs at most about 1.5 times the records' bytes, and loading replays at most that much.
//!
//! ```text
//! change ─▶ forced (a key to remember, a record too large, a failed write before)?  checkpoint
//!         └▶ records since + this one > 2 × max(state, MIN) or ≥ MAX_RECORDS?        checkpoint
//!         └▶ otherwise                                                               records only
//! ```

/// A state smaller than this counts as this large (a small state is not rewritten per change).
pub const MIN_STATE_BYTES: u64 = 64 * 1024;

/// Most records between two checkpoints (bounds the replay when loading).
pub const MAX_RECORDS: u64 = 1024;

/// What one change writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Only its records.
    Records,
    /// Its records, then the whole state.
    Checkpoint,
}

/// The checkpoint rule's memory for one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoints {
    /// The state's encoded size at the last checkpoint.
    state_bytes: u64,
    /// Records written since the last checkpoint, and their bytes.
    records: u64,
    record_bytes: u64,
    /// The next change must checkpoint.
    forced: bool,
}

impl Checkpoints {
    /// After loading a state of `state_bytes` and replaying `records` records of `record_bytes`
    /// on it.
    pub fn loaded(state_bytes: u64, records: u64, record_bytes: u64) -> Self {
        Self {
            state_bytes,
            records,
            record_bytes,
            forced: false,
        }
    }

    /// What a change appending `records` records of `bytes` in all writes; `forced` when it
    /// must checkpoint whatever the counts say.
    pub fn decide(&self, records: u64, bytes: u64, forced: bool) -> Write {
        let ceiling = 2 * self.state_bytes.max(MIN_STATE_BYTES);
        if forced
            || self.forced
            || records == 0
            || self.records + records >= MAX_RECORDS
            || self.record_bytes + bytes > ceiling
        {
            Write::Checkpoint
        } else {
            Write::Records
        }
    }

    /// After `write` of `records` records of `bytes` succeeded; `state_bytes` is the state's
    /// encoded size when it was a checkpoint.
    pub fn wrote(&mut self, write: Write, records: u64, bytes: u64, state_bytes: u64) {
        match write {
            Write::Checkpoint => *self = Self::loaded(state_bytes, 0, 0),
            Write::Records => {
                self.records += records;
                self.record_bytes += bytes;
            }
        }
    }

    /// After a write failed: what is stored may differ from what followers hold, so the next
    /// change writes the whole state.
    pub fn failed(&mut self) {
        self.forced = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_changes_to_a_large_state_write_records_until_they_outweigh_it() {
        let mut c = Checkpoints::loaded(1_000_000, 0, 0);
        let mut records = 0;
        while c.decide(1, 10_000, false) == Write::Records {
            c.wrote(Write::Records, 1, 10_000, 0);
            records += 1;
        }
        assert_eq!(records, 200, "2 MB of records on a 1 MB state");
        c.wrote(Write::Checkpoint, 1, 10_000, 1_100_000);
        assert_eq!(c, Checkpoints::loaded(1_100_000, 0, 0));
        assert_eq!(c.decide(1, 10_000, false), Write::Records);
    }

    #[test]
    fn a_small_state_counts_as_the_minimum() {
        let c = Checkpoints::loaded(100, 0, 0);
        assert_eq!(c.decide(1, 2 * MIN_STATE_BYTES, false), Write::Records);
        assert_eq!(
            c.decide(1, 2 * MIN_STATE_BYTES + 1, false),
            Write::Checkpoint
        );
    }

    #[test]
    fn many_tiny_records_still_checkpoint() {
        let mut c = Checkpoints::loaded(1_000_000, 0, 0);
        for _ in 0..MAX_RECORDS - 1 {
            assert_eq!(c.decide(1, 1, false), Write::Records);
            c.wrote(Write::Records, 1, 1, 0);
        }
        assert_eq!(c.decide(1, 1, false), Write::Checkpoint);
    }

    #[test]
    fn a_change_without_records_a_forced_one_and_one_after_a_failure_checkpoint() {
        let mut c = Checkpoints::loaded(1_000_000, 0, 0);
        assert_eq!(c.decide(0, 0, false), Write::Checkpoint);
        assert_eq!(c.decide(1, 1, true), Write::Checkpoint);
        assert_eq!(c.decide(1, 1, false), Write::Records);
        c.failed();
        assert_eq!(c.decide(1, 1, false), Write::Checkpoint);
        c.wrote(Write::Checkpoint, 1, 1, 1_000_000);
        assert_eq!(c.decide(1, 1, false), Write::Records);
    }

    #[test]
    fn records_replayed_at_load_count_towards_the_next_checkpoint() {
        let c = Checkpoints::loaded(100_000, MAX_RECORDS - 1, 10);
        assert_eq!(c.decide(1, 1, false), Write::Checkpoint);
        let c = Checkpoints::loaded(100_000, 1, 200_000);
        assert_eq!(c.decide(1, 1, false), Write::Checkpoint);
    }
}
