//! One call to the gateway's API from a command (`keelson keys`, `keelson nodes`), with the
//! key in `KEELSON_API_KEY` or the bootstrap admin key of nodes.toml's data dir.

use std::process::ExitCode;
use std::time::Duration;

use keelson_runtime::ClusterConfig;
use serde_json::Value;

/// `method path` with an optional JSON body: the answer's JSON, or the gateway's refusal as
/// `status: message`.
pub async fn call(
    cfg: &ClusterConfig,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let key = keelson_gateway::tool_key(cfg).ok_or_else(|| {
        format!(
            "no API key: set KEELSON_API_KEY, or run `keelson up` once to make {}",
            cfg.auth.admin_key_file.display()
        )
    })?;
    let api = keelson_gateway::api_client(cfg, Some(&key), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut rb = api.http.request(method, format!("{}{path}", api.base));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb
        .send()
        .await
        .map_err(|e| format!("the gateway at {} does not answer: {e}", api.base))?;
    answer(r).await
}

/// A gateway answer's JSON, or its refusal as `status: message`.
pub async fn answer(r: reqwest::Response) -> Result<Value, String> {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(v)
    } else {
        Err(format!(
            "{}: {}",
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or("no message")
        ))
    }
}

/// Runs a command's calls to completion: exit 0, 1 when the gateway refuses, 2 when it cannot
/// be asked (no answer, no key), the reason on stderr.
pub fn run(calls: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match rt.block_on(calls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.contains("does not answer") || e.starts_with("no API key") {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
