//! A convolution with its batch norm (eval mode: a per-channel affine) and optionally a
//! ReLU, with their gradients, as one custom op on the CPU: the trained stages of a ResNet
//! (and the frozen ones a gradient passes through). Forward builds the im2col columns of every
//! frame, [cin * k * k, frames * oh * ow] (row (ci, ky, kx), matching PyTorch's weight
//! layout, so the weight needs no repacking), runs one gemm W [cout, K] x cols, and applies
//! the affine and the ReLU while moving the result to [n, cout, oh, ow]; backward masks the
//! gradient by the ReLU, reduces it to the affine's gradients, and runs dW = dY cols^T and,
//! only when the input needs it, dcols = W^T dY scattered back by col2im. A 3x3 stride-1
//! convolution's output and input gradient go by Winograd's F(4x4, 3x3) instead where the
//! maps are large (`fused::winograd`), the weight gradient by the gemm. One op instead of
//! candle's conv2d, broadcast affine and ReLU: candle 0.11's conv2d backward runs the input's
//! gradient as a direct transposed convolution, several times slower than these gemms, and its
//! broadcast backward reduces over three dimensions per channel vector. [`AddRelu`] is the
//! block's residual sum and ReLU.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::kernels::FlushDenormals;
use super::matmul::mm;
use super::winograd::Winograd;
use super::{cpu_slice, storage_slice};

/// Convolution, batch-norm affine, optional ReLU: inputs x [n, cin, h, w], weight
/// [cout, cin, k, k] and the affine [2, cout] (scale, shift), output [n, cout, oh, ow].
pub struct Conv2d {
    pub stride: usize,
    pub padding: usize,
    pub relu: bool,
    /// The forward's im2col columns (where it built them) and its output before the affine,
    /// [cout, n * oh * ow], kept for backward (which recomputes them without).
    kept: std::sync::Mutex<Option<Kept>>,
}

struct Kept {
    cols: Option<Vec<f32>>,
    y: Vec<f32>,
}

impl Conv2d {
    pub fn new(stride: usize, padding: usize, relu: bool) -> Conv2d {
        Conv2d {
            stride,
            padding,
            relu,
            kept: std::sync::Mutex::new(None),
        }
    }
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

impl Dims {
    fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }

    fn cols(&self) -> usize {
        self.n * self.oh * self.ow
    }
}

impl Conv2d {
    fn dims(&self, x: &Layout, wt: &Layout) -> candle_core::Result<Dims> {
        let (n, cin, h, w) = x.shape().dims4()?;
        let (cout, cin_w, k, k2) = wt.shape().dims4()?;
        if cin != cin_w || k != k2 || h + 2 * self.padding < k || w + 2 * self.padding < k {
            candle_core::bail!("rnnlab conv2d: input {n}x{cin}x{h}x{w} and weight {cout}x{cin_w}x{k}x{k2} do not fit");
        }
        let o = |s: usize| (s + 2 * self.padding - k) / self.stride + 1;
        Ok(Dims {
            n,
            cin,
            h,
            w,
            cout,
            k,
            oh: o(h),
            ow: o(w),
        })
    }

