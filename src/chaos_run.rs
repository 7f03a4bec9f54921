//! `keelson chaos run <scenario>`: start a cluster of its own (or attach to a running one), run
//! the scenario with a progress bar, write the report, and exit 1 if a gate failed.
//!
//! ```text
//! scenario file ─validate─▶ members checked against nodes.toml ─▶ cluster:
//!     own:    <out>/cluster/nodes.toml (data_dir moved under <out>) → `keelson up --chaos`
//!     attach: the cluster running from nodes.toml's data dir (its run file)
//! ─▶ keelson_chaos::run_scenario ─▶ report.json, report.md, chart.svg in <out> ─▶ exit 0 / 1
//! ```

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use keelson_chaos::{read_run_file, run_scenario, write_report, Report, Scenario, Target, Written};
use keelson_runtime::ClusterConfig;

/// Arguments of `keelson chaos run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (the shipped ones are in chaos/scenarios/).
    pub scenario: PathBuf,
    /// Run against the cluster already running from --config's data dir instead of starting a
    /// fresh one (link faults need it started with `keelson up --chaos`).
    #[arg(long)]
    pub attach: bool,
    /// Directory for report.json, report.md and chart.svg [default:
    /// chaos-reports/<scenario>-<unix time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A cluster this command started; stopped (and waited for) when dropped.
