//! `nodes.toml`: the cluster's configuration as data, then a validator that reports every problem
//! with its path and turns the raw file into a [`ClusterConfig`] the rest of the runtime trusts.
//!
//! Defaults live in one place: the `default_*` functions below.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::restart_budget::RestartPolicy;

mod iot;
mod limits;
mod security;
pub use iot::{BrokerLocation, IotConfig, MqttConfig, RawIot, RawMqtt, RawRange};
pub use limits::{
    validate as validate_limits, EntityLimits, Limits, RateLimit, RawLimits, RawRate, Retention,
};
pub use security::{
    read_secret, write_secret, AuthSettings, JwtSettings, PublicKeyAlgorithm, RawAuth, RawJwt,
    RawTls, Secret, TlsSettings, ADMIN_KEY_ENV, API_KEY_ENV, COOKIE_ENV, EXAMPLE_COOKIE,
};

/// The file as written. Every field is documented in `nodes.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Cluster-wide settings.
    pub cluster: RawCluster,
    /// The gateway process.
    pub gateway: RawGateway,
    /// Storage settings.
    #[serde(default)]
    pub storage: RawStorage,
    /// Entity lifecycle and supervision.
    #[serde(default)]
    pub entities: RawEntities,
    /// The shard-hosting nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<RawNode>,
    /// Devices' MQTT broker and the bridge's edge limits; absent: no MQTT.
    #[serde(default)]
    pub mqtt: Option<RawMqtt>,
    /// Anomaly detection.
    #[serde(default)]
    pub iot: RawIot,
    /// TLS on the API and the cluster links.
    #[serde(default)]
    pub tls: RawTls,
    /// Who may call the API.
    #[serde(default)]
    pub auth: RawAuth,
    /// Rate limits, concurrency and connection limits of the gateway.
    #[serde(default)]
    pub limits: RawLimits,
}

/// Largest `entities.max_state_bytes` allowed: an entity's value must fit in one frame between
/// nodes with room to spare.
pub const MAX_STATE_BYTES: u64 = 8 * 1024 * 1024;

/// `[cluster]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Name of the cluster; part of every node's identity.
    pub name: String,
    /// Shared secret every process proves it knows before joining (on top of its certificate).
    /// Prefer `cookie_file` or `KEELSON_COOKIE`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// File holding the cookie, relative to this file.
    #[serde(default)]
    pub cookie_file: Option<PathBuf>,
    /// Number of shards (fixed for the life of the data).
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Directory holding each node's data and the cluster's logs, relative to this file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A peer silent this long is marked down.
    #[serde(default = "default_failure_timeout_ms")]
    pub failure_timeout_ms: u64,
    /// How often each process pings each peer.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Copies of every shard (primary plus followers); capped at the node count.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    /// Deadline of one request from the gateway to a node.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Lets `/v1/debug/fault` make an entity panic or fail. Never enable in production.
    #[serde(default)]
    pub fault_injection: bool,
    /// Log level when `RUST_LOG` is unset.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Largest frame a process sends to or takes from a peer, in bytes; a bigger one is refused.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u64,
    /// A shard-copy page stops adding records once it holds this many bytes (at least one record).
    #[serde(default = "default_copy_page_bytes")]
    pub copy_page_bytes: u64,
}

/// Smallest `cluster.max_frame_bytes`.
pub const MIN_FRAME_BYTES: u64 = 1 << 20;
/// Largest `cluster.max_frame_bytes`: the codec refuses to decode more than 64 MiB.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;
/// Room in a frame beyond its values: names, ids, encodings, ractor's own envelope.
pub const FRAME_ENVELOPE_BYTES: u64 = 64 << 10;

/// About how many bytes the shard map of `shards` shards takes as one frame (JSON, a primary,
/// `rf - 1` followers and a learner per shard, names up to 32 bytes).
pub fn shard_map_bytes(shards: u32, rf: usize) -> u64 {
    u64::from(shards) * (48 + 36 * (rf as u64 + 1)) + 4096
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Process name in the cluster.
    #[serde(default = "default_gateway_name")]
    pub name: String,
    /// IP address every gateway port binds to.
    pub host: String,
    /// Port of the public HTTP API.
    pub http_port: u16,
    /// Port for cluster traffic.
    pub cluster_port: u16,
    /// Port of `/metrics`, `/health`, `/ready`.
    pub ops_port: u16,
    /// IP address the ops port binds to; default: `host` when it is loopback, else 127.0.0.1.
    #[serde(default)]
    pub ops_host: Option<String>,
}

