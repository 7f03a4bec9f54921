//! The model as this gateway serves it, gathered from every partition into one read-only
//! [`Index`], so a recommendation costs one call (the customer's taste) and a lookup, not a
//! call to every partition. The partitions stay the model's truth (replicated, counted exactly
//! once); this is a copy, refreshed when they change. Up to `MAX_EASE_ITEMS` items the copy is
//! EASE, solved here from the partitions' counts; past that, their item-kNN neighbour lists.
//!
//! ```text
//! writers: an Apply counted something ─▶ written += 1
//! refresher (woken by a recommendation, or every REFRESH_EVERY): written = w ─▶ each
//!   partition, at its primary: Rows{unless: the version held} (EASE) or Neighbours{unless}
//!   (kNN) ─▶ changed? solve EASE over all rows (blocking thread) or take the lists ─▶ rebuild
//!   the Index ─▶ covers = w
//! recommend: covers >= written when it arrived? serve : wake, wait up to FRESH_WAIT
//!   (read-your-writes through this gateway), then serve what is held
//! a rebuild that took t ─▶ none again for REBUILD_PAUSE · t (at most a quarter of a core)
//! ```
//!
//! Writes do not wake the refresher: during a bulk ingestion every refresh would make every
//! partition compute its neighbour lists again, for nobody. The copy is brought up to date when
//! a recommendation needs it, and every `REFRESH_EVERY` while recommendations are asked for
//! (which also picks up what was written through another gateway); an idle copy is left alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use keelson_actors::{
    item_model_id, CountRow, ItemModelAnswer, ItemModelCommand, ItemModelReply, NeighbourList,
};
use keelson_recommend::ease::{self, MAX_EASE_ITEMS};
use keelson_recommend::{Index, SimParams, ITEM_PARTITIONS};
use keelson_runtime::{decode_payload, encode_payload, Access, ClusterClient};
use tokio::sync::{watch, Notify};

use crate::metrics::http;

/// How often partitions are asked whether they changed, when nothing here wrote to them.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How long a recommendation waits for the copy to hold what this gateway wrote before it (an
/// EASE solve of a few thousand items takes seconds).
const FRESH_WAIT: Duration = Duration::from_secs(10);

/// After a failed refresh, the next one is tried this much later.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Partitions asked at once.
const FETCH_CONCURRENCY: usize = 8;

/// Times a partition is asked again when its version moved between two pages.
const PAGE_RESTARTS: usize = 3;

/// After a rebuild that took `t`, the next one starts no sooner than `t * REBUILD_PAUSE`
/// later: an EASE solve takes seconds of one core, so under a steady mix of writes and
/// recommendations rebuilds take at most a quarter of a core (a recommendation after its own
/// write then waits up to about four solves, within `FRESH_WAIT` for a few thousand items).
const REBUILD_PAUSE: u32 = 3;

/// Which model the copy is: EASE while the catalogue allows a dense solve, else item-kNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ease,
    Knn,
}

/// One partition's part of the served model: its rows and items' norms (EASE) or its neighbour
/// lists (kNN), and its items' popularity.
#[derive(Debug, Clone, Default)]
struct Part {
    version: u64,
    lists: Vec<NeighbourList>,
    rows: Vec<CountRow>,
    norms: Vec<(String, u64)>,
    popularity: Vec<(String, u64)>,
}

/// What recommendations are read from.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Every partition's neighbour lists, inverted.
    pub(crate) index: Arc<Index>,
    /// The lowest partition version in it (each partition counts every update it applied).
    pub(crate) version: u64,
    /// The `written` count it holds everything of.
    covers: u64,
}

/// The served copy, the count of writes that should be in it, and the refresher's wake-up.
#[derive(Debug)]
pub struct ServedModel {
    served: RwLock<Arc<Served>>,
    /// Applies that counted something, through this gateway (from 1: a fresh gateway's empty
    /// copy covers nothing).
    written: AtomicU64,
    /// A recommendation was asked for since the last refresh (an idle copy is not refreshed).
    asked: AtomicBool,
    wake: Notify,
    refreshed: watch::Sender<u64>,
    params: SimParams,
}

