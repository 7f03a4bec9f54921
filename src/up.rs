//! `keelson up`: the local cluster as child processes of one supervisor.
//!
//! ```text
//! start: load config → data_dir/{logs,run} → spawn every node and the gateway (logs to files)
//!        → wait for every /ready → wait for the gateway to see every node up → print URLs
//! run:   a child exits → log it → restart it after a backoff (2 s doubling to 30 s; reset after
//!        30 s of uptime); data_dir/run/cluster.json always holds the live pids
//! stop:  Ctrl-C or SIGTERM → SIGTERM the gateway, then the nodes → SIGKILL after 10 s
//! ```

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use keelson_bridge::config::EmbeddedBroker;
use keelson_chaos::LinkControl;
use keelson_runtime::{Backoff, ClusterConfig, Member, Role};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::logging::Format;
use crate::probe;

mod links;

/// Restart delay for a child that has failed `quick_failures` times in a row, each within
/// 30 s of its start: 2 s, doubling to 30 s. Long enough that the cluster visibly marks the node
/// down first, short enough that a crash costs seconds.
fn restart_delay(quick_failures: u32) -> Duration {
    Backoff::delay(
        Duration::from_secs(2),
        Duration::from_secs(30),
        quick_failures,
    )
}

const STABLE_AFTER: Duration = Duration::from_secs(30);

/// What a child is: a cluster member, or the embedded MQTT broker beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Member(Role),
    Broker,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Member(role) => role.as_str(),
            Kind::Broker => keelson_bridge::config::BROKER_KIND,
        }
    }
}

/// One process `up` runs. For the broker, `cluster_addr` is its MQTT address.
#[derive(Debug, Clone)]
struct Process {
    name: String,
    kind: Kind,
    cluster_addr: SocketAddr,
    ops_addr: SocketAddr,
}

impl From<&Member> for Process {
    fn from(m: &Member) -> Self {
        Process {
            name: m.name.clone(),
            kind: Kind::Member(m.role),
            cluster_addr: m.cluster_addr,
            ops_addr: m.ops_addr,
        }
    }
}

impl From<&EmbeddedBroker> for Process {
    fn from(b: &EmbeddedBroker) -> Self {
        Process {
            name: b.name.to_string(),
            kind: Kind::Broker,
            cluster_addr: b.mqtt_addr,
            ops_addr: b.ops_addr,
        }
    }
}

struct Child {
    member: Process,
    pid: Option<u32>,
    started: Instant,
    quick_failures: u32,
    log: PathBuf,
}

#[derive(Serialize)]
struct RunFile<'a> {
    supervisor_pid: u32,
    config: &'a Path,
    /// The link-fault control, under `--chaos`.
    chaos_control: Option<String>,
    members: Vec<RunMember<'a>>,
}

#[derive(Serialize)]
struct RunMember<'a> {
    name: &'a str,
    role: &'a str,
    pid: Option<u32>,
    cluster_addr: String,
    ops_addr: String,
    log: &'a Path,
}

enum Event {
    Exited(String, u32, std::io::Result<ExitStatus>),
    RestartDue(String),
}

