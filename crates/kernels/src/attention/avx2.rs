//! The same computation with AVX2/F16C intrinsics: bit-identical to [`attend_one`](super::attend_one) (the same
//! operations in the same order, 8 lanes at a time), tested against it.

use super::online::{Partial, TILE};
use super::{attend_one, softmax_lanes, KvElem, KvView, Order, BANKS, LANES, MAX_BLOCK, MAX_GROUP};
use half::f16;
use std::arch::x86_64::*;
use std::ops::Range;

mod blocks;
pub(super) use blocks::{attend_block, block_work, merge_chunk, online_chunk};

/// Calls `$f::<G, W>(args)` for the group size G (1 to 8), with W value registers per head
/// (8W dimensions of the value pass) so that G * W stays within 12 of the 16 registers.
macro_rules! by_group {
    ($group:expr, $f:ident, $($arg:expr),*) => {
        match $group {
            1 => $f::<1, 8>($($arg),*),
            2 => $f::<2, 4>($($arg),*),
            3 => $f::<3, 2>($($arg),*),
            4 => $f::<4, 2>($($arg),*),
            5 => $f::<5, 2>($($arg),*),
            6 => $f::<6, 2>($($arg),*),
            7 => $f::<7, 1>($($arg),*),
            _ => $f::<8, 1>($($arg),*),
        }
    };
}

/// `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`: the last steps of `reduce16` on its t8.
#[inline(always)]
unsafe fn reduce8(t8: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

/// The largest of 8 lanes (NaN lanes aside, as `f32::max` folds them).
#[inline(always)]
unsafe fn hmax8(x: __m256) -> f32 {
    let r = _mm_max_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_max_ss(r, _mm_movehdup_ps(r)))
}

/// 8 f16 at `p` to f32.
#[inline(always)]
unsafe fn load8(p: *const f16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// q (Dh, f16-rounded, Dh % 16 == 0) . k (Dh) in `order`.
#[inline(always)]
unsafe fn dot(order: Order, q: &[f32], k: &[f16]) -> f32 {
    let n = q.len();
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    match order {
        Order::Tiled => {
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for c in (0..n).step_by(LANES) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), load8(kp.add(c)), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c + 8)), load8(kp.add(c + 8)), a1);
            }
            reduce8(_mm256_add_ps(a1, a0))
        }
        Order::Vector => {
            let width = LANES * BANKS;
            let main = n - n % width;
            let mut a = [_mm256_setzero_ps(); 8];
            for c in (0..main).step_by(width) {
                for (j, acc) in a.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c + 8 * j)), load8(kp.add(c + 8 * j)), *acc);
                }
            }
            // Banks j = (a[2j], a[2j+1]); lanes = (b0 + b2) + (b1 + b3), then reduce16.
            let lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
            let hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
            let mut sum = reduce8(_mm256_add_ps(hi, lo)) as f64;
            for i in main..n {
                sum += (q[i] * k[i].to_f32()) as f64;
            }
            sum as f32
        }
    }
}

