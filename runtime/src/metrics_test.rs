use super::*;
use crate::cluster::failure_detector::PeerState;

#[test]
fn after_start_up_every_family_exports_a_series_before_any_event() {
    let m = Metrics::new("n1", "node");
    m.known_kinds(["customer", "device"]);
    m.known_peers(["n2", "gateway"]);
    m.known_nodes(["n1", "n2"]);
    let empty: Vec<String> = m
        .registry
        .gather()
        .iter()
        .filter(|f| f.get_metric().is_empty())
        .map(|f| f.name().to_string())
        .collect();
    assert!(empty.is_empty(), "families with no series: {empty:?}");
}

#[test]
fn every_known_label_value_reads_zero_per_kind_and_peer() {
    let m = Metrics::new("n1", "node");
    m.known_kinds(["customer"]);
    m.known_peers(["n2"]);
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&m.registry.gather(), &mut buf)
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    // The line of `name` carrying every `labels` pair, whatever their order; it must read 0.
    let series = |name: &str, labels: &[(&str, &str)]| {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{")) && pairs.iter().all(|p| l.contains(p.as_str()))
            })
            .unwrap_or_else(|| panic!("no {name} with {pairs:?} in\n{text}"));
        assert!(line.ends_with(" 0"), "{line}");
    };
    for reason in known::PASSIVATION_REASONS {
        series(
            "keelson_entity_passivations_total",
            &[("kind", "customer"), ("reason", reason)],
        );
    }
    for reason in known::RESTART_REASONS {
        series(
            "keelson_entity_restarts_total",
            &[("kind", "customer"), ("reason", reason)],
        );
    }
    for outcome in known::HANDLED_OUTCOMES {
        series(
            "keelson_messages_handled_total",
            &[("kind", "customer"), ("outcome", outcome)],
        );
    }
    for name in [
        "keelson_entities_active",
        "keelson_entity_activations_total",
        "keelson_entity_failures_total",
        "keelson_entity_requests_in_flight",
        "keelson_entities_quarantined",
    ] {
        series(
            name,
            &[("kind", "customer"), ("node", "n1"), ("role", "node")],
        );
    }
    series(
        "keelson_entity_quarantines_total",
        &[("kind", "customer"), ("reason", "restart_budget")],
    );
    for state in [PeerState::Joining, PeerState::Up, PeerState::Down] {
        series(
            "keelson_peer_transitions_total",
            &[("peer", "n2"), ("state", state.as_str())],
        );
    }
    series("keelson_peer_up", &[("peer", "n2")]);
    series("keelson_heartbeat_rtt_seconds_count", &[("peer", "n2")]);
    for (name, label, values) in [
        ("keelson_map_changes_total", "change", known::MAP_CHANGES),
        (
            "keelson_routed_requests_total",
            "outcome",
            known::ROUTED_OUTCOMES,
        ),
        (
            "keelson_replica_writes_total",
            "result",
            known::REPLICA_WRITE_RESULTS,
        ),
        ("keelson_reads_served_total", "served_as", known::SERVED_AS),
        (
            "keelson_link_refusals_total",
            "reason",
            known::LINK_REFUSALS,
        ),
    ] {
        for v in values {
            series(name, &[(label, v)]);
        }
    }
}
