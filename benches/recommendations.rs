//! Recommendation benchmark against the release binary: a 4-node cluster holding 100,000
//! interactions, then 64 concurrent clients asking for recommendations, each figure beside
//! its ceiling measured in the same run:
//!
//! - bulk ingestion rate (`POST /v1/interactions:batch`, 1,000 per request, 2 in flight);
//! - recommendations at 64 clients (closed loop: each client sends its next request when the
//!   last is answered) vs. the gateway's cheapest entity read (`GET /v1/customers/{id}`) and
//!   a bare warp server answering the same recommendation bytes, with the same 64 clients.
//!
//! The data set: 1,000 customers in 20 taste groups, 100 interactions each over 1,600 items
//! (70% from the group's 80 items, 30% from the whole catalogue, both skewed towards the first
//! items), kinds view 70%, like 10%, purchase 20%. Seeded: the same on every run.
//!
//! Run: `cargo bench --bench recommendations` (bounded: at most `ROUNDS` requests per client
//! and `PHASE_LIMIT` per phase).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use support::{Cluster, Settings};
use warp::Filter;

const CUSTOMERS: usize = 1_000;
const PER_CUSTOMER: usize = 100;
const ITEMS: usize = 1_600;
const GROUPS: usize = 20;
const CLIENTS: usize = 64;
/// Requests per client and phase (`KEELSON_BENCH_ROUNDS` overrides, e.g. to profile).
const ROUNDS: usize = 150;
const PHASE_LIMIT: Duration = Duration::from_secs(60);

/// A skewed pick in 0..n (the square of a uniform draw: low numbers are likelier).
fn skewed(rng: &mut StdRng, n: usize) -> usize {
    let u: f64 = rng.random();
    ((u * u) * n as f64) as usize % n
}

/// (customer, kind, item) for every interaction, customer by customer.
fn data_set() -> Vec<(String, &'static str, String)> {
    let mut rng = StdRng::seed_from_u64(7);
    let per_group = ITEMS / GROUPS;
    let mut out = Vec::with_capacity(CUSTOMERS * PER_CUSTOMER);
    for c in 0..CUSTOMERS {
        let group = c % GROUPS;
        for _ in 0..PER_CUSTOMER {
            let item = if rng.random_range(0..100) < 70 {
                group * per_group + skewed(&mut rng, per_group)
            } else {
                skewed(&mut rng, ITEMS)
            };
            let kind = match rng.random_range(0..100) {
                0..70 => "view",
                70..80 => "like",
                _ => "purchase",
            };
            out.push((format!("bench-{c}"), kind, format!("item-{item}")));
        }
    }
    out
}

