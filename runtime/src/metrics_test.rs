use super::*;

/// Families a periodic sample sets rather than an event counts: they appear with the first
/// sample (the health watch's latency and degraded flag per node), not at start-up.
const SAMPLED: &[&str] = &["keelson_node_latency_seconds", "keelson_node_degraded"];

#[test]
fn after_start_up_every_family_exports_a_series_before_any_event() {
    let m = Metrics::new("n1", "node");
    m.known_kinds(["customer", "device"]);
    m.known_peers(["n2", "gateway"]);
    let empty: Vec<String> = m
        .registry
        .gather()
        .iter()
        .filter(|f| f.get_metric().is_empty() && !SAMPLED.contains(&f.name()))
        .map(|f| f.name().to_string())
        .collect();
    assert!(empty.is_empty(), "families with no series: {empty:?}");
}

#[test]
fn every_known_label_value_reads_zero_per_kind_and_peer() {
    let m = Metrics::new("n1", "node");
    m.known_kinds(["customer"]);
    m.known_peers(["n2"]);
    let text = {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    };
    let series = |name: &str, labels: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .unwrap_or_else(|| panic!("no {name} with {labels} in\n{text}"))
            .to_string()
    };
    for reason in known::PASSIVATION_REASONS {
        let l = series(
            "keelson_entity_passivations_total",
            &format!("kind=\"customer\",node=\"n1\",reason=\"{reason}\""),
        );
        assert!(l.ends_with(" 0"), "{l}");
    }
    for outcome in known::HANDLED_OUTCOMES {
        series(
            "keelson_messages_handled_total",
            &format!("kind=\"customer\",node=\"n1\",outcome=\"{outcome}\""),
        );
    }
    series("keelson_entity_failures_total", "kind=\"customer\"");
    series("keelson_entities_quarantined", "kind=\"customer\"");
    series(
        "keelson_entity_quarantines_total",
        "reason=\"restart_budget\"",
    );
    for state in ["joining", "up", "down"] {
        series(
            "keelson_peer_transitions_total",
            &format!("peer=\"n2\",role=\"node\",state=\"{state}\""),
        );
    }
    series("keelson_heartbeat_rtt_seconds_count", "peer=\"n2\"");
    for change in known::MAP_CHANGES {
        series("keelson_map_changes_total", &format!("change=\"{change}\""));
    }
    for outcome in known::ROUTED_OUTCOMES {
        series(
            "keelson_routed_requests_total",
            &format!("outcome=\"{outcome}\""),
        );
    }
}
