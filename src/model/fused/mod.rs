//! The fast CPU path: one direction of one recurrent layer over the whole sequence as a single
//! candle custom op with its own backward. It takes the layer input and the parameters packed
//! as `[W_ih, W_hh, b_ih, b_hh]`. Forward splits the work between threads by batch rows, or,
//! when W_hh does not fit half an L2, by hidden units (one barrier per step); each worker runs
//! its input projection for all steps as one gemm, then per step one `h @ W_hh^T` gemm over
//! W_hh^T packed in panels and one vectorized gate kernel. Backward is the mirror image, by
//! batch rows: per step one gate kernel and one `dG @ W_hh` gemm, then each chunk's share of
//! dW_ih, dW_hh and its rows of dx, one gemm each; ∂L/∂h_t for every step falls out as a
//! by-product and feeds the gradient-flow diagnostics.
//!
//! The op's output is what the rest of the graph reads: h for every step ([batch, seq, hidden]),
//! and for the LSTM also c ([batch, seq, 2 * hidden], h then c), or with `final_only` just each
//! row's final state ([batch, slots * hidden]). The gate activations backward needs (lstm: i,
//! f, g, o; gru: r, z, n, hn = W_hn h_prev + b_hn) stay inside the op, so no gradient buffer is
//! ever allocated for them. Everything is zero at padded steps. Semantics match `cell.rs` +
//! `stack.rs` exactly (lengths, reverse direction, truncated BPTT windows); the tests compare
//! the two.
//!
//! Files: this one holds the op's parameters and the helpers both passes share; `forward.rs`
//! the forward pass, `backward.rs` its gradient, `inference.rs` the forward without a graph;
//! `conv/` the CNN frame encoder's op; `kernels.rs`, `matmul.rs`, `split.rs` the vector
//! kernels, gemms and thread splits they run on.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor};

use crate::config::{CellKind, Nonlinearity};

#[macro_use]
mod kernels;
pub mod conv;
pub mod conv2d;
mod matmul;
pub mod resnet;
mod split;
mod winograd;

use kernels::{
    gates, gru_bwd, lstm_bwd, lstm_dc_squares, prefetch, sum_rows, sum_squares, FlushDenormals,
};
use matmul::{mm, mm_new, mm_tn_cols, pack_panels, pack_panels_into, step_mm, transpose, PANEL};
use split::{
    gate_rows, recycle, row_chunks, take, unit_chunks, PoisonOnPanic, Shared, StepBarrier,
    UNIT_SPLIT_BYTES,
};

mod backward;
mod forward;
mod inference;

use forward::{LayerInput, TokenIds};
use inference::{inference_params, Inference};

/// for the LSTM, ‖∂L/∂c_t‖ (empty for the other cells), by position in the sequence, with
/// each row of a forward direction right-aligned at the batch's last step (so every row's
/// last valid step, where the readout reads it, is the last position; a reverse direction's
/// rows all end at step 0 already).
#[derive(Debug, Clone, Default)]
pub struct FlowSteps {
    pub h: Vec<f64>,
    pub c: Vec<f64>,
}

pub type FlowSink = Arc<Mutex<FlowSteps>>;

/// Gate statistics of a training forward, by name (see `Recurrence::gate_stats`).
pub type GateSink = Arc<Mutex<Vec<(&'static str, f64)>>>;

pub struct Recurrence {
    pub kind: CellKind,
    pub nonlinearity: Nonlinearity,
    pub hidden: usize,
    /// Valid steps per row (each in 1..=seq).
    pub lengths: Vec<usize>,
    /// Run from each row's last valid step down to step 0.
    pub reverse: bool,
    /// Truncated BPTT: no gradient reaches steps before `window_start[row]`.
    pub window_start: Option<Vec<usize>>,
    /// The state before the first step (forward direction), [batch, slots * hidden] (h, then
    /// the LSTM's c): a constant the op carries in, no gradient flows to it. None = zeros.
    pub init: Option<Vec<f32>>,
    pub flow: Option<FlowSink>,
    /// Gate statistics over the valid steps, written by a training forward when asked for.
    pub gates: Option<GateSink>,
    /// Return only each row's final state ([batch, slots * hidden]: the forward direction's
    /// last valid step, the reverse direction's step 0) instead of every step's output.
    pub final_only: bool,
    /// The token id behind each row and step of x ([batch, seq] u32 on the CPU, possibly a
    /// view with a longer row stride: the steps of a cut sequence) when x is an embedding
    /// lookup: x W_ih^T then depends only on the token, and forward projects each distinct
    /// token once. Held, not copied: read in place when the op runs.
    pub tokens: Option<Tensor>,
    /// Gate activations from forward, [batch, seq, 4 * hidden] (lstm, gru), for backward.
    saved: Mutex<Vec<f32>>,
    /// Every step's output when `final_only` (backward needs the states), kept here.
    kept_out: Mutex<Vec<f32>>,
    /// Save the gate activations (false: inference, no backward will run).
    keep_for_backward: bool,
}

impl Recurrence {
    pub fn new(
        kind: CellKind,
        nonlinearity: Nonlinearity,
        hidden: usize,
        lengths: Vec<usize>,
        reverse: bool,
        window_start: Option<Vec<usize>>,
        flow: Option<FlowSink>,
    ) -> Recurrence {
        Recurrence {
            kind,
            nonlinearity,
            hidden,
            lengths,
            reverse,
            window_start,
            init: None,
            flow,
            gates: None,
            final_only: false,
            tokens: None,
            saved: Mutex::new(Vec::new()),
            kept_out: Mutex::new(Vec::new()),
            keep_for_backward: true,
        }
    }

    /// Output width per step in units of hidden: h, plus c for the LSTM.
    pub fn slots(kind: CellKind) -> usize {
        match kind {
            CellKind::Lstm => 2,
            _ => 1,
        }
    }

    /// Saved gate activations per step in units of hidden.
    fn saved_slots(kind: CellKind) -> usize {
        match kind {
            CellKind::Rnn => 0,
            _ => 4,
        }
    }

    /// Step order of the forward pass.
    fn order(&self, t: usize) -> impl DoubleEndedIterator<Item = usize> {
        let rev = self.reverse;
        (0..t).map(move |s| if rev { t - 1 - s } else { s })
    }

    /// The step that holds a row's final state.
    fn final_step(&self, len: usize) -> usize {
        if self.reverse {
            0
        } else {
            len - 1
        }
    }

    /// The step whose state feeds step `tt` in row `row`, if any.
    fn prev(&self, tt: usize, len: usize) -> Option<usize> {
        if self.reverse {
            (tt + 1 < len).then_some(tt + 1)
        } else {
            tt.checked_sub(1)
        }
    }
}

/// A contiguous CPU f32 buffer's data.
fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("rnnlab recurrence: {what} must be contiguous"),
    }
}

