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

/// Stores `n` customers `<prefix><i>` (16 at a time), or `KEELSON_MEMBERSHIP_CUSTOMERS` of them
/// when set (for measuring with more data); returns how many.
async fn preload(c: &Cluster, prefix: &str, n: usize) -> usize {
    let n = std::env::var("KEELSON_MEMBERSHIP_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
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
    // Four seeds and a fifth node: five voters, an odd count.
    wait_for("n5 to vote", Duration::from_secs(30), || async {
        let mut voters = 0.0;
        for n in &c.nodes {
            voters += c.try_metric(n, "keelson_consensus_voter").await?;
        }
        (voters == 5.0).then_some(())
    })
    .await;
    verdict.assert_clean();
    let members: Vec<&str> = settled["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(members.contains(&"n5"), "{members:?}");
}

/// TLS handshakes the seeds refused.
async fn tls_refusals(c: &Cluster) -> f64 {
    let mut total = 0.0;
    for n in ["n1", "n2", "n3", "n4"] {
        total += c
            .metric(n, "keelson_link_refusals_total{reason=\"tls_handshake\"}")
            .await;
    }
    total
}

/// Waits until `nodes` are balanced (see [`balanced`]); returns the cluster info then.
async fn settle_on(c: &Cluster, nodes: &[String], within: Duration) -> Value {
    wait_for("the shards to rebalance", within, || async {
        let info = c.info().await?;
        balanced(&info, nodes).then_some(info)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_removed_under_load_its_shards_moved_first_and_it_exits() {
    let _guard = serial().await;
    let mut c = Cluster::start("leave", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let stored = preload(&c, "lp", 3000).await;
    let load = Registers::start(&c, "l", 200, 8, 4).await;
    wait_for("the load to get going", Duration::from_secs(30), || async {
        (load.count() > 200).then_some(())
    })
    .await;
    // Never below the replication factor of in-sync copies because of the removal: watched
    // all along, from outside.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (http, gw, w) = (c.http.clone(), c.gateway.clone(), watching.clone());
    let watcher = tokio::spawn(async move {
        let mut worst = u64::MAX;
        let mut n = 0;
        while w.load(std::sync::atomic::Ordering::Relaxed) && n < 10_000 {
            n += 1;
            if let Ok(r) = http.get(format!("{gw}/v1/cluster/shards")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    for s in v["shards"].as_array().into_iter().flatten() {
                        worst =
                            worst.min(1 + s["in_sync"].as_array().map_or(0, |a| a.len() as u64));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    });
    let started = Instant::now();
    let (code, out, err) = c.keelson(&["nodes", "remove", "n2", "--timeout-secs", "120"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("n2 was removed"), "{out}");
    assert_eq!(
        c.exit_code("n2", Duration::from_secs(30)).await,
        Some(3),
        "the removed node exits, saying it left"
    );
    let rest: Vec<String> = c.nodes.iter().filter(|n| *n != "n2").cloned().collect();
    let settled = settle_on(&c, &rest, Duration::from_secs(60)).await;
    let more = load.count() + 500;
    wait_for(
        "more load on three nodes",
        Duration::from_secs(60),
        || async { (load.count() > more).then_some(()) },
    )
    .await;
    let verdict = load.finish(&c).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let worst = watcher.await.unwrap();
    eprintln!(
        "{stored} customers stored: n2 drained and removed in {took:?}: {:?}; fewest in-sync copies seen {worst}; load {verdict:?}",
        holdings(&settled)
    );
    verdict.assert_clean();
    assert!(
        worst >= 2,
        "a shard fell to {worst} in-sync copies during the removal"
    );

    // Its data dir is no longer needed: started again, it refuses, saying so.
    c.spawn("n2");
    assert_eq!(c.exit_code("n2", Duration::from_secs(30)).await, Some(3));
    let log = std::fs::read_to_string(c.dir.join("logs/n2.log")).unwrap();
    assert!(log.contains("was removed from the cluster"), "{log}");

    // With n2 gone, n3 votes too: removing it would leave 2 of 4 voters, no majority.
    let version = c.info().await.unwrap()["map_version"].clone();
    let (code, out, err) = c.keelson(&["nodes", "remove", "n3"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("409") && err.contains("voting nodes"), "{err}");
    assert_eq!(
        c.info().await.unwrap()["map_version"],
        version,
        "nothing changed"
    );
    let (code, _, err) = c.keelson(&["nodes", "remove", "n9"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_killed_during_its_copy_comes_back_and_finishes_with_nothing_lost() {
    let _guard = serial().await;
    let mut c = Cluster::start("join-kill", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    preload(&c, "kp", 3000).await;
    let load = Registers::start(&c, "k", 200, 8, 4).await;
    c.spawn_joining("n5");
    wait_for("n5 to be copying", Duration::from_secs(60), || async {
        let info = c.info().await?;
        info["members"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "n5" && m["shards_learning"].as_u64() > Some(0))
            .then_some(())
    })
    .await;
    c.kill("n5");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.spawn("n5");
    let nodes = c.nodes.clone();
    let settled = settle_on(&c, &nodes, Duration::from_secs(120)).await;
    let verdict = load.finish(&c).await;
    eprintln!(
        "n5 killed mid-copy and back: {:?}; load {verdict:?}",
        holdings(&settled)
    );
    verdict.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_named_by_localhost_joins_and_one_without_the_cluster_s_certificate_cannot() {
    let _guard = serial().await;
    let mut c = Cluster::start("join-names", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    c.spawn_joining_with("n5", &["--advertise-host", "localhost"]);
    let nodes = c.nodes.clone();
    let info = settle_on(&c, &nodes, Duration::from_secs(60)).await;
    assert!(holdings(&info).contains_key("n5"));
    let (code, out, err) = c.keelson(&["nodes", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("n5 ") && l.contains("up")),
        "{out}"
    );

    // n6 brings a certificate for n6.node.keelson from a CA of its own.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["n6.node.keelson".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
    let tls = c.cfg.tls.dir.clone();
    std::fs::write(tls.join("n6.pem"), cert.pem()).unwrap();
    std::fs::write(tls.join("n6.key"), key.serialize_pem()).unwrap();
    let refused_before = tls_refusals(&c).await;
    c.spawn_joining("n6");
    wait_for(
        "the seeds to refuse n6's links",
        Duration::from_secs(30),
        || async { (tls_refusals(&c).await > refused_before).then_some(()) },
    )
    .await;
    let info = c.info().await.unwrap();
    assert!(!holdings(&info).contains_key("n6"), "n6 got in: {info}");
    let shards = c
        .get_json(&format!("{}/v1/cluster/shards", c.gateway))
        .await
        .unwrap();
    assert!(
        !shards.to_string().contains("\"n6\""),
        "n6 was given shards"
    );
    c.kill("n6");
    c.nodes.retain(|n| n != "n6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_while_it_hands_a_shard_to_the_new_node_loses_nothing() {
    let _guard = serial().await;
    let mut c = Cluster::start("join-handoff", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    preload(&c, "hp", 3000).await;
    let load = Registers::start(&c, "h", 200, 8, 4).await;
    c.spawn_joining("n5");
    // Once n5 holds in-sync copies but not yet its share of primaries, primaries are being
    // handed to it: kill the primary of a shard n5 follows in sync (the next to hand over).
    let victim = wait_for(
        "n5 to be taking primaries",
        Duration::from_secs(60),
        || async {
            let shards = c
                .get_json(&format!("{}/v1/cluster/shards", c.gateway))
                .await?;
            let owned = shards["shards"]
                .as_array()?
                .iter()
                .filter(|s| s["primary"] == "n5")
                .count();
            let next = shards["shards"].as_array()?.iter().find(|s| {
                s["primary"] != "n5"
                    && s["in_sync"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|n| n == "n5"))
            })?;
            (owned < 12).then(|| next["primary"].as_str().unwrap().to_string())
        },
    )
    .await;
    c.kill(&victim);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.spawn(&victim);
    let nodes = c.nodes.clone();
    let settled = settle_on(&c, &nodes, Duration::from_secs(120)).await;
    let verdict = load.finish(&c).await;
    eprintln!(
        "{victim} killed while handing shards to n5: {:?}; load {verdict:?}",
        holdings(&settled)
    );
    verdict.assert_clean();
    let mut duplicates = 0.0;
    for n in &c.nodes {
        duplicates += c.metric(n, "keelson_duplicate_primary_total").await;
    }
    assert_eq!(duplicates, 0.0, "two primaries for a shard at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_named_localhost_serve_and_a_node_dead_for_good_is_removed_from_the_survivors() {
    let _guard = serial().await;
    let mut c = Cluster::configure("dead-node", &Settings::default());
    // Every seed by name: resolved, not read as an address.
    let text = std::fs::read_to_string(&c.config).unwrap();
    let named = text.replace(
        "[[node]]\nname = \"n1\"\nhost = \"127.0.0.1\"",
        "[[node]]\nname = \"n1\"\nhost = \"localhost\"",
    );
    let named = ["n2", "n3", "n4"].iter().fold(named, |t, n| {
        t.replace(
            &format!("[[node]]\nname = \"{n}\"\nhost = \"127.0.0.1\""),
            &format!("[[node]]\nname = \"{n}\"\nhost = \"localhost\""),
        )
    });
    assert_eq!(named.matches("host = \"localhost\"").count(), 4, "{named}");
    std::fs::write(&c.config, named).unwrap();
    c.start_configured().await;
    c.wait_replicated(Duration::from_secs(30)).await;
    c.spawn_joining("n5");
    let nodes = c.nodes.clone();
    settle_on(&c, &nodes, Duration::from_secs(60)).await;
    let load = Registers::start(&c, "d", 100, 4, 2).await;

    // n5 dies and is not coming back: its shards are copied again from the survivors.
    c.kill("n5");
    let (code, out, err) = c.keelson(&["nodes", "remove", "n5", "--timeout-secs", "120"]);
    assert_eq!(code, 0, "{out}{err}");
    c.nodes.retain(|n| n != "n5");
    let nodes = c.nodes.clone();
    let settled = settle_on(&c, &nodes, Duration::from_secs(60)).await;
    wait_for(
        "load on the four seeds",
        Duration::from_secs(60),
        || async { (load.count() > 600).then_some(()) },
    )
    .await;
    let verdict = load.finish(&c).await;
    eprintln!(
        "n5 dead and removed: {:?}; load {verdict:?}",
        holdings(&settled)
    );
    assert!(!holdings(&settled).contains_key("n5"));
    verdict.assert_clean();
}
