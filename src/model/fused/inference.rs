//! The op for inference: the same forward, reading the cell's parameters in place
//! (x [batch, seq, input] or an embedding table [vocab, input] -> as the training op's).

use super::*;

/// instead of taking them as one concatenated input (which the gradient needs), saving a
/// copy of every weight per call.
pub(super) struct Inference {
    pub(super) op: Recurrence,
    /// W_ih, W_hh, b_ih, b_hh, contiguous.
    pub(super) params: [Tensor; 4],
    /// The input is an embedding table, its rows picked by `op.tokens`.
    pub(super) table: bool,
}

impl CustomOp1 for Inference {
    fn name(&self) -> &'static str {
        "rnnlab-recurrence-inference"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = cpu_slice(s, l, "x")?;
        let held = self.op.tokens.as_ref().map(|t| t.storage_and_layout());
        let tokens = match &held {
            Some((storage, layout)) => Some(TokenIds::of(storage, layout)?),
            None => None,
        };
        let (src, dims) = match (tokens, self.table) {
            (Some(ids), true) => {
                let (vocab, inp) = l.shape().dims2()?;
                if ids.rows != self.op.lengths.len() {
                    candle_core::bail!("rnnlab recurrence: token ids do not match the batch");
                }
                if let Some(id) = ids.iter().find(|&id| id as usize >= vocab) {
                    candle_core::bail!(
                        "token id {id} is outside the embedding table ({vocab} rows)"
                    );
                }
                (LayerInput::Table(data, ids), (ids.rows, ids.steps, inp))
            }
            (None, true) => candle_core::bail!("rnnlab recurrence: a table input needs token ids"),
            (_, false) => (LayerInput::Rows(data), l.shape().dims3()?),
        };
        let guards = self.params.each_ref().map(|p| p.storage_and_layout());
        let [w_ih, w_hh, b_ih, b_hh] = &guards;
        let g = self.op.kind.gates() * self.op.hidden;
        let pk = Packed::from_parts(
            [
                storage_slice(&w_ih.0, w_ih.1, "weight_ih")?,
                storage_slice(&w_hh.0, w_hh.1, "weight_hh")?,
                storage_slice(&b_ih.0, b_ih.1, "bias_ih")?,
                storage_slice(&b_hh.0, b_hh.1, "bias_hh")?,
            ],
            g,
            dims.2,
            self.op.hidden,
        )?;
        self.op.forward_cpu(src, dims, pk, tokens)
    }
}

/// The cell's parameters as the inference op reads them.
pub(super) fn inference_params(
    cell: &crate::model::cell::Cell,
) -> candle_core::Result<[Tensor; 4]> {
    let read = |p: &Tensor| p.detach().contiguous();
    Ok([
        read(&cell.weight_ih)?,
        read(&cell.weight_hh)?,
        read(&cell.bias_ih)?,
        read(&cell.bias_hh)?,
    ])
}
