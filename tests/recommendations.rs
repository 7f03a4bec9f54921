//! Recommendations learned inside a real cluster, through the public API: a data set with planted
//! structure is learned well enough to beat popularity clearly; every interaction counts once,
//! also when a batch is sent again or a node is killed during ingestion, so the model equals a
//! recomputation over the acknowledged interactions; bad input is refused and changes nothing.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use keelson_recommend::baseline;
use keelson_recommend::data::Row;
use keelson_recommend::metrics::Accumulator;
use keelson_recommend::offline::Model;
use keelson_recommend::split::{split, Protocol};
use serde_json::{json, Value};
use support::{serial, Cluster, Settings};

/// A small deterministic generator (xorshift64*), so the data set is the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Customers in three taste groups, each touching items of its own group, plus items everyone
/// likes: popularity finds the latter, only a model of co-occurrence finds the former.
fn planted(customers: usize, seed: u64) -> Vec<Row> {
    let mut g = Gen(seed);
    let mut rows = Vec::new();
    for c in 0..customers {
        let group = c % 3;
        let mut items = BTreeSet::new();
        // Eight of the group's twelve items, and each popular item with a chance of 30%.
        while items.len() < 8 {
            items.insert(format!("g{group}-{}", g.below(12)));
        }
        for p in 0..8 {
            if g.below(100) < 30 {
                items.insert(format!("pop-{p}"));
            }
        }
        for (n, item) in items.into_iter().enumerate() {
            rows.push(Row {
                user: format!("cust-{c}"),
                item,
                rating: 1.0,
                at: n as u64,
            });
        }
    }
    rows
}

