//! Joining the cluster as one process: the ractor_cluster node server bound to this member's own
//! address with cookie auth, the heartbeat responder, and the membership actor that dials, pings
//! and decides who is up. Nodes and gateways both start here; [`ClusterMember::leave`] stops them
//! in reverse order.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::cluster::heartbeat::{HeartbeatResponder, ResponderArgs};
use crate::cluster::lease::Lease;
use crate::cluster::links::Links;
use crate::cluster::load::Load;
use crate::cluster::membership::{
    ClusterView, Membership, MembershipArgs, MembershipMsg, Peer, SessionEvents,
};
use crate::cluster::support::Support;
use crate::config::{ClusterConfig, Member, Role};
use crate::wire::HeartbeatRpc;
use crate::RuntimeError;

/// Where the node server's own (unused, see `links`) listener is parked: an ephemeral port on a
/// loopback address members do not use, so it can never take a port another member is about to
/// bind on 127.0.0.1.
const PARKED_LISTENER_IP: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 254));

/// A process's place in the cluster.
#[derive(Debug)]
pub struct ClusterMember {
    /// This member.
    pub me: Member,
    node_server: ActorRef<NodeServerMessage>,
    responder: ActorRef<HeartbeatRpc>,
    membership: ActorRef<MembershipMsg>,
    view: watch::Receiver<ClusterView>,
    map_version: Arc<AtomicU64>,
    lease: Lease,
    support: Support,
    load: Load,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    peers_task: Option<tokio::task::JoinHandle<()>>,
}

impl ClusterMember {
    /// Starts the transport and membership for `me`.
    pub async fn join(cfg: &ClusterConfig, me: &Member) -> Result<Self, RuntimeError> {
        let links = Links::new(cfg, me)?;
        let (server, listener) = node_server(cfg, me, &links).await?;
        let (node_server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| RuntimeError::Spawn("node server", e.to_string()))?;
        let accept_task = match (&links, listener) {
            (Links::Tls(t), Some(l)) => Some(t.clone().spawn_listener(l, node_server.clone())),
            _ => None,
        };
        let incarnation = now_ms();
        let map_version = Arc::new(AtomicU64::new(0));
        let lease = Lease::default();
        let support = Support::new(cfg.nodes.iter().map(|n| &n.name));
        let load = Load::default();
        let (responder, _) = Actor::spawn(
            None,
            HeartbeatResponder,
            ResponderArgs {
                name: me.name.clone(),
                role: me.role,
                incarnation,
                map_version: map_version.clone(),
                load: load.clone(),
                support: support.clone(),
            },
        )
        .await
        .map_err(|e| RuntimeError::Spawn("heartbeat responder", e.to_string()))?;
        let (view_tx, view) = watch::channel(ClusterView {
            me: me.name.clone(),
            members: vec![],
            made: None,
        });
        let args = MembershipArgs {
            me: me.name.clone(),
            role: me.role,
            incarnation,
            peers: peers(cfg, me),
            node_server: node_server.clone(),
            failure_timeout: cfg.failure_timeout,
            heartbeat_interval: cfg.heartbeat_interval,
            view: view_tx,
            map_version: map_version.clone(),
            lease: lease.clone(),
            support: support.clone(),
            quorum: cfg.node_names(),
            lease_duration: cfg.lease(),
            links: links.clone(),
        };
        let membership = start_membership(args, &node_server, &links).await?;
        tracing::info!(member = %me.name, addr = %me.cluster_addr, "joined the cluster transport");
        Ok(Self {
            me: me.clone(),
            node_server,
            responder,
            membership,
            view,
            map_version,
            lease,
            support,
            load,
            accept_task,
            peers_task: None,
        })
    }

    /// Watches the members `map` names from now on (nodes that join, move or leave), not only
    /// the seed nodes of nodes.toml.
    pub fn follow_map(
        &mut self,
        cfg: &ClusterConfig,
        map: watch::Receiver<Arc<keelson_rules::shard_map::ShardMap>>,
    ) {
        if let Some(t) = self.peers_task.take() {
            t.abort();
        }
        self.peers_task = Some(crate::cluster::peers::follow(
            cfg,
            &self.me.name,
            map,
            self.membership.clone(),
            self.support.clone(),
        ));
    }

