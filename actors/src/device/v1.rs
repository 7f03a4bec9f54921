//! Version 1 of the persisted device state: identity and last readings only. Frozen: loaded
//! states of this version are converted by [`From`] with everything added later empty.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::state;

/// `STATE_VERSION` of this shape.
pub(crate) const VERSION: u8 = 1;

/// A device as version 1 stored it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceState {
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub firmware: String,
    pub last_readings: BTreeMap<String, f64>,
    pub last_telemetry_ms: Option<u64>,
    pub telemetry_count: u64,
    pub version: u64,
    pub created_ms: u64,
}

impl From<DeviceState> for state::DeviceState {
    fn from(old: DeviceState) -> Self {
        Self {
            id: old.id,
            customer_id: old.customer_id,
            kind: old.kind,
            firmware: old.firmware,
            last_readings: old.last_readings,
            last_telemetry_ms: old.last_telemetry_ms,
            telemetry_count: old.telemetry_count,
            version: old.version,
            created_ms: old.created_ms,
            telemetry: Default::default(),
            detector: Default::default(),
            alerts: VecDeque::new(),
            twin: Default::default(),
            commands: VecDeque::new(),
        }
    }
}
