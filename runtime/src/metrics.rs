//! Every Prometheus collector of the runtime, registered once per process in one registry whose
//! constant labels (`node`, `role`) say which process is speaking. Other crates register their own
//! collectors into [`registry`].
//!
//! Every label value known before its first event ([`known`], the node's entity kinds, the
//! cluster's peers) is exported at 0 from start-up: a dashboard or an alert on a healthy cluster
//! reads 0 rather than "No data", and a counter's first increment is a rise from 0 that `rate()`
//! sees instead of a new series it cannot.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The runtime's collectors.
#[derive(Debug)]
pub struct Metrics {
    /// The process registry.
    pub registry: Registry,
    /// Active entities by kind.
    pub entities_active: IntGaugeVec,
    /// Activations by kind.
    pub entity_activations: IntCounterVec,
    /// Passivations by kind and reason (idle, cap, shutdown).
    pub entity_passivations: IntCounterVec,
    /// Failures (panic or error) by kind.
    pub entity_failures: IntCounterVec,
    /// Restarts by kind and reason (`panic` or `error`).
    pub entity_restarts: IntCounterVec,
    /// Quarantines by kind and reason (`restart_budget`).
    pub entity_quarantines: IntCounterVec,
    /// Requests handed to entity actors and not yet answered, by kind (the mailboxes' depth).
    pub entity_requests_in_flight: IntGaugeVec,
    /// Entities currently quarantined, by kind.
    pub entities_quarantined: IntGaugeVec,
    /// Entity requests handled by this node, by kind and outcome.
    pub messages_handled: IntCounterVec,
    /// Shards this node owns.
    pub shards_owned: IntGauge,
    /// Current shard-map epoch.
    pub shard_epoch: IntGauge,
    /// 1 when a peer is up, 0 otherwise.
    pub peer_up: IntGaugeVec,
    /// Peer state changes by peer and new state.
    pub peer_transitions: IntCounterVec,
    /// Heartbeat round trip by peer.
    pub heartbeat_rtt: HistogramVec,
    /// Requests sent to other nodes by outcome.
    pub routed_requests: IntCounterVec,
    /// Time of one storage fsync.
    pub storage_flush_seconds: Histogram,
    /// Writes acknowledged per fsync (group commit size).
    pub storage_flush_batch: Histogram,
    /// Writes confirmed by a node that had already lost the primary role: must stay 0.
    pub duplicate_primary: IntCounter,
    /// Writes refused because a follower knew a newer epoch (a stale primary was fenced).
    pub stale_primary_refusals: IntCounter,
    /// Followers dropped from an in-sync set by this node.
    pub in_sync_shrinks: IntCounter,
    /// Cluster connections refused, by reason (TLS handshake, timeout, unknown or mismatched identity).
    pub link_refusals: IntCounterVec,
    /// Replicated writes received by this node as a follower, by result.
    pub replica_writes: IntCounterVec,
    /// Shard-map changes proposed by this node while leading, by kind.
    pub map_changes: IntCounterVec,
    /// Shards this node follows in sync.
    pub shards_following: IntGauge,
    /// Shards this node is copying.
    pub shards_learning: IntGauge,
    /// Records received by shard copies.
    pub copy_records: IntCounter,
    /// 1 while this node leads the consensus log.
    pub consensus_leader: IntGauge,
    /// Reads served by this node, as primary or as in-sync follower.
    pub reads_served: IntCounterVec,
    /// How long a primary waits for its in-sync followers' acks: the replication lag.
    pub replication_ack: Histogram,
    /// Shards this node leads with fewer in-sync copies than the replication factor.
    pub shards_under_replicated: IntGauge,
    /// Primaries replaced after failing, committed by this node while leading.
    pub failovers: IntCounter,
    /// From a primary seen down by the leader to its replacement committed.
    pub failover_seconds: Histogram,
    /// 1 while answers from a majority keep this node's primary lease.
    pub lease_valid: IntGauge,
    /// Shards whose primary this process sees down.
    pub shards_unavailable: IntGauge,
    /// 1 for a node this process marks degraded (far slower or failing more than its peers).
    pub node_degraded: IntGaugeVec,
    /// This process's latency EWMA per node, seconds.
    pub node_latency: prometheus::GaugeVec,
    /// Frames from peers refused by this process, by reason (see `frame_check`).
    pub bad_frames: IntCounterVec,
    /// Times this node restarted its shard host after it died.
    pub shard_host_restarts: IntCounter,
}

