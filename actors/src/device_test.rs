use super::*;
use crate::MAX_REF_LEN;
use keelson_runtime::encode_payload;
use std::collections::BTreeMap;

const MIN: u64 = 60_000;

/// Bounds that let these tests use small clock values; the bounds themselves are tested below.
const LOOSE: SampleLimits = SampleLimits {
    max_future_ms: u64::MAX,
    max_past_ms: u64::MAX,
    max_seq_jump: MAX_SEQ,
};

fn ctx(now_ms: u64) -> EntityContext<'static> {
    EntityContext::new("d1", now_ms)
}

fn run(state: &mut Option<DeviceState>, cmd: DeviceCommand, now: u64) -> Handled<DeviceReply> {
    Device::handle(&ctx(now), state, cmd).unwrap()
}

fn register() -> DeviceCommand {
    DeviceCommand::Register(NewDevice {
        customer_id: "c1".into(),
        kind: "temperature".into(),
        firmware: "1.0.3".into(),
    })
}

fn registered() -> Option<DeviceState> {
    let mut s = None;
    assert!(run(&mut s, register(), 1).changed);
    s
}

fn readings(values: &[(&str, f64)]) -> BTreeMap<String, f64> {
    values.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn ingest(seq: u64, at_ms: u64, values: &[(&str, f64)]) -> DeviceCommand {
    DeviceCommand::Ingest {
        seq,
        at_ms,
        readings: readings(values),
        anomaly: AnomalyConfig::default(),
        limits: LOOSE,
    }
}

fn outcome(h: &Handled<DeviceReply>) -> IngestOutcome {
    match &h.reply {
        Ok(DeviceAnswer::Ingested(o)) => o.clone(),
        other => panic!("expected an ingest outcome, got {other:?}"),
    }
}

fn view(h: &Handled<DeviceReply>) -> DeviceView {
    match &h.reply {
        Ok(DeviceAnswer::Device(v)) => v.clone(),
        other => panic!("expected a device, got {other:?}"),
    }
}

fn twin(h: &Handled<DeviceReply>) -> TwinView {
    match &h.reply {
        Ok(DeviceAnswer::Twin(t)) => t.clone(),
        other => panic!("expected a twin, got {other:?}"),
    }
}

fn command(h: &Handled<DeviceReply>) -> CommandRecord {
    match &h.reply {
        Ok(DeviceAnswer::Command(c)) => c.clone(),
        other => panic!("expected a command, got {other:?}"),
    }
}

fn alert(h: &Handled<DeviceReply>) -> Alert {
    match &h.reply {
        Ok(DeviceAnswer::Alert(a)) => a.clone(),
        other => panic!("expected an alert, got {other:?}"),
    }
}

fn telemetry(s: &mut Option<DeviceState>, since_ms: u64) -> TelemetryView {
    match run(s, DeviceCommand::GetTelemetry { since_ms }, 0).reply {
        Ok(DeviceAnswer::Telemetry(t)) => t,
        other => panic!("expected telemetry, got {other:?}"),
    }
}

fn text(s: &str) -> TwinValue {
    TwinValue::Text(s.into())
}

// ---- the HTTP path, as before ----

#[test]
fn register_then_telemetry_updates_last_readings() {
    let mut s = registered();
    let t = Telemetry {
        readings: readings(&[("celsius", 21.5)]),
        at_ms: Some(40),
        limits: LOOSE,
    };
    let h = run(&mut s, DeviceCommand::Telemetry(t), 50);
    assert!(h.changed);
    let d = view(&h);
    assert_eq!(d.last_readings["celsius"], 21.5);
    assert_eq!(
        (d.last_telemetry_ms, d.telemetry_count, d.version),
        (Some(40), 1, 2)
    );
    // Without a sequence number each message is numbered after the highest seen.
    let t = Telemetry {
        readings: readings(&[("celsius", 22.0)]),
        at_ms: None,
        limits: LOOSE,
    };
    let d = view(&run(&mut s, DeviceCommand::Telemetry(t), 60));
    assert_eq!(
        (d.highest_seq, d.telemetry_count, d.last_telemetry_ms),
        (Some(1), 2, Some(60))
    );
}

#[test]
fn bad_telemetry_is_refused_and_changes_nothing() {
    let mut s = registered();
    let before = s.clone();
    let t = Telemetry {
        readings: readings(&[("celsius", f64::NAN)]),
        at_ms: None,
        limits: LOOSE,
    };
    let h = run(&mut s, DeviceCommand::Telemetry(t), 50);
    assert!(!h.changed);
    assert!(
        matches!(h.reply, Err(DomainError::Invalid { ref field, .. }) if field == "readings.celsius")
    );
    assert_eq!(s, before);
}

#[test]
fn commands_for_an_unregistered_device_are_not_found() {
    for cmd in [
        DeviceCommand::Telemetry(Telemetry {
            readings: readings(&[("x", 1.0)]),
            at_ms: None,
            limits: LOOSE,
        }),
        ingest(1, 1, &[("x", 1.0)]),
        DeviceCommand::GetTwin,
        DeviceCommand::CommandSent { id: "c".into() },
    ] {
        let h = run(&mut None, cmd, 1);
        assert!(matches!(h.reply, Err(DomainError::NotFound { ref kind, .. }) if kind == "device"));
    }
}

#[test]
fn registering_twice_is_refused() {
    let mut s = registered();
    let h = run(&mut s, register(), 2);
    assert!(matches!(h.reply, Err(DomainError::AlreadyExists { .. })));
    assert!(!h.changed);
}

// ---- deduplication by sequence number ----

#[test]
fn an_exact_redelivery_changes_nothing() {
    let mut s = registered();
    assert!(!outcome(&run(&mut s, ingest(7, 1_000, &[("humidity", 40.0)]), 2)).duplicate);
    let before = s.clone();
    let h = run(&mut s, ingest(7, 1_000, &[("humidity", 41.0)]), 3);
    assert_eq!(
        outcome(&h),
        IngestOutcome {
            duplicate: true,
            alert: None
        }
    );
    assert!(!h.changed);
    assert_eq!(s, before);
}

#[test]
fn a_seq_more_than_the_window_below_the_highest_is_a_duplicate() {
    let mut s = registered();
    run(&mut s, ingest(1_000, 1_000, &[("humidity", 40.0)]), 2);
    let oldest_kept = 1_000 - SEQ_WINDOW;
    let h = run(
        &mut s,
        ingest(oldest_kept - 1, 900, &[("humidity", 40.0)]),
        3,
    );
    assert!(outcome(&h).duplicate && !h.changed);
    let h = run(&mut s, ingest(oldest_kept, 900, &[("humidity", 40.0)]), 4);
    assert!(!outcome(&h).duplicate && h.changed);
}

#[test]
fn out_of_order_seqs_within_the_window_are_accepted_once() {
    let mut s = registered();
    for seq in [10, 12, 11, 9] {
        let h = run(&mut s, ingest(seq, seq * 1_000, &[("humidity", 40.0)]), 2);
        assert!(!outcome(&h).duplicate, "seq {seq}");
    }
    for seq in [9, 10, 11, 12] {
        assert!(outcome(&run(&mut s, ingest(seq, 0, &[("humidity", 1.0)]), 3)).duplicate);
    }
    let d = view(&run(&mut s, DeviceCommand::Get, 4));
    assert_eq!((d.telemetry_count, d.highest_seq), (4, Some(12)));
    // The newest sample by time sets the last readings, whatever order they arrived in.
    assert_eq!(d.last_telemetry_ms, Some(12_000));
}

#[test]
fn the_seq_window_matches_a_set_of_everything_seen() {
    let mut w = telemetry::SeqWindow::default();
    let mut seen = std::collections::BTreeSet::new();
    // A deterministic walk with jumps across word boundaries and beyond the window.
    let mut x: u64 = 12_345;
    for _ in 0..5_000 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let seq = (x >> 33) % 2_000;
        let highest = seen.last().copied();
        let model_dup =
            seen.contains(&seq) || highest.is_some_and(|h: u64| h > seq && h - seq > SEQ_WINDOW);
        assert_eq!(w.accept(seq), !model_dup, "seq {seq}, highest {highest:?}");
        if !model_dup {
            seen.insert(seq);
        }
    }
}

