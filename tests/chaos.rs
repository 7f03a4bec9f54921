//! `keelson chaos run`: a real scenario against a real cluster of processes, and the refusals
//! that must change nothing.

mod support;

use serde_json::Value;
use support::{serial, Cluster, Settings};

fn scenario(name: &str) -> String {
    format!("{}/chaos/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

fn run(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    c.keelson(&[&["chaos", "run"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_primary_scenario_passes_its_gates_against_a_real_cluster() {
    let _guard = serial().await;
    let c = Cluster::configure("chaos-run", &Settings::default());
    let out = c.dir.join("report");
    let (code, stdout, stderr) = run(
        &c,
        &[&scenario("kill-primary"), "--out", out.to_str().unwrap()],
    );
    eprintln!("{stdout}\n{stderr}");
    let text = std::fs::read_to_string(out.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json ({e}); exit code {code}, see stderr above"));
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(code, 0, "gates: {}", report["verdict"]);
    assert_eq!(report["verdict"]["passed"], true);

    // The workload ran at about its rate for the whole 30 s and was checked.
    let totals = &report["totals"];
    assert!(
        totals["attempted"].as_u64().unwrap() > 8_000,
        "{totals}: far below 400 ops/s"
    );
    assert!(totals["availability"].as_f64().unwrap() >= 0.95, "{totals}");
    assert_eq!(report["seconds"].as_array().unwrap().len(), 30);
    let checks = &report["checks"];
    assert_eq!(
        checks["lost_writes"].as_array().unwrap().len(),
        0,
        "{checks}"
    );
    assert_eq!(checks["linearizable"], true, "{checks}");
    assert_eq!(checks["duplicate_primaries"], 0);
    assert!(checks["keys_checked"].as_u64().unwrap() >= 200);

    // One kill, of a node that was primary for some shards, detected and recovered from, with
    // its stages in order.
    let f = &report["faults"][0];
    assert_eq!(f["action"], "kill");
    assert!(f["shards_affected"].as_u64().unwrap() > 0, "{f}");
    let detection = f["detection_ms"].as_u64().expect("detected");
    let recovery = f["recovery_ms"].as_u64().expect("recovered");
    assert!(detection <= 1000 && recovery <= 3000, "{f}");
    assert!(detection <= recovery, "{f}");
    let stages: Vec<&str> = f["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for want in ["marked down", "promoted", "first success", "recovered"] {
        assert!(stages.contains(&want), "{want} missing from {stages:?}");
    }
    assert_eq!(report["phases"].as_array().unwrap().len(), 2);

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**PASS**"), "{md}");
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("kill"), "chart");
    // The cluster it started is gone.
    assert!(
        !c.dir.join("report/cluster/data/run/cluster.json").exists(),
        "the scenario's cluster was not stopped"
    );
}

#[test]
fn a_malformed_scenario_or_an_unknown_member_is_refused_before_anything_starts() {
    let c = Cluster::configure("chaos-bad", &Settings::default());
    let out = c.dir.join("report");
    let bad = c.dir.join("bad.toml");

    std::fs::write(&bad, "name = \"x\"\nduration_s = \n").unwrap();
    let (code, _, err) = run(&c, &[bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2"), "{err}");

    let text = std::fs::read_to_string(scenario("kill-primary"))
        .unwrap()
        .replace("concurrency = 8", "concurrency = 8\nthreads = 2");
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = run(&c, &[bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("threads"), "{err}");

    let text = std::fs::read_to_string(scenario("kill-primary"))
        .unwrap()
        .replace("at_s = 10.0", "at_s = 45.0");
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = run(&c, &[bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("fault[0].at_s"), "{err}");

    let text = std::fs::read_to_string(scenario("partition-minority"))
        .unwrap()
        .replace("[\"n4\"]", "[\"n9\"]");
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = run(&c, &[bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("\"n9\" is not a member"), "{err}");

    // Attaching needs a running cluster.
    let (code, _, err) = run(&c, &[&scenario("kill-primary"), "--attach"]);
    assert_eq!(code, 2);
    assert!(err.contains("no cluster is running"), "{err}");

    assert!(!out.exists(), "a refused run must not start anything");
    // Only what `keelson init` made (certificates, keys) is there: no node started.
    assert!(!c.dir.join("data/n1").exists() && !c.dir.join("data/logs").exists());
}
