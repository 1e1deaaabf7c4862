//! AVX-512 attention: the query heads that share a KV head are handled together, so each key
//! and value row is loaded and converted from f16 once for the whole group (a group of one head
//! serves single-token decode). Per head, the arithmetic and its order are exactly those of
//! [`attend_one`](super::attend_one) in the tiled or the single-token order (tested).

use super::{KvView, BANKS, LANES, MAX_GROUP};
use half::f16;
use std::arch::x86_64::*;

/// `reduce16` of one register: lanes l+8 and l, then the 8-lane tree.
#[inline(always)]
unsafe fn reduce16(acc: __m512) -> f32 {
    let t8 = _mm256_add_ps(_mm512_extractf32x8_ps(acc, 1), _mm512_castps512_ps256(acc));
    let r = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

/// 16 f16 at `p` to f32.
#[inline(always)]
unsafe fn load16(p: *const f16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// `exp_poly` on 16 lanes: the same operations, so the same bits.
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    let shift = _mm512_set1_ps(12582912.0);
    let z = _mm512_fmadd_ps(x, _mm512_set1_ps(f32::from_bits(0x3fb8_aa3b)), shift);
    let n = _mm512_sub_ps(z, shift);
    let b = _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::from_bits(0x35bf_be8e)), _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::from_bits(0x3f31_7200)), x));
    let u = _mm512_mul_ps(b, b);
    let c = |bits: u32| _mm512_set1_ps(f32::from_bits(bits));
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)), u, _mm512_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb))),
        u,
        _mm512_fmadd_ps(c(0x3f7f_fff6), b, _mm512_set1_ps(1.0)),
    );
    let res = _mm512_scalef_ps(j, n);
    let big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0), _CMP_GT_OQ);
    let positive = _mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_GT_OQ);
    let saturated = _mm512_mask_blend_ps(positive, _mm512_setzero_ps(), _mm512_set1_ps(f32::INFINITY));
    _mm512_mask_blend_ps(big, res, saturated)
}

/// `softmax_lanes` followed by the rounding of each probability to f16, 16 positions at a
/// time (the chunks of `softmax_lanes` are these registers).
#[inline(always)]
unsafe fn softmax_f16(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let vmax = _mm512_set1_ps(max);
    let mut sum = 0.0f64;
    for chunk in row.chunks_mut(LANES) {
        let mask: __mmask16 = if chunk.len() == LANES { 0xFFFF } else { (1u16 << chunk.len()) - 1 };
        let x = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, chunk.as_ptr());
        let e = exp16(_mm512_sub_ps(x, vmax));
        _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, e);
        sum += reduce16(e) as f64;
    }
    let inv = _mm512_set1_ps((1.0 / sum) as f32);
    for chunk in row.chunks_mut(LANES) {
        let mask: __mmask16 = if chunk.len() == LANES { 0xFFFF } else { (1u16 << chunk.len()) - 1 };
        let p = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, chunk.as_ptr()), inv);
        let p16 = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(p));
        _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, p16);
    }
}

