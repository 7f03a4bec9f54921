//! Replicated shards with real processes: `kill -9`, SIGSTOP, lost majorities, catch-up.
//! Invariants, by test: no acknowledged write is lost; a survivor serves a dead or frozen
//! primary's shards quickly; a thawed primary is fenced (`keelson_duplicate_primary_total` 0).

mod support;

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use support::load::Registers;
use support::{serial, wait_for, Cluster, Settings};

async fn create(c: &Cluster, id: &str) {
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(&json!({"id": id, "name": "R"}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "create {id}: {v}");
}

async fn set_company(c: &Cluster, id: &str, company: &str) -> u16 {
    c.req(
        "PATCH",
        &format!("/v1/customers/{id}"),
        Some(&json!({"company": company}).to_string()),
    )
    .await
    .0
}

async fn company(c: &Cluster, id: &str) -> Option<String> {
    let (s, _, v) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
    (s == 200).then(|| v["company"].as_str().unwrap_or("").to_string())
}

/// A customer whose primary is `node`.
async fn key_on(c: &Cluster, node: &str, prefix: &str) -> String {
    for i in 0..10_000 {
        let id = format!("{prefix}{i}");
        if c.owner("customer", &id).await == node {
            return id;
        }
    }
    panic!("no key found on {node}");
}

/// `keelson_reads_served_total` of each node, in node order.
async fn reads_served(c: &Cluster) -> Vec<f64> {
    let mut v = Vec::new();
    for n in &c.nodes {
        v.push(c.metric(n, "keelson_reads_served_total").await);
    }
    v
}

/// `keelson_duplicate_primary_total` summed over the nodes that are running.
async fn duplicates(c: &Cluster) -> f64 {
    let mut total = 0.0;
    for n in &c.nodes {
        total += c
            .try_metric(n, "keelson_duplicate_primary_total")
            .await
            .unwrap_or(0.0);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_under_load_fails_over_within_a_second() {
    let _guard = serial().await;
    let mut c = Cluster::start("failover", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    for i in 0..32 {
        create(&c, &format!("load{i}")).await;
    }
    let mut times = Vec::new();
    for round in 0..20 {
        let victim = c.nodes[round % c.nodes.len()].clone();
        let key = key_on(&c, &victim, &format!("k{round}-")).await;
        create(&c, &key).await;
        let t0 = Instant::now();
        c.kill(&victim);
        // Background writes on other keys keep the cluster busy during the failover.
        let load = async {
            for i in 0..200 {
                set_company(&c, &format!("load{}", i % 32), &format!("v{round}-{i}")).await;
            }
        };
        let failover = async {
            loop {
                if set_company(&c, &key, "after").await == 200 {
                    break t0.elapsed();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "no failover for {key} after 10 s"
                );
            }
        };
        let (took, ()) = tokio::join!(failover, load);
        times.push(took);
        assert_eq!(company(&c, &key).await.as_deref(), Some("after"));
        c.spawn(&victim);
        // The next kill finds a settled cluster, not one still handing shards back.
        c.wait_rebalanced(Duration::from_secs(60)).await;
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() - 1];
    eprintln!("kill -9 of a primary to first successful write, 20 tries: p50 {p50:?}, p99 {p99:?}, all {times:?}");
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}: {times:?}");
    assert_eq!(duplicates(&c).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_replaced_fenced_and_rejoins_as_a_follower() {
    let _guard = serial().await;
    let c = Cluster::start("freeze-primary", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let key = key_on(&c, "n2", "f").await;
    create(&c, &key).await;
    assert_eq!(set_company(&c, &key, "before").await, 200);

    let t0 = Instant::now();
    c.signal("n2", libc::SIGSTOP);
    loop {
        if set_company(&c, &key, "during").await == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no survivor took over"
        );
    }
    let took = t0.elapsed();
    eprintln!("SIGSTOP of a primary to first successful write: {took:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let new_primary = c.owner("customer", &key).await;
    assert_ne!(new_primary, "n2");

    c.signal("n2", libc::SIGCONT);
    c.wait_replicated(Duration::from_secs(60)).await;
    // Writes after the thaw land once, on whoever is primary now; the old one took none.
    for i in 0..20 {
        assert_eq!(set_company(&c, &key, &format!("after{i}")).await, 200);
    }
    assert_eq!(company(&c, &key).await.as_deref(), Some("after19"));
    assert_eq!(
        duplicates(&c).await,
        0.0,
        "a thawed primary confirmed a write"
    );
    // It is back as a replica of the shard (primary again after the handoff, or follower).
    let (_, _, loc) = c
        .req("GET", &format!("/v1/cluster/locate/customer/{key}"), None)
        .await;
    assert_eq!(loc["owner_state"], "up");
    // The gateway can see the map that makes n2 a replica before n2 has applied it.
    wait_for(
        "n2 to count itself a replica",
        Duration::from_secs(10),
        || async {
            (c.metric("n2", "keelson_shards_following").await
                + c.metric("n2", "keelson_shards_owned").await
                > 0.0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_writes_fail_fast_and_nothing_acknowledged_is_lost() {
    let _guard = serial().await;
    let c = Cluster::start("no-majority", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let keys: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
    for k in &keys {
        create(&c, k).await;
    }
    c.signal("n3", libc::SIGSTOP);
    c.signal("n4", libc::SIGSTOP);
    wait_for("n3 and n4 down", Duration::from_secs(5), || async {
        let s = c.states().await?;
        (s["n3"] == "down" && s["n4"] == "down").then_some(())
    })
    .await;
    let mut acked = Vec::new();
    let mut refused = 0;
    for k in &keys {
        let t = Instant::now();
        let (s, h, v) = c
            .req(
                "PATCH",
                &format!("/v1/customers/{k}"),
                Some(r#"{"company":"minority"}"#),
            )
            .await;
        let took = t.elapsed();
        assert!(took < Duration::from_secs(3), "{k}: took {took:?}");
        match s {
            200 => acked.push(k.clone()),
            503 => {
                refused += 1;
                let code = v["error"]["code"].as_str().unwrap();
                assert!(
                    ["shard_unavailable", "write_not_confirmed", "no_majority"].contains(&code),
                    "{k}: {v}"
                );
                assert!(h.contains_key("retry-after"));
            }
            other => panic!("{k}: status {other}: {v}"),
        }
    }
    eprintln!(
        "without a majority: {} writes confirmed, {refused} refused",
        acked.len()
    );
    assert!(refused > 0, "some shards need a node that is frozen");
    c.signal("n3", libc::SIGCONT);
    c.signal("n4", libc::SIGCONT);
    c.wait_replicated(Duration::from_secs(60)).await;
    for k in &acked {
        assert_eq!(
            company(&c, k).await.as_deref(),
            Some("minority"),
            "{k} lost an acknowledged write"
        );
    }
    for k in &keys {
        assert_eq!(
            set_company(&c, k, "healed").await,
            200,
            "{k} after the majority returned"
        );
    }
    assert_eq!(duplicates(&c).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_follower_catches_up_and_then_losing_the_primary_loses_nothing() {
    let _guard = serial().await;
    let mut c = Cluster::start("catch-up", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    c.kill("n4");
    wait_for("n4 down", Duration::from_secs(3), || async {
        (c.state_of("n4").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    // The three survivors re-replicate n4's shards among themselves.
    wait_for(
        "shards re-replicated without n4",
        Duration::from_secs(60),
        || async {
            let (n4, v) = c.member("n4").await?;
            let gone = n4["shards_owned"] == 0
                && n4["shards_following"] == 0
                && n4["shards_learning"] == 0;
            (gone && v["under_replicated"] == 0 && v["learners"] == 0).then_some(())
        },
    )
    .await;
    let n = 10_000;
    let t = Instant::now();
    let failures: Vec<String> = stream::iter(0..n)
        .map(|i| {
            let c = &c;
            async move {
                let body = json!({"id": format!("cu{i}"), "name": format!("C {i}")}).to_string();
                let (s, _, v) = c.req("POST", "/v1/customers", Some(&body)).await;
                (s != 201).then(|| format!("cu{i}: {s} {v}"))
            }
        })
        .buffer_unordered(32)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} creates failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    eprintln!("{n} customers written with n4 down in {:?}", t.elapsed());

    let t = Instant::now();
    c.spawn("n4");
    c.wait_all_up().await;
    // Caught up: n4 holds its share of copies again, none is in progress, none is short.
    wait_for(
        "n4 to hold its share again",
        Duration::from_secs(120),
        || async {
            let (n4, v) = c.member("n4").await?;
            let held = n4["shards_owned"].as_u64()? + n4["shards_following"].as_u64()?;
            (held >= 30 && v["under_replicated"] == 0 && v["learners"] == 0).then_some(())
        },
    )
    .await;
    let took = t.elapsed();
    let copied = c.metric("n4", "keelson_copy_records_total").await;
    eprintln!(
        "n4 caught up: {copied} records copied in {took:?} ({:.0} records/s)",
        copied / took.as_secs_f64()
    );
    assert!(copied > 0.0);

    // Lose the node holding the most primaries: every customer is still there.
    c.kill("n1");
    wait_for("n1 down", Duration::from_secs(3), || async {
        (c.state_of("n1").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    let missing: Vec<String> = stream::iter(0..n)
        .map(|i| {
            let c = &c;
            async move {
                let (s, _, v) = c.req("GET", &format!("/v1/customers/cu{i}"), None).await;
                (s != 200 || v["name"] != format!("C {i}")).then(|| format!("cu{i}: {s} {v}"))
            }
        })
        .buffer_unordered(32)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        missing.is_empty(),
        "{} customers lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    assert_eq!(duplicates(&c).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_and_restarts_for_a_minute_lose_no_acknowledged_write_and_serve_no_stale_read()
{
    let _guard = serial().await;
    let mut c = Cluster::start("chaos", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let load = Registers::start(&c, "ch", 200, 8, 4).await;
    let run_for = Duration::from_secs(60);
    let start = Instant::now();
    // Faults: kill a random node, restart it 1.5 s later, every 4 s.
    let mut rng = start.elapsed().as_nanos() as u64 | 1;
    let mut kills = 0;
    while start.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = c.nodes[(rng % c.nodes.len() as u64) as usize].clone();
        c.kill(&victim);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.spawn(&victim);
    }
    c.wait_replicated(Duration::from_secs(60)).await;
    // No acknowledged write lost, no read older than a write acknowledged before it began,
    // every key's history linearizable, and every failure absorbed by a retry.
    let verdict = load.finish(&c).await;
    eprintln!("chaos: {kills} kills in {:?}; {verdict:?}", start.elapsed());
    assert!(
        verdict.writes > 1000 && verdict.reads > 1000,
        "too little got through to judge"
    );
    verdict.assert_clean();
    assert_eq!(duplicates(&c).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_the_same_idempotency_key_is_applied_once_even_across_a_failover() {
    let _guard = serial().await;
    let mut c = Cluster::start("idempotency", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let key = key_on(&c, "n3", "idem").await;
    create(&c, &key).await;
    let (http, url) = (
        c.http.clone(),
        format!("{}/v1/customers/{key}/interactions", c.gateway),
    );
    let add = |k: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(url)
                .header("idempotency-key", k)
                .body(r#"{"kind":"order","item":"o-1"}"#)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let first = add("order-o-1").await;
    assert_eq!(first.0, 201);
    assert_eq!(
        add("order-o-1").await,
        first,
        "a retry is answered like the first"
    );
    c.kill("n3");
    // The same retry after a failover is still applied once: the key travelled with the state.
    let after = add("order-o-1").await;
    assert_eq!(after, first);
    let (s, _, v) = c.req("GET", &format!("/v1/customers/{key}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["interaction_count"], 1, "{v}");
    // Another key is another write.
    assert_eq!(add("order-o-2").await.0, 201);
    let (_, _, v) = c.req("GET", &format!("/v1/customers/{key}"), None).await;
    assert_eq!(v["interaction_count"], 2, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_least_loaded_in_sync_copy_and_avoid_a_slow_node() {
    let _guard = serial().await;
    let c = Cluster::start("slow-node", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    const KEYS: usize = 64;
    for k in 0..KEYS {
        create(&c, &format!("s{k}")).await;
    }
    let before = reads_served(&c).await;
    // n3 stalls for 100 ms in every 250 ms: alive (never marked down), but slow.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = c.pid("n3");
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: pauses and resumes a child of this test.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                tokio::time::sleep(Duration::from_millis(100)).await;
                unsafe { libc::kill(pid, libc::SIGCONT) };
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            unsafe { libc::kill(pid, libc::SIGCONT) };
        })
    };
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let (http, gw) = (c.http.clone(), c.gateway.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let mut ok = 0;
                for i in 0..4000 {
                    if t.elapsed() > Duration::from_secs(8) {
                        break;
                    }
                    let k = (i * 7 + r * 13) % KEYS;
                    if let Ok(resp) = http.get(format!("{gw}/v1/customers/s{k}")).send().await {
                        ok += usize::from(resp.status() == 200);
                    }
                }
                ok
            })
        })
        .collect();
    // Meanwhile the gateway marks n3 degraded (a gray failure: alive but slow).
    let marked = wait_for(
        "the gateway to mark n3 degraded",
        Duration::from_secs(8),
        || async {
            (c.try_metric("gateway", "keelson_node_degraded{peer=\"n3\"}")
                .await
                == Some(1.0))
            .then_some(true)
        },
    )
    .await;
    let mut ok = 0;
    for r in readers {
        ok += r.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stopper.await.unwrap();
    let after = reads_served(&c).await;
    let share: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    let total: f64 = share.iter().sum();
    eprintln!(
        "reads served per node while n3 stalls (n1..n4): {share:?} of {total} ({ok} answered)"
    );
    assert!(total > 500.0, "too few reads to judge");
    assert!(marked);
    let others = (share[0] + share[1] + share[3]) / 3.0;
    assert!(
        share[2] < 0.75 * others,
        "slow n3 served {} reads, the others {others} on average",
        share[2]
    );
    assert!(
        share.iter().all(|s| *s > 0.0),
        "every node serves some reads: {share:?}"
    );
}
