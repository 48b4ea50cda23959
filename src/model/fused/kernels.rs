//! The fused op's element-wise math: gate kernels compiled for AVX2+FMA / AVX-512 where the
//! CPU has them, a vectorizable tanh and sigmoid, and denormal flushing.

use crate::config::{CellKind, Nonlinearity};

/// Defines a gate kernel: a function over slices, never inlined (so its slice arguments are
/// known not to alias and its loop vectorizes; inlined into the big per-step function, the
/// LSTM backward loop over eleven slices stayed scalar), its body compiled for AVX2+FMA when
/// the CPU has them (8 lanes), else for the baseline target. `wide` before `fn` adds an
/// AVX-512 build (16 lanes) where the CPU has it, for the kernels it measured faster in.
macro_rules! kernel {
    (wide $(#[$m:meta])* fn $($rest:tt)*) => {
        kernel!(@emit true, $(#[$m])* fn $($rest)*);
    };
    ($(#[$m:meta])* fn $($rest:tt)*) => {
        kernel!(@emit false, $(#[$m])* fn $($rest)*);
    };
    (@emit $wide:literal, $(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline(never)]
        pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $wide && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the feature was detected on this CPU just above.
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features were detected on this CPU just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

kernel! {
    /// LSTM backward at one step of one row. `dh` holds the total ∂L/∂h_t; `dc` the ∂L/∂c_t
    /// carried from step t+1 and leaves with ∂L/∂c_{t-1}. Writes the pre-activation
    /// gradients of i, f, g, o.
    #[allow(clippy::too_many_arguments)]
    fn lstm_bwd(
        i: &[f32],
        f: &[f32],
        gg: &[f32],
        og: &[f32],
        c: &[f32],
        dc_out: &[f32],
        c_prev: &[f32],
        di: &mut [f32],
        df: &mut [f32],
        dg: &mut [f32],
        dog: &mut [f32],
        dh: &mut [f32],
        dc: &mut [f32],
    ) {
        let h = dh.len();
        // Exact-length views: no bounds checks in the loop.
        let (i, f, gg, og, c, dc_out, c_prev) =
            (&i[..h], &f[..h], &gg[..h], &og[..h], &c[..h], &dc_out[..h], &c_prev[..h]);
        let (di, df, dg, dog, dc) = (&mut di[..h], &mut df[..h], &mut dg[..h], &mut dog[..h], &mut dc[..h]);
        for j in 0..h {
            let dht = dh[j];
            let tc = tanh(c[j]);
            let dct = dc[j] + dc_out[j] + dht * og[j] * (1.0 - tc * tc);
            di[j] = dct * gg[j] * i[j] * (1.0 - i[j]);
            df[j] = dct * c_prev[j] * f[j] * (1.0 - f[j]);
            dg[j] = dct * i[j] * (1.0 - gg[j] * gg[j]);
            dog[j] = dht * tc * og[j] * (1.0 - og[j]);
            dc[j] = dct * f[j];
        }
    }
}

kernel! {
    /// The sum over units of (∂L/∂c_t)² at one LSTM step of one row, computed as `lstm_bwd`
    /// forms it (carried + direct + through h_t = o ⊙ tanh c_t), before it runs: the cell
    /// state's gradient flow.
    fn lstm_dc_squares(og: &[f32], c: &[f32], dc_out: &[f32], dh: &[f32], dc: &[f32]) -> f64 {
        let h = dh.len();
        let (og, c, dc_out, dc) = (&og[..h], &c[..h], &dc_out[..h], &dc[..h]);
        let mut total = 0f64;
        for j in 0..h {
            let tc = tanh(c[j]);
            let dct = dc[j] + dc_out[j] + dh[j] * og[j] * (1.0 - tc * tc);
            total += dct as f64 * dct as f64;
        }
        total
    }
}

kernel! {
    /// GRU backward at one step of one row. `dh` holds the total ∂L/∂h_t and leaves with the
    /// part that flows to h_{t-1} directly (z ⊙ ∂L/∂h_t; the rest goes through W_hh). Writes
    /// the pre-activation gradients of the input side (r, z, n) and of h @ W_hh^T + b_hh.
    #[allow(clippy::too_many_arguments)]
    fn gru_bwd(
        r: &[f32],
        z: &[f32],
        n: &[f32],
        hn: &[f32],
        hp: &[f32],
        dxr: &mut [f32],
        dxz: &mut [f32],
        dxn: &mut [f32],
        dqr: &mut [f32],
        dqz: &mut [f32],
        dqn: &mut [f32],
        dh: &mut [f32],
    ) {
        let h = dh.len();
        let (r, z, n, hn, hp) = (&r[..h], &z[..h], &n[..h], &hn[..h], &hp[..h]);
        let (dxr, dxz, dxn) = (&mut dxr[..h], &mut dxz[..h], &mut dxn[..h]);
        let (dqr, dqz, dqn) = (&mut dqr[..h], &mut dqz[..h], &mut dqn[..h]);
        for j in 0..h {
            let dht = dh[j];
            let dan = dht * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
            let dar = dan * hn[j] * r[j] * (1.0 - r[j]);
            let daz = dht * (hp[j] - n[j]) * z[j] * (1.0 - z[j]);
            dxr[j] = dar;
            dxz[j] = daz;
            dxn[j] = dan;
            dqr[j] = dar;
            dqz[j] = daz;
            dqn[j] = dan * r[j];
            dh[j] = dht * z[j];
        }
    }
}

kernel! {
    /// sum += each row of `rows` ([_, sum.len()], row-major): the bias gradients.
    fn sum_rows(sum: &mut [f32], rows: &[f32]) {
        let n = sum.len();
        for row in rows.chunks_exact(n) {
            for (a, v) in sum.iter_mut().zip(&row[..n]) {
                *a += v;
            }
        }
    }
}

kernel! {
    /// Σ v², in 8 independent f64 lanes (a single running sum is one long dependency chain).
    fn sum_squares(v: &[f32]) -> f64 {
        // In f64: a vanishing gradient's squares (below 1e-19) would underflow an f32 sum.
        let mut lanes = [0f64; 8];
        let mut chunks = v.chunks_exact(8);
        for c in &mut chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += x as f64 * x as f64;
            }
        }
        chunks.remainder().iter().map(|&x| x as f64 * x as f64).sum::<f64>()
            + lanes.iter().sum::<f64>()
    }
}

kernel! {
    wide
    /// One row's gate math at one step, over a worker's hk units: `pre` = h_{t-1} W_hh^T (its
    /// gate columns, gate-major), `x` = the row's input projection, `bx` the input-side
    /// bias (b_ih + b_hh; the GRU's b_hh is in `bhh`). Writes h_t to `h_out`, the LSTM's c_t to `c` and
    /// `c_out`, the GRU's n to `n_out`, and leaves the activations backward needs in `pre`
    /// (lstm: i f g o; gru: r z hn).
    #[allow(clippy::too_many_arguments)]
    fn gates(
        kind: CellKind,
        nonlinearity: Nonlinearity,
        pre: &mut [f32],
        x: &[f32],
        bx: &[f32],
        bhh: &[f32],
        h_prev: &[f32],
        c: &mut [f32],
        h_out: &mut [f32],
        c_out: &mut [f32],
        n_out: &mut [f32],
    ) {
        let hk = h_out.len();
        // Simple loops over exact-length slices, so that they vectorize.
        match kind {
            CellKind::Rnn => {
                let (pre, x, bx, h_out) = (&mut pre[..hk], &x[..hk], &bx[..hk], &mut h_out[..hk]);
                for j in 0..hk {
                    let v = pre[j] + x[j] + bx[j];
                    h_out[j] = match nonlinearity {
                        Nonlinearity::Tanh => tanh(v),
                        Nonlinearity::Relu => v.max(0.0),
                    };
                }
            }
            CellKind::Lstm => {
                // i f (sigmoid), g (tanh), o (sigmoid), each with its input and bias added.
                let (ifo, rest) = pre.split_at_mut(2 * hk);
                let (gg, og) = rest.split_at_mut(hk);
                let (x_if, x_g, x_o) = (&x[..2 * hk], &x[2 * hk..3 * hk], &x[3 * hk..4 * hk]);
                let (b_if, b_g, b_o) = (&bx[..2 * hk], &bx[2 * hk..3 * hk], &bx[3 * hk..4 * hk]);
                for ((v, xv), bv) in ifo.iter_mut().zip(x_if).zip(b_if) {
                    *v = sigmoid(*v + xv + bv);
                }
                for ((v, xv), bv) in og.iter_mut().zip(x_o).zip(b_o) {
                    *v = sigmoid(*v + xv + bv);
                }
                for ((v, xv), bv) in gg.iter_mut().zip(x_g).zip(b_g) {
                    *v = tanh(*v + xv + bv);
                }
                let (i, f) = ifo.split_at(hk);
                let (i, f, gg, og) = (&i[..hk], &f[..hk], &gg[..hk], &og[..hk]);
                let (c, c_out, h_out) = (&mut c[..hk], &mut c_out[..hk], &mut h_out[..hk]);
                for j in 0..hk {
                    let cj = f[j] * c[j] + i[j] * gg[j];
                    c[j] = cj;
                    c_out[j] = cj;
                    h_out[j] = og[j] * tanh(cj);
                }
            }
            CellKind::Gru => {
                let (rz, hn) = pre.split_at_mut(2 * hk);
                for (((p, xv), bv), bh) in rz.iter_mut().zip(x).zip(bx).zip(bhh) {
                    *p = sigmoid(*p + xv + bv + bh);
                }
                for (p, bv) in hn.iter_mut().zip(&bhh[2 * hk..]) {
                    *p += bv;
                }
                let (r, z) = rz.split_at(hk);
                let (xn, bn) = (&x[2 * hk..3 * hk], &bx[2 * hk..3 * hk]);
                let (r, z, hn) = (&r[..hk], &z[..hk], &hn[..hk]);
                let (n_out, h_prev, h_out) = (&mut n_out[..hk], &h_prev[..hk], &mut h_out[..hk]);
                for j in 0..hk {
                    let n = tanh(xn[j] + bn[j] + r[j] * hn[j]);
                    n_out[j] = n;
                    h_out[j] = n + z[j] * (h_prev[j] - n);
                }
            }
        }
    }
}

/// σ(x) = (1 + tanh(x/2)) / 2: one rational function and one division instead of an exp
/// and a division (absolute error ≤ 1e-7; see the test).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    tanh(0.5 * x).mul_add(0.5, 0.5)
}

/// tanh as Eigen's single-precision rational minimax approximation (odd degree 13 over even
/// degree 6) on x clamped to ±7.9053, past which tanh rounds to ±1 in f32: branch-free, so
/// the gate loops vectorize (libm's expf/tanhf were a fifth of the training time). The
/// LSTM's forward gate kernel ran 442 -> 334 ns per row of 256 units against the previous
/// 1 / (1 + exp(-x)) with Cephes' exp polynomial, which costs about twice the operations.
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p.mul_add(x2, 2.000_188e-13);
    p = p.mul_add(x2, -8.604_672e-11);
    p = p.mul_add(x2, 5.122_297e-8);
    p = p.mul_add(x2, 1.485_722_4e-5);
    p = p.mul_add(x2, 6.372_619e-4);
    p = p.mul_add(x2, 4.893_524_6e-3);
    let mut q = 1.198_258_4e-6_f32;
    q = q.mul_add(x2, 1.185_347_1e-4);
    q = q.mul_add(x2, 2.268_434_6e-3);
    q = q.mul_add(x2, 4.893_525e-3);
    x * p / q
}

/// Asks for `v`'s cache lines to be brought into L2 (no-op off x86_64).
#[inline(always)]
pub(super) fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: a prefetch is only a hint; the address is inside `v`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
}

/// Flushes denormal floats to zero (x86 MXCSR FTZ + DAZ) while alive, restoring the previous
/// mode on drop. Vanishing gradients over long sequences reach the denormal range, where
/// every arithmetic instruction takes ~100 cycles: a tanh RNN at 256 steps ran 30x slower.
pub(super) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    pub(super) fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr/ldmxcsr only read and write this thread's SSE control register.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved as *mut u32, options(nostack));
                let flushed = saved | 0x8040; // FTZ (bit 15) | DAZ (bit 6)
                std::arch::asm!("ldmxcsr [{}]", in(reg) &flushed as *const u32, options(nostack, readonly));
            }
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the value read in new().
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved as *const u32, options(nostack, readonly));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sigmoid, sum_squares, tanh};

    /// A vanishing gradient's squared norm survives: 1e-25 squared is 1e-50, far below f32.
    #[test]
    fn sum_squares_keeps_tiny_gradients() {
        let v = [1e-25f32; 19];
        let want = 19.0 * (1e-25f32 as f64).powi(2);
        assert!(
            (sum_squares(&v) - want).abs() < 1e-12 * want,
            "{}",
            sum_squares(&v)
        );
        assert_eq!(sum_squares(&[3.0, 4.0]), 25.0);
    }

    /// Against f64's tanh and 1 / (1 + e^-x) on a dense grid over the range gates see and past
    /// both saturation points.
    #[test]
    fn tanh_and_sigmoid_match_f64_to_float_precision() {
        let (mut et, mut es) = (0f64, 0f64);
        for i in -400_000..=400_000 {
            let x = i as f32 * 5e-5;
            let x64 = x as f64;
            et = et.max((tanh(x) as f64 - x64.tanh()).abs());
            es = es.max((sigmoid(x) as f64 - 1.0 / (1.0 + (-x64).exp())).abs());
        }
        for x in [-1e4f32, -100.0, -30.0, 30.0, 100.0, 1e4] {
            et = et.max((tanh(x) as f64 - (x as f64).tanh()).abs());
            es = es.max((sigmoid(x) as f64 - 1.0 / (1.0 + (-(x as f64)).exp())).abs());
        }
        crate::say!("max abs error: tanh {et:e}, sigmoid {es:e}");
        assert!(et < 3e-7 && es < 3e-7, "tanh {et:e}, sigmoid {es:e}");
    }
}
