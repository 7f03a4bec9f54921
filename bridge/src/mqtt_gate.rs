//! The embedded broker's front door. rumqttd 0.20 checks credentials at CONNECT but has no
//! per-topic ACL, so every client talks to this gate instead, and rumqttd listens only on a
//! loopback port of its own that accepts nothing but the gate's internal login.
//!
//! ```text
//! client ──TLS (tls.enabled)──▶ gate (mqtt.port): CONNECT ─▶ Authenticator (who?) ─▶ will topic allowed?
//!              │  CONNECT with the internal login ─────────────────────────▶ rumqttd (127.0.0.254)
//!              │  client → broker: every PUBLISH / SUBSCRIBE checked by mqtt_acl
//!              │      denied PUBLISH: dropped (QoS 1: PUBACK so the client moves on), counted
//!              │      denied SUBSCRIBE: SUBACK with failure codes, nothing subscribed, counted
//!              ◀──── broker → client: whole frames passed through (an injected packet never
//!                    splits one)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keelson_runtime::config::Secret;
use rumqttc::mqttbytes::{self, v4};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::metrics;
use crate::mqtt_acl::{may_publish, may_subscribe, Identity};
use crate::mqtt_auth::Authenticator;

/// The username the gate logs in to rumqttd with.
pub const INTERNAL_USER: &str = "keelson-gate";

/// Longest wait for a client's CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gate.
pub struct Gate {
    /// Who may connect.
    pub auth: Arc<Authenticator>,
    /// rumqttd's internal address.
    pub upstream: SocketAddr,
    /// The internal login's password.
    pub internal: Secret,
    /// Largest packet either way.
    pub max_packet: usize,
}

enum Read {
    Frame(BytesMut),
    Closed,
}

/// Reads one whole MQTT frame (fixed header and body) from `io`, buffering in `buf`.
async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Read, String> {
    loop {
        match mqttbytes::check(buf.iter(), max) {
            Ok(h) => return Ok(Read::Frame(buf.split_to(h.frame_length()))),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed MQTT frame: {e:?}")),
        }
        if io.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Ok(Read::Closed);
        }
    }
}

fn encode(p: &v4::Packet, max: usize) -> Vec<u8> {
    let mut b = BytesMut::new();
    let _ = p.write(&mut b, max);
    b.to_vec()
}

fn denied(action: &str) {
    metrics::get().acl_denied.with_label_values(&[action]).inc();
}

