//! Plots of a result: per metric, one bar per scenario at its median with a
//! min–max error bar, as SVG and PNG. Text is laid out with a TTF font read
//! at run time (plotters' ab_glyph backend), so nothing links to
//! fontconfig or freetype; without a font there is no plot, and the error
//! says which font to install.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use plotters::{
    coord::Shift,
    prelude::*,
    style::{FontStyle, register_font},
};

use crate::result::BenchResult;

/// Where the common distributions put a sans-serif TTF font.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// A font file to use instead of [`FONTS`].
pub const FONT_ENV: &str = "SHOAL_BENCH_FONT";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlotError {
    #[error(
        "no TTF font to lay out plot text: looked at {looked}; install fonts-dejavu-core (Debian) or set {FONT_ENV}=/path/to/font.ttf"
    )]
    NoFont { looked: String },
    #[error("drawing {file}: {reason}")]
    Draw { file: PathBuf, reason: String },
}

/// One bar: a scenario's median and range.
struct Bar {
    scenario: String,
    median: f64,
    min: f64,
    max: f64,
    flagged: bool,
}

/// One metric's bars, the metric's unit, over the scenarios that have it.
type MetricBars = (String, String, Vec<Bar>);
/// One latency kind's CDF lines: (label, points) per scenario.
type CdfLines = (String, Vec<(String, Vec<(f64, f64)>)>);

/// The file stems `write_plots` writes for `r`, in its order
/// (`plot-<metric>`, then `cdf-<kind>`), each as `.svg` and `.png`: what a
/// document embedding the plots links to, without drawing them.
pub fn planned(r: &BenchResult) -> Vec<String> {
    metric_bars(r)
        .iter()
        .map(|(name, _, _)| format!("plot-{}", slug(name)))
        .chain(
            cdf_lines(r)
                .iter()
                .map(|(name, _)| format!("cdf-{}", slug(name))),
        )
        .collect()
}

/// Per metric with a median somewhere, its bars in scenario order.
fn metric_bars(r: &BenchResult) -> Vec<MetricBars> {
    let mut metrics: Vec<(&str, &str)> = Vec::new();
    for s in &r.scenarios {
        for m in &s.metrics {
            if !metrics.iter().any(|(n, _)| *n == m.name) {
                metrics.push((&m.name, &m.unit));
            }
        }
    }
    metrics
        .into_iter()
        .filter_map(|(name, unit)| {
            let bars: Vec<Bar> = r
                .scenarios
                .iter()
                .filter_map(|s| {
                    let m = s.metrics.iter().find(|m| m.name == name)?;
                    Some(Bar {
                        scenario: s.name.clone(),
                        median: m.median?,
                        min: m.min?,
                        max: m.max?,
                        flagged: m.flagged,
                    })
                })
                .collect();
            (!bars.is_empty()).then(|| (name.to_owned(), unit.to_owned(), bars))
        })
        .collect()
}

