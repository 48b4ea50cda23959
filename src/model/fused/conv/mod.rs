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

mod backward;
mod forward;

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

kernel! {
    /// a += b.
    fn add_into(a: &mut [f32], b: &[f32]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
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
