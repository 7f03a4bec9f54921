//! The bridge: one MQTT session for the whole cluster, held by the node that is the consensus
//! leader, delivering device messages to their device actors and acknowledging each one only
//! after its actor has persisted it.
//!
//! ```text
//!          broker ──QoS 1 (persistent session "keelson-bridge-<cluster>")──▶ bridge on the leader
//!   telemetry │ twin/reported │ acks                                          │
//!             ▼                                                               ▼
//!      Edge (schema, units, ranges, duplicates, rate) ──reject──▶ keelson/deadletter
//!             │ accept
//!             ▼
//!      device actor (Ingest / ReportTwin / CommandAck, anywhere in the cluster)
//!             │ alert? ─▶ customer OpenTicket ─▶ device AlertTicket ─▶ publish command
//!             │           ─▶ device CommandSent         (each step idempotent on the alert id)
//!             ▼
//!      PUBACK to the broker, in arrival order
//! ```
//!
//! Why a singleton that moves rather than one bridge per node with shared subscriptions: with
//! one MQTT session, the broker itself keeps every unacknowledged message and redelivers it to
//! whichever node takes the session over (same client id, clean_session = false), so a node
//! killed mid-message loses nothing, and a message is never in two bridges at once. Shared
//! subscriptions would split that state over several sessions, and a dead member's unacked
//! messages would wait for that member to come back. One session is enough: the bridge only
//! routes; the work happens in the device actors spread over the cluster. The broker also
//! enforces the singleton: a second connection with the same client id takes the session over.
//!
//! An anomaly chain is resumable because the telemetry message that raised the alert is
//! acknowledged only when the whole chain is done: after a crash the broker redelivers it, the
//! device actor recognises the sequence number and returns the alert, and the bridge continues
//! from the first step not yet recorded.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keelson_actors::{
    AnomalyConfig, CustomerCommand, DeviceAnswer, DeviceCommand, DeviceReply, DomainError,
    SampleLimits, TwinValue,
};
use keelson_runtime::node::{NodeContext, NodeService};
use keelson_runtime::{decode_payload, encode_payload, Access, ClusterConfig, IdempotencyKey};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::edge::{deadletter, parse_topic, DeviceTopic, Edge, EdgeConfig, Rejected, Scalar};
use crate::metrics;
use crate::publisher::Publisher;
use crate::topics;

/// How long one message may keep failing (cluster unavailable) before the session is dropped
/// and the broker redelivers everything unacknowledged.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(60);

/// The command a device gets for an alert.
pub const ALERT_COMMAND: &str = "maintenance-check";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The bridge's settings, from `[mqtt]` and `[iot]`.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Client id of the cluster's one session.
    pub client_id: String,
    /// Broker address.
    pub broker: SocketAddr,
    /// Edge limits.
    pub edge: EdgeConfig,
    /// Anomaly detection.
    pub anomaly: AnomalyConfig,
    /// Largest message.
    pub max_payload: usize,
    /// The MQTT service secret (the bridge logs in as a service).
    pub password: Option<keelson_runtime::config::Secret>,
    /// TLS to the broker.
    pub tls: crate::MqttTls,
}

/// A dead letter for a message the device entity refused, with the field at fault.
fn refused(e: DomainError) -> Rejected {
    Rejected::new(crate::edge::Reason::Refused, crate::edge::field_detail(e))
}

/// The edge's rules from the cluster config: what the bridge checks every MQTT message against,
/// and what the gateway checks HTTP telemetry against.
pub fn edge_config(cfg: &ClusterConfig) -> EdgeConfig {
    let defaults = EdgeConfig::default();
    let d = defaults.samples;
    let samples = SampleLimits {
        max_future_ms: cfg.iot.max_future_ms.unwrap_or(d.max_future_ms),
        max_past_ms: cfg.iot.max_past_ms.unwrap_or(d.max_past_ms),
        max_seq_jump: cfg.iot.max_seq_jump.unwrap_or(d.max_seq_jump),
    };
    match cfg.mqtt.as_ref() {
        Some(m) => EdgeConfig {
            max_payload_bytes: m.max_payload_bytes,
            rate_per_s: m.rate_per_device,
            burst: m.burst,
            samples,
            ..defaults
        },
        None => EdgeConfig {
            samples,
            ..defaults
        },
    }
}

