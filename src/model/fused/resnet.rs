//! A frozen ResNet's forward pass on the CPU, channels-last: each convolution's batch norm
//! (eval mode) folded into its weights and a bias, each convolution one gemm over im2col rows
//! (a 1x1 stride-1 convolution reads its input as it is), the bias, the residual sum and the
//! ReLU in one pass over the gemm's output, and frames split between threads, each thread
//! taking its frames through the network layer by layer with its own scratch buffers: each
//! convolution is one gemm over all of them (in groups of frames for the big early maps), so
//! that a deep layer's weights are read once for all its frames. No graph, no gradient: for the stages that do not
//! train. `model::resnet` keeps the composed candle ops for the stages that do, and as the
//! reference this path is tested against.

use std::ops::Range;

use super::kernels::FlushDenormals;
use super::matmul::mm;
use super::winograd::Winograd;

/// One convolution with its batch norm folded in: y = conv(x, w * scale) + (b - mean * scale),
/// scale = gamma / sqrt(var + eps), per output channel.
pub struct Folded {
    /// Kernel side, stride, padding, input and output channels.
    k: usize,
    stride: usize,
    pad: usize,
    cin: usize,
    cout: usize,
    /// [k * k * cin, cout] row-major: row (ky, kx, ci).
    w: Vec<f32>,
    bias: Vec<f32>,
    /// 3x3 stride-1 padding-1: the weights for Winograd's F(4x4, 3x3).
    wino: Option<Winograd>,
}

impl Folded {
    /// `weight` [cout, cin, k, k] (PyTorch's layout) and batch norm's weight, bias, running
    /// mean and variance.
    pub fn new(
        weight: &[f32],
        (cout, cin, k): (usize, usize, usize),
        bn: [&[f32]; 4],
        eps: f64,
        stride: usize,
        pad: usize,
    ) -> Folded {
        let [gamma, beta, mean, var] = bn;
        let scale: Vec<f32> = (0..cout)
            .map(|c| (gamma[c] as f64 / (var[c] as f64 + eps).sqrt()) as f32)
            .collect();
        let bias = (0..cout).map(|c| beta[c] - mean[c] * scale[c]).collect();
        let mut w = vec![0f32; k * k * cin * cout];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        let v = weight[((co * cin + ci) * k + ky) * k + kx];
                        w[((ky * k + kx) * cin + ci) * cout + co] = v * scale[co];
                    }
                }
            }
        }
        let wino = (k == 3 && stride == 1 && pad == 1).then(|| Winograd::new(&w, cin, cout));
        Folded {
            k,
            stride,
            pad,
            cin,
            cout,
            w,
            bias,
            wino,
        }
    }

    fn out_hw(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let o = |n: usize| (n + 2 * self.pad - self.k) / self.stride + 1;
        (o(h), o(w))
    }

    /// out [g, oh, ow, cout] = conv(x [g, h, w, cin]) + bias (+ `residual`), ReLU'd if
    /// `relu`, for `g` frames: one gemm over the rows of as many frames as make about
    /// [`ROWS`] rows (deep layers' small maps batch many frames, so their weights are read
    /// once for all of them). Returns (oh, ow).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        x: &[f32],
        g: usize,
        hw: (usize, usize),
        relu: bool,
        residual: Option<&[f32]>,
        out: &mut Vec<f32>,
        bufs: &mut (Vec<f32>, Vec<f32>),
    ) -> (usize, usize) {
        if let Some(wino) = &self.wino {
            wino.apply(x, g, hw, &self.bias, relu, residual, out, bufs);
            return hw;
        }
        let col = &mut bufs.0;
        let (oh, ow) = self.out_hw(hw);
        let per_frame = oh * ow;
        let kk = self.k * self.k * self.cin;
        let c = self.cout;
        out.resize(g * per_frame * c, 0.0);
        if self.k == 1 && self.stride == 1 {
            let rows = g * per_frame;
            mm(
                out,
                c,
                (rows, c, kk),
                x,
                (kk, 1),
                &self.w,
                (c, 1),
                false,
                false,
            );
        } else {
            let frames = (ROWS / per_frame).clamp(1, g.max(1));
            let in_frame = hw.0 * hw.1 * self.cin;
            for f0 in (0..g).step_by(frames) {
                let fs = frames.min(g - f0);
                col.resize(fs * per_frame * kk, 0.0);
                for f in 0..fs {
                    let src = &x[(f0 + f) * in_frame..][..in_frame];
                    let dst = &mut col[f * per_frame * kk..][..per_frame * kk];
                    im2col(self, src, hw, (oh, ow), dst);
                }
                let rows = fs * per_frame;
                let dst = &mut out[f0 * per_frame * c..][..rows * c];
                mm(
                    dst,
                    c,
                    (rows, c, kk),
                    col,
                    (kk, 1),
                    &self.w,
                    (c, 1),
                    false,
                    false,
                );
            }
        }
        match residual {
            Some(r) => {
                for (o, r) in out.chunks_mut(c).zip(r.chunks(c)) {
                    for ((o, b), r) in o.iter_mut().zip(&self.bias).zip(r) {
                        let v = *o + b + r;
                        *o = if relu { v.max(0.0) } else { v };
                    }
                }
            }
            None => {
                for o in out.chunks_mut(c) {
                    for (o, b) in o.iter_mut().zip(&self.bias) {
                        let v = *o + b;
                        *o = if relu { v.max(0.0) } else { v };
                    }
                }
            }
        }
        (oh, ow)
    }
}