struct Up {
    cfg: ClusterConfig,
    config_path: PathBuf,
    format: Format,
    run_dir: PathBuf,
    children: Vec<Child>,
    events: mpsc::UnboundedSender<Event>,
    /// Link proxies and the address of their control, under `--chaos`.
    links: Option<(Arc<LinkControl>, SocketAddr)>,
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(sig)) => format!("signal {sig}"),
            _ => "unknown status".to_string(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: sends a signal to a child this process started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Up {
    fn spawn(&mut self, idx: usize) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the keelson executable")?;
        let c = &mut self.children[idx];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log)
            .with_context(|| format!("cannot open log {}", c.log.display()))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("--log-format").arg(self.format.as_str());
        match c.member.kind {
            Kind::Member(Role::Node) => cmd.arg("node").arg("--name").arg(&c.member.name),
            Kind::Member(Role::Gateway) => cmd.arg("gateway"),
            Kind::Broker => cmd.arg("broker"),
        };
        if let Some((links, _)) = &self.links {
            for (node, addr) in links.dial_via(&c.member.name) {
                cmd.arg("--dial-via").arg(format!("{node}={addr}"));
            }
        }
        cmd.arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it makes the child get SIGTERM if `up` dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", c.member.name))?;
        let pid = child.id().unwrap_or(0);
        c.pid = Some(pid);
        c.started = Instant::now();
        tracing::info!(member = %c.member.name, pid, log = %c.log.display(), "started");
        let tx = self.events.clone();
        let name = c.member.name.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Event::Exited(name, pid, status));
        });
        self.write_run_file()
    }

    fn write_run_file(&self) -> anyhow::Result<()> {
        let run = RunFile {
            supervisor_pid: std::process::id(),
            config: &self.config_path,
            chaos_control: self.links.as_ref().map(|(_, a)| a.to_string()),
            members: self
                .children
                .iter()
                .map(|c| RunMember {
                    name: &c.member.name,
                    role: c.member.kind.as_str(),
                    pid: c.pid,
                    cluster_addr: c.member.cluster_addr.to_string(),
                    ops_addr: c.member.ops_addr.to_string(),
                    log: &c.log,
                })
                .collect(),
        };
        let path = self.run_dir.join("cluster.json");
        let tmp = self.run_dir.join("cluster.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&run)?)?;
        std::fs::rename(&tmp, &path)?;
        for c in &self.children {
            let pid_file = self.run_dir.join(format!("{}.pid", c.member.name));
            match c.pid {
                Some(pid) => std::fs::write(pid_file, format!("{pid}\n"))?,
                None => {
                    let _ = std::fs::remove_file(pid_file);
                }
            }
        }
        Ok(())
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|c| c.member.name == name)
    }

    /// A child that exits during start-up fails the start-up, with the end of its log.
    fn check_no_exit(&self, rx: &mut mpsc::UnboundedReceiver<Event>) -> anyhow::Result<()> {
        if let Ok(Event::Exited(name, _, status)) = rx.try_recv() {
            let log = self
                .index(&name)
                .map(|i| self.children[i].log.clone())
                .unwrap_or_default();
            bail!(
                "{name} exited during start-up ({}); see {}:\n{}",
                describe(&status),
                log.display(),
                tail(&log, 15)
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_no_exit(rx)?;
            let mut waiting = Vec::new();
            for c in &self.children {
                if !matches!(
                    probe::get(c.member.ops_addr, "/ready").await,
                    Some((200, _))
                ) {
                    waiting.push(c.member.name.clone());
                }
            }
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "not ready after 60 s: {}; see the logs in {}",
                    waiting.join(", "),
                    self.cfg.data_dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Ready processes still need a moment to find each other.
        let want = self.cfg.nodes.len();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.check_no_exit(rx)?;
            let up = match probe::get(self.cfg.gateway.ops_addr, "/view").await {
                Some((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v["members"].as_array().map(|m| {
                            m.iter()
                                .filter(|m| m["role"] == "node" && m["state"] == "up")
                                .count()
                        })
                    })
                    .unwrap_or(0),
                _ => 0,
            };
            if up == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    up,
                    want,
                    "the gateway does not see every node up yet; continuing"
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn on_exit(
        &mut self,
        name: &str,
        pid: u32,
        status: std::io::Result<ExitStatus>,
    ) -> anyhow::Result<()> {
        let Some(i) = self.index(name) else {
            return Ok(());
        };
        let c = &mut self.children[i];
        if c.pid != Some(pid) {
            return Ok(());
        }
        c.pid = None;
        if matches!(&status, Ok(s) if s.code() == Some(keelson_runtime::node::LEFT_THE_CLUSTER)) {
            // A node removed from the cluster (`keelson nodes remove`) is not started again.
            tracing::info!(member = %name, pid, "node left the cluster; not restarting it");
            eprintln!("{name} (pid {pid}) left the cluster (it was removed); not restarting it");
            return self.write_run_file();
        }
        c.quick_failures = if c.started.elapsed() < STABLE_AFTER {
            c.quick_failures + 1
        } else {
            1
        };
        let delay = restart_delay(c.quick_failures);
        tracing::warn!(member = %name, pid, status = %describe(&status), restart_in_ms = delay.as_millis() as u64, "child exited; restarting after backoff");
        eprintln!(
            "{name} (pid {pid}) exited with {}; restarting in {} s",
            describe(&status),
            delay.as_secs()
        );
        let tx = self.events.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Event::RestartDue(name));
        });
        self.write_run_file()
    }

    /// Restarts whatever exits until `signal`.
    async fn supervise(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        mut signal: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = &mut signal => return Ok(()),
                ev = rx.recv() => match ev {
                    Some(Event::Exited(name, pid, status)) => self.on_exit(&name, pid, status)?,
                    Some(Event::RestartDue(name)) => self.restart(&name),
                    None => return Ok(()),
                }
            }
        }
    }

    /// A restart that is due: spawns the child again unless it already runs.
    fn restart(&mut self, name: &str) {
        let Some(i) = self.index(name) else { return };
        if self.children[i].pid.is_some() {
            return;
        }
        if let Err(e) = self.spawn(i) {
            tracing::error!(member = %name, error = %format!("{e:#}"), "restart failed; retrying later");
            let _ = self.on_exit(name, 0, Err(std::io::Error::other("spawn failed")));
        }
    }

    async fn stop_all(&mut self) {
        // Gateway first so no new requests arrive, then every node at once.
        for kind in [
            Kind::Member(Role::Gateway),
            Kind::Member(Role::Node),
            Kind::Broker,
        ] {
            let pids: Vec<u32> = self
                .children
                .iter()
                .filter(|c| c.member.kind == kind)
                .filter_map(|c| c.pid)
                .collect();
            for &pid in &pids {
                signal(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for &pid in pids.iter().filter(|p| alive(**p)) {
                tracing::warn!(pid, "did not stop within 10 s; killing");
                signal(pid, libc::SIGKILL);
            }
        }
        for c in &mut self.children {
            c.pid = None;
        }
        let _ = std::fs::remove_file(self.run_dir.join("cluster.json"));
        let _ = self.write_run_file();
        let _ = std::fs::remove_file(self.run_dir.join("cluster.json"));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Refuses to start a second cluster on a data dir whose cluster is still running.
fn check_not_running(run_dir: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(run_dir.join("cluster.json")) else {
        return Ok(());
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    if let Some(pid) = v["supervisor_pid"].as_u64() {
        if pid as u32 != std::process::id() && alive(pid as u32) {
            bail!(
                "a cluster is already running from {} (keelson up pid {pid}); stop it first",
                run_dir.display()
            );
        }
    }
    Ok(())
}

/// Every process `up` runs, the broker first: the nodes' bridge connects to it as soon as they
/// are up.
fn children(cfg: &ClusterConfig, logs: &Path) -> Vec<Child> {
    let broker = keelson_bridge::config::embedded_broker(cfg);
    broker
        .iter()
        .map(Process::from)
        .chain(cfg.members().map(Process::from))
        .map(|m| Child {
            log: logs.join(format!("{}.log", m.name)),
            member: m,
            pid: None,
            started: Instant::now(),
            quick_failures: 0,
        })
        .collect()
}

/// Runs the local cluster until Ctrl-C or SIGTERM; with `chaos`, every link between members goes
/// through a fault-injecting proxy that `keelson chaos latency|partition|heal` controls.
pub async fn run(
    cfg: ClusterConfig,
    config_path: PathBuf,
    format: Format,
    chaos: bool,
) -> anyhow::Result<()> {
    let config_path = config_path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", config_path.display()))?;
    let logs = cfg.data_dir.join("logs");
    let run_dir = cfg.data_dir.join("run");
    for d in [&logs, &run_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    check_not_running(&run_dir)?;
    let made = crate::init_cmd::ensure(&cfg)?;
    crate::init_cmd::report(&cfg, &made);
    let (stop_links, links_stop) = tokio::sync::watch::channel(false);
    let links = if chaos {
        Some(links::start_links(&cfg, links_stop).await?)
    } else {
        None
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let children = children(&cfg, &logs);
    let mut up = Up {
        cfg: cfg.clone(),
        config_path,
        format,
        run_dir,
        children,
        events: tx,
        links,
    };
    tracing::info!(cluster = %cfg.name, nodes = cfg.nodes.len(), data_dir = %cfg.data_dir.display(), "starting the cluster");
    for i in 0..up.children.len() {
        if let Err(e) = up.spawn(i) {
            up.stop_all().await;
            return Err(e);
        }
    }
    let signal = keelson_runtime::shutdown::os_signal();
    tokio::pin!(signal);
    tokio::select! {
        r = up.wait_ready(&mut rx) => if let Err(e) = r {
            up.stop_all().await;
            return Err(e);
        },
        _ = &mut signal => {
            up.stop_all().await;
            return Ok(());
        }
    }
    print_banner(&up);
    up.supervise(&mut rx, signal).await?;
    eprintln!("stopping the cluster...");
    up.stop_all().await;
    let _ = stop_links.send(true);
    eprintln!("cluster stopped");
    Ok(())
}

fn print_banner(up: &Up) {
    let cfg = &up.cfg;
    let base = keelson_gateway::base_url(cfg);
    let ca = if cfg.tls.enabled {
        format!(
            "--cacert {} ",
            keelson_runtime::tls::Pki::new(&cfg.tls).ca_path().display()
        )
    } else {
        String::new()
    };
    let mut out = format!(
        "\nKeelson cluster \"{}\" is up: {} nodes, {} shards, data in {}\n\n  gateway  {base}\n           try: curl {ca}-H \"Authorization: Bearer $(cat {})\" {base}/v1/cluster\n",
        cfg.name,
        cfg.nodes.len(),
        cfg.shards,
        cfg.data_dir.display(),
        cfg.auth.admin_key_file.display(),
    );
    for c in &up.children {
        out.push_str(&format!(
            "  {:<8} pid {:<7} metrics http://{}/metrics  log {}\n",
            c.member.name,
            c.pid.map(|p| p.to_string()).unwrap_or_default(),
            c.member.ops_addr,
            c.log.display()
        ));
    }
    if let Some(m) = keelson_bridge::config::mqtt(cfg) {
        out.push_str(&format!(
            "  mqtt     {}://{}   (devices publish to keelson/devices/<id>/telemetry with their own credentials)\n",
            if cfg.tls.enabled { "mqtts" } else { "mqtt" },
            m.addr
        ));
    }
    if let Some((_, addr)) = &up.links {
        out.push_str(&format!(
            "\n  links between members go through fault proxies (control http://{addr}):\n  try `keelson chaos latency n1 n2 25ms` or `keelson chaos partition n1 n2,n3,n4`\n"
        ));
    }
    out.push_str(&format!(
        "\nPids are in {}/<name>.pid. Ctrl-C stops the cluster.\n",
        up.run_dir.display()
    ));
    println!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_to_a_cap() {
        let d: Vec<u64> = (1..=8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, vec![2, 4, 8, 16, 30, 30, 30, 30]);
    }
}
