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
        let for_shard: Vec<&MapCommand> = cmds.iter().filter(|c| c.shard() == shard.0).collect();
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
            .all(|c| c.shard() != shard.0 || matches!(c, MapCommand::Shrink { .. })),
        "{cmds:?}"
    );
    assert!(!cmds
        .iter()
        .any(|c| matches!(c, MapCommand::Promote { shard: s, .. } if *s == shard.0)));
}

#[test]
fn a_returning_node_is_copied_to_within_the_limit_then_gets_its_primaries_back() {
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
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert!(cmds
        .iter()
        .all(|c| matches!(c, MapCommand::AddLearner { node, .. } if node == "n2")));
    // Let every shard's copy finish, round by round.
    for _ in 0..64 {
        let round = plan(&map, &all_up, limits);
        if round.is_empty() {
            break;
        }
        apply_round(&mut map, round);
    }
    let fresh = ShardMap::initial(&names(4), 64, 2);
    for (shard, p) in map.iter() {
        assert_eq!(
            p.primary,
            fresh.owner(shard),
            "shard {shard} primary is back"
        );
        assert_eq!(p.in_sync.len(), 1);
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
fn a_node_that_missed_its_shards_gets_them_back_and_spare_copies_are_dropped() {
    let mut map = ShardMap::initial(&names(4), 64, 2);
    let limits = PlanLimits {
        max_copies: 64,
        max_handoffs: 64,
    };
    // n2 dies; its shards are promoted and re-replicated on other nodes while it is away.
    for _ in 0..3 {
        let round = plan(&map, &down(&["n2"]), limits);
        apply_round(&mut map, round);
    }
    assert!(map
        .iter()
        .all(|(_, p)| p.replicas().all(|n| n != "n2") && p.in_sync.len() == 1));
    // n2 returns: it is copied to, takes its primaries back, and the spares go.
    for _ in 0..6 {
        let round = plan(&map, &all_up, limits);
        apply_round(&mut map, round);
    }
    let fresh = ShardMap::initial(&names(4), 64, 2);
    for (shard, p) in map.iter() {
        assert_eq!(
            p,
            &crate::shard_map::Placement {
                epoch: p.epoch,
                ..fresh.placement(shard).clone()
            },
            "shard {shard}"
        );
    }
    assert!(plan(&map, &all_up, limits).is_empty());
}
