//! `keelson init` (and the first step of `keelson up`): the secrets a fresh cluster needs, made
//! once and kept: the cluster CA and every member's certificate under the TLS directory, and a
//! bootstrap admin key at `<data_dir>/run/admin.key` and, with `[mqtt]`, the MQTT service secret at
//! `<data_dir>/run/mqtt-service.secret` (both mode 0600). Nothing is overwritten.

use std::path::PathBuf;

use anyhow::Context;
use keelson_runtime::ClusterConfig;

/// What `ensure` made.
#[derive(Debug, Default)]
pub struct Made {
    /// Certificate files created.
    pub certs: Vec<PathBuf>,
    /// The admin key file, when it was created.
    pub admin_key: Option<PathBuf>,
    /// The MQTT service secret file, when it was created.
    pub mqtt_secret: Option<PathBuf>,
}

/// Writes a new secret file (mode 0600); false if it already exists.
fn write_new_secret(path: &std::path::Path, contents: &str) -> anyhow::Result<bool> {
    keelson_runtime::config::write_secret(path, format!("{contents}\n").as_bytes(), false)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Makes whatever is missing.
pub fn ensure(cfg: &ClusterConfig) -> anyhow::Result<Made> {
    let mut made = Made::default();
    if cfg.tls.enabled {
        made.certs = keelson_runtime::tls::Pki::new(&cfg.tls)
            .ensure(cfg, &keelson_bridge::config::tls_subjects(cfg))
            .context("cannot make the cluster's certificates")?;
    }
    let key_file = &cfg.auth.admin_key_file;
    if std::env::var(keelson_runtime::config::ADMIN_KEY_ENV).is_err()
        && write_new_secret(key_file, &keelson_gateway::new_bootstrap_key())?
    {
        made.admin_key = Some(key_file.clone());
    }
    if keelson_bridge::config::mqtt(cfg).is_some()
        && std::env::var(keelson_bridge::SERVICE_SECRET_ENV).is_err()
    {
        let f = keelson_bridge::service_secret_file(cfg);
        if write_new_secret(&f, &keelson_bridge::random_password())? {
            made.mqtt_secret = Some(f);
        }
    }
    Ok(made)
}

/// Says what was made (never the secrets themselves).
pub fn report(cfg: &ClusterConfig, made: &Made) {
    if !made.certs.is_empty() {
        eprintln!(
            "made the cluster CA and member certificates in {} (clients trust {})",
            cfg.tls.dir.display(),
            keelson_runtime::tls::Pki::new(&cfg.tls).ca_path().display()
        );
    }
    if let Some(k) = &made.admin_key {
        eprintln!(
            "made the bootstrap admin key {} (mode 0600): send it as `Authorization: Bearer $(cat {})`",
            k.display(),
            k.display()
        );
    }
    if let Some(f) = &made.mqtt_secret {
        eprintln!(
            "made the MQTT service secret {} (mode 0600) for the bridge and Keelson's tools",
            f.display()
        );
    }
}
