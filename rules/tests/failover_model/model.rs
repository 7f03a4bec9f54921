//! The replication and failover protocol as a state machine over keelson-rules' pure functions.
//!
//! ```text
//! Tick ─▶ time+1; every pair whose links are up exchanges a heartbeat (lease + failure detector)
//! Write(n,s) ─▶ if reads::serve says Primary: apply locally, Replicate to in-sync + learners
//! Deliver(m) ─▶ follower::on_write on a Replicate, or the answer reaches its write
//! (a message may stay undelivered forever: loss; any may be delivered next: reordering)
//! Finish(w) ─▶ acks::classify the answers (missing ones timed out); shrink through the log;
//!              acknowledge, or fail and acks::take_back
//! Plan(n) ─▶ the leader's planner (promotion::health, planner::plan) proposes; Handoff goes to
//!            the old primary, which runs hand_over's steps (Drain)
//! CatchUp(n,s) ─▶ a learner copies the primary's store and proposes Join
//! Learn(n) ─▶ a node applies the next committed map (arbitrarily late)
//! Crash/Restart/Pause/Resume/Cut/Heal ─▶ faults, from a budget
//! ```
//!
//! Consensus is abstract: a command commits when `ShardMap::apply` accepts it on the newest map
//! (the epoch fence), at any time; every node applies committed maps in order, arbitrarily late.
//! That allows more than Raft does, which is fine for safety. Time is in ticks of 1 ms.

use std::collections::BTreeSet;
use std::time::Duration;

use keelson_rules::acks::{self, Ack};
use keelson_rules::follower::{self, Known, Mark, Verdict};
use keelson_rules::hand_over::{HandOver, Step};
use keelson_rules::lease::{self, majority_since, Majority};
use keelson_rules::promotion::{self, Seen};
use keelson_rules::reads::{self, Ask, Serve, Standing};
use keelson_rules::{plan, MapCommand, PlanLimits, ShardId, ShardMap};

/// Which protocol is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The rules as the runtime runs them.
    Keelson,
    /// Known bad: a promoted primary serves at once, without waiting for the old primary's lease
    /// to run out (answers from newer maps still give no support).
    ServeWithoutWaitingOutTheLease,
    /// Known bad (what Keelson did before this model found it): a peer that applied a newer
    /// map still supports the lease, and a promoted primary serves at once.
    SupportFromNewerMaps,
    /// Known bad: the planner commits a Handoff itself instead of asking the old primary to
    /// hand over (the old "seize").
    SeizeInsteadOfHandOver,
}

/// The bounds of one exploration.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Nodes.
    pub nodes: usize,
    /// Shards.
    pub shards: u32,
    /// Copies per shard.
    pub rf: usize,
    /// Client writes, in all.
    pub writes: u8,
    /// Crashes, pauses and link cuts, in all.
    pub faults: u8,
    /// Committed map changes, in all.
    pub map_changes: usize,
    /// Failure timeout in ticks (ms).
    pub failure_timeout: u8,
    /// Start from a placement a past failover left: the preferred primary is an in-sync
    /// follower, so the planner hands the shard back at once.
    pub moved: bool,
    /// Protocol variant.
    pub variant: Variant,
}

/// A message in flight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// A write to a follower.
    Replicate {
        /// Write id.
        w: u8,
        /// Primary.
        from: u8,
        /// Follower.
        to: u8,
        /// Shard.
        s: u8,
        /// Primary's epoch.
        epoch: u64,
        /// Lsn.
        lsn: u64,
    },
    /// A follower's answer.
    Answer {
        /// Write id.
        w: u8,
        /// Follower.
        from: u8,
        /// Primary.
        to: u8,
        /// What it said.
        ack: AckMsg,
    },
    /// The planner asks the old primary to hand over.
    HandOver {
        /// Old primary.
        to: u8,
        /// Shard.
        s: u8,
        /// Epoch planned at.
        epoch: u64,
        /// New primary.
        target: u8,
    },
}

/// An answer on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AckMsg {
    /// Applied.
    Applied,
    /// Stale, at this epoch.
    Stale(u64),
}