impl ServedModel {
    /// An empty copy, refreshed by [`ServedModel::run_refresher`].
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            served: RwLock::new(Arc::new(Served::default())),
            written: AtomicU64::new(1),
            asked: AtomicBool::new(false),
            wake: Notify::new(),
            refreshed: watch::channel(0).0,
            params: SimParams::default(),
        })
    }

    /// Records that an Apply through this gateway counted something.
    pub(crate) fn wrote(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
    }

    /// The copy to answer from: one holding every write this gateway acknowledged before now,
    /// waiting up to [`FRESH_WAIT`] for it; past that, the freshest held (and counted stale).
    pub(crate) async fn current(&self) -> Arc<Served> {
        self.asked.store(true, Ordering::Release);
        let want = self.written.load(Ordering::Acquire);
        let held = self.held();
        if held.covers >= want {
            return held;
        }
        let mut seen = self.refreshed.subscribe();
        self.wake.notify_one();
        let fresh = tokio::time::timeout(FRESH_WAIT, seen.wait_for(|c| *c >= want)).await;
        if !matches!(fresh, Ok(Ok(_))) {
            http().model_stale.inc();
            tracing::warn!(
                wait_ms = FRESH_WAIT.as_millis() as u64,
                "recommendation served from a model copy missing recent writes"
            );
        }
        self.held()
    }

    fn held(&self) -> Arc<Served> {
        self.served.read().expect("served model lock").clone()
    }

    /// Keeps the copy fresh until the process stops: woken by a recommendation that needs
    /// newer writes, and every [`REFRESH_EVERY`].
    pub async fn run_refresher(self: Arc<Self>, client: ClusterClient) {
        let mut parts: Vec<Option<Arc<Part>>> = vec![None; ITEM_PARTITIONS as usize];
        let mut kind = Kind::Ease;
        let mut next_wait = REFRESH_EVERY;
        // The parts held changed since the index served was built (its build failed).
        let mut unbuilt = false;
        // No rebuild before this (see REBUILD_PAUSE).
        let mut not_before = Instant::now();
        loop {
            let woken = tokio::time::timeout(next_wait, self.wake.notified())
                .await
                .is_ok();
            let retry = next_wait == RETRY_AFTER;
            if !woken && !retry && !self.asked.swap(false, Ordering::AcqRel) {
                continue;
            }
            tokio::time::sleep_until(not_before.into()).await;
            let want = self.written.load(Ordering::Acquire);
            let started = Instant::now();
            let (changed, failed) = self.refresh(&client, &mut parts, kind).await;
            let result = match (failed, changed) {
                (0, 0) => "unchanged",
                (0, _) => "changed",
                _ => "failed",
            };
            http().model_refreshes.with_label_values(&[result]).inc();
            let (mut rebuilt, mut torn) = (false, false);
            if changed > 0 || unbuilt {
                let items: usize = parts.iter().flatten().map(|p| p.popularity.len()).sum();
                // Past the dense solve's size, the kNN lists; back to EASE only well below it.
                let switch = match kind {
                    Kind::Ease => (items > MAX_EASE_ITEMS).then_some(Kind::Knn),
                    Kind::Knn => (items < MAX_EASE_ITEMS * 9 / 10).then_some(Kind::Ease),
                };
                if let Some(to) = switch {
                    tracing::info!(items, model = ?to, "the served model changes kind");
                    kind = to;
                    parts = vec![None; ITEM_PARTITIONS as usize];
                    next_wait = RETRY_AFTER;
                    continue;
                }
                let building = Instant::now();
                let built = build(&parts, kind).await;
                not_before = Instant::now() + building.elapsed() * REBUILD_PAUSE;
                match built {
                    Ok(index) => {
                        self.install(index, &parts, failed, want, started);
                        rebuilt = true;
                    }
                    Err(e) => {
                        // The partitions were read while a delta had reached some of them and
                        // not others yet: read again shortly, and cover no new write meanwhile.
                        tracing::warn!(error = %e, "model copy not rebuilt; serving the one held and reading again");
                        torn = true;
                    }
                }
            }
            unbuilt = torn;
            let failed = failed + usize::from(torn);
            if !rebuilt && failed == 0 {
                let held = self.held();
                if held.covers < want {
                    *self.served.write().expect("served model lock") = Arc::new(Served {
                        index: held.index.clone(),
                        version: held.version,
                        covers: want,
                    });
                }
            }
            if failed == 0 {
                self.refreshed.send_replace(want);
                next_wait = REFRESH_EVERY;
            } else {
                tracing::debug!(failed, "model copy refresh incomplete; trying again");
                next_wait = RETRY_AFTER;
            }
        }
    }

    /// Serves `index`, built from `parts`: it covers `want` unless a partition was not read.
    fn install(
        &self,
        index: Index,
        parts: &[Option<Arc<Part>>],
        failed: usize,
        want: u64,
        started: Instant,
    ) {
        http().model_entries.set(index.entries() as i64);
        let version = parts
            .iter()
            .map(|p| p.as_ref().map_or(0, |p| p.version))
            .min()
            .unwrap_or(0);
        http().model_version.set(version as i64);
        tracing::debug!(
            version,
            items = index.len(),
            entries = index.entries(),
            ms = started.elapsed().as_millis() as u64,
            "model copy rebuilt"
        );
        let covers = if failed == 0 {
            want
        } else {
            self.held().covers
        };
        *self.served.write().expect("served model lock") = Arc::new(Served {
            index: Arc::new(index),
            version,
            covers,
        });
    }

    /// Asks every partition for what changed since the part held; (parts changed, failed).
    async fn refresh(
        &self,
        client: &ClusterClient,
        parts: &mut [Option<Arc<Part>>],
        kind: Kind,
    ) -> (usize, usize) {
        let held: Vec<Option<u64>> = parts
            .iter()
            .map(|p| p.as_ref().map(|p| p.version))
            .collect();
        let asks = held.into_iter().enumerate().map(|(k, unless)| async move {
            (k, fetch(client, k as u32, self.params, kind, unless).await)
        });
        let answers: Vec<(usize, Result<Option<Part>, String>)> = futures_util::stream::iter(asks)
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let (mut changed, mut failed) = (0, 0);
        for (k, a) in answers {
            match a {
                Ok(Some(p)) => {
                    parts[k] = Some(Arc::new(p));
                    changed += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(partition = k, error = %e, "model partition not read");
                    failed += 1;
                }
            }
        }
        (changed, failed)
    }
}

