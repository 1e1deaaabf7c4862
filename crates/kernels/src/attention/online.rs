//! Attention in the block summation order: the positions a token sees are cut into chunks of
//! [`CHUNK`] positions, each chunk is one pass in tiles of [`TILE`] with an online softmax (as
//! flash attention does), and the chunks' partial results are merged in order (as flash-decoding
//! does). The query heads of a GQA group go together, so each key and value row is read once for
//! the group.
//!
//! With [`SumOrder::Blocks`](crate::SumOrder) (the default) the products add their blocks in our
//! own order, and attention does too: nothing here follows llama.cpp's f16 matrix products (no
//! rounding of the query or of the probabilities to f16), so one kernel serves every token count
//! and every length, and a token's result depends only on its own query and the positions it
//! sees: decoded alone, verified among drafts or processed in a prompt, it gets the same bits.
//! The chunks are fixed by position (chunk c holds positions `c * CHUNK..`), never by the number of
//! threads, so a long decode step can spread one token's chunks over every thread and still get
//! the bits a prompt gets.
//!
//! For each query head g of the group, chunk by chunk, with running maximum m, sum l and
//! accumulator acc (Dh), starting from m = -inf, l = 0, acc = 0:
//!
//! ```text
//! for each tile of 32 positions p0..p0+32 of the chunk (the last one padded with -inf scores):
//!     score[p] = tree8(lanes) * scale,  lanes[i] = sum over c in order of q[8c + i] * k[p][8c + i]  (fma)
//!     m' = max(m, max score);  c = exp(m - m');  e[p] = exp(score[p] - m')
//!     l = l * c + tree8(((E0 + E1) + E2) + E3)   (E_j = e[8j..8j + 8], lane by lane)
//!     acc = acc * c;  acc = fma(e[p], v[p], acc) for p in order;  m = m'
//! chunks 1, 2, ... merged into chunk 0's (M, L, ACC) in order:
//!     M' = max(M, m);  a = exp(M - M');  b = exp(m - M')
//!     L = fma(l, b, L * a);  ACC = fma(acc, b, ACC * a);  M = M'
//! out = ACC * (1 / L)
//! ```
//!
//! `tree8(x) = ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7))`, `exp` is
//! [`exp_poly`](crate::ops::exp_poly). This file is the scalar reference; the AVX2 kernel
//! (`avx2.rs`, also used on AVX-512 machines) does the same operations in the same order and gives
//! the same bits (tested), and both merge with [`merge_chunk`]. Accuracy against an f64 reference:
//! tested to 2e-6 of the output's scale.

use super::{KvElem, KvView, MAX_GROUP};
use crate::ops::exp_poly;

/// Positions per tile: four registers of scores on AVX2, and one block of the model's KV pool.
pub(super) const TILE: usize = 32;

/// Positions per chunk: the unit in which one token's positions are split between threads.
pub(super) const CHUNK: usize = 256;

/// Chunks of a token that sees `n_seen` positions.
pub(super) fn n_chunks(n_seen: usize) -> usize {
    n_seen.div_ceil(CHUNK)
}

/// `((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7))`.
#[inline(always)]
pub(super) fn tree8(x: &[f32; 8]) -> f32 {
    ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]))
}

/// The running state of G heads: maxima, sums, and accumulators (G, Dh).
pub(super) struct Partial<'a> {
    pub m: [f32; MAX_GROUP],
    pub l: [f32; MAX_GROUP],
    pub acc: &'a mut [f32],
}

