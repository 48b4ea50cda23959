//! Plots as PNG files (plotters, text in the embedded DejaVu Sans): a sweep's validation
//! curves, one line per trial, one colour per configuration, so seeds of a configuration read
//! as one band and configurations compare at a glance.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{Error, Result};

/// The axes' descriptions.
pub struct Axes<'a> {
    pub x: &'a str,
    pub y: &'a str,
}

/// One line: its configuration's label (legend; one entry per configuration) and points.
pub struct Curve {
    pub group: String,
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The line colour of series `i` (matplotlib's ten, repeating).
pub fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The error for a plot of `path` that plotters could not draw.
pub fn draw_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("drawing the plot: {e}"),
    }
}

fn font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        // Fails only on a font it cannot parse: the embedded one parses.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Draws `curves` into `path` (PNG, written whole or not at all). The legend lists groups in
/// order of first appearance; lines are drawn last to first, so the first curves (a sweep's
/// best configurations) lie on top.
pub fn curves(path: &Path, title: &str, axes: Axes, curves: &[Curve]) -> Result<()> {
    font();
    let draw_err = draw_error(path);
    let mut groups: Vec<&str> = Vec::new();
    for c in curves {
        if !groups.contains(&c.group.as_str()) {
            groups.push(&c.group);
        }
    }
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut x_min, mut x_max) = (f64::INFINITY, 1.0f64);
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts.filter(|(_, y)| y.is_finite()) {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let legend_rows = groups.len().min(24) as u32;
    let (w, h) = (1200u32, 640 + 18 * legend_rows);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let (plot, legend) = root.split_vertically(640);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min.min(0.0)..x_max, (y_min - pad)..(y_max + pad))
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        for c in curves.iter().rev() {
            let g = groups.iter().position(|g| *g == c.group).unwrap_or(0);
            let color = PALETTE[g % PALETTE.len()];
            let points: Vec<(f64, f64)> = c
                .points
                .iter()
                .copied()
                .filter(|(_, y)| y.is_finite())
                .collect();
            // A value that cannot be drawn (NaN, or a zero on a log axis) breaks the line.
            for run in c.points.split(|(_, y)| !y.is_finite()) {
                chart
                    .draw_series(LineSeries::new(run.to_vec(), color.stroke_width(2)))
                    .map_err(|e| draw_err(e.to_string()))?;
            }
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        for (i, g) in groups.iter().take(legend_rows as usize).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let y = 4 + 18 * i as i32;
            legend
                .draw(&Rectangle::new([(70, y + 3), (90, y + 13)], color.filled()))
                .map_err(|e| draw_err(e.to_string()))?;
            legend
                .draw(&Text::new(
                    g.to_string(),
                    (98, y),
                    ("sans-serif", 14).into_font().color(&BLACK),
                ))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let png_bytes = encode_png(&rgb, w, h).map_err(draw_err)?;
    crate::fsutil::write_atomic(path, &png_bytes)
}

/// Horizontal bars, one per (label, value, error) in order from the top, on a 0..1 scale
/// (shares), each with an error whisker of ± error; PNG written whole or not at all.
pub fn bars(path: &Path, title: &str, bars: &[(String, f64, f64)]) -> Result<()> {
    font();
    let draw_err = draw_error(path);
    let n = bars.len().max(1);
    let (w, h) = (1000u32, 120 + 40 * n as u32);
    let x_max = bars
        .iter()
        .map(|(_, v, e)| v + e)
        .fold(0.0f64, f64::max)
        .clamp(0.05, 1.0)
        * 1.05;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let label_width = bars
            .iter()
            .map(|(l, _, _)| l.chars().count() as u32 * 8 + 20)
            .max()
            .unwrap_or(60)
            .min(w / 2);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0.0..x_max, 0.0..n as f64)
            .map_err(|e| draw_err(e.to_string()))?;
        let label = |y: &f64| -> String {
            let i = n as f64 - y - 0.5;
            bars.get(i.round() as usize)
                .filter(|_| (i - i.round()).abs() < 1e-6)
                .map(|(l, _, _)| l.clone())
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(2 * n + 1)
            .y_label_formatter(&label)
            .x_desc("importance (share of the total)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        for (i, (_, v, e)) in bars.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.15), (*v, y + 0.85)],
                    color.filled(),
                )))
                .map_err(|e| draw_err(e.to_string()))?;
            let (lo, hi) = ((v - e).max(0.0), v + e);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(lo, y + 0.5), (hi, y + 0.5)],
                    BLACK.stroke_width(2),
                )))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let png_bytes = encode_png(&rgb, w, h).map_err(draw_err)?;
    crate::fsutil::write_atomic(path, &png_bytes)
}

