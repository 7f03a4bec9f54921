//! Simulated devices: registers them through the gateway, publishes realistic telemetry over
//! MQTT at QoS 1 (DHT22-like temperature and humidity, wearable heart rate), answers the
//! commands they receive, and injects anomalies at a given rate. Bounded in time and count.
//!
//! ```text
//! register: POST /v1/customers (one owner per 10 devices), POST /v1/devices
//! run:      every 1/rate s: next device ─▶ keelson/devices/{id}/telemetry {seq, ts, readings}
//!           keelson/devices/+/commands ─▶ ack on keelson/devices/{id}/acks {command_id, "ok"}
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use serde_json::json;

use crate::topics;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Gateway base URL (device registration), e.g. `https://127.0.0.1:8080`.
    pub gateway: String,
    /// Client for it, with the cluster's CA and an API key that may write.
    pub http: reqwest::Client,
    /// Broker address.
    pub broker: SocketAddr,
    /// Number of devices.
    pub count: usize,
    /// Telemetry messages per second over all devices.
    pub rate: f64,
    /// Probability that a reading is anomalous.
    pub anomaly_rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Device id prefix.
    pub prefix: String,
    /// The MQTT service secret: the simulator speaks for its whole fleet as one service client.
    pub mqtt_password: Option<keelson_runtime::config::Secret>,
    /// TLS to the broker.
    pub mqtt_tls: crate::MqttTls,
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulateReport {
    /// Devices registered (or found already registered).
    pub devices: usize,
    /// Telemetry messages published.
    pub published: u64,
    /// Of those, confirmed by the broker (PUBACK).
    pub confirmed: u64,
    /// Anomalous readings sent.
    pub anomalies_sent: u64,
    /// Commands received.
    pub commands: u64,
    /// Distinct command ids received.
    pub distinct_commands: u64,
    /// Acknowledgements sent.
    pub acks: u64,
    /// Seconds spent publishing.
    pub seconds: f64,
}

/// Why the simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// Registration through the gateway failed.
    #[error("registering {what} through the gateway at {gateway} failed: {why}")]
    Register {
        /// What.
        what: String,
        /// Gateway.
        gateway: String,
        /// Why.
        why: String,
    },
}

/// The kinds simulated, in turn.
const KINDS: [&str; 2] = ["temperature", "wearable"];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Device ids and kinds of a simulation.
pub fn devices(prefix: &str, count: usize) -> Vec<(String, &'static str)> {
    (0..count)
        .map(|i| (format!("{prefix}-{i}"), KINDS[i % KINDS.len()]))
        .collect()
}

