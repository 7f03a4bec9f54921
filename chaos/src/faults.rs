//! Process faults against a cluster started by `keelson up`: kill, freeze, thaw, restart, and the
//! status of each member. Processes are found only through the run file `up` keeps
//! (`<data_dir>/run/cluster.json`), never by process name, and a fault that cannot apply (no
//! cluster, unknown node, node not running) changes nothing and says why.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A fault on one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessFault {
    /// SIGKILL; `up` restarts it after its backoff.
    Kill,
    /// SIGSTOP: alive but silent.
    Freeze,
    /// SIGCONT.
    Thaw,
    /// SIGTERM: a clean stop; `up` restarts it after its backoff.
    Restart,
}

impl ProcessFault {
    fn signal(self) -> i32 {
        match self {
            ProcessFault::Kill => libc::SIGKILL,
            ProcessFault::Freeze => libc::SIGSTOP,
            ProcessFault::Thaw => libc::SIGCONT,
            ProcessFault::Restart => libc::SIGTERM,
        }
    }
}

/// Why a fault was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// No run file, or its `up` is gone.
    #[error("no cluster is running from {0} (start one with `keelson up`)")]
    NoCluster(PathBuf),
    /// The run file does not parse.
    #[error("{0}: unreadable run file: {1}")]
    BadRunFile(PathBuf, String),
    /// Not a member.
    #[error("unknown node \"{0}\" (members: {1})")]
    UnknownNode(String, String),
    /// The member has no live process right now.
    #[error("\"{0}\" is not running (keelson up is restarting it); nothing was done")]
    NotRunning(String),
    /// Thawing a process that is not frozen, or freezing one that is.
    #[error("\"{0}\" is {1}; nothing was done")]
    Pointless(String, &'static str),
    /// A link fault on a cluster whose links do not go through proxies.
    #[error("the cluster running from {0} was not started with `keelson up --chaos`, so its links have no fault proxies; restart it with --chaos")]
    NoLinkProxies(PathBuf),
    /// The link-fault control refused or failed.
    #[error("{0}")]
    Links(String),
}

/// What `keelson up` records about the cluster it runs (`<data_dir>/run/cluster.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct RunFile {
    /// Pid of `keelson up`.
    pub supervisor_pid: u32,
    /// Address of the link-fault control, when started with `--chaos`.
    #[serde(default)]
    pub chaos_control: Option<String>,
    /// Every member.
    pub members: Vec<RunMember>,
}

/// One member in the run file.
#[derive(Debug, Clone, Deserialize)]
pub struct RunMember {
    /// Name.
    pub name: String,
    /// `node` or `gateway`.
    pub role: String,
    /// Live pid, if running.
    pub pid: Option<u32>,
    /// Cluster (transport) address.
    pub cluster_addr: String,
    /// Ops address (`/metrics`, `/view`).
    pub ops_addr: String,
}

/// Reads the run file of the cluster running from `data_dir`; fails when there is none or its
/// `keelson up` is gone.
pub fn read_run_file(data_dir: &Path) -> Result<RunFile, FaultError> {
    let path = data_dir.join("run").join("cluster.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|_| FaultError::NoCluster(data_dir.to_path_buf()))?;
    let run: RunFile = serde_json::from_str(&text)
        .map_err(|e| FaultError::BadRunFile(path.clone(), e.to_string()))?;
    if !alive(run.supervisor_pid) {
        return Err(FaultError::NoCluster(data_dir.to_path_buf()));
    }
    Ok(run)
}

/// A member's process as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProcess {
    /// Name.
    pub name: String,
    /// `node` or `gateway`.
    pub role: String,
    /// Live pid, if any.
    pub pid: Option<u32>,
    /// `running`, `frozen` or `down`.
    pub state: &'static str,
}

/// The one-letter process state from `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(std::time::Duration::from_micros(ticks * 1_000_000 / hz))
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) == 0 };
    // A killed child not yet reaped by `up` is a zombie: not running.
    exists && proc_state(pid) != Some('Z')
}

/// Waits (polling, at most `deadline`) until process `pid` has exited: a SIGKILLed process with
/// a large address space can take a moment to tear down, and until then it still looks alive to
/// the next command. Returns whether it is gone.
pub fn wait_exited(pid: u32, deadline: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    while alive(pid) {
        if started.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

fn frozen(pid: u32) -> bool {
    proc_state(pid) == Some('T')
}

/// Every member of the cluster running from `data_dir`, with its process state.
pub fn status(data_dir: &Path) -> Result<Vec<MemberProcess>, FaultError> {
    let run = read_run_file(data_dir)?;
    Ok(run
        .members
        .into_iter()
        .map(|m| {
            let pid = m.pid.filter(|p| alive(*p));
            let state = match pid {
                None => "down",
                Some(p) if frozen(p) => "frozen",
                Some(_) => "running",
            };
            MemberProcess {
                name: m.name,
                role: m.role,
                pid,
                state,
            }
        })
        .collect())
}

/// Applies `fault` to member `name` of the cluster running from `data_dir`; returns its pid.
pub fn apply(data_dir: &Path, name: &str, fault: ProcessFault) -> Result<u32, FaultError> {
    let members = status(data_dir)?;
    let Some(m) = members.iter().find(|m| m.name == name) else {
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        return Err(FaultError::UnknownNode(name.to_string(), names.join(", ")));
    };
    let Some(pid) = m.pid else {
        return Err(FaultError::NotRunning(name.to_string()));
    };
    match (fault, m.state) {
        (ProcessFault::Thaw, "running") => {
            return Err(FaultError::Pointless(name.to_string(), "not frozen"))
        }
        (ProcessFault::Freeze, "frozen") => {
            return Err(FaultError::Pointless(name.to_string(), "already frozen"))
        }
        _ => {}
    }
    if fault == ProcessFault::Restart && m.state == "frozen" {
        // A stopped process cannot act on SIGTERM until it runs again.
        // SAFETY: signals a member of the cluster the run file names.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }
    // SAFETY: signals a member of the cluster the run file names.
    unsafe { libc::kill(pid as i32, fault.signal()) };
    Ok(pid)
}
