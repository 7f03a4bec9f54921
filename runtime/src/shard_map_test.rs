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

#[test]
fn rendezvous_is_balanced_over_four_nodes() {
    let map = ShardMap::rendezvous(1, &names(4), 256);
    for (node, count) in map.counts() {
        assert!(
            (44..=84).contains(&count),
            "{node} owns {count} of 256 shards"
        );
    }
}

#[test]
fn adding_a_node_moves_about_one_nth_and_only_to_it() {
    let before = ShardMap::rendezvous(1, &names(4), 4096);
    let after = ShardMap::rendezvous(2, &names(5), 4096);
    let mut moved = 0;
    for s in 0..4096 {
        let (b, a) = (before.owner(ShardId(s)), after.owner(ShardId(s)));
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
    let before = ShardMap::rendezvous(1, &names(4), 1024);
    let three: Vec<String> = names(4).into_iter().filter(|n| n != "n2").collect();
    let after = ShardMap::rendezvous(2, &three, 1024);
    for s in 0..1024 {
        let b = before.owner(ShardId(s));
        if b != "n2" {
            assert_eq!(after.owner(ShardId(s)), b);
        }
    }
}

#[test]
fn owner_does_not_depend_on_config_order() {
    let mut reversed = names(4);
    reversed.reverse();
    let a = ShardMap::rendezvous(1, &names(4), 256);
    let b = ShardMap::rendezvous(1, &reversed, 256);
    for s in 0..256 {
        assert_eq!(a.owner(ShardId(s)), b.owner(ShardId(s)));
    }
}

#[test]
fn shards_of_lists_exactly_the_owned_shards() {
    let map = ShardMap::rendezvous(1, &names(4), 64);
    let total: usize = names(4).iter().map(|n| map.shards_of(n).count()).sum();
    assert_eq!(total, 64);
    for s in map.shards_of("n3") {
        assert_eq!(map.owner(s), "n3");
    }
}
const GOLDEN_HASH_C1: u64 = 1016614364409217164;