// ---- the recent window and the history ----

#[test]
fn the_recent_window_keeps_the_last_samples() {
    let mut s = registered();
    let n = RECENT_SAMPLES as u64 + 10;
    for seq in 0..n {
        run(&mut s, ingest(seq, seq * 1_000, &[("humidity", 40.0)]), 2);
    }
    let t = telemetry(&mut s, 0);
    assert_eq!(t.recent.len(), RECENT_SAMPLES);
    assert_eq!(t.recent[0].seq, 10);
    assert_eq!(t.recent.last().unwrap().seq, n - 1);
}

#[test]
fn samples_are_downsampled_per_minute_in_time_order() {
    let mut s = registered();
    let base = 100 * MIN;
    run(
        &mut s,
        ingest(1, base + 2 * MIN + 5, &[("humidity", 50.0)]),
        2,
    );
    run(
        &mut s,
        ingest(2, base + 10, &[("humidity", 1.0), ("battery", 80.0)]),
        2,
    );
    run(&mut s, ingest(3, base + 59_999, &[("humidity", 5.0)]), 2);
    // Late: belongs before the minute received first.
    run(&mut s, ingest(4, base + MIN, &[("humidity", 7.0)]), 2);
    run(&mut s, ingest(5, base + 30_000, &[("humidity", 3.0)]), 2);
    let h = telemetry(&mut s, 0).history;
    let starts: Vec<u64> = h.iter().map(|b| b.start_ms).collect();
    assert_eq!(starts, vec![base, base + MIN, base + 2 * MIN]);
    assert_eq!(h[0].count, 3);
    assert_eq!(
        h[0].readings["humidity"],
        ReadingStats {
            count: 3,
            min: 1.0,
            max: 5.0,
            mean: 3.0
        }
    );
    assert_eq!(h[0].readings["battery"].count, 1);
    assert_eq!((h[1].count, h[1].readings["humidity"].mean), (1, 7.0));
}

