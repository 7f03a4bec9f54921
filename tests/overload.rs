//! Overload degrades gracefully: 10,000 simultaneous connections are all answered (a success or
//! a clean 503, never a reset) within the request deadline, and slow-header clients holding
//! thousands of connections do not delay a normal client. Real processes, real TLS.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use serde_json::json;
use support::{serial, Cluster, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raises this process's open-file limit (as root, the hard limit too) so it can hold the
/// client side of every connection; returns the soft limit in force.
fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with an owned struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let raised = libc::rlimit {
            rlim_cur: want.max(lim.rlim_cur),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn tls(c: &Cluster) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(c.dir.join("data/tls/ca.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn gateway_addr(c: &Cluster) -> std::net::SocketAddr {
    c.cfg.gateway_http
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn open(
    tls: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tls.connect(name, tcp).await
}

/// Sends one GET on `conn` and reads the status of its answer.
async fn get(conn: &mut Tls, path: &str, key: &str) -> std::io::Result<u16> {
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {key}\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    // TLS records may sit in the client's buffer until flushed.
    conn.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_simultaneous_connections_are_all_answered_without_a_reset() {
    const CONNECTIONS: usize = 10_000;
    let _guard = serial().await;
    let limit = raise_open_files(65_536);
    assert!(
        limit as usize > CONNECTIONS + 2_000,
        "this process may open only {limit} files; the test needs {CONNECTIONS} connections"
    );
    let c = Cluster::start("ten-k", Settings::default()).await;
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(&json!({"id": "hot", "name": "H"}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, _, info) = c.req("GET", "/v1/cluster", None).await;
    let open_files = info["gateway_limits"]["open_files"].as_u64().unwrap();
    assert!(
        open_files as usize > CONNECTIONS,
        "gateway open-file limit {open_files}"
    );

    let connector = tls(&c);
    let addr = gateway_addr(&c);
    // Open every connection (TLS included) and hold it.
    let started = Instant::now();
    let opened = futures_util::future::join_all((0..CONNECTIONS).map(|_| {
        let connector = connector.clone();
        async move {
            for attempt in 0..3 {
                match open(&connector, addr).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) if attempt == 2 => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            unreachable!()
        }
    }))
    .await;
    let mut conns = Vec::with_capacity(CONNECTIONS);
    let mut open_failures = Vec::new();
    for r in opened {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => open_failures.push(e.to_string()),
        }
    }
    let open_time = started.elapsed();
    assert!(
        open_failures.is_empty(),
        "{} connections failed to open: {:?}",
        open_failures.len(),
        &open_failures[..open_failures.len().min(5)]
    );
    // Then one request on every connection at once.
    let key = c.admin_key.clone();
    let fired = Instant::now();
    let results = futures_util::future::join_all(conns.iter_mut().map(|conn| {
        let key = key.clone();
        async move {
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                get(conn, "/v1/customers/hot", &key),
            )
            .await;
            (r, t.elapsed())
        }
    }))
    .await;
    let total = fired.elapsed();
    let (mut ok, mut shed, mut other, mut broken) = (0, 0, Vec::new(), Vec::new());
    let mut latencies = Vec::new();
    for (r, took) in results {
        latencies.push(took);
        match r {
            Ok(Ok(200)) => ok += 1,
            Ok(Ok(503)) => shed += 1,
            Ok(Ok(s)) => other.push(s),
            Ok(Err(e)) => broken.push(e.to_string()),
            Err(_) => broken.push("no answer in 30 s".into()),
        }
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "10k connections: opened in {open_time:?}; {ok} ok, {shed} shed (503), answered in {total:?}; p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies.last().unwrap()
    );
    for series in [
        "keelson_tls_handshakes_total{result=\"ok\"}",
        "keelson_tls_handshakes_total{result=\"timeout\"}",
        "keelson_tls_handshakes_total{result=\"failed\"}",
        "keelson_http_shed_total{reason=\"in_flight\"}",
        "keelson_http_shed_total{reason=\"connections\"}",
    ] {
        println!("  gateway {series} = {}", c.metric("gateway", series).await);
    }
    assert!(
        broken.is_empty(),
        "{} connections broke: {:?}",
        broken.len(),
        &broken[..broken.len().min(5)]
    );
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(ok + shed, CONNECTIONS);
    assert!(ok > 0);
    let deadline = c.cfg.request_timeout + Duration::from_secs(5);
    assert!(
        *latencies.last().unwrap() < deadline,
        "slowest answer took {:?}",
        latencies.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_do_not_delay_a_normal_client() {
    const SLOW: usize = 3_000;
    let _guard = serial().await;
    raise_open_files(65_536);
    let c = Cluster::start("slowloris", Settings::default()).await;
    let (s, _, v) = c
        .req(
            "POST",
            "/v1/customers",
            Some(&json!({"id": "calm", "name": "C"}).to_string()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let measure = |label: &'static str| {
        let c = &c;
        async move {
            let mut l = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let (s, _, _) = c.req("GET", "/v1/customers/calm", None).await;
                assert_eq!(s, 200, "{label}");
                l.push(t.elapsed());
            }
            l.sort();
            (percentile(&l, 0.5), percentile(&l, 0.99))
        }
    };
    let (base50, base99) = measure("baseline").await;
    // Thousands of clients that finish the handshake and then send their headers a byte at a
    // time, never completing them.
    let connector = tls(&c);
    let addr = gateway_addr(&c);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let (connector, stop, holding) = (connector.clone(), stop.clone(), holding.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = open(&connector, addr).await else {
                    return;
                };
                if conn
                    .write_all(b"GET /v1/customers/calm HTTP/1.1\r\n")
                    .await
                    .is_ok()
                    && conn.flush().await.is_ok()
                {
                    holding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    if conn.write_all(b"x").await.is_err() || conn.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect();
    support::wait_for(
        "the slow clients holding their connections",
        Duration::from_secs(60),
        || {
            let n = holding.load(std::sync::atomic::Ordering::Relaxed);
            async move { (n >= SLOW * 9 / 10).then_some(()) }
        },
    )
    .await;
    let (flood50, flood99) = measure("under the slow-header flood").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in slow {
        let _ = t.await;
    }
    println!("slow-header flood of {SLOW}: normal client p50 {base50:?} -> {flood50:?}, p99 {base99:?} -> {flood99:?}");
    assert!(
        flood50 < base50 + Duration::from_millis(100),
        "median {base50:?} -> {flood50:?}"
    );
    assert!(
        flood99 < base99 + Duration::from_millis(100),
        "p99 {base99:?} -> {flood99:?}"
    );
}
