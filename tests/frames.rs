//! A node never trusts a peer's numbers, with real processes. The test process joins the
//! cluster as a member (n4's name and certificate, n4 stopped) over mutual TLS and sends n1
//! frames a buggy or hostile member could: shard numbers out of range, an epoch far ahead of
//! the map, an lsn of another epoch, values and frames over the byte limits, a length prefix
//! of 2^60, garbage for consensus. Invariant: each is refused with a typed answer and counted
//! in `keelson_bad_frames_total{reason}`; n1's shard host never dies, n1 stays ready, keeps its
//! role on the shard the bad epoch named, and the gateway's requests are served throughout.

mod support;

use std::time::Duration;

use keelson_runtime::wire::{
    self, CopyPage, CopyRequest, EntityReply, EntityRequest, FrameError, HandOver, RaftRpc,
    ReadIndex, RemoteError, ReplicaAck, ReplicaWrite, ShardHostRpc,
};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use serde_json::{json, Value};
use support::{serial, wait_for, Cluster, Settings};

/// Calls n1's shard host (or consensus endpoint) from the test member: the raw answer.
async fn call<M: ractor::Message>(
    group: &str,
    build: fn(Vec<u8>, ractor::RpcReplyPort<Vec<u8>>) -> M,
    body: Vec<u8>,
) -> Vec<u8> {
    let cell = ractor::pg::get_members(&group.to_string())
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no member in {group}"));
    let actor: ActorRef<M> = cell.into();
    match actor
        .call(|r| build(body, r), Some(Duration::from_secs(10)))
        .await
    {
        Ok(CallResult::Success(b)) => b,
        other => panic!("{group}: no answer ({:?})", other.map(|_| ())),
    }
}

