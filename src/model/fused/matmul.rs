//! The fused op's matrix products on the `gemm` crate: strided and column-major variants, and
//! W_hh^T packed in panels for the per-step product.

use gemm::Parallelism;

pub(super) fn parallelism(m: usize, n: usize, k: usize, allow: bool) -> Parallelism {
    let threads = crate::device::cpu_threads();
    // Below ~2 MFLOP a gemm is done before a second thread has started.
    if allow && threads > 1 && m * n * k >= 1 << 20 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// a[m, k] @ b[k, n] as a new row-major buffer, written by the gemm without zeroing it first.
pub(super) fn mm_new(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    par: bool,
) -> Vec<f32> {
    gemm_new((n, 1), (m, n, k), (a, a_strides), (b, b_strides), par)
}

/// a^T @ b for row-major a [k, m] and b [k, n] (rows `b_rs` apart): the weight gradients,
/// dG^T X. Returned column-major ([n, m] row-major, `transpose` it): the gemm runs ~25% faster
/// writing that than a row-major [m, n], for which the crate swaps the operands and packs all
/// of `a`.
pub(super) fn mm_tn_cols(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    (b, b_rs): (&[f32], usize),
    par: bool,
) -> Vec<f32> {
    gemm_new((1, m), (m, n, k), (a, (1, m)), (b, (b_rs, 1)), par)
}

/// a @ b into a new buffer (from the scratch pool) laid out by `dst_strides` (row-major (n, 1)
/// or column-major (1, m)), written by the gemm without zeroing it first.
fn gemm_new(
    dst_strides: (usize, usize),
    (m, n, k): (usize, usize, usize),
    a: (&[f32], (usize, usize)),
    b: (&[f32], (usize, usize)),
    par: bool,
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    assert!(
        dst_strides == (n, 1) || dst_strides == (1, m),
        "gemm: a new buffer is dense row- or column-major"
    );
    let mut dst = super::split::take(m * n);
    // SAFETY: dst has room for m * n floats; both layouts cover each of them once, and with
    // read_dst = false the gemm writes them without reading, so all are initialized after.
    unsafe {
        gemm_raw(
            (dst.as_mut_ptr(), m * n),
            dst_strides,
            false,
            (m, n, k),
            a,
            b,
            par,
        );
        dst.set_len(m * n);
    }
    dst
}

/// dst (+)= a @ b through the `gemm` crate, every operand given by (row, column) strides;
/// checks that every index the kernel touches lies inside a, b and dst's `len` floats.
///
/// # Safety
/// `dst` must be valid for writes (and reads, with `accumulate`) of `len` floats and must not
/// overlap `a` or `b`.
unsafe fn gemm_raw(
    (dst, len): (*mut f32, usize),
    (d_rs, d_cs): (usize, usize),
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    (a, (a_rs, a_cs)): (&[f32], (usize, usize)),
    (b, (b_rs, b_cs)): (&[f32], (usize, usize)),
    par: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        (m - 1) * d_rs + (n - 1) * d_cs < len && (d_cs != 1 || n <= d_rs),
        "gemm: dst too small"
    );
    assert!(
        (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
        "gemm: lhs out of bounds"
    );
    assert!(
        (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "gemm: rhs out of bounds"
    );
    gemm::gemm(
        m,
        n,
        k,
        dst,
        d_cs as isize,
        d_rs as isize,
        accumulate,
        a.as_ptr(),
        a_cs as isize,
        a_rs as isize,
        b.as_ptr(),
        b_cs as isize,
        b_rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        parallelism(m, n, k, par),
    )
}

/// dst [cols, rows] = src [rows, cols]^T, both row-major: 8x8 blocks in AVX registers where
/// the CPU has them (the weight gradients' transposes ran 3-4x faster so), else 16x16 tiles.
pub(super) fn transpose(src: &[f32], (rows, cols): (usize, usize), dst: &mut [f32]) {
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the feature was detected on this CPU just above.
        unsafe { transpose_avx(src, (rows, cols), dst) };
        return;
    }
    transpose_tiles(src, (rows, cols), (0..rows, 0..cols), dst);
}

/// [`transpose`] of the block `rs` x `cs` of src, in 16x16 tiles.
fn transpose_tiles(
    src: &[f32],
    (rows, cols): (usize, usize),
    (rs, cs): (std::ops::Range<usize>, std::ops::Range<usize>),
    dst: &mut [f32],
) {
    const TILE: usize = 16;
    for r0 in rs.clone().step_by(TILE) {
        for c0 in cs.clone().step_by(TILE) {
            let cw = TILE.min(cs.end - c0);
            for r in r0..(r0 + TILE).min(rs.end) {
                let from = &src[r * cols + c0..][..cw];
                for (d, &v) in dst[c0 * rows + r..].iter_mut().step_by(rows).zip(from) {
                    *d = v;
                }
            }
        }
    }
}

/// [`transpose`] by 8x8 blocks (unpack, shuffle, permute: 24 instructions a block), in 64x64
/// groups so a group's source and destination lines stay in cache; the edges by tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_avx(src: &[f32], (rows, cols): (usize, usize), dst: &mut [f32]) {
    use std::arch::x86_64::*;
    const GROUP: usize = 64;
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for rg in (0..r8).step_by(GROUP) {
        for cg in (0..c8).step_by(GROUP) {
            for r in (rg..(rg + GROUP).min(r8)).step_by(8) {
                for c in (cg..(cg + GROUP).min(c8)).step_by(8) {
                    // SAFETY: r + 7 < rows and c + 7 < cols, so every load reads 8 floats
                    // inside src and every store writes 8 inside dst (both rows * cols long).
                    let l = |i: usize| _mm256_loadu_ps(s.add((r + i) * cols + c));
                    let (a0, a1, a2, a3) = (l(0), l(1), l(2), l(3));
                    let (a4, a5, a6, a7) = (l(4), l(5), l(6), l(7));
                    let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
                    let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
                    let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
                    let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
                    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                    let st = |j: usize, v: __m256| _mm256_storeu_ps(d.add((c + j) * rows + r), v);
                    st(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
                    st(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
                    st(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
                    st(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
                    st(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
                    st(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
                    st(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
                    st(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
                }
            }
        }
    }
    transpose_tiles(src, (rows, cols), (0..r8, c8..cols), dst);
    transpose_tiles(src, (rows, cols), (r8..rows, 0..cols), dst);
}

/// dst[m, n] (+)= a[m, k] @ b[k, n], dst's rows `dst_rs` apart (n for a whole matrix, more
/// for a block of columns of a wider one); a and b given by their row and column strides.
#[allow(clippy::too_many_arguments)]
pub(super) fn mm(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    accumulate: bool,
    par: bool,
) {
    // SAFETY: dst is a distinct borrow of its len floats, so it does not overlap a or b.
    unsafe {
        gemm_raw(
            (dst.as_mut_ptr(), dst.len()),
            (dst_rs, 1),
            accumulate,
            (m, n, k),
            (a, a_strides),
            (b, b_strides),
            par,
        )
    }
}

/// Gate columns per panel of W_hh^T: the forward step's gemm reads W_hh^T as contiguous
/// [hidden, PANEL] panels. As one row-major [hidden, gates*hidden] matrix its rows sit a
/// power of two apart and land on the same cache sets: at hidden 512 the step's gemm ran at
/// 57 GFLOP/s that way and ~120 from panels (measured on this machine).
pub(super) const PANEL: usize = 64;

/// W_hh ([g, h], row-major) as W_hh^T in panels of `PANEL` columns: panel c0 holds columns
/// c0.. (width w) as [h, w] row-major, at offset c0 * h. Transposed in 16x16 tiles, so that
/// reads and writes stay within a few cache lines.
pub(super) fn pack_panels(whh: &[f32], g: usize, h: usize) -> Vec<f32> {
    let mut packed = vec![0f32; g * h];
    pack_panels_into(whh, (g, h), 0..g, &mut packed);
    packed
}

/// The panels of columns `cols` (from a multiple of `PANEL`) into `dst`, which holds just
/// their part of `pack_panels`' layout (offsets (c0 - cols.start) * h).
pub(super) fn pack_panels_into(
    whh: &[f32],
    (g, h): (usize, usize),
    cols: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    const TILE: usize = 16;
    for c0 in cols.clone().step_by(PANEL) {
        let w = PANEL.min(g - c0);
        let panel = &mut dst[(c0 - cols.start) * h..][..w * h];
        let rows = &whh[c0 * h..][..w * h];
        for i0 in (0..w).step_by(TILE) {
            for k0 in (0..h).step_by(TILE) {
                let kw = TILE.min(h - k0);
                for i in i0..(i0 + TILE).min(w) {
                    let src = &rows[i * h + k0..][..kw];
                    for (dst, &v) in panel[k0 * w + i..].iter_mut().step_by(w).zip(src) {
                        *dst = v;
                    }
                }
            }
        }
    }
}

/// hh[b, g] = h[b, hid] @ W_hh^T, W_hh^T given as `pack_panels` panels. `backwards` walks
/// the panels last to first: alternating the direction every step means the panels read
/// last (still in cache) are read first next time, where a fixed order evicts each panel
/// just before its turn once W_hh^T outgrows the L2.
pub(super) fn step_mm(
    hh: &mut [f32],
    (b, g, hid): (usize, usize, usize),
    h: &[f32],
    panels: &[f32],
    backwards: bool,
    par: bool,
) {
    let starts = (0..g).step_by(PANEL);
    let order: Box<dyn Iterator<Item = usize>> = if backwards {
        Box::new(starts.rev())
    } else {
        Box::new(starts)
    };
    for c0 in order {
        let w = PANEL.min(g - c0);
        mm(
            &mut hh[c0..],
            g,
            (b, w, hid),
            h,
            (hid, 1),
            &panels[c0 * hid..][..w * hid],
            (w, 1),
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    /// Every shape's transpose, block sizes and ragged edges included, is the definition's.
    #[test]
    fn transpose_is_the_definition() {
        for (rows, cols) in [
            (1, 1),
            (1, 9),
            (9, 1),
            (8, 8),
            (13, 29),
            (64, 72),
            (130, 67),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; rows * cols];
            super::transpose(&src, (rows, cols), &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
        }
    }
}
