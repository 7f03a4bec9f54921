//! `keelson chaos`: faults against a cluster started by `keelson up`.

use std::process::ExitCode;

use clap::Subcommand;
use keelson_chaos::{apply_fault, status, ProcessFault};
use keelson_runtime::ClusterConfig;

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
    /// Show every member's process and whether it is running, frozen or down.
    Status,
}

/// Runs a chaos command; exit 2 when the fault could not be applied.
pub fn run(cfg: &ClusterConfig, cmd: ChaosCommand) -> ExitCode {
    let (node, fault, verb) = match cmd {
        ChaosCommand::Status => {
            return match status(&cfg.data_dir) {
                Ok(members) => {
                    println!("{:<10} {:<8} {:<8} state", "member", "role", "pid");
                    for m in members {
                        let pid = m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                        println!("{:<10} {:<8} {:<8} {}", m.name, m.role, pid, m.state);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        ChaosCommand::Kill { node } => (node, ProcessFault::Kill, "killed"),
        ChaosCommand::Freeze { node } => (node, ProcessFault::Freeze, "froze"),
        ChaosCommand::Thaw { node } => (node, ProcessFault::Thaw, "thawed"),
        ChaosCommand::Restart { node } => (node, ProcessFault::Restart, "asked to restart"),
    };
    match apply_fault(&cfg.data_dir, &node, fault) {
        Ok(pid) => {
            println!("{verb} {node} (pid {pid})");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(e: keelson_chaos::FaultError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
