//! The run's clock: from the moment it starts, the workload, the observer and the progress
//! ticker run side by side until `duration_s`; the fault schedule reads the time from here.
//!
//! ```text
//! Clock::start ─┬─ workload (Load::run) ──────────────┐
//!               ├─ observer (views, maps, CPU)         │ run_out: stop the workload
//!               └─ ticker: progress every 250 ms ──────┘          and the ticker
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{now_unix_ms, Progress, Target};
use crate::observer::{Observer, Sources};
use crate::workload::Load;

pub(super) struct Clock {
    /// When the workload started; every time in the report counts from here.
    pub(super) start: Instant,
    pub(super) started_unix_ms: u64,
    pub(super) load: Arc<Load>,
    pub(super) observer: Arc<Observer>,
    workload: JoinHandle<()>,
    progress: Arc<Progress>,
    ticking: Arc<AtomicBool>,
    ticker: JoinHandle<()>,
}

impl Clock {
    /// Starts the clock: the observer, the workload for `duration`, and the progress ticker.
    pub(super) fn start(
        target: &Target,
        load: Arc<Load>,
        progress: Progress,
        duration: Duration,
    ) -> Self {
        let start = Instant::now();
        let started_unix_ms = now_unix_ms();
        let observer = Observer::start(
            Sources {
                gateway: (target.gateway.clone(), target.api.clone()),
                nodes: target.nodes.clone(),
                data_dir: target.data_dir.clone(),
                heartbeat: target.heartbeat,
            },
            start,
        );
        let workload = tokio::spawn(load.clone().run(start, duration));
        let progress = Arc::new(progress);
        let ticking = Arc::new(AtomicBool::new(true));
        let ticker = {
            let (load, p, ticking) = (load.clone(), progress.clone(), ticking.clone());
            tokio::spawn(async move {
                while ticking.load(Ordering::Relaxed) {
                    let (begun, ok) = load.counts();
                    p(start.elapsed().as_secs(), begun, ok, None);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        Self {
            start,
            started_unix_ms,
            load,
            observer,
            workload,
            progress,
            ticking,
            ticker,
        }
    }

    /// Milliseconds since the start.
    pub(super) fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Reports an event with the current counts.
    pub(super) fn event(&self, what: String) {
        let (begun, ok) = self.load.counts();
        (self.progress)(self.start.elapsed().as_secs(), begun, ok, Some(what));
    }

    /// Waits for the end of the run, stops the workload and the ticker; returns the run's
    /// length in ms.
    pub(super) async fn run_out(&mut self, duration: Duration) -> u64 {
        tokio::time::sleep_until((self.start + duration).into()).await;
        self.load.stop();
        let _ = (&mut self.workload).await;
        self.ticking.store(false, Ordering::Relaxed);
        let _ = (&mut self.ticker).await;
        self.ms()
    }
}
