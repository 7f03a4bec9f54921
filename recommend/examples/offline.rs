//! Compares tunings of the item model on a ratings file, in memory:
//! `SEED=1 cargo run --release -p keelson-recommend --example offline -- FILE [neighbours shrink alpha beta]...`

use std::collections::{BTreeSet, HashSet};

use keelson_recommend::baseline;
use keelson_recommend::data::parse;
use keelson_recommend::metrics::Accumulator;
use keelson_recommend::offline::Model;
use keelson_recommend::split::{split, Protocol};
use keelson_recommend::SimParams;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let text = std::fs::read_to_string(&args[0]).expect("read the data file");
    let rows = parse(&text).expect("parse");
    let catalogue: BTreeSet<String> = rows.iter().map(|r| r.item.clone()).collect();
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // RANDOM_ONLY=1: the random split alone (tuning runs).
    let random_only = std::env::var("RANDOM_ONLY").is_ok_and(|v| v == "1");
    let random = Protocol::RandomPerUser {
        test_share: 0.2,
        seed,
    };
    let protocols = if random_only {
        vec![random]
    } else {
        vec![random, Protocol::LeaveLastOut]
    };
    for protocol in protocols {
        let s = split(&rows, protocol);
        // RATED=1: a rating of 4 or 5 weighs 2 (a `like`), others 1 (a `view`).
        let model = if std::env::var("RATED").is_ok_and(|v| v == "1") {
            let mut m = Model::default();
            for r in &s.train {
                let p = m.profiles.entry(r.user.clone()).or_default();
                let w = if r.rating >= 4.0 { 2 } else { 1 };
                if let Some(d) = keelson_recommend::Delta::record(p, &r.item, w) {
                    m.counts.apply(&d, |_| true);
                }
            }
            m
        } else {
            Model::train(&s.train, 1)
        };
        let entries: usize = model.counts.rows.values().map(|r| r.len()).sum();
        println!(
            "{protocol}: {} train rows, {} test users; {} rows, {entries} co-occurrence entries",
            s.train.len(),
            s.test.len(),
            model.counts.rows.len()
        );
        let popular = baseline::by_popularity(&s.train);
        let mut acc = Accumulator::new(10);
        for (u, held) in &s.test {
            let seen: BTreeSet<String> = model.profiles[u].weights.keys().cloned().collect();
            let rel: HashSet<String> = held.iter().cloned().collect();
            acc.add(&baseline::popular(&popular, &seen, 10), &rel);
        }
        println!("  popularity {:?}", acc.report(catalogue.len()));
        let grid: Vec<SimParams> = args[1..]
            .chunks(4)
            .map(|c| SimParams {
                neighbours: c[0].parse().unwrap(),
                shrink: c[1].parse().unwrap(),
                alpha: c[2].parse().unwrap(),
                beta: c[3].parse().unwrap(),
            })
            .collect();
        // Tuning experiments on the served lists: LOCALITY=q raises every similarity to q,
        // ROWNORM=1 divides each list by its largest similarity.
        let q: f64 = std::env::var("LOCALITY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let rownorm = std::env::var("ROWNORM").is_ok_and(|v| v == "1");
        if let Some(lambda) = std::env::var("EASE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
        {
            let t = std::time::Instant::now();
            let k = std::env::var("EASE_K")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(200);
            let lists =
                keelson_recommend::ease::solve_counts(&model.counts, lambda, k).expect("solve");
            eprintln!("ease solved in {:?}", t.elapsed());
            let r = evaluate(&model, &s.test, lists, catalogue.len());
            println!(
                "  EASE lambda {lambda} -> P {:.3} R {:.3} NDCG {:.3} HR {:.3} cov {:.3}",
                r.precision, r.recall, r.ndcg, r.hit_rate, r.coverage
            );
        }
        for p in grid {
            let lists = model.neighbour_table(&p).into_iter().map(|(j, l)| {
                let top = l.first().map_or(1.0, |x| x.1);
                let l = l
                    .into_iter()
                    .map(|(i, s)| (i, if rownorm { s / top } else { s }.powf(q)))
                    .collect();
                (j, l)
            });
            let r = evaluate(&model, &s.test, lists, catalogue.len());
            println!(
                "  {p:?} -> P {:.3} R {:.3} NDCG {:.3} HR {:.3} cov {:.3}",
                r.precision, r.recall, r.ndcg, r.hit_rate, r.coverage
            );
        }
    }
}

/// The metrics at 10 of the index of `lists` over `test`.
fn evaluate(
    model: &Model,
    test: &std::collections::BTreeMap<String, BTreeSet<String>>,
    lists: impl IntoIterator<Item = (String, Vec<(String, f64)>)>,
    catalogue: usize,
) -> keelson_recommend::metrics::Report {
    let index = keelson_recommend::Index::build(
        lists,
        model.counts.customers.iter().map(|(i, c)| (i.clone(), *c)),
    );
    model.evaluate_index(test, 10, &index, catalogue)
}