impl BridgeSettings {
    /// From the cluster config; `None` without `[mqtt]`.
    pub fn from_config(cfg: &ClusterConfig) -> Option<Self> {
        let m = cfg.mqtt.as_ref()?;
        let edge = edge_config(cfg);
        let mut anomaly = AnomalyConfig::default();
        if let Some(a) = cfg.iot.ewma_alpha {
            anomaly.alpha = a;
        }
        if let Some(z) = cfg.iot.z_threshold {
            anomaly.z_threshold = z;
        }
        if let Some(w) = cfg.iot.warmup {
            anomaly.warmup = w;
        }
        for (reading, (min, max)) in &cfg.iot.thresholds {
            anomaly.thresholds.insert(
                reading.clone(),
                keelson_actors::Range {
                    min: *min,
                    max: *max,
                },
            );
        }
        Some(Self {
            client_id: format!("keelson-bridge-{}", cfg.name),
            broker: m.addr,
            edge,
            anomaly,
            max_payload: m.max_payload_bytes,
            password: crate::mqtt_auth::service_secret(cfg),
            tls: crate::MqttTls::for_cluster(cfg).unwrap_or_else(|e| {
                tracing::error!(error = %e, "no TLS for MQTT: the bridge cannot reach a TLS broker");
                crate::MqttTls::default()
            }),
        })
    }
}

/// The node service that runs the bridge (active only on the leader); `None` without `[mqtt]`.
/// Supervised: if the bridge task panics it is restarted after a backoff (1 s doubling to 30 s),
/// leaving its session so the broker redelivers what it had not acknowledged.
pub fn service(cfg: &ClusterConfig) -> Option<NodeService> {
    let settings = BridgeSettings::from_config(cfg)?;
    Some(Box::new(move |ctx: NodeContext| {
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let task = tokio::spawn(run(ctx.clone(), settings.clone()));
                match task.await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => {
                        metrics::get().active.set(0);
                        tracing::error!(error = %e, restart_in_ms = backoff.as_millis() as u64, "the MQTT bridge failed; restarting it");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    Err(_) => return,
                }
                if ctx.shutdown.is_signalled() {
                    return;
                }
            }
        })
    }))
}

async fn run(ctx: NodeContext, settings: BridgeSettings) {
    let publisher = Publisher::start(
        settings.broker,
        &format!("keelson-pub-{}", ctx.name),
        settings.password.as_ref(),
        &settings.tls,
        settings.max_payload * 64,
    );
    let mut singleton = ctx.singleton.clone();
    let shutdown = ctx.shutdown.clone();
    let m = metrics::get();
    loop {
        tokio::select! {
            r = singleton.wait_for(|v| *v) => if r.is_err() { return },
            _ = shutdown.clone().wait() => return,
        }
        tracing::info!(node = %ctx.name, broker = %settings.broker, "this node takes the MQTT bridge session");
        m.active.set(1);
        m.sessions.inc();
        let bridge = Arc::new(Bridge {
            ctx: ctx.clone(),
            settings: settings.clone(),
            publisher: publisher.clone(),
            edge: Mutex::new(Edge::new(settings.edge.clone()).expect("validated edge config")),
            kinds: Mutex::new(HashMap::new()),
        });
        tokio::select! {
            _ = bridge.session() => {}
            _ = singleton.wait_for(|v| !*v) => {
                tracing::info!(node = %ctx.name, "no longer the leader: leaving the MQTT bridge session");
            }
            _ = shutdown.clone().wait() => {
                m.active.set(0);
                return;
            }
        }
        m.active.set(0);
    }
}

