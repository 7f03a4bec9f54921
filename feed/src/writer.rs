//! One writer per item-model partition: Applies that arrive while the partition's last one is
//! still being written go in one Apply (a group commit), so concurrent batches cost the
//! partition one rewrite of its state, not one each. Every waiter gets the merged answer and
//! picks out its own customers.
//!
//! ```text
//! feed ─(updates, heads, reply)─▶ queue p ─▶ writer p: take all queued ─▶ merge (by customer,
//!   ascending numbers, one each) ─▶ Apply ─▶ behind ─▶ every waiter
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use keelson_actors::{
    item_model_id, ItemModelAnswer, ItemModelCommand, ItemModelReply, ModelUpdate,
};
use keelson_runtime::{Access, ClusterClient};
use tokio::sync::{mpsc, oneshot};

use crate::call::call;
use crate::error::FeedError;

/// Told each time an Apply counted something (a served copy of the model is then stale).
pub type OnCounted = Arc<dyn Fn() + Send + Sync>;

/// Most Applies merged into one.
const MERGED: usize = 64;

/// What a waiter gets back: the customers still behind (customer, last applied).
type Behind = Result<Vec<(String, u64)>, FeedError>;

struct Job {
    updates: Vec<ModelUpdate>,
    heads: Vec<(String, u64)>,
    reply: oneshot::Sender<Behind>,
}

/// The writers of every partition.
#[derive(Debug, Clone)]
pub(crate) struct ModelWriters {
    queues: Vec<mpsc::UnboundedSender<Job>>,
}

/// What a partition's Apply did: the customers still behind, and whether it counted anything.
type Applied = Result<(Vec<(String, u64)>, bool), FeedError>;

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("updates", &self.updates.len())
            .finish()
    }
}

impl ModelWriters {
    /// Starts a writer for each of `partitions` partitions, calling through `client`; each
    /// Apply that counts something is told to `counted` before its waiters are answered.
    pub(crate) fn start(client: ClusterClient, partitions: u32, counted: OnCounted) -> Self {
        let queues = (0..partitions)
            .map(|k| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(write(k, client.clone(), rx, counted.clone()));
                tx
            })
            .collect();
        Self { queues }
    }

    /// Applies `updates` (with `heads`) on partition `k`; the customers still behind.
    pub(crate) async fn apply(
        &self,
        k: u32,
        updates: Vec<ModelUpdate>,
        heads: Vec<(String, u64)>,
    ) -> Behind {
        let (reply, answer) = oneshot::channel();
        self.queues[k as usize]
            .send(Job {
                updates,
                heads,
                reply,
            })
            .map_err(|_| FeedError::Stopped)?;
        answer.await.map_err(|_| FeedError::Stopped)?
    }
}

/// Partition `k`'s writer: merges what queued up, applies it, answers every waiter.
async fn write(
    k: u32,
    client: ClusterClient,
    mut rx: mpsc::UnboundedReceiver<Job>,
    counted: OnCounted,
) {
    let id = item_model_id(k);
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MERGED {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (updates, heads) = merge(&mut jobs);
        let cmd = ItemModelCommand::Apply { updates, heads };
        let result: Behind = match apply_once(&client, &id, &cmd).await {
            Ok((behind, applied)) => {
                if applied {
                    counted();
                }
                Ok(behind)
            }
            Err(e) => Err(e),
        };
        for j in jobs {
            let _ = j.reply.send(result.clone());
        }
    }
}

/// One Apply on partition `id`.
async fn apply_once(client: &ClusterClient, id: &str, cmd: &ItemModelCommand) -> Applied {
    let (node, reply): (String, ItemModelReply) = call(
        client,
        "item-model",
        id,
        cmd,
        "model-writer",
        Access::of(false, None),
    )
    .await?;
    match reply {
        Ok(ItemModelAnswer::Applied {
            behind, applied, ..
        }) => Ok((behind, applied > 0)),
        other => Err(FeedError::not_expected("item-model", node, other)),
    }
}

/// The jobs' updates (each customer's in ascending numbers, each number once) and heads (the
/// highest per customer).
fn merge(jobs: &mut [Job]) -> (Vec<ModelUpdate>, Vec<(String, u64)>) {
    let mut by: BTreeMap<(String, u64), ModelUpdate> = BTreeMap::new();
    let mut heads: HashMap<String, u64> = HashMap::new();
    for j in jobs.iter_mut() {
        for u in std::mem::take(&mut j.updates) {
            by.entry((u.customer.clone(), u.seq)).or_insert(u);
        }
        for (c, h) in std::mem::take(&mut j.heads) {
            let e = heads.entry(c).or_default();
            *e = (*e).max(h);
        }
    }
    (by.into_values().collect(), heads.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_recommend::Delta;

    fn up(c: &str, seq: u64) -> ModelUpdate {
        ModelUpdate {
            customer: c.into(),
            seq,
            delta: Delta {
                item: format!("i{seq}"),
                before: 0,
                after: 1,
                pairs: vec![],
            },
        }
    }

    #[test]
    fn merged_jobs_keep_each_customers_numbers_ascending_and_once() {
        let job = |updates, heads| Job {
            updates,
            heads,
            reply: oneshot::channel().0,
        };
        let mut jobs = vec![
            job(
                vec![up("b", 2), up("a", 5)],
                vec![("a".into(), 5), ("b".into(), 2)],
            ),
            job(
                vec![up("a", 4), up("b", 2), up("b", 1)],
                vec![("a".into(), 9)],
            ),
        ];
        let (updates, mut heads) = merge(&mut jobs);
        let order: Vec<(&str, u64)> = updates
            .iter()
            .map(|u| (u.customer.as_str(), u.seq))
            .collect();
        assert_eq!(order, [("a", 4), ("a", 5), ("b", 1), ("b", 2)]);
        heads.sort();
        assert_eq!(heads, [("a".to_string(), 9), ("b".to_string(), 2)]);
    }
}
