//! Why the model could not be fed (yet).

use keelson_actors::DomainError;
use keelson_runtime::RequestError;

/// Why a feed did not finish. Everything but [`FeedError::Refused`] is worth retrying: the
/// interactions are counted once by id however often they are sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FeedError {
    /// The entity got no answer to.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The entity refused the command by its rules.
    #[error("{kind} on node \"{node}\" refused: {error}")]
    Refused {
        /// `taste` or `item-model`.
        kind: &'static str,
        /// The node that answered.
        node: String,
        /// Its reason.
        error: DomainError,
    },
    /// The entity answered with another kind of answer than the command has.
    #[error("{kind} on node \"{node}\" answered with an unexpected kind of reply")]
    Unexpected {
        /// `taste` or `item-model`.
        kind: &'static str,
        /// The node that answered.
        node: String,
    },
    /// The answer did not decode.
    #[error("{kind} reply does not decode: {detail}")]
    Decode {
        /// `taste` or `item-model`.
        kind: &'static str,
        /// The decoder's reason.
        detail: String,
    },
    /// A partition still missed some customers' numbers after every repair round.
    #[error("item-model partition p{partition} is still behind for {customers} customer(s); retry (interactions are counted once by id)")]
    Behind {
        /// The partition.
        partition: u32,
        /// How many customers it is behind for.
        customers: usize,
    },
    /// The feed's tasks have stopped (the process is stopping).
    #[error("the model feed is stopping; retry (interactions are counted once by id)")]
    Stopped,
}

impl FeedError {
    /// What a reply of `kind` from `node` that is not the answer expected says: refused by the
    /// entity's rules, or an answer of another kind.
    pub(crate) fn not_expected<A>(
        kind: &'static str,
        node: String,
        reply: Result<A, DomainError>,
    ) -> Self {
        match reply {
            Err(error) => Self::Refused { kind, node, error },
            Ok(_) => Self::Unexpected { kind, node },
        }
    }

    /// A reply of `kind` that does not decode.
    pub(crate) fn decode(kind: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Decode {
            kind,
            detail: e.to_string(),
        }
    }
}
