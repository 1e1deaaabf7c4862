//! Dense f32 matrix products, for the linear layers of float models (BERT's encoder):
//! y (T, N) = x (T, K) . w (N, K)^T + b (N).
//!
//! The weights are packed once at load ([`PackedF32::pack`]) into panels of [`NR`] output
//! columns: panel p holds, for each k, the 16 weights `w[16p..16p+16][k]` side by side, so one
//! step of the micro-kernel loads two 8-lane vectors of weights, broadcasts the activations of
//! [`MR`] tokens and does 12 fused multiply-adds into 12 vector accumulators (the outer-product
//! form that BLAS kernels use: 8 loads per 12 FMAs, against one load per FMA for row dot products).
//! Blocking: the tokens go in blocks of [`MC`] and K in blocks of [`KC`], so that a token block of
//! activations stays in L2 and a panel's K block (16 KB) in L1 while every tile of the token block
//! reuses it.
//!
//! Every output is one chain of fused multiply-adds, `acc = b; acc = fma(x[k], w[k], acc)` for k =
//! 0, 1, ..., K-1, whatever the tile, the block, the thread or the level: between K blocks the
//! accumulator is stored in `y` as an f32 and loaded back, which rounds nothing. So:
//! - the AVX2+FMA kernel gives the bits of the scalar kernel (whose `mul_add` is the same fused
//!   operation), tested;
//! - a token's outputs do not depend on the other tokens of the batch nor on how many threads run:
//!   a batch of sequences gives each one the bits it gets alone.
//!
//! [`matmul_f32_reference`] is the plain definition on unpacked weights, in the same order.

use crate::matmul::Level;
use crate::pool::{split_range, SharedMut, ThreadPool};

/// Output columns per packed panel (two AVX2 vectors).
pub const NR: usize = 16;
/// Tokens per micro-tile: 6 tokens x 2 vectors = 12 accumulators, leaving registers for the two
/// weight vectors and a broadcast (16 on AVX2).
pub const MR: usize = 6;
/// Depth of a K block: a panel's block is KC x NR x 4 bytes = 16 KB, half of an L1 data cache.
pub const KC: usize = 256;
/// Tokens per block: MC x KC x 4 bytes = 96 KB of activations, well inside L2.
pub const MC: usize = 96;

/// A weight matrix w (N, K) packed into panels of [`NR`] columns: (ceil(N/NR), K, NR), the last
/// panel padded with zeros.
#[derive(Clone, Debug)]
pub struct PackedF32 {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl PackedF32 {
    /// w (N, K) row-major, as a PyTorch linear layer stores it ([out, in]) -> the packed panels.
    ///
    /// # Panics
    /// If `w.len() != rows * cols` (a caller's shape check belongs before this, at load time).
    pub fn pack(w: &[f32], rows: usize, cols: usize) -> PackedF32 {
        assert_eq!(w.len(), rows * cols, "pack: w has {} values, expected N*K = {rows}*{cols}", w.len());
        let panels = rows.div_ceil(NR);
        let mut data = vec![0f32; panels * cols * NR];
        for n in 0..rows {
            let (panel, lane) = (n / NR, n % NR);
            for k in 0..cols {
                data[(panel * cols + k) * NR + lane] = w[n * cols + k];
            }
        }
        PackedF32 { data, rows, cols }
    }

    /// N, the number of outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// K, the number of inputs.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The number of panels, ceil(N / NR).
    pub fn panels(&self) -> usize {
        self.rows.div_ceil(NR)
    }

