//! `keelson keys create|list|revoke`: API keys, through the gateway's `/v1/keys` with the key in
//! `KEELSON_API_KEY` or the bootstrap admin key of nodes.toml's data dir.

use std::process::ExitCode;

use clap::Subcommand;
use keelson_runtime::ClusterConfig;

use crate::api_call::call;

/// A keys command.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key; prints its details, then the key itself as the last line (shown once).
    Create {
        /// Role: admin, operator, agent or viewer.
        #[arg(long)]
        role: String,
        /// Unique name, e.g. crm-web.
        #[arg(long)]
        name: String,
    },
    /// Every key: name, role, when made, by whom, whether revoked (never the secret).
    List,
    /// Revoke the live key NAME; every gateway refuses it within a second.
    Revoke {
        /// Key name.
        name: String,
    },
}

/// Runs a keys command: exit 1 when the gateway refuses, 2 when it cannot be asked.
pub fn run(cfg: &ClusterConfig, cmd: KeysCommand) -> ExitCode {
    crate::api_call::run(async {
        match cmd {
            KeysCommand::Create { role, name } => {
                let v = call(
                    cfg,
                    reqwest::Method::POST,
                    "/v1/keys",
                    Some(serde_json::json!({"name": name, "role": role})),
                )
                .await?;
                println!("name: {}", v["name"].as_str().unwrap_or(""));
                println!("role: {}", v["role"].as_str().unwrap_or(""));
                println!("id:   {}", v["id"].as_str().unwrap_or(""));
                println!("This key is shown once; store it now (send it as `Authorization: Bearer <key>`):");
                println!("{}", v["key"].as_str().unwrap_or(""));
                Ok(())
            }
            KeysCommand::List => {
                let v = call(cfg, reqwest::Method::GET, "/v1/keys", None).await?;
                println!(
                    "{:<24} {:<9} {:<13} {:<24} state",
                    "name", "role", "id", "created by"
                );
                for k in v["keys"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<9} {:<13} {:<24} {}",
                        k["name"].as_str().unwrap_or(""),
                        k["role"].as_str().unwrap_or(""),
                        k["id"].as_str().unwrap_or(""),
                        k["created_by"].as_str().unwrap_or(""),
                        if k["revoked_ms"].is_null() {
                            "live"
                        } else {
                            "revoked"
                        }
                    );
                }
                Ok(())
            }
            KeysCommand::Revoke { name } => {
                call(
                    cfg,
                    reqwest::Method::DELETE,
                    &format!("/v1/keys/{name}"),
                    None,
                )
                .await?;
                println!("revoked {name}");
                Ok(())
            }
        }
    })
}