/// A contiguous CPU f32 tensor's data, borrowed from its storage guard.
fn storage_slice<'a>(st: &'a Storage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (st, l.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("rnnlab recurrence: {what} must be contiguous f32 CPU data"),
    }
}

/// The cell's parameters inside the packed vector `[W_ih, W_hh, b_ih, b_hh]` (flattened).
struct Packed<'a> {
    w_ih: &'a [f32],
    w_hh: &'a [f32],
    b_ih: &'a [f32],
    b_hh: &'a [f32],
}

impl<'a> Packed<'a> {
    fn split(p: &'a [f32], g: usize, i: usize, h: usize) -> candle_core::Result<Packed<'a>> {
        if p.len() != g * i + g * h + 2 * g {
            candle_core::bail!("rnnlab recurrence: packed parameters do not match the cell");
        }
        let (w_ih, rest) = p.split_at(g * i);
        let (w_hh, rest) = rest.split_at(g * h);
        let (b_ih, b_hh) = rest.split_at(g);
        Packed::from_parts([w_ih, w_hh, b_ih, b_hh], g, i, h)
    }

    /// W_ih [g, i], W_hh [g, h], b_ih [g], b_hh [g].
    fn from_parts(
        [w_ih, w_hh, b_ih, b_hh]: [&'a [f32]; 4],
        g: usize,
        i: usize,
        h: usize,
    ) -> candle_core::Result<Packed<'a>> {
        if w_ih.len() != g * i || w_hh.len() != g * h || b_ih.len() != g || b_hh.len() != g {
            candle_core::bail!("rnnlab recurrence: parameters do not match the cell");
        }
        Ok(Packed {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        })
    }
}

impl CustomOp2 for Recurrence {
    fn name(&self) -> &'static str {
        "rnnlab-recurrence"
    }

    /// s1: x [batch, seq, input]; s2: the packed parameters `[W_ih, W_hh, b_ih, b_hh]`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, inp) = l1.shape().dims3()?;
        let g = self.kind.gates() * self.hidden;
        let pk = Packed::split(cpu_slice(s2, l2, "parameters")?, g, inp, self.hidden)?;
        let held = self.tokens.as_ref().map(|t| t.storage_and_layout());
        let tokens = match &held {
            Some((storage, layout)) => Some(TokenIds::of(storage, layout)?),
            None => None,
        };
        self.forward_cpu(
            LayerInput::Rows(cpu_slice(s1, l1, "x")?),
            l1.shape().dims3()?,
            pk,
            tokens,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        self.backward(x, packed, res, grad_res)
    }
}

/// Runs the op for one direction of one layer. x: [batch, seq, input] ->
/// [batch, seq, slots*hidden].
/// `no_grad`: no backward will follow; the op saves nothing for it and records no graph.
pub fn run(
    mut op: Recurrence,
    x: &Tensor,
    cell: &super::cell::Cell,
    no_grad: bool,
) -> candle_core::Result<Tensor> {
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    if no_grad {
        op.keep_for_backward = false;
        let op = Inference {
            op,
            params: inference_params(cell)?,
            table: false,
        };
        return x.detach().apply_op1_arc(Arc::new(Box::new(op)));
    }
    let packed = Tensor::cat(
        &[
            cell.weight_ih.flatten_all()?,
            cell.weight_hh.flatten_all()?,
            cell.bias_ih.flatten_all()?,
            cell.bias_hh.flatten_all()?,
        ],
        0,
    )?;
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> = Arc::new(Box::new(op));
    x.apply_op2_arc(&packed, op)
}
/// Inference for one direction of a first layer whose input is an embedding lookup: the op
/// reads the rows of `table` ([vocab, input]) named by `op.tokens` itself, so no
/// [batch, seq, input] copy is made. Output as `run`'s.
pub fn run_from_table(
    mut op: Recurrence,
    table: &Tensor,
    cell: &super::cell::Cell,
) -> candle_core::Result<Tensor> {
    let table = table.to_dtype(DType::F32)?.contiguous()?;
    op.keep_for_backward = false;
    let op = Inference {
        op,
        params: inference_params(cell)?,
        table: true,
    };
    table.detach().apply_op1_arc(Arc::new(Box::new(op)))
}

/// True when the fused op can run on this tensor's device.
pub fn available(t: &Tensor) -> bool {
    matches!(&*t.storage_and_layout().0, Storage::Cpu(_))
}