/// A write waiting for its answers on the primary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pending {
    /// Write id.
    pub w: u8,
    /// Primary.
    pub node: u8,
    /// Shard.
    pub s: u8,
    /// Placement epoch it was written at, and its in-sync set then.
    pub epoch: u64,
    /// In-sync followers when it was written.
    pub in_sync: Vec<u8>,
    /// Its lsn.
    pub lsn: u64,
    /// The record it replaced (lsn), for taking it back.
    pub prev: u64,
    /// Followers and learners: (node, in_sync, answer).
    pub targets: Vec<(u8, bool, Option<AckMsg>)>,
    /// The answers were read and these in-sync followers dropped through the log: waiting for
    /// this node's map to show it (None: still collecting answers).
    pub dropping: Option<Vec<u8>>,
    /// Whether some follower applied it (from the answers), once read.
    pub applied_somewhere: bool,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// Not crashed.
    pub alive: bool,
    /// Frozen: takes no step, answers nothing.
    pub paused: bool,
    /// Index of the committed map it has applied.
    pub map: usize,
    /// Per shard: the one entity's record lsn (0: none).
    pub store: Vec<u64>,
    /// Per shard: the highest lsn ever applied (survives a take-back).
    pub high: Vec<u64>,
    /// Per shard: follower mark (memory).
    pub mark: Vec<Option<Mark>>,
    /// Per shard: deposed until its map reaches this epoch (memory).
    pub deposed: Vec<u64>,
    /// Per shard: suspect followers (memory).
    pub suspects: Vec<BTreeSet<u8>>,
    /// Per shard: a hand-over in progress (memory).
    pub handing: Vec<Option<HandOver>>,
    /// Per peer: the support this node gave it that counted within the last lease, per the
    /// peer's map index when it pinged: ticks since.
    pub support: Vec<Vec<(usize, u8)>>,
    /// Per shard: promoted over this old primary at this map index, not serving yet.
    pub takeover: Vec<Option<(u8, usize)>>,
    /// Per peer: ticks since this node marked it down (None: not down). Only a running node
    /// marks peers down; a node thawing from a pause first sees everyone silent.
    pub down_for: Vec<Option<u8>>,
}

/// The whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Committed maps, oldest first.
    pub log: Vec<ShardMap>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(u8, u8)>,
    /// Messages in flight.
    pub net: BTreeSet<Msg>,
    /// Writes in flight.
    pub pending: Vec<Pending>,
    /// Writes started.
    pub written: u8,
    /// Faults left.
    pub faults: u8,
    /// Per pair of nodes (x·nodes + y, x < y): ticks since their last heartbeat round trip,
    /// capped at the failure timeout (what each one's failure detector has heard).
    pub contact: Vec<u8>,
    /// Acknowledged writes: (shard, lsn).
    pub acked: BTreeSet<(u8, u64)>,
    /// A confirmed write found another primary without it (the runtime's duplicate_primary).
    pub fenced_badly: bool,
}

/// What can happen next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// One tick passes.
    Tick,
    /// A client write reaches node n for shard s.
    Write(u8, u8),
    /// A message is delivered.
    Deliver(Msg),
    /// A write's answers are read (missing ones count as timed out).
    Finish(u8),
    /// Node n plans as consensus leader.
    Plan(u8),
    /// Node n's hand-over of shard s takes its next step (true: the drain deadline passed).
    Drain(u8, u8, bool),
    /// Node n copies shard s as a learner and asks to join.
    CatchUp(u8, u8),
    /// Node n applies the next committed map.
    Learn(u8),
    /// Node n crashes (its store survives).
    Crash(u8),
    /// Node n restarts.
    Restart(u8),
    /// Node n freezes.
    Pause(u8),
    /// Node n thaws.
    Resume(u8),
    /// The link from a to b starts dropping everything.
    Cut(u8, u8),
}

const COUNTER_BITS: u32 = 40;

fn epoch_base(epoch: u64) -> u64 {
    epoch << COUNTER_BITS
}

fn name(n: u8) -> String {
    format!("n{n}")
}

fn index(name: &str) -> u8 {
    name[1..].parse().expect("node name")
}

impl Bounds {
    fn ticks(d: Duration) -> u64 {
        d.as_micros().div_ceil(1000) as u64
    }

    /// Lease in ticks, rounded up (the model may only overstate it).
    pub fn lease(&self) -> u64 {
        Self::ticks(promotion::lease(self.ft()))
    }