/// RGB pixels written as a PNG file (whole or not at all).
pub fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let png = encode_png(rgb, w, h).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("encoding the plot: {e}"),
    })?;
    crate::fsutil::write_atomic(path, &png)
}

/// RGB pixels as PNG bytes.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, String> {
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    }
    Ok(png_bytes)
}

/// A run's metrics.jsonl rows (lines that do not parse are skipped: the file is the run's own).
pub fn metrics_rows(metrics: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io(metrics, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect())
}

/// loss.png and accuracy.png in `dir`: train and validation by epoch, from the epoch rows of
/// the run's metrics (`metrics_rows`: a resumed run's whole history). Returns the files.
pub fn epoch_curves(rows: &[serde_json::Value], dir: &Path) -> Result<Vec<PathBuf>> {
    let rows: Vec<&serde_json::Value> = rows.iter().filter(|r| r["split"] == "epoch").collect();
    let mut written = Vec::new();
    for (file, what) in [("loss.png", "loss"), ("accuracy.png", "acc")] {
        let series = |split: &str| Curve {
            group: if split == "train" {
                "train"
            } else {
                "validation"
            }
            .into(),
            points: rows
                .iter()
                .filter_map(|r| {
                    Some((r["epoch"].as_f64()?, r[format!("{split}_{what}")].as_f64()?))
                })
                .collect(),
        };
        let label = if what == "acc" { "accuracy" } else { "loss" };
        curves(
            &dir.join(file),
            &format!("{label} by epoch"),
            Axes {
                x: "epoch",
                y: label,
            },
            &[series("train"), series("val")],
        )?;
        written.push(dir.join(file));
    }
    Ok(written)
}

/// One layer and direction's gradient flow over training: (training step, ‖∂L/∂h_t‖ for each
/// time step t) per logged step; an LSTM's ‖∂L/∂c_t‖ under "<label>/c".
pub struct FlowMap {
    pub label: String,
    pub rows: Vec<(usize, Vec<f64>)>,
}

/// The gradient flow a run logged (its `metrics_rows`), per layer and direction, in label
/// order.
pub fn flow_maps(rows: &[serde_json::Value]) -> Vec<FlowMap> {
    let mut maps: std::collections::BTreeMap<String, Vec<(usize, Vec<f64>)>> = Default::default();
    for row in rows {
        let (Some(step), Some(flow)) = (row["step"].as_u64(), row["grad_flow"].as_object()) else {
            continue;
        };
        for (label, steps) in flow {
            let v: Vec<f64> = steps
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default();
            maps.entry(label.clone())
                .or_default()
                .push((step as usize, v));
        }
    }
    maps.into_iter()
        .map(|(label, rows)| FlowMap { label, rows })
        .collect()
}