/// See [`attend_one`](super::attend_one).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_one_avx2(
    order: Order,
    q_row: &[f32],
    kv: &KvView,
    kv_off: usize,
    n_seen: usize,
    scale: f32,
    work: &mut [f32],
    o: &mut [f32],
) {
    let head_dim = q_row.len();
    if !head_dim.is_multiple_of(LANES) {
        return attend_one(order, q_row, kv, kv_off, n_seen, scale, work, o);
    }
    let (scores, rest) = work.split_at_mut(n_seen);
    let (qh, acc) = rest.split_at_mut(head_dim);
    for d in (0..head_dim).step_by(8) {
        let x = _mm256_loadu_ps(q_row.as_ptr().add(d));
        let r = _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        _mm256_storeu_ps(qh.as_mut_ptr().add(d), r);
    }
    for (s, score) in scores.iter_mut().enumerate() {
        *score = dot(order, qh, &kv.keys[kv.row(s) + kv_off..][..head_dim]) * scale;
    }
    softmax_lanes(scores);
    // acc (W, Dh): one row of accumulators per slot, so the update is a vector over Dh.
    let width = match order {
        Order::Tiled => LANES,
        Order::Vector => LANES * BANKS,
    };
    let acc = &mut acc[..width * head_dim];
    let ap = acc.as_mut_ptr();
    // Probabilities rounded to f16 once (they are reused below), in place of the scores.
    for p in scores.iter_mut() {
        *p = f16::from_f32(*p).to_f32();
    }
    // Slot by slot, 64 dimensions at a time in registers: the positions of one slot are added
    // in increasing order, the order of the reference, without a load and store per position.
    for slot in 0..width {
        for d0 in (0..head_dim).step_by(64) {
            let lanes = ((head_dim - d0) / 8).min(8);
            let mut r = [_mm256_setzero_ps(); 8];
            for s in (slot..n_seen).step_by(width) {
                let p = _mm256_set1_ps(scores[s]);
                let vp = kv.values.as_ptr().add(kv.row(s) + kv_off + d0);
                for (j, r) in r.iter_mut().enumerate().take(lanes) {
                    *r = _mm256_fmadd_ps(p, load8(vp.add(8 * j)), *r);
                }
            }
            for (j, r) in r.iter().enumerate().take(lanes) {
                _mm256_storeu_ps(ap.add(slot * head_dim + d0 + 8 * j), *r);
            }
        }
    }
    let at = |slot: usize, d: usize| _mm256_loadu_ps(ap.add(slot * head_dim + d));
    for d in (0..head_dim).step_by(8) {
        // lanes[l] for 8 dimensions at once, then reduce16 across l, also 8 dimensions at once.
        let lane = |l: usize| match order {
            Order::Tiled => at(l, d),
            Order::Vector => _mm256_add_ps(_mm256_add_ps(at(l, d), at(2 * LANES + l, d)), _mm256_add_ps(at(LANES + l, d), at(3 * LANES + l, d))),
        };
        let mut t8 = [_mm256_setzero_ps(); 8];
        for (l, t) in t8.iter_mut().enumerate() {
            *t = _mm256_add_ps(lane(l + 8), lane(l));
        }
        let mut t4 = [_mm256_setzero_ps(); 4];
        for (l, t) in t4.iter_mut().enumerate() {
            *t = _mm256_add_ps(t8[l + 4], t8[l]);
        }
        let r = _mm256_add_ps(_mm256_add_ps(t4[0], t4[2]), _mm256_add_ps(t4[1], t4[3]));
        _mm256_storeu_ps(o.as_mut_ptr().add(d), r);
    }
}

/// `exp_poly` on 8 lanes: the same operations, and the same bits. The reference scales j by
/// 2^n in f64 with one rounding; where every lane has -125 <= n <= 127, j * 2^n is a normal f32
/// (j is in [0.7, 1.5)) and the f32 product is exact, so it is taken directly. Lanes with larger
/// |n| (results near or below the smallest normal, -inf inputs, overflow) take the f64 path.
#[inline(always)]
pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
    let shift = _mm256_set1_ps(12582912.0);
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x35bf_be8e)), _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x));
    let u = _mm256_mul_ps(b, b);
    let (c0, c1, c2) =
        (_mm256_set1_ps(f32::from_bits(0x3f7f_fff6)), _mm256_set1_ps(f32::from_bits(0x3eff_fedb)), _mm256_set1_ps(f32::from_bits(0x3e2a_af33)));
    let (c3, c4) = (_mm256_set1_ps(f32::from_bits(0x3d2b_9f17)), _mm256_set1_ps(f32::from_bits(0x3c07_2010)));
    let j =
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_fmadd_ps(c4, b, c3), u, _mm256_fmadd_ps(c2, b, c1)), u, _mm256_fmadd_ps(c0, b, _mm256_set1_ps(1.0)));
    let normal = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(n, _mm256_set1_ps(-125.0)), _mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_set1_ps(127.0)));
    if _mm256_movemask_ps(normal) == 0xff {
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
        return _mm256_mul_ps(j, two_n);
    }
    // j * 2^n: 2^n built as an f64 exponent (n is an integer in [-192, 192] where it is used).
    let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(1023));
    let res = _mm256_set_m128(
        scale_pow2(_mm256_extractf128_ps(j, 1), _mm256_extracti128_si256(e, 1)),
        scale_pow2(_mm256_castps256_ps128(j), _mm256_castsi256_si128(e)),
    );
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(n, _mm256_setzero_ps());
    let saturated = _mm256_and_ps(positive, _mm256_set1_ps(f32::INFINITY));
    _mm256_blendv_ps(res, saturated, big)
}