/// Per latency kind with a valid, non-empty histogram somewhere, one line
/// per scenario (latency in µs).
fn cdf_lines(r: &BenchResult) -> Vec<CdfLines> {
    let mut names: Vec<&str> = Vec::new();
    for l in r.scenarios.iter().flat_map(|s| &s.latency) {
        if !names.contains(&l.name.as_str()) {
            names.push(&l.name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let lines: Vec<(String, Vec<(f64, f64)>)> = r
                .scenarios
                .iter()
                .filter_map(|s| {
                    let l = s.latency.iter().find(|l| l.name == name)?;
                    l.histogram.validate().ok()?;
                    let cdf: Vec<(f64, f64)> = l
                        .histogram
                        .cdf()
                        .into_iter()
                        .map(|(ns, f)| ((ns / 1e3).max(0.1), f))
                        .collect();
                    (!cdf.is_empty()).then(|| {
                        let label = format!("{} (n={})", s.name, l.histogram.count);
                        (label, cdf)
                    })
                })
                .collect();
            (!lines.is_empty()).then(|| (name.to_owned(), lines))
        })
        .collect()
}

/// Writes `plot-<metric>.svg` and `.png` into `dir` for every metric with
/// a median; returns the files written.
pub fn write_plots(r: &BenchResult, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    font()?;
    let mut written = Vec::new();
    for (name, unit, bars) in metric_bars(r) {
        let stem = format!("plot-{}", slug(&name));
        let title = format!(
            "{name} ({unit}): median, min–max of {} repeats",
            r.meta.repeat
        );
        let svg = dir.join(format!("{stem}.svg"));
        draw(
            SVGBackend::new(&svg, SIZE).into_drawing_area(),
            &title,
            &bars,
        )
        .map_err(|reason| PlotError::Draw {
            file: svg.clone(),
            reason,
        })?;
        let png = dir.join(format!("{stem}.png"));
        draw(
            BitMapBackend::new(&png, SIZE).into_drawing_area(),
            &title,
            &bars,
        )
        .map_err(|reason| PlotError::Draw {
            file: png.clone(),
            reason,
        })?;
        written.extend([svg, png]);
    }
    written.extend(write_cdfs(r, dir)?);
    Ok(written)
}

/// `cdf-<name>.svg/.png` per latency kind (rr, crr, http): one line per
/// scenario, latency on a log axis, all repeats merged.
fn write_cdfs(r: &BenchResult, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    for (name, lines) in cdf_lines(r) {
        let title = format!("{name} latency CDF, all {} repeats", r.meta.repeat);
        let stem = format!("cdf-{}", slug(&name));
        let svg = dir.join(format!("{stem}.svg"));
        let png = dir.join(format!("{stem}.png"));
        draw_cdf(
            SVGBackend::new(&svg, SIZE).into_drawing_area(),
            &title,
            &lines,
        )
        .map_err(|reason| PlotError::Draw {
            file: svg.clone(),
            reason,
        })?;
        draw_cdf(
            BitMapBackend::new(&png, SIZE).into_drawing_area(),
            &title,
            &lines,
        )
        .map_err(|reason| PlotError::Draw {
            file: png.clone(),
            reason,
        })?;
        written.extend([svg, png]);
    }
    Ok(written)
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(70, 130, 180),
    RGBColor(230, 140, 60),
    RGBColor(60, 160, 90),
    RGBColor(200, 60, 60),
    RGBColor(130, 90, 180),
    RGBColor(120, 120, 120),
];

fn draw_cdf<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let xs = lines.iter().flat_map(|(_, c)| c.iter().map(|p| p.0));
    let lo = xs.clone().fold(f64::INFINITY, f64::min);
    let hi = xs.fold(0.0, f64::max);
    let (lo, hi) = (lo * 0.8, (hi * 1.25).max(lo * 2.0));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("latency (us, log)")
        .y_desc("fraction at or below")
        .draw()
        .map_err(e)?;
    for (i, (label, cdf)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        // A step line: each bucket's fraction holds up to its upper bound.
        let mut steps = Vec::with_capacity(cdf.len() * 2);
        let mut prev = 0.0;
        for (x, f) in cdf {
            steps.extend([(*x, prev), (*x, *f)]);
            prev = *f;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                steps,
                color.stroke_width(2),
            )))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

const SIZE: (u32, u32) = (800, 480);

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    bars: &[Bar],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let top = bars.iter().map(|b| b.max).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let n = i32::try_from(bars.len()).map_err(|x| x.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| bars.get(i))
                .map(|b| match b.flagged {
                    true => format!("{} (flagged)", b.scenario),
                    false => b.scenario.clone(),
                })
                .unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(e)?;
    let color = |b: &Bar| match b.flagged {
        true => RGBColor(230, 140, 60),
        false => RGBColor(70, 130, 180),
    };
    chart
        .draw_series((0..).zip(bars).map(|(i, b)| {
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.median),
                ],
                color(b).filled(),
            );
            r.set_margin(0, 0, 30, 30);
            r
        }))
        .map_err(e)?;
    chart
        .draw_series((0..).zip(bars).map(|(i, b)| {
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                b.min,
                b.median,
                b.max,
                BLACK.stroke_width(2),
                16,
            )
        }))
        .map_err(e)?;
    root.present().map_err(e)
}

