//! The CNN frame encoder's fast CPU path: the whole conv stack (per block Conv2d 3x3 with
//! padding 1 and bias -> [BatchNorm2d] -> ReLU -> 2x2 max-pool, then global average pooling) as
//! one candle custom op with its own backward, so no intermediate ever becomes a candle tensor.
//!
//! Frames are split between threads by frame; inside, activations are kept channels-last
//! ([frame, y, x, channel]), so that a run of frames is one contiguous block of rows and each
//! conv is one gemm per run of frames: im2col rows [pixel, (ky, kx, channel)] times the weight
//! as [(ky, kx, channel), out]. Bias, batch statistics, normalization, ReLU and pooling are
//! single passes over the gemm's output while it is still in cache. Backward rebuilds each
//! block's im2col rows and its pooling choices from the conv outputs forward kept, one run of
//! frames at a time, so the only full-size buffers are those outputs and one gradient per block.
//!
//! Semantics are PyTorch's (and `encoder.rs`'s composed path, which the tests compare):
//! batch norm uses the batch's mean and biased variance in training (the op reports them for
//! the running statistics) and the running ones otherwise; max-pool takes the first maximum of
//! each window and drops an odd last row or column; a block whose input is smaller than 2x2 is
//! not pooled.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::kernels::FlushDenormals;
use super::matmul::mm;
use super::split::{recycle, take};
use super::{cpu_slice, storage_slice};

/// Batch norm's epsilon, as PyTorch.
pub const BN_EPS: f64 = 1e-5;

/// im2col floats per gemm (a run of frames): 2 MiB, a share of the L2/L3 the gemm streams
/// through while its output stays in cache for the passes that follow.
const COL_BUDGET: usize = 1 << 19;

/// Each block's batch statistics from a training forward.
pub type BatchStats = Arc<Mutex<Vec<Moments>>>;

/// One block's batch statistics per channel, and how many values each covers (frames x
/// pixels: the running variance's unbiasing needs it).
#[derive(Debug, Clone, Default)]
pub struct Moments {
    pub mean: Vec<f32>,
    /// Biased (divided by `count`).
    pub var: Vec<f32>,
    pub count: usize,
}

/// One block's geometry: conv input channels, output channels, spatial size (the conv keeps
/// it), and whether a 2x2 max-pool follows.
#[derive(Clone, Copy, Debug)]
struct Block {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    pool: bool,
}

impl Block {
    fn k(&self) -> usize {
        9 * self.cin
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn out_hw(&self) -> (usize, usize) {
        if self.pool {
            (self.h / 2, self.w / 2)
        } else {
            (self.h, self.w)
        }
    }
    fn out_len(&self) -> usize {
        let (h, w) = self.out_hw();
        h * w * self.cout
    }
    /// Frames per gemm: as many as fit `COL_BUDGET` im2col floats, at least one.
    fn run_len(&self) -> usize {
        (COL_BUDGET / (self.hw() * self.k())).max(1)
    }
}

/// One block's parameters in the packed tensor, in PyTorch's layout.
struct BlockParams<'a> {
    /// [cout, cin, 3, 3].
    weight: &'a [f32],
    bias: &'a [f32],
    /// Batch norm's weight and bias, with `batch_norm`.
    gamma: &'a [f32],
    beta: &'a [f32],
}

/// What forward keeps of one block for backward.
#[derive(Default)]
struct Saved {
    /// Conv output with bias, [frames, h, w, cout].
    z: Vec<f32>,
    /// Per channel: batch mean and 1/sqrt(var + eps) (batch norm), or 0 and 1.
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// Block output (normalized, ReLU, pooled), [frames, h', w', cout]: the next block's input.
    out: Vec<f32>,
}

/// The conv stack of `encoder.rs` as one op: x [frames, channels, height, width] and the packed
/// parameters (per block weight, bias and, with batch norm, its weight and bias, flattened in
/// that order) -> [frames, last width].
pub struct ConvStack {
    widths: Vec<usize>,
    batch_norm: bool,
    /// Evaluation: batch norm with these running (mean, variance) per block; None in training.
    running: Option<Vec<(Vec<f32>, Vec<f32>)>>,
    /// Keep what backward needs (off under no_grad).
    keep: bool,
    stats: BatchStats,
    saved: Mutex<Vec<Saved>>,
}

impl ConvStack {
    pub fn new(
        widths: Vec<usize>,
        batch_norm: bool,
        running: Option<Vec<(Vec<f32>, Vec<f32>)>>,
        keep: bool,
        stats: BatchStats,
    ) -> ConvStack {
        ConvStack {
            widths,
            batch_norm,
            running,
            keep,
            stats,
            saved: Mutex::new(Vec::new()),
        }
    }

