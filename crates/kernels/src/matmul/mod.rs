//! Matrix products of weights (any [`Format`]) with activations.
//!
//! Quantized weights multiply activations that were quantized to 8 bits per block of 32
//! ([`BlockQ8`]) and accumulate integer products per block, exactly as the peers do: this is both
//! the fast path and what makes token-exact agreement with them reachable. Float weights multiply
//! the f32 activations directly.
//!
//! The dot products of `reference.rs` are the scalar reference, in both summation orders
//! ([`SumOrder`]). The fast kernels, chosen at run time ([`Level`]), read the weights repacked at load time into
//! groups of interleaved rows ([`crate::groups`]): 8 rows per instruction with AVX2 (`avx2.rs`),
//! 16 with AVX-512 VNNI (`vnni.rs`). Integer sums are exact in any order and the float
//! operations keep the reference's order, so every level gives bit-identical results (tested in
//! `matmul/tests.rs`). Rows past the last whole group, and weights left unpacked, run on
//! per-row AVX2 kernels (`x86.rs`, llama.cpp's order) or the reference compiled for AVX2.
//!
//! Files: `env.rs` (the level and the summation order, from the CPU and the environment),
//! `reference.rs` (the scalar dot products and their row loop), `simd.rs` (the AVX2 and VNNI
//! drivers), `dispatch.rs` (repacking, and which thread runs which rows on which kernels),
//! `swiglu.rs` and `argmax.rs` (the fused feed-forward input and output head); the public entry
//! points and the shape checks are here.

mod argmax;
mod dispatch;
mod env;
mod reference;
#[cfg(target_arch = "x86_64")]
mod simd;
mod swiglu;

pub use argmax::matmul_argmax;
pub use dispatch::pack_for;
use dispatch::rows_share;
pub use env::{check_env, Level, SumOrder, ENV_SETTINGS};
pub use reference::{dot_blocks_q8, dot_float, dot_q4_0_q8, dot_q4_1_q8, dot_q5_0_q8, dot_q5_1_q8, dot_q8_0_q8};
pub use swiglu::{matmul_swiglu, matmul_swiglu_q8};

use crate::pool::{SharedMut, ThreadPool};
use crate::quant::{Activations, BlockQ8, Format, QK};

/// A weight matrix viewed in place: `rows` (N) rows of `cols` (K) elements in `format`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Storage format of the elements.
    pub format: Format,
    /// Row-major bytes, `rows * format.row_bytes(cols)` long.
    pub data: &'a [u8],
    /// N, the number of output features.
    pub rows: usize,
    /// K, the number of input features.
    pub cols: usize,
    /// The same weights repacked for the machine's kernels ([`pack_for`]), if they were.
    pub packed: Option<&'a [u8]>,
    /// How products of block formats add up their blocks.
    pub order: SumOrder,
}

impl<'a> MatRef<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols).unwrap_or(0)
    }

    /// The bytes of row `r`.
    #[inline(always)]
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// Where a product's results go: stored, or added to what is there (a residual stream).
#[derive(Clone, Copy)]
pub(super) struct Out {
    pub(super) ptr: SharedMut<f32>,
    pub(super) add: bool,
}

impl Out {
    /// Writes (or adds) `v` at `index`.
    ///
    /// # Safety
    /// As [`SharedMut::write`]: in bounds, and no other thread touches `index` during the job.
    #[inline(always)]
    pub(super) unsafe fn put(self, index: usize, v: f32) {
        unsafe {
            if self.add {
                let cell = self.ptr.slice(index, 1);
                cell[0] += v;
            } else {
                self.ptr.write(index, v);
            }
        }
    }
}

pub(super) fn check_shapes(w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: &[f32]) {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(y.len(), t * n, "matmul: y has {} values, expected T*N = {t}*{n}", y.len());
    assert_eq!(w.data.len(), n * w.row_bytes(), "matmul: weight bytes do not match its shape");
    match w.format.activations() {
        Activations::Q8 => assert_eq!(xq.len(), t * k / QK, "matmul: quantized activations have the wrong length"),
        Activations::F32 | Activations::Q8K => assert_eq!(x.len(), t * k, "matmul: activations have the wrong length"),
    }
}

/// w (N, K), x (T, K) f32 with xq (T, K/32) its 8-bit blocks -> y (T, N).
///
/// `xq` is read for the formats of 32-wide blocks ([`Activations::Q8`]) and `x` for float formats
/// and K-quants (which quantize it to 256-wide blocks themselves); the other may be empty. Rows of `w`
/// are split statically over the pool's threads; each thread reads its weight rows once and
/// reuses them for all T tokens.
pub fn matmul(pool: &ThreadPool, level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: &mut [f32]) {
    matmul_group(pool, level, [(*w, y)], x, xq, t);
}

/// y (T, N) += w (N, K) . x: the output projections add into the residual stream directly, with
/// no buffer and no separate pass (the same single rounding as computing the product and then
/// adding it).
pub fn matmul_add(pool: &ThreadPool, level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: &mut [f32]) {
    check_shapes(w, x, xq, t, y);
    let out = Out { ptr: SharedMut::new(y), add: true };
    pool.run(&|i, nt| rows_share(level, w, x, xq, t, out, i, nt));
}

/// Several matrices against the same activations in one pass of the pool (one barrier instead of
/// one per matrix): `(w_j (N_j, K), y_j (T, N_j))` for each j, as [`matmul`].
pub fn matmul_group<const N: usize>(pool: &ThreadPool, level: Level, outputs: [(MatRef, &mut [f32]); N], x: &[f32], xq: &[BlockQ8], t: usize) {
    for (w, y) in outputs.iter() {
        check_shapes(w, x, xq, t, y);
    }
    let jobs = outputs.map(|(w, y)| (w, Out { ptr: SharedMut::new(y), add: false }));
    let jobs = &jobs;
    pool.run(&|i, nt| {
        for (w, y) in jobs {
            rows_share(level, w, x, xq, t, *y, i, nt);
        }
    });
}

#[cfg(test)]
mod tests;
