//! Bad input and overload change nothing: idempotency keys bound to their request, exhaustively
//! over the route table; limits; shedding. Real processes, real sockets, real TLS.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{serial, wait_for, Broker, Cluster, Settings};

/// One request with an optional `Idempotency-Key`: (status, replayed?, body). A dropped
/// connection fails the test.
async fn send(
    c: &Cluster,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, bool, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = c.http.request(m, format!("{}{path}", c.gateway));
    if let Some(k) = key {
        rb = rb.header("idempotency-key", k);
    }
    if let Some(b) = body {
        rb = rb
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, replayed, v)
}

/// A body each request schema accepts, for targets `c` (customer) and `d` (device).
fn sample_body(schema: &str, c: &str, n: usize) -> Value {
    match schema {
        "CreateCustomer" => json!({"name": format!("Sample {n}")}),
        "PatchCustomer" => json!({"company": format!("co-{n}")}),
        "AddInteraction" => json!({"kind": "call", "item": format!("i-{n}")}),
        "InteractionsBatch" => {
            json!({"interactions": [{"id": format!("s-{n}"), "customer_id": c, "kind": "view", "item": format!("i-{n}")}]})
        }
        "CreateDevice" => json!({"customer_id": c, "kind": "temperature", "firmware": "1.0"}),
        "PostTelemetry" => json!({"readings": {"temperature": 21.5}}),
        "PatchDesired" => json!({"state": {"mode": format!("m{n}")}}),
        "PostCommand" => json!({"name": "reboot"}),
        "CreateKey" => json!({"name": format!("idem-{n}"), "role": "viewer"}),
        "InjectFault" => json!({"mode": "error"}),
        other => panic!("no sample body for {other}"),
    }
}

/// Every write route the gateway describes: (method, path template, request schema).
async fn write_routes(c: &Cluster) -> Vec<(String, String, Option<String>)> {
    let (s, _, doc) = send(c, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            // The fault route makes an entity fail on purpose: its 500 is its success.
            if method == "GET" || template.starts_with("/v1/debug/fault") {
                continue;
            }
            let schema = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(|r| r.rsplit('/').next().unwrap().to_string());
            out.push((method, template.clone(), schema));
        }
    }
    out
}

