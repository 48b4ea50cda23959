//! The trials against their axes, for READMEs and papers (TensorBoard's views need the
//! server). `marginals.png`: the sweep's metric against each axis's value, one panel per axis,
//! one point per trial; trials of one configuration (its seeds) joined by a vertical bar from
//! their lowest to their highest value, so a band of seeds reads apart from a difference
//! between values. `parallel.png`: parallel coordinates, every axis and the metric a vertical
//! line, every trial a polyline coloured by its metric (viridis, the best yellow and on top).
//! A numeric axis with more than 5 values is continuous (log scale when its values span a
//! factor of 10), a list or a choice one position per value.

use std::path::Path;

use plotters::prelude::*;

use super::summary::{Row, Study};
use super::ValueScale as Scale;
use crate::error::Result;

pub const MARGINALS_PNG: &str = "marginals.png";
pub const PARALLEL_PNG: &str = "parallel.png";

/// Draws `marginals.png` into `root` from the rows with a metric. Nothing without axes or
/// trials with a metric.
pub fn draw(root: &Path, study: &Study, rows: &[Row]) -> Result<()> {
    let path = root.join(MARGINALS_PNG);
    let draw_err = crate::log::plots::draw_error(&path);
    let scored: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| r.metric(study).map(|m| (r, m)))
        .collect();
    if scored.is_empty() || study.axes.is_empty() {
        return Ok(());
    }
    let (y0, y1) = scored
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, m)| {
            (a.min(*m), b.max(*m))
        });
    let ypad = ((y1 - y0) * 0.06).max(1e-4);
    let cols = study.axes.len().min(2);
    let rows_n = study.axes.len().div_ceil(cols);
    let (w, h) = (560 * cols as u32, 40 + 360 * rows_n as u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let (title, body) = area.split_vertically(40);
        title
            .draw(&Text::new(
                format!(
                    "best {} against each axis: {} trials (bars: a configuration's seeds, lowest to highest)",
                    study.metric.key(),
                    scored.len()
                ),
                (12, 10),
                ("sans-serif", 17).into_font().color(&BLACK),
            ))
            .map_err(|e| draw_err(e.to_string()))?;
        let panels = body.split_evenly((rows_n, cols));
        for (a, (axis, panel)) in study.axes.iter().zip(panels.iter()).enumerate() {
            let value = |r: &Row| {
                r.values
                    .iter()
                    .find(|(k, _)| k == axis)
                    .map(|(_, v)| v.clone())
            };
            let values: Vec<toml::Value> = scored.iter().filter_map(|(r, _)| value(r)).collect();
            let scale = Scale::of(&values.iter().collect::<Vec<_>>());
            let xs: Vec<f64> = values.iter().filter_map(|v| scale.x(v)).collect();
            let (mut x0, mut x1) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                    (a.min(*x), b.max(*x))
                });
            if !x0.is_finite() {
                continue;
            }
            let xpad = match &scale {
                Scale::Categories(_) => 0.5,
                _ => ((x1 - x0) * 0.05).max(1e-9),
            };
            (x0, x1) = (x0 - xpad, x1 + xpad);
            let cats = match &scale {
                Scale::Categories(c) => Some(c.clone()),
                _ => None,
            };
            let label = move |x: &f64| -> String {
                match &cats {
                    Some(c) => {
                        let i = x.round();
                        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < c.len() {
                            let v = &c[i as usize];
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string())
                        } else {
                            String::new()
                        }
                    }
                    None => format!("{x:.3}"),
                }
            };
            let mut chart = ChartBuilder::on(panel)
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, (y0 - ypad)..(y1 + ypad))
                .map_err(|e| draw_err(e.to_string()))?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(scale.describe(axis))
                .y_desc(study.metric.key())
                .x_label_formatter(&label)
                .label_style(("sans-serif", 13));
            if let Scale::Categories(c) = &scale {
                mesh.x_labels(2 * c.len() + 1);
            }
            mesh.draw().map_err(|e| draw_err(e.to_string()))?;
            let color = crate::log::plots::palette(a);
            // Each configuration's seeds: a bar from lowest to highest.
            let mut by_group: std::collections::BTreeMap<&str, (f64, f64, f64)> =
                Default::default();
            for (r, m) in &scored {
                let Some(x) = value(r).and_then(|v| scale.x(&v)) else {
                    continue;
                };
                let e = by_group.entry(r.group.as_str()).or_insert((x, *m, *m));
                e.1 = e.1.min(*m);
                e.2 = e.2.max(*m);
            }
            chart
                .draw_series(
                    by_group
                        .values()
                        .filter(|(_, lo, hi)| hi > lo)
                        .map(|&(x, lo, hi)| {
                            PathElement::new(vec![(x, lo), (x, hi)], color.mix(0.5).stroke_width(3))
                        }),
                )
                .map_err(|e| draw_err(e.to_string()))?;
            chart
                .draw_series(scored.iter().filter_map(|(r, m)| {
                    let x = value(r).and_then(|v| scale.x(&v))?;
                    Some(Circle::new((x, *m), 3, color.filled()))
                }))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        area.present().map_err(|e| draw_err(e.to_string()))?;
    }
    crate::log::plots::write_png(&path, &rgb, w, h)
}

