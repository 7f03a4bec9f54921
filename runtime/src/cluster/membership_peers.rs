//! Changing whom membership watches while it runs: a node joined (watch and dial it), moved
//! (dial its new address) or left (stop its sessions, forget it).

use std::collections::HashSet;
use std::time::Instant;

use super::{MembershipState, Peer};
use crate::metrics;

impl MembershipState {
    /// Watches `peers` from now on, in place of the peers watched so far.
    pub(super) fn set_peers(&mut self, peers: Vec<Peer>) {
        let now = Instant::now();
        let before: HashSet<String> = self.args.peers.iter().map(|p| p.name.clone()).collect();
        for p in &peers {
            match self.args.peers.iter().find(|o| o.name == p.name) {
                None => {
                    self.detector.track(&p.name, now);
                    metrics::get().known_peers([p.name.as_str()]);
                    metrics::get().peer_up.with_label_values(&[&p.name]).set(0);
                    tracing::info!(peer = %p.name, addr = %p.addr, "watching a new member");
                }
                Some(old) if old.addr != p.addr => {
                    // Dial the new address at once, not after the old one's backoff.
                    self.dials.remove(&p.name);
                    tracing::info!(peer = %p.name, from = %old.addr, to = %p.addr, "member moved");
                }
                Some(_) => {}
            }
        }
        for gone in before
            .iter()
            .filter(|n| !peers.iter().any(|p| &p.name == *n))
        {
            self.detector.untrack(gone);
            self.stop_sessions(gone, "no longer a member");
            self.dials.remove(gone);
            self.lease_tracker.forget(gone);
            self.pinging.remove(gone);
            metrics::get().peer_up.with_label_values(&[gone]).set(0);
            tracing::info!(peer = %gone, "no longer a member; stopped watching it");
        }
        self.args.peers = peers;
        self.publish(now);
    }
}
