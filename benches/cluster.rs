//! Cluster benchmarks against the release binary, each reported with a ceiling measured in the
//! same run on the same machine:
//!
//! - single-client GET latency through the gateway vs. a bare warp server answering the same JSON;
//! - `kill -9` to "marked down" (median of 5) vs. the failure timeout;
//! - write throughput with replication_factor 2 vs. 1;
//! - RSS per active customer actor vs. a bare ractor actor spawned in this process.
//!
//! Run: `cargo bench --bench cluster`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::json;
use support::{wait_for, Cluster, Settings};
use warp::Filter;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn sequential_gets(http: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn latency() {
    let c = Cluster::start("bench-latency", Settings::default()).await;
    let body = json!({"id": "lat", "name": "Latency", "email": "l@example.com", "tags": ["a"]})
        .to_string();
    assert_eq!(c.req("POST", "/v1/customers", Some(&body)).await.0, 201);
    let url = format!("{}/v1/customers/lat", c.gateway);
    let sample = c
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    // Ceiling: a bare warp server answering the same bytes on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let route = warp::any()
        .map(move || warp::reply::with_header(sample.to_vec(), "content-type", "application/json"));
    tokio::spawn(warp::serve(route).incoming(listener).run());
    let bare_url = format!("http://{addr}/v1/customers/lat");

    let n = 3000;
    sequential_gets(&c.http, &url, 300).await; // warm-up
    sequential_gets(&c.http, &bare_url, 300).await;
    let ours = sequential_gets(&c.http, &url, n).await;
    let bare = sequential_gets(&c.http, &bare_url, n).await;
    let (p50, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (b50, b99) = (percentile(&bare, 0.5), percentile(&bare, 0.99));
    println!("single-client GET /v1/customers/{{id}} through the gateway, {n} requests:");
    println!("  keelson   p50 {p50:>10.1?}  p99 {p99:>10.1?}");
    println!("  bare warp p50 {b50:>10.1?}  p99 {b99:>10.1?}  (ceiling: same client, same bytes)");
    println!(
        "  ratio     p50 {:.2}x      p99 {:.2}x",
        p50.as_secs_f64() / b50.as_secs_f64(),
        p99.as_secs_f64() / b99.as_secs_f64()
    );
}

async fn kill_to_down() {
    let mut c = Cluster::start("bench-kill", Settings::default()).await;
    let mut times = Vec::new();
    for i in 0..5 {
        let victim = c.nodes[i % c.nodes.len()].clone();
        let t = Instant::now();
        c.kill(&victim);
        wait_for("victim down", Duration::from_secs(5), || async {
            (c.state_of(&victim).await.as_deref() == Some("down")).then_some(())
        })
        .await;
        times.push(t.elapsed());
        c.spawn(&victim);
        c.wait_all_up().await;
    }
    times.sort();
    println!("kill -9 to marked down at the gateway, 5 tries: {times:.1?}");
    println!(
        "  median {:.1?} (failure timeout 1 s; a frozen node takes the timeout)",
        times[2]
    );
}

#[derive(RactorMessage)]
struct Nop;

struct Bare;

impl Actor for Bare {
    type Msg = Nop;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Nop>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

async fn memory() {
    let n = 100_000usize;
    let settings = Settings {
        nodes: 1,
        entities: "idle_timeout_secs = 3600\n".into(),
        ..Settings::default()
    };
    let c = Cluster::start("bench-memory", settings).await;
    let pid = c.pid("n1");
    let base = rss_kib(pid);
    let t = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let c = &c;
            async move {
                let body = json!({"id": format!("m{i}"), "name": format!("Customer {i}"), "email": format!("m{i}@example.com"), "tags": ["bench"]});
                let (s, _, v) = c.req("POST", "/v1/customers", Some(&body.to_string())).await;
                assert_eq!(s, 201, "{v}");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let created_in = t.elapsed();
    let active = c
        .metric("n1", "keelson_entities_active{kind=\"customer\"}")
        .await;
    assert_eq!(active as usize, n, "every customer is still active");
    let after = rss_kib(pid);
    let per_customer = (after - base) as f64 * 1024.0 / n as f64;

    // Ceiling: the same number of do-nothing ractor actors in this process.
    let me = std::process::id() as i32;
    let before_bare = rss_kib(me);
    let mut actors = Vec::with_capacity(n);
    for _ in 0..n {
        actors.push(Actor::spawn(None, Bare, ()).await.unwrap().0);
    }
    let per_bare = (rss_kib(me) - before_bare) as f64 * 1024.0 / n as f64;
    for a in actors {
        a.stop(None);
    }
    println!("{n} customers created through the gateway in {created_in:.1?} ({:.0}/s, 64 concurrent, fsync per write batch)", n as f64 / created_in.as_secs_f64());
    println!(
        "  node RSS {} MiB -> {} MiB with {n} active customer actors",
        base / 1024,
        after / 1024
    );
    println!(
        "  {:.1} KiB per active customer (actor + state + sled cache growth)",
        per_customer / 1024.0
    );
    println!(
        "  {:.1} KiB per bare ractor actor in this process (ceiling)",
        per_bare / 1024.0
    );
    println!(
        "  ratio {:.2}x; {:.0} MiB per 100k active customers",
        per_customer / per_bare,
        per_customer * 100_000.0 / 1024.0 / 1024.0
    );
}

async fn write_throughput(settings: Settings, label: &str, n: usize) -> f64 {
    let c = Cluster::start(label, settings).await;
    let t = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let c = &c;
            async move {
                let body = json!({"id": format!("w{i}"), "name": "W"}).to_string();
                let (s, _, v) = c.req("POST", "/v1/customers", Some(&body)).await;
                assert_eq!(s, 201, "{v}");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

async fn replication_cost() {
    let n = 20_000;
    let one = write_throughput(Settings::single_copy(), "bench-rf1", n).await;
    let two = write_throughput(Settings::default(), "bench-rf2", n).await;
    println!("writes through the gateway, 4 nodes, 32 concurrent, {n} creates each:");
    println!("  replication_factor 1: {one:.0}/s");
    println!(
        "  replication_factor 2: {two:.0}/s  ({:.2}x of rf 1)",
        two / one
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        latency().await;
        kill_to_down().await;
        replication_cost().await;
        memory().await;
    });
}
