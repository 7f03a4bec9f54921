//! What SREs rely on, checked against real processes: every metric a dashboard panel or an alert
//! rule uses is exported by some process from the start, before any event; one request's id is
//! in the gateway's and the owning node's logs; and (with Prometheus installed, run by
//! `.ci/run`) the shipped rules and the generated scrape config pass promtool, a real Prometheus
//! scraping a live cluster answers every panel's query with a series (on a healthy cluster,
//! where most counters read 0, and again after faults), and the node-down alert fires.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
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

/// The vector selectors of a PromQL expression (`name` or `name{matchers}`), for the metrics
/// [`metric_names`] picks and `up`; identifiers inside quoted label values are skipped.
fn selectors(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !(chars[i].is_ascii_alphabetic() || chars[i] == '_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if !(name.starts_with("keelson_") || name.starts_with("process_") || name == "up") {
            continue;
        }
        let mut selector = name;
        let mut j = i;
        while j < chars.len() && chars[j] == ' ' {
            j += 1;
        }
        if j < chars.len() && chars[j] == '{' {
            let mut quoted = false;
            while j < chars.len() {
                let ch = chars[j];
                selector.push(ch);
                j += 1;
                match ch {
                    '\\' if quoted => {
                        selector.push(chars[j]);
                        j += 1;
                    }
                    '"' => quoted = !quoted,
                    '}' if !quoted => break,
                    _ => {}
                }
            }
            i = j;
        }
        out.insert(selector);
    }
    out
}

/// Every alert rule's expression in `alerts.yml`, block scalars (`expr: |`) included:
/// (alert name, expr).
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("dashboards/alerts.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        i += 1;
        if let Some(name) = l.trim().strip_prefix("- alert:") {
            alert = name.trim().to_string();
        }
        let Some(rest) = l.trim().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with(['|', '>']) {
            out.push((alert.clone(), rest.to_string()));
            continue;
        }
        let mut expr = String::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(l)) {
            expr.push_str(lines[i].trim());
            expr.push(' ');
            i += 1;
        }
        out.push((alert.clone(), expr.trim().to_string()));
    }
    let rules = text.matches("- alert:").count();
    assert_eq!(out.len(), rules, "one expr per alert rule: {out:#?}");
    out
}

