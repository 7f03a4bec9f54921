use std::collections::HashSet;
use std::fmt;

use serde_json::{json, Map, Value};

use super::*;

const NOW: u64 = 1_732_200_000_000;

fn edge() -> Edge {
    Edge::new(EdgeConfig::default()).expect("default config is valid")
}

fn telemetry(seq: u64, readings: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"device_id": "d1", "seq": seq, "ts": NOW, "readings": readings}))
        .unwrap()
}

fn reject(r: Result<impl fmt::Debug, Rejected>) -> Rejected {
    r.expect_err("expected a rejection")
}

/// Rejects `payload` on d1's telemetry topic as a temperature device and returns the rejection.
fn reject_telemetry(payload: &[u8]) -> Rejected {
    reject(edge().check_telemetry("d1", Some("temperature"), payload, NOW))
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

// ---- normalisation -------------------------------------------------------------------------

#[test]
fn a_good_message_is_accepted_with_readings_in_canonical_units() {
    let payload = json!({
        "device_id": "d1", "seq": 42, "ts": NOW,
        "readings": {"temperature": 70.7, "humidity": 0.402, "battery": 88},
        "units": {"temperature": "F", "humidity": "1"}
    });
    let a = edge()
        .check_telemetry(
            "d1",
            Some("temperature"),
            payload.to_string().as_bytes(),
            NOW,
        )
        .unwrap();
    assert_eq!((a.device_id.as_str(), a.seq, a.at_ms), ("d1", 42, NOW));
    assert_eq!(a.readings.len(), 3);
    assert_close(a.readings["temperature"], 21.5);
    assert_close(a.readings["humidity"], 40.2);
    assert_close(a.readings["battery"], 88.0);
}

#[test]
fn heart_rate_in_hz_kelvin_and_canonical_units_are_normalised() {
    let payload = json!({
        "device_id": "w7", "seq": 1, "ts": NOW,
        "readings": {"heart_rate": 1.2, "skin_temperature": 306.15, "spo2": 97, "steps": 1200},
        "units": {"heart_rate": "Hz", "skin_temperature": "K", "spo2": "%"}
    });
    let a = edge()
        .check_telemetry("w7", Some("wearable"), payload.to_string().as_bytes(), NOW)
        .unwrap();
    assert_close(a.readings["heart_rate"], 72.0);
    assert_close(a.readings["skin_temperature"], 33.0);
    assert_close(a.readings["spo2"], 97.0);
    assert_close(a.readings["steps"], 1200.0);
}

#[test]
fn ranges_apply_only_when_the_kind_is_known() {
    let hot = telemetry(1, json!({"temperature": 412.0}));
    let a = edge().check_telemetry("d1", None, &hot, NOW).unwrap();
    assert_close(a.readings["temperature"], 412.0);
    let r = reject(edge().check_telemetry("d1", Some("temperature"), &hot, NOW));
    assert_eq!(r.reason, Reason::OutOfRange);
}

#[test]
fn readings_without_a_range_pass_and_battery_is_checked_for_any_known_kind() {
    let a = edge()
        .check_telemetry(
            "d1",
            Some("camera"),
            &telemetry(1, json!({"lux": 1e6})),
            NOW,
        )
        .unwrap();
    assert_close(a.readings["lux"], 1e6);
    let r = reject(edge().check_telemetry(
        "d1",
        Some("toaster"),
        &telemetry(1, json!({"battery": 101})),
        NOW,
    ));
    assert_eq!(r.reason, Reason::OutOfRange);
    assert_eq!(
        r.detail,
        "readings.battery: 101.0 % is outside 0..100 for a toaster device"
    );
}

// ---- one case per reason, in check order ------------------------------------------------------

#[test]
fn a_payload_over_the_limit_is_too_large() {
    let r = reject_telemetry(&vec![b' '; 1_000_000]);
    assert_eq!(r.reason, Reason::TooLarge);
    assert_eq!(r.detail, "payload is 1000000 bytes, the limit is 16384");
}

#[test]
fn invalid_utf8_is_not_utf8() {
    let mut payload = telemetry(1, json!({"temperature": 20}));
    payload[5] = 0xff;
    let r = reject_telemetry(&payload);
    assert_eq!(r.reason, Reason::NotUtf8);
    assert!(r.detail.contains("offset 5"), "{}", r.detail);
}

#[test]
fn random_bytes_are_rejected_by_an_early_check() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1, 7, 64, 500] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let r = reject_telemetry(&bytes);
        assert!(
            matches!(r.reason, Reason::NotUtf8 | Reason::BadJson),
            "{len} random bytes: {r}"
        );
    }
}

