//! Backward: from ∂L/∂(every step's output) [batch, seq, slots * hidden] (or of each row's
//! final state [batch, slots * hidden]) to ∂L/∂x [batch, seq, input] and ∂L/∂ of the packed
//! parameters [W_ih, W_hh, b_ih, b_hh], by chunks of batch rows.

use super::*;

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
    /// The carried-in state of these rows, [rows, slots * hidden] (see `Recurrence::init`).
    init: Option<&'a [f32]>,
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

impl Recurrence {
    /// The gradients of x and of the packed parameters from the gradient of the op's output
    /// (`res`: that output).
    pub(super) fn backward(
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
                    init: self.init.as_deref().map(|v| &v[r0 * s..(r0 + nb) * s]),
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
                // Before the first step: the carried-in state, else zeros.
                let first = rows.init.map(|v| &v[row * s..][..s]);
                let prev = prev.or(first);
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
}