/// The index of every part: EASE solved over their rows (on a blocking thread: a few seconds
/// for thousands of items), or their lists.
async fn build(parts: &[Option<Arc<Part>>], kind: Kind) -> Result<Index, String> {
    let popularity: Vec<(String, u64)> = parts
        .iter()
        .flatten()
        .flat_map(|p| p.popularity.iter().cloned())
        .collect();
    let lists: Vec<NeighbourList> = match kind {
        Kind::Knn => parts
            .iter()
            .flatten()
            .flat_map(|p| p.lists.iter().cloned())
            .collect(),
        Kind::Ease => {
            // Shared, not copied: the solve reads the rows where the refresher keeps them.
            let parts: Vec<Arc<Part>> = parts.iter().flatten().cloned().collect();
            tokio::task::spawn_blocking(move || {
                ease::solve(
                    parts.iter().flat_map(|p| {
                        p.rows
                            .iter()
                            .map(|(i, r)| (i.as_str(), r.iter().map(|(j, c)| (j.as_str(), *c))))
                    }),
                    parts
                        .iter()
                        .flat_map(|p| p.norms.iter().map(|(i, n)| (i.as_str(), *n))),
                    ease::LAMBDA,
                    ease::NEIGHBOURS,
                )
            })
            .await
            .map_err(|e| format!("the EASE solve failed: {e}"))?
            .map_err(|e| e.to_string())?
        }
    };
    Ok(Index::build(lists, popularity))
}

/// Partition `k`'s part for `kind`, every page at one version; None when still at `unless`.
async fn fetch(
    client: &ClusterClient,
    k: u32,
    params: SimParams,
    kind: Kind,
    unless: Option<u64>,
) -> Result<Option<Part>, String> {
    'again: for _ in 0..PAGE_RESTARTS {
        let mut part = Part::default();
        let mut after: Option<String> = None;
        loop {
            let unless = if after.is_none() { unless } else { None };
            let cmd = match kind {
                Kind::Knn => ItemModelCommand::Neighbours {
                    params,
                    unless,
                    after: after.clone(),
                },
                Kind::Ease => ItemModelCommand::Rows {
                    unless,
                    after: after.clone(),
                },
            };
            let (version, more) = match ask(client, k, &cmd).await? {
                ItemModelAnswer::Unchanged { .. } => return Ok(None),
                ItemModelAnswer::Neighbours {
                    lists,
                    popularity,
                    more,
                    version,
                } if kind == Kind::Knn => {
                    after = lists.last().map(|(j, _)| j.clone());
                    part.lists.extend(lists);
                    part.popularity.extend(popularity);
                    (version, more)
                }
                ItemModelAnswer::Rows {
                    rows,
                    items,
                    more,
                    version,
                } if kind == Kind::Ease => {
                    after = rows.last().map(|(i, _)| i.clone());
                    part.rows.extend(rows);
                    for (i, norm, customers) in items {
                        part.norms.push((i.clone(), norm));
                        part.popularity.push((i, customers));
                    }
                    (version, more)
                }
                _ => {
                    return Err(format!(
                        "{} answered another kind of reply",
                        item_model_id(k)
                    ))
                }
            };
            if part.version != 0 && version != part.version {
                continue 'again;
            }
            part.version = version;
            if !more || after.is_none() {
                return Ok(Some(part));
            }
        }
    }
    Err(format!(
        "{} kept changing while read ({PAGE_RESTARTS} tries)",
        item_model_id(k)
    ))
}

async fn ask(
    client: &ClusterClient,
    k: u32,
    cmd: &ItemModelCommand,
) -> Result<ItemModelAnswer, String> {
    let answer = client
        .send(
            "item-model",
            &item_model_id(k),
            encode_payload(cmd),
            "model-refresh",
            None,
            Access::primary_read(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let reply: ItemModelReply = decode_payload(&answer.reply).map_err(|e| e.to_string())?;
    reply.map_err(|e| e.to_string())
}
