//! What SREs rely on, checked against real processes: every metric a dashboard panel or an alert
//! rule uses is exported by some process; one request's id is in the gateway's and the owning
//! node's logs; and (with Prometheus installed, run by `.ci/run`) the shipped rules and the
//! generated scrape config pass promtool, a real Prometheus scraping a live cluster answers
//! every panel's query, and the node-down alert fires.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use support::{serial, wait_for, Broker, Cluster, Settings};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    assert_eq!(out.len(), 5, "five dashboards");
    out
}

/// Every PromQL expression of every panel: (dashboard, panel title, expr).
fn panel_exprs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        file.clone(),
                        p["title"].as_str().unwrap_or("").to_string(),
                        e.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// Metric names in a PromQL expression (identifiers that name Keelson or process metrics).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut cur = String::new();
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            cur.push(ch);
        } else {
            if cur.starts_with("keelson_") || cur.starts_with("process_") {
                names.insert(cur.clone());
            }
            cur.clear();
        }
    }
    names
}

fn alert_exprs() -> Vec<String> {
    std::fs::read_to_string(repo("dashboards/alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect()
}

/// A cluster with MQTT and a workload that makes every kind of event happen once: entities
/// created, read, passivated, failing, restarted and quarantined; MQTT telemetry, garbage, an
/// anomaly with its command acknowledged; a node killed and failed over.
async fn busy_cluster(test: &str) -> Cluster {
    let mut c = Cluster::start(
        test,
        Settings {
            nodes: 3,
            entities: "idle_timeout_secs = 1\nmax_restarts = 2\nrestart_window_secs = 30\nbackoff_base_ms = 20\nbackoff_max_ms = 100\nquarantine_secs = 60\n".into(),
            mqtt: Some((Broker::Embedded, String::new())),
            ..Settings::default()
        },
    )
    .await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let post = |path: &'static str, body: Value| {
        let c = &c;
        async move { c.req("POST", path, Some(&body.to_string())).await }
    };
    assert_eq!(
        post("/v1/customers", json!({"id": "obs", "name": "O"}))
            .await
            .0,
        201
    );
    assert_eq!(
        post("/v1/customers", json!({"id": "crash", "name": "C"}))
            .await
            .0,
        201
    );
    for i in 0..20 {
        post("/v1/customers", json!({"id": format!("o{i}"), "name": "x"})).await;
        c.req("GET", &format!("/v1/customers/o{i}"), None).await;
    }
    assert_eq!(
        post(
            "/v1/devices",
            json!({"id": "od", "customer_id": "obs", "kind": "temperature", "firmware": "1"})
        )
        .await
        .0,
        201
    );
    for _ in 0..3 {
        post("/v1/debug/fault/customer/crash", json!({"mode": "panic"})).await;
    }
    wait_for("a quarantine", Duration::from_secs(20), || async {
        (c.metric_sum("keelson_entities_quarantined").await >= 1.0).then_some(())
    })
    .await;

    // MQTT: a reading, garbage, an anomaly whose command the "device" acknowledges. The broker
    // drops what nobody subscribes to: wait for the bridge's session first.
    wait_for(
        "a node to hold the bridge session",
        Duration::from_secs(30),
        || async {
            for n in &c.nodes {
                if c.try_metric(n, "keelson_mqtt_bridge_active").await == Some(1.0) {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    let (addr, _) = c.mqtt.unwrap();
    // A Keelson service client (it publishes for a device and watches every device's commands).
    let mut o = MqttOptions::new("keelson-test-obs", addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_credentials("keelson-test-obs", c.mqtt_secret());
    c.mqtt_tls(&mut o);
    let (client, mut el) = AsyncClient::new(o, 64);
    client
        .subscribe("keelson/devices/+/commands", QoS::AtLeastOnce)
        .await
        .unwrap();
    let acker = client.clone();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let events = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let ack = json!({"command_id": v["command_id"], "status": "ok"});
                    let _ = acker
                        .publish(
                            "keelson/devices/od/acks",
                            QoS::AtLeastOnce,
                            false,
                            ack.to_string(),
                        )
                        .await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("the device's subscription confirmed")
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (seq, t) in [(1u64, 21.0), (2, 75.0)] {
        let body =
            json!({"device_id": "od", "seq": seq, "ts": now, "readings": {"temperature": t}});
        client
            .publish(
                "keelson/devices/od/telemetry",
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .unwrap();
    }
    client
        .publish(
            "keelson/devices/od/telemetry",
            QoS::AtLeastOnce,
            false,
            "garbage",
        )
        .await
        .unwrap();
    wait_for(
        "the anomaly's command acknowledged",
        Duration::from_secs(20),
        || async { (c.metric_sum("keelson_command_acks_total").await >= 1.0).then_some(()) },
    )
    .await;
    events.abort();

    // A failover: kill the node leading the most shards.
    let mut busiest = (String::new(), -1.0);
    for n in &c.nodes {
        let owned = c.try_metric(n, "keelson_shards_owned").await.unwrap_or(0.0);
        if owned > busiest.1 {
            busiest = (n.clone(), owned);
        }
    }
    c.kill(&busiest.0);
    wait_for("a failover committed", Duration::from_secs(20), || async {
        let mut total = 0.0;
        for n in &c.nodes {
            total += c
                .try_metric(n, "keelson_failovers_total")
                .await
                .unwrap_or(0.0);
        }
        (total >= 1.0).then_some(())
    })
    .await;
    for i in 0..20 {
        c.req("GET", &format!("/v1/customers/o{i}"), None).await;
    }
    // Idle entities (idle_timeout_secs = 1) are passivated on a live node: wait for one, so the
    // passivation metric is exported however fast the steps above ran.
    wait_for(
        "an idle entity passivated",
        Duration::from_secs(20),
        || async {
            let mut total = 0.0;
            for n in &c.nodes {
                total += c
                    .try_metric(n, "keelson_entity_passivations_total")
                    .await
                    .unwrap_or(0.0);
            }
            (total >= 1.0).then_some(())
        },
    )
    .await;
    c
}

/// Every metric family some live process exports.
async fn exported(c: &Cluster) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut processes: Vec<String> = c.nodes.clone();
    processes.push("gateway".into());
    processes.push("broker".into());
    for p in processes {
        let Ok(r) = c.http.get(c.ops_url(&p, "/metrics")).send().await else {
            continue;
        };
        for l in r.text().await.unwrap_or_default().lines() {
            if l.starts_with('#') || l.is_empty() {
                continue;
            }
            let name = l.split(['{', ' ']).next().unwrap().to_string();
            names.insert(name);
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_dashboard_panel_or_an_alert_uses_is_exported_by_some_process() {
    let _guard = serial().await;
    let c = busy_cluster("obs-lint").await;
    let have = exported(&c).await;
    let mut missing = BTreeSet::new();
    let exprs = panel_exprs();
    assert!(exprs.len() > 50, "panels with queries: {}", exprs.len());
    for (file, title, expr) in &exprs {
        for name in metric_names(expr) {
            if !have.contains(&name) {
                missing.insert(format!("{file} \"{title}\": {name}"));
            }
        }
    }
    for expr in alert_exprs() {
        for name in metric_names(&expr) {
            if !have.contains(&name) {
                missing.insert(format!("alerts.yml: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by any process: {missing:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requests_id_is_in_the_gateway_log_and_the_owning_node_log() {
    let _guard = serial().await;
    let c = Cluster::start(
        "obs-request-id",
        Settings {
            nodes: 2,
            log: Some(
                "info,keelson_runtime::shard_host=debug,keelson_runtime::entity=debug".into(),
            ),
            ..Settings::default()
        },
    )
    .await;
    let rid = "req-trace-4f2a9c";
    let r = c
        .http
        .post(format!("{}/v1/customers", c.gateway))
        .header("x-request-id", rid)
        .body(json!({"id": "traced", "name": "T"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], rid);
    let node = r.headers()["x-keelson-node"].to_str().unwrap().to_string();
    assert!(c.nodes.contains(&node), "answered by {node}");
    let log = |name: &str| {
        std::fs::read_to_string(c.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    };
    wait_for("the id in both logs", Duration::from_secs(5), || async {
        (log("gateway").contains(rid) && log(&node).contains(rid)).then_some(())
    })
    .await;
    // On the node: the delivery, the entity's own line (inside its span) and the answer.
    let lines: Vec<String> = log(&node)
        .lines()
        .filter(|l| l.contains(rid))
        .map(str::to_string)
        .collect();
    assert!(lines.iter().any(|l| l.contains("delivering")), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("command applied")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("handled")), "{lines:#?}");
    for other in c.nodes.iter().filter(|n| **n != node) {
        assert!(!log(other).contains(rid), "{other} never saw it");
    }
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "needs promtool (Debian prometheus); run by .ci/run"]
fn the_shipped_rules_and_the_generated_scrape_config_pass_promtool() {
    let rules = repo("dashboards/alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&[
        "test",
        "rules",
        repo("dashboards/alerts_test.yml").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    // Every alert has a fires-and-quiet test: each alert name appears in the test file.
    let tests = std::fs::read_to_string(repo("dashboards/alerts_test.yml")).unwrap();
    for line in std::fs::read_to_string(&rules).unwrap().lines() {
        if let Some(name) = line.trim().strip_prefix("- alert:") {
            assert!(tests.contains(name.trim()), "no test for {name}");
        }
    }
    let c = Cluster::configure(
        "obs-promtool",
        &Settings {
            mqtt: Some((Broker::Embedded, String::new())),
            ..Settings::default()
        },
    );
    let (code, yaml, err) = c.keelson(&["prometheus-config", "--rules", rules.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let file = c.dir.join("prometheus.yml");
    std::fs::write(&file, &yaml).unwrap();
    let (ok, out) = promtool(&["check", "config", file.to_str().unwrap()]);
    assert!(ok, "{out}\n{yaml}");
    assert_eq!(
        yaml.matches("- targets:").count(),
        6,
        "4 nodes, gateway, broker"
    );
}

/// A Prometheus this test started; killed when dropped.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(http: &reqwest::Client, base: &str, expr: &str) -> Option<Vec<Value>> {
    let v: Value = http
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    if v["status"] != "success" {
        panic!("query failed: {expr}: {v}");
    }
    v["data"]["result"].as_array().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus (Debian package); run by .ci/run"]
async fn a_real_prometheus_answers_every_panel_and_fires_node_down() {
    let _guard = serial().await;
    let mut c = busy_cluster("obs-prometheus").await;
    let rules = repo("dashboards/alerts.yml");
    let (code, yaml, err) = c.keelson(&[
        "prometheus-config",
        "--rules",
        rules.to_str().unwrap(),
        "--interval",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let cfg = c.dir.join("prometheus.yml");
    std::fs::write(&cfg, yaml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(c.dir.join("logs/prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                c.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (apt-get install prometheus)"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for(
        "prometheus to scrape the cluster",
        Duration::from_secs(60),
        || async {
            let up = query(&c.http, &base, "up{job=\"keelson\"} == 1").await?;
            (up.len() >= 4).then_some(())
        },
    )
    .await;
    // Some traffic while Prometheus watches, so rates have two samples.
    for round in 0..10 {
        for i in 0..10 {
            c.req("GET", &format!("/v1/customers/o{i}"), None).await;
        }
        let body = json!({"id": format!("late{round}"), "name": "x"}).to_string();
        c.req("POST", "/v1/customers", Some(&body)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut empty = Vec::new();
    for (file, title, expr) in panel_exprs() {
        let expr = expr
            .replace("$node", ".*")
            .replace("$__range", "10m")
            .replace("$__rate_interval", "1m");
        let got = wait_for(
            &format!("{file} \"{title}\""),
            Duration::from_secs(20),
            || {
                let (http, base, expr) = (&c.http, &base, expr.clone());
                async move { Some(query(http, base, &expr).await.unwrap_or_default()) }
            },
        )
        .await;
        if got.is_empty() {
            empty.push(format!("{file} \"{title}\": {expr}"));
        }
    }
    assert!(empty.is_empty(), "panels without data: {empty:#?}");

    // Kill a node: the node-down alert fires (for: 15s).
    let victim = c
        .nodes
        .iter()
        .find(|n| c.try_pid(n).is_some())
        .unwrap()
        .clone();
    c.kill(&victim);
    wait_for(
        "KeelsonNodeDown firing",
        Duration::from_secs(90),
        || async {
            let v = c.get_json(&format!("{base}/api/v1/alerts")).await?;
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "KeelsonNodeDown"
                        && a["labels"]["node"] == victim.as_str()
                        && a["state"] == "firing"
                })
                .then_some(())
        },
    )
    .await;
}
