//! 3x3 stride-1 padding-1 convolutions (most of a ResNet's arithmetic) by Winograd's minimal
//! filtering F(4x4, 3x3) (Lavin & Gray 2016): each 4x4 output tile from a 6x6 input tile with
//! 36 multiplications per input-output channel pair instead of 144. The weights are
//! transformed once (U = G g G^T); per call the input tiles are transformed (V = B^T d B,
//! channels-last so every step is a vector over channels), the 36 positions are 36 gemms
//! [tiles, cin] x [cin, cout], and the output transform (A^T M A) writes each tile with the
//! bias, residual and ReLU. Rounding differs from direct convolution by a few ulps of the
//! transform's constants; the tests bound it against the composed candle ops.

use super::matmul::mm;

const T: usize = 6;
const M: usize = 4;

const BT: [[f32; T]; T] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

const G: [[f32; 3]; T] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

const AT: [[f32; T]; M] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// Values of V (tiles x channels) per position a group of frames may hold: frames are
/// grouped so the transformed tiles stay near this size.
const GROUP: usize = 1 << 17;

/// Whether Winograd pays for weights that train (transformed at every call, and the input
/// moved to channels-last and back): where each of its 36 gemms has rows enough, at least
/// this many tiles per thread. Measured at 112 px (layer4's 4x4 maps, 16 frames a thread),
/// fine-tuning ran at 5.0 clips/s with it and 5.8 without; frozen stages, their weights
/// transformed once, gain at every size (encoder 124-136 against 89-110 frames/s).
pub fn worth_training(frames: usize, (h, w): (usize, usize)) -> bool {
    frames * h.div_ceil(M) * w.div_ceil(M) >= 256
}

/// A 3x3 convolution's weights transformed: [36][cin, cout].
pub struct Winograd {
    u: Vec<f32>,
    cin: usize,
    cout: usize,
}

impl Winograd {
    /// `w`: [k*k*cin, cout] rows (ky, kx, ci), as the direct path holds them (batch norm
    /// folded in).
    pub fn new(w: &[f32], cin: usize, cout: usize) -> Winograd {
        let mut u = vec![0f32; T * T * cin * cout];
        transform_weights(w, cin, cout, &mut u);
        Winograd { u, cin, cout }
    }

    /// out [g, h, w, cout] = conv3x3(x [g, h, w, cin], padding 1) + bias (+ residual),
    /// ReLU'd if `relu`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        x: &[f32],
        g: usize,
        (h, w): (usize, usize),
        bias: &[f32],
        relu: bool,
        residual: Option<&[f32]>,
        out: &mut Vec<f32>,
        scratch: &mut (Vec<f32>, Vec<f32>),
    ) {
        let (cin, cout) = (self.cin, self.cout);
        let (ty, tx) = (h.div_ceil(M), w.div_ceil(M));
        let per_frame = ty * tx;
        out.resize(g * h * w * cout, 0.0);
        let frames = (GROUP / (per_frame * cin.max(cout))).clamp(1, g.max(1));
        for f0 in (0..g).step_by(frames) {
            let fs = frames.min(g - f0);
            let tiles = fs * per_frame;
            let (v, m) = scratch;
            v.resize(T * T * tiles * cin, 0.0);
            m.resize(T * T * tiles * cout, 0.0);
            let mut d = vec![0f32; T * T * cin];
            let mut tmp = vec![0f32; T * T * cin.max(cout)];
            let src = &x[f0 * h * w * cin..(f0 + fs) * h * w * cin];
            transform_input(src, h, w, cin, tx, per_frame, v, tiles, &mut d, &mut tmp);
            for p in 0..T * T {
                mm(
                    &mut m[p * tiles * cout..][..tiles * cout],
                    cout,
                    (tiles, cout, cin),
                    &v[p * tiles * cin..][..tiles * cin],
                    (cin, 1),
                    &self.u[p * cin * cout..][..cin * cout],
                    (cout, 1),
                    false,
                    false,
                );
            }
            let frame_out = h * w * cout;
            let dst = &mut out[f0 * frame_out..(f0 + fs) * frame_out];
            let res = residual.map(|r| &r[f0 * frame_out..(f0 + fs) * frame_out]);
            let mut y = vec![0f32; cout];
            transform_output(
                m, tiles, cout, bias, res, relu, h, w, tx, per_frame, dst, &mut tmp, &mut y,
            );
        }
    }
}

