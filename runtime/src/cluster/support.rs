//! Lease support, given and reported. Answering a peer's heartbeat supports its primary lease,
//! unless this node has applied a newer shard map than the ping says the peer has
//! (`keelson_rules::lease::counts`): a node promoted while the peer was cut off may already
//! serve. Every answer carries, per node, when this node last supported it at each of the
//! node's recent map versions, so a node promoted (at map version v) over an old primary can
//! tell when that primary, while its map was older than v, can no longer hold a lease
//! (`keelson_rules::promotion::takeover_done`). Support given once the old primary has caught up
//! to v does not count: it then knows it was replaced.
//!
//! ```text
//! peer's Ping{map_version} ──▶ responder: counts? ──▶ given[peer][version] = now ──▶ Pong{support}
//! Pong{map_version, support} ──▶ membership ──▶ reports[peer] ──▶ replicator: may I take over?
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use keelson_rules::promotion::Report;

/// Map versions remembered per supported node; older support is bounded by the oldest kept.
const VERSIONS_KEPT: usize = 8;

/// Support given to one node: per map version it pinged with (ascending), when last. The
/// oldest entry also stands for every older version it replaced.
#[derive(Debug, Clone, Default)]
struct Given {
    at: VecDeque<(u64, Instant)>,
}

impl Given {
    fn record(&mut self, version: u64, now: Instant) {
        match self.at.iter_mut().find(|(v, _)| *v == version) {
            Some((_, t)) => *t = now,
            None => {
                let i = self.at.partition_point(|(v, _)| *v < version);
                self.at.insert(i, (version, now));
            }
        }
        if self.at.len() > VERSIONS_KEPT {
            // The oldest version is forgotten: its time folds into the next one, so support below
            // any version is never judged older than it was.
            let (_, dropped) = self.at.pop_front().expect("entries");
            if let Some((_, t)) = self.at.front_mut() {
                *t = (*t).max(dropped);
            }
        }
    }

    fn ages(&self, now: Instant) -> Vec<(u64, Duration)> {
        self.at
            .iter()
            .map(|(v, t)| (*v, now.saturating_duration_since(*t)))
            .collect()
    }
}

/// How long ago a node was last supported while its map was older than `version`, from
/// (version, age) entries in ascending version: at least as long ago as the oldest entry when
/// every entry kept is newer.
fn since_below(ages: &[(u64, Duration)], version: u64) -> Option<Duration> {
    let below = ages
        .iter()
        .filter(|(v, _)| *v < version)
        .map(|(_, a)| *a)
        .min();
    below.or(ages.first().map(|(_, a)| *a))
}

/// What one peer last said in a heartbeat answer.
#[derive(Debug, Clone)]
struct PeerReport {
    map_version: u64,
    /// Per node: (the node's map version, how long before `at` it was last supported at it).
    since: HashMap<String, Vec<(u64, Duration)>>,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// The nodes whose reports count (the lease quorum).
    quorum: Vec<String>,
    /// When this book was made: support given before it is assumed given then.
    started: Option<Instant>,
    given: HashMap<String, Given>,
    reports: HashMap<String, PeerReport>,
}

/// This node's support book; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Support {
    inner: Arc<Mutex<Inner>>,
    /// Wakes the membership to ping every peer now (a takeover waits for fresh reports).
    fresh: Arc<Notify>,
}