impl Gate {
    /// Accepts clients on `listener` until the task is aborted; with `tls`, each connection's
    /// handshake runs in its own task under a deadline.
    pub fn spawn(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "MQTT accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let gate = self.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let r = match tls {
                        None => gate.serve(tcp).await,
                        Some(a) => match tokio::time::timeout(CONNECT_TIMEOUT, a.accept(tcp)).await
                        {
                            Ok(Ok(s)) => gate.serve(s).await,
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err("TLS handshake timed out".into()),
                        },
                    };
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "MQTT connection closed");
                    }
                });
            }
        })
    }

    async fn serve<S>(&self, client: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut buf = BytesMut::with_capacity(4096);
        let Some((who, connect)) = self.admit(&mut cr, &mut cw, &mut buf).await? else {
            return Ok(());
        };
        let (mut ur, mut uw) = self.open_upstream(&connect).await?;

        // One writer to the client: the broker's frames and the gate's own answers.
        let (to_client, mut outbox) = mpsc::channel::<Vec<u8>>(256);
        let writer = tokio::spawn(async move {
            while let Some(b) = outbox.recv().await {
                if cw.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = cw.shutdown().await;
        });
        let max = self.max_packet;
        let from_broker = {
            let to_client = to_client.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(8192);
                while let Ok(Read::Frame(f)) = read_frame(&mut ur, &mut buf, max).await {
                    if to_client.send(f.to_vec()).await.is_err() {
                        break;
                    }
                }
            })
        };
        let result = self
            .client_to_broker(&who, &mut cr, &mut buf, &mut uw, &to_client)
            .await;
        from_broker.abort();
        drop(to_client);
        let _ = uw.shutdown().await;
        let _ = writer.await;
        result
    }

    /// Reads the client's CONNECT and decides: who it is, and whether its will may be published.
    /// `None` once it has been refused (its CONNACK says why) or it closed first.
    async fn admit<R, W>(
        &self,
        cr: &mut R,
        cw: &mut W,
        buf: &mut BytesMut,
    ) -> Result<Option<(Identity, v4::Connect)>, String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let first = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(cr, buf, self.max_packet))
            .await
            .map_err(|_| "no CONNECT in time".to_string())??;
        let Read::Frame(mut frame) = first else {
            return Ok(None);
        };
        let connect = match v4::Packet::read(&mut frame, self.max_packet) {
            Ok(v4::Packet::Connect(c)) if c.protocol == mqttbytes::Protocol::V4 => c,
            Ok(_) => return Err("the first packet is not an MQTT 3.1.1 CONNECT".into()),
            Err(e) => return Err(format!("unreadable CONNECT: {e:?}")),
        };
        let (user, pass) = connect
            .login
            .as_ref()
            .map(|l| (l.username.as_str(), l.password.as_str()))
            .unwrap_or(("", ""));
        let who = match self.auth.check(&connect.client_id, user, pass) {
            Ok(w) => w,
            Err(r) => {
                metrics::get()
                    .auth_refused
                    .with_label_values(&[r.as_str()])
                    .inc();
                tracing::warn!(client_id = %connect.client_id, reason = r.as_str(), "MQTT connection refused");
                let nack = v4::ConnAck::new(v4::ConnectReturnCode::BadUserNamePassword, false);
                let _ = cw.write_all(&encode(&v4::Packet::ConnAck(nack), 64)).await;
                return Ok(None);
            }
        };
        if let Some(will) = &connect.last_will {
            if !may_publish(&who, &will.topic) {
                denied("will");
                let nack = v4::ConnAck::new(v4::ConnectReturnCode::NotAuthorized, false);
                let _ = cw.write_all(&encode(&v4::Packet::ConnAck(nack), 64)).await;
                return Ok(None);
            }
        }
        Ok(Some((who, connect)))
    }

    /// Connects to rumqttd and logs the client in with the gate's internal login.
    async fn open_upstream(
        &self,
        connect: &v4::Connect,
    ) -> Result<(OwnedReadHalf, OwnedWriteHalf), String> {
        let upstream = TcpStream::connect(self.upstream)
            .await
            .map_err(|e| format!("the broker behind the gate is unreachable: {e}"))?;
        let _ = upstream.set_nodelay(true);
        let (ur, mut uw) = upstream.into_split();
        let mut inner = connect.clone();
        inner.login = Some(v4::Login::new(INTERNAL_USER, self.internal.expose()));
        uw.write_all(&encode(&v4::Packet::Connect(inner), self.max_packet))
            .await
            .map_err(|e| e.to_string())?;

        Ok((ur, uw))
    }

    /// Passes the client's packets on, minus what its identity may not do.
    async fn client_to_broker<R, W>(
        &self,
        who: &Identity,
        cr: &mut R,
        buf: &mut BytesMut,
        uw: &mut W,
        to_client: &mpsc::Sender<Vec<u8>>,
    ) -> Result<(), String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let Read::Frame(frame) = read_frame(cr, buf, self.max_packet).await? else {
                return Ok(());
            };
            let packet = if matches!(who, Identity::Service(_)) {
                None // services may do anything: no need to decode their packets
            } else {
                Some(
                    v4::Packet::read(&mut frame.clone(), self.max_packet)
                        .map_err(|e| format!("malformed packet: {e:?}"))?,
                )
            };
            match packet {
                Some(v4::Packet::Publish(p)) if !may_publish(who, &p.topic) => {
                    denied("publish");
                    tracing::warn!(who = ?who, topic = %p.topic, "MQTT publish refused");
                    match p.qos {
                        mqttbytes::QoS::AtMostOnce => {}
                        mqttbytes::QoS::AtLeastOnce => {
                            let ack = encode(&v4::Packet::PubAck(v4::PubAck::new(p.pkid)), 64);
                            let _ = to_client.send(ack).await;
                        }
                        mqttbytes::QoS::ExactlyOnce => {
                            return Err("a refused QoS 2 publish ends the connection".into())
                        }
                    }
                }
                Some(v4::Packet::Subscribe(s))
                    if s.filters.iter().any(|f| !may_subscribe(who, &f.path)) =>
                {
                    denied("subscribe");
                    tracing::warn!(who = ?who, filters = ?s.filters.iter().map(|f| &f.path).collect::<Vec<_>>(), "MQTT subscription refused");
                    let codes = vec![v4::SubscribeReasonCode::Failure; s.filters.len()];
                    let _ = to_client
                        .send(encode(
                            &v4::Packet::SubAck(v4::SubAck::new(s.pkid, codes)),
                            1024,
                        ))
                        .await;
                }
                Some(v4::Packet::Connect(_)) => {
                    return Err("a second CONNECT ends the connection".into())
                }
                _ => uw.write_all(&frame).await.map_err(|e| e.to_string())?,
            }
        }
    }
}
