//! A small line-chart model and its rendering with plotters, to SVG and PNG. A figure is a
//! row of panels; a series maps each x to the values of several seeds, drawn as their mean
//! with a mean ± sample-standard-deviation band when there are two or more.

use crate::{FigureError, Result};
use domain::stats::mean_std;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Family name under which the bundled font is registered.
const FONT: &str = "sans-serif";

/// PNG text needs a font file, and a bare machine may have none: DejaVu Sans is bundled
/// (its licence is in assets/).
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes = include_bytes!("../assets/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TrueType file"));
    });
}

#[derive(Clone, Debug)]
pub struct Point {
    pub x: f64,
    /// One value per seed.
    pub values: Vec<f64>,
    /// Drawn with a hollow marker (projection blocks).
    pub hollow: bool,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub dashed: bool,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A dotted horizontal line (e.g. y = 0 for cosines).
    pub reference_y: Option<f64>,
    /// A note after the x axis label (e.g. what hollow markers mean).
    pub note: Option<String>,
    /// Values above this run off the top (a diverging curve would flatten the others).
    pub y_max: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Figure {
    pub panels: Vec<Panel>,
}

/// Qualitative colours (Tableau 10), for architectures, groups and step sizes.
pub fn palette(i: usize) -> RGBColor {
    const COLORS: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b)
}

/// Blue (t = 0) to red (t = 1), for blocks ordered by depth.
pub fn blue_to_red(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(33.0, 214.0), lerp(102.0, 39.0), lerp(172.0, 40.0))
}