    /// Panel p from depth k0 on: (K - k0, NR).
    fn panel(&self, p: usize, k0: usize) -> &[f32] {
        &self.data[(p * self.cols + k0) * NR..(p + 1) * self.cols * NR]
    }
}

/// w (N, K) packed, b (N) or none, x (T, K) -> y (T, N) = x . w^T + b.
///
/// Panels are split statically over the pool's threads. Results are bit-identical at every level
/// and thread count (see the module doc).
///
/// # Panics
/// If the lengths of `x`, `y` or `bias` do not match the shapes.
pub fn matmul_f32(pool: &ThreadPool, level: Level, w: &PackedF32, bias: Option<&[f32]>, x: &[f32], t: usize, y: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), t * k, "matmul_f32: x has {} values, expected T*K = {t}*{k}", x.len());
    assert_eq!(y.len(), t * n, "matmul_f32: y has {} values, expected T*N = {t}*{n}", y.len());
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "matmul_f32: bias has {} values, expected N = {n}", b.len());
    }
    if t == 0 || n == 0 {
        return;
    }
    let out = SharedMut::new(y);
    pool.run(&|i, nt| {
        let panels = split_range(w.panels(), i, nt);
        // SAFETY: thread i writes only the columns of its own panels, in every row of y.
        unsafe { panels_share(level, w, bias, x, t, out, panels) };
    });
}

/// The definition, on unpacked weights: w (N, K), b (N) or none, x (T, K) -> y (T, N), each
/// output one chain of fused multiply-adds from the bias in order of k.
pub fn matmul_f32_reference(w: &[f32], bias: Option<&[f32]>, x: &[f32], t: usize, n: usize, k: usize, y: &mut [f32]) {
    for ti in 0..t {
        for ni in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[ni]);
            for ki in 0..k {
                acc = x[ti * k + ki].mul_add(w[ni * k + ki], acc);
            }
            y[ti * n + ni] = acc;
        }
    }
}

/// One micro-tile of the product, for callers that consume the outputs tile by tile instead of
/// storing y (a top-K search keeps only the best scores of each column):
/// acc (rows, NR) += x (rows, kc) . w (N, K)^T restricted to panel `p` and depths `k0..k0 + kc`,
/// where row r of x starts at `x[r * x_stride]` and its depth k at `x[r * x_stride + k]`.
///
/// Each output continues its one chain of fused multiply-adds, so calls for k blocks in order give
/// the bits of [`matmul_f32`] (columns past N, in the last panel's padding, get zeros times x).
///
/// # Panics
/// If `rows` is not in 1..=[`MR`], `p` is not a panel, `k0 + kc > K`, or `x` is too short for
/// the rows it names.
#[allow(clippy::too_many_arguments)] // the tile's coordinates, as the micro-kernel takes them
pub fn matmul_f32_tile(
    level: Level,
    w: &PackedF32,
    p: usize,
    k0: usize,
    kc: usize,
    x: &[f32],
    x_stride: usize,
    rows: usize,
    acc: &mut [[f32; NR]; MR],
) {
    assert!((1..=MR).contains(&rows), "matmul_f32_tile: rows must be in 1..={MR}, got {rows}");
    assert!(
        p < w.panels() && k0 + kc <= w.cols,
        "matmul_f32_tile: panel {p}, depths {k0}..{} outside {} panels of depth {}",
        k0 + kc,
        w.panels(),
        w.cols
    );
    let need = (rows - 1) * x_stride + k0 + kc;
    assert!(kc == 0 || x.len() >= need, "matmul_f32_tile: x has {} values, the tile reads {need}", x.len());
    if kc == 0 {
        return;
    }
    tile(level, rows, &x[k0..], x_stride, &w.panel(p, k0)[..kc * NR], kc, acc);
}

