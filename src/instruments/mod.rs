//! What `fit` measures beyond the loss, each instrument one file: per-parameter gradient norms
//! (`grad_norms`, always), gradient flow through time (`flow`), gate statistics (`gates`), the
//! recurrent spectrum (`spectrum`), update/weight ratios (`update_ratio`) and weight and
//! gradient histograms (`histograms`). `[log]` selects them (`from_config`). An instrument reads
//! a logged step (`StepView`) or an epoch's end (`EpochView`) and records named values through
//! `StepLog`, the one writer that puts each value in TensorBoard and in the metrics.jsonl row
//! together. A new instrument is a new file here and a line in `from_config`.

pub mod flow;
mod gates;
mod grad_norms;
mod histograms;
mod spectrum;
mod update_ratio;

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::config::Log;
use crate::error::Result;
pub use crate::log::writer::StepLog;
use crate::model::classifier::{Classifier, Forward};

/// A logged training step as the instruments see it, after the optimizer's update.
pub struct StepView<'a> {
    pub model: &'a Classifier,
    pub fwd: &'a Forward,
    pub store: &'a GradStore,
    /// Each trained parameter's gradient as the optimizer applied it (after clipping).
    pub grads: &'a [(String, Tensor)],
}

/// An epoch's end as the instruments see it, after validation.
pub struct EpochView<'a> {
    pub model: &'a Classifier,
    /// The gradients of the epoch's last step (None: this process ran no step of it).
    pub grads: Option<&'a [(String, Tensor)]>,
    /// The epoch that ended, from 1.
    pub epoch: usize,
    /// The run folder, for pictures written beside the events.
    pub dir: &'a Path,
}

pub trait Instrument {
    /// Whether the forward pass must measure per-step gradients and gate activations
    /// (`RunOpts::probe`) on a logged step.
    fn needs_probe(&self) -> bool {
        false
    }

    /// On a logged step, before the optimizer changes the weights.
    fn before_update(&mut self, _model: &Classifier) -> Result<()> {
        Ok(())
    }

    /// On a logged step, after the update: record this step's values.
    fn record(&mut self, _at: &StepView, _log: &mut StepLog) -> Result<()> {
        Ok(())
    }

    /// At the end of an epoch, after validation: values into the epoch's row, or pictures
    /// over the run's whole history (`log.history()`, a resumed run's too) into TensorBoard
    /// and the run folder.
    fn epoch_end(&mut self, _at: &EpochView, _log: &mut StepLog) -> Result<()> {
        Ok(())
    }
}

/// The instruments `[log]` turns on, in the order they record.
pub fn from_config(log: &Log) -> Vec<Box<dyn Instrument>> {
    let mut on: Vec<Box<dyn Instrument>> = vec![Box::new(grad_norms::GradNorms)];
    if log.grad_flow {
        on.push(Box::new(flow::GradFlow));
        on.push(Box::new(gates::Gates));
    }
    if log.spectrum {
        on.push(Box::new(spectrum::Spectrum));
    }
    if log.update_ratio {
        on.push(Box::new(update_ratio::UpdateRatio::default()));
    }
    if log.histograms_every_epochs > 0 {
        on.push(Box::new(histograms::Histograms {
            every: log.histograms_every_epochs,
        }));
    }
    on
}

/// A tensor's L2 norm (an f32 sum of squares, as PyTorch's `norm()` of an f32 tensor).
fn l2_norm(t: &Tensor) -> Result<f64> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64)
}
