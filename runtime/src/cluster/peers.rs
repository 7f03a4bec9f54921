//! Who a member watches, from the shard map's members: the seed nodes at the addresses
//! nodes.toml gives them, the nodes that joined at the addresses they advertised (a DNS name is
//! resolved here, again every few seconds, so a peer that restarts with a new IP is found).
//!
//! ```text
//! map (members, addrs) ─changed / every 10 s─▶ resolve ─▶ differs? ─▶ MembershipMsg::Peers
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;

use crate::cluster::membership::{MembershipMsg, Peer};
use crate::cluster::support::Support;
use crate::config::{ClusterConfig, Role};
use keelson_rules::shard_map::ShardMap;

/// How often names are resolved again while the map stays the same.
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// Keeps `membership` watching the map's nodes (all but `me`) until the map's sender closes.
pub(crate) fn follow(
    cfg: &ClusterConfig,
    me: &str,
    mut map: watch::Receiver<Arc<ShardMap>>,
    membership: ActorRef<MembershipMsg>,
    support: Support,
) -> tokio::task::JoinHandle<()> {
    let seeds: HashMap<String, Seed> = cfg
        .nodes
        .iter()
        .map(|n| {
            // A `--dial-via` proxy or an IP address is dialled as is; a DNS name is resolved.
            let fixed = (cfg.dial_via.contains_key(&n.name)
                || n.host.parse::<std::net::IpAddr>().is_ok())
            .then(|| cfg.dial_addr(n));
            let seed = Seed {
                fixed,
                host: n.host.clone(),
                port: n.cluster_addr.port(),
            };
            (n.name.clone(), seed)
        })
        .collect();
    let me = me.to_string();
    tokio::spawn(async move {
        let mut last: Option<Vec<Peer>> = None;
        let mut every = tokio::time::interval(RESOLVE_EVERY);
        loop {
            let current = map.borrow_and_update().clone();
            // A node that restarted does not remember whom it supported: members that joined
            // are assumed supported at start, like the seeds.
            support.assume_given(current.nodes());
            let peers = resolve(&current, &me, &seeds).await;
            if last.as_ref() != Some(&peers) {
                if membership
                    .send_message(MembershipMsg::Peers(peers.clone()))
                    .is_err()
                {
                    return;
                }
                last = Some(peers);
            }
            tokio::select! {
                r = map.changed() => if r.is_err() { return },
                _ = every.tick() => {}
            }
        }
    })
}

/// A seed node as nodes.toml gives it.
struct Seed {
    /// Dialled as is: a `--dial-via` proxy, or an IP address.
    fixed: Option<SocketAddr>,
    host: String,
    port: u16,
}

/// The map's nodes but `me`, each at its address: a seed's from nodes.toml, a joined node's
/// as it advertised it, DNS names resolved now. A name that does not resolve is left out (and
/// logged) until it does.
async fn resolve(map: &ShardMap, me: &str, seeds: &HashMap<String, Seed>) -> Vec<Peer> {
    let mut peers = Vec::new();
    for name in map.nodes().iter().filter(|n| *n != me) {
        let addr = match (seeds.get(name), map.addr(name)) {
            (Some(Seed { fixed: Some(a), .. }), None) => Some(*a),
            (Some(seed), None) => lookup(&seed.host, seed.port).await,
            (_, Some(a)) => lookup(&a.host, a.cluster_port).await,
            (None, None) => None,
        };
        match addr {
            Some(addr) => peers.push(Peer {
                name: name.clone(),
                role: Role::Node,
                addr,
                dial: true,
            }),
            None => {
                tracing::warn!(peer = %name, "cannot resolve the address of a member; not dialling it until it resolves")
            }
        }
    }
    peers
}

/// The first address `host` resolves to (an IP address is its own).
async fn lookup(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((host, port)),
    )
    .await
    {
        // IPv4 first: `localhost` often lists ::1 before 127.0.0.1, where nodes bind.
        Ok(Ok(addrs)) => {
            let all: Vec<SocketAddr> = addrs.collect();
            all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
        }
        Ok(Err(e)) => {
            tracing::debug!(host, error = %e, "name does not resolve");
            None
        }
        Err(_) => None,
    }
}