    /// Promotion delay in ticks, rounded down (the model may only understate it).
    pub fn promotion_delay(&self) -> u64 {
        promotion::promotion_delay(self.ft()).as_millis() as u64
    }

    fn ft(&self) -> Duration {
        Duration::from_millis(u64::from(self.failure_timeout))
    }

    /// The initial state.
    pub fn init(&self) -> State {
        let names: Vec<String> = (0..self.nodes as u8).map(name).collect();
        let mut map = ShardMap::initial(&names, self.shards, self.rf);
        if self.moved {
            // The first shard's primary is draining (below the replication factor, which
            // `ShardMap::drain` would refuse): the planner hands its shards over.
            let node = map.placement(ShardId(0)).primary.clone();
            let active = self.nodes as u32;
            map.apply(&MapCommand::DrainNode { node, active })
                .expect("a drain of the initial map");
        }
        let s = self.shards as usize;
        let node = Node {
            alive: true,
            paused: false,
            map: 0,
            store: vec![0; s],
            high: vec![0; s],
            mark: vec![None; s],
            deposed: vec![0; s],
            suspects: vec![BTreeSet::new(); s],
            handing: vec![None; s],
            down_for: vec![None; self.nodes],
            support: vec![vec![(0, 0)]; self.nodes],
            takeover: vec![None; s],
        };
        State {
            nodes: vec![node; self.nodes],
            log: vec![map],
            cut: BTreeSet::new(),
            net: BTreeSet::new(),
            pending: Vec::new(),
            written: 0,
            faults: self.faults,
            acked: BTreeSet::new(),
            contact: vec![0; self.nodes * self.nodes],
            fenced_badly: false,
        }
    }
}

impl State {
    fn up(&self, n: u8) -> bool {
        let node = &self.nodes[n as usize];
        node.alive && !node.paused
    }

    fn link(&self, a: u8, b: u8) -> bool {
        !self.cut.contains(&(a, b))
    }

