//! Membership: keeps a session open to every peer, pings each one, and decides who is up.
//!
//! ```text
//!             ┌──────── Tick (every heartbeat interval) ────────┐
//!             ▼                                                 │
//! Membership ──Ping (RPC, deadline = failure timeout)──▶ peer's HeartbeatResponder
//!     │  ◀── Heard / PingFailed ──┘
//!     ├─ FailureDetector decides up/down ─▶ ClusterView (watch channel) ─▶ client, gateway, /v1/cluster
//!     ├─ no session to a peer ─▶ dial it again, with jittered exponential backoff
//!     └─ peer marked down while its session is still open (frozen) ─▶ stop that session
//! ```
//!
//! ractor_cluster has no redial, no handshake timeout and no way to notice a frozen peer; these
//! three gaps are closed here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use ractor_cluster::{NodeServerMessage, NodeSessionMessage};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster::failure_detector::{Cause, FailureDetector, PeerState};
use crate::cluster::lease::{Lease, LeaseTracker};
use crate::cluster::load::LoadReport;
use crate::config::Role;
use crate::metrics;
use crate::wire::{self, HeartbeatRpc, Ping, Pong};

/// One member as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// `up`, `down` or `joining`.
    pub state: String,
    /// Milliseconds in this state.
    pub for_ms: u64,
    /// Milliseconds since the last heartbeat answer.
    pub silent_ms: u64,
    /// Last heartbeat round trip in microseconds.
    pub rtt_us: Option<u64>,
    /// Start time of the peer process (ms since the Unix epoch), as it last reported.
    pub incarnation: Option<u64>,
    /// Shard-map version the member last reported.
    pub map_version: u64,
    /// Load the member last reported.
    pub load: LoadReport,
}

/// The membership as seen by this process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This process.
    pub me: String,
    /// Every member, this process included.
    pub members: Vec<MemberStatus>,
    /// When the membership made this view (its `for_ms` were true then); None for a view not
    /// made by the membership.
    #[serde(skip)]
    pub made: Option<Instant>,
}

impl ClusterView {
    /// How long `m` has been in its state, as of now rather than when the view was made.
    pub fn in_state_for(&self, m: &MemberStatus) -> Duration {
        Duration::from_millis(m.for_ms) + self.made.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// True when `name` is this process or a peer answering heartbeats.
    pub fn is_up(&self, name: &str) -> bool {
        name == self.me
            || self
                .members
                .iter()
                .any(|m| m.name == name && m.state == "up")
    }

    /// State name of `name`, if it is a member.
    pub fn state_of(&self, name: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.state.as_str())
    }
}

/// A peer to ping and, if `dial`, to keep connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Cluster address.
    pub addr: SocketAddr,
    /// Whether this process dials it (nodes are dialled by everyone; gateways dial out only).
    pub dial: bool,
}

/// Session events forwarded from the node server.
#[derive(Debug)]
pub enum SessionEvent {
    /// A TCP session opened (not yet authenticated).
    Opened(ActorRef<NodeSessionMessage>),
    /// A session authenticated with the peer named.
    Authenticated(ActorId, String),
    /// A session closed.
    Closed(ActorId),
}

/// Messages to the membership actor.
#[derive(RactorMessage)]
pub enum MembershipMsg {
    /// Ping, detect, dial, publish.
    Tick,
    /// Ping every connected peer now, outside the round (a takeover wants fresh reports).
    PingNow,
    /// A heartbeat answer.
    Heard(Pong, Duration, Instant, u64),
    /// A ping to `peer` failed or timed out.
    PingFailed(String),
    /// A dial attempt to `peer` finished.
    DialDone(String),
    /// A session event.
    Session(SessionEvent),
    /// The members changed (a node joined, moved or left): watch these peers from now on.
    Peers(Vec<Peer>),
}

