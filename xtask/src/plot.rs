//! PNG plots for the eval report, drawn with `plotters` and an embedded DejaVu Sans font (no
//! system fonts needed): loss curves from a run's log lines, measured points against a
//! setting (FID against sampling steps) and 2-D sample scatters.

use anyhow::{anyhow, bail, Context, Result};
use genmodels_contracts::LogLine;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

fn ensure_font() {
    FONT_ONCE.call_once(|| {
        // Only fails on a malformed font file; the bytes are DejaVu Sans, compiled in.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One named curve: (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Colours that stay apart on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {e:?}")
}

/// The numeric curves of a run's log: every named value of its lines (losses, diagnostics,
/// `val_*`), against `step`, in the order they first appear (by name within a line).
pub fn log_series(log: &[LogLine]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for line in log {
        let step = line.step as f64;
        for (k, &y) in &line.values {
            if !y.is_finite() {
                continue;
            }
            match out.iter_mut().find(|s| &s.name == k) {
                Some(s) => s.points.push((step, y)),
                None => out.push(Series {
                    name: k.clone(),
                    points: vec![(step, y)],
                }),
            }
        }
    }
    out
}

/// Moving average over `w` points (the raw log of a GAN is noisy).
fn smooth(p: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    if w <= 1 || p.len() < 2 * w {
        return p.to_vec();
    }
    let mut out = Vec::with_capacity(p.len());
    let mut sum = 0.0;
    for i in 0..p.len() {
        sum += p[i].1;
        if i >= w {
            sum -= p[i - w].1;
        }
        let n = (i + 1).min(w) as f64;
        out.push((p[i].0, sum / n));
    }
    out
}

/// Line plot of `series` (smoothed when long) into a PNG of `w` x `h` pixels.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    w: u32,
    h: u32,
) -> Result<()> {
    draw_lines(
        path,
        &Axes {
            title,
            x_label,
            y_label: None,
            markers: false,
        },
        series,
        (w, h),
    )
}

/// A measured quantity against a setting (FID against sampling steps): every point marked,
/// joined per series, nothing smoothed, both axes named; a PNG of `w` x `h` pixels.
pub fn points_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    w: u32,
    h: u32,
) -> Result<()> {
    draw_lines(
        path,
        &Axes {
            title,
            x_label,
            y_label: Some(y_label),
            markers: true,
        },
        series,
        (w, h),
    )
}

/// What a line chart's frame shows.
struct Axes<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: Option<&'a str>,
    /// Mark every point and never smooth (a few measured points, not a log).
    markers: bool,
}