async fn customer(c: &Cluster, id: &str) -> Value {
    let (s, _, v) = send(c, "GET", &format!("/v1/customers/{id}"), None, None).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_its_own_request_and_refuses_any_other() {
    let _guard = serial().await;
    let c = Cluster::start("idem-keys", Settings::default()).await;
    let (s, _, v) = send(
        &c,
        "POST",
        "/v1/customers",
        Some(&json!({"id": "ik-1", "name": "I"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // Same key, same request: the first answer again, marked.
    let patch = json!({"company": "A"});
    let first = send(&c, "PATCH", "/v1/customers/ik-1", Some(&patch), Some("k-1")).await;
    assert_eq!((first.0, first.1), (200, false), "{}", first.2);
    // The same JSON written another way is the same request.
    let again = send(
        &c,
        "PATCH",
        "/v1/customers/ik-1",
        Some(&serde_json::from_str::<Value>("{ \"company\" : \"A\" }").unwrap()),
        Some("k-1"),
    )
    .await;
    assert_eq!((again.0, again.1), (200, true));
    assert_eq!(again.2, first.2, "the first answer, not a new one");

    // Same key, another body: 422 and nothing applied.
    let (s, replayed, v) = send(
        &c,
        "PATCH",
        "/v1/customers/ik-1",
        Some(&json!({"company": "B"})),
        Some("k-1"),
    )
    .await;
    assert_eq!((s, replayed), (422, false), "{v}");
    assert_eq!(v["error"]["code"], "idempotency_key_reused");
    assert_eq!(customer(&c, "ik-1").await["company"], "A");

    // Same key on another route of the same entity: 422, nothing applied, no dropped connection.
    let (s, _, v) = send(
        &c,
        "POST",
        "/v1/customers/ik-1/interactions",
        Some(&json!({"kind": "call", "item": "x"})),
        Some("k-1"),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        customer(&c, "ik-1").await["interaction_count"],
        0,
        "nothing appended"
    );

    // A keyed create that names no id, retried: one customer, the same answer.
    let body = json!({"name": "Retried"});
    let one = send(&c, "POST", "/v1/customers", Some(&body), Some("create-1")).await;
    let two = send(&c, "POST", "/v1/customers", Some(&body), Some("create-1")).await;
    assert_eq!((one.0, one.1), (201, false), "{}", one.2);
    assert_eq!((two.0, two.1), (201, true), "{}", two.2);
    assert_eq!(one.2["id"], two.2["id"]);
    let other = send(
        &c,
        "POST",
        "/v1/customers",
        Some(&json!({"name": "Other"})),
        Some("create-1"),
    )
    .await;
    assert_eq!(other.0, 422, "{}", other.2);

    // A malformed key is refused by name, not ignored.
    let bad = "x".repeat(300);
    let (s, _, v) = send(&c, "PATCH", "/v1/customers/ik-1", Some(&patch), Some(&bad)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_key_across_every_pair_of_write_routes_never_breaks_a_connection() {
    let _guard = serial().await;
    let settings = Settings {
        mqtt: Some((Broker::Embedded, String::new())),
        ..Settings::default()
    };
    let c = Cluster::start("idem-routes", settings).await;
    let routes = write_routes(&c).await;
    assert!(routes.len() >= 11, "{routes:?}");
    let mut pairs = 0;
    for (i, (ma, ta, sa)) in routes.iter().enumerate() {
        for (j, (mb, tb, sb)) in routes.iter().enumerate() {
            let n = i * 100 + j;
            // Fresh targets for each pair: a customer and a device it owns.
            let (cid, did) = (format!("pc{n}"), format!("pd{n}"));
            let (s, _, v) = send(
                &c,
                "POST",
                "/v1/customers",
                Some(&json!({"id": cid, "name": "P"})),
                None,
            )
            .await;
            assert_eq!(s, 201, "{v}");
            let (s, _, v) = send(
                &c,
                "POST",
                "/v1/devices",
                Some(
                    &json!({"id": did, "customer_id": cid, "kind": "temperature", "firmware": "1"}),
                ),
                None,
            )
            .await;
            assert_eq!(s, 201, "{v}");
            let path = |t: &str| {
                let id = if t.starts_with("/v1/devices") {
                    &did
                } else {
                    &cid
                };
                t.replace("{kind}", "customer")
                    .replace("{id}", id)
                    .replace("{name}", &format!("idem-{n}"))
            };
            let key = format!("pair-{n}");
            let body_a = sa.as_deref().map(|s| sample_body(s, &cid, n));
            let (first, _, va) = send(&c, ma, &path(ta), body_a.as_ref(), Some(&key)).await;
            assert!(first < 500, "{ma} {ta}: {first} {va}");
            let body_b = sb.as_deref().map(|s| sample_body(s, &cid, n + 1));
            let (second, replayed, vb) = send(&c, mb, &path(tb), body_b.as_ref(), Some(&key)).await;
            let what = format!("{ma} {ta} ({first}) then {mb} {tb} with its key: {second} {vb}");
            assert!(second < 500, "{what}");
            if (200..300).contains(&first) && i != j {
                assert_eq!(second, 422, "{what}");
                assert!(!replayed, "{what}");
            }
            pairs += 1;
        }
    }
    assert!(pairs >= 121, "{pairs} pairs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_while_its_first_request_is_still_running_gets_409() {
    let _guard = serial().await;
    // A failure timeout far past the request deadline: the frozen owner stays "up", so a keyed
    // write to it stays in flight (no failover completes it early).
    let settings = Settings {
        cluster: "failure_timeout_ms = 30000\nheartbeat_interval_ms = 150\n".into(),
        ..Settings::default()
    };
    let c = Cluster::start("idem-in-flight", settings).await;
    let (s, _, v) = send(
        &c,
        "POST",
        "/v1/customers",
        Some(&json!({"id": "fl-1", "name": "F"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let owner = c.owner("customer", "fl-1").await;
    c.signal(&owner, libc::SIGSTOP);
    // Two copies of one keyed write at once: whichever reaches the gateway second is refused
    // at once with 409; the other waits for the frozen owner.
    let attempt = || {
        let (http, url) = (c.http.clone(), format!("{}/v1/customers/fl-1", c.gateway));
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let r = http
                .patch(url)
                .header("idempotency-key", "slow-1")
                .header("content-type", "application/json")
                .body(r#"{"company":"slow"}"#)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v, t.elapsed())
        })
    };
    let (a, b) = (attempt(), attempt());
    wait_for("one of them answered", Duration::from_secs(10), || {
        let done = a.is_finished() || b.is_finished();
        async move { done.then_some(()) }
    })
    .await;
    let first_done = if a.is_finished() { a } else { b };
    let (status, v, took) = first_done.await.unwrap();
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "idempotency_key_in_flight");
    assert!(took < Duration::from_secs(2), "the 409 took {took:?}");
    c.signal(&owner, libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_key_gets_429s_while_another_key_is_unaffected() {
    let _guard = serial().await;
    let settings = Settings {
        extra: "[limits.rate]\nagent = 5\nburst_secs = 2\n".into(),
        ..Settings::default()
    };
    let c = Cluster::start("rate-limit", settings).await;
    let mut keys = Vec::new();
    for name in ["burst-a", "calm-b"] {
        let (s, _, v) = send(
            &c,
            "POST",
            "/v1/keys",
            Some(&json!({"name": name, "role": "agent"})),
            None,
        )
        .await;
        assert_eq!(s, 201, "{v}");
        keys.push(v["key"].as_str().unwrap().to_string());
    }
    let (s, _, v) = send(
        &c,
        "POST",
        "/v1/customers",
        Some(&json!({"id": "rl-1", "name": "R"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // The keyring reaches the gateway within its refresh period.
    wait_for("the new keys accepted", Duration::from_secs(5), || async {
        let r = c
            .anon
            .get(format!("{}/v1/customers/rl-1", c.gateway))
            .bearer_auth(&keys[1])
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let get = |key: String| {
        let (anon, url) = (c.anon.clone(), format!("{}/v1/customers/rl-1", c.gateway));
        async move {
            let r = anon.get(url).bearer_auth(key).send().await.unwrap();
            let h = r.headers().clone();
            (r.status().as_u16(), h)
        }
    };
    // 40 at once from one key: its burst of 10 passes, the rest are paced with 429s.
    let burst = futures_util::future::join_all((0..40).map(|_| get(keys[0].clone()))).await;
    let limited: Vec<_> = burst.iter().filter(|(s, _)| *s == 429).collect();
    let ok = burst.iter().filter(|(s, _)| *s == 200).count();
    assert!(
        (8..=14).contains(&ok),
        "{ok} of 40 passed; burst 10 (+ refill)"
    );
    assert_eq!(ok + limited.len(), 40, "only 200s and 429s");
    let (_, h) = limited[0];
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["ratelimit-policy"], "10;w=2");
    assert!(
        h["ratelimit"].to_str().unwrap().contains("remaining=0"),
        "{:?}",
        h["ratelimit"]
    );
    // The other key, meanwhile, is not limited at all.
    for _ in 0..5 {
        assert_eq!(get(keys[1].clone()).await.0, 200);
    }
    let shed = c
        .metric(
            "gateway",
            "keelson_http_shed_total{reason=\"rate_limited\"}",
        )
        .await;
    assert!(shed >= 26.0, "{shed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_telemetry_is_held_to_the_same_rules_as_mqtt_and_a_refusal_changes_nothing() {
    let _guard = serial().await;
    let c = Cluster::start("http-telemetry", Settings::default()).await;
    for (path, body) in [
        ("/v1/customers", json!({"id": "ht-c", "name": "H"})),
        (
            "/v1/devices",
            json!({"id": "ht-d", "customer_id": "ht-c", "kind": "temperature", "firmware": "1"}),
        ),
    ] {
        let (s, _, v) = send(&c, "POST", path, Some(&body), None).await;
        assert_eq!(s, 201, "{v}");
    }
    let post = |body: Value| {
        let c = &c;
        async move { send(c, "POST", "/v1/devices/ht-d/telemetry", Some(&body), None).await }
    };
    let (s, _, v) = post(json!({"readings": {"temperature": 21.0}})).await;
    assert_eq!(s, 200, "{v}");
    let before = send(&c, "GET", "/v1/devices/ht-d", None, None).await.2;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (body, field) in [
        (
            json!({"readings": {"temperature": 21.0}, "at_ms": u64::MAX}),
            "at_ms",
        ),
        (
            json!({"readings": {"temperature": 21.0}, "at_ms": 0}),
            "at_ms",
        ),
        (
            json!({"readings": {"temperature": 21.0}, "at_ms": now + 2 * 3600 * 1000}),
            "at_ms",
        ),
        (
            json!({"readings": {"temperature": 1000.0}}),
            "readings.temperature",
        ),
        (
            json!({"readings": {"temperature": -1e308}}),
            "readings.temperature",
        ),
        (json!({"readings": {}}), "readings"),
        (
            json!({"readings": {"temperature": 21.0}, "at_ms": -1}),
            "at_ms",
        ),
        (
            json!({"readings": {"temperature": 21.0}, "at_ms": 1.5}),
            "at_ms",
        ),
    ] {
        let (s, _, v) = post(body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("`{field}`")) || msg.contains(field),
            "{body}: {msg}"
        );
    }
    let after = send(&c, "GET", "/v1/devices/ht-d", None, None).await.2;
    assert_eq!(after, before, "refused samples changed the device");
    // Later data still flows.
    let (s, _, v) = post(json!({"readings": {"temperature": 22.0}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["telemetry_count"], 2);
    assert_eq!(v["last_readings"]["temperature"], 22.0);
    // Bounded lists are paged.
    for path in [
        "/v1/devices/ht-d/alerts",
        "/v1/devices/ht-d/commands",
        "/v1/customers/ht-c/tickets",
    ] {
        let (s, _, v) = send(&c, "GET", &format!("{path}?offset=0&limit=5"), None, None).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v["total"], 0, "{path}: {v}");
        assert_eq!(v["next_offset"], Value::Null, "{path}: {v}");
        let (s, _, v) = send(&c, "GET", &format!("{path}?limit=0"), None, None).await;
        assert_eq!(s, 400, "{path}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_the_twenty_thousandth_interaction_costs_what_the_first_did() {
    let _guard = serial().await;
    let c = Cluster::start("append-cost", Settings::default()).await;
    let (s, _, v) = send(
        &c,
        "POST",
        "/v1/customers",
        Some(&json!({"id": "many", "name": "M"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    const N: usize = 20_000;
    const SAMPLE: usize = 500;
    let url = format!("{}/v1/customers/many/interactions", c.gateway);
    let started = std::time::Instant::now();
    let mut latencies = Vec::with_capacity(N);
    for i in 0..N {
        let t = std::time::Instant::now();
        // As a careful client does: each append under its own key, sent again with the same key
        // when the outcome is unknown (a node of this loaded 2-core machine may drop out).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = c
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("append-{i}"))
                .body(format!(r#"{{"kind":"view","item":"item-{i}"}}"#))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            if status == 201 {
                break;
            }
            assert!(
                matches!(status, 500 | 503) && attempt < 10,
                "append {i}, attempt {attempt}: {status} {body}"
            );
        }
        latencies.push(t.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "too slow at {i}"
        );
    }
    let median = |s: &[Duration]| {
        let mut v = s.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let (first, last) = (
        median(&latencies[..SAMPLE]),
        median(&latencies[N - SAMPLE..]),
    );
    println!(
        "append cost: median of the first {SAMPLE}: {first:?}; of the last {SAMPLE} (up to {N}): {last:?}; total {:?}",
        started.elapsed()
    );
    assert!(
        last <= first * 3,
        "the last appends cost {last:?}, the first {first:?}"
    );
    // Read back by page: every interaction once, in order.
    let mut after = 0u64;
    let mut seen = 0u64;
    loop {
        let (s, _, v) = send(
            &c,
            "GET",
            &format!("/v1/customers/many/interactions?after={after}&limit=1000"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        for i in v["interactions"].as_array().unwrap() {
            seen += 1;
            assert_eq!(i["seq"], seen);
        }
        match v["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(seen, N as u64);
    let (_, _, v) = send(&c, "GET", "/v1/customers/many", None, None).await;
    assert_eq!(v["interaction_count"], N as u64);
    let recent = v["interactions"].as_array().unwrap();
    assert_eq!(recent.len(), 20, "the record carries only the latest");
    assert_eq!(recent[19]["seq"], N as u64);
    // The customer's own record stays small however many interactions it has.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("page=2", "page"),
    ] {
        let (s, _, v) = send(
            &c,
            "GET",
            &format!("/v1/customers/many/interactions?{q}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{q}: {v}"
        );
    }
}
