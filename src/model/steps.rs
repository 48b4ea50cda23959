//! Which steps of a batch count: each row's valid steps, and under truncated BPTT each row's
//! window (its last k valid steps) and the step before which no window has begun.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Truncated BPTT (`tbptt` > 0): the first step of the batch's earliest window, each row's
/// window being its last `tbptt` valid steps; every step before it runs without a graph. 0
/// without truncation.
pub fn window_cut(lengths: &[usize], tbptt: usize) -> usize {
    if tbptt == 0 {
        return 0;
    }
    lengths
        .iter()
        .map(|&n| n.saturating_sub(tbptt))
        .min()
        .unwrap_or(0)
}

/// Per-step row masks, built once per forward pass and shared by all layers.
pub(super) struct StepMasks {
    pub(super) t: usize,
    pub(super) lengths: Vec<usize>,
    /// Truncated BPTT: first step of each row's window.
    pub(super) window_start: Option<Vec<usize>>,
    /// valid[t]: [batch, 1], 1.0 where step t is within the sequence; None = all valid.
    pub(super) valid: Option<Vec<Tensor>>,
    /// Truncated BPTT: steps before `cut` run fully detached (graph memory O(window));
    /// `in_window[t]` (when some rows start their window later) keeps the graph per row.
    pub(super) cut: usize,
    pub(super) in_window: Vec<Option<Tensor>>,
}

impl StepMasks {
    /// `per_step`: the composed path's mask tensors too (`valid`, `in_window`); the fused op
    /// reads the lengths and window starts, and a tensor per step would cost about 200 bytes
    /// a step, 20 MB at 10^5 steps.
    pub(super) fn new(
        lengths: &[usize],
        t: usize,
        tbptt: usize,
        per_step: bool,
        device: &Device,
    ) -> Result<StepMasks> {
        let b = lengths.len();
        let row_mask = |f: &dyn Fn(usize) -> bool| -> Result<Tensor> {
            let v: Vec<f32> = (0..b).map(|r| f(r) as u8 as f32).collect();
            Ok(Tensor::from_vec(v, (b, 1), device)?)
        };
        let valid = if !per_step || lengths.iter().all(|&n| n == t) {
            None
        } else {
            Some(
                (0..t)
                    .map(|s| row_mask(&|r| s < lengths[r]))
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        let window_start: Option<Vec<usize>> =
            (tbptt > 0).then(|| lengths.iter().map(|&n| n.saturating_sub(tbptt)).collect());
        let (cut, in_window) = match &window_start {
            None => (0, vec![None; if per_step { t } else { 0 }]),
            Some(start) => {
                let cut = window_cut(lengths, tbptt);
                // Before `cut` no row's window has begun: those steps run detached whole.
                let in_window = (0..if per_step { t } else { 0 })
                    .map(|s| {
                        if s < cut || start.iter().all(|&st| s >= st) {
                            Ok(None)
                        } else {
                            row_mask(&|r| s >= start[r]).map(Some)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                (cut, in_window)
            }
        };
        Ok(StepMasks {
            t,
            lengths: lengths.to_vec(),
            window_start,
            valid,
            cut,
            in_window,
        })
    }
}
