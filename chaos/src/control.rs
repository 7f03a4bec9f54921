//! Link proxies and their control: under `keelson up --chaos`, every member reaches every node
//! through a proxy of its own, and a small HTTP control on loopback sets their faults.
//!
//! ```text
//! n1 ──▶ proxy(n1→n2) ──▶ n2          keelson chaos latency|partition|heal|status
//! n2 ──▶ proxy(n2→n1) ──▶ n1                     │ HTTP (address in the run file)
//! gateway ──▶ proxy(gateway→n1) ──▶ n1           ▼
//!                                      LinkControl: LinkTable ─▶ every proxy's Faults
//! ```
//!
//! `GET /links` lists the active link faults; `POST /links/latency`, `/links/partition` and
//! `/links/heal` change them and answer with the new list (400 with the reason, and no change,
//! when a request cannot apply).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;
use warp::Filter;

use crate::faults::{read_run_file, FaultError};
use crate::links::{LinkError, LinkFault, LinkTable};
use crate::proxy::Proxy;

/// A member whose links go through proxies.
#[derive(Debug, Clone)]
pub struct LinkMember {
    /// Name.
    pub name: String,
    /// Whether it is a node (members dial nodes; nobody dials a gateway).
    pub node: bool,
    /// Its cluster address.
    pub cluster_addr: SocketAddr,
}

struct LinkProxy {
    dialer: String,
    target: String,
    proxy: Proxy,
}

/// Every link proxy of a cluster and the faults on them.
pub struct LinkControl {
    table: Mutex<LinkTable>,
    proxies: Vec<LinkProxy>,
}

/// `POST /links/latency`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyRequest {
    /// One side.
    pub a: Vec<String>,
    /// The other side.
    pub b: Vec<String>,
    /// Added to each direction, ms.
    pub delay_ms: u64,
    /// Jitter around it, ms.
    #[serde(default)]
    pub jitter_ms: u64,
}

/// `POST /links/partition`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRequest {
    /// One side.
    pub a: Vec<String>,
    /// The other side.
    pub b: Vec<String>,
    /// Cut only traffic from `a` to `b`.
    #[serde(default)]
    pub one_way: bool,
}

/// The answer to every control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkState {
    /// Members whose links are proxied.
    pub members: Vec<String>,
    /// Active faults, one per direction.
    pub faults: Vec<LinkFault>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody {
    error: String,
}

impl LinkControl {
    /// Starts one proxy for every (member, node) pair, each listening on the node's host.
    pub async fn start(members: &[LinkMember]) -> std::io::Result<Arc<Self>> {
        let mut proxies = Vec::new();
        for dialer in members {
            for target in members.iter().filter(|t| t.node && t.name != dialer.name) {
                let listen = SocketAddr::new(target.cluster_addr.ip(), 0);
                proxies.push(LinkProxy {
                    dialer: dialer.name.clone(),
                    target: target.name.clone(),
                    proxy: Proxy::start(listen, target.cluster_addr).await?,
                });
            }
        }
        let names = members.iter().map(|m| m.name.clone()).collect();
        Ok(Arc::new(Self {
            table: Mutex::new(LinkTable::new(names)),
            proxies,
        }))
    }

    /// The addresses `dialer` must dial its peers at, as `(node, proxy address)`.
    pub fn dial_via(&self, dialer: &str) -> Vec<(String, SocketAddr)> {
        self.proxies
            .iter()
            .filter(|p| p.dialer == dialer)
            .map(|p| (p.target.clone(), p.proxy.addr()))
            .collect()
    }

    fn state(&self, table: &LinkTable) -> LinkState {
        LinkState {
            members: table.members().to_vec(),
            faults: table.active(),
        }
    }

    fn change(
        &self,
        f: impl FnOnce(&mut LinkTable) -> Result<(), LinkError>,
    ) -> Result<LinkState, LinkError> {
        let mut table = self.table.lock().expect("link table lock");
        // Edit a copy so a refused request changes nothing.
        let mut next = table.clone();
        f(&mut next)?;
        *table = next;
        for p in &self.proxies {
            p.proxy.set(table.proxy_faults(&p.dialer, &p.target));
        }
        tracing::info!(faults = table.active().len(), "link faults changed");
        Ok(self.state(&table))
    }

    /// Applies a latency request.
    pub fn latency(&self, r: &LatencyRequest) -> Result<LinkState, LinkError> {
        self.change(|t| {
            t.set_latency(
                &r.a,
                &r.b,
                Duration::from_millis(r.delay_ms),
                Duration::from_millis(r.jitter_ms),
            )
        })
    }

    /// Applies a partition request.
    pub fn partition(&self, r: &PartitionRequest) -> Result<LinkState, LinkError> {
        self.change(|t| t.partition(&r.a, &r.b, r.one_way))
    }

