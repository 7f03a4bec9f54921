//! The planner: while this node leads consensus, it turns who is up into map changes.
//!
//! ```text
//! tick (100 ms, or the moment a down node has been down for the promotion delay) / view / map /
//!   raft metrics change ─▶ observe (map, view, raft state; a down leader
//!   triggers an election) ─▶ leader only: plan (rules::plan, promotion health) ─▶ propose each
//!   (a Handoff asks the old primary to hand over itself) ─▶ count what was committed
//! ```

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::cluster::membership::ClusterView;
use crate::consensus::{self, node_id, MapWatch, Raft};
use keelson_rules::planner::{plan, PlanLimits};
use keelson_rules::promotion::{self, Seen};
use keelson_rules::shard_map::{MapCommand, ShardId, ShardMap};

/// How often the planner looks again when nothing it watches changed.
const PLAN_EVERY: Duration = Duration::from_millis(100);

/// What the planner saw on one round.
struct Observed {
    map: Arc<ShardMap>,
    view: ClusterView,
    leader: bool,
}

/// The planner's state between rounds.
struct Planner {
    me: String,
    /// The seed nodes of nodes.toml: voters from the start.
    seeds: Vec<String>,
    raft: Arc<Raft>,
    version: Arc<AtomicU64>,
    promotion_delay: Duration,
    /// The consensus leader this node already called an election against.
    elected_for: Option<u64>,
}

/// Runs the planner of node `me` until a watched channel closes.
pub(super) async fn planner_loop(
    me: String,
    seeds: Vec<String>,
    raft: Arc<Raft>,
    mut map: MapWatch,
    mut view: watch::Receiver<ClusterView>,
    version: Arc<AtomicU64>,
    promotion_delay: Duration,
) {
    let mut metrics = raft.metrics();
    let mut planner = Planner {
        me,
        seeds,
        raft,
        version,
        promotion_delay,
        elected_for: None,
    };
    let mut wake = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = view.changed() => if r.is_err() { return },
            r = map.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
        }
        wake = Instant::now() + PLAN_EVERY;
        let now = planner.observe(&map, &view, &metrics).await;
        if !now.leader {
            continue;
        }
        // A down primary is replaced the moment its promotion delay has passed, not a round later.
        if let Some(due) = promotion_due(&now.view, planner.promotion_delay) {
            wake = wake.min(Instant::now() + due);
        }
        planner.elected_for = None;
        planner.sync_raft_members(&now.map).await;
        planner.sync_voters(&now).await;
        let cmds = planner.plan(&now);
        let results = planner.propose(&now.map, cmds).await;
        count(&now, results);
    }
}

