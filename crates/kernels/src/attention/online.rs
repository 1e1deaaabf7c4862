//! Attention in the block summation order: one pass over the positions in tiles of 8 with an
//! online softmax (as flash attention does), the query heads of a GQA group together.
//!
//! With [`SumOrder::Blocks`](crate::SumOrder) (the default) the products add their blocks in our
//! own order, and attention does too: nothing here follows llama.cpp's f16 matrix products (no
//! rounding of the query or of the probabilities to f16), so one kernel serves every token count
//! and every length, and a token's result depends only on its own query and the positions it
//! sees: decoded alone, verified among drafts or processed in a prompt, it gets the same bits.
//!
//! For each query head g of the group, with running maximum m, sum l and accumulator acc (Dh):
//!
//! ```text
//! for each tile of 8 positions p0..p0+8 (the last one padded with -inf scores):
//!     score[p] = tree8(lanes) * scale, lanes[i] = bank0[i] + bank1[i],
//!         bank_b[i] = sum over c with c % 2 == b of q[8c + i] * k[p][8c + i]  (fma, c in order)
//!     m' = max(m, max score);  c = exp(m - m');  e[p] = exp(score[p] - m')
//!     l = l * c + tree8(e);  acc = acc * c;  acc = fma(e[p], v[p], acc) for p in order
//! out = acc * (1 / l)
//! ```
//!
//! `tree8(x) = ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7))`, `exp` is
//! [`exp_poly`](crate::ops::exp_poly). This file is the scalar reference; the AVX2 kernel
//! (`avx2.rs`, also used on AVX-512 machines) does the same operations in the same order and gives
//! the same bits (tested). Accuracy against an f64 reference: tested to 2e-6 of the output's scale.

use super::KvView;
use crate::ops::exp_poly;

/// Positions per tile: one register of scores on AVX2.
pub(super) const TILE: usize = 8;

/// `((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7))`.
#[inline(always)]
pub(super) fn tree8(x: &[f32; 8]) -> f32 {
    ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]))
}

/// q (G, Dh) of one token and its KV head at `kv_off`, over positions 0..n_seen -> out (G, Dh).
/// Dh % 8 == 0. `work` holds at least G * Dh floats.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_group(
    group: usize,
    head_dim: usize,
    q: &[f32],
    kv: &KvView,
    kv_off: usize,
    n_seen: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [f32],
) {
    debug_assert!(head_dim.is_multiple_of(8) && n_seen > 0);
    let acc = &mut work[..group * head_dim];
    acc.iter_mut().for_each(|a| *a = 0.0);
    let mut m = [f32::NEG_INFINITY; super::MAX_GROUP];
    let mut l = [0.0f32; super::MAX_GROUP];
    for p0 in (0..n_seen).step_by(TILE) {
        let np = (n_seen - p0).min(TILE);
        for g in 0..group {
            let qg = &q[g * head_dim..(g + 1) * head_dim];
            let mut score = [f32::NEG_INFINITY; TILE];
            for (p, s) in score.iter_mut().enumerate().take(np) {
                let k = &kv.keys[kv.row(p0 + p) + kv_off..][..head_dim];
                let mut banks = [[0.0f32; 8]; 2];
                for (c, (qc, kc)) in qg.chunks_exact(8).zip(k.chunks_exact(8)).enumerate() {
                    for i in 0..8 {
                        banks[c % 2][i] = qc[i].mul_add(kc[i].to_f32(), banks[c % 2][i]);
                    }
                }
                let lanes: [f32; 8] = std::array::from_fn(|i| banks[0][i] + banks[1][i]);
                *s = tree8(&lanes) * scale;
            }
            let tile_max = score.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let new_m = m[g].max(tile_max);
            let c = exp_poly(m[g] - new_m);
            let e = score.map(|s| exp_poly(s - new_m));
            l[g] = l[g] * c + tree8(&e);
            m[g] = new_m;
            let acc_g = &mut acc[g * head_dim..(g + 1) * head_dim];
            acc_g.iter_mut().for_each(|a| *a *= c);
            for (p, &ep) in e.iter().enumerate().take(np) {
                let v = &kv.values[kv.row(p0 + p) + kv_off..][..head_dim];
                for (a, vv) in acc_g.iter_mut().zip(v) {
                    *a = ep.mul_add(vv.to_f32(), *a);
                }
            }
        }
    }
    for g in 0..group {
        let inv = 1.0 / l[g];
        for (o, a) in out[g * head_dim..(g + 1) * head_dim].iter_mut().zip(&acc[g * head_dim..(g + 1) * head_dim]) {
            *o = a * inv;
        }
    }
}
