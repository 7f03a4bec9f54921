//! The device twin, after AWS IoT shadows: what the device last reported, what operators want it
//! to be (desired), and the difference between them (delta).
//!
//! ```text
//! device ──ReportTwin{state, version}──▶ reported (stale versions ignored)
//! operator ──PatchDesired{patch, expected_version}──▶ desired
//! delta = desired entries the reported state does not match ──▶ device applies them
//! ```
//!
//! Values are flat scalars ([`TwinValue`]) because the state is persisted with a format that is
//! not self-describing; [`TwinValue::to_json`] and [`TwinValue::from_json`] convert at the edges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{self, invalid, DomainError};

/// Most keys the reported or the desired side of a twin holds.
pub const MAX_TWIN_KEYS: usize = 64;

/// Longest text value in a twin or in command parameters, in characters.
pub const MAX_TWIN_TEXT: usize = 256;

/// One twin value: a flat scalar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TwinValue {
    /// `true` or `false`.
    Bool(bool),
    /// A finite number.
    Number(f64),
    /// A text of at most [`MAX_TWIN_TEXT`] characters.
    Text(String),
}

impl TwinValue {
    /// The value as plain JSON (`true`, `21.5`, `"eco"`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            TwinValue::Bool(b) => serde_json::Value::Bool(*b),
            TwinValue::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            TwinValue::Text(t) => serde_json::Value::String(t.clone()),
        }
    }

    /// A JSON scalar as a twin value; `None` for `null`, arrays, objects and numbers that do not
    /// fit an `f64`.
    pub fn from_json(value: &serde_json::Value) -> Option<TwinValue> {
        match value {
            serde_json::Value::Bool(b) => Some(TwinValue::Bool(*b)),
            serde_json::Value::Number(n) => {
                n.as_f64().filter(|f| f.is_finite()).map(TwinValue::Number)
            }
            serde_json::Value::String(s) => Some(TwinValue::Text(s.clone())),
            _ => None,
        }
    }
}

/// A flat map of twin values as a JSON object.
pub fn twin_map_to_json(map: &BTreeMap<String, TwinValue>) -> serde_json::Value {
    serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// Checks one key and value of a twin or of command parameters; `field` names the map.
pub(crate) fn check_entry(field: &str, key: &str, value: &TwinValue) -> Result<(), DomainError> {
    let at = format!("{field}.{key}");
    validate::validate_id(&at, key)?;
    match value {
        TwinValue::Bool(_) => Ok(()),
        TwinValue::Number(n) if n.is_finite() => Ok(()),
        TwinValue::Number(_) => Err(invalid(at, "must be a finite number")),
        TwinValue::Text(t) if t.chars().count() > MAX_TWIN_TEXT => Err(invalid(
            at,
            format!("must be at most {MAX_TWIN_TEXT} characters"),
        )),
        TwinValue::Text(t) if t.chars().any(char::is_control) => {
            Err(invalid(at, "must not contain control characters"))
        }
        TwinValue::Text(_) => Ok(()),
    }
}

/// The twin as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// What the device last said its configuration is.
    pub reported: BTreeMap<String, TwinValue>,
    /// Version of `reported`: the device's own when it gives one, else counted here.
    pub reported_version: u64,
    /// What operators want the device's configuration to be.
    pub desired: BTreeMap<String, TwinValue>,
    /// Version of `desired`, incremented on every change.
    pub desired_version: u64,
    /// When `reported` last changed, ms since the Unix epoch.
    pub reported_ms: Option<u64>,
    /// When `desired` last changed, ms since the Unix epoch.
    pub desired_ms: Option<u64>,
}

/// A twin as returned: both sides, their versions and the delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinView {
    /// Reported state.
    pub reported: BTreeMap<String, TwinValue>,
    /// Its version.
    pub reported_version: u64,
    /// Desired state.
    pub desired: BTreeMap<String, TwinValue>,
    /// Its version.
    pub desired_version: u64,
    /// Desired entries the reported state does not match.
    pub delta: BTreeMap<String, TwinValue>,
}

impl TwinView {
    /// The view as plain JSON, values as JSON scalars.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reported": twin_map_to_json(&self.reported),
            "reported_version": self.reported_version,
            "desired": twin_map_to_json(&self.desired),
            "desired_version": self.desired_version,
            "delta": twin_map_to_json(&self.delta),
        })
    }
}

