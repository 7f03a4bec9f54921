//! `keelson`: the one binary. It composes the crates: `node` runs a shard-hosting node, `gateway`
//! the HTTP gateway, `broker` the embedded MQTT broker, `up` a whole local cluster as child
//! processes, `check-config` validates a nodes.toml.
//!
//! `main` parses the command line and hands each subcommand to one function here or to its
//! module: `up` (the local cluster), `chaos_cmd` and `chaos_run` (faults and scenario runs),
//! `devices_cmd`, `keys_cmd`, `init_cmd`, `mosquitto_cmd`, `prometheus_cmd` (the tools),
//! `logging` (this process's log format), `probe` (a tiny HTTP GET for readiness).

mod api_call;
mod chaos_cmd;
mod chaos_run;
mod devices_cmd;
mod init_cmd;
mod keys_cmd;
mod logging;
mod mosquitto_cmd;
mod node_cmd;
mod nodes_cmd;
mod probe;
mod prometheus_cmd;
mod recommend_cmd;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keelson_bridge::config;

/// mimalloc: the gateway and the nodes allocate many small, short-lived buffers per request
/// (decoded frames, JSON, TLS records), which glibc's allocator serves markedly slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keelson: sharded, supervised CRM and IoT actors on a self-healing cluster.
#[derive(Debug, Parser)]
#[command(name = "keelson", version, about, long_about = None)]
struct Cli {
    /// Log format of this process (and of the children `up` starts).
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every node and the gateway of nodes.toml as child processes, restart any that dies,
    /// and stop them all on Ctrl-C or SIGTERM.
    Up {
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
        /// Route every link between members through a fault-injecting proxy, so that
        /// `keelson chaos latency|partition|heal` can slow or cut them (no root needed).
        #[arg(long)]
        chaos: bool,
    },
    /// Run one shard-hosting node in this process: a node of nodes.toml, or with --host a new
    /// node that joins the running cluster (`keelson node --name n5 --host 127.0.0.1
    /// --cluster-port 4705 --ops-port 9106`).
    Node {
        /// Node name: one of nodes.toml, or a new one (with --host).
        #[arg(long, short)]
        name: String,
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
        /// Dial node NAME at ADDR instead of its cluster port (repeatable; `keelson up --chaos`
        /// uses it to route links through its fault-injecting proxies).
        #[arg(long, value_name = "NAME=ADDR", value_parser = parse_dial_via)]
        dial_via: Vec<(String, std::net::SocketAddr)>,
        #[command(flatten)]
        join: node_cmd::JoinArgs,
    },
    /// Run the embedded MQTT broker of nodes.toml's [mqtt] in this process (`up` starts it).
    Broker {
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
    },
    /// Simulated devices: register them and publish telemetry over MQTT.
    Devices {
        /// Cluster configuration (gateway and broker addresses).
        #[arg(long, short, default_value = "nodes.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: devices_cmd::DevicesCommand,
    },
    /// Run the HTTP gateway in this process.
    Gateway {
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
        /// Dial node NAME at ADDR instead of its cluster port (repeatable; `keelson up --chaos`
        /// uses it to route links through its fault-injecting proxies).
        #[arg(long, value_name = "NAME=ADDR", value_parser = parse_dial_via)]
        dial_via: Vec<(String, std::net::SocketAddr)>,
    },
    /// Break a cluster on purpose: kill, freeze, thaw and restart members, slow or cut the links
    /// between them, or run a whole scenario and get a verdict.
    Chaos {
        /// Cluster configuration (locates the cluster's run file under its data dir).
        #[arg(long, short, default_value = "nodes.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: chaos_cmd::ChaosCommand,
    },
    /// Print a Prometheus scrape configuration for every process of nodes.toml.
    PrometheusConfig {
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
        /// Alert rules to load (included when the file exists).
        #[arg(long, default_value = "dashboards/alerts.yml")]
        rules: PathBuf,
        /// Scrape and rule evaluation interval, seconds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=300))]
        interval: u32,
    },
    /// Make what a fresh cluster needs and keep it: the cluster CA and every member's
    /// certificate, and the bootstrap admin key (`keelson up` does this first).
    Init {
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
    },
    /// Issue a certificate from the cluster CA (its key in the TLS directory) for a node that
    /// is to join: <tls dir>/NAME.pem and NAME.key, for `<NAME>.node.keelson`.
    IssueCert {
        /// Cluster configuration (the TLS directory).
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
        /// The joining node's name.
        #[arg(long)]
        name: String,
        /// The IP address it listens on (also put in the certificate).
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
    },
    /// The cluster's nodes: list them, or remove one while the cluster serves.
    Nodes {
        /// Cluster configuration (gateway address, TLS directory, admin key file).
        #[arg(long, short, default_value = "nodes.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: nodes_cmd::NodesCommand,
    },
    /// Recommendations: measure them on a ratings file (`evaluate`) against popularity and
    /// random, through the running cluster's API.
    Recommend {
        /// Cluster configuration (gateway address, TLS directory, admin key file).
        #[arg(long, short, default_value = "nodes.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: recommend_cmd::RecommendCommand,
    },
    /// API keys: create (shown once), list, revoke.
    Keys {
        /// Cluster configuration (gateway address, TLS directory, admin key file).
        #[arg(long, short, default_value = "nodes.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// Write a Mosquitto configuration for this cluster: no anonymous clients, a password file
    /// (services and every device with credentials) and per-device topic ACLs.
    MosquittoConfig {
        /// Cluster configuration.
        #[arg(long, short, default_value = "nodes.toml")]
        config: PathBuf,
        /// Directory for mosquitto.conf, passwd and acl.
        #[arg(long, default_value = "mosquitto")]
        out: PathBuf,
        /// Another service client id to admit (starts with `keelson-`; repeatable).
        #[arg(long)]
        service: Vec<String>,
    },
    /// Check a configuration file and print every problem found (exit code 2 if any).
    CheckConfig {
        /// Configuration file.
        #[arg(default_value = "nodes.toml")]
        file: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<keelson_runtime::ClusterConfig, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn parse_dial_via(s: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\" is not NAME=ADDR (e.g. n2=127.0.0.1:47012)"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("\"{addr}\" is not a socket address: {e}"))?;
    Ok((name.to_string(), addr))
}

/// Loads the config and applies `--dial-via`, refusing names that are not nodes.
fn load_with_links(
    path: &std::path::Path,
    dial_via: Vec<(String, std::net::SocketAddr)>,
) -> Result<keelson_runtime::ClusterConfig, ExitCode> {
    let mut cfg = load(path)?;
    for (name, addr) in dial_via {
        if !cfg.nodes.iter().any(|n| n.name == name) {
            eprintln!(
                "error: --dial-via {name}={addr}: \"{name}\" is not a node of {}",
                path.display()
            );
            return Err(ExitCode::from(2));
        }
        cfg.dial_via.insert(name, addr);
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    keelson_runtime::tls::install_provider();
    let log = cli.log_format;
    match cli.command {
        Command::Up { config, chaos } => up(log, config, chaos),
        Command::Node {
            name,
            config,
            dial_via,
            join,
        } => node(log, &name, &config, dial_via, &join),
        Command::Broker { config } => broker(log, &config),
        Command::Devices { config, command } => {
            with_config(&config, |cfg| devices_cmd::run(&cfg, command))
        }
        Command::Gateway { config, dial_via } => gateway(log, &config, dial_via),
        Command::Chaos { config, command } => {
            with_config(&config, |cfg| chaos_cmd::run(&cfg, &config, command))
        }
        Command::PrometheusConfig {
            config,
            rules,
            interval,
        } => with_config(&config, |cfg| prometheus_config(&cfg, &rules, interval)),
        Command::Init { config } => with_config(&config, |cfg| init(&cfg)),
        Command::IssueCert { config, name, ip } => {
            with_config(&config, |cfg| node_cmd::issue_cert(&cfg, &name, ip))
        }
        Command::Nodes { config, command } => {
            with_config(&config, |cfg| nodes_cmd::run(&cfg, command))
        }
        Command::Keys { config, command } => {
            with_config(&config, |cfg| keys_cmd::run(&cfg, command))
        }
        Command::Recommend { config, command } => {
            with_config(&config, |cfg| recommend_cmd::run(&cfg, command))
        }
        Command::MosquittoConfig {
            config,
            out,
            service,
        } => with_config(&config, |cfg| mosquitto_config(&cfg, &out, &service)),
        Command::CheckConfig { file } => check_config(&file),
    }
}

/// Loads the config at `path` and runs `f` on it; exit 2 if it does not load.
fn with_config(
    path: &std::path::Path,
    f: impl FnOnce(keelson_runtime::ClusterConfig) -> ExitCode,
) -> ExitCode {
    match load(path) {
        Ok(cfg) => f(cfg),
        Err(code) => code,
    }
}

/// `keelson up`: the whole local cluster as child processes.
fn up(log: logging::Format, config: PathBuf, chaos: bool) -> ExitCode {
    let cfg = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(log, &cfg.log_level);
    run_async(up::run(cfg, config, log, chaos))
}

/// `keelson node`: one shard-hosting node in this process.
fn node(
    log: logging::Format,
    name: &str,
    config: &std::path::Path,
    dial_via: Vec<(String, std::net::SocketAddr)>,
    join: &node_cmd::JoinArgs,
) -> ExitCode {
    let cfg =
        match load_with_links(config, dial_via).and_then(|c| node_cmd::configure(c, name, join)) {
            Ok(c) => c,
            Err(code) => return code,
        };
    logging::init(log, &cfg.log_level);
    let left = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = left.clone();
    let code = run_async(async move {
        let services = keelson_bridge::service(&cfg).into_iter().collect();
        let stopped = keelson_runtime::node::run_with(
            cfg,
            name,
            keelson_actors::kinds(),
            services,
            keelson_runtime::shutdown::os_signal(),
        )
        .await;
        let removed = matches!(
            stopped,
            Ok(keelson_runtime::node::Stopped::Removed)
                | Err(keelson_runtime::RuntimeError::Removed(..))
        );
        flag.store(removed, std::sync::atomic::Ordering::Relaxed);
        stopped.map(|_| ()).map_err(anyhow::Error::from)
    });
    if left.load(std::sync::atomic::Ordering::Relaxed) {
        return ExitCode::from(keelson_runtime::node::LEFT_THE_CLUSTER as u8);
    }
    code
}

/// `keelson broker`: the embedded MQTT broker in this process.
fn broker(log: logging::Format, config: &std::path::Path) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(log, &cfg.log_level);
    run_async(async move {
        let fetch = credentials_fetch(&cfg)?;
        keelson_bridge::run_broker(cfg, fetch, keelson_runtime::shutdown::os_signal())
            .await
            .map_err(anyhow::Error::from)
    })
}

/// `keelson gateway`: the HTTP gateway in this process.
fn gateway(
    log: logging::Format,
    config: &std::path::Path,
    dial_via: Vec<(String, std::net::SocketAddr)>,
) -> ExitCode {
    let cfg = match load_with_links(config, dial_via) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logging::init(log, &cfg.log_level);
    run_async(async move {
        keelson_gateway::run(cfg, keelson_runtime::shutdown::os_signal())
            .await
            .map_err(anyhow::Error::from)
    })
}

/// `keelson prometheus-config`: the scrape configuration on stdout.
fn prometheus_config(
    cfg: &keelson_runtime::ClusterConfig,
    rules: &std::path::Path,
    interval: u32,
) -> ExitCode {
    let rules = rules.canonicalize().ok();
    if rules.is_none() {
        eprintln!("note: no alert rules file found; the config loads none");
    }
    print!(
        "{}",
        prometheus_cmd::scrape_config(cfg, rules.as_deref(), interval)
    );
    ExitCode::SUCCESS
}

/// `keelson init`: the cluster CA, member certificates and bootstrap admin key.
fn init(cfg: &keelson_runtime::ClusterConfig) -> ExitCode {
    match init_cmd::ensure(cfg) {
        Ok(made) => {
            init_cmd::report(cfg, &made);
            if made.certs.is_empty() && made.admin_key.is_none() && made.mqtt_secret.is_none() {
                eprintln!("nothing to make: certificates and admin key already exist");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `keelson mosquitto-config`: mosquitto.conf, passwd and acl in `out`.
fn mosquitto_config(
    cfg: &keelson_runtime::ClusterConfig,
    out: &std::path::Path,
    service: &[String],
) -> ExitCode {
    match mosquitto_cmd::write(cfg, out, service) {
        Ok(devices) => {
            eprintln!(
                "wrote {}/mosquitto.conf, passwd ({devices} devices) and acl; start it with `mosquitto -c {}/mosquitto.conf`",
                out.display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `keelson check-config`: every problem of the file, or a one-line summary.
fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok: cluster \"{}\", {} nodes, {} shards, gateway {}",
                file.display(),
                cfg.name,
                cfg.nodes.len(),
                cfg.shards,
                keelson_gateway::base_url(&cfg)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in e.problems() {
                let p = p
                    .strip_prefix(&format!("{}: ", file.display()))
                    .unwrap_or(&p)
                    .to_string();
                eprintln!("{}: {p}", file.display());
            }
            ExitCode::from(2)
        }
    }
}

/// How the embedded broker reads the device credentials: through the gateway, with the tool key.
fn credentials_fetch(
    cfg: &keelson_runtime::ClusterConfig,
) -> anyhow::Result<keelson_bridge::CredentialsFetch> {
    let key = keelson_gateway::tool_key(cfg);
    if key.is_none() {
        tracing::warn!("no API key for the broker: devices cannot log in until one is given (KEELSON_API_KEY or the admin key file)");
    }
    let api = keelson_gateway::api_client(cfg, key.as_ref(), std::time::Duration::from_secs(5))?;
    Ok(Box::new(move |since: Option<u64>| {
        let api = api.clone();
        Box::pin(async move {
            let mut url = format!("{}/v1/mqtt/credentials", api.base);
            if let Some(v) = since {
                url.push_str(&format!("?unless_version={v}"));
            }
            let r = api.http.get(url).send().await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("the gateway answered {}", r.status()));
            }
            let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
            if v["unchanged"] == true {
                return Ok(None);
            }
            let version = v["version"].as_u64().ok_or("no version in the answer")?;
            let devices = v["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    Some((
                        d["device_id"].as_str()?.to_string(),
                        d["hash"].as_str()?.to_string(),
                    ))
                })
                .collect();
            Ok(Some((version, devices)))
        })
    }))
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