struct Bridge {
    ctx: NodeContext,
    settings: BridgeSettings,
    publisher: Publisher,
    edge: Mutex<Edge>,
    /// Device kinds already looked up (`None`: no such device).
    kinds: Mutex<HashMap<String, Option<String>>>,
}

/// A failure worth retrying: the cluster could not answer for now.
#[derive(Debug)]
struct Transient(String);

impl Bridge {
    /// Connects, subscribes and delivers until the connection drops; then reconnects.
    async fn session(self: &Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut opts = MqttOptions::new(
                self.settings.client_id.clone(),
                self.settings.broker.ip().to_string(),
                self.settings.broker.port(),
            );
            let max = self.settings.max_payload * 64 + 1024;
            opts.set_keep_alive(Duration::from_secs(5))
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_max_packet_size(max, max);
            if let Some(p) = &self.settings.password {
                opts.set_credentials(self.settings.client_id.clone(), p.expose());
            }
            self.settings.tls.apply(&mut opts);
            let (client, mut eventloop) = AsyncClient::new(opts, 512);
            for filter in [
                topics::TELEMETRY_FILTER,
                topics::REPORTED_FILTER,
                topics::ACKS_FILTER,
            ] {
                let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
            }
            // Acknowledge in arrival order (the broker requires it), each once its message is
            // done; a message that keeps failing ends the connection so the broker redelivers.
            let (ack_tx, mut ack_rx) =
                mpsc::unbounded_channel::<(Publish, Instant, tokio::task::JoinHandle<bool>)>();
            let (failed_tx, mut failed) = mpsc::channel::<()>(1);
            let acker_client = client.clone();
            let acker = tokio::spawn(async move {
                let m = metrics::get();
                while let Some((p, at, done)) = ack_rx.recv().await {
                    let ok = done.await.unwrap_or(false);
                    m.backlog.dec();
                    if !ok {
                        let _ = failed_tx.send(()).await;
                        return;
                    }
                    m.latency.observe(at.elapsed().as_secs_f64());
                    if acker_client.ack(&p).await.is_err() {
                        return;
                    }
                }
            });
            let m = metrics::get();
            loop {
                tokio::select! {
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(c))) => {
                            backoff = Duration::from_millis(100);
                            tracing::info!(session_present = c.session_present, "MQTT bridge connected");
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            m.backlog.inc();
                            let me = self.clone();
                            let msg = p.clone();
                            let done = tokio::spawn(async move { me.handle(msg).await });
                            let _ = ack_tx.send((p, Instant::now(), done));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "MQTT bridge connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = failed.recv() => {
                        tracing::warn!("a message kept failing; dropping the session so the broker redelivers");
                        let _ = client.disconnect().await;
                        break;
                    }
                }
            }
            // Never acknowledge a message received on an earlier connection.
            acker.abort();
            m.backlog.set(0);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Handles one message; true when it may be acknowledged.
    async fn handle(self: Arc<Self>, p: Publish) -> bool {
        let deadline = Instant::now() + MESSAGE_DEADLINE;
        let mut wait = Duration::from_millis(50);
        loop {
            match self.handle_once(&p).await {
                Ok(()) => return true,
                Err(Transient(why)) => {
                    if Instant::now() + wait > deadline || self.ctx.shutdown.is_signalled() {
                        tracing::warn!(topic = %p.topic, %why, "giving up on a message for now");
                        return false;
                    }
                    tracing::debug!(topic = %p.topic, %why, "retrying a message");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn handle_once(&self, p: &Publish) -> Result<(), Transient> {
        let m = metrics::get();
        let Some((kind, device)) = parse_topic(&p.topic) else {
            m.received.with_label_values(&["other"]).inc();
            return self
                .reject(&p.topic, &p.payload, Rejected::bad_topic(&p.topic))
                .await;
        };
        let label = match kind {
            DeviceTopic::Telemetry => "telemetry",
            DeviceTopic::Reported => "twin_reported",
            DeviceTopic::Ack => "acks",
        };
        m.received.with_label_values(&[label]).inc();
        let Some(device_kind) = self.kind_of(device).await? else {
            return self
                .reject(&p.topic, &p.payload, Rejected::unknown_device(device))
                .await;
        };
        let result = match kind {
            DeviceTopic::Telemetry => {
                let checked = self.edge.lock().expect("edge lock").check_telemetry(
                    device,
                    Some(&device_kind),
                    &p.payload,
                    now_ms(),
                );
                match checked {
                    Ok(a) => self.telemetry(device, a, &p.topic, &p.payload).await,
                    Err(r) => return self.reject(&p.topic, &p.payload, r).await,
                }
            }
            DeviceTopic::Reported => {
                let checked = self
                    .edge
                    .lock()
                    .expect("edge lock")
                    .check_reported(device, &p.payload);
                match checked {
                    Ok(r) => self.reported(device, r, &p.topic, &p.payload).await,
                    Err(r) => return self.reject(&p.topic, &p.payload, r).await,
                }
            }
            DeviceTopic::Ack => {
                let checked = self
                    .edge
                    .lock()
                    .expect("edge lock")
                    .check_ack(device, &p.payload);
                match checked {
                    Ok(a) => self.ack(device, a, &p.topic, &p.payload).await,
                    Err(r) => return self.reject(&p.topic, &p.payload, r).await,
                }
            }
        };
        if result.is_ok() {
            m.delivered.with_label_values(&[label]).inc();
        }
        result
    }

    async fn reject(&self, topic: &str, payload: &[u8], r: Rejected) -> Result<(), Transient> {
        metrics::get()
            .deadletter
            .with_label_values(&[r.reason.as_str()])
            .inc();
        tracing::debug!(%topic, reason = r.reason.as_str(), detail = %r.detail, "dead-lettered");
        self.publisher
            .publish(
                topics::DEADLETTER,
                deadletter(topic, payload, &r, now_ms()),
                false,
            )
            .await
            .map_err(|e| Transient(e.to_string()))
    }

    /// The device's kind, looked up once; `None` if there is no such device.
    async fn kind_of(&self, device: &str) -> Result<Option<String>, Transient> {
        if let Some(k) = self.kinds.lock().expect("kinds lock").get(device) {
            return Ok(k.clone());
        }
        let kind = match self.device(device, DeviceCommand::Get, None).await? {
            Ok(DeviceAnswer::Device(d)) => Some(d.kind),
            Err(DomainError::NotFound { .. }) => None,
            other => return Err(Transient(format!("unexpected answer: {other:?}"))),
        };
        let mut kinds = self.kinds.lock().expect("kinds lock");
        if kinds.len() > 200_000 {
            kinds.clear();
        }
        // Unknown devices are looked up again later: they may be registered by then.
        if kind.is_some() {
            kinds.insert(device.to_string(), kind.clone());
        }
        Ok(kind)
    }

    async fn send(
        &self,
        kind: &str,
        id: &str,
        payload: Vec<u8>,
        key: Option<String>,
    ) -> Result<Vec<u8>, Transient> {
        // The bridge's keys name the message they come from (`{device}-{seq}`, the alert id): a
        // redelivery is the same message, so the key alone identifies the request.
        let access = match key {
            Some(k) => Access::write(Some(IdempotencyKey {
                key: k,
                fingerprint: [0; 16],
            })),
            None => Access::read(),
        };
        let rid = format!("mqtt-{}", now_ms());
        self.ctx
            .client
            .send(kind, id, payload, &rid, None, access)
            .await
            .map(|a| a.reply)
            .map_err(|e| Transient(e.to_string()))
    }

    async fn device(
        &self,
        id: &str,
        cmd: DeviceCommand,
        key: Option<String>,
    ) -> Result<DeviceReply, Transient> {
        let bytes = self.send("device", id, encode_payload(&cmd), key).await?;
        decode_payload(&bytes).map_err(|e| Transient(format!("device reply: {e}")))
    }

    async fn customer(
        &self,
        id: &str,
        cmd: CustomerCommand,
        key: String,
    ) -> Result<keelson_actors::CustomerReply, Transient> {
        let bytes = self
            .send("customer", id, encode_payload(&cmd), Some(key))
            .await?;
        decode_payload(&bytes).map_err(|e| Transient(format!("customer reply: {e}")))
    }

    async fn telemetry(
        &self,
        device: &str,
        a: crate::edge::Accepted,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Transient> {
        let cmd = DeviceCommand::Ingest {
            seq: a.seq,
            at_ms: a.at_ms,
            readings: a.readings,
            anomaly: self.settings.anomaly.clone(),
            limits: self.settings.edge.samples,
        };
        let key = format!("ingest-{}", a.seq);
        let alert = match self.device(device, cmd, Some(key)).await? {
            Ok(DeviceAnswer::Ingested(out)) => {
                if !out.duplicate && out.alert.is_some() {
                    metrics::get().anomalies.inc();
                }
                out.alert
            }
            // Refused by the actor's own validation: nothing to retry; dead-lettered with why.
            Err(e) => return self.reject(topic, payload, refused(e)).await,
            Ok(_) => None,
        };
        match alert {
            Some(alert) => self.alert_chain(device, alert).await,
            None => Ok(()),
        }
    }

    /// Ticket, command, bookkeeping: each step skipped when already recorded on the alert.
    async fn alert_chain(
        &self,
        device: &str,
        mut alert: keelson_actors::Alert,
    ) -> Result<(), Transient> {
        if alert.ticket_id.is_none() {
            let summary = format!("device {device}: {}", alert.reason);
            let reply = self
                .customer(
                    &alert.customer_id.clone(),
                    CustomerCommand::OpenTicket {
                        alert_id: alert.id.clone(),
                        device_id: device.to_string(),
                        summary,
                    },
                    format!("ticket-{}", alert.id),
                )
                .await?;
            let ticket_id = match reply {
                Ok(answer) => ticket_id_of(&answer, &alert.id),
                Err(e) => {
                    tracing::warn!(alert = %alert.id, error = %e, "no ticket for alert");
                    return Ok(());
                }
            };
            metrics::get().tickets.inc();
            self.device(
                device,
                DeviceCommand::AlertTicket {
                    alert_id: alert.id.clone(),
                    ticket_id: ticket_id.clone(),
                },
                Some(format!("ticket-{}", alert.id)),
            )
            .await?
            .map_err(|e| Transient(e.to_string()))?;
            alert.ticket_id = Some(ticket_id);
        }
        if !alert.command_sent {
            let id = format!("cmd-{}", alert.id);
            let params = BTreeMap::from([
                ("alert_id".to_string(), TwinValue::Text(alert.id.clone())),
                (
                    "reading".to_string(),
                    TwinValue::Text(alert.reading.clone()),
                ),
                ("value".to_string(), TwinValue::Number(alert.value)),
            ]);
            self.device(
                device,
                DeviceCommand::IssueCommand {
                    id: id.clone(),
                    name: ALERT_COMMAND.to_string(),
                    params: params.clone(),
                    alert_id: Some(alert.id.clone()),
                },
                Some(format!("issue-{id}")),
            )
            .await?
            .map_err(|e| Transient(e.to_string()))?;
            self.publish_command(device, &id, ALERT_COMMAND, &params, "alert")
                .await?;
        }
        Ok(())
    }

    /// Publishes a recorded command and marks it sent once the broker has it.
    async fn publish_command(
        &self,
        device: &str,
        id: &str,
        name: &str,
        params: &BTreeMap<String, TwinValue>,
        origin: &str,
    ) -> Result<(), Transient> {
        publish_command(&self.publisher, device, id, name, params)
            .await
            .map_err(|e| Transient(e.to_string()))?;
        metrics::get().commands.with_label_values(&[origin]).inc();
        self.device(
            device,
            DeviceCommand::CommandSent { id: id.to_string() },
            Some(format!("sent-{id}")),
        )
        .await?
        .map_err(|e| Transient(e.to_string()))?;
        Ok(())
    }

    async fn reported(
        &self,
        device: &str,
        r: crate::edge::ReportedTwin,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Transient> {
        let state = r.state.into_iter().map(|(k, v)| (k, scalar(v))).collect();
        let key = r.version.map(|v| format!("reported-{v}"));
        // A stale version is answered without a change; a refused report is dead-lettered.
        let reply = self
            .device(
                device,
                DeviceCommand::ReportTwin {
                    state,
                    version: r.version,
                },
                key.or_else(|| Some(format!("reported-at-{}", now_ms()))),
            )
            .await?;
        match reply {
            Err(e) => self.reject(topic, payload, refused(e)).await,
            Ok(_) => Ok(()),
        }
    }

    async fn ack(
        &self,
        device: &str,
        a: crate::edge::CommandAckMsg,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), Transient> {
        let status = a.status.as_str().to_string();
        let reply = self
            .device(
                device,
                DeviceCommand::CommandAck {
                    id: a.command_id.clone(),
                    status: status.clone(),
                },
                Some(format!("ack-{}", a.command_id)),
            )
            .await?;
        let record = match reply {
            Ok(DeviceAnswer::Command(c)) => c,
            // An ack for a command the device never had: nothing to record, and said so.
            Err(e) => return self.reject(topic, payload, refused(e)).await,
            Ok(_) => return Ok(()),
        };
        metrics::get()
            .command_acks
            .with_label_values(&[status.as_str()])
            .inc();
        let Some(alert_id) = record.alert_id else {
            return Ok(());
        };
        let customer = match self.device(device, DeviceCommand::Get, None).await? {
            Ok(DeviceAnswer::Device(d)) => d.customer_id,
            _ => return Ok(()),
        };
        let _ = self
            .customer(
                &customer,
                CustomerCommand::RecordTicketAck {
                    alert_id: alert_id.clone(),
                    command_id: record.id.clone(),
                    status,
                },
                format!("ticket-ack-{alert_id}"),
            )
            .await?;
        let _ = self
            .device(
                device,
                DeviceCommand::AlertAckRecorded {
                    alert_id: alert_id.clone(),
                },
                Some(format!("ack-recorded-{alert_id}")),
            )
            .await?;
        Ok(())
    }
}

fn scalar(s: Scalar) -> TwinValue {
    match s {
        Scalar::Bool(b) => TwinValue::Bool(b),
        Scalar::Number(n) => TwinValue::Number(n),
        Scalar::Text(t) => TwinValue::Text(t),
    }
}

fn ticket_id_of(answer: &keelson_actors::CustomerAnswer, alert_id: &str) -> String {
    match answer {
        keelson_actors::CustomerAnswer::Ticket(t) => t.id.clone(),
        _ => format!("t-{alert_id}"),
    }
}

/// The JSON a device receives on `keelson/devices/{id}/commands`.
pub fn command_payload(id: &str, name: &str, params: &BTreeMap<String, TwinValue>) -> Vec<u8> {
    let params: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    serde_json::to_vec(&serde_json::json!({"command_id": id, "name": name, "params": params}))
        .expect("serialises")
}

/// Publishes a command to its device (QoS 1, confirmed by the broker).
pub async fn publish_command(
    publisher: &Publisher,
    device: &str,
    id: &str,
    name: &str,
    params: &BTreeMap<String, TwinValue>,
) -> Result<(), crate::publisher::PublishError> {
    publisher
        .publish(
            &topics::commands(device),
            command_payload(id, name, params),
            false,
        )
        .await
}
