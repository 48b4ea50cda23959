//! Plots as PNG files (plotters, text in the embedded DejaVu Sans): a sweep's validation
//! curves, one line per trial, one colour per configuration, so seeds of a configuration read
//! as one band and configurations compare at a glance.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

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

fn font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        // Fails only on a font it cannot parse: the embedded one parses.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Draws `curves` (x: epoch, y: `y_label`) into `path` (PNG, written whole or not at all).
pub fn curves(path: &Path, title: &str, y_label: &str, curves: &[Curve]) -> Result<()> {
    font();
    let draw_err = |e: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("drawing the plot: {e}"),
    };
    let mut groups: Vec<&str> = Vec::new();
    for c in curves {
        if !groups.contains(&c.group.as_str()) {
            groups.push(&c.group);
        }
    }
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts.filter(|(_, y)| y.is_finite()) {
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
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        for c in curves {
            let g = groups.iter().position(|g| *g == c.group).unwrap_or(0);
            let color = PALETTE[g % PALETTE.len()];
            let points: Vec<(f64, f64)> = c
                .points
                .iter()
                .copied()
                .filter(|(_, y)| y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| draw_err(e.to_string()))?;
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
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| draw_err(e.to_string()))?;
        writer
            .write_image_data(&rgb)
            .map_err(|e| draw_err(e.to_string()))?;
    }
    crate::fsutil::write_atomic(path, &png_bytes)
}