/// `[[node]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Unique node name: lower-case letters, digits and `-`.
    pub name: String,
    /// IP address the node binds to.
    pub host: String,
    /// Port for cluster traffic.
    pub cluster_port: u16,
    /// Port of `/metrics`, `/health`, `/ready`.
    pub ops_port: u16,
    /// IP address the ops port binds to; default: `host` when it is loopback, else 127.0.0.1.
    #[serde(default)]
    pub ops_host: Option<String>,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `"on_write"`: every write is fsynced (group commit) before it is acknowledged.
    /// `"periodic"`: writes are flushed every `flush_interval_ms`; a crash may lose that window.
    #[serde(default = "default_flush")]
    pub flush: String,
    /// Flush period for `flush = "periodic"`.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// sled page cache per node, in MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            flush: default_flush(),
            flush_interval_ms: default_flush_interval_ms(),
            cache_mb: default_cache_mb(),
        }
    }
}

/// `[entities]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntities {
    /// An entity idle this long is passivated.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Most entities active on one node; the least recently used is passivated beyond it.
    #[serde(default = "default_max_active")]
    pub max_active: usize,
    /// Restarts allowed in `restart_window_secs` before quarantine.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Window of the restart budget.
    #[serde(default = "default_restart_window_secs")]
    pub restart_window_secs: u64,
    /// First restart delay; doubles per failure in the window.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Longest restart delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How long a quarantined entity refuses requests.
    #[serde(default = "default_quarantine_secs")]
    pub quarantine_secs: u64,
    /// Largest encoded state one entity may persist, in bytes; a write past it is refused.
    #[serde(default = "default_max_state_bytes")]
    pub max_state_bytes: u64,
    /// How long an entity remembers an idempotency key (and the reply it got).
    #[serde(default = "default_idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
    /// How many idempotency keys each entity remembers; the oldest are forgotten first.
    #[serde(default = "default_idempotency_keys")]
    pub idempotency_keys: usize,
}

impl Default for RawEntities {
    fn default() -> Self {
        Self {
            idle_timeout_secs: default_idle_timeout_secs(),
            max_active: default_max_active(),
            max_restarts: default_max_restarts(),
            restart_window_secs: default_restart_window_secs(),
            backoff_base_ms: default_backoff_base_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            quarantine_secs: default_quarantine_secs(),
            max_state_bytes: default_max_state_bytes(),
            idempotency_ttl_secs: default_idempotency_ttl_secs(),
            idempotency_keys: default_idempotency_keys(),
        }
    }
}

fn default_shards() -> u32 {
    256
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_failure_timeout_ms() -> u64 {
    1000
}
fn default_heartbeat_interval_ms() -> u64 {
    150
}
fn default_replication_factor() -> usize {
    2
}
fn default_request_timeout_ms() -> u64 {
    5000
}
fn default_log_level() -> String {
    "info".to_string()
}
/// 4 MiB: four times the default entity limit, so a copy page (1 MiB) and the largest entity
/// fit with room to spare, and the shard map of up to ~16,000 shards; small enough that one
/// frame holds the link (one session per peer, frames in order) for only a few milliseconds.
fn default_max_frame_bytes() -> u64 {
    4 << 20
}
/// 1 MiB: a page takes about a millisecond of a loopback link and a few on a LAN, so the live
/// writes a learner also receives are never queued long behind a page.
fn default_copy_page_bytes() -> u64 {
    1 << 20
}

fn default_gateway_name() -> String {
    "gateway".to_string()
}
fn default_flush() -> String {
    "on_write".to_string()
}
fn default_flush_interval_ms() -> u64 {
    500
}
fn default_cache_mb() -> u64 {
    256
}
fn default_idle_timeout_secs() -> u64 {
    300
}
fn default_max_state_bytes() -> u64 {
    1024 * 1024
}
fn default_idempotency_ttl_secs() -> u64 {
    24 * 3600
}
fn default_idempotency_keys() -> usize {
    32
}
fn default_max_active() -> usize {
    1_000_000
}
fn default_max_restarts() -> u32 {
    5
}
fn default_restart_window_secs() -> u64 {
    10
}
fn default_backoff_base_ms() -> u64 {
    50
}
fn default_backoff_max_ms() -> u64 {
    2000
}
fn default_quarantine_secs() -> u64 {
    30
}

/// When a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fsync (grouped across concurrent writers) before acknowledging.
    OnWrite,
    /// Background flush every interval; a crash may lose the last interval.
    Periodic(Duration),
}

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hosts shards.
    Node,
    /// Routes HTTP requests; hosts no shards.
    Gateway,
    /// The embedded MQTT broker run by `keelson up`; not a cluster member.
    Broker,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Gateway => "gateway",
            Role::Broker => "broker",
        }
    }
}

