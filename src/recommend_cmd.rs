//! `keelson recommend evaluate`: measures the cluster's recommendations the way the field does.
//! It loads a user-item-rating-timestamp file, splits it per user, sends the training part
//! through the public API (`POST /v1/interactions:batch`), and asks the cluster for every test
//! user's top k (`GET /v1/customers/{id}/recommendations`). It then reports precision, recall,
//! NDCG and hit rate at k and catalogue coverage for Keelson, for popularity and for random, in
//! the same run.
//!
//! ```text
//! FILE ─parse─▶ rows ─split─▶ train ─batches of 1,000─▶ gateway ─▶ taste + item-model
//!                           └▶ test users ─GET recommendations─▶ metrics ◀─ popularity, random
//! ```
//!
//! Customers and items are named `{prefix}u{user}` and `{prefix}i{item}`, so runs with other
//! prefixes do not mix. Sending the same run again counts nothing twice: interaction ids are
//! `{prefix}{line}`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Subcommand, ValueEnum};
use futures_util::{stream, StreamExt};
use keelson_recommend::baseline::{self, RandomPicks};
use keelson_recommend::data::{parse, Row};
use keelson_recommend::metrics::{Accumulator, Report};
use keelson_recommend::split::{split, Protocol};
use keelson_runtime::ClusterConfig;
use serde_json::{json, Value};

/// Interactions per ingestion request.
const BATCH: usize = 1_000;

/// One test user's answer: (user, items best first, how long it took).
type Answer = (String, Vec<String>, Duration);

/// A recommend command.
#[derive(Debug, Subcommand)]
pub enum RecommendCommand {
    /// Load FILE into the running cluster, split it, and report ranking metrics at k for
    /// Keelson, popularity and random.
    Evaluate {
        /// Ratings: `user item rating timestamp` per line (MovieLens `u.data`, RecBole `.inter`).
        #[arg(long)]
        data: PathBuf,
        /// How to split each user's ratings.
        #[arg(long, value_enum, default_value_t = SplitArg::Random)]
        split: SplitArg,
        /// Seed of the random split and of the random baseline.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of each user's ratings held out by the random split.
        #[arg(long, default_value_t = 0.2)]
        test_share: f64,
        /// Cut-off of the metrics.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Prefix of the customer and item ids this run creates (default: from the split).
        #[arg(long)]
        prefix: Option<String>,
        /// Requests in flight at once (ingestion batches, then recommendation requests).
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// The split protocols.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    /// Per-user random split (`--test-share`, `--seed`).
    Random,
    /// Each user's latest rating held out.
    Last,
}

/// Runs a recommend command: exit 1 on a refusal or failure, 2 when the gateway cannot be asked
/// or the data file cannot be read.
pub fn run(cfg: &ClusterConfig, cmd: RecommendCommand) -> ExitCode {
    let RecommendCommand::Evaluate {
        data,
        split: which,
        seed,
        test_share,
        k,
        prefix,
        concurrency,
        json: out,
    } = cmd;
    let text = match std::fs::read_to_string(&data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", data.display());
            return ExitCode::from(2);
        }
    };
    let rows = match parse(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", data.display());
            return ExitCode::from(2);
        }
    };
    if !(test_share > 0.0 && test_share < 1.0) || k == 0 || concurrency == 0 {
        eprintln!("error: --test-share must be in (0, 1), --k and --concurrency at least 1");
        return ExitCode::from(2);
    }
    let protocol = match which {
        SplitArg::Random => Protocol::RandomPerUser { test_share, seed },
        SplitArg::Last => Protocol::LeaveLastOut,
    };
    let prefix = prefix.unwrap_or_else(|| match which {
        SplitArg::Random => format!("ev-r{seed}-"),
        SplitArg::Last => "ev-l-".to_string(),
    });
    let run = Run {
        cfg,
        prefix,
        protocol,
        seed,
        k,
        concurrency,
    };
    crate::api_call::run(async move {
        let results = run.evaluate(&rows).await?;
        if let Some(path) = out {
            std::fs::write(&path, serde_json::to_string_pretty(&results).expect("json"))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    })
}