/// The outputs of `panels` for every token, block by block.
///
/// # Safety
/// No other thread writes the columns of `panels` during the call; `out` is y (T, N).
unsafe fn panels_share(level: Level, w: &PackedF32, bias: Option<&[f32]>, x: &[f32], t: usize, out: SharedMut<f32>, panels: std::ops::Range<usize>) {
    let (n, k) = (w.rows, w.cols);
    for t0 in (0..t).step_by(MC) {
        let t1 = (t0 + MC).min(t);
        for k0 in (0..k.max(1)).step_by(KC) {
            let kc = KC.min(k - k0);
            // On AVX-512 two panels at a time (12 accumulators: see `avx512`), else one.
            let step = if level == Level::Avx512Vnni { 2 } else { 1 };
            let mut p = panels.start;
            while p < panels.end {
                let pair = step == 2 && p + 1 < panels.end;
                for r0 in (t0..t1).step_by(MR) {
                    let rows = MR.min(t1 - r0);
                    // The accumulators' starting values: the bias in the first K block, then
                    // what the previous block left in y (an f32 store and load round nothing).
                    let mut acc = [[[0f32; NR]; MR]; 2];
                    for (q, acc_q) in acc.iter_mut().enumerate().take(1 + pair as usize) {
                        let n0 = (p + q) * NR;
                        let width = NR.min(n - n0);
                        for (r, acc_row) in acc_q.iter_mut().enumerate().take(rows) {
                            if k0 == 0 {
                                if let Some(b) = bias {
                                    acc_row[..width].copy_from_slice(&b[n0..n0 + width]);
                                }
                            } else {
                                // SAFETY: row r0 + r, columns n0..n0+width are this thread's.
                                acc_row[..width].copy_from_slice(unsafe { out.slice((r0 + r) * n + n0, width) });
                            }
                        }
                    }
                    let x_tile = &x[r0 * k + k0..];
                    let [acc0, acc1] = &mut acc;
                    if pair {
                        tile_pair(rows, x_tile, k, &w.panel(p, k0)[..kc * NR], &w.panel(p + 1, k0)[..kc * NR], kc, acc0, acc1);
                    } else {
                        tile(level, rows, x_tile, k, &w.panel(p, k0)[..kc * NR], kc, acc0);
                    }
                    for (q, acc_q) in acc.iter().enumerate().take(1 + pair as usize) {
                        let n0 = (p + q) * NR;
                        let width = NR.min(n - n0);
                        for (r, acc_row) in acc_q.iter().enumerate().take(rows) {
                            // SAFETY: as above.
                            unsafe { out.slice((r0 + r) * n + n0, width) }.copy_from_slice(&acc_row[..width]);
                        }
                    }
                }
                p += if pair { 2 } else { 1 };
            }
        }
    }
}

/// acc (rows, NR) += x (rows, kc; row stride `x_stride`) . panel (kc, NR), at `level`.
#[inline(always)]
fn tile(level: Level, rows: usize, x: &[f32], x_stride: usize, panel: &[f32], kc: usize, acc: &mut [[f32; NR]; MR]) {
    debug_assert!((1..=MR).contains(&rows) && panel.len() == kc * NR);
    debug_assert!(kc == 0 || x.len() >= (rows - 1) * x_stride + kc);
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512Vnni {
        // SAFETY: the level implies AVX-512 F; the slices hold what the tile reads (checked above).
        unsafe {
            return match rows {
                1 => avx512::tile::<1>(x, x_stride, panel, kc, acc),
                2 => avx512::tile::<2>(x, x_stride, panel, kc, acc),
                3 => avx512::tile::<3>(x, x_stride, panel, kc, acc),
                4 => avx512::tile::<4>(x, x_stride, panel, kc, acc),
                5 => avx512::tile::<5>(x, x_stride, panel, kc, acc),
                _ => avx512::tile::<6>(x, x_stride, panel, kc, acc),
            };
        }
    }
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: the level implies AVX2 and FMA; the slices hold what the tile reads (checked above).
        unsafe {
            return match rows {
                1 => avx2::tile::<1>(x, x_stride, panel, kc, acc),
                2 => avx2::tile::<2>(x, x_stride, panel, kc, acc),
                3 => avx2::tile::<3>(x, x_stride, panel, kc, acc),
                4 => avx2::tile::<4>(x, x_stride, panel, kc, acc),
                5 => avx2::tile::<5>(x, x_stride, panel, kc, acc),
                _ => avx2::tile::<6>(x, x_stride, panel, kc, acc),
            };
        }
    }
    let _ = level;
    tile_scalar(rows, x, x_stride, panel, kc, acc)
}

