//! Reading `nodes.toml`: the text, then the parse (syntax and schema, with line and column),
//! then [`validate`], which checks every rule, collects every problem and assembles the
//! [`ClusterConfig`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::nodes::Placed;
use super::sections::{self, Section, SectionCheck};
use super::{cluster, entities, limits, nodes, security, storage, ClusterConfig, RawConfig};

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

/// Reads and validates the file at `path`; a top-level table the runtime does not own is refused.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    load_with(path, &[])
}

/// Reads and validates the file at `path`, with the tables `sections` claim checked by them.
pub fn load_with(path: &Path, sections: &[&dyn Section]) -> Result<ClusterConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    parse_with(&text, &base, sections).map_err(|e| match e {
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
    parse_with(text, base_dir, &[])
}

fn syntax(message: String) -> ConfigError {
    ConfigError::Syntax {
        path: PathBuf::from("nodes.toml"),
        message: message.trim_end().replace('\n', "\n  "),
    }
}

/// [`parse`], with the tables `sections` claim checked by them and kept in the result.
pub fn parse_with(
    text: &str,
    base_dir: &Path,
    sections: &[&dyn Section],
) -> Result<ClusterConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let tables = sections::split(text, sections).map_err(|e| syntax(e.to_string()))?;
    let checks = sections
        .iter()
        .map(|s| Ok((s.name(), s.check(text).map_err(syntax)?)))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let mut cfg =
        validate_sections(&raw, base_dir, &checks).map_err(|problems| ConfigError::Invalid {
            path: PathBuf::from("nodes.toml"),
            problems,
        })?;
    cfg.sections = tables;
    Ok(cfg)
}

/// Checks every rule and collects every problem, so one run of `check-config` shows them all.
pub fn validate(raw: &RawConfig, base_dir: &Path) -> Result<ClusterConfig, Vec<String>> {
    validate_sections(raw, base_dir, &[])
}

/// The problems of each claimed section, in order, then whatever it listens on that a member
/// already does; its hosts join the members' for the loopback rules.
fn merge_sections(
    checks: &[(&'static str, SectionCheck)],
    placed: &mut Placed,
    problems: &mut Vec<String>,
) {
    for (name, check) in checks {
        problems.extend(check.problems.iter().cloned());
        for (what, addr) in &check.listens {
            if let Some(owner_name) = placed.ports.owner(addr) {
                problems.push(format!(
                    "{name}.{what}: {} already used by {owner_name}",
                    addr.port()
                ));
            }
        }
        placed.ips.extend(check.hosts.iter().copied());
    }
}

fn validate_sections(
    raw: &RawConfig,
    base_dir: &Path,
    checks: &[(&'static str, SectionCheck)],
) -> Result<ClusterConfig, Vec<String>> {
    let mut problems = Vec::new();
    let (c, e) = (&raw.cluster, &raw.entities);
    cluster::validate(c, &mut problems);
    let flush = storage::validate(&raw.storage, &mut problems);
    entities::validate(e, &mut problems);
    cluster::frame_limits(c, e, &mut problems);
    let mut placed = nodes::validate(&raw.nodes, &raw.gateway, &mut problems);
    merge_sections(checks, &mut placed, &mut problems);
    let limits = limits::validate(&raw.limits, &mut problems);
    let loopback_only = security::all_loopback(&placed.ips);
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
    let mut members = placed.members;
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
        restart: entities::restart_policy(e),
        entity_limits: entities::entity_limits(e),
        limits,
        nodes: members,
        gateway,
        gateway_http: placed
            .gateway_http
            .expect("no problems, so the http port was claimed"),
        tls,
        auth,
        dial_via: BTreeMap::new(),
        joining: None,
        sections: BTreeMap::new(),
    })
}