/// A tick label: integers as such, very large or small magnitudes in scientific notation,
/// others with as many decimals as ticks `span / 10` apart need to differ.
fn tick(v: f64, span: f64) -> String {
    let a = v.abs();
    if (v - v.round()).abs() < 1e-9 && a < 1e5 {
        format!("{}", v.round() as i64)
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        let decimals = (1.0 - (span / 10.0).log10().floor()).clamp(1.0, 6.0) as usize;
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

const PANEL_WIDTH: u32 = 640;
const HEIGHT: u32 = 480;

/// The most panels side by side: more go on further rows, so that a figure of many panels
/// keeps a shape a page or a screen can show.
const PANELS_PER_ROW: usize = 3;

/// Rows and columns of the figure's panels.
fn grid(figure: &Figure) -> (usize, usize) {
    let n = figure.panels.len().max(1);
    let columns = n.min(PANELS_PER_ROW);
    (n.div_ceil(columns), columns)
}

fn size(figure: &Figure) -> (u32, u32) {
    let (rows, columns) = grid(figure);
    (PANEL_WIDTH * columns as u32, HEIGHT * rows as u32)
}

/// The figure as an SVG document.
pub fn svg(figure: &Figure) -> Result<String> {
    register_font();
    let mut out = String::new();
    draw_all(
        SVGBackend::with_string(&mut out, size(figure)).into_drawing_area(),
        figure,
    )
    .map_err(FigureError::Draw)?;
    Ok(out)
}

/// The figure as a PNG image, drawn into a buffer and encoded by the `image` crate the
/// datasets already use (plotters' own encoder would bring a second, older version of it).
pub fn png(figure: &Figure) -> Result<Vec<u8>> {
    register_font();
    let (width, height) = size(figure);
    let mut rgb = vec![0u8; 3 * width as usize * height as usize];
    draw_all(
        BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area(),
        figure,
    )
    .map_err(FigureError::Draw)?;
    let mut out = std::io::Cursor::new(vec![]);
    image::write_buffer_with_format(
        &mut out,
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(FigureError::Png)?;
    Ok(out.into_inner())
}

/// Writes `dir/name.svg` and `dir/name.png`.
pub fn write(figure: &Figure, dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FigureError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let svg_path = dir.join(format!("{name}.svg"));
    let png_path = dir.join(format!("{name}.png"));
    std::fs::write(&svg_path, svg(figure)?).map_err(io(&svg_path))?;
    std::fs::write(&png_path, png(figure)?).map_err(io(&png_path))?;
    Ok(vec![svg_path, png_path])
}

fn draw_all<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, figure: &Figure) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly(grid(figure));
    for (panel, area) in figure.panels.iter().zip(areas) {
        draw_panel(&area, panel).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// A point as drawn: the mean and standard deviation of its finite values.
#[derive(Clone, Copy)]
struct Drawn {
    x: f64,
    mean: f64,
    sd: f64,
    hollow: bool,
}

/// The points of `series` that have a finite value, as drawn.
fn drawn(series: &Series) -> Vec<Drawn> {
    series
        .points
        .iter()
        .filter_map(|p| {
            let finite: Vec<f64> = p.values.iter().copied().filter(|v| v.is_finite()).collect();
            (!finite.is_empty()).then(|| {
                let (mean, sd) = mean_std(&finite);
                Drawn {
                    x: p.x,
                    mean,
                    sd,
                    hollow: p.hollow,
                }
            })
        })
        .collect()
}

/// The x and y ranges of everything drawn, padded.
fn bounds(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let limit = panel.y_max.unwrap_or(f64::INFINITY);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut cut = false;
    for p in panel.series.iter().flat_map(drawn) {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        if p.mean <= limit {
            y0 = y0.min(p.mean - p.sd);
            y1 = y1.max((p.mean + p.sd).min(limit));
        } else {
            cut = true;
        }
    }
    if cut && y0 > y1 {
        // Every point is above the cut: the chart shows the band just below it.
        (y0, y1) = (limit, limit);
    }
    if let Some(r) = panel.reference_y {
        y0 = y0.min(r);
        y1 = y1.max(r);
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = |lo: f64, hi: f64| {
        let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
        (lo - 0.05 * span, hi + 0.05 * span)
    };
    let (y0, y1) = match cut {
        // The top edge is the cut, where the curves above leave the chart.
        true => (pad(y0, limit).0, limit),
        false => pad(y0, y1),
    };
    (pad(x0, x1), (y0, y1))
}

/// Where a curve runs off the top: said on the chart, so that a line flat along the top
/// edge is not read as values levelling off there.
fn cut_at(panel: &Panel) -> Option<String> {
    let limit = panel.y_max?;
    let above = panel.series.iter().flat_map(drawn).any(|p| p.mean > limit);
    above.then(|| format!("cut at {}", tick(limit, limit)))
}

/// The corner of the plot whose legend box covers the least of the curves (plotters puts a
/// legend where it is told), upper right where several cover nothing. The box's size is
/// estimated from the labels at the legend's font size, as fractions of the plot area.
fn legend_corner(panel: &Panel, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    // The plot area of a panel: its size less the margins, the caption and the label areas.
    const PLOT_WIDTH: f64 = (PANEL_WIDTH - 2 * 12 - 64) as f64;
    const PLOT_HEIGHT: f64 = (HEIGHT - 2 * 12 - 30 - 44) as f64;
    let labels = panel.series.iter().filter(|s| !s.label.is_empty());
    let widest = labels
        .clone()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    let width = (40.0 + 7.0 * widest as f64) / PLOT_WIDTH;
    let height = (10.0 + 18.0 * labels.count() as f64) / PLOT_HEIGHT;
    // Each curve sampled along its segments, in fractions of the plot (0,0 lower left).
    let mut samples = vec![];
    for series in &panel.series {
        let points: Vec<(f64, f64)> = drawn(series)
            .iter()
            .map(|p| ((p.x - x0) / (x1 - x0), ((p.mean - y0) / (y1 - y0)).min(1.0)))
            .collect();
        samples.extend(points.first().copied());
        for pair in points.windows(2) {
            let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
            samples.extend((1..=16).map(|i| {
                let t = f64::from(i) / 16.0;
                (ax + t * (bx - ax), ay + t * (by - ay))
            }));
        }
    }
    let covered = |left: bool, top: bool| {
        let xs = if left { 0.0..=width } else { 1.0 - width..=1.0 };
        let ys = if top {
            1.0 - height..=1.0
        } else {
            0.0..=height
        };
        samples
            .iter()
            .filter(|(x, y)| xs.contains(x) && ys.contains(y))
            .count()
    };
    [
        (SeriesLabelPosition::UpperRight, false, true),
        (SeriesLabelPosition::UpperLeft, true, true),
        (SeriesLabelPosition::LowerRight, false, false),
        (SeriesLabelPosition::LowerLeft, true, false),
    ]
    .into_iter()
    .min_by_key(|&(_, left, top)| covered(left, top))
    .map(|(corner, ..)| corner)
    .expect("four corners")
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let ((x0, x1), (y0, y1)) = bounds(panel);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    // Block indices, steps and epochs are integers: ticks between them stay blank.
    let integral_x = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{}", v.round() as i64)
        } else {
            String::new()
        }
    };
    let notes: Vec<String> = panel.note.iter().cloned().chain(cut_at(panel)).collect();
    let x_desc = match notes.is_empty() {
        true => panel.x_label.clone(),
        false => format!("{}   ({})", panel.x_label, notes.join("; ")),
    };
    chart
        .configure_mesh()
        .x_label_formatter(&integral_x)
        .y_label_formatter(&|v: &f64| tick(*v, y1 - y0))
        .x_desc(x_desc)
        .y_desc(panel.y_label.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if let Some(y) = panel.reference_y {
        chart.draw_series(DashedLineSeries::new(
            [(x0, y), (x1, y)],
            4,
            4,
            BLACK.mix(0.5).stroke_width(1),
        ))?;
    }
    let stats: Vec<Vec<Drawn>> = panel.series.iter().map(drawn).collect();
    // Every band first, so that no band hides another series' line.
    for (s, stats) in panel.series.iter().zip(&stats) {
        if stats.iter().any(|p| p.sd > 0.0) {
            let upper = stats.iter().map(|p| (p.x, p.mean + p.sd));
            let lower = stats.iter().rev().map(|p| (p.x, p.mean - p.sd));
            chart.draw_series(std::iter::once(Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                s.color.mix(0.18).filled(),
            )))?;
        }
    }
    for (s, stats) in panel.series.iter().zip(&stats) {
        let line: Vec<(f64, f64)> = stats.iter().map(|p| (p.x, p.mean)).collect();
        let style = s.color.stroke_width(2);
        let color = s.color;
        let labelled = !s.label.is_empty();
        if s.dashed {
            let drawn = chart.draw_series(DashedLineSeries::new(line, 6, 4, style))?;
            if labelled {
                drawn.label(s.label.as_str()).legend(move |(x, y)| {
                    DashedPathElement::new([(x, y), (x + 20, y)], 5, 3, color.stroke_width(2))
                });
            }
        } else {
            let drawn = chart.draw_series(LineSeries::new(line, style))?;
            if labelled {
                drawn.label(s.label.as_str()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
        if stats.len() <= 60 {
            chart.draw_series(stats.iter().map(|p| {
                if p.hollow {
                    Circle::new((p.x, p.mean), 5, s.color.stroke_width(2))
                } else {
                    Circle::new((p.x, p.mean), 3, s.color.filled())
                }
            }))?;
        }
    }
    if panel.series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(legend_corner(panel, (x0, x1), (y0, y1)))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_naturally() {
        assert_eq!(tick(10.0, 20.0), "10");
        assert_eq!(tick(0.25, 1.0), "0.25");
        assert_eq!(tick(-0.1, 1.0), "-0.1");
        assert_eq!(tick(3e8, 1e9), "3.0e8");
        assert_eq!(tick(0.0004, 0.001), "4.0e-4");
    }

    #[test]
    fn close_ticks_get_the_decimals_that_tell_them_apart() {
        // A narrow range (a run that barely moved): ticks 0.0005 apart.
        assert_eq!(tick(0.1135, 0.005), "0.1135");
        assert_eq!(tick(0.114, 0.005), "0.114");
        assert_eq!(tick(0.1123456, 1.0), "0.11");
    }

    #[test]
    fn png_is_the_drawn_figure_at_its_size() {
        let panel = Panel {
            title: "t".into(),
            series: vec![Series {
                label: "s".into(),
                color: palette(0),
                dashed: false,
                points: (0..4)
                    .map(|i| Point {
                        x: i as f64,
                        values: vec![i as f64, 1.0 + i as f64],
                        hollow: false,
                    })
                    .collect(),
            }],
            ..Panel::default()
        };
        let figure = Figure {
            panels: vec![panel.clone(), panel.clone()],
        };
        let dir = tempfile::tempdir().unwrap();
        let files = write(&figure, dir.path(), "f").unwrap();
        let png = image::open(&files[1]).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (2 * PANEL_WIDTH, HEIGHT));
        let series_colour = palette(0).rgb();
        let drawn = png
            .pixels()
            .filter(|p| (p[0], p[1], p[2]) == series_colour)
            .count();
        assert!(drawn > 100, "{drawn} pixels of the series' colour");
        // Five panels: three on the first row, two on the second, the sixth place blank.
        let five = Figure {
            panels: vec![panel; 5],
        };
        let grid = image::load_from_memory(&super::png(&five).unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(grid.dimensions(), (3 * PANEL_WIDTH, 2 * HEIGHT));
        let inside = |column: u32, row: u32| {
            let (x, y) = (
                column * PANEL_WIDTH + PANEL_WIDTH / 2,
                row * HEIGHT + HEIGHT / 2,
            );
            (0..40).any(|dx| grid.get_pixel(x + dx, y).0 != [255, 255, 255])
        };
        assert!(inside(1, 1) && !inside(2, 1));
    }

    #[test]
    fn the_legend_goes_to_a_corner_the_curves_leave_free() {
        let line = |from: f64, to: f64| Series {
            label: "a label".into(),
            color: palette(0),
            dashed: false,
            points: (0..=10)
                .map(|i| Point {
                    x: f64::from(i),
                    values: vec![from + (to - from) * f64::from(i) / 10.0],
                    hollow: false,
                })
                .collect(),
        };
        let corner = |series: Vec<Series>| {
            let panel = Panel {
                series,
                ..Panel::default()
            };
            let (x, y) = bounds(&panel);
            legend_corner(&panel, x, y)
        };
        // Falling from the upper left to the lower right: the upper right is free.
        let falling = corner(vec![line(1.0, 0.0)]);
        assert!(matches!(falling, SeriesLabelPosition::UpperRight));
        // Rising, with a second curve along the top: only the lower right is free.
        let rising = corner(vec![line(0.0, 1.0), line(1.0, 1.0)]);
        assert!(matches!(rising, SeriesLabelPosition::LowerRight));
    }

    #[test]
    fn values_above_the_cap_do_not_set_the_range() {
        let series = |values: &[f64]| Series {
            label: "s".into(),
            color: palette(0),
            dashed: false,
            points: values
                .iter()
                .enumerate()
                .map(|(i, &v)| Point {
                    x: i as f64,
                    values: vec![v],
                    hollow: false,
                })
                .collect(),
        };
        let panel = Panel {
            series: vec![series(&[1.0, 0.9, 0.8]), series(&[1.0, 5.0, 1e9])],
            y_max: Some(6.0),
            ..Panel::default()
        };
        let (_, (_, y1)) = bounds(&panel);
        assert_eq!(y1, 6.0, "the top edge is the cut");
        assert_eq!(cut_at(&panel).as_deref(), Some("cut at 6"));
        let all_above = Panel {
            series: vec![series(&[7.0, 8.0])],
            ..panel.clone()
        };
        let (_, (y0, y1)) = bounds(&all_above);
        assert!(y0 < y1 && y1 == 6.0, "{y0}..{y1}");
        let below = Panel {
            y_max: Some(1e10),
            ..panel
        };
        assert_eq!(cut_at(&below), None);
    }
}