#[test]
fn text_that_is_not_json_is_bad_json() {
    for payload in [&b""[..], b"temperature=21", b"{\"seq\": 1", b"{} {}"] {
        let r = reject_telemetry(payload);
        assert_eq!(r.reason, Reason::BadJson, "{payload:?}");
        assert!(
            r.detail.starts_with("payload is not JSON: "),
            "{}",
            r.detail
        );
    }
}

#[test]
fn schema_violations_are_bad_schema_and_name_the_field() {
    let base = json!({"device_id": "d1", "seq": 1, "ts": NOW, "readings": {"temperature": 20}});
    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        v
    };
    let without = |key: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    };
    let many: Map<String, Value> = (0..33).map(|i| (format!("r{i}"), json!(1))).collect();
    let cases = [
        (without("seq"), "seq: missing"),
        (without("readings"), "readings: missing"),
        (
            with("colour", json!("red")),
            "unknown field \"colour\" (expected device_id, seq, ts, readings, units)",
        ),
        (
            with("seq", json!("42")),
            "seq: expected an integer ≥ 1, got a string (\"42\")",
        ),
        (
            with("seq", json!(0)),
            "seq: expected an integer ≥ 1, got a number (0)",
        ),
        (
            with("seq", json!(-3)),
            "seq: expected an integer ≥ 1, got a number (-3)",
        ),
        (
            with("ts", json!(1.5)),
            "ts: expected an integer ≥ 1, got a number (1.5)",
        ),
        (
            with("device_id", json!(7)),
            "device_id: expected a string, got a number (7)",
        ),
        (
            with("readings", json!({"temperature": "21.5"})),
            "readings.temperature: expected a number, got a string (\"21.5\")",
        ),
        (
            with("readings", json!({"temperature": null})),
            "readings.temperature: expected a number, got null",
        ),
        (
            with("readings", json!({})),
            "readings: 0 entries, expected 1-32 (one per reading)",
        ),
        (
            with("readings", Value::Object(many)),
            "readings: 33 entries, expected 1-32 (one per reading)",
        ),
        (
            with("readings", json!({"Temp": 1})),
            "readings.\"Temp\": name must be 1-32 characters of a-z 0-9 _",
        ),
        (
            with("readings", json!([20])),
            "readings: expected an object, got an array",
        ),
        (
            with("units", json!({"temperature": 1})),
            "units.temperature: expected a string, got a number (1)",
        ),
        (json!([1, 2]), "payload: expected an object, got an array"),
    ];
    for (payload, detail) in cases {
        let r = reject_telemetry(payload.to_string().as_bytes());
        assert_eq!(r.reason, Reason::BadSchema, "{payload}");
        assert_eq!(r.detail, detail, "{payload}");
    }
}

#[test]
fn a_number_too_big_for_f64_is_bad_schema_naming_its_field() {
    let payload = format!(
        r#"{{"device_id": "d1", "seq": 1, "ts": {NOW}, "readings": {{"temperature": 1e400}}}}"#
    );
    let r = reject_telemetry(payload.as_bytes());
    assert_eq!(r.reason, Reason::BadSchema);
    assert!(
        r.detail
            .starts_with("readings.temperature: number out of range"),
        "{}",
        r.detail
    );
}

#[test]
fn a_repeated_key_is_bad_schema() {
    let payload = format!(
        r#"{{"device_id": "d1", "seq": 1, "seq": 2, "ts": {NOW}, "readings": {{"x": 1}}}}"#
    );
    let r = reject_telemetry(payload.as_bytes());
    assert_eq!(r.reason, Reason::BadSchema);
    assert!(
        r.detail.starts_with("seq: field appears twice"),
        "{}",
        r.detail
    );
}

