//! Gate statistics per layer and direction, measured by the forward pass on a probed step
//! (the fused op's `Recurrence::gate_stats`, the composed path's `GateTally`): lstm input /
//! forget gate means, gru reset / update gate means, and the fraction of saturated units.

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
