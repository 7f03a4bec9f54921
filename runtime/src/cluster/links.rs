//! How cluster links are secured: mutual TLS from the cluster CA, with the certificate bound to
//! the name a member claims.
//!
//! ```text
//! incoming: our listener on the cluster port ─▶ per connection: TLS accept (5 s, mTLS)
//!           ─▶ which member does the certificate name? ─▶ node server (label "tls:<name>@addr")
//! outgoing: TCP ─▶ TLS to the peer's identity name, presenting ours ─▶ node server (same label)
//! session authenticated ─▶ claimed name == label's name, or the session is killed
//! ```
//!
//! ractor_cluster's own TLS accept runs inline in its listener with no deadline (one stalled
//! handshake would hold up every connection), so the node server's listener is parked on an
//! ephemeral loopback port and every session it opens there is refused; ours does the accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ClusterConfig, Member, Role};
use crate::tls::{self, Pki, TlsError};

/// Longest TLS handshake on a cluster link.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Most handshakes in progress at once; more wait their turn (never blocking one another).
const MAX_HANDSHAKES: usize = 64;

/// This member's link security.
#[derive(Clone)]
pub enum Links {
    /// Clear text, cookie only (`tls.enabled = false`, loopback only).
    Plain,
    /// Mutual TLS.
    Tls(Arc<TlsLinks>),
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Links::Plain => "Links::Plain",
            Links::Tls(_) => "Links::Tls",
        })
    }
}

/// TLS material for one member's links.
pub struct TlsLinks {
    cfg: ClusterConfig,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// A verified TLS stream handed to ractor_cluster with the identity its certificate proved.
struct Verified<S> {
    stream: S,
    label: String,
}

impl<S> ClusterBidiStream for Verified<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self.stream);
        (Box::new(r), Box::new(w))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }
}

fn label(name: &str, addr: SocketAddr) -> String {
    format!("tls:{name}@{addr}")
}

/// The member name a session's label proves, if it came through [`Links`].
pub fn proven_name(peer_label: &str) -> Option<&str> {
    peer_label.strip_prefix("tls:")?.split('@').next()
}

impl Links {
    /// The links of `me` under `cfg`.
    pub fn new(cfg: &ClusterConfig, me: &Member) -> Result<Self, TlsError> {
        if !cfg.tls.enabled {
            return Ok(Links::Plain);
        }
        let pki = Pki::new(&cfg.tls);
        Ok(Links::Tls(Arc::new(TlsLinks {
            cfg: cfg.clone(),
            acceptor: TlsAcceptor::from(pki.cluster_server(me)?),
            connector: TlsConnector::from(pki.cluster_client(me)?),
        })))
    }

    /// The acceptor the parked node-server listener uses (TLS mode), if any.
    pub fn parked_acceptor(&self) -> Option<TlsAcceptor> {
        match self {
            Links::Plain => None,
            Links::Tls(t) => Some(t.acceptor.clone()),
        }
    }

    /// Dials `peer` at `addr` and hands the connection to the node server.
    pub async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        peer: &str,
        role: Role,
        addr: SocketAddr,
    ) -> Result<(), String> {
        match self {
            Links::Plain => ractor_cluster::client_connect(server, addr)
                .await
                .map_err(|e| e.to_string()),
            Links::Tls(t) => {
                let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let _ = tcp.set_nodelay(true);
                let stream = t
                    .connector
                    .connect(tls::server_name(role, peer)?, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                ractor_cluster::client_connect_external(
                    server,
                    Box::new(Verified {
                        stream,
                        label: label(peer, addr),
                    }),
                )
                .await
                .map_err(|e| e.to_string())
            }
        }
    }
}

impl TlsLinks {
    /// Accepts cluster connections on `listener` until the task is aborted.
    pub fn spawn_listener(
        self: Arc<Self>,
        listener: TcpListener,
        server: ActorRef<NodeServerMessage>,
    ) -> tokio::task::JoinHandle<()> {
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (me, server, permits) = (self.clone(), server.clone(), permits.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    me.accept(tcp, addr, &server).await;
                });
            }
        })
    }

    async fn accept(&self, tcp: TcpStream, addr: SocketAddr, server: &ActorRef<NodeServerMessage>) {
        let m = crate::metrics::get();
        let stream = match tokio::time::timeout(HANDSHAKE, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                m.link_refusals.with_label_values(&["tls_handshake"]).inc();
                tracing::warn!(%addr, error = %e, "cluster link refused: TLS handshake failed");
                return;
            }
            Err(_) => {
                m.link_refusals.with_label_values(&["tls_timeout"]).inc();
                tracing::warn!(%addr, "cluster link refused: TLS handshake timed out");
                return;
            }
        };
        let member = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls::identify(&self.cfg, c));
        let Some(member) = member else {
            m.link_refusals
                .with_label_values(&["unknown_identity"])
                .inc();
            tracing::warn!(%addr, "cluster link refused: the certificate names no member of this cluster");
            return;
        };
        let label = label(&member.name, addr);
        let opened = if member.role == Role::Gateway {
            // A gateway's frames are read first: requests pass, replication and votes end it.
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            tokio::spawn(filter_gateway(
                stream,
                ours,
                member.name.clone(),
                self.cfg.inbound_frame_limit(),
            ));
            NodeServerMessage::ConnectionOpenedExternal {
                stream: Box::new(Verified {
                    stream: theirs,
                    label,
                }),
                is_server: true,
            }
        } else {
            NodeServerMessage::ConnectionOpenedExternal {
                stream: Box::new(Verified { stream, label }),
                is_server: true,
            }
        };
        let _ = server.cast(opened);
    }
}

/// Passes a gateway's session through, frame by frame (u64 big-endian length, then the
/// message), ending it at the first frame a gateway may not send or one over `max_frame` (the
/// node server would end it there anyway).
async fn filter_gateway<S>(tls: S, ours: tokio::io::DuplexStream, gateway: String, max_frame: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tr, mut tw) = tokio::io::split(tls);
    let (mut or, mut ow) = tokio::io::split(ours);
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut or, &mut tw).await;
        let _ = tw.shutdown().await;
    });
    let mut frame = Vec::new();
    while let Ok(len) = tr.read_u64().await {
        if len > max_frame {
            crate::metrics::get()
                .link_refusals
                .with_label_values(&["gateway_frame"])
                .inc();
            tracing::warn!(gateway = %gateway, bytes = len, limit = max_frame, "closing a gateway session that sent a frame over the limit");
            break;
        }
        frame.resize(len as usize, 0);
        if tr.read_exact(&mut frame).await.is_err() {
            break;
        }
        if let Err(why) = crate::wire::gateway_frames::check(&frame) {
            crate::metrics::get()
                .link_refusals
                .with_label_values(&["gateway_frame"])
                .inc();
            tracing::warn!(gateway = %gateway, why = %why, "closing a gateway session that sent what a gateway may not");
            break;
        }
        if ow.write_all(&len.to_be_bytes()).await.is_err() || ow.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = ow.shutdown().await;
    back.abort();
}