/// One process of the cluster, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Node or gateway.
    pub role: Role,
    /// Cluster transport address.
    pub cluster_addr: SocketAddr,
    /// Ops endpoint address.
    pub ops_addr: SocketAddr,
}

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
    /// MQTT, when configured.
    pub mqtt: Option<MqttConfig>,
    /// Anomaly detection settings.
    pub iot: IotConfig,
    /// TLS settings.
    pub tls: TlsSettings,
    /// Authentication settings.
    pub auth: AuthSettings,
    /// Addresses to dial peers at instead of their cluster ports (not in nodes.toml: `keelson up
    /// --chaos` routes every link through a fault-injecting proxy this way).
    pub dial_via: std::collections::BTreeMap<String, SocketAddr>,
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

    /// The embedded broker as a process of `keelson up` (its "cluster address" is the MQTT
    /// address), when `[mqtt] broker = "embedded"`.
    pub fn broker(&self) -> Option<Member> {
        let m = self.mqtt.as_ref()?;
        match m.broker {
            BrokerLocation::Embedded { ops_addr } => Some(Member {
                name: "broker".to_string(),
                role: Role::Broker,
                cluster_addr: m.addr,
                ops_addr,
            }),
            BrokerLocation::External => None,
        }
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

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Syntax {
        /// File path.
        path: PathBuf,
        /// Parser message, with line and column.
        message: String,
    },
    /// The file parsed but its values are inconsistent.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// File path.
        path: PathBuf,
        /// Each problem, prefixed by where it is.
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// Every problem as its own line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &base).map_err(|e| match e {
        ConfigError::Syntax { message, .. } => ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        },
        ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        },
        other => other,
    })
}

