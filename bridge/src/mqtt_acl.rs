//! What an authenticated MQTT client may publish and subscribe to. Pure; the broker's gate
//! (`mqtt_gate`) asks it for every PUBLISH and SUBSCRIBE.
//!
//! | who | publish | subscribe |
//! | --- | --- | --- |
//! | a service (`keelson-*`) | anything | anything |
//! | device `{id}` | `keelson/devices/{id}/telemetry`, `.../twin/reported`, `.../acks` | exactly `keelson/devices/{id}/commands`, `.../twin/desired` |
//!
//! A device's filters are compared as exact strings: no wildcard, no `$share/`, no `$SYS`.

use crate::topics;

/// Who an MQTT connection proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// One of Keelson's services.
    Service(String),
    /// A device.
    Device(String),
}

/// Whether `who` may publish on `topic`.
pub fn may_publish(who: &Identity, topic: &str) -> bool {
    match who {
        Identity::Service(_) => true,
        Identity::Device(id) => {
            topic == topics::telemetry(id)
                || topic == topics::reported(id)
                || topic == topics::acks(id)
        }
    }
}

/// Whether `who` may subscribe to `filter`.
pub fn may_subscribe(who: &Identity, filter: &str) -> bool {
    match who {
        Identity::Service(_) => true,
        Identity::Device(id) => filter == topics::commands(id) || filter == topics::desired(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_touches_only_its_own_topics() {
        let a = Identity::Device("a".into());
        for t in [
            "keelson/devices/a/telemetry",
            "keelson/devices/a/twin/reported",
            "keelson/devices/a/acks",
        ] {
            assert!(may_publish(&a, t), "{t}");
        }
        for t in [
            "keelson/devices/b/telemetry",
            "keelson/devices/a/commands",
            "keelson/devices/a/twin/desired",
            "keelson/deadletter",
            "keelson/devices/a/telemetry/x",
            "keelson/devices/+/telemetry",
        ] {
            assert!(!may_publish(&a, t), "{t}");
        }
        assert!(may_subscribe(&a, "keelson/devices/a/commands"));
        assert!(may_subscribe(&a, "keelson/devices/a/twin/desired"));
        for f in [
            "keelson/#",
            "#",
            "keelson/devices/+/commands",
            "keelson/devices/b/commands",
            "keelson/deadletter",
            "$share/g/keelson/devices/a/commands",
            "$SYS/#",
            "keelson/devices/a/telemetry",
        ] {
            assert!(!may_subscribe(&a, f), "{f}");
        }
        let s = Identity::Service("keelson-bridge-x".into());
        assert!(may_publish(&s, "keelson/deadletter") && may_subscribe(&s, "keelson/#"));
    }
}