#[test]
fn the_promql_scanners_find_every_metric_and_selector() {
    let e = r#"(sum(rate(keelson_http_requests_total{status=~"5..", route="a}b"}[5m])) or vector(0)) / sum(rate(keelson_http_requests_total [5m])) and on () up{job="keelson"} == 0"#;
    assert_eq!(
        selectors(e),
        BTreeSet::from([
            r#"keelson_http_requests_total{status=~"5..", route="a}b"}"#.to_string(),
            "keelson_http_requests_total".to_string(),
            r#"up{job="keelson"}"#.to_string(),
        ])
    );
    assert_eq!(
        metric_names(e),
        BTreeSet::from(["keelson_http_requests_total".to_string()])
    );
    let alerts = alert_exprs();
    let (_, ratio) = alerts
        .iter()
        .find(|(name, _)| name == "KeelsonGateway5xxRatio")
        .expect("the 5xx alert");
    assert!(
        ratio.contains(r#"keelson_http_requests_total{status=~"5.."}"#),
        "a block-scalar expr is read whole: {ratio}"
    );
}

/// Entity settings for these tests: a restart budget small enough that a crashing entity is
/// quarantined within seconds, and the default idle timeout, so nothing is passivated unless a
/// test makes it happen (the passivation panel must read 0 without one).
const ENTITIES: &str = "max_restarts = 2\nrestart_window_secs = 30\nbackoff_base_ms = 20\nbackoff_max_ms = 100\nquarantine_secs = 60\n";

/// A Keelson service client on the cluster's broker (it may publish for any device and watch
/// every device's commands), with its event loop.
fn service_client(c: &Cluster, id: &str) -> (AsyncClient, EventLoop) {
    let (addr, _) = c.mqtt.expect("a cluster with MQTT");
    let id = format!("keelson-test-{id}");
    let mut o = MqttOptions::new(&id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5))
        .set_credentials(&id, c.mqtt_secret());
    c.mqtt_tls(&mut o);
    AsyncClient::new(o, 64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn publish_reading(client: &AsyncClient, seq: u64, temperature: f64) {
    let body = json!({"device_id": "od", "seq": seq, "ts": now_ms(), "readings": {"temperature": temperature}});
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

/// Sum of a metric over the nodes still running.
async fn live_sum(c: &Cluster, series: &str) -> f64 {
    let mut total = 0.0;
    for n in &c.nodes {
        total += c.try_metric(n, series).await.unwrap_or(0.0);
    }
    total
}

/// A freshly started cluster with MQTT and ordinary traffic, no faults: customers and a device
/// created and read, two in-range readings over MQTT delivered. Nothing fails, restarts, is
/// quarantined or passivated, no map changes and no 5xx: the panels for those must read 0.
async fn healthy_cluster(test: &str) -> Cluster {
    let c = Cluster::start(
        test,
        Settings {
            nodes: 3,
            entities: ENTITIES.into(),
            mqtt: Some((Broker::Embedded, String::new())),
            ..Settings::default()
        },
    )
    .await;
    c.wait_replicated(Duration::from_secs(30)).await;
    for (path, body) in [
        ("/v1/customers", json!({"id": "obs", "name": "O"})),
        ("/v1/customers", json!({"id": "crash", "name": "C"})),
        (
            "/v1/devices",
            json!({"id": "od", "customer_id": "obs", "kind": "temperature", "firmware": "1"}),
        ),
    ] {
        let (s, _, v) = c.req("POST", path, Some(&body.to_string())).await;
        assert_eq!(s, 201, "POST {path} {body}: {v}");
    }
    light_traffic(&c, "o").await;

    // The broker drops what nobody subscribes to: wait for the bridge's session first.
    wait_for(
        "a node to hold the bridge session",
        Duration::from_secs(30),
        || async { (live_sum(&c, "keelson_mqtt_bridge_active").await == 1.0).then_some(()) },
    )
    .await;
    let (client, mut el) = service_client(&c, "obs");
    let events = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    for (seq, t) in [(1u64, 21.0), (2, 22.0)] {
        publish_reading(&client, seq, t).await;
    }
    wait_for(
        "two readings delivered to their device",
        Duration::from_secs(20),
        || async {
            (live_sum(
                &c,
                r#"keelson_mqtt_messages_delivered_total{topic="telemetry"}"#,
            )
            .await
                >= 2.0)
                .then_some(())
        },
    )
    .await;
    events.abort();
    c
}

/// Creates customers `<prefix>0..<prefix>19` and reads each: requests of every outcome a healthy
/// cluster sees (writes, reads, on every node).
async fn light_traffic(c: &Cluster, prefix: &str) {
    for i in 0..20 {
        let body = json!({"id": format!("{prefix}{i}"), "name": "x"}).to_string();
        let (s, _, v) = c.req("POST", "/v1/customers", Some(&body)).await;
        assert!(s == 201 || s == 409, "create {prefix}{i}: {s} {v}");
        let (s, _, v) = c
            .req("GET", &format!("/v1/customers/{prefix}{i}"), None)
            .await;
        assert_eq!(s, 200, "read {prefix}{i}: {v}");
    }
}

/// Makes every kind of fault happen at least once on a [`healthy_cluster`]: an entity panicking
/// until it is quarantined; MQTT garbage (dead-lettered) and an anomaly whose command the
/// "device" acknowledges; the node leading the most shards killed and failed over.
async fn faults(c: &mut Cluster) {
    for _ in 0..3 {
        c.req(
            "POST",
            "/v1/debug/fault/customer/crash",
            Some(&json!({"mode": "panic"}).to_string()),
        )
        .await;
    }
    wait_for("a quarantine", Duration::from_secs(20), || async {
        (live_sum(c, "keelson_entities_quarantined").await >= 1.0).then_some(())
    })
    .await;

    // The "device" acknowledges every command it is sent.
    let (client, mut el) = service_client(c, "obs");
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
    publish_reading(&client, 3, 75.0).await;
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
        "the anomaly's command acknowledged and the garbage dead-lettered",
        Duration::from_secs(20),
        || async {
            (live_sum(c, r#"keelson_command_acks_total{status="ok"}"#).await >= 1.0
                && live_sum(c, "keelson_mqtt_deadletter_total").await >= 1.0)
                .then_some(())
        },
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
        (live_sum(c, "keelson_failovers_total").await >= 1.0).then_some(())
    })
    .await;
    let victim = busiest.0;
    wait_for(
        "every shard of the killed node failed over",
        Duration::from_secs(20),
        || async {
            let v = c
                .get_json(&format!("{}/v1/cluster/shards", c.gateway))
                .await?;
            v["shards"]
                .as_array()?
                .iter()
                .all(|p| p["primary"] != victim.as_str())
                .then_some(())
        },
    )
    .await;
    light_traffic(c, "o").await;
}

/// What the live processes export: every metric family, and every label value.
async fn exported(c: &Cluster) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut values = BTreeSet::new();
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
            for part in l.split("=\"").skip(1) {
                values.insert(part.split('"').next().unwrap().to_string());
            }
        }
    }
    (names, values)
}

