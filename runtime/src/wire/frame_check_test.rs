use super::*;
use crate::wire::{IdempotencyKey, ReplicaAck};

fn nodes() -> Vec<String> {
    vec!["n1".into(), "n2".into(), "n3".into()]
}

fn write() -> ReplicaWrite {
    ReplicaWrite {
        shard: 3,
        primary: "n1".into(),
        epoch: 5,
        lsn: epoch_base(5) + 1,
        kind: "customer".into(),
        id: "c1".into(),
        value: Some(vec![0; 100]),
    }
}

fn request() -> EntityRequest {
    EntityRequest {
        request_id: "r".into(),
        kind: "customer".into(),
        id: "c1".into(),
        shard: 7,
        epoch: 1,
        fault: None,
        read: false,
        idempotency_key: None,
        payload: vec![],
    }
}

#[test]
fn a_good_replicated_write_passes() {
    let l = FrameLimits::for_test();
    assert_eq!(replica_write(&write(), 64, &nodes(), 5, &l), Ok(ShardId(3)));
    // A primary whose map is a little ahead of this node's.
    let mut w = write();
    w.epoch = 9;
    w.lsn = epoch_base(9) + 77;
    assert!(replica_write(&w, 64, &nodes(), 5, &l).is_ok());
}

#[test]
fn a_replicated_write_with_a_bad_number_is_refused_with_its_reason() {
    let l = FrameLimits::for_test();
    type Spoil = Box<dyn Fn(&mut ReplicaWrite)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("bad_shard", Box::new(|w| w.shard = 64)),
        ("bad_shard", Box::new(|w| w.shard = u32::MAX)),
        ("unknown_node", Box::new(|w| w.primary = "n9".into())),
        ("unknown_node", Box::new(|w| w.primary = "x".repeat(10_000))),
        ("out_of_range", Box::new(|w| w.epoch = u64::MAX)),
        (
            "out_of_range",
            Box::new(|w| {
                w.epoch = 5 + MAX_EPOCH_AHEAD + 1;
                w.lsn = epoch_base(w.epoch) + 1;
            }),
        ),
        ("out_of_range", Box::new(|w| w.lsn = epoch_base(6) + 1)),
        ("out_of_range", Box::new(|w| w.lsn = epoch_base(5))),
        ("out_of_range", Box::new(|w| w.lsn = u64::MAX)),
        ("too_large", Box::new(|w| w.kind = "k".repeat(65))),
        ("too_large", Box::new(|w| w.id = "i".repeat(1025))),
        (
            "too_large",
            Box::new(|w| w.value = Some(vec![0; (64 << 10) + 1])),
        ),
    ];
    for (reason, spoil) in cases {
        let mut w = write();
        spoil(&mut w);
        let e = replica_write(&w, 64, &nodes(), 5, &l).unwrap_err();
        assert_eq!(e.reason(), reason, "{e}");
        assert!(FrameError::REASONS.contains(&e.reason()));
    }
}

