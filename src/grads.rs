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
