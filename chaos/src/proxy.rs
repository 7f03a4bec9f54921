//! A fault-injecting TCP proxy: it forwards one listening address to one target and, per
//! direction, can add latency (with jitter) or cut the traffic, the way a partition does:
//! connections stay open but nothing arrives. No root and no iptables needed.
//!
//! ```text
//! client ──▶ listen ──[to_target: delay ± jitter | blocked]──▶ target
//!        ◀──        ◀─[to_client: delay ± jitter | blocked]──
//! ```
//!
//! A blocked direction holds its bytes rather than dropping them, as TCP's retransmissions do
//! across a real partition: the stream stays intact, and whatever was sent arrives after the heal
//! unless one end gave up on the connection first (which is what a failure detector does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Faults on one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Added one-way delay.
    pub delay: Duration,
    /// Uniform jitter around the delay.
    pub jitter: Duration,
    /// Deliver nothing until healed (a partition).
    pub blocked: bool,
}

/// Faults on both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Client to target.
    pub to_target: LinkFaults,
    /// Target to client.
    pub to_client: LinkFaults,
}

/// A running proxy; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    faults: Arc<watch::Sender<Faults>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(watch::Sender::new(Faults::default()));
        let f = faults.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let a = tokio::spawn(pump(cr, sw, f.subscribe(), true));
                    let b = tokio::spawn(pump(sr, cw, f.subscribe(), false));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Ok(Self {
            addr,
            faults,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults (applies to data read from now on).
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(Faults::default());
    }
}

fn direction(all: &Faults, to_target: bool) -> LinkFaults {
    if to_target {
        all.to_target
    } else {
        all.to_client
    }
}

/// Copies one direction, delaying each chunk read by that direction's latency and holding it
/// while the direction is blocked.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: watch::Receiver<Faults>,
    to_target: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut held = faults.clone();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            if held
                .wait_for(|f| !direction(f, to_target).blocked)
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let f = direction(&faults.borrow(), to_target);
        let jitter = if f.jitter.is_zero() {
            0.0
        } else {
            rand::rng().random_range(-1.0..1.0) * f.jitter.as_secs_f64()
        };
        let delay = Duration::from_secs_f64((f.delay.as_secs_f64() + jitter).max(0.0));
        // Never reorder: a chunk is delivered no earlier than the one before it.
        last = last.max(Instant::now() + delay);
        if tx.send((last, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
        let t = std::time::Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(timeout, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        (&buf == b"ping").then(|| t.elapsed())
    }

    #[tokio::test]
    async fn added_latency_is_within_twenty_percent_of_what_was_asked() {
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo().await)
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        // The first round trip also opens the proxy's connection to the target: warm up first.
        round_trip(&mut s, Duration::from_secs(1)).await.unwrap();
        let mut base = Vec::new();
        for _ in 0..10 {
            base.push(round_trip(&mut s, Duration::from_secs(1)).await.unwrap());
        }
        base.sort();
        let base = base[5];
        for ms in [10u64, 25, 50] {
            let one_way = Duration::from_millis(ms);
            proxy.set(Faults {
                to_target: LinkFaults {
                    delay: one_way,
                    ..Default::default()
                },
                to_client: LinkFaults {
                    delay: one_way,
                    ..Default::default()
                },
            });
            let mut samples = Vec::new();
            for _ in 0..10 {
                samples.push(round_trip(&mut s, Duration::from_secs(2)).await.unwrap());
            }
            samples.sort();
            let median = samples[5].saturating_sub(base);
            let want = 2 * one_way;
            let err = (median.as_secs_f64() - want.as_secs_f64()).abs() / want.as_secs_f64();
            assert!(err < 0.2, "asked {want:?} round trip, added {median:?}");
        }
    }

    #[tokio::test]
    async fn a_partition_stops_traffic_one_way_or_both_and_heal_restores_it() {
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo().await)
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut s, Duration::from_secs(1)).await.is_some());
        // One way: requests reach the server but answers never come back.
        proxy.set(Faults {
            to_client: LinkFaults {
                blocked: true,
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        // Both ways.
        let blocked = LinkFaults {
            blocked: true,
            ..Default::default()
        };
        proxy.set(Faults {
            to_target: blocked,
            to_client: blocked,
        });
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        // Healed: what was held arrives (the stream stays intact, as TCP keeps it across a
        // partition), and new connections work.
        proxy.heal();
        assert_eq!(proxy.faults(), Faults::default());
        let mut held = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut held))
            .await
            .expect("held bytes delivered after the heal")
            .unwrap();
        assert_eq!(&held, b"pingping");
        assert!(round_trip(&mut s, Duration::from_secs(1)).await.is_some());
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut fresh, Duration::from_secs(1))
            .await
            .is_some());
    }
}
