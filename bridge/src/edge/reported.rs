//! Reported twin state: 1-64 keys of scalars, and the device's version of it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::json::{
    as_object, check_name, count, finite, key_path, only_fields, required, schema, text, type_name,
    uint,
};
use super::{Rejected, MAX_TEXT_CHARS};

/// Most keys in one report.
const MAX_STATE_KEYS: usize = 64;

/// A scalar value of reported twin state.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `true` / `false`.
    Bool(bool),
    /// A finite number.
    Number(f64),
    /// A string of at most 256 characters.
    Text(String),
}

/// A device's reported twin state.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedTwin {
    /// The device's version of its state, if it sends one.
    pub version: Option<u64>,
    /// Key → value; 1-64 keys.
    pub state: BTreeMap<String, Scalar>,
}

/// The schema of a report.
pub(super) fn parse(root: &Value) -> Result<ReportedTwin, Rejected> {
    let obj = as_object(root, "payload")?;
    only_fields(obj, &["version", "state"])?;
    let version = match obj.get("version") {
        None => None,
        Some(v) => Some(uint(v, "version", 0)?),
    };
    let state = as_object(required(obj, "state")?, "state")?;
    count(state.len(), 1, MAX_STATE_KEYS, "state", "key")?;
    let mut out = BTreeMap::new();
    for (key, value) in state {
        let field = format!("state.{}", key_path(key));
        check_name(key, &field)?;
        let scalar = match value {
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => Scalar::Number(finite(n, &field)?),
            Value::String(s) => Scalar::Text(text(s, &field, MAX_TEXT_CHARS)?.to_string()),
            other => {
                return Err(schema(format!(
                    "{field}: expected a boolean, number or string, got {}",
                    type_name(other)
                )))
            }
        };
        out.insert(key.clone(), scalar);
    }
    Ok(ReportedTwin {
        version,
        state: out,
    })
}
