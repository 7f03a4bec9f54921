//! Turns a [`Report`] into the files a person reads after a run.
//!
//! ```text
//! Report ──▶ write_report(dir) ──┬─▶ report.json   serde, round-trips to the same Report
//!                                ├─▶ report.md     markdown(): verdict, gates, totals, faults,
//!                                │                 recovery, phases, checks
//!                                └─▶ chart.svg     chart::render_svg(): throughput, latency,
//!                                                  availability per second, faults marked
//! ```
//!
//! Missing values are written as `–`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::chart;
use crate::report::{Checks, FaultReport, Phase, Report, Spread, Totals, Verdict};

/// Lines of lost writes or violations shown before the rest is summarised.
const MAX_LISTED: usize = 20;

/// Shown where a value is missing.
const NONE: &str = "–";

/// Where [`write_report`] put each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `report.json`.
    pub json: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `chart.svg`.
    pub chart: PathBuf,
}

/// Writes `report.json`, `report.md` and `chart.svg` into `dir`, creating it if needed.
pub fn write_report(dir: &Path, report: &Report) -> io::Result<Written> {
    fs::create_dir_all(dir)?;
    let written = Written {
        json: dir.join("report.json"),
        markdown: dir.join("report.md"),
        chart: dir.join("chart.svg"),
    };
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    fs::write(&written.json, json)?;
    fs::write(&written.markdown, markdown(report))?;
    chart::render_svg(report, &written.chart)?;
    Ok(written)
}

/// The whole of `report.md`.
pub fn markdown(report: &Report) -> String {
    let mut md = format!("# Chaos report: {}\n\n", report.scenario);
    if !report.description.trim().is_empty() {
        let _ = writeln!(md, "{}\n", report.description.trim());
    }
    let _ = writeln!(
        md,
        "Workload ran {:.1} s, started at {} ms since the Unix epoch (report layout v{}).\n",
        report.duration_s, report.started_unix_ms, report.version
    );
    verdict(&mut md, &report.verdict);
    totals(&mut md, &report.totals);
    faults(&mut md, &report.faults);
    if let Some(spread) = &report.recovery {
        recovery(&mut md, spread);
    }
    phases(&mut md, &report.phases);
    checks(&mut md, &report.checks);
    md.push_str("## Chart\n\n![chart](chart.svg)\n");
    md
}

fn verdict(md: &mut String, verdict: &Verdict) {
    if verdict.passed {
        md.push_str("**PASS**\n\n");
    } else {
        let failed: Vec<&str> = verdict
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.name.as_str())
            .collect();
        let _ = writeln!(md, "**FAIL**: {}\n", failed.join(", "));
    }
    if verdict.gates.is_empty() {
        return;
    }
    md.push_str("## Gates\n\n| gate | limit | measured | result |\n|---|---|---|:---:|\n");
    for g in &verdict.gates {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            cell(&g.name),
            cell(&g.limit),
            cell(&g.actual),
            if g.passed { "✓" } else { "✗" }
        );
    }
    md.push('\n');
}

fn totals(md: &mut String, t: &Totals) {
    md.push_str("## Totals\n\n");
    let _ = writeln!(
        md,
        "- Operations: {} attempted, {} ok, {} failed, {} unknown",
        t.attempted, t.ok, t.failed, t.unknown
    );
    let _ = writeln!(md, "- Availability: {}", percent(t.availability));
    let _ = writeln!(
        md,
        "- Writes acknowledged: {}, reads answered: {}",
        t.writes_acked, t.reads_ok
    );
    let _ = writeln!(
        md,
        "- Latency: p50 {} ms, p99 {} ms",
        ms(t.p50_ms),
        ms(t.p99_ms)
    );
    let _ = writeln!(md, "- Throughput: {:.1} ops/s\n", t.throughput);
}

fn faults(md: &mut String, faults: &[FaultReport]) {
    md.push_str("## Faults\n\n");
    if faults.is_empty() {
        md.push_str("No faults were scheduled.\n\n");
        return;
    }
    md.push_str(
        "| at s | action | target | shards affected | detection ms | recovery ms | note |\n\
         |---:|---|---|---:|---:|---:|---|\n",
    );
    for f in faults {
        let _ = writeln!(
            md,
            "| {:.1} | {} | {} | {} | {} | {} | {} |",
            seconds(f.at_ms),
            cell(&f.action),
            cell(&f.target),
            f.shards_affected,
            opt(f.detection_ms),
            opt(f.recovery_ms),
            f.note.as_deref().map_or_else(|| NONE.to_string(), cell)
        );
    }
    md.push('\n');
    for f in faults {
        let _ = writeln!(md, "{}", timeline(f));
    }
    md.push('\n');
}