    /// True while a write is still waiting for its node's map to show its dropped followers.
    fn waits(&self, p: &Pending) -> bool {
        let mine = self.map_of(p.node).placement(ShardId(u32::from(p.s)));
        p.dropping
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|f| acks::dropped(&name(p.node), mine, &name(*f)).is_none())
    }

    fn map_of(&self, n: u8) -> &ShardMap {
        &self.log[self.nodes[n as usize].map]
    }

    fn pair(&self, x: u8, y: u8) -> usize {
        let n = self.nodes.len();
        (x.min(y) as usize) * n + x.max(y) as usize
    }

    fn latest(&self) -> &ShardMap {
        self.log.last().expect("a map")
    }

    /// True while node n holds its primary lease.
    pub fn lease_valid(&self, b: &Bounds, n: u8) -> bool {
        // The support each peer last gave this node, as ages (the freshest sort first).
        let peers = (0..b.nodes).filter(|p| *p != n as usize).filter_map(|p| {
            let given = &self.nodes[p].support[n as usize];
            given
                .iter()
                .map(|(_, age)| *age)
                .min()
                .map(std::cmp::Reverse)
        });
        match majority_since(b.nodes, peers) {
            Majority::Alone => true,
            Majority::Missing => false,
            // The freshest majority answered a ping sent `age` ticks ago.
            Majority::Since(std::cmp::Reverse(age)) => u64::from(age) < b.lease(),
        }
    }

    /// Where node n stands for shard s.
    pub fn standing(&self, b: &Bounds, n: u8, s: u8) -> Standing {
        let p = self.map_of(n).placement(ShardId(u32::from(s)));
        let me = name(n);
        Standing {
            lease_valid: self.up(n) && self.lease_valid(b, n),
            primary: p.primary == me,
            deposed: self.nodes[n as usize].deposed[s as usize] > p.epoch,
            in_sync: p.in_sync.contains(&me),
            taking_over: self.nodes[n as usize].takeover[s as usize].is_some(),
        }
    }

    /// Would node n answer a read of shard s now, and with which lsn?
    pub fn read(&self, b: &Bounds, n: u8, s: u8) -> Option<u64> {
        let ask = Ask {
            shard_matches: true,
            read: true,
            fault: false,
        };
        let lsn = self.nodes[n as usize].store[s as usize];
        match reads::serve(self.standing(b, n, s), ask) {
            Serve::Primary => Some(lsn),
            Serve::Follower => {
                // The primary this node's map names confirms (read index), by its own state.
                let primary = index(&self.map_of(n).placement(ShardId(u32::from(s))).primary);
                let their = self.map_of(primary).placement(ShardId(u32::from(s)));
                let suspect = self.nodes[primary as usize].suspects[s as usize].contains(&n);
                let granted = self.up(primary)
                    && self.link(n, primary)
                    && self.link(primary, n)
                    && reads::grant_read(
                        self.standing(b, primary, s),
                        their.in_sync.contains(&name(n)),
                        suspect,
                    );
                granted.then_some(lsn)
            }
            Serve::NoLease | Serve::NotOwner => None,
        }
    }

    /// Node n's stored lsn for shard s.
    pub fn store_of(&self, n: &str, s: u8) -> u64 {
        self.nodes[index(n) as usize].store[s as usize]
    }

    /// Could node n get a write for shard s acknowledged now: it takes writes, and either the
    /// newest map still has it primary at its epoch (it could drop any follower) or every
    /// in-sync follower of its map would apply the write.
    pub fn could_acknowledge(&self, b: &Bounds, n: u8, s: u8) -> bool {
        if !self.takes_writes(b, n, s) {
            return false;
        }
        let shard = ShardId(u32::from(s));
        let mine = self.map_of(n).placement(shard);
        let newest = self.latest().placement(shard);
        if newest.primary == mine.primary && newest.epoch == mine.epoch {
            return true;
        }
        mine.in_sync.iter().all(|f| {
            let node = &self.nodes[index(f) as usize];
            let theirs = self.map_of(index(f)).placement(shard);
            let known = Known {
                me: f,
                map_epoch: theirs.epoch,
                map_primary: &theirs.primary,
                mark: node.mark[s as usize].as_ref(),
            };
            matches!(
                follower::on_write(known, mine.epoch, &name(n)),
                Verdict::Apply { .. }
            )
        })
    }

    /// Would node n accept a write for shard s as primary now?
    pub fn takes_writes(&self, b: &Bounds, n: u8, s: u8) -> bool {
        let ask = Ask {
            shard_matches: true,
            read: false,
            fault: false,
        };
        reads::serve(self.standing(b, n, s), ask) == Serve::Primary
    }

    fn commit(&mut self, b: &Bounds, cmd: &MapCommand) -> Result<(), keelson_rules::MapError> {
        if self.log.len() > b.map_changes {
            return Err(keelson_rules::MapError::Members(
                "model bound: no more map changes".into(),
            ));
        }
        let mut next = self.latest().clone();
        next.apply(cmd)?;
        self.log.push(next);
        Ok(())
    }
}

/// One step of the protocol; None when the action changes nothing.
pub fn step(b: &Bounds, st: &State, a: &Action) -> Option<State> {
    let mut st = st.clone();
    match a {
        Action::Tick => tick(b, &mut st),
        Action::Write(n, s) => write(b, &mut st, *n, *s),
        Action::Deliver(m) => deliver(&mut st, m),
        Action::Finish(w) => finish(b, &mut st, *w),
        Action::Plan(n) => planner(b, &mut st, *n),
        Action::Drain(n, s, late) => drain(b, &mut st, *n, *s, *late),
        Action::CatchUp(n, s) => catch_up(b, &mut st, *n, *s),
        Action::Learn(n) => {
            learn(b, &mut st, *n);
            // Writes waiting for this node's map to show their dropped followers.
            while let Some(i) = st
                .pending
                .iter()
                .position(|p| p.node == *n && p.dropping.is_some() && !st.waits(p))
            {
                confirm(&mut st, i, false);
            }
        }
        Action::Crash(n) => {
            st.faults -= 1;
            st.nodes[*n as usize].alive = false;
            st.pending.retain(|p| p.node != *n);
        }
        Action::Restart(n) => restart(&mut st, *n),
        Action::Pause(n) => {
            st.faults -= 1;
            st.nodes[*n as usize].paused = true;
        }
        Action::Resume(n) => st.nodes[*n as usize].paused = false,
        Action::Cut(x, y) => {
            st.faults -= 1;
            st.cut.insert((*x, *y));
        }
    }
    Some(st)
}