impl<'a> Partial<'a> {
    /// The state before any position: m = -inf, l = 0, acc = 0.
    pub fn empty(acc: &'a mut [f32]) -> Partial<'a> {
        acc.iter_mut().for_each(|a| *a = 0.0);
        Partial { m: [f32::NEG_INFINITY; MAX_GROUP], l: [0.0; MAX_GROUP], acc }
    }
}

/// Merges the next chunk's partial (`m`, `l`, `acc`) into `state`, as the module documents.
#[inline(always)]
pub(super) fn merge_chunk(group: usize, head_dim: usize, state: &mut Partial, m: &[f32], l: &[f32], acc: &[f32]) {
    for g in 0..group {
        let new_m = state.m[g].max(m[g]);
        let (a, b) = (exp_poly(state.m[g] - new_m), exp_poly(m[g] - new_m));
        state.l[g] = l[g].mul_add(b, state.l[g] * a);
        state.m[g] = new_m;
        let range = g * head_dim..(g + 1) * head_dim;
        for (s, &x) in state.acc[range.clone()].iter_mut().zip(&acc[range]) {
            *s = x.mul_add(b, *s * a);
        }
    }
}

/// out (G, Dh) = acc * (1 / l), head by head.
pub(super) fn finish(group: usize, head_dim: usize, state: &Partial, out: &mut [f32]) {
    for g in 0..group {
        let inv = 1.0 / state.l[g];
        for (o, a) in out[g * head_dim..(g + 1) * head_dim].iter_mut().zip(&state.acc[g * head_dim..(g + 1) * head_dim]) {
            *o = a * inv;
        }
    }
}

/// A chunk kernel: q (G, Dh), the chunk's positions, the empty state it fills.
pub(super) type ChunkFn<'f> = dyn Fn(&[f32], std::ops::Range<usize>, &mut Partial) + 'f;

/// A merge kernel: the state, and the next chunk's maxima, sums and accumulators.
pub(super) type MergeFn<'f> = dyn Fn(&mut Partial, &[f32], &[f32], &[f32]) + 'f;

/// One chunk: q (G, Dh) of one token and its KV head at `kv_off`, over positions `positions`
/// (within one chunk), into an empty `state`. Dh % 8 == 0.
#[allow(clippy::too_many_arguments)]
pub(super) fn chunk<T: KvElem>(
    group: usize,
    head_dim: usize,
    q: &[f32],
    kv: &KvView<T>,
    kv_off: usize,
    positions: std::ops::Range<usize>,
    scale: f32,
    state: &mut Partial,
) {
    debug_assert!(head_dim.is_multiple_of(8) && !positions.is_empty());
    for p0 in positions.clone().step_by(TILE) {
        let np = (positions.end - p0).min(TILE);
        for g in 0..group {
            let qg = &q[g * head_dim..(g + 1) * head_dim];
            let mut score = [f32::NEG_INFINITY; TILE];
            for (p, s) in score.iter_mut().enumerate().take(np) {
                let k = kv.row(p0 + p) + kv_off;
                let mut lanes = [0.0f32; 8];
                for (c, qc) in qg.chunks_exact(8).enumerate() {
                    for i in 0..8 {
                        lanes[i] = qc[i].mul_add(T::value(kv.keys, k + 8 * c + i), lanes[i]);
                    }
                }
                *s = tree8(&lanes) * scale;
            }
            let tile_max = score.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let new_m = state.m[g].max(tile_max);
            let c = exp_poly(state.m[g] - new_m);
            let e = score.map(|s| exp_poly(s - new_m));
            let sums: [f32; 8] = std::array::from_fn(|i| ((e[i] + e[8 + i]) + e[16 + i]) + e[24 + i]);
            state.l[g] = state.l[g] * c + tree8(&sums);
            state.m[g] = new_m;
            let acc_g = &mut state.acc[g * head_dim..(g + 1) * head_dim];
            acc_g.iter_mut().for_each(|a| *a *= c);
            for (p, &ep) in e.iter().enumerate().take(np) {
                let v = kv.row(p0 + p) + kv_off;
                for (d, a) in acc_g.iter_mut().enumerate() {
                    *a = ep.mul_add(T::value(kv.values, v + d), *a);
                }
            }
        }
    }
}

/// The positions of chunk `c` of a token that sees `n_seen`.
pub(super) fn chunk_positions(c: usize, n_seen: usize) -> std::ops::Range<usize> {
    c * CHUNK..((c + 1) * CHUNK).min(n_seen)
}

/// q (G, Dh) of one token and its KV head at `kv_off`, over positions 0..n_seen -> out (G, Dh),
/// chunk after chunk with `chunk_fn` (this file's [`chunk`], or a fast kernel with its bits).
/// `work` holds at least 2 G Dh floats (two accumulators).
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_group_with(
    chunk_fn: &ChunkFn,
    merge_fn: &MergeFn,
    group: usize,
    head_dim: usize,
    q: &[f32],
    n_seen: usize,
    work: &mut [f32],
    out: &mut [f32],
) {
    debug_assert!(work.len() >= 2 * group * head_dim);
    let (state_acc, rest) = work.split_at_mut(group * head_dim);
    let mut state = Partial::empty(state_acc);
    chunk_fn(q, chunk_positions(0, n_seen), &mut state);
    for c in 1..n_chunks(n_seen) {
        let mut part = Partial::empty(&mut rest[..group * head_dim]);
        chunk_fn(q, chunk_positions(c, n_seen), &mut part);
        let (m, l) = (part.m, part.l);
        merge_fn(&mut state, &m, &l, part.acc);
    }
    finish(group, head_dim, &state, out);
}
