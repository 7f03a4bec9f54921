//! keelson-feed: feeding interactions to the recommendation model from any process that holds
//! a cluster client. The gateway feeds what its routes receive (interactions, batches, device
//! ownership, HTTP telemetry); the MQTT bridge feeds the device usage its telemetry shows.
//! Each process has its own feed; they meet only in the entities, which count every
//! interaction once by id and every weight change once by number, whoever sends it.
//!
//! ```text
//! feed(batch) ──────────────▶ deliver: taste Record ─▶ writers ─▶ item-model p0..p63 (+ repair)
//! queue(one) ─▶ queue::run (100 ms batches, retried) ─┘
//! flush() ─▶ answered once everything queued before it was fed
//! forget(customer) ─▶ taste Forget (removals) ─▶ every partition up to them ─▶ id dropped
//! ```
//!
//! The parts: `deliver` (one feed, exactly once per partition), `writer` (one group-committing
//! writer per partition), `queue` (single interactions, batched), `forget` (an erased customer out of the model), `devices` (what a device is
//! to the model), `error`.

mod call;
mod deliver;
pub mod devices;
mod error;
mod forget;
mod queue;
mod writer;

use keelson_actors::{Recorded, TasteInteraction};
use keelson_runtime::ClusterClient;

pub use error::FeedError;
pub use writer::OnCounted;

/// A process's feed of the model: cheap to clone, one set of writers and one queue behind it.
#[derive(Clone)]
pub struct ModelFeed {
    sink: Sink,
    queue: queue::Feeder,
}

/// Where feeds go: the cluster, through the partitions' writers.
#[derive(Clone)]
struct Sink {
    client: ClusterClient,
    writers: writer::ModelWriters,
}

impl std::fmt::Debug for ModelFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFeed").finish_non_exhaustive()
    }
}

impl ModelFeed {
    /// Starts the writers and the queue's task (on the current tokio runtime), calling through
    /// `client`; `counted` is told each time a partition counted something.
    pub fn start(client: ClusterClient, counted: OnCounted) -> Self {
        let writers = writer::ModelWriters::start(
            client.clone(),
            keelson_recommend::ITEM_PARTITIONS,
            counted,
        );
        let sink = Sink { client, writers };
        let (queue, rx) = queue::Feeder::new();
        // It ends once every clone of this feed is dropped.
        tokio::spawn(queue::run(sink.clone(), rx));
        Self { sink, queue }
    }

    /// Records each customer's interactions and brings every partition up to date; returns
    /// each customer's outcomes, in the order given. Answers once the model has them all.
    pub async fn feed(
        &self,
        by_customer: Vec<(String, Vec<TasteInteraction>)>,
        request_id: &str,
    ) -> Result<Vec<(String, Vec<Recorded>)>, FeedError> {
        deliver::feed(&self.sink, by_customer, request_id).await
    }

    /// Queues one interaction of `customer`, to be fed within about 100 ms (retried until the
    /// model takes it); waits only while the queue is full. Lost if the process dies before [`ModelFeed::flush`] answers.
    pub async fn queue(&self, customer: &str, interaction: TasteInteraction) {
        self.queue.queue((customer.to_string(), interaction)).await;
    }

    /// Waits until everything queued before now has been fed.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }

    /// Takes `customer` out of the model (its erasure): everything its interactions added to
    /// the counts is taken away and no partition keeps its id. Its taste is left numbered and
    /// empty, refusing interactions, for the caller to erase. Idempotent.
    pub async fn forget(&self, customer: &str, request_id: &str) -> Result<(), FeedError> {
        forget::forget(&self.sink, customer, request_id).await
    }
}
