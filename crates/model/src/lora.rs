//! LoRA adapters applied at inference, unmerged: after each adapted product y = W x, the model
//! adds `scale * B (A x)` (A (r, in), B (out, r)), computed in f32 from the same f32 input the
//! product quantized. The base weights stay as they are in the file, so one model can run with
//! and without an adapter.
//!
//! The maps of a block are indexed q, k, v, o, gate, up, down (0..7); B's rows of q and k follow
//! the GGUF file's row order.

use crate::config::LlamaConfig;
use crate::ModelError;
use kernels::ops::reduce16;
use kernels::pool::{split_range, SharedMut};
use kernels::ThreadPool;

/// The names of the seven maps, in index order.
pub const MAP_NAMES: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// One adapted map.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraMap {
    /// A (r, in), row-major.
    pub a: Vec<f32>,
    /// B (out, r), row-major.
    pub b: Vec<f32>,
    /// r.
    pub rank: usize,
}

/// An adapter for the whole model: per layer, the maps that carry one, and the factor of B A
/// (alpha / r, or alpha / sqrt(r), times the user's scale).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSet {
    /// The factor applied to B (A x).
    pub scale: f32,
    /// (L) x (7), None where the map is not adapted.
    pub layers: Vec<[Option<LoraMap>; 7]>,
}

/// (out, in) of map `i` for a model of `c`'s sizes.
pub fn map_shape(c: &LlamaConfig, i: usize) -> (usize, usize) {
    let (d, q, kv, f) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
    [(q, d), (kv, d), (kv, d), (d, q), (f, d), (f, d), (d, f)][i]
}

impl LoraSet {
    /// Checks that every matrix fits a model of `c`'s sizes.
    pub fn check(&self, c: &LlamaConfig) -> Result<(), ModelError> {
        if self.layers.len() != c.n_layer {
            return Err(ModelError::BadConfig(format!(
                "the LoRA adapter has {} layers, the model {}: it was made for another model",
                self.layers.len(),
                c.n_layer
            )));
        }
        if !self.scale.is_finite() {
            return Err(ModelError::BadConfig(format!("the LoRA scale {} is not a finite number", self.scale)));
        }
        for (l, maps) in self.layers.iter().enumerate() {
            for (i, m) in maps.iter().enumerate() {
                let Some(m) = m else { continue };
                let (n_out, n_in) = map_shape(c, i);
                if m.rank == 0 || m.a.len() != m.rank * n_in || m.b.len() != n_out * m.rank {
                    return Err(ModelError::BadConfig(format!(
                        "the LoRA adapter's {} map of layer {l} has A of {} and B of {} values with rank {}; the model needs ({}, {n_in}) and ({n_out}, {}): it was made for another model",
                        MAP_NAMES[i],
                        m.a.len(),
                        m.b.len(),
                        m.rank,
                        m.rank,
                        m.rank
                    )));
                }
            }
        }
        Ok(())
    }
}

/// y (T, out) += scale * (x (T, in) A^T) B^T, rows split over the pool, in llama.cpp's
/// arithmetic (its graph: `res + scale(B (A x))`; ggml's f32 products): u = A x, each dot product
/// in tinyBLAS's order when the call has several tokens and `in` is a multiple of 16 (16 lanes of
/// fused multiply-adds, then the lane tree of `_mm512_reduce_add_ps`), else in
/// `ggml_vec_dot_f32`'s (four banks of 16 lanes over multiples of 64, banks (0+2) + (1+3), the
/// lane tree, then the rest one fused multiply-add at a time); v = B u in `ggml_vec_dot_f32`'s
/// order; then y + v * scale, rounded at each step. (llama.cpp built with AVX-512.)
pub(crate) fn lora_add(pool: &ThreadPool, map: &LoraMap, scale: f32, x: &[f32], t: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if kernels::Level::current() >= kernels::Level::Avx2 {
        // SAFETY: these levels are only chosen on CPUs with AVX2 and FMA.
        return unsafe { lora_add_fma(pool, map, scale, x, t, y) };
    }
    lora_add_with(pool, map, scale, x, t, y)
}

/// [`lora_add`] compiled with FMA (its `mul_add`s are otherwise library calls): the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lora_add_fma(pool: &ThreadPool, map: &LoraMap, scale: f32, x: &[f32], t: usize, y: &mut [f32]) {
    lora_add_with(pool, map, scale, x, t, y)
}

#[inline(always)]
fn lora_add_with(pool: &ThreadPool, map: &LoraMap, scale: f32, x: &[f32], t: usize, y: &mut [f32]) {
    let r = map.rank;
    let n_in = map.a.len() / r;
    let n_out = map.b.len() / r;
    debug_assert_eq!((x.len(), y.len()), (t * n_in, t * n_out));
    let tiled = t > 1 && n_in.is_multiple_of(LANES);
    let out = SharedMut::new(y);
    pool.run(&|i, n| {
        let rows = split_range(t, i, n);
        // u (r) on the stack for the usual ranks, so a decode step allocates nothing.
        let (mut stack, mut heap) = ([0f32; 64], Vec::new());
        let u: &mut [f32] = if r <= stack.len() {
            &mut stack[..r]
        } else {
            heap.resize(r, 0.0);
            &mut heap
        };
        for row in rows {
            let xr = &x[row * n_in..(row + 1) * n_in];
            for (uj, aj) in u.iter_mut().zip(map.a.chunks_exact(n_in)) {
                *uj = if tiled { dot_tiled(aj, xr) } else { dot_banks(aj, xr) };
            }
            // SAFETY: thread i writes only its own rows of y.
            let yr = unsafe { out.slice(row * n_out, n_out) };
            for (yv, br) in yr.iter_mut().zip(map.b.chunks_exact(r)) {
                *yv += dot_banks(br, u) * scale;
            }
        }
    });
}

/// Lanes of ggml's AVX-512 f32 vectors.
const LANES: usize = 16;

/// a . b (a multiple of 16 long) in tinyBLAS's order: 16 lanes of fused multiply-adds, reduced.
#[inline(always)]
fn dot_tiled(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    reduce16(&acc)
}

/// a . b in `ggml_vec_dot_f32`'s order (AVX-512): four banks of 16 lanes over the multiples of
/// 64, banks (0+2) + (1+3), the lane tree, then the rest in order.
#[inline(always)]
fn dot_banks(a: &[f32], b: &[f32]) -> f32 {
    let main = a.len() - a.len() % (4 * LANES);
    let mut banks = [[0f32; LANES]; 4];
    for (x, y) in a[..main].chunks_exact(4 * LANES).zip(b.chunks_exact(4 * LANES)) {
        for (k, bank) in banks.iter_mut().enumerate() {
            for l in 0..LANES {
                bank[l] = x[k * LANES + l].mul_add(y[k * LANES + l], bank[l]);
            }
        }
    }
    let lanes: [f32; LANES] = std::array::from_fn(|l| (banks[0][l] + banks[2][l]) + (banks[1][l] + banks[3][l]));
    let mut sum = reduce16(&lanes);
    for (x, y) in a[main..].iter().zip(&b[main..]) {
        sum = x.mul_add(*y, sum);
    }
    sum
}
