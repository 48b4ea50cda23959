//! Forward: frames [n, channels, height, width] -> pooled features [n, widths.last()], one run of
//! frames at a time per thread (im2col rows, one gemm, then bias, batch statistics,
//! normalization, ReLU and pooling in single passes); each block's conv output is kept for
//! backward.

use super::*;

impl ConvStack {
    pub(super) fn forward(
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
    /// out = max(z * scale + shift, 0).
    fn norm_relu(z: &[f32], scale: &[f32], shift: &[f32], out: &mut [f32]) {
        for (((o, v), s), t) in out.iter_mut().zip(z).zip(scale).zip(shift) {
            *o = (v * s + t).max(0.0);
        }
    }
}
