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
        "consent": {"email": i % 2 == 0}
    })
    .to_string()
}

/// Creates `n` customers through the gateway; returns each one's JSON and the node that stored it.
async fn create_customers(c: &Cluster, n: usize) -> HashMap<String, (Value, String)> {
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| async move {
            let (s, h, v) = c.req("POST", "/v1/customers", Some(&customer_body(i))).await;
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
    let _guard = serial();
    let mut c = Cluster::start("kill", Settings::default()).await;

    // a. 1,000 customers spread over all four nodes.
    let created = create_customers(&c, 1000).await;
    assert_eq!(created.len(), 1000);
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, node) in created.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    for n in &c.nodes {
        let count = per_node.get(n.as_str()).copied().unwrap_or(0);
        assert!(count >= 100, "node {n} holds {count} of 1000 customers: {per_node:?}");
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
    let on_victim: Vec<&String> = created.iter().filter(|(_, (_, n))| *n == victim).map(|(id, _)| id).collect();
    for id in on_victim.iter().take(20) {
        let (s, h, v) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
        assert_eq!(s, 503, "{id}: {v}");
        assert_eq!(v["error"]["code"], "shard_unavailable");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("\"n2\"") && msg.contains("shard "), "{msg}");
        assert_eq!(h["retry-after"], "1");
    }
    // Writes for its shards are refused too, and the others still work.
    let (s, _, _) = c.req("PATCH", &format!("/v1/customers/{}", on_victim[0]), Some(r#"{"company":"X"}"#)).await;
    assert_eq!(s, 503);
    let other = created.iter().find(|(_, (_, n))| *n != victim).unwrap().0;
    assert_eq!(c.req("GET", &format!("/v1/customers/{other}"), None).await.0, 200);

    // Restart on the same data dir: it comes back up and every customer reads back intact.
    c.spawn(&victim);
    c.wait_all_up().await;
    let mismatches: Vec<String> = stream::iter(created.iter())
        .map(|(id, (want, node))| {
            let c = &c;
            async move {
                let (s, h, got) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
                let served_by = h.get("x-keelson-node").map(|v| v.to_str().unwrap().to_string());
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
    assert!(mismatches.is_empty(), "{} customers differ, e.g. {:?}", mismatches.len(), &mismatches[..mismatches.len().min(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_marked_down_and_comes_back_after_thaw() {
    let _guard = serial();
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
    let (s, _, v) = c.req("POST", "/v1/customers", Some(&customer_body(1))).await;
    assert_eq!(s, 201, "{v}");
}