    fn blocks(&self, c: usize, h: usize, w: usize) -> Vec<Block> {
        let (mut c, mut h, mut w) = (c, h, w);
        let mut blocks = Vec::new();
        for &cout in &self.widths {
            let b = Block {
                cin: c,
                cout,
                h,
                w,
                pool: h >= 2 && w >= 2,
            };
            (h, w) = b.out_hw();
            c = cout;
            blocks.push(b);
        }
        blocks
    }

    /// Splits the packed parameters by block.
    fn params<'a>(
        &self,
        packed: &'a [f32],
        blocks: &[Block],
    ) -> candle_core::Result<Vec<BlockParams<'a>>> {
        let mut rest = packed;
        let mut take = |n: usize| -> candle_core::Result<&'a [f32]> {
            if rest.len() < n {
                candle_core::bail!("rnnlab conv stack: packed parameters too short");
            }
            let (a, b) = rest.split_at(n);
            rest = b;
            Ok(a)
        };
        let mut out = Vec::new();
        for b in blocks {
            let weight = take(b.cout * b.k())?;
            let bias = take(b.cout)?;
            let (gamma, beta) = if self.batch_norm {
                (take(b.cout)?, take(b.cout)?)
            } else {
                (&[][..], &[][..])
            };
            out.push(BlockParams {
                weight,
                bias,
                gamma,
                beta,
            });
        }
        if !rest.is_empty() {
            candle_core::bail!("rnnlab conv stack: packed parameters too long");
        }
        Ok(out)
    }

    fn forward(
        &self,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        packed: &[f32],
    ) -> candle_core::Result<Vec<f32>> {
        let blocks = self.blocks(c, h, w);
        let params = self.params(packed, &blocks)?;
        let frames = thread_ranges(n);
        let mut saved: Vec<Saved> = Vec::new();
        let mut stats = Vec::new();
        for (k, (&b, p)) in blocks.iter().zip(&params).enumerate() {
            let input = match saved.last() {
                None => Input::Planes(x),
                Some(s) => Input::Pixels(&s.out),
            };
            let wt = weight_rows(p.weight, &b);
            let mut s = Saved {
                out: zeroed(n * b.out_len()),
                ..Saved::default()
            };
            let training_norm = self.batch_norm && self.running.is_none();
            if self.keep || training_norm {
                // The conv output is kept whole: for backward, or for the batch's statistics.
                s.z = zeroed(n * b.hw() * b.cout);
                let sums = per_thread(&frames, split_mut(&mut s.z, &frames, b.hw() * b.cout), {
                    let wt = &wt;
                    move |r, z| conv_frames(b, input, wt, p.bias, r, z, training_norm)
                });
                (s.mean, s.invstd) = if training_norm {
                    let (mean, var) = reduce_stats(sums, n * b.hw(), b.cout);
                    let invstd = invstd(&var);
                    stats.push(Moments {
                        mean: mean.clone(),
                        var,
                        count: n * b.hw(),
                    });
                    (mean, invstd)
                } else {
                    self.norm_of(k, b.cout)
                };
                let (scale, shift) = affine(&s.mean, &s.invstd, p, self.batch_norm);
                let z = &s.z;
                per_thread(
                    &frames,
                    split_mut(&mut s.out, &frames, b.out_len()),
                    |r, out| {
                        let zs = &z[r.start * b.hw() * b.cout..r.end * b.hw() * b.cout];
                        pool_frames(b, zs, &scale, &shift, out)
                    },
                );
            } else {
                // Evaluation without backward: each run's conv output is scratch, pooled at once.
                (s.mean, s.invstd) = self.norm_of(k, b.cout);
                let (scale, shift) = affine(&s.mean, &s.invstd, p, self.batch_norm);
                let wt = &wt;
                let (scale, shift) = (&scale, &shift);
                per_thread(
                    &frames,
                    split_mut(&mut s.out, &frames, b.out_len()),
                    move |r, out| {
                        let mut col = Vec::new();
                        let mut z = Vec::new();
                        for run in runs(r.clone(), b.run_len()) {
                            let rows = run.len() * b.hw();
                            im2col(b, input, run.clone(), &mut col);
                            z.resize(rows * b.cout, 0.0);
                            conv_gemm(b, &col, wt, p.bias, &mut z);
                            let o = (run.start - r.start) * b.out_len();
                            pool_frames(
                                b,
                                &z,
                                scale,
                                shift,
                                &mut out[o..][..run.len() * b.out_len()],
                            );
                        }
                    },
                );
            }
            if !self.keep {
                recycle(std::mem::take(&mut s.z));
            }
            saved.push(s);
        }
        if let Ok(mut sink) = self.stats.lock() {
            *sink = stats;
        }
        // Global average pooling.
        let (last, d) = match blocks.last() {
            Some(b) => (b.out_hw(), b.cout),
            None => candle_core::bail!("rnnlab conv stack: no conv blocks"),
        };
        let px = last.0 * last.1;
        let top = &saved[saved.len() - 1].out;
        let mut feat = vec![0f32; n * d];
        for (f, row) in feat.chunks_mut(d).enumerate() {
            for p in top[f * px * d..(f + 1) * px * d].chunks(d) {
                row.iter_mut().zip(p).for_each(|(a, v)| *a += v);
            }
            let inv = 1.0 / px.max(1) as f32;
            row.iter_mut().for_each(|a| *a *= inv);
        }
        if self.keep {
            if let Ok(mut keep) = self.saved.lock() {
                *keep = saved;
            }
        } else {
            for s in saved {
                recycle(s.out);
            }
        }
        Ok(feat)
    }

    /// Evaluation's normalization of block `k` (running statistics), or none (0, 1).
    fn norm_of(&self, k: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
        match (&self.running, self.batch_norm) {
            (Some(run), true) => {
                let (mean, var) = &run[k];
                (mean.clone(), invstd(var))
            }
            _ => (vec![0.0; c], vec![1.0; c]),
        }
    }

    fn backward(
        &self,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        packed: &[f32],
        dfeat: &[f32],
    ) -> candle_core::Result<Vec<f32>> {
        let blocks = self.blocks(c, h, w);
        let params = self.params(packed, &blocks)?;
        let saved = match self.saved.lock() {
            Ok(mut keep) => std::mem::take(&mut *keep),
            Err(_) => candle_core::bail!("rnnlab conv stack: saved activations unavailable"),
        };
        if saved.len() != blocks.len() || saved.iter().any(|s| s.z.is_empty()) {
            candle_core::bail!("rnnlab conv stack: backward ran twice or before forward");
        }
        let frames = thread_ranges(n);
        // ∂L/∂(top block's output): the average pool's gradient, spread over its pixels.
        let top = blocks[blocks.len() - 1];
        let (oh, ow) = top.out_hw();
        let px = oh * ow;
        let d = top.cout;
        let mut dout = vec![0f32; n * px * d];
        for (f, g) in dout.chunks_mut(px * d).enumerate() {
            let src = &dfeat[f * d..(f + 1) * d];
            for p in g.chunks_mut(d) {
                p.iter_mut()
                    .zip(src)
                    .for_each(|(a, v)| *a = v / px.max(1) as f32);
            }
        }
        let mut grads: Vec<Vec<f32>> = Vec::new();
        for k in (0..blocks.len()).rev() {
            let (b, p, s) = (blocks[k], &params[k], &saved[k]);
            let input = if k == 0 {
                Input::Planes(x)
            } else {
                Input::Pixels(&saved[k - 1].out)
            };
            let (scale, shift) = affine(&s.mean, &s.invstd, p, self.batch_norm);
            let zlen = b.hw() * b.cout;
            let olen = b.out_len();
            // Batch norm: per channel, sum g and sum g * xhat over the batch (g = ∂L/∂(norm
            // output)): its bias's and weight's gradients, and in training part of ∂L/∂z.
            let (sg, sgx) = if self.batch_norm {
                let sums = per_thread(&frames, vec![(); frames.len()], |r, ()| {
                    let mut sg = vec![0f64; b.cout];
                    let mut sgx = vec![0f64; b.cout];
                    let mut g = vec![0f32; zlen];
                    for f in r {
                        let z = &s.z[f * zlen..][..zlen];
                        unpool_frames(b, z, &scale, &shift, &dout[f * olen..][..olen], &mut g);
                        norm_sums(z, &g, &s.mean, &s.invstd, &mut sg, &mut sgx);
                    }
                    (sg, sgx)
                });
                let mut sg = vec![0f64; b.cout];
                let mut sgx = vec![0f64; b.cout];
                for (a, ax) in sums {
                    add_f64(&mut sg, &a);
                    add_f64(&mut sgx, &ax);
                }
                (sg, sgx)
            } else {
                (Vec::new(), Vec::new())
            };
            // ∂L/∂z = scale * (g - mean(g) - xhat * mean(g * xhat)) with the batch's statistics,
            // scale * g with running ones.
            let m = (n * b.hw()).max(1) as f64;
            let (mg, mgx): (Vec<f32>, Vec<f32>) = if self.running.is_none() {
                (
                    sg.iter().map(|v| (v / m) as f32).collect(),
                    sgx.iter().map(|v| (v / m) as f32).collect(),
                )
            } else {
                (vec![0.0; sg.len()], vec![0.0; sg.len()])
            };
            let mut dx = if k > 0 {
                zeroed(n * b.hw() * b.cin)
            } else {
                Vec::new()
            };
            let dx_parts = if k > 0 {
                split_mut(&mut dx, &frames, b.hw() * b.cin)
                    .into_iter()
                    .map(Some)
                    .collect()
            } else {
                frames.iter().map(|_| None).collect::<Vec<_>>()
            };
            let wt = weight_rows(p.weight, &b);
            let parts = per_thread(&frames, dx_parts, |r, mut dx: Option<&mut [f32]>| {
                let mut dwt = vec![0f32; b.k() * b.cout];
                let mut db = vec![0f64; b.cout];
                let mut col = Vec::new();
                let mut g = Vec::new();
                for run in runs(r.clone(), b.run_len()) {
                    let rows = run.len() * b.hw();
                    g.resize(rows * b.cout, 0.0);
                    for (i, f) in run.clone().enumerate() {
                        let gz = &mut g[i * zlen..][..zlen];
                        let z = &s.z[f * zlen..][..zlen];
                        unpool_frames(b, z, &scale, &shift, &dout[f * olen..][..olen], gz);
                        if self.batch_norm {
                            for (gp, zp) in gz.chunks_mut(b.cout).zip(z.chunks(b.cout)) {
                                norm_bwd(gp, zp, &s.mean, &s.invstd, &scale, &mg, &mgx);
                            }
                        }
                    }
                    col_sums(&g, b.cout, &mut db);
                    im2col(b, input, run.clone(), &mut col);
                    // dW^T [k, cout] += col^T [k, rows] @ dz [rows, cout].
                    mm(
                        &mut dwt,
                        b.cout,
                        (b.k(), b.cout, rows),
                        &col,
                        (1, b.k()),
                        &g,
                        (b.cout, 1),
                        true,
                        false,
                    );
                    if let Some(dx) = dx.as_deref_mut() {
                        // dcol [rows, k] = dz [rows, cout] @ W [cout, k] (into col's room).
                        mm(
                            &mut col,
                            b.k(),
                            (rows, b.k(), b.cout),
                            &g,
                            (b.cout, 1),
                            &wt,
                            (1, b.cout),
                            false,
                            false,
                        );
                        let o = (run.start - r.start) * b.hw() * b.cin;
                        col2im(b, &col, &mut dx[o..][..run.len() * b.hw() * b.cin]);
                    }
                }
                (dwt, db)
            });
            // This block's gradients, packed as its parameters are.
            let mut dwt = vec![0f32; b.k() * b.cout];
            let mut db = vec![0f64; b.cout];
            for (w_, b_) in parts {
                add_into(&mut dwt, &w_);
                add_f64(&mut db, &b_);
            }
            let mut g = weight_from_rows(&dwt, &b);
            g.extend(db.iter().map(|&v| v as f32));
            if self.batch_norm {
                g.extend(sgx.iter().map(|&v| v as f32));
                g.extend(sg.iter().map(|&v| v as f32));
            }
            grads.push(g);
            recycle(std::mem::replace(&mut dout, dx));
        }
        for s in saved {
            recycle(s.z);
            recycle(s.out);
        }
        Ok(grads.into_iter().rev().flatten().collect())
    }
}

