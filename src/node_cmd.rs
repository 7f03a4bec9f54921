//! `keelson node`: one node in this process, a seed of nodes.toml or (with `--host`) a node
//! that joins the running cluster through the seeds, with a certificate from the cluster CA.

use std::process::ExitCode;

use clap::Args;
use keelson_runtime::ClusterConfig;

/// Where a node that is not in nodes.toml listens; given, it joins the running cluster.
#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// Join the running cluster as a new node bound to this IP address (the name must not be
    /// in nodes.toml; its seeds are asked to admit it).
    #[arg(long, value_name = "IP", requires_all = ["cluster_port", "ops_port"])]
    pub host: Option<String>,
    /// The host name or IP address peers dial to reach the joining node (default: --host).
    #[arg(long, value_name = "HOST", requires = "host")]
    pub advertise_host: Option<String>,
    /// The joining node's cluster port.
    #[arg(long, value_name = "PORT", requires = "host")]
    pub cluster_port: Option<u16>,
    /// The joining node's ops port (/health, /ready, /metrics).
    #[arg(long, value_name = "PORT", requires = "host")]
    pub ops_port: Option<u16>,
    /// Run as the seed of the config file when NAME is one (ignoring --host and the ports),
    /// else join with them: one command line for every replica of a StatefulSet.
    #[arg(long, requires = "host")]
    pub seed_or_join: bool,
}

/// `cfg` as node `name` runs it: unchanged for a seed; for a joining node, with its addresses
/// and (TLS on) its certificate, issued here from the cluster CA if it has none.
pub fn configure(
    cfg: ClusterConfig,
    name: &str,
    join: &JoinArgs,
) -> Result<ClusterConfig, ExitCode> {
    if join.seed_or_join && cfg.nodes.iter().any(|n| n.name == name) {
        return Ok(cfg);
    }
    let Some(host) = &join.host else {
        if cfg.node(name).is_none() {
            eprintln!(
                "error: no node named \"{name}\" in the config file (its nodes: {}); to add a node to the running cluster, give --host, --cluster-port and --ops-port",
                cfg.node_names().join(", ")
            );
            return Err(ExitCode::from(2));
        }
        return Ok(cfg);
    };
    let (Some(cluster_port), Some(ops_port)) = (join.cluster_port, join.ops_port) else {
        eprintln!("error: --host needs --cluster-port and --ops-port");
        return Err(ExitCode::from(2));
    };
    let cfg = cfg
        .join_as(
            name,
            host,
            join.advertise_host.as_deref(),
            cluster_port,
            ops_port,
        )
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })?;
    if cfg.tls.enabled {
        let me = &cfg.joining.as_ref().expect("join_as sets it").member;
        let subject = keelson_runtime::tls::Subject::from(me);
        match keelson_runtime::tls::Pki::new(&cfg.tls).issue(&subject) {
            Ok(Some(path)) => eprintln!(
                "made {name}'s certificate {} from the cluster CA",
                path.display()
            ),
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return Err(ExitCode::from(1));
            }
        }
    }
    Ok(cfg)
}

/// `keelson issue-cert`: a certificate for node `name` at `ip` from the cluster CA.
pub fn issue_cert(cfg: &ClusterConfig, name: &str, ip: std::net::IpAddr) -> ExitCode {
    if !keelson_runtime::config::valid_name(name) {
        eprintln!("error: --name {name:?}: a node name is 1 to 32 lower-case letters, digits and '-', starting with a letter");
        return ExitCode::from(2);
    }
    let subject = keelson_runtime::tls::Subject {
        name: name.to_string(),
        kind: keelson_runtime::Role::Node.as_str(),
        ip,
    };
    match keelson_runtime::tls::Pki::new(&cfg.tls).issue(&subject) {
        Ok(Some(path)) => {
            println!(
                "made {} (and its key) for {name}.node.keelson",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("{name} has a certificate already; kept it");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