/// Every string literal the sources pass to `with_label_values` (`file:line`, value): label
/// values the code knows in advance, which must therefore be exported before their event.
fn literal_label_values() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = [
        "src",
        "runtime/src",
        "actors/src",
        "gateway/src",
        "bridge/src",
        "chaos/src",
    ]
    .iter()
    .map(|d| repo(d))
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("with_label_values(&[") {
                let args = &text[at..];
                let args = &args[..args.find("])").unwrap_or(args.len())];
                let line = text[..at].lines().count();
                for (i, lit) in args.split('"').enumerate() {
                    if i % 2 == 1 {
                        let file = path.strip_prefix(repo("")).unwrap_or(&path).display();
                        out.push((format!("{file}:{line}"), lit.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// On a healthy cluster, where nothing failed, was passivated or quarantined: every metric is
/// there from the start (known label values pre-initialised at 0), so this needs no event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_dashboard_panel_or_an_alert_uses_is_exported_by_some_process() {
    let _guard = serial().await;
    let c = healthy_cluster("obs-lint").await;
    let (have, values) = exported(&c).await;
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
    for (alert, expr) in alert_exprs() {
        for name in metric_names(&expr) {
            if !have.contains(&name) {
                missing.insert(format!("alerts.yml {alert}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by any process: {missing:#?}"
    );

    let literals = literal_label_values();
    assert!(literals.len() > 20, "label values found: {literals:#?}");
    let unseen: Vec<String> = literals
        .into_iter()
        .filter(|(_, v)| !values.contains(v))
        .map(|(at, v)| format!("{at}: \"{v}\""))
        .collect();
    assert!(
        unseen.is_empty(),
        "label values the code names but no process exports before their first event \
         (pre-initialise them where the collector is registered): {unseen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requests_id_is_in_the_gateway_log_and_the_owning_node_log() {
    let _guard = serial().await;
    let c = Cluster::start(
        "obs-request-id",
        Settings {
            nodes: 2,
            log: Some("info,keelson_runtime::host=debug".into()),
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

/// Polls each `(what, expr)` until it returns at least one series, or until `deadline`: the
/// ones that never did, as `what: expr`.
async fn without_series(
    http: &reqwest::Client,
    base: &str,
    mut pending: Vec<(String, String)>,
    deadline: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut still = Vec::new();
        for (what, expr) in pending {
            if query(http, base, &expr).await.is_none_or(|r| r.is_empty()) {
                still.push((what, expr));
            }
        }
        pending = still;
        if pending.is_empty() || start.elapsed() > deadline {
            return pending
                .into_iter()
                .map(|(what, expr)| format!("{what}: {expr}"))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every panel's query returns a series (a healthy cluster's counters read 0, never "No data"),
/// and so does every vector selector of every alert rule Prometheus loaded (an alert whose input
/// has no series cannot tell 0 from absent, and misses the first event of a new series).
async fn assert_every_panel_answers(c: &Cluster, base: &str, phase: &str) {
    let mut checks = Vec::new();
    for (file, title, expr) in panel_exprs() {
        let expr = expr
            .replace("$node", ".*")
            .replace("$__range", "10m")
            .replace("$__rate_interval", "1m");
        checks.push((format!("{file} panel \"{title}\""), expr));
    }
    let rules = c
        .get_json(&format!("{base}/api/v1/rules?type=alert"))
        .await
        .expect("prometheus lists its rules");
    let mut alerts = 0;
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            alerts += 1;
            let name = rule["name"].as_str().unwrap_or("?");
            for s in selectors(rule["query"].as_str().unwrap_or("")) {
                checks.push((format!("alerts.yml {name} input"), s));
            }
        }
    }
    assert_eq!(
        alerts,
        alert_exprs().len(),
        "prometheus loaded every alert rule: {rules}"
    );
    let empty = without_series(&c.http, base, checks, Duration::from_secs(30)).await;
    assert!(
        empty.is_empty(),
        "on a {phase} cluster, {} queries returned no series (the dashboard shows \"No data\"): {empty:#?}",
        empty.len()
    );
}

/// Requests while Prometheus watches (paced over a few scrapes), so rates have two samples.
async fn watched_traffic(c: &Cluster) {
    for round in 0..10 {
        for i in 0..10 {
            c.req("GET", &format!("/v1/customers/o{i}"), None).await;
        }
        let body = json!({"id": format!("late{round}"), "name": "x"}).to_string();
        c.req("POST", "/v1/customers", Some(&body)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus (Debian package); run by .ci/run"]
async fn a_real_prometheus_answers_every_panel_healthy_and_faulty_and_fires_node_down() {
    let _guard = serial().await;
    let mut c = healthy_cluster("obs-prometheus").await;
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
    let port = support::free_port();
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
        "prometheus to scrape every process",
        Duration::from_secs(60),
        || async {
            let up = query(&c.http, &base, "up{job=\"keelson\"} == 1").await?;
            (up.len() == c.nodes.len() + 2).then_some(())
        },
    )
    .await;

    watched_traffic(&c).await;
    assert_every_panel_answers(&c, &base, "healthy").await;

    faults(&mut c).await;
    watched_traffic(&c).await;
    assert_every_panel_answers(&c, &base, "faulty").await;

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