struct OwnCluster {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl OwnCluster {
    /// Why `keelson up` is gone, with the end of its log, or `None` while it runs.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        Some(format!(
            "`keelson up` for the scenario exited ({status}); see {}:\n{}",
            self.log_path.display(),
            lines[lines.len().saturating_sub(12)..].join("\n")
        ))
    }

    /// Resolves with [`OwnCluster::exited`] once `keelson up` is gone (polled every 200 ms).
    async fn watch(&mut self) -> String {
        loop {
            if let Some(why) = self.exited() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        // SAFETY: signals the `keelson up` this command started; it stops its children.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a copy of the config whose data dir is `data_dir` and starts `keelson up --chaos` on it.
fn start_cluster(config_path: &Path, dir: &Path) -> anyhow::Result<(OwnCluster, ClusterConfig)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let mut doc: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", config_path.display()))?;
    let cluster = doc
        .get_mut("cluster")
        .and_then(|c| c.as_table_mut())
        .context("the config has no [cluster] table")?;
    let data_dir = dir.join("data");
    cluster.insert(
        "data_dir".into(),
        toml::Value::String(data_dir.display().to_string()),
    );
    let copy = dir.join("nodes.toml");
    std::fs::write(&copy, toml::to_string(&doc)?)?;
    let cfg = keelson_bridge::config::load(&copy).map_err(|e| anyhow::anyhow!("{e}"))?;
    let log_path = dir.join("up.log");
    let log = std::fs::File::create(&log_path)?;
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["up", "--chaos", "--config"])
        .arg(&copy)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start `keelson up`")?;
    let mut own = OwnCluster {
        child,
        log_path: log_path.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(why) = own.exited() {
            bail!("{why}");
        }
        if read_run_file(&cfg.data_dir).is_ok_and(|r| r.chaos_control.is_some()) {
            return Ok((own, cfg));
        }
        if Instant::now() > deadline {
            bail!(
                "the scenario's cluster did not start within 90 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn target(cfg: &ClusterConfig, timeout: Duration) -> anyhow::Result<Target> {
    let key = keelson_gateway::tool_key(cfg).with_context(|| {
        format!(
            "no API key for the workload: set KEELSON_API_KEY or make {} (keelson init)",
            cfg.auth.admin_key_file.display()
        )
    })?;
    let api = keelson_gateway::api_client(cfg, Some(&key), timeout)?;
    Ok(Target {
        gateway: cfg.gateway.name.clone(),
        api: keelson_chaos::Gateway::new(api.base, api.http),
        nodes: cfg
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.ops_addr))
            .collect(),
        data_dir: cfg.data_dir.clone(),
        shards: cfg.shards,
        heartbeat: cfg.heartbeat_interval,
    })
}

fn progress_bar(duration_s: u64) -> ProgressBar {
    let bar = ProgressBar::new(duration_s);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}/{len} s  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs the command.
pub fn run(cfg: &ClusterConfig, config_path: &Path, args: RunArgs) -> ExitCode {
    let scenario = match Scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            for p in e.problems() {
                eprintln!("error: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let nodes = cfg.node_names();
    let members: Vec<String> = cfg.members().map(|m| m.name.clone()).collect();
    if let Err(problems) = scenario.check_members(&nodes, &members) {
        for p in problems {
            eprintln!("error: {}: {p}", args.scenario.display());
        }
        return ExitCode::from(2);
    }
    if args.attach {
        match read_run_file(&cfg.data_dir) {
            Err(e) => {
                eprintln!("error: --attach: {e}");
                return ExitCode::from(2);
            }
            Ok(r) if r.chaos_control.is_none() && scenario.needs_link_proxies() => {
                eprintln!(
                    "error: --attach: scenario \"{}\" injects link faults, but the cluster running from {} was not started with `keelson up --chaos`",
                    scenario.name,
                    cfg.data_dir.display()
                );
                return ExitCode::from(2);
            }
            Ok(_) => {}
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&scenario.name));
    match execute(cfg, config_path, &args, &scenario, &out) {
        Ok(passed) => {
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Starts (or attaches to) the cluster, runs the scenario with a progress bar, writes the
/// report and prints its summary; returns whether every gate passed.
fn execute(
    cfg: &ClusterConfig,
    config_path: &Path,
    args: &RunArgs,
    scenario: &Scenario,
    out: &Path,
) -> anyhow::Result<bool> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!("scenario {}: {}", scenario.name, scenario.description);
    let (mut own, cfg) = if args.attach {
        (None, cfg.clone())
    } else {
        eprintln!(
            "starting a cluster for it (keelson up --chaos, data and logs in {})",
            out.join("cluster").display()
        );
        let (own, cfg) = start_cluster(config_path, &out.join("cluster"))?;
        (Some(own), cfg)
    };
    let bar = progress_bar(scenario.duration_s);
    let progress = on_progress(bar.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let target = target(&cfg, Duration::from_millis(scenario.workload.timeout_ms))?;
    // A cluster this command started that falls over (a member could not bind its port, say)
    // ends the run with its reason at once, not after the settle deadline.
    let report = rt.block_on(async {
        match own.as_mut() {
            Some(up) => tokio::select! {
                r = run_scenario(scenario, &target, progress) => r.map_err(anyhow::Error::from),
                why = up.watch() => Err(anyhow::anyhow!("{why}")),
            },
            None => run_scenario(scenario, &target, progress)
                .await
                .map_err(anyhow::Error::from),
        }
    });
    bar.finish_and_clear();
    drop(rt);
    drop(own);
    let report = report?;
    let written = write_report(out, &report)
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    print_summary(&report, &written);
    Ok(report.verdict.passed)
}

/// The runner's progress on the bar: position in seconds, counts as the message, events
/// printed above it (or as the message before the workload starts).
fn on_progress(bar: ProgressBar) -> keelson_chaos::Progress {
    Box::new(move |secs, begun, ok, event| {
        bar.set_position(secs);
        let ratio = if begun == 0 {
            100.0
        } else {
            ok as f64 * 100.0 / begun as f64
        };
        match event {
            Some(e) if begun == 0 => bar.set_message(e),
            Some(e) => bar.println(format!("  {secs:>3} s  {e}")),
            None => bar.set_message(format!("{begun} ops, {ratio:.2}% ok")),
        }
    })
}

/// The verdict line, one line per fault, the failed gates and where the report is.
fn print_summary(report: &Report, written: &Written) {
    let t = &report.totals;
    println!(
        "{}: {}  availability {:.2}%  p50 {:.1} ms  p99 {:.1} ms  lost writes {}  linearizable {}",
        report.scenario,
        if report.verdict.passed {
            "PASS"
        } else {
            "FAIL"
        },
        t.availability * 100.0,
        t.p50_ms,
        t.p99_ms,
        report.checks.lost_writes.len(),
        if report.checks.linearizable {
            "yes"
        } else {
            "no"
        },
    );
    for f in &report.faults {
        let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
        println!(
            "  {:>5.1} s {} {}: detection {}, recovery {}",
            f.at_ms as f64 / 1000.0,
            f.action,
            f.target,
            ms(f.detection_ms),
            ms(f.recovery_ms)
        );
    }
    for g in report.verdict.gates.iter().filter(|g| !g.passed) {
        println!("  failed gate {}: {} (limit {})", g.name, g.actual, g.limit);
    }
    println!(
        "report: {} ({}, {})",
        written.markdown.display(),
        written.json.display(),
        written.chart.display()
    );
}

/// Where `keelson chaos run` writes when `--out` is not given.
pub fn default_out(scenario: &str) -> std::path::PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    std::path::PathBuf::from("chaos-reports").join(format!("{scenario}-{secs}"))
}