fn tick(b: &Bounds, st: &mut State) {
    // Each age stops at the one threshold the rules compare it with (lease, failure timeout,
    // promotion delay), so states repeat and the exploration covers unbounded time.
    let lease = b.lease() as u8;
    let ft = b.failure_timeout;
    let delay = b.promotion_delay() as u8;
    for h in &mut st.contact {
        *h = (*h + 1).min(ft);
    }
    for node in &mut st.nodes {
        for d in node.down_for.iter_mut().flatten() {
            *d = (*d + 1).min(delay);
        }
        // Support a lease old supports nothing any more: forgotten (same answers, fewer states).
        for given in &mut node.support {
            for (_, age) in given.iter_mut() {
                *age += 1;
            }
            given.retain(|(_, age)| *age < lease);
        }
    }
    for x in 0..b.nodes as u8 {
        for y in 0..b.nodes as u8 {
            // x pings y and hears the answer within the tick if both links are up.
            if x != y && st.up(x) && st.up(y) && st.link(x, y) && st.link(y, x) {
                let counts = lease::counts(
                    st.nodes[y as usize].map as u64,
                    st.nodes[x as usize].map as u64,
                );
                if counts || b.variant == Variant::SupportFromNewerMaps {
                    let version = st.nodes[x as usize].map;
                    let given = &mut st.nodes[y as usize].support[x as usize];
                    match given.iter_mut().find(|(v, _)| *v == version) {
                        Some(e) => e.1 = 0,
                        None => given.push((version, 0)),
                    }
                }
                let pair = st.pair(x, y);
                st.contact[pair] = 0;
                st.nodes[x as usize].down_for[y as usize] = None;
            }
        }
    }
    let ft = b.failure_timeout;
    for x in 0..b.nodes as u8 {
        if !st.up(x) {
            continue;
        }
        for y in 0..b.nodes as u8 {
            let silent = st.contact[st.pair(x, y)] >= ft;
            let node = &mut st.nodes[x as usize];
            if y != x && silent && node.down_for[y as usize].is_none() {
                node.down_for[y as usize] = Some(0);
            }
        }
    }
    if !matches!(
        b.variant,
        Variant::SupportFromNewerMaps | Variant::ServeWithoutWaitingOutTheLease
    ) {
        take_over(b, st);
    }
}

/// Node n applies the next committed map; if that promotes it over a primary it recently
/// answered, it waits out the support it gave before serving.
fn learn(b: &Bounds, st: &mut State, n: u8) {
    let me = name(n);
    let old = st.map_of(n).clone();
    st.nodes[n as usize].map += 1;
    if matches!(
        b.variant,
        Variant::SupportFromNewerMaps | Variant::ServeWithoutWaitingOutTheLease
    ) {
        return;
    }
    let new = st.map_of(n).clone();
    let at = st.nodes[n as usize].map;
    for (shard, p) in new.iter() {
        if let Some(prev) = promotion::promoted_over(&me, old.placement(shard), p) {
            st.nodes[n as usize].takeover[shard.0 as usize] = Some((index(prev), at));
        }
    }
}

/// A node promoted over an old primary starts serving once the reports of the nodes it can hear
/// (and its own) show the old primary can no longer hold a lease.
fn take_over(b: &Bounds, st: &mut State) {
    let lease = Duration::from_millis(b.lease());
    for f in 0..b.nodes as u8 {
        for s in 0..b.shards as usize {
            let Some((old, at)) = st.nodes[f as usize].takeover[s] else {
                continue;
            };
            if !st.up(f) {
                continue;
            }
            let reports: Vec<promotion::Report> = (0..b.nodes as u8)
                .filter(|m| *m != old)
                .filter(|m| *m == f || (st.up(*m) && st.link(f, *m) && st.link(*m, f)))
                .map(|m| {
                    let node = &st.nodes[m as usize];
                    promotion::Report {
                        applied: node.map >= at,
                        // Support given while the old primary's map was older than the promotion.
                        since_support: node.support[old as usize]
                            .iter()
                            .filter(|(v, _)| *v < at)
                            .map(|(_, age)| Duration::from_millis(u64::from(*age)))
                            .min(),
                    }
                })
                .collect();
            if promotion::takeover_done(b.nodes, lease, &reports) {
                st.nodes[f as usize].takeover[s] = None;
            }
        }
    }
}

