//! The bridge's collectors, registered once in the process registry.

use std::sync::OnceLock;

use keelson_runtime::metrics::{latency_buckets, registry};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

/// MQTT collectors.
#[derive(Debug)]
pub struct MqttMetrics {
    /// Messages received from the broker, by topic kind.
    pub received: IntCounterVec,
    /// Messages delivered to their device actor (and acknowledged to the broker).
    pub delivered: IntCounterVec,
    /// Messages dead-lettered, by reason.
    pub deadletter: IntCounterVec,
    /// CONNECTs the embedded broker refused, by reason.
    pub auth_refused: IntCounterVec,
    /// Publishes, subscriptions and wills the embedded broker's ACL refused, by action.
    pub acl_denied: IntCounterVec,
    /// QoS 1 messages published and confirmed by the broker.
    pub published: IntCounter,
    /// QoS 1 messages received and not yet acknowledged.
    pub backlog: IntGauge,
    /// 1 while this process holds the bridge's MQTT session.
    pub active: IntGauge,
    /// Bridge sessions started (the singleton moved or reconnected).
    pub sessions: IntCounter,
    /// Anomaly alerts raised.
    pub anomalies: IntCounter,
    /// Days of device use fed to the recommendation model, by result.
    pub model_feeds: IntCounterVec,
    /// Tickets opened for alerts.
    pub tickets: IntCounter,
    /// Commands sent to devices, by origin (`alert`, `api`).
    pub commands: IntCounterVec,
    /// Command acknowledgements received from devices, by status.
    pub command_acks: IntCounterVec,
    /// Receive to acknowledgement, seconds.
    pub latency: Histogram,
}

static METRICS: OnceLock<MqttMetrics> = OnceLock::new();

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry()
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry()
        .register(Box::new(c.clone()))
        .expect("registered once");
    c
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry()
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
}

fn histogram(name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
        .expect("valid metric");
    registry()
        .register(Box::new(h.clone()))
        .expect("registered once");
    h
}

/// The bridge's collectors.
pub fn get() -> &'static MqttMetrics {
    METRICS.get_or_init(|| {
        let m = MqttMetrics {
            received: counter_vec(
                "keelson_mqtt_messages_in_total",
                "MQTT messages received by the bridge, by topic kind.",
                &["topic"],
            ),
            delivered: counter_vec(
                "keelson_mqtt_messages_delivered_total",
                "MQTT messages delivered to their device actor and acknowledged, by topic kind.",
                &["topic"],
            ),
            deadletter: counter_vec(
                "keelson_mqtt_deadletter_total",
                "MQTT messages rejected to keelson/deadletter, by reason.",
                &["reason"],
            ),
            auth_refused: counter_vec(
                "keelson_mqtt_auth_refused_total",
                "MQTT connections the embedded broker refused, by reason.",
                &["reason"],
            ),
            acl_denied: counter_vec(
                "keelson_mqtt_acl_denied_total",
                "MQTT publishes, subscriptions and wills refused by topic rules, by action.",
                &["action"],
            ),
            published: counter(
                "keelson_mqtt_messages_out_total",
                "MQTT messages published at QoS 1 and confirmed by the broker.",
            ),
            backlog: gauge(
                "keelson_mqtt_qos1_backlog",
                "QoS 1 messages received by the bridge and not yet acknowledged.",
            ),
            active: gauge(
                "keelson_mqtt_bridge_active",
                "1 while this process holds the bridge's MQTT session.",
            ),
            sessions: counter(
                "keelson_mqtt_bridge_sessions_total",
                "Bridge sessions started on this process.",
            ),
            anomalies: counter(
                "keelson_anomalies_total",
                "Anomaly alerts raised by device actors.",
            ),
            model_feeds: counter_vec(
                "keelson_mqtt_model_feeds_total",
                "Days of device use the bridge fed to the recommendation model, by result (fed, refused, failed).",
                &["result"],
            ),
            tickets: counter(
                "keelson_tickets_opened_total",
                "Support tickets opened for alerts (first opening only).",
            ),
            commands: counter_vec(
                "keelson_commands_sent_total",
                "Commands published to devices, by origin.",
                &["origin"],
            ),
            command_acks: counter_vec(
                "keelson_command_acks_total",
                "Command acknowledgements received from devices, by status.",
                &["status"],
            ),
            latency: histogram(
                "keelson_mqtt_processing_seconds",
                "From a message's arrival at the bridge to its acknowledgement.",
            ),
        };
        m.start_known_labels();
        m
    })
}

impl MqttMetrics {
    /// Known label values start at 0, so dashboards and alerts see the series before the
    /// first event.
    fn start_known_labels(&self) {
        for r in [
            "anonymous",
            "client_id_mismatch",
            "not_a_service",
            "bad_password",
        ] {
            self.auth_refused.with_label_values(&[r]);
        }
        for a in ["publish", "subscribe", "will"] {
            self.acl_denied.with_label_values(&[a]);
        }
        for r in crate::edge::Reason::ALL {
            self.deadletter.with_label_values(&[r.as_str()]);
        }
        for t in ["telemetry", "twin_reported", "acks"] {
            self.received.with_label_values(&[t]);
            self.delivered.with_label_values(&[t]);
        }
        // A topic outside the device tree is received (and dead-lettered), never delivered.
        self.received.with_label_values(&["other"]);
        for o in ["alert", "api"] {
            self.commands.with_label_values(&[o]);
        }
        for s in ["ok", "failed", "rejected"] {
            self.command_acks.with_label_values(&[s]);
        }
    }
}