struct Run<'a> {
    cfg: &'a ClusterConfig,
    prefix: String,
    protocol: Protocol,
    seed: u64,
    k: usize,
    concurrency: usize,
}

impl Run<'_> {
    async fn evaluate(&self, rows: &[Row]) -> Result<Value, String> {
        let key = keelson_gateway::tool_key(self.cfg).ok_or_else(|| {
            format!(
                "no API key: set KEELSON_API_KEY, or run `keelson up` once to make {}",
                self.cfg.auth.admin_key_file.display()
            )
        })?;
        let api = keelson_gateway::api_client(self.cfg, Some(&key), Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        let s = split(rows, self.protocol);
        let catalogue: BTreeSet<&str> = rows.iter().map(|r| r.item.as_str()).collect();
        println!("protocol: {}", self.protocol);
        println!(
            "data: {} ratings, {} users, {} items; all ratings are `view` interactions (implicit feedback)",
            rows.len(),
            s.test.len().max(rows.iter().map(|r| &r.user).collect::<HashSet<_>>().len()),
            catalogue.len()
        );
        println!(
            "ranking: the full catalogue, each user's training items excluded; metrics at {}; NDCG's ideal DCG over min({}, held-out items)",
            self.k, self.k
        );

        // Ingestion: the training rows by user (each user's in file order), so a batch holds few
        // customers; `--concurrency` batches in flight, which the gateway writes to each
        // partition together.
        let started = Instant::now();
        let mut train: Vec<(usize, &Row)> = s.train.iter().enumerate().collect();
        train.sort_by(|a, b| a.1.user.cmp(&b.1.user).then(a.0.cmp(&b.0)));
        let batches: Vec<Value> = train
            .chunks(BATCH)
            .map(|chunk| {
                let list: Vec<Value> = chunk
                    .iter()
                    .map(|(line, r)| {
                        json!({"id": format!("{}{line}", self.prefix), "customer_id": self.customer(&r.user), "kind": "view", "item": self.item(&r.item)})
                    })
                    .collect();
                json!({ "interactions": list })
            })
            .collect();
        let sent: Vec<Result<(u64, u64), String>> = stream::iter(batches.iter().map(|body| {
            let api = &api;
            async move {
                let v = post_until_accepted(api, body).await?;
                Ok((
                    v["applied"].as_u64().unwrap_or(0),
                    v["duplicates"].as_u64().unwrap_or(0),
                ))
            }
        }))
        .buffered(self.concurrency)
        .collect()
        .await;
        let (mut applied, mut duplicates) = (0, 0);
        for r in sent {
            let (a, d) = r?;
            applied += a;
            duplicates += d;
        }
        let took = started.elapsed();
        println!(
            "ingested {} training interactions in {:.1} s ({:.0}/s): {applied} counted now, {duplicates} already counted",
            s.train.len(),
            took.as_secs_f64(),
            s.train.len() as f64 / took.as_secs_f64().max(1e-9)
        );

        // Recommendations for every test user.
        let users: Vec<(&String, &BTreeSet<String>)> = s.test.iter().collect();
        let asked: Vec<Result<Answer, String>> = stream::iter(users.iter().map(|(user, _)| {
            let api = &api;
            async move {
                let t = Instant::now();
                let path = format!(
                    "/v1/customers/{}/recommendations?limit={}",
                    self.customer(user),
                    self.k
                );
                let v = get(api, &path).await?;
                let items = v["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["item"].as_str())
                    .map(|i| i.strip_prefix(&self.item("")).unwrap_or(i).to_string())
                    .collect();
                Ok(((*user).clone(), items, t.elapsed()))
            }
        }))
        .buffer_unordered(self.concurrency)
        .collect()
        .await;
        let mut ranked: HashMap<String, Vec<String>> = HashMap::new();
        let mut latencies = Vec::new();
        for a in asked {
            let (user, items, t) = a?;
            ranked.insert(user, items);
            latencies.push(t);
        }
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };

        // The same users for the baselines, from the training part only.
        let mut trained: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for r in &s.train {
            trained.entry(&r.user).or_default().insert(r.item.clone());
        }
        let by_popularity = baseline::by_popularity(&s.train);
        let all_items: Vec<String> = catalogue.iter().map(|i| i.to_string()).collect();
        let mut random = RandomPicks::new(self.seed);
        let (mut ours, mut pop, mut rnd) = (
            Accumulator::new(self.k),
            Accumulator::new(self.k),
            Accumulator::new(self.k),
        );
        let empty = BTreeSet::new();
        for (user, held) in &s.test {
            let relevant: HashSet<String> = held.iter().cloned().collect();
            let seen = trained.get(user.as_str()).unwrap_or(&empty);
            ours.add(
                ranked.get(user).map_or(&[][..], |v| v.as_slice()),
                &relevant,
            );
            pop.add(&baseline::popular(&by_popularity, seen, self.k), &relevant);
            rnd.add(&random.pick(&all_items, seen, self.k), &relevant);
        }
        let n = catalogue.len();
        let (ours, pop, rnd) = (ours.report(n), pop.report(n), rnd.report(n));
        println!();
        println!(
            "{:<12} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9}",
            "model",
            "users",
            format!("P@{}", self.k),
            format!("R@{}", self.k),
            format!("NDCG@{}", self.k),
            format!("HR@{}", self.k),
            "coverage"
        );
        for (name, r) in [("keelson", &ours), ("popularity", &pop), ("random", &rnd)] {
            println!(
                "{name:<12} {:>6} {:>9.3} {:>9.3} {:>8.3} {:>8.3} {:>9.3}",
                r.users, r.precision, r.recall, r.ndcg, r.hit_rate, r.coverage
            );
        }
        let ratio = if pop.ndcg > 0.0 {
            ours.ndcg / pop.ndcg
        } else {
            0.0
        };
        println!();
        println!(
            "keelson NDCG@{} is {ratio:.2}x popularity's; recommendation latency p50 {:.1} ms, p99 {:.1} ms ({} requests, {} in flight)",
            self.k,
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            latencies.len(),
            self.concurrency
        );
        Ok(json!({
            "protocol": self.protocol.to_string(),
            "k": self.k,
            "keelson": report(&ours),
            "popularity": report(&pop),
            "random": report(&rnd),
            "ndcg_vs_popularity": ratio,
            "ingested": s.train.len(),
            "ingest_seconds": took.as_secs_f64(),
            "latency_p50_ms": pct(0.5).as_secs_f64() * 1e3,
            "latency_p99_ms": pct(0.99).as_secs_f64() * 1e3,
        }))
    }

    fn customer(&self, user: &str) -> String {
        format!("{}u{user}", self.prefix)
    }

    fn item(&self, item: &str) -> String {
        format!("{}i{item}", self.prefix)
    }
}

fn report(r: &Report) -> Value {
    serde_json::to_value(r).expect("report serialises")
}

/// Posts a batch until it is accepted (a 503 during a failover is retried: ids count once).
async fn post_until_accepted(
    api: &keelson_gateway::ApiClient,
    body: &Value,
) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pause = Duration::from_millis(100);
    loop {
        let r = api
            .http
            .post(format!("{}/v1/interactions:batch", api.base))
            .json(body)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                return r.json().await.map_err(|e| format!("batch answer: {e}"))
            }
            Ok(r) if r.status().as_u16() == 503 && Instant::now() < deadline => {}
            Ok(r) => return crate::api_call::answer(r).await,
            Err(e) if Instant::now() < deadline && e.is_timeout() => {}
            Err(e) => return Err(format!("the gateway at {} does not answer: {e}", api.base)),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn get(api: &keelson_gateway::ApiClient, path: &str) -> Result<Value, String> {
    let r = api
        .http
        .get(format!("{}{path}", api.base))
        .send()
        .await
        .map_err(|e| format!("the gateway at {} does not answer: {e}", api.base))?;
    crate::api_call::answer(r).await
}