#[test]
fn a_sample_older_than_a_full_history_goes_to_the_window_only() {
    let mut s = registered();
    for m in 0..HISTORY_BUCKETS as u64 {
        run(&mut s, ingest(m, (10 + m) * MIN, &[("humidity", 40.0)]), 2);
    }
    let seq = HISTORY_BUCKETS as u64;
    let h = run(&mut s, ingest(seq, 3 * MIN, &[("humidity", 1.0)]), 2);
    assert!(h.changed);
    let t = telemetry(&mut s, 0);
    assert_eq!(t.history.len(), HISTORY_BUCKETS);
    assert_eq!(t.history[0].start_ms, 10 * MIN);
    assert!(t.history.iter().all(|b| b.readings["humidity"].min == 40.0));
    assert_eq!(t.recent[0].at_ms, 3 * MIN);
    // A new minute pushes the oldest bucket out.
    let next = (10 + HISTORY_BUCKETS as u64) * MIN;
    run(&mut s, ingest(seq + 1, next, &[("humidity", 40.0)]), 2);
    let t = telemetry(&mut s, 0);
    assert_eq!(t.history.len(), HISTORY_BUCKETS);
    assert_eq!(t.history[0].start_ms, 11 * MIN);
    assert_eq!(t.history.last().unwrap().start_ms, next);
}

