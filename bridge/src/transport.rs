//! How Keelson's own MQTT clients reach the broker: TLS trusting only the cluster CA when
//! `tls.enabled` (the embedded broker then speaks only TLS; a Mosquitto gets a listener with
//! the broker certificate from `keelson mosquitto-config`), plain MQTT otherwise (loopback only).

use std::sync::Arc;

use keelson_runtime::ClusterConfig;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// The TLS configuration for MQTT clients of `cfg`'s broker, if TLS is on.
#[derive(Clone, Default)]
pub struct MqttTls(Option<Arc<rustls::ClientConfig>>);

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "MqttTls(on)"
        } else {
            "MqttTls(off)"
        })
    }
}

impl MqttTls {
    /// For `cfg`: TLS with the cluster CA when `tls.enabled`.
    pub fn for_cluster(cfg: &ClusterConfig) -> Result<Self, keelson_runtime::tls::TlsError> {
        if !cfg.tls.enabled {
            return Ok(Self(None));
        }
        let ca = keelson_runtime::tls::Pki::new(&cfg.tls).ca_path();
        Ok(Self(Some(Arc::new(keelson_runtime::tls::client_trusting(
            &ca,
        )?))))
    }

    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Sets the transport of `opts`.
    pub fn apply(&self, opts: &mut MqttOptions) {
        if let Some(c) = &self.0 {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                c.clone(),
            )));
        }
    }
}
