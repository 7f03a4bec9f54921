//! The cluster grows and shrinks while it serves, with real processes: a node joins through
//! the seeds and the shards rebalance onto it; a node is drained and removed; both under a
//! write and read load whose history is checked.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::load::Registers;
use support::{serial, wait_for, Cluster, Settings};

/// Primaries and copies per node, as `GET /v1/cluster` reports them.
fn holdings(info: &Value) -> HashMap<String, (u64, u64)> {
    info["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "node")
        .map(|m| {
            let owned = m["shards_owned"].as_u64().unwrap();
            let copies = owned + m["shards_following"].as_u64().unwrap();
            (m["name"].as_str().unwrap().to_string(), (owned, copies))
        })
        .collect()
}

/// True when every node of `nodes` holds within ±10% of its fair share of primaries and
/// copies, nothing is copying and nothing is under-replicated.
fn balanced(info: &Value, nodes: &[String]) -> bool {
    let shards = info["shards"].as_u64().unwrap() as f64;
    let rf = info["replication_factor"].as_u64().unwrap() as f64;
    let held = holdings(info);
    let n = nodes.len() as f64;
    let within = |v: u64, fair: f64| (v as f64 - fair).abs() <= (fair * 0.1).max(1.0);
    let copies: u64 = held.values().map(|(_, c)| c).sum();
    info["learners"] == 0
        && info["under_replicated"] == 0
        && copies == (shards * rf) as u64
        && held.len() == nodes.len()
        && nodes.iter().all(|name| {
            held.get(name)
                .is_some_and(|(p, c)| within(*p, shards / n) && within(*c, shards * rf / n))
        })
}

/// Stores `n` customers `<prefix><i>` (16 at a time); returns `n`.
async fn preload(c: &Cluster, prefix: &str, n: usize) -> usize {
    use futures_util::stream::{self, StreamExt};
    stream::iter(0..n)
        .for_each_concurrent(16, |i| async move {
            let body = serde_json::json!({"id": format!("{prefix}{i}"), "name": "stored"});
            let (s, _, v) = c
                .req("POST", "/v1/customers", Some(&body.to_string()))
                .await;
            assert_eq!(s, 201, "{v}");
        })
        .await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_node_joins_under_load_and_takes_its_share_with_nothing_lost() {
    let _guard = serial().await;
    let mut c = Cluster::start("join", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let info = c.info().await.unwrap();
    assert!(
        balanced(&info, &c.nodes),
        "a fresh cluster is balanced: {:?}",
        holdings(&info)
    );

    let stored = preload(&c, "jp", 3000).await;
    let load = Registers::start(&c, "j", 200, 8, 4).await;
    wait_for("the load to get going", Duration::from_secs(30), || async {
        (load.count() > 200).then_some(())
    })
    .await;
    let joined_at = Instant::now();
    c.spawn_joining("n5");
    let nodes = c.nodes.clone();
    let settled = wait_for("n5 to take its share", Duration::from_secs(120), || async {
        let info = c.info().await?;
        balanced(&info, &nodes).then_some(info)
    })
    .await;
    let took = joined_at.elapsed();
    // The load keeps going on the new layout for a while before it is judged.
    let more = load.count() + 500;
    wait_for(
        "more load on five nodes",
        Duration::from_secs(60),
        || async { (load.count() > more).then_some(()) },
    )
    .await;
    let verdict = load.finish(&c).await;
    let copied = c.metric("n5", "keelson_copy_records_total").await;
    eprintln!(
        "{stored} customers stored: joined and rebalanced in {took:?}, n5 copied {copied} records ({:.0}/s): {:?}; load {verdict:?}",
        copied / took.as_secs_f64(),
        holdings(&settled)
    );
    assert!(copied > 0.0, "n5 was given copies");
    verdict.assert_clean();
    let members: Vec<&str> = settled["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(members.contains(&"n5"), "{members:?}");
}