/// Per channel, the normalize-and-affine as one multiply-add: scale = gamma * invstd, shift =
/// beta - mean * scale (without batch norm, 1 and 0).
fn affine(mean: &[f32], invstd: &[f32], p: &BlockParams, batch_norm: bool) -> (Vec<f32>, Vec<f32>) {
    if !batch_norm {
        return (vec![1.0; mean.len()], vec![0.0; mean.len()]);
    }
    let scale: Vec<f32> = p.gamma.iter().zip(invstd).map(|(g, s)| g * s).collect();
    let shift = p
        .beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// 1 / sqrt(var + eps) per channel.
fn invstd(var: &[f32]) -> Vec<f32> {
    var.iter()
        .map(|v| (1.0 / (*v as f64 + BN_EPS).sqrt()) as f32)
        .collect()
}

/// acc += v, element by element (per-thread partial sums).
fn add_f64(acc: &mut [f64], v: &[f64]) {
    acc.iter_mut().zip(v).for_each(|(a, x)| *a += x);
}

/// The batch's mean and biased variance per channel from each thread's (sum, sum of squares).
fn reduce_stats(sums: Vec<(Vec<f64>, Vec<f64>)>, m: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s = vec![0f64; c];
    let mut q = vec![0f64; c];
    for (a, b) in sums {
        add_f64(&mut s, &a);
        add_f64(&mut q, &b);
    }
    let m = m.max(1) as f64;
    let mean: Vec<f64> = s.iter().map(|v| v / m).collect();
    let var = q
        .iter()
        .zip(&mean)
        .map(|(q, mu)| (q / m - mu * mu).max(0.0) as f32)
        .collect();
    (mean.into_iter().map(|v| v as f32).collect(), var)
}

/// Where a block reads its input: the op's x ([frame, channel, y, x], block 0) or the previous
/// block's output ([frame, y, x, channel]).
#[derive(Clone, Copy)]
enum Input<'a> {
    Planes(&'a [f32]),
    Pixels(&'a [f32]),
}

/// The weight [cout, cin, 3, 3] as gemm rows [(ky, kx, cin), cout].
fn weight_rows(w: &[f32], b: &Block) -> Vec<f32> {
    let mut rows = vec![0f32; b.k() * b.cout];
    for co in 0..b.cout {
        for ci in 0..b.cin {
            for tap in 0..9 {
                rows[(tap * b.cin + ci) * b.cout + co] = w[(co * b.cin + ci) * 9 + tap];
            }
        }
    }
    rows
}

/// `weight_rows`' inverse: a gradient in gemm rows back to [cout, cin, 3, 3].
fn weight_from_rows(rows: &[f32], b: &Block) -> Vec<f32> {
    let mut w = vec![0f32; b.k() * b.cout];
    for co in 0..b.cout {
        for ci in 0..b.cin {
            for tap in 0..9 {
                w[(co * b.cin + ci) * 9 + tap] = rows[(tap * b.cin + ci) * b.cout + co];
            }
        }
    }
    w
}

/// im2col rows for `frames`: row (frame, y, x) holds the 3x3 neighbourhood as (ky, kx,
/// channel), zero outside the frame. `col` is resized to fit.
fn im2col(b: Block, input: Input, frames: Range<usize>, col: &mut Vec<f32>) {
    let (h, w, c, k) = (b.h, b.w, b.cin, b.k());
    col.resize(frames.len() * b.hw() * k, 0.0);
    for (i, f) in frames.enumerate() {
        for y in 0..h {
            for x in 0..w {
                let row = &mut col[((i * h + y) * w + x) * k..][..k];
                for ky in 0..3 {
                    let taps = &mut row[ky * 3 * c..][..3 * c];
                    let yy = y + ky;
                    if yy == 0 || yy > h {
                        taps.fill(0.0);
                        continue;
                    }
                    let yy = yy - 1;
                    // Columns x-1..=x+1 that lie inside the frame.
                    let lo = x.saturating_sub(1);
                    let hi = (x + 1).min(w - 1);
                    let first = lo + 1 - x; // tap index of column lo
                    taps[..first * c].fill(0.0);
                    taps[(first + hi - lo + 1) * c..].fill(0.0);
                    let dst = &mut taps[first * c..(first + hi - lo + 1) * c];
                    match input {
                        Input::Pixels(data) => {
                            dst.copy_from_slice(&data[((f * h + yy) * w + lo) * c..][..dst.len()])
                        }
                        Input::Planes(data) => {
                            for (j, xx) in (lo..=hi).enumerate() {
                                for ci in 0..c {
                                    dst[j * c + ci] = data[((f * c + ci) * h + yy) * w + xx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `im2col`'s adjoint: adds each row of `dcol` back onto the pixels it was read from. `dx`
/// holds the run's frames, [frame, y, x, channel], zeroed by the caller.
fn col2im(b: Block, dcol: &[f32], dx: &mut [f32]) {
    let (h, w, c, k) = (b.h, b.w, b.cin, b.k());
    let frames = dx.len() / (b.hw() * c);
    for i in 0..frames {
        for y in 0..h {
            for x in 0..w {
                let row = &dcol[((i * h + y) * w + x) * k..][..k];
                for ky in 0..3 {
                    let yy = y + ky;
                    if yy == 0 || yy > h {
                        continue;
                    }
                    let yy = yy - 1;
                    let lo = x.saturating_sub(1);
                    let hi = (x + 1).min(w - 1);
                    let first = lo + 1 - x;
                    let src = &row[(ky * 3 + first) * c..][..(hi - lo + 1) * c];
                    let dst = &mut dx[((i * h + yy) * w + lo) * c..][..src.len()];
                    add_into(dst, src);
                }
            }
        }
    }
}

/// Conv of `frames` into `z` (their rows, [frame, y, x, cout]) with bias, a run at a time;
/// with `stats`, also each channel's sum and sum of squares over them.
fn conv_frames(
    b: Block,
    input: Input,
    wt: &[f32],
    bias: &[f32],
    frames: Range<usize>,
    z: &mut [f32],
    stats: bool,
) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0f64; if stats { b.cout } else { 0 }];
    let mut sq = sum.clone();
    let mut col = Vec::new();
    let per = b.hw() * b.cout;
    for run in runs(frames.clone(), b.run_len()) {
        im2col(b, input, run.clone(), &mut col);
        let zr = &mut z[(run.start - frames.start) * per..][..run.len() * per];
        conv_gemm(b, &col, wt, bias, zr);
        if stats {
            channel_sums(zr, b.cout, &mut sum, &mut sq);
        }
    }
    (sum, sq)
}

/// z [rows, cout] = col [rows, k] @ wt [k, cout] + bias.
fn conv_gemm(b: Block, col: &[f32], wt: &[f32], bias: &[f32], z: &mut [f32]) {
    let rows = z.len() / b.cout;
    mm(
        z,
        b.cout,
        (rows, b.cout, b.k()),
        col,
        (b.k(), 1),
        wt,
        (b.cout, 1),
        false,
        false,
    );
    for p in z.chunks_mut(b.cout) {
        add_into(p, bias);
    }
}

/// Normalize (scale, shift), ReLU and 2x2 max-pool each frame of `z` ([frame, h, w, cout])
/// into `out` ([frame, h', w', cout]); without pooling, just the first two.
fn pool_frames(b: Block, z: &[f32], scale: &[f32], shift: &[f32], out: &mut [f32]) {
    let (c, w) = (b.cout, b.w);
    let (oh, ow) = b.out_hw();
    for (zf, of) in z.chunks(b.hw() * c).zip(out.chunks_mut(oh * ow * c)) {
        if !b.pool {
            for (zp, op) in zf.chunks(c).zip(of.chunks_mut(c)) {
                norm_relu(zp, scale, shift, op);
            }
            continue;
        }
        for py in 0..oh {
            for px in 0..ow {
                let p00 = (2 * py * w + 2 * px) * c;
                let p10 = p00 + w * c;
                pool4(
                    [
                        &zf[p00..][..c],
                        &zf[p00 + c..][..c],
                        &zf[p10..][..c],
                        &zf[p10 + c..][..c],
                    ],
                    scale,
                    shift,
                    &mut of[(py * ow + px) * c..][..c],
                );
            }
        }
    }
}

/// Pooling's (and ReLU's) adjoint for one frame: g ([h, w, cout], overwritten) gets `dout` at
/// each window's first maximum where that maximum is positive, zero elsewhere.
fn unpool_frames(b: Block, z: &[f32], scale: &[f32], shift: &[f32], dout: &[f32], g: &mut [f32]) {
    let (c, w) = (b.cout, b.w);
    let (oh, ow) = b.out_hw();
    g.fill(0.0);
    if !b.pool {
        for ((zp, dp), gp) in z.chunks(c).zip(dout.chunks(c)).zip(g.chunks_mut(c)) {
            relu_bwd(zp, scale, shift, dp, gp);
        }
        return;
    }
    for py in 0..oh {
        // The window's two rows: pixels (2px, 2px+1) of rows 2py and 2py+1.
        let (top, bottom) = g[2 * py * w * c..].split_at_mut(w * c);
        let zt = &z[2 * py * w * c..][..w * c];
        let zb = &z[(2 * py + 1) * w * c..][..w * c];
        for px in 0..ow {
            let o = 2 * px * c;
            unpool4(
                [&zt[o..][..2 * c], &zb[o..][..2 * c]],
                scale,
                shift,
                &dout[(py * ow + px) * c..][..c],
                [&mut top[o..][..2 * c], &mut bottom[o..][..2 * c]],
            );
        }
    }
}

/// `n` zeros in a buffer from the scratch pool: the big activations would otherwise be fresh
/// pages every step (page faults and, when freed, TLB shootdowns: ~10% of a training step).
fn zeroed(n: usize) -> Vec<f32> {
    let mut v = take(n);
    v.resize(n, 0.0);
    v
}

/// Frame ranges, one per thread, in order.
fn thread_ranges(n: usize) -> Vec<Range<usize>> {
    let t = crate::device::cpu_threads().clamp(1, n.max(1));
    (0..t).map(|i| i * n / t..(i + 1) * n / t).collect()
}

/// Runs of at most `len` frames covering `frames`.
fn runs(frames: Range<usize>, len: usize) -> impl Iterator<Item = Range<usize>> {
    let end = frames.end;
    frames.step_by(len).map(move |s| s..(s + len).min(end))
}

/// `buf` cut at the thread ranges' frame boundaries (`per` floats a frame).
fn split_mut<'a>(buf: &'a mut [f32], ranges: &[Range<usize>], per: usize) -> Vec<&'a mut [f32]> {
    let mut rest = buf;
    let mut parts = Vec::new();
    for r in ranges {
        let (a, b) = std::mem::take(&mut rest).split_at_mut(r.len() * per);
        parts.push(a);
        rest = b;
    }
    parts
}

/// `work(range, part)` for each thread's frames, on its own thread (the first on this one);
/// the results in range order.
fn per_thread<P: Send, R: Send>(
    ranges: &[Range<usize>],
    parts: Vec<P>,
    work: impl Fn(Range<usize>, P) -> R + Sync,
) -> Vec<R> {
    let work = &work;
    std::thread::scope(|scope| {
        let mut jobs = ranges.iter().cloned().zip(parts);
        let first = jobs.next();
        let handles: Vec<_> = jobs
            .map(|(r, p)| {
                scope.spawn(move || {
                    let _ftz = FlushDenormals::new();
                    work(r, p)
                })
            })
            .collect();
        let mut out = Vec::new();
        if let Some((r, p)) = first {
            let _ftz = FlushDenormals::new();
            out.push(work(r, p));
        }
        for h in handles {
            match h.join() {
                Ok(v) => out.push(v),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    })
}

/// Per channel of `g` ([pixels, c]): sums into `sums`.
fn col_sums(g: &[f32], c: usize, sums: &mut [f64]) {
    let mut acc = vec![0f32; c];
    for p in g.chunks(c) {
        add_into(&mut acc, p);
    }
    sums.iter_mut().zip(&acc).for_each(|(s, v)| *s += *v as f64);
}

/// Sum g into `sg` and g * xhat into `sgx`, per channel, over one frame's pixels.
fn norm_sums(z: &[f32], g: &[f32], mean: &[f32], invstd: &[f32], sg: &mut [f64], sgx: &mut [f64]) {
    let c = mean.len();
    let mut a = vec![0f32; c];
    let mut ax = vec![0f32; c];
    for (zp, gp) in z.chunks(c).zip(g.chunks(c)) {
        norm_sums_pixel(zp, gp, mean, invstd, &mut a, &mut ax);
    }
    sg.iter_mut().zip(&a).for_each(|(s, v)| *s += *v as f64);
    sgx.iter_mut().zip(&ax).for_each(|(s, v)| *s += *v as f64);
}

kernel! {
    /// a += b.
    fn add_into(a: &mut [f32], b: &[f32]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

kernel! {
    /// Per channel of `z` ([pixels, c]): sum and sum of squares into f64.
    fn channel_sums(z: &[f32], c: usize, sum: &mut [f64], sq: &mut [f64]) {
        // f32 partials over at most 64 pixels, then f64: exact enough and vectorized.
        let mut s = vec![0f32; c];
        let mut q = vec![0f32; c];
        for block in z.chunks(64 * c) {
            for p in block.chunks(c) {
                for ((a, b), v) in s.iter_mut().zip(q.iter_mut()).zip(p) {
                    *a += v;
                    *b += v * v;
                }
            }
            for i in 0..c {
                sum[i] += s[i] as f64;
                sq[i] += q[i] as f64;
                s[i] = 0.0;
                q[i] = 0.0;
            }
        }
    }
}

kernel! {
    /// out = max(max of the four pixels' z * scale + shift, 0).
    fn pool4(z: [&[f32]; 4], scale: &[f32], shift: &[f32], out: &mut [f32]) {
        let c = out.len();
        let (a, b, d, e) = (&z[0][..c], &z[1][..c], &z[2][..c], &z[3][..c]);
        let (scale, shift) = (&scale[..c], &shift[..c]);
        for i in 0..c {
            let v0 = a[i] * scale[i] + shift[i];
            let v1 = b[i] * scale[i] + shift[i];
            let v2 = d[i] * scale[i] + shift[i];
            let v3 = e[i] * scale[i] + shift[i];
            out[i] = v0.max(v1).max(v2.max(v3)).max(0.0);
        }
    }
}

kernel! {
    /// One window's share of `unpool_frames`: z and g as its two rows of two pixels.
    fn unpool4(z: [&[f32]; 2], scale: &[f32], shift: &[f32], d: &[f32], g: [&mut [f32]; 2]) {
        let c = d.len();
        let [g0, g1] = g;
        let (z0, z1, g0, g1) = (&z[0][..2 * c], &z[1][..2 * c], &mut g0[..2 * c], &mut g1[..2 * c]);
        let (scale, shift) = (&scale[..c], &shift[..c]);
        for i in 0..c {
            let v0 = z0[i] * scale[i] + shift[i];
            let v1 = z0[c + i] * scale[i] + shift[i];
            let v2 = z1[i] * scale[i] + shift[i];
            let v3 = z1[c + i] * scale[i] + shift[i];
            // The first maximum, as PyTorch picks it.
            let m01 = v0.max(v1);
            let m23 = v2.max(v3);
            let top = m01 >= m23;
            let pos = m01.max(m23) > 0.0;
            let first = if top { v0 >= v1 } else { v2 >= v3 };
            let dv = if pos { d[i] } else { 0.0 };
            g0[i] = if top && first { dv } else { 0.0 };
            g0[c + i] = if top && !first { dv } else { 0.0 };
            g1[i] = if !top && first { dv } else { 0.0 };
            g1[c + i] = if !top && !first { dv } else { 0.0 };
        }
    }
}

kernel! {
    /// out = max(z * scale + shift, 0).
    fn norm_relu(z: &[f32], scale: &[f32], shift: &[f32], out: &mut [f32]) {
        for (((o, v), s), t) in out.iter_mut().zip(z).zip(scale).zip(shift) {
            *o = (v * s + t).max(0.0);
        }
    }
}

kernel! {
    /// g = dout where z * scale + shift > 0, else 0.
    fn relu_bwd(z: &[f32], scale: &[f32], shift: &[f32], dout: &[f32], g: &mut [f32]) {
        for ((((o, v), s), t), d) in g.iter_mut().zip(z).zip(scale).zip(shift).zip(dout) {
            *o = if v * s + t > 0.0 { *d } else { 0.0 };
        }
    }
}

kernel! {
    /// a += g, ax += g * (z - mean) * invstd.
    fn norm_sums_pixel(z: &[f32], g: &[f32], mean: &[f32], invstd: &[f32], a: &mut [f32], ax: &mut [f32]) {
        let c = a.len();
        let (z, g, mean, invstd, ax) = (&z[..c], &g[..c], &mean[..c], &invstd[..c], &mut ax[..c]);
        for i in 0..c {
            a[i] += g[i];
            ax[i] += g[i] * (z[i] - mean[i]) * invstd[i];
        }
    }
}

kernel! {
    /// Batch norm backward for one pixel, in place: g = scale * (g - mg - (z - mean) * invstd * mgx).
    fn norm_bwd(g: &mut [f32], z: &[f32], mean: &[f32], invstd: &[f32], scale: &[f32], mg: &[f32], mgx: &[f32]) {
        let c = g.len();
        let (z, mean, invstd, scale, mg, mgx) =
            (&z[..c], &mean[..c], &invstd[..c], &scale[..c], &mg[..c], &mgx[..c]);
        for i in 0..c {
            g[i] = scale[i] * (g[i] - mg[i] - (z[i] - mean[i]) * invstd[i] * mgx[i]);
        }
    }
}

impl CustomOp2 for ConvStack {
    fn name(&self) -> &'static str {
        "rnnlab-conv-stack"
    }

    /// s1: x [frames, channels, height, width]; s2: the packed parameters.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims4()?;
        let x = cpu_slice(s1, l1, "frames")?;
        let packed = cpu_slice(s2, l2, "parameters")?;
        let feat = self.forward(x, dims, packed)?;
        let d = self.widths.last().copied().unwrap_or(0);
        Ok((CpuStorage::F32(feat), Shape::from((dims.0, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims4()?;
        let (x, packed, grad_res) = (
            x.contiguous()?,
            packed.contiguous()?,
            grad_res.contiguous()?,
        );
        let (x_st, x_l) = x.storage_and_layout();
        let (p_st, p_l) = packed.storage_and_layout();
        let (g_st, g_l) = grad_res.storage_and_layout();
        let grads = self.backward(
            storage_slice(&x_st, x_l, "frames")?,
            dims,
            storage_slice(&p_st, p_l, "parameters")?,
            storage_slice(&g_st, g_l, "output gradient")?,
        )?;
        let n = grads.len();
        Ok((None, Some(Tensor::from_vec(grads, n, packed.device())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col then col2im is the adjoint pair: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let b = Block {
            cin: 3,
            cout: 4,
            h: 5,
            w: 4,
            pool: true,
        };
        let x: Vec<f32> = (0..2 * b.hw() * b.cin)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let mut col = Vec::new();
        im2col(b, Input::Pixels(&x), 0..2, &mut col);
        let y: Vec<f32> = (0..col.len()).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut dx = vec![0f32; x.len()];
        col2im(b, &y, &mut dx);
        let lhs: f64 = col.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| (a * b) as f64).sum();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }
}
