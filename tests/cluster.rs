//! Multi-process behaviour of a real cluster: every test spawns `keelson` node and gateway
//! processes on loopback and talks to them over HTTP only.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use support::{serial, wait_for, Cluster, Settings};

fn customer_body(i: usize) -> String {
    json!({
        "id": format!("c{i:04}"),
        "name": format!("Customer {i}"),
        "email": format!("c{i}@example.com"),
        "company": "Acme",
        "tags": ["it"],
        "consent": {"email": i.is_multiple_of(2)}
    })
    .to_string()
}

/// Creates `n` customers through the gateway; returns each one's JSON and the node that stored it.
async fn create_customers(c: &Cluster, n: usize) -> HashMap<String, (Value, String)> {
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| async move {
            let (s, h, v) = c
                .req("POST", "/v1/customers", Some(&customer_body(i)))
                .await;
            assert_eq!(s, 201, "create c{i:04}: {v}");
            let node = h["x-keelson-node"].to_str().unwrap().to_string();
            (v["id"].as_str().unwrap().to_string(), (v, node))
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_spreads_customers_and_survives_a_kill_and_restart() {
    let _guard = serial().await;
    // One copy of the data: a dead owner's shards must be unavailable, never served elsewhere.
    let mut c = Cluster::start("kill", Settings::single_copy()).await;

    // a. 1,000 customers spread over all four nodes.
    let created = create_customers(&c, 1000).await;
    assert_eq!(created.len(), 1000);
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, node) in created.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    for n in &c.nodes {
        let count = per_node.get(n.as_str()).copied().unwrap_or(0);
        assert!(
            count >= 100,
            "node {n} holds {count} of 1000 customers: {per_node:?}"
        );
    }

    // b. kill -9 one node: marked down within 2 s, its shards answer 503 naming it.
    let victim = "n2".to_string();
    let killed_at = Instant::now();
    c.kill(&victim);
    wait_for("n2 marked down", Duration::from_secs(2), || async {
        (c.state_of(&victim).await.as_deref() == Some("down")).then_some(())
    })
    .await;
    let detect = killed_at.elapsed();
    eprintln!("kill -9 to down: {detect:?}");
    let on_victim: Vec<&String> = created
        .iter()
        .filter(|(_, (_, n))| *n == victim)
        .map(|(id, _)| id)
        .collect();
    for id in on_victim.iter().take(20) {
        let (s, h, v) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
        assert_eq!(s, 503, "{id}: {v}");
        assert_eq!(v["error"]["code"], "shard_unavailable");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("\"n2\"") && msg.contains("shard "), "{msg}");
        assert_eq!(h["retry-after"], "1");
    }
    // Writes for its shards are refused too, and the others still work.
    let (s, _, _) = c
        .req(
            "PATCH",
            &format!("/v1/customers/{}", on_victim[0]),
            Some(r#"{"company":"X"}"#),
        )
        .await;
    assert_eq!(s, 503);
    let other = created.iter().find(|(_, (_, n))| *n != victim).unwrap().0;
    assert_eq!(
        c.req("GET", &format!("/v1/customers/{other}"), None)
            .await
            .0,
        200
    );

    // Restart on the same data dir: it comes back up and every customer reads back intact.
    c.spawn(&victim);
    c.wait_all_up().await;
    let mismatches: Vec<String> = stream::iter(created.iter())
        .map(|(id, (want, node))| {
            let c = &c;
            async move {
                let (s, h, got) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
                let served_by = h
                    .get("x-keelson-node")
                    .map(|v| v.to_str().unwrap().to_string());
                if s != 200 || &got != want || served_by.as_deref() != Some(node.as_str()) {
                    Some(format!("{id}: status {s}, node {served_by:?}, got {got}"))
                } else {
                    None
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        mismatches.is_empty(),
        "{} customers differ, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_marked_down_and_comes_back_after_thaw() {
    let _guard = serial().await;
    let c = Cluster::start("freeze", Settings::default()).await;
    let frozen_at = Instant::now();
    c.signal("n3", libc::SIGSTOP);
    // Failure timeout (1 s) plus 1 s.
    wait_for("frozen n3 marked down", Duration::from_secs(2), || async {
        (c.state_of("n3").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    eprintln!("SIGSTOP to down: {:?}", frozen_at.elapsed());
    // Every node agrees, not only the gateway.
    wait_for("n1 to see n3 down", Duration::from_secs(3), || async {
        (c.metric("n1", "keelson_peer_up{peer=\"n3\"}").await == 0.0).then_some(())
    })
    .await;
    c.signal("n3", libc::SIGCONT);
    wait_for("thawed n3 up again", Duration::from_secs(10), || async {
        (c.state_of("n3").await.as_deref() == Some("up")).then_some(())
    })
    .await;
    wait_for("n1 to see n3 up again", Duration::from_secs(10), || async {
        (c.metric("n1", "keelson_peer_up{peer=\"n3\"}").await == 1.0).then_some(())
    })
    .await;
    // And it serves its shards again.
    let (s, _, v) = c
        .req("POST", "/v1/customers", Some(&customer_body(1)))
        .await;
    assert_eq!(s, 201, "{v}");
}

/// Finds another customer id on the same shard as `id`.
async fn same_shard_neighbour(c: &Cluster, id: &str) -> String {
    let (_, _, want) = c
        .req("GET", &format!("/v1/cluster/locate/customer/{id}"), None)
        .await;
    for i in 0..5000 {
        let cand = format!("nb{i}");
        let (_, _, v) = c
            .req("GET", &format!("/v1/cluster/locate/customer/{cand}"), None)
            .await;
        if v["shard"] == want["shard"] {
            return cand;
        }
    }
    panic!("no neighbour found for {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_entity_restarts_from_its_state_then_is_quarantined_alone() {
    let _guard = serial().await;
    // One copy, so every request reaches the entity actor (no follower reads).
    let settings = Settings {
        nodes: 2,
        entities: "max_restarts = 3\nrestart_window_secs = 30\nbackoff_base_ms = 20\nbackoff_max_ms = 200\nquarantine_secs = 3\n".into(),
        ..Settings::single_copy()
    };
    let c = Cluster::start("supervision", settings).await;
    let body = |id: &str| json!({"id": id, "name": "Grace"}).to_string();
    assert_eq!(
        c.req("POST", "/v1/customers", Some(&body("victim")))
            .await
            .0,
        201
    );
    let nb = same_shard_neighbour(&c, "victim").await;
    assert_eq!(
        c.req("POST", "/v1/customers", Some(&body(&nb))).await.0,
        201
    );
    let (s, _, _) = c
        .req(
            "POST",
            "/v1/customers/victim/interactions",
            Some(r#"{"kind":"call","item":"support-1"}"#),
        )
        .await;
    assert_eq!(s, 201);
    let (_, _, before) = c.req("GET", "/v1/customers/victim", None).await;
    let owner = c.owner("customer", "victim").await;
    let restarts = || c.metric(&owner, "keelson_entity_restarts_total{kind=\"customer\"}");

    // Each injected failure within the budget is answered with an error and restarted.
    for (n, mode) in ["panic", "error", "panic"].iter().enumerate() {
        let (s, _, v) = c
            .req(
                "POST",
                "/v1/debug/fault/customer/victim",
                Some(&json!({"mode": mode}).to_string()),
            )
            .await;
        assert_eq!(s, 500, "{v}");
        assert_eq!(v["error"]["code"], "entity_failed");
        wait_for(
            &format!("restart {}", n + 1),
            Duration::from_secs(5),
            || async { (restarts().await >= (n + 1) as f64).then_some(()) },
        )
        .await;
        // Restarted from its persisted state.
        let (s, _, after) = c.req("GET", "/v1/customers/victim", None).await;
        assert_eq!(s, 200);
        assert_eq!(after, before, "state after restart {}", n + 1);
    }

    // The fourth failure spends the budget: quarantined, with the reason, for the cooldown.
    c.req(
        "POST",
        "/v1/debug/fault/customer/victim",
        Some(r#"{"mode":"panic"}"#),
    )
    .await;
    let (s, h, v) = c.req("GET", "/v1/customers/victim", None).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "entity_quarantined");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("customer/victim") && msg.contains("injected panic"),
        "{msg}"
    );
    assert!(h.contains_key("retry-after"));
    assert_eq!(
        c.metric(
            &owner,
            "keelson_entity_quarantines_total{kind=\"customer\"}"
        )
        .await,
        1.0
    );

    // Its neighbour on the same shard, and everything else, keep working.
    let (s, _, v) = c.req("GET", &format!("/v1/customers/{nb}"), None).await;
    assert_eq!((s, v["name"].as_str()), (200, Some("Grace")));
    let (s, _, _) = c
        .req(
            "PATCH",
            &format!("/v1/customers/{nb}"),
            Some(r#"{"company":"Navy"}"#),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        c.req("POST", "/v1/customers", Some(&body("other"))).await.0,
        201
    );

    // After the cooldown it serves its persisted state again.
    let after = wait_for("quarantine to end", Duration::from_secs(10), || async {
        let (s, _, v) = c.req("GET", "/v1/customers/victim", None).await;
        (s == 200).then_some(v)
    })
    .await;
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivated_entities_come_back_with_their_state() {
    let _guard = serial().await;
    // One copy, so every read reaches the entity actor (no follower reads). The idle timeout
    // leaves time for six entities to be active at once on a node even on a loaded machine.
    let settings = Settings {
        nodes: 2,
        entities: "idle_timeout_secs = 2\nmax_active = 5\n".into(),
        ..Settings::single_copy()
    };
    let c = Cluster::start("passivation", settings).await;
    let mut want = HashMap::new();
    for i in 0..40 {
        let id = format!("p{i}");
        assert_eq!(
            c.req(
                "POST",
                "/v1/customers",
                Some(&json!({"id": id, "name": "P"}).to_string())
            )
            .await
            .0,
            201
        );
        let (s, _, _) = c
            .req(
                "POST",
                &format!("/v1/customers/{id}/interactions"),
                Some(&json!({"kind": "order", "item": format!("o{i}")}).to_string()),
            )
            .await;
        assert_eq!(s, 201);
        let (_, _, v) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
        want.insert(id, v);
    }
    let sum = |series: &'static str| {
        let c = &c;
        async move {
            let mut total = 0.0;
            for n in &c.nodes {
                total += c.metric(n, series).await;
            }
            total
        }
    };
    // At most 5 active per node: the rest were passivated, least-recently-used first as the cap
    // was reached (or idle, on a machine slower than the idle timeout). An eviction is counted
    // when the entity has stopped, after the request that caused it was answered: poll.
    let (cap, idle) = wait_for(
        "at most 10 active and the other 30 counted as passivated",
        Duration::from_secs(5),
        || async {
            let cap = sum("keelson_entity_passivations_total{reason=\"cap\"}").await;
            let idle = sum("keelson_entity_passivations_total{reason=\"idle\"}").await;
            let active = sum("keelson_entities_active{kind=\"customer\"}").await;
            (active <= 10.0 && cap + idle >= 30.0).then_some((cap, idle))
        },
    )
    .await;
    assert!(
        cap >= 1.0,
        "no passivation by the cap: {cap} cap, {idle} idle"
    );
    // Idle ones are passivated after the idle timeout.
    wait_for(
        "every entity passivated",
        Duration::from_secs(10),
        || async { (sum("keelson_entities_active{kind=\"customer\"}").await == 0.0).then_some(()) },
    )
    .await;
    assert!(sum("keelson_entity_passivations_total{reason=\"idle\"}").await >= 1.0);
    let activations = sum("keelson_entity_activations_total{kind=\"customer\"}").await;
    for (id, v) in &want {
        let (s, _, got) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
        assert_eq!(s, 200);
        assert_eq!(&got, v, "{id} after passivation");
    }
    assert!(sum("keelson_entity_activations_total{kind=\"customer\"}").await >= activations + 40.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_writes_nothing() {
    let _guard = serial().await;
    let c = Cluster::start(
        "badinput",
        Settings {
            nodes: 2,
            ..Settings::default()
        },
    )
    .await;
    assert_eq!(
        c.req(
            "POST",
            "/v1/customers",
            Some(r#"{"id":"good","name":"Good","email":"g@example.com"}"#)
        )
        .await
        .0,
        201
    );
    let (_, _, good) = c.req("GET", "/v1/customers/good", None).await;

    let big = json!({"id": "big", "name": "x".repeat(70 * 1024)}).to_string();
    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad1","name":"#.into(),
            400,
            "invalid_json",
            "request body",
        ),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad2","name":"x","nmae":"y"}"#.into(),
            400,
            "unknown_field",
            "nmae",
        ),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad3","name":5}"#.into(),
            400,
            "invalid_field",
            "`name`",
        ),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad/4","name":"x"}"#.into(),
            400,
            "invalid_field",
            "`id`",
        ),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad5","name":"x","email":"nope"}"#.into(),
            400,
            "invalid_field",
            "`email`",
        ),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad6"}"#.into(),
            400,
            "missing_field",
            "name",
        ),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"bad7","name":"x","consent":{"fax":true}}"#.into(),
            400,
            "unknown_field",
            "fax",
        ),
        ("POST", "/v1/customers", big, 413, "body_too_large", "65536"),
        (
            "POST",
            "/v1/customers",
            r#"{"id":"good","name":"Dup"}"#.into(),
            409,
            "already_exists",
            "good",
        ),
        (
            "PATCH",
            "/v1/customers/good",
            r#"{"email":"nope"}"#.into(),
            400,
            "invalid_field",
            "`email`",
        ),
        (
            "PATCH",
            "/v1/customers/good",
            r#"{"emial":"a@b.io"}"#.into(),
            400,
            "unknown_field",
            "emial",
        ),
        (
            "PATCH",
            "/v1/customers/good",
            "{}".into(),
            400,
            "invalid_field",
            "no field",
        ),
        (
            "PATCH",
            "/v1/customers/good",
            "[1,2]".into(),
            400,
            "invalid_json",
            "expected a JSON object",
        ),
        (
            "GET",
            "/v1/customers/bad%20id",
            String::new(),
            400,
            "invalid_field",
            "`id`",
        ),
        (
            "GET",
            "/v1/customers/missing",
            String::new(),
            404,
            "not_found",
            "missing",
        ),
        (
            "POST",
            "/v1/customers/missing/interactions",
            r#"{"kind":"call","item":"x"}"#.into(),
            404,
            "not_found",
            "missing",
        ),
        (
            "POST",
            "/v1/customers/good/interactions",
            r#"{"kind":"","item":"x"}"#.into(),
            400,
            "invalid_field",
            "`kind`",
        ),
        (
            "POST",
            "/v1/devices",
            r#"{"id":"d1","customer_id":"ghost","kind":"temperature","firmware":"1"}"#.into(),
            400,
            "invalid_field",
            "`customer_id`",
        ),
        (
            "POST",
            "/v1/devices",
            r#"{"id":"d2","customer_id":"good","kind":"Temp!","firmware":"1"}"#.into(),
            400,
            "invalid_field",
            "`kind`",
        ),
        (
            "POST",
            "/v1/devices/ghost/telemetry",
            r#"{"readings":{"t":1.5}}"#.into(),
            404,
            "not_found",
            "ghost",
        ),
        (
            "POST",
            "/v1/devices/ghost/telemetry",
            r#"{"readings":{"t":"hot"}}"#.into(),
            400,
            "invalid_field",
            "readings.t",
        ),
        (
            "GET",
            "/v1/nothing",
            String::new(),
            404,
            "no_route",
            "endpoint",
        ),
        (
            "PUT",
            "/v1/customers/good",
            r#"{"name":"x"}"#.into(),
            405,
            "method_not_allowed",
            "PUT",
        ),
        (
            "GET",
            "/v1/cluster/locate/planet/x",
            String::new(),
            400,
            "invalid_field",
            "`kind`",
        ),
    ];
    for (method, path, body, status, code, needle) in &cases {
        let (s, h, v) = c
            .req(method, path, (!body.is_empty()).then_some(body.as_str()))
            .await;
        assert_eq!(
            s,
            *status,
            "{method} {path} {}: {v}",
            &body[..body.len().min(60)]
        );
        assert_eq!(v["error"]["code"], *code, "{method} {path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{method} {path}: message {msg:?} should mention {needle:?}"
        );
        assert!(
            h.contains_key("x-request-id") && h.contains_key("x-keelson-node"),
            "{method} {path}"
        );
    }
    // Nothing was written.
    for id in ["bad1", "bad2", "bad3", "bad5", "bad6", "bad7", "big"] {
        assert_eq!(
            c.req("GET", &format!("/v1/customers/{id}"), None).await.0,
            404,
            "{id} must not exist"
        );
    }
    for id in ["d1", "d2"] {
        assert_eq!(
            c.req("GET", &format!("/v1/devices/{id}"), None).await.0,
            404,
            "{id} must not exist"
        );
    }
    let (_, _, now) = c.req("GET", "/v1/customers/good", None).await;
    assert_eq!(now, good, "refused requests changed the customer");

    // A request id sent by the client comes back.
    let r = c
        .http
        .get(format!("{}/v1/customers/good", c.gateway))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_and_record_telemetry() {
    let _guard = serial().await;
    let c = Cluster::start(
        "devices",
        Settings {
            nodes: 2,
            ..Settings::default()
        },
    )
    .await;
    assert_eq!(
        c.req(
            "POST",
            "/v1/customers",
            Some(r#"{"id":"owner","name":"Owner"}"#)
        )
        .await
        .0,
        201
    );
    let (s, h, v) = c
        .req(
            "POST",
            "/v1/devices",
            Some(r#"{"id":"th-1","customer_id":"owner","kind":"temperature","firmware":"2.1.0"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(h["location"], "/v1/devices/th-1");
    for (i, t) in [20.5, 21.0, 22.25].iter().enumerate() {
        let (s, _, v) = c
            .req(
                "POST",
                "/v1/devices/th-1/telemetry",
                Some(&json!({"readings": {"celsius": t, "battery": 90 - i}}).to_string()),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, _, v) = c.req("GET", "/v1/devices/th-1", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["customer_id"], "owner");
    assert_eq!(v["last_readings"]["celsius"], 22.25);
    assert_eq!(v["last_readings"]["battery"], 88.0);
    assert_eq!(v["telemetry_count"], 3);
    let (s, _, _) = c
        .req(
            "POST",
            "/v1/devices",
            Some(r#"{"id":"th-1","customer_id":"owner","kind":"temperature","firmware":"2.1.0"}"#),
        )
        .await;
    assert_eq!(s, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_serves_reads_and_writes() {
    let _guard = serial().await;
    // One node is its own majority: it must hold its lease without any heartbeat answers.
    let c = Cluster::start(
        "single",
        Settings {
            nodes: 1,
            ..Settings::default()
        },
    )
    .await;
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(r#"{"id":"solo","name":"Solo"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, h, v) = c.req("GET", "/v1/customers/solo", None).await;
    assert_eq!((s, v["name"].as_str()), (200, Some("Solo")));
    assert_eq!(h["x-keelson-node"], "n1");
}
