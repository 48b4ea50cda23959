//! Forward: x [batch, seq, input] (or rows of an embedding table) -> every step's output
//! [batch, seq, slots * hidden] (or with `final_only` each row's final state [batch, slots *
//! hidden]); the gate activations backward needs are kept inside the op ([batch, seq,
//! saved_slots * hidden]).

use super::*;

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
    /// Token input: the row of (batch row r, step tt) is `slot[id]` for the token id there,
    /// one per distinct token. Otherwise the worker's own rows, (r - r0) * seq + tt.
    slot: Option<(TokenIds<'a>, &'a [u32])>,
}

impl<'a> XRows<'a> {
    /// The projection of batch row `r` (the worker's `local`-th) at step `tt`.
    #[inline(always)]
    fn at(&self, r: usize, local: usize, tt: usize, t: usize, gk: usize) -> &'a [f32] {
        let row = match self.slot {
            Some((ids, slot)) => slot[ids.at(r, tt) as usize] as usize,
            None => local * t + tt,
        };
        &self.data[row * gk..][..gk]
    }
}

impl Recurrence {
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
        // A carried-in state: each row's c (its h is in the first step's h buffer).
        if let (Some(init), CellKind::Lstm) = (self.init.as_deref(), self.kind) {
            for row in 0..nb {
                let from = &init[(r0 + row) * 2 * h + h + u0..][..hk];
                c[row * hk..][..hk].copy_from_slice(from);
            }
        }
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

    /// The forward pass on CPU data: x [b, t, inp] (or rows of a table) and the cell's
    /// parameters.
    pub(super) fn forward_cpu(
        &self,
        src: LayerInput,
        (b, t, inp): (usize, usize, usize),
        pk: Packed,
        tokens: Option<TokenIds>,
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
        if let Some(init) = self.init.as_deref() {
            let slots = Recurrence::slots(self.kind) * h;
            for (row, h0) in hbufs[0].chunks_exact_mut(h).enumerate() {
                h0.copy_from_slice(&init[row * slots..][..h]);
            }
        }
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
        let distinct = tokens
            .filter(|ids| !split_units && g >= inp && (ids.rows, ids.steps) == (b, t))
            .and_then(Distinct::worth_it);
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
                                slot: Some((d.ids, &d.slot)),
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
/// token d, `slot[id]` the index d of token `id` (vocabulary-sized, not sequence-sized).
struct Distinct<'a> {
    ids: TokenIds<'a>,
    first: Vec<usize>,
    slot: Vec<u32>,
}

impl<'a> Distinct<'a> {
    /// None unless repeats save at least 3% of the rows (below that, gathering the distinct
    /// rows costs about what it saves).
    fn worth_it(ids: TokenIds<'a>) -> Option<Distinct<'a>> {
        let n = ids.rows * ids.steps;
        if n == 0 {
            return None;
        }
        let top = ids.iter().max().map_or(0, |m| m as usize + 1);
        let mut slot = vec![u32::MAX; top];
        let mut first = Vec::new();
        for (p, id) in ids.iter().enumerate() {
            let d = &mut slot[id as usize];
            if *d == u32::MAX {
                *d = first.len() as u32;
                first.push(p);
            }
        }
        (first.len() * 100 <= n * 97).then_some(Distinct { ids, first, slot })
    }
}

/// Token ids [rows, steps] read in place from a u32 tensor's storage: each row's steps
/// contiguous, rows `stride` apart (a view of the first or last steps of longer rows).
#[derive(Clone, Copy)]
pub(super) struct TokenIds<'a> {
    data: &'a [u32],
    pub(super) rows: usize,
    pub(super) steps: usize,
    stride: usize,
}

impl<'a> TokenIds<'a> {
    pub(super) fn of(
        storage: &'a candle_core::Storage,
        layout: &Layout,
    ) -> candle_core::Result<TokenIds<'a>> {
        let candle_core::Storage::Cpu(CpuStorage::U32(v)) = storage else {
            candle_core::bail!("rnnlab recurrence: token ids must be u32 on the CPU");
        };
        let (rows, steps) = layout.shape().dims2()?;
        let (stride, unit) = (layout.stride()[0], layout.stride()[1]);
        if unit != 1 && steps > 1 {
            candle_core::bail!("rnnlab recurrence: token ids must be contiguous along a row");
        }
        let start = layout.start_offset();
        let end = if rows == 0 {
            start
        } else {
            start + (rows - 1) * stride + steps
        };
        if end > v.len() {
            candle_core::bail!("rnnlab recurrence: token ids outside their storage");
        }
        Ok(TokenIds {
            data: &v[start..end],
            rows,
            steps,
            stride,
        })
    }

