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

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor};

use crate::config::{CellKind, Nonlinearity};

#[macro_use]
mod kernels;
pub mod conv;
mod matmul;
mod split;

use kernels::{
    gates, gru_bwd, lstm_bwd, lstm_dc_squares, prefetch, sum_rows, sum_squares, FlushDenormals,
};
use matmul::{mm, mm_new, mm_tn_cols, pack_panels, pack_panels_into, step_mm, transpose, PANEL};
use split::{
    gate_rows, recycle, row_chunks, take, unit_chunks, PoisonOnPanic, Shared, StepBarrier,
    UNIT_SPLIT_BYTES,
};

/// Per-step gradient norms over the batch, written by backward when asked for: ‖∂L/∂h_t‖ and,
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

/// One forward worker's share: batch rows r0..r0+nb and hidden units u0..u0+hk (all units
/// when the batch is split between threads, all rows when the units are). xp, wt and bhh
/// hold just its gate columns (gate q, unit j at q*hk + j; wt in `pack_panels` panels); out,
/// saved and the two h buffers are shared by all workers.
struct FwdPart<'a> {
    r0: usize,
    nb: usize,
    u0: usize,
    hk: usize,
    t: usize,
    xp: XRows<'a>,
    wt: &'a [f32],
    /// Input-side bias: b_ih + b_hh (gru: b_ih; its b_hh is inside r's product).
    bx: &'a [f32],
    bhh: &'a [f32],
    /// [batch, seq, slots * hidden]; with `finals`, [batch, slots * hidden].
    out: Shared<'a>,
    /// `out` holds only each row's final state (inference with `final_only`).
    finals: bool,
    /// [batch, seq, saved_slots * hidden], or empty when nothing is saved.
    saved: Shared<'a>,
    /// [batch, hidden] each: h_{t-1} and h_t, swapping roles every step.
    hbuf: [Shared<'a>; 2],
    /// Present when the units are split: all workers finish a step before any starts the next.
    barrier: Option<&'a StepBarrier>,
    par: bool,
}

/// Where a forward worker finds each row and step's input projection x W_ih^T: rows of
/// its gate columns (`gk` floats).
#[derive(Clone, Copy)]
struct XRows<'a> {
    data: &'a [f32],
    /// Token input: the row of (batch row r, step tt) is `slot[r * seq + tt]`, one per
    /// distinct token. Otherwise the worker's own rows, (r - r0) * seq + tt.
    slot: Option<&'a [u32]>,
}

impl<'a> XRows<'a> {
    /// The projection of batch row `r` (the worker's `local`-th) at step `tt`.
    #[inline(always)]
    fn at(&self, r: usize, local: usize, tt: usize, t: usize, gk: usize) -> &'a [f32] {
        let row = match self.slot {
            Some(slot) => slot[r * t + tt] as usize,
            None => local * t + tt,
        };
        &self.data[row * gk..][..gk]
    }
}

/// One chunk of batch rows for backward: its read-only view (`rows`) and its slices of the
/// gradient buffers.
struct BwdChunk<'a> {
    rows: Rows<'a>,
    t: usize,
    whh: &'a [f32],
    dxp: &'a mut [f32],
    dhh: &'a mut [f32],
    /// [rows * t, inp + hidden]: each step's input (filled by the caller) then h_prev,
    /// written here; the right operand of the weight-gradient gemm.
    hprev: &'a mut [f32],
    inp: usize,
    par: bool,
}

/// One chunk's read-only view for backward.
#[derive(Clone, Copy)]
struct Rows<'a> {
    lengths: &'a [usize],
    window_start: Option<&'a [usize]>,
    out: &'a [f32],
    dout: Dout<'a>,
    saved: &'a [f32],
}