/// Start-up arguments.
#[derive(Debug)]
pub struct MembershipArgs {
    /// This process.
    pub me: String,
    /// This process's role.
    pub role: Role,
    /// Its start time.
    pub incarnation: u64,
    /// Every peer to watch.
    pub peers: Vec<Peer>,
    /// The ractor_cluster node server.
    pub node_server: ActorRef<NodeServerMessage>,
    /// Failure timeout.
    pub failure_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Where the view is published.
    pub view: watch::Sender<ClusterView>,
    /// This process's applied shard-map version.
    pub map_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where the primary lease is published.
    pub lease: Lease,
    /// The lease support this node gave and its peers report.
    pub support: crate::cluster::support::Support,
    /// The nodes whose answers make the lease majority (the seed nodes of nodes.toml, which
    /// also vote in consensus); answers of nodes that joined later keep them up but lend no
    /// lease support, so the majority never shifts under a primary while members change.
    pub quorum: Vec<String>,
    /// How long a majority's answers keep the lease.
    pub lease_duration: Duration,
    /// How links are dialled (TLS or not).
    pub links: crate::cluster::links::Links,
}

struct Session {
    actor: ActorRef<NodeSessionMessage>,
    peer: Option<String>,
    opened: Instant,
}

struct Dial {
    next_at: Instant,
    backoff: Duration,
    in_flight: bool,
}

#[path = "membership_peers.rs"]
mod peers;

/// Membership state.
pub struct MembershipState {
    args: MembershipArgs,
    detector: FailureDetector,
    sessions: HashMap<ActorId, Session>,
    pinging: HashSet<String>,
    dials: HashMap<String, Dial>,
    incarnations: HashMap<String, u64>,
    map_versions: HashMap<String, u64>,
    loads: HashMap<String, LoadReport>,
    lease_tracker: LeaseTracker,
    /// Whether the lease held at the last tick (a lapse is counted and logged once).
    lease_held: bool,
    seq: u64,
    ticker: Option<JoinHandle<()>>,
    /// Turns asks for fresh support reports into [`MembershipMsg::PingNow`].
    asker: Option<JoinHandle<()>>,
}

/// The membership actor.
pub struct Membership;

const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Splits ractor's `name@host` peer identity.
fn peer_name(full: &str) -> String {
    full.split('@').next().unwrap_or(full).to_string()
}

impl MembershipState {
    fn handshake_timeout(&self) -> Duration {
        self.args.failure_timeout.max(Duration::from_secs(1))
    }

    fn connected(&self, peer: &str) -> bool {
        !ractor::pg::get_members(&wire::heartbeat_group(peer)).is_empty()
    }

    /// A heartbeat answer from a peer to a ping sent at `sent` with map version `sent_version`.
    fn heard(&mut self, pong: Pong, rtt: Duration, sent: Instant, sent_version: u64) {
        if pong.role == Role::Node {
            // A peer that has applied a newer map than this node had when it pinged
            // may already serve a shard this node thinks it leads: no support.
            let in_quorum = self.args.quorum.contains(&pong.from);
            if in_quorum && keelson_rules::lease::counts(pong.map_version, sent_version) {
                self.lease_tracker.acked(&pong.from, sent);
                self.args.lease.set(self.lease_tracker.valid_until());
            }
            if in_quorum {
                self.args
                    .support
                    .reported(&pong.from, pong.map_version, &pong.support);
            }
        }
        self.pinging.remove(&pong.from);
        metrics::get()
            .heartbeat_rtt
            .with_label_values(&[&pong.from])
            .observe(rtt.as_secs_f64());
        self.loads.insert(pong.from.clone(), pong.load);
        let newer_map = self
            .map_versions
            .insert(pong.from.clone(), pong.map_version)
            != Some(pong.map_version);
        if let Some(old) = self
            .incarnations
            .insert(pong.from.clone(), pong.incarnation)
        {
            if old != pong.incarnation {
                tracing::info!(peer = %pong.from, "peer restarted (new incarnation)");
            }
        }
        if let Some(t) = self.detector.heard(&pong.from, rtt, Instant::now()) {
            self.apply(t);
            self.publish(Instant::now());
        } else if newer_map {
            self.publish(Instant::now());
        }
    }