#[test]
fn get_telemetry_returns_what_is_since_the_given_time() {
    let mut s = registered();
    for (seq, at) in [
        (1, MIN + 10),
        (2, 2 * MIN + 10),
        (3, 2 * MIN + 40_000),
        (4, 3 * MIN),
    ] {
        run(&mut s, ingest(seq, at, &[("humidity", 40.0)]), 2);
    }
    let t = telemetry(&mut s, 2 * MIN + 20_000);
    let seqs: Vec<u64> = t.recent.iter().map(|x| x.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    // Buckets from the minute `since_ms` falls in.
    let starts: Vec<u64> = t.history.iter().map(|b| b.start_ms).collect();
    assert_eq!(starts, vec![2 * MIN, 3 * MIN]);
}

// ---- anomalies ----

#[test]
fn a_static_threshold_raises_an_alert() {
    let mut s = registered();
    let h = run(&mut s, ingest(5, 1_000, &[("temperature", 71.2)]), 2);
    let a = outcome(&h).alert.expect("alert");
    assert_eq!(
        (a.id.as_str(), a.seq, a.at_ms, a.reading.as_str(), a.value),
        ("d1-5", 5, 1_000, "temperature", 71.2)
    );
    assert_eq!(a.reason, "temperature 71.2 above max 60");
    assert_eq!(a.customer_id, "c1");
    assert!(a.ticket_id.is_none() && a.command_id.is_none() && !a.command_sent);
    let low = outcome(&run(&mut s, ingest(6, 2_000, &[("battery", 3.0)]), 2));
    assert_eq!(low.alert.unwrap().reason, "battery 3 below min 5");
    let fine = outcome(&run(&mut s, ingest(7, 3_000, &[("humidity", 94.0)]), 2));
    assert_eq!(fine.alert, None);
}

#[test]
fn custom_thresholds_replace_the_defaults() {
    let mut s = registered();
    let anomaly = AnomalyConfig {
        thresholds: [(
            "co2".to_string(),
            Range {
                min: None,
                max: Some(1_000.0),
            },
        )]
        .into(),
        ..AnomalyConfig::default()
    };
    let cmd = |seq, v| DeviceCommand::Ingest {
        seq,
        at_ms: seq * MIN * 2,
        readings: readings(&[("co2", v), ("temperature", 99.0)]),
        anomaly: anomaly.clone(),
        limits: LOOSE,
    };
    assert_eq!(outcome(&run(&mut s, cmd(1, 900.0), 2)).alert, None);
    let a = outcome(&run(&mut s, cmd(2, 1_200.0), 2)).alert.unwrap();
    assert_eq!(a.reason, "co2 1200 above max 1000");
}

/// Feeds `n` ordinary heart rates (70/72 alternating), one a minute apart.
fn steady(s: &mut Option<DeviceState>, n: u64) {
    for seq in 0..n {
        let v = if seq % 2 == 0 { 70.0 } else { 72.0 };
        let o = outcome(&run(s, ingest(seq, seq * MIN, &[("heart_rate", v)]), 2));
        assert_eq!(o.alert, None, "seq {seq}");
    }
}

#[test]
fn the_z_score_fires_only_after_warmup() {
    let warmup = u64::from(AnomalyConfig::default().warmup);
    // Within the static range, but far from the usual.
    let spike = 120.0;
    let mut early = registered();
    steady(&mut early, warmup - 1);
    let o = outcome(&run(
        &mut early,
        ingest(warmup - 1, warmup * MIN, &[("heart_rate", spike)]),
        2,
    ));
    assert_eq!(o.alert, None);

    let mut warm = registered();
    steady(&mut warm, warmup);
    let o = outcome(&run(
        &mut warm,
        ingest(warmup, warmup * MIN, &[("heart_rate", spike)]),
        2,
    ));
    let a = o.alert.expect("z-score alert");
    assert_eq!(a.reading, "heart_rate");
    assert!(
        a.reason.starts_with("heart_rate z-score ") && a.reason.ends_with(" over 4"),
        "{}",
        a.reason
    );
}

#[test]
fn a_reading_in_cooldown_raises_no_new_alert_but_is_recorded() {
    let mut s = registered();
    let base = 10 * MIN;
    assert!(
        outcome(&run(&mut s, ingest(1, base, &[("temperature", 70.0)]), 2))
            .alert
            .is_some()
    );
    let h = run(
        &mut s,
        ingest(2, base + 30_000, &[("temperature", 71.0)]),
        2,
    );
    assert!(h.changed);
    assert_eq!(outcome(&h).alert, None);
    let d = view(&run(&mut s, DeviceCommand::Get, 3));
    assert_eq!(
        (d.telemetry_count, d.last_readings["temperature"]),
        (2, 71.0)
    );
    // Another reading is not held back by this one's cooldown.
    let other = outcome(&run(
        &mut s,
        ingest(3, base + 40_000, &[("humidity", 99.0)]),
        2,
    ));
    assert_eq!(other.alert.unwrap().reading, "humidity");
    let later = base + ALERT_COOLDOWN_MS;
    let again = outcome(&run(&mut s, ingest(4, later, &[("temperature", 72.0)]), 2));
    assert_eq!(again.alert.unwrap().id, "d1-4");
}

#[test]
fn one_alert_per_sample_the_first_reading_that_trips() {
    let mut s = registered();
    let o = outcome(&run(
        &mut s,
        ingest(1, 0, &[("temperature", 70.0), ("humidity", 99.0)]),
        2,
    ));
    assert_eq!(o.alert.unwrap().reading, "humidity");
    assert_eq!(view(&run(&mut s, DeviceCommand::Get, 3)).alerts.len(), 1);
    // Humidity is cooling down: temperature, which also tripped, alerts next time.
    let o = outcome(&run(
        &mut s,
        ingest(2, 1_000, &[("temperature", 70.0), ("humidity", 99.0)]),
        2,
    ));
    assert_eq!(o.alert.unwrap().reading, "temperature");
}

#[test]
fn a_redelivered_seq_returns_the_alert_it_raised() {
    let mut s = registered();
    let first = outcome(&run(&mut s, ingest(5, 1_000, &[("temperature", 71.2)]), 2))
        .alert
        .unwrap();
    let before = s.clone();
    let h = run(&mut s, ingest(5, 1_000, &[("temperature", 71.2)]), 3);
    assert!(!h.changed);
    assert_eq!(
        outcome(&h),
        IngestOutcome {
            duplicate: true,
            alert: Some(first.clone())
        }
    );
    assert_eq!(s, before);
    // The alert comes back as it is now, so the bridge can see how far it got.
    run(
        &mut s,
        DeviceCommand::AlertTicket {
            alert_id: first.id.clone(),
            ticket_id: "t-d1-5".into(),
        },
        4,
    );
    let again = outcome(&run(&mut s, ingest(5, 1_000, &[("temperature", 71.2)]), 5));
    assert_eq!(again.alert.unwrap().ticket_id.as_deref(), Some("t-d1-5"));
}

#[test]
fn only_the_last_alerts_are_kept_and_the_view_shows_ten() {
    let mut s = registered();
    for seq in 0..MAX_ALERTS as u64 + 5 {
        let o = outcome(&run(
            &mut s,
            ingest(seq, seq * MIN * 2, &[("temperature", 80.0)]),
            2,
        ));
        assert!(o.alert.is_some());
    }
    let Ok(DeviceAnswer::Alerts(all)) = run(&mut s, DeviceCommand::ListAlerts, 3).reply else {
        panic!("expected alerts")
    };
    assert_eq!(all.len(), MAX_ALERTS);
    assert_eq!(all[0].seq, 5);
    let d = view(&run(&mut s, DeviceCommand::Get, 3));
    let shown: Vec<u64> = d.alerts.iter().map(|a| a.seq).collect();
    let last = MAX_ALERTS as u64 + 4;
    assert_eq!(shown, ((last - 9)..=last).collect::<Vec<_>>());
}

// ---- twin ----

#[test]
fn reports_merge_and_stale_versions_are_ignored() {
    let mut s = registered();
    let h = run(
        &mut s,
        DeviceCommand::ReportTwin {
            state: [
                ("mode".to_string(), text("eco")),
                ("fan".to_string(), TwinValue::Bool(true)),
            ]
            .into(),
            version: Some(3),
        },
        10,
    );
    assert!(h.changed);
    assert_eq!(twin(&h).reported_version, 3);
    let h = run(
        &mut s,
        DeviceCommand::ReportTwin {
            state: [("fan".to_string(), TwinValue::Bool(false))].into(),
            version: None,
        },
        11,
    );
    let t = twin(&h);
    assert_eq!(t.reported_version, 4);
    assert_eq!(
        t.reported,
        [
            ("fan".to_string(), TwinValue::Bool(false)),
            ("mode".to_string(), text("eco"))
        ]
        .into()
    );
    let before = s.clone();
    for stale in [3, 4] {
        let h = run(
            &mut s,
            DeviceCommand::ReportTwin {
                state: [("mode".to_string(), text("boost"))].into(),
                version: Some(stale),
            },
            12,
        );
        assert!(!h.changed);
        assert_eq!(twin(&h), t);
    }
    assert_eq!(s, before);
}

#[test]
fn desired_patches_set_and_delete_keys_and_the_delta_follows() {
    let mut s = registered();
    run(
        &mut s,
        DeviceCommand::ReportTwin {
            state: [("mode".to_string(), text("eco"))].into(),
            version: None,
        },
        10,
    );
    let h = run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: [
                ("mode".to_string(), Some(text("eco"))),
                ("interval_s".to_string(), Some(TwinValue::Number(30.0))),
            ]
            .into(),
            expected_version: Some(0),
        },
        11,
    );
    assert!(h.changed);
    let t = twin(&h);
    assert_eq!(t.desired_version, 1);
    assert_eq!(
        t.delta,
        [("interval_s".to_string(), TwinValue::Number(30.0))].into()
    );
    let t = twin(&run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: [("interval_s".to_string(), None)].into(),
            expected_version: None,
        },
        12,
    ));
    assert_eq!(t.desired, [("mode".to_string(), text("eco"))].into());
    assert!(t.delta.is_empty());
    assert_eq!(t.desired_version, 2);
    let d = view(&run(&mut s, DeviceCommand::Get, 13));
    assert_eq!((d.twin_reported_version, d.twin_desired_version), (1, 2));
}

