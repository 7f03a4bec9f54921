//! A node's load as it reports it to gateways in every heartbeat answer: requests in flight on
//! its shard host and the process's CPU use, sampled from `/proc/self/stat` four times a second.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::wire::LoadReport;

/// The live counters; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Load {
    inflight: Arc<AtomicU32>,
    cpu_permille: Arc<AtomicU32>,
}

/// Decrements the in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Load {
    /// Counts one request in flight until the guard is dropped.
    pub fn begin(&self) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.inflight.clone())
    }

    /// The current report.
    pub fn report(&self) -> LoadReport {
        LoadReport {
            inflight: self.inflight.load(Ordering::Acquire),
            cpu_permille: self.cpu_permille.load(Ordering::Acquire),
        }
    }

    /// Samples CPU use until the task is aborted.
    pub fn spawn_sampler(&self) -> tokio::task::JoinHandle<()> {
        let cpu = self.cpu_permille.clone();
        tokio::spawn(async move {
            let tick = clock_ticks();
            let mut last = (Instant::now(), cpu_ticks());
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let now = (Instant::now(), cpu_ticks());
                if let (Some(a), Some(b)) = (last.1, now.1) {
                    let used = (b.saturating_sub(a)) as f64 / tick;
                    let wall = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
                    cpu.store((used / wall * 1000.0) as u32, Ordering::Release);
                }
                last = now;
            }
        })
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_guards_count_up_and_down() {
        let l = Load::default();
        let a = l.begin();
        let b = l.begin();
        assert_eq!(l.report().inflight, 2);
        drop(a);
        assert_eq!(l.report().inflight, 1);
        drop(b);
        assert_eq!(l.report().inflight, 0);
    }

    #[test]
    fn cpu_ticks_are_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(cpu_ticks().is_some());
        }
    }
}
