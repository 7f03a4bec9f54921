//! `[tls]` and `[auth]`, and where secrets come from. Secrets are read from files or the
//! environment (nodes.toml may name a cookie for a laptop cluster, never a key), kept in
//! [`Secret`] so they never reach a log or `Debug` output, and the shipped example secret is
//! refused as soon as any member listens beyond loopback.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The cookie in the shipped nodes.toml: fine on a laptop, refused on a network.
pub const EXAMPLE_COOKIE: &str = "keelson-local-cookie";

/// Environment variable that overrides the cookie.
pub const COOKIE_ENV: &str = "KEELSON_COOKIE";

/// Environment variable holding the API key Keelson's own tools (keys, chaos, devices) send.
pub const API_KEY_ENV: &str = "KEELSON_API_KEY";

/// Environment variable that overrides the bootstrap admin key file.
pub const ADMIN_KEY_ENV: &str = "KEELSON_ADMIN_KEY";

/// A secret value: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// HTTPS on the gateway's API port and mutual TLS on every cluster link. `false` is allowed
    /// only when every member listens on a loopback address.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory of the cluster CA (`ca.pem`) and each member's `<name>.pem` / `<name>.key`;
    /// relative to the config file. Default `<data_dir>/tls`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// File holding the bootstrap admin key (`keelson up` writes it); default
    /// `<data_dir>/run/admin.key`. `KEELSON_ADMIN_KEY` (the key itself) takes precedence.
    #[serde(default)]
    pub admin_key_file: Option<PathBuf>,
    /// File holding a bearer token that `/metrics` then requires; absent: `/metrics` is open
    /// on the (loopback by default) ops port.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
    /// JWT bearer tokens from an outside identity provider.
    #[serde(default)]
    pub jwt: Option<RawJwt>,
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// File with the HS256 shared secret (at least 32 bytes).
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// File with the identity provider's PEM public key (RSA for RS256, EC P-256 for ES256).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Algorithm of `public_key_file`: `RS256` or `ES256`.
    #[serde(default)]
    pub public_key_algorithm: Option<String>,
    /// Claim holding the role (`admin`, `operator`, `agent`, `viewer`, `customer`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_role_claim() -> String {
    "role".to_string()
}
fn default_leeway() -> u64 {
    30
}

/// Validated `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// TLS on.
    pub enabled: bool,
    /// Absolute certificate directory.
    pub dir: PathBuf,
}

/// Algorithm of the JWT public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

/// Validated `[auth.jwt]`, secrets loaded.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Required issuer.
    pub issuer: String,
    /// Required audience.
    pub audience: String,
    /// HS256 secret.
    pub hs256_secret: Option<Secret>,
    /// PEM public key and its algorithm.
    pub public_key: Option<(Vec<u8>, PublicKeyAlgorithm)>,
    /// Role claim name.
    pub role_claim: String,
    /// Leeway, seconds.
    pub leeway_secs: u64,
}

/// Validated `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Where the bootstrap admin key is read from.
    pub admin_key_file: PathBuf,
    /// Bearer token `/metrics` requires, if any.
    pub metrics_token: Option<Secret>,
    /// The file it was read from (a scrape configuration names it).
    pub metrics_token_file: Option<PathBuf>,
    /// JWT validation, if configured.
    pub jwt: Option<JwtSettings>,
}

impl AuthSettings {
    /// The bootstrap admin key: `KEELSON_ADMIN_KEY`, else the file; `None` when neither exists.
    pub fn admin_key(&self) -> Option<Secret> {
        if let Ok(k) = std::env::var(ADMIN_KEY_ENV) {
            if !k.trim().is_empty() {
                return Some(Secret::new(k.trim()));
            }
        }
        read_secret(&self.admin_key_file).ok()
    }
}

/// Writes a secret file readable by its owner only (mode 0600), atomically through a temporary
/// file. Without `replace` an existing file is kept and `false` returned.
pub fn write_secret(path: &Path, contents: &[u8], replace: bool) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !replace && path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Reads a secret file, trimmed of surrounding whitespace.
pub fn read_secret(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty".to_string());
    }
    Ok(Secret::new(t))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Is every address loopback?
pub fn all_loopback(ips: &[IpAddr]) -> bool {
    ips.iter().all(IpAddr::is_loopback)
}