impl Support {
    /// A book for a node that may have supported any of the `quorum` nodes just before it
    /// started: it does not remember, so it assumes it did, now. Only reports of `quorum`
    /// nodes count in [`Support::reports`].
    pub fn new<'a>(quorum: impl IntoIterator<Item = &'a String>) -> Self {
        let quorum: Vec<String> = quorum.into_iter().cloned().collect();
        let s = Self {
            inner: Arc::new(Mutex::new(Inner {
                quorum: quorum.clone(),
                started: Some(Instant::now()),
                ..Inner::default()
            })),
            fresh: Arc::default(),
        };
        s.assume_given(&quorum);
        s
    }

    /// Assumes this node supported each of `nodes` when it started, unless it knows better (the
    /// members that joined, once the stored map names them).
    pub fn assume_given(&self, nodes: &[String]) {
        let mut inner = self.inner();
        let started = inner.started.unwrap_or_else(Instant::now);
        for n in nodes {
            inner.given.entry(n.clone()).or_insert_with(|| {
                let mut g = Given::default();
                g.record(0, started);
                g
            });
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("support lock")
    }

    /// Asks for reports newer than the last heartbeat round: the membership pings every peer
    /// at once (at most one ping in flight per peer), instead of at its next round.
    pub fn want_fresh_reports(&self) {
        self.fresh.notify_one();
    }

    /// Resolves when fresh reports were asked for since the last call.
    pub async fn fresh_reports_wanted(&self) {
        self.fresh.notified().await;
    }

    /// This node answered `peer`'s ping (made with `peer_version`) with support that counts.
    pub fn gave(&self, peer: &str, peer_version: u64) {
        self.inner()
            .given
            .entry(peer.to_string())
            .or_default()
            .record(peer_version, Instant::now());
    }

    /// The support this node gave, for its heartbeat answers: per node, (its map version, ms
    /// since last supported at it).
    pub fn given_ms(&self) -> Vec<(String, Vec<(u64, u64)>)> {
        let now = Instant::now();
        self.inner()
            .given
            .iter()
            .map(|(n, g)| {
                let at =
                    g.at.iter()
                        .map(|(v, t)| (*v, now.saturating_duration_since(*t).as_millis() as u64))
                        .collect();
                (n.clone(), at)
            })
            .collect()
    }

    /// `peer` answered a heartbeat with its map version and the support it gave.
    pub fn reported(&self, peer: &str, map_version: u64, support: &[(String, Vec<(u64, u64)>)]) {
        let report = PeerReport {
            map_version,
            since: support
                .iter()
                .map(|(n, at)| {
                    let at = at
                        .iter()
                        .map(|(v, ms)| (*v, Duration::from_millis(*ms)))
                        .collect();
                    (n.clone(), at)
                })
                .collect(),
            at: Instant::now(),
        };
        self.inner().reports.insert(peer.to_string(), report);
    }

    /// What this node (`me`) and every peer heard from (besides `old`) says of its support of
    /// `old`, as of now, given that the promotion came with map `version`.
    /// Only the quorum's reports count: this node's own only if it is in the quorum.
    pub fn reports(&self, me: &str, old: &str, version: u64) -> Vec<Report> {
        let inner = self.inner();
        let now = Instant::now();
        let in_quorum = |n: &str| inner.quorum.iter().any(|q| q == n);
        let mine = in_quorum(me).then(|| Report {
            applied: true,
            since_support: inner
                .given
                .get(old)
                .and_then(|g| since_below(&g.ages(now), version)),
        });
        let peers = inner
            .reports
            .iter()
            .filter(|(peer, _)| peer.as_str() != me && peer.as_str() != old && in_quorum(peer))
            .map(|(_, r)| {
                let waited = now.saturating_duration_since(r.at);
                let ages: Vec<(u64, Duration)> = r
                    .since
                    .get(old)
                    .map(|at| at.iter().map(|(v, d)| (*v, *d + waited)).collect())
                    .unwrap_or_default();
                Report {
                    applied: r.map_version >= version,
                    since_support: since_below(&ages, version),
                }
            });
        mine.into_iter().chain(peers).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_node_assumes_it_supported_everyone_just_now() {
        let nodes = ["n1".to_string(), "n2".to_string()];
        let s = Support::new(&nodes);
        let r = s.reports("n1", "n2", 5);
        assert_eq!(r.len(), 1);
        assert!(r[0].applied);
        assert!(r[0].since_support.unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn support_is_judged_below_a_version_and_bounded_by_the_oldest_kept() {
        let t0 = Instant::now();
        let mut g = Given::default();
        g.record(2, t0);
        g.record(5, t0 + Duration::from_millis(100));
        g.record(5, t0 + Duration::from_millis(300));
        let now = t0 + Duration::from_millis(1000);
        let ages = g.ages(now);
        assert_eq!(since_below(&ages, 5), Some(Duration::from_millis(1000)));
        assert_eq!(since_below(&ages, 6), Some(Duration::from_millis(700)));
        assert_eq!(
            since_below(&ages, 2),
            Some(Duration::from_millis(1000)),
            "bounded"
        );
        for v in 10..30 {
            g.record(v, now);
        }
        assert_eq!(g.at.len(), VERSIONS_KEPT);
    }

    #[test]
    fn peers_reports_age_and_say_whether_they_applied_the_promotion() {
        let nodes = ["n1".to_string(), "n2".to_string(), "n3".to_string()];
        let s = Support::new(&nodes);
        s.reported("n3", 7, &[("n2".to_string(), vec![(3, 400), (7, 10)])]);
        s.reported("n2", 9, &[]);
        let r = s.reports("n1", "n2", 7);
        assert_eq!(r.len(), 2, "the old primary's own report is left out");
        let n3 = r[1];
        assert!(n3.applied);
        assert!(n3.since_support.unwrap() >= Duration::from_millis(400));
        assert!(!s.reports("n1", "n2", 8)[1].applied);
    }
}
