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

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Storage, Tensor};
use gemm::Parallelism;

use crate::config::{CellKind, Nonlinearity};

/// Per-step ‖∂L/∂h_t‖ (norm over the batch), written by backward when asked for.
pub type FlowSink = Arc<Mutex<Vec<f64>>>;

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
    xp: &'a [f32],
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

/// A buffer several forward workers write at once, each only at its own rows × units, and
/// read across workers only after a `StepBarrier`.
#[derive(Clone, Copy)]
struct Shared<'a> {
    ptr: *mut f32,
    len: usize,
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: workers touch disjoint parts between barriers (see `Shared::part`).
unsafe impl Send for Shared<'_> {}
unsafe impl Sync for Shared<'_> {}

impl<'a> Shared<'a> {
    fn new(buf: &'a mut [f32]) -> Shared<'a> {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: std::marker::PhantomData,
        }
    }

    /// Room for `n` floats in `buf` (emptied), not zeroed: the workers write every element,
    /// and only then does the caller `set_len(n)`.
    fn uninit(buf: &'a mut Vec<f32>, n: usize) -> Shared<'a> {
        buf.clear();
        buf.reserve_exact(n);
        Shared {
            ptr: buf.as_mut_ptr(),
            len: n,
            _buf: std::marker::PhantomData,
        }
    }

    /// `n` floats from `start` to write.
    /// SAFETY: no other thread reads or writes them until the next barrier.
    unsafe fn part(&self, start: usize, n: usize) -> &'a mut [f32] {
        assert!(start + n <= self.len, "recurrence: shared buffer overrun");
        std::slice::from_raw_parts_mut(self.ptr.add(start), n)
    }

    /// `n` floats from `start` to read.
    /// SAFETY: no thread writes them until the next barrier.
    unsafe fn read(&self, start: usize, n: usize) -> &'a [f32] {
        assert!(start + n <= self.len, "recurrence: shared buffer overrun");
        std::slice::from_raw_parts(self.ptr.add(start), n)
    }
}

/// The per-step rendezvous of workers that split the hidden units: a generation counter,
/// spun on briefly (a step takes tens of microseconds), then waited on with yields so an
/// oversubscribed machine is not burnt. A worker that panics poisons it, so the others
/// stop instead of waiting forever.
struct StepBarrier {
    workers: usize,
    arrived: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicUsize,
    poisoned: std::sync::atomic::AtomicBool,
}

impl StepBarrier {
    fn new(workers: usize) -> StepBarrier {
        StepBarrier {
            workers,
            arrived: 0.into(),
            generation: 0.into(),
            poisoned: false.into(),
        }
    }

