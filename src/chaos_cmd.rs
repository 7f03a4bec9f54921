//! `keelson chaos`: faults against a cluster started by `keelson up`, and scenario runs.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use keelson_chaos::{
    apply_fault, read_run_file, status, FaultError, LatencyRequest, LinkClient, LinkState,
    PartitionRequest, ProcessFault,
};
use keelson_runtime::ClusterConfig;

use crate::chaos_run;

/// A chaos command.
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// SIGKILL a member; `keelson up` restarts it after its backoff.
    Kill {
        /// Member name, as in nodes.toml.
        node: String,
    },
    /// SIGSTOP a member: alive but silent, as a frozen or overloaded host.
    Freeze {
        /// Member name.
        node: String,
    },
    /// SIGCONT a frozen member.
    Thaw {
        /// Member name.
        node: String,
    },
    /// Stop a member cleanly (SIGTERM); `keelson up` starts it again after its backoff.
    Restart {
        /// Member name.
        node: String,
    },
    /// Delay every link between two groups of members, both ways (needs `keelson up --chaos`).
    Latency {
        /// First group: member names separated by commas (e.g. n1 or n1,n2).
        a: String,
        /// Second group.
        b: String,
        /// Delay added to each direction: 25ms, 0.1s, or a number of milliseconds.
        #[arg(value_parser = parse_delay)]
        delay: Duration,
        /// Uniform jitter around the delay (at most the delay).
        #[arg(long, value_parser = parse_delay, default_value = "0ms")]
        jitter: Duration,
    },
    /// Cut every link between two groups of members (needs `keelson up --chaos`).
    Partition {
        /// First group: member names separated by commas.
        a: String,
        /// Second group.
        b: String,
        /// Cut only traffic from the first group to the second.
        #[arg(long)]
        one_way: bool,
    },
    /// Remove every latency and partition fault.
    Heal,
    /// Show every member's process (running, frozen or down) and the active link faults.
    Status,
    /// Run a scenario file: workload, faults, checks, and a report (exit 1 if a gate fails).
    Run(chaos_run::RunArgs),
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{s}\" is not a delay (try 25ms, 0.1s or 25)"))?;
    if !(0.0..=60_000.0).contains(&(v * scale)) {
        return Err(format!("\"{s}\": a delay must be between 0 and 60 s"));
    }
    Ok(Duration::from_micros((v * scale * 1000.0).round() as u64))
}

fn group(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs a chaos command; exit 2 when the fault could not be applied.
pub fn run(cfg: &ClusterConfig, config_path: &std::path::Path, cmd: ChaosCommand) -> ExitCode {
    let (node, fault, verb) = match cmd {
        ChaosCommand::Status => return show_status(cfg),
        ChaosCommand::Run(args) => return chaos_run::run(cfg, config_path, args),
        ChaosCommand::Latency {
            a,
            b,
            delay,
            jitter,
        } => {
            let req = LatencyRequest {
                a: group(&a),
                b: group(&b),
                delay_ms: delay.as_millis() as u64,
                jitter_ms: jitter.as_millis() as u64,
            };
            return links(cfg, |c| async move { c.latency(&req).await });
        }
        ChaosCommand::Partition { a, b, one_way } => {
            let req = PartitionRequest {
                a: group(&a),
                b: group(&b),
                one_way,
            };
            return links(cfg, |c| async move { c.partition(&req).await });
        }
        ChaosCommand::Heal => return links(cfg, |c| async move { c.heal().await }),
        ChaosCommand::Kill { node } => (node, ProcessFault::Kill, "killed"),
        ChaosCommand::Freeze { node } => (node, ProcessFault::Freeze, "froze"),
        ChaosCommand::Thaw { node } => (node, ProcessFault::Thaw, "thawed"),
        ChaosCommand::Restart { node } => (node, ProcessFault::Restart, "asked to restart"),
    };
    match apply_fault(&cfg.data_dir, &node, fault) {
        Ok(pid) => {
            // Answer once the process is dead, so the next command sees it gone.
            if fault == ProcessFault::Kill
                && !keelson_chaos::wait_exited(pid, std::time::Duration::from_secs(5))
            {
                eprintln!("{node} (pid {pid}) was sent SIGKILL but has not exited yet");
            }
            println!("{verb} {node} (pid {pid})");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

fn links<F, Fut>(cfg: &ClusterConfig, op: F) -> ExitCode
where
    F: FnOnce(LinkClient) -> Fut,
    Fut: std::future::Future<Output = Result<LinkState, FaultError>>,
{
    let client = match link_client(cfg) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match block_on(op(client)) {
        Ok(state) => {
            print_links(&state);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn print_links(state: &LinkState) {
    if state.faults.is_empty() {
        println!("links: no faults");
        return;
    }
    println!(
        "{:<10} {:<10} {:>9} {:>9}  blocked",
        "from", "to", "delay", "jitter"
    );
    for f in &state.faults {
        println!(
            "{:<10} {:<10} {:>6} ms {:>6} ms  {}",
            f.from,
            f.to,
            f.delay_ms,
            f.jitter_ms,
            if f.blocked { "yes" } else { "no" }
        );
    }
}

fn show_status(cfg: &ClusterConfig) -> ExitCode {
    let members = match status(&cfg.data_dir) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    println!("{:<10} {:<8} {:<8} state", "member", "role", "pid");
    for m in members {
        let pid = m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<10} {:<8} {:<8} {}", m.name, m.role, pid, m.state);
    }
    println!();
    match read_run_file(&cfg.data_dir).map(|r| r.chaos_control) {
        Ok(Some(_)) => match link_client(cfg) {
            Ok(c) => match block_on(c.list()) {
                Ok(state) => print_links(&state),
                Err(e) => return fail(e),
            },
            Err(e) => return fail(e),
        },
        Ok(None) => println!(
            "links: direct (start the cluster with `keelson up --chaos` to inject latency and partitions)"
        ),
        Err(e) => return fail(e),
    }
    ExitCode::SUCCESS
}

fn fail(e: FaultError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The link control's client, with the tools' key (operator or admin).
fn link_client(cfg: &ClusterConfig) -> Result<LinkClient, FaultError> {
    let key = keelson_gateway::tool_key(cfg);
    let api = keelson_gateway::api_client(cfg, key.as_ref(), std::time::Duration::from_secs(5))
        .map_err(|e| FaultError::Links(e.to_string()))?;
    LinkClient::for_cluster(&cfg.data_dir, api.http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_in_ms_and_s_and_refuse_garbage() {
        assert_eq!(parse_delay("25ms"), Ok(Duration::from_millis(25)));
        assert_eq!(parse_delay("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_delay("7"), Ok(Duration::from_millis(7)));
        assert!(parse_delay("fast").is_err());
        assert!(parse_delay("-5ms").is_err());
        assert_eq!(group("n1, n2,,n3"), vec!["n1", "n2", "n3"]);
    }
}
