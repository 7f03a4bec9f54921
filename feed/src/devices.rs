//! What a device is to the model: customers who own or use the same kinds of device are alike,
//! and a device kind can be recommended like any item. One definition for every feeder (the
//! gateway's device routes, the MQTT bridge), so the same day of use counts once by id whichever
//! way its readings came.

use keelson_actors::TasteInteraction;

const DAY_MS: u64 = 86_400_000;

/// The item a device of `kind` is to the model.
pub fn device_item(kind: &str) -> String {
    format!("device:{kind}")
}

/// The UTC day (days since the Unix epoch) of `at_ms` (ms since the Unix epoch).
pub fn day_of(at_ms: u64) -> u64 {
    at_ms / DAY_MS
}

/// A customer owns `device` of `kind`: counted once per device.
pub fn owned(device: &str, kind: &str) -> TasteInteraction {
    TasteInteraction {
        id: format!("device-owned-{device}"),
        kind: "device_owned".to_string(),
        item: device_item(kind),
    }
}

/// `device` of `kind` was used on the day of `at_ms`: counted once per device and UTC day,
/// however many readings the day brings.
pub fn used(device: &str, kind: &str, at_ms: u64) -> TasteInteraction {
    TasteInteraction {
        id: format!("device-usage-{device}-{}", day_of(at_ms)),
        kind: "device_usage".to_string(),
        item: device_item(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_of_one_utc_day_are_one_interaction_and_the_next_day_another() {
        let first = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
        let a = used("d1", "wearable", first);
        let b = used("d1", "wearable", first + DAY_MS - 1);
        let c = used("d1", "wearable", first + DAY_MS);
        assert_eq!(a, b);
        assert_ne!(a.id, c.id);
        assert_eq!(a.item, "device:wearable");
        assert_eq!(a.kind, "device_usage");
        assert_ne!(used("d2", "wearable", first).id, a.id, "per device");
    }

    #[test]
    fn owning_counts_once_per_device() {
        assert_eq!(owned("d1", "meter"), owned("d1", "meter"));
        assert_eq!(owned("d1", "meter").kind, "device_owned");
        assert_ne!(owned("d1", "meter").id, owned("d2", "meter").id);
    }
}