#[test]
fn a_desired_patch_at_the_wrong_version_is_a_conflict_unless_it_changes_nothing() {
    let mut s = registered();
    let patch = |v: f64| -> BTreeMap<String, Option<TwinValue>> {
        [("interval_s".to_string(), Some(TwinValue::Number(v)))].into()
    };
    run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: patch(30.0),
            expected_version: Some(0),
        },
        10,
    );
    let before = s.clone();
    let h = run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: patch(60.0),
            expected_version: Some(0),
        },
        11,
    );
    assert!(
        matches!(&h.reply, Err(DomainError::Invalid { field, reason })
            if field == "expected_version" && reason.contains("conflict") && reason.contains("version 1")),
        "{:?}",
        h.reply
    );
    assert!(!h.changed);
    assert_eq!(s, before);
    // The first patch redelivered: already applied, so not a conflict.
    let h = run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: patch(30.0),
            expected_version: Some(0),
        },
        12,
    );
    assert!(!h.changed);
    assert_eq!(twin(&h).desired_version, 1);
}

#[test]
fn twin_sizes_and_values_are_checked() {
    let mut s = registered();
    let empty = run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: BTreeMap::new(),
            expected_version: None,
        },
        10,
    );
    assert!(matches!(empty.reply, Err(DomainError::Invalid { ref field, .. }) if field == "patch"));
    let full: BTreeMap<String, Option<TwinValue>> = (0..MAX_TWIN_KEYS)
        .map(|i| (format!("k{i}"), Some(TwinValue::Bool(true))))
        .collect();
    assert!(
        run(
            &mut s,
            DeviceCommand::PatchDesired {
                patch: full,
                expected_version: None
            },
            11
        )
        .changed
    );
    let one_more = run(
        &mut s,
        DeviceCommand::PatchDesired {
            patch: [("extra".to_string(), Some(TwinValue::Bool(true)))].into(),
            expected_version: None,
        },
        12,
    );
    assert!(
        matches!(one_more.reply, Err(DomainError::Invalid { ref field, .. }) if field == "patch")
    );
    let long = run(
        &mut s,
        DeviceCommand::ReportTwin {
            state: [("note".to_string(), text(&"x".repeat(MAX_TWIN_TEXT + 1)))].into(),
            version: None,
        },
        13,
    );
    assert!(
        matches!(long.reply, Err(DomainError::Invalid { ref field, .. }) if field == "state.note")
    );
}

