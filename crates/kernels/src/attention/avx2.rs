//! The same computation with AVX2/F16C intrinsics: bit-identical to [`attend_one`](super::attend_one) (the same
//! operations in the same order, 8 lanes at a time), tested against it.

use super::online::{Partial, TILE};
use super::{attend_one, softmax_lanes, KvElem, KvView, Order, BANKS, LANES, MAX_BLOCK, MAX_GROUP};
use half::f16;
use std::arch::x86_64::*;
use std::ops::Range;

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

/// The [`tree8`](super::online::tree8) sums of 8 registers at once: lane p of the result is the
/// tree of `a[p]`'s lanes, each addition one of the tree's, between the same operands.
#[inline(always)]
unsafe fn tree8_x8(a: &[__m256; 8]) -> __m256 {
    // (No closures here: intrinsics in a closure are not inlined into the AVX2 function that
    // holds it, and become calls.)
    // h[k] = [a_k[j] + a_k[j + 4] | a_(k+4)[j] + a_(k+4)[j + 4]], j = 0..4.
    let mut h = [_mm256_setzero_ps(); 4];
    for k in 0..4 {
        h[k] = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a[k], a[k + 4]), _mm256_permute2f128_ps::<0x31>(a[k], a[k + 4]));
    }
    // Per 128-bit lane [u0(e), u1(e), u0(f), u1(f)], u0 = h0 + h2, u1 = h1 + h3.
    let (g1, g2) = (u_pairs(h[0], h[1]), u_pairs(h[2], h[3]));
    _mm256_add_ps(_mm256_shuffle_ps::<0b10_00_10_00>(g1, g2), _mm256_shuffle_ps::<0b11_01_11_01>(g1, g2))
}

/// Per 128-bit lane: [e0 + e2, e1 + e3, f0 + f2, f1 + f3].
#[inline(always)]
unsafe fn u_pairs(e: __m256, f: __m256) -> __m256 {
    let (e, f) = (_mm256_castps_pd(e), _mm256_castps_pd(f));
    _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(e, f)), _mm256_castpd_ps(_mm256_unpackhi_pd(e, f)))
}

/// Calls `$f::<G, PP, W>(args)` for the group size G (1 to 8): PP positions per step of the score
/// pass (G * PP accumulators, PP keys and a query row within 15 registers) and W value registers
/// per head in the value pass (G * W accumulators, W values and a probability likewise). Each
/// accumulator is a chain of FMAs (4 cycles each, 2 per cycle): 8 or more chains keep the FMA
/// units busy, hence W = 3 for G = 3 (9 chains; 6 with W = 2 were 4-6% slower at 7680 positions).
macro_rules! by_chunk_group {
    ($group:expr, $f:ident, $($arg:expr),*) => {
        match $group {
            1 => $f::<1, 4, 4, _>($($arg),*),
            2 => $f::<2, 4, 4, _>($($arg),*),
            3 => $f::<3, 3, 3, _>($($arg),*),
            4 => $f::<4, 2, 2, _>($($arg),*),
            5 => $f::<5, 2, 2, _>($($arg),*),
            6 => $f::<6, 2, 2, _>($($arg),*),
            7 => $f::<7, 1, 1, _>($($arg),*),
            _ => $f::<8, 1, 1, _>($($arg),*),
        }
    };
}

/// Where a tile's key (or value) rows are read from: 8 dimensions of the tile's position p.
trait TileRows {
    unsafe fn load8(&self, p: usize, d: usize) -> __m256;
}

/// Rows of the cache (f16 or Q8_0): `base` plus the offsets (in values) of the tile's positions.
struct CacheRows<'a, T: KvElem> {
    base: *const T,
    rows: &'a [usize; TILE],
}

impl<T: KvElem> TileRows for CacheRows<'_, T> {
    #[inline(always)]
    unsafe fn load8(&self, p: usize, d: usize) -> __m256 {
        T::load8(self.base, *self.rows.get_unchecked(p) + d)
    }
}