#[test]
fn a_device_id_other_than_the_topics_is_device_mismatch() {
    let r =
        reject(edge().check_telemetry("d2", None, &telemetry(1, json!({"temperature": 20})), NOW));
    assert_eq!(r.reason, Reason::DeviceMismatch);
    assert_eq!(
        r.detail,
        "device_id: \"d1\" differs from \"d2\" in the topic"
    );
}

#[test]
fn unknown_units_and_units_without_a_reading_are_bad_unit() {
    let cases = [
        (
            json!({"temperature": "R"}),
            "units.temperature: unknown unit \"R\" (use C, F or K)",
        ),
        (
            json!({"humidity": "F"}),
            "units.humidity: unknown unit \"F\" (use % or 1 (a 0..1 ratio))",
        ),
        (
            json!({"lux": "lx"}),
            "units.lux: unknown unit \"lx\" (use none: this reading takes no unit)",
        ),
        (
            json!({"pressure": "hPa"}),
            "units.pressure: there is no reading \"pressure\" to apply it to",
        ),
    ];
    for (units, detail) in cases {
        let payload = json!({
            "device_id": "d1", "seq": 1, "ts": NOW,
            "readings": {"temperature": 20, "humidity": 50, "lux": 300},
            "units": units
        });
        let r = reject_telemetry(payload.to_string().as_bytes());
        assert_eq!(r.reason, Reason::BadUnit, "{units}");
        assert_eq!(r.detail, detail);
    }
}

#[test]
fn implausible_readings_are_out_of_range() {
    let r = reject_telemetry(&telemetry(1, json!({"temperature": 412.0})));
    assert_eq!(r.reason, Reason::OutOfRange);
    assert_eq!(
        r.detail,
        "readings.temperature: 412.0 °C is outside -40..80 for a temperature device"
    );
}

#[test]
fn the_range_check_applies_after_unit_conversion_and_mentions_what_was_sent() {
    // 200 F is 93.3 °C: too hot, although 200 would be a plausible humidity.
    let payload = json!({
        "device_id": "d1", "seq": 1, "ts": NOW,
        "readings": {"temperature": 200.0}, "units": {"temperature": "F"}
    });
    let r = reject_telemetry(payload.to_string().as_bytes());
    assert_eq!(r.reason, Reason::OutOfRange);
    assert!(r.detail.contains("(sent as 200.0 F)"), "{}", r.detail);
    // 0.95 as a ratio is 95 %: inside the range although the raw value is tiny.
    let ok = json!({
        "device_id": "d1", "seq": 2, "ts": NOW,
        "readings": {"spo2": 0.95}, "units": {"spo2": "1"}
    });
    edge()
        .check_telemetry("d1", Some("wearable"), ok.to_string().as_bytes(), NOW)
        .unwrap();
}

#[test]
fn a_timestamp_outside_the_window_around_now_is_out_of_range() {
    let skew = EdgeConfig::default().samples.max_future_ms;
    let at = |ts: u64| {
        serde_json::to_vec(&json!({"device_id": "d1", "seq": 1, "ts": ts, "readings": {"x": 1}}))
            .unwrap()
    };
    edge()
        .check_telemetry("d1", None, &at(NOW + skew), NOW)
        .expect("exactly the allowed skew passes");
    let r = reject(edge().check_telemetry("d1", None, &at(NOW + skew + 1), NOW));
    assert_eq!(r.reason, Reason::OutOfRange);
    assert!(r.detail.starts_with("ts: "), "{}", r.detail);
    let past = EdgeConfig::default().samples.max_past_ms;
    edge()
        .check_telemetry("d1", None, &at(NOW - past), NOW)
        .expect("timestamps as old as the window pass");
    let r = reject(edge().check_telemetry("d1", None, &at(NOW - past - 1), NOW));
    assert_eq!(r.reason, Reason::OutOfRange);
    assert!(r.detail.starts_with("ts: "), "{}", r.detail);
    for edge_of_type in [1, u64::MAX] {
        let r = reject(edge().check_telemetry("d1", None, &at(edge_of_type), NOW));
        assert!(r.detail.starts_with("ts: "), "{}", r.detail);
    }
}