async fn ingest(c: &Cluster, rows: &[(String, &'static str, String)]) -> Duration {
    let started = Instant::now();
    let batches: Vec<String> = rows
        .chunks(1_000)
        .enumerate()
        .map(|(b, chunk)| {
            let list: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(n, (cust, kind, item))| {
                    json!({"id": format!("b{}", b * 1_000 + n), "customer_id": cust, "kind": kind, "item": item})
                })
                .collect();
            json!({ "interactions": list }).to_string()
        })
        .collect();
    let url = format!("{}/v1/interactions:batch", c.gateway);
    let sent = stream::iter(batches)
        .map(|body| {
            let (http, url) = (c.http.clone(), url.clone());
            async move {
                for _ in 0..20 {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if r.status() == 200 {
                            let v: Value = r.json().await.unwrap();
                            assert_eq!(v["refused"], 0, "{v}");
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("a batch was not accepted in 20 tries");
            }
        })
        .buffer_unordered(2)
        .count()
        .await;
    assert_eq!(sent, rows.len().div_ceil(1_000));
    started.elapsed()
}

/// `CLIENTS` clients, each sending up to `ROUNDS` GETs of `url(client, round)` one after
/// another; the sorted latencies and the wall time.
async fn closed_loop(
    http: &reqwest::Client,
    url: Arc<dyn Fn(usize, usize) -> String + Send + Sync>,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let rounds = rounds();
                let mut lat = Vec::with_capacity(rounds);
                for round in 0..rounds {
                    if started.elapsed() > PHASE_LIMIT {
                        break;
                    }
                    let t = Instant::now();
                    let r = http.get(url(client, round)).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    (all, started.elapsed())
}

fn rounds() -> usize {
    std::env::var("KEELSON_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn line(label: &str, lat: &[Duration], wall: Duration) {
    println!(
        "{label:<44} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests)",
        lat.len() as f64 / wall.as_secs_f64(),
        percentile(lat, 0.5).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.len()
    );
}

async fn recommendations() {
    let c = Cluster::start("bench-recommend", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(60)).await;
    let rows = data_set();
    let took = ingest(&c, &rows).await;
    println!(
        "ingestion: {} interactions in {:.1} s = {:.0}/s (1,000 per request, 2 in flight)",
        rows.len(),
        took.as_secs_f64(),
        rows.len() as f64 / took.as_secs_f64()
    );
    // The first answer waits for the gateway's copy to hold everything ingested.
    let first = Instant::now();
    let (s, _, sample) = c
        .req(
            "GET",
            "/v1/customers/bench-0/recommendations?limit=10",
            None,
        )
        .await;
    assert_eq!(s, 200, "{sample}");
    assert_eq!(sample["items"].as_array().unwrap().len(), 10, "{sample}");
    println!(
        "first recommendation after ingestion (model copy rebuilt): {:.0} ms",
        first.elapsed().as_secs_f64() * 1e3
    );
    for n in 0..CUSTOMERS.min(200) {
        let body = json!({"id": format!("bench-{n}"), "name": "Bench", "email": "b@example.com"})
            .to_string();
        let (s, _, v) = c.req("POST", "/v1/customers", Some(&body)).await;
        assert!(s == 201 || s == 409, "{s} {v}");
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = sample.to_string();
    let route = warp::any()
        .map(move || warp::reply::with_header(bytes.clone(), "content-type", "application/json"));
    tokio::spawn(warp::serve(route).incoming(listener).run());

    let gw = c.gateway.clone();
    let recommend: Arc<dyn Fn(usize, usize) -> String + Send + Sync> = Arc::new(move |cl, r| {
        format!(
            "{gw}/v1/customers/bench-{}/recommendations?limit=10",
            (cl * 7919 + r * 104_729) % CUSTOMERS
        )
    });
    let gw = c.gateway.clone();
    let read: Arc<dyn Fn(usize, usize) -> String + Send + Sync> = Arc::new(move |cl, r| {
        format!(
            "{gw}/v1/customers/bench-{}",
            (cl * 7919 + r * 104_729) % 200
        )
    });
    let bare: Arc<dyn Fn(usize, usize) -> String + Send + Sync> =
        Arc::new(move |_, _| format!("http://{addr}/v1/customers/x/recommendations"));

    eprintln!("gateway pid {}", c.pid("gateway"));
    closed_loop(&c.http, recommend.clone()).await; // warm-up
    let (rec, rec_wall) = closed_loop(&c.http, recommend).await;
    let (one, one_wall) = closed_loop(&c.http, read).await;
    let plain = reqwest::Client::new();
    let (bw, bw_wall) = closed_loop(&plain, bare).await;
    println!("\nat {CLIENTS} concurrent clients, 100,000 interactions stored, 4 nodes, rf 2:");
    line("GET recommendations (limit 10, random)", &rec, rec_wall);
    line("ceiling: GET one customer (random)", &one, one_wall);
    line("ceiling: bare warp, same bytes (no TLS)", &bw, bw_wall);
    println!(
        "recommendations p99 / one-read p99: {:.2}",
        percentile(&rec, 0.99).as_secs_f64() / percentile(&one, 0.99).as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(recommendations());
}
