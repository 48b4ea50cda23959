//! Accuracy against cost: the configurations no other beats on both the sweep's metric and a
//! cost — training seconds or parameters, each a mean over the configuration's completed
//! seeds — (`run-exp summarize --pareto [time|parameters]`), as a table and `pareto.png`
//! (every configuration a point, the frontier joined).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::results::Results;
use super::summary::{groups, Study};
use crate::config::Monitor;
use crate::error::Result;

pub const PARETO_PNG: &str = "pareto.png";

/// What a configuration costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cost {
    /// Training seconds (elapsed_s).
    Time,
    /// Trainable parameters.
    Parameters,
}

impl Cost {
    fn label(self) -> &'static str {
        match self {
            Cost::Time => "train seconds (mean over seeds)",
            Cost::Parameters => "parameters",
        }
    }
}

/// One configuration: its name, mean metric, mean cost, and whether it is on the frontier.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub group: String,
    pub metric: f64,
    pub cost: f64,
    pub frontier: bool,
}

/// Marks the points no other point beats: at most the cost with a metric at least as good
/// (`higher`: larger is better), one of the two strictly.
pub fn frontier(points: &mut [Point], higher: bool) {
    let better = |a: f64, b: f64| if higher { a > b } else { a < b };
    let at_least = |a: f64, b: f64| a == b || better(a, b);
    for i in 0..points.len() {
        let p = &points[i];
        let beaten = points.iter().enumerate().any(|(j, q)| {
            j != i
                && q.cost <= p.cost
                && at_least(q.metric, p.metric)
                && (q.cost < p.cost || better(q.metric, p.metric))
        });
        points[i].frontier = !beaten;
    }
}

/// The configurations with a metric and the cost, frontier marked, cheapest first.
pub fn points(results: &Results, cost: Cost) -> Vec<Point> {
    let (study, rows) = (results.study(), results.rows());
    let mut points: Vec<Point> = groups(study, rows)
        .iter()
        .filter_map(|g| {
            let metric = g.metric_mean(study)?;
            let cost = match cost {
                Cost::Time => g.stats(|r| r.elapsed_s).0?,
                Cost::Parameters => g.stats(|r| r.parameters.map(|p| p as f64)).0?,
            };
            Some(Point {
                group: if g.name.is_empty() {
                    "base config".into()
                } else {
                    g.name.clone()
                },
                metric,
                cost,
                frontier: false,
            })
        })
        .collect();
    frontier(&mut points, study.metric == Monitor::ValAcc);
    points.sort_by(|a, b| a.cost.total_cmp(&b.cost));
    points
}

/// `pareto.png` in the sweep folder: every configuration, the frontier in colour and joined.
pub fn draw(root: &Path, study: &Study, points: &[Point], cost: Cost) -> Result<()> {
    let path = root.join(PARETO_PNG);
    let draw_err = crate::log::plots::draw_error(&path);
    let (w, h) = (1000u32, 640u32);
    let fold = |f: fn(f64, f64) -> f64, init: f64, get: fn(&Point) -> f64| {
        points.iter().map(get).fold(init, f)
    };
    let (x0, x1) = (
        fold(f64::min, f64::INFINITY, |p| p.cost),
        fold(f64::max, 0.0, |p| p.cost),
    );
    let (y0, y1) = (
        fold(f64::min, f64::INFINITY, |p| p.metric),
        fold(f64::max, f64::NEG_INFINITY, |p| p.metric),
    );
    if points.is_empty() {
        return Ok(());
    }
    let (xpad, ypad) = (((x1 - x0) * 0.05).max(1e-9), ((y1 - y0) * 0.08).max(1e-4));
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root_area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root_area)
            .caption(
                format!(
                    "{} against {}: {} configurations, {} on the frontier",
                    study.metric.key(),
                    cost.label(),
                    points.len(),
                    points.iter().filter(|p| p.frontier).count()
                ),
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((x0 - xpad)..(x1 + xpad), (y0 - ypad)..(y1 + ypad))
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(cost.label())
            .y_desc(format!("best {} (mean over seeds)", study.metric.key()))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| !p.frontier)
                    .map(|p| Circle::new((p.cost, p.metric), 4, grey.filled())),
            )
            .map_err(|e| draw_err(e.to_string()))?;
        let front: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.frontier)
            .map(|p| (p.cost, p.metric))
            .collect();
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(LineSeries::new(front.clone(), blue.stroke_width(2)))
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .draw_series(front.iter().map(|&p| Circle::new(p, 6, blue.filled())))
            .map_err(|e| draw_err(e.to_string()))?;
        for p in points.iter().filter(|p| p.frontier) {
            // Labels of the right half end at their point, so none runs off the picture.
            let h = if p.cost > (x0 + x1) / 2.0 {
                HPos::Right
            } else {
                HPos::Left
            };
            let style = ("sans-serif", 12)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(h, VPos::Top));
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" {} ", p.group),
                    (p.cost, p.metric),
                    style,
                )))
                .map_err(|e| draw_err(e.to_string()))?;
        }
        root_area.present().map_err(|e| draw_err(e.to_string()))?;
    }
    crate::log::plots::write_png(&path, &rgb, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(metric: f64, cost: f64) -> Point {
        Point {
            group: format!("{metric}@{cost}"),
            metric,
            cost,
            frontier: false,
        }
    }

    #[test]
    fn the_frontier_is_what_nothing_beats_on_both() {
        let mut pts = vec![
            p(0.9, 10.0),
            p(0.8, 5.0),
            p(0.85, 20.0),
            p(0.9, 12.0),
            p(0.7, 5.0),
        ];
        frontier(&mut pts, true);
        let on: Vec<bool> = pts.iter().map(|p| p.frontier).collect();
        // 0.85 @ 20 is beaten by 0.9 @ 10; 0.9 @ 12 by 0.9 @ 10; 0.7 @ 5 by 0.8 @ 5.
        assert_eq!(on, [true, true, false, false, false]);
        // A loss: lower is better.
        let mut pts = vec![p(0.3, 10.0), p(0.2, 20.0), p(0.4, 15.0)];
        frontier(&mut pts, false);
        let on: Vec<bool> = pts.iter().map(|p| p.frontier).collect();
        assert_eq!(on, [true, true, false]);
    }
}
