//! A payload to a JSON tree (size, UTF-8, syntax, repeated keys, each error naming its field),
//! and the field helpers every message kind's schema is written with.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{Reason, Rejected};

/// Longest name of a reading or state key.
const MAX_NAME_CHARS: usize = 32;

/// Size → UTF-8 → JSON syntax → a JSON tree. A number JSON allows but f64 cannot hold (`1e400`) is
/// a schema error naming its field, not a syntax error.
pub(super) fn parse_payload(payload: &[u8], max_bytes: usize) -> Result<Value, Rejected> {
    if payload.len() > max_bytes {
        return Err(Rejected::new(
            Reason::TooLarge,
            format!(
                "payload is {} bytes, the limit is {max_bytes}",
                payload.len()
            ),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejected::new(
            Reason::NotUtf8,
            format!(
                "payload is not UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    // Skipping a value checks syntax without converting numbers, so overflow cannot show up here.
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|e| Rejected::new(Reason::BadJson, format!("payload is not JSON: {e}")))?;
    let ctx = RefCell::new(TreeContext::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let tree = Tree { ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    tree.map_err(|e| {
        let ctx = ctx.into_inner();
        let field = if ctx.path.is_empty() {
            "payload".to_string()
        } else {
            ctx.path.concat()
        };
        // serde_json has no error kind for overflow; its message is the only signal.
        let reason = if ctx.duplicate || e.to_string().starts_with("number out of range") {
            Reason::BadSchema
        } else {
            Reason::BadJson
        };
        Rejected::new(reason, format!("{field}: {e}"))
    })
}

/// Builds a [`Value`] while tracking the path being parsed: on error, `path` is left pointing at
/// the value that failed. Also rejects repeated keys, which `Value` would silently collapse.
struct Tree<'p> {
    ctx: &'p RefCell<TreeContext>,
}

#[derive(Default)]
struct TreeContext {
    /// Segments of the path to the value being parsed: `readings`, `.temperature`, `[2]`.
    path: Vec<String>,
    /// The failure was a repeated key: a schema problem, not a syntax one.
    duplicate: bool,
}

impl<'de> DeserializeSeed<'de> for Tree<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tree<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.ctx
                .borrow_mut()
                .path
                .push(format!("[{}]", items.len()));
            let item = seq.next_element_seed(Tree { ctx: self.ctx })?;
            self.ctx.borrow_mut().path.pop();
            match item {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let dot = if self.ctx.borrow().path.is_empty() {
                ""
            } else {
                "."
            };
            self.ctx
                .borrow_mut()
                .path
                .push(format!("{dot}{}", key_path(&key)));
            if obj.contains_key(&key) {
                self.ctx.borrow_mut().duplicate = true;
                return Err(de::Error::custom("field appears twice"));
            }
            let value = map.next_value_seed(Tree { ctx: self.ctx })?;
            self.ctx.borrow_mut().path.pop();
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}

pub(super) fn schema(detail: String) -> Rejected {
    Rejected::new(Reason::BadSchema, detail)
}

/// A key as it appears in a field path: bare if it is a valid name, quoted otherwise.
pub(super) fn key_path(key: &str) -> String {
    if is_name(key) {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

pub(super) fn is_name(s: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn check_name(name: &str, field: &str) -> Result<(), Rejected> {
    if is_name(name) {
        Ok(())
    } else {
        Err(schema(format!(
            "{field}: name must be 1-32 characters of a-z 0-9 _"
        )))
    }
}

pub(super) fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.chars().count() <= 32 => format!("a string ({s:?})"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

pub(super) fn as_object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, Rejected> {
    v.as_object()
        .ok_or_else(|| schema(format!("{field}: expected an object, got {}", type_name(v))))
}

pub(super) fn only_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Rejected> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(schema(format!(
            "unknown field {k:?} (expected {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

pub(super) fn required<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Value, Rejected> {
    obj.get(field)
        .ok_or_else(|| schema(format!("{field}: missing")))
}

pub(super) fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str, Rejected> {
    v.as_str()
        .ok_or_else(|| schema(format!("{field}: expected a string, got {}", type_name(v))))
}

pub(super) fn text<'a>(s: &'a str, field: &str, max_chars: usize) -> Result<&'a str, Rejected> {
    let n = s.chars().count();
    if n > max_chars {
        return Err(schema(format!(
            "{field}: {n} characters, the limit is {max_chars}"
        )));
    }
    Ok(s)
}

pub(super) fn uint(v: &Value, field: &str, min: u64) -> Result<u64, Rejected> {
    v.as_u64().filter(|&n| n >= min).ok_or_else(|| {
        schema(format!(
            "{field}: expected an integer ≥ {min}, got {}",
            type_name(v)
        ))
    })
}

pub(super) fn finite(n: &Number, field: &str) -> Result<f64, Rejected> {
    n.as_f64()
        .filter(|v| v.is_finite())
        .ok_or_else(|| schema(format!("{field}: {n} is not a finite number")))
}

pub(super) fn count(
    n: usize,
    min: usize,
    max: usize,
    field: &str,
    what: &str,
) -> Result<(), Rejected> {
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(schema(format!(
            "{field}: {n} entries, expected {min}-{max} (one per {what})"
        )))
    }
}
