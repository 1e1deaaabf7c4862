//! Hand-written AVX2 kernels for the quantized dot products (x86-64 only).
//!
//! Each computes exactly what its scalar twin in `matmul.rs` computes, in the same order: per
//! block, the 32 integer products are summed in 8 lanes of 4 consecutive elements (one
//! `maddubs` + `madd` pair, or one VNNI `vpdpbusd`), converted to f32 and fused-multiply-added
//! with the block's scale into an 8-lane accumulator; the lanes are reduced at the end of the row
//! in the tree of `reduce_lanes`. Integer sums are exact, so the results are bit-identical to the
//! scalar reference (tested in `matmul.rs`).

#![cfg(target_arch = "x86_64")]

use crate::quant::{BlockQ8, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES};
use std::arch::x86_64::*;

/// `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`, as `reduce_lanes`.
#[inline(always)]
unsafe fn reduce8(acc: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc)); // r[j] = l[j+4] + l[j]
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r)); // [r0+r2, r1+r3, ..]
    let r = _mm_add_ss(r, _mm_movehdup_ps(r)); // (r0+r2) + (r1+r3)
    _mm_cvtss_f32(r)
}

/// f16 at `p` (unaligned) to f32, with F16C.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let h = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// 16 bytes of nibbles -> 32 bytes in element order: low nibbles, then high nibbles.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Sums of u8 x i8 products in 8 lanes of 4 consecutive elements, as f32.
#[inline(always)]
unsafe fn sum4_u8_i8(x: __m256i, y: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(x, y); // |pair sum| <= 2 * 255 * 128: no saturation for x <= 15 or |x| <= 127
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Sums of i8 x i8 products in 8 lanes of 4 consecutive elements, as f32 (sign trick: |x| * (y * sign x)).
#[inline(always)]
unsafe fn sum4_i8_i8(x: __m256i, y: __m256i) -> __m256 {
    sum4_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// w row q4_1 (K), x (K/32) blocks -> dot product.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() / 20 == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (b, a) in w.chunks_exact(Q4_1_BYTES).zip(x) {
        let p = b.as_ptr();
        mins += f16_at(p.add(2)) * a.s;
        let xy = sum4_u8_i8(nibbles(p.add(4)), _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p) * a.d), xy, acc);
    }
    reduce8(acc) + mins
}

/// w row q4_0 (K), x (K/32) blocks -> dot product.
///
/// # Safety
/// As for [`dot_q4_1_q8`], with 18-byte blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in w.chunks_exact(Q4_0_BYTES).zip(x) {
        let p = b.as_ptr();
        let q = _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8));
        let xy = sum4_i8_i8(q, _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p) * a.d), xy, acc);
    }
    reduce8(acc)
}

/// w row q8_0 (K), x (K/32) blocks -> dot product.
///
/// # Safety
/// As for [`dot_q4_1_q8`], with 34-byte blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in w.chunks_exact(Q8_0_BYTES).zip(x) {
        let p = b.as_ptr();
        let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let xy = sum4_i8_i8(q, _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p) * a.d), xy, acc);
    }
    reduce8(acc)
}