/// Registers the first readable font once per process.
fn font() -> Result<(), PlotError> {
    static FONT: OnceLock<Result<(), PlotError>> = OnceLock::new();
    FONT.get_or_init(|| {
        let env = std::env::var(FONT_ENV).ok();
        let candidates: Vec<&str> = env
            .iter()
            .map(String::as_str)
            .chain(FONTS.iter().copied())
            .collect();
        for path in &candidates {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // plotters keeps a registered font for the process's lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
        Err(PlotError::NoFont {
            looked: candidates.join(", "),
        })
    })
    .clone()
}

/// `rr p99` → `rr-p99`: a file name from a metric's.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Metric, RunMeta, SCHEMA_VERSION, ScenarioResult};

    fn result() -> BenchResult {
        let metric =
            |v: &[f64]| Metric::new("throughput", "Gbit/s", v.to_vec(), vec![], Some(0.25));
        BenchResult {
            schema: SCHEMA_VERSION,
            meta: RunMeta::test_fixture(),
            scenarios: vec![
                ScenarioResult {
                    name: "overlay".into(),
                    metrics: vec![metric(&[8.0, 9.0])],
                    latency: vec![],
                },
                ScenarioResult {
                    name: "vip".into(),
                    metrics: vec![metric(&[4.0, 9.0])],
                    latency: vec![],
                },
            ],
        }
    }

    #[test]
    fn bars_with_error_bars_as_svg_and_png() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        match write_plots(&result(), dir.path()) {
            Ok(files) => {
                let svg = dir.path().join("plot-throughput.svg");
                let png = dir.path().join("plot-throughput.png");
                assert_eq!(files, vec![svg.clone(), png.clone()]);
                assert_eq!(planned(&result()), vec!["plot-throughput".to_string()]);
                let text = std::fs::read_to_string(&svg).expect("the SVG");
                assert!(
                    text.contains("overlay") && text.contains("vip (flagged)"),
                    "{text}"
                );
                assert!(text.contains("<rect"), "no bar in {text}");
                let bytes = std::fs::read(&png).expect("the PNG");
                assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
            }
            // A machine without any font: the error must say what to install.
            Err(e @ PlotError::NoFont { .. }) => {
                assert!(e.to_string().contains("fonts-dejavu-core"), "{e}");
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn latency_cdfs_one_line_per_scenario() {
        let mut r = result();
        for (i, s) in r.scenarios.iter_mut().enumerate() {
            let mut h = crate::hist::Histogram::default();
            (1..=500u64).for_each(|us| h.record(us * 1000 * (i as u64 + 1)));
            s.latency.push(crate::result::Latency {
                name: "rr".into(),
                histogram: h,
            });
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        match write_plots(&r, dir.path()) {
            Ok(files) => {
                let svg = dir.path().join("cdf-rr.svg");
                assert!(files.contains(&svg) && files.contains(&dir.path().join("cdf-rr.png")));
                let stems: Vec<String> = files
                    .iter()
                    .filter_map(|f| f.file_stem()?.to_str().map(str::to_owned))
                    .collect::<Vec<_>>()
                    .chunks(2)
                    .map(|pair| pair[0].clone())
                    .collect();
                assert_eq!(
                    stems,
                    planned(&r),
                    "planned() must name what write_plots writes"
                );
                let text = std::fs::read_to_string(&svg).expect("the SVG");
                assert!(
                    text.contains("overlay (n=500)") && text.contains("vip (n=500)"),
                    "{text}"
                );
                assert!(text.contains("<polyline"), "no line in {text}");
            }
            Err(e @ PlotError::NoFont { .. }) => {
                assert!(e.to_string().contains("fonts-dejavu-core"), "{e}");
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("rr p99"), "rr-p99");
    }
}
