use crate::planner::{plan, Health, PlanLimits};
use crate::shard_map::{MapCommand, MapError, NodeAddr, ShardId, ShardMap};

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

fn addr(port: u16) -> NodeAddr {
    NodeAddr {
        host: "127.0.0.1".into(),
        cluster_port: port,
        ops_port: port + 1000,
    }
}

/// Plans and applies rounds, every copy finishing at once, until nothing is left to do.
fn settle(map: &mut ShardMap, health: &dyn Fn(&str) -> Health) {
    for _ in 0..1000 {
        let round = plan(map, health, PlanLimits::default());
        if round.is_empty() {
            return;
        }
        for c in round {
            map.apply(&c).unwrap();
            if let MapCommand::AddLearner { shard, node, .. } = &c {
                let epoch = map.epoch(ShardId(*shard));
                let join = MapCommand::Join {
                    shard: *shard,
                    epoch,
                    node: node.clone(),
                };
                map.apply(&join).unwrap();
            }
        }
    }
    panic!("the planner did not settle");
}

#[test]
fn a_node_joins_with_its_address_and_joining_again_updates_it() {
    let mut map = ShardMap::initial(&names(4), 64, 2);
    assert_eq!(map.addr("n1"), None, "seeds' addresses are in nodes.toml");
    let add = |port| MapCommand::AddNode {
        node: "n5".into(),
        addr: addr(port),
    };
    map.apply(&add(4705)).unwrap();
    assert_eq!(map.nodes().len(), 5);
    assert_eq!(map.addr("n5"), Some(&addr(4705)));
    map.apply(&add(4805)).unwrap();
    assert_eq!(map.nodes().len(), 5, "no second entry");
    assert_eq!(map.addr("n5"), Some(&addr(4805)));
    assert!(map.holds_nothing("n5"));
}

#[test]
fn a_drain_that_leaves_too_few_nodes_is_refused_and_changes_nothing() {
    let map = ShardMap::initial(&names(2), 16, 2);
    let err = map.drain("n1").unwrap_err();
    assert!(
        matches!(&err, MapError::Members(m) if m.contains("would leave 1 node(s) for a replication factor of 2")),
        "{err}"
    );
    assert!(matches!(map.drain("n9"), Err(MapError::Members(m)) if m.contains("not a member")));
    let mut three = ShardMap::initial(&names(3), 16, 2);
    let first = three.drain("n1").unwrap();
    // Proposed together, the second drain saw three members: once the first is in, it is stale.
    let second = three.drain("n2").unwrap();
    three.apply(&first).unwrap();
    let before = three.clone();
    assert!(matches!(three.apply(&second), Err(MapError::Members(m)) if m.contains("changed")));
    assert_eq!(three, before);
    assert!(
        three.drain("n2").is_err(),
        "2 left for rf 2: n2 may not go too"
    );
}

#[test]
fn a_draining_node_is_emptied_then_removed_and_nothing_else_moves_needlessly() {
    let mut map = ShardMap::initial(&names(5), 256, 2);
    let before = map.clone();
    map.apply(&map.drain("n3").unwrap()).unwrap();
    let refused = MapCommand::AddLearner {
        shard: 0,
        epoch: map.epoch(ShardId(0)),
        node: "n3".into(),
    };
    assert!(
        map.apply(&refused).is_err(),
        "a draining node gets nothing new"
    );
    settle(&mut map, &|_| Health::Up);
    assert!(!map.nodes().contains(&"n3".to_string()), "n3 was removed");
    for (shard, p) in map.iter() {
        assert_eq!(p.in_sync.len(), 1, "shard {shard} keeps rf copies");
        for n in before.placement(shard).replicas().filter(|n| *n != "n3") {
            assert!(p.replicas().any(|r| r == n), "shard {shard} lost {n}");
        }
    }
}

#[test]
fn a_dead_node_can_be_drained_its_shards_made_again_from_the_survivors() {
    let mut map = ShardMap::initial(&names(4), 64, 2);
    map.apply(&map.drain("n2").unwrap()).unwrap();
    let dead = |n: &str| if n == "n2" { Health::Down } else { Health::Up };
    settle(&mut map, &dead);
    assert_eq!(
        map.nodes(),
        &names(4)
            .into_iter()
            .filter(|n| n != "n2")
            .collect::<Vec<_>>()[..]
    );
    assert!(map
        .iter()
        .all(|(_, p)| p.in_sync.len() == 1 && p.primary != "n2"));
}

#[test]
fn removing_is_refused_until_drained_and_empty() {
    let mut map = ShardMap::initial(&names(3), 8, 2);
    let remove = MapCommand::RemoveNode { node: "n1".into() };
    assert!(matches!(map.apply(&remove), Err(MapError::Members(m)) if m.contains("drained")));
    map.apply(&map.drain("n1").unwrap()).unwrap();
    assert!(matches!(map.apply(&remove), Err(MapError::Members(m)) if m.contains("still holds")));
    let rejoin = MapCommand::AddNode {
        node: "n1".into(),
        addr: addr(1),
    };
    assert!(
        map.apply(&rejoin).is_err(),
        "a draining node cannot join again"
    );
}

#[test]
fn a_map_stored_before_nodes_could_join_still_loads() {
    let map = ShardMap::initial(&names(2), 2, 2);
    let mut json: serde_json::Value = serde_json::to_value(&map).unwrap();
    json.as_object_mut().unwrap().remove("addrs");
    json.as_object_mut().unwrap().remove("draining");
    let old: ShardMap = serde_json::from_value(json).unwrap();
    assert_eq!(old, map);
}

#[test]
fn removing_a_voter_is_refused_when_the_rest_up_would_be_no_majority() {
    let map = ShardMap::initial(&names(5), 16, 2);
    let voters = names(4);
    let all_up = |_: &str| true;
    assert!(
        map.removal("n2", &voters, &all_up).is_ok(),
        "3 of 4 voters stay up"
    );
    assert!(
        map.removal("n5", &voters, &|n: &str| n == "n1").is_ok(),
        "n5 does not vote"
    );
    let n3_down = |n: &str| n != "n3";
    let err = map.removal("n2", &voters, &n3_down).unwrap_err();
    assert!(
        matches!(&err, MapError::Members(m) if m.contains("2 of the 4 voting nodes up")),
        "{err}"
    );
}