    fn wait(&self) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
        let gen = self.generation.load(Acquire);
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.workers {
            self.arrived.store(0, Relaxed);
            self.generation.store(gen + 1, Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Acquire) == gen {
            if self.poisoned.load(Relaxed) {
                panic!("recurrence: another worker failed");
            }
            if spins < 20_000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Poisons the barrier if its worker unwinds.
struct PoisonOnPanic<'a>(Option<&'a StepBarrier>);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if let (Some(b), true) = (self.0, std::thread::panicking()) {
            b.poisoned.store(true, std::sync::atomic::Ordering::Relaxed);
        }
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
    /// Return only each row's final state ([batch, slots * hidden]: the forward direction's
    /// last valid step, the reverse direction's step 0) instead of every step's output.
    pub final_only: bool,
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
            final_only: false,
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
                    &xp[(row * t + tt) * gk..][..gk],
                    bx,
                    bhh,
                    &hprev[row * h + u0..][..hk],
                    &mut c[row * hk..][..hk],
                    h_out,
                    c_out,
                    n_out,
                );
                unsafe { next.part(r * h + u0, hk) }.copy_from_slice(h_out);
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
    /// rows (hprev: see `BwdChunk`). Returns this chunk's per-step sums of (∂L/∂h_t)².
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
        let mut flow = vec![0f64; t];
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
                if self.flow.is_some() {
                    flow[tt] += sum_squares(dh_row) as f64;
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
            let dg: &[f32] = if gru { dhh } else { dxp };
            mm(
                &mut dh,
                (b, h, g),
                &dg[tt * g..],
                (t * g, 1),
                whh,
                (h, 1),
                true,
                par,
            );
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

/// Defines a gate kernel: a function over slices, never inlined (so its slice arguments are
/// known not to alias and its loop vectorizes; inlined into the big per-step function, the
/// LSTM backward loop over eleven slices stayed scalar), its body compiled for AVX2+FMA when
/// the CPU has them (8 lanes), else for the baseline target. `wide` before `fn` adds an
/// AVX-512 build (16 lanes) where the CPU has it, for the kernels it measured faster in.
macro_rules! kernel {
    (wide $(#[$m:meta])* fn $($rest:tt)*) => {
        kernel!(@emit true, $(#[$m])* fn $($rest)*);
    };
    ($(#[$m:meta])* fn $($rest:tt)*) => {
        kernel!(@emit false, $(#[$m])* fn $($rest)*);
    };
    (@emit $wide:literal, $(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline(never)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $wide && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the feature was detected on this CPU just above.
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features were detected on this CPU just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

kernel! {
    /// LSTM backward at one step of one row. `dh` holds the total ∂L/∂h_t; `dc` the ∂L/∂c_t
    /// carried from step t+1 and leaves with ∂L/∂c_{t-1}. Writes the pre-activation
    /// gradients of i, f, g, o.
    #[allow(clippy::too_many_arguments)]
    fn lstm_bwd(
        i: &[f32],
        f: &[f32],
        gg: &[f32],
        og: &[f32],
        c: &[f32],
        dc_out: &[f32],
        c_prev: &[f32],
        di: &mut [f32],
        df: &mut [f32],
        dg: &mut [f32],
        dog: &mut [f32],
        dh: &mut [f32],
        dc: &mut [f32],
    ) {
        let h = dh.len();
        // Exact-length views: no bounds checks in the loop.
        let (i, f, gg, og, c, dc_out, c_prev) =
            (&i[..h], &f[..h], &gg[..h], &og[..h], &c[..h], &dc_out[..h], &c_prev[..h]);
        let (di, df, dg, dog, dc) = (&mut di[..h], &mut df[..h], &mut dg[..h], &mut dog[..h], &mut dc[..h]);
        for j in 0..h {
            let dht = dh[j];
            let tc = tanh(c[j]);
            let dct = dc[j] + dc_out[j] + dht * og[j] * (1.0 - tc * tc);
            di[j] = dct * gg[j] * i[j] * (1.0 - i[j]);
            df[j] = dct * c_prev[j] * f[j] * (1.0 - f[j]);
            dg[j] = dct * i[j] * (1.0 - gg[j] * gg[j]);
            dog[j] = dht * tc * og[j] * (1.0 - og[j]);
            dc[j] = dct * f[j];
        }
    }
}

kernel! {
    /// GRU backward at one step of one row. `dh` holds the total ∂L/∂h_t and leaves with the
    /// part that flows to h_{t-1} directly (z ⊙ ∂L/∂h_t; the rest goes through W_hh). Writes
    /// the pre-activation gradients of the input side (r, z, n) and of h @ W_hh^T + b_hh.
    #[allow(clippy::too_many_arguments)]
    fn gru_bwd(
        r: &[f32],
        z: &[f32],
        n: &[f32],
        hn: &[f32],
        hp: &[f32],
        dxr: &mut [f32],
        dxz: &mut [f32],
        dxn: &mut [f32],
        dqr: &mut [f32],
        dqz: &mut [f32],
        dqn: &mut [f32],
        dh: &mut [f32],
    ) {
        let h = dh.len();
        let (r, z, n, hn, hp) = (&r[..h], &z[..h], &n[..h], &hn[..h], &hp[..h]);
        let (dxr, dxz, dxn) = (&mut dxr[..h], &mut dxz[..h], &mut dxn[..h]);
        let (dqr, dqz, dqn) = (&mut dqr[..h], &mut dqz[..h], &mut dqn[..h]);
        for j in 0..h {
            let dht = dh[j];
            let dan = dht * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
            let dar = dan * hn[j] * r[j] * (1.0 - r[j]);
            let daz = dht * (hp[j] - n[j]) * z[j] * (1.0 - z[j]);
            dxr[j] = dar;
            dxz[j] = daz;
            dxn[j] = dan;
            dqr[j] = dar;
            dqz[j] = daz;
            dqn[j] = dan * r[j];
            dh[j] = dht * z[j];
        }
    }
}

kernel! {
    /// sum += each row of `rows` ([_, sum.len()], row-major): the bias gradients.
    fn sum_rows(sum: &mut [f32], rows: &[f32]) {
        let n = sum.len();
        for row in rows.chunks_exact(n) {
            for (a, v) in sum.iter_mut().zip(&row[..n]) {
                *a += v;
            }
        }
    }
}

kernel! {
    /// Σ v², in 8 independent f32 lanes (a single running sum is one long dependency chain).
    fn sum_squares(v: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let mut chunks = v.chunks_exact(8);
        for c in &mut chunks {
            for (l, x) in lanes.iter_mut().zip(c) {
                *l += x * x;
            }
        }
        chunks.remainder().iter().map(|x| x * x).sum::<f32>() + lanes.iter().sum::<f32>()
    }
}

kernel! {
    wide
    /// One row's gate math at one step, over a worker's hk units: `pre` = h_{t-1} W_hh^T (its
    /// gate columns, gate-major), `x` = the row's input projection, `bx` the input-side
    /// bias (b_ih + b_hh; the GRU's b_hh is in `bhh`). Writes h_t to `h_out`, the LSTM's c_t to `c` and
    /// `c_out`, the GRU's n to `n_out`, and leaves the activations backward needs in `pre`
    /// (lstm: i f g o; gru: r z hn).
    #[allow(clippy::too_many_arguments)]
    fn gates(
        kind: CellKind,
        nonlinearity: Nonlinearity,
        pre: &mut [f32],
        x: &[f32],
        bx: &[f32],
        bhh: &[f32],
        h_prev: &[f32],
        c: &mut [f32],
        h_out: &mut [f32],
        c_out: &mut [f32],
        n_out: &mut [f32],
    ) {
        let hk = h_out.len();
        // Simple loops over exact-length slices, so that they vectorize.
        match kind {
            CellKind::Rnn => {
                let (pre, x, bx, h_out) = (&mut pre[..hk], &x[..hk], &bx[..hk], &mut h_out[..hk]);
                for j in 0..hk {
                    let v = pre[j] + x[j] + bx[j];
                    h_out[j] = match nonlinearity {
                        Nonlinearity::Tanh => tanh(v),
                        Nonlinearity::Relu => v.max(0.0),
                    };
                }
            }
            CellKind::Lstm => {
                // i f (sigmoid), g (tanh), o (sigmoid), each with its input and bias added.
                let (ifo, rest) = pre.split_at_mut(2 * hk);
                let (gg, og) = rest.split_at_mut(hk);
                let (x_if, x_g, x_o) = (&x[..2 * hk], &x[2 * hk..3 * hk], &x[3 * hk..4 * hk]);
                let (b_if, b_g, b_o) = (&bx[..2 * hk], &bx[2 * hk..3 * hk], &bx[3 * hk..4 * hk]);
                for ((v, xv), bv) in ifo.iter_mut().zip(x_if).zip(b_if) {
                    *v = sigmoid(*v + xv + bv);
                }
                for ((v, xv), bv) in og.iter_mut().zip(x_o).zip(b_o) {
                    *v = sigmoid(*v + xv + bv);
                }
                for ((v, xv), bv) in gg.iter_mut().zip(x_g).zip(b_g) {
                    *v = tanh(*v + xv + bv);
                }
                let (i, f) = ifo.split_at(hk);
                let (i, f, gg, og) = (&i[..hk], &f[..hk], &gg[..hk], &og[..hk]);
                let (c, c_out, h_out) = (&mut c[..hk], &mut c_out[..hk], &mut h_out[..hk]);
                for j in 0..hk {
                    let cj = f[j] * c[j] + i[j] * gg[j];
                    c[j] = cj;
                    c_out[j] = cj;
                    h_out[j] = og[j] * tanh(cj);
                }
            }
            CellKind::Gru => {
                let (rz, hn) = pre.split_at_mut(2 * hk);
                for (((p, xv), bv), bh) in rz.iter_mut().zip(x).zip(bx).zip(bhh) {
                    *p = sigmoid(*p + xv + bv + bh);
                }
                for (p, bv) in hn.iter_mut().zip(&bhh[2 * hk..]) {
                    *p += bv;
                }
                let (r, z) = rz.split_at(hk);
                let (xn, bn) = (&x[2 * hk..3 * hk], &bx[2 * hk..3 * hk]);
                let (r, z, hn) = (&r[..hk], &z[..hk], &hn[..hk]);
                let (n_out, h_prev, h_out) = (&mut n_out[..hk], &h_prev[..hk], &mut h_out[..hk]);
                for j in 0..hk {
                    let n = tanh(xn[j] + bn[j] + r[j] * hn[j]);
                    n_out[j] = n;
                    h_out[j] = n + z[j] * (h_prev[j] - n);
                }
            }
        }
    }
}

/// exp with Cephes' single-precision polynomial after range reduction (relative error
/// ~1e-7), branch-free so the gate loops vectorize; libm's expf/tanhf were a fifth of the
/// training time. Written with `mul_add`, which the kernels' AVX2/AVX-512 builds turn into
/// FMA instructions (Rust does not fuse `a * b + c` by itself).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round x/ln2 to the nearest integer by adding 1.5 * 2^23 (no floorf call, vectorizes).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    e * f32::from_bits(((ni + 127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

fn parallelism(m: usize, n: usize, k: usize, allow: bool) -> Parallelism {
    let threads = crate::device::cpu_threads();
    // Below ~2 MFLOP a gemm is done before a second thread has started.
    if allow && threads > 1 && m * n * k >= 1 << 20 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// Flushes denormal floats to zero (x86 MXCSR FTZ + DAZ) while alive, restoring the previous
/// mode on drop. Vanishing gradients over long sequences reach the denormal range, where
/// every arithmetic instruction takes ~100 cycles: a tanh RNN at 256 steps ran 30x slower.
struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr/ldmxcsr only read and write this thread's SSE control register.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved as *mut u32, options(nostack));
                let flushed = saved | 0x8040; // FTZ (bit 15) | DAZ (bit 6)
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flushed as *const u32, options(nostack, readonly));
            }
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the value read in new().
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved as *const u32, options(nostack, readonly));
        }
    }
}

/// W_hh larger than this stays out of one core's L2 (2 MB on this machine, and the step's h
/// and gates need room too): the forward then splits the hidden units between threads, each
/// keeping its share of W_hh resident, instead of splitting the batch.
const UNIT_SPLIT_BYTES: usize = 1 << 20;

/// Hidden units split into one run per thread, on multiples of 16 where the size allows.
/// Returns (first unit, units) pairs.
fn unit_chunks(h: usize, threads: usize) -> Vec<(usize, usize)> {
    let threads = threads.min(h).max(1);
    let edge = |i: usize| {
        let e = h * i / threads;
        if i == threads || h < 16 * threads {
            e
        } else {
            (e + 8) / 16 * 16
        }
    };
    (0..threads)
        .map(|i| (edge(i), edge(i + 1) - edge(i)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The rows of a gate-major matrix ([gates * h, width]) for units u0..u0+hk of each gate
/// (the matrix itself when that is all of them).
fn gate_rows(
    m: &[f32],
    width: usize,
    h: usize,
    gates: usize,
    u0: usize,
    hk: usize,
) -> std::borrow::Cow<'_, [f32]> {
    if u0 == 0 && hk == h {
        return m.into();
    }
    let mut rows = Vec::with_capacity(gates * hk * width);
    for q in 0..gates {
        rows.extend_from_slice(&m[(q * h + u0) * width..][..hk * width]);
    }
    rows.into()
}

/// Batch rows split into one contiguous chunk per thread: each chunk runs the whole sequence
/// on its own core with no synchronisation per step (the grain that suits few cores).
/// Returns (first row, rows) pairs.
fn row_chunks(b: usize) -> Vec<(usize, usize)> {
    const MIN_ROWS: usize = 8;
    let threads = crate::device::cpu_threads().min(b / MIN_ROWS).max(1);
    let base = b / threads;
    let extra = b % threads;
    let mut r0 = 0;
    (0..threads)
        .map(|i| {
            let nb = base + usize::from(i < extra);
            let c = (r0, nb);
            r0 += nb;
            c
        })
        .collect()
}

/// dst[m, n] (+)= a[m, k] @ b[k, n]; each operand given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn mm(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    accumulate: bool,
    par: bool,
) {
    mm_strided(
        dst,
        n,
        (m, n, k),
        a,
        a_strides,
        b,
        b_strides,
        accumulate,
        par,
    )
}

/// a[m, k] @ b[k, n] as a new row-major buffer, written by the gemm without zeroing it first.
fn mm_new(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    par: bool,
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    assert!(
        (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
        "gemm: lhs out of bounds"
    );
    assert!(
        (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "gemm: rhs out of bounds"
    );
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the asserts keep the kernel's reads inside a and b; with read_dst = false the
    // gemm writes all m * n elements of dst (row-major, row stride n) without reading any.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k, par),
        );
        dst.set_len(m * n);
    }
    dst
}

/// a^T @ b for row-major a [k, m] and b [k, n] (rows `b_rs` apart): the weight gradients,
/// dG^T X. Returned column-major ([n, m] row-major, `transpose` it): the gemm runs ~25% faster
/// writing that than a row-major [m, n], for which the crate swaps the operands and packs all
/// of `a`.
fn mm_tn_cols(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (b, b_rs): (&[f32], usize),
    par: bool,
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    assert!(
        a.len() >= k * m && n <= b_rs && (k - 1) * b_rs + n <= b.len(),
        "gemm: operand out of bounds"
    );
    let mut col = Vec::with_capacity(m * n);
    // SAFETY: the assert keeps the kernel's reads inside a and b; with read_dst = false the
    // gemm writes all m * n elements of col (column-major, column stride m), reading none.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            col.as_mut_ptr(),
            m as isize,
            1,
            false,
            a.as_ptr(),
            m as isize,
            1,
            b.as_ptr(),
            1,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k, par),
        );
        col.set_len(m * n);
    }
    col
}

/// dst [cols, rows] = src [rows, cols]^T, both row-major, in 16x16 tiles.
fn transpose(src: &[f32], (rows, cols): (usize, usize), dst: &mut [f32]) {
    const TILE: usize = 16;
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            let cw = TILE.min(cols - c0);
            for r in r0..(r0 + TILE).min(rows) {
                let from = &src[r * cols + c0..][..cw];
                for (d, &v) in dst[c0 * rows + r..].iter_mut().step_by(rows).zip(from) {
                    *d = v;
                }
            }
        }
    }
}

/// `mm` into a dst whose rows are `dst_rs` apart (a block of columns of a wider matrix).
#[allow(clippy::too_many_arguments)]
fn mm_strided(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    accumulate: bool,
    par: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        n <= dst_rs && (m - 1) * dst_rs + n <= dst.len(),
        "gemm: dst too small"
    );
    assert!(
        (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
        "gemm: lhs out of bounds"
    );
    assert!(
        (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "gemm: rhs out of bounds"
    );
    // SAFETY: the asserts above keep every index the kernel touches inside the slices; dst
    // does not alias a or b (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, n, k, par),
        )
    }
}

/// Gate columns per panel of W_hh^T: the forward step's gemm reads W_hh^T as contiguous
/// [hidden, PANEL] panels. As one row-major [hidden, gates*hidden] matrix its rows sit a
/// power of two apart and land on the same cache sets: at hidden 512 the step's gemm ran at
/// 57 GFLOP/s that way and ~120 from panels (examples measured on this machine).
const PANEL: usize = 64;

/// W_hh ([g, h], row-major) as W_hh^T in panels of `PANEL` columns: panel c0 holds columns
/// c0.. (width w) as [h, w] row-major, at offset c0 * h. Transposed in 16x16 tiles, so that
/// reads and writes stay within a few cache lines.
fn pack_panels(whh: &[f32], g: usize, h: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let mut packed = vec![0f32; g * h];
    for c0 in (0..g).step_by(PANEL) {
        let w = PANEL.min(g - c0);
        let panel = &mut packed[c0 * h..][..w * h];
        let rows = &whh[c0 * h..][..w * h];
        for i0 in (0..w).step_by(TILE) {
            for k0 in (0..h).step_by(TILE) {
                let kw = TILE.min(h - k0);
                for i in i0..(i0 + TILE).min(w) {
                    let src = &rows[i * h + k0..][..kw];
                    for (dst, &v) in panel[k0 * w + i..].iter_mut().step_by(w).zip(src) {
                        *dst = v;
                    }
                }
            }
        }
    }
    packed
}

/// hh[b, g] = h[b, hid] @ W_hh^T, W_hh^T given as `pack_panels` panels. `backwards` walks
/// the panels last to first: alternating the direction every step means the panels read
/// last (still in cache) are read first next time, where a fixed order evicts each panel
/// just before its turn once W_hh^T outgrows the L2.
fn step_mm(
    hh: &mut [f32],
    (b, g, hid): (usize, usize, usize),
    h: &[f32],
    panels: &[f32],
    backwards: bool,
    par: bool,
) {
    let starts = (0..g).step_by(PANEL);
    let order: Box<dyn Iterator<Item = usize>> = if backwards {
        Box::new(starts.rev())
    } else {
        Box::new(starts)
    };
    for c0 in order {
        let w = PANEL.min(g - c0);
        mm_strided(
            &mut hh[c0..],
            g,
            (b, w, hid),
            h,
            (hid, 1),
            &panels[c0 * hid..][..w * hid],
            (w, 1),
            false,
            par,
        );
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
        let (b, t, inp) = l1.shape().dims3()?;
        let h = self.hidden;
        let g = self.kind.gates() * h;
        let s = Recurrence::slots(self.kind) * h;
        // Saved gate activations per step; none when no backward will run.
        let sv = if self.keep_for_backward {
            Recurrence::saved_slots(self.kind) * h
        } else {
            0
        };
        let xs = cpu_slice(s1, l1, "x")?;
        let pk = Packed::split(cpu_slice(s2, l2, "parameters")?, g, inp, h)?;
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
        let (mut out, mut saved) = (Vec::new(), Vec::new());
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
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, &(r0, nb, u0, hk)) in parts.iter().enumerate() {
                let x_rows = &xs[r0 * t * inp..(r0 + nb) * t * inp];
                let barrier = split_units.then_some(&barrier);
                let work = move || {
                    let gk = gates_n * hk;
                    // This worker's rows of W_ih, W_hh and the biases (all of them when
                    // the units are not split).
                    let w_ih = gate_rows(w_ih, inp, h, gates_n, u0, hk);
                    let wt = pack_panels(&gate_rows(whh, h, h, gates_n, u0, hk), gk, h);
                    let bx = gate_rows(bx, 1, h, gates_n, u0, hk);
                    let bhh = gate_rows(bhh, 1, h, gates_n, u0, hk);
                    // Its input projection, all steps in one gemm: x W_ih^T (the bias is
                    // added in the gate math).
                    let xp = mm_new((nb * t, gk, inp), x_rows, (inp, 1), &w_ih, (1, inp), par);
                    self.fwd_part(FwdPart {
                        r0,
                        nb,
                        u0,
                        hk,
                        t,
                        xp: &xp,
                        wt: &wt,
                        bx: &bx,
                        bhh: &bhh,
                        out: out_sh,
                        finals,
                        saved: saved_sh,
                        hbuf,
                        barrier,
                        par,
                    })
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
        // SAFETY: the workers wrote every element of both (each row × step × unit once:
        // valid steps by the gate math, padding with zeros; with `finals`, each row × unit
        // at its final step, always a valid one), and none panicked.
        unsafe {
            out.set_len(out_len);
            saved.set_len(b * t * sv);
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
        let (mut dxp, mut dhh, mut hprev, mut dx) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let gq = if gru { g } else { 0 };
        // Each step's [x | h_prev]: one gemm gives dW_ih and dW_hh together (lstm, rnn).
        let ld = inp + h;
        let bufs = [
            Shared::uninit(&mut dxp, b * t * g),
            Shared::uninit(&mut dhh, b * t * gq),
            Shared::uninit(&mut hprev, b * t * ld),
            Shared::uninit(&mut dx, b * t * inp),
        ];
        let plen = g * inp + g * h + 2 * g;
        let chunks = row_chunks(b);
        let par = chunks.len() == 1;
        let mut flow = vec![0f64; t];
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
                    mm(dx_c, (k, inp, g), dxp_c, (g, 1), w_ih, (inp, 1), false, par);
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
                *f = flow.into_iter().map(f64::sqrt).collect();
            }
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
    let packed = Tensor::cat(
        &[
            cell.weight_ih.flatten_all()?,
            cell.weight_hh.flatten_all()?,
            cell.bias_ih.flatten_all()?,
            cell.bias_hh.flatten_all()?,
        ],
        0,
    )?;
    let (x, packed) = if no_grad {
        op.keep_for_backward = false;
        (x.detach(), packed.detach())
    } else {
        (x, packed)
    };
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> = Arc::new(Box::new(op));
    x.apply_op2_arc(&packed, op)
}
/// True when the fused op can run on this tensor's device.
pub fn available(t: &Tensor) -> bool {
    matches!(&*t.storage_and_layout().0, Storage::Cpu(_))
}