/// A tile already converted to f32: (TILE, Dh) from `base`.
struct F32Tile {
    base: *const f32,
    head_dim: usize,
}

impl TileRows for F32Tile {
    #[inline(always)]
    unsafe fn load8(&self, p: usize, d: usize) -> __m256 {
        _mm256_loadu_ps(self.base.add(p * self.head_dim + d))
    }
}

/// [`online::chunk`](super::online::chunk) with AVX2: the same operations in the same order
/// (tested bit for bit). Per tile, the scores of the group's heads with each key row converted
/// from f16 once for the group and PP positions per step, the 32 positions' lane trees 8 at a
/// time; then the value pass with each value row converted once for the group.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn online_chunk<T: KvElem>(
    group: usize,
    head_dim: usize,
    q: &[f32],
    kv: &KvView<T>,
    kv_off: usize,
    positions: Range<usize>,
    scale: f32,
    state: &mut Partial,
) {
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(8) && !positions.is_empty());
    debug_assert!(q.len() >= group * head_dim && state.acc.len() >= group * head_dim);
    by_chunk_group!(group, chunk_of, head_dim, q, kv, kv_off, positions, scale, state)
}

/// [`online_chunk`] for G heads. (Loops over indices: the arrays of registers stay in registers
/// only with constant indices after unrolling.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_of<const G: usize, const PP: usize, const W: usize, T: KvElem>(
    head_dim: usize,
    q: &[f32],
    kv: &KvView<T>,
    kv_off: usize,
    positions: Range<usize>,
    scale: f32,
    state: &mut Partial,
) {
    let (kp, vp) = (kv.keys.as_ptr(), kv.values.as_ptr());
    // Offsets of the tile's rows of the KV head, and of the next tile's.
    let (mut rows, mut next_rows) = ([0usize; TILE], [0usize; TILE]);
    tile_rows(kv, kv_off, positions.start, (positions.end - positions.start).min(TILE), &mut rows);
    let lines = T::bytes(head_dim).div_ceil(64); // cache lines of one head's row of keys (or values)
    let mut bufs = TileBuffers::<G>::new();
    let mut p0 = positions.start;
    while p0 < positions.end {
        let np = (positions.end - p0).min(TILE);
        // The next tile's keys and values are another block of the pool, which the hardware
        // prefetchers do not guess: asked for a position at a time while this tile's scores are
        // computed (all at once, the requests stall the loads of the scores).
        let next = p0 + TILE;
        let n_next = if next < positions.end { (positions.end - next).min(TILE) } else { 0 };
        tile_rows(kv, kv_off, next, n_next, &mut next_rows);
        let prefetch = |p: Range<usize>| {
            for r in &next_rows[p.start.min(n_next)..p.end.min(n_next)] {
                prefetch_row(T::unit_ptr(kp, *r), T::unit_ptr(vp, *r), lines);
            }
        };
        let (keys, values) = (CacheRows { base: kp, rows: &rows }, CacheRows { base: vp, rows: &rows });
        let (m, l, ap) = (&mut state.m, &mut state.l, state.acc.as_mut_ptr());
        tile_step::<G, PP, W>(head_dim, q.as_ptr(), &keys, &values, np, scale, m, l, ap, &mut bufs, prefetch);
        p0 += TILE;
        std::mem::swap(&mut rows, &mut next_rows);
    }
}

/// A tile step's lane sums and probabilities: lanes[g][p] the 8 lane sums of head g and the
/// tile's position p, e[g][p] its probability. Kept from one tile to the next (their 3 KB are
/// not cleared for each): lanes and probabilities past a partial tile hold stale values, which
/// the scores' mask and the value pass skip.
struct TileBuffers<const G: usize> {
    lanes: [[__m256; TILE]; G],
    e: [[f32; TILE]; G],
}

