//! How a node finds out it was removed from the cluster (`keelson nodes remove`).
//!
//! Usually it applies the map change that removes it, like any other. But that is not assured:
//! openraft stops sending the log to a node the moment a membership without it is appended, and
//! every member stops its sessions with a node the map no longer names, so the commit of the
//! removal may never reach it. Its peers still report their map versions in heartbeat answers
//! (it dials them), so a node whose map has stood still while an up peer reports a newer one
//! fetches that peer's map: committed there, a later state of the same log. If the node was a
//! member and that map no longer names it, it was removed.
//!
//! ```text
//! own map changed ─▶ member? ──no, was one──▶ removed
//! every second: own map still for STALLED, a peer ahead ─▶ fetch its map ─▶ names me? ─no─▶ removed
//! ```

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cluster::membership::ClusterView;
use crate::config::Role;
use crate::consensus::{fetch_map, MapWatch};

/// How long a node's own map may stand still behind a peer's before it asks that peer.
const STALLED: Duration = Duration::from_secs(2);

/// How often the node compares its map version with its peers'.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The peer to ask for its map: an up node reporting a newer map than `mine`, when `mine` has
/// not changed for [`STALLED`]. The newest such peer first.
fn peer_to_ask(view: &ClusterView, mine: u64, still_for: Duration) -> Option<String> {
    if still_for < STALLED {
        return None;
    }
    view.members
        .iter()
        .filter(|m| {
            m.name != view.me && m.role == Role::Node && m.state == "up" && m.map_version > mine
        })
        .max_by_key(|m| m.map_version)
        .map(|m| m.name.clone())
}

/// Resolves once `node`, having been a member of the map, is not any more: in its own map, or
/// in a newer map fetched from a peer while its own stood still. Returns the version of the
/// map that no longer names it.
pub async fn removed(
    node: &str,
    mut map: MapWatch,
    view: watch::Receiver<ClusterView>,
    timeout: Duration,
) -> u64 {
    let mut was_member = false;
    let mut seen_version = 0;
    let mut moved_at = Instant::now();
    let mut every = tokio::time::interval(CHECK_EVERY);
    loop {
        let current = map.borrow_and_update().clone();
        let member = current.nodes().iter().any(|n| n == node);
        if was_member && !member {
            return current.version();
        }
        was_member |= member;
        if current.version() != seen_version {
            seen_version = current.version();
            moved_at = Instant::now();
        }
        tokio::select! {
            r = map.changed() => if r.is_err() { std::future::pending::<()>().await },
            _ = every.tick() => {
                let ask = peer_to_ask(&view.borrow(), seen_version, moved_at.elapsed());
                if let (true, Some(peer)) = (was_member, ask) {
                    if let Some(version) = removed_in_map_of(node, &peer, &current, timeout).await {
                        tracing::info!(node, peer = %peer, version, "a peer's newer map no longer names this node: it was removed, and never saw the change committed itself");
                        return version;
                    }
                }
            }
        }
    }
}

/// The version of `peer`'s map if it is newer than `mine` and does not name `node`.
async fn removed_in_map_of(
    node: &str,
    peer: &str,
    mine: &keelson_rules::shard_map::ShardMap,
    timeout: Duration,
) -> Option<u64> {
    let theirs = match fetch_map(peer, timeout).await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(peer, error = %e, "cannot fetch a peer's map");
            return None;
        }
    };
    if let Err(e) = crate::wire::frame_check::shard_map(&theirs, mine) {
        crate::wire::frame_check::refuse("shard_map", &e);
        return None;
    }
    (theirs.version() > mine.version() && !theirs.nodes().iter().any(|n| n == node))
        .then(|| theirs.version())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::MemberStatus;

    fn member(name: &str, role: Role, state: &str, map_version: u64) -> MemberStatus {
        MemberStatus {
            name: name.to_string(),
            role,
            state: state.to_string(),
            for_ms: 0,
            silent_ms: 0,
            rtt_us: None,
            incarnation: None,
            map_version,
            load: Default::default(),
        }
    }

    fn view(members: Vec<MemberStatus>) -> ClusterView {
        ClusterView {
            me: "n2".to_string(),
            members,
            made: None,
        }
    }

    #[test]
    fn a_stalled_node_asks_the_newest_up_peer() {
        let v = view(vec![
            member("n2", Role::Node, "up", 124),
            member("n1", Role::Node, "up", 125),
            member("n3", Role::Node, "up", 127),
            member("n4", Role::Node, "down", 130),
            member("gw", Role::Gateway, "up", 131),
        ]);
        assert_eq!(peer_to_ask(&v, 124, STALLED), Some("n3".to_string()));
    }

    #[test]
    fn a_node_whose_map_just_moved_or_is_newest_asks_nobody() {
        let v = view(vec![
            member("n2", Role::Node, "up", 124),
            member("n1", Role::Node, "up", 125),
        ]);
        assert_eq!(
            peer_to_ask(&v, 124, STALLED - Duration::from_millis(1)),
            None
        );
        assert_eq!(peer_to_ask(&v, 125, STALLED * 10), None);
        assert_eq!(peer_to_ask(&v, 126, STALLED * 10), None);
    }
}
