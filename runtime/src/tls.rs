//! The cluster's certificates: one CA, and a certificate per member that names it.
//!
//! ```text
//! <tls dir>/ca.pem, ca.key          the cluster CA (ECDSA P-256); ca.key never leaves this dir
//!           <name>.pem, .key        one per node and gateway, and per extra subject the caller
//!                                   names (a process beside the cluster), signed by the CA
//! ```
//!
//! A certificate carries the DNS name `<name>.<kind>.keelson` (a member's identity: the name a
//! member claims on a cluster link must be the one its certificate carries; `kind` is its role)
//! plus its IP address and, on loopback, `localhost` (so an HTTPS client can check the gateway
//! by address).
//! All TLS here uses one crypto provider, aws-lc-rs, chosen explicitly rather than through the
//! process default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ClusterConfig, Member, Role, TlsSettings};

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {reason}")]
    Bad {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The one crypto provider of the process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes aws-lc-rs the process's default provider too, for libraries that ask for the default
/// (reqwest builds a TLS configuration even for plain-HTTP clients). Idempotent.
pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The DNS name a member's certificate carries: `<name>.<role>.keelson`.
pub fn identity_name(role: Role, name: &str) -> String {
    identity(role.as_str(), name)
}

fn identity(kind: &str, name: &str) -> String {
    format!("{name}.{kind}.keelson")
}

/// Who a certificate is for: a member, or a process beside the cluster that the caller of
/// [`Pki::ensure`] names (the runtime itself knows only nodes and gateways).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Name of its files (`<name>.pem`, `<name>.key`) and first part of its DNS identity.
    pub name: String,
    /// What it is (a member's role, or the caller's word): `<name>.<kind>.keelson`.
    pub kind: &'static str,
    /// The address it serves on.
    pub ip: IpAddr,
}

impl From<&Member> for Subject {
    fn from(m: &Member) -> Self {
        Subject {
            name: m.name.clone(),
            kind: m.role.as_str(),
            ip: m.cluster_addr.ip(),
        }
    }
}

/// Where the certificates of a cluster live.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn gen(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::config::write_secret(path, bytes, true)
        .map(|_| ())
        .map_err(io(path))
}

fn ca_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "keelson cluster CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
    p
}

impl Pki {
    /// The certificates of `tls`.
    pub fn new(tls: &TlsSettings) -> Self {
        Self {
            dir: tls.dir.clone(),
        }
    }

    /// The CA certificate, which every client of the cluster trusts.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A member's certificate.
    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// A member's private key.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Makes the CA if there is none, and a certificate for every member and every `extra`
    /// subject that has none. Returns the files it created (existing ones are kept, so a restart
    /// changes nothing).
    pub fn ensure(&self, cfg: &ClusterConfig, extra: &[Subject]) -> Result<Vec<PathBuf>, TlsError> {
        let subjects: Vec<Subject> = cfg
            .members()
            .map(Subject::from)
            .chain(extra.iter().cloned())
            .collect();
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut made = Vec::new();
        let ca_key_path = self.ca_key_path();
        let ca_key = if ca_key_path.exists() {
            let pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
            rcgen::KeyPair::from_pem(&pem).map_err(|e| TlsError::Bad {
                path: ca_key_path.clone(),
                reason: format!("not a private key: {e}"),
            })?
        } else {
            let key = rcgen::KeyPair::generate().map_err(gen)?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            let _ = std::fs::remove_file(self.ca_path());
            made.push(ca_key_path.clone());
            key
        };
        let params = ca_params();
        if !self.ca_path().exists() {
            let cert = params.self_signed(&ca_key).map_err(gen)?;
            std::fs::write(self.ca_path(), cert.pem()).map_err(io(&self.ca_path()))?;
            made.push(self.ca_path());
            // A new CA invalidates every member certificate signed by an older one.
            for m in &subjects {
                let _ = std::fs::remove_file(self.cert_path(&m.name));
            }
        }
        let issuer = rcgen::Issuer::new(params, &ca_key);
        for m in &subjects {
            if let Some(path) = self.sign_missing(m, &issuer)? {
                made.push(path);
            }
        }
        Ok(made)
    }

