//! Gradient flow through time: ‖∂L/∂h_t‖ (and an LSTM's ‖∂L/∂c_t‖) for every time step of
//! every layer and direction, from the fused op's backward or the reference's probes
//! (`by_timestep`), as a per-step curve, its ends and shape (far over near, log slope), and at
//! each epoch's end a heatmap of training step x time step (TensorBoard image and PNG).

use candle_core::backprop::GradStore;
use candle_core::Var;

use super::{EpochView, Instrument, StepLog, StepView};
use crate::error::Result;
use crate::log::plots;
use crate::model::stack::Flow;

pub struct GradFlow;

impl Instrument for GradFlow {
    fn needs_probe(&self) -> bool {
        true
    }

    fn record(&mut self, at: &StepView, log: &mut StepLog) -> Result<()> {
        for (label, steps) in by_timestep(&at.fwd.flow, at.store)? {
            log.curve(
                &["grad_flow", &label],
                &format!("grad_flow/{label}/by_timestep"),
                &steps,
            )?;
            // The ends and shape go to TensorBoard only: the row keeps the whole curve.
            for (name, v) in flow_scalars(&label, &steps) {
                log.tb_scalar(&format!("grad_flow/{label}/{name}"), v)?;
            }
        }
        Ok(())
    }

    fn epoch_end(&mut self, at: &EpochView, log: &mut StepLog) -> Result<()> {
        for f in plots::flow_pngs(log.history(), at.dir)? {
            let tag = format!("grad_flow/{}/heatmap", f.label);
            log.image(&tag, &f.png, f.width, f.height)?;
            crate::fsutil::write_atomic(&at.dir.join(&f.file), &f.png)?;
        }
        Ok(())
    }
}

/// Per-step ‖∂L/∂h_t‖ (gradient flow) of each layer and direction after backward, by
/// position in the sequence (a forward direction's rows right-aligned at their last valid
/// step, see `FlowSteps`), under the stack's labels, each LSTM's ‖∂L/∂c_t‖ after it as
/// "<label>/c"; empty when not measured.
pub fn by_timestep(flow: &[(String, Flow)], store: &GradStore) -> Result<Vec<(String, Vec<f64>)>> {
    // Per row and step, summed into the row's aligned position (see `Flow::Probes`).
    let norms = |probes: &[Var], shift: &[usize]| -> Result<Vec<f64>> {
        let mut sums = vec![0f64; probes.len()];
        for (t, z) in probes.iter().enumerate() {
            let Some(g) = store.get(z.as_tensor()) else {
                continue;
            };
            // In f64: a vanishing gradient's squares would underflow f32.
            let rows = g
                .to_dtype(candle_core::DType::F64)?
                .sqr()?
                .sum(1)?
                .to_vec1::<f64>()?;
            for (row, v) in rows.into_iter().enumerate() {
                if let Some(s) = sums.get_mut(t + shift[row]) {
                    *s += v;
                }
            }
        }
        Ok(sums.into_iter().map(f64::sqrt).collect())
    };
    let mut out = Vec::new();
    for (label, f) in flow {
        let (h, c) = match f {
            Flow::Probes { h, c, shift } => (norms(h, shift)?, norms(c, shift)?),
            Flow::Sink(sink, before) => {
                let steps = sink.lock().map(|v| v.clone()).unwrap_or_default();
                let pad = |v: Vec<f64>| -> Vec<f64> {
                    if v.is_empty() {
                        return v;
                    }
                    std::iter::repeat_n(0.0, *before).chain(v).collect()
                };
                (pad(steps.h), pad(steps.c))
            }
        };
        out.push((label.clone(), h));
        if !c.is_empty() {
            out.push((format!("{label}/c"), c));
        }
    }
    Ok(out)
}

/// The scalars logged for one layer and direction's flow: its two ends, and with
/// `flow_shape` far_over_near and log_slope.
fn flow_scalars(label: &str, steps: &[f64]) -> Vec<(&'static str, f64)> {
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        return Vec::new();
    };
    let mut v = vec![("first_step", *first), ("last_step", *last)];
    if let Some((ratio, slope)) = flow_shape(steps, label.contains("_reverse")) {
        v.push(("far_over_near", ratio));
        v.push(("log_slope", slope));
    }
    v
}

/// How the gradient changes with distance from the readout, for one direction's flow: (far
/// over near: ‖∂L/∂h‖ at the step farthest from the loss over the nearest; the least-squares
/// slope of ln ‖∂L/∂h‖ per step of distance, negative when gradients vanish, positive when
/// they explode). `reverse`: the backward direction, whose readout sits at step 0. Steps with
/// no gradient (padding, truncated-BPTT cuts) are left out; None without two such steps.
fn flow_shape(steps: &[f64], reverse: bool) -> Option<(f64, f64)> {
    let t = steps.len();
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .enumerate()
        .filter(|(_, g)| **g > 0.0 && g.is_finite())
        .map(|(i, g)| {
            let distance = if reverse { i } else { t - 1 - i };
            (distance as f64, g.ln())
        })
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let far = pts.iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
    let near = pts.iter().min_by(|a, b| a.0.total_cmp(&b.0))?;
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(((far.1 - near.1).exp(), sxy / sxx.max(1e-300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow that doubles every step towards the readout (forward direction: readout at the
    /// last step): far over near 1/8, slope -ln 2 per step of distance; read as a backward
    /// direction (readout at step 0) the same numbers explode. Zero steps are left out.
    #[test]
    fn flow_shape_on_hand_worked_values() {
        let steps = [1.0, 2.0, 4.0, 8.0];
        let (r, s) = flow_shape(&steps, false).unwrap();
        assert!(
            (r - 0.125).abs() < 1e-12 && (s + 2f64.ln()).abs() < 1e-12,
            "{r} {s}"
        );
        let (r, s) = flow_shape(&steps, true).unwrap();
        assert!(
            (r - 8.0).abs() < 1e-12 && (s - 2f64.ln()).abs() < 1e-12,
            "{r} {s}"
        );
        let (r, _) = flow_shape(&[0.0, 2.0, 4.0, 0.0], false).unwrap();
        assert!((r - 0.5).abs() < 1e-12);
        assert!(flow_shape(&[0.0, 3.0], false).is_none());
        let names: Vec<&str> = flow_scalars("l0", &steps).iter().map(|p| p.0).collect();
        assert_eq!(
            names,
            ["first_step", "last_step", "far_over_near", "log_slope"]
        );
    }
}
