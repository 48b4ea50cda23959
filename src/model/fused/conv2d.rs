//! A convolution with a gradient (any square kernel, stride and zero padding, no bias) as one
//! custom op on the CPU: the trained stages of a ResNet. Forward builds the im2col columns of
//! every frame, [cin * k * k, frames * oh * ow] (row (ci, ky, kx), matching PyTorch's weight
//! layout, so the weight needs no repacking), and runs one gemm W [cout, K] x cols; backward
//! rebuilds the columns and runs dW = dY cols^T and, only when the input needs it, dcols =
//! W^T dY scattered back by col2im. A 3x3 stride-1 convolution's output and input gradient
//! go by Winograd's F(4x4, 3x3) instead (`fused::winograd`), the weight gradient by the gemm. candle 0.11's own conv2d backward runs the input's
//! gradient as a direct transposed convolution, several times slower than these gemms.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::kernels::FlushDenormals;
use super::matmul::mm;
use super::winograd::Winograd;
use super::{cpu_slice, storage_slice};

pub struct Conv2d {
    pub stride: usize,
    pub padding: usize,
    /// Compute the input's gradient (false where the input is a frozen stage's output).
    pub input_grad: bool,
    /// The forward's im2col columns, kept for backward (which rebuilds them without).
    pub cols: std::sync::Mutex<Option<Vec<f32>>>,
}

