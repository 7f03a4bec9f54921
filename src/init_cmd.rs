//! `keelson init` (and the first step of `keelson up`): the secrets a fresh cluster needs, made
//! once and kept: the cluster CA and every member's certificate under the TLS directory, and a
//! bootstrap admin key at `<data_dir>/run/admin.key` (mode 0600). Nothing is overwritten.

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
}

/// Makes whatever is missing.
pub fn ensure(cfg: &ClusterConfig) -> anyhow::Result<Made> {
    let mut made = Made::default();
    if cfg.tls.enabled {
        made.certs = keelson_runtime::tls::Pki::new(&cfg.tls)
            .ensure(cfg)
            .context("cannot make the cluster's certificates")?;
    }
    let key_file = &cfg.auth.admin_key_file;
    if !key_file.exists() && std::env::var(keelson_runtime::config::ADMIN_KEY_ENV).is_err() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = key_file.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_file)
            .with_context(|| format!("cannot create {}", key_file.display()))?;
        writeln!(f, "{}", keelson_gateway::new_bootstrap_key())?;
        f.sync_all()?;
        made.admin_key = Some(key_file.clone());
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
}
