//! The recommender measured on MovieLens-100k through a real cluster and `keelson recommend
//! evaluate`, against the figures the issue sets: at least tuned ItemKNN's (Dacrema et al. 2019:
//! P@10 0.333, R@10 0.220, NDCG@10 0.260 on a per-user random 80/20 split) and at least 1.7x the
//! popularity baseline's NDCG@10 in the same run. `.ci/run` fetches the data and runs it against
//! a release build: a debug-build cluster on two cores is too slow to take 80,000 interactions
//! (every partition rewrites its whole state per Apply; README, Not yet). By hand:
//! `KEELSON_ML100K=path/to/ml-100k.inter cargo test --release --test movielens -- --ignored
//! --nocapture` (`KEELSON_ML100K_SEED=n` for another random split).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{serial, Cluster, Settings};

/// The random split's seed: 1, or `KEELSON_ML100K_SEED` (to measure others by hand).
fn seed() -> String {
    std::env::var("KEELSON_ML100K_SEED").unwrap_or_else(|_| "1".into())
}

fn evaluate(c: &Cluster, data: &str, split: &str, out: &std::path::Path) -> Value {
    let seed = seed();
    // Batches in flight: the evaluator's default, or `KEELSON_ML100K_CONCURRENCY`.
    let concurrency = std::env::var("KEELSON_ML100K_CONCURRENCY").ok();
    let mut extra: Vec<&str> = Vec::new();
    if let Some(n) = &concurrency {
        extra.extend(["--concurrency", n]);
    }
    let (code, stdout, stderr) = c.keelson(
        &[
            "recommend",
            "evaluate",
            "--data",
            data,
            "--split",
            split,
            "--seed",
            &seed,
            "--json",
            out.to_str().unwrap(),
        ]
        .into_iter()
        .chain(extra)
        .collect::<Vec<_>>(),
    );
    eprintln!("{stdout}");
    assert_eq!(code, 0, "evaluate --split {split}: {stderr}");
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MovieLens-100k (KEELSON_ML100K); run by .ci/run"]
async fn random_split_through_the_api_reaches_item_knn_and_beats_popularity() {
    let _guard = serial().await;
    let data = std::env::var("KEELSON_ML100K").expect("KEELSON_ML100K names ml-100k.inter");
    let c = Cluster::start("movielens-random", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let dir = tempdir("random");
    let random = {
        let (c, out) = (&c, dir.join("random.json"));
        tokio::task::block_in_place(|| evaluate(c, &data, "random", &out))
    };
    let k = &random["keelson"];
    let p = &random["popularity"];
    let ratio = random["ndcg_vs_popularity"].as_f64().unwrap();
    assert!(k["precision"].as_f64().unwrap() >= 0.333, "{random}");
    assert!(k["recall"].as_f64().unwrap() >= 0.220, "{random}");
    assert!(k["ndcg"].as_f64().unwrap() >= 0.260, "{random}");
    assert!(
        ratio >= 1.7,
        "NDCG@10 only {ratio:.2}x popularity's: {random}"
    );
    assert!(k["precision"].as_f64().unwrap() > p["precision"].as_f64().unwrap());
    assert!(
        random["random"]["ndcg"].as_f64().unwrap() < p["ndcg"].as_f64().unwrap(),
        "{random}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The other protocol (no goal figures of its own): Keelson ranks above popularity, and
/// popularity above random. `.ci/run` runs only the random split (the goal figures are for it);
/// this one is run by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MovieLens-100k (KEELSON_ML100K); run by hand"]
async fn leave_last_out_through_the_api_beats_popularity() {
    let _guard = serial().await;
    let data = std::env::var("KEELSON_ML100K").expect("KEELSON_ML100K names ml-100k.inter");
    let c = Cluster::start("movielens-last", Settings::default()).await;
    c.wait_replicated(Duration::from_secs(30)).await;
    let dir = tempdir("last");
    let last = {
        let (c, out) = (&c, dir.join("last.json"));
        tokio::task::block_in_place(|| evaluate(c, &data, "last", &out))
    };
    assert!(
        last["keelson"]["ndcg"].as_f64().unwrap() > last["popularity"]["ndcg"].as_f64().unwrap(),
        "{last}"
    );
    assert!(
        last["popularity"]["ndcg"].as_f64().unwrap() > last["random"]["ndcg"].as_f64().unwrap(),
        "{last}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(split: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keelson-movielens-{split}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
