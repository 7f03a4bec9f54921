//! Test harness: a real cluster of `keelson` processes on loopback, each node with its own ports
//! and data dir, logs in files that are printed when a test fails, every process killed on drop.
//! The cluster dir (data and logs) is kept when a test fails, or always with `KEELSON_KEEP_TEST_DIR=1`.
#![allow(dead_code)]

pub mod load;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// MQTT client ids the tests use as services (`keelson-test-<id>`), admitted by Mosquitto.
pub const TEST_SERVICES: &[&str] = &[
    "it-device",
    "it-deadletter",
    "it-garbage",
    "it-publisher",
    "it-devices",
    "it-before",
    "it-after",
    "bench",
    "obs",
    "it-fuzz",
    "it-fuzz-dl",
    "it-wearer",
];

/// Multi-process tests share 2 cores: run one cluster at a time so timing assertions hold.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the serial lock for a test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Polls `check` until it returns `Some`, or panics after `deadline` saying what it waited for.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hands out free loopback ports, never the same one twice in a test binary: each stays bound
/// until the allocator is dropped (after the config naming them is written). They come from
/// below the kernel's ephemeral range (32768 and up), so an outgoing connection of another
/// process can never take one between its release and the member's own bind.
#[derive(Default)]
struct Ports(Vec<TcpListener>);

/// Where the next port search starts: a per-process base in 20000..31000, then upwards.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Ports {
    fn next(&mut self) -> u16 {
        use std::sync::atomic::Ordering;
        let _ = NEXT_PORT.compare_exchange(
            0,
            20_000 + (std::process::id() * 397) % 11_000,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        for _ in 0..12_000 {
            let port = 20_000 + (NEXT_PORT.fetch_add(1, Ordering::SeqCst) - 20_000) % 12_000;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
                self.0.push(l);
                return port as u16;
            }
        }
        panic!("no free loopback port in 20000..32000");
    }
}

/// A free loopback port for a program a test starts itself (Prometheus, say), from the same
/// range and sequence as the cluster's.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    Ports::default().next()
}

/// Which MQTT broker a test cluster uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    /// `keelson broker` (rumqttd), as `keelson up` runs it.
    Embedded,
    /// A real Mosquitto from the system (`mosquitto -p PORT`), as `[mqtt] broker = "mqtt://..."`.
    Mosquitto,
}

/// Extra settings for a test cluster.
#[derive(Clone)]
pub struct Settings {
    /// MQTT broker, if any, and extra `[mqtt]` lines.
    pub mqtt: Option<(Broker, String)>,
    /// `RUST_LOG` for the processes (a quiet default when `None`).
    pub log: Option<String>,
    /// Number of nodes.
    pub nodes: usize,
    /// Lines appended to `[cluster]`.
    pub cluster: String,
    /// Lines of `[entities]`.
    pub entities: String,
    /// Whole sections appended to the file (e.g. `[auth.jwt]`).
    pub extra: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nodes: 4,
            cluster:
                "fault_injection = true\nfailure_timeout_ms = 1000\nheartbeat_interval_ms = 150\n"
                    .into(),
            entities: String::new(),
            extra: String::new(),
            mqtt: None,
            log: None,
        }
    }
}

impl Settings {
    /// The defaults with one copy of every shard.
    pub fn single_copy() -> Self {
        let mut s = Self::default();
        s.cluster.push_str("replication_factor = 1\n");
        s
    }
}

/// A running test cluster.
pub struct Cluster {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub gateway: String,
    pub nodes: Vec<String>,
    ops: HashMap<String, u16>,
    procs: HashMap<String, Child>,
    /// The MQTT broker's address and kind, when configured.
    pub mqtt: Option<(std::net::SocketAddr, Broker)>,
    log_filter: String,
    /// Sends the bootstrap admin key on every request (trusts the cluster CA).
    pub http: reqwest::Client,
    /// Sends no credentials (trusts the cluster CA).
    pub anon: reqwest::Client,
    /// The bootstrap admin key.
    pub admin_key: String,
    /// The configuration as the processes load it.
    pub cfg: keelson_runtime::ClusterConfig,
    /// Nodes started with `--host` (not in the file): their cluster ports.
    joined: HashMap<String, u16>,
}