impl<const G: usize> TileBuffers<G> {
    #[inline(always)]
    unsafe fn new() -> Self {
        TileBuffers { lanes: [[_mm256_setzero_ps(); TILE]; G], e: [[0.0; TILE]; G] }
    }
}

/// One tile of [`online::chunk`](super::online::chunk) for the G heads of one token (q (G, Dh)
/// from `qp`, state m, l (G) and acc (G, Dh) from `ap`), over the tile's first `np` positions:
/// scores PP positions per step (`between(p..p + PP)` after each step: the caller's prefetches),
/// the 32 positions' lane trees 8 at a time, the softmax update, then the value pass.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile_step<const G: usize, const PP: usize, const W: usize>(
    head_dim: usize,
    qp: *const f32,
    keys: &impl TileRows,
    values: &impl TileRows,
    np: usize,
    scale: f32,
    m: &mut [f32; MAX_GROUP],
    l: &mut [f32; MAX_GROUP],
    ap: *mut f32,
    bufs: &mut TileBuffers<G>,
    between: impl Fn(Range<usize>),
) {
    let TileBuffers { lanes, e } = bufs;
    let mut p = 0;
    while p + PP <= np {
        score_lanes::<G, PP>(head_dim, qp, keys, p, lanes);
        between(p..p + PP);
        p += PP;
    }
    while p < np {
        score_lanes::<G, 1>(head_dim, qp, keys, p, lanes);
        p += 1;
    }
    between(p..TILE);
    // Scores of 8 positions per register, -inf past the tile's end (the row's end).
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let full = np.div_ceil(8);
    let mut scores = [[_mm256_set1_ps(f32::NEG_INFINITY); 4]; G];
    let mut new_m = [0.0f32; G];
    let mut diff = [0.0f32; 8];
    for g in 0..G {
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        for j in 0..full {
            let t = _mm256_mul_ps(tree8_x8(&*(lanes[g].as_ptr().add(8 * j) as *const [__m256; 8])), _mm256_set1_ps(scale));
            // A whole tile's registers need no mask.
            scores[g][j] = if np == TILE {
                t
            } else {
                let absent = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                    _mm256_add_epi32(lane, _mm256_set1_epi32(8 * j as i32)),
                    _mm256_set1_epi32(np as i32 - 1),
                ));
                _mm256_blendv_ps(t, _mm256_set1_ps(f32::NEG_INFINITY), absent)
            };
            mx = _mm256_max_ps(mx, scores[g][j]);
        }
        new_m[g] = m[g].max(hmax8(mx));
        diff[g] = m[g] - new_m[g];
    }
    // The G corrections exp(m - m') in one exp8 (the same bits as exp_poly lane by lane).
    let mut c = [0.0f32; 8];
    _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_loadu_ps(diff.as_ptr())));
    for g in 0..G {
        let mut ex = [_mm256_setzero_ps(); 4]; // exp(-inf) = 0 for registers past the end
        for j in 0..full {
            ex[j] = exp8(_mm256_sub_ps(scores[g][j], _mm256_set1_ps(new_m[g])));
            _mm256_storeu_ps(e[g].as_mut_ptr().add(8 * j), ex[j]);
        }
        let sum = reduce8(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(ex[0], ex[1]), ex[2]), ex[3]));
        l[g] = l[g] * c[g] + sum;
        m[g] = new_m[g];
    }
    // acc = acc * c, then fma(e[p], v[p], acc) position by position, 8W dimensions at a time.
    let mut d0 = 0;
    while d0 < head_dim {
        if head_dim - d0 >= 8 * W {
            value_pass::<G, W>(d0, head_dim, values, np, &c, e, ap);
            d0 += 8 * W;
        } else if W > 2 && head_dim - d0 >= 16 {
            value_pass::<G, 2>(d0, head_dim, values, np, &c, e, ap);
            d0 += 16;
        } else {
            value_pass::<G, 1>(d0, head_dim, values, np, &c, e, ap);
            d0 += 8;
        }
    }
}