/// The gradient backward receives.
#[derive(Clone, Copy)]
enum Dout<'a> {
    /// Of every step's output: [rows, seq, slots * hidden].
    Steps(&'a [f32]),
    /// Of each row's final state only (`final_only`): [rows, slots * hidden].
    Final(&'a [f32]),
}

impl<'a> Dout<'a> {
    /// Rows r0..r0+nb.
    fn rows(self, r0: usize, nb: usize, t: usize, s: usize) -> Dout<'a> {
        match self {
            Dout::Steps(d) => Dout::Steps(&d[r0 * t * s..(r0 + nb) * t * s]),
            Dout::Final(d) => Dout::Final(&d[r0 * s..(r0 + nb) * s]),
        }
    }
}

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
    pub flow: Option<FlowSink>,
    /// Gate statistics over the valid steps, written by a training forward when asked for.
    pub gates: Option<GateSink>,
    /// Return only each row's final state ([batch, slots * hidden]: the forward direction's
    /// last valid step, the reverse direction's step 0) instead of every step's output.
    pub final_only: bool,
    /// The token id behind each row and step of x ([batch * seq], row-major) when x is an
    /// embedding lookup: x W_ih^T then depends only on the token, and forward projects each
    /// distinct token once.
    pub tokens: Option<Vec<u32>>,
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
            flow,
            gates: None,
            final_only: false,
            tokens: None,
            saved: Mutex::new(Vec::new()),
            kept_out: Mutex::new(Vec::new()),
            keep_for_backward: true,
        }
    }

    /// Means over the valid steps of every row and unit: lstm `input_mean`, `forget_mean`
    /// (σ(i), σ(f)); gru `reset_mean`, `update_mean` (σ(r), σ(z)); and `saturated`, the
    /// fraction of gate values a gradient barely passes (a sigmoid below 0.01 or above 0.99, a
    /// tanh beyond ±0.99; for the rnn its tanh output h, or for relu the fraction at 0).
    /// `saved`: the gate activations ([row, step, sv]); `out`: every step's output ([row,
    /// step, s]). Empty where they were not kept.
    fn gate_stats(
        &self,
        saved: &[f32],
        sv: usize,
        out: &[f32],
        s: usize,
        t: usize,
    ) -> Vec<(&'static str, f64)> {
        let h = self.hidden;
        let valid = || {
            self.lengths
                .iter()
                .enumerate()
                .flat_map(move |(r, &len)| (0..len.min(t)).map(move |tt| r * t + tt))
        };
        let n = valid().count() as f64 * h as f64;
        if n == 0.0 {
            return Vec::new();
        }
        let sig_sat = |v: f32| !(0.01..=0.99).contains(&v);
        let tanh_sat = |v: f32| v.abs() > 0.99;
        let slot = |at: usize, q: usize| &saved[at * sv + q * h..][..h];
        match self.kind {
            CellKind::Rnn => {
                if out.len() < t * s * self.lengths.len() {
                    return Vec::new();
                }
                let mut sat = 0usize;
                for at in valid() {
                    let hs = &out[at * s..][..h];
                    sat += match self.nonlinearity {
                        Nonlinearity::Tanh => hs.iter().filter(|v| tanh_sat(**v)).count(),
                        Nonlinearity::Relu => hs.iter().filter(|v| **v == 0.0).count(),
                    };
                }
                vec![("saturated", sat as f64 / n)]
            }
            CellKind::Lstm | CellKind::Gru if sv == 0 => Vec::new(),
            CellKind::Lstm | CellKind::Gru => {
                // Saved slots: lstm i f g o, gru r z n hn. The two means, the sigmoid gates,
                // the tanh one.
                let (means, sigmoids, tanh_slot): ([(&'static str, usize); 2], &[usize], usize) =
                    if self.kind == CellKind::Lstm {
                        ([("input_mean", 0), ("forget_mean", 1)], &[0, 1, 3], 2)
                    } else {
                        ([("reset_mean", 0), ("update_mean", 1)], &[0, 1], 2)
                    };
                let (mut sums, mut sat) = ([0f64; 2], 0usize);
                for at in valid() {
                    for (sum, (_, q)) in sums.iter_mut().zip(&means) {
                        *sum += slot(at, *q).iter().map(|&v| v as f64).sum::<f64>();
                    }
                    sat += sigmoids
                        .iter()
                        .map(|&q| slot(at, q).iter().filter(|v| sig_sat(**v)).count())
                        .sum::<usize>()
                        + slot(at, tanh_slot).iter().filter(|v| tanh_sat(**v)).count();
                }
                let gates = (sigmoids.len() + 1) as f64;
                vec![
                    (means[0].0, sums[0] / n),
                    (means[1].0, sums[1] / n),
                    ("saturated", sat as f64 / (gates * n)),
                ]
            }
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

    /// One worker's forward over all steps (see `FwdPart`).
    fn fwd_part(&self, part: FwdPart) {
        let _ftz = FlushDenormals::new();
        let _poison = PoisonOnPanic(part.barrier);
        let FwdPart {
            r0,
            nb,
            u0,
            hk,
            t,
            xp,
            wt,
            bx,
            bhh,
            out,
            finals,
            saved,
            hbuf,
            barrier,
            par,
        } = part;
        let h = self.hidden;
        let gk = self.kind.gates() * hk;
        let s = Recurrence::slots(self.kind) * h;
        // Nothing is saved when no backward will run (`keep_for_backward`).
        let sv = if saved.len == 0 {
            0
        } else {
            Recurrence::saved_slots(self.kind) * h
        };
        let mut hh = vec![0f32; nb * gk];
        let mut c = vec![0f32; nb * hk];
        let mut scratch = vec![0f32; hk];
        // A step's h and c when only the final states are kept.
        let (mut h_step, mut c_step) = (vec![0f32; hk], vec![0f32; hk]);
        for (step, tt) in self.order(t).enumerate() {
            let (cur, next) = (hbuf[step % 2], hbuf[(step + 1) % 2]);
            // SAFETY: during a step h_{t-1} (`cur`) is only read; writes go to `next`.
            let hprev = unsafe { cur.read(r0 * h, nb * h) };
            // hh = h_{t-1} @ W_hh^T for this worker's gate columns.
            step_mm(&mut hh, (nb, gk, h), hprev, wt, step % 2 == 1, par);
            for row in 0..nb {
                let r = r0 + row;
                let at = r * t + tt;
                let len = self.lengths[r];
                if tt >= len {
                    if finals {
                        continue;
                    }
                    // Padding: zeros in this worker's share of the outputs.
                    for slot in 0..Recurrence::slots(self.kind) {
                        unsafe { out.part(at * s + slot * h + u0, hk) }.fill(0.0);
                    }
                    if sv > 0 {
                        for q in 0..Recurrence::saved_slots(self.kind) {
                            unsafe { saved.part(at * sv + q * h + u0, hk) }.fill(0.0);
                        }
                    }
                    continue;
                }
                // SAFETY (all `part` calls below): row r's units u0..u0+hk of out, saved and
                // `next` belong to this worker alone.
                let (h_out, c_out): (&mut [f32], &mut [f32]) = match (finals, self.kind) {
                    (true, _) => (&mut h_step, &mut c_step),
                    (false, CellKind::Lstm) => unsafe {
                        (out.part(at * s + u0, hk), out.part(at * s + h + u0, hk))
                    },
                    (false, _) => (unsafe { out.part(at * s + u0, hk) }, &mut []),
                };
                // The GRU's n goes straight into the saved activations, or into scratch.
                let n_out: &mut [f32] = match self.kind {
                    CellKind::Gru if sv > 0 => unsafe { saved.part(at * sv + 2 * h + u0, hk) },
                    _ => &mut scratch,
                };
                let pre = &mut hh[row * gk..][..gk];
                gates(
                    self.kind,
                    self.nonlinearity,
                    pre,
                    xp.at(r, row, tt, t, gk),
                    bx,
                    bhh,
                    &hprev[row * h + u0..][..hk],
                    &mut c[row * hk..][..hk],
                    h_out,
                    c_out,
                    n_out,
                );
                unsafe { next.part(r * h + u0, hk) }.copy_from_slice(h_out);
                // The row's input projection for the next step, one page per row and step
                // that the hardware prefetcher does not follow: fetched during this step.
                if step + 1 < t {
                    let nt = if self.reverse { tt - 1 } else { tt + 1 };
                    prefetch(xp.at(r, row, nt, t, gk));
                }
                if finals && tt == self.final_step(len) {
                    unsafe { out.part(r * s + u0, hk) }.copy_from_slice(h_out);
                    if self.kind == CellKind::Lstm {
                        unsafe { out.part(r * s + h + u0, hk) }.copy_from_slice(c_out);
                    }
                }
                // Activations for backward: lstm i f g o; gru r z (n above) hn.
                let keep: &[usize] = match self.kind {
                    CellKind::Lstm => &[0, 1, 2, 3],
                    CellKind::Gru => &[0, 1, 3],
                    CellKind::Rnn => &[],
                };
                if sv > 0 {
                    for (k, &q) in keep.iter().enumerate() {
                        unsafe { saved.part(at * sv + q * h + u0, hk) }
                            .copy_from_slice(&pre[k * hk..][..hk]);
                    }
                }
            }
            if let Some(b) = barrier {
                b.wait();
            }
        }
    }

    /// Backward over a contiguous chunk of batch rows; dxp, dhh and hprev hold just these
    /// rows (hprev: see `BwdChunk`). Returns this chunk's per-step sums of (∂L/∂h_t)², then
    /// (lstm) of (∂L/∂c_t)² (2 * t values; zeros unless the flow is measured).
    #[inline(always)]
    fn bwd_rows_body(&self, chunk: BwdChunk) -> Vec<f64> {
        let BwdChunk {
            rows,
            t,
            whh,
            dxp,
            dhh,
            hprev,
            inp,
            par,
        } = chunk;
        let b = rows.lengths.len();
        let h = self.hidden;
        let g = self.kind.gates() * h;
        let s = Recurrence::slots(self.kind) * h;
        let sv = Recurrence::saved_slots(self.kind) * h;
        let gru = self.kind == CellKind::Gru;
        let ld = inp + h;
        let mut dh = vec![0f32; b * h];
        let mut dc = vec![0f32; b * h];
        let mut flow = vec![0f64; 2 * t];
        let zeros = vec![0f32; h];
        let zeros_s = vec![0f32; s];
        for tt in self.order(t).rev() {
            for row in 0..b {
                let len = rows.lengths[row];
                let at = row * t + tt;
                let dh_row = &mut dh[row * h..][..h];
                let dc_row = &mut dc[row * h..][..h];
                if tt >= len || rows.window_start.is_some_and(|w| tt < w[row]) {
                    // Padding, or before the truncated-BPTT window (detached: nothing flows
                    // further back): zeros in this step's rows of the buffers.
                    dxp[at * g..][..g].fill(0.0);
                    if gru {
                        dhh[at * g..][..g].fill(0.0);
                    }
                    hprev[at * ld + inp..][..h].fill(0.0);
                    dh_row.fill(0.0);
                    dc_row.fill(0.0);
                    continue;
                }
                let o = &rows.out[at * s..][..s];
                let (d_o, direct): (&[f32], bool) = match rows.dout {
                    Dout::Steps(d) => (&d[at * s..][..s], true),
                    Dout::Final(d) if tt == self.final_step(len) => (&d[row * s..][..s], true),
                    Dout::Final(_) => (&zeros_s, false),
                };
                let keep = &rows.saved[at * sv..][..sv];
                let prev = self
                    .prev(tt, len)
                    .map(|p| &rows.out[(row * t + p) * s..][..s]);
                let hp = &mut hprev[at * ld + inp..][..h];
                match prev {
                    Some(p) => hp.copy_from_slice(&p[..h]),
                    None => hp.fill(0.0),
                }
                let dx = &mut dxp[at * g..][..g];
                // dh_row becomes the total ∂L/∂h_t (carried + direct, if any).
                if direct {
                    for (d, e) in dh_row.iter_mut().zip(&d_o[..h]) {
                        *d += e;
                    }
                }
                // The flow's position: a forward row is right-aligned at the batch's last step
                // (its readout, the last valid step, lands on the right edge for every row);
                // a reverse row's readout is at step 0 already.
                let fi = if self.reverse { tt } else { tt + t - len };
                if self.flow.is_some() {
                    flow[fi] += sum_squares(dh_row);
                }
                match self.kind {
                    CellKind::Rnn => {
                        for ((d, &dht), &v) in dx.iter_mut().zip(dh_row.iter()).zip(o) {
                            *d = match self.nonlinearity {
                                Nonlinearity::Tanh => dht * (1.0 - v * v),
                                Nonlinearity::Relu => {
                                    if v > 0.0 {
                                        dht
                                    } else {
                                        0.0
                                    }
                                }
                            };
                        }
                        dh_row.fill(0.0);
                    }
                    CellKind::Lstm => {
                        let (i, rest) = keep.split_at(h);
                        let (f, rest) = rest.split_at(h);
                        let (gg, og) = rest.split_at(h);
                        let (di, rest) = dx.split_at_mut(h);
                        let (df, rest) = rest.split_at_mut(h);
                        let (dg, dout_g) = rest.split_at_mut(h);
                        let c_prev = prev.map_or(&zeros[..h], |p| &p[h..2 * h]);
                        if self.flow.is_some() {
                            flow[t + fi] += lstm_dc_squares(og, &o[h..], &d_o[h..], dh_row, dc_row);
                        }
                        lstm_bwd(
                            i,
                            f,
                            gg,
                            og,
                            &o[h..],
                            &d_o[h..],
                            c_prev,
                            di,
                            df,
                            dg,
                            dout_g,
                            dh_row,
                            dc_row,
                        );
                        dh_row.fill(0.0);
                    }
                    CellKind::Gru => {
                        let (r, rest) = keep.split_at(h);
                        let (z, rest) = rest.split_at(h);
                        let (n, hn) = rest.split_at(h);
                        let dq = &mut dhh[at * g..][..g];
                        let (dxr, rest) = dx.split_at_mut(h);
                        let (dxz, dxn) = rest.split_at_mut(h);
                        let (dqr, rest) = dq.split_at_mut(h);
                        let (dqz, dqn) = rest.split_at_mut(h);
                        gru_bwd(r, z, n, hn, hp, dxr, dxz, dxn, dqr, dqz, dqn, dh_row);
                    }
                }
            }
            // dh_{prev} += dG_t @ W_hh over the batch: dG_t rows sit t*g apart in [b, t, g].
            // Skipped where every row is padding or before its truncated-BPTT window: dG_t is
            // zero there, so truncation saves the recurrent half of backward's work.
            let live = (0..b).any(|row| {
                tt < rows.lengths[row] && rows.window_start.is_none_or(|w| tt >= w[row])
            });
            if live {
                let dg: &[f32] = if gru { dhh } else { dxp };
                mm(
                    &mut dh,
                    h,
                    (b, h, g),
                    &dg[tt * g..],
                    (t * g, 1),
                    whh,
                    (h, 1),
                    true,
                    par,
                );
            }
        }
        flow
    }

    /// `bwd_rows_body` with denormals flushed, compiled for AVX2+FMA when the CPU has them,
    /// else for the baseline target.
    fn bwd_rows(&self, chunk: BwdChunk) -> Vec<f64> {
        let _ftz = FlushDenormals::new();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected on this CPU just above.
            return unsafe { self.bwd_rows_avx2(chunk) };
        }
        self.bwd_rows_body(chunk)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bwd_rows_avx2(&self, chunk: BwdChunk) -> Vec<f64> {
        self.bwd_rows_body(chunk)
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

impl Recurrence {
    /// The forward pass on CPU data: x [b, t, inp] (or rows of a table) and the cell's
    /// parameters.
    fn forward_cpu(
        &self,
        src: Source,
        (b, t, inp): (usize, usize, usize),
        pk: Packed,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = self.hidden;
        let g = self.kind.gates() * h;
        let s = Recurrence::slots(self.kind) * h;
        // Saved gate activations per step; none when no backward will run.
        let sv = if self.keep_for_backward {
            Recurrence::saved_slots(self.kind) * h
        } else {
            0
        };
        if self.lengths.len() != b {
            candle_core::bail!("rnnlab recurrence: lengths do not match the batch");
        }
        let whh = pk.w_hh;
        let bhh = pk.b_hh;
        // Input-side bias, added in the gate math: b_ih (+ b_hh, except for the GRU whose r
        // multiplies W_hn h + b_hn).
        let bx: Vec<f32> = match self.kind {
            CellKind::Gru => pk.b_ih.to_vec(),
            _ => pk.b_ih.iter().zip(pk.b_hh).map(|(a, c)| a + c).collect(),
        };
        // `saved` (and `out` when only final states leave the op) stay with the op until
        // backward, which gives them back to the pool.
        let mut saved = take(b * t * sv);
        let mut out = if self.final_only && self.keep_for_backward {
            take(b * t * s)
        } else {
            Vec::new()
        };
        let mut hbufs = [vec![0f32; b * h], vec![0f32; b * h]];
        // (first row, rows, first unit, units) per worker.
        let threads = crate::device::cpu_threads();
        let split_units = threads > 1 && g * h * 4 > UNIT_SPLIT_BYTES;
        let parts: Vec<(usize, usize, usize, usize)> = if split_units {
            unit_chunks(h, threads)
                .into_iter()
                .map(|(u0, hk)| (0, b, u0, hk))
                .collect()
        } else {
            row_chunks(b)
                .into_iter()
                .map(|(r0, nb)| (r0, nb, 0, h))
                .collect()
        };
        let par = !split_units && parts.len() == 1;
        let barrier = StepBarrier::new(parts.len());
        // Inference that reads only the final states never stores the other steps.
        let finals = self.final_only && !self.keep_for_backward;
        let out_len = if finals { b * s } else { b * t * s };
        let (out_sh, saved_sh) = (
            Shared::uninit(&mut out, out_len),
            Shared::uninit(&mut saved, b * t * sv),
        );
        let [h0, h1] = &mut hbufs;
        let hbuf = [Shared::new(h0), Shared::new(h1)];
        let gates_n = self.kind.gates();
        let (bx, w_ih) = (&bx, pk.w_ih);
        // Token input with repeats, batch split between workers: one projection row per
        // distinct token (its first row of x), each worker computing a share of them before
        // any starts its steps; the workers then look their rows up. Otherwise each projects
        // its own rows. (With the units split, sharing the rows measured slower: GRU
        // inference at hidden 512 −9%; and where a projected row is narrower than an input
        // row, gathering costs more than it saves: RNN inference at hidden 64 −20%.)
        let distinct = self
            .tokens
            .as_deref()
            .filter(|_| !split_units && g >= inp)
            .and_then(|ids| Distinct::worth_it(ids, b * t));
        let n_d = distinct.as_ref().map_or(0, |d| d.first.len());
        let mut xp_d = take(n_d * g);
        let xp_d_sh = Shared::uninit(&mut xp_d, n_d * g);
        // With the batch split every worker needs all of W_hh^T: each packs a share of the
        // panels into one copy.
        let mut wt_all = Vec::new();
        let wt_sh = Shared::uninit(&mut wt_all, if split_units { 0 } else { g * h });
        // Row split: the shared W_hh^T (and distinct tokens' projection) are complete.
        let ready = StepBarrier::spinning(parts.len(), 200);
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, &(r0, nb, u0, hk)) in parts.iter().enumerate() {
                let barrier = split_units.then_some(&barrier);
                let (distinct, ready, n_parts) = (distinct.as_ref(), &ready, parts.len());
                let work = move || {
                    let gk = gates_n * hk;
                    let _poison = PoisonOnPanic(Some(ready));
                    // Its share (worker i of n_parts) of `len` things.
                    let share = |len: usize| (len * i / n_parts, len * (i + 1) / n_parts);
                    // W_hh^T: this worker's gate rows, or with the batch split its share of
                    // the panels of the shared copy.
                    let own_wt = if split_units {
                        pack_panels(&gate_rows(whh, h, h, gates_n, u0, hk), gk, h)
                    } else {
                        let (p0, p1) = share(g.div_ceil(PANEL));
                        let cols = p0 * PANEL..(p1 * PANEL).min(g);
                        // SAFETY: these panels are this worker's alone until `ready`, after
                        // which all only read.
                        let dst = unsafe { wt_sh.part(cols.start * h, cols.len() * h) };
                        pack_panels_into(whh, (g, h), cols, dst);
                        Vec::new()
                    };
                    let bx = gate_rows(bx, 1, h, gates_n, u0, hk);
                    let bhh = gate_rows(bhh, 1, h, gates_n, u0, hk);
                    // Its input projection, all steps in one gemm: x W_ih^T (the bias is
                    // added in the gate math); or its share of the distinct tokens'.
                    if let Some(d) = distinct {
                        let (d0, d1) = share(n_d);
                        let mut xd = Vec::with_capacity((d1 - d0) * inp);
                        for &p in &d.first[d0..d1] {
                            xd.extend_from_slice(src.row(p, inp));
                        }
                        // SAFETY: rows d0..d1 are this worker's alone until `ready`.
                        let dst = unsafe { xp_d_sh.part(d0 * g, (d1 - d0) * g) };
                        let rows = (d1 - d0, g, inp);
                        mm(dst, g, rows, &xd, (inp, 1), w_ih, (1, inp), false, par);
                    }
                    if !split_units {
                        ready.wait();
                    }
                    // SAFETY: complete after `ready`, and only read from here on.
                    let wt = if split_units {
                        &own_wt[..]
                    } else {
                        unsafe { wt_sh.read(0, g * h) }
                    };
                    let mut own = Vec::new();
                    let xp = match distinct {
                        Some(d) => {
                            XRows {
                                // SAFETY: after the barrier nobody writes it.
                                data: unsafe { xp_d_sh.read(0, n_d * g) },
                                slot: Some(&d.slot),
                            }
                        }
                        None => {
                            let w_ih = gate_rows(w_ih, inp, h, gates_n, u0, hk);
                            let x_rows = src.rows(r0 * t, (r0 + nb) * t, inp);
                            own =
                                mm_new((nb * t, gk, inp), &x_rows, (inp, 1), &w_ih, (1, inp), par);
                            XRows {
                                data: &own,
                                slot: None,
                            }
                        }
                    };
                    self.fwd_part(FwdPart {
                        r0,
                        nb,
                        u0,
                        hk,
                        t,
                        xp,
                        wt,
                        bx: &bx,
                        bhh: &bhh,
                        out: out_sh,
                        finals,
                        saved: saved_sh,
                        hbuf,
                        barrier,
                        par,
                    });
                    recycle(own);
                };
                if i + 1 == parts.len() {
                    work();
                } else {
                    handles.push(scope.spawn(work));
                }
            }
            for handle in handles {
                if let Err(e) = handle.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
        // SAFETY: the workers wrote every row of it (their shares cover 0..n_d).
        unsafe { xp_d.set_len(n_d * g) };
        recycle(xp_d);
        // SAFETY: the workers wrote every element of both (each row × step × unit once:
        // valid steps by the gate math, padding with zeros; with `finals`, each row × unit
        // at its final step, always a valid one), and none panicked.
        unsafe {
            out.set_len(out_len);
            saved.set_len(b * t * sv);
        }
        if let Some(sink) = &self.gates {
            if let Ok(mut g) = sink.lock() {
                *g = self.gate_stats(&saved, sv, &out, s, t);
            }
        }
        if let Ok(mut keep) = self.saved.lock() {
            *keep = saved;
        }
        if finals {
            return Ok((CpuStorage::F32(out), Shape::from((b, s))));
        }
        if !self.final_only {
            return Ok((CpuStorage::F32(out), Shape::from((b, t, s))));
        }
        let mut last = Vec::with_capacity(b * s);
        for (r, &len) in self.lengths.iter().enumerate() {
            last.extend_from_slice(&out[(r * t + self.final_step(len)) * s..][..s]);
        }
        if self.keep_for_backward {
            if let Ok(mut keep) = self.kept_out.lock() {
                *keep = out;
            }
        }
        Ok((CpuStorage::F32(last), Shape::from((b, s))))
    }
}

/// The distinct tokens of a token input: `first[d]` is the first (row * seq + step) holding
/// token d, `slot[p]` the token index d at position p.
struct Distinct {
    first: Vec<usize>,
    slot: Vec<u32>,
}

impl Distinct {
    /// None unless `ids` covers all `n` positions and repeats save at least 3% of the rows
    /// (below that, gathering the distinct rows costs about what it saves).
    fn worth_it(ids: &[u32], n: usize) -> Option<Distinct> {
        if ids.len() != n || n == 0 {
            return None;
        }
        let top = ids.iter().max().map_or(0, |&m| m as usize + 1);
        let mut seen = vec![u32::MAX; top];
        let mut first = Vec::new();
        let slot = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                let d = &mut seen[id as usize];
                if *d == u32::MAX {
                    *d = first.len() as u32;
                    first.push(p);
                }
                *d
            })
            .collect();
        (first.len() * 100 <= n * 97).then_some(Distinct { first, slot })
    }
}

/// The layer input x: its rows ([batch, seq, input]), or an embedding table ([vocab, input])
/// and the op's `tokens` (inference reads the rows straight from the table).
#[derive(Clone, Copy)]
enum Source<'a> {
    Rows(&'a [f32]),
    Table(&'a [f32], &'a [u32]),
}

impl<'a> Source<'a> {
    /// Row p (= row * seq + step) of x.
    fn row(self, p: usize, inp: usize) -> &'a [f32] {
        match self {
            Source::Rows(x) => &x[p * inp..][..inp],
            Source::Table(w, ids) => &w[ids[p] as usize * inp..][..inp],
        }
    }

    /// Rows p0..p1 of x, contiguous (gathered from the table).
    fn rows(self, p0: usize, p1: usize, inp: usize) -> std::borrow::Cow<'a, [f32]> {
        match self {
            Source::Rows(x) => x[p0 * inp..p1 * inp].into(),
            Source::Table(..) => {
                let mut v = Vec::with_capacity((p1 - p0) * inp);
                for p in p0..p1 {
                    v.extend_from_slice(self.row(p, inp));
                }
                v.into()
            }
        }
    }
}

/// The op when no backward will follow: it reads the cell's parameters where they are
/// instead of taking them as one concatenated input (which the gradient needs), saving a
/// copy of every weight per call.
struct Inference {
    op: Recurrence,
    /// W_ih, W_hh, b_ih, b_hh, contiguous.
    params: [Tensor; 4],
    /// The input is an embedding table, its rows picked by `op.tokens`.
    table: bool,
}

impl CustomOp1 for Inference {
    fn name(&self) -> &'static str {
        "rnnlab-recurrence-inference"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = cpu_slice(s, l, "x")?;
        let (src, dims) = match (&self.op.tokens, self.table) {
            (Some(ids), true) => {
                let (vocab, inp) = l.shape().dims2()?;
                let b = self.op.lengths.len();
                if b == 0 || ids.len() % b != 0 {
                    candle_core::bail!("rnnlab recurrence: token ids do not match the batch");
                }
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                    candle_core::bail!(
                        "token id {id} is outside the embedding table ({vocab} rows)"
                    );
                }
                (Source::Table(data, ids), (b, ids.len() / b, inp))
            }
            (None, true) => candle_core::bail!("rnnlab recurrence: a table input needs token ids"),
            (_, false) => (Source::Rows(data), l.shape().dims3()?),
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
        self.op.forward_cpu(src, dims, pk)
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
        self.forward_cpu(
            Source::Rows(cpu_slice(s1, l1, "x")?),
            l1.shape().dims3()?,
            pk,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, t, inp) = x.dims3()?;
        let h = self.hidden;
        let g = self.kind.gates() * h;
        let s = Recurrence::slots(self.kind) * h;
        let sv = Recurrence::saved_slots(self.kind) * h;
        let _ftz = FlushDenormals::new();
        let (x, packed, res, grad_res) = (
            x.contiguous()?,
            packed.contiguous()?,
            res.contiguous()?,
            grad_res.contiguous()?,
        );
        let (x_st, x_l) = x.storage_and_layout();
        let xs = storage_slice(&x_st, x_l, "x")?;
        let (p_st, p_l) = packed.storage_and_layout();
        let pk = Packed::split(storage_slice(&p_st, p_l, "parameters")?, g, inp, h)?;
        let whh = pk.w_hh;
        let kept = match self.kept_out.lock() {
            Ok(mut keep) => std::mem::take(&mut *keep),
            Err(_) => candle_core::bail!("rnnlab recurrence: kept outputs unavailable"),
        };
        let (out_st, out_l) = res.storage_and_layout();
        let (dout_st, dout_l) = grad_res.storage_and_layout();
        let dout = storage_slice(&dout_st, dout_l, "output gradient")?;
        let (out, dout) = if self.final_only {
            if kept.len() != b * t * s {
                candle_core::bail!("rnnlab recurrence: backward ran twice or before forward");
            }
            (&kept[..], Dout::Final(dout))
        } else {
            (storage_slice(&out_st, out_l, "output")?, Dout::Steps(dout))
        };
        let saved = match self.saved.lock() {
            Ok(mut keep) => std::mem::take(&mut *keep),
            Err(_) => candle_core::bail!("rnnlab recurrence: saved activations unavailable"),
        };
        if saved.len() != b * t * sv {
            candle_core::bail!("rnnlab recurrence: backward ran twice or before forward");
        }
        if inp == 0 {
            candle_core::bail!("rnnlab recurrence: the input has no features");
        }
        let gru = self.kind == CellKind::Gru;
        // Gradients w.r.t. the pre-activations: of xp (dxp) and, for the GRU whose n gate
        // multiplies W_hn h by r, separately of h @ W_hh^T + b_hh (dhh).
        // Written once by the chunks, every element (never zeroed first); h_prev per step for
        // dW_hh; dx, the op's input gradient.
        let gq = if gru { g } else { 0 };
        // Each step's [x | h_prev]: one gemm gives dW_ih and dW_hh together (lstm, rnn).
        let ld = inp + h;
        let (mut dxp, mut dhh, mut hprev, mut dx) = (
            take(b * t * g),
            take(b * t * gq),
            take(b * t * ld),
            Vec::new(),
        );
        let bufs = [
            Shared::uninit(&mut dxp, b * t * g),
            Shared::uninit(&mut dhh, b * t * gq),
            Shared::uninit(&mut hprev, b * t * ld),
            Shared::uninit(&mut dx, b * t * inp),
        ];
        let plen = g * inp + g * h + 2 * g;
        let chunks = row_chunks(b);
        let par = chunks.len() == 1;
        let mut flow = vec![0f64; 2 * t];
        let mut dpacked = vec![0f32; plen];
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            let saved = &saved;
            for (i, &(r0, nb)) in chunks.iter().enumerate() {
                let [dxp_sh, dhh_sh, hprev_sh, dx_sh] = bufs;
                // SAFETY: the chunks' row ranges are disjoint; each chunk writes all of its
                // rows of the four buffers before reading any.
                let (dxp_c, dq, hp, dx_c) = unsafe {
                    (
                        dxp_sh.part(r0 * t * g, nb * t * g),
                        dhh_sh.part(r0 * t * gq, nb * t * gq),
                        hprev_sh.part(r0 * t * ld, nb * t * ld),
                        dx_sh.part(r0 * t * inp, nb * t * inp),
                    )
                };
                let rows = Rows {
                    lengths: &self.lengths[r0..r0 + nb],
                    window_start: self.window_start.as_deref().map(|w| &w[r0..r0 + nb]),
                    out: &out[r0 * t * s..(r0 + nb) * t * s],
                    dout: dout.rows(r0, nb, t, s),
                    saved: &saved[r0 * t * sv..(r0 + nb) * t * sv],
                };
                let x_c = &xs[r0 * t * inp..(r0 + nb) * t * inp];
                let w_ih = pk.w_ih;
                let mut work = move || {
                    for (xh, x) in hp.chunks_exact_mut(ld).zip(x_c.chunks_exact(inp)) {
                        xh[..inp].copy_from_slice(x);
                    }
                    let flow = self.bwd_rows(BwdChunk {
                        rows,
                        t,
                        whh,
                        dxp: dxp_c,
                        dhh: dq,
                        hprev: hp,
                        inp,
                        par,
                    });
                    // This chunk's share of the parameter gradients (summed over chunks
                    // below) and its rows of dx, each one gemm over its rows and steps.
                    let mut part = vec![0f32; plen];
                    let dg: &[f32] = if gru { dq } else { dxp_c };
                    let k = nb * t;
                    {
                        let (dw_ih, rest) = part.split_at_mut(g * inp);
                        let (dw_hh, rest) = rest.split_at_mut(g * h);
                        let (db_ih, db_hh) = rest.split_at_mut(g);
                        // dW_ih = dxp^T x and dW_hh = dG^T h_prev: [g, k] @ [k, input | hidden],
                        // one gemm when dG is dxp (lstm, rnn), two for the GRU.
                        if gru {
                            let cols = mm_tn_cols((g, inp, k), dxp_c, (hp, ld), par);
                            transpose(&cols, (inp, g), dw_ih);
                            let cols = mm_tn_cols((g, h, k), dg, (&hp[inp..], ld), par);
                            transpose(&cols, (h, g), dw_hh);
                        } else {
                            let cols = mm_tn_cols((g, ld, k), dg, (hp, ld), par);
                            transpose(&cols[..inp * g], (inp, g), dw_ih);
                            transpose(&cols[inp * g..], (h, g), dw_hh);
                        }
                        sum_rows(db_ih, dxp_c);
                        if gru {
                            sum_rows(db_hh, dq);
                        } else {
                            db_hh.copy_from_slice(db_ih);
                        }
                    }
                    // dx = dxp W_ih: [k, g] @ [g, input].
                    mm(
                        dx_c,
                        inp,
                        (k, inp, g),
                        dxp_c,
                        (g, 1),
                        w_ih,
                        (inp, 1),
                        false,
                        par,
                    );
                    (flow, part)
                };
                if i + 1 == chunks.len() {
                    handles.push(Ok(work()));
                } else {
                    handles.push(Err(scope.spawn(work)));
                }
            }
            for handle in handles {
                let (part_flow, part) = match handle {
                    Ok(done) => done,
                    // A panic in a chunk is a bug: pass it on rather than lose the chunk.
                    Err(running) => running
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e)),
                };
                for (f, v) in flow.iter_mut().zip(part_flow) {
                    *f += v;
                }
                for (a, v) in dpacked.iter_mut().zip(part) {
                    *a += v;
                }
            }
        });
        // SAFETY: every chunk wrote all of its rows of the four buffers, and none panicked.
        unsafe {
            dxp.set_len(b * t * g);
            dhh.set_len(b * t * gq);
            hprev.set_len(b * t * ld);
            dx.set_len(b * t * inp);
        }
        if let Some(sink) = &self.flow {
            if let Ok(mut f) = sink.lock() {
                let norms: Vec<f64> = flow.into_iter().map(f64::sqrt).collect();
                f.h = norms[..t].to_vec();
                f.c = match self.kind {
                    CellKind::Lstm => norms[t..].to_vec(),
                    _ => Vec::new(),
                };
            }
        }
        for v in [dxp, dhh, hprev, saved, kept] {
            recycle(v);
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (b, t, inp), device)?),
            Some(Tensor::from_vec(dpacked, packed.dims(), device)?),
        ))
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

/// The cell's parameters as the inference op reads them.
fn inference_params(cell: &super::cell::Cell) -> candle_core::Result<[Tensor; 4]> {
    let read = |p: &Tensor| p.detach().contiguous();
    Ok([
        read(&cell.weight_ih)?,
        read(&cell.weight_hh)?,
        read(&cell.bias_ih)?,
        read(&cell.bias_hh)?,
    ])
}

/// True when the fused op can run on this tensor's device.
pub fn available(t: &Tensor) -> bool {
    matches!(&*t.storage_and_layout().0, Storage::Cpu(_))
}

#[cfg(test)]
mod tests {
    use super::Distinct;

    #[test]
    fn distinct_tokens_map_each_position_to_its_first_occurrence() {
        let d = Distinct::worth_it(&[5, 3, 5, 5, 9, 3], 6).expect("repeats");
        assert_eq!(d.first, [0, 1, 4]);
        assert_eq!(d.slot, [0, 1, 0, 0, 2, 1]);
        // All distinct: nothing to save, every row projected as it is.
        assert!(Distinct::worth_it(&[1, 2, 3, 4], 4).is_none());
        // Ids that do not cover the batch are not used.
        assert!(Distinct::worth_it(&[1, 1, 1], 4).is_none());
    }
}