/// q (G, Dh) of one token and its KV head at `kv_off` -> out (G, Dh); Dh % 16 == 0, G <= 8.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_group(
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
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(LANES));
    let chunks = head_dim / LANES;
    let (scores, rest) = work.split_at_mut(group * n_seen); // (G, n_seen)
    let (qh, acc) = rest.split_at_mut(group * head_dim); // (G, Dh), then (G, 16, Dh)
    for (d, &x) in qh.iter_mut().zip(q) {
        *d = f16::from_f32(x).to_f32();
    }
    for s in 0..n_seen {
        let kp = kv.keys.as_ptr().add(kv.row(s) + kv_off);
        for g in 0..group {
            let qp = qh.as_ptr().add(g * head_dim);
            let mut a = _mm512_setzero_ps();
            for c in 0..chunks {
                a = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(c * LANES)), load16(kp.add(c * LANES)), a);
            }
            scores[g * n_seen + s] = reduce16(a) * scale;
        }
    }
    for g in 0..group {
        softmax_f16(&mut scores[g * n_seen..(g + 1) * n_seen]);
    }
    // Values: slot by slot (position s goes to slot s % 16), 64 dimensions at a time, every
    // head of the group in registers; each value row is converted once for the group.
    let ap = acc.as_mut_ptr();
    for slot in 0..LANES {
        for d0 in (0..head_dim).step_by(4 * LANES) {
            let n = ((head_dim - d0) / LANES).min(4);
            let mut r = [[_mm512_setzero_ps(); 4]; MAX_GROUP];
            for s in (slot..n_seen).step_by(LANES) {
                let vp = kv.values.as_ptr().add(kv.row(s) + kv_off + d0);
                let mut vv = [_mm512_setzero_ps(); 4];
                for (j, v) in vv.iter_mut().enumerate().take(n) {
                    *v = load16(vp.add(j * LANES));
                }
                for (g, rg) in r.iter_mut().enumerate().take(group) {
                    let p = _mm512_set1_ps(scores[g * n_seen + s]);
                    for (rj, vj) in rg.iter_mut().zip(vv).take(n) {
                        *rj = _mm512_fmadd_ps(p, vj, *rj);
                    }
                }
            }
            for (g, rg) in r.iter().enumerate().take(group) {
                for (j, rj) in rg.iter().enumerate().take(n) {
                    _mm512_storeu_ps(ap.add((g * LANES + slot) * head_dim + d0 + j * LANES), *rj);
                }
            }
        }
    }
    // out[g][d] = reduce16 over the 16 slots, 16 dimensions at a time.
    for g in 0..group {
        let at = |slot: usize, d: usize| _mm512_loadu_ps(ap.add((g * LANES + slot) * head_dim + d));
        for d in (0..head_dim).step_by(LANES) {
            let mut t8 = [_mm512_setzero_ps(); 8];
            for (l, t) in t8.iter_mut().enumerate() {
                *t = _mm512_add_ps(at(l + 8, d), at(l, d));
            }
            let mut t4 = [_mm512_setzero_ps(); 4];
            for (l, t) in t4.iter_mut().enumerate() {
                *t = _mm512_add_ps(t8[l + 4], t8[l]);
            }
            let r = _mm512_add_ps(_mm512_add_ps(t4[0], t4[2]), _mm512_add_ps(t4[1], t4[3]));
            _mm512_storeu_ps(out.as_mut_ptr().add(g * head_dim + d), r);
        }
    }
}

/// Sums of 16 registers, one per position, each in the `reduce16` tree -> one register of the
/// 16 sums. Input `i` lands in lane `4 * (i % 4) + i / 4`, so callers put position
/// `4 * (i % 4) + i / 4` in input `i` to get the sums in position order. Every addition is one of
/// `reduce16`'s, between the same operands: the sums are bit-identical to it.
#[inline(always)]
unsafe fn reduce16_x16(v: [__m512; 16]) -> __m512 {
    let e0 = t4_of(t8_of(v[0], v[1]), t8_of(v[2], v[3]));
    let e1 = t4_of(t8_of(v[4], v[5]), t8_of(v[6], v[7]));
    let e2 = t4_of(t8_of(v[8], v[9]), t8_of(v[10], v[11]));
    let e3 = t4_of(t8_of(v[12], v[13]), t8_of(v[14], v[15]));
    let (g, h) = (u_of(e0, e1), u_of(e2, e3));
    // u0 + u1 of each input: per 128-bit lane k, inputs k, 4 + k, 8 + k, 12 + k.
    _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(g, h), _mm512_shuffle_ps::<0b11_01_11_01>(g, h))
}

/// t8 of two inputs side by side: [t8(a), t8(b)], t8[l] = v[l + 8] + v[l].
#[inline(always)]
unsafe fn t8_of(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
}

