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
//!             │ first of its day? ─▶ taste + item-model (device_usage, keelson-feed)
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
//!
//! Here: the service (restarted after a panic), the session (one connection at a time, acked in
//! arrival order) and each message's retries; `deliver` hands each kind to its actor,
//! `alert_chain` turns an alert into a ticket and a command, `usage` feeds a device's days of
//! use to the recommendation model, `settings` reads `[mqtt]`/`[iot]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keelson_actors::{CustomerCommand, DeviceAnswer, DeviceCommand, DeviceReply, DomainError};
use keelson_runtime::node::{NodeContext, NodeService};
use keelson_runtime::{
    decode_payload, encode_payload, Access, Backoff, ClusterConfig, IdempotencyKey,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::edge::{deadletter, parse_topic, DeviceTopic, Edge, Rejected};
use crate::metrics;
use crate::publisher::Publisher;
use crate::topics;

mod alert_chain;
mod deliver;
mod settings;
mod usage;

pub use alert_chain::{command_payload, publish_command};
pub use settings::{edge_config, BridgeSettings};

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

/// The node service that runs the bridge (active only on the leader); `None` without `[mqtt]`.
/// Supervised: if the bridge task panics it is restarted after a backoff (1 s doubling to 30 s),
/// leaving its session so the broker redelivers what it had not acknowledged.
pub fn service(cfg: &ClusterConfig) -> Option<NodeService> {
    let settings = BridgeSettings::from_config(cfg)?;
    Some(Box::new(move |ctx: NodeContext| {
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            loop {
                let task = tokio::spawn(run(ctx.clone(), settings.clone()));
                match task.await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => {
                        metrics::get().active.set(0);
                        let delay = backoff.next_delay();
                        tracing::error!(error = %e, restart_in_ms = delay.as_millis() as u64, "the MQTT bridge failed; restarting it");
                        tokio::time::sleep(delay).await;
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
    // Nothing here serves recommendations: nobody needs telling when the model changed.
    let feed = keelson_feed::ModelFeed::start(ctx.client.clone(), std::sync::Arc::new(|| {}));
    // Kept across sessions: a session that reconnects does not feed the same days again.
    let used = Arc::new(Mutex::new(HashMap::new()));
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
            feed: feed.clone(),
            used: used.clone(),
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
    /// The recommendation model's feed (device usage).
    feed: keelson_feed::ModelFeed,
    /// The last day of use fed per device (days since the Unix epoch), by this node.
    used: Arc<Mutex<HashMap<String, u64>>>,
}

/// A failure worth retrying: the cluster could not answer for now.
#[derive(Debug)]
struct Transient(String);

/// A message received and being handled: acknowledged once its task says it may be.
type Pending = (Publish, Instant, tokio::task::JoinHandle<bool>);

/// Acknowledges in arrival order (the broker requires it), each message once it is done; a
/// message that keeps failing ends the connection (through `failed`) so the broker redelivers.
async fn acknowledge(
    client: AsyncClient,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    failed: mpsc::Sender<()>,
) {
    let m = metrics::get();
    while let Some((p, at, done)) = pending.recv().await {
        let ok = done.await.unwrap_or(false);
        m.backlog.dec();
        if !ok {
            let _ = failed.send(()).await;
            return;
        }
        m.latency.observe(at.elapsed().as_secs_f64());
        if client.ack(&p).await.is_err() {
            return;
        }
    }
}

impl Bridge {
    /// Connects, subscribes and delivers until the connection drops; then reconnects.
    async fn session(self: &Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            self.connection(&mut backoff).await;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// The options of the cluster's one persistent session.
    fn mqtt_options(&self) -> MqttOptions {
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
        opts
    }

    /// One connection: subscribes, delivers every message and acknowledges it once done, until
    /// the connection drops or a message keeps failing. A ConnAck resets `backoff`.
    async fn connection(self: &Arc<Self>, backoff: &mut Backoff) {
        let (client, mut eventloop) = AsyncClient::new(self.mqtt_options(), 512);
        for filter in [
            topics::TELEMETRY_FILTER,
            topics::REPORTED_FILTER,
            topics::ACKS_FILTER,
        ] {
            let _ = client.subscribe(filter, QoS::AtLeastOnce).await;
        }
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (failed_tx, mut failed) = mpsc::channel::<()>(1);
        let acker = tokio::spawn(acknowledge(client.clone(), ack_rx, failed_tx));
        loop {
            tokio::select! {
                more = self.on_event(&mut eventloop, &ack_tx, backoff) => if !more { break },
                _ = failed.recv() => {
                    tracing::warn!("a message kept failing; dropping the session so the broker redelivers");
                    let _ = client.disconnect().await;
                    break;
                }
            }
        }
        // Never acknowledge a message received on an earlier connection.
        acker.abort();
        metrics::get().backlog.set(0);
    }

    /// Polls the connection once; a message is handed to its own task and queued for its
    /// acknowledgement. False when the connection is lost.
    async fn on_event(
        self: &Arc<Self>,
        eventloop: &mut EventLoop,
        acks: &mpsc::UnboundedSender<Pending>,
        backoff: &mut Backoff,
    ) -> bool {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                backoff.reset();
                tracing::info!(session_present = c.session_present, "MQTT bridge connected");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics::get().backlog.inc();
                let me = self.clone();
                let msg = p.clone();
                let done = tokio::spawn(async move { me.handle(msg).await });
                let _ = acks.send((p, Instant::now(), done));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "MQTT bridge connection lost; reconnecting");
                return false;
            }
        }
        true
    }

    /// Handles one message; true when it may be acknowledged.
    async fn handle(self: Arc<Self>, p: Publish) -> bool {
        let deadline = Instant::now() + MESSAGE_DEADLINE;
        let mut retry = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match self.handle_once(&p).await {
                Ok(()) => return true,
                Err(Transient(why)) => {
                    let wait = retry.next_delay();
                    if Instant::now() + wait > deadline || self.ctx.shutdown.is_signalled() {
                        tracing::warn!(topic = %p.topic, %why, "giving up on a message for now");
                        return false;
                    }
                    tracing::debug!(topic = %p.topic, %why, "retrying a message");
                    tokio::time::sleep(wait).await;
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
}