    /// Removes every link fault.
    pub fn heal(&self) -> LinkState {
        self.change(|t| {
            t.heal();
            Ok(())
        })
        .expect("heal cannot fail")
    }

    /// The active faults.
    pub fn current(&self) -> LinkState {
        self.state(&self.table.lock().expect("link table lock"))
    }

    /// Serves the control on `listen` until `shutdown`, every request first passed to
    /// `authorize` with its `Authorization` header; returns the bound address.
    pub async fn serve(
        self: Arc<Self>,
        listen: SocketAddr,
        authorize: Authorize,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let guard = warp::header::optional::<String>("authorization")
            .and_then(move |h: Option<String>| {
                let authorize = authorize.clone();
                async move {
                    if authorize(h).await {
                        Ok(())
                    } else {
                        Err(warp::reject::custom(Denied))
                    }
                }
            })
            .untuple_one();
        let addr = listener.local_addr()?;
        let reply = |r: Result<LinkState, LinkError>| match r {
            Ok(state) => warp::reply::with_status(warp::reply::json(&state), StatusCode::OK),
            Err(e) => warp::reply::with_status(
                warp::reply::json(&ErrorBody {
                    error: e.to_string(),
                }),
                StatusCode::BAD_REQUEST,
            ),
        };
        let c = self.clone();
        let list = warp::path!("links")
            .and(warp::get())
            .map(move || reply(Ok(c.current())));
        let c = self.clone();
        let latency = warp::path!("links" / "latency")
            .and(warp::post())
            .and(warp::body::content_length_limit(64 * 1024))
            .and(warp::body::json())
            .map(move |r: LatencyRequest| reply(c.latency(&r)));
        let c = self.clone();
        let partition = warp::path!("links" / "partition")
            .and(warp::post())
            .and(warp::body::content_length_limit(64 * 1024))
            .and(warp::body::json())
            .map(move |r: PartitionRequest| reply(c.partition(&r)));
        let c = self;
        let heal = warp::path!("links" / "heal")
            .and(warp::post())
            .map(move || reply(Ok(c.heal())));
        let routes = guard
            .and(list.or(latency).or(partition).or(heal))
            .recover(|r: warp::Rejection| async move {
                if r.find::<Denied>().is_some() {
                    Ok(warp::reply::with_status(
                        warp::reply::json(&ErrorBody {
                            error: "the link control needs an operator or admin key (`Authorization: Bearer <key>`)".into(),
                        }),
                        StatusCode::FORBIDDEN,
                    ))
                } else {
                    Err(r)
                }
            });
        let task = tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(shutdown)
                .run(),
        );
        Ok((addr, task))
    }
}

/// Decides whether a request's `Authorization` header may change links.
pub type Authorize = Arc<
    dyn Fn(Option<String>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

#[derive(Debug)]
struct Denied;
impl warp::reject::Reject for Denied {}

/// Talks to the link control of a cluster started with `keelson up --chaos`.
#[derive(Debug, Clone)]
pub struct LinkClient {
    base: String,
    http: reqwest::Client,
}

impl LinkClient {
    /// Finds the control through the run file of the cluster running from `data_dir`; `http`
    /// carries an operator's or admin's key.
    pub fn for_cluster(data_dir: &Path, http: reqwest::Client) -> Result<Self, FaultError> {
        let run = read_run_file(data_dir)?;
        let addr = run
            .chaos_control
            .ok_or_else(|| FaultError::NoLinkProxies(data_dir.to_path_buf()))?;
        Ok(Self {
            base: format!("http://{addr}"),
            http,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<LinkState, FaultError> {
        let resp = req
            .send()
            .await
            .map_err(|e| FaultError::Links(format!("link control unreachable: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| FaultError::Links(e.to_string()))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| FaultError::Links(e.to_string()))
        } else {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            Err(FaultError::Links(msg))
        }
    }

    /// Active link faults.
    pub async fn list(&self) -> Result<LinkState, FaultError> {
        self.send(self.http.get(format!("{}/links", self.base)))
            .await
    }

    /// Adds latency between two groups.
    pub async fn latency(&self, r: &LatencyRequest) -> Result<LinkState, FaultError> {
        self.send(
            self.http
                .post(format!("{}/links/latency", self.base))
                .json(r),
        )
        .await
    }

    /// Partitions two groups.
    pub async fn partition(&self, r: &PartitionRequest) -> Result<LinkState, FaultError> {
        self.send(
            self.http
                .post(format!("{}/links/partition", self.base))
                .json(r),
        )
        .await
    }

    /// Removes every link fault.
    pub async fn heal(&self) -> Result<LinkState, FaultError> {
        self.send(self.http.post(format!("{}/links/heal", self.base)))
            .await
    }
}
