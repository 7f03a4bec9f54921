//! The API's listener: accepts TCP, does the TLS handshake in each connection's own task (with a
//! deadline, so a stalled or garbage handshake holds up nobody else), then serves HTTP/1.1 and
//! HTTP/2 with hyper over the warp filter. warp 0.4 has no TLS of its own and sets no hyper timer,
//! so both are done here; the header-read timeout bounds slow clients.
//!
//! ```text
//! accept ─▶ connection cap ─▶ spawn ─▶ TLS handshake (10 s) ─▶ hyper auto (h1/h2, header
//!   timeout: also the keep-alive idle limit) ─▶ warp filter (body timeout) ─▶ routes
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::Filter;

use crate::body;
use crate::handler::Ctx;
use crate::metrics;

/// Longest TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Longest wait for open connections at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Reads the body under its cap and hands the request to the router.
async fn serve_one<S, B>(
    ctx: Arc<Ctx>,
    method: warp::http::Method,
    path: String,
    query: String,
    headers: warp::http::HeaderMap,
    len: Option<u64>,
    stream: S,
) -> warp::http::Response<warp::hyper::body::Bytes>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send,
    B: bytes::Buf,
{
    // A declared length over the cap is refused unread unless it is small enough to drain.
    let cap = body::cap_for(method.as_str(), &path);
    let body = if len.is_some_and(|l| l > 1024 * 1024) {
        Err(body::too_large(cap))
    } else {
        let deadline = ctx.cfg.limits.body_timeout;
        match tokio::time::timeout(deadline, body::read_capped(Box::pin(stream), cap)).await {
            Ok(read) => read,
            Err(_) => {
                metrics::http()
                    .shed
                    .with_label_values(&["body_timeout"])
                    .inc();
                Err(body::too_slow(deadline))
            }
        }
    };
    crate::routes::handle(ctx, method, path, query, headers, body).await
}

/// Serves the API on `listener` until `stop` resolves; TLS when `tls` is given.
pub async fn serve(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()>,
) {
    let header_read = ctx.cfg.limits.header_timeout;
    // Each connection holds a permit; at the cap a new connection is closed at once (counted)
    // instead of holding a file and memory the gateway does not have.
    let connections = Arc::new(tokio::sync::Semaphore::new(ctx.cfg.limits.max_connections));
    let api = warp::any()
        .map(move || ctx.clone())
        .and(warp::method())
        .and(warp::path::full().map(|p: warp::path::FullPath| p.as_str().to_string()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(serve_one);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::http()
                .shed
                .with_label_values(&["connections"])
                .inc();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(warp::service(api.clone()));
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(tcp, svc, watcher, header_read).await,
                Some(acceptor) => {
                    let m = &metrics::http().tls_handshakes;
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            m.with_label_values(&["ok"]).inc();
                            serve_conn(stream, svc, watcher, header_read).await
                        }
                        Ok(Err(e)) => {
                            m.with_label_values(&["failed"]).inc();
                            tracing::debug!(error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            m.with_label_values(&["timeout"]).inc();
                            tracing::debug!("TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
}

async fn serve_conn<I, S, B>(io: I, svc: S, watcher: Watcher, header_read: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new());
    let conn = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
