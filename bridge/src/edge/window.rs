//! Per-device state of the edge: the duplicate window and the rate limit.

/// Seqs remembered per device, counting down from the highest seen.
const SEEN_WINDOW: u64 = 512;

/// Which of the `SEEN_WINDOW` seqs ending at the highest seen have been seen: 72 bytes per device
/// rather than a set of 512 numbers. A seq older than the window passes (the actor dedupes it).
#[derive(Debug, Default)]
pub(super) struct SeenWindow {
    /// Highest seq seen; 0 before the first (seqs start at 1).
    top: u64,
    /// Bit `i` is set if `top - i` was seen.
    bits: [u64; (SEEN_WINDOW / 64) as usize],
}

impl SeenWindow {
    pub(super) fn contains(&self, seq: u64) -> bool {
        if seq > self.top || self.top - seq >= SEEN_WINDOW {
            return false;
        }
        let i = self.top - seq;
        self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    pub(super) fn insert(&mut self, seq: u64) {
        if seq > self.top {
            self.shift(seq - self.top);
            self.top = seq;
        } else if self.top - seq >= SEEN_WINDOW {
            return;
        }
        let i = self.top - seq;
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Ages every remembered seq by `n` positions; those pushed past the window are forgotten.
    fn shift(&mut self, n: u64) {
        if n >= SEEN_WINDOW {
            self.bits = Default::default();
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        for w in (0..self.bits.len()).rev() {
            let from = w.checked_sub(words);
            let hi = from.map_or(0, |f| self.bits[f] << bits);
            let lo = match from.and_then(|f| f.checked_sub(1)) {
                Some(f) if bits > 0 => self.bits[f] >> (64 - bits),
                _ => 0,
            };
            self.bits[w] = hi | lo;
        }
    }
}

/// A token bucket refilled at `rate_per_s` up to `burst`.
#[derive(Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
    updated_ms: u64,
}

impl TokenBucket {
    pub(super) fn full(burst: f64, now_ms: u64) -> Self {
        TokenBucket {
            tokens: burst,
            updated_ms: now_ms,
        }
    }

    /// Takes a token if there is one. A clock that goes backwards refills nothing.
    pub(super) fn take(&mut self, now_ms: u64, rate_per_s: f64, burst: f64) -> bool {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms);
        self.tokens = (self.tokens + elapsed_ms as f64 * rate_per_s / 1000.0).min(burst);
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
