//! The gradients training applies: each trained parameter's, collected from the backward
//! pass (the embedding's from its looked-up rows), and their global L2 norm, which clipping
//! and the divergence check read. What is measured from them for the logs is `instruments`'.

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::error::Result;
use crate::model::classifier::{Classifier, Forward};

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
