use super::*;
use crate::shard_map::ShardId;

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

fn all_up(_: &str) -> Health {
    Health::Up
}

fn down(who: &'static [&'static str]) -> impl Fn(&str) -> Health {
    move |n| {
        if who.contains(&n) {
            Health::Down
        } else {
            Health::Up
        }
    }
}

/// Applies a planning round, with every copy it starts finishing at once.
fn apply_round(map: &mut ShardMap, round: Vec<MapCommand>) {
    for c in round {
        map.apply(&c).unwrap();
        if let MapCommand::AddLearner { shard, node, .. } = &c {
            let epoch = map.epoch(ShardId(*shard));
            map.apply(&MapCommand::Join {
                shard: *shard,
                epoch,
                node: node.clone(),
            })
            .unwrap();
        }
    }
}

#[test]
fn a_healthy_map_needs_nothing() {
    let map = ShardMap::initial(&names(4), 64, 2);
    assert!(plan(&map, &all_up, PlanLimits::default()).is_empty());
}

#[test]
fn a_down_node_loses_its_primaries_to_followers_and_its_follower_roles() {
    let map = ShardMap::initial(&names(4), 64, 2);
    let cmds = plan(&map, &down(&["n2"]), PlanLimits::default());
    for (shard, p) in map.iter() {
        let for_shard: Vec<&MapCommand> =
            cmds.iter().filter(|c| c.shard() == Some(shard.0)).collect();
        if p.primary == "n2" {
            assert_eq!(
                for_shard,
                vec![&MapCommand::Promote {
                    shard: shard.0,
                    epoch: 1,
                    to: p.in_sync[0].clone()
                }]
            );
        } else if p.in_sync.contains(&"n2".to_string()) {
            assert_eq!(
                for_shard,
                vec![&MapCommand::Shrink {
                    shard: shard.0,
                    epoch: 1,
                    node: "n2".into()
                }]
            );
        } else {
            assert!(for_shard.is_empty(), "shard {shard}: {for_shard:?}");
        }
    }
}

#[test]
fn with_no_up_follower_the_shard_stays_unavailable() {
    let map = ShardMap::initial(&names(4), 64, 2);
    let (shard, p) = map.iter().next().unwrap();
    let (a, b) = (p.primary.clone(), p.in_sync[0].clone());
    let health = move |n: &str| {
        if n == a || n == b {
            Health::Down
        } else {
            Health::Up
        }
    };
    let cmds = plan(&map, &health, PlanLimits::default());
    assert!(
        cmds.iter()
            .all(|c| c.shard() != Some(shard.0) || matches!(c, MapCommand::Shrink { .. })),
        "{cmds:?}"
    );
    assert!(!cmds
        .iter()
        .any(|c| matches!(c, MapCommand::Promote { shard: s, .. } if *s == shard.0)));
}

/// Rounds of planning until it has nothing left to do (at most `rounds`); returns how many
/// copies it started.
fn settle(map: &mut ShardMap, health: &dyn Fn(&str) -> Health, limits: PlanLimits) -> usize {
    let mut copies = 0;
    for _ in 0..1000 {
        let round = plan(map, health, limits);
        if round.is_empty() {
            return copies;
        }
        copies += round
            .iter()
            .filter(|c| matches!(c, MapCommand::AddLearner { .. }))
            .count();
        apply_round(map, round);
    }
    panic!("the planner did not settle in 1000 rounds");
}

/// Asserts every shard has `rf` copies, all in sync, and every node is within one of its
/// fair share of copies and of primaries.
fn assert_balanced(map: &ShardMap, rf: usize) {
    let mut copies = std::collections::HashMap::new();
    let mut primaries = std::collections::HashMap::new();
    for (shard, p) in map.iter() {
        assert_eq!(p.in_sync.len() + 1, rf, "shard {shard}: {p:?}");
        assert!(p.learners.is_empty(), "shard {shard}: {p:?}");
        *primaries.entry(p.primary.clone()).or_insert(0usize) += 1;
        for n in p.replicas() {
            *copies.entry(n.clone()).or_insert(0usize) += 1;
        }
    }
    for counts in [&copies, &primaries] {
        assert_eq!(counts.len(), map.nodes().len(), "{counts:?}");
        let (lo, hi) = (counts.values().min(), counts.values().max());
        assert!(hi.unwrap() - lo.unwrap() <= 1, "{counts:?}");
    }
}

