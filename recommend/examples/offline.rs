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
    for protocol in [
        Protocol::RandomPerUser {
            test_share: 0.2,
            seed,
        },
        Protocol::LeaveLastOut,
    ] {
        let s = split(&rows, protocol);
        let model = Model::train(&s.train, 1);
        let entries: usize = model.counts.rows.values().map(|r| r.len()).sum();
        println!(
            "{protocol}: {} train rows, {} test users; {} rows, {entries} co-occurrence entries",
            s.train.len(),
            s.test.len(),
            model.counts.rows.len()
        );
        let popular: Vec<String> = model
            .counts
            .popular(usize::MAX)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
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
        for p in grid {
            let r = model.evaluate(&s.test, 10, &p, catalogue.len());
            println!(
                "  {p:?} -> P {:.3} R {:.3} NDCG {:.3} HR {:.3} cov {:.3}",
                r.precision, r.recall, r.ndcg, r.hit_rate, r.coverage
            );
        }
    }
}