/// t4 of four inputs from two t8 pairs: [t4(a), t4(b), t4(c), t4(d)], t4[l] = t8[l + 4] + t8[l].
#[inline(always)]
unsafe fn t4_of(ab: __m512, cd: __m512) -> __m512 {
    _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd))
}

/// Per 128-bit lane k: [e.u0, e.u1, f.u0, f.u1], u0 = t4[0] + t4[2], u1 = t4[1] + t4[3].
#[inline(always)]
unsafe fn u_of(e: __m512, f: __m512) -> __m512 {
    let (e, f) = (_mm512_castps_pd(e), _mm512_castps_pd(f));
    _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(e, f)), _mm512_castpd_ps(_mm512_unpackhi_pd(e, f)))
}

/// [`attend_group`] in the single-token (vector) order of [`attend_one`](super::attend_one):
/// q (G, Dh) of one token and its KV head at `kv_off` -> out (G, Dh); Dh % 64 == 0, G <= 8.
/// Per head, the operations and their order are those of the single-head kernel (tested bit for
/// bit): each score is a 4-bank dot product reduced in the `reduce_banks` tree, 16 positions'
/// trees at once; each output is the 64-slot sum over positions (slot s % 64) reduced in the same
/// tree, kept in registers and skipping slots no position reached.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_group_vector(
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
    const WIDTH: usize = LANES * BANKS; // 64 slots
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(WIDTH) && n_seen > 0);
    let stride = n_seen.next_multiple_of(LANES);
    let (scores, rest) = work.split_at_mut(group * stride); // (G, n_seen), rows padded to `stride`
    let (qh, rest) = rest.split_at_mut(group * head_dim); // (G, Dh)
    for (d, &x) in qh.iter_mut().zip(q) {
        *d = f16::from_f32(x).to_f32();
    }
    // Scores, 16 positions at a time. A position's banks: element i of the head goes to bank
    // (i % 64) / 16, lane i % 16; lanes = (b0 + b2) + (b1 + b3), then the reduce16 tree.
    let chunks = head_dim / WIDTH;
    let vscale = _mm512_set1_ps(scale);
    for s0 in (0..n_seen).step_by(LANES) {
        let n = (n_seen - s0).min(LANES);
        // Rows of the 16 positions (one block when blocks are a multiple of 16 positions); the
        // padding past n_seen repeats the first row and its scores are never read.
        let mut rows = [0usize; LANES];
        if kv.block_size.is_multiple_of(LANES) {
            let base = kv.row(s0);
            for (p, r) in rows.iter_mut().enumerate().take(n) {
                *r = base + p * kv.pos_stride;
            }
        } else {
            for (p, r) in rows.iter_mut().enumerate().take(n) {
                *r = kv.row(s0 + p);
            }
        }
        for p in n..LANES {
            rows[p] = rows[0];
        }
        // The value pass reads these rows slot by slot (positions 64 apart), an order the
        // hardware prefetcher does not follow; with a batch of sequences the cache holds
        // megabytes of keys and values per layer, and those reads would wait on memory.
        // Fetch the value rows now, while the keys stream in order.
        let values = kv.values.as_ptr().add(kv_off);
        for &r in &rows[..n] {
            for line in (0..head_dim * 2).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(values.add(r).cast::<i8>().add(line));
            }
        }
        let keys = kv.keys.as_ptr().add(kv_off);
        for g in 0..group {
            let qp = qh.as_ptr().add(g * head_dim);
            let sums = match chunks {
                1 => score_block::<1>(qp, keys, &rows),
                2 => score_block::<2>(qp, keys, &rows),
                _ => {
                    let mut lanes = [_mm512_setzero_ps(); 16];
                    for (i, lane) in lanes.iter_mut().enumerate() {
                        *lane = score_lanes(qp, keys.add(rows[4 * (i % 4) + i / 4]), chunks);
                    }
                    reduce16_x16(lanes)
                }
            };
            // The reference rounds the f32 sum through f64 (exact) and then scales it.
            _mm512_storeu_ps(scores.as_mut_ptr().add(g * stride + s0), _mm512_mul_ps(sums, vscale));
        }
    }
    for g in 0..group {
        softmax_f16(&mut scores[g * stride..g * stride + n_seen]);
    }
    // Values: out[g][d] sums over 64 slots (position s goes to slot s % 64, each slot's
    // positions in increasing order) in the tree lanes[l] = (S[l] + S[32+l]) + (S[16+l] + S[48+l]),
    // then reduce16 over the lanes. 32 dimensions of every head of the group at a time, so each
    // value row is loaded and converted once for the group.
    let t8 = &mut rest[..group * 2 * 8 * LANES];
    let probs = &scores[..];
    match group {
        1 => weighted_values::<1>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        2 => weighted_values::<2>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        3 => weighted_values::<3>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        4 => weighted_values::<4>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        5 => weighted_values::<5>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        6 => weighted_values::<6>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        7 => weighted_values::<7>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
        _ => weighted_values::<8>(head_dim, kv, kv_off, probs, stride, n_seen, t8, out),
    }
}

