//! Each trained parameter's gradient L2 norm on a logged step (`grad_norm/<name>`; the row's
//! `param_grad_norm`), after clipping: which layer's gradients explode or vanish.

use super::{l2_norm, Instrument, StepLog, StepView};
use crate::error::Result;

pub struct GradNorms;

impl Instrument for GradNorms {
    fn record(&mut self, at: &StepView, log: &mut StepLog) -> Result<()> {
        let norms = at
            .grads
            .iter()
            .map(|(name, grad)| Ok((name.clone(), l2_norm(grad)?)))
            .collect::<Result<Vec<_>>>()?;
        log.group(&["param_grad_norm"], "grad_norm", &norms)
    }
}