#[test]
fn a_conversion_that_overflows_is_out_of_range_even_without_a_kind() {
    let payload = json!({
        "device_id": "d1", "seq": 1, "ts": NOW,
        "readings": {"battery": 1e307}, "units": {"battery": "1"}
    });
    let r = reject(edge().check_telemetry("d1", None, payload.to_string().as_bytes(), NOW));
    assert_eq!(r.reason, Reason::OutOfRange);
}

#[test]
fn a_bad_device_id_in_the_topic_is_bad_topic() {
    let e = edge();
    let good = telemetry(1, json!({"x": 1}));
    for id in ["", "d/1", "d 1", &"d".repeat(65)] {
        let r = reject(edge().check_telemetry(id, None, &good, NOW));
        assert_eq!(r.reason, Reason::BadTopic, "{id:?}");
        assert_eq!(reject(e.check_reported(id, b"{}")).reason, Reason::BadTopic);
        assert_eq!(reject(e.check_ack(id, b"{}")).reason, Reason::BadTopic);
    }
    assert_eq!(
        Rejected::bad_topic("keelson/x").reason.as_str(),
        "bad_topic"
    );
}

#[test]
fn unknown_device_is_the_bridges_verdict() {
    let r = Rejected::unknown_device("d9");
    assert_eq!(r.reason, Reason::UnknownDevice);
    assert_eq!(
        r.to_string(),
        "unknown_device: device \"d9\" is not registered"
    );
}

#[test]
fn reason_labels_are_stable_and_distinct() {
    let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "too_large",
            "not_utf8",
            "bad_json",
            "bad_schema",
            "device_mismatch",
            "bad_unit",
            "out_of_range",
            "duplicate",
            "rate_limited",
            "unknown_device",
            "bad_topic",
            "refused"
        ]
    );
    assert_eq!(Reason::RateLimited.to_string(), "rate_limited");
}

#[test]
fn the_first_failing_check_in_order_wins() {
    // Wrong device, unknown unit and out of range at once: the device check comes first.
    let payload = json!({
        "device_id": "other", "seq": 1, "ts": NOW,
        "readings": {"temperature": 999}, "units": {"temperature": "R"}
    });
    let mut e = edge();
    let r = reject(e.check_telemetry(
        "d1",
        Some("temperature"),
        payload.to_string().as_bytes(),
        NOW,
    ));
    assert_eq!(r.reason, Reason::DeviceMismatch);
    assert_eq!(
        e.tracked_devices(),
        0,
        "a rejected message creates no state"
    );
}

// ---- duplicates and the rate limit ------------------------------------------------------------

#[test]
fn a_repeated_seq_is_a_duplicate_and_does_not_take_a_token() {
    let cfg = EdgeConfig {
        burst: 2.0,
        ..EdgeConfig::default()
    };
    let mut e = Edge::new(cfg).unwrap();
    let m1 = telemetry(1, json!({"x": 1}));
    e.check_telemetry("d1", None, &m1, NOW).unwrap();
    for _ in 0..5 {
        let r = reject(e.check_telemetry("d1", None, &m1, NOW));
        assert_eq!(r.reason, Reason::Duplicate);
        assert_eq!(r.detail, "seq: 1 was already received from this device");
    }
    e.check_telemetry("d1", None, &telemetry(2, json!({"x": 1})), NOW)
        .expect("duplicates took no token: the second of the burst of 2 is left");
}

#[test]
fn seqs_are_per_device() {
    let mut e = edge();
    let m = |id: &str| {
        serde_json::to_vec(&json!({"device_id": id, "seq": 1, "ts": NOW, "readings": {"x": 1}}))
            .unwrap()
    };
    e.check_telemetry("d1", None, &m("d1"), NOW).unwrap();
    e.check_telemetry("d2", None, &m("d2"), NOW).unwrap();
}