#[test]
fn a_returning_node_is_copied_to_within_the_limit_then_gets_its_share_back() {
    let mut map = ShardMap::initial(&names(4), 64, 2);
    for c in plan(&map, &down(&["n2"]), PlanLimits::default()) {
        map.apply(&c).unwrap();
    }
    assert_eq!(map.shards_of("n2").count(), 0);
    let limits = PlanLimits {
        max_copies: 3,
        max_handoffs: 2,
    };
    let cmds = plan(&map, &all_up, limits);
    let copies: Vec<&MapCommand> = cmds
        .iter()
        .filter(|c| matches!(c, MapCommand::AddLearner { .. }))
        .collect();
    assert_eq!(copies.len(), 3, "{cmds:?}");
    assert!(copies
        .iter()
        .all(|c| matches!(c, MapCommand::AddLearner { node, .. } if node == "n2")));
    settle(&mut map, &all_up, limits);
    assert_balanced(&map, 2);
    assert_eq!(map.shards_of("n2").count(), 16);
}

#[test]
fn a_fifth_node_gets_a_fifth_of_the_copies_and_nothing_else_moves() {
    let mut map = ShardMap::initial(&names(4), 256, 2);
    map.add_node_for_test("n5");
    let before = map.clone();
    let limits = PlanLimits::default();
    // n5 is starting: nothing is given to it yet, nothing taken from anyone.
    let starting = |n: &str| {
        if n == "n5" {
            Health::Unknown
        } else {
            Health::Up
        }
    };
    assert!(plan(&map, &starting, limits).is_empty());
    let copies = settle(&mut map, &all_up, limits);
    assert_balanced(&map, 2);
    // 512 copies over five nodes: n5 needs 102 or 103, and that is all that was copied.
    assert!((102..=103).contains(&copies), "{copies} copies");
    for (shard, p) in map.iter() {
        for n in p.replicas().filter(|n| *n != "n5") {
            assert!(
                before.placement(shard).replicas().any(|b| b == n),
                "shard {shard}: {n} was given a copy it did not have"
            );
        }
    }
}

#[test]
fn starting_nodes_are_neither_used_nor_given_up_on() {
    let map = ShardMap::initial(&names(4), 64, 2);
    let starting = |n: &str| {
        if n == "n1" {
            Health::Up
        } else {
            Health::Unknown
        }
    };
    assert!(plan(&map, &starting, PlanLimits::default()).is_empty());
}

#[test]
fn a_node_that_missed_its_shards_gets_its_share_back_and_spare_copies_are_dropped() {
    let mut map = ShardMap::initial(&names(4), 64, 2);
    let limits = PlanLimits {
        max_copies: 64,
        max_handoffs: 64,
    };
    // n2 dies; its shards are promoted and re-replicated on other nodes while it is away, and
    // nothing else moves.
    let before = map.clone();
    let copies = settle(&mut map, &down(&["n2"]), limits);
    assert!(map
        .iter()
        .all(|(_, p)| p.replicas().all(|n| n != "n2") && p.in_sync.len() == 1));
    assert_eq!(copies, 32, "only n2's 32 copies are made again");
    for (shard, p) in map.iter() {
        let was = before.placement(shard);
        if !was.replicas().any(|n| n == "n2") {
            assert_eq!(
                p.primary, was.primary,
                "shard {shard} moved while n2 was down"
            );
        }
    }
    // n2 returns: it is copied to, takes its share of primaries, and the spares go.
    settle(&mut map, &all_up, limits);
    assert_balanced(&map, 2);
    assert!(plan(&map, &all_up, limits).is_empty());
}
