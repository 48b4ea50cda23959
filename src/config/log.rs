//! `[log]`: how often and what to log beyond the loss (the instruments).

use serde::{Deserialize, Serialize};

use super::{bad, Checked};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Per-step scalars every this many steps. Default 10.
    pub every_steps: usize,
    /// Weight and gradient histograms every this many epochs; 0 = never. Default 1.
    pub histograms_every_epochs: usize,
    /// Per-timestep gradient norms ‖∂L/∂h_t‖ on logged steps. Default true.
    pub grad_flow: bool,
    /// Largest singular value of each W_hh on logged steps (power iteration). Default true.
    pub spectrum: bool,
    /// ‖Δw‖ / ‖w‖ of each parameter's update on logged steps (a copy of the weights before
    /// the step). Default true.
    pub update_ratio: bool,
    /// Progress bar on a terminal. Default true.
    pub progress: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            every_steps: 10,
            histograms_every_epochs: 1,
            grad_flow: true,
            spectrum: true,
            update_ratio: true,
            progress: true,
        }
    }
}

impl Log {
    /// Logging intervals.
    /// (Negated comparisons on purpose: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub(super) fn check(&self) -> Checked {
        let l = self;
        if l.every_steps == 0 {
            return bad("log.every_steps", "must be at least 1");
        }
        Ok(())
    }
}