/// One gradient-flow heatmap, ready to log and write.
pub struct FlowPng {
    pub label: String,
    /// `grad_flow_<label>.png`, "/" as "_".
    pub file: String,
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Every gradient-flow heatmap of a run's metrics rows.
pub fn flow_pngs(rows: &[serde_json::Value], what: &Path) -> Result<Vec<FlowPng>> {
    flow_maps(rows)
        .into_iter()
        .map(|map| {
            let (png, width, height) = flow_heatmap(&map, what)?;
            let file = format!("grad_flow_{}.png", map.label.replace('/', "_"));
            Ok(FlowPng {
                label: map.label,
                file,
                png,
                width,
                height,
            })
        })
        .collect()
}

/// Redraws a run folder's pictures from its metrics.jsonl (`run-exp plots`): loss.png,
/// accuracy.png and the gradient-flow heatmaps. Returns the files written.
pub fn redraw(dir: &Path) -> Result<Vec<PathBuf>> {
    let rows = metrics_rows(&dir.join(super::METRICS))?;
    let mut written = epoch_curves(&rows, dir)?;
    for f in flow_pngs(&rows, dir)? {
        crate::fsutil::write_atomic(&dir.join(&f.file), &f.png)?;
        written.push(dir.join(f.file));
    }
    Ok(written)
}

/// Colour for t in [0, 1] on viridis (five stops, linear between).
pub fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Rows drawn at most (evenly spaced over training) and time steps (evenly spaced).
const HEATMAP_ROWS: usize = 300;
const HEATMAP_COLS: usize = 256;

/// A flow map as a heatmap, PNG bytes and size: x the time step (a forward direction's rows
/// right-aligned at their last step when batches differ in length), y the training step
/// (first at the top), colour log10 ‖∂L/∂h_t‖ relative to the row's largest on viridis with a
/// colour bar; steps without gradient (padding, truncated-BPTT cuts) grey. `what` names the
/// run in errors.
pub fn flow_heatmap(map: &FlowMap, what: &Path) -> Result<(Vec<u8>, u32, u32)> {
    font();
    let draw_err = |e: String| Error::Checkpoint {
        path: what.to_path_buf(),
        msg: format!("drawing the gradient-flow heatmap: {e}"),
    };
    let pick = |n: usize, most: usize| -> Vec<usize> {
        if n <= most {
            (0..n).collect()
        } else {
            (0..most).map(|i| i * (n - 1) / (most - 1)).collect()
        }
    };
    let rows: Vec<&(usize, Vec<f64>)> = pick(map.rows.len(), HEATMAP_ROWS)
        .into_iter()
        .map(|i| &map.rows[i])
        .collect();
    let t = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(1);
    let cols = pick(t, HEATMAP_COLS);
    // Each row relative to its own largest value: the shape of the flow (how fast it falls
    // with distance), not the loss's overall scale, which shrinks as a model learns; the
    // absolute values are the by_timestep curves and the scalars.
    let row_max = |r: &[f64]| -> f64 {
        r.iter()
            .copied()
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold(0.0, f64::max)
    };
    let rel = |v: f64, top: f64| -> Option<f64> {
        (v > 0.0 && v.is_finite() && top > 0.0).then(|| (v / top).log10())
    };
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for r in &rows {
        let top = row_max(&r.1);
        for l in r.1.iter().filter_map(|&v| rel(v, top)) {
            lo = lo.min(l);
            hi = hi.max(l);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let (first, last) = (
        rows.first().map_or(0, |r| r.0),
        rows.last().map_or(1, |r| r.0),
    );
    let (w, h) = (960u32, 640u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let (plot, bar) = root.split_horizontally(840);
        let n = rows.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                match map.label.strip_suffix("/c") {
                    Some(l) => {
                        format!("gradient flow {l}, cell state: log10 ||dL/dc_t|| / row max")
                    }
                    None => format!("gradient flow {}: log10 ||dL/dh_t|| / row max", map.label),
                },
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..cols.len() as f64, n..0.0)
            .map_err(|e| draw_err(e.to_string()))?;
        let step_at = |y: f64| -> usize {
            let i = (y.max(0.0) as usize).min(rows.len().saturating_sub(1));
            rows.get(i).map_or(0, |r| r.0)
        };
        // A forward direction's rows end at their readout: right-align rows of different
        // lengths (batches of different longest sequences) and count steps back from it.
        let varied = rows.iter().any(|r| r.1.len() != t);
        let right = varied && !map.label.contains("_reverse");
        let col_at = |x: f64| cols.get(x.max(0.0) as usize).copied().unwrap_or(t);
        let tick = |x: f64| -> String {
            if right {
                format!("{}", col_at(x) as i64 - (t as i64 - 1))
            } else {
                col_at(x).to_string()
            }
        };
        let value = |r: &[f64], c: usize| -> f64 {
            if right {
                (c + r.len())
                    .checked_sub(t)
                    .and_then(|i| r.get(i))
                    .copied()
                    .unwrap_or(0.0)
            } else {
                r.get(c).copied().unwrap_or(0.0)
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(if right {
                "time step, counted back from the last (t - T)"
            } else {
                "time step t"
            })
            .y_desc(format!("training step ({first}..{last})"))
            .x_label_formatter(&|x| tick(*x))
            .y_label_formatter(&|y| step_at(*y).to_string())
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        let cells = rows.iter().enumerate().flat_map(|(i, r)| {
            let top = row_max(&r.1);
            cols.iter().enumerate().map(move |(j, &c)| {
                let color = match rel(value(&r.1, c), top) {
                    Some(l) => viridis((l - lo) / (hi - lo)),
                    None => RGBColor(200, 200, 200),
                };
                Rectangle::new(
                    [(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)],
                    color.filled(),
                )
            })
        });
        chart
            .draw_series(cells)
            .map_err(|e| draw_err(e.to_string()))?;
        // The colour bar: hi at the top, lo at the bottom.
        let (top, bottom) = (40i32, h as i32 - 60);
        for y in top..bottom {
            let f = 1.0 - (y - top) as f64 / (bottom - top) as f64;
            bar.draw(&Rectangle::new([(10, y), (34, y + 1)], viridis(f).filled()))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        for (y, v) in [(top, hi), (bottom - 14, lo)] {
            bar.draw(&Text::new(
                format!("{v:.1}"),
                (40, y),
                ("sans-serif", 13).into_font().color(&BLACK),
            ))
            .map_err(|e| draw_err(e.to_string()))?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    Ok((encode_png(&rgb, w, h).map_err(draw_err)?, w, h))
}

/// The confusion matrix as a PNG: one square per (true row, predicted column) shaded by the
/// row-normalised count (white 0 -> dark blue 1, so a row reads as that class's recall
/// spread), the count written in each non-empty square, class names on both axes (the
/// predicted ones turned upright), sized so 101 classes stay legible (16-pixel squares).
pub fn confusion_png(confusion: &[Vec<usize>], classes: &[String]) -> Result<(Vec<u8>, u32, u32)> {
    font();
    let draw_err = |e: String| Error::Checkpoint {
        path: PathBuf::from("confusion_matrix"),
        msg: format!("drawing the confusion matrix: {e}"),
    };
    let k = confusion.len().max(1) as u32;
    let cell = (480 / k).clamp(16, 48);
    let text = (cell as f64 * 0.45).clamp(8.0, 16.0);
    let name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    // Room for the longest name at the label size, and an axis title.
    let longest = (0..k as usize)
        .map(|i| name(i).chars().count())
        .max()
        .unwrap_or(1);
    let label = text.max(10.0);
    let margin = ((longest as f64 * label * 0.6) as u32 + 8).min(320) + (label as u32 + 8);
    let (w, h) = (margin + cell * k + 8, margin + cell * k + 8);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let m = margin as i32;
        let font = |size: f64| ("sans-serif", size).into_font();
        let title = font(label).color(&BLACK);
        root.draw(&Text::new("predicted", (m, 2), title.clone()))
            .map_err(|e| draw_err(e.to_string()))?;
        root.draw(&Text::new(
            "true",
            (2, m + 40),
            title.transform(FontTransform::Rotate270),
        ))
        .map_err(|e| draw_err(e.to_string()))?;
        for i in 0..k as usize {
            let at = m + (i as u32 * cell) as i32 + (cell as i32 - label as i32) / 2;
            // Row names right-aligned against the grid; column names upright, bottom-aligned.
            let row = font(label)
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Top,
                ));
            root.draw(&Text::new(name(i), (m - 4, at), row))
                .map_err(|e| draw_err(e.to_string()))?;
            let col = font(label)
                .color(&BLACK)
                .transform(FontTransform::Rotate270)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Top,
                ));
            root.draw(&Text::new(name(i), (at, m - 4), col))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        for (i, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (j, &v) in row.iter().enumerate() {
                let f = if total == 0 {
                    0.0
                } else {
                    v as f64 / total as f64
                };
                let shade = |from: f64, to: f64| (from + (to - from) * f).round() as u8;
                let color = RGBColor(shade(255.0, 8.0), shade(255.0, 48.0), shade(255.0, 107.0));
                let (x, y) = (m + (j as u32 * cell) as i32, m + (i as u32 * cell) as i32);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32 - 1, y + cell as i32 - 1)],
                    color.filled(),
                ))
                .map_err(|e| draw_err(e.to_string()))?;
                if v > 0 {
                    let ink = if f > 0.5 { WHITE } else { BLACK };
                    let centre =
                        font(text)
                            .color(&ink)
                            .pos(plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Center,
                            ));
                    root.draw(&Text::new(
                        v.to_string(),
                        (x + cell as i32 / 2, y + cell as i32 / 2),
                        centre,
                    ))
                    .map_err(|e| draw_err(e.to_string()))?;
                }
            }
        }
        // The grid's outline.
        let end = m + (k * cell) as i32;
        root.draw(&Rectangle::new(
            [(m - 1, m - 1), (end, end)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| draw_err(e.to_string()))?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let png = encode_png(&rgb, w, h).map_err(draw_err)?;
    Ok((png, w, h))
}

#[cfg(test)]
mod confusion_tests {
    use super::*;

    fn decode(png: &[u8]) -> Vec<u8> {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        buf
    }

    /// Squares shaded by the row share, class names in the margins, counts in the squares;
    /// 101 classes at 16 pixels a square.
    #[test]
    fn the_confusion_image_names_classes_and_counts() {
        let classes: Vec<String> = vec!["walk".into(), "run".into()];
        let (png, w, h) = confusion_png(&[vec![5, 0], vec![1, 4]], &classes).unwrap();
        std::fs::write(std::env::temp_dir().join("rnnlab-confusion-2.png"), &png).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let px = decode(&png);
        let at = |x: u32, y: u32| &px[((y * w + x) * 3) as usize..][..3];
        // The dark top-left square (100%) starts where the margins end.
        let dark: Vec<u32> = (0..w * h)
            .filter(|i| px[(*i * 3) as usize..][..3] == [8, 48, 107])
            .collect();
        assert!(dark.len() > 48 * 48 / 2, "the 100% square is missing");
        let (m, top) = (dark.iter().map(|i| i % w).min().unwrap(), dark[0] / w);
        assert!(m > 20 && top > 20, "no margins for the names");
        // Names: ink left of the first row and above the first column.
        let ink = |xs: std::ops::Range<u32>, ys: std::ops::Range<u32>| {
            xs.flat_map(|x| ys.clone().map(move |y| (x, y)))
                .filter(|&(x, y)| at(x, y)[0] < 128)
                .count()
        };
        assert!(ink(m / 2..m - 2, top..top + 48) > 20, "no row name");
        assert!(ink(m..m + 48, top / 3..top - 2) > 20, "no column name");
        // The count 5 in white on the dark square.
        assert!(ink(m..m + 48, top..top + 48) < 48 * 48, "no count");
        let white = (m..m + 48)
            .flat_map(|x| (top..top + 48).map(move |y| (x, y)))
            .filter(|&(x, y)| at(x, y)[0] > 200)
            .count();
        assert!(white > 10, "no count drawn in the square");
        let many: Vec<String> = (0..101).map(|i| format!("Class{i:03}")).collect();
        let mut big = vec![vec![0usize; 101]; 101];
        for (i, row) in big.iter_mut().enumerate() {
            row[i] = 7;
            row[(i + 1) % 101] = 2;
        }
        let (png, w, h) = confusion_png(&big, &many).unwrap();
        assert!(w >= 101 * 16 && h >= 101 * 16, "{w}x{h}");
        std::fs::write(std::env::temp_dir().join("rnnlab-confusion-101.png"), &png).unwrap();
        let (png, ..) = confusion_png(&[vec![5, 0], vec![1, 4]], &classes).unwrap();
        std::fs::write(std::env::temp_dir().join("rnnlab-confusion-2.png"), &png).unwrap();
    }
}