async fn post(
    http: &reqwest::Client,
    gateway: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    let r = http
        .post(format!("{gateway}{path}"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        200 | 201 | 409 => Ok(()),
        s => Err(format!("{s}: {}", r.text().await.unwrap_or_default())),
    }
}

/// Registers the devices (and their owners) through the gateway.
pub async fn register(opts: &SimulateOptions) -> Result<usize, SimulateError> {
    let http = &opts.http;
    let list = devices(&opts.prefix, opts.count);
    for chunk in list.chunks(10).enumerate().collect::<Vec<_>>().chunks(16) {
        let results = futures_util::future::join_all(chunk.iter().map(|(owner_i, group)| {
            async move {
                let owner = format!("{}-owner-{owner_i}", opts.prefix);
                post(
                    http,
                    &opts.gateway,
                    "/v1/customers",
                    json!({"id": owner, "name": format!("Owner {owner_i}")}),
                )
                .await
                .map_err(|why| (owner.clone(), why))?;
                for (id, kind) in group.iter() {
                    post(
                        http,
                        &opts.gateway,
                        "/v1/devices",
                        json!({"id": id, "customer_id": owner, "kind": kind, "firmware": "sim-1.0"}),
                    )
                    .await
                    .map_err(|why| (id.clone(), why))?;
                }
                Ok::<(), (String, String)>(())
            }
        }))
        .await;
        for r in results {
            r.map_err(|(what, why)| SimulateError::Register {
                what,
                gateway: opts.gateway.clone(),
                why,
            })?;
        }
    }
    Ok(list.len())
}

/// One reading of a device of `kind` at time `t` (seconds), anomalous if `anomaly`.
pub fn reading(kind: &str, t: f64, phase: f64, anomaly: bool) -> serde_json::Value {
    let mut rng = rand::rng();
    let noise = |rng: &mut rand::rngs::ThreadRng, s: f64| (rng.random::<f64>() - 0.5) * 2.0 * s;
    match kind {
        "wearable" => {
            let hr = if anomaly {
                195.0 + noise(&mut rng, 5.0)
            } else {
                72.0 + 6.0 * (t / 60.0 + phase).sin() + noise(&mut rng, 2.0)
            };
            json!({"heart_rate": (hr * 10.0).round() / 10.0, "battery": 80.0})
        }
        _ => {
            let temp = if anomaly {
                70.0 + noise(&mut rng, 3.0)
            } else {
                21.0 + 1.5 * (t / 300.0 + phase).sin() + noise(&mut rng, 0.2)
            };
            let hum = 45.0 + 5.0 * (t / 600.0 + phase).cos() + noise(&mut rng, 0.5);
            json!({"temperature": (temp * 10.0).round() / 10.0, "humidity": (hum * 10.0).round() / 10.0})
        }
    }
}

/// Publishes telemetry from `opts.count` devices for `opts.duration` and answers commands.
pub async fn simulate(opts: &SimulateOptions) -> SimulateReport {
    let (client, eventloop) = connect(opts).await;
    let (count_tx, mut counts) = tokio::sync::mpsc::unbounded_channel::<(bool, Option<String>)>();
    let poller = tokio::spawn(answer_commands(eventloop, client.clone(), count_tx));
    let list = devices(&opts.prefix, opts.count);
    let phases: Vec<f64> = (0..list.len()).map(|i| i as f64 * 0.37).collect();
    let base_seq = now_ms() * 1000;
    let mut report = SimulateReport {
        devices: list.len(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let max_messages = (opts.rate * opts.duration.as_secs_f64()).ceil() as u64 + 1;
    let mut next = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < opts.duration && n < max_messages && !list.is_empty() {
        let (id, kind) = &list[(n as usize) % list.len()];
        let round = n / list.len() as u64;
        let anomaly = rand::rng().random::<f64>() < opts.anomaly_rate;
        let t = start.elapsed().as_secs_f64();
        let body = json!({
            "device_id": id,
            "seq": base_seq + round + 1,
            "ts": now_ms(),
            "readings": reading(kind, t, phases[(n as usize) % list.len()], anomaly),
        });
        if client
            .publish(
                topics::telemetry(id),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .is_ok()
        {
            report.published += 1;
            report.anomalies_sent += u64::from(anomaly);
        }
        n += 1;
        while let Ok((confirmed, command)) = counts.try_recv() {
            tally(&mut report, &mut seen, confirmed, command);
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    settle(&mut report, &mut seen, &mut counts).await;
    report.confirmed = report.confirmed.saturating_sub(report.acks);
    let _ = client.disconnect().await;
    poller.abort();
    report
}

/// The simulator's one MQTT client: a service speaking for its whole fleet, subscribed to
/// every device's commands.
async fn connect(opts: &SimulateOptions) -> (AsyncClient, EventLoop) {
    let client_id = format!("keelson-sim-{}-{}", opts.prefix, std::process::id());
    let mut mqtt = MqttOptions::new(
        client_id.clone(),
        opts.broker.ip().to_string(),
        opts.broker.port(),
    );
    if let Some(p) = &opts.mqtt_password {
        mqtt.set_credentials(client_id, p.expose());
    }
    opts.mqtt_tls.apply(&mut mqtt);
    mqtt.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_inflight(100);
    let (client, eventloop) = AsyncClient::new(mqtt, 1024);
    let _ = client
        .subscribe(topics::COMMANDS_FILTER, QoS::AtLeastOnce)
        .await;
    (client, eventloop)
}

/// Polls the connection: counts every PUBACK and every command, and answers each command with
/// an "ok" acknowledgement.
async fn answer_commands(
    mut eventloop: EventLoop,
    acker: AsyncClient,
    count_tx: tokio::sync::mpsc::UnboundedSender<(bool, Option<String>)>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let _ = count_tx.send((true, None));
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(device) = topics::device_of(&p.topic).map(str::to_string) else {
                    continue;
                };
                let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                    .ok()
                    .and_then(|v| v["command_id"].as_str().map(str::to_string));
                if let Some(id) = &id {
                    let ack = json!({"command_id": id, "status": "ok"}).to_string();
                    let _ = acker
                        .publish(topics::acks(&device), QoS::AtLeastOnce, false, ack)
                        .await;
                }
                let _ = count_tx.send((false, id));
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Lets the last confirmations and commands arrive (up to 3 s), then counts what is left.
async fn settle(
    report: &mut SimulateReport,
    seen: &mut HashSet<String>,
    counts: &mut tokio::sync::mpsc::UnboundedReceiver<(bool, Option<String>)>,
) {
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle && report.confirmed < report.published {
        match tokio::time::timeout(Duration::from_millis(200), counts.recv()).await {
            Ok(Some((confirmed, command))) => tally(report, seen, confirmed, command),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    while let Ok((confirmed, command)) = counts.try_recv() {
        tally(report, seen, confirmed, command);
    }
}

fn tally(
    report: &mut SimulateReport,
    seen: &mut HashSet<String>,
    confirmed: bool,
    command: Option<String>,
) {
    if confirmed {
        // Every PUBACK: telemetry and the acknowledgements sent (subtracted at the end).
        report.confirmed += 1;
        return;
    }
    report.commands += 1;
    if let Some(id) = command {
        report.acks += 1;
        if seen.insert(id) {
            report.distinct_commands += 1;
        }
    }
}
