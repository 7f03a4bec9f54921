//! An HTTPS client of the gateway for Keelson's own tools (the CLI, the chaos workload, the
//! device simulator, the tests): trusts only the cluster CA and sends an API key.

use std::time::Duration;

use keelson_runtime::config::{Secret, API_KEY_ENV};
use keelson_runtime::{ClusterConfig, RuntimeError};

/// Where the API is and a client for it.
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// `https://host:port` (or `http://` with `tls.enabled = false`).
    pub base: String,
    /// Sends the key on every request.
    pub http: reqwest::Client,
}

/// The key a tool uses: `KEELSON_API_KEY`, else the bootstrap admin key of `cfg`.
pub fn tool_key(cfg: &ClusterConfig) -> Option<Secret> {
    match std::env::var(API_KEY_ENV) {
        Ok(k) if !k.trim().is_empty() => Some(Secret::new(k.trim())),
        _ => cfg.auth.admin_key(),
    }
}

/// The gateway's base URL.
pub fn base_url(cfg: &ClusterConfig) -> String {
    let scheme = if cfg.tls.enabled { "https" } else { "http" };
    format!("{scheme}://{}", cfg.gateway_http)
}

/// A client of `cfg`'s gateway sending `key` (none: requests go unauthenticated).
pub fn api_client(
    cfg: &ClusterConfig,
    key: Option<&Secret>,
    timeout: Duration,
) -> Result<ApiClient, RuntimeError> {
    keelson_runtime::tls::install_provider();
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(256);
    if cfg.tls.enabled {
        let ca = keelson_runtime::tls::Pki::new(&cfg.tls).ca_path();
        b = b.use_preconfigured_tls(keelson_runtime::tls::client_trusting(&ca)?);
    }
    if let Some(k) = key {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", k.expose()))
            .map_err(|_| {
                RuntimeError::Security("the API key holds characters a header cannot carry".into())
            })?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
        b = b.default_headers(headers);
    }
    Ok(ApiClient {
        base: base_url(cfg),
        http: b
            .build()
            .map_err(|e| RuntimeError::Security(format!("cannot build an HTTPS client: {e}")))?,
    })
}
