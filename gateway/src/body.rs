//! Request bodies: read with a size cap while streaming (chunked bodies included), then parsed
//! as JSON into structs that refuse unknown fields, with the path of the offending field.

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::http::StatusCode;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Largest accepted body of `POST /v1/interactions:batch` (1,000 interactions).
pub const MAX_BATCH_BODY: usize = 512 * 1024;

/// The body cap of a request to `method path`.
pub fn cap_for(method: &str, path: &str) -> usize {
    if method == "POST" && path == "/v1/interactions:batch" {
        MAX_BATCH_BODY
    } else {
        MAX_BODY
    }
}

/// Largest oversized body read to the end before answering 413.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads the body, refusing it as soon as it passes `cap` bytes.
pub async fn read_capped<S, B>(mut body: S, cap: usize) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the request body: {e}"),
            )
        })?;
        if out.len() + chunk.remaining() > cap {
            // Read (and drop) a moderate excess so the client, still sending, gets the 413
            // instead of a reset connection; past DRAIN_LIMIT the connection is cut.
            let mut seen = out.len() + chunk.remaining();
            while seen <= DRAIN_LIMIT {
                match body.next().await {
                    Some(Ok(c)) => seen += c.remaining(),
                    _ => break,
                }
            }
            return Err(too_large(cap));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// The error for a body over the cap of `cap` bytes.
pub fn too_large(cap: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body: larger than the limit of {cap} bytes"),
    )
}

/// The error for a body not sent in time.
pub fn too_slow(deadline: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "request body: not received within {} ms",
            deadline.as_millis()
        ),
    )
}

/// Parses a JSON body, naming the field at fault.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body: expected a JSON object, got an empty body",
        ));
    }
    // serde would also accept a struct written as an array; the API takes objects only.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body: expected a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let code = if inner.is_syntax() || inner.is_eof() {
            "invalid_json"
        } else if msg.starts_with("unknown field") {
            "unknown_field"
        } else if msg.starts_with("missing field") {
            "missing_field"
        } else {
            "invalid_field"
        };
        let message = if code == "invalid_json" || path == "." {
            format!("request body: {msg}")
        } else if code == "unknown_field" || code == "missing_field" {
            // serde names the field itself; the path says which object it was in.
            format!("request body at `{path}`: {msg}")
        } else {
            format!("field `{path}`: {msg}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn errors_name_the_field_and_kind() {
        let e = json::<Sample>(br#"{"name": 5}"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.starts_with("field `name`: invalid type")),
            ("invalid_field", true),
            "{e:?}"
        );
        let e = json::<Sample>(br#"{"name": "a", "nmae": 1}"#).unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert!(e.message.contains("unknown field `nmae`"), "{e:?}");
        let e = json::<Sample>(br#"{"name": "a", "inner": {"flag": 1}}"#).unwrap_err();
        assert!(e.message.starts_with("field `inner.flag`"), "{e:?}");
        let e = json::<Sample>(br#"{"name": "#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = json::<Sample>(b"{}").unwrap_err();
        assert_eq!(e.code, "missing_field");
        assert!(e.message.contains("missing field `name`"), "{e:?}");
        assert_eq!(json::<Sample>(b"").unwrap_err().code, "invalid_json");
    }
}