/// rows[..n]: the offsets of positions `first..first + n` (at most a tile) of the KV head at
/// `kv_off`, by one table lookup when they lie in one block of the pool, as a tile does in the
/// model's blocks of 32.
#[inline(always)]
fn tile_rows<T: KvElem>(kv: &KvView<T>, kv_off: usize, first: usize, n: usize, rows: &mut [usize; TILE]) {
    if n == 0 {
        return;
    }
    let base = kv.row(first) + kv_off;
    if first / kv.block_size == (first + n - 1) / kv.block_size {
        for (p, r) in rows.iter_mut().enumerate().take(n) {
            *r = base + p * kv.pos_stride;
        }
    } else {
        for (p, r) in rows.iter_mut().enumerate().take(n) {
            *r = kv.row(first + p) + kv_off;
        }
    }
}

/// Asks for one row of keys and of values (`lines` cache lines each) to be brought into L1.
#[inline(always)]
unsafe fn prefetch_row(k: *const u8, v: *const u8, lines: usize) {
    for line in 0..lines {
        _mm_prefetch::<_MM_HINT_T0>((k as *const i8).add(64 * line));
        _mm_prefetch::<_MM_HINT_T0>((v as *const i8).add(64 * line));
    }
}

/// lanes[g][p..p + PP]: the 8 lane sums of q[g] . k[p + j] (one fma chain per lane over the
/// dimensions, in order), each key chunk loaded once for the G heads.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn score_lanes<const G: usize, const PP: usize>(
    head_dim: usize,
    qp: *const f32,
    keys: &impl TileRows,
    p: usize,
    lanes: &mut [[__m256; TILE]; G],
) {
    let mut s = [[_mm256_setzero_ps(); PP]; G];
    let mut c = 0;
    while c < head_dim {
        let mut k = [_mm256_setzero_ps(); PP];
        for j in 0..PP {
            k[j] = keys.load8(p + j, c);
        }
        for g in 0..G {
            let qv = _mm256_loadu_ps(qp.add(g * head_dim + c));
            for j in 0..PP {
                s[g][j] = _mm256_fmadd_ps(qv, k[j], s[g][j]);
            }
        }
        c += 8;
    }
    for g in 0..G {
        for j in 0..PP {
            lanes[g][p + j] = s[g][j];
        }
    }
}

/// One tile's value update of acc (G, Dh) at dimensions d0..d0 + 8W: acc * c, then
/// fma(e[p], v[p], acc) for the tile's np positions in order.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn value_pass<const G: usize, const W: usize>(
    d0: usize,
    head_dim: usize,
    values: &impl TileRows,
    np: usize,
    c: &[f32; 8],
    e: &[[f32; TILE]; G],
    ap: *mut f32,
) {
    let mut r = [[_mm256_setzero_ps(); W]; G];
    for g in 0..G {
        for j in 0..W {
            r[g][j] = _mm256_mul_ps(_mm256_loadu_ps(ap.add(g * head_dim + d0 + 8 * j)), _mm256_set1_ps(c[g]));
        }
    }
    for p in 0..np {
        let mut v = [_mm256_setzero_ps(); W];
        for j in 0..W {
            v[j] = values.load8(p, d0 + 8 * j);
        }
        for g in 0..G {
            let b = _mm256_set1_ps(e[g][p]);
            for j in 0..W {
                r[g][j] = _mm256_fmadd_ps(b, v[j], r[g][j]);
            }
        }
    }
    for g in 0..G {
        for j in 0..W {
            _mm256_storeu_ps(ap.add(g * head_dim + d0 + 8 * j), r[g][j]);
        }
    }
}

/// [`online::merge_chunk`](super::online::merge_chunk) compiled with FMA (its `mul_add`s are
/// otherwise library calls): the same bits.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn merge_chunk(group: usize, head_dim: usize, state: &mut Partial, m: &[f32], l: &[f32], acc: &[f32]) {
    super::online::merge_chunk(group, head_dim, state, m, l, acc)
}