    /// A receiver of the membership view.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Where this process records the shard-map version it has applied (told to peers in pongs).
    pub fn map_version(&self) -> Arc<AtomicU64> {
        self.map_version.clone()
    }

    /// This process's load counters (reported in heartbeat answers).
    pub fn load(&self) -> Load {
        self.load.clone()
    }

    /// This node's primary lease.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// The lease support this node gave and its peers report.
    pub fn support(&self) -> Support {
        self.support.clone()
    }

    /// Stops membership, the responder and the transport, in that order.
    pub async fn leave(self) {
        let wait = Some(Duration::from_secs(2));
        if let Some(t) = &self.accept_task {
            t.abort();
        }
        if let Some(t) = &self.peers_task {
            t.abort();
        }
        let _ = self.membership.stop_and_wait(None, wait).await;
        let _ = self.responder.stop_and_wait(None, wait).await;
        let _ = self.node_server.stop_and_wait(None, wait).await;
        tracing::info!(member = %self.me.name, "left the cluster transport");
    }
}

/// The ractor_cluster node server for `me`, and the listener that takes the cluster port when
/// links are TLS (the node server's own listener is then parked; see `links`).
async fn node_server(
    cfg: &ClusterConfig,
    me: &Member,
    links: &Links,
) -> Result<(NodeServer, Option<tokio::net::TcpListener>), RuntimeError> {
    let bind_err = |e| RuntimeError::Bind {
        what: "cluster",
        addr: me.cluster_addr,
        source: e,
    };
    let server = |port, encryption, listen_ip| {
        NodeServer::new(
            port,
            cfg.cookie.expose().to_string(),
            me.name.clone(),
            me.cluster_addr.ip().to_string(),
            encryption,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen_ip)
        .with_max_inbound_frame_size(cfg.inbound_frame_limit())
    };
    match links.parked_acceptor() {
        // ractor_cluster binds inside an actor and only logs a failure: check the port first so
        // the error reaches the operator.
        None => {
            drop(std::net::TcpListener::bind(me.cluster_addr).map_err(bind_err)?);
            Ok((
                server(me.cluster_addr.port(), None, me.cluster_addr.ip()),
                None,
            ))
        }
        // Our own listener takes the cluster port; the node server's is parked (see links).
        Some(acceptor) => {
            let listener = tokio::net::TcpListener::bind(me.cluster_addr)
                .await
                .map_err(bind_err)?;
            let tls = Some(IncomingEncryptionMode::Tls(acceptor));
            Ok((server(0, tls, PARKED_LISTENER_IP), Some(listener)))
        }
    }
}

/// Nodes watch and dial every other node; a gateway watches and dials every node. Nodes do not
/// watch gateways: a gateway's absence changes nothing they do.
/// A seed named by DNS is dialled once [`ClusterMember::follow_map`] has resolved it.
fn peers(cfg: &ClusterConfig, me: &Member) -> Vec<Peer> {
    cfg.nodes
        .iter()
        .filter(|n| n.name != me.name)
        .filter(|n| {
            cfg.dial_via.contains_key(&n.name) || n.host.parse::<std::net::IpAddr>().is_ok()
        })
        .map(|n| Peer {
            name: n.name.clone(),
            role: Role::Node,
            addr: cfg.dial_addr(n),
            dial: true,
        })
        .collect()
}

/// Starts membership and subscribes it to the node server's session events.
async fn start_membership(
    args: MembershipArgs,
    node_server: &ActorRef<NodeServerMessage>,
    links: &Links,
) -> Result<ActorRef<MembershipMsg>, RuntimeError> {
    let (membership, _) = Actor::spawn(None, Membership, args)
        .await
        .map_err(|e| RuntimeError::Spawn("membership", e.to_string()))?;
    node_server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "keelson.membership".to_string(),
            subscription: Box::new(SessionEvents {
                membership: membership.clone(),
                require_tls: matches!(links, Links::Tls(_)),
            }),
        })
        .map_err(|e| RuntimeError::Spawn("session subscription", e.to_string()))?;
    Ok(membership)
}