kernel! {
    /// U = G g G^T for every (ci, co) pair of `w` ([9 * cin, cout] rows (ky, kx, ci)) into
    /// `u` ([36][cin, cout]), vectors over the output channels: weights that train are
    /// transformed at every call.
    fn transform_weights(w: &[f32], cin: usize, cout: usize, u: &mut [f32]) {
        // (G g) [6][3] per output channel.
        let mut gg = vec![0f32; T * 3 * cout];
        for ci in 0..cin {
            gg.fill(0.0);
            for i in 0..T {
                for kx in 0..3 {
                    let dst = &mut gg[(i * 3 + kx) * cout..][..cout];
                    for ky in 0..3 {
                        let g = G[i][ky];
                        if g == 0.0 {
                            continue;
                        }
                        let src = &w[((ky * 3 + kx) * cin + ci) * cout..][..cout];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += g * s;
                        }
                    }
                }
            }
            for i in 0..T {
                for j in 0..T {
                    let dst = &mut u[((i * T + j) * cin + ci) * cout..][..cout];
                    dst.fill(0.0);
                    for kx in 0..3 {
                        let g = G[j][kx];
                        if g == 0.0 {
                            continue;
                        }
                        let src = &gg[(i * 3 + kx) * cout..][..cout];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += g * s;
                        }
                    }
                }
            }
        }
    }
}

kernel! {
    /// Every tile of `x` ([frames, h, w, c]) transformed into `v` ([36][tiles, c]).
    #[allow(clippy::too_many_arguments)]
    fn transform_input(
        x: &[f32],
        h: usize,
        w: usize,
        c: usize,
        tx: usize,
        per_frame: usize,
        v: &mut [f32],
        tiles: usize,
        d: &mut [f32],
        tmp: &mut [f32],
    ) {
        let frame = h * w * c;
        for tile in 0..tiles {
            let (f, t) = (tile / per_frame, tile % per_frame);
            let src = &x[f * frame..][..frame];
            input_tile(src, (h, w), c, (t / tx, t % tx), (&mut *v, tiles, tile), (&mut *d, &mut *tmp));
        }
    }
}

kernel! {
    /// Every tile's products `m` ([36][tiles, c]) transformed back into `out`
    /// ([frames, h, w, c]) with the bias, the residual and the ReLU.
    #[allow(clippy::too_many_arguments)]
    fn transform_output(
        m: &[f32],
        tiles: usize,
        c: usize,
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        h: usize,
        w: usize,
        tx: usize,
        per_frame: usize,
        out: &mut [f32],
        tmp: &mut [f32],
        y: &mut [f32],
    ) {
        let frame = h * w * c;
        for tile in 0..tiles {
            let (f, t) = (tile / per_frame, tile % per_frame);
            let dst = &mut out[f * frame..][..frame];
            let res = residual.map(|r| &r[f * frame..][..frame]);
            let at = (t / tx, t % tx);
            output_tile((m, tiles, tile), c, bias, res, relu, (h, w), at, dst, (&mut *tmp, &mut *y));
        }
    }
}

