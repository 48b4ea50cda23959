//! Update/weight ratio ‖Δw‖/‖w‖ per parameter on a logged step: how far one optimizer step
//! moves each weight relative to its size (around 1e-3 is the usual healthy range).

use candle_core::Tensor;

use super::l2_norm as norm;
use super::{Instrument, StepLog, StepView};
use crate::error::Result;
use crate::model::classifier::Classifier;

#[derive(Default)]
pub struct UpdateRatio {
    before: Option<Vec<(String, Tensor)>>,
}

impl Instrument for UpdateRatio {
    fn before_update(&mut self, model: &Classifier) -> Result<()> {
        self.before = Some(snapshot(model)?);
        Ok(())
    }

    fn record(&mut self, at: &StepView, log: &mut StepLog) -> Result<()> {
        let Some(before) = self.before.take() else {
            return Ok(());
        };
        log.group(
            &["update_ratio"],
            "update_ratio",
            &update_ratios(at.model, &before)?,
        )
    }
}

/// A copy of every parameter (not sharing storage: the optimizer updates in place), to
/// measure the update against.
fn snapshot(model: &Classifier) -> Result<Vec<(String, Tensor)>> {
    model
        .params
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?)))
        .collect()
}

/// ‖w_now - w_before‖ / ‖w_before‖ per parameter (0 for an all-zero parameter).
fn update_ratios(model: &Classifier, before: &[(String, Tensor)]) -> Result<Vec<(String, f64)>> {
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