#[test]
fn twin_values_convert_to_and_from_json() {
    use serde_json::json;
    for (v, j) in [
        (TwinValue::Bool(true), json!(true)),
        (TwinValue::Number(21.5), json!(21.5)),
        (text("eco"), json!("eco")),
    ] {
        assert_eq!(v.to_json(), j);
        assert_eq!(TwinValue::from_json(&j), Some(v));
    }
    for j in [json!(null), json!([1]), json!({"a": 1})] {
        assert_eq!(TwinValue::from_json(&j), None);
    }
    assert_eq!(
        TwinValue::from_json(&json!(3)),
        Some(TwinValue::Number(3.0))
    );
    let view = TwinView {
        reported: [("mode".to_string(), text("eco"))].into(),
        reported_version: 1,
        desired: BTreeMap::new(),
        desired_version: 0,
        delta: BTreeMap::new(),
    };
    assert_eq!(
        view.to_json(),
        json!({"reported": {"mode": "eco"}, "reported_version": 1, "desired": {},
               "desired_version": 0, "delta": {}})
    );
}

// ---- commands and alert bookkeeping ----

fn issue(id: &str, alert_id: Option<&str>) -> DeviceCommand {
    DeviceCommand::IssueCommand {
        id: id.into(),
        name: "maintenance-check".into(),
        params: [("depth".to_string(), text("full"))].into(),
        alert_id: alert_id.map(str::to_string),
    }
}

#[test]
fn issuing_a_command_twice_returns_the_first_record() {
    let mut s = registered();
    let h = run(&mut s, issue("cmd-1", None), 10);
    assert!(h.changed);
    let c = command(&h);
    assert_eq!(
        (c.name.as_str(), c.created_ms, c.sent, &c.ack),
        ("maintenance-check", 10, false, &None)
    );
    let before = s.clone();
    let again = run(
        &mut s,
        DeviceCommand::IssueCommand {
            id: "cmd-1".into(),
            name: "reboot".into(),
            params: BTreeMap::new(),
            alert_id: None,
        },
        20,
    );
    assert!(!again.changed);
    assert_eq!(command(&again), c);
    assert_eq!(s, before);
}

#[test]
fn the_first_acknowledgement_wins() {
    let mut s = registered();
    run(&mut s, issue("cmd-1", None), 10);
    let sent = run(
        &mut s,
        DeviceCommand::CommandSent { id: "cmd-1".into() },
        11,
    );
    assert!(sent.changed && command(&sent).sent);
    assert!(
        !run(
            &mut s,
            DeviceCommand::CommandSent { id: "cmd-1".into() },
            12
        )
        .changed
    );
    let ack = |status: &str| DeviceCommand::CommandAck {
        id: "cmd-1".into(),
        status: status.into(),
    };
    let h = run(&mut s, ack("ok"), 13);
    assert!(h.changed);
    let first = command(&h).ack.unwrap();
    assert_eq!((first.status.as_str(), first.at_ms), ("ok", 13));
    let before = s.clone();
    let h = run(&mut s, ack("failed"), 14);
    assert!(!h.changed);
    assert_eq!(command(&h).ack, Some(first));
    assert_eq!(s, before);
}

#[test]
fn unknown_commands_and_alerts_are_not_found_and_change_nothing() {
    let mut s = registered();
    let before = s.clone();
    for (cmd, kind) in [
        (DeviceCommand::CommandSent { id: "nope".into() }, "command"),
        (
            DeviceCommand::CommandAck {
                id: "nope".into(),
                status: "ok".into(),
            },
            "command",
        ),
        (
            DeviceCommand::AlertTicket {
                alert_id: "d1-99".into(),
                ticket_id: "t-d1-99".into(),
            },
            "alert",
        ),
        (
            DeviceCommand::AlertAckRecorded {
                alert_id: "d1-99".into(),
            },
            "alert",
        ),
        (issue("cmd-9", Some("d1-99")), "alert"),
    ] {
        let h = run(&mut s, cmd, 10);
        assert!(
            matches!(&h.reply, Err(DomainError::NotFound { kind: k, .. }) if k == kind),
            "{:?}",
            h.reply
        );
        assert!(!h.changed);
    }
    assert_eq!(s, before);
}

