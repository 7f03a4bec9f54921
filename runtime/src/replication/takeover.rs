//! A node promoted over an old primary serves the shard only once the old primary can no longer
//! hold a lease (`keelson_rules::promotion::takeover_done`): the old primary may have been cut
//! off from the consensus leader only, still answered by the followers. Judged lazily on every
//! request, against the placement the request was checked with, so no request sees the new map
//! before the takeover is known.
//!
//! ```text
//! map shows me promoted over P ──▶ waiting(P, version) ──▶ support reports clean ──▶ serving
//! ```

use std::sync::Mutex;
use std::time::Duration;

use keelson_rules::promotion::{promoted_over, takeover_done};
use keelson_rules::{Placement, ShardId, ShardMap};

use crate::cluster::support::Support;
use crate::consensus::primary_changes::PrimaryChanges;

/// What this node last saw of a shard, and whom it waits to take over from.
#[derive(Debug)]
struct Seen {
    placement: Option<Placement>,
    waiting: Option<(String, u64)>,
    /// The map version of the last promotion this node finished taking over.
    took_over: Option<u64>,
}

/// Per-shard takeover state of one node.
#[derive(Debug)]
pub struct Takeovers {
    node: String,
    nodes: usize,
    lease: Duration,
    support: Support,
    changes: PrimaryChanges,
    shards: Vec<Mutex<Seen>>,
}

impl Takeovers {
    /// For `node` with primary lease `lease`, starting from the map it has applied; `quorum`
    /// nodes make a lease majority (the seeds). `changes` says whom the node was promoted over
    /// when it applied the promotion from the log.
    pub fn new(
        node: &str,
        map: &ShardMap,
        quorum: usize,
        lease: Duration,
        support: Support,
        changes: PrimaryChanges,
    ) -> Self {
        Self {
            node: node.to_string(),
            nodes: quorum,
            lease,
            support,
            changes,
            shards: map
                .iter()
                .map(|(_, p)| {
                    Mutex::new(Seen {
                        placement: Some(p.clone()),
                        waiting: None,
                        took_over: None,
                    })
                })
                .collect(),
        }
    }

    /// Whom this node, primary of `shard` at `p` (map `version`), was promoted over, and at
    /// which version: from the change applied from the log when it is the one that made this
    /// node primary, else (the map arrived in a snapshot) from the placement it saw before.
    fn promoted_over(
        &self,
        shard: ShardId,
        seen: &Option<Placement>,
        p: &Placement,
        version: u64,
    ) -> Option<(String, u64)> {
        match self.changes.last(shard) {
            Some(c) if c.to == self.node && c.version <= version => {
                c.promoted.then_some((c.from, c.version))
            }
            _ => seen
                .as_ref()
                .and_then(|old| promoted_over(&self.node, old, p))
                .map(|old| (old.to_string(), version)),
        }
    }

    /// True while this node, primary of `shard` at `p` (map `version`), still waits to take
    /// over from the primary it was promoted over.
    pub fn waiting(&self, shard: ShardId, p: &Placement, version: u64) -> bool {
        let mut guard = self.shards[shard.0 as usize].lock().expect("takeover lock");
        let seen = &mut *guard;
        if seen.placement.as_ref() != Some(p) {
            if p.primary != self.node {
                seen.waiting = None;
            } else if let Some((old, at)) = self.promoted_over(shard, &seen.placement, p, version) {
                if seen.took_over != Some(at) && seen.waiting.as_ref().map(|w| w.1) != Some(at) {
                    tracing::info!(shard = shard.0, old_primary = %old, version = at, "promoted: serving once the old primary's lease support has run out");
                    seen.waiting = Some((old, at));
                }
            }
            seen.placement = Some(p.clone());
        }
        if let Some((old, at)) = &seen.waiting {
            let reports = self.support.reports(&self.node, old, *at);
            if !takeover_done(self.nodes, self.lease, &reports) {
                self.support.want_fresh_reports();
                return true;
            }
            tracing::info!(shard = shard.0, old_primary = %old, "took over: the old primary can no longer hold a lease");
            seen.took_over = Some(*at);
            seen.waiting = None;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::primary_changes::PrimaryChange;

    fn placement(epoch: u64, primary: &str, in_sync: &[&str]) -> Placement {
        Placement {
            epoch,
            primary: primary.into(),
            in_sync: in_sync.iter().map(|s| s.to_string()).collect(),
            learners: vec![],
        }
    }

    /// n2 last saw shard 0 led by n9; n9 handed it to n1 (unseen by n2), then n2 was promoted
    /// over n1. n3 reports it still supports n1 and never supported n9.
    fn promoted_after_an_unseen_hand_over(record: bool) -> bool {
        let quorum: Vec<String> = ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect();
        let map = ShardMap::initial(&quorum, 1, 2);
        let support = Support::new(&quorum);
        support.reported("n3", 5, &[("n1".to_string(), vec![(4, 0)])]);
        let changes = PrimaryChanges::default();
        let t = Takeovers::new(
            "n2",
            &map,
            3,
            Duration::from_millis(200),
            support,
            changes.clone(),
        );
        assert!(!t.waiting(ShardId(0), &placement(1, "n9", &["n2"]), 1));
        if record {
            changes.record(
                ShardId(0),
                PrimaryChange {
                    version: 5,
                    from: "n1".into(),
                    to: "n2".into(),
                    promoted: true,
                },
            );
        }
        t.waiting(ShardId(0), &placement(3, "n2", &["n3"]), 5)
    }

    #[test]
    fn the_promotion_applied_from_the_log_names_the_old_primary_not_the_last_one_seen() {
        assert!(
            promoted_after_an_unseen_hand_over(true),
            "waits for n1, which may still hold a lease"
        );
        assert!(
            !promoted_after_an_unseen_hand_over(false),
            "without the log's record only the stale placement is known (n9, never supported)"
        );
    }

    #[test]
    fn a_hand_over_applied_from_the_log_needs_no_wait() {
        let quorum: Vec<String> = ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect();
        let map = ShardMap::initial(&quorum, 1, 2);
        let changes = PrimaryChanges::default();
        let t = Takeovers::new(
            "n2",
            &map,
            3,
            Duration::from_millis(200),
            Support::new(&quorum),
            changes.clone(),
        );
        assert!(!t.waiting(ShardId(0), &placement(1, "n1", &["n2"]), 1));
        changes.record(
            ShardId(0),
            PrimaryChange {
                version: 2,
                from: "n1".into(),
                to: "n2".into(),
                promoted: false,
            },
        );
        assert!(!t.waiting(ShardId(0), &placement(2, "n2", &["n1"]), 2));
    }
}