/// Rows per gemm the frames of a convolution are grouped to (at least one frame).
const ROWS: usize = 2048;

/// im2col rows of a channels-last frame: row (oy, ox) holds the k x k window as (ky, kx,
/// channel), zero outside the frame.
fn im2col(
    f: &Folded,
    x: &[f32],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    col: &mut [f32],
) {
    let (k, c, s, p) = (f.k, f.cin, f.stride, f.pad as isize);
    let kk = k * k * c;
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut col[(oy * ow + ox) * kk..][..kk];
            for ky in 0..k {
                let y = (oy * s) as isize + ky as isize - p;
                let taps = &mut row[ky * k * c..][..k * c];
                if y < 0 || y >= h as isize {
                    taps.fill(0.0);
                    continue;
                }
                let x0 = (ox * s) as isize - p;
                // Columns x0..x0+k inside the frame.
                let lo = x0.max(0);
                let hi = (x0 + k as isize).min(w as isize);
                if hi <= lo {
                    taps.fill(0.0);
                    continue;
                }
                let first = (lo - x0) as usize;
                let n = (hi - lo) as usize;
                taps[..first * c].fill(0.0);
                taps[(first + n) * c..].fill(0.0);
                let src = &x[((y as usize) * w + lo as usize) * c..][..n * c];
                taps[first * c..(first + n) * c].copy_from_slice(src);
            }
        }
    }
}

/// A residual block: its convolutions in order (ReLU after each but the last) and the
/// downsample branch; the sum with the skip, then ReLU.
pub struct FoldedBlock {
    pub convs: Vec<Folded>,
    pub downsample: Option<Folded>,
}

