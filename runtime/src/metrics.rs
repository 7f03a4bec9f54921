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
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
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
    /// Whole-state writes of kinds whose journal replays into their state.
    pub entity_checkpoints: IntCounterVec,
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
    /// Entity requests this node refused before running them (not the owner, no lease).
    pub requests_refused: IntCounterVec,
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
    /// 1 while this node votes in consensus.
    pub consensus_voter: IntGauge,
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
    /// Times this node's primary lease ran out while it held it.
    pub lease_lapses: IntCounter,
    /// Shards whose primary this process sees down.
    pub shards_unavailable: IntGauge,
    /// 1 for a node this process marks degraded (far slower or failing more than its peers).
    pub node_degraded: IntGaugeVec,
    /// This process's latency EWMA per node, seconds.
    pub node_latency: GaugeVec,
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
    /// Why this node refused an entity request (`keelson_requests_refused_total{reason}`).
    pub const REQUEST_REFUSALS: &[&str] = &["not_owner", "no_lease"];
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
    pub const MAP_CHANGES: &[&str] = &[
        "promote",
        "shrink",
        "add_learner",
        "join",
        "handoff",
        "add_node",
        "drain_node",
        "remove_node",
    ];
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

fn counter(r: &Registry, about: About, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(about.name, about.help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

/// A counter vector with one label whose `values` are exported at 0 from the start.
fn counter_of(r: &Registry, about: About, label: &str, values: &[&str]) -> IntCounterVec {
    let c = counter(r, about, &[label]);
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn int_counter(r: &Registry, about: About) -> IntCounter {
    let c = IntCounter::new(about.name, about.help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge_vec(r: &Registry, about: About, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(about.name, about.help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn float_gauge_vec(r: &Registry, about: About, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(about.name, about.help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauge(r: &Registry, about: About) -> IntGauge {
    let g = IntGauge::new(about.name, about.help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, about: About, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(about.name, about.help).buckets(buckets);
    let h = Histogram::with_opts(opts).expect("valid");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

/// A histogram vector over [`latency_buckets`].
fn histogram_vec(r: &Registry, about: About, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(about.name, about.help).buckets(latency_buckets());
    let h = HistogramVec::new(opts, labels).expect("valid");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

/// What a collector is called and says it counts.
#[derive(Debug, Clone, Copy)]
struct About {
    name: &'static str,
    help: &'static str,
}

// Entities (host).
const ENTITIES_ACTIVE: About = About {
    name: "keelson_entities_active",
    help: "Active entities by kind.",
};
const ENTITY_ACTIVATIONS: About = About {
    name: "keelson_entity_activations_total",
    help: "Entity activations by kind.",
};
const ENTITY_PASSIVATIONS: About = About {
    name: "keelson_entity_passivations_total",
    help: "Entity passivations by kind and reason.",
};
const ENTITY_FAILURES: About = About {
    name: "keelson_entity_failures_total",
    help: "Entity panics and errors by kind.",
};
const ENTITY_CHECKPOINTS: About = About {
    name: "keelson_entity_checkpoints_total",
    help: "Whole-state writes (checkpoints) of entity kinds whose journal replays into their state, by kind.",
};
const ENTITY_RESTARTS: About = About {
    name: "keelson_entity_restarts_total",
    help: "Entity restarts scheduled after a failure, by kind and reason (panic or error).",
};
const ENTITY_QUARANTINES: About = About {
    name: "keelson_entity_quarantines_total",
    help: "Entities quarantined, by kind and reason (restart_budget: it kept failing).",
};
const ENTITY_REQUESTS_IN_FLIGHT: About = About {
    name: "keelson_entity_requests_in_flight",
    help: "Requests handed to entity actors and not yet answered, by kind.",
};
const ENTITIES_QUARANTINED: About = About {
    name: "keelson_entities_quarantined",
    help: "Entities currently quarantined, by kind.",
};
const MESSAGES_HANDLED: About = About {
    name: "keelson_messages_handled_total",
    help: "Entity requests handled by this node, by kind and outcome.",
};
// Shards, peers and the map (cluster, consensus).
const SHARDS_OWNED: About = About {
    name: "keelson_shards_owned",
    help: "Shards this node owns.",
};
const SHARD_EPOCH: About = About {
    name: "keelson_shard_map_epoch",
    help: "Epoch of the shard map in force.",
};
const HEARTBEAT_RTT: About = About {
    name: "keelson_heartbeat_rtt_seconds",
    help: "Heartbeat round trip by peer.",
};
const PEER_UP: About = About {
    name: "keelson_peer_up",
    help: "1 when the peer answers heartbeats, 0 otherwise.",
};
const PEER_TRANSITIONS: About = About {
    name: "keelson_peer_transitions_total",
    help: "Peer state changes by peer and new state.",
};
// Routing (client).
const ROUTED_REQUESTS: About = About {
    name: "keelson_routed_requests_total",
    help: "Entity requests sent by this process, by outcome.",
};
const REQUESTS_REFUSED: About = About {
    name: "keelson_requests_refused_total",
    help: "Entity requests this node refused before running them (the sender retries), by reason.",
};
// Storage.
const STORAGE_FLUSH_SECONDS: About = About {
    name: "keelson_storage_flush_seconds",
    help: "Duration of one storage fsync.",
};
const STORAGE_FLUSH_BATCH: About = About {
    name: "keelson_storage_flush_batch_size",
    help: "Writes made durable by one fsync.",
};
// Replication and failover.
const DUPLICATE_PRIMARY: About = About {
    name: "keelson_duplicate_primary_total",
    help: "Writes confirmed by a node after it lost the primary role; must stay 0.",
};
const STALE_PRIMARY_REFUSALS: About = About {
    name: "keelson_stale_primary_refusals_total",
    help: "Writes refused because a follower knew a newer epoch.",
};
const IN_SYNC_SHRINKS: About = About {
    name: "keelson_in_sync_shrinks_total",
    help: "Followers dropped from an in-sync set by this node.",
};
const LINK_REFUSALS: About = About {
    name: "keelson_link_refusals_total",
    help: "Cluster connections refused, by reason.",
};
const REPLICA_WRITES: About = About {
    name: "keelson_replica_writes_total",
    help: "Replicated writes received as a follower, by result.",
};
const MAP_CHANGES: About = About {
    name: "keelson_map_changes_total",
    help: "Shard-map changes committed by this node while leading, by kind.",
};
const SHARDS_FOLLOWING: About = About {
    name: "keelson_shards_following",
    help: "Shards this node follows in sync.",
};
const SHARDS_LEARNING: About = About {
    name: "keelson_shards_learning",
    help: "Shards this node is copying.",
};
const COPY_RECORDS: About = About {
    name: "keelson_copy_records_total",
    help: "Records received by shard copies.",
};
const CONSENSUS_LEADER: About = About {
    name: "keelson_consensus_leader",
    help: "1 while this node leads the consensus log.",
};
const CONSENSUS_VOTER: About = About {
    name: "keelson_consensus_voter",
    help: "1 while this node votes in consensus (the seeds, and joined nodes up to an odd five).",
};
const READS_SERVED: About = About {
    name: "keelson_reads_served_total",
    help: "Reads served by this node, by what it served them as (primary or follower).",
};
const REPLICATION_ACK: About = About {
    name: "keelson_replication_ack_seconds",
    help: "How long a primary waits for its in-sync followers to acknowledge a write.",
};
const SHARDS_UNDER_REPLICATED: About = About {
    name: "keelson_shards_under_replicated",
    help: "Shards this node leads with fewer in-sync copies than the replication factor.",
};
const FAILOVERS: About = About {
    name: "keelson_failovers_total",
    help: "Failed primaries replaced by an in-sync follower, committed by this node while leading.",
};
const FAILOVER_SECONDS: About = About {
    name: "keelson_failover_seconds",
    help: "From the leader seeing a primary down to its replacement committed.",
};
// Lease, availability and gray failures.
const LEASE_LAPSES: About = About {
    name: "keelson_lease_lapses_total",
    help: "Times this node's primary lease ran out while it held it.",
};
const LEASE_VALID: About = About {
    name: "keelson_lease_valid",
    help: "1 while answers from a majority keep this node's primary lease.",
};
const SHARDS_UNAVAILABLE: About = About {
    name: "keelson_shards_unavailable",
    help: "Shards whose primary this process sees down.",
};
const NODE_DEGRADED: About = About {
    name: "keelson_node_degraded",
    help: "1 for a node marked degraded: far slower or failing more than its peers.",
};
const SHARD_HOST_RESTARTS: About = About {
    name: "keelson_shard_host_restarts_total",
    help: "Times this node restarted its shard host after it died.",
};
const NODE_LATENCY: About = About {
    name: "keelson_node_latency_seconds",
    help: "Smoothed heartbeat round trip to each node, as this process sees it (what gray-failure detection compares).",
};
const BAD_FRAMES: About = About {
    name: "keelson_bad_frames_total",
    help: "Frames from peers refused because a shard number, index or length in them was out of range, by reason.",
};

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
        Self {
            entities_active: gauge_vec(&r, ENTITIES_ACTIVE, &["kind"]),
            entity_activations: counter(&r, ENTITY_ACTIVATIONS, &["kind"]),
            entity_passivations: counter(&r, ENTITY_PASSIVATIONS, &["kind", "reason"]),
            entity_failures: counter(&r, ENTITY_FAILURES, &["kind"]),
            entity_checkpoints: counter(&r, ENTITY_CHECKPOINTS, &["kind"]),
            entity_restarts: counter(&r, ENTITY_RESTARTS, &["kind", "reason"]),
            entity_quarantines: counter(&r, ENTITY_QUARANTINES, &["kind", "reason"]),
            entity_requests_in_flight: gauge_vec(&r, ENTITY_REQUESTS_IN_FLIGHT, &["kind"]),
            entities_quarantined: gauge_vec(&r, ENTITIES_QUARANTINED, &["kind"]),
            messages_handled: counter(&r, MESSAGES_HANDLED, &["kind", "outcome"]),
            shards_owned: gauge(&r, SHARDS_OWNED),
            shard_epoch: gauge(&r, SHARD_EPOCH),
            peer_up: gauge_vec(&r, PEER_UP, &["peer"]),
            peer_transitions: counter(&r, PEER_TRANSITIONS, &["peer", "state"]),
            heartbeat_rtt: histogram_vec(&r, HEARTBEAT_RTT, &["peer"]),
            routed_requests: counter_of(&r, ROUTED_REQUESTS, "outcome", known::ROUTED_OUTCOMES),
            requests_refused: counter_of(&r, REQUESTS_REFUSED, "reason", known::REQUEST_REFUSALS),
            storage_flush_seconds: histogram(&r, STORAGE_FLUSH_SECONDS, latency_buckets()),
            storage_flush_batch: histogram(
                &r,
                STORAGE_FLUSH_BATCH,
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            duplicate_primary: int_counter(&r, DUPLICATE_PRIMARY),
            stale_primary_refusals: int_counter(&r, STALE_PRIMARY_REFUSALS),
            in_sync_shrinks: int_counter(&r, IN_SYNC_SHRINKS),
            link_refusals: counter_of(&r, LINK_REFUSALS, "reason", known::LINK_REFUSALS),
            replica_writes: counter_of(&r, REPLICA_WRITES, "result", known::REPLICA_WRITE_RESULTS),
            map_changes: counter_of(&r, MAP_CHANGES, "change", known::MAP_CHANGES),
            shards_following: gauge(&r, SHARDS_FOLLOWING),
            shards_learning: gauge(&r, SHARDS_LEARNING),
            copy_records: int_counter(&r, COPY_RECORDS),
            consensus_leader: gauge(&r, CONSENSUS_LEADER),
            consensus_voter: gauge(&r, CONSENSUS_VOTER),
            reads_served: counter_of(&r, READS_SERVED, "served_as", known::SERVED_AS),
            replication_ack: histogram(&r, REPLICATION_ACK, latency_buckets()),
            shards_under_replicated: gauge(&r, SHARDS_UNDER_REPLICATED),
            failovers: int_counter(&r, FAILOVERS),
            failover_seconds: histogram(&r, FAILOVER_SECONDS, latency_buckets()),
            lease_valid: gauge(&r, LEASE_VALID),
            lease_lapses: int_counter(&r, LEASE_LAPSES),
            shards_unavailable: gauge(&r, SHARDS_UNAVAILABLE),
            node_degraded: gauge_vec(&r, NODE_DEGRADED, &["peer"]),
            node_latency: float_gauge_vec(&r, NODE_LATENCY, &["peer"]),
            bad_frames: counter_of(&r, BAD_FRAMES, "reason", known::FRAME_REFUSALS),
            shard_host_restarts: int_counter(&r, SHARD_HOST_RESTARTS),
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
            self.entity_checkpoints.with_label_values(&[kind]);
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
