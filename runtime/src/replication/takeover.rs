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

/// What this node last saw of a shard, and whom it waits to take over from.
#[derive(Debug)]
struct Seen {
    placement: Option<Placement>,
    waiting: Option<(String, u64)>,
}

/// Per-shard takeover state of one node.
#[derive(Debug)]
pub struct Takeovers {
    node: String,
    nodes: usize,
    lease: Duration,
    support: Support,
    shards: Vec<Mutex<Seen>>,
}

impl Takeovers {
    /// For `node` with primary lease `lease`, starting from the map it has applied; `quorum`
    /// nodes make a lease majority (the seeds).
    pub fn new(
        node: &str,
        map: &ShardMap,
        quorum: usize,
        lease: Duration,
        support: Support,
    ) -> Self {
        Self {
            node: node.to_string(),
            nodes: quorum,
            lease,
            support,
            shards: map
                .iter()
                .map(|(_, p)| {
                    Mutex::new(Seen {
                        placement: Some(p.clone()),
                        waiting: None,
                    })
                })
                .collect(),
        }
    }

    /// True while this node, primary of `shard` at `p` (map `version`), still waits to take
    /// over from the primary it was promoted over.
    pub fn waiting(&self, shard: ShardId, p: &Placement, version: u64) -> bool {
        let mut seen = self.shards[shard.0 as usize].lock().expect("takeover lock");
        if seen.placement.as_ref() != Some(p) {
            match seen
                .placement
                .as_ref()
                .and_then(|old| promoted_over(&self.node, old, p))
            {
                Some(old) => {
                    tracing::info!(shard = shard.0, old_primary = %old, "promoted: serving once the old primary's lease support has run out");
                    seen.waiting = Some((old.to_string(), version));
                }
                None if p.primary != self.node => seen.waiting = None,
                None => {}
            }
            seen.placement = Some(p.clone());
        }
        if let Some((old, at)) = &seen.waiting {
            let reports = self.support.reports(&self.node, old, *at);
            if !takeover_done(self.nodes, self.lease, &reports) {
                return true;
            }
            tracing::info!(shard = shard.0, old_primary = %old, "took over: the old primary can no longer hold a lease");
            seen.waiting = None;
        }
        false
    }
}