/// The value half of [`attend_group_vector`] for G heads: probabilities `probs` (G rows of
/// `stride`, `n_seen` used) -> out (G, Dh). `t8` is scratch for G * 2 * 8 registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_values<const G: usize>(
    head_dim: usize,
    kv: &KvView,
    kv_off: usize,
    probs: &[f32],
    stride: usize,
    n_seen: usize,
    t8: &mut [f32],
    out: &mut [f32],
) {
    let t8p = t8.as_mut_ptr();
    for d0 in (0..head_dim).step_by(2 * LANES) {
        let values = kv.values.as_ptr().add(kv_off + d0);
        for l in 0..8 {
            let lane = |l: usize| value_lane::<G>(kv, values, probs, stride, n_seen, l);
            let t = add_all::<G>(lane(l + 8), lane(l)).unwrap_or([[_mm512_setzero_ps(); 2]; G]);
            for (g, tg) in t.iter().enumerate() {
                for (c, tc) in tg.iter().enumerate() {
                    _mm512_storeu_ps(t8p.add(((g * 2 + c) * 8 + l) * LANES), *tc);
                }
            }
        }
        for g in 0..G {
            for c in 0..2 {
                let at = |l: usize| _mm512_loadu_ps(t8p.add(((g * 2 + c) * 8 + l) * LANES));
                let t4 = [0, 1, 2, 3].map(|l| _mm512_add_ps(at(l + 4), at(l)));
                let r = _mm512_add_ps(_mm512_add_ps(t4[0], t4[2]), _mm512_add_ps(t4[1], t4[3]));
                _mm512_storeu_ps(out.as_mut_ptr().add(g * head_dim + d0 + c * LANES), r);
            }
        }
    }
}

/// Lane l of the value tree for G heads x 32 dimensions (values of position s at
/// `values + row(s)`): (S[l] + S[32+l]) + (S[16+l] + S[48+l]).
#[inline(always)]
unsafe fn value_lane<const G: usize>(
    kv: &KvView,
    values: *const f16,
    probs: &[f32],
    stride: usize,
    n_seen: usize,
    l: usize,
) -> Option<[[__m512; 2]; G]> {
    let slot = |slot: usize| slot_sum::<G>(kv, values, probs, stride, n_seen, slot);
    add_all::<G>(add_all::<G>(slot(l), slot(2 * LANES + l)), add_all::<G>(slot(LANES + l), slot(3 * LANES + l)))
}