/// The stem (conv1 + bn1, ReLU, max-pool 3x3 stride 2 padding 1) and the blocks that follow
/// it, all frozen.
pub struct FoldedNet {
    pub stem: Folded,
    pub blocks: Vec<FoldedBlock>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Where a frame is after the net: its last map, channels-last.
struct Map {
    data: Vec<f32>,
    hw: (usize, usize),
}

impl FoldedNet {
    /// Frames [n, 3, h, w] in [0, 1] (channel-major) -> per frame the last block's map
    /// [h', w', c] channels-last, or its global average (`pool`: [c]), concatenated. Returns
    /// the values and (h', w', c).
    pub fn forward(
        &self,
        frames: &[f32],
        (n, h, w): (usize, usize, usize),
        pool: bool,
    ) -> (Vec<f32>, (usize, usize, usize)) {
        let c = self
            .blocks
            .last()
            .and_then(|b| b.convs.last())
            .map_or(self.stem.cout, |f| f.cout);
        let (mh, mw) = self.map_hw((h, w));
        let per = if pool { c } else { mh * mw * c };
        let mut out = vec![0f32; n * per];
        let threads = crate::device::cpu_threads().clamp(1, n.max(1));
        let ranges: Vec<Range<usize>> = (0..threads)
            .map(|i| i * n / threads..(i + 1) * n / threads)
            .collect();
        let px = 3 * h * w;
        std::thread::scope(|scope| {
            let mut rest: &mut [f32] = &mut out;
            let mut handles = Vec::new();
            for r in ranges {
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * per);
                rest = tail;
                let input = &frames[r.start * px..r.end * px];
                handles.push(scope.spawn(move || {
                    let _ftz = FlushDenormals::new();
                    let mut scratch = Scratch::default();
                    let g = r.len();
                    if g == 0 {
                        return;
                    }
                    let map = self.frames(input, g, (h, w), &mut scratch);
                    let count = (map.hw.0 * map.hw.1) as f32;
                    let frame = map.hw.0 * map.hw.1 * c;
                    for (m, dst) in map.data.chunks(frame).zip(mine.chunks_mut(per)) {
                        if pool {
                            dst.fill(0.0);
                            for p in m.chunks(c) {
                                for (d, v) in dst.iter_mut().zip(p) {
                                    *d += v;
                                }
                            }
                            for d in dst.iter_mut() {
                                *d /= count;
                            }
                        } else {
                            dst.copy_from_slice(m);
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
        (out, (mh, mw, c))
    }

    /// The size of the last map for frames of `hw`.
    fn map_hw(&self, hw: (usize, usize)) -> (usize, usize) {
        let mut hw = self.stem.out_hw(hw);
        hw = ((hw.0 - 1) / 2 + 1, (hw.1 - 1) / 2 + 1);
        for b in &self.blocks {
            for c in &b.convs {
                hw = c.out_hw(hw);
            }
        }
        hw
    }

    /// `g` frames (CHW in [0, 1], back to back) through the stem and every block.
    fn frames(&self, f: &[f32], g: usize, (h, w): (usize, usize), s: &mut Scratch) -> Map {
        // ImageNet normalisation, channels-last.
        let mut x = s.take();
        x.resize(g * h * w * 3, 0.0);
        for (src, dst) in f.chunks(3 * h * w).zip(x.chunks_mut(3 * h * w)) {
            for ch in 0..3 {
                let (m, d) = (self.mean[ch], 1.0 / self.std[ch]);
                for (i, v) in src[ch * h * w..(ch + 1) * h * w].iter().enumerate() {
                    dst[i * 3 + ch] = (v - m) * d;
                }
            }
        }
        let mut y = s.take();
        let hw = self
            .stem
            .apply(&x, g, (h, w), true, None, &mut y, &mut s.bufs);
        let c = self.stem.cout;
        let (oh, ow) = ((hw.0 - 1) / 2 + 1, (hw.1 - 1) / 2 + 1);
        x.clear();
        x.resize(g * oh * ow * c, 0.0);
        for (src, dst) in y.chunks(hw.0 * hw.1 * c).zip(x.chunks_mut(oh * ow * c)) {
            max_pool(src, hw, c, dst);
        }
        s.give_vec(y);
        let mut cur = Map {
            data: x,
            hw: (oh, ow),
        };
        for b in &self.blocks {
            cur = self.block(b, cur, g, s);
        }
        cur
    }

    fn block(&self, b: &FoldedBlock, x: Map, g: usize, s: &mut Scratch) -> Map {
        let skip = b.downsample.as_ref().map(|d| {
            let mut out = s.take();
            d.apply(&x.data, g, x.hw, false, None, &mut out, &mut s.bufs);
            out
        });
        let last = b.convs.len() - 1;
        let mut cur: Option<Map> = None;
        for (i, c) in b.convs.iter().enumerate() {
            let mut out = s.take();
            let residual = if i == last {
                Some(skip.as_deref().unwrap_or(&x.data))
            } else {
                None
            };
            let (input, hw) = cur.as_ref().map_or((&x.data, x.hw), |m| (&m.data, m.hw));
            let hw = c.apply(input, g, hw, true, residual, &mut out, &mut s.bufs);
            if let Some(m) = cur.replace(Map { data: out, hw }) {
                s.give(m);
            }
        }
        if let Some(v) = skip {
            s.give_vec(v);
        }
        match cur {
            Some(m) => {
                s.give(x);
                m
            }
            None => x,
        }
    }
}

/// Max-pool 3x3, stride 2, padding 1 of a channels-last map of values >= 0 (after a ReLU, so
/// a zero pad picks what PyTorch's -inf pad picks) into `out`; returns its size.
fn max_pool(x: &[f32], (h, w): (usize, usize), c: usize, out: &mut [f32]) {
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    out.fill(0.0);
    for oy in 0..oh {
        for ox in 0..ow {
            let o = &mut out[(oy * ow + ox) * c..][..c];
            for y in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                for xx in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                    let p = &x[(y * w + xx) * c..][..c];
                    for (o, v) in o.iter_mut().zip(p) {
                        *o = o.max(*v);
                    }
                }
            }
        }
    }
}

/// A thread's reusable buffers.
#[derive(Default)]
struct Scratch {
    free: Vec<Vec<f32>>,
    /// im2col rows, or Winograd's transformed tiles and their products.
    bufs: (Vec<f32>, Vec<f32>),
}

impl Scratch {
    fn take(&mut self) -> Vec<f32> {
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v
    }

    fn give_vec(&mut self, v: Vec<f32>) {
        self.free.push(v);
    }

    fn give(&mut self, m: Map) {
        self.free.push(m.data);
    }
}
