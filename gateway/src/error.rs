//! Every error the API returns: `{"error":{"code","message"}}` with the right status, and
//! `Retry-After` where waiting helps. Runtime and domain errors are mapped here and only here.

use keelson_actors::DomainError;
use keelson_runtime::{RemoteError, RequestError};
use serde::Serialize;
use warp::http::StatusCode;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Seconds to wait before retrying, when known.
    pub retry_after: Option<u64>,
    /// The node that answered, when one did.
    pub node: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            node: None,
        }
    }

    /// 400 for a field that breaks a rule.
    pub fn field(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("field `{field}`: {reason}"),
        )
    }

    pub(crate) fn retry(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
        .expect("error bodies serialise")
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            DomainError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            DomainError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
        };
        Self::new(status.0, status.1, e.to_string())
    }
}

/// A 500 for an entity that answered a command with the wrong kind of answer.
pub(crate) fn unexpected_answer(kind: &str, node: &str) -> ApiError {
    ApiError {
        node: Some(node.to_string()),
        ..ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{kind} answered with an unexpected kind of reply"),
        )
    }
}

impl From<keelson_feed::FeedError> for ApiError {
    fn from(e: keelson_feed::FeedError) -> Self {
        use keelson_feed::FeedError;
        let message = e.to_string();
        match e {
            FeedError::Request(e) => Self::from(e),
            FeedError::Refused { node, error, .. } => Self {
                node: Some(node),
                ..Self::from(error)
            },
            FeedError::Unexpected { kind, node } => unexpected_answer(kind, &node),
            FeedError::Decode { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
            FeedError::Behind { .. } | FeedError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "model_not_updated",
                message,
            )
            .retry(1),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        let (err, node) = match e {
            RequestError::Unavailable { owner, .. } => {
                return Self {
                    node: Some(owner),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shard_unavailable",
                        message,
                    )
                    .retry(1)
                }
            }
            RequestError::Timeout { owner, .. } => {
                return Self {
                    node: Some(owner),
                    ..Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
                }
            }
            RequestError::Remote { error, owner, .. } => (error, owner),
        };
        let mapped = match err {
            RemoteError::NotOwner { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_owner", message).retry(1)
            }
            RemoteError::Quarantined { retry_after_ms, .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "entity_quarantined",
                message,
            )
            .retry(retry_after_ms.div_ceil(1000)),
            RemoteError::EntityFailed { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "entity_failed", message)
            }
            RemoteError::Storage(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", message)
            }
            RemoteError::FaultInjectionDisabled(_) => {
                Self::new(StatusCode::FORBIDDEN, "fault_injection_disabled", message)
            }
            RemoteError::Timeout(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
            RemoteError::NoLease(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_majority", message).retry(1)
            }
            RemoteError::WriteNotConfirmed { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "write_not_confirmed",
                format!("{message}; the write may or may not have been applied"),
            )
            .retry(1),
            RemoteError::Overloaded { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).retry(1)
            }
            RemoteError::IdempotencyKeyReused { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("header `Idempotency-Key`: {message}; nothing was applied (use a new key for a new request)"),
            ),
            RemoteError::EntityTooLarge { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "entity_too_large",
                format!("{message}; nothing was applied"),
            ),
            RemoteError::UnknownKind(_) | RemoteError::BadRequest(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        };
        Self {
            node: Some(node),
            ..mapped
        }
    }
}
