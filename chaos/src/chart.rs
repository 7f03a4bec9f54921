//! `chart.svg`: three panels over the run's seconds, sharing the x axis.
//!
//! ```text
//! ┌ throughput   ok ops/s, errors/s         ┐  every fault: a vertical line through all
//! ├ latency      p99 (p50 lighter), log ms  ┤  three panels, labelled (`kill n2`) in the
//! └ availability ok / attempted, 0..1       ┘  top one; phases shaded when they are named
//! ```
//!
//! Text is SVG `<text>`; plotters only estimates its width, so no font files are needed.

use std::io;
use std::ops::Range;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{FaultReport, Phase, Report, Second};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 720;
const FONT: &str = "sans-serif";
const Y_LABEL_AREA: u32 = 64;
const MARGIN: u32 = 8;
/// Longest fault label before it is cut with `…`.
const LABEL_CHARS: usize = 18;

const OK_COLOR: RGBColor = RGBColor(31, 119, 180);
const ERROR_COLOR: RGBColor = RGBColor(214, 39, 40);
const P99_COLOR: RGBColor = RGBColor(148, 103, 189);
const AVAILABILITY_COLOR: RGBColor = RGBColor(44, 160, 44);
const FAULT_COLOR: RGBColor = RGBColor(90, 90, 90);
const PHASE_COLOR: RGBColor = RGBColor(255, 200, 90);

/// Draws the report's per-second figures into an SVG at `path`.
pub fn render_svg(report: &Report, path: &Path) -> io::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(report, &root).map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    std::fs::write(path, svg)
}

fn drawing_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing chart.svg: {e}"))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// What drawing on an `SVGBackend` can fail with.
type DrawError = DrawingAreaErrorKind<io::Error>;
type DrawResult = Result<(), DrawError>;

