//! Histograms of every parameter (`weights/<name>`) and of its gradient at the epoch's last
//! step (`grads/<name>`), every `log.histograms_every_epochs` epochs: TensorBoard's
//! distributions of how the weights spread and drift.

use super::{EpochView, Instrument, StepLog};
use crate::error::Result;

pub struct Histograms {
    /// Epochs between two sets of histograms (at least 1).
    pub every: usize,
}

impl Instrument for Histograms {
    fn epoch_end(&mut self, at: &EpochView, log: &mut StepLog) -> Result<()> {
        if !at.epoch.is_multiple_of(self.every) {
            return Ok(());
        }
        for (name, var) in at.model.params.iter() {
            let w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            log.histogram(&format!("weights/{name}"), &w)?;
        }
        for (name, grad) in at.grads.into_iter().flatten() {
            let v = grad.flatten_all()?.to_vec1::<f32>()?;
            log.histogram(&format!("grads/{name}"), &v)?;
        }
        Ok(())
    }
}