/// [`tile`] on two panels at once with the AVX-512 kernel (only chosen at that level).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile_pair(rows: usize, x: &[f32], x_stride: usize, p0: &[f32], p1: &[f32], kc: usize, acc0: &mut [[f32; NR]; MR], acc1: &mut [[f32; NR]; MR]) {
    debug_assert!((1..=MR).contains(&rows) && p0.len() == kc * NR && p1.len() == kc * NR);
    debug_assert!(kc == 0 || x.len() >= (rows - 1) * x_stride + kc);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: called at the AVX-512 level only, which implies AVX-512 F; the slices hold what the
    // tile reads (checked above).
    unsafe {
        match rows {
            1 => avx512::tile_pair::<1>(x, x_stride, p0, p1, kc, acc0, acc1),
            2 => avx512::tile_pair::<2>(x, x_stride, p0, p1, kc, acc0, acc1),
            3 => avx512::tile_pair::<3>(x, x_stride, p0, p1, kc, acc0, acc1),
            4 => avx512::tile_pair::<4>(x, x_stride, p0, p1, kc, acc0, acc1),
            5 => avx512::tile_pair::<5>(x, x_stride, p0, p1, kc, acc0, acc1),
            _ => avx512::tile_pair::<6>(x, x_stride, p0, p1, kc, acc0, acc1),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the AVX-512 level exists on x86-64 only: {rows} {x_stride} {} {} {kc} {} {}", p0.len(), p1.len(), acc0.len(), acc1.len());
}

/// The scalar micro-kernel: the same fused operations, one lane at a time.
fn tile_scalar(rows: usize, x: &[f32], x_stride: usize, panel: &[f32], kc: usize, acc: &mut [[f32; NR]; MR]) {
    for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
        let x_row = &x[r * x_stride..r * x_stride + kc];
        for (&xv, w) in x_row.iter().zip(panel.chunks_exact(NR)) {
            for (a, &wv) in acc_row.iter_mut().zip(w) {
                *a = xv.mul_add(wv, *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// acc (R, NR) += x (R, kc) . panel (kc, NR): 2R vector accumulators, each k one broadcast per
    /// token and two weight loads.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `x` holds `(R - 1) * x_stride + kc` values, `panel` `kc * NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(x: &[f32], x_stride: usize, panel: &[f32], kc: usize, acc: &mut [[f32; NR]; MR]) {
        unsafe {
            let mut v = [[_mm256_setzero_ps(); 2]; R];
            for (vr, ar) in v.iter_mut().zip(acc.iter()) {
                *vr = [_mm256_loadu_ps(ar.as_ptr()), _mm256_loadu_ps(ar.as_ptr().add(8))];
            }
            let (xp, wp) = (x.as_ptr(), panel.as_ptr());
            for k in 0..kc {
                let w0 = _mm256_loadu_ps(wp.add(k * NR));
                let w1 = _mm256_loadu_ps(wp.add(k * NR + 8));
                for (r, vr) in v.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*xp.add(r * x_stride + k));
                    vr[0] = _mm256_fmadd_ps(xv, w0, vr[0]);
                    vr[1] = _mm256_fmadd_ps(xv, w1, vr[1]);
                }
            }
            for (vr, ar) in v.iter().zip(acc.iter_mut()) {
                _mm256_storeu_ps(ar.as_mut_ptr(), vr[0]);
                _mm256_storeu_ps(ar.as_mut_ptr().add(8), vr[1]);
            }
        }
    }
}

/// The AVX-512 micro-kernels: a panel's 16 columns are one vector. [`matmul_f32`] takes two panels
/// at a time (`tile_pair`: each k two weight loads, a broadcast per token and two 16-lane fused
/// multiply-adds per token, 12 independent chains at 6 tokens, twice the width of AVX2's), the
/// one-panel tile serves [`matmul_f32_tile`] and an odd last panel. Each output's chain of fused
/// multiply-adds is the same, so they give the same bits (tested). Measured on an Intel Xeon (2
/// cores, `ferrolm embed` of 3,000 sentences of 140 characters on average): 168 against 137.5
/// texts/s at the AVX2 level (one panel at a time with 6 chains: 148-154), identical vectors.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// acc (R, NR) += x (R, kc) . panel (kc, NR): R vector accumulators of 16 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `x` holds `(R - 1) * x_stride + kc` values, `panel` `kc * NR`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(x: &[f32], x_stride: usize, panel: &[f32], kc: usize, acc: &mut [[f32; NR]; MR]) {
        unsafe {
            let mut v = [_mm512_setzero_ps(); R];
            for (vr, ar) in v.iter_mut().zip(acc.iter()) {
                *vr = _mm512_loadu_ps(ar.as_ptr());
            }
            let (xp, wp) = (x.as_ptr(), panel.as_ptr());
            for k in 0..kc {
                let w = _mm512_loadu_ps(wp.add(k * NR));
                for (r, vr) in v.iter_mut().enumerate() {
                    *vr = _mm512_fmadd_ps(_mm512_set1_ps(*xp.add(r * x_stride + k)), w, *vr);
                }
            }
            for (vr, ar) in v.iter().zip(acc.iter_mut()) {
                _mm512_storeu_ps(ar.as_mut_ptr(), *vr);
            }
        }
    }

    /// [`tile`] on two panels: 2R accumulators, each k two weight loads and a broadcast per token
    /// shared by both (12 independent chains at R = 6, enough to cover the FMA latency).
    ///
    /// # Safety
    /// As [`tile`], for both panels.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn tile_pair<const R: usize>(
        x: &[f32],
        x_stride: usize,
        p0: &[f32],
        p1: &[f32],
        kc: usize,
        acc0: &mut [[f32; NR]; MR],
        acc1: &mut [[f32; NR]; MR],
    ) {
        unsafe {
            let mut v = [[_mm512_setzero_ps(); 2]; R];
            for (r, vr) in v.iter_mut().enumerate() {
                *vr = [_mm512_loadu_ps(acc0[r].as_ptr()), _mm512_loadu_ps(acc1[r].as_ptr())];
            }
            let (xp, w0p, w1p) = (x.as_ptr(), p0.as_ptr(), p1.as_ptr());
            for k in 0..kc {
                let w0 = _mm512_loadu_ps(w0p.add(k * NR));
                let w1 = _mm512_loadu_ps(w1p.add(k * NR));
                for (r, vr) in v.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*xp.add(r * x_stride + k));
                    vr[0] = _mm512_fmadd_ps(xv, w0, vr[0]);
                    vr[1] = _mm512_fmadd_ps(xv, w1, vr[1]);
                }
            }
            for (r, vr) in v.iter().enumerate() {
                _mm512_storeu_ps(acc0[r].as_mut_ptr(), vr[0]);
                _mm512_storeu_ps(acc1[r].as_mut_ptr(), vr[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Odd shapes: N not a multiple of 16, K past one block and not a multiple of it, T with a
    /// partial tile and more than one token block.
    const SHAPES: [(usize, usize, usize); 6] = [(1, 1, 1), (5, 17, 3), (37, 300, 7), (16, 256, 6), (50, 513, 101), (33, 40, 200)];

    #[test]
    fn every_level_and_thread_count_equals_the_reference_bit_for_bit() {
        let pools = [ThreadPool::new(1), ThreadPool::new(3)];
        for (n, k, t) in SHAPES {
            let w = pseudo_random(n * k, 1);
            let b = pseudo_random(n, 2);
            let x = pseudo_random(t * k, 3);
            let packed = PackedF32::pack(&w, n, k);
            for bias in [Some(&b[..]), None] {
                let mut want = vec![0f32; t * n];
                matmul_f32_reference(&w, bias, &x, t, n, k, &mut want);
                for level in Level::all_available() {
                    for pool in &pools {
                        let mut y = vec![f32::NAN; t * n];
                        matmul_f32(pool, level, &packed, bias, &x, t, &mut y);
                        let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "N={n} K={k} T={t} bias={} level {level:?} threads {}", bias.is_some(), pool.n_threads());
                    }
                }
            }
        }
    }

    #[test]
    fn reference_is_the_product_plus_bias() {
        // Against a sum in f64: the chain of fused operations stays within float rounding.
        let (n, k, t) = (7, 129, 3);
        let (w, b, x) = (pseudo_random(n * k, 4), pseudo_random(n, 5), pseudo_random(t * k, 6));
        let mut y = vec![0f32; t * n];
        matmul_f32_reference(&w, Some(&b), &x, t, n, k, &mut y);
        for ti in 0..t {
            for ni in 0..n {
                let exact: f64 = b[ni] as f64 + (0..k).map(|ki| x[ti * k + ki] as f64 * w[ni * k + ki] as f64).sum::<f64>();
                assert!((y[ti * n + ni] as f64 - exact).abs() < 1e-5, "({ti}, {ni}): {} vs {exact}", y[ti * n + ni]);
            }
        }
    }

    #[test]
    fn a_token_gets_the_same_bits_alone_and_in_a_batch() {
        let (n, k, t) = (40, 300, 13);
        let (w, x) = (pseudo_random(n * k, 7), pseudo_random(t * k, 8));
        let packed = PackedF32::pack(&w, n, k);
        let pool = ThreadPool::new(2);
        let level = Level::best_available();
        let mut batch = vec![0f32; t * n];
        matmul_f32(&pool, level, &packed, None, &x, t, &mut batch);
        for ti in 0..t {
            let mut alone = vec![0f32; n];
            matmul_f32(&pool, level, &packed, None, &x[ti * k..(ti + 1) * k], 1, &mut alone);
            assert_eq!(alone, batch[ti * n..(ti + 1) * n], "token {ti}");
        }
    }

    #[test]
    fn tiles_in_k_blocks_give_the_bits_of_the_whole_product() {
        let (n, k, t) = (37, 300, 7);
        let (w, x) = (pseudo_random(n * k, 9), pseudo_random(t * k, 10));
        let packed = PackedF32::pack(&w, n, k);
        let mut want = vec![0f32; t * n];
        matmul_f32_reference(&w, None, &x, t, n, k, &mut want);
        for level in Level::all_available() {
            for p in 0..packed.panels() {
                for r0 in (0..t).step_by(MR) {
                    let rows = MR.min(t - r0);
                    let mut acc = [[0f32; NR]; MR];
                    for (k0, kc) in [(0, 100), (100, 0), (100, 157), (257, 43)] {
                        matmul_f32_tile(level, &packed, p, k0, kc, &x[r0 * k..], k, rows, &mut acc);
                    }
                    for (r, row) in acc.iter().enumerate().take(rows) {
                        for (j, v) in row.iter().enumerate() {
                            let col = p * NR + j;
                            let expected = if col < n { want[(r0 + r) * n + col] } else { 0.0 };
                            assert_eq!(v.to_bits(), expected.to_bits(), "level {level:?} row {} column {col}", r0 + r);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_depth_gives_the_bias_and_empty_batches_are_fine() {
        let pool = ThreadPool::new(2);
        let packed = PackedF32::pack(&[], 3, 0);
        let mut y = vec![f32::NAN; 6];
        matmul_f32(&pool, Level::best_available(), &packed, Some(&[1.0, 2.0, 3.0]), &[], 2, &mut y);
        assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let mut y = vec![0f32; 0];
        matmul_f32(&pool, Level::best_available(), &PackedF32::pack(&[1.0; 6], 3, 2), None, &[], 0, &mut y);
    }
}
