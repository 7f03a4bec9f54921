//! Devices over MQTT, end to end with real processes and a real broker: the embedded one
//! (rumqttd, `keelson broker`) in the default test run, and the same tests against a system
//! Mosquitto, run by `.ci/run` (`cargo test --test iot -- --ignored`).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use support::{serial, wait_for, Broker, Cluster, Settings};
use tokio::sync::mpsc;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A cluster of `nodes` nodes with MQTT on `broker`; generous per-device rates so tests can
/// publish in bursts.
async fn cluster(test: &str, broker: Broker, nodes: usize) -> Cluster {
    let c = Cluster::start(
        test,
        Settings {
            nodes,
            mqtt: Some((
                broker,
                "rate_per_device = 10000.0\nburst = 10000.0\n".to_string(),
            )),
            ..Settings::default()
        },
    )
    .await;
    c.wait_replicated(Duration::from_secs(30)).await;
    wait_for(
        "a node to hold the bridge session",
        Duration::from_secs(20),
        || async { bridge_node(&c).await },
    )
    .await;
    c
}

/// The node whose bridge holds the MQTT session.
async fn bridge_node(c: &Cluster) -> Option<String> {
    for n in &c.nodes {
        if c.try_metric(n, "keelson_mqtt_bridge_active").await == Some(1.0) {
            return Some(n.clone());
        }
    }
    None
}

/// A test MQTT client: everything received on `filters` arrives on the channel.
struct Client {
    client: AsyncClient,
    inbox: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    confirmed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Connects as a Keelson service (`keelson-test-<id>`, the MQTT service secret): these tests
    /// publish for many devices and watch the dead letters, which only services may.
    async fn connect(c: &Cluster, id: &str, filters: &[&str]) -> Self {
        let id = format!("keelson-test-{id}");
        Self::connect_as(c, &id, &c.mqtt_secret(), filters).await
    }

