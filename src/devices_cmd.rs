//! `keelson devices`: simulated devices for the tour and the benchmarks.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use keelson_bridge::{register, simulate, SimulateOptions};
use keelson_runtime::ClusterConfig;

/// A devices command.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Register N devices through the gateway and publish their telemetry over MQTT (QoS 1),
    /// answering the commands they receive; prints what happened as JSON.
    Simulate {
        /// Number of devices (half DHT22-like temperature/humidity sensors, half wearables).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// Telemetry messages per second over all devices.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Probability that a reading is anomalous (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        anomaly_rate: f64,
        /// Seconds to publish for (at most an hour).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration: u64,
        /// Device id prefix.
        #[arg(long, default_value = "sim")]
        prefix: String,
    },
}

/// Runs a devices command; exit 2 on bad arguments or an unusable cluster.
pub fn run(cfg: &ClusterConfig, cmd: DevicesCommand) -> ExitCode {
    let DevicesCommand::Simulate {
        count,
        rate,
        anomaly_rate,
        duration,
        prefix,
    } = cmd;
    let opts = match options(cfg, count, rate, anomaly_rate, duration, prefix) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(register_and_simulate(&opts))
}

/// Checks the arguments and the cluster (a broker, an API key, TLS) and makes the options.
fn options(
    cfg: &ClusterConfig,
    count: u32,
    rate: f64,
    anomaly_rate: f64,
    duration: u64,
    prefix: String,
) -> Result<SimulateOptions, String> {
    let Some(mqtt) = keelson_bridge::config::mqtt(cfg) else {
        return Err(
            "nodes.toml has no [mqtt] section: there is no broker to publish to".to_string(),
        );
    };
    if !(rate > 0.0 && rate <= 1_000_000.0) {
        return Err(format!(
            "--rate {rate}: must be above 0 and at most 1000000"
        ));
    }
    if !(0.0..=1.0).contains(&anomaly_rate) {
        return Err(format!(
            "--anomaly-rate {anomaly_rate}: must be between 0 and 1"
        ));
    }
    if keelson_actors::validate_id("prefix", &prefix).is_err() || prefix.len() > 40 {
        return Err(format!(
            "--prefix \"{prefix}\": use up to 40 letters, digits, '-' or '_'"
        ));
    }
    let Some(key) = keelson_gateway::tool_key(cfg) else {
        return Err(format!(
            "no API key to register devices with: set KEELSON_API_KEY or make {} (keelson init)",
            cfg.auth.admin_key_file.display()
        ));
    };
    let api = keelson_gateway::api_client(cfg, Some(&key), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(SimulateOptions {
        gateway: api.base,
        http: api.http,
        broker: mqtt.addr,
        count: count as usize,
        rate,
        anomaly_rate,
        duration: Duration::from_secs(duration),
        prefix,
        mqtt_password: keelson_bridge::service_secret(cfg),
        mqtt_tls: keelson_bridge::MqttTls::for_cluster(cfg).map_err(|e| e.to_string())?,
    })
}

/// Registers the devices, publishes for the duration, prints the report as JSON.
async fn register_and_simulate(opts: &SimulateOptions) -> ExitCode {
    eprintln!(
        "registering {} devices through {}",
        opts.count, opts.gateway
    );
    if let Err(e) = register(opts).await {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    eprintln!(
        "publishing {} msg/s to {}://{} for {} s",
        opts.rate,
        if opts.mqtt_tls.enabled() {
            "mqtts"
        } else {
            "mqtt"
        },
        opts.broker,
        opts.duration.as_secs()
    );
    let report = simulate(opts).await;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("serialises")
    );
    ExitCode::SUCCESS
}
