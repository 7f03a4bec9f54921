use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::report::{Gate, Second, Stage, REPORT_VERSION};

/// A 30 s run: n2 killed at 10 s, the recovery gate failed, two lost writes, one violation.
fn sample() -> Report {
    let seconds = (0..30)
        .map(|t| {
            let hit = (10..12).contains(&t);
            let attempted = 200;
            let errors = if hit { 60 } else { 0 };
            Second {
                t,
                attempted,
                ok: attempted - errors,
                errors,
                availability: (attempted - errors) as f64 / attempted as f64,
                p50_ms: (t != 10).then_some(if hit { 40.0 } else { 2.5 }),
                p99_ms: (t != 10).then_some(if hit { 650.0 } else { 8.0 }),
            }
        })
        .collect();
    let stage = |name: &str, after_ms| Stage {
        name: name.to_string(),
        after_ms,
    };
    let cpu = |pcts: [f64; 4]| -> BTreeMap<String, f64> {
        (1..=4).map(|n| format!("n{n}")).zip(pcts).collect()
    };
    Report {
        version: REPORT_VERSION,
        scenario: "kill-primary".to_string(),
        description: "Kill the primary of a busy shard under a mixed workload.".to_string(),
        started_unix_ms: 1_700_000_000_000,
        duration_s: 30.0,
        verdict: Verdict {
            passed: false,
            gates: vec![
                Gate {
                    name: "min_availability".to_string(),
                    limit: ">= 0.95".to_string(),
                    actual: "0.980".to_string(),
                    passed: true,
                },
                Gate {
                    name: "max_recovery_ms".to_string(),
                    limit: "<= 500".to_string(),
                    actual: "655".to_string(),
                    passed: false,
                },
            ],
        },
        totals: Totals {
            attempted: 6000,
            ok: 5880,
            failed: 70,
            unknown: 50,
            availability: 0.98,
            writes_acked: 2900,
            reads_ok: 2980,
            p50_ms: 2.54,
            p99_ms: 123.4,
            throughput: 196.0,
        },
        seconds,
        faults: vec![FaultReport {
            at_ms: 10_000,
            action: "kill".to_string(),
            target: "n2 (primary of shard 17)".to_string(),
            shards_affected: 3,
            detection_ms: Some(3),
            recovery_ms: Some(655),
            stages: vec![
                stage("suspected", 3),
                stage("marked down", 3),
                stage("promoted", 412),
                stage("first success", 430),
                stage("recovered", 655),
            ],
            note: None,
        }],
        phases: vec![
            Phase {
                name: "baseline".to_string(),
                from_ms: 0,
                to_ms: 10_000,
                attempted: 2000,
                availability: 1.0,
                mean_ms: Some(3.0),
                p50_ms: Some(2.5),
                p99_ms: Some(8.0),
                node_cpu_pct: cpu([21.0, 35.5, 19.2, 20.0]),
            },
            Phase {
                name: "after kill n2".to_string(),
                from_ms: 10_000,
                to_ms: 30_000,
                attempted: 4000,
                availability: 0.97,
                mean_ms: Some(4.5),
                p50_ms: Some(2.6),
                p99_ms: Some(123.4),
                node_cpu_pct: cpu([30.0, 0.0, 28.4, 27.1]),
            },
        ],
        checks: Checks {
            keys_checked: 64,
            lost_writes: vec![
                "key k7: write op 812 of 41 acknowledged, final read saw 39".to_string(),
                "key k19: write op 1033 of 12 acknowledged, final read saw 11".to_string(),
            ],
            ops_checked: 6000,
            linearizable: false,
            violations: vec!["key k7: read op 900 saw 39 after write op 812 of 41".to_string()],
            duplicate_primaries: 0,
        },
        recovery: Some(Spread {
            count: 1,
            p50_ms: 655,
            p99_ms: 655,
            max_ms: 655,
        }),
    }
}