    /// Connects as `id` (username and client id) with `password`.
    async fn connect_as(c: &Cluster, id: &str, password: &str, filters: &[&str]) -> Self {
        let (addr, _) = c.mqtt.expect("mqtt configured");
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_credentials(id, password);
        c.mqtt_tls(&mut opts);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        }
        let (tx, inbox) = mpsc::unbounded_channel();
        let (confirm_tx, confirmed) = tokio::sync::watch::channel(0u64);
        let (suback_tx, mut subacks) = mpsc::unbounded_channel();
        let (connack_tx, connack) = tokio::sync::oneshot::channel();
        let mut connack_tx = Some(connack_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        if let Some(tx) = connack_tx.take() {
                            let _ = tx.send(a.code);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        confirm_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        // A refused client would publish into the void: fail here, naming it, instead.
        let code = tokio::time::timeout(Duration::from_secs(10), connack)
            .await
            .unwrap_or_else(|_| panic!("{id}: no CONNACK: the broker closed or never answered"));
        assert_eq!(
            code,
            Ok(rumqttc::ConnectReturnCode::Success),
            "{id}: the broker refused the connection"
        );
        for _ in filters {
            tokio::time::timeout(Duration::from_secs(10), subacks.recv())
                .await
                .expect("subscription confirmed");
        }
        Self {
            client,
            inbox,
            confirmed,
            task,
        }
    }

    async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    /// Waits for a message on a topic matching `pred`.
    async fn expect(&mut self, what: &str, pred: impl Fn(&str, &[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.inbox.recv()).await {
                Ok(Some((topic, payload))) if pred(&topic, &payload) => return payload,
                Ok(Some(_)) => {}
                _ => panic!("no MQTT message: {what}"),
            }
        }
    }
}

async fn register(c: &Cluster, owner: &str, devices: &[(&str, &str)]) {
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(&json!({"id": owner, "name": "Device Owner"}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    for (id, kind) in devices {
        let (s, _, v) = c
            .req(
                "POST",
                "/v1/devices",
                Some(
                    &json!({"id": id, "customer_id": owner, "kind": kind, "firmware": "1.0"})
                        .to_string(),
                ),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
}

async fn device(c: &Cluster, id: &str) -> Value {
    let (s, _, v) = c.req("GET", &format!("/v1/devices/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

fn reading(id: &str, seq: u64, readings: Value) -> String {
    json!({"device_id": id, "seq": seq, "ts": now_ms(), "readings": readings}).to_string()
}

macro_rules! both_brokers {
    ($embedded:ident, $mosquitto:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() {
            let _guard = serial().await;
            $body(Broker::Embedded).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs mosquitto; run by .ci/run"]
        async fn $mosquitto() {
            let _guard = serial().await;
            $body(Broker::Mosquitto).await
        }
    };
}

both_brokers!(
    telemetry_twin_and_commands_flow_through_the_embedded_broker,
    telemetry_twin_and_commands_flow_through_mosquitto,
    telemetry_twin_and_commands
);

async fn telemetry_twin_and_commands(broker: Broker) {
    let c = cluster("iot-flow", broker, 3).await;
    register(&c, "owner1", &[("t1", "temperature"), ("w1", "wearable")]).await;
    let mut dev = Client::connect(
        &c,
        "it-device",
        &[
            "keelson/devices/+/commands",
            "keelson/devices/+/twin/desired",
        ],
    )
    .await;

    // Telemetry: every message persisted once, units normalised, duplicates dropped.
    for seq in 1..=30u64 {
        dev.publish(
            "keelson/devices/t1/telemetry",
            reading(
                "t1",
                seq,
                json!({"temperature": 20.0 + seq as f64 / 10.0, "humidity": 40}),
            ),
        )
        .await;
    }
    dev.publish(
        "keelson/devices/w1/telemetry",
        json!({"device_id": "w1", "seq": 1, "ts": now_ms(),
               "readings": {"heart_rate": 1.2}, "units": {"heart_rate": "Hz"}})
        .to_string(),
    )
    .await;
    dev.publish(
        "keelson/devices/t1/telemetry",
        reading("t1", 7, json!({"temperature": 99.0})),
    )
    .await;
    wait_for(
        "30 readings of t1 stored",
        Duration::from_secs(20),
        || async { (device(&c, "t1").await["telemetry_count"] == 30).then_some(()) },
    )
    .await;
    let w1 = wait_for("w1's reading stored", Duration::from_secs(20), || async {
        let d = device(&c, "w1").await;
        (d["telemetry_count"] == 1).then_some(d)
    })
    .await;
    assert_eq!(w1["last_readings"]["heart_rate"], 72.0, "1.2 Hz is 72 bpm");
    let (s, _, hist) = c.req("GET", "/v1/devices/t1/telemetry?since=0", None).await;
    assert_eq!(s, 200, "{hist}");
    let recent = hist["recent"].as_array().unwrap();
    assert_eq!(
        recent.len(),
        30,
        "the duplicate of seq 7 was not stored again"
    );
    let seq7 = recent.iter().find(|r| r["seq"] == 7).unwrap();
    assert_eq!(seq7["readings"]["temperature"], 20.7);
    assert!(!hist["history"].as_array().unwrap().is_empty());

    // Twin: reported over MQTT, desired over HTTP and published (retained) to the device.
    dev.publish(
        "keelson/devices/t1/twin/reported",
        json!({"version": 1, "state": {"mode": "eco", "interval_s": 30}}).to_string(),
    )
    .await;
    wait_for("reported state stored", Duration::from_secs(20), || async {
        let (_, _, t) = c.req("GET", "/v1/devices/t1/twin", None).await;
        (t["reported"]["mode"] == "eco").then_some(())
    })
    .await;
    let (s, _, t) = c
        .req(
            "PATCH",
            "/v1/devices/t1/twin/desired",
            Some(&json!({"state": {"mode": "turbo"}}).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["published"], true);
    assert_eq!(t["delta"], json!({"mode": "turbo"}));
    let desired = dev
        .expect("desired state for t1", |topic, _| {
            topic == "keelson/devices/t1/twin/desired"
        })
        .await;
    let desired: Value = serde_json::from_slice(&desired).unwrap();
    assert_eq!(desired, json!({"version": 1, "state": {"mode": "turbo"}}));

    // Commands: published to the device, its acknowledgement recorded.
    let (s, _, cmd) = c
        .req(
            "POST",
            "/v1/devices/t1/commands",
            Some(
                &json!({"id": "reboot-1", "name": "reboot", "params": {"delay_s": 5}}).to_string(),
            ),
        )
        .await;
    assert_eq!(s, 202, "{cmd}");
    assert_eq!(cmd["sent"], true);
    let got = dev
        .expect("the reboot command", |topic, _| {
            topic == "keelson/devices/t1/commands"
        })
        .await;
    let got: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(got["command_id"], "reboot-1");
    assert_eq!(got["params"]["delay_s"], 5.0);
    dev.publish(
        "keelson/devices/t1/acks",
        json!({"command_id": "reboot-1", "status": "ok"}).to_string(),
    )
    .await;
    wait_for(
        "the command's ack recorded",
        Duration::from_secs(20),
        || async {
            let (_, _, list) = c.req("GET", "/v1/devices/t1/commands", None).await;
            (list["commands"][0]["ack"]["status"] == "ok").then_some(())
        },
    )
    .await;
}

both_brokers!(
    a_day_of_device_use_over_mqtt_feeds_the_model_once,
    a_day_of_device_use_over_mqtt_feeds_the_model_once_with_mosquitto,
    usage_feeds_the_model
);

/// The newcomer's recommendations: (first item, its score, its `because`).
async fn first_recommendation(c: &Cluster, customer: &str) -> (String, f64, Value) {
    let (s, _, v) = c
        .req(
            "GET",
            &format!("/v1/customers/{customer}/recommendations?limit=3"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let first = &v["items"][0];
    (
        first["item"].as_str().unwrap_or_default().to_string(),
        first["score"].as_f64().unwrap_or(0.0),
        first["because"].clone(),
    )
}

async fn usage_feeds_the_model(broker: Broker) {
    let c = cluster("iot-usage", broker, 3).await;
    // Wearable owners run; the newcomer's only signal is the wearable it owns, then wears.
    let mut rows = Vec::new();
    for k in 0..4 {
        let who = format!("runner-{k}");
        register(&c, &who, &[(&format!("w-{who}"), "wearable")]).await;
        for item in ["shoes", "gel"] {
            rows.push(json!({"id": format!("{who}-{item}"), "customer_id": who,
                             "kind": "purchase", "item": format!("run-{item}")}));
        }
    }
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/interactions:batch",
            Some(&json!({ "interactions": rows }).to_string()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["applied"], 8, "{v}");
    register(&c, "newcomer", &[("w-new", "wearable")]).await;
    let owned = wait_for(
        "the owned wearable in the model",
        Duration::from_secs(20),
        || async {
            let got = first_recommendation(&c, "newcomer").await;
            (got.2 == json!(["device:wearable"])).then_some(got)
        },
    )
    .await;
    assert!(owned.0.starts_with("run-"), "{owned:?}");
    let fed = "keelson_mqtt_model_feeds_total{result=\"fed\"}";
    assert_eq!(c.metric_sum(fed).await, 0.0, "no usage before any reading");

    // The first reading of the day weighs a day of use: the same items, scored higher.
    let dev = Client::connect(&c, "it-wearer", &[]).await;
    let ts = now_ms();
    let at = |seq: u64| {
        json!({"device_id": "w-new", "seq": seq, "ts": ts, "readings": {"heart_rate": 70}})
            .to_string()
    };
    dev.publish("keelson/devices/w-new/telemetry", at(1)).await;
    let used = wait_for(
        "the day of use in the model",
        Duration::from_secs(20),
        || async {
            let got = first_recommendation(&c, "newcomer").await;
            (got.1 > owned.1).then_some(got)
        },
    )
    .await;
    // Shoes and gel were bought by the same runners: they tie, in either order.
    assert!(used.0.starts_with("run-"), "{used:?} after {owned:?}");
    assert_eq!(used.2, json!(["device:wearable"]));
    // The bridge counts the feed once the model has answered, a moment after it is visible.
    let feeds = wait_for("the feed counted", Duration::from_secs(10), || async {
        let n = c.metric_sum(fed).await;
        (n > 0.0).then_some(n)
    })
    .await;
    assert_eq!(feeds, 1.0);

    // More readings that day, and a redelivered one: stored, but no more use counted.
    for seq in [2, 3, 3] {
        dev.publish("keelson/devices/w-new/telemetry", at(seq))
            .await;
    }
    wait_for("three readings stored", Duration::from_secs(20), || async {
        (device(&c, "w-new").await["telemetry_count"] == 3).then_some(())
    })
    .await;
    assert_eq!(c.metric_sum(fed).await, 1.0, "one day, one feed");
    let again = first_recommendation(&c, "newcomer").await;
    assert_eq!(again.1, used.1, "the score did not move: {again:?}");
}

both_brokers!(
    garbage_on_every_topic_is_dead_lettered_and_changes_nothing,
    garbage_on_every_topic_is_dead_lettered_and_changes_nothing_with_mosquitto,
    garbage_is_dead_lettered
);

async fn garbage_is_dead_lettered(broker: Broker) {
    let c = cluster("iot-garbage", broker, 2).await;
    register(&c, "owner2", &[("g1", "temperature")]).await;
    let mut watcher = Client::connect(&c, "it-deadletter", &["keelson/deadletter"]).await;
    let dev = Client::connect(&c, "it-garbage", &[]).await;
    dev.publish(
        "keelson/devices/g1/telemetry",
        reading("g1", 1, json!({"temperature": 21.0})),
    )
    .await;
    wait_for(
        "the good reading stored",
        Duration::from_secs(20),
        || async { (device(&c, "g1").await["telemetry_count"] == 1).then_some(()) },
    )
    .await;
    let before = device(&c, "g1").await;
    let (_, _, twin_before) = c.req("GET", "/v1/devices/g1/twin", None).await;

    let random: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
    let huge = vec![b'x'; 200 * 1024];
    let mut sent = Vec::new();
    for suffix in ["telemetry", "twin/reported", "acks"] {
        let topic = format!("keelson/devices/g1/{suffix}");
        for (what, payload) in [
            ("random bytes", random.clone()),
            ("invalid UTF-8", vec![0xff, 0xfe, b'{', 0xc3, 0x28]),
            ("huge", huge.clone()),
            (
                "wrong types",
                br#"{"device_id": 5, "seq": "x", "state": 3, "command_id": []}"#.to_vec(),
            ),
            ("empty", Vec::new()),
        ] {
            dev.publish(&topic, payload).await;
            sent.push(format!("{topic}: {what}"));
        }
    }
    // Out of range, unknown unit, wrong device id, unknown device.
    for (topic, payload) in [
        (
            "keelson/devices/g1/telemetry",
            reading("g1", 2, json!({"temperature": 412.0})),
        ),
        (
            "keelson/devices/g1/telemetry",
            json!({"device_id": "g1", "seq": 3, "ts": now_ms(), "readings": {"temperature": 20}, "units": {"temperature": "furlongs"}}).to_string(),
        ),
        (
            "keelson/devices/g1/telemetry",
            reading("someone-else", 4, json!({"temperature": 20.0})),
        ),
        (
            "keelson/devices/nobody/telemetry",
            reading("nobody", 1, json!({"temperature": 20.0})),
        ),
    ] {
        dev.publish(topic, payload).await;
        sent.push(topic.to_string());
    }
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for _ in 0..sent.len() {
        let d = watcher
            .expect("a dead letter", |topic, _| topic == "keelson/deadletter")
            .await;
        let d: Value = serde_json::from_slice(&d).unwrap();
        assert!(d["detail"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
        *reasons
            .entry(d["reason"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for r in [
        "too_large",
        "not_utf8",
        "bad_json",
        "bad_schema",
        "out_of_range",
        "bad_unit",
        "device_mismatch",
        "unknown_device",
    ] {
        assert!(reasons.contains_key(r), "no {r} among {reasons:?}");
    }
    assert_eq!(reasons.values().sum::<usize>(), sent.len());
    let counted = c.metric_sum("keelson_mqtt_deadletter_total").await;
    assert_eq!(
        counted as usize,
        sent.len(),
        "dead letters counted by reason"
    );

    // Nothing changed, and the bridge still delivers.
    let after = device(&c, "g1").await;
    assert_eq!(after, before);
    let (_, _, twin_after) = c.req("GET", "/v1/devices/g1/twin", None).await;
    assert_eq!(twin_after, twin_before);
    dev.publish(
        "keelson/devices/g1/telemetry",
        reading("g1", 5, json!({"temperature": 22.0})),
    )
    .await;
    wait_for(
        "a good reading after the garbage",
        Duration::from_secs(20),
        || async { (device(&c, "g1").await["telemetry_count"] == 2).then_some(()) },
    )
    .await;
}

both_brokers!(
    killing_the_bridge_node_loses_no_acknowledged_telemetry,
    killing_the_bridge_node_loses_no_acknowledged_telemetry_with_mosquitto,
    kill_bridge_node
);

async fn kill_bridge_node(broker: Broker) {
    let mut c = cluster("iot-kill", broker, 4).await;
    let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let devices: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "temperature")).collect();
    register(&c, "owner3", &devices).await;
    let dev = Client::connect(&c, "it-publisher", &[]).await;
    let holder = wait_for(
        "a node to hold the bridge session",
        Duration::from_secs(20),
        || async { bridge_node(&c).await },
    )
    .await;

    // 250 messages/s for 8 s; the bridge's node is killed after 3 s.
    let start = Instant::now();
    let mut published = 0u64;
    let mut killed = false;
    for n in 0..2000u64 {
        let id = &ids[(n % 40) as usize];
        dev.publish(
            &format!("keelson/devices/{id}/telemetry"),
            reading(
                id,
                n / 40 + 1,
                json!({"temperature": 21.0, "humidity": 40.0}),
            ),
        )
        .await;
        published += 1;
        if !killed && start.elapsed() > Duration::from_secs(3) {
            c.kill(&holder);
            killed = true;
        }
        let due = start + Duration::from_millis(4 * (n + 1));
        tokio::time::sleep_until(due.into()).await;
    }
    let mut confirmed = dev.confirmed.clone();
    wait_for(
        "the broker to confirm every publish",
        Duration::from_secs(20),
        || {
            let v = *confirmed.borrow_and_update();
            async move { (v == published).then_some(()) }
        },
    )
    .await;
    let new_holder = wait_for(
        "another node to take the bridge",
        Duration::from_secs(20),
        || async { bridge_node(&c).await.filter(|n| *n != holder) },
    )
    .await;
    let stored = wait_for(
        "every confirmed reading stored",
        Duration::from_secs(60),
        || async {
            let mut total = 0u64;
            for id in &ids {
                let (s, _, d) = c.req("GET", &format!("/v1/devices/{id}"), None).await;
                if s != 200 {
                    return None;
                }
                total += d["telemetry_count"].as_u64().unwrap();
            }
            (total >= published).then_some(total)
        },
    )
    .await;
    // The session moved once and stayed: a lease that lapses for a moment under this load
    // must not make the new holder leave and retake it (the broker would redeliver its backlog
    // each time, which once kept the cluster from ever catching up).
    let mut taken = 0.0;
    for n in c.nodes.iter().filter(|n| **n != holder) {
        taken += c.metric(n, "keelson_mqtt_bridge_sessions_total").await;
    }
    eprintln!(
        "bridge moved {holder} -> {new_holder}; {published} published and confirmed, {stored} stored; taken {taken} times on the survivors"
    );
    assert_eq!(stored, published, "stored exactly once each");
    assert!(
        taken <= 2.0,
        "the bridge session was taken {taken} times after the kill"
    );
}

both_brokers!(
    a_node_killed_mid_chain_leaves_one_ticket_and_one_command_per_alert,
    a_node_killed_mid_chain_leaves_one_ticket_and_one_command_per_alert_with_mosquitto,
    kill_mid_chain
);

async fn kill_mid_chain(broker: Broker) {
    let mut c = cluster("iot-chain", broker, 4).await;
    let ids: Vec<String> = (0..12).map(|i| format!("a{i}")).collect();
    let devices: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "temperature")).collect();
    register(&c, "owner4", &devices).await;
    // The devices: answer every command, and remember every command id received.
    let mut dev = Client::connect(&c, "it-devices", &["keelson/devices/+/commands"]).await;
    // The bridge may be between leaders right after start-up: wait for it.
    let holder = wait_for(
        "the MQTT bridge to run on a node",
        Duration::from_secs(30),
        || bridge_node(&c),
    )
    .await;
    for id in &ids {
        dev.publish(
            &format!("keelson/devices/{id}/telemetry"),
            reading(id, 1, json!({"temperature": 75.0, "humidity": 40.0})),
        )
        .await;
    }
    // Kill the bridge's node while the chains are running: once the first alert is raised.
    wait_for(
        "the first alert raised by the bridge's node",
        Duration::from_secs(20),
        || async { (c.metric(&holder, "keelson_anomalies_total").await >= 1.0).then_some(()) },
    )
    .await;
    c.kill(&holder);

    let mut commands: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let all_acked = {
            let mut done = true;
            for id in &ids {
                let (s, _, a) = c
                    .req("GET", &format!("/v1/devices/{id}/alerts"), None)
                    .await;
                let alerts = a["alerts"].as_array().cloned().unwrap_or_default();
                if s != 200 || alerts.len() != 1 || alerts[0]["ack_recorded"] != true {
                    done = false;
                    break;
                }
            }
            done
        };
        if all_acked {
            break;
        }
        while let Ok((topic, payload)) = dev.inbox.try_recv() {
            let cmd: Value = serde_json::from_slice(&payload).unwrap();
            let device = topic.split('/').nth(2).unwrap().to_string();
            let cid = cmd["command_id"].as_str().unwrap().to_string();
            commands
                .entry(device.clone())
                .or_default()
                .insert(cid.clone());
            received += 1;
            dev.publish(
                &format!("keelson/devices/{device}/acks"),
                json!({"command_id": cid, "status": "ok"}).to_string(),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, tickets) = c.req("GET", "/v1/customers/owner4/tickets", None).await;
    let tickets = tickets["tickets"].as_array().unwrap().clone();
    eprintln!(
        "{} alerts, {} tickets, {received} command messages, killed {holder}",
        ids.len(),
        tickets.len()
    );
    for id in &ids {
        let (_, _, a) = c
            .req("GET", &format!("/v1/devices/{id}/alerts"), None)
            .await;
        let alerts = a["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{id}: one alert: {a}");
        let alert = &alerts[0];
        assert_eq!(alert["ack_recorded"], true, "{id}: chain finished: {alert}");
        let alert_id = alert["id"].as_str().unwrap();
        let mine: Vec<&Value> = tickets
            .iter()
            .filter(|t| t["alert_id"] == alert_id)
            .collect();
        assert_eq!(mine.len(), 1, "{id}: exactly one ticket for {alert_id}");
        assert_eq!(mine[0]["status"], "acknowledged");
        assert_eq!(
            commands.get(id).map(HashSet::len),
            Some(1),
            "{id}: exactly one command (distinct ids) for {alert_id}: {commands:?}"
        );
    }
    assert_eq!(tickets.len(), ids.len());
}

both_brokers!(
    the_bridge_reconnects_after_a_broker_restart,
    the_bridge_reconnects_after_a_mosquitto_restart,
    broker_restart
);

async fn broker_restart(broker: Broker) {
    let mut c = cluster("iot-broker-restart", broker, 2).await;
    register(&c, "owner5", &[("r1", "temperature")]).await;
    {
        let dev = Client::connect(&c, "it-before", &[]).await;
        dev.publish(
            "keelson/devices/r1/telemetry",
            reading("r1", 1, json!({"temperature": 20.0})),
        )
        .await;
        wait_for("the first reading", Duration::from_secs(20), || async {
            (device(&c, "r1").await["telemetry_count"] == 1).then_some(())
        })
        .await;
    }
    let sessions_before = c.metric_sum("keelson_mqtt_bridge_sessions_total").await;
    c.kill("broker");
    c.spawn("broker");
    let (addr, _) = c.mqtt.unwrap();
    wait_for("the broker back", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    // The bridge reconnects and subscribes again by itself: new readings arrive.
    let dev = Client::connect(&c, "it-after", &[]).await;
    let mut seq = 2;
    wait_for(
        "a reading after the broker restart",
        Duration::from_secs(30),
        || {
            seq += 1;
            let (c, dev, s) = (&c, &dev, seq);
            async move {
                dev.publish(
                    "keelson/devices/r1/telemetry",
                    reading("r1", s, json!({"temperature": 21.0})),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                (device(c, "r1").await["telemetry_count"].as_u64() > Some(1)).then_some(())
            }
        },
    )
    .await;
    // The same bridge session kept going (no leader change was needed).
    assert_eq!(
        c.metric_sum("keelson_mqtt_bridge_sessions_total").await,
        sessions_before
    );
}

/// Connects `client_id` with `login` and waits for the broker's verdict: the client once the
/// broker accepted it, or why not.
async fn try_connect(
    c: &Cluster,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
    try_connect_over(c, client_id, login, true).await
}

/// [`try_connect`], over TLS or not.
async fn try_connect_over(
    c: &Cluster,
    client_id: &str,
    login: Option<(&str, &str)>,
    tls: bool,
) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
    let (addr, _) = c.mqtt.expect("mqtt configured");
    let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    if tls {
        c.mqtt_tls(&mut opts);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let verdict = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return if a.code == rumqttc::ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("{:?}", a.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer".into()));
    verdict.map(|()| (client, eventloop))
}

/// Issues MQTT credentials for `id` through the API: its password.
async fn credentials(c: &Cluster, id: &str) -> String {
    let (s, _, v) = c
        .req("POST", &format!("/v1/devices/{id}/credentials"), None)
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["username"], id);
    v["password"].as_str().unwrap().to_string()
}

both_brokers!(
    nobody_connects_to_the_embedded_broker_without_their_own_credentials,
    nobody_connects_to_mosquitto_without_their_own_credentials,
    mqtt_identities
);

async fn mqtt_identities(broker: Broker) {
    let c = cluster("iot-auth", broker, 3).await;
    register(
        &c,
        "owner-a",
        &[("dev-a", "temperature"), ("dev-b", "temperature")],
    )
    .await;
    let pa = credentials(&c, "dev-a").await;
    let pb = credentials(&c, "dev-b").await;
    // Rotation: the first password of dev-b stops working.
    let pb_old = pb;
    let pb = credentials(&c, "dev-b").await;
    if broker == Broker::Mosquitto {
        c.write_mosquitto_config();
        c.signal("broker", libc::SIGHUP);
    }
    // The broker learns the new credentials (the embedded one rereads them every second).
    wait_for(
        "dev-a's credentials to work",
        Duration::from_secs(15),
        || async {
            try_connect(&c, "dev-a", Some(("dev-a", &pa)))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    wait_for(
        "dev-b's old password to stop working",
        Duration::from_secs(15),
        || async {
            try_connect(&c, "dev-b", Some(("dev-b", &pb_old)))
                .await
                .err()
                .map(|_| ())
        },
    )
    .await;
    assert!(try_connect(&c, "dev-b", Some(("dev-b", &pb))).await.is_ok());
    // The broker speaks only TLS: the right credentials in clear text get nowhere.
    assert!(
        try_connect_over(&c, "dev-b", Some(("dev-b", &pb)), false)
            .await
            .is_err(),
        "a plain-text MQTT connection was accepted"
    );

    // Refused: anonymous, a wrong password, an unknown device, another device's password, and
    // a service's client id (the bridge's session) without the service secret.
    let bridge_id = "keelson-bridge-it";
    let sessions_before = {
        let mut t = 0.0;
        for n in &c.nodes {
            t += c.metric(n, "keelson_mqtt_bridge_sessions_total").await;
        }
        t
    };
    let refused = [
        ("anonymous", "anon-1", None),
        (
            "wrong password",
            "dev-a",
            Some(("dev-a", "not-the-password")),
        ),
        ("unknown device", "dev-z", Some(("dev-z", pa.as_str()))),
        ("another's password", "dev-a", Some(("dev-a", pb.as_str()))),
        (
            "service id, device password",
            bridge_id,
            Some((bridge_id, pa.as_str())),
        ),
        ("service id, no password", bridge_id, None),
    ];
    for (what, id, login) in refused {
        let r = try_connect(&c, id, login).await;
        assert!(r.is_err(), "{what}: connected");
    }
    // A device that names the bridge's client id but logs in as itself does not get the
    // bridge's session: refused by the embedded broker, renamed to itself by Mosquitto.
    if let Ok((client, mut ev)) = try_connect(&c, bridge_id, Some(("dev-a", &pa))).await {
        assert_eq!(
            broker,
            Broker::Mosquitto,
            "the embedded broker let dev-a use the bridge's id"
        );
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), ev.poll()).await;
    }
    let mut sessions_after = 0.0;
    for n in &c.nodes {
        sessions_after += c.metric(n, "keelson_mqtt_bridge_sessions_total").await;
    }
    assert_eq!(
        sessions_after, sessions_before,
        "the bridge lost its session"
    );
    if broker == Broker::Embedded {
        let refusals = c.metric("broker", "keelson_mqtt_auth_refused_total").await;
        assert!(refusals >= 6.0, "refusals counted: {refusals}");
    }

    // The bridge still delivers a device's own telemetry, sent with its own credentials.
    let (client, mut ev) = try_connect(&c, "dev-a", Some(("dev-a", &pa)))
        .await
        .unwrap();
    let pump = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    client
        .publish(
            "keelson/devices/dev-a/telemetry",
            QoS::AtLeastOnce,
            false,
            reading("dev-a", 1, json!({"temperature": 21.0})),
        )
        .await
        .unwrap();
    wait_for(
        "dev-a's reading stored",
        Duration::from_secs(15),
        || async {
            let v = device(&c, "dev-a").await;
            (v["telemetry_count"].as_u64().unwrap_or(0) >= 1
                || v["last_seq"].as_u64().unwrap_or(0) >= 1)
                .then_some(())
        },
    )
    .await;

    // Per-topic rules (the embedded broker's gate, Mosquitto's ACL): dev-a can neither write
    // dev-b's telemetry nor read dev-b's commands, everything (`keelson/#`) or the dead letters.
    let before = device(&c, "dev-b").await;
    client
        .publish(
            "keelson/devices/dev-b/telemetry",
            QoS::AtLeastOnce,
            false,
            reading("dev-b", 1, json!({"temperature": 99.0})),
        )
        .await
        .unwrap();
    let spy = Client::connect_as(
        &c,
        "dev-a",
        &pa,
        &[
            "keelson/#",
            "keelson/deadletter",
            "keelson/devices/dev-b/commands",
        ],
    )
    .await;
    pump.abort();
    let mut owner = Client::connect_as(&c, "dev-b", &pb, &["keelson/devices/dev-b/commands"]).await;
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/devices/dev-b/commands",
            Some(r#"{"id":"cmd-acl","name":"reboot"}"#),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    owner
        .expect("dev-b's own command", |t, _| {
            t == "keelson/devices/dev-b/commands"
        })
        .await;
    let mut spy = spy;
    let leaked = tokio::time::timeout(Duration::from_secs(2), spy.inbox.recv()).await;
    assert!(leaked.is_err(), "dev-a received {leaked:?}");
    let after = device(&c, "dev-b").await;
    for f in [
        "telemetry_count",
        "last_readings",
        "highest_seq",
        "last_telemetry_ms",
    ] {
        assert_eq!(
            before[f], after[f],
            "dev-a's publish on dev-b's topic changed dev-b's {f}"
        );
    }
    if broker == Broker::Embedded {
        let publish = c
            .metric(
                "broker",
                "keelson_mqtt_acl_denied_total{action=\"publish\"}",
            )
            .await;
        let subscribe = c
            .metric(
                "broker",
                "keelson_mqtt_acl_denied_total{action=\"subscribe\"}",
            )
            .await;
        assert!(
            publish >= 1.0 && subscribe >= 3.0,
            "denials counted: {publish} / {subscribe}"
        );
    }
}

both_brokers!(
    no_payload_on_any_topic_breaks_the_bridge_or_changes_a_device,
    no_payload_on_any_topic_breaks_the_bridge_or_changes_a_device_with_mosquitto,
    fuzz_payloads
);

/// Payloads that are each wrong in one way (so every one must be dead-lettered), made by
/// proptest from a fixed seed: broken fields at the edges of their types, a sequence jump,
/// random JSON that is not an object, random bytes.
fn broken_payloads(device: &str, next_seq: u64, cases: usize) -> Vec<(String, Vec<u8>)> {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let now = now_ms();
    let telemetry = |field: &str, v: Value| {
        let mut m = json!({"device_id": device, "seq": next_seq, "ts": now, "readings": {"temperature": 21.0}});
        m[field] = v;
        m.to_string().into_bytes()
    };
    let big_readings: serde_json::Map<String, Value> =
        (0..70).map(|i| (format!("r{i}"), json!(1.0))).collect();
    let fixed: Vec<(&str, Vec<u8>)> = vec![
        ("telemetry", telemetry("seq", json!(0))),
        ("telemetry", telemetry("seq", json!(-1))),
        ("telemetry", telemetry("seq", json!(1.5))),
        ("telemetry", telemetry("seq", json!(u64::MAX))),
        ("telemetry", telemetry("seq", json!((1u64 << 53) + 1))),
        ("telemetry", telemetry("seq", json!(next_seq + 50_000_000))),
        ("telemetry", telemetry("seq", json!("7"))),
        ("telemetry", telemetry("ts", json!(0))),
        ("telemetry", telemetry("ts", json!(u64::MAX))),
        ("telemetry", telemetry("ts", json!(now + 3 * 3600 * 1000))),
        (
            "telemetry",
            telemetry("ts", json!(now - 90 * 24 * 3600 * 1000)),
        ),
        ("telemetry", telemetry("readings", json!({}))),
        (
            "telemetry",
            telemetry("readings", json!({"temperature": 1e308})),
        ),
        (
            "telemetry",
            telemetry("readings", json!({"temperature": "hot"})),
        ),
        (
            "telemetry",
            telemetry("readings", json!({"temperature": 412})),
        ),
        (
            "telemetry",
            telemetry("readings", Value::Object(big_readings)),
        ),
        ("telemetry", telemetry("device_id", json!("someone-else"))),
        ("telemetry", telemetry("extra", json!(1))),
        ("twin/reported", br#"{"state": 5}"#.to_vec()),
        (
            "twin/reported",
            br#"{"state": {"mode": "eco"}, "version": 18446744073709551615}"#.to_vec(),
        ),
        (
            "twin/reported",
            br#"{"state": {"mode": "eco"}, "version": 9007199254740993}"#.to_vec(),
        ),
        (
            "twin/reported",
            br#"{"state": {"mode": {"deep": 1}}}"#.to_vec(),
        ),
        (
            "acks",
            br#"{"command_id": "never-sent", "status": "ok"}"#.to_vec(),
        ),
        ("acks", br#"{"command_id": 5, "status": "ok"}"#.to_vec()),
    ];
    let mut out: Vec<(String, Vec<u8>)> = fixed
        .into_iter()
        .map(|(t, p)| (format!("keelson/devices/{device}/{t}"), p))
        .collect();
    let not_an_object = prop_oneof![
        any::<i64>().prop_map(|n| json!(n).to_string().into_bytes()),
        "[\\PC]{0,30}".prop_map(|s| json!(s).to_string().into_bytes()),
        prop::collection::vec(any::<u32>(), 0..8).prop_map(|v| json!(v).to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 1..300),
    ];
    let strategy = (
        prop::sample::select(vec!["telemetry", "twin/reported", "acks"]),
        not_an_object,
    );
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..cases {
        let (topic, payload) = strategy.new_tree(&mut runner).unwrap().current();
        out.push((format!("keelson/devices/{device}/{topic}"), payload));
    }
    out
}

async fn fuzz_payloads(broker: Broker) {
    let c = cluster("iot-fuzz", broker, 2).await;
    register(&c, "fuzz-owner", &[("fz1", "temperature")]).await;
    let mut watcher = Client::connect(&c, "it-fuzz-dl", &["keelson/deadletter"]).await;
    let dev = Client::connect(&c, "it-fuzz", &[]).await;
    dev.publish(
        "keelson/devices/fz1/telemetry",
        reading("fz1", 1, json!({"temperature": 21.0})),
    )
    .await;
    wait_for(
        "the first reading stored",
        Duration::from_secs(20),
        || async { (device(&c, "fz1").await["telemetry_count"] == 1).then_some(()) },
    )
    .await;
    let snapshot = || async {
        let (_, _, twin) = c.req("GET", "/v1/devices/fz1/twin", None).await;
        let (_, _, commands) = c.req("GET", "/v1/devices/fz1/commands", None).await;
        (device(&c, "fz1").await, twin, commands)
    };
    let before = snapshot().await;
    let payloads = broken_payloads("fz1", 2, 120);
    let started = Instant::now();
    for (topic, payload) in &payloads {
        dev.publish(topic, payload.clone()).await;
        let d = watcher
            .expect(
                &format!(
                    "a dead letter for {topic} {:?}",
                    String::from_utf8_lossy(payload)
                ),
                |t, _| t == "keelson/deadletter",
            )
            .await;
        let d: Value = serde_json::from_slice(&d).unwrap();
        assert!(d["detail"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
        assert!(started.elapsed() < Duration::from_secs(240), "too slow");
    }
    assert_eq!(
        snapshot().await,
        before,
        "a refused payload changed the device"
    );
    // The jump was refused, not remembered: the next ordinary message is taken.
    dev.publish(
        "keelson/devices/fz1/telemetry",
        reading("fz1", 2, json!({"temperature": 22.0})),
    )
    .await;
    wait_for(
        "a good reading after the garbage",
        Duration::from_secs(20),
        || async {
            let d = device(&c, "fz1").await;
            (d["telemetry_count"] == 2 && d["highest_seq"] == 2).then_some(())
        },
    )
    .await;
    println!(
        "mqtt fuzz: {} refused payloads, each dead-lettered, in {:?}",
        payloads.len(),
        started.elapsed()
    );
}