fn restart(st: &mut State, n: u8) {
    // Its failure detector starts afresh: everyone counts as just heard (and it answers at once).
    for m in 0..st.nodes.len() as u8 {
        let pair = st.pair(n, m);
        st.contact[pair] = 0;
    }
    let node = &mut st.nodes[n as usize];
    let shards = node.store.len();
    node.alive = true;
    node.paused = false;
    node.mark = vec![None; shards];
    node.deposed = vec![0; shards];
    node.suspects = vec![BTreeSet::new(); shards];
    node.handing = vec![None; shards];
    node.down_for = vec![None; node.down_for.len()];
    // It does not remember whom it answered before it went down: it assumes everyone, just now.
    node.support = vec![vec![(0, 0)]; node.support.len()];
    node.takeover = vec![None; shards];
}

fn write(b: &Bounds, st: &mut State, n: u8, s: u8) {
    let p = st.map_of(n).placement(ShardId(u32::from(s))).clone();
    let node = &mut st.nodes[n as usize];
    let lsn = node.high[s as usize].max(epoch_base(p.epoch)) + 1;
    let prev = node.store[s as usize];
    node.store[s as usize] = lsn;
    node.high[s as usize] = lsn;
    let w = st.written;
    st.written += 1;
    let mut targets = Vec::new();
    for t in p.in_sync.iter().chain(&p.learners) {
        let to = index(t);
        targets.push((to, p.in_sync.contains(t), None));
        st.net.insert(Msg::Replicate {
            w,
            from: n,
            to,
            s,
            epoch: p.epoch,
            lsn,
        });
    }
    st.pending.push(Pending {
        w,
        node: n,
        s,
        epoch: p.epoch,
        in_sync: p.in_sync.iter().map(|x| index(x)).collect(),
        lsn,
        prev,
        targets,
        dropping: None,
        applied_somewhere: false,
    });
    let _ = b;
}

fn deliver(st: &mut State, m: &Msg) {
    st.net.remove(m);
    match m.clone() {
        Msg::Replicate {
            w,
            from,
            to,
            s,
            epoch,
            lsn,
        } => {
            let me = name(to);
            let primary = name(from);
            let (map_epoch, map_primary) = {
                let p = st.map_of(to).placement(ShardId(u32::from(s)));
                (p.epoch, p.primary.clone())
            };
            let node = &mut st.nodes[to as usize];
            let known = Known {
                me: &me,
                map_epoch,
                map_primary: &map_primary,
                mark: node.mark[s as usize].as_ref(),
            };
            let ack = match follower::on_write(known, epoch, &primary) {
                Verdict::Stale { epoch } => AckMsg::Stale(epoch),
                Verdict::Apply { mark, step_down } => {
                    if let Some(m) = mark {
                        node.mark[s as usize] = Some(m);
                    }
                    if step_down {
                        let d = &mut node.deposed[s as usize];
                        *d = (*d).max(epoch);
                    }
                    if node.store[s as usize] < lsn {
                        node.store[s as usize] = lsn;
                    }
                    let h = &mut node.high[s as usize];
                    *h = (*h).max(lsn);
                    AckMsg::Applied
                }
            };
            st.net.insert(Msg::Answer {
                w,
                from: to,
                to: from,
                ack,
            });
        }
        Msg::Answer { w, from, ack, .. } => {
            if let Some(p) = st.pending.iter_mut().find(|p| p.w == w) {
                for t in p.targets.iter_mut().filter(|t| t.0 == from) {
                    t.2.get_or_insert(ack);
                }
            }
        }
        Msg::HandOver {
            to,
            s,
            epoch,
            target,
        } => {
            let p = st.map_of(to).placement(ShardId(u32::from(s))).clone();
            if let Ok((h, Step::Depose(e))) =
                HandOver::begin(&name(to), u32::from(s), &p, epoch, &name(target))
            {
                let node = &mut st.nodes[to as usize];
                node.deposed[s as usize] = node.deposed[s as usize].max(e);
                node.handing[s as usize] = Some(h);
            }
        }
    }
}

