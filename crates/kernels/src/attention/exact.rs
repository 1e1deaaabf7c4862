//! The kernels of llama.cpp's attention order, scalar references (the AVX2 and AVX-512 copies are
//! in `avx2.rs` and `avx512.rs`): the query and the probabilities rounded to f16, the two
//! products summed as the peers' tiled matrix kernel (several tokens) or vector dot product (one
//! token) sum them ([`Order`]), two passes per (token, head); and from [`FLASH_MIN_POSITIONS`] on
//! the single-pass online kernel of this order.

use super::KvView;
use crate::ops::{exp_poly, reduce16};
use half::f16;

/// Width of the accumulators of the attention products (see [`reduce16`]).
pub(super) const LANES: usize = 16;
/// Accumulators of the single-token order (see [`Order::Vector`]).
pub(super) const BANKS: usize = 4;

/// The summation order of the two attention products (scores and the weighted sum of values).
///
/// Rounding the probabilities to f16 makes attention sensitive to the last bit of every sum, and
/// 30 layers later a different last bit can flip a greedy choice at a near-tie. To stay
/// token-exact with the peers we add in their order, which depends on the batch: for several
/// tokens they use a tiled matrix kernel, for one token a vector dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// Element i goes to lane i % 16, one fused multiply-add each; lanes reduced by [`reduce16`].
    Tiled,
    /// Element i goes to bank (i % 64) / 16, lane i % 16; banks summed (0+2) + (1+3), then
    /// [`reduce16`]; a tail past a multiple of 64 is added one by one in f64.
    Vector,
}

/// Sums 4 banks of 16 lanes (64 floats) in the [`Order::Vector`] order.
#[inline(always)]
pub(super) fn reduce_banks(acc: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    for l in 0..LANES {
        lanes[l] = (acc[l] + acc[2 * LANES + l]) + (acc[LANES + l] + acc[3 * LANES + l]);
    }
    reduce16(&lanes)
}

/// q (Dh) . k (Dh) f16 in the given order (sequential when Dh is not a multiple of 16).
#[inline(always)]
pub(super) fn dot_f16(order: Order, q: &[f32], k: &[f16]) -> f32 {
    let n = q.len();
    if !n.is_multiple_of(LANES) {
        return q.iter().zip(k).fold(0.0, |acc, (a, b)| a.mul_add(b.to_f32(), acc));
    }
    match order {
        Order::Tiled => {
            let mut acc = [0f32; LANES];
            for (qc, kc) in q.chunks_exact(LANES).zip(k.chunks_exact(LANES)) {
                for l in 0..LANES {
                    acc[l] = qc[l].mul_add(kc[l].to_f32(), acc[l]);
                }
            }
            reduce16(&acc)
        }
        Order::Vector => {
            let main = n - n % (LANES * BANKS);
            let mut acc = [0f32; LANES * BANKS];
            for (qc, kc) in q[..main].chunks_exact(LANES * BANKS).zip(k.chunks_exact(LANES * BANKS)) {
                for e in 0..LANES * BANKS {
                    acc[e] = qc[e].mul_add(kc[e].to_f32(), acc[e]);
                }
            }
            let mut sum = reduce_banks(&acc) as f64;
            for (a, b) in q[main..].iter().zip(&k[main..]) {
                sum += (a * b.to_f32()) as f64;
            }
            sum as f32
        }
    }
}

/// Softmax of scores (n) in place, with [`exp_poly`] and the sum taken 16 positions at a time.
/// Stable: the maximum is subtracted first, so scores near 1e4 neither overflow nor lose their
/// differences. A row is never all masked: causal attention scores only the n >= 1 positions a
/// token sees (its own among them) and masks none with -inf; an all -inf row would come out NaN.
#[inline(always)]
pub(super) fn softmax_lanes(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for chunk in scores.chunks_mut(LANES) {
        let mut lanes = [0f32; LANES];
        for (lane, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = exp_poly(*v - max);
            *lane = *v;
        }
        sum += reduce16(&lanes) as f64;
    }
    let inv = (1.0 / sum) as f32;
    scores.iter_mut().for_each(|v| *v *= inv);
}

