//! What a device's telemetry leaves behind: which sequence numbers were seen (to drop
//! redeliveries), a window of the latest samples, and a per-minute downsampled history.
//!
//! ```text
//! Ingest{seq, at_ms, readings} ──SeqWindow::accept──▶ duplicate? stop
//!                                    │ new
//!                                    ├──▶ recent: last RECENT_SAMPLES samples, as received
//!                                    └──▶ history: minute bucket of at_ms (min/max/mean per reading)
//! ```

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How far below the highest sequence number seen a redelivery is still recognised; anything
/// further below is treated as a duplicate too.
pub const SEQ_WINDOW: u64 = 256;

/// Samples kept in the recent window.
pub const RECENT_SAMPLES: usize = 120;

/// Width of one history bucket, ms.
pub const BUCKET_MS: u64 = 60_000;

/// History buckets kept: 24 hours of minutes.
pub const HISTORY_BUCKETS: usize = 1_440;

const WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// The sequence numbers seen: the highest, and a bitmap of the [`SEQ_WINDOW`] below it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqWindow {
    /// Highest sequence number accepted.
    pub highest: Option<u64>,
    /// Bit `i` set: `highest - 1 - i` was accepted.
    below: [u64; WORDS],
}

impl SeqWindow {
    /// Whether `seq` was seen already, or is too far below the highest to tell.
    pub fn is_duplicate(&self, seq: u64) -> bool {
        let Some(highest) = self.highest else {
            return false;
        };
        if seq >= highest {
            return seq == highest;
        }
        let distance = highest - seq;
        if distance > SEQ_WINDOW {
            return true;
        }
        let bit = distance - 1;
        self.below[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// Records `seq`; returns false (and changes nothing) if it is a duplicate.
    pub fn accept(&mut self, seq: u64) -> bool {
        if self.is_duplicate(seq) {
            return false;
        }
        match self.highest {
            Some(highest) if seq < highest => {
                let bit = highest - seq - 1;
                self.below[(bit / 64) as usize] |= 1 << (bit % 64);
            }
            Some(highest) => {
                let d = seq - highest;
                self.shift(d);
                // The old highest is now `d` below the new one.
                if d <= SEQ_WINDOW {
                    let bit = d - 1;
                    self.below[(bit / 64) as usize] |= 1 << (bit % 64);
                }
                self.highest = Some(seq);
            }
            None => self.highest = Some(seq),
        }
        true
    }

    /// The sequence number after the highest, for messages that carry none.
    pub fn next(&self) -> u64 {
        self.highest.map_or(0, |h| h.saturating_add(1))
    }

    /// Moves every bit `d` places further from the highest.
    fn shift(&mut self, d: u64) {
        if d >= SEQ_WINDOW {
            self.below = [0; WORDS];
            return;
        }
        let words = (d / 64) as usize;
        let bits = (d % 64) as u32;
        let old = self.below;
        for i in 0..WORDS {
            let mut v = if i >= words {
                old[i - words] << bits
            } else {
                0
            };
            if bits > 0 && i > words {
                v |= old[i - words - 1] >> (64 - bits);
            }
            self.below[i] = v;
        }
    }
}

/// One accepted telemetry message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Sequence number.
    pub seq: u64,
    /// When it was taken, ms since the Unix epoch.
    pub at_ms: u64,
    /// Reading name to value, in canonical units.
    pub readings: BTreeMap<String, f64>,
}

/// One reading's summary within a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReadingStats {
    /// Values folded in.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl ReadingStats {
    fn of(v: f64) -> Self {
        Self {
            count: 1,
            min: v,
            max: v,
            mean: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.count = self.count.saturating_add(1);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.mean += (v - self.mean) / self.count as f64;
    }
}

/// One minute of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the minute, ms since the Unix epoch.
    pub start_ms: u64,
    /// Samples in it.
    pub count: u64,
    /// Per reading: min, max and mean.
    pub readings: BTreeMap<String, ReadingStats>,
}

/// Telemetry as returned by `GetTelemetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryView {
    /// Recent samples taken at or after `since_ms`, oldest first.
    pub recent: Vec<Sample>,
    /// History buckets from the minute of `since_ms` on, oldest first.
    pub history: Vec<Bucket>,
}

/// A device's telemetry record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetryLog {
    /// Sequence numbers seen.
    pub seqs: SeqWindow,
    /// The last [`RECENT_SAMPLES`] samples, in the order they arrived.
    pub recent: VecDeque<Sample>,
    /// Per-minute buckets, oldest first, at most [`HISTORY_BUCKETS`].
    pub history: VecDeque<Bucket>,
}

fn bucket_start(at_ms: u64) -> u64 {
    at_ms - at_ms % BUCKET_MS
}

impl TelemetryLog {
    /// Records an accepted sample in the window and its minute's bucket. A sample older than the
    /// oldest bucket kept, once the history is full, goes to the window only.
    pub fn record(&mut self, sample: Sample) {
        let start = bucket_start(sample.at_ms);
        let at = self.history.binary_search_by_key(&start, |b| b.start_ms);
        let bucket = match at {
            Ok(i) => Some(&mut self.history[i]),
            Err(0) if self.history.len() >= HISTORY_BUCKETS => None,
            Err(i) => {
                self.history.insert(
                    i,
                    Bucket {
                        start_ms: start,
                        count: 0,
                        readings: BTreeMap::new(),
                    },
                );
                let kept = if self.history.len() > HISTORY_BUCKETS {
                    self.history.pop_front();
                    i - 1
                } else {
                    i
                };
                Some(&mut self.history[kept])
            }
        };
        if let Some(b) = bucket {
            b.count = b.count.saturating_add(1);
            for (name, &v) in &sample.readings {
                b.readings
                    .entry(name.clone())
                    .and_modify(|s| s.add(v))
                    .or_insert_with(|| ReadingStats::of(v));
            }
        }
        self.recent.push_back(sample);
        while self.recent.len() > RECENT_SAMPLES {
            self.recent.pop_front();
        }
    }

    /// Samples taken at or after `since_ms` (oldest first) and buckets from its minute on.
    pub fn view(&self, since_ms: u64) -> TelemetryView {
        let mut recent: Vec<Sample> = self
            .recent
            .iter()
            .filter(|s| s.at_ms >= since_ms)
            .cloned()
            .collect();
        recent.sort_by_key(|s| (s.at_ms, s.seq));
        let from = bucket_start(since_ms);
        TelemetryView {
            recent,
            history: self
                .history
                .iter()
                .filter(|b| b.start_ms >= from)
                .cloned()
                .collect(),
        }
    }
}