#[test]
fn a_rejected_message_is_not_remembered_as_seen() {
    let mut e = edge();
    let bad = telemetry(7, json!({"temperature": 412}));
    assert_eq!(
        reject(e.check_telemetry("d1", Some("temperature"), &bad, NOW)).reason,
        Reason::OutOfRange
    );
    e.check_telemetry(
        "d1",
        Some("temperature"),
        &telemetry(7, json!({"temperature": 21})),
        NOW,
    )
    .expect("seq 7 was never accepted");
}

#[test]
fn the_duplicate_window_covers_the_last_512_seqs() {
    let mut e = Edge::new(EdgeConfig {
        burst: 10_000.0,
        ..EdgeConfig::default()
    })
    .unwrap();
    for seq in 1..=1000 {
        e.check_telemetry("d1", None, &telemetry(seq, json!({"x": 1})), NOW)
            .unwrap();
    }
    for seq in 489..=1000 {
        let r = reject(e.check_telemetry("d1", None, &telemetry(seq, json!({"x": 1})), NOW));
        assert_eq!(r.reason, Reason::Duplicate, "seq {seq} is in the window");
    }
    e.check_telemetry("d1", None, &telemetry(488, json!({"x": 1})), NOW)
        .expect("older than the window: passed on for the actor to dedupe");
}

#[test]
fn the_seen_window_agrees_with_a_set_of_the_last_512() {
    let mut window = SeenWindow::default();
    let mut model: HashSet<u64> = HashSet::new();
    let mut x: u64 = 12345;
    let mut base: u64 = 1;
    let mut top: u64 = 0;
    for _ in 0..20_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = x >> 33;
        // Mostly near the top, sometimes a jump ahead of up to 2000.
        let seq = if r.is_multiple_of(50) {
            base += r % 2000;
            base
        } else {
            base.saturating_sub(r % 600).max(1) + r % 3
        };
        let expected = model.contains(&seq) && top - seq < 512;
        assert_eq!(window.contains(seq), expected, "seq {seq}, top {top}");
        window.insert(seq);
        model.insert(seq);
        top = top.max(seq);
        base = base.max(seq);
    }
}

#[test]
fn the_rate_limit_allows_a_burst_then_refills_over_time() {
    let mut e = edge(); // 20/s, burst 40
    let mut seq = 0;
    let mut send = |e: &mut Edge, now: u64| {
        seq += 1;
        e.check_telemetry("d1", None, &telemetry(seq, json!({"x": 1})), now)
    };
    for _ in 0..40 {
        send(&mut e, NOW).expect("within the burst");
    }
    let r = reject(send(&mut e, NOW));
    assert_eq!(r.reason, Reason::RateLimited);
    assert_eq!(r.detail, "device sends more than 20 messages/s (burst 40)");
    // 50 ms at 20/s is exactly one token.
    send(&mut e, NOW + 49).expect_err("0.98 of a token is not enough");
    send(&mut e, NOW + 50).expect("one token refilled");
    send(&mut e, NOW + 50).expect_err("and spent");
    // A long silence refills to the burst, not beyond.
    for _ in 0..40 {
        send(&mut e, NOW + 3_600_000).expect("refilled to the burst");
    }
    send(&mut e, NOW + 3_600_000).expect_err("burst is the cap");
}

#[test]
fn a_rate_limited_message_is_not_remembered_as_seen() {
    let mut e = Edge::new(EdgeConfig {
        burst: 1.0,
        rate_per_s: 1.0,
        ..EdgeConfig::default()
    })
    .unwrap();
    e.check_telemetry("d1", None, &telemetry(1, json!({"x": 1})), NOW)
        .unwrap();
    let m2 = telemetry(2, json!({"x": 1}));
    assert_eq!(
        reject(e.check_telemetry("d1", None, &m2, NOW)).reason,
        Reason::RateLimited
    );
    e.check_telemetry("d1", None, &m2, NOW + 1000)
        .expect("the retry after a refill is not a duplicate");
}

