//! The devices registered to a customer: the list an erasure walks to remove them.

use super::state::CustomerState;
use crate::validate::{invalid, DomainError};

/// Most devices one customer may own.
pub const MAX_DEVICES: usize = 1_000;

impl CustomerState {
    /// Adds `device_id` unless it is listed already; returns whether the list changed. Refused
    /// past [`MAX_DEVICES`].
    pub(super) fn link_device(
        &mut self,
        device_id: String,
        now_ms: u64,
    ) -> Result<bool, DomainError> {
        if self.devices.contains(&device_id) {
            return Ok(false);
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(invalid(
                "customer_id",
                format!("the customer already owns the maximum of {MAX_DEVICES} devices"),
            ));
        }
        self.devices.push(device_id);
        self.touch(now_ms);
        Ok(true)
    }
}