    /// A certificate for `m` signed by the cluster CA, unless it has one: for a node joining a
    /// running cluster on a machine that holds the CA key (`keelson up`'s own). Never makes a
    /// CA: without its key here, the certificate must come from wherever the CA key is kept.
    pub fn issue(&self, m: &Subject) -> Result<Option<PathBuf>, TlsError> {
        if self.cert_path(&m.name).exists() && self.key_path(&m.name).exists() {
            return Ok(None);
        }
        let ca_key_path = self.ca_key_path();
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|e| TlsError::Bad {
            path: self.cert_path(&m.name),
            reason: format!(
                "missing, and the CA key to issue it cannot be read at {} ({e}): copy {}.pem and {}.key, signed by the cluster CA, into {}",
                ca_key_path.display(),
                m.name,
                m.name,
                self.dir.display()
            ),
        })?;
        let ca_key = rcgen::KeyPair::from_pem(&pem).map_err(|e| TlsError::Bad {
            path: ca_key_path.clone(),
            reason: format!("not a private key: {e}"),
        })?;
        let issuer = rcgen::Issuer::new(ca_params(), &ca_key);
        self.sign_missing(m, &issuer)
    }

    /// Signs a new key pair for `m` with `issuer`, unless `m` has both files already.
    fn sign_missing(
        &self,
        m: &Subject,
        issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
    ) -> Result<Option<PathBuf>, TlsError> {
        let cert_path = self.cert_path(&m.name);
        if cert_path.exists() && self.key_path(&m.name).exists() {
            return Ok(None);
        }
        let key = rcgen::KeyPair::generate().map_err(gen)?;
        let cert = subject_params(m)?.signed_by(&key, issuer).map_err(gen)?;
        write_private(&self.key_path(&m.name), key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        Ok(Some(cert_path))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        roots_from(&self.ca_path())
    }

    fn certified_key(&self, name: &str) -> Result<CertifiedKey, TlsError> {
        let (chain, key) = self.load_identity(name)?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Bad {
            path: self.key_path(name),
            reason: format!("does not match its certificate: {e}"),
        })
    }

    fn load_identity(
        &self,
        name: &str,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let cert_path = self.cert_path(name);
        let key_path = self.key_path(name);
        let chain = CertificateDer::pem_file_iter(&cert_path)
            .map_err(|e| missing(&cert_path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| missing(&cert_path, e))?;
        if chain.is_empty() {
            return Err(TlsError::Bad {
                path: cert_path,
                reason: "holds no certificate".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| missing(&key_path, e))?;
        Ok((chain, key))
    }

    /// Server side of a cluster link: presents `me`'s certificate and requires one from the CA.
    pub fn cluster_server(&self, me: &Member) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let (chain, key) = self.load_identity(&me.name)?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(cfg))
    }

    /// Client side of a cluster link: presents `me`'s certificate, trusts only the CA.
    pub fn cluster_client(&self, me: &Member) -> Result<Arc<ClientConfig>, TlsError> {
        let (chain, key) = self.load_identity(&me.name)?;
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Arc::new(cfg))
    }

    /// HTTPS server side for `me` (the gateway): its certificate, reloaded from disk when the
    /// file changes, no client certificate asked.
    pub fn https_server(&self, me: &Member) -> Result<(Arc<ServerConfig>, CertReloader), TlsError> {
        self.tls_server(&me.name)
    }

    /// A TLS server presenting the certificate called `name` (a member's or an extra
    /// [`Subject`]'s), reloaded from disk when the file changes, no client certificate asked.
    pub fn tls_server(&self, name: &str) -> Result<(Arc<ServerConfig>, CertReloader), TlsError> {
        let reloader = CertReloader {
            pki: self.clone(),
            name: name.to_string(),
            current: Arc::new(RwLock::new(Arc::new(self.certified_key(name)?))),
            stamp: Arc::new(RwLock::new(self.stamp(name))),
        };
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(reloader.clone()));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(cfg), reloader))
    }

    fn stamp(&self, name: &str) -> Option<(SystemTime, SystemTime)> {
        let m = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(self.cert_path(name))?, m(self.key_path(name))?))
    }
}

fn missing(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Bad {
        path: path.to_path_buf(),
        reason: format!(
            "{e} (run `keelson up`, or `keelson init`, to make the cluster's certificates)"
        ),
    }
}

fn roots_from(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| missing(ca, e))? {
        let c = c.map_err(|e| missing(ca, e))?;
        roots.add(c).map_err(|e| TlsError::Bad {
            path: ca.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Bad {
            path: ca.to_path_buf(),
            reason: "holds no certificate".into(),
        });
    }
    Ok(roots)
}

/// A TLS client configuration that trusts only the CA in `ca` (for HTTPS clients of the
/// gateway: the CLI, the chaos workload, the device simulator, tests).
pub fn client_trusting(ca: &Path) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots_from(ca)?)
        .with_no_client_auth())
}

fn subject_params(m: &Subject) -> Result<rcgen::CertificateParams, TlsError> {
    let ip = m.ip;
    let mut sans = vec![identity(m.kind, &m.name), ip.to_string()];
    if ip.is_loopback() {
        sans.push("localhost".to_string());
        if ip != IpAddr::from([127, 0, 0, 1]) {
            sans.push("127.0.0.1".to_string());
        }
    }
    let mut p = rcgen::CertificateParams::new(sans).map_err(gen)?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, identity(m.kind, &m.name));
    p.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, m.kind);
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2031, 1, 1);
    Ok(p)
}