fn empty() -> Report {
    Report {
        version: REPORT_VERSION,
        scenario: "idle".to_string(),
        description: String::new(),
        started_unix_ms: 0,
        duration_s: 0.0,
        verdict: Verdict {
            passed: true,
            gates: Vec::new(),
        },
        totals: Totals {
            attempted: 0,
            ok: 0,
            failed: 0,
            unknown: 0,
            availability: 1.0,
            writes_acked: 0,
            reads_ok: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            throughput: 0.0,
        },
        seconds: Vec::new(),
        faults: Vec::new(),
        phases: Vec::new(),
        checks: Checks {
            keys_checked: 0,
            lost_writes: Vec::new(),
            ops_checked: 0,
            linearizable: true,
            violations: Vec::new(),
            duplicate_primaries: 0,
        },
        recovery: None,
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "keelson-chaos-{tag}-{}-{nanos}",
            std::process::id()
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn render_verdict_names_the_failed_gate() {
    let md = markdown(&sample());
    assert!(md.starts_with("# Chaos report: kill-primary\n"), "{md}");
    assert!(md.contains("**FAIL**: max_recovery_ms\n"), "{md}");
    assert!(
        md.contains("| max_recovery_ms | <= 500 | 655 | ✗ |"),
        "{md}"
    );
    assert!(
        md.contains("| min_availability | >= 0.95 | 0.980 | ✓ |"),
        "{md}"
    );
    assert!(!md.contains("**PASS**"), "{md}");
}

#[test]
fn render_totals_are_readable() {
    let md = markdown(&sample());
    assert!(
        md.contains("6000 attempted, 5880 ok, 70 failed, 50 unknown"),
        "{md}"
    );
    assert!(md.contains("- Availability: 98.00 %"), "{md}");
    assert!(md.contains("- Latency: p50 2.5 ms, p99 123 ms"), "{md}");
    assert!(md.contains("- Throughput: 196.0 ops/s"), "{md}");
}

#[test]
fn render_fault_row_and_timeline() {
    let md = markdown(&sample());
    assert!(
        md.contains("| 10.0 | kill | n2 (primary of shard 17) | 3 | 3 | 655 | – |"),
        "{md}"
    );
    assert!(
        md.contains(
            "- 10.0 s kill n2 (primary of shard 17): suspected +3 ms → marked down +3 ms → \
             promoted +412 ms → first success +430 ms → recovered +655 ms\n"
        ),
        "{md}"
    );
    assert!(
        md.contains("Over 1 fault: p50 655 ms, p99 655 ms, max 655 ms."),
        "{md}"
    );
}

#[test]
fn render_pipes_in_targets_do_not_split_cells() {
    let mut report = sample();
    report.faults[0].action = "partition".to_string();
    report.faults[0].target = "n1 | n2 n3".to_string();
    let md = markdown(&report);
    assert!(md.contains("| partition | n1 \\| n2 n3 |"), "{md}");
}

#[test]
fn render_phase_table_has_cpu_columns_and_baseline_ratio() {
    let md = markdown(&sample());
    assert!(
        md.contains(
            "| phase | from–to s | ops | availability | mean | p50 | p99 ms | vs baseline \
             | CPU % n1 | CPU % n2 | CPU % n3 | CPU % n4 |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| baseline | 0.0–10.0 | 2000 | 100.00 % | 3.0 | 2.5 | 8.0 | 1.00× | 21.0 | 35.5 | 19.2 | 20.0 |"),
        "{md}"
    );
    assert!(
        md.contains("| after kill n2 | 10.0–30.0 | 4000 | 97.00 % | 4.5 | 2.6 | 123 | 1.50× | 30.0 | 0.0 | 28.4 | 27.1 |"),
        "{md}"
    );
}

#[test]
fn render_no_ratio_column_without_a_baseline_mean() {
    let mut report = sample();
    report.phases[0].mean_ms = None;
    let md = markdown(&report);
    assert!(!md.contains("vs baseline"), "{md}");
    assert!(
        md.contains("| baseline | 0.0–10.0 | 2000 | 100.00 % | – | 2.5 |"),
        "{md}"
    );
}

#[test]
fn render_checks_list_lost_writes_and_violations() {
    let report = sample();
    let md = markdown(&report);
    assert!(md.contains("- Lost writes: 2\n"), "{md}");
    assert!(md.contains("- Linearizable: no\n"), "{md}");
    assert!(md.contains("- Duplicate primaries: 0\n"), "{md}");
    for line in report
        .checks
        .lost_writes
        .iter()
        .chain(&report.checks.violations)
    {
        assert!(
            md.contains(&format!("{line}\n")),
            "missing {line:?} in\n{md}"
        );
    }
    assert!(md.contains("![chart](chart.svg)"), "{md}");
}

#[test]
fn render_long_listings_stop_at_twenty() {
    let mut report = sample();
    report.checks.lost_writes = (0..25).map(|i| format!("lost write number {i}")).collect();
    let md = markdown(&report);
    assert!(md.contains("lost write number 19\n"), "{md}");
    assert!(!md.contains("lost write number 20\n"), "{md}");
    assert!(md.contains("… and 5 more"), "{md}");
}

#[test]
fn render_write_report_creates_three_readable_files() {
    let report = sample();
    let dir = TempDir::new("render");
    let written = write_report(&dir.0.join("nested"), &report).expect("write_report");

    let json = fs::read_to_string(&written.json).expect("report.json");
    let back: Report = serde_json::from_str(&json).expect("report.json parses");
    assert_eq!(back, report);

    let md = fs::read_to_string(&written.markdown).expect("report.md");
    assert_eq!(md, markdown(&report));

    let svg = fs::read_to_string(&written.chart).expect("chart.svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    // The fault's label is a text element of its own; the phase label only contains it.
    assert!(
        svg.contains("\nkill n2\n</text>"),
        "no fault label in chart.svg"
    );
    assert!(svg.contains("after kill n2"), "no phase label in chart.svg");
}

#[test]
fn render_empty_report() {
    let report = empty();
    let md = markdown(&report);
    assert!(md.contains("**PASS**"), "{md}");
    assert!(md.contains("No faults were scheduled."), "{md}");
    assert!(!md.contains("## Phases"), "{md}");
    assert!(!md.contains("## Recovery"), "{md}");

    let dir = TempDir::new("render-empty");
    let written = write_report(&dir.0, &report).expect("write_report");
    let svg = fs::read_to_string(&written.chart).expect("chart.svg");
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("no data"), "{svg}");
}
