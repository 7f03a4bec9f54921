//! Device usage for the recommendation model: the first telemetry message of each device and
//! UTC day that this bridge sees feeds `device_usage` of `device:{kind}` to the device's
//! customer, before the message is acknowledged. The feed counts it once by id
//! (`device-usage-{device}-{day}`, the same id HTTP telemetry uses), so a redelivered message,
//! a bridge that moved to another node, or the same day's readings over HTTP change nothing
//! more; and a message is not acknowledged until the model has it, so a bridge killed before
//! then has the broker redeliver it. The device is looked up again for each new day, so a
//! change of owner is followed.
//!
//! Not covered: a device erased while its message is between the lookup and the feed can leave
//! one usage interaction in its former customer's taste after that customer's erasure.

use keelson_actors::{DeviceAnswer, DeviceCommand, DomainError};
use keelson_feed::devices::{day_of, used};
use keelson_feed::FeedError;

use super::{Bridge, Transient};
use crate::metrics;

/// Devices whose day of use is remembered at most; past it the memory starts again (a day
/// already fed is then fed again, which counts nothing).
const REMEMBERED: usize = 200_000;

impl Bridge {
    /// Feeds the day of `at_ms` as a day of use of `device`, unless this bridge already did.
    pub(super) async fn usage(&self, device: &str, at_ms: u64) -> Result<(), Transient> {
        let day = day_of(at_ms);
        if self.used.lock().expect("used lock").get(device) == Some(&day) {
            return Ok(());
        }
        let (kind, customer) = match self.device(device, DeviceCommand::Get, None).await? {
            Ok(DeviceAnswer::Device(d)) => (d.kind, d.customer_id),
            // Gone since its message was accepted: nobody's usage.
            Err(DomainError::NotFound { .. }) => return Ok(()),
            other => return Err(Transient(format!("unexpected answer: {other:?}"))),
        };
        if !customer.is_empty() {
            let one = used(device, &kind, at_ms);
            let rid = format!("mqtt-usage-{device}-{day}");
            let m = metrics::get();
            match self.feed.feed(vec![(customer, vec![one])], &rid).await {
                Ok(_) => m.model_feeds.with_label_values(&["fed"]).inc(),
                Err(FeedError::Refused { error, .. }) => {
                    // Nothing a retry would change: the message itself was delivered.
                    m.model_feeds.with_label_values(&["refused"]).inc();
                    tracing::warn!(device, %error, "the model refused a day of device usage");
                }
                Err(e) => {
                    m.model_feeds.with_label_values(&["failed"]).inc();
                    return Err(Transient(format!("model not updated: {e}")));
                }
            }
        }
        let mut used = self.used.lock().expect("used lock");
        if used.len() >= REMEMBERED {
            used.clear();
        }
        used.insert(device.to_string(), day);
        Ok(())
    }
}
