//! Gradient measurements: per-parameter and global L2 norms, and the per-timestep gradient
//! flow ‖∂L/∂h_t‖ (see `RunOpts::probe`: the fused op's backward reports it, the reference
//! path plants zero probes): the curve that shows gradients vanishing or exploding through time.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::model::classifier::{Classifier, Forward};
use crate::model::stack::Flow;

/// Gradients by parameter name, in the parameters' order.
pub type Grads = Vec<(String, Tensor)>;

/// Collects the gradient of each trained parameter (zeros for one the loss does not reach),
/// the embedding's from the looked-up rows (`Classifier::embedding_grad`); a frozen embedding
/// has none, so neither the optimizer nor clipping sees it (PyTorch's requires_grad=False).
pub fn collect(model: &Classifier, fwd: &Forward, store: &GradStore) -> Result<Grads> {
    let mut emb = model.embedding_grad(fwd, store)?;
    model
        .params
        .iter()
        .filter(|(name, _)| !(model.frozen_embedding && name.as_str() == "emb.weight"))
        .map(|(name, var)| {
            let looked_up = if name == "emb.weight" {
                emb.take()
            } else {
                None
            };
            let g = match (looked_up, store.get(var.as_tensor())) {
                (Some(g), _) => g,
                (None, Some(g)) => g.clone(),
                (None, None) => var.as_tensor().zeros_like()?,
            };
            Ok((name.clone(), g))
        })
        .collect()
}

/// Global L2 norm over all gradients (f32 sums per tensor, combined in f64).
pub fn global_norm(grads: &Grads) -> Result<f64> {
    let mut total = 0f64;
    for (_, g) in grads {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// A variable's gradient norm, for `grad_norm/<name>`.
pub fn norm(t: &Tensor) -> Result<f64> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64)
}

/// Per-step ‖∂L/∂h_t‖ (gradient flow) of each layer and direction after backward, by
/// position in the sequence (a forward direction's rows right-aligned at their last valid
/// step, see `FlowSteps`), under the stack's labels, each LSTM's ‖∂L/∂c_t‖ after it as
/// "<label>/c"; empty when not measured.
pub fn flow(flow: &[(String, Flow)], store: &GradStore) -> Result<Vec<(String, Vec<f64>)>> {
    // Per row and step, summed into the row's aligned position (see `Flow::Probes`).
    let norms = |probes: &[Var], shift: &[usize]| -> Result<Vec<f64>> {
        let mut sums = vec![0f64; probes.len()];
        for (t, z) in probes.iter().enumerate() {
            let Some(g) = store.get(z.as_tensor()) else {
                continue;
            };
            let rows = g
                .to_dtype(candle_core::DType::F32)?
                .sqr()?
                .sum(1)?
                .to_vec1::<f32>()?;
            for (row, v) in rows.into_iter().enumerate() {
                if let Some(s) = sums.get_mut(t + shift[row]) {
                    *s += v as f64;
                }
            }
        }
        Ok(sums.into_iter().map(f64::sqrt).collect())
    };
    let mut out = Vec::new();
    for (label, f) in flow {
        let (h, c) = match f {
            Flow::Probes { h, c, shift } => (norms(h, shift)?, norms(c, shift)?),
            Flow::Sink(sink) => {
                let steps = sink.lock().map(|v| v.clone()).unwrap_or_default();
                (steps.h, steps.c)
            }
        };
        out.push((label.clone(), h));
        if !c.is_empty() {
            out.push((format!("{label}/c"), c));
        }
    }
    Ok(out)
}

/// The largest singular value of a matrix (`rows` x `cols`, row-major): power iteration on
/// W^T W from a fixed start, to a relative change below 1e-6 or 200 iterations.
pub fn sigma_max(w: &[f32], rows: usize, cols: usize) -> f64 {
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    // Start off every axis and symmetry: 1 + i/cols.
    let mut v: Vec<f64> = (0..cols).map(|i| 1.0 + i as f64 / cols as f64).collect();
    let mut sigma = 0.0;
    for _ in 0..200 {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        let wv: Vec<f64> = w
            .chunks(cols)
            .map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum())
            .collect();
        let next = wv.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut u = vec![0f64; cols];
        for (row, s) in w.chunks(cols).zip(&wv) {
            u.iter_mut().zip(row).for_each(|(a, r)| *a += r * s);
        }
        v = u;
        if (next - sigma).abs() <= 1e-6 * next {
            return next;
        }
        sigma = next;
    }
    sigma
}

/// σ_max of every recurrent weight matrix (`*weight_hh*`), by parameter name.
pub fn spectrum(model: &Classifier) -> Result<Vec<(String, f64)>> {
    model
        .params
        .iter()
        .filter(|(name, _)| name.contains("weight_hh"))
        .map(|(name, var)| {
            let (r, c) = var.as_tensor().dims2()?;
            let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            Ok((name.clone(), sigma_max(&w, r, c)))
        })
        .collect()
}

/// A copy of every parameter (not sharing storage: the optimizer updates in place), to
/// measure the update against.
pub fn snapshot(model: &Classifier) -> Result<Vec<(String, Tensor)>> {
    model
        .params
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?)))
        .collect()
}

/// ‖w_now - w_before‖ / ‖w_before‖ per parameter (0 for an all-zero parameter).
pub fn update_ratios(
    model: &Classifier,
    before: &[(String, Tensor)],
) -> Result<Vec<(String, f64)>> {
    before
        .iter()
        .filter_map(|(name, old)| model.params.get(name).map(|v| (name, old, v)))
        .map(|(name, old, var)| {
            let step = norm(&(var.as_tensor() - old)?)?;
            let size = norm(old)?;
            Ok((name.clone(), if size > 0.0 { step / size } else { 0.0 }))
        })
        .collect()
}

/// The scalars logged for one layer and direction's flow: its two ends, and with
/// `flow_shape` far_over_near and log_slope.
pub fn flow_scalars(label: &str, steps: &[f64]) -> Vec<(&'static str, f64)> {
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
pub fn flow_shape(steps: &[f64], reverse: bool) -> Option<(f64, f64)> {
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

    /// Against closed forms: [[1, 2], [0, 1]] has largest singular value 1 + sqrt(2); a
    /// diagonal matrix its largest magnitude; [[3, 0], [0, 4], [0, 0]] 4.
    #[test]
    fn sigma_max_matches_closed_forms() {
        let s = sigma_max(&[1.0, 2.0, 0.0, 1.0], 2, 2);
        assert!((s - (1.0 + 2f64.sqrt())).abs() < 1e-5, "{s}");
        let s = sigma_max(&[0.5, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 2.0], 3, 3);
        assert!((s - 3.0).abs() < 1e-5, "{s}");
        let s = sigma_max(&[3.0, 0.0, 0.0, 4.0, 0.0, 0.0], 3, 2);
        assert!((s - 4.0).abs() < 1e-5, "{s}");
        assert_eq!(sigma_max(&[0.0; 4], 2, 2), 0.0);
    }
}