/// The label values each vector can take that do not depend on the cluster's configuration,
/// each exported at 0 from start-up. A value passed to `with_label_values` belongs here.
pub mod known {
    /// Why a frame from a peer was refused (`keelson_bad_frames_total{reason}`): every
    /// `wire::FrameError::reason`.
    pub const FRAME_REFUSALS: &[&str] = &[
        "malformed",
        "too_large",
        "bad_shard",
        "out_of_range",
        "unknown_node",
    ];
    /// A peer's state, for a transition (`keelson_peer_transitions_total{state}`): every
    /// `cluster::failure_detector::PeerState::as_str`.
    pub const PEER_STATES: &[&str] = &["joining", "up", "down"];
    /// Why an entity was passivated (`keelson_entity_passivations_total{reason}`).
    pub const PASSIVATION_REASONS: &[&str] = &["idle", "cap", "died"];
    /// What failed, for a restart (`keelson_entity_restarts_total{reason}`).
    pub const RESTART_REASONS: &[&str] = &["panic", "error"];
    /// Why an entity was quarantined (`keelson_entity_quarantines_total{reason}`).
    pub const QUARANTINE_REASONS: &[&str] = &["restart_budget"];
    /// How an entity request ended (`keelson_messages_handled_total{outcome}`).
    pub const HANDLED_OUTCOMES: &[&str] = &[
        "ok",
        "deduplicated",
        "key_reused",
        "bad_request",
        "failed",
        "too_large",
        "write_failed",
    ];
    /// How a request sent to another node ended (`keelson_routed_requests_total{outcome}`).
    pub const ROUTED_OUTCOMES: &[&str] =
        &["ok", "retried", "unavailable", "timeout", "remote_error"];
    /// Why a cluster connection was refused (`keelson_link_refusals_total{reason}`).
    pub const LINK_REFUSALS: &[&str] = &[
        "tls_handshake",
        "tls_timeout",
        "unknown_identity",
        "name_mismatch",
        "gateway_frame",
    ];
    /// What a follower did with a replicated write (`keelson_replica_writes_total{result}`).
    pub const REPLICA_WRITE_RESULTS: &[&str] = &["applied", "stale", "failed"];
    /// Shard-map changes a leader commits (`keelson_map_changes_total{change}`).
    pub const MAP_CHANGES: &[&str] = &["promote", "shrink", "add_learner", "join", "handoff"];
    /// What a node served a read as (`keelson_reads_served_total{served_as}`).
    pub const SERVED_AS: &[&str] = &["primary", "follower"];
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Registers the collectors with `node` and `role` labels. Call once, first thing in a process;
/// later calls are ignored.
pub fn init(node: &str, role: &str) -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(node, role))
}

/// The process's collectors (labelled `unknown` if [`init`] was never called).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new("unknown", "unknown"))
}

/// The process registry, for other crates' collectors.
pub fn registry() -> &'static Registry {
    &get().registry
}

/// Text exposition of every registered collector.
pub fn render() -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry().gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

/// A counter vector with one label whose `values` are exported at 0 from the start.
fn counter_of(r: &Registry, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let c = counter(r, name, help, &[label]);
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn int_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

/// Latency buckets from 50 µs to 10 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ]
}