#[test]
fn a_frame_over_the_limit_is_refused_before_decoding_and_garbage_is_malformed() {
    let l = FrameLimits::for_test();
    let big = vec![wire::WIRE_VERSION; l.max_frame_bytes + 1];
    let e = decode::<ReplicaWrite>("replicate", &big, &l).unwrap_err();
    assert_eq!(e.reason(), "too_large");
    for bad in [&[][..], &[0xff, 1, 2][..], &[wire::WIRE_VERSION, 0xff][..]] {
        let e = decode::<ReplicaWrite>("replicate", bad, &l).unwrap_err();
        assert_eq!(e.reason(), "malformed", "{bad:?}");
    }
    // A length prefix claiming far more than the frame holds is malformed, not an allocation.
    let mut huge_len = vec![wire::WIRE_VERSION];
    huge_len.extend([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert_eq!(
        decode::<CopyRequest>("copy", &huge_len, &l)
            .unwrap_err()
            .reason(),
        "malformed"
    );
    assert_eq!(
        decode::<ReplicaWrite>("replicate", &wire::encode(&write()), &l),
        Ok(write())
    );
}

#[test]
fn entity_requests_name_an_existing_shard_and_short_names() {
    assert_eq!(entity_request(&request(), 64), Ok(()));
    let mut r = request();
    r.shard = 64;
    assert_eq!(
        entity_request(&r, 64),
        Err(FrameError::NoSuchShard {
            shard: 64,
            count: 64
        })
    );
    let mut r = request();
    r.idempotency_key = Some(IdempotencyKey {
        key: "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1),
        fingerprint: [0; 16],
    });
    assert_eq!(entity_request(&r, 64).unwrap_err().reason(), "too_large");
    let mut r = request();
    r.request_id = "r".repeat(MAX_REQUEST_ID_BYTES + 1);
    assert_eq!(entity_request(&r, 64).unwrap_err().reason(), "too_large");
    let mut r = request();
    r.epoch = u64::MAX;
    assert_eq!(entity_request(&r, 64).unwrap_err().reason(), "out_of_range");
}

#[test]
fn questions_and_orders_name_existing_shards_and_nodes() {
    let n = nodes();
    let q = ReadIndex {
        shard: 1,
        follower: "n2".into(),
    };
    assert_eq!(read_index(&q, 64, &n), Ok(ShardId(1)));
    assert!(read_index(
        &ReadIndex {
            shard: 99,
            ..q.clone()
        },
        64,
        &n
    )
    .is_err());
    assert!(read_index(
        &ReadIndex {
            follower: "zz".into(),
            ..q
        },
        64,
        &n
    )
    .is_err());
    let c = CopyRequest {
        shard: 2,
        learner: "n3".into(),
        after: Some(b"customer\0c1".to_vec()),
    };
    assert_eq!(copy_request(&c, 64, &n), Ok(ShardId(2)));
    let long = CopyRequest {
        after: Some(vec![1; MAX_RESUME_KEY_BYTES + 1]),
        ..c.clone()
    };
    assert_eq!(
        copy_request(&long, 64, &n).unwrap_err().reason(),
        "too_large"
    );
    assert_eq!(
        copy_request(&CopyRequest { shard: 64, ..c }, 64, &n)
            .unwrap_err()
            .reason(),
        "bad_shard"
    );
    let h = HandOver {
        shard: 4,
        epoch: 3,
        to: "n2".into(),
    };
    assert_eq!(hand_over(&h, 64, &n, 3), Ok(ShardId(4)));
    for bad in [
        HandOver {
            shard: 1 << 31,
            ..h.clone()
        },
        HandOver {
            epoch: u64::MAX,
            ..h.clone()
        },
        HandOver {
            to: "nobody".into(),
            ..h
        },
    ] {
        assert!(hand_over(&bad, 64, &n, 3).is_err(), "{bad:?}");
    }
}

#[test]
fn a_stale_answer_names_a_newer_but_plausible_epoch() {
    assert_eq!(stale_epoch(6, 5), Ok(()));
    assert_eq!(stale_epoch(5 + MAX_EPOCH_AHEAD, 5), Ok(()));
    for bad in [0, 5, 6 + MAX_EPOCH_AHEAD, u64::MAX] {
        assert_eq!(
            stale_epoch(bad, 5).unwrap_err().reason(),
            "out_of_range",
            "{bad}"
        );
    }
    // The typed refusal travels in the ack.
    let ack = ReplicaAck::Refused(FrameError::NoSuchShard { shard: 9, count: 4 });
    assert_eq!(wire::decode::<ReplicaAck>(&wire::encode(&ack)), Ok(ack));
}

#[test]
fn copy_pages_are_bounded_and_always_move_forward() {
    let l = FrameLimits::for_test();
    let rec = |id: &str| -> CopyRecord {
        (
            "customer".into(),
            id.into(),
            epoch_base(2) + 1,
            Some(vec![1; 10]),
        )
    };
    let page = vec![rec("a"), rec("b")];
    assert_eq!(
        copy_page(
            &page,
            Some(b"customer\0b"),
            false,
            Some(b"customer\0"),
            2,
            &l
        ),
        Ok(())
    );
    assert_eq!(copy_page(&page, None, true, None, 2, &l), Ok(()));
    assert_eq!(copy_page(&[], None, true, None, 2, &l), Ok(()));
    // Not the last page, but no way on; or a way back; or nothing in it.
    for (next, after) in [
        (None, None),
        (Some(&b"customer\0a"[..]), Some(&b"customer\0b"[..])),
        (Some(&b"customer\0b"[..]), Some(&b"customer\0b"[..])),
    ] {
        assert_eq!(
            copy_page(&page, next, false, after, 2, &l)
                .unwrap_err()
                .reason(),
            "out_of_range"
        );
    }
    assert!(copy_page(&[], Some(b"x"), false, None, 2, &l).is_err());
    let many: Vec<CopyRecord> = (0..=MAX_PAGE_RECORDS)
        .map(|i| rec(&i.to_string()))
        .collect();
    assert!(copy_page(&many, None, true, None, 2, &l).is_err());
    let mut huge = rec("a");
    huge.3 = Some(vec![0; l.max_value_bytes + 1]);
    assert_eq!(
        copy_page(&[huge], None, true, None, 2, &l)
            .unwrap_err()
            .reason(),
        "too_large"
    );
    let mut future = rec("a");
    future.2 = u64::MAX;
    assert!(copy_page(&[future], None, true, None, 2, &l).is_err());
}

#[test]
fn snapshot_chunks_stay_within_the_snapshot_limit() {
    assert_eq!(snapshot_chunk(0, 1000), Ok(()));
    assert_eq!(snapshot_chunk(MAX_SNAPSHOT_BYTES - 10, 10), Ok(()));
    assert!(snapshot_chunk(MAX_SNAPSHOT_BYTES - 10, 11).is_err());
    assert!(snapshot_chunk(u64::MAX, 1).is_err());
    assert!(append_entries(MAX_APPEND_ENTRIES).is_ok());
    assert!(append_entries(MAX_APPEND_ENTRIES + 1).is_err());
}

#[test]
fn a_peer_s_shard_map_has_this_cluster_s_shape() {
    let expected = ShardMap::initial(&nodes(), 8, 2);
    assert_eq!(shard_map(&expected, &expected), Ok(()));
    let fewer = ShardMap::initial(&nodes(), 4, 2);
    assert_eq!(
        shard_map(&fewer, &expected).unwrap_err().reason(),
        "out_of_range"
    );
    // Nodes join and leave: a map of other members is this cluster's, later.
    let others = ShardMap::initial(&["n1".to_string(), "n7".to_string()], 8, 2);
    assert_eq!(shard_map(&others, &expected), Ok(()));
    let bad = ShardMap::initial(&["n1".to_string(), "N7!".to_string()], 8, 2);
    assert_eq!(
        shard_map(&bad, &expected).unwrap_err().reason(),
        "unknown_node"
    );
}

#[test]
fn a_proposed_change_of_the_members_is_checked_field_by_field() {
    use keelson_rules::shard_map::{MapCommand, NodeAddr};
    let add = |node: &str, host: &str, cluster_port, ops_port| MapCommand::AddNode {
        node: node.into(),
        addr: NodeAddr {
            host: host.into(),
            cluster_port,
            ops_port,
        },
    };
    assert_eq!(map_command(&add("n5", "127.0.0.1", 4705, 9106), 8), Ok(()));
    assert_eq!(
        map_command(&add("n5", "node-5.keelson.svc", 4705, 9106), 8),
        Ok(())
    );
    for (cmd, reason) in [
        (add("N5", "127.0.0.1", 4705, 9106), "unknown_node"),
        (
            add(&"n".repeat(33), "127.0.0.1", 4705, 9106),
            "unknown_node",
        ),
        (add("n5", "", 4705, 9106), "out_of_range"),
        (add("n5", "a b", 4705, 9106), "out_of_range"),
        (add("n5", &"h".repeat(254), 4705, 9106), "too_large"),
        (add("n5", "127.0.0.1", 0, 9106), "out_of_range"),
        (add("n5", "127.0.0.1", 4705, 0), "out_of_range"),
        (MapCommand::RemoveNode { node: "".into() }, "unknown_node"),
        (
            MapCommand::Shrink {
                shard: 8,
                epoch: 1,
                node: "n1".into(),
            },
            "bad_shard",
        ),
    ] {
        assert_eq!(
            map_command(&cmd, 8).unwrap_err().reason(),
            reason,
            "{cmd:?}"
        );
    }
}
