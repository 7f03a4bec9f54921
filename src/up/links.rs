//! `keelson up --chaos`: a fault-injecting proxy in front of every node for every member that
//! dials it, and the control (`keelson chaos latency|partition|heal`) that only an operator or
//! admin of the cluster may use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use keelson_chaos::{LinkControl, LinkMember};
use keelson_runtime::{ClusterConfig, Role};

/// Starts a proxy in front of every node for every member that dials it, and their control on
/// loopback (stopped with the cluster).
pub(super) async fn start_links(
    cfg: &ClusterConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<LinkControl>, SocketAddr)> {
    let members: Vec<LinkMember> = cfg
        .members()
        .map(|m| LinkMember {
            name: m.name.clone(),
            node: m.role == Role::Node,
            cluster_addr: m.cluster_addr,
        })
        .collect();
    let links = LinkControl::start(&members)
        .await
        .context("cannot start the link proxies")?;
    let mut stop = stop;
    let authorize = link_authorizer(cfg)?;
    let (addr, _task) = links
        .clone()
        .serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            authorize,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
        .context("cannot start the link-fault control")?;
    tracing::info!(%addr, proxies = members.len(), "links go through fault proxies (--chaos)");
    Ok((links, addr))
}

/// Who may change links: whoever the gateway lets see the cluster (operator or admin), asked
/// with the caller's own credential; answers are remembered for a second.
fn link_authorizer(cfg: &ClusterConfig) -> anyhow::Result<keelson_chaos::Authorize> {
    let api = keelson_gateway::api_client(cfg, None, Duration::from_secs(3))?;
    let seen: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    Ok(Arc::new(move |header: Option<String>| {
        let (api, seen) = (api.clone(), seen.clone());
        Box::pin(async move {
            let Some(h) = header else { return false };
            if seen
                .lock()
                .expect("cache lock")
                .get(&h)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                return true;
            }
            let ok = api
                .http
                .get(format!("{}/v1/cluster", api.base))
                .header("authorization", &h)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let mut seen = seen.lock().expect("cache lock");
            seen.retain(|_, t| t.elapsed() < Duration::from_secs(1));
            if ok {
                seen.insert(h, Instant::now());
            }
            ok
        })
    }))
}