    /// The id at row `r`, step `s`.
    #[inline(always)]
    fn at(self, r: usize, s: usize) -> u32 {
        self.data[r * self.stride + s]
    }

    /// The id at position p = row * steps + step.
    #[inline(always)]
    fn at_position(self, p: usize) -> u32 {
        self.at(p / self.steps, p % self.steps)
    }

    /// Every id, row by row.
    pub(super) fn iter(self) -> impl Iterator<Item = u32> + 'a {
        (0..self.rows).flat_map(move |r| self.data[r * self.stride..][..self.steps].iter().copied())
    }
}

/// The layer input x: its rows ([batch, seq, input]), or an embedding table ([vocab, input])
/// and the op's `tokens` (inference reads the rows straight from the table).
#[derive(Clone, Copy)]
pub(super) enum LayerInput<'a> {
    Rows(&'a [f32]),
    Table(&'a [f32], TokenIds<'a>),
}

impl<'a> LayerInput<'a> {
    /// Row p (= row * seq + step) of x.
    fn row(self, p: usize, inp: usize) -> &'a [f32] {
        match self {
            LayerInput::Rows(x) => &x[p * inp..][..inp],
            LayerInput::Table(w, ids) => &w[ids.at_position(p) as usize * inp..][..inp],
        }
    }

    /// Rows p0..p1 of x, contiguous (gathered from the table).
    fn rows(self, p0: usize, p1: usize, inp: usize) -> std::borrow::Cow<'a, [f32]> {
        match self {
            LayerInput::Rows(x) => x[p0 * inp..p1 * inp].into(),
            LayerInput::Table(..) => {
                let mut v = Vec::with_capacity((p1 - p0) * inp);
                for p in p0..p1 {
                    v.extend_from_slice(self.row(p, inp));
                }
                v.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Distinct, TokenIds};
    use candle_core::{Device, Tensor};

    #[test]
    fn distinct_tokens_map_each_position_to_its_first_occurrence() {
        fn all(v: &[u32]) -> TokenIds<'_> {
            TokenIds {
                data: v,
                rows: 1,
                steps: v.len(),
                stride: v.len(),
            }
        }
        let d = Distinct::worth_it(all(&[5, 3, 5, 5, 9, 3])).expect("repeats");
        assert_eq!(d.first, [0, 1, 4]);
        assert_eq!((d.slot[5], d.slot[3], d.slot[9]), (0, 1, 2));
        // All distinct: nothing to save, every row projected as it is.
        assert!(Distinct::worth_it(all(&[1, 2, 3, 4])).is_none());
    }

    #[test]
    fn token_ids_read_a_cut_view_in_place() {
        let ids = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 8, 9, 10]], &Device::Cpu).unwrap();
        for (start, len) in [(0, 2), (2, 3), (0, 5)] {
            let view = ids.narrow(1, start, len).unwrap();
            let (storage, layout) = view.storage_and_layout();
            let t = TokenIds::of(&storage, layout).unwrap();
            let want: Vec<u32> = view.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(t.iter().collect::<Vec<_>>(), want);
            let by_position: Vec<u32> = (0..2 * len).map(|p| t.at_position(p)).collect();
            assert_eq!(by_position, want);
        }
        let f = Tensor::new(&[[1f32]], &Device::Cpu).unwrap();
        let (storage, layout) = f.storage_and_layout();
        assert!(TokenIds::of(&storage, layout).is_err());
    }
}