async fn bad_frames(c: &Cluster, reason: &str) -> f64 {
    c.metric(
        "n1",
        &format!("keelson_bad_frames_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// A customer id whose shard n1 leads, with its shard and epoch.
async fn led_by_n1(c: &Cluster) -> (String, u32, u64) {
    for i in 0.. {
        let id = format!("frames-{i}");
        let (s, _, v) = c
            .req("GET", &format!("/v1/cluster/locate/customer/{id}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        if v["owner"] == "n1" {
            return (
                id,
                v["shard"].as_u64().unwrap() as u32,
                v["epoch"].as_u64().unwrap(),
            );
        }
    }
    unreachable!()
}

fn write(shard: u32, epoch: u64, id: &str) -> ReplicaWrite {
    ReplicaWrite {
        shard,
        primary: "n2".into(),
        epoch,
        lsn: (epoch << 40) + 1,
        kind: "customer".into(),
        id: id.into(),
        value: Some(b"not a customer".to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_frame_with_an_out_of_range_shard_is_refused_and_the_node_keeps_serving() {
    let _guard = serial().await;
    let mut c = Cluster::start("frames", Settings::default()).await;
    let shards = c.cfg.shards;
    let max_frame = c.cfg.max_frame_bytes;
    let max_value = c.cfg.entity_limits.max_state_bytes;
    let (id, shard, epoch) = led_by_n1(&c).await;
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(&json!({"id": id, "name": "Before"}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // The test process becomes member n4: n4's certificate, n4's address.
    c.kill("n4");
    wait_for("n4 marked down", Duration::from_secs(10), || async {
        (c.state_of("n4").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    keelson_runtime::tls::install_provider();
    let me = c.cfg.nodes[3].clone();
    let member = keelson_runtime::ClusterMember::join(&c.cfg, &me)
        .await
        .expect("the test member joins with n4's certificate");
    let host = wire::shard_host_group("n1");
    let raft = wire::raft_group("n1");
    wait_for(
        "n1's shard host and consensus endpoint to be visible to the test member",
        Duration::from_secs(15),
        || async {
            (!ractor::pg::get_members(&host).is_empty()
                && !ractor::pg::get_members(&raft).is_empty())
            .then_some(())
        },
    )
    .await;
    let before: Vec<f64> = {
        let mut v = Vec::new();
        for r in FrameError::REASONS {
            v.push(bad_frames(&c, r).await);
        }
        v
    };

    // Out-of-range shards, on every shard-host RPC that names one.
    let ack: ReplicaAck = wire::decode(
        &call(
            &host,
            ShardHostRpc::Replicate,
            wire::encode(&write(shards + 7, 1, "x")),
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        ack,
        ReplicaAck::Refused(FrameError::NoSuchShard {
            shard: shards + 7,
            count: shards
        })
    );
    let page: CopyPage = wire::decode(
        &call(
            &host,
            ShardHostRpc::Copy,
            wire::encode(&CopyRequest {
                shard: u32::MAX,
                learner: "n4".into(),
                after: None,
            }),
        )
        .await,
    )
    .unwrap();
    assert!(
        matches!(&page, CopyPage::Refused(why) if why.contains(&format!("shard {} does not exist", u32::MAX))),
        "{page:?}"
    );
    let confirmed: bool = wire::decode(
        &call(
            &host,
            ShardHostRpc::ReadIndex,
            wire::encode(&ReadIndex {
                shard: shards,
                follower: "n4".into(),
            }),
        )
        .await,
    )
    .unwrap();
    assert!(!confirmed);
    let handed: Result<(), String> = wire::decode(
        &call(
            &host,
            ShardHostRpc::HandOver,
            wire::encode(&HandOver {
                shard: 1 << 30,
                epoch: 1,
                to: "n4".into(),
            }),
        )
        .await,
    )
    .unwrap();
    assert!(
        handed.as_ref().is_err_and(|e| e.contains("does not exist")),
        "{handed:?}"
    );
    let reply: EntityReply = wire::decode(
        &call(
            &host,
            ShardHostRpc::Request,
            wire::encode(&EntityRequest {
                request_id: "frames".into(),
                kind: "customer".into(),
                id: id.clone(),
                shard: shards,
                epoch,
                fault: None,
                read: true,
                idempotency_key: None,
                payload: vec![],
            }),
        )
        .await,
    )
    .unwrap();
    assert!(
        matches!(&reply, EntityReply::Err(RemoteError::BadRequest(m)) if m.contains("does not exist")),
        "{reply:?}"
    );

    // Bad indices on a shard n1 leads: an epoch far ahead of the map (it would have deposed n1
    // until the map got there, which is never) and an lsn of another epoch.
    let far = write(shard, epoch + 100_000, &id);
    let ack: ReplicaAck =
        wire::decode(&call(&host, ShardHostRpc::Replicate, wire::encode(&far)).await).unwrap();
    assert!(
        matches!(&ack, ReplicaAck::Refused(FrameError::OutOfRange { field, .. }) if field == "epoch"),
        "{ack:?}"
    );
    let mut other_epoch = write(shard, epoch, &id);
    other_epoch.lsn = ((epoch + 1) << 40) + 1;
    let ack: ReplicaAck =
        wire::decode(&call(&host, ShardHostRpc::Replicate, wire::encode(&other_epoch)).await)
            .unwrap();
    assert!(
        matches!(&ack, ReplicaAck::Refused(FrameError::OutOfRange { field, .. }) if field == "lsn"),
        "{ack:?}"
    );

    // Lengths: a value over the entity limit, a frame over the frame limit, a length prefix of
    // 2^60 in a small frame, garbage for consensus.
    let mut big = write(shard, epoch, &id);
    big.value = Some(vec![0; max_value + 1]);
    let ack: ReplicaAck =
        wire::decode(&call(&host, ShardHostRpc::Replicate, wire::encode(&big)).await).unwrap();
    assert!(
        matches!(&ack, ReplicaAck::Refused(FrameError::TooLarge { what, .. }) if what == "value"),
        "{ack:?}"
    );
    let mut huge = vec![wire::WIRE_VERSION];
    huge.resize(max_frame + 1000, 0);
    let ack: ReplicaAck = wire::decode(&call(&host, ShardHostRpc::Replicate, huge).await).unwrap();
    assert!(
        matches!(&ack, ReplicaAck::Refused(FrameError::TooLarge { bytes, .. }) if *bytes == max_frame as u64 + 1000),
        "{ack:?}"
    );
    // shard 0, then a string whose length prefix says 2^60 bytes.
    let mut lying = vec![wire::WIRE_VERSION, 0];
    lying.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    let page: CopyPage = wire::decode(&call(&host, ShardHostRpc::Copy, lying).await).unwrap();
    assert!(
        matches!(&page, CopyPage::Refused(why) if why.contains("does not decode")),
        "{page:?}"
    );
    let mut garbage = vec![wire::WIRE_VERSION];
    garbage.extend(b"{\"vote\": 18446744073709551615, \"entries\": [");
    let answer = call(&raft, RaftRpc::Append, garbage).await;
    let answer: Value = serde_json::from_slice(&answer[1..]).unwrap();
    assert!(
        answer["Refused"]["Malformed"]["frame"] == "raft_append",
        "{answer}"
    );

    // Every refusal counted by reason.
    let mut after = Vec::new();
    for r in FrameError::REASONS {
        after.push(bad_frames(&c, r).await);
    }
    let rise = |reason: &str| {
        let i = FrameError::REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap();
        after[i] - before[i]
    };
    eprintln!("bad frames before {before:?} after {after:?}");
    assert_eq!(rise("bad_shard"), 5.0, "{after:?}");
    assert_eq!(rise("out_of_range"), 2.0, "{after:?}");
    assert_eq!(rise("too_large"), 2.0, "{after:?}");
    assert_eq!(rise("malformed"), 2.0, "{after:?}");

    // n1 kept its shard host, its readiness and its role on the shard the bad epoch named; the
    // bad writes were not applied; the gateway is served.
    assert_eq!(
        c.metric("n1", "keelson_shard_host_restarts_total").await,
        0.0
    );
    let ready = c.http.get(c.ops_url("n1", "/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(c.owner("customer", &id).await, "n1");
    let (s, _, v) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
    assert_eq!((s, v["name"].as_str()), (200, Some("Before")), "{v}");
    let (s, _, v) = c
        .req(
            "PATCH",
            &format!("/v1/customers/{id}"),
            Some(r#"{"name":"After"}"#),
        )
        .await;
    assert_eq!(s, 200, "n1 still leads and writes its shard: {v}");
    let (s, _, v) = c.req("GET", &format!("/v1/customers/{id}"), None).await;
    assert_eq!((s, v["name"].as_str()), (200, Some("After")), "{v}");
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(r#"{"id":"frames-after","name":"A"}"#),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    member.leave().await;
}