    /// The output columns `ox` whose input column `ox * stride + kx - padding` lies inside
    /// [0, w): a range, so the copies need no test per element.
    fn inside(&self, kx: usize, w: usize, ow: usize) -> std::ops::Range<usize> {
        let (p, s) = (self.padding, self.stride);
        // ox * s + kx >= p  and  ox * s + kx - p <= w - 1.
        let lo = p.saturating_sub(kx).div_ceil(s);
        let hi = if w + p > kx {
            ((w - 1 + p - kx) / s + 1).min(ow)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// cols [K, n * oh * ow] of x [n, cin, h, w].
    fn im2col(&self, x: &[f32], d: Dims) -> Vec<f32> {
        let (p, s) = (self.padding as isize, self.stride);
        let cols = d.cols();
        let mut out = vec![0f32; d.kk() * cols];
        for ci in 0..d.cin {
            for ky in 0..d.k {
                for kx in 0..d.k {
                    let row = &mut out[((ci * d.k + ky) * d.k + kx) * cols..][..cols];
                    let xs = self.inside(kx, d.w, d.ow);
                    let x0 = (xs.start * s + kx) as isize - p;
                    for f in 0..d.n {
                        let plane = &x[(f * d.cin + ci) * d.h * d.w..][..d.h * d.w];
                        for oy in 0..d.oh {
                            let y = (oy * s) as isize + ky as isize - p;
                            if y < 0 || y >= d.h as isize || xs.is_empty() {
                                continue;
                            }
                            let line = &plane[y as usize * d.w..][..d.w];
                            let dst = &mut row[(f * d.oh + oy) * d.ow..][..d.ow];
                            let dst = &mut dst[xs.clone()];
                            if s == 1 {
                                dst.copy_from_slice(&line[x0 as usize..][..dst.len()]);
                            } else {
                                for (j, o) in dst.iter_mut().enumerate() {
                                    *o = line[x0 as usize + j * s];
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// dx [n, cin, h, w] += the columns' gradient scattered back (the adjoint of im2col).
    fn col2im(&self, dcols: &[f32], d: Dims) -> Vec<f32> {
        let (p, s) = (self.padding as isize, self.stride);
        let cols = d.cols();
        let mut dx = vec![0f32; d.n * d.cin * d.h * d.w];
        for ci in 0..d.cin {
            for ky in 0..d.k {
                for kx in 0..d.k {
                    let row = &dcols[((ci * d.k + ky) * d.k + kx) * cols..][..cols];
                    let xs = self.inside(kx, d.w, d.ow);
                    let x0 = (xs.start * s + kx) as isize - p;
                    for f in 0..d.n {
                        let plane = &mut dx[(f * d.cin + ci) * d.h * d.w..][..d.h * d.w];
                        for oy in 0..d.oh {
                            let y = (oy * s) as isize + ky as isize - p;
                            if y < 0 || y >= d.h as isize || xs.is_empty() {
                                continue;
                            }
                            let line = &mut plane[y as usize * d.w..][..d.w];
                            let src = &row[(f * d.oh + oy) * d.ow..][..d.ow];
                            for (j, g) in src[xs.clone()].iter().enumerate() {
                                line[x0 as usize + j * s] += g;
                            }
                        }
                    }
                }
            }
        }
        dx
    }
}

/// A 3x3 stride-1 padding-1 convolution by Winograd (`fused::winograd`): x [n, cin, h, w]
/// with weights `rows` ([9 * cin, cout], rows (ky, kx, ci)) -> [n, cout, h, w], frames split
/// between threads, channels-last inside.
fn winograd(
    x: &[f32],
    (n, cin, h, w): (usize, usize, usize, usize),
    rows: &[f32],
    cout: usize,
) -> Vec<f32> {
    let wino = Winograd::new(rows, cin, cout);
    let p = h * w;
    let mut out = vec![0f32; n * cout * p];
    let bias = vec![0f32; cout];
    by_rows(&mut out, cout * p, 0, |f0, mine| {
        let _ftz = FlushDenormals::new();
        let g = mine.len() / (cout * p).max(1);
        let src = &x[f0 * cin * p..(f0 + g) * cin * p];
        // NCHW -> NHWC, the transform, NHWC -> NCHW.
        let mut nhwc = vec![0f32; g * p * cin];
        for f in 0..g {
            for c in 0..cin {
                for (i, v) in src[(f * cin + c) * p..][..p].iter().enumerate() {
                    nhwc[(f * p + i) * cin + c] = *v;
                }
            }
        }
        let mut y = Vec::new();
        let mut bufs = (Vec::new(), Vec::new());
        wino.apply(&nhwc, g, (h, w), &bias, false, None, &mut y, &mut bufs);
        for f in 0..g {
            for i in 0..p {
                for c in 0..cout {
                    mine[(f * cout + c) * p + i] = y[(f * p + i) * cout + c];
                }
            }
        }
    });
    out
}

/// Weight [cout, cin, 3, 3] as Winograd's rows [9 * cin, cout]; `flipped`: the weights of
/// the input's gradient, [9 * cout, cin] rows of the kernel rotated by 180 degrees.
fn wino_rows(wt: &[f32], cout: usize, cin: usize, flipped: bool) -> Vec<f32> {
    let mut rows = vec![0f32; 9 * cin * cout];
    for co in 0..cout {
        for ci in 0..cin {
            for ky in 0..3 {
                for kx in 0..3 {
                    let v = wt[((co * cin + ci) * 3 + ky) * 3 + kx];
                    if flipped {
                        rows[(((2 - ky) * 3 + (2 - kx)) * cout + co) * cin + ci] = v;
                    } else {
                        rows[((ky * 3 + kx) * cin + ci) * cout + co] = v;
                    }
                }
            }
        }
    }
    rows
}

/// dst[m, n] = a[m, k] @ b[k, n] with dst's rows split between threads, each running a
/// single-threaded gemm on its block (`a` given by its strides, its block starting at row
/// r0's offset): for these shapes, 2 threads ran 1.3-1.5x a gemm split by the crate itself.
#[allow(clippy::too_many_arguments)]
fn mm_rows(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    debug_assert_eq!(dst.len(), m * n);
    by_rows(dst, n, 0, |r0, mine| {
        let rows = mine.len() / n.max(1);
        let a = &a[r0 * a_strides.0..];
        mm(
            mine,
            n,
            (rows, n, k),
            a,
            a_strides,
            b,
            b_strides,
            false,
            false,
        );
    });
}

/// [a][b][p] blocks of `p` values -> [b][a][p]: frames x channels (NCHW) <-> channels x frames
/// (a gemm's [cout, n * p] layout), either way.
fn swap_blocks(src: &[f32], (a, b, p): (usize, usize, usize)) -> Vec<f32> {
    let mut dst = vec![0f32; a * b * p];
    for i in 0..a {
        for j in 0..b {
            dst[(j * a + i) * p..][..p].copy_from_slice(&src[(i * b + j) * p..][..p]);
        }
    }
    dst
}

impl Conv2d {
    /// 3x3, stride 1, padding 1: Winograd's case.
    fn winograd_case(&self, d: Dims) -> bool {
        let per_thread = d.n / crate::device::cpu_threads().clamp(1, d.n.max(1));
        d.k == 3
            && self.stride == 1
            && self.padding == 1
            && super::winograd::worth_training(per_thread, (d.oh, d.ow))
    }

    /// The convolution alone: y [cout, n * oh * ow], and the columns where it built them.
    fn conv(&self, x: &[f32], wt: &[f32], d: Dims) -> (Vec<f32>, Option<Vec<f32>>) {
        let (kk, nc, p) = (d.kk(), d.cols(), d.oh * d.ow);
        if self.winograd_case(d) {
            let rows = wino_rows(wt, d.cout, d.cin, false);
            let out = winograd(x, (d.n, d.cin, d.h, d.w), &rows, d.cout);
            return (swap_blocks(&out, (d.n, d.cout, p)), None);
        }
        let cols = self.im2col(x, d);
        let mut y = vec![0f32; d.cout * nc];
        mm_rows(&mut y, (d.cout, nc, kk), wt, (kk, 1), &cols, (nc, 1));
        (y, Some(cols))
    }
}

/// Splits `out` (rows of `row` values) between threads by whole rows, and runs
/// `f(first_row, rows_slice)` on each part (denormals flushed on the threads it starts); on
/// this thread alone when `out` is shorter than `min_len`.
fn by_rows(out: &mut [f32], row: usize, min_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len() / row.max(1);
    let threads = crate::device::cpu_threads().clamp(1, rows.max(1));
    if threads == 1 || out.len() < min_len {
        f(0, out);
        return;
    }
    std::thread::scope(|scope| {
        let mut rest: &mut [f32] = out;
        for i in 0..threads {
            let r = i * rows / threads..(i + 1) * rows / threads;
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * row);
            rest = tail;
            let f = &f;
            scope.spawn(move || {
                let _ftz = FlushDenormals::new();
                f(r.start, mine)
            });
        }
    });
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "rnnlab-conv2d-bn"
    }

    /// s1: x [n, cin, h, w]; s2: weight [cout, cin, k, k]; s3: affine [2, cout] ->
    /// [n, cout, oh, ow].
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l1, l2)?;
        let x = cpu_slice(s1, l1, "conv input")?;
        let wt = cpu_slice(s2, l2, "conv weight")?;
        let ss = cpu_slice(s3, l3, "batch-norm affine")?;
        if ss.len() != 2 * d.cout {
            candle_core::bail!(
                "rnnlab conv2d: affine has {} values for {} channels",
                ss.len(),
                d.cout
            );
        }
        let (y, cols) = self.conv(x, wt, d);
        let (nc, p) = (d.cols(), d.oh * d.ow);
        let (scale, shift) = ss.split_at(d.cout);
        // [cout, n * p] -> [n, cout, p], the affine and the ReLU on the way; threads by frame.
        let mut out = vec![0f32; d.n * d.cout * p];
        let relu = self.relu;
        by_rows(&mut out, d.cout * p, 1 << 15, |f0, part| {
            for (j, frame) in part.chunks_mut(d.cout * p).enumerate() {
                let f = f0 + j;
                for co in 0..d.cout {
                    let (a, b) = (scale[co], shift[co]);
                    let src = &y[co * nc + f * p..][..p];
                    let dst = &mut frame[co * p..][..p];
                    for (o, v) in dst.iter_mut().zip(src) {
                        let z = v * a + b;
                        *o = if relu { z.max(0.0) } else { z };
                    }
                }
            }
        });
        if let Ok(mut kept) = self.kept.lock() {
            *kept = Some(Kept { cols, y });
        }
        Ok((CpuStorage::F32(out), Shape::from((d.n, d.cout, d.oh, d.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        ss: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, wt, ss) = (x.contiguous()?, wt.contiguous()?, ss.contiguous()?);
        let (res, grad) = (res.contiguous()?, grad.contiguous()?);
        let (x_st, x_l) = x.storage_and_layout();
        let (w_st, w_l) = wt.storage_and_layout();
        let (s_st, s_l) = ss.storage_and_layout();
        let (r_st, r_l) = res.storage_and_layout();
        let (g_st, g_l) = grad.storage_and_layout();
        let d = self.dims(x_l, w_l)?;
        let xs = storage_slice(&x_st, x_l, "conv input")?;
        let ws = storage_slice(&w_st, w_l, "conv weight")?;
        let scale = &storage_slice(&s_st, s_l, "batch-norm affine")?[..d.cout];
        let rs = storage_slice(&r_st, r_l, "conv output")?;
        let gs = storage_slice(&g_st, g_l, "conv output gradient")?;
        let (kk, nc, p) = (d.kk(), d.cols(), d.oh * d.ow);
        let kept = self.kept.lock().ok().and_then(|mut c| c.take());
        let (y, cols) = match kept {
            Some(k) if k.y.len() == d.cout * nc => (k.y, k.cols),
            _ => self.conv(xs, ws, d),
        };
        // The ReLU's mask, the affine's gradients (per channel: sum of dz * y, sum of dz), and
        // dY = dz * scale as [cout, n * p]; threads by channel.
        let mut dy = vec![0f32; d.cout * nc];
        let mut dss = vec![0f32; 2 * d.cout];
        let (dscale, dshift) = dss.split_at_mut(d.cout);
        let sums: Vec<(usize, f32, f32)> = {
            let sums = std::sync::Mutex::new(Vec::with_capacity(d.cout));
            let relu = self.relu;
            by_rows(&mut dy, nc, 1 << 15, |c0, part| {
                let mut mine = Vec::new();
                for (j, row) in part.chunks_mut(nc).enumerate() {
                    let co = c0 + j;
                    let (mut sy, mut s) = (0f32, 0f32);
                    for f in 0..d.n {
                        let at = (f * d.cout + co) * p;
                        let (g, r) = (&gs[at..][..p], &rs[at..][..p]);
                        let (yv, dst) = (&y[co * nc + f * p..][..p], &mut row[f * p..][..p]);
                        for i in 0..p {
                            let dz = if relu && r[i] <= 0.0 { 0.0 } else { g[i] };
                            sy += dz * yv[i];
                            s += dz;
                            dst[i] = dz * scale[co];
                        }
                    }
                    mine.push((co, sy, s));
                }
                if let Ok(mut all) = sums.lock() {
                    all.extend(mine);
                }
            });
            sums.into_inner().unwrap_or_default()
        };
        for (co, sy, s) in sums {
            dscale[co] = sy;
            dshift[co] = s;
        }
        drop(y);
        let dw = if wt.track_op() {
            let cols = match cols {
                Some(c) if c.len() == kk * nc => c,
                _ => self.im2col(xs, d),
            };
            // dW [cout, K] = dY [cout, nc] cols^T [nc, K].
            let mut dw = vec![0f32; d.cout * kk];
            mm_rows(&mut dw, (d.cout, kk, nc), &dy, (nc, 1), &cols, (1, nc));
            Some(Tensor::from_vec(
                dw,
                (d.cout, d.cin, d.k, d.k),
                wt.device(),
            )?)
        } else {
            None
        };
        let dx = if x.track_op() && self.winograd_case(d) {
            // dx = dY convolved with the kernel rotated and its channels swapped.
            let dy_nchw = swap_blocks(&dy, (d.cout, d.n, p));
            let rows = wino_rows(ws, d.cout, d.cin, true);
            let dx = winograd(&dy_nchw, (d.n, d.cout, d.oh, d.ow), &rows, d.cin);
            Some(Tensor::from_vec(dx, (d.n, d.cin, d.h, d.w), x.device())?)
        } else if x.track_op() {
            // dcols [K, nc] = W^T [K, cout] dY [cout, nc].
            let mut dcols = vec![0f32; kk * nc];
            mm_rows(&mut dcols, (kk, nc, d.cout), ws, (1, kk), &dy, (nc, 1));
            let dx = self.col2im(&dcols, d);
            Some(Tensor::from_vec(dx, (d.n, d.cin, d.h, d.w), x.device())?)
        } else {
            None
        };
        let dss = if ss.track_op() {
            Some(Tensor::from_vec(dss, (2, d.cout), ss.device())?)
        } else {
            None
        };
        Ok((dx, dw, dss))
    }
}

/// A residual block's end: relu(a + b), both [n, c, h, w], as one op with its gradient.
pub struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "rnnlab-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (cpu_slice(s1, l1, "residual")?, cpu_slice(s2, l2, "skip")?);
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "rnnlab add-relu: shapes {:?} and {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let out = a.iter().zip(b).map(|(x, y)| (x + y).max(0.0)).collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (res, grad) = (res.contiguous()?, grad.contiguous()?);
        let masked = {
            let (r_st, r_l) = res.storage_and_layout();
            let (g_st, g_l) = grad.storage_and_layout();
            let rs = storage_slice(&r_st, r_l, "add-relu output")?;
            let gs = storage_slice(&g_st, g_l, "add-relu gradient")?;
            let v: Vec<f32> = rs
                .iter()
                .zip(gs)
                .map(|(r, g)| if *r > 0.0 { *g } else { 0.0 })
                .collect();
            Tensor::from_vec(v, res.shape(), res.device())?
        };
        let to_a = a.track_op().then(|| masked.clone());
        let to_b = b.track_op().then_some(masked);
        Ok((to_a, to_b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], std: f32) -> Var {
        Var::from_tensor(&Tensor::randn(0f32, std, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Output and the gradients of input, weight and affine equal candle's conv2d, broadcast
    /// affine and ReLU (candle's backward is correct, only slow), for the kernels, strides and
    /// paddings a ResNet has, at odd sizes, and at a size where Winograd runs.
    #[test]
    fn the_op_equals_candles_conv2d_affine_and_relu_with_their_gradients() {
        let cases = [
            (3, 1, 1, 9, 7, 2),
            (3, 2, 1, 9, 7, 2),
            (1, 2, 0, 9, 7, 2),
            (7, 2, 3, 9, 7, 2),
            (1, 1, 0, 9, 7, 2),
            (3, 1, 1, 40, 40, 16),
        ];
        for (k, stride, padding, h, w, n) in cases {
            for relu in [false, true] {
                let x = randn(&[n, 3, h, w], 1.0);
                let wt = randn(&[4, 3, k, k], 0.3);
                let ss = randn(&[2, 4], 1.0);
                let (scale, shift) = (ss.narrow(0, 0, 1).unwrap(), ss.narrow(0, 1, 1).unwrap());
                let c = |t: Tensor| t.reshape((1, 4, 1, 1)).unwrap();
                let mut want = x
                    .as_tensor()
                    .conv2d(wt.as_tensor(), padding, stride, 1, 1)
                    .unwrap()
                    .broadcast_mul(&c(scale))
                    .unwrap()
                    .broadcast_add(&c(shift))
                    .unwrap();
                if relu {
                    want = want.relu().unwrap();
                }
                let op = Conv2d::new(stride, padding, relu);
                let ours = x
                    .as_tensor()
                    .apply_op3_arc(
                        wt.as_tensor(),
                        ss.as_tensor(),
                        std::sync::Arc::new(Box::new(op)),
                    )
                    .unwrap();
                assert_eq!(ours.dims(), want.dims());
                assert!(max(&(&ours - &want).unwrap()) <= 1e-5 * max(&want).max(1.0));
                let r = Tensor::randn(0f32, 1.0, want.dims(), &Device::Cpu).unwrap();
                let g1 = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [&x, &wt, &ss] {
                    let (a, b) = (
                        g1.get(v.as_tensor()).unwrap(),
                        g2.get(v.as_tensor()).unwrap(),
                    );
                    let err = max(&(a - b).unwrap());
                    assert!(
                        err <= 1e-4 * max(a).max(1.0),
                        "k{k} s{stride} p{padding} {h}x{w} relu {relu}: {err}"
                    );
                }
            }
        }
    }

    /// A frozen weight and affine (detached) get no gradient; the input still does.
    #[test]
    fn detached_weights_get_no_gradient() {
        let x = randn(&[2, 3, 6, 6], 1.0);
        let (wt, ss) = (randn(&[4, 3, 3, 3], 0.3), randn(&[2, 4], 1.0));
        let y = x
            .as_tensor()
            .apply_op3_arc(
                &wt.as_tensor().detach(),
                &ss.as_tensor().detach(),
                std::sync::Arc::new(Box::new(Conv2d::new(1, 1, true))),
            )
            .unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        assert!(g.get(wt.as_tensor()).is_none() && g.get(ss.as_tensor()).is_none());
    }

    #[test]
    fn add_relu_equals_candles_with_its_gradients() {
        let (a, b) = (randn(&[2, 3, 4, 5], 1.0), randn(&[2, 3, 4, 5], 1.0));
        let want = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
        let ours = a.as_tensor().apply_op2(b.as_tensor(), AddRelu).unwrap();
        assert_eq!(max(&(&ours - &want).unwrap()), 0.0);
        let r = Tensor::randn(0f32, 1.0, want.dims(), &Device::Cpu).unwrap();
        let g1 = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            let d = (g1.get(v.as_tensor()).unwrap() - g2.get(v.as_tensor()).unwrap()).unwrap();
            assert_eq!(max(&d), 0.0);
        }
    }
}