impl Planner {
    /// Reads the map, the view and the raft state; calls an election at once when the leader is
    /// down (a killed leader closes its connections: no need to wait out the election timeout).
    async fn observe(
        &mut self,
        map: &MapWatch,
        view: &watch::Receiver<ClusterView>,
        metrics: &watch::Receiver<RaftMetrics<u64, openraft::BasicNode>>,
    ) -> Observed {
        let current = map.borrow().clone();
        self.version.store(current.version(), Ordering::Release);
        let (state, leader, voter) = {
            let m = metrics.borrow();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == node_id(&self.me));
            (m.state, m.current_leader, voter)
        };
        crate::metrics::get().consensus_voter.set(i64::from(voter));
        let v = view.borrow().clone();
        if let Some(l) = leader.filter(|l| *l != node_id(&self.me)) {
            let name = current.nodes().iter().find(|n| node_id(n) == l).cloned();
            if let Some(name) = name {
                if v.state_of(&name) == Some("down") && self.elected_for != Some(l) {
                    self.elected_for = Some(l);
                    tracing::info!(leader = %name, "consensus leader is down; starting an election");
                    let _ = self.raft.trigger().elect().await;
                }
            }
        }
        crate::metrics::get()
            .consensus_leader
            .set(i64::from(state == ServerState::Leader));
        Observed {
            map: current,
            view: v,
            leader: state == ServerState::Leader,
        }
    }

    /// Keeps openraft's membership in step with the map's members: a node that joined is added
    /// as a learner (it is sent the log, so it learns the map); one removed from the map is
    /// removed from openraft too. The voters stay the seed nodes.
    async fn sync_raft_members(&self, map: &ShardMap) {
        let config = self.raft.metrics().borrow().membership_config.clone();
        let known: BTreeSet<u64> = config.membership().nodes().map(|(id, _)| *id).collect();
        let voters: BTreeSet<u64> = config.membership().voter_ids().collect();
        let wanted: Vec<(u64, &String)> = map.nodes().iter().map(|n| (node_id(n), n)).collect();
        let limit = Duration::from_secs(2);
        for (id, name) in wanted.iter().filter(|(id, _)| !known.contains(id)) {
            let node = openraft::BasicNode {
                addr: (*name).clone(),
            };
            match tokio::time::timeout(limit, self.raft.add_learner(*id, node, false)).await {
                Ok(Ok(_)) => tracing::info!(node = %name, "added to consensus as a learner"),
                Ok(Err(e)) => tracing::debug!(node = %name, error = %e, "cannot add a learner yet"),
                Err(_) => tracing::debug!(node = %name, "adding a learner timed out"),
            }
        }
        let gone: BTreeSet<u64> = known
            .iter()
            .filter(|id| !voters.contains(id) && !wanted.iter().any(|(w, _)| w == *id))
            .copied()
            .collect();
        if !gone.is_empty() {
            let change = openraft::ChangeMembers::RemoveNodes(gone.clone());
            match tokio::time::timeout(limit, self.raft.change_membership(change, false)).await {
                Ok(Ok(_)) => tracing::info!(nodes = ?gone, "removed from consensus"),
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot remove learners yet"),
                Err(_) => tracing::debug!("removing learners timed out"),
            }
        }
    }

    /// Moves openraft's voters one step towards `rules::voters`: a node that joined gets a vote
    /// while the count is even and under five, a removed node loses its vote. Demoted voters
    /// stay learners until the map drops them.
    async fn sync_voters(&self, now: &Observed) {
        let config = self.raft.metrics().borrow().membership_config.clone();
        let name_of = |id: u64| now.map.nodes().iter().find(|n| node_id(n) == id).cloned();
        let current: BTreeSet<String> = config
            .membership()
            .voter_ids()
            .map(|id| {
                name_of(id).unwrap_or_else(|| {
                    // A voter the map no longer names: its recorded name.
                    config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.addr.clone())
                        .unwrap_or_default()
                })
            })
            .collect();
        let members: Vec<String> = now.map.active_nodes().cloned().collect();
        let up = |n: &str| n == self.me || now.view.state_of(n) == Some("up");
        let want = keelson_rules::voters::voters(&current, &members, &self.seeds, &up);
        if want == current {
            return;
        }
        let ids: BTreeSet<u64> = want.iter().map(|n| node_id(n)).collect();
        let change = openraft::ChangeMembers::ReplaceAllVoters(ids);
        let limit = Duration::from_secs(2);
        match tokio::time::timeout(limit, self.raft.change_membership(change, true)).await {
            Ok(Ok(_)) => tracing::info!(voters = ?want, "consensus voters changed"),
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot change the voters yet"),
            Err(_) => tracing::debug!("changing the voters timed out"),
        }
    }

    /// The changes to propose: at most one per shard, promotions first (they end
    /// unavailability; the rest only restore redundancy).
    fn plan(&self, now: &Observed) -> Vec<MapCommand> {
        // Down counts only once the node's lease has surely run out.
        let health =
            |n: &str| promotion::health(n == self.me, seen(&now.view, n), self.promotion_delay);
        let cmds = plan(&now.map, &health, PlanLimits::default());
        let mut seen = HashSet::new();
        let mut cmds: Vec<MapCommand> = cmds
            .into_iter()
            .filter(|c| seen.insert(c.shard()))
            .collect();
        cmds.sort_by_key(|c| !matches!(c, MapCommand::Promote { .. }));
        cmds
    }

    /// Proposes every change together, so openraft commits them in a few batches, not one
    /// round each. A planned move is asked of the primary itself, so it stops writing before
    /// the new primary starts.
    async fn propose(
        &self,
        map: &ShardMap,
        cmds: Vec<MapCommand>,
    ) -> Vec<(MapCommand, Result<u64, String>)> {
        let proposals = cmds.into_iter().map(|cmd| {
            let raft = self.raft.clone();
            let old_primary = cmd
                .shard()
                .map(|s| map.placement(ShardId(s)).primary.clone());
            async move {
                let result = match (&cmd, old_primary) {
                    (MapCommand::Handoff { shard, epoch, to }, Some(old_primary)) => {
                        crate::wire::rpc::hand_over(&old_primary, *shard, *epoch, to)
                            .await
                            .map(|()| 0)
                    }
                    _ => consensus::propose(&raft, cmd.clone(), Duration::from_secs(2))
                        .await
                        .map_err(|e| e.to_string()),
                };
                (cmd, result)
            }
        });
        futures_util::future::join_all(proposals).await
    }
}