fn finish(b: &Bounds, st: &mut State, w: u8) {
    let i = st.pending.iter().position(|p| p.w == w).expect("pending");
    if st.pending[i].dropping.is_some() {
        return confirm(st, i, true);
    }
    let p = st.pending[i].clone();
    let answers: Vec<(bool, Ack)> = p
        .targets
        .iter()
        .map(|(_, in_sync, a)| {
            let ack = match a {
                Some(AckMsg::Applied) => Ack::Applied,
                Some(AckMsg::Stale(e)) if *e > p.epoch => Ack::Stale { epoch: *e },
                _ => Ack::Failed,
            };
            (*in_sync, ack)
        })
        .collect();
    let plan = acks::classify(&answers);
    let (n, s) = (p.node as usize, p.s as usize);
    st.pending[i].applied_somewhere = plan.applied_somewhere;
    for i in &plan.confirmed {
        st.nodes[n].suspects[s].remove(&p.targets[*i].0);
    }
    if let Some(e) = plan.step_down {
        let d = &mut st.nodes[n].deposed[s];
        *d = (*d).max(e);
        return fail(st, i);
    }
    let shrink: Vec<u8> = plan.shrink.iter().map(|i| p.targets[*i].0).collect();
    for f in &shrink {
        st.nodes[n].suspects[s].insert(*f);
    }
    for f in &shrink {
        let cmd = MapCommand::Shrink {
            shard: u32::from(p.s),
            epoch: p.epoch,
            node: name(*f),
        };
        match st.commit(b, &cmd) {
            Ok(()) | Err(keelson_rules::MapError::StaleEpoch { .. }) => {}
            Err(_) => return fail(st, i),
        }
    }
    st.pending[i].dropping = Some(shrink);
    confirm(st, i, false);
}

/// Confirms a write once this node's map shows every dropped follower out (or fails it when it
/// shows another primary, or when `gave_up` waiting).
fn confirm(st: &mut State, i: usize, gave_up: bool) {
    let p = st.pending[i].clone();
    let mine = st.map_of(p.node).placement(ShardId(u32::from(p.s))).clone();
    let me = name(p.node);
    let mut waiting = false;
    for f in p.dropping.as_deref().unwrap_or_default() {
        match acks::dropped(&me, &mine, &name(*f)) {
            Some(true) => {}
            Some(false) => return fail(st, i),
            None => waiting = true,
        }
    }
    if waiting {
        if gave_up {
            fail(st, i);
        }
        return;
    }
    st.pending.remove(i);
    st.acked.insert((p.s, p.lsn));
    let q = st.latest().placement(ShardId(u32::from(p.s)));
    let in_sync: Vec<String> = p.in_sync.iter().map(|x| name(*x)).collect();
    if acks::two_primaries(&me, p.lsn >> COUNTER_BITS, &in_sync, &q.primary, q.epoch) {
        st.fenced_badly = true;
    }
}

/// The write failed: taken back unless some follower applied it.
fn fail(st: &mut State, i: usize) {
    let p = st.pending.remove(i);
    let plan = acks::AckPlan {
        applied_somewhere: p.applied_somewhere,
        ..Default::default()
    };
    if acks::take_back(&plan) {
        let node = &mut st.nodes[p.node as usize];
        if node.store[p.s as usize] == p.lsn {
            node.store[p.s as usize] = p.prev;
        }
    }
}

fn planner(b: &Bounds, st: &mut State, n: u8) {
    let map = st.map_of(n).clone();
    let delay = Duration::from_millis(b.promotion_delay());
    let down_for = st.nodes[n as usize].down_for.clone();
    let health = |x: &str| {
        let i = index(x) as usize;
        let seen = match down_for[i] {
            None => Seen::Up,
            Some(d) => Seen::DownFor(Duration::from_millis(u64::from(d))),
        };
        promotion::health(i == n as usize, seen, delay)
    };
    let mut seen = BTreeSet::new();
    let mut cmds: Vec<MapCommand> = plan(&map, &health, PlanLimits::default())
        .into_iter()
        .filter(|c| seen.insert(c.shard()))
        .collect();
    cmds.sort_by_key(|c| !matches!(c, MapCommand::Promote { .. }));
    for cmd in cmds {
        match cmd {
            // A planned move: the old primary gives the shard up itself (unless seizing).
            MapCommand::Handoff { shard, epoch, to }
                if b.variant != Variant::SeizeInsteadOfHandOver =>
            {
                let old = index(&map.placement(ShardId(shard)).primary);
                st.net.insert(Msg::HandOver {
                    to: old,
                    s: shard as u8,
                    epoch,
                    target: index(&to),
                });
            }
            cmd => {
                let _ = st.commit(b, &cmd);
            }
        }
    }
}

