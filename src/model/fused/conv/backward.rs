//! Backward: ∂L/∂features [n, widths.last()] -> ∂L/∂ of the packed parameters, block by block
//! from the last, rebuilding each block's im2col rows and pooling choices from the conv outputs
//! forward kept (the frames' own gradient is not computed: they are data).

use super::*;

impl ConvStack {
    pub(super) fn backward(
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