/// Sends `rows` as batches of `per` (ids `{prefix}{n}`), each until it is answered 200 or
/// `deadline` passes; the results of every batch.
async fn ingest(
    c: &Cluster,
    rows: &[Row],
    prefix: &str,
    per: usize,
    deadline: Duration,
) -> Vec<Value> {
    let mut answers = Vec::new();
    for (b, chunk) in rows.chunks(per).enumerate() {
        let list: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(n, r)| {
                json!({"id": format!("{prefix}{}", b * per + n), "customer_id": r.user, "kind": "view", "item": r.item})
            })
            .collect();
        let body = json!({ "interactions": list }).to_string();
        let started = Instant::now();
        loop {
            let (s, _, v) = c.req("POST", "/v1/interactions:batch", Some(&body)).await;
            if s == 200 {
                answers.push(v);
                break;
            }
            assert!(
                started.elapsed() < deadline,
                "batch {b} not accepted within {deadline:?}: {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    answers
}

async fn recommendations(c: &Cluster, customer: &str, limit: usize) -> Value {
    let (s, _, v) = c
        .req(
            "GET",
            &format!("/v1/customers/{customer}/recommendations?limit={limit}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn items_of(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_structure_is_learned_through_the_api_and_beats_popularity() {
    let _guard = serial().await;
    let c = Cluster::start("recommend", Settings::default()).await;
    let rows = planted(90, 7);
    let s = split(
        &rows,
        Protocol::RandomPerUser {
            test_share: 0.2,
            seed: 1,
        },
    );
    let answers = ingest(&c, &s.train, "t", 200, Duration::from_secs(60)).await;
    let applied: u64 = answers.iter().map(|a| a["applied"].as_u64().unwrap()).sum();
    assert_eq!(applied, s.train.len() as u64);

    // Keelson against popularity, on the held-out items.
    let model = Model::train(&s.train, 1);
    let popular = baseline::by_popularity(&s.train);
    let (mut ours, mut pop) = (Accumulator::new(10), Accumulator::new(10));
    for (user, held) in &s.test {
        let v = recommendations(&c, user, 10).await;
        assert_eq!(v["customer_id"], user.as_str());
        let got = items_of(&v);
        let seen: BTreeSet<String> = model.profiles[user].weights.keys().cloned().collect();
        assert_eq!(got.len(), 10, "{v}");
        for i in v["items"].as_array().unwrap() {
            let item = i["item"].as_str().unwrap();
            assert!(!seen.contains(item), "{item} was already seen by {user}");
            for b in i["because"].as_array().unwrap() {
                assert!(
                    seen.contains(b.as_str().unwrap()),
                    "because {b} is not {user}'s"
                );
            }
        }
        let relevant: HashSet<String> = held.iter().cloned().collect();
        ours.add(&got, &relevant);
        pop.add(&baseline::popular(&popular, &seen, 10), &relevant);
    }
    let catalogue = rows.iter().map(|r| &r.item).collect::<HashSet<_>>().len();
    let (ours, pop) = (ours.report(catalogue), pop.report(catalogue));
    eprintln!(
        "planted structure, {} test users: keelson {ours:?}; popularity {pop:?}",
        ours.users
    );
    assert!(
        ours.ndcg >= 1.5 * pop.ndcg,
        "NDCG@10 keelson {} vs popularity {}",
        ours.ndcg,
        pop.ndcg
    );
    assert!(ours.precision > pop.precision);

    // A customer with no history gets the most popular items, with no reasons.
    let cold = recommendations(&c, "nobody-yet", 5).await;
    assert_eq!(items_of(&cold), popular[..5].to_vec());
    assert!(cold["items"][0]["because"].as_array().unwrap().is_empty());

    // A batch with bad items: a result per item, the good one counted.
    let mixed = json!({"interactions": [
        {"id": "ok-1", "customer_id": "mixed", "kind": "purchase", "item": "g0-1"},
        {"id": "bad-1", "customer_id": "mixed", "kind": "teleport", "item": "g0-2"},
        {"id": "bad-2", "customer_id": "no spaces", "kind": "view", "item": "g0-3"},
        {"id": "bad-3", "customer_id": "mixed", "kind": "view", "item": "g0-4", "at_ms": u64::MAX},
    ]});
    let (st, _, v) = c
        .req("POST", "/v1/interactions:batch", Some(&mixed.to_string()))
        .await;
    assert_eq!(st, 200, "{v}");
    let statuses: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["applied", "refused", "refused", "refused"],
        "{v}"
    );
    assert!(
        v["results"][1]["error"].as_str().unwrap().contains("kind"),
        "{v}"
    );
    assert!(
        v["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("customer_id"),
        "{v}"
    );
    assert!(
        v["results"][3]["error"].as_str().unwrap().contains("at_ms"),
        "{v}"
    );

    // Sending a batch again counts nothing twice: the model does not move.
    let user = s.test.keys().next().unwrap();
    let before = recommendations(&c, user, 10).await;
    let again = ingest(&c, &s.train[..200], "t", 200, Duration::from_secs(30)).await;
    assert_eq!(again[0]["applied"], 0);
    assert_eq!(again[0]["duplicates"], 200);
    assert!(again[0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "duplicate"));
    assert_eq!(recommendations(&c, user, 10).await, before);

    // Bad input: a clear error, nothing changed.
    let bad = [
        (json!({"interactions": [], "extra": 1}), "extra"),
        (json!({"interactions": []}), "interactions"),
        (
            json!({"interactions": [{"id": "x", "customer_id": "c", "kind": "view"}]}),
            "item",
        ),
        (
            json!({"interactions": [{"id": "x", "customer_id": "c", "kind": "view", "item": "i", "at_ms": -1}]}),
            "at_ms",
        ),
    ];
    for (body, field) in bad {
        let (st, _, v) = c
            .req("POST", "/v1/interactions:batch", Some(&body.to_string()))
            .await;
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let too_many: Vec<Value> = (0..1001)
        .map(|n| json!({"id": format!("m{n}"), "customer_id": "c", "kind": "view", "item": "i"}))
        .collect();
    let (st, _, v) = c
        .req(
            "POST",
            "/v1/interactions:batch",
            Some(&json!({"interactions": too_many}).to_string()),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    for q in ["limit=0", "limit=101", "limit=x", "top=3"] {
        let (st, _, v) = c
            .req(
                "GET",
                &format!("/v1/customers/{user}/recommendations?{q}"),
                None,
            )
            .await;
        assert_eq!(st, 400, "{q}: {v}");
    }
    assert_eq!(
        recommendations(&c, user, 10).await,
        before,
        "refusals changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_built_through_a_node_kill_equals_a_recomputation() {
    let _guard = serial().await;
    let mut c = Cluster::start("recommend-kill", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let rows = planted(60, 11);
    let third = rows.len() / 3;
    ingest(&c, &rows[..third], "k", 50, Duration::from_secs(30)).await;
    c.kill("n2");
    // Batches sent while n2 is down (and its shards fail over) are retried until accepted.
    ingest(
        &c,
        &rows[third..2 * third],
        "k2-",
        50,
        Duration::from_secs(30),
    )
    .await;
    c.spawn("n2");
    ingest(&c, &rows[2 * third..], "k3-", 50, Duration::from_secs(30)).await;
    c.wait_replicated(Duration::from_secs(60)).await;

    let compared = assert_equals_recomputation(&c, &rows).await;
    let per_user: BTreeMap<&str, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.user.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "{} interactions from {} customers through a kill of n2: all {compared} customers' recommendations equal the recomputation",
        rows.len(),
        per_user.len()
    );
    assert_eq!(compared, 60);
}

/// Asks for every customer of `rows` the top 20 and checks them, item by item, score and
/// reasons, against a model recomputed in memory over `rows`; how many customers were compared.
async fn assert_equals_recomputation(c: &Cluster, rows: &[Row]) -> usize {
    let model = Model::train(rows, 1);
    let table = model.ease_index().expect("a small catalogue");
    let mut compared = 0;
    for user in model.profiles.keys() {
        let want = model.recommend(user, 20, &table);
        let got = recommendations(c, user, 20).await;
        let got_items = got["items"].as_array().unwrap();
        let scored: Vec<&Value> = got_items
            .iter()
            .filter(|i| !i["because"].as_array().unwrap().is_empty())
            .collect();
        assert_eq!(scored.len(), want.len(), "{user}: {got}");
        for (g, w) in scored.iter().zip(&want) {
            assert_eq!(g["item"], w.item.as_str(), "{user}");
            let score = g["score"].as_f64().unwrap();
            assert!(
                (score - w.score).abs() <= 1e-9 * w.score.abs().max(1.0),
                "{user}: {score} vs {}",
                w.score
            );
            let because: Vec<&str> = g["because"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_str().unwrap())
                .collect();
            assert_eq!(because, w.because, "{user}");
        }
        compared += 1;
    }
    compared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_customer_is_taken_out_of_the_model_also_through_a_node_kill() {
    let _guard = serial().await;
    let mut c = Cluster::start("recommend-erase", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let rows = planted(36, 23);
    let erased = ["cust-1", "cust-5", "cust-9"];
    for who in erased {
        let body = json!({"id": who, "name": "Erased"}).to_string();
        let (s, _, v) = c.req("POST", "/v1/customers", Some(&body)).await;
        assert_eq!(s, 201, "{v}");
    }
    ingest(&c, &rows, "e", 40, Duration::from_secs(30)).await;
    assert_eq!(assert_equals_recomputation(&c, &rows).await, 36);
    // The first erasure with every node up; the others while n2 is down and its shards fail
    // over, each sent again (as a client does) until it is answered: an erasure cut off
    // part-way finishes when sent again.
    let mut tries = 0;
    for (n, who) in erased.into_iter().enumerate() {
        if n == 1 {
            c.kill("n2");
        }
        let path = format!("/v1/customers/{who}");
        let started = Instant::now();
        loop {
            tries += 1;
            let (s, _, v) = c.req("DELETE", &path, None).await;
            // 404: a try whose answer was lost had finished it.
            if s == 204 || (s == 404 && n > 0) {
                break;
            }
            assert!(
                s >= 500 && started.elapsed() < Duration::from_secs(30),
                "{who}: {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (s, _, v) = c.req("DELETE", &path, None).await;
        assert_eq!(s, 404, "{who} again: {v}");
    }
    c.spawn("n2");
    c.wait_replicated(Duration::from_secs(60)).await;
    // What is left is what the others' interactions alone make: counts, popularity, scores.
    let others: Vec<Row> = rows
        .iter()
        .filter(|r| !erased.contains(&r.user.as_str()))
        .cloned()
        .collect();
    assert_eq!(assert_equals_recomputation(&c, &others).await, 33);
    for who in erased {
        let v = recommendations(&c, who, 10).await;
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 10, "{v}");
        assert!(
            items.iter().all(|i| i["because"] == json!([])),
            "an erased customer has no history left: {v}"
        );
    }
    eprintln!(
        "{} customers erased ({tries} tries, n2 killed after the first): the model equals a recomputation over the other {} customers' {} interactions",
        erased.len(),
        33,
        others.len()
    );
}

/// Registers customer `who` and its device `device` of `kind`.
async fn customer_with_device(c: &Cluster, who: &str, device: &str, kind: &str) {
    let customer = json!({"id": who, "name": "Device Owner", "email": "o@example.com"});
    let (s, _, v) = c
        .req("POST", "/v1/customers", Some(&customer.to_string()))
        .await;
    assert_eq!(s, 201, "{v}");
    let device = json!({"id": device, "customer_id": who, "kind": kind, "firmware": "1.0"});
    let (s, _, v) = c
        .req("POST", "/v1/devices", Some(&device.to_string()))
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owning_and_using_a_device_feeds_the_model() {
    let _guard = serial().await;
    let c = Cluster::start("recommend-devices", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    // Wearable owners browse running gear; humidity-sensor owners, more of them, browse
    // garden gear (the more popular items overall).
    let mut rows = Vec::new();
    for (group, kind, items, n) in [
        ("run", "wearable", ["shoes", "watch", "gel"], 6),
        ("garden", "humidity", ["hose", "seeds", "rake"], 12),
    ] {
        for k in 0..n {
            let who = format!("{group}-{k}");
            customer_with_device(&c, &who, &format!("d-{who}"), kind).await;
            for item in items {
                rows.push(Row {
                    user: who.clone(),
                    item: format!("{group}-{item}"),
                    rating: 1.0,
                    at: 0,
                });
            }
        }
    }
    ingest(&c, &rows, "dev-", 100, Duration::from_secs(30)).await;
    // A new customer whose only signal is a wearable it owns and wears.
    customer_with_device(&c, "newcomer", "d-new", "wearable").await;
    let reading = json!({"readings": {"heart_rate": 72.0}}).to_string();
    let (s, _, v) = c
        .req("POST", "/v1/devices/d-new/telemetry", Some(&reading))
        .await;
    assert_eq!(s, 200, "{v}");
    let got = support::wait_for(
        "the device to reach the model",
        Duration::from_secs(20),
        || async {
            let v = recommendations(&c, "newcomer", 3).await;
            let first = &v["items"][0];
            (first["because"] == json!(["device:wearable"])).then_some(v)
        },
    )
    .await;
    let items = items_of(&got);
    let mut want = vec!["run-gel", "run-shoes", "run-watch"];
    want.sort();
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(
        sorted, want,
        "wearable owners' items, not the more popular garden ones: {got}"
    );
    // 12 humidity owners, 12 of each garden item: ties go by name.
    let popular_for_a_stranger = recommendations(&c, "nobody-yet", 3).await;
    assert_eq!(
        items_of(&popular_for_a_stranger)[0],
        "device:humidity",
        "device kinds are items too: {popular_for_a_stranger}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_feeds_the_interactions_it_queued() {
    let _guard = serial().await;
    let mut c = Cluster::start("recommend-stop", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    for who in ["qa", "qb"] {
        let customer = json!({"id": who, "name": "Q"});
        let (s, _, v) = c
            .req("POST", "/v1/customers", Some(&customer.to_string()))
            .await;
        assert_eq!(s, 201, "{v}");
    }
    // qb bought q-x0 (through a batch: counted before the answer).
    let rows: Vec<Row> = ["q-x0", "q-y"]
        .iter()
        .map(|item| Row {
            user: "qb".into(),
            item: item.to_string(),
            rating: 1.0,
            at: 0,
        })
        .collect();
    ingest(&c, &rows, "qb-", 10, Duration::from_secs(30)).await;
    // qa views q-x0..q-x29 one request at a time, all at once: each answered `queued`.
    const N: usize = 30;
    let posts = (0..N).map(|i| {
        let c = &c;
        async move {
            let body = json!({"kind": "view", "item": format!("q-x{i}")}).to_string();
            let (s, _, v) = c
                .req("POST", "/v1/customers/qa/interactions", Some(&body))
                .await;
            assert_eq!(s, 201, "{v}");
            assert_eq!(v["model"], "queued", "{v}");
        }
    });
    futures_util::future::join_all(posts).await;
    // Stopped at once: what is still queued goes in before the gateway leaves.
    c.signal("gateway", libc::SIGTERM);
    assert_eq!(
        c.exit_code("gateway", Duration::from_secs(30)).await,
        Some(0)
    );
    c.spawn("gateway");
    c.wait_all_up().await;
    // Every item qa viewed is now a neighbour of qb's q-x0.
    let want: BTreeSet<String> = (1..N).map(|i| format!("q-x{i}")).collect();
    let v = recommendations(&c, "qb", 50).await;
    let led: BTreeSet<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["because"] == json!(["q-x0"]))
        .map(|i| i["item"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(led, want, "{v}");
}
