//! The validated configuration: what the rest of the runtime trusts, and what it derives from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    parse, AuthSettings, EntityLimits, FlushPolicy, Limits, Member, Secret, TlsSettings,
    FRAME_ENVELOPE_BYTES,
};
use crate::restart_budget::RestartPolicy;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// Authentication cookie.
    pub cookie: Secret,
    /// Shard count.
    pub shards: u32,
    /// Absolute data directory.
    pub data_dir: PathBuf,
    /// Failure timeout.
    pub failure_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Copies per shard.
    pub replication_factor: usize,
    /// Request deadline.
    pub request_timeout: Duration,
    /// Whether fault injection is allowed.
    pub fault_injection: bool,
    /// Default log level.
    pub log_level: String,
    /// Largest frame between processes, bytes.
    pub max_frame_bytes: usize,
    /// Byte budget of one shard-copy page.
    pub copy_page_bytes: usize,

    /// Flush policy.
    pub flush: FlushPolicy,
    /// sled cache size in bytes.
    pub cache_bytes: u64,
    /// Idle timeout before passivation.
    pub idle_timeout: Duration,
    /// Node-wide cap on active entities.
    pub max_active: usize,
    /// Supervision policy.
    pub restart: RestartPolicy,
    /// Size and idempotency bounds of every entity.
    pub entity_limits: EntityLimits,
    /// Rate, concurrency and connection limits of the gateway.
    pub limits: Limits,
    /// Shard-hosting nodes, in file order.
    pub nodes: Vec<Member>,
    /// The gateway.
    pub gateway: Member,
    /// Gateway HTTP address.
    pub gateway_http: SocketAddr,
    /// TLS settings.
    pub tls: TlsSettings,
    /// Authentication settings.
    pub auth: AuthSettings,
    /// Addresses to dial peers at instead of their cluster ports (not in nodes.toml: `keelson up
    /// --chaos` routes every link through a fault-injecting proxy this way).
    pub dial_via: BTreeMap<String, SocketAddr>,
    /// This process is a node that joins through the seeds (not in nodes.toml: from `keelson
    /// node --host ...`; see [`super::Joining`]).
    pub joining: Option<super::Joining>,
    /// Top-level tables the runtime does not own, as written, by name (see [`super::Section`]).
    pub sections: BTreeMap<String, toml::Table>,
}

impl ClusterConfig {
    /// Largest transport frame a process takes from a peer: `cluster.max_frame_bytes` of
    /// payload plus ractor's envelope. A bigger one ends the session before its bytes are read
    /// (ractor's default is 16 MiB).
    pub fn inbound_frame_limit(&self) -> u64 {
        self.max_frame_bytes as u64 + FRAME_ENVELOPE_BYTES
    }

    /// Names of the shard-hosting nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The member called `name` (node or gateway).
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.nodes
            .iter()
            .chain(std::iter::once(&self.gateway))
            .find(|m| m.name == name)
    }

    /// A top-level table the runtime does not own (`[mqtt]`), as written; its owner reads it.
    pub fn section(&self, name: &str) -> Option<&toml::Table> {
        self.sections.get(name)
    }

    /// Where this process dials the node `m`: its cluster port, or the proxy in front of it.
    pub fn dial_addr(&self, m: &Member) -> SocketAddr {
        self.dial_via
            .get(&m.name)
            .copied()
            .unwrap_or(m.cluster_addr)
    }

    /// Every member: nodes then the gateway.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.nodes.iter().chain(std::iter::once(&self.gateway))
    }

    /// How long answers from a majority let a primary keep serving.
    pub fn lease(&self) -> Duration {
        self.failure_timeout / 4
    }

    /// How long a primary must have been down before it is replaced: longer than its lease.
    pub fn promotion_delay(&self) -> Duration {
        self.failure_timeout * 2 / 5
    }

    /// Data directory of one node.
    pub fn node_data_dir(&self, node: &str) -> PathBuf {
        self.data_dir.join(node)
    }

    /// A small valid config for tests: `nodes` on 127.0.0.1 starting at `base_port`.
    pub fn for_test(nodes: usize, base_port: u16, data_dir: &Path) -> Self {
        let mut text = format!(
            "[cluster]\nname = \"test\"\ncookie = \"test-cookie\"\ndata_dir = \"{}\"\n\
             [gateway]\nhost = \"127.0.0.1\"\nhttp_port = {}\ncluster_port = {}\nops_port = {}\n",
            data_dir.display(),
            base_port,
            base_port + 1,
            base_port + 2
        );
        for i in 0..nodes {
            let p = base_port + 10 + 2 * i as u16;
            text.push_str(&format!(
                "[[node]]\nname = \"n{}\"\nhost = \"127.0.0.1\"\ncluster_port = {}\nops_port = {}\n",
                i + 1,
                p,
                p + 1
            ));
        }
        parse(&text, Path::new("/")).expect("for_test config is valid")
    }
}
