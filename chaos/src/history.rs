//! A history of operations on registers (one register per key), as a client saw them.

use serde::{Deserialize, Serialize};

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Wrote this value.
    Write(u64),
    /// Read this value (`0`: the initial value).
    Read(u64),
}

impl OpKind {
    /// True for a write.
    pub fn is_write(&self) -> bool {
        matches!(self, OpKind::Write(_))
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused before it could take effect (it did not happen).
    Failed,
    /// Unknown: it may take effect at any time after it began, or never (timeouts, writes
    /// whose confirmation failed).
    Unknown,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history (for reports).
    pub id: usize,
    /// The register.
    pub key: String,
    /// Read or write, with its value.
    pub kind: OpKind,
    /// When the client sent it (µs from the start of the run).
    pub invoke_us: u64,
    /// When the client got the answer (µs from the start of the run).
    pub complete_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every operation of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Operations in the order they were recorded.
    pub ops: Vec<Op>,
}

impl History {
    /// Records an operation, giving it the next id.
    pub fn push(
        &mut self,
        key: &str,
        kind: OpKind,
        invoke_us: u64,
        complete_us: u64,
        outcome: Outcome,
    ) {
        let id = self.ops.len();
        self.ops.push(Op {
            id,
            key: key.to_string(),
            kind,
            invoke_us,
            complete_us,
            outcome,
        });
    }

    /// Distinct keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.ops.iter().map(|o| o.key.as_str()).collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    /// The operations on one key.
    pub fn of_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Op> + 'a {
        self.ops.iter().filter(move |o| o.key == key)
    }
}
