//! MQTT benchmarks against the release binary with the embedded broker, each figure next to a
//! ceiling measured in the same run:
//!
//! - sustained ingest: 1,000 devices' telemetry through the bridge into device actors (persisted,
//!   replicated, acknowledged) vs. a bare rumqttc subscriber receiving the same stream;
//! - anomaly to command: from publishing an anomalous reading to the device receiving its
//!   `maintenance-check` command (ticket opened on the way), p50/p99.
//!
//! Run: `cargo bench --bench mqtt`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use support::{wait_for, Broker, Cluster, Settings};

const DEVICES: usize = 1_000;
const MESSAGES: u64 = 30_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A Keelson service client (`keelson-test-<id>`): the benchmark publishes for a whole fleet.
fn client(c: &Cluster, id: &str, clean: bool) -> (AsyncClient, rumqttc::EventLoop) {
    let (addr, _) = c.mqtt.unwrap();
    let id = format!("keelson-test-{id}");
    let mut o = MqttOptions::new(&id, addr.ip().to_string(), addr.port());
    o.set_credentials(&id, c.mqtt_secret());
    c.mqtt_tls(&mut o);
    o.set_keep_alive(Duration::from_secs(10))
        .set_clean_session(clean)
        .set_inflight(100);
    AsyncClient::new(o, 4096)
}

async fn delivered(c: &Cluster) -> f64 {
    let mut total = 0.0;
    for n in &c.nodes {
        let text = c
            .http
            .get(c.ops_url(n, "/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        total += text
            .lines()
            .filter(|l| l.starts_with("keelson_mqtt_messages_delivered_total{topic=\"telemetry\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

async fn register(c: &Cluster) {
    let body = json!({"id": "bench-owner", "name": "Bench"}).to_string();
    c.req("POST", "/v1/customers", Some(&body)).await;
    let ids: Vec<usize> = (0..DEVICES).collect();
    for chunk in ids.chunks(50) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let body = json!({"id": format!("b{i}"), "customer_id": "bench-owner",
                              "kind": if i.is_multiple_of(2) { "temperature" } else { "wearable" },
                              "firmware": "1"})
            .to_string();
            async move {
                let (s, _, v) = c.req("POST", "/v1/devices", Some(&body)).await;
                assert!(s == 201 || s == 409, "{v}");
            }
        }))
        .await;
    }
}

async fn ingest(c: &Cluster) {
    // The ceiling: a bare subscriber on the same topics, same broker, same run.
    let (bare, mut bare_loop) = client(c, "bench-bare", true);
    bare.subscribe("keelson/devices/+/telemetry", QoS::AtLeastOnce)
        .await
        .unwrap();
    let bare_task = tokio::spawn(async move {
        let mut n = 0u64;
        let mut first = None;
        while n < MESSAGES {
            if let Ok(Event::Incoming(Packet::Publish(_))) = bare_loop.poll().await {
                first.get_or_insert_with(Instant::now);
                n += 1;
            }
        }
        first.unwrap().elapsed()
    });
    let (publisher, mut pub_loop) = client(c, "bench-publisher", true);
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = delivered(c).await;
    let start = Instant::now();
    for n in 0..MESSAGES {
        let d = n as usize % DEVICES;
        let body = json!({"device_id": format!("b{d}"), "seq": n / DEVICES as u64 + 1, "ts": now_ms(),
                          "readings": if d.is_multiple_of(2) { json!({"temperature": 21.5, "humidity": 40.0}) }
                                      else { json!({"heart_rate": 70.0}) }});
        publisher
            .publish(
                format!("keelson/devices/b{d}/telemetry"),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .unwrap();
    }
    let bare_time = bare_task.await.unwrap();
    // Polled every 50 ms: the time the last message was counted, within 50 ms.
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered(c).await - before < MESSAGES as f64 {
        assert!(
            Instant::now() < deadline,
            "the bridge did not deliver every message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bridge_time = start.elapsed();
    let bare_rate = MESSAGES as f64 / bare_time.as_secs_f64();
    let bridge_rate = MESSAGES as f64 / bridge_time.as_secs_f64();
    println!(
        "ingest, {DEVICES} devices, {MESSAGES} QoS 1 messages: bridge into device actors {bridge_rate:.0} msg/s; bare rumqttc subscriber {bare_rate:.0} msg/s; ratio {:.2}",
        bridge_rate / bare_rate
    );
}

async fn anomaly_latency(c: &Cluster) {
    let (dev, mut dev_loop) = client(c, "bench-devices", true);
    dev.subscribe("keelson/devices/+/commands", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        loop {
            match dev_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let device = p.topic.split('/').nth(2).unwrap_or("").to_string();
                    let _ = tx.send((device, Instant::now()));
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sent = std::collections::HashMap::new();
    // Devices not used above with anomalies yet: each raises one alert.
    for i in (0..DEVICES).step_by(2).take(200) {
        let body = json!({"device_id": format!("b{i}"), "seq": 1_000_000 + i as u64, "ts": now_ms(),
                          "readings": {"temperature": 75.0, "humidity": 40.0}});
        sent.insert(format!("b{i}"), Instant::now());
        dev.publish(
            format!("keelson/devices/b{i}/telemetry"),
            QoS::AtLeastOnce,
            false,
            body.to_string(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::new();
    let total = sent.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lat.len() < total && Instant::now() < deadline {
        if let Ok(Some((device, at))) =
            tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
        {
            if let Some(t0) = sent.remove(&device) {
                lat.push(at - t0);
            }
        }
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    assert_eq!(lat.len(), total, "every alert's command arrived");
    println!(
        "anomaly to command, {} alerts: p50 {:?}, p99 {:?} (reading published to command received; ticket opened on the way)",
        lat.len(),
        p(0.5),
        p(0.99)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The same run with TLS on every link (the default) and with it off (loopback only).
    for tls in [true, false] {
        rt.block_on(run(tls));
    }
}

async fn run(tls: bool) {
    println!(
        "== MQTT and cluster links with TLS {}",
        if tls { "on" } else { "off" }
    );
    {
        let c = Cluster::start(
            if tls {
                "bench-mqtt-tls"
            } else {
                "bench-mqtt-plain"
            },
            Settings {
                mqtt: Some((
                    Broker::Embedded,
                    "rate_per_device = 10000.0\nburst = 10000.0\n".to_string(),
                )),
                extra: if tls {
                    String::new()
                } else {
                    "[tls]\nenabled = false\n".to_string()
                },
                ..Settings::default()
            },
        )
        .await;
        c.wait_replicated(Duration::from_secs(60)).await;
        wait_for("the bridge", Duration::from_secs(30), || async {
            for n in &c.nodes {
                if c.try_metric(n, "keelson_mqtt_bridge_active").await == Some(1.0) {
                    return Some(());
                }
            }
            None
        })
        .await;
        register(&c).await;
        ingest(&c).await;
        anomaly_latency(&c).await;
    }
}