/// Draws `parallel.png` into `root` from the rows with a metric.
pub fn draw_parallel(root: &Path, study: &Study, rows: &[Row]) -> Result<()> {
    let path = root.join(PARALLEL_PNG);
    let draw_err = crate::log::plots::draw_error(&path);
    let mut scored: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| r.metric(study).map(|m| (r, m)))
        .collect();
    if scored.is_empty() || study.axes.is_empty() {
        return Ok(());
    }
    let higher = study.metric == crate::config::Monitor::ValAcc;
    // Worst first, so the best lie on top.
    scored.sort_by(|a, b| {
        let o = a.1.total_cmp(&b.1);
        if higher {
            o
        } else {
            o.reverse()
        }
    });
    let value = |r: &Row, axis: &str| {
        r.values
            .iter()
            .find(|(k, _)| k == axis)
            .map(|(_, v)| v.clone())
    };
    // Per axis: its scale and the range of its x values, mapped to [0, 1].
    let columns: Vec<(Scale, f64, f64)> = study
        .axes
        .iter()
        .map(|axis| {
            let values: Vec<toml::Value> =
                scored.iter().filter_map(|(r, _)| value(r, axis)).collect();
            let scale = Scale::of(&values.iter().collect::<Vec<_>>());
            let xs: Vec<f64> = values.iter().filter_map(|v| scale.x(v)).collect();
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (scale, lo, hi)
        })
        .collect();
    let unit = |x: f64, lo: f64, hi: f64| if hi > lo { (x - lo) / (hi - lo) } else { 0.5 };
    let (m0, m1) = scored
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, m)| {
            (a.min(*m), b.max(*m))
        });
    let n = study.axes.len() + 1;
    let (w, h) = ((220 * n as u32).max(700), 560u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&area)
            .caption(
                format!(
                    "{} trials across the axes, coloured by best {} (yellow: best)",
                    scored.len(),
                    study.metric.key()
                ),
                ("sans-serif", 17),
            )
            .margin(30)
            .build_cartesian_2d(-0.1..(n as f64 - 0.75), -0.08..1.08)
            .map_err(|e| draw_err(e.to_string()))?;
        for i in 0..n {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(i as f64, 0.0), (i as f64, 1.0)],
                    BLACK.stroke_width(1),
                )))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        for (r, m) in &scored {
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for (i, (axis, (scale, lo, hi))) in study.axes.iter().zip(&columns).enumerate() {
                let Some(x) = value(r, axis).and_then(|v| scale.x(&v)) else {
                    continue;
                };
                pts.push((i as f64, unit(x, *lo, *hi)));
            }
            let t = unit(*m, m0, m1);
            let t = if higher { t } else { 1.0 - t };
            pts.push(((n - 1) as f64, unit(*m, m0, m1)));
            let color = crate::log::plots::viridis(t);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    pts,
                    color.stroke_width(2),
                )))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        // Axis names below, the ends (or every category) beside each line.
        let text = |s: String, x: f64, y: f64| {
            Text::new(s, (x, y), ("sans-serif", 13).into_font().color(&BLACK))
        };
        let short = |v: &toml::Value| {
            v.as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())
        };
        for (i, (axis, (scale, lo, hi))) in study.axes.iter().zip(&columns).enumerate() {
            let x = i as f64 + 0.02;
            let mut labels = vec![text(scale.describe(axis), i as f64 - 0.05, -0.03)];
            match scale {
                Scale::Categories(c) => {
                    for (k, v) in c.iter().enumerate() {
                        labels.push(text(short(v), x, unit(k as f64, *lo, *hi) + 0.02));
                    }
                }
                _ => {
                    labels.push(text(format!("{lo:.3}"), x, 0.02));
                    labels.push(text(format!("{hi:.3}"), x, 1.02));
                }
            }
            chart
                .draw_series(labels)
                .map_err(|e| draw_err(e.to_string()))?;
        }
        let last = (n - 1) as f64;
        chart
            .draw_series([
                text(format!("best {}", study.metric.key()), last - 0.05, -0.03),
                text(format!("{m0:.4}"), last + 0.02, 0.02),
                text(format!("{m1:.4}"), last + 0.02, 1.02),
            ])
            .map_err(|e| draw_err(e.to_string()))?;
        area.present().map_err(|e| draw_err(e.to_string()))?;
    }
    crate::log::plots::write_png(&path, &rgb, w, h)
}