/// Checks a report's fields without any state.
pub(crate) fn check_report(state: &BTreeMap<String, TwinValue>) -> Result<(), DomainError> {
    if state.is_empty() {
        return Err(invalid("state", "must hold at least one key"));
    }
    if state.len() > MAX_TWIN_KEYS {
        return Err(invalid("state", format!("at most {MAX_TWIN_KEYS} keys")));
    }
    state
        .iter()
        .try_for_each(|(k, v)| check_entry("state", k, v))
}

/// Checks a desired-state patch's fields without any state.
pub(crate) fn check_patch(patch: &BTreeMap<String, Option<TwinValue>>) -> Result<(), DomainError> {
    if patch.is_empty() {
        return Err(invalid("patch", "must name at least one key"));
    }
    if patch.len() > MAX_TWIN_KEYS {
        return Err(invalid("patch", format!("at most {MAX_TWIN_KEYS} keys")));
    }
    for (k, v) in patch {
        match v {
            Some(v) => check_entry("patch", k, v)?,
            None => validate::validate_id(&format!("patch.{k}"), k)?,
        }
    }
    Ok(())
}

impl Twin {
    /// Desired entries whose reported value differs or is missing.
    pub fn delta(&self) -> BTreeMap<String, TwinValue> {
        self.desired
            .iter()
            .filter(|(k, v)| self.reported.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The view returned to callers.
    pub fn view(&self) -> TwinView {
        TwinView {
            reported: self.reported.clone(),
            reported_version: self.reported_version,
            desired: self.desired.clone(),
            desired_version: self.desired_version,
            delta: self.delta(),
        }
    }

    /// Merges a report into `reported`. Returns whether anything changed: a report whose
    /// `version` is not above `reported_version` is a stale or redelivered one and is ignored.
    pub(crate) fn report(
        &mut self,
        state: BTreeMap<String, TwinValue>,
        version: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, DomainError> {
        if let Some(v) = version.filter(|&v| v > super::sample_limits::MAX_SEQ) {
            return Err(invalid(
                "version",
                format!("{v} is above {}", super::sample_limits::MAX_SEQ),
            ));
        }
        if version.is_some_and(|v| v <= self.reported_version) {
            return Ok(false);
        }
        let added = state
            .keys()
            .filter(|k| !self.reported.contains_key(*k))
            .count();
        if self.reported.len() + added > MAX_TWIN_KEYS {
            return Err(invalid(
                "state",
                format!("the reported state would hold more than {MAX_TWIN_KEYS} keys"),
            ));
        }
        self.reported.extend(state);
        self.reported_version = version.unwrap_or(self.reported_version.saturating_add(1));
        self.reported_ms = Some(now_ms);
        Ok(true)
    }

    /// Applies a desired-state patch (`None` deletes a key). Returns whether anything changed.
    /// A patch that would change nothing is answered as is, whatever `expected_version` says, so
    /// a redelivered patch is not mistaken for a conflicting one.
    pub(crate) fn patch_desired(
        &mut self,
        patch: BTreeMap<String, Option<TwinValue>>,
        expected_version: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, DomainError> {
        let no_op = patch.iter().all(|(k, v)| self.desired.get(k) == v.as_ref());
        if no_op {
            return Ok(false);
        }
        if let Some(expected) = expected_version.filter(|&e| e != self.desired_version) {
            return Err(invalid(
                "expected_version",
                format!(
                    "conflict: the desired state is at version {}, not {expected}; read the twin and retry",
                    self.desired_version
                ),
            ));
        }
        let mut desired = self.desired.clone();
        for (k, v) in patch {
            match v {
                Some(v) => desired.insert(k, v),
                None => desired.remove(&k),
            };
        }
        if desired.len() > MAX_TWIN_KEYS {
            return Err(invalid(
                "patch",
                format!("the desired state would hold more than {MAX_TWIN_KEYS} keys"),
            ));
        }
        self.desired = desired;
        self.desired_version = self.desired_version.saturating_add(1);
        self.desired_ms = Some(now_ms);
        Ok(true)
    }
}
