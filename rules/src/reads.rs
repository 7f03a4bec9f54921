//! Who may answer a request, and which copy a read goes to. Pure: the shard host and the client
//! feed what they know and act on the answer.
//!
//! ```text
//! no lease ─▶ refuse (NoLease): a node cut off from the majority serves nothing
//! primary in my map, still taking over ─▶ refuse (NoLease): the old primary may still hold one
//! primary in my map, not deposed ─▶ serve as primary (from the entity's memory)
//! a plain read, I am in sync ─▶ serve as follower, after the primary confirms (read index)
//! otherwise ─▶ NotOwner (the client retries with a newer map)
//! ```

/// Where this node stands for a request's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// This node holds its primary lease.
    pub lease_valid: bool,
    /// The node's map names it primary of the shard.
    pub primary: bool,
    /// It knows another node leads the shard at a newer epoch than its map shows.
    pub deposed: bool,
    /// The node's map lists it as an in-sync follower of the shard.
    pub in_sync: bool,
    /// It was promoted over a primary it recently answered heartbeats of, and waits for that
    /// support to run out before serving as primary (see `promotion::takeover_wait`).
    pub taking_over: bool,
}

/// What the request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The request's shard is the one its address hashes to on this node's map.
    pub shard_matches: bool,
    /// It only reads.
    pub read: bool,
    /// It carries an injected fault (served by the primary only).
    pub fault: bool,
}

/// How this node serves the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// As the shard's primary.
    Primary,
    /// As an in-sync follower, once the primary confirms it is still in sync.
    Follower,
    /// Refused: no lease.
    NoLease,
    /// Refused: not the owner.
    NotOwner,
}

/// Decides how (and whether) this node serves a request.
pub fn serve(s: Standing, a: Ask) -> Serve {
    if !s.lease_valid {
        return Serve::NoLease;
    }
    if a.shard_matches && s.primary && !s.deposed {
        if s.taking_over {
            return Serve::NoLease;
        }
        return Serve::Primary;
    }
    if a.shard_matches && a.read && !a.fault && s.in_sync {
        return Serve::Follower;
    }
    Serve::NotOwner
}

/// The primary's answer to a follower asking to serve a read (read index): yes only while the
/// primary holds its lease, leads the shard, and the follower is in sync and not suspect (it
/// confirmed every write since its last failure).
pub fn grant_read(primary: Standing, follower_in_sync: bool, follower_suspect: bool) -> bool {
    primary.lease_valid
        && primary.primary
        && !primary.deposed
        && !primary.taking_over
        && follower_in_sync
        && !follower_suspect
}

/// One copy a read could go to, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Node name.
    pub name: &'a str,
    /// The node is up in the client's view.
    pub up: bool,
    /// It is the shard's primary (a follower read costs one more hop).
    pub primary: bool,
    /// Far slower or failing more than its peers.
    pub degraded: bool,
    /// A load score: requests outstanding to it from this process weigh most, then its reported
    /// load and round trip (see the client); lower is better.
    pub load: u64,
}

/// Penalty of a follower over the primary: about one outstanding request.
pub const FOLLOWER_HOP: u64 = 200;
/// Penalty of a degraded node: used only when no healthy copy is up.
pub const DEGRADED: u64 = 1_000_000;

/// The copy a first read goes to: the up copy with the lowest load plus penalties; the primary
/// when no copy is up (the request then fails as unavailable, or is retried).
pub fn choose<'a>(candidates: &[Candidate<'a>]) -> Option<&'a str> {
    let cost = |c: &Candidate<'_>| {
        c.load + if c.primary { 0 } else { FOLLOWER_HOP } + if c.degraded { DEGRADED } else { 0 }
    };
    candidates
        .iter()
        .filter(|c| c.up)
        .min_by_key(|c| cost(c))
        .or_else(|| candidates.iter().find(|c| c.primary))
        .map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADS: Standing = Standing {
        lease_valid: true,
        primary: true,
        deposed: false,
        in_sync: false,
        taking_over: false,
    };
    const FOLLOWS: Standing = Standing {
        lease_valid: true,
        primary: false,
        deposed: false,
        in_sync: true,
        taking_over: false,
    };
    const READ: Ask = Ask {
        shard_matches: true,
        read: true,
        fault: false,
    };

    #[test]
    fn without_a_lease_nothing_is_served() {
        for s in [LEADS, FOLLOWS] {
            let s = Standing {
                lease_valid: false,
                ..s
            };
            assert_eq!(serve(s, READ), Serve::NoLease);
            assert!(!grant_read(s, true, false));
        }
    }

    #[test]
    fn a_deposed_primary_serves_nothing_as_primary() {
        let s = Standing {
            deposed: true,
            ..LEADS
        };
        assert_eq!(serve(s, READ), Serve::NotOwner);
        assert!(!grant_read(s, true, false));
    }

    #[test]
    fn a_primary_still_taking_over_serves_nothing_yet() {
        let s = Standing {
            taking_over: true,
            ..LEADS
        };
        assert_eq!(serve(s, READ), Serve::NoLease);
        assert!(!grant_read(s, true, false));
    }

    #[test]
    fn followers_serve_only_plain_reads_of_their_shard() {
        assert_eq!(serve(FOLLOWS, READ), Serve::Follower);
        let write = Ask {
            read: false,
            ..READ
        };
        assert_eq!(serve(FOLLOWS, write), Serve::NotOwner);
        let fault = Ask {
            fault: true,
            ..READ
        };
        assert_eq!(serve(FOLLOWS, fault), Serve::NotOwner);
        let other = Ask {
            shard_matches: false,
            ..READ
        };
        assert_eq!(serve(FOLLOWS, other), Serve::NotOwner);
        assert_eq!(serve(LEADS, write), Serve::Primary);
    }

    #[test]
    fn a_suspect_or_dropped_follower_gets_no_read() {
        assert!(grant_read(LEADS, true, false));
        assert!(!grant_read(LEADS, true, true));
        assert!(!grant_read(LEADS, false, false));
        assert!(!grant_read(FOLLOWS, true, false), "only the primary grants");
    }

    fn c(name: &str, up: bool, primary: bool, degraded: bool, load: u64) -> Candidate<'_> {
        Candidate {
            name,
            up,
            primary,
            degraded,
            load,
        }
    }

    #[test]
    fn the_primary_is_preferred_until_busier_by_about_one_request() {
        let p = c("p", true, true, false, 1000);
        assert_eq!(choose(&[p, c("f", true, false, false, 900)]), Some("p"));
        assert_eq!(choose(&[p, c("f", true, false, false, 700)]), Some("f"));
    }

    #[test]
    fn down_and_degraded_copies_are_avoided() {
        let p = c("p", true, true, true, 0);
        assert_eq!(choose(&[p, c("f", true, false, false, 50_000)]), Some("f"));
        assert_eq!(choose(&[p, c("f", false, false, false, 0)]), Some("p"));
        let down = c("p", false, true, false, 0);
        assert_eq!(choose(&[down, c("f", false, false, false, 0)]), Some("p"));
        assert_eq!(choose(&[]), None);
    }
}
