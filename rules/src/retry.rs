//! Which failed requests the client may send again. Pure: the client passes what it knows of the
//! cluster and of the request, and does what this says.
//!
//! ```text
//! no majority up ─▶ never (nothing changes hands without one: fail fast)
//! owner unavailable ─▶ only if an in-sync follower is up (a failover can happen)
//! refused before applying (not the owner / no lease) ─▶ always
//! timeout, unconfirmed write, entity crashed ─▶ only reads and keyed writes (outcome unknown)
//! anything else ─▶ never (a retry gets the same answer)
//! ```

/// How a request failed, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The owner was down or not connected: nothing was sent.
    Unavailable,
    /// No answer within the deadline: the outcome is unknown.
    Timeout,
    /// The node refused before applying anything (it is not the owner, or holds no lease).
    NotApplied,
    /// The node answered that the outcome is unknown (unconfirmed write, entity crashed).
    OutcomeUnknown,
    /// An answer a retry would repeat.
    Final,
}

/// What the client knows when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// More than half of the shard-hosting nodes are up.
    pub majority_up: bool,
    /// An in-sync follower of the request's shard is up.
    pub in_sync_follower_up: bool,
    /// The request is a read, or a write carrying an idempotency key.
    pub idempotent: bool,
}

/// Whether the request may be sent again.
pub fn may_retry(failure: Failure, facts: Facts) -> bool {
    if !facts.majority_up {
        return false;
    }
    match failure {
        Failure::Unavailable => facts.in_sync_follower_up,
        Failure::Timeout | Failure::OutcomeUnknown => facts.idempotent,
        Failure::NotApplied => true,
        Failure::Final => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_by_its_facts() {
        let all = [
            Failure::Unavailable,
            Failure::Timeout,
            Failure::NotApplied,
            Failure::OutcomeUnknown,
            Failure::Final,
        ];
        for bits in 0..8u8 {
            let facts = Facts {
                majority_up: bits & 1 != 0,
                in_sync_follower_up: bits & 2 != 0,
                idempotent: bits & 4 != 0,
            };
            for f in all {
                let want = facts.majority_up
                    && match f {
                        Failure::Unavailable => facts.in_sync_follower_up,
                        Failure::Timeout | Failure::OutcomeUnknown => facts.idempotent,
                        Failure::NotApplied => true,
                        Failure::Final => false,
                    };
                assert_eq!(may_retry(f, facts), want, "{f:?} {facts:?}");
            }
        }
    }
}