#[test]
fn each_step_after_an_alert_is_recorded_on_it_once() {
    let mut s = registered();
    let a = outcome(&run(&mut s, ingest(5, 1_000, &[("temperature", 71.2)]), 2))
        .alert
        .unwrap();
    let ticket = |t: &str| DeviceCommand::AlertTicket {
        alert_id: a.id.clone(),
        ticket_id: t.into(),
    };
    let h = run(&mut s, ticket("t-d1-5"), 3);
    assert!(h.changed);
    assert_eq!(alert(&h).ticket_id.as_deref(), Some("t-d1-5"));
    let h = run(&mut s, ticket("t-other"), 4);
    assert!(!h.changed);
    assert_eq!(alert(&h).ticket_id.as_deref(), Some("t-d1-5"));

    run(&mut s, issue("cmd-d1-5", Some(&a.id)), 5);
    run(
        &mut s,
        DeviceCommand::CommandSent {
            id: "cmd-d1-5".into(),
        },
        6,
    );
    let ack = |status: &str| DeviceCommand::CommandAck {
        id: "cmd-d1-5".into(),
        status: status.into(),
    };
    run(&mut s, ack("ok"), 7);
    run(&mut s, ack("rejected"), 8);
    let h = run(
        &mut s,
        DeviceCommand::AlertAckRecorded {
            alert_id: a.id.clone(),
        },
        9,
    );
    assert!(h.changed);
    let done = alert(&h);
    assert_eq!(done.command_id.as_deref(), Some("cmd-d1-5"));
    assert!(done.command_sent && done.ack_recorded);
    assert_eq!(done.ack_status.as_deref(), Some("ok"));
    assert!(
        !run(
            &mut s,
            DeviceCommand::AlertAckRecorded {
                alert_id: a.id.clone()
            },
            10
        )
        .changed
    );
    // A second command for the same alert does not take the first one's place.
    run(&mut s, issue("cmd-2", Some(&a.id)), 11);
    run(
        &mut s,
        DeviceCommand::CommandAck {
            id: "cmd-2".into(),
            status: "failed".into(),
        },
        12,
    );
    let Ok(DeviceAnswer::Alerts(all)) = run(&mut s, DeviceCommand::ListAlerts, 13).reply else {
        panic!("expected alerts")
    };
    assert_eq!(all, vec![done]);
    let Ok(DeviceAnswer::Commands(cmds)) = run(&mut s, DeviceCommand::ListCommands, 13).reply
    else {
        panic!("expected commands")
    };
    let ids: Vec<&str> = cmds.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["cmd-d1-5", "cmd-2"]);
}

#[test]
fn only_the_last_commands_are_kept() {
    let mut s = registered();
    for i in 0..MAX_COMMANDS + 2 {
        run(&mut s, issue(&format!("cmd-{i}"), None), 10);
    }
    let Ok(DeviceAnswer::Commands(cmds)) = run(&mut s, DeviceCommand::ListCommands, 11).reply
    else {
        panic!("expected commands")
    };
    assert_eq!(cmds.len(), MAX_COMMANDS);
    assert_eq!(cmds[0].id, "cmd-2");
}

// ---- validation and migration ----

#[test]
fn invalid_fields_are_named() {
    let bad_anomaly = |f: fn(&mut AnomalyConfig)| {
        let mut anomaly = AnomalyConfig::default();
        f(&mut anomaly);
        DeviceCommand::Ingest {
            seq: 1,
            at_ms: 1,
            readings: readings(&[("x", 1.0)]),
            anomaly,
            limits: LOOSE,
        }
    };
    let cases = [
        (ingest(1, 1, &[]), "readings"),
        (ingest(1, 1, &[("bad name", 1.0)]), "readings.bad name"),
        (ingest(1, 1, &[("x", f64::INFINITY)]), "readings.x"),
        (bad_anomaly(|a| a.alpha = 0.0), "anomaly.alpha"),
        (
            bad_anomaly(|a| a.z_threshold = f64::NAN),
            "anomaly.z_threshold",
        ),
        (
            bad_anomaly(|a| {
                a.thresholds.insert(
                    "x".into(),
                    Range {
                        min: Some(2.0),
                        max: Some(1.0),
                    },
                );
            }),
            "anomaly.thresholds.x",
        ),
        (
            DeviceCommand::ReportTwin {
                state: [("mode".to_string(), TwinValue::Number(f64::NAN))].into(),
                version: None,
            },
            "state.mode",
        ),
        (
            DeviceCommand::PatchDesired {
                patch: [("a/b".to_string(), None)].into(),
                expected_version: None,
            },
            "patch.a/b",
        ),
        (
            DeviceCommand::IssueCommand {
                id: "".into(),
                name: "reboot".into(),
                params: BTreeMap::new(),
                alert_id: None,
            },
            "id",
        ),
        (
            DeviceCommand::IssueCommand {
                id: "c1".into(),
                name: "re boot".into(),
                params: BTreeMap::new(),
                alert_id: None,
            },
            "name",
        ),
        (
            DeviceCommand::IssueCommand {
                id: "c1".into(),
                name: "reboot".into(),
                params: [("delay".to_string(), TwinValue::Number(f64::NAN))].into(),
                alert_id: None,
            },
            "params.delay",
        ),
        (
            DeviceCommand::CommandAck {
                id: "c1".into(),
                status: "x".repeat(65),
            },
            "status",
        ),
        (
            DeviceCommand::AlertTicket {
                alert_id: "d1-1".into(),
                ticket_id: "t d1".into(),
            },
            "ticket_id",
        ),
        (
            DeviceCommand::AlertAckRecorded {
                alert_id: "a".repeat(MAX_REF_LEN + 1),
            },
            "alert_id",
        ),
    ];
    let mut s = registered();
    for (cmd, field) in cases {
        let h = run(&mut s, cmd, 2);
        assert!(
            matches!(&h.reply, Err(DomainError::Invalid { field: f, .. }) if f == field),
            "{field}: {:?}",
            h.reply
        );
        assert!(!h.changed);
    }
    // Alert ids are built from a device id and a seq, so they may be longer than an id.
    let long_alert = format!("{}-18446744073709551615", "d".repeat(64));
    assert!(DeviceCommand::AlertAckRecorded {
        alert_id: long_alert
    }
    .validate()
    .is_ok());
}

