//! Log sequence numbers: the shard-map epoch a write was made in, in the high bits, and a counter
//! below it, so every lsn of a newer epoch sorts after every lsn of an older one.

/// Bits of an lsn below the epoch.
const COUNTER_BITS: u32 = 40;

/// The first lsn of `epoch`.
pub fn epoch_base(epoch: u64) -> u64 {
    epoch << COUNTER_BITS
}

/// The epoch an lsn was written in.
pub fn epoch_of(lsn: u64) -> u64 {
    lsn >> COUNTER_BITS
}