fn drain(b: &Bounds, st: &mut State, n: u8, s: u8, late: bool) {
    let h = st.nodes[n as usize].handing[s as usize]
        .clone()
        .expect("a hand-over");
    let in_flight = st
        .pending
        .iter()
        .filter(|p| p.node == n && p.s == s)
        .count() as u32;
    let resume = |st: &mut State, e: u64| {
        let node = &mut st.nodes[n as usize];
        if node.deposed[s as usize] == e {
            node.deposed[s as usize] = 0;
        }
        node.handing[s as usize] = None;
    };
    match h.drain(in_flight, late) {
        Step::Propose(cmd) => {
            let committed = st.commit(b, &cmd).is_ok();
            match h.proposed(committed) {
                Step::Resume(e) => resume(st, e),
                _ => st.nodes[n as usize].handing[s as usize] = None,
            }
        }
        Step::Resume(e) => resume(st, e),
        Step::Wait | Step::Depose(_) | Step::Done => {}
    }
}

fn catch_up(b: &Bounds, st: &mut State, n: u8, s: u8) {
    let shard = ShardId(u32::from(s));
    let p = st.map_of(n).placement(shard).clone();
    let primary = index(&p.primary);
    let theirs = st.map_of(primary).placement(shard).clone();
    if !theirs.learners.contains(&name(n)) || theirs.primary != p.primary {
        return;
    }
    let copied = st.nodes[primary as usize].store[s as usize];
    let node = &mut st.nodes[n as usize];
    if node.store[s as usize] < copied {
        node.store[s as usize] = copied;
    }
    node.high[s as usize] = node.high[s as usize].max(copied);
    let _ = st.commit(
        b,
        &MapCommand::Join {
            shard: u32::from(s),
            epoch: p.epoch,
            node: name(n),
        },
    );
}

/// Every action enabled in `st`.
pub fn actions(b: &Bounds, st: &State, out: &mut Vec<Action>) {
    let nodes = b.nodes as u8;
    out.push(Action::Tick);
    for m in &st.net {
        let (from, to) = match m {
            Msg::Replicate { from, to, .. } | Msg::Answer { from, to, .. } => (*from, *to),
            Msg::HandOver { to, .. } => (*to, *to),
        };
        if st.up(to) && st.link(from, to) {
            out.push(Action::Deliver(m.clone()));
        }
    }
    for p in &st.pending {
        // Reading the answers (missing ones timed out), or giving up waiting for the map.
        if st.up(p.node) {
            out.push(Action::Finish(p.w));
        }
    }
    for n in 0..nodes {
        let node = &st.nodes[n as usize];
        if !node.alive {
            out.push(Action::Restart(n));
            continue;
        }
        if node.paused {
            out.push(Action::Resume(n));
            continue;
        }
        if node.map + 1 < st.log.len() {
            out.push(Action::Learn(n));
        }
        if node.map + 1 == st.log.len() {
            out.push(Action::Plan(n));
        }
        for s in 0..b.shards as u8 {
            if st.written < b.writes && st.takes_writes(b, n, s) {
                out.push(Action::Write(n, s));
            }
            if node.handing[s as usize].is_some() {
                out.push(Action::Drain(n, s, false));
                out.push(Action::Drain(n, s, true));
            }
            let p = st.map_of(n).placement(ShardId(u32::from(s)));
            if p.learners.contains(&name(n)) {
                out.push(Action::CatchUp(n, s));
            }
        }
        if st.faults > 0 {
            out.push(Action::Crash(n));
            out.push(Action::Pause(n));
            for m in 0..nodes {
                if m != n && !st.cut.contains(&(n, m)) {
                    out.push(Action::Cut(n, m));
                }
            }
        }
    }
}