#[test]
fn a_version_1_device_is_upgraded_with_everything_new_empty() {
    let old = v1::DeviceState {
        id: "d1".into(),
        customer_id: "c1".into(),
        kind: "temperature".into(),
        firmware: "1.0.3".into(),
        last_readings: readings(&[("celsius", 21.5)]),
        last_telemetry_ms: Some(40),
        telemetry_count: 3,
        version: 4,
        created_ms: 1,
    };
    // The runtime's encoding of the old shape, version byte stripped as the runtime hands it over.
    let body = &encode_payload(&old)[1..];
    let new = Device::upgrade(v1::VERSION, body).expect("version 1 upgrades");
    let d = new.view();
    assert_eq!(
        (
            d.id.as_str(),
            d.customer_id.as_str(),
            d.telemetry_count,
            d.version
        ),
        ("d1", "c1", 3, 4)
    );
    assert_eq!(d.last_readings, old.last_readings);
    assert_eq!((d.highest_seq, d.alerts.len()), (None, 0));
    assert_eq!(new.twin, Twin::default());
    assert!(new.commands.is_empty());
    assert_eq!(Device::upgrade(3, body), None);
    assert_eq!(Device::upgrade(v1::VERSION, &body[..body.len() - 1]), None);
    // The upgraded device takes telemetry as usual.
    let mut s = Some(new);
    let o = outcome(&run(&mut s, ingest(0, 50, &[("celsius", 22.0)]), 60));
    assert!(!o.duplicate);
    assert_eq!(s.unwrap().telemetry_count, 4);
}

#[test]
fn a_sequence_number_or_time_at_the_edge_of_its_type_is_refused_and_later_data_still_flows() {
    const NOW: u64 = 1_800_000_000_000;
    let limits = SampleLimits::default();
    let mut s = registered();
    let at = |seq: u64, at_ms: u64| DeviceCommand::Ingest {
        seq,
        at_ms,
        readings: readings(&[("x", 1.0)]),
        anomaly: AnomalyConfig::default(),
        limits,
    };
    assert!(run(&mut s, at(1, NOW), NOW).changed);
    for (cmd, field) in [
        (at(u64::MAX, NOW), "seq"),
        (at(MAX_SEQ + 1, NOW), "seq"),
        (at(2 + limits.max_seq_jump, NOW), "seq"),
        (at(2, u64::MAX), "ts"),
        (at(2, 0), "ts"),
    ] {
        let before = s.clone();
        let h = run(&mut s, cmd, NOW);
        assert!(!h.changed);
        assert!(
            matches!(h.reply, Err(DomainError::Invalid { field: ref f, .. }) if f == field),
            "{:?}",
            h.reply
        );
        assert_eq!(s, before, "a refused sample changes nothing");
    }
    // The next ordinary message is taken as if the bad ones never came.
    assert!(run(&mut s, at(2, NOW), NOW).changed);
    let t = Telemetry {
        readings: readings(&[("x", 2.0)]),
        at_ms: Some(u64::MAX),
        limits,
    };
    let h = run(&mut s, DeviceCommand::Telemetry(t), NOW);
    assert!(matches!(h.reply, Err(DomainError::Invalid { ref field, .. }) if field == "at_ms"));
    let t = Telemetry {
        readings: readings(&[("x", 2.0)]),
        at_ms: None,
        limits,
    };
    let d = view(&run(&mut s, DeviceCommand::Telemetry(t), NOW));
    assert_eq!(d.highest_seq, Some(3));
}
