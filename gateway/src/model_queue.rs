//! The queue of single interactions waiting for the recommendation model: the customer route
//! puts them in, `model_feed::run_feeder` takes them out.

use keelson_actors::TasteInteraction;
use tokio::sync::mpsc;

/// Interactions queued for the model at most; past it the route waits for room.
const FEEDER_QUEUE: usize = 50_000;

/// One interaction waiting to be fed: (customer, interaction).
pub(crate) type Queued = (String, TasteInteraction);

/// The queue's sending end.
#[derive(Debug, Clone)]
pub struct Feeder {
    tx: mpsc::Sender<Queued>,
}

impl Feeder {
    /// A feeder and the receiving end for `model_feed::run_feeder`.
    pub fn new() -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(FEEDER_QUEUE);
        (Self { tx }, rx)
    }

    /// Queues one interaction, waiting while the queue is full.
    pub(crate) async fn queue(&self, q: Queued) {
        if self.tx.send(q).await.is_err() {
            tracing::warn!("the model feeder has stopped: an interaction was not queued");
        }
    }
}