    fn ping(&mut self, myself: &ActorRef<MembershipMsg>, peer: &str) {
        let Some(cell) = ractor::pg::get_members(&wire::heartbeat_group(peer))
            .into_iter()
            .next()
        else {
            return;
        };
        if !self.pinging.insert(peer.to_string()) {
            return;
        }
        self.seq += 1;
        let map_version = self
            .args
            .map_version
            .load(std::sync::atomic::Ordering::Acquire);
        let ping = wire::encode(&Ping {
            from: self.args.me.clone(),
            seq: self.seq,
            map_version,
        });
        let deadline = self.args.failure_timeout;
        let me = myself.clone();
        let peer = peer.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let target: ActorRef<HeartbeatRpc> = cell.into();
            let result = target
                .call(|r| HeartbeatRpc::Ping(ping, r), Some(deadline))
                .await;
            let msg = match result {
                Ok(ractor::rpc::CallResult::Success(bytes)) => match wire::decode::<Pong>(&bytes) {
                    Ok(pong) if pong.from == peer => {
                        MembershipMsg::Heard(pong, started.elapsed(), started, map_version)
                    }
                    _ => MembershipMsg::PingFailed(peer),
                },
                _ => MembershipMsg::PingFailed(peer),
            };
            let _ = me.send_message(msg);
        });
    }

    fn dial(&mut self, myself: &ActorRef<MembershipMsg>, peer: &Peer, now: Instant) {
        let has_session = self
            .sessions
            .values()
            .any(|s| s.peer.as_deref() == Some(peer.name.as_str()));
        let d = self.dials.entry(peer.name.clone()).or_insert(Dial {
            next_at: now,
            backoff: DIAL_BACKOFF_MIN,
            in_flight: false,
        });
        if d.in_flight || has_session || now < d.next_at {
            return;
        }
        d.in_flight = true;
        let jitter = rand::rng().random_range(0.8..1.2);
        d.next_at = now + d.backoff.mul_f64(jitter);
        d.backoff = (d.backoff * 2).min(DIAL_BACKOFF_MAX);
        let server = self.args.node_server.clone();
        let links = self.args.links.clone();
        let me = myself.clone();
        let (name, role, addr) = (peer.name.clone(), peer.role, peer.addr);
        tokio::spawn(async move {
            match tokio::time::timeout(
                Duration::from_secs(1),
                links.dial(&server, &name, role, addr),
            )
            .await
            {
                Ok(Ok(())) => tracing::debug!(peer = %name, %addr, "dialled"),
                Ok(Err(e)) => tracing::debug!(peer = %name, %addr, error = %e, "dial failed"),
                Err(_) => tracing::debug!(peer = %name, %addr, "dial timed out"),
            }
            let _ = me.send_message(MembershipMsg::DialDone(name));
        });
    }

    fn stop_sessions(&mut self, peer: &str, why: &str) {
        for s in self.sessions.values() {
            if s.peer.as_deref() == Some(peer) {
                tracing::info!(peer, why, "closing session");
                s.actor.stop(Some(why.to_string()));
            }
        }
    }

    fn apply(&mut self, t: crate::cluster::failure_detector::Transition) {
        let m = metrics::get();
        m.peer_up
            .with_label_values(&[&t.peer])
            .set(i64::from(t.to == PeerState::Up));
        m.peer_transitions
            .with_label_values(&[&t.peer, t.to.as_str()])
            .inc();
        match (&t.to, &t.cause) {
            (PeerState::Up, _) => {
                tracing::info!(peer = %t.peer, from = t.from.as_str(), "peer is up");
                if let Some(d) = self.dials.get_mut(&t.peer) {
                    d.backoff = DIAL_BACKOFF_MIN;
                }
            }
            (PeerState::Down, Cause::Silent(for_)) => {
                tracing::warn!(peer = %t.peer, silent_ms = for_.as_millis() as u64, "peer marked down: silent past the failure timeout");
                // A frozen peer keeps its socket open: close it so the peer must reconnect and
                // prove it is alive.
                self.stop_sessions(&t.peer.clone(), "peer suspected down");
            }
            (PeerState::Down, cause) => {
                tracing::warn!(peer = %t.peer, ?cause, "peer marked down");
            }
            _ => {}
        }
    }

    /// Pings every connected peer that has no ping in flight.
    fn ping_connected(&mut self, myself: &ActorRef<MembershipMsg>) {
        let peers: Vec<String> = self
            .args
            .peers
            .iter()
            .map(|p| p.name.clone())
            .filter(|p| self.connected(p))
            .collect();
        for peer in &peers {
            self.ping(myself, peer);
        }
    }

    fn tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        // Also without answers: a single-node cluster holds its lease on its own.
        self.args.lease.set(self.lease_tracker.valid_until());
        if self.args.role == Role::Node {
            let held = self.args.lease.is_valid();
            let m = metrics::get();
            m.lease_valid.set(i64::from(held));
            if self.lease_held && !held {
                m.lease_lapses.inc();
                tracing::info!(node = %self.args.me, "primary lease lapsed: too few fresh heartbeat answers; refusing primary work until they return");
            } else if !self.lease_held && held {
                tracing::debug!(node = %self.args.me, "primary lease held");
            }
            self.lease_held = held;
        }
        let peers = self.args.peers.clone();
        for peer in &peers {
            if self.connected(&peer.name) {
                self.ping(myself, &peer.name);
            } else {
                if let Some(t) = self.detector.connection_lost(&peer.name, now) {
                    self.apply(t);
                }
                if peer.dial {
                    self.dial(myself, peer, now);
                }
            }
        }
        for t in self.detector.tick(now) {
            self.apply(t);
        }
        let limit = self.handshake_timeout();
        for s in self.sessions.values() {
            if s.peer.is_none() && now.duration_since(s.opened) > limit {
                tracing::info!("closing a session that did not authenticate in time");
                s.actor.stop(Some("handshake timeout".to_string()));
            }
        }
        self.publish(now);
    }

    fn publish(&self, now: Instant) {
        let roles: HashMap<&str, Role> = self
            .args
            .peers
            .iter()
            .map(|p| (p.name.as_str(), p.role))
            .collect();
        let mut members = vec![MemberStatus {
            name: self.args.me.clone(),
            role: self.args.role,
            state: PeerState::Up.as_str().to_string(),
            for_ms: 0,
            silent_ms: 0,
            rtt_us: None,
            incarnation: Some(self.args.incarnation),
            map_version: self
                .args
                .map_version
                .load(std::sync::atomic::Ordering::Acquire),
            load: LoadReport::default(),
        }];
        for (name, h) in self.detector.snapshot(now) {
            members.push(MemberStatus {
                role: roles.get(name.as_str()).copied().unwrap_or(Role::Node),
                state: h.state.as_str().to_string(),
                for_ms: h.for_how_long.as_millis() as u64,
                silent_ms: h.silent_for.as_millis() as u64,
                rtt_us: h.rtt.map(|d| d.as_micros() as u64),
                incarnation: self.incarnations.get(&name).copied(),
                map_version: self.map_versions.get(&name).copied().unwrap_or(0),
                load: self.loads.get(&name).copied().unwrap_or_default(),
                name,
            });
        }
        let view = ClusterView {
            me: self.args.me.clone(),
            members,
            made: Some(now),
        };
        self.args.view.send_if_modified(|old| {
            // Only publish when something other than the clocks changed, or every second.
            let changed = old.members.len() != view.members.len()
                || old.members.iter().zip(&view.members).any(|(a, b)| {
                    a.state != b.state
                        || a.incarnation != b.incarnation
                        || a.map_version != b.map_version
                });
            *old = view;
            changed
        });
    }
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MembershipArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = Instant::now();
        let detector = FailureDetector::new(
            args.failure_timeout,
            args.peers.iter().map(|p| p.name.clone()),
            now,
        );
        metrics::get().known_peers(args.peers.iter().map(|p| p.name.as_str()));
        for p in &args.peers {
            metrics::get().peer_up.with_label_values(&[&p.name]).set(0);
        }
        let ticker = myself.send_interval(args.heartbeat_interval, || MembershipMsg::Tick);
        let asker = {
            let (support, me) = (args.support.clone(), myself.clone());
            tokio::spawn(async move {
                loop {
                    support.fresh_reports_wanted().await;
                    if me.send_message(MembershipMsg::PingNow).is_err() {
                        return;
                    }
                }
            })
        };
        let inside = args.quorum.contains(&args.me);
        let lease_tracker = LeaseTracker::new(args.quorum.len(), inside, args.lease_duration);
        let mut st = MembershipState {
            args,
            detector,
            sessions: HashMap::new(),
            pinging: HashSet::new(),
            dials: HashMap::new(),
            incarnations: HashMap::new(),
            map_versions: HashMap::new(),
            loads: HashMap::new(),
            lease_tracker,
            lease_held: false,
            seq: 0,
            ticker: Some(ticker),
            asker: Some(asker),
        };
        st.tick(&myself);
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        if let Some(t) = st.asker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::Tick => st.tick(&myself),
            MembershipMsg::PingNow => st.ping_connected(&myself),
            MembershipMsg::Peers(peers) => st.set_peers(peers),
            MembershipMsg::Heard(pong, rtt, sent, sent_version) => {
                st.heard(pong, rtt, sent, sent_version)
            }
            MembershipMsg::PingFailed(peer) => {
                st.pinging.remove(&peer);
            }
            MembershipMsg::DialDone(peer) => {
                if let Some(d) = st.dials.get_mut(&peer) {
                    d.in_flight = false;
                }
            }
            MembershipMsg::Session(SessionEvent::Opened(actor)) => {
                st.sessions.insert(
                    actor.get_id(),
                    Session {
                        actor,
                        peer: None,
                        opened: Instant::now(),
                    },
                );
            }
            MembershipMsg::Session(SessionEvent::Authenticated(id, name)) => {
                if let Some(s) = st.sessions.get_mut(&id) {
                    s.peer = Some(peer_name(&name));
                }
            }
            MembershipMsg::Session(SessionEvent::Closed(id)) => {
                if let Some(s) = st.sessions.remove(&id) {
                    if let Some(peer) = s.peer {
                        tracing::info!(%peer, "session closed");
                        // The peer's proxies leave their groups a moment later; the session map
                        // already knows whether another session to the peer remains.
                        let other = st
                            .sessions
                            .values()
                            .any(|o| o.peer.as_deref() == Some(peer.as_str()));
                        if !other {
                            if let Some(t) = st.detector.connection_lost(&peer, Instant::now()) {
                                st.apply(t);
                                st.publish(Instant::now());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Forwards node-server events to the membership actor; with TLS, first kills any session whose
/// claimed name is not the one its certificate proved (it is killed before ractor_cluster
/// advertises a single actor to it).
pub struct SessionEvents {
    /// Where events go.
    pub membership: ActorRef<MembershipMsg>,
    /// Every session must carry a certificate-proven name.
    pub require_tls: bool,
}

impl ractor_cluster::NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self
            .membership
            .send_message(MembershipMsg::Session(SessionEvent::Opened(ses.actor)));
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self
            .membership
            .send_message(MembershipMsg::Session(SessionEvent::Closed(
                ses.actor.get_id(),
            )));
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        if let Some(name) = ses.peer_name {
            if self.require_tls {
                let claimed = name.name.split('@').next().unwrap_or_default();
                let proven = crate::cluster::links::proven_name(&ses.peer_addr);
                if proven != Some(claimed) {
                    metrics::get()
                        .link_refusals
                        .with_label_values(&["name_mismatch"])
                        .inc();
                    tracing::warn!(claimed, proven = proven.unwrap_or("none"), "cluster session refused: the peer claims a name its certificate does not carry");
                    ses.actor.kill();
                    return;
                }
            }
            let _ =
                self.membership
                    .send_message(MembershipMsg::Session(SessionEvent::Authenticated(
                        ses.actor.get_id(),
                        name.name,
                    )));
        }
    }
}