/// Parses and validates TOML text; relative paths resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<ClusterConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: PathBuf::from("nodes.toml"),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })?;
    validate(&raw, base_dir).map_err(|problems| ConfigError::Invalid {
        path: PathBuf::from("nodes.toml"),
        problems,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Frames between processes: one frame must carry a copy page with the largest entity beside it,
/// and the whole shard map (a gateway reads it in one frame).
fn frame_limits(c: &RawCluster, e: &RawEntities, problems: &mut Vec<String>) {
    let frame = c.max_frame_bytes;
    if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&frame) {
        problems.push(format!(
            "cluster.max_frame_bytes: {frame} is outside {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES}"
        ));
        return;
    }
    if c.copy_page_bytes == 0 || c.copy_page_bytes > frame / 2 {
        problems.push(format!(
            "cluster.copy_page_bytes: {} is outside 1..={} (half of max_frame_bytes)",
            c.copy_page_bytes,
            frame / 2
        ));
    }
    let need = e.max_state_bytes + c.copy_page_bytes + FRAME_ENVELOPE_BYTES;
    if need > frame {
        problems.push(format!(
            "cluster.max_frame_bytes: {frame} cannot carry a copy page (copy_page_bytes = {}) beside the largest entity (entities.max_state_bytes = {}); raise it to at least {need}",
            c.copy_page_bytes, e.max_state_bytes
        ));
    }
    let map = shard_map_bytes(c.shards, c.replication_factor);
    if map > frame {
        problems.push(format!(
            "cluster.max_frame_bytes: {frame} cannot carry the shard map of {} shards (about {map} bytes); raise it or use fewer shards",
            c.shards
        ));
    }
}

/// Checks every rule and collects every problem, so one run of `check-config` shows them all.
pub fn validate(raw: &RawConfig, base_dir: &Path) -> Result<ClusterConfig, Vec<String>> {
    let mut problems = Vec::new();
    let c = &raw.cluster;
    if c.name.trim().is_empty() {
        problems.push("cluster.name: must not be empty".to_string());
    }
    if !(1..=65_536).contains(&c.shards) {
        problems.push(format!(
            "cluster.shards: {} is out of range 1..=65536",
            c.shards
        ));
    }
    if !(100..=60_000).contains(&c.failure_timeout_ms) {
        problems.push(format!(
            "cluster.failure_timeout_ms: {} is out of range 100..=60000",
            c.failure_timeout_ms
        ));
    }
    if c.heartbeat_interval_ms < 10 || c.heartbeat_interval_ms * 3 > c.failure_timeout_ms {
        problems.push(format!(
            "cluster.heartbeat_interval_ms: {} must be at least 10 and at most a third of failure_timeout_ms ({})",
            c.heartbeat_interval_ms, c.failure_timeout_ms
        ));
    }
    if c.replication_factor == 0 || c.replication_factor > 5 {
        problems.push(format!(
            "cluster.replication_factor: {} is out of range 1..=5",
            c.replication_factor
        ));
    }
    if !(100..=600_000).contains(&c.request_timeout_ms) {
        problems.push(format!(
            "cluster.request_timeout_ms: {} is out of range 100..=600000",
            c.request_timeout_ms
        ));
    }
    if !["trace", "debug", "info", "warn", "error"].contains(&c.log_level.as_str()) {
        problems.push(format!(
            "cluster.log_level: \"{}\" is not one of trace, debug, info, warn, error",
            c.log_level
        ));
    }
    let flush = match raw.storage.flush.as_str() {
        "on_write" => FlushPolicy::OnWrite,
        "periodic" => {
            if !(1..=60_000).contains(&raw.storage.flush_interval_ms) {
                problems.push(format!(
                    "storage.flush_interval_ms: {} is out of range 1..=60000",
                    raw.storage.flush_interval_ms
                ));
            }
            FlushPolicy::Periodic(Duration::from_millis(raw.storage.flush_interval_ms))
        }
        other => {
            problems.push(format!(
                "storage.flush: \"{other}\" is not one of \"on_write\", \"periodic\""
            ));
            FlushPolicy::OnWrite
        }
    };
    let e = &raw.entities;
    if e.idle_timeout_secs == 0 {
        problems.push("entities.idle_timeout_secs: must be at least 1".to_string());
    }
    if e.max_active == 0 {
        problems.push("entities.max_active: must be at least 1".to_string());
    }
    if !(4096..=MAX_STATE_BYTES).contains(&e.max_state_bytes) {
        problems.push(format!(
            "entities.max_state_bytes: {} is outside 4096..={MAX_STATE_BYTES} (a value must fit in one frame between nodes)",
            e.max_state_bytes
        ));
    }
    if e.idempotency_ttl_secs == 0 || e.idempotency_ttl_secs > 30 * 24 * 3600 {
        problems.push(format!(
            "entities.idempotency_ttl_secs: {} is outside 1..=2592000 (30 days)",
            e.idempotency_ttl_secs
        ));
    }
    if !(1..=1000).contains(&e.idempotency_keys) {
        problems.push(format!(
            "entities.idempotency_keys: {} is outside 1..=1000",
            e.idempotency_keys
        ));
    }
    if e.max_restarts == 0 {
        problems.push("entities.max_restarts: must be at least 1".to_string());
    }
    if e.restart_window_secs == 0 {
        problems.push("entities.restart_window_secs: must be at least 1".to_string());
    }
    if e.backoff_base_ms > e.backoff_max_ms {
        problems.push(format!(
            "entities.backoff_base_ms: {} is larger than backoff_max_ms ({})",
            e.backoff_base_ms, e.backoff_max_ms
        ));
    }
    frame_limits(c, e, &mut problems);
    if raw.nodes.is_empty() {
        problems.push("node: at least one [[node]] is required".to_string());
    }

    // Names and ports, across nodes and the gateway.
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ports: HashMap<SocketAddr, String> = HashMap::new();
    let mut members = Vec::new();
    let g = &raw.gateway;
    let endpoints = raw
        .nodes
        .iter()
        .map(|n| {
            (
                format!("node \"{}\"", n.name),
                &n.name,
                &n.host,
                Role::Node,
                n.cluster_port,
                n.ops_port,
                &n.ops_host,
                None,
            )
        })
        .chain(std::iter::once((
            format!("gateway \"{}\"", g.name),
            &g.name,
            &g.host,
            Role::Gateway,
            g.cluster_port,
            g.ops_port,
            &g.ops_host,
            Some(g.http_port),
        )));
    let mut gateway_http = None;
    let mut ips = Vec::new();
    for (i, (label, name, host, role, cluster_port, ops_port, ops_host, http_port)) in
        endpoints.enumerate()
    {
        if !valid_name(name) {
            problems.push(format!(
                "{label}: name must be 1-32 characters of a-z, 0-9 and '-', starting with a letter"
            ));
        }
        if names.insert(name.as_str(), i).is_some() {
            problems.push(format!("{label}: name is used more than once"));
        }
        let ip: Option<IpAddr> = match host.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.push(format!("{label}: host \"{host}\" is not an IP address"));
                None
            }
        };
        if ip == Some(IpAddr::from([127, 0, 0, 254])) {
            problems.push(format!(
                "{label}: host 127.0.0.254 is reserved (each process parks an internal listener there)"
            ));
        }
        ips.extend(ip);
        // The ops port (metrics, health, views) stays on loopback unless named otherwise.
        let ops_ip: Option<IpAddr> = match ops_host {
            Some(h) => match h.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!("{label}: ops_host \"{h}\" is not an IP address"));
                    None
                }
            },
            None => ip.map(|ip| {
                if ip.is_loopback() {
                    ip
                } else {
                    IpAddr::from([127, 0, 0, 1])
                }
            }),
        };
        let mut claim = |what: &str, ip: Option<IpAddr>, port: u16| -> Option<SocketAddr> {
            if port == 0 {
                problems.push(format!("{label}: {what} port must not be 0"));
                return None;
            }
            let addr = SocketAddr::new(ip?, port);
            let this = format!("{label} ({what})");
            if let Some(owner) = ports.get(&addr) {
                let owner_name = owner.split(" (").next().unwrap_or(owner);
                problems.push(format!(
                    "{label}: {what} port {port} already used by {owner_name}"
                ));
                return None;
            }
            ports.insert(addr, this);
            Some(addr)
        };
        let cluster_addr = claim("cluster", ip, cluster_port);
        let ops_addr = claim("ops", ops_ip, ops_port);
        if let Some(p) = http_port {
            gateway_http = claim("http", ip, p);
        }
        if let (Some(cluster_addr), Some(ops_addr)) = (cluster_addr, ops_addr) {
            members.push(Member {
                name: name.clone(),
                role,
                cluster_addr,
                ops_addr,
            });
        }
    }
    let mqtt = raw
        .mqtt
        .as_ref()
        .and_then(|m| iot::validate_mqtt(m, &mut problems));
    if let Some(m) = &mqtt {
        for (what, addr) in m.listens() {
            if let Some(owner) = ports.get(&addr) {
                let owner_name = owner.split(" (").next().unwrap_or(owner);
                problems.push(format!(
                    "mqtt.{what}: {} already used by {owner_name}",
                    addr.port()
                ));
            }
        }
    }
    let iot = iot::validate_iot(&raw.iot, &mut problems);
    let limits = limits::validate(&raw.limits, &mut problems);
    if let Some(m) = &mqtt {
        ips.push(m.addr.ip());
    }
    let loopback_only = security::all_loopback(&ips);
    let data_dir = if c.data_dir.is_absolute() {
        c.data_dir.clone()
    } else {
        base_dir.join(&c.data_dir)
    };
    let cookie = security::validate_cookie(
        c.cookie.as_deref(),
        c.cookie_file.as_deref(),
        base_dir,
        loopback_only,
        &mut problems,
    );
    let tls = security::validate_tls(&raw.tls, base_dir, &data_dir, loopback_only, &mut problems);
    let auth = security::validate_auth(&raw.auth, base_dir, &data_dir, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let gateway = members.pop().expect("gateway is the last member");
    Ok(ClusterConfig {
        name: c.name.clone(),
        cookie,
        shards: c.shards,
        data_dir,
        failure_timeout: Duration::from_millis(c.failure_timeout_ms),
        heartbeat_interval: Duration::from_millis(c.heartbeat_interval_ms),
        replication_factor: c.replication_factor.min(raw.nodes.len()).max(1),
        request_timeout: Duration::from_millis(c.request_timeout_ms),
        fault_injection: c.fault_injection,
        log_level: c.log_level.clone(),
        max_frame_bytes: c.max_frame_bytes as usize,
        copy_page_bytes: c.copy_page_bytes as usize,

        flush,
        cache_bytes: raw.storage.cache_mb * 1024 * 1024,
        idle_timeout: Duration::from_secs(e.idle_timeout_secs),
        max_active: e.max_active,
        restart: RestartPolicy {
            max_restarts: e.max_restarts,
            window: Duration::from_secs(e.restart_window_secs),
            backoff_base: Duration::from_millis(e.backoff_base_ms),
            backoff_max: Duration::from_millis(e.backoff_max_ms),
            quarantine: Duration::from_secs(e.quarantine_secs),
        },
        entity_limits: EntityLimits {
            max_state_bytes: e.max_state_bytes as usize,
            keys: Retention {
                ttl_ms: e.idempotency_ttl_secs * 1000,
                max_keys: e.idempotency_keys,
            },
        },
        limits,
        nodes: members,
        gateway,
        gateway_http: gateway_http.expect("no problems, so the http port was claimed"),
        mqtt,
        iot,
        tls,
        auth,
        dial_via: Default::default(),
    })
}

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
