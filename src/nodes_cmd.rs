//! `keelson nodes list|remove`: the live members of the cluster, and taking a node out while
//! the cluster serves (through the gateway's `/v1/cluster`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use keelson_runtime::ClusterConfig;
use serde_json::Value;

use crate::api_call::call;

/// A nodes command.
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Every node the cluster has now (seeds and nodes that joined): state, primaries, copies.
    List,
    /// Drain node NAME (its copies are made elsewhere and its primaries handed over first),
    /// remove it from the cluster and stop it; waits until it is gone unless --no-wait.
    Remove {
        /// Node name.
        name: String,
        /// Return once the removal has started.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the removal goes on).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

/// Runs a nodes command: exit 1 when the gateway refuses, 2 when it cannot be asked.
pub fn run(cfg: &ClusterConfig, cmd: NodesCommand) -> ExitCode {
    crate::api_call::run(async {
        match cmd {
            NodesCommand::List => list(cfg).await,
            NodesCommand::Remove {
                name,
                no_wait,
                timeout_secs,
            } => remove(cfg, &name, !no_wait, Duration::from_secs(timeout_secs)).await,
        }
    })
}

fn nodes(info: &Value) -> Vec<&Value> {
    info["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "node")
        .collect()
}

async fn list(cfg: &ClusterConfig) -> Result<(), String> {
    let info = call(cfg, reqwest::Method::GET, "/v1/cluster", None).await?;
    println!(
        "{:<16} {:<8} {:>9} {:>7} {:>8}  note",
        "node", "state", "primaries", "copies", "copying"
    );
    for m in nodes(&info) {
        let owned = m["shards_owned"].as_u64().unwrap_or(0);
        println!(
            "{:<16} {:<8} {:>9} {:>7} {:>8}  {}",
            m["name"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or(""),
            owned,
            owned + m["shards_following"].as_u64().unwrap_or(0),
            m["shards_learning"].as_u64().unwrap_or(0),
            if m["draining"] == true {
                "draining"
            } else {
                ""
            }
        );
    }
    println!(
        "map version {}, {} shards, replication factor {}, {} under-replicated, {} copies in progress",
        info["map_version"], info["shards"], info["replication_factor"], info["under_replicated"], info["learners"]
    );
    Ok(())
}

async fn remove(
    cfg: &ClusterConfig,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> Result<(), String> {
    let path = format!("/v1/cluster/nodes/{name}");
    let v = call(cfg, reqwest::Method::DELETE, &path, None).await?;
    println!(
        "{name} is draining: its {} copies move to other nodes, then it leaves the cluster and stops",
        v["copies"]
    );
    if !wait {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(info) = call(cfg, reqwest::Method::GET, "/v1/cluster", None).await else {
            continue;
        };
        let Some(m) = nodes(&info).into_iter().find(|m| m["name"] == name) else {
            println!("{name} was removed; its data dir is no longer needed");
            return Ok(());
        };
        let copies =
            m["shards_owned"].as_u64().unwrap_or(0) + m["shards_following"].as_u64().unwrap_or(0);
        let now = format!(
            "{name}: {copies} copies left, {} state",
            m["state"].as_str().unwrap_or("?")
        );
        if now != last {
            println!("{now}");
            last = now;
        }
    }
    Err(format!("{name} is still a member after {timeout:?}; the removal goes on (see `keelson nodes list`)"))
}