/// 4 lanes of j * 2^(e - 1023), computed in f64 (exact) and rounded once to f32.
#[inline(always)]
unsafe fn scale_pow2(j: __m128, e: __m128i) -> __m128 {
    let two_n = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_cvtepi32_epi64(e)));
    _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(j), two_n))
}

/// `softmax_lanes` followed by the rounding of each probability to f16, 16 positions (two
/// registers) at a time as its chunks; the last chunk is padded with -inf (whose exponential is
/// the 0 of the reference's unused lanes).
#[inline(always)]
unsafe fn softmax_f16(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let vmax = _mm256_set1_ps(max);
    let mut sum = 0.0f64;
    for chunk in row.chunks_mut(LANES) {
        let mut pad = [f32::NEG_INFINITY; LANES];
        let full = chunk.len() == LANES;
        let src = if full {
            chunk.as_ptr()
        } else {
            pad[..chunk.len()].copy_from_slice(chunk);
            pad.as_ptr()
        };
        let lo = exp8(_mm256_sub_ps(_mm256_loadu_ps(src), vmax));
        let hi = exp8(_mm256_sub_ps(_mm256_loadu_ps(src.add(8)), vmax));
        sum += reduce8(_mm256_add_ps(hi, lo)) as f64;
        if full {
            _mm256_storeu_ps(chunk.as_mut_ptr(), lo);
            _mm256_storeu_ps(chunk.as_mut_ptr().add(8), hi);
        } else {
            _mm256_storeu_ps(pad.as_mut_ptr(), lo);
            _mm256_storeu_ps(pad.as_mut_ptr().add(8), hi);
            let n = chunk.len();
            chunk.copy_from_slice(&pad[..n]);
        }
    }
    let inv = _mm256_set1_ps((1.0 / sum) as f32);
    let mut eights = row.chunks_exact_mut(8);
    for c in &mut eights {
        let p = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), inv);
        _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(p)));
    }
    for p in eights.into_remainder() {
        *p = f16::from_f32(*p * (1.0 / sum) as f32).to_f32();
    }
}

/// q (G, Dh) of one token and its KV head at `kv_off` -> out (G, Dh) in the tiled order;
/// Dh % 16 == 0, G <= 8. The query heads that share a KV head are handled together: each key and
/// value row is loaded and converted from f16 once for the group. Per head, the arithmetic and
/// its order are exactly those of [`attend_one`](super::attend_one) in the tiled order (tested).
#[target_feature(enable = "avx2,fma,f16c")]
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
    // One copy per group size, so that every head's accumulators stay in registers; W value
    // registers per head (8W dimensions) in the value pass keep G * W <= 12 of the 16.
    by_group!(group, attend_group_of, head_dim, q, kv, kv_off, n_seen, scale, work, out)
}