/// The cookie: `KEELSON_COOKIE`, else `cookie_file`, else `cookie`.
pub fn validate_cookie(
    cookie: Option<&str>,
    cookie_file: Option<&Path>,
    base: &Path,
    loopback_only: bool,
    problems: &mut Vec<String>,
) -> Secret {
    let from_env = std::env::var(COOKIE_ENV).ok().filter(|c| !c.is_empty());
    let value = match (from_env, cookie_file, cookie) {
        (Some(c), _, _) => c,
        (None, Some(f), _) => match read_secret(&resolve(base, f)) {
            Ok(s) => s.expose().to_string(),
            Err(e) => {
                problems.push(format!("cluster.cookie_file: {}: {e}", f.display()));
                return Secret::new("");
            }
        },
        (None, None, Some(c)) => c.to_string(),
        (None, None, None) => {
            problems.push(format!(
                "cluster.cookie: required (or cluster.cookie_file, or the {COOKIE_ENV} environment variable)"
            ));
            return Secret::new("");
        }
    };
    if value.len() < 8 {
        problems.push("cluster.cookie: must be at least 8 characters".to_string());
    }
    if value == EXAMPLE_COOKIE && !loopback_only {
        problems.push(format!(
            "cluster.cookie: the shipped example cookie is refused when a member listens beyond loopback; set a random one with cluster.cookie_file or {COOKIE_ENV}"
        ));
    }
    Secret::new(value)
}

/// Checks `[tls]`.
pub fn validate_tls(
    t: &RawTls,
    base: &Path,
    data_dir: &Path,
    loopback_only: bool,
    problems: &mut Vec<String>,
) -> TlsSettings {
    if !t.enabled && !loopback_only {
        problems.push(
            "tls.enabled: false is refused when a member listens beyond loopback (plain HTTP and clear-text cluster links only on 127.0.0.0/8)"
                .to_string(),
        );
    }
    TlsSettings {
        enabled: t.enabled,
        dir: t
            .dir
            .as_deref()
            .map(|d| resolve(base, d))
            .unwrap_or_else(|| data_dir.join("tls")),
    }
}

/// Checks `[auth]` and loads its secrets.
pub fn validate_auth(
    a: &RawAuth,
    base: &Path,
    data_dir: &Path,
    problems: &mut Vec<String>,
) -> AuthSettings {
    let metrics_token =
        a.metrics_token_file
            .as_deref()
            .and_then(|f| match read_secret(&resolve(base, f)) {
                Ok(s) if s.expose().len() >= 16 => Some(s),
                Ok(_) => {
                    problems.push(format!(
                        "auth.metrics_token_file: {}: the token must be at least 16 characters",
                        f.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("auth.metrics_token_file: {}: {e}", f.display()));
                    None
                }
            });
    let jwt = a.jwt.as_ref().and_then(|j| validate_jwt(j, base, problems));
    AuthSettings {
        admin_key_file: a
            .admin_key_file
            .as_deref()
            .map(|f| resolve(base, f))
            .unwrap_or_else(|| data_dir.join("run").join("admin.key")),
        metrics_token,
        metrics_token_file: a.metrics_token_file.as_deref().map(|f| resolve(base, f)),
        jwt,
    }
}

fn validate_jwt(j: &RawJwt, base: &Path, problems: &mut Vec<String>) -> Option<JwtSettings> {
    let before = problems.len();
    if j.issuer.trim().is_empty() {
        problems.push("auth.jwt.issuer: must not be empty".to_string());
    }
    if j.audience.trim().is_empty() {
        problems.push("auth.jwt.audience: must not be empty".to_string());
    }
    if j.role_claim.trim().is_empty() {
        problems.push("auth.jwt.role_claim: must not be empty".to_string());
    }
    if j.leeway_secs > 300 {
        problems.push(format!(
            "auth.jwt.leeway_secs: {} is out of range 0..=300",
            j.leeway_secs
        ));
    }
    let hs256_secret =
        j.hs256_secret_file
            .as_deref()
            .and_then(|f| match read_secret(&resolve(base, f)) {
                Ok(s) if s.expose().len() >= 32 => Some(s),
                Ok(_) => {
                    problems.push(format!(
                        "auth.jwt.hs256_secret_file: {}: the secret must be at least 32 bytes",
                        f.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!("auth.jwt.hs256_secret_file: {}: {e}", f.display()));
                    None
                }
            });
    let alg = match j.public_key_algorithm.as_deref() {
        None | Some("RS256") => PublicKeyAlgorithm::Rs256,
        Some("ES256") => PublicKeyAlgorithm::Es256,
        Some(other) => {
            problems.push(format!(
                "auth.jwt.public_key_algorithm: \"{other}\" is not one of RS256, ES256"
            ));
            PublicKeyAlgorithm::Rs256
        }
    };
    let public_key =
        j.public_key_file
            .as_deref()
            .and_then(|f| match std::fs::read(resolve(base, f)) {
                Ok(pem) => Some((pem, alg)),
                Err(e) => {
                    problems.push(format!(
                        "auth.jwt.public_key_file: {}: cannot read: {e}",
                        f.display()
                    ));
                    None
                }
            });
    if j.hs256_secret_file.is_none() && j.public_key_file.is_none() {
        problems.push(
            "auth.jwt: name hs256_secret_file, public_key_file or both (no key, no token can be checked)"
                .to_string(),
        );
    }
    if problems.len() > before {
        return None;
    }
    Some(JwtSettings {
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        hs256_secret,
        public_key,
        role_claim: j.role_claim.clone(),
        leeway_secs: j.leeway_secs,
    })
}
