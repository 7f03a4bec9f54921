use std::collections::HashMap;

use super::Mode;
use crate::shard_map::{ShardId, ShardMap};

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

/// Copies and primaries per node.
fn loads(map: &ShardMap) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut copies: HashMap<String, usize> = map.nodes().iter().map(|n| (n.clone(), 0)).collect();
    let mut primaries = copies.clone();
    for (_, p) in map.iter() {
        *primaries.get_mut(&p.primary).unwrap() += 1;
        for n in p.replicas() {
            *copies.get_mut(n).unwrap() += 1;
        }
    }
    (copies, primaries)
}

fn spread(counts: &HashMap<String, usize>) -> (usize, usize) {
    let min = *counts.values().min().unwrap();
    let max = *counts.values().max().unwrap();
    (min, max)
}

/// Targets as a map whose placements are exactly those targets (every copy in sync).
fn applied(map: &ShardMap, targets: &[Vec<String>]) -> ShardMap {
    let mut next = map.clone();
    next.replace_placements(targets);
    next
}

#[test]
fn every_node_holds_its_fair_share_of_copies_and_primaries_at_rest() {
    for nodes in 1..=9 {
        for shards in [1u32, 7, 64, 256, 1024] {
            for rf in 1..=3 {
                let map = ShardMap::initial(&names(nodes), shards, rf);
                let rf = map.replication_factor();
                let (copies, primaries) = loads(&map);
                let total = shards as usize * rf;
                let (lo, hi) = spread(&copies);
                assert!(
                    lo >= total / nodes && hi <= total.div_ceil(nodes),
                    "{nodes} nodes, {shards} shards, rf {rf}: copies {lo}..{hi}"
                );
                let (lo, hi) = spread(&primaries);
                assert!(
                    hi - lo <= 1,
                    "{nodes} nodes, {shards} shards, rf {rf}: primaries {lo}..{hi}"
                );
                for (_, p) in map.iter() {
                    let mut all: Vec<&String> = p.replicas().collect();
                    all.sort();
                    all.dedup();
                    assert_eq!(all.len(), rf, "distinct replicas");
                }
            }
        }
    }
}

#[test]
fn the_issue_figure_four_nodes_get_64_primaries_each_of_256() {
    let map = ShardMap::initial(&names(4), 256, 2);
    let (copies, primaries) = loads(&map);
    assert!(primaries.values().all(|&p| p == 64), "{primaries:?}");
    assert!(copies.values().all(|&c| c == 128), "{copies:?}");
}

#[test]
fn a_balanced_map_is_its_own_target() {
    for nodes in [1, 2, 3, 4, 5, 7] {
        let map = ShardMap::initial(&names(nodes), 256, 2);
        let targets = map.targets(map.nodes(), &|_| true, Mode::Balance);
        for (shard, p) in map.iter() {
            let mut want = vec![p.primary.clone()];
            want.extend(p.in_sync.iter().cloned());
            assert_eq!(targets[shard.0 as usize], want, "shard {shard}");
        }
    }
}

/// Copies in `to` that `from` does not have: what must be copied.
fn moved(from: &ShardMap, to: &[Vec<String>]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for (shard, p) in from.iter() {
        for n in &to[shard.0 as usize] {
            if !p.replicas().any(|r| r == n) {
                out.push((shard.0, n.clone()));
            }
        }
    }
    out
}

#[test]
fn adding_a_fifth_node_moves_a_fifth_of_the_copies_all_to_it() {
    let before = ShardMap::initial(&names(4), 256, 2);
    let mut grown = before.clone();
    grown.add_node_for_test("n5");
    let targets = grown.targets(grown.nodes(), &|_| true, Mode::Balance);
    let moves = moved(&before, &targets);
    assert!(moves.iter().all(|(_, n)| n == "n5"), "{moves:?}");
    // 512 copies over 5 nodes: 102 or 103 for n5, not one more.
    assert!((102..=103).contains(&moves.len()), "{} moves", moves.len());
    let after = applied(&grown, &targets);
    let (copies, primaries) = loads(&after);
    let (lo, hi) = spread(&copies);
    assert!(lo >= 102 && hi <= 103, "copies {copies:?}");
    let (lo, hi) = spread(&primaries);
    assert!(lo >= 51 && hi <= 52, "primaries {primaries:?}");
    // Primaries that moved: at most the new node's share plus what rebalancing needs.
    let handed: usize = before
        .iter()
        .filter(|(s, p)| targets[s.0 as usize][0] != p.primary)
        .count();
    assert!(handed <= 60, "{handed} primaries moved");
    // And it is a fixed point: planning again moves nothing.
    assert!(moved(
        &after,
        &after.targets(after.nodes(), &|_| true, Mode::Balance)
    )
    .is_empty());
}

#[test]
fn a_node_leaving_only_moves_its_own_copies() {
    let before = ShardMap::initial(&names(5), 256, 2);
    let rest: Vec<String> = names(5).into_iter().filter(|n| n != "n3").collect();
    let targets = before.targets(&rest, &|_| true, Mode::Balance);
    for (shard, p) in before.iter() {
        let kept: Vec<&String> = p.replicas().filter(|n| *n != "n3").collect();
        for n in kept {
            assert!(
                targets[shard.0 as usize].contains(n),
                "shard {shard} lost a copy on {n} that could stay"
            );
        }
        assert!(!targets[shard.0 as usize].contains(&"n3".to_string()));
    }
    let after = applied(&before, &targets);
    let (copies, primaries) = loads(&after);
    assert_eq!(copies["n3"], 0);
    let live: HashMap<String, usize> = copies.into_iter().filter(|(n, _)| n != "n3").collect();
    let (lo, hi) = spread(&live);
    assert!(lo >= 128 && hi <= 128, "{live:?}");
    assert_eq!(primaries["n3"], 0);
}

#[test]
fn placement_does_not_depend_on_config_order() {
    let mut reversed = names(5);
    reversed.reverse();
    let a = ShardMap::initial(&names(5), 256, 2);
    let b = ShardMap::initial(&reversed, 256, 2);
    for s in 0..256 {
        assert_eq!(
            a.placement(ShardId(s)),
            b.placement(ShardId(s)),
            "shard {s}"
        );
    }
}
