//! The queue of single interactions waiting for the model: routes put them in, [`run`] takes
//! them out and feeds what queues up within [`LINGER`] in one go (so a busy route costs the
//! model a few writes per batch, not one per partition per interaction), retrying with backoff
//! until the model took it. An erasure flushes the queue first, so nothing queued before it
//! can bring the erased customer's taste back.
//!
//! ```text
//! queue(customer, interaction) ─▶ [Fed] ─▶ run: first, then what arrives within LINGER
//!   (at most BATCH, or up to a Flush) ─▶ group by customer ─▶ deliver::feed (retried)
//!   ─▶ answer the flushes
//! ```

use std::time::Duration;

use keelson_actors::TasteInteraction;
use tokio::sync::{mpsc, oneshot};

use crate::Sink;

/// Interactions queued at most; past it the route waits for room.
const CAPACITY: usize = 50_000;

/// Most interactions fed in one go.
const BATCH: usize = 1_000;

/// How long the feeder waits for more after the first interaction of a batch.
const LINGER: Duration = Duration::from_millis(100);

/// One interaction waiting to be fed: (customer, interaction).
pub(crate) type Queued = (String, TasteInteraction);

/// What the queue carries.
#[derive(Debug)]
pub(crate) enum Fed {
    /// An interaction.
    One(Queued),
    /// Answered once everything queued before it has been fed.
    Flush(oneshot::Sender<()>),
}

/// The queue's sending end.
#[derive(Debug, Clone)]
pub(crate) struct Feeder {
    tx: mpsc::Sender<Fed>,
}

impl Feeder {
    /// A feeder and the receiving end for [`run`].
    pub(crate) fn new() -> (Self, mpsc::Receiver<Fed>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Self { tx }, rx)
    }

    /// Queues one interaction, waiting while the queue is full.
    pub(crate) async fn queue(&self, q: Queued) {
        if self.tx.send(Fed::One(q)).await.is_err() {
            tracing::warn!("the model feeder has stopped: an interaction was not queued");
        }
    }

    /// Waits until everything queued before now has been fed.
    pub(crate) async fn flush(&self) {
        let (done, fed) = oneshot::channel();
        if self.tx.send(Fed::Flush(done)).await.is_ok() {
            let _ = fed.await;
        }
    }
}

/// Feeds queued interactions into `sink` until every sender is gone.
pub(crate) async fn run(sink: Sink, mut rx: mpsc::Receiver<Fed>) {
    while let Some(first) = rx.recv().await {
        let mut batch: Vec<Queued> = Vec::new();
        // Flushes waiting for this batch: answered once it is fed.
        let mut flushed = Vec::new();
        match first {
            Fed::One(q) => batch.push(q),
            Fed::Flush(done) => flushed.push(done),
        }
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH && flushed.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(Fed::One(q))) => batch.push(q),
                Ok(Some(Fed::Flush(done))) => flushed.push(done),
                _ => break,
            }
        }
        let by_customer = group(batch);
        let mut pause = Duration::from_millis(50);
        while !by_customer.is_empty() {
            match crate::deliver::feed(&sink, by_customer.clone(), "model-feed").await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, interactions = by_customer.iter().map(|(_, l)| l.len()).sum::<usize>(), "recommendation model not updated yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// The batch by customer, customers and each one's interactions in the order they came.
fn group(batch: Vec<Queued>) -> Vec<(String, Vec<TasteInteraction>)> {
    let mut by_customer: Vec<(String, Vec<TasteInteraction>)> = Vec::new();
    for (customer, i) in batch {
        match by_customer.iter_mut().find(|(c, _)| *c == customer) {
            Some((_, list)) => list.push(i),
            None => by_customer.push((customer, vec![i])),
        }
    }
    by_customer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(customer: &str, id: &str) -> Queued {
        (
            customer.to_string(),
            TasteInteraction {
                id: id.to_string(),
                kind: "view".to_string(),
                item: "i".to_string(),
            },
        )
    }

    #[test]
    fn a_batch_is_grouped_by_customer_in_arrival_order() {
        let grouped = group(vec![one("b", "1"), one("a", "2"), one("b", "3")]);
        let shape: Vec<(&str, Vec<&str>)> = grouped
            .iter()
            .map(|(c, l)| (c.as_str(), l.iter().map(|i| i.id.as_str()).collect()))
            .collect();
        assert_eq!(shape, [("b", vec!["1", "3"]), ("a", vec!["2"])]);
    }
}
