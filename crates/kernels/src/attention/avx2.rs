//! The same computation with AVX2/F16C intrinsics: bit-identical to [`attend_one`](super::attend_one) (the same
//! operations in the same order, 8 lanes at a time), tested against it.

use super::{attend_one, softmax_lanes, KvView, Order, BANKS, LANES};
use half::f16;
use std::arch::x86_64::*;

/// `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`: the last steps of `reduce16` on its t8.
#[inline(always)]
unsafe fn reduce8(t8: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(t8, 1), _mm256_castps256_ps128(t8));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
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
        let t8: [__m256; 8] = std::array::from_fn(|l| _mm256_add_ps(lane(l + 8), lane(l)));
        let t4: [__m256; 4] = std::array::from_fn(|l| _mm256_add_ps(t8[l + 4], t8[l]));
        let r = _mm256_add_ps(_mm256_add_ps(t4[0], t4[2]), _mm256_add_ps(t4[1], t4[3]));
        _mm256_storeu_ps(o.as_mut_ptr().add(d), r);
    }
}