/// Floats of `work` that [`attend_block`] needs for `n_tokens` tokens of G heads of Dh: a tile of
/// keys and one of values in f32 (TILE, Dh), and per token a state and a chunk's partial (G, Dh).
pub(super) fn block_work(n_tokens: usize, group: usize, head_dim: usize) -> usize {
    2 * TILE * head_dim + 2 * n_tokens * group * head_dim
}

/// Consecutive tokens of a prompt (at most [`MAX_BLOCK`]) for one KV head at `kv_off`: token t
/// has q (G, Dh) at `q[t * q_stride..]`, sees positions `0..first_seen + t` and gets
/// out[t] (G, Dh). Each tile of keys and values is read and converted to f32 once for the whole
/// block, and every token that sees the tile takes its step on it: per token the tiles, chunks
/// and merges of [`attend_group_with`](super::online::attend_group_with) with
/// [`online_chunk`] and [`merge_chunk`], the same operations in the same order, so a token gets
/// the bits it gets alone whatever block it is in (tested). `work` holds
/// [`block_work`]`(n_tokens, G, Dh)` floats.
///
/// (Measured on SmolLM2-135M's shape, Zen 3, one thread: a prompt's cost per (token, position)
/// is the same at depth 0, all in L2, as at depth 8000, about 45 ns, some 65-70% of the FMA
/// units' peak for the 16 FMAs of 8 lanes that each (row, position) needs; so it is not the
/// streaming of the cache but the work per row that counts. The block saves the f16
/// conversions, 8/3 per row and position for the pairs of tokens that came before it, and some
/// loads: `attention_bench 1 1 512 1 prefill 2000` 51.3 ms with pairs, 47.6 in blocks.)
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_block<T: KvElem>(
    group: usize,
    head_dim: usize,
    q: &[f32],
    q_stride: usize,
    first_seen: usize,
    kv: &KvView<T>,
    kv_off: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [Option<&mut [f32]>],
) {
    let n_tokens = out.len();
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(8) && first_seen > 0 && (1..=MAX_BLOCK).contains(&n_tokens));
    debug_assert!(q.len() >= (n_tokens - 1) * q_stride + group * head_dim && work.len() >= block_work(n_tokens, group, head_dim));
    // SmolLM2's and Llama's heads of 64 get a copy of their own, where the loops over the
    // dimensions unroll with constant offsets.
    if head_dim == 64 {
        by_chunk_group!(group, block_of_64, head_dim, q, q_stride, first_seen, kv, kv_off, scale, work, out)
    } else {
        by_chunk_group!(group, block_of, head_dim, q, q_stride, first_seen, kv, kv_off, scale, work, out)
    }
}

/// [`block_of`] for heads of 64.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_of_64<const G: usize, const PP: usize, const W: usize, T: KvElem>(
    _head_dim: usize,
    q: &[f32],
    q_stride: usize,
    first_seen: usize,
    kv: &KvView<T>,
    kv_off: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [Option<&mut [f32]>],
) {
    block_of::<G, PP, W, T>(64, q, q_stride, first_seen, kv, kv_off, scale, work, out)
}