#[test]
fn a_clock_going_backwards_refills_nothing() {
    let mut e = Edge::new(EdgeConfig {
        burst: 1.0,
        ..EdgeConfig::default()
    })
    .unwrap();
    e.check_telemetry("d1", None, &telemetry(1, json!({"x": 1})), NOW)
        .unwrap();
    let r = reject(e.check_telemetry("d1", None, &telemetry(2, json!({"x": 1})), NOW - 60_000));
    assert_eq!(r.reason, Reason::RateLimited);
}

// ---- bounded memory ---------------------------------------------------------------------------

#[test]
fn at_most_max_devices_are_tracked_and_the_least_recently_seen_goes() {
    let mut e = Edge::new(EdgeConfig {
        max_devices: 3,
        ..EdgeConfig::default()
    })
    .unwrap();
    let send = |e: &mut Edge, id: &str, seq: u64| {
        let m = serde_json::to_vec(
            &json!({"device_id": id, "seq": seq, "ts": NOW, "readings": {"x": 1}}),
        )
        .unwrap();
        e.check_telemetry(id, None, &m, NOW)
    };
    send(&mut e, "a", 1).unwrap();
    send(&mut e, "b", 1).unwrap();
    send(&mut e, "c", 1).unwrap();
    // A duplicate from "a" still counts as seeing it: "b" is now the least recent.
    assert_eq!(reject(send(&mut e, "a", 1)).reason, Reason::Duplicate);
    send(&mut e, "d", 1).unwrap();
    assert_eq!(e.tracked_devices(), 3);
    assert!(!e.is_tracked("b"));
    assert!(e.is_tracked("a") && e.is_tracked("c") && e.is_tracked("d"));
    send(&mut e, "b", 1).expect("b was forgotten, so seq 1 is new again");
    assert!(!e.is_tracked("c"));
    for i in 0..100 {
        send(&mut e, &format!("x{i}"), 1).unwrap();
    }
    assert_eq!(e.tracked_devices(), 3);
    assert_eq!(
        e.by_recency.len(),
        3,
        "the recency index shrinks with the map"
    );
}

// ---- config -----------------------------------------------------------------------------------

#[test]
fn the_default_config_has_plausible_ranges() {
    let c = EdgeConfig::default();
    assert_eq!(c.max_payload_bytes, 16 * 1024);
    assert_eq!(c.range("temperature", "temperature"), Some((-40.0, 80.0)));
    assert_eq!(c.range("humidity", "humidity"), Some((0.0, 100.0)));
    assert_eq!(c.range("wearable", "heart_rate"), Some((20.0, 250.0)));
    assert_eq!(c.range("wearable", "spo2"), Some((50.0, 100.0)));
    assert_eq!(c.range("camera", "fps"), Some((0.0, 120.0)));
    assert_eq!(c.range("anything", "battery"), Some((0.0, 100.0)));
    assert_eq!(c.range("camera", "temperature"), None);
}

#[test]
fn an_unusable_config_is_refused_naming_the_field() {
    let mut c = EdgeConfig {
        rate_per_s: 0.0,
        ..EdgeConfig::default()
    };
    assert_eq!(Edge::new(c.clone()).unwrap_err().field, "rate_per_s");
    c.rate_per_s = 5.0;
    c.ranges
        .get_mut("wearable")
        .unwrap()
        .insert("spo2".into(), (100.0, 50.0));
    let err = Edge::new(c).unwrap_err();
    assert_eq!(err.field, "ranges.wearable.spo2");
    assert_eq!(
        err.to_string(),
        "edge config: ranges.wearable.spo2: must be finite with min ≤ max, got 100..50"
    );
}

#[test]
fn the_config_reads_from_json_with_defaults_and_refuses_unknown_fields() {
    let c: EdgeConfig = serde_json::from_value(json!({"burst": 5.0})).unwrap();
    assert_eq!((c.burst, c.rate_per_s), (5.0, 20.0));
    assert!(serde_json::from_value::<EdgeConfig>(json!({"brust": 5.0})).is_err());
}

// ---- reported twin ----------------------------------------------------------------------------