impl Conv2d {
    pub fn new(stride: usize, padding: usize, input_grad: bool) -> Conv2d {
        Conv2d {
            stride,
            padding,
            input_grad,
            cols: std::sync::Mutex::new(None),
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
    let threads = crate::device::cpu_threads().clamp(1, n.max(1));
    let bias = vec![0f32; cout];
    std::thread::scope(|scope| {
        let mut rest: &mut [f32] = &mut out;
        let mut handles = Vec::new();
        for i in 0..threads {
            let r = i * n / threads..(i + 1) * n / threads;
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * cout * p);
            rest = tail;
            let src = &x[r.start * cin * p..r.end * cin * p];
            let (wino, bias) = (&wino, &bias);
            handles.push(scope.spawn(move || {
                let _ftz = FlushDenormals::new();
                let g = r.len();
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
                wino.apply(&nhwc, g, (h, w), bias, false, None, &mut y, &mut bufs);
                for f in 0..g {
                    for i in 0..p {
                        for c in 0..cout {
                            mine[(f * cout + c) * p + i] = y[(f * p + i) * cout + c];
                        }
                    }
                }
            }));
        }
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
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
    let threads = crate::device::cpu_threads().clamp(1, m.max(1));
    if threads == 1 {
        mm(dst, n, (m, n, k), a, a_strides, b, b_strides, false, false);
        return;
    }
    std::thread::scope(|scope| {
        let mut rest: &mut [f32] = dst;
        let mut handles = Vec::new();
        for i in 0..threads {
            let rows = i * m / threads..(i + 1) * m / threads;
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows.len() * n);
            rest = tail;
            let a = &a[rows.start * a_strides.0..];
            handles.push(scope.spawn(move || {
                let _ftz = FlushDenormals::new();
                mm(
                    mine,
                    n,
                    (rows.len(), n, k),
                    a,
                    a_strides,
                    b,
                    b_strides,
                    false,
                    false,
                );
            }));
        }
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
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
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "rnnlab-conv2d"
    }

    /// s1: x [n, cin, h, w]; s2: weight [cout, cin, k, k] -> [n, cout, oh, ow].
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l1, l2)?;
        let x = cpu_slice(s1, l1, "conv input")?;
        let wt = cpu_slice(s2, l2, "conv weight")?;
        if self.winograd_case(d) {
            let rows = wino_rows(wt, d.cout, d.cin, false);
            let out = winograd(x, (d.n, d.cin, d.h, d.w), &rows, d.cout);
            return Ok((CpuStorage::F32(out), Shape::from((d.n, d.cout, d.oh, d.ow))));
        }
        let cols = self.im2col(x, d);
        let (kk, nc, p) = (d.kk(), d.cols(), d.oh * d.ow);
        // y [cout, n * p], then [n, cout, p].
        let mut y = vec![0f32; d.cout * nc];
        mm_rows(&mut y, (d.cout, nc, kk), wt, (kk, 1), &cols, (nc, 1));
        let mut out = vec![0f32; d.n * d.cout * p];
        for co in 0..d.cout {
            for f in 0..d.n {
                out[(f * d.cout + co) * p..][..p].copy_from_slice(&y[co * nc + f * p..][..p]);
            }
        }
        if let Ok(mut kept) = self.cols.lock() {
            *kept = Some(cols);
        }
        Ok((CpuStorage::F32(out), Shape::from((d.n, d.cout, d.oh, d.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, wt, grad) = (x.contiguous()?, wt.contiguous()?, grad.contiguous()?);
        let (x_st, x_l) = x.storage_and_layout();
        let (w_st, w_l) = wt.storage_and_layout();
        let (g_st, g_l) = grad.storage_and_layout();
        let d = self.dims(x_l, w_l)?;
        let xs = storage_slice(&x_st, x_l, "conv input")?;
        let ws = storage_slice(&w_st, w_l, "conv weight")?;
        let gs = storage_slice(&g_st, g_l, "conv output gradient")?;
        let (kk, nc, p) = (d.kk(), d.cols(), d.oh * d.ow);
        // dY as [cout, n * p].
        let mut dy = vec![0f32; d.cout * nc];
        for f in 0..d.n {
            for co in 0..d.cout {
                dy[co * nc + f * p..][..p].copy_from_slice(&gs[(f * d.cout + co) * p..][..p]);
            }
        }
        let kept = self.cols.lock().ok().and_then(|mut c| c.take());
        let cols = match kept {
            Some(c) if c.len() == kk * nc => c,
            _ => self.im2col(xs, d),
        };
        // dW [cout, K] = dY [cout, nc] cols^T [nc, K].
        let mut dw = vec![0f32; d.cout * kk];
        mm_rows(&mut dw, (d.cout, kk, nc), &dy, (nc, 1), &cols, (1, nc));
        drop(cols);
        let dx = if self.input_grad && self.winograd_case(d) {
            // dx = dY convolved with the kernel rotated and its channels swapped.
            let rows = wino_rows(ws, d.cout, d.cin, true);
            let dx = winograd(gs, (d.n, d.cout, d.oh, d.ow), &rows, d.cin);
            Some(Tensor::from_vec(dx, (d.n, d.cin, d.h, d.w), x.device())?)
        } else if self.input_grad {
            // dcols [K, nc] = W^T [K, cout] dY [cout, nc].
            let mut dcols = vec![0f32; kk * nc];
            mm_rows(&mut dcols, (kk, nc, d.cout), ws, (1, kk), &dy, (nc, 1));
            let dx = self.col2im(&dcols, d);
            Some(Tensor::from_vec(dx, (d.n, d.cin, d.h, d.w), x.device())?)
        } else {
            None
        };
        let dw = Tensor::from_vec(dw, (d.cout, d.cin, d.k, d.k), wt.device())?;
        Ok((dx, Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Output and both gradients equal candle's conv2d's (its backward is correct, only
    /// slow), for the kernels, strides and paddings a ResNet has, at odd sizes.
    #[test]
    fn the_op_equals_candles_conv2d_with_its_gradients() {
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 2, 0), (7, 2, 3), (1, 1, 0)] {
            let x =
                Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 9, 7), &Device::Cpu).unwrap())
                    .unwrap();
            let w =
                Var::from_tensor(&Tensor::randn(0f32, 0.3, (4, 3, k, k), &Device::Cpu).unwrap())
                    .unwrap();
            let want = x
                .as_tensor()
                .conv2d(w.as_tensor(), padding, stride, 1, 1)
                .unwrap();
            let op = Conv2d::new(stride, padding, true);
            let ours = x
                .as_tensor()
                .apply_op2_arc(w.as_tensor(), std::sync::Arc::new(Box::new(op)))
                .unwrap();
            assert_eq!(ours.dims(), want.dims());
            let r = Tensor::randn(0f32, 1.0, want.dims(), &Device::Cpu).unwrap();
            let max = |t: &Tensor| {
                t.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            assert!(max(&(&ours - &want).unwrap()) <= 1e-5 * max(&want).max(1.0));
            let g1 = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w] {
                let (a, b) = (
                    g1.get(v.as_tensor()).unwrap(),
                    g2.get(v.as_tensor()).unwrap(),
                );
                let err = max(&(a - b).unwrap());
                assert!(
                    err <= 1e-4 * max(a).max(1.0),
                    "k{k} s{stride} p{padding}: {err}"
                );
            }
        }
    }
}
