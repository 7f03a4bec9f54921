//! Publishes to the broker at QoS 1 and says when the broker has the message (its PUBACK), so a
//! caller marks a command "sent" only once it really is.
//!
//! ```text
//! publish(topic, payload) ──job──▶ publisher task ──client.publish──▶ rumqttc ──▶ broker
//!        ▲                              │  Outgoing(Publish(pkid)) in request order: pkid ↔ job
//!        └──────── Ok on PubAck(pkid) ◀─┘  connection lost: every unconfirmed job fails (retry)
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use keelson_runtime::Backoff;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::metrics;

/// Why a publish was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker did not confirm in time.
    #[error("the MQTT broker did not confirm the publish within {0:?}")]
    Timeout(Duration),
    /// The connection dropped before the broker confirmed.
    #[error("the connection to the MQTT broker was lost before it confirmed the publish")]
    ConnectionLost,
    /// The publisher has stopped.
    #[error("the MQTT publisher has stopped")]
    Stopped,
}

struct Job {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    done: oneshot::Sender<Result<(), PublishError>>,
}

/// A QoS 1 publisher with confirmations; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish()
    }
}

impl Publisher {
    /// Connects (and keeps reconnecting) to `broker` as the service `client_id` with the
    /// service secret `password`; messages up to `max_packet` bytes.
    pub fn start(
        broker: SocketAddr,
        client_id: &str,
        password: Option<&keelson_runtime::config::Secret>,
        tls: &crate::MqttTls,
        max_packet: usize,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(1024);
        let mut opts = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        if let Some(p) = password {
            opts.set_credentials(client_id, p.expose());
        }
        tls.apply(&mut opts);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_max_packet_size(max_packet + 1024, max_packet + 1024);
        tokio::spawn(run(opts, rx));
        Self {
            jobs,
            timeout: Duration::from_secs(5),
        }
    }

    /// Publishes at QoS 1 and waits for the broker's confirmation.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), PublishError> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job {
                topic: topic.to_string(),
                payload,
                retain,
                done,
            })
            .await
            .map_err(|_| PublishError::Stopped)?;
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PublishError::ConnectionLost),
            Err(_) => Err(PublishError::Timeout(self.timeout)),
        }
    }
}

/// One connection's bookkeeping: jobs handed to rumqttc in order, then by packet id.
#[derive(Default)]
struct Inflight {
    queued: VecDeque<oneshot::Sender<Result<(), PublishError>>>,
    by_pkid: HashMap<u16, oneshot::Sender<Result<(), PublishError>>>,
}

impl Inflight {
    fn fail_all(&mut self) {
        for w in self
            .queued
            .drain(..)
            .chain(self.by_pkid.drain().map(|(_, w)| w))
        {
            let _ = w.send(Err(PublishError::ConnectionLost));
        }
    }
}

async fn run(opts: MqttOptions, mut jobs: mpsc::Receiver<Job>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let (client, mut eventloop) = AsyncClient::new(opts.clone(), 256);
        let (events_tx, mut events) = mpsc::channel(256);
        // The event loop must be polled all the time, or publishes queue forever.
        let poller = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if events_tx.send(ev).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut inflight = Inflight::default();
        let mut connected = false;
        loop {
            tokio::select! {
                job = jobs.recv(), if connected => {
                    let Some(job) = job else {
                        poller.abort();
                        inflight.fail_all();
                        return;
                    };
                    inflight.queued.push_back(job.done);
                    if client
                        .publish(job.topic, QoS::AtLeastOnce, job.retain, job.payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                ev = events.recv() => match ev {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        connected = true;
                        backoff.reset();
                    }
                    Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(w) = inflight.queued.pop_front() {
                            inflight.by_pkid.insert(pkid, w);
                        }
                    }
                    Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                        if let Some(w) = inflight.by_pkid.remove(&ack.pkid) {
                            metrics::get().published.inc();
                            let _ = w.send(Ok(()));
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "MQTT publisher connection lost");
                        break;
                    }
                    None => break,
                },
            }
        }
        poller.abort();
        inflight.fail_all();
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