/// One (token, head) pair: scores over `n_seen` positions, softmax, weighted sum of values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_one(order: Order, q_row: &[f32], kv: &KvView, kv_off: usize, n_seen: usize, scale: f32, work: &mut [f32], o: &mut [f32]) {
    let head_dim = q_row.len();
    let (scores, rest) = work.split_at_mut(n_seen);
    let (qh, acc) = rest.split_at_mut(head_dim);
    for (d, &x) in qh.iter_mut().zip(q_row) {
        *d = f16::from_f32(x).to_f32();
    }
    for (s, score) in scores.iter_mut().enumerate() {
        *score = dot_f16(order, qh, &kv.keys[kv.row(s) + kv_off..][..head_dim]) * scale;
    }
    softmax_lanes(scores);
    // The value product runs over positions: acc (Dh, 64) holds each dimension's accumulators.
    // Positions past n_seen would add p = 0 and change nothing, so they are skipped.
    let width = LANES * BANKS;
    let acc = &mut acc[..head_dim * width];
    acc.iter_mut().for_each(|x| *x = 0.0);
    for (s, &p) in scores.iter().enumerate() {
        let p = f16::from_f32(p).to_f32();
        let slot = match order {
            Order::Tiled => s % LANES,
            Order::Vector => s % width,
        };
        let v_row = &kv.values[kv.row(s) + kv_off..][..head_dim];
        for (d, vv) in v_row.iter().enumerate() {
            let a = &mut acc[d * width + slot];
            *a = p.mul_add(vv.to_f32(), *a);
        }
    }
    for (d, out) in o.iter_mut().enumerate() {
        let lanes = &acc[d * width..(d + 1) * width];
        *out = match order {
            Order::Tiled => reduce16(&lanes[..LANES]),
            Order::Vector => reduce_banks(lanes),
        };
    }
}

/// Positions from which a (token, head) pair is computed by the single-pass `attend_online` instead of the
/// exact two-pass kernels.
pub const FLASH_MIN_POSITIONS: usize = 4096;

/// Positions per tile of [`attend_online`].
const TILE: usize = 64;

/// One (token, head) pair over a long context in a single pass: positions in tiles of 64, a
/// running maximum and sum (online softmax, as flash attention does), each key and value row read
/// once and no scores row of the whole context. Accumulates in f32 without the f16 rounding of
/// the probabilities, so it is not bit-identical to the two-pass kernels (it is closer to the
/// exact value: tested within 1e-5 of an f64 reference, and within the f16 rounding of the
/// two-pass kernels); it is used from [`FLASH_MIN_POSITIONS`] positions on.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_online(q_row: &[f32], kv: &KvView, kv_off: usize, n_seen: usize, scale: f32, work: &mut [f32], o: &mut [f32]) {
    let head_dim = q_row.len();
    let (qh, rest) = work.split_at_mut(head_dim);
    let (acc, rest) = rest.split_at_mut(head_dim);
    let scores = &mut rest[..TILE];
    for (d, &x) in qh.iter_mut().zip(q_row) {
        *d = f16::from_f32(x).to_f32();
    }
    acc.iter_mut().for_each(|a| *a = 0.0);
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for t0 in (0..n_seen).step_by(TILE) {
        let tile = &mut scores[..(n_seen - t0).min(TILE)];
        for (j, score) in tile.iter_mut().enumerate() {
            *score = dot_f16(Order::Tiled, qh, &kv.keys[kv.row(t0 + j) + kv_off..][..head_dim]) * scale;
        }
        let new_max = tile.iter().copied().fold(max, f32::max);
        // Rescale what was summed under the old maximum (exp(-inf) = 0 on the first tile).
        let correction = exp_poly(max - new_max);
        sum *= correction;
        acc.iter_mut().for_each(|a| *a *= correction);
        for (j, &score) in tile.iter().enumerate() {
            let p = exp_poly(score - new_max);
            sum += p;
            let v_row = &kv.values[kv.row(t0 + j) + kv_off..][..head_dim];
            for (a, v) in acc.iter_mut().zip(v_row) {
                *a = p.mul_add(v.to_f32(), *a);
            }
        }
        max = new_max;
    }
    let inv = 1.0 / sum;
    for (out, a) in o.iter_mut().zip(acc.iter()) {
        *out = a * inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_online_avx2(q_row: &[f32], kv: &KvView, kv_off: usize, n_seen: usize, scale: f32, work: &mut [f32], o: &mut [f32]) {
    attend_online(q_row, kv, kv_off, n_seen, scale, work, o)
}
