//! Several tokens, AVX-512: the query heads that share a KV head are handled together, so each
//! key and value row is loaded and converted from f16 once for the whole group. Per head, the
//! arithmetic and its order are exactly those of [`attend_one`](super::attend_one) in the tiled order (tested).

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
                let vv: [__m512; 4] = std::array::from_fn(|j| if j < n { load16(vp.add(j * LANES)) } else { _mm512_setzero_ps() });
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
            let t8: [__m512; 8] = std::array::from_fn(|l| _mm512_add_ps(at(l + 8, d), at(l, d)));
            let t4: [__m512; 4] = std::array::from_fn(|l| _mm512_add_ps(t8[l + 4], t8[l]));
            let r = _mm512_add_ps(_mm512_add_ps(t4[0], t4[2]), _mm512_add_ps(t4[1], t4[3]));
            _mm512_storeu_ps(out.as_mut_ptr().add(g * head_dim + d), r);
        }
    }
}

/// `reduce_banks` of four 16-lane banks: lanes (b0 + b2) + (b1 + b3), then `reduce16`.
#[inline(always)]
unsafe fn reduce_banks(b: [__m512; 4]) -> f32 {
    reduce16(_mm512_add_ps(_mm512_add_ps(b[0], b[2]), _mm512_add_ps(b[1], b[3])))
}

/// [`attend_group`] in the single-token (vector) order of [`attend_one`](super::attend_one):
/// q (G, Dh) of one token and its KV head at `kv_off` -> out (G, Dh); Dh % 64 == 0, G <= 8.
/// Each key and value row is loaded and converted once for the group; per head, the operations
/// and their order are those of the single-head kernel (tested bit for bit).
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
    debug_assert!(group <= MAX_GROUP && head_dim.is_multiple_of(WIDTH));
    let (scores, rest) = work.split_at_mut(group * n_seen); // (G, n_seen)
    let (qh, acc) = rest.split_at_mut(group * head_dim); // (G, Dh), then (G, 64, Dh)
    for (d, &x) in qh.iter_mut().zip(q) {
        *d = f16::from_f32(x).to_f32();
    }
    // Scores: element i of the head goes to bank (i % 64) / 16, lane i % 16.
    for s in 0..n_seen {
        let kp = kv.keys.as_ptr().add(kv.row(s) + kv_off);
        for g in 0..group {
            let qp = qh.as_ptr().add(g * head_dim);
            let mut b = [_mm512_setzero_ps(); 4];
            for c in (0..head_dim).step_by(WIDTH) {
                for (j, bj) in b.iter_mut().enumerate() {
                    *bj = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(c + j * LANES)), load16(kp.add(c + j * LANES)), *bj);
                }
            }
            // The reference sums in f64 and rounds back: exact for a single f32.
            scores[g * n_seen + s] = reduce_banks(b) * scale;
        }
    }
    for g in 0..group {
        softmax_f16(&mut scores[g * n_seen..(g + 1) * n_seen]);
    }
    // Values: position s goes to slot s % 64; per slot, positions in increasing order.
    let ap = acc.as_mut_ptr();
    for slot in 0..WIDTH.min(n_seen) {
        for d0 in (0..head_dim).step_by(4 * LANES) {
            let mut r = [[_mm512_setzero_ps(); 4]; MAX_GROUP];
            for s in (slot..n_seen).step_by(WIDTH) {
                let vp = kv.values.as_ptr().add(kv.row(s) + kv_off + d0);
                let vv: [__m512; 4] = std::array::from_fn(|j| load16(vp.add(j * LANES)));
                for (g, rg) in r.iter_mut().enumerate().take(group) {
                    let p = _mm512_set1_ps(scores[g * n_seen + s]);
                    for (rj, vj) in rg.iter_mut().zip(vv) {
                        *rj = _mm512_fmadd_ps(p, vj, *rj);
                    }
                }
            }
            for (g, rg) in r.iter().enumerate().take(group) {
                for (j, rj) in rg.iter().enumerate() {
                    _mm512_storeu_ps(ap.add((g * WIDTH + slot) * head_dim + d0 + j * LANES), *rj);
                }
            }
        }
    }
    // Slots no position reached hold zeros.
    for g in 0..group {
        for slot in n_seen.min(WIDTH)..WIDTH {
            std::ptr::write_bytes(ap.add((g * WIDTH + slot) * head_dim), 0, head_dim);
        }
    }
    // out[g][d] = reduce_banks over the 64 slots, 16 dimensions at a time.
    for g in 0..group {
        let at = |slot: usize, d: usize| _mm512_loadu_ps(ap.add((g * WIDTH + slot) * head_dim + d));
        for d in (0..head_dim).step_by(LANES) {
            let lane = |l: usize| _mm512_add_ps(_mm512_add_ps(at(l, d), at(2 * LANES + l, d)), _mm512_add_ps(at(LANES + l, d), at(3 * LANES + l, d)));
            let t8: [__m512; 8] = std::array::from_fn(|l| _mm512_add_ps(lane(l + 8), lane(l)));
            let t4: [__m512; 4] = std::array::from_fn(|l| _mm512_add_ps(t8[l + 4], t8[l]));
            let r = _mm512_add_ps(_mm512_add_ps(t4[0], t4[2]), _mm512_add_ps(t4[1], t4[3]));
            _mm512_storeu_ps(out.as_mut_ptr().add(g * head_dim + d), r);
        }
    }
}
