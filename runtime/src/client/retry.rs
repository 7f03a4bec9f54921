//! How the client's failures map onto the retry rule (`keelson_rules::retry`): which remote
//! errors were refused before anything was applied, and which leave the outcome unknown.

pub use keelson_rules::retry::Facts;
use keelson_rules::retry::Failure as Kind;

use crate::wire::RemoteError;

/// How a request failed, as far as retrying goes.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// The owner was down or not connected: nothing was sent.
    Unavailable,
    /// No answer within the deadline: the outcome is unknown.
    Timeout,
    /// The owner answered with an error.
    Remote(&'a RemoteError),
}

impl Failure<'_> {
    fn kind(self) -> Kind {
        match self {
            Failure::Unavailable => Kind::Unavailable,
            Failure::Timeout => Kind::Timeout,
            Failure::Remote(RemoteError::NotOwner { .. } | RemoteError::NoLease(_)) => {
                Kind::NotApplied
            }
            Failure::Remote(
                RemoteError::WriteNotConfirmed { .. } | RemoteError::EntityFailed { .. },
            ) => Kind::OutcomeUnknown,
            Failure::Remote(_) => Kind::Final,
        }
    }
}

/// Whether the request may be sent again.
pub fn may_retry(failure: Failure<'_>, facts: Facts) -> bool {
    keelson_rules::retry::may_retry(failure.kind(), facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_TRUE: Facts = Facts {
        majority_up: true,
        in_sync_follower_up: true,
        idempotent: true,
    };

    fn remote(kind: &str) -> RemoteError {
        match kind {
            "not_owner" => RemoteError::NotOwner {
                node: "n1".into(),
                shard: 1,
                epoch: 1,
                owner: "n2".into(),
            },
            "no_lease" => RemoteError::NoLease("n1".into()),
            "unconfirmed" => RemoteError::WriteNotConfirmed {
                shard: 1,
                reason: "x".into(),
            },
            "failed" => RemoteError::EntityFailed {
                kind: "k".into(),
                id: "i".into(),
                reason: "x".into(),
            },
            "reused" => RemoteError::IdempotencyKeyReused {
                kind: "k".into(),
                id: "i".into(),
            },
            "too_large" => RemoteError::EntityTooLarge {
                kind: "k".into(),
                id: "i".into(),
                bytes: 2,
                limit: 1,
            },
            "overloaded" => RemoteError::Overloaded {
                node: "n1".into(),
                limit: 1,
            },
            "bad" => RemoteError::BadRequest("x".into()),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn without_a_majority_nothing_is_retried() {
        let facts = Facts {
            majority_up: false,
            ..ALL_TRUE
        };
        assert!(!may_retry(Failure::Unavailable, facts));
        assert!(!may_retry(Failure::Timeout, facts));
        assert!(!may_retry(Failure::Remote(&remote("not_owner")), facts));
    }

    #[test]
    fn refusals_before_applying_are_retried_and_unknown_outcomes_only_when_idempotent() {
        for kind in ["not_owner", "no_lease"] {
            let not_idempotent = Facts {
                idempotent: false,
                ..ALL_TRUE
            };
            assert!(
                may_retry(Failure::Remote(&remote(kind)), not_idempotent),
                "{kind}"
            );
        }
        for kind in ["unconfirmed", "failed"] {
            assert!(
                may_retry(Failure::Remote(&remote(kind)), ALL_TRUE),
                "{kind}"
            );
            let facts = Facts {
                idempotent: false,
                ..ALL_TRUE
            };
            assert!(!may_retry(Failure::Remote(&remote(kind)), facts), "{kind}");
        }
        assert!(may_retry(Failure::Timeout, ALL_TRUE));
        assert!(!may_retry(
            Failure::Timeout,
            Facts {
                idempotent: false,
                ..ALL_TRUE
            }
        ));
    }

    #[test]
    fn an_unavailable_owner_is_retried_only_while_a_failover_can_happen() {
        assert!(may_retry(Failure::Unavailable, ALL_TRUE));
        let facts = Facts {
            in_sync_follower_up: false,
            ..ALL_TRUE
        };
        assert!(!may_retry(Failure::Unavailable, facts));
    }

    #[test]
    fn answers_a_retry_would_repeat_are_not_retried() {
        for kind in ["reused", "too_large", "overloaded", "bad"] {
            assert!(
                !may_retry(Failure::Remote(&remote(kind)), ALL_TRUE),
                "{kind}"
            );
        }
    }
}