/// `- 10.0 s kill n2: suspected +3 ms → marked down +3 ms → … → recovered +655 ms`
fn timeline(f: &FaultReport) -> String {
    let stages = if f.stages.is_empty() {
        "no stages seen".to_string()
    } else {
        f.stages
            .iter()
            .map(|s| format!("{} +{} ms", s.name, s.after_ms))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    format!(
        "- {:.1} s {} {}: {}",
        seconds(f.at_ms),
        f.action,
        f.target,
        stages
    )
}

fn recovery(md: &mut String, s: &Spread) {
    let _ = writeln!(
        md,
        "## Recovery\n\nOver {} fault{}: p50 {} ms, p99 {} ms, max {} ms.\n",
        s.count,
        if s.count == 1 { "" } else { "s" },
        s.p50_ms,
        s.p99_ms,
        s.max_ms
    );
}

fn phases(md: &mut String, phases: &[Phase]) {
    if phases.is_empty() {
        return;
    }
    let nodes: BTreeSet<&str> = phases
        .iter()
        .flat_map(|p| p.node_cpu_pct.keys().map(String::as_str))
        .collect();
    let baseline = phases[0].mean_ms.filter(|m| *m > 0.0);

    md.push_str("## Phases\n\n| phase | from–to s | ops | availability | mean | p50 | p99 ms |");
    let mut rule = String::from("|---|---|---:|---:|---:|---:|---:|");
    if baseline.is_some() {
        md.push_str(" vs baseline |");
        rule.push_str("---:|");
    }
    for node in &nodes {
        let _ = write!(md, " CPU % {} |", cell(node));
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "\n{rule}");

    for p in phases {
        let _ = write!(
            md,
            "| {} | {:.1}–{:.1} | {} | {} | {} | {} | {} |",
            cell(&p.name),
            seconds(p.from_ms),
            seconds(p.to_ms),
            p.attempted,
            percent(p.availability),
            opt_ms(p.mean_ms),
            opt_ms(p.p50_ms),
            opt_ms(p.p99_ms)
        );
        if let Some(base) = baseline {
            let ratio = p
                .mean_ms
                .map_or_else(|| NONE.to_string(), |m| format!("{:.2}×", m / base));
            let _ = write!(md, " {ratio} |");
        }
        for node in &nodes {
            let cpu = p
                .node_cpu_pct
                .get(*node)
                .map_or_else(|| NONE.to_string(), |c| format!("{c:.1}"));
            let _ = write!(md, " {cpu} |");
        }
        md.push('\n');
    }
    md.push('\n');
}

fn checks(md: &mut String, c: &Checks) {
    md.push_str("## Checks\n\n");
    let _ = writeln!(md, "- Keys checked: {}", c.keys_checked);
    let _ = writeln!(md, "- Lost writes: {}", c.lost_writes.len());
    let _ = writeln!(
        md,
        "- Operations checked for linearizability: {}",
        c.ops_checked
    );
    let _ = writeln!(
        md,
        "- Linearizable: {}",
        if c.linearizable { "yes" } else { "no" }
    );
    let _ = writeln!(md, "- Duplicate primaries: {}\n", c.duplicate_primaries);
    listing(md, "Lost writes", &c.lost_writes);
    listing(md, "Linearizability violations", &c.violations);
}

/// A titled code block with the first [`MAX_LISTED`] lines and a count of the rest.
fn listing(md: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(md, "### {title}\n\n```text");
    for line in lines.iter().take(MAX_LISTED) {
        let _ = writeln!(md, "{line}");
    }
    md.push_str("```\n");
    if lines.len() > MAX_LISTED {
        let _ = writeln!(
            md,
            "\n… and {} more (see report.json).",
            lines.len() - MAX_LISTED
        );
    }
    md.push('\n');
}

/// A latency: one decimal below 10 ms, none above.
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| NONE.to_string(), ms)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| NONE.to_string(), |v| v.to_string())
}

/// A 0..1 ratio as a percentage with two decimals.
fn percent(ratio: f64) -> String {
    format!("{:.2} %", ratio * 100.0)
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Text safe inside a table cell: targets such as `n1 | n2 n3` would otherwise split the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
#[path = "render_test.rs"]
mod tests;
