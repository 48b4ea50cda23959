//! Gate statistics per layer and direction from the fused op's saved activations (see
//! `Recurrence::gate_stats`): lstm input / forget gate means, gru reset / update gate means,
//! and the fraction of saturated units.

use super::{Instrument, StepLog, StepView};
use crate::error::Result;

pub struct Gates;

impl Instrument for Gates {
    fn needs_probe(&self) -> bool {
        true
    }

    fn record(&mut self, at: &StepView, log: &mut StepLog) -> Result<()> {
        for (label, sink) in &at.fwd.gates {
            let stats = sink.lock().map(|g| g.clone()).unwrap_or_default();
            log.group(&["gates", label], &format!("gates/{label}"), &stats)?;
        }
        Ok(())
    }
}