impl Metrics {
    fn new(node: &str, role: &str) -> Self {
        let labels = [
            ("node".to_string(), node.to_string()),
            ("role".to_string(), role.to_string()),
        ]
        .into_iter()
        .collect();
        let r = Registry::new_custom(None, Some(labels)).expect("valid labels");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(pc)).expect("registered once");
        }
        let heartbeat_rtt = HistogramVec::new(
            HistogramOpts::new(
                "keelson_heartbeat_rtt_seconds",
                "Heartbeat round trip by peer.",
            )
            .buckets(latency_buckets()),
            &["peer"],
        )
        .expect("valid");
        r.register(Box::new(heartbeat_rtt.clone()))
            .expect("registered once");
        Self {
            entities_active: gauge_vec(
                &r,
                "keelson_entities_active",
                "Active entities by kind.",
                &["kind"],
            ),
            entity_activations: counter(
                &r,
                "keelson_entity_activations_total",
                "Entity activations by kind.",
                &["kind"],
            ),
            entity_passivations: counter(
                &r,
                "keelson_entity_passivations_total",
                "Entity passivations by kind and reason.",
                &["kind", "reason"],
            ),
            entity_failures: counter(
                &r,
                "keelson_entity_failures_total",
                "Entity panics and errors by kind.",
                &["kind"],
            ),
            entity_restarts: counter(
                &r,
                "keelson_entity_restarts_total",
                "Entity restarts scheduled after a failure, by kind and reason (panic or error).",
                &["kind", "reason"],
            ),
            entity_quarantines: counter(
                &r,
                "keelson_entity_quarantines_total",
                "Entities quarantined, by kind and reason (restart_budget: it kept failing).",
                &["kind", "reason"],
            ),
            entity_requests_in_flight: gauge_vec(
                &r,
                "keelson_entity_requests_in_flight",
                "Requests handed to entity actors and not yet answered, by kind.",
                &["kind"],
            ),
            entities_quarantined: gauge_vec(
                &r,
                "keelson_entities_quarantined",
                "Entities currently quarantined, by kind.",
                &["kind"],
            ),
            messages_handled: counter(
                &r,
                "keelson_messages_handled_total",
                "Entity requests handled by this node, by kind and outcome.",
                &["kind", "outcome"],
            ),
            shards_owned: gauge(&r, "keelson_shards_owned", "Shards this node owns."),
            shard_epoch: gauge(
                &r,
                "keelson_shard_map_epoch",
                "Epoch of the shard map in force.",
            ),
            peer_up: gauge_vec(
                &r,
                "keelson_peer_up",
                "1 when the peer answers heartbeats, 0 otherwise.",
                &["peer"],
            ),
            peer_transitions: counter(
                &r,
                "keelson_peer_transitions_total",
                "Peer state changes by peer and new state.",
                &["peer", "state"],
            ),
            heartbeat_rtt,
            routed_requests: counter_of(
                &r,
                "keelson_routed_requests_total",
                "Entity requests sent by this process, by outcome.",
                "outcome",
                known::ROUTED_OUTCOMES,
            ),
            storage_flush_seconds: histogram(
                &r,
                "keelson_storage_flush_seconds",
                "Duration of one storage fsync.",
                latency_buckets(),
            ),
            storage_flush_batch: histogram(
                &r,
                "keelson_storage_flush_batch_size",
                "Writes made durable by one fsync.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            duplicate_primary: int_counter(
                &r,
                "keelson_duplicate_primary_total",
                "Writes confirmed by a node after it lost the primary role; must stay 0.",
            ),
            stale_primary_refusals: int_counter(
                &r,
                "keelson_stale_primary_refusals_total",
                "Writes refused because a follower knew a newer epoch.",
            ),
            in_sync_shrinks: int_counter(
                &r,
                "keelson_in_sync_shrinks_total",
                "Followers dropped from an in-sync set by this node.",
            ),
            link_refusals: counter_of(
                &r,
                "keelson_link_refusals_total",
                "Cluster connections refused, by reason.",
                "reason",
                known::LINK_REFUSALS,
            ),
            replica_writes: counter_of(
                &r,
                "keelson_replica_writes_total",
                "Replicated writes received as a follower, by result.",
                "result",
                known::REPLICA_WRITE_RESULTS,
            ),
            map_changes: counter_of(
                &r,
                "keelson_map_changes_total",
                "Shard-map changes committed by this node while leading, by kind.",
                "change",
                known::MAP_CHANGES,
            ),
            shards_following: gauge(
                &r,
                "keelson_shards_following",
                "Shards this node follows in sync.",
            ),
            shards_learning: gauge(
                &r,
                "keelson_shards_learning",
                "Shards this node is copying.",
            ),
            copy_records: int_counter(
                &r,
                "keelson_copy_records_total",
                "Records received by shard copies.",
            ),
            consensus_leader: gauge(
                &r,
                "keelson_consensus_leader",
                "1 while this node leads the consensus log.",
            ),
            reads_served: counter_of(
                &r,
                "keelson_reads_served_total",
                "Reads served by this node, by what it served them as (primary or follower).",
                "served_as",
                known::SERVED_AS,
            ),
            replication_ack: histogram(
                &r,
                "keelson_replication_ack_seconds",
                "How long a primary waits for its in-sync followers to acknowledge a write.",
                latency_buckets(),
            ),
            shards_under_replicated: gauge(
                &r,
                "keelson_shards_under_replicated",
                "Shards this node leads with fewer in-sync copies than the replication factor.",
            ),
            failovers: int_counter(
                &r,
                "keelson_failovers_total",
                "Failed primaries replaced by an in-sync follower, committed by this node while leading.",
            ),
            failover_seconds: histogram(
                &r,
                "keelson_failover_seconds",
                "From the leader seeing a primary down to its replacement committed.",
                latency_buckets(),
            ),
            lease_valid: gauge(
                &r,
                "keelson_lease_valid",
                "1 while answers from a majority keep this node's primary lease.",
            ),
            shards_unavailable: gauge(
                &r,
                "keelson_shards_unavailable",
                "Shards whose primary this process sees down.",
            ),
            node_degraded: gauge_vec(
                &r,
                "keelson_node_degraded",
                "1 for a node marked degraded: far slower or failing more than its peers.",
                &["peer"],
            ),
            node_latency: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "keelson_node_latency_seconds",
                        "Smoothed heartbeat round trip to each node, as this process sees it (what gray-failure detection compares).",
                    ),
                    &["peer"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            bad_frames: {
                let c = counter(
                    &r,
                    "keelson_bad_frames_total",
                    "Frames from peers refused because a shard number, index or length in them was out of range, by reason.",
                    &["reason"],
                );
                for reason in known::FRAME_REFUSALS {
                    c.with_label_values(&[reason]);
                }
                c
            },
            shard_host_restarts: int_counter(
                &r,
                "keelson_shard_host_restarts_total",
                "Times this node restarted its shard host after it died.",
            ),
            registry: r,

        }
    }

    /// Exports every per-kind series at 0 for the entity kinds this node hosts: active,
    /// activations, failures, requests in flight, quarantined, and each known passivation,
    /// restart and quarantine reason and request outcome. Called once at start-up.
    pub fn known_kinds<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        for kind in kinds {
            self.entities_active.with_label_values(&[kind]);
            self.entity_activations.with_label_values(&[kind]);
            self.entity_failures.with_label_values(&[kind]);
            self.entity_requests_in_flight.with_label_values(&[kind]);
            self.entities_quarantined.with_label_values(&[kind]);
            for (vec, values) in [
                (&self.entity_passivations, known::PASSIVATION_REASONS),
                (&self.entity_restarts, known::RESTART_REASONS),
                (&self.entity_quarantines, known::QUARANTINE_REASONS),
                (&self.messages_handled, known::HANDLED_OUTCOMES),
            ] {
                for v in values {
                    vec.with_label_values(&[kind, v]);
                }
            }
        }
    }

    /// Exports the health watch's series at 0 for the nodes it watches, before its first sample:
    /// not degraded, no latency measured yet. Called once when the watch starts.
    pub fn known_nodes<'a>(&self, nodes: impl IntoIterator<Item = &'a str>) {
        for node in nodes {
            self.node_degraded.with_label_values(&[node]);
            self.node_latency.with_label_values(&[node]);
        }
    }

    /// Exports every per-peer series at 0 for the peers this process watches: up, each state
    /// transition, and the heartbeat round trip. Called once at start-up.
    pub fn known_peers<'a>(&self, peers: impl IntoIterator<Item = &'a str>) {
        for peer in peers {
            self.peer_up.with_label_values(&[peer]);
            self.heartbeat_rtt.with_label_values(&[peer]);
            for state in known::PEER_STATES {
                self.peer_transitions.with_label_values(&[peer, state]);
            }
        }
    }
}

#[cfg(test)]
#[path = "metrics_test.rs"]
mod tests;
