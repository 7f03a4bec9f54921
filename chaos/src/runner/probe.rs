//! Recovery probes: after a fault takes primaries away, one write per affected shard every
//! 20 ms until each shard has served one again. The first success per shard is its recovery.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::history::Outcome;
use crate::workload::Gateway;

/// Writes to each shard's probe key every 20 ms until each succeeds once (or `within` passes);
/// returns the first success per shard, ms since `start`, filled in as it happens.
pub(super) fn start(
    gateway: Gateway,
    keys: Vec<(u32, String)>,
    start: Instant,
    within: Duration,
) -> Arc<Mutex<BTreeMap<u32, u64>>> {
    let done: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    let out = done.clone();
    tokio::spawn(async move {
        let deadline = Instant::now() + within;
        let mut value = 1_000_000u64;
        while Instant::now() < deadline {
            let pending: Vec<&(u32, String)> = {
                let d = done.lock().expect("probe lock");
                keys.iter().filter(|(s, _)| !d.contains_key(s)).collect()
            };
            if pending.is_empty() {
                return;
            }
            value += 1;
            let next = Instant::now() + Duration::from_millis(20);
            let results = futures_util::future::join_all(pending.iter().map(|(shard, key)| {
                let g = &gateway;
                async move { (*shard, g.update(key, value).await) }
            }))
            .await;
            let t = start.elapsed().as_millis() as u64;
            {
                let mut d = done.lock().expect("probe lock");
                for (shard, outcome) in results {
                    if outcome == Outcome::Ok {
                        d.entry(shard).or_insert(t);
                    }
                }
            }
            tokio::time::sleep_until(next.into()).await;
        }
    });
    out
}
