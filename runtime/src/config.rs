//! `nodes.toml`: the cluster's configuration as data, then a validator that reports every problem
//! with its path and turns the raw file into a [`ClusterConfig`] the rest of the runtime trusts.
//!
//! ```text
//! text ─▶ RawConfig (serde, one struct per section) ─┐
//!      ─▶ sections: tables the runtime does not own, ├─▶ validate ─▶ ClusterConfig
//!         each checked by the Section that claims it ┘   (every problem, with its field)
//! ```
//!
//! One file per section, each with its raw struct, defaults and checks: `cluster` (name, size,
//! timing, frame limits), `storage`, `entities` (lifecycle and supervision), `nodes` (members,
//! names, ports), `joining` (a node not in the file, from the command line), `security` (`[tls]`, `[auth]`, secrets), `limits`; `sections` passes through
//! the tables other crates own; `load` reads, parses and assembles; `cluster_config` is the
//! validated result. Defaults live beside their fields, in the `default_*` functions.

use serde::{Deserialize, Serialize};

mod cluster;
mod cluster_config;
mod entities;
mod joining;
mod limits;
mod load;
mod nodes;
mod sections;
mod security;
mod storage;

pub use cluster::{
    shard_map_bytes, RawCluster, FRAME_ENVELOPE_BYTES, MAX_FRAME_BYTES, MIN_FRAME_BYTES,
};
pub use cluster_config::ClusterConfig;
pub use entities::{RawEntities, MAX_STATE_BYTES};
pub use joining::Joining;
pub use limits::{
    validate as validate_limits, EntityLimits, Limits, RateLimit, RawLimits, RawRate, Retention,
};
pub use load::{load, load_with, parse, parse_with, validate, ConfigError};
pub use nodes::{valid_name, Member, RawGateway, RawNode, Role};
pub use sections::{Section, SectionCheck};
pub use security::{
    read_secret, write_secret, AuthSettings, JwtSettings, PublicKeyAlgorithm, RawAuth, RawJwt,
    RawTls, Secret, TlsSettings, ADMIN_KEY_ENV, API_KEY_ENV, COOKIE_ENV, EXAMPLE_COOKIE,
};
pub use storage::{FlushPolicy, RawStorage};

/// The file as written. Every field is documented in `nodes.toml`. Top-level names are checked
/// before this is read (see `sections`): a table no [`Section`] claims is refused there.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[cfg(test)]
#[path = "config_test.rs"]
mod tests;