#[test]
fn a_reported_twin_is_parsed_into_scalars() {
    let payload = json!({"version": 3, "state": {"mode": "eco", "interval_s": 30, "led": true}});
    let t = edge()
        .check_reported("d1", payload.to_string().as_bytes())
        .unwrap();
    assert_eq!(t.version, Some(3));
    assert_eq!(t.state["mode"], Scalar::Text("eco".into()));
    assert_eq!(t.state["interval_s"], Scalar::Number(30.0));
    assert_eq!(t.state["led"], Scalar::Bool(true));
    let t = edge()
        .check_reported("d1", br#"{"state": {"a": 1.5}}"#)
        .unwrap();
    assert_eq!(t.version, None);
}

#[test]
fn a_bad_reported_twin_is_rejected_naming_the_field() {
    let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(1))).collect();
    let cases = [
        (
            json!({"state": {"cfg": {"a": 1}}}),
            "state.cfg: expected a boolean, number or string, got an object",
        ),
        (
            json!({"state": {"list": [1]}}),
            "state.list: expected a boolean, number or string, got an array",
        ),
        (
            json!({"state": {"gone": null}}),
            "state.gone: expected a boolean, number or string, got null",
        ),
        (
            json!({"state": {"s": "x".repeat(257)}}),
            "state.s: 257 characters, the limit is 256",
        ),
        (
            json!({"state": {}}),
            "state: 0 entries, expected 1-64 (one per key)",
        ),
        (
            json!({"state": Value::Object(many)}),
            "state: 65 entries, expected 1-64 (one per key)",
        ),
        (
            json!({"state": {"Mode": 1}}),
            "state.\"Mode\": name must be 1-32 characters of a-z 0-9 _",
        ),
        (
            json!({"version": -1, "state": {"a": 1}}),
            "version: expected an integer ≥ 0, got a number (-1)",
        ),
        (json!({"version": 1}), "state: missing"),
        (
            json!({"state": {"a": 1}, "desired": {}}),
            "unknown field \"desired\" (expected version, state)",
        ),
    ];
    for (payload, detail) in cases {
        let r = reject(edge().check_reported("d1", payload.to_string().as_bytes()));
        assert_eq!(r.reason, Reason::BadSchema, "{payload}");
        assert_eq!(r.detail, detail);
    }
    let r = reject(edge().check_reported("d1", br#"{"state": {"a": 1e999}}"#));
    assert_eq!(r.reason, Reason::BadSchema);
    assert!(
        r.detail.starts_with("state.a: number out of range"),
        "{}",
        r.detail
    );
    let r = reject(edge().check_reported("d1", b"{\"state\": "));
    assert_eq!(r.reason, Reason::BadJson);
}

// ---- acks -------------------------------------------------------------------------------------

#[test]
fn an_ack_is_parsed() {
    let a = edge()
        .check_ack(
            "d1",
            br#"{"command_id": "cmd-17", "status": "failed", "detail": "sensor busy"}"#,
        )
        .unwrap();
    assert_eq!(
        a,
        CommandAckMsg {
            command_id: "cmd-17".into(),
            status: AckStatus::Failed,
            detail: Some("sensor busy".into()),
        }
    );
    let a = edge()
        .check_ack("d1", br#"{"command_id": "c1", "status": "ok"}"#)
        .unwrap();
    assert_eq!((a.status, a.detail), (AckStatus::Ok, None));
    let a = edge()
        .check_ack("d1", br#"{"command_id": "c1", "status": "rejected"}"#)
        .unwrap();
    assert_eq!(a.status, AckStatus::Rejected);
}

#[test]
fn a_bad_ack_is_rejected_naming_the_field() {
    let cases = [
        (json!({"status": "ok"}), "command_id: missing"),
        (json!({"command_id": "c1"}), "status: missing"),
        (
            json!({"command_id": "c1", "status": "done"}),
            "status: \"done\" is not one of \"ok\", \"failed\", \"rejected\"",
        ),
        (
            json!({"command_id": 5, "status": "ok"}),
            "command_id: expected a string, got a number (5)",
        ),
        (
            json!({"command_id": "", "status": "ok"}),
            "command_id: \"\" must be 1-64 characters of A-Z a-z 0-9 _ - . :",
        ),
        (
            json!({"command_id": "c1", "status": "ok", "detail": "x".repeat(257)}),
            "detail: 257 characters, the limit is 256",
        ),
        (
            json!({"command_id": "c1", "status": "ok", "at": 1}),
            "unknown field \"at\" (expected command_id, status, detail)",
        ),
    ];
    for (payload, detail) in cases {
        let r = reject(edge().check_ack("d1", payload.to_string().as_bytes()));
        assert_eq!(r.reason, Reason::BadSchema, "{payload}");
        assert_eq!(r.detail, detail);
    }
    let r = reject(edge().check_ack("d1", &[0xc3, 0x28]));
    assert_eq!(r.reason, Reason::NotUtf8);
}

// ---- topics -----------------------------------------------------------------------------------

#[test]
fn device_topics_are_parsed() {
    assert_eq!(
        parse_topic("keelson/devices/d-1_A/telemetry"),
        Some((DeviceTopic::Telemetry, "d-1_A"))
    );
    assert_eq!(
        parse_topic("keelson/devices/d1/twin/reported"),
        Some((DeviceTopic::Reported, "d1"))
    );
    assert_eq!(
        parse_topic("keelson/devices/d1/acks"),
        Some((DeviceTopic::Ack, "d1"))
    );
    let long = format!("keelson/devices/{}/acks", "a".repeat(64));
    assert!(parse_topic(&long).is_some());
}

#[test]
fn other_topics_are_not_device_topics() {
    let too_long = format!("keelson/devices/{}/acks", "a".repeat(65));
    for topic in [
        "",
        "keelson/devices/d1",
        "keelson/devices/d1/",
        "keelson/devices//telemetry",
        "keelson/devices/d1/telemetry/",
        "keelson/devices/d1/twin/desired",
        "keelson/devices/d1/twin",
        "keelson/devices/d.1/telemetry",
        "keelson/devices/+/telemetry",
        "keelson/devices/d1/x/telemetry",
        "other/devices/d1/telemetry",
        "/keelson/devices/d1/telemetry",
        too_long.as_str(),
        DEADLETTER_TOPIC,
    ] {
        assert_eq!(parse_topic(topic), None, "{topic:?}");
    }
}

// ---- deadletter -------------------------------------------------------------------------------

#[test]
fn a_deadletter_for_utf8_carries_the_text_truncated_to_1024_chars() {
    let payload = "é".repeat(2000);
    let r = Rejected::new(Reason::BadJson, "payload is not JSON: expected value");
    let doc: Value = serde_json::from_slice(&deadletter(
        "keelson/devices/d1/telemetry",
        payload.as_bytes(),
        &r,
        77,
    ))
    .unwrap();
    assert_eq!(
        doc,
        json!({
            "topic": "keelson/devices/d1/telemetry",
            "reason": "bad_json",
            "detail": "payload is not JSON: expected value",
            "at_ms": 77,
            "payload_bytes": 4000,
            "payload": "é".repeat(1024),
        })
    );
}

#[test]
fn a_deadletter_for_a_short_utf8_payload_carries_it_whole() {
    let r = reject_telemetry(br#"{"seq": 1}"#);
    let doc: Value = serde_json::from_slice(&deadletter("t", br#"{"seq": 1}"#, &r, 5)).unwrap();
    assert_eq!(doc["payload"], r#"{"seq": 1}"#);
    assert_eq!(doc["reason"], "bad_schema");
    assert!(doc.get("payload_hex").is_none());
}

#[test]
fn a_deadletter_for_binary_carries_hex_of_the_first_256_bytes() {
    let payload: Vec<u8> = (0..300u32).map(|i| (i % 256) as u8 | 0x80).collect();
    let r = reject_telemetry(&payload);
    assert_eq!(r.reason, Reason::NotUtf8);
    let doc: Value = serde_json::from_slice(&deadletter("t", &payload, &r, 9)).unwrap();
    let hex = doc["payload_hex"].as_str().unwrap();
    assert_eq!(hex.len(), 512);
    assert!(hex.starts_with("8081828384"), "{hex}");
    assert_eq!(doc["payload_bytes"], 300);
    assert_eq!(doc["reason"], "not_utf8");
    assert!(doc.get("payload").is_none());
    let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
}