/// Which member a verified peer certificate names, if any: a member of `cfg`, or a node that
/// joined (a certificate from the cluster CA for `<name>.node.keelson` proves a node by that
/// name; the CA signing it is what admits it).
pub fn identify(cfg: &ClusterConfig, cert: &CertificateDer<'_>) -> Option<Member> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let configured = cfg.members().find(|m| {
        let Ok(name) = ServerName::try_from(identity_name(m.role, &m.name)) else {
            return false;
        };
        ee.verify_is_valid_for_subject_name(&name).is_ok()
    });
    if let Some(m) = configured {
        return Some(m.clone());
    }
    let name = node_name_in(cert)?;
    Some(Member {
        host: String::new(),
        name,
        role: Role::Node,
        // Not used for an accepted link: the peer is dialled at the address the map gives.
        cluster_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        ops_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    })
}

/// The node name a certificate's `<name>.node.keelson` DNS name carries, if it is a valid one.
fn node_name_in(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let sans = parsed.subject_alternative_name().ok()??;
    sans.value.general_names.iter().find_map(|g| match g {
        x509_parser::extensions::GeneralName::DNSName(dns) => dns
            .strip_suffix(".node.keelson")
            .filter(|n| crate::config::valid_name(n))
            .map(str::to_string),
        _ => None,
    })
}

/// The server name a client checks when it dials member `name`.
pub fn server_name(role: Role, name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(identity_name(role, name))
        .map_err(|e| format!("member name {name:?}: {e}"))
}

/// The gateway's HTTPS certificate, swapped in when its files change on disk.
#[derive(Debug, Clone)]
pub struct CertReloader {
    pki: Pki,
    name: String,
    current: Arc<RwLock<Arc<CertifiedKey>>>,
    stamp: Arc<RwLock<Option<(SystemTime, SystemTime)>>>,
}

impl CertReloader {
    /// Checks the files every `period`; a new, valid pair replaces the served one, a broken
    /// one is logged and the old one kept.
    pub fn spawn(self, period: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                self.check();
            }
        })
    }

    /// One check; true when a new certificate was loaded.
    pub fn check(&self) -> bool {
        let now = self.pki.stamp(&self.name);
        if now == *self.stamp.read().expect("stamp lock") {
            return false;
        }
        *self.stamp.write().expect("stamp lock") = now;
        match self.pki.certified_key(&self.name) {
            Ok(k) => {
                *self.current.write().expect("cert lock") = Arc::new(k);
                tracing::info!(cert = %self.pki.cert_path(&self.name).display(), "reloaded the TLS certificate");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS certificate refused; still serving the old one");
                false
            }
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(dir: &Path) -> ClusterConfig {
        ClusterConfig::for_test(2, 47100, dir)
    }

    #[test]
    fn certificates_name_their_members_and_are_kept_across_runs() {
        let dir = std::env::temp_dir().join(format!("keelson-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = cluster(&dir);
        let pki = Pki::new(&cfg.tls);
        let made = pki.ensure(&cfg, &[]).unwrap();
        assert_eq!(made.len(), 2 + 3, "CA key, CA, n1, n2, gateway: {made:?}");
        assert!(
            pki.ensure(&cfg, &[]).unwrap().is_empty(),
            "a second run changes nothing"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.key_path("n1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for m in cfg.members() {
            let der = CertificateDer::pem_file_iter(pki.cert_path(&m.name))
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(identify(&cfg, &der).map(|x| x.name), Some(m.name.clone()));
        }
        // The configs build (mTLS both ways, HTTPS).
        let n1 = cfg.member("n1").unwrap().clone();
        pki.cluster_server(&n1).unwrap();
        pki.cluster_client(&n1).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_https_certificate_is_reloaded_when_its_files_change() {
        let dir = std::env::temp_dir().join(format!("keelson-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = cluster(&dir);
        let pki = Pki::new(&cfg.tls);
        pki.ensure(&cfg, &[]).unwrap();
        let gw = cfg.gateway.clone();
        let (_, reloader) = pki.https_server(&gw).unwrap();
        let before = reloader.current.read().unwrap().cert[0].clone();
        assert!(!reloader.check(), "nothing changed yet");
        // A broken file is refused and the old certificate kept.
        std::fs::write(pki.cert_path(&gw.name), "not a certificate").unwrap();
        assert!(!reloader.check());
        assert_eq!(reloader.current.read().unwrap().cert[0], before);
        // A new pair is picked up.
        std::fs::remove_file(pki.cert_path(&gw.name)).unwrap();
        pki.ensure(&cfg, &[]).unwrap();
        assert!(reloader.check());
        assert_ne!(reloader.current.read().unwrap().cert[0], before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
