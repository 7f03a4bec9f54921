//! Decides whether a peer is up or down from what the heartbeat loop observes.
//!
//! ```text
//! heartbeat replies ──heard()──────────┐
//! session closed ─────connection_lost()┼──▶ FailureDetector ──▶ Vec<Transition>
//! timer ──────────────tick()───────────┘
//! ```
//!
//! ractor_cluster notices a closed socket but never a frozen peer, so silence for `timeout` marks
//! a peer down as well. A down peer comes back up on the first reply heard after it went down.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the detector believes about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Not heard from yet, and not silent for long enough to call down.
    Joining,
    /// Answering heartbeats.
    Up,
    /// Silent for the failure timeout, or its connection closed.
    Down,
}

impl PeerState {
    /// Lower-case name used in APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Joining => "joining",
            PeerState::Up => "up",
            PeerState::Down => "down",
        }
    }
}

/// Why a peer changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A heartbeat reply arrived.
    Heard,
    /// No reply for longer than the failure timeout.
    Silent(Duration),
    /// The transport reported the connection closed.
    ConnectionLost,
}

/// A change of a peer's state, to be logged, counted and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Peer name.
    pub peer: String,
    /// State before.
    pub from: PeerState,
    /// State after.
    pub to: PeerState,
    /// What caused it.
    pub cause: Cause,
}

#[derive(Debug, Clone)]
struct Health {
    state: PeerState,
    /// Last reply, or when tracking began for a peer never heard.
    last_heard: Instant,
    since: Instant,
    rtt: Option<Duration>,
}

/// A peer's health as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHealth {
    /// Current state.
    pub state: PeerState,
    /// How long it has been in that state.
    pub for_how_long: Duration,
    /// Time since the last heartbeat reply.
    pub silent_for: Duration,
    /// Last measured heartbeat round trip.
    pub rtt: Option<Duration>,
}

/// Timeout-based failure detector over the current members.
#[derive(Debug)]
pub struct FailureDetector {
    timeout: Duration,
    peers: BTreeMap<String, Health>,
}

impl FailureDetector {
    /// Tracks `peers` from `now`, each starting as [`PeerState::Joining`].
    pub fn new(timeout: Duration, peers: impl IntoIterator<Item = String>, now: Instant) -> Self {
        let peers = peers
            .into_iter()
            .map(|p| {
                (
                    p,
                    Health {
                        state: PeerState::Joining,
                        last_heard: now,
                        since: now,
                        rtt: None,
                    },
                )
            })
            .collect();
        Self { timeout, peers }
    }

    /// Starts tracking `peer` (a member that joined) as [`PeerState::Joining`]; a peer already
    /// tracked keeps its state.
    pub fn track(&mut self, peer: &str, now: Instant) {
        self.peers.entry(peer.to_string()).or_insert(Health {
            state: PeerState::Joining,
            last_heard: now,
            since: now,
            rtt: None,
        });
    }

    /// Stops tracking `peer` (it left the cluster).
    pub fn untrack(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// A heartbeat reply from `peer` with its round trip.
    pub fn heard(&mut self, peer: &str, rtt: Duration, now: Instant) -> Option<Transition> {
        let h = self.peers.get_mut(peer)?;
        h.last_heard = now;
        h.rtt = Some(rtt);
        Self::set(peer, h, PeerState::Up, Cause::Heard, now)
    }

    /// The transport closed the connection to `peer`.
    pub fn connection_lost(&mut self, peer: &str, now: Instant) -> Option<Transition> {
        let h = self.peers.get_mut(peer)?;
        if h.state != PeerState::Up {
            return None;
        }
        Self::set(peer, h, PeerState::Down, Cause::ConnectionLost, now)
    }

    /// Marks down every peer silent for longer than the timeout.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let timeout = self.timeout;
        self.peers
            .iter_mut()
            .filter_map(|(peer, h)| {
                let silent = now.saturating_duration_since(h.last_heard);
                if h.state != PeerState::Down && silent > timeout {
                    Self::set(peer, h, PeerState::Down, Cause::Silent(silent), now)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Current state of `peer`, if tracked.
    pub fn state(&self, peer: &str) -> Option<PeerState> {
        self.peers.get(peer).map(|h| h.state)
    }

    /// Every tracked peer with its health, by name.
    pub fn snapshot(&self, now: Instant) -> Vec<(String, PeerHealth)> {
        self.peers
            .iter()
            .map(|(p, h)| {
                (
                    p.clone(),
                    PeerHealth {
                        state: h.state,
                        for_how_long: now.saturating_duration_since(h.since),
                        silent_for: now.saturating_duration_since(h.last_heard),
                        rtt: h.rtt,
                    },
                )
            })
            .collect()
    }

    fn set(
        peer: &str,
        h: &mut Health,
        to: PeerState,
        cause: Cause,
        now: Instant,
    ) -> Option<Transition> {
        if h.state == to {
            return None;
        }
        let from = h.state;
        h.state = to;
        h.since = now;
        Some(Transition {
            peer: peer.to_string(),
            from,
            to,
            cause,
        })
    }
}

#[cfg(test)]
#[path = "failure_detector_test.rs"]
mod tests;