/// [`attend_group`] for G heads, W value registers per head.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_group_of<const G: usize, const W: usize>(
    head_dim: usize,
    q: &[f32],
    kv: &KvView,
    kv_off: usize,
    n_seen: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [f32],
) {
    let (scores, rest) = work.split_at_mut(G * n_seen); // (G, n_seen)
    let (qh, acc) = rest.split_at_mut(G * head_dim); // (G, Dh), then (G, 16, Dh)
    for (dst, src) in qh.chunks_exact_mut(8).zip(q.chunks_exact(8)) {
        let r = _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr())));
        _mm256_storeu_ps(dst.as_mut_ptr(), r);
    }
    // Scores: lane l of the reference's 16 is lane l of a0 (l < 8) or l - 8 of a1; 16 key
    // dimensions converted at a time and used by every head of the group.
    let qp = qh.as_ptr();
    for s in 0..n_seen {
        let kp = kv.keys.as_ptr().add(kv.row(s) + kv_off);
        let mut a = [[_mm256_setzero_ps(); 2]; G];
        for c in (0..head_dim).step_by(LANES) {
            let (k0, k1) = (load8(kp.add(c)), load8(kp.add(c + 8)));
            for (g, ag) in a.iter_mut().enumerate() {
                let at = qp.add(g * head_dim + c);
                ag[0] = _mm256_fmadd_ps(_mm256_loadu_ps(at), k0, ag[0]);
                ag[1] = _mm256_fmadd_ps(_mm256_loadu_ps(at.add(8)), k1, ag[1]);
            }
        }
        for (g, ag) in a.iter().enumerate() {
            *scores.get_unchecked_mut(g * n_seen + s) = reduce8(_mm256_add_ps(ag[1], ag[0])) * scale;
        }
    }
    for g in 0..G {
        softmax_f16(&mut scores[g * n_seen..(g + 1) * n_seen]);
    }
    // Values: slot by slot (position s goes to slot s % 16), every head of the group in
    // registers; each value row is converted once for the group.
    let ap = acc.as_mut_ptr();
    for slot in 0..LANES {
        let mut d0 = 0;
        while d0 < head_dim {
            if head_dim - d0 >= 8 * W {
                values_of_slot::<G, W>(slot, d0, head_dim, kv, kv_off, n_seen, scores, ap);
                d0 += 8 * W;
            } else {
                values_of_slot::<G, 1>(slot, d0, head_dim, kv, kv_off, n_seen, scores, ap);
                d0 += 8;
            }
        }
    }
    // out[g][d] = reduce16 over the 16 slots, 8 dimensions at a time.
    for g in 0..G {
        for d in (0..head_dim).step_by(8) {
            let at = ap.add(g * LANES * head_dim + d);
            let mut t8 = [_mm256_setzero_ps(); 8];
            for (l, t) in t8.iter_mut().enumerate() {
                *t = _mm256_add_ps(_mm256_loadu_ps(at.add((l + 8) * head_dim)), _mm256_loadu_ps(at.add(l * head_dim)));
            }
            let t4 = [_mm256_add_ps(t8[4], t8[0]), _mm256_add_ps(t8[5], t8[1]), _mm256_add_ps(t8[6], t8[2]), _mm256_add_ps(t8[7], t8[3])];
            let r = _mm256_add_ps(_mm256_add_ps(t4[0], t4[2]), _mm256_add_ps(t4[1], t4[3]));
            _mm256_storeu_ps(out.as_mut_ptr().add(g * head_dim + d), r);
        }
    }
}

/// acc[g][slot][d0..d0 + 8W] (acc is (G, 16, Dh)) = the sum over the slot's positions
/// (s % 16 == slot, in increasing order) of p[g][s] * v[s][d0..d0 + 8W].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn values_of_slot<const G: usize, const W: usize>(
    slot: usize,
    d0: usize,
    head_dim: usize,
    kv: &KvView,
    kv_off: usize,
    n_seen: usize,
    probs: &[f32],
    ap: *mut f32,
) {
    let mut r = [[_mm256_setzero_ps(); W]; G];
    for s in (slot..n_seen).step_by(LANES) {
        let vp = kv.values.as_ptr().add(kv.row(s) + kv_off + d0);
        let mut v = [_mm256_setzero_ps(); W];
        for (j, vj) in v.iter_mut().enumerate() {
            *vj = load8(vp.add(8 * j));
        }
        for (g, rg) in r.iter_mut().enumerate() {
            let p = _mm256_set1_ps(*probs.get_unchecked(g * n_seen + s));
            for (rj, vj) in rg.iter_mut().zip(v) {
                *rj = _mm256_fmadd_ps(p, vj, *rj);
            }
        }
    }
    for (g, rg) in r.iter().enumerate() {
        for (j, rj) in rg.iter().enumerate() {
            _mm256_storeu_ps(ap.add((g * LANES + slot) * head_dim + d0 + 8 * j), *rj);
        }
    }
}