impl Cluster {
    /// Writes a config for `settings` in a fresh temp dir; starts nothing.
    pub fn configure(test: &str, settings: &Settings) -> Self {
        let dir = std::env::temp_dir().join(format!("keelson-it-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let mut ports = Ports::default();
        let http_port = ports.next();
        let mut ops = HashMap::new();
        let gw_ops = ports.next();
        ops.insert("gateway".to_string(), gw_ops);
        let mut text = format!(
            "[cluster]\nname = \"it\"\ncookie = \"it-cookie-123\"\nshards = 64\ndata_dir = \"{}\"\n{}\n\
             [entities]\n{}\n[gateway]\nhost = \"127.0.0.1\"\nhttp_port = {http_port}\ncluster_port = {}\nops_port = {gw_ops}\n",
            dir.join("data").display(),
            settings.cluster,
            settings.entities,
            ports.next(),
        );
        let mut nodes = Vec::new();
        for i in 1..=settings.nodes {
            let name = format!("n{i}");
            let port = ports.next();
            text.push_str(&format!(
                "[[node]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\ncluster_port = {}\nops_port = {port}\n",
                ports.next()
            ));
            ops.insert(name.clone(), port);
            nodes.push(name);
        }
        let mqtt = settings.mqtt.as_ref().map(|(kind, extra)| {
            let port = ports.next();
            let broker_ops = ports.next();
            match kind {
                Broker::Embedded => text.push_str(&format!(
                    "[mqtt]\nbroker = \"embedded\"\nport = {port}\nops_port = {broker_ops}\n{extra}\n"
                )),
                Broker::Mosquitto => text.push_str(&format!(
                    "[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\n{extra}\n"
                )),
            }
            ops.insert("broker".to_string(), broker_ops);
            (std::net::SocketAddr::from(([127, 0, 0, 1], port)), *kind)
        });
        text.push_str(&settings.extra);
        let config = dir.join("nodes.toml");
        std::fs::write(&config, text).unwrap();
        drop(ports);
        // What `keelson up` makes first: the CA, every member's certificate, the admin key.
        let init = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("init")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "keelson init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let cfg = keelson_bridge::config::load(&config).unwrap();
        let admin_key = cfg
            .auth
            .admin_key()
            .expect("keelson init made the admin key");
        let api =
            keelson_gateway::api_client(&cfg, Some(&admin_key), Duration::from_secs(15)).unwrap();
        let anon = keelson_gateway::api_client(&cfg, None, Duration::from_secs(15)).unwrap();
        Self {
            dir,
            config,
            gateway: api.base,
            admin_key: admin_key.expose().to_string(),
            anon: anon.http,
            cfg,
            nodes,
            ops,
            procs: HashMap::new(),
            joined: HashMap::new(),
            mqtt,
            log_filter: settings
                .log
                .clone()
                .unwrap_or_else(|| "info,sled=warn,ractor=warn,ractor_cluster=warn".to_string()),
            http: api.http,
        }
    }

    /// Configures and starts every node and the gateway, and waits until the gateway sees every
    /// node up.
    pub async fn start(test: &str, settings: Settings) -> Self {
        let mut c = Self::configure(test, &settings);
        c.start_configured().await;
        c
    }

    /// Starts every process of a configured cluster and waits until the gateway sees every node up.
    pub async fn start_configured(&mut self) {
        let c = self;
        if let Some((addr, _)) = c.mqtt {
            c.spawn("broker");
            wait_for(
                "the MQTT broker to listen",
                Duration::from_secs(20),
                || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
            )
            .await;
        }
        for n in c.nodes.clone() {
            c.spawn(&n);
        }
        c.spawn("gateway");
        c.wait_all_up().await;
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// `name`'s log, opened for a process to append to.
    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .unwrap()
    }

    /// Starts one process (again) on its own data dir.
    pub fn spawn(&mut self, name: &str) {
        if self.joined.contains_key(name) {
            return self.spawn_joining(name);
        }
        let log = self.log_file(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        match (name, self.mqtt) {
            ("broker", Some((_, Broker::Mosquitto))) => {
                let dir = self.write_mosquitto_config();
                cmd = Command::new("mosquitto");
                cmd.arg("-c").arg(dir.join("mosquitto.conf"));
            }
            ("broker", _) => {
                cmd.arg("broker");
            }
            ("gateway", _) => {
                cmd.arg("gateway");
            }
            _ => {
                cmd.args(["node", "--name", name]);
            }
        }
        if !matches!(self.mqtt, Some((_, Broker::Mosquitto))) || name != "broker" {
            cmd.arg("--config").arg(&self.config);
        }
        self.launch(name, cmd, log);
    }

    /// Runs `cmd` as process `name`, its output appended to `log`.
    fn launch(&mut self, name: &str, mut cmd: Command, log: std::fs::File) {
        let child = cmd
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.insert(name.to_string(), child);
    }

    /// Starts a node that is not in the config file: it joins the running cluster through the
    /// seeds on two fresh loopback ports, and is watched like the others from then on.
    #[allow(dead_code)]
    pub fn spawn_joining(&mut self, name: &str) {
        self.spawn_joining_with(name, &[]);
    }

    /// [`Cluster::spawn_joining`] with extra arguments (`--advertise-host localhost`).
    #[allow(dead_code)]
    pub fn spawn_joining_with(&mut self, name: &str, extra: &[&str]) {
        let (cluster_port, ops_port) = match (self.joined.get(name), self.ops.get(name)) {
            (Some(c), Some(o)) => (*c, *o),
            _ => (free_port(), free_port()),
        };
        self.joined.insert(name.to_string(), cluster_port);
        let log = self.log_file(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        cmd.args(["node", "--name", name, "--host", "127.0.0.1"])
            .args(["--cluster-port", &cluster_port.to_string()])
            .args(["--ops-port", &ops_port.to_string()])
            .args(extra)
            .arg("--config")
            .arg(&self.config);
        self.launch(name, cmd, log);
        self.ops.insert(name.to_string(), ops_port);
        if !self.nodes.iter().any(|n| n == name) {
            self.nodes.push(name.to_string());
        }
    }

    /// The exit code of `name`'s process once it has exited (polled up to `within`); `None` if
    /// it still runs (or was ended by a signal).
    #[allow(dead_code)]
    pub async fn exit_code(&mut self, name: &str, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.procs.get_mut(name)?.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets TLS (trusting the cluster CA) on an MQTT client's options, as every client must.
    pub fn mqtt_tls(&self, opts: &mut rumqttc::MqttOptions) {
        keelson_bridge::MqttTls::for_cluster(&self.cfg)
            .expect("the cluster CA")
            .apply(opts);
    }

    /// The MQTT service secret `keelson init` made.
    pub fn mqtt_secret(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/run/mqtt-service.secret"))
            .expect("keelson init made the MQTT service secret")
            .trim()
            .to_string()
    }

    /// `keelson mosquitto-config` into `<dir>/mosquitto` (services, the test clients, and every
    /// device holding credentials): the directory.
    pub fn write_mosquitto_config(&self) -> PathBuf {
        let dir = self.dir.join("mosquitto");
        let mut args = vec![
            "mosquitto-config".to_string(),
            "--out".into(),
            dir.display().to_string(),
        ];
        for id in TEST_SERVICES {
            args.push("--service".into());
            args.push(format!("keelson-test-{id}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = self.keelson(&args);
        assert_eq!(code, 0, "keelson mosquitto-config: {err}");
        // Tests run as root; Mosquitto would otherwise drop to its own user and not read the
        // files (0600, ours).
        let conf = dir.join("mosquitto.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, format!("user root\n{text}")).unwrap();
        dir
    }

    /// The pid of a process this test started and has not killed.
    pub fn try_pid(&self, name: &str) -> Option<i32> {
        self.procs.get(name).map(|c| c.id() as i32)
    }

    pub fn pid(&self, name: &str) -> i32 {
        self.procs[name].id() as i32
    }

    /// Sends `sig` to a process this test started.
    pub fn signal(&self, name: &str, sig: i32) {
        // SAFETY: signals a child of this test.
        assert_eq!(
            unsafe { libc::kill(self.pid(name), sig) },
            0,
            "signal {sig} to {name}"
        );
    }

    /// SIGKILLs a process and reaps it.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.procs.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ops_url(&self, name: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops[name])
    }

    /// `GET url` as JSON; `None` if it does not answer or the body is not JSON.
    pub async fn get_json(&self, url: &str) -> Option<Value> {
        self.http.get(url).send().await.ok()?.json().await.ok()
    }

    /// Runs `keelson <args> --config <this cluster's config>`: exit code, stdout, stderr.
    pub fn keelson(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Each member's state as the gateway sees it.
    pub async fn states(&self) -> Option<HashMap<String, String>> {
        let v = self
            .get_json(&format!("{}/v1/cluster", self.gateway))
            .await?;
        Some(
            v["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().to_string(),
                        m["state"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        )
    }

    pub async fn state_of(&self, name: &str) -> Option<String> {
        self.states().await?.remove(name)
    }

    /// Waits until every node answers /ready and the gateway sees every node up.
    pub async fn wait_all_up(&self) {
        for n in self
            .nodes
            .iter()
            .chain(std::iter::once(&"gateway".to_string()))
        {
            let url = self.ops_url(n, "/ready");
            wait_for(&format!("{n} ready"), Duration::from_secs(60), || async {
                let r = self.http.get(&url).send().await.ok()?;
                (r.status() == 200).then_some(())
            })
            .await;
        }
        wait_for(
            "the gateway to see every node up",
            Duration::from_secs(30),
            || async {
                let s = self.states().await?;
                self.nodes
                    .iter()
                    .all(|n| s.get(n).map(String::as_str) == Some("up"))
                    .then_some(())
            },
        )
        .await;
    }

    /// Value of a metric line (exact name and labels) on a process.
    pub async fn metric(&self, name: &str, series: &str) -> f64 {
        self.try_metric(name, series)
            .await
            .unwrap_or_else(|| panic!("{name} did not serve /metrics"))
    }

    /// Like [`Cluster::metric`], `None` if the process does not answer (it was killed).
    pub async fn try_metric(&self, name: &str, series: &str) -> Option<f64> {
        let mut rb = self.http.get(self.ops_url(name, "/metrics"));
        if let Some(t) = &self.cfg.auth.metrics_token {
            rb = rb.header("authorization", format!("Bearer {}", t.expose()));
        }
        let text = rb.send().await.ok()?.text().await.ok()?;
        let total = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let (lhs, _) = l.rsplit_once(' ').unwrap_or((l, ""));
                let metric = lhs.split('{').next().unwrap();
                let want = series.split('{').next().unwrap();
                metric == want
                    && series
                        .split_once('{')
                        .map(|(_, labels)| {
                            labels
                                .trim_end_matches('}')
                                .split(',')
                                .all(|kv| lhs.contains(kv))
                        })
                        .unwrap_or(true)
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum::<f64>();
        Some(total)
    }

    /// Sends a request to the gateway with the admin key: (status, headers, JSON body or Null).
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.req_as(method, path, body, None).await
    }

    /// Like [`Cluster::req`], sending `Bearer <token>` when given (and then no admin key), or
    /// no credentials at all with `Some("")`.
    pub async fn req_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let client = if token.is_some() {
            &self.anon
        } else {
            &self.http
        };
        let mut rb = client.request(m, format!("{}{path}", self.gateway));
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, v)
    }

    /// Where the gateway says an entity lives.
    pub async fn owner(&self, kind: &str, id: &str) -> String {
        let (s, _, v) = self
            .req("GET", &format!("/v1/cluster/locate/{kind}/{id}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v["owner"].as_str().unwrap().to_string()
    }

    /// Member `name` in `GET /v1/cluster`, with its shard counts.
    #[allow(dead_code)]
    pub async fn member(&self, name: &str) -> Option<(Value, Value)> {
        let v = self.info().await?;
        let m = v["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)?
            .clone();
        Some((m, v))
    }

    /// `GET /v1/cluster` as JSON.
    pub async fn info(&self) -> Option<Value> {
        self.http
            .get(format!("{}/v1/cluster", self.gateway))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Waits until every node is up and every shard has all its copies in sync.
    pub async fn wait_replicated(&self, deadline: Duration) {
        self.wait_all_up().await;
        wait_for("every shard fully replicated", deadline, || async {
            let v = self.info().await?;
            (v["under_replicated"] == 0 && v["learners"] == 0).then_some(())
        })
        .await;
    }

    /// Waits until every shard has all its copies in sync and every node holds within ±10% of
    /// its fair share of primaries and copies again (a returning node has been given its share,
    /// and the hand-overs to it are done).
    #[allow(dead_code)]
    pub async fn wait_rebalanced(&self, deadline: Duration) {
        self.wait_replicated(deadline).await;
        wait_for("every node back to its share", deadline, || async {
            let v = self.info().await?;
            let shards = v["shards"].as_f64()?;
            let rf = v["replication_factor"].as_f64()?;
            let n = self.nodes.len() as f64;
            let within = |x: f64, fair: f64| (x - fair).abs() <= (fair * 0.1).max(1.0);
            let nodes: Vec<&Value> = v["members"]
                .as_array()?
                .iter()
                .filter(|m| m["role"] == "node")
                .collect();
            let ok = nodes.len() == self.nodes.len()
                && v["learners"] == 0
                && v["under_replicated"] == 0
                && nodes.iter().all(|m| {
                    let owned = m["shards_owned"].as_f64().unwrap_or(0.0);
                    let copies = owned + m["shards_following"].as_f64().unwrap_or(0.0);
                    within(owned, shards / n) && within(copies, shards * rf / n)
                });
            ok.then_some(())
        })
        .await;
    }

    /// Sum of a metric over every node.
    pub async fn metric_sum(&self, series: &str) -> f64 {
        let mut total = 0.0;
        for n in &self.nodes {
            total += self.metric(n, series).await;
        }
        total
    }

    pub fn print_logs(&self) {
        for name in self.nodes.iter().map(String::as_str).chain(["gateway"]) {
            let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("===== {name} log (last 60 lines) =====");
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.procs.keys() {
            // SAFETY: wakes a child that a test may have stopped, so it can be killed.
            unsafe { libc::kill(self.procs[n].id() as i32, libc::SIGCONT) };
        }
        for (_, mut c) in self.procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() || std::env::var_os("KEELSON_KEEP_TEST_DIR").is_some() {
            if std::thread::panicking() {
                self.print_logs();
            }
            eprintln!("cluster dir kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
