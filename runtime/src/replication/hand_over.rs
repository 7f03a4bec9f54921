//! A planned move of a shard's primary role to an in-sync follower, driven by the old primary
//! itself so it stops writing before the new primary starts. The steps are
//! `keelson_rules::hand_over`'s; the planner asks through `wire::rpc::hand_over`.
//!
//! ```text
//! planner ──HandOver{shard, epoch, to}──▶ old primary's shard host ─▶ answer ─▶ Replicator::hand_over
//!   Depose(epoch+1) ─▶ drain writes in flight ─▶ Propose(Handoff) ─▶ Done | Resume
//! ```

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;

use crate::consensus::MapWatch;
use crate::replication::Replicator;
use crate::wire;
use crate::wire::frame_check::{self, FrameLimits};
use keelson_rules::hand_over::{HandOver, Step};
use keelson_rules::shard_map::ShardId;

impl Replicator {
    /// Hands `shard` (at `epoch`) to the in-sync follower `to`: stops taking writes, waits for
    /// the ones in flight to finish (each confirmed by `to` or taken back), then commits the
    /// change. The new primary therefore starts with every write this node ever acknowledged,
    /// and no write of this node can reach a follower after it. On failure this node resumes.
    pub async fn hand_over(&self, shard: ShardId, epoch: u64, to: &str) -> Result<(), String> {
        let (steps, mut step) = {
            let _fence = self.fences[shard.0 as usize].write().expect("fence lock");
            let p = self.map.borrow().placement(shard).clone();
            HandOver::begin(&self.node, shard.0, &p, epoch, to)?
        };
        let counter = &self.in_flight[shard.0 as usize];
        let mut deadline = std::time::Instant::now() + self.timeout;
        let mut why = String::new();
        loop {
            step = match step {
                Step::Depose(at) => {
                    self.depose(shard, at);
                    deadline = std::time::Instant::now() + self.timeout;
                    Step::Wait
                }
                Step::Wait => {
                    let in_flight = counter.load(std::sync::atomic::Ordering::Acquire);
                    let next = steps.drain(in_flight, std::time::Instant::now() > deadline);
                    match next {
                        Step::Wait => tokio::time::sleep(Duration::from_millis(2)).await,
                        Step::Resume(_) => {
                            why = format!("writes on shard {} did not finish", shard.0)
                        }
                        _ => {}
                    }
                    next
                }
                Step::Propose(cmd) => match self.proposer.propose(cmd).await {
                    Ok(_) => steps.proposed(true),
                    Err(e) => {
                        why = e.to_string();
                        steps.proposed(false)
                    }
                },
                Step::Resume(at) => {
                    self.resume(shard, at);
                    return Err(why);
                }
                Step::Done => return Ok(()),
            };
        }
    }

    /// Undoes a [`Replicator::depose`] at `epoch` that did not lead to a map change.
    fn resume(&self, shard: ShardId, epoch: u64) {
        let _ = self.deposed[shard.0 as usize].compare_exchange(
            epoch,
            0,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
    }
}

/// The old primary's answer to the planner's [`wire::HandOver`]: gives the shard up (see
/// [`Replicator::hand_over`]) off the shard host actor;
/// requests stop at the ownership check at once, the entities when the map arrives.
pub fn answer(
    replicator: &Arc<Replicator>,
    map: &MapWatch,
    frames: &FrameLimits,
    bytes: Vec<u8>,
    reply: RpcReplyPort<Vec<u8>>,
) {
    let checked =
        frame_check::decode::<wire::HandOver>("hand_over", &bytes, frames).and_then(|h| {
            let map = map.borrow();
            let s = frame_check::shard(h.shard, map.shard_count())?;
            let epoch = map.placement(s).epoch;
            frame_check::hand_over(&h, map.shard_count(), map.nodes(), epoch)?;
            Ok((s, h))
        });
    let (shard, req) = match checked {
        Ok(c) => c,
        Err(e) => {
            frame_check::refuse("hand_over", &e);
            let _ = reply.send(wire::encode(&Err::<(), String>(format!(
                "hand-over refused: {e}"
            ))));
            return;
        }
    };
    let replicator = replicator.clone();
    tracing::info!(shard = req.shard, to = %req.to, epoch = req.epoch, "handing the shard over");
    tokio::spawn(async move {
        let result = replicator.hand_over(shard, req.epoch, &req.to).await;
        if let Err(e) = &result {
            tracing::info!(shard = req.shard, error = %e, "hand-over not done; still primary");
        }
        let _ = reply.send(wire::encode(&result));
    });
}