/// Counts (and logs) what the proposals did.
fn count(now: &Observed, results: Vec<(MapCommand, Result<u64, String>)>) {
    for (cmd, result) in results {
        match result {
            Ok(committed) => {
                let kind = match cmd {
                    MapCommand::Promote { .. } => "promote",
                    MapCommand::Shrink { .. } => "shrink",
                    MapCommand::AddLearner { .. } => "add_learner",
                    MapCommand::Join { .. } => "join",
                    MapCommand::Handoff { .. } => "handoff",
                    MapCommand::AddNode { .. } => "add_node",
                    MapCommand::DrainNode { .. } => "drain_node",
                    MapCommand::RemoveNode { .. } => "remove_node",
                };
                let m = crate::metrics::get();
                m.map_changes.with_label_values(&[kind]).inc();
                if let MapCommand::Promote { .. } = cmd {
                    // The old primary was down for at least the promotion delay; the view
                    // says since when, as this leader saw it, up to the commit (now).
                    m.failovers.inc();
                    if let Some(since) = down_for(&now.view, &now.map, &cmd) {
                        m.failover_seconds.observe(since.as_secs_f64());
                    }
                }
                tracing::debug!(?cmd, version = committed, "planned change committed");
            }
            Err(e) => tracing::debug!(?cmd, error = %e, "planned change not applied"),
        }
    }
}

/// What the failure detector says of `node`, as this node's view shows it.
fn seen(view: &ClusterView, node: &str) -> Seen {
    match view.members.iter().find(|m| m.name == node) {
        Some(m) if m.state == "up" => Seen::Up,
        Some(m) if m.state == "down" => Seen::DownFor(view.in_state_for(m)),
        _ => Seen::Unknown,
    }
}

/// How long until the first member marked down has been down for the promotion `delay` (a
/// millisecond past it, so the round that wakes then sees it), if one is still short of it.
fn promotion_due(view: &ClusterView, delay: Duration) -> Option<Duration> {
    view.members
        .iter()
        .filter(|m| m.state == "down")
        .filter_map(|m| delay.checked_sub(view.in_state_for(m)))
        .map(|left| left + Duration::from_millis(1))
        .min()
}

/// How long the primary that `cmd` replaces had been down when the plan was made.
fn down_for(view: &ClusterView, map: &ShardMap, cmd: &MapCommand) -> Option<Duration> {
    let old = &map.placement(ShardId(cmd.shard()?)).primary;
    view.members
        .iter()
        .find(|m| &m.name == old && m.state == "down")
        .map(|m| view.in_state_for(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::MemberStatus;

    fn member(name: &str, state: &str, for_ms: u64) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            role: crate::config::Role::Node,
            state: state.into(),
            for_ms,
            silent_ms: for_ms,
            rtt_us: None,
            incarnation: None,
            map_version: 0,
            load: Default::default(),
        }
    }

    #[test]
    fn the_planner_wakes_when_the_first_down_node_reaches_the_promotion_delay() {
        let delay = Duration::from_millis(400);
        let view = ClusterView {
            me: "n1".into(),
            members: vec![
                member("n2", "up", 5_000),
                member("n3", "down", 150),
                member("n4", "down", 300),
            ],
            made: Some(Instant::now()),
        };
        let due = promotion_due(&view, delay).unwrap();
        assert!(due <= Duration::from_millis(101), "{due:?}");
        assert!(due >= Duration::from_millis(90), "{due:?}");
        let past = ClusterView {
            members: vec![member("n3", "down", 401)],
            ..view.clone()
        };
        assert_eq!(
            promotion_due(&past, delay),
            None,
            "already due: planned now"
        );
        // The view's age counts: made 300 ms ago with 150 ms down is 450 ms down now.
        let old = ClusterView {
            members: vec![member("n3", "down", 150)],
            made: Instant::now().checked_sub(Duration::from_millis(300)),
            ..view
        };
        assert_eq!(promotion_due(&old, delay), None);
        assert!(matches!(seen(&old, "n3"), Seen::DownFor(d) if d >= Duration::from_millis(450)));
    }
}
