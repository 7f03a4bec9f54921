use super::*;

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

#[test]
fn fnv1a_matches_published_vectors() {
    // Test vectors from the FNV reference (draft-eastlake-fnv).
    assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn entity_hash_golden_values() {
    // These values decide where persisted data lives: they must never change.
    assert_eq!(entity_hash("customer", "c-1"), GOLDEN_HASH_C1);
}

#[test]
fn shard_golden_values() {
    let cases = [
        ("customer", "c-1", 256),
        ("customer", "c-2", 256),
        ("device", "d-1", 256),
        ("customer", "", 256),
        ("customer", "alice", 1024),
    ];
    let got: Vec<u32> = cases
        .iter()
        .map(|(k, i, n)| shard_for(k, i, *n).0)
        .collect();
    assert_eq!(got, GOLDEN_SHARDS);
}

const GOLDEN_SHARDS: [u32; 5] = [140, 92, 223, 117, 782];

#[test]
fn separator_keeps_kind_and_id_apart() {
    assert_ne!(entity_hash("ab", "c"), entity_hash("a", "bc"));
}

/// The rendezvous owner alone (before balancing), by name.
fn hrw(nodes: &[String], s: u32) -> &str {
    &nodes[rendezvous_owner(ShardId(s), nodes).unwrap()]
}

#[test]
fn rendezvous_alone_is_only_roughly_balanced_which_is_why_the_map_balances() {
    let nodes = names(4);
    let mut counts = std::collections::HashMap::new();
    for s in 0..256 {
        *counts.entry(hrw(&nodes, s)).or_insert(0) += 1;
    }
    assert!(counts.values().all(|c| (44..=84).contains(c)), "{counts:?}");
    let map = ShardMap::initial(&nodes, 256, 1);
    assert!(
        map.counts().iter().all(|(_, c)| *c == 64),
        "{:?}",
        map.counts()
    );
}

#[test]
fn adding_a_node_moves_about_one_nth_and_only_to_it() {
    let (four, five) = (names(4), names(5));
    let mut moved = 0;
    for s in 0..4096 {
        let (b, a) = (hrw(&four, s), hrw(&five, s));
        if a != b {
            assert_eq!(
                a, "n5",
                "shard {s} moved from {b} to {a}, not to the new node"
            );
            moved += 1;
        }
    }
    // Ideal is 4096/5 = 819.
    assert!((700..=940).contains(&moved), "{moved} shards moved");
}

#[test]
fn removing_a_node_only_moves_its_shards() {
    let four = names(4);
    let three: Vec<String> = names(4).into_iter().filter(|n| n != "n2").collect();
    for s in 0..1024 {
        let b = hrw(&four, s);
        if b != "n2" {
            assert_eq!(hrw(&three, s), b);
        }
    }
}

#[test]
fn owner_does_not_depend_on_config_order() {
    let mut reversed = names(4);
    reversed.reverse();
    let a = ShardMap::initial(&names(4), 256, 1);
    let b = ShardMap::initial(&reversed, 256, 1);
    for s in 0..256 {
        assert_eq!(a.owner(ShardId(s)), b.owner(ShardId(s)));
    }
}

#[test]
fn shards_of_lists_exactly_the_owned_shards() {
    let map = ShardMap::initial(&names(4), 64, 1);
    let total: usize = names(4).iter().map(|n| map.shards_of(n).count()).sum();
    assert_eq!(total, 64);
    for s in map.shards_of("n3") {
        assert_eq!(map.owner(s), "n3");
    }
}
const GOLDEN_HASH_C1: u64 = 1016614364409217164;

#[test]
fn preference_agrees_with_rendezvous_owner() {
    let nodes = names(4);
    for s in 0..256 {
        let owner = rendezvous_owner(ShardId(s), &nodes).unwrap();
        assert_eq!(preference(ShardId(s), &nodes)[0], nodes[owner]);
    }
}

#[test]
fn initial_placement_has_rf_distinct_replicas_all_in_sync() {
    let map = ShardMap::initial(&names(4), 64, 2);
    for (s, p) in map.iter() {
        assert_eq!(p.epoch, 1);
        assert_eq!(p.in_sync.len(), 1, "shard {s}");
        assert_ne!(p.primary, p.in_sync[0]);
    }
    // rf is capped by the node count.
    assert_eq!(ShardMap::initial(&names(2), 8, 5).replication_factor(), 2);
}

fn shard0(map: &ShardMap) -> (String, String) {
    let p = map.placement(ShardId(0));
    (p.primary.clone(), p.in_sync[0].clone())
}

#[test]
fn promote_moves_the_primary_to_an_in_sync_follower_and_bumps_the_epoch() {
    let mut map = ShardMap::initial(&names(4), 8, 2);
    let (primary, follower) = shard0(&map);
    map.apply(&MapCommand::Promote {
        shard: 0,
        epoch: 1,
        to: follower.clone(),
    })
    .unwrap();
    let p = map.placement(ShardId(0));
    assert_eq!(
        (p.primary.as_str(), p.in_sync.len(), p.epoch),
        (follower.as_str(), 0, 2)
    );
    assert!(
        p.replicas().all(|n| *n != primary),
        "the dead primary is out of the placement"
    );
}

#[test]
fn stale_or_impossible_commands_are_refused_and_change_nothing() {
    let mut map = ShardMap::initial(&names(4), 8, 2);
    let (primary, follower) = shard0(&map);
    let before = map.clone();
    let outsider = names(4)
        .into_iter()
        .find(|n| *n != primary && *n != follower)
        .unwrap();
    let refused = [
        MapCommand::Promote {
            shard: 0,
            epoch: 7,
            to: follower.clone(),
        },
        MapCommand::Promote {
            shard: 0,
            epoch: 1,
            to: outsider.clone(),
        },
        MapCommand::Shrink {
            shard: 0,
            epoch: 1,
            node: primary.clone(),
        },
        MapCommand::Join {
            shard: 0,
            epoch: 1,
            node: outsider.clone(),
        },
        MapCommand::AddLearner {
            shard: 0,
            epoch: 1,
            node: follower.clone(),
        },
        MapCommand::AddLearner {
            shard: 0,
            epoch: 1,
            node: "n9".into(),
        },
        MapCommand::Shrink {
            shard: 99,
            epoch: 1,
            node: follower.clone(),
        },
    ];
    for cmd in &refused {
        assert!(map.apply(cmd).is_err(), "{cmd:?} should be refused");
    }
    assert_eq!(map, before);
}

#[test]
fn a_returning_node_learns_then_joins_then_takes_its_primary_role_back() {
    let mut map = ShardMap::initial(&names(4), 8, 2);
    let (primary, follower) = shard0(&map);
    map.apply(&MapCommand::Promote {
        shard: 0,
        epoch: 1,
        to: follower.clone(),
    })
    .unwrap();
    map.apply(&MapCommand::AddLearner {
        shard: 0,
        epoch: 2,
        node: primary.clone(),
    })
    .unwrap();
    assert_eq!(map.placement(ShardId(0)).learners, vec![primary.clone()]);
    assert!(!map.placement(ShardId(0)).serves(&primary));
    map.apply(&MapCommand::Join {
        shard: 0,
        epoch: 3,
        node: primary.clone(),
    })
    .unwrap();
    map.apply(&MapCommand::Handoff {
        shard: 0,
        epoch: 4,
        to: primary.clone(),
    })
    .unwrap();
    let p = map.placement(ShardId(0));
    assert_eq!(
        (&p.primary, &p.in_sync, p.epoch),
        (&primary, &vec![follower], 5)
    );
}
