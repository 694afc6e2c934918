//! PNG line charts drawn with plotters' bitmap backend. Text is rendered by
//! ab_glyph from a TrueType file found on the machine (DejaVu Sans or any
//! other .ttf under the usual font folders); with none, no plot is drawn and
//! the report says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker (an injected fault) at x with a short label.
pub struct Mark {
    pub x: f64,
    pub label: String,
}

fn find_font() -> Option<PathBuf> {
    let preferred =
        ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];
    if let Some(p) = preferred.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(p);
    }
    let mut stack: Vec<PathBuf> =
        ["/usr/share/fonts", "/usr/local/share/fonts"].iter().map(PathBuf::from).collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
                return Some(path);
            }
        }
    }
    None
}

/// Registers the font once; Err names why plots cannot be drawn.
pub fn init_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path =
            find_font().ok_or("no TrueType font under /usr/share/fonts (install fonts-dejavu-core)")?;
        let bytes: &'static [u8] =
            Box::leak(std::fs::read(&path).map_err(|e| e.to_string())?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path:?} is not a usable font"))
    })
    .clone()
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else if lo.is_finite() {
        (lo - 1.0, lo + 1.0)
    } else {
        (0.0, 1.0)
    }
}

/// Draws `series` into `path` (1000×500).
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    marks: &[Mark],
) -> Result<(), String> {
    init_font()?;
    let err = |e: &dyn std::fmt::Display| format!("plot {path:?}: {e}");
    let (x0, x1) =
        range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).chain(marks.iter().map(|m| m.x)));
    let (_, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let y1 = y1.max(1e-3) * 1.1;
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    for mark in marks {
        chart
            .draw_series(LineSeries::new([(mark.x, 0.0), (mark.x, y1)], BLACK.mix(0.35)))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                mark.label.clone(),
                (mark.x, y1 * 0.97),
                ("sans-serif", 12),
            )))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