fn draw(report: &Report, root: &Area<'_>) -> DrawResult {
    root.fill(&WHITE)?;
    let body = root.titled(
        &format!("Chaos: {}", report.scenario),
        (FONT, 22).into_font().color(&BLACK),
    )?;
    if report.seconds.is_empty() {
        let (w, h) = body.dim_in_pixel();
        body.draw(&Text::new(
            "no data",
            (w as i32 / 2, h as i32 / 2),
            (FONT, 24)
                .into_font()
                .color(&FAULT_COLOR)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        return Ok(());
    }

    let x = 0.0..x_end(report);
    let shaded: &[Phase] = if report.phases.iter().any(|p| p.name != "baseline") {
        &report.phases
    } else {
        &[]
    };
    let panels = body.split_evenly((3, 1));
    throughput(&panels[0], x.clone(), report, shaded)?;
    latency(&panels[1], x.clone(), report, shaded)?;
    availability(&panels[2], x, report, shaded)
}

/// The x axis ends at the last second, the run's end or the last fault, whichever is latest.
fn x_end(report: &Report) -> f64 {
    let last_second = report.seconds.iter().map(|s| s.t + 1).max().unwrap_or(0) as f64;
    let last_fault = report
        .faults
        .iter()
        .map(|f| f.at_ms as f64 / 1000.0)
        .fold(0.0, f64::max);
    last_second.max(report.duration_s).max(last_fault).max(1.0)
}

fn throughput(area: &Area<'_>, x: Range<f64>, report: &Report, phases: &[Phase]) -> DrawResult {
    let top = report
        .seconds
        .iter()
        .map(|s| s.ok.max(s.errors))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.25;
    let mut chart = panel(area, x, 0.0..top, false)?;
    chart
        .configure_mesh()
        .y_desc("ops/s")
        .x_label_formatter(&|v| trim_number(*v))
        .y_label_formatter(&|v| trim_number(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    overlay(&mut chart, phases, &report.faults)?;

    let ok = line(&report.seconds, |s| Some(s.ok as f64));
    let errors = line(&report.seconds, |s| Some(s.errors as f64));
    series(&mut chart, ok, OK_COLOR.stroke_width(2), "ok ops/s")?;
    series(&mut chart, errors, ERROR_COLOR.stroke_width(2), "errors/s")?;
    legend(&mut chart)?;
    fault_labels(area, &chart, &report.faults)
}

fn latency(area: &Area<'_>, x: Range<f64>, report: &Report, phases: &[Phase]) -> DrawResult {
    // Log scale: a failover's seconds-long p99 and a baseline of a few ms both stay readable.
    let values = report
        .seconds
        .iter()
        .flat_map(|s| [s.p50_ms, s.p99_ms])
        .flatten()
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let y = if hi > 0.0 {
        decade_floor(lo)..decade_ceil(hi * 1.01)
    } else {
        1.0..10.0
    };
    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .margin_right(MARGIN * 3)
        .x_label_area_size(22)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x, y.log_scale())?;
    chart
        .configure_mesh()
        .y_desc("latency ms (log)")
        .x_label_formatter(&|v| trim_number(*v))
        .y_label_formatter(&|v| trim_number(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    overlay(&mut chart, phases, &report.faults)?;

    let p50 = line(&report.seconds, |s| s.p50_ms.filter(|v| *v > 0.0));
    let p99 = line(&report.seconds, |s| s.p99_ms.filter(|v| *v > 0.0));
    series(&mut chart, p50, P99_COLOR.mix(0.35).stroke_width(2), "p50")?;
    series(&mut chart, p99, P99_COLOR.stroke_width(2), "p99")?;
    legend(&mut chart)
}

fn availability(area: &Area<'_>, x: Range<f64>, report: &Report, phases: &[Phase]) -> DrawResult {
    let mut chart = panel(area, x, 0.0..1.05, true)?;
    chart
        .configure_mesh()
        .y_desc("availability")
        .x_desc("seconds")
        .x_label_formatter(&|v| trim_number(*v))
        .y_label_formatter(&|v| trim_number(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    overlay(&mut chart, phases, &report.faults)?;
    phase_labels(&mut chart, phases)?;

    let points: Vec<(f64, f64)> = report
        .seconds
        .iter()
        .map(|s| (mid(s), s.availability))
        .collect();
    chart.draw_series(AreaSeries::new(
        points.iter().copied(),
        0.0,
        AVAILABILITY_COLOR.mix(0.15),
    ))?;
    series(
        &mut chart,
        vec![points],
        AVAILABILITY_COLOR.stroke_width(2),
        "ok / attempted",
    )?;
    legend(&mut chart)
}

type Linear<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn panel<'a, 'b>(
    area: &'a Area<'b>,
    x: Range<f64>,
    y: Range<f64>,
    bottom: bool,
) -> Result<Linear<'a, 'b>, DrawError> {
    ChartBuilder::on(area)
        .margin(MARGIN)
        .margin_right(MARGIN * 3)
        .x_label_area_size(if bottom { 40 } else { 22 })
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x, y)
}

/// Phase shading and one vertical line per fault, drawn under the data.
fn overlay<Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    phases: &[Phase],
    faults: &[FaultReport],
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    let y = chart.y_range();
    chart.draw_series(phases.iter().enumerate().map(|(i, p)| {
        let alpha = if i % 2 == 0 { 0.10 } else { 0.22 };
        Rectangle::new(
            [
                (p.from_ms as f64 / 1000.0, y.start),
                (p.to_ms as f64 / 1000.0, y.end),
            ],
            PHASE_COLOR.mix(alpha).filled(),
        )
    }))?;
    chart.draw_series(faults.iter().map(|f| {
        let t = f.at_ms as f64 / 1000.0;
        PathElement::new(vec![(t, y.start), (t, y.end)], FAULT_COLOR.stroke_width(1))
    }))?;
    Ok(())
}

/// Fault labels along the top of the throughput panel, moved down a row when they would overlap.
fn fault_labels(area: &Area<'_>, chart: &Linear<'_, '_>, faults: &[FaultReport]) -> DrawResult {
    let style = (FONT, 15).into_font().color(&FAULT_COLOR);
    let y = chart.y_range();
    let (_, top) = chart.backend_coord(&(0.0, y.end));
    let (base_x, base_y) = area.get_base_pixel();
    let mut row_ends: Vec<i32> = Vec::new();
    for f in faults {
        let label = fault_label(f);
        let (px, _) = chart.backend_coord(&(f.at_ms as f64 / 1000.0, y.end));
        let width = area.estimate_text_size(&label, &style)?.0 as i32;
        let left = px + 3;
        let row = match row_ends.iter().position(|end| left > *end + 4) {
            Some(row) => row,
            None => {
                row_ends.push(i32::MIN);
                row_ends.len() - 1
            }
        };
        row_ends[row] = left + width;
        area.draw(&Text::new(
            label,
            (left - base_x, top - base_y + 2 + 16 * row as i32),
            style.clone(),
        ))?;
    }
    Ok(())
}

/// `kill n2` from action `kill` and target `n2 (primary of shard 17)`, cut to fit.
fn fault_label(f: &FaultReport) -> String {
    let target = f.target.split(" (").next().unwrap_or_default();
    let label = format!("{} {}", f.action, target);
    if label.chars().count() > LABEL_CHARS {
        let cut: String = label.chars().take(LABEL_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        label
    }
}

/// Phase names along the bottom of the availability panel, where the line rarely goes.
fn phase_labels(chart: &mut Linear<'_, '_>, phases: &[Phase]) -> DrawResult {
    let style = (FONT, 14)
        .into_font()
        .color(&BLACK.mix(0.6))
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    let labels: Vec<_> = phases
        .iter()
        .filter(|p| {
            let (from, _) = chart.backend_coord(&(p.from_ms as f64 / 1000.0, 0.0));
            let (to, _) = chart.backend_coord(&(p.to_ms as f64 / 1000.0, 0.0));
            // The estimate plotters uses without fonts is ~6 px a character at this size.
            to - from > 6 * p.name.chars().count() as i32 + 6
        })
        .map(|p| {
            Text::new(
                p.name.clone(),
                (p.from_ms as f64 / 1000.0 + 0.2, 0.03),
                style.clone(),
            )
        })
        .collect();
    chart.draw_series(labels)?;
    Ok(())
}

/// Points of a per-second value, split where it is missing so the line has gaps, not bridges.
fn line(seconds: &[Second], value: impl Fn(&Second) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for s in seconds {
        match value(s) {
            Some(v) => current.push((mid(s), v)),
            None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// A second's figures cover `[t, t+1)`, so they are drawn at its middle: a dip starts after
/// the fault line, not on it.
fn mid(s: &Second) -> f64 {
    s.t as f64 + 0.5
}

/// Draws every segment, with one legend entry for the lot.
fn series<Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    segments: Vec<Vec<(f64, f64)>>,
    style: ShapeStyle,
    label: &str,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    for (i, points) in segments.into_iter().enumerate() {
        // A lone point draws nothing as a line, so it gets a dot.
        let dot = if points.len() == 1 { 2 } else { 0 };
        let drawn = chart.draw_series(LineSeries::new(points, style).point_size(dot))?;
        if i == 0 {
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    Ok(())
}

fn legend<'a, 'b: 'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 14))
        .draw()
}

fn decade_floor(v: f64) -> f64 {
    10f64.powf(v.log10().floor())
}

fn decade_ceil(v: f64) -> f64 {
    10f64.powf(v.log10().ceil())
}

/// `0.5`, `2`, `1000`: axis labels without trailing zeros.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: u32, p99: Option<f64>) -> Second {
        Second {
            t,
            attempted: 1,
            ok: 1,
            errors: 0,
            availability: 1.0,
            p50_ms: p99,
            p99_ms: p99,
        }
    }

    #[test]
    fn chart_line_breaks_where_values_are_missing() {
        let seconds = [
            second(0, Some(1.0)),
            second(1, None),
            second(2, None),
            second(3, Some(3.0)),
            second(4, Some(4.0)),
        ];
        let segments = line(&seconds, |s| s.p99_ms);
        assert_eq!(
            segments,
            vec![vec![(0.5, 1.0)], vec![(3.5, 3.0), (4.5, 4.0)]]
        );
    }

    #[test]
    fn chart_fault_label_is_short() {
        let fault = |action: &str, target: &str| FaultReport {
            at_ms: 0,
            action: action.to_string(),
            target: target.to_string(),
            shards_affected: 0,
            detection_ms: None,
            recovery_ms: None,
            stages: Vec::new(),
            note: None,
        };
        assert_eq!(
            fault_label(&fault("kill", "n2 (primary of shard 17)")),
            "kill n2"
        );
        assert_eq!(
            fault_label(&fault("partition", "n1 | n2 n3 n4 gateway")),
            "partition n1 | n2…"
        );
    }

    #[test]
    fn chart_log_axis_spans_whole_decades() {
        assert_eq!(decade_floor(2.5), 1.0);
        assert_eq!(decade_ceil(650.0), 1000.0);
        assert_eq!(trim_number(0.5), "0.5");
        assert_eq!(trim_number(1000.0), "1000");
    }
}