fn draw_lines(path: &Path, a: &Axes, series: &[Series], (w, h): (u32, u32)) -> Result<()> {
    ensure_font();
    let title = a.title;
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.clone())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if all.is_empty() {
        bail!("nothing to plot for {title}: no finite values");
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if a.markers {
        // room for the markers at both ends
        let xpad = (x1 - x0) * 0.05;
        (x0, x1) = (x0 - xpad, x1 + xpad);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    // a marked chart has few points, often in the upper right: room above them for the legend
    let top = if a.markers {
        pad + (y1 - y0).max(1e-6) * 0.09 * series.len() as f64
    } else {
        pad
    };
    let (y0, y1) = (y0 - pad, y1 + top);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(err("plot background"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(if a.y_label.is_some() { 64 } else { 56 })
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err("plot axes"))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(a.x_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 13))
        .light_line_style(RGBColor(235, 235, 235));
    if let Some(y) = a.y_label {
        mesh.y_desc(y);
    }
    mesh.draw().map_err(err("plot grid"))?;
    for (i, s) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let raw: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if raw.is_empty() {
            continue;
        }
        let pts = if a.markers {
            raw.clone()
        } else {
            smooth(&raw, (raw.len() / 40).max(1))
        };
        let name = if pts.len() == raw.len() && pts == raw {
            s.name.clone()
        } else {
            format!("{} (moving average)", s.name)
        };
        if raw.len() == 1 || a.markers {
            if raw.len() > 1 {
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(err("plot line"))?;
            }
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
                .map_err(err("plot point"))?
                .label(name)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (20, 0)], c.stroke_width(2))
                        + Circle::new((10, 0), 4, c.filled())
                });
        } else {
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err("plot line"))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err("plot legend"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Scatter of 2-D samples (blue) over the mixture's mode centres (red crosses, with a
/// 3-standard-deviation ring: samples inside count as high quality).
pub fn scatter(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
    centers: &[(f64, f64)],
    mode_std: f64,
    lim: f64,
) -> Result<()> {
    ensure_font();
    let root = BitMapBackend::new(path, (520, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err("scatter background"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(-lim..lim, -lim..lim)
        .map_err(err("scatter axes"))?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FONT, 12))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err("scatter grid"))?;
    let blue = RGBColor(31, 119, 180).mix(0.35);
    chart
        .draw_series(
            points
                .iter()
                .filter(|(x, y)| x.abs() <= lim && y.abs() <= lim)
                .map(|p| Circle::new(*p, 2, blue.filled())),
        )
        .map_err(err("scatter points"))?
        .label("samples")
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, blue.filled()));
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(
            centers
                .iter()
                .map(|c| Cross::new(*c, 5, red.stroke_width(2))),
        )
        .map_err(err("scatter centres"))?
        .label("mode centres (3 sd ring)")
        .legend(move |(x, y)| Cross::new((x + 10, y), 5, red.stroke_width(2)));
    let r = 3.0 * mode_std;
    chart
        .draw_series(centers.iter().map(|&(cx, cy)| {
            let ring: Vec<(f64, f64)> = (0..=24)
                .map(|i| {
                    let a = i as f64 * std::f64::consts::TAU / 24.0;
                    (cx + r * a.cos(), cy + r * a.sin())
                })
                .collect();
            PathElement::new(ring, red.stroke_width(1))
        }))
        .map_err(err("scatter rings"))?;
    chart
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err("scatter legend"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_series_keeps_numeric_keys_in_order() {
        let log = "{\"step\":1,\"time_s\":0.1,\"d_loss\":1.0,\"g_loss\":2.0}\n\
                   garbage\n{\"step\":2,\"lr_scale\":1,\"d_loss\":0.5,\"g_loss\":1.5,\"val_loss\":3}\n";
        let s = log_series(&LogLine::parse_log(log));
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["d_loss", "g_loss", "val_loss"]);
        assert_eq!(s[0].points, vec![(1.0, 1.0), (2.0, 0.5)]);
        assert_eq!(s[2].points, vec![(2.0, 3.0)]);
    }

    #[test]
    fn smoothing_is_a_trailing_mean() {
        let p: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, i as f64)).collect();
        let s = smooth(&p, 2);
        assert_eq!(s[0], (0.0, 0.0));
        assert_eq!(s[5], (5.0, 4.5));
    }

    #[test]
    fn charts_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        let series = vec![Series {
            name: "loss".into(),
            points: (0..200)
                .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                .collect(),
        }];
        line_chart(&p, "loss", "step", &series, 480, 300).unwrap();
        let q = dir.path().join("scatter.png");
        scatter(
            &q,
            "grid",
            &[(0.0, 0.1), (1.9, 2.0)],
            &[(0.0, 0.0), (2.0, 2.0)],
            0.05,
            3.0,
        )
        .unwrap();
        for f in [p, q] {
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", f.display());
        }
        assert!(line_chart(&dir.path().join("e.png"), "e", "step", &[], 10, 10).is_err());
    }

    #[test]
    fn a_points_chart_marks_every_point_and_skips_non_finite_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fid.png");
        let series = vec![
            Series {
                name: "ddim".into(),
                points: vec![(10.0, 80.8), (20.0, 73.2), (50.0, 92.9)],
            },
            Series {
                name: "dpm-solver++".into(),
                points: vec![(10.0, 98.6), (20.0, f64::NAN), (50.0, 90.0)],
            },
            Series {
                name: "one point".into(),
                points: vec![(20.0, 60.0)],
            },
        ];
        points_chart(&p, "FID", "sampling steps", "FID", &series, 560, 340).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let nan = [Series {
            name: "x".into(),
            points: vec![(1.0, f64::NAN)],
        }];
        let e = points_chart(&dir.path().join("n.png"), "n", "x", "y", &nan, 100, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no finite values"), "{e}");
    }
}