/// S[slot] of G heads x 2 chunks of 16 dimensions: the probability-weighted values of positions
/// slot, slot + 64, ... in increasing order, from +0; `None` when no position reaches the slot.
#[inline(always)]
unsafe fn slot_sum<const G: usize>(
    kv: &KvView,
    values: *const f16,
    probs: &[f32],
    stride: usize,
    n_seen: usize,
    slot: usize,
) -> Option<[[__m512; 2]; G]> {
    if slot >= n_seen {
        return None;
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; G];
    for s in (slot..n_seen).step_by(LANES * BANKS) {
        let vp = values.add(kv.row(s));
        let v = [load16(vp), load16(vp.add(LANES))];
        for (g, a) in acc.iter_mut().enumerate() {
            let p = _mm512_set1_ps(*probs.get_unchecked(g * stride + s));
            a[0] = _mm512_fmadd_ps(p, v[0], a[0]);
            a[1] = _mm512_fmadd_ps(p, v[1], a[1]);
        }
    }
    Some(acc)
}

/// Adds two sets of slot sums where an absent one (no position reached its slot) counts as
/// zero. Slot sums are never -0 (each starts from +0 and p >= 0), so skipping a zero changes no
/// bit.
#[inline(always)]
unsafe fn add_all<const G: usize>(a: Option<[[__m512; 2]; G]>, b: Option<[[__m512; 2]; G]>) -> Option<[[__m512; 2]; G]> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            for (ag, bg) in a.iter_mut().zip(b) {
                ag[0] = _mm512_add_ps(ag[0], bg[0]);
                ag[1] = _mm512_add_ps(ag[1], bg[1]);
            }
            Some(a)
        }
        (a, None) => a,
        (None, b) => b,
    }
}

/// The unscaled scores of 16 positions (key rows at `keys + rows[p]`) for a head of
/// 64 * CHUNKS dimensions, the query held in registers: [`score_lanes`] of each position, then
/// their 16 trees at once.
#[inline(always)]
unsafe fn score_block<const CHUNKS: usize>(qp: *const f32, keys: *const f16, rows: &[usize; LANES]) -> __m512 {
    let mut q = [[_mm512_setzero_ps(); BANKS]; CHUNKS];
    for (c, qc) in q.iter_mut().enumerate() {
        for (j, qj) in qc.iter_mut().enumerate() {
            *qj = _mm512_loadu_ps(qp.add((c * BANKS + j) * LANES));
        }
    }
    let lanes = |p: usize| {
        let kp = keys.add(rows[p]);
        let mut b = [_mm512_setzero_ps(); BANKS];
        for (c, qc) in q.iter().enumerate() {
            for (j, bj) in b.iter_mut().enumerate() {
                *bj = _mm512_fmadd_ps(qc[j], load16(kp.add((c * BANKS + j) * LANES)), *bj);
            }
        }
        _mm512_add_ps(_mm512_add_ps(b[0], b[2]), _mm512_add_ps(b[1], b[3]))
    };
    // Input i of the tree takes position 4 * (i % 4) + i / 4 (see `reduce16_x16`).
    reduce16_x16([
        lanes(0),
        lanes(4),
        lanes(8),
        lanes(12),
        lanes(1),
        lanes(5),
        lanes(9),
        lanes(13),
        lanes(2),
        lanes(6),
        lanes(10),
        lanes(14),
        lanes(3),
        lanes(7),
        lanes(11),
        lanes(15),
    ])
}

/// One position's score lanes: the four 16-lane banks of q . k (f16 keys at `kp`) over
/// `chunks` chunks of 64 elements, summed (b0 + b2) + (b1 + b3).
#[inline(always)]
unsafe fn score_lanes(qp: *const f32, kp: *const f16, chunks: usize) -> __m512 {
    let mut b = [_mm512_setzero_ps(); BANKS];
    for c in 0..chunks {
        for (j, bj) in b.iter_mut().enumerate() {
            let at = c * LANES * BANKS + j * LANES;
            *bj = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(at)), load16(kp.add(at)), *bj);
        }
    }
    _mm512_add_ps(_mm512_add_ps(b[0], b[2]), _mm512_add_ps(b[1], b[3]))
}
