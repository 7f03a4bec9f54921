//! The `keelson` command line: `up` as a newcomer runs it, `check-config`, and `--help`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{serial, wait_for, Cluster, Settings};

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

fn read_pid(c: &Cluster, name: &str) -> Option<i32> {
    std::fs::read_to_string(c.dir.join("data/run").join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A running `keelson up`; stopped with SIGTERM when dropped, so a failing test leaves nothing behind.
struct Up(Option<std::process::Child>);

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: SIGTERM to the `up` process this test started; it stops its children.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

async fn start_up(c: &Cluster) -> Up {
    start_up_with(c, &[]).await
}

async fn start_up_with(c: &Cluster, flags: &[&str]) -> Up {
    let log = std::fs::File::create(c.dir.join("logs/up.log")).unwrap();
    let child = keelson()
        .arg("up")
        .args(flags)
        .arg("--config")
        .arg(&c.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let up = Up(Some(child));
    let log = c.dir.join("logs/up.log");
    let banner = format!("is up: {} nodes", c.nodes.len());
    wait_for(
        "up to print that the cluster is up",
        Duration::from_secs(60),
        || async {
            std::fs::read_to_string(&log)
                .ok()?
                .contains(&banner)
                .then_some(())
        },
    )
    .await;
    let s = c.states().await.expect("gateway answers");
    assert!(
        c.nodes
            .iter()
            .all(|n| s.get(n).map(String::as_str) == Some("up")),
        "{s:?}"
    );
    up
}

fn stop_up(mut up: Up) {
    let mut child = up.0.take().unwrap();
    // SAFETY: SIGTERM to the `up` process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "keelson up exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_restarts_and_stops_the_cluster_and_a_second_up_sees_the_data() {
    let _guard = serial().await;
    let c = Cluster::configure(
        "up",
        &Settings {
            nodes: 3,
            ..Settings::default()
        },
    );
    let up = start_up(&c).await;
    let (s, _, _) = c
        .req(
            "POST",
            "/v1/customers",
            Some(r#"{"id":"kept","name":"Kept","tags":["a"]}"#),
        )
        .await;
    assert_eq!(s, 201);
    let (_, _, kept) = c.req("GET", "/v1/customers/kept", None).await;
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(c.dir.join("data/run/cluster.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(run["members"].as_array().unwrap().len(), 4);

    // kill -9 a node: `up` notices, the cluster marks it down, `up` restarts it, it comes back.
    let old = read_pid(&c, "n2").expect("n2 pid file");
    // SAFETY: the pid belongs to a child of the `up` this test started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("n2 marked down", Duration::from_secs(2), || async {
        (c.state_of("n2").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    let new = wait_for("up to restart n2", Duration::from_secs(10), || async {
        read_pid(&c, "n2").filter(|p| *p != old && alive(*p))
    })
    .await;
    wait_for("n2 up again", Duration::from_secs(15), || async {
        (c.state_of("n2").await.as_deref() == Some("up")).then_some(())
    })
    .await;
    // The kill changed the shard map (failover, then catch-up and handoff back).
    let version = wait_for(
        "the map to change after the kill",
        Duration::from_secs(15),
        || async {
            let v = c.info().await?["map_version"].as_u64()?;
            (v > 0).then_some(v)
        },
    )
    .await;
    let pids: Vec<i32> = ["n1", "n2", "n3", "gateway"]
        .iter()
        .map(|n| read_pid(&c, n).unwrap())
        .collect();
    assert!(pids.contains(&new));

    // SIGTERM stops everything cleanly.
    stop_up(up);
    for p in &pids {
        assert!(!alive(*p), "pid {p} still running after up stopped");
    }

    // A second `up` on the same data dir sees the first one's data.
    let up = start_up(&c).await;
    let (s, _, again) = c.req("GET", "/v1/customers/kept", None).await;
    assert_eq!(s, 200);
    assert_eq!(again, kept);
    // ...and resumes from the newest committed shard map, not from the initial placement.
    wait_for(
        "the restarted cluster's map version",
        Duration::from_secs(15),
        || async {
            let v = c.info().await?["map_version"].as_u64()?;
            (v >= version).then_some(())
        },
    )
    .await;
    stop_up(up);
}

#[test]
fn check_config_reports_every_problem_with_its_path_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("keelson-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nodes.toml")).unwrap();
    let ok = keelson()
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/nodes.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("4 nodes, 256 shards"));

    let bad = good
        .replace("cluster_port = 4703", "cluster_port = 4702")
        .replace("shards = 256", "shards = 0")
        .replace("name = \"n4\"", "name = \"n1\"");
    let path = dir.join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = keelson().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node \"n3\": cluster port 4702 already used by node \"n2\""),
        "{err}"
    );
    assert!(err.contains("cluster.shards: 0 is out of range"), "{err}");
    assert!(
        err.contains("node \"n1\": name is used more than once"),
        "{err}"
    );

    std::fs::write(&path, good.replace("[gateway]", "[gateway]\nport = 1")).unwrap();
    let out = keelson().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `port`"));

    // A node refuses to start on a broken file, saying why.
    let out = keelson()
        .args(["node", "--name", "n1", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `port`"));
    let out = keelson()
        .args([
            "node",
            "--name",
            "n9",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/nodes.toml"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node named \"n9\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec![],
        vec!["chaos"],
        vec!["chaos", "kill"],
        vec!["chaos", "latency"],
        vec!["chaos", "partition"],
        vec!["chaos", "heal"],
        vec!["chaos", "run"],
        vec!["up"],
        vec!["node"],
        vec!["gateway"],
        vec!["check-config"],
    ] {
        let out = keelson().args(&sub).arg("--help").output().unwrap();
        assert!(out.status.success(), "{sub:?} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: keelson"), "{sub:?}: {text}");
    }
}

fn chaos(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    c.keelson(&[&["chaos"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_commands_break_an_up_cluster_and_refuse_impossible_faults() {
    let _guard = serial().await;
    let c = Cluster::configure(
        "chaos-cli",
        &Settings {
            nodes: 3,
            ..Settings::default()
        },
    );
    let (code, _, err) = chaos(&c, &["status"]);
    assert_eq!(code, 2);
    assert!(err.contains("no cluster is running"), "{err}");

    let up = start_up(&c).await;
    let (code, out, _) = chaos(&c, &["status"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("running").count(), 4, "{out}");

    // Freeze: alive but silent, so the cluster marks it down; thaw brings it back.
    let (code, out, err) = chaos(&c, &["freeze", "n2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("froze n2"), "{out}");
    wait_for("frozen n2 down", Duration::from_secs(3), || async {
        (c.state_of("n2").await.as_deref() == Some("down")).then_some(())
    })
    .await;
    assert!(chaos(&c, &["status"])
        .1
        .lines()
        .any(|l| l.starts_with("n2") && l.ends_with("frozen")));
    let (code, _, err) = chaos(&c, &["freeze", "n2"]);
    assert_eq!((code, err.contains("already frozen")), (2, true), "{err}");
    assert_eq!(chaos(&c, &["thaw", "n2"]).0, 0);
    wait_for("thawed n2 up", Duration::from_secs(10), || async {
        (c.state_of("n2").await.as_deref() == Some("up")).then_some(())
    })
    .await;

    // Unknown names and members that are not running are refused, and nothing is signalled.
    let (code, _, err) = chaos(&c, &["kill", "n9"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown node \"n9\"") && err.contains("n1, n2, n3, gateway"),
        "{err}"
    );
    let (code, _, err) = chaos(&c, &["thaw", "n1"]);
    assert_eq!((code, err.contains("not frozen")), (2, true), "{err}");
    // Link faults need the proxies of `up --chaos`.
    let (code, _, err) = chaos(&c, &["partition", "n1", "n2"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("not started with `keelson up --chaos`"),
        "{err}"
    );
    assert_eq!(chaos(&c, &["kill", "n3"]).0, 0);
    let (code, _, err) = chaos(&c, &["kill", "n3"]);
    assert_eq!(code, 2, "a second kill before the restart: {err}");
    assert!(err.contains("\"n3\" is not running"), "{err}");
    wait_for("n3 restarted by up", Duration::from_secs(15), || async {
        (c.state_of("n3").await.as_deref() == Some("up")).then_some(())
    })
    .await;
    stop_up(up);
    let (code, _, err) = chaos(&c, &["kill", "n1"]);
    assert_eq!(
        (code, err.contains("no cluster is running")),
        (2, true),
        "{err}"
    );
}

/// n1's view of `peer` (its `/view` on the ops port): state and heartbeat round trip.
async fn view_of(c: &Cluster, from: &str, peer: &str) -> Option<(String, u64)> {
    let v = c.get_json(&c.ops_url(from, "/view")).await?;
    let m = v["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == peer)?
        .clone();
    Some((
        m["state"].as_str()?.to_string(),
        m["rtt_us"].as_u64().unwrap_or(0),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_faults_slow_and_cut_real_cluster_links_and_heal_restores_them() {
    let _guard = serial().await;
    let c = Cluster::configure(
        "chaos-links",
        &Settings {
            nodes: 3,
            ..Settings::default()
        },
    );
    let up = start_up_with(&c, &["--chaos"]).await;
    let (code, out, _) = chaos(&c, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("links: no faults"), "{out}");

    // The link control changes nothing for a caller without an operator or admin key.
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.dir.join("data/run/cluster.json")).unwrap(),
    )
    .unwrap();
    let control = format!("http://{}", run["chaos_control"].as_str().unwrap());
    for key in [None, Some("kk_nope.wrong")] {
        let mut rb = c
            .anon
            .post(format!("{control}/links/partition"))
            .json(&serde_json::json!({"a": ["n1"], "b": ["n2"], "one_way": false}));
        if let Some(k) = key {
            rb = rb.header("authorization", format!("Bearer {k}"));
        }
        assert_eq!(rb.send().await.unwrap().status(), 403);
    }
    let (_, out, _) = chaos(&c, &["status"]);
    assert!(out.contains("links: no faults"), "{out}");

    // Latency: 100 ms each way between n1 and n2 shows in their heartbeat round trip, and
    // nowhere else.
    let (code, out, err) = chaos(&c, &["latency", "n1", "n2", "100ms"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches(" 100 ms").count(), 2, "{out}");
    let rtt = wait_for(
        "n1 to see the delay to n2",
        Duration::from_secs(10),
        || async {
            let (_, rtt) = view_of(&c, "n1", "n2").await?;
            (rtt > 150_000).then_some(rtt)
        },
    )
    .await;
    assert!(rtt < 400_000, "asked 200 ms round trip, saw {rtt} µs");
    let (_, to_n3) = view_of(&c, "n1", "n3").await.unwrap();
    assert!(to_n3 < 100_000, "n1-n3 untouched, saw {to_n3} µs");

    // A symmetric partition cuts n3 off from everyone: the gateway marks it down.
    assert_eq!(chaos(&c, &["heal"]).0, 0);
    let (code, out, err) = chaos(&c, &["partition", "n3", "n1,n2,gateway"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("yes").count(), 6, "{out}");
    wait_for(
        "n3 cut off and marked down",
        Duration::from_secs(5),
        || async { (c.state_of("n3").await.as_deref() == Some("down")).then_some(()) },
    )
    .await;
    assert_eq!(chaos(&c, &["heal"]).0, 0);
    wait_for(
        "n3 back after the heal",
        Duration::from_secs(15),
        || async { (c.state_of("n3").await.as_deref() == Some("up")).then_some(()) },
    )
    .await;

    // One way, node to node only: n1 stops hearing n3 while the gateway still reaches it.
    let (code, _, err) = chaos(&c, &["partition", "n3", "n1", "--one-way"]);
    assert_eq!(code, 0, "{err}");
    wait_for("n1 to mark n3 down", Duration::from_secs(5), || async {
        let (state, _) = view_of(&c, "n1", "n3").await?;
        (state == "down").then_some(())
    })
    .await;
    assert_eq!(c.state_of("n3").await.as_deref(), Some("up"));

    // Bad requests are refused and change nothing.
    let before = chaos(&c, &["status"]).1;
    let (code, _, err) = chaos(&c, &["partition", "n1", "n9"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown member \"n9\""), "{err}");
    let (code, _, err) = chaos(&c, &["latency", "n1", "n2", "5ms", "--jitter", "10ms"]);
    assert_eq!(code, 2);
    assert!(err.contains("jitter"), "{err}");
    assert_eq!(chaos(&c, &["status"]).1, before);

    assert_eq!(chaos(&c, &["heal"]).0, 0);
    assert!(chaos(&c, &["status"]).1.contains("links: no faults"));
    wait_for("n1 to see n3 again", Duration::from_secs(15), || async {
        let (state, _) = view_of(&c, "n1", "n3").await?;
        (state == "up").then_some(())
    })
    .await;
    stop_up(up);
}

/// The Kubernetes manifests' nodes.toml is one `keelson` accepts (with the cookie its Secret
/// would mount), and `keelson node --seed-or-join` runs a seed as the seed and refuses a
/// joining name that breaks the rules, saying which argument.
#[test]
fn the_kubernetes_config_is_valid_and_seed_or_join_picks_the_role() {
    let dir = std::env::temp_dir().join(format!("keelson-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(format!(
        "{}/deploy/kubernetes/configmap.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let body = manifest.split("nodes.toml: |\n").nth(1).unwrap();
    let toml: String = body
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let cookie = dir.join("cookie");
    std::fs::write(&cookie, "a-cookie-long-enough-for-a-network-0123456789\n").unwrap();
    let toml = toml
        .replace("/etc/keelson/secrets/cookie", cookie.to_str().unwrap())
        .replace("/var/lib/keelson", dir.join("data").to_str().unwrap())
        .replace("/etc/keelson/tls", dir.join("tls").to_str().unwrap());
    let path = dir.join("nodes.toml");
    std::fs::write(&path, &toml).unwrap();
    let ok = keelson().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("4 nodes"));

    let out = keelson()
        .args([
            "node",
            "--name",
            "Keelson-4",
            "--seed-or-join",
            "--host",
            "0.0.0.0",
        ])
        .args(["--cluster-port", "4701", "--ops-port", "9101", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--name \"Keelson-4\""), "{err}");
    let out = keelson()
        .args(["node", "--name", "keelson-4", "--host", "keelson-4.keelson"])
        .args(["--cluster-port", "4701", "--ops-port", "9101", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--advertise-host"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