/// V[p][tile][c] = (B^T d B)[p] of the 6x6 input tile at tile (ty, tx) (zero outside the
/// frame), every channel at once.
#[inline(always)]
fn input_tile(
    x: &[f32],
    (h, w): (usize, usize),
    c: usize,
    (ty, tx): (usize, usize),
    (v, tiles, tile): (&mut [f32], usize, usize),
    (d, tmp): (&mut [f32], &mut [f32]),
) {
    // d: 6x6 channel vectors; rows/columns 4*t - 1 ..= 4*t + 4.
    let y0 = (ty * M) as isize - 1;
    let x0 = (tx * M) as isize - 1;
    d.fill(0.0);
    for i in 0..T {
        let y = y0 + i as isize;
        if y < 0 || y >= h as isize {
            continue;
        }
        for j in 0..T {
            let xx = x0 + j as isize;
            if xx < 0 || xx >= w as isize {
                continue;
            }
            let src = &x[((y as usize) * w + xx as usize) * c..][..c];
            d[(i * T + j) * c..][..c].copy_from_slice(src);
        }
    }
    // tmp = B^T d (rows), then V = tmp B (columns: (tmp B)[i][j] = sum_k tmp[i][k] BT[j][k]).
    let tmp = &mut tmp[..T * T * c];
    tmp.fill(0.0);
    for (i, bt) in BT.iter().enumerate() {
        for (k, &b) in bt.iter().enumerate() {
            if b == 0.0 {
                continue;
            }
            for j in 0..T {
                let (dst, src) = (i * T + j, k * T + j);
                axpy(tmp, dst * c, d, src * c, b, c);
            }
        }
    }
    for i in 0..T {
        for (j, bt) in BT.iter().enumerate() {
            let dst = &mut v[((i * T + j) * tiles + tile) * c..][..c];
            dst.fill(0.0);
            for (k, &b) in bt.iter().enumerate() {
                if b == 0.0 {
                    continue;
                }
                let src = &tmp[(i * T + k) * c..][..c];
                for (o, s) in dst.iter_mut().zip(src) {
                    *o += b * s;
                }
            }
        }
    }
}

/// dst[at..at+c] += a * src[from..from+c].
#[inline(always)]
fn axpy(dst: &mut [f32], at: usize, src: &[f32], from: usize, a: f32, c: usize) {
    for (o, s) in dst[at..at + c].iter_mut().zip(&src[from..from + c]) {
        *o += a * s;
    }
}

/// The 4x4 output tile (A^T M A) at (ty, tx), plus bias (and residual), ReLU'd if `relu`,
/// written where it lies inside the frame.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_tile(
    (m, tiles, tile): (&[f32], usize, usize),
    c: usize,
    bias: &[f32],
    residual: Option<&[f32]>,
    relu: bool,
    (h, w): (usize, usize),
    (ty, tx): (usize, usize),
    out: &mut [f32],
    (tmp, y): (&mut [f32], &mut [f32]),
) {
    // tmp = A^T M: [4][6] channel vectors.
    let tmp = &mut tmp[..M * T * c];
    tmp.fill(0.0);
    for (i, at) in AT.iter().enumerate() {
        for (k, &a) in at.iter().enumerate() {
            if a == 0.0 {
                continue;
            }
            for j in 0..T {
                let src = &m[((k * T + j) * tiles + tile) * c..][..c];
                let dst = &mut tmp[(i * T + j) * c..][..c];
                for (o, s) in dst.iter_mut().zip(src) {
                    *o += a * s;
                }
            }
        }
    }
    for i in 0..M {
        let oy = ty * M + i;
        if oy >= h {
            break;
        }
        for (j, at) in AT.iter().enumerate() {
            let ox = tx * M + j;
            if ox >= w {
                break;
            }
            y.copy_from_slice(bias);
            for (k, &a) in at.iter().enumerate() {
                if a == 0.0 {
                    continue;
                }
                let src = &tmp[(i * T + k) * c..][..c];
                for (o, s) in y.iter_mut().zip(src) {
                    *o += a * s;
                }
            }
            let at_px = (oy * w + ox) * c;
            if let Some(r) = residual {
                for (o, r) in y.iter_mut().zip(&r[at_px..at_px + c]) {
                    *o += r;
                }
            }
            let dst = &mut out[at_px..at_px + c];
            if relu {
                for (o, v) in dst.iter_mut().zip(y.iter()) {
                    *o = v.max(0.0);
                }
            } else {
                dst.copy_from_slice(y);
            }
        }
    }
}
