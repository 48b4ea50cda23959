//! Gradient measurements: per-parameter and global L2 norms, and the per-timestep gradient
//! flow ‖∂L/∂h_t‖ (see `RunOpts::probe`: the fused op's backward reports it, the reference
//! path plants zero probes): the curve that shows gradients vanishing or exploding through time.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

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

/// Per-step ‖∂L/∂h_t‖ (gradient flow) after backward; empty when not measured.
pub fn flow(flow: &Option<Flow>, store: &GradStore) -> Result<Vec<f64>> {
    match flow {
        None => Ok(Vec::new()),
        Some(Flow::Probes(probes)) => probes
            .iter()
            .map(|z| match store.get(z.as_tensor()) {
                Some(g) => norm(g),
                None => Ok(0.0),
            })
            .collect(),
        Some(Flow::Sink(sink)) => Ok(sink.lock().map(|v| v.clone()).unwrap_or_default()),
    }
}