/// [`attend_block`] for G heads.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_of<const G: usize, const PP: usize, const W: usize, T: KvElem>(
    head_dim: usize,
    q: &[f32],
    q_stride: usize,
    first_seen: usize,
    kv: &KvView<T>,
    kv_off: usize,
    scale: f32,
    work: &mut [f32],
    out: &mut [Option<&mut [f32]>],
) {
    use super::online::{chunk_positions, finish, n_chunks, CHUNK};
    let (n_tokens, gd) = (out.len(), G * head_dim);
    let (tiles, rest) = work.split_at_mut(2 * TILE * head_dim);
    let (k32, v32) = tiles.split_at_mut(TILE * head_dim); // (TILE, Dh) each
    let (state_acc, part_acc) = rest.split_at_mut(n_tokens * gd); // (tokens, G, Dh) each
    state_acc.fill(0.0);
    let empty = ([f32::NEG_INFINITY; MAX_GROUP], [0.0f32; MAX_GROUP]);
    let mut state_ml = [empty; MAX_BLOCK];
    let mut part_ml = [empty; MAX_BLOCK];
    let (kp, vp) = (kv.keys.as_ptr(), kv.values.as_ptr());
    let (mut rows, mut next_rows) = ([0usize; TILE], [0usize; TILE]);
    let lines = T::bytes(head_dim).div_ceil(64);
    let mut bufs = TileBuffers::<G>::new();
    let last_seen = first_seen + n_tokens - 1; // positions the last token sees
    for c in 0..n_chunks(last_seen) {
        let chunk = chunk_positions(c, last_seen);
        // Tokens that have this chunk (the later ones): they see more than c * CHUNK positions.
        let t0 = (c * CHUNK + 1).saturating_sub(first_seen);
        // Chunk 0 goes into the state itself, later chunks into empty partials merged after.
        let (ml, acc) = if c == 0 {
            (&mut state_ml, &mut *state_acc)
        } else {
            part_ml[t0..n_tokens].fill(empty);
            part_acc[t0 * gd..n_tokens * gd].fill(0.0);
            (&mut part_ml, &mut *part_acc)
        };
        tile_rows(kv, kv_off, chunk.start, chunk.len().min(TILE), &mut rows);
        for p0 in chunk.clone().step_by(TILE) {
            let np_last = (chunk.end - p0).min(TILE);
            for (p, r) in rows.iter().enumerate().take(np_last) {
                for d in (0..head_dim).step_by(8) {
                    _mm256_storeu_ps(k32.as_mut_ptr().add(p * head_dim + d), T::load8(kp, r + d));
                    _mm256_storeu_ps(v32.as_mut_ptr().add(p * head_dim + d), T::load8(vp, r + d));
                }
            }
            // The next tile's rows are asked for now, and come while the block works on this one.
            let next = p0 + TILE;
            let n_next = if next < chunk.end { (chunk.end - next).min(TILE) } else { 0 };
            tile_rows(kv, kv_off, next, n_next, &mut next_rows);
            for r in &next_rows[..n_next] {
                prefetch_row(T::unit_ptr(kp, *r), T::unit_ptr(vp, *r), lines);
            }
            let (keys, values) = (F32Tile { base: k32.as_ptr(), head_dim }, F32Tile { base: v32.as_ptr(), head_dim });
            // The tokens that see this tile: token t sees first_seen + t > p0 positions.
            let seeing = (p0 + 1).saturating_sub(first_seen)..n_tokens;
            for (t, (m, l)) in ml.iter_mut().enumerate().take(seeing.end).skip(seeing.start) {
                let np = (first_seen + t - p0).min(TILE);
                let qp = q.as_ptr().add(t * q_stride);
                tile_step::<G, PP, W>(head_dim, qp, &keys, &values, np, scale, m, l, acc.as_mut_ptr().add(t * gd), &mut bufs, |_| {});
            }
            std::mem::swap(&mut rows, &mut next_rows);
        }
        if c > 0 {
            for t in t0..n_tokens {
                let (m, l) = &state_ml[t];
                let mut state = Partial { m: *m, l: *l, acc: &mut state_acc[t * gd..(t + 1) * gd] };
                let (pm, pl) = &part_ml[t];
                super::online::merge_chunk(G, head_dim, &mut state, pm, pl, &part_acc[t * gd..(t + 1) * gd]);
                state_ml[t] = (state.m, state.l);
            }
        }
    }
    for (t, o) in out.iter_mut().enumerate() {
        let (m, l) = state_ml[t];
        let state = Partial { m, l, acc: &mut state_acc[t * gd..(t + 1) * gd] };
        if let Some(o) = o {
            finish(G, head_dim, &state, o);
        }
    }
}
