//! AVX2 dot products of Q4_K and Q6_K rows with [`BlockQ8K`] activations (x86-64 only), bit for
//! bit the reference's ([`dot_k_q8k`](crate::kquants::dot_k_q8k)): the same exact integer sums
//! per super-block, then the same float operations in the same order.
//!
//! - Q4_K: chunk c of 32 bytes holds sub-block 2c in its low nibbles and 2c+1 in its high
//!   nibbles. `vpmaddubsw` multiplies the unsigned nibbles by the signed activations into 16-bit
//!   pair sums (at most 2 x 15 x 127), and `vpmaddwd` against the sub-block's scale broadcast
//!   turns them into 32-bit scaled sums (at most 63 x 2 x 3810). The minimums meet the
//!   activations' 16-value sums (`bsums`) in scalar integers.
//! - Q6_K: the values are taken unsigned (0..63, the -32 offset left out), so `vpmaddubsw` pair
//!   sums stay below 2 x 63 x 127; a 32-value register spans two sub-blocks of 16, whose scales go
//!   into the two 128-bit halves of the `vpmaddwd` operand. The offset comes back as
//!   `-32 x sum_i scale_i x bsum_i`.

#![cfg(target_arch = "x86_64")]

use crate::kquants::{scale_min_k4, BlockQ8K, Q4_K_BYTES, Q6_K_BYTES};
use crate::quant::read_f16;
use std::arch::x86_64::*;

/// The sum of the 8 lanes of `v` (exact: integers).
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}

/// w row (K) Q4_K, x (K/256) -> the dot product.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds `x.len()` Q4_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_k_q8k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    q4_k_rows::<1>(w, [x])[0]
}

/// [`dot_q4_k_q8k`] of one row against 4 tokens: each super-block's nibbles and scales unpacked
/// once for the 4 (a prompt's rows are otherwise unpacked again for every token).
///
/// # Safety
/// As [`dot_q4_k_q8k`], for every `x[j]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q4_k_q8k(w: &[u8], x: [&[BlockQ8K]; 4]) -> [f32; 4] {
    q4_k_rows::<4>(w, x)
}

/// A Q4_K row against N tokens: per token the same integer sums and the same float operations in
/// the same order whatever N, so the same bits.
#[inline(always)]
unsafe fn q4_k_rows<const N: usize>(w: &[u8], x: [&[BlockQ8K]; N]) -> [f32; N] {
    let (mut acc, mut mins) = ([0.0f32; N], [0.0f32; N]);
    let nibbles = _mm256_set1_epi8(0x0F);
    for (i, b) in w.chunks_exact(Q4_K_BYTES).enumerate() {
        let (d, dmin) = (read_f16(b, 0), read_f16(b, 2));
        let scales = &b[4..16];
        let qs = b.as_ptr().add(16);
        let a = x.map(|x| x.get_unchecked(i));
        let mut sums = [_mm256_setzero_si256(); N];
        let mut msum = [0i32; N];
        for c in 0..4 {
            let (sc_lo, m_lo) = scale_min_k4(2 * c, scales);
            let (sc_hi, m_hi) = scale_min_k4(2 * c + 1, scales);
            let (m_lo, m_hi) = (m_lo as i32, m_hi as i32);
            let q = _mm256_loadu_si256(qs.add(32 * c) as *const __m256i);
            let lo = _mm256_and_si256(q, nibbles);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), nibbles);
            let (s_lo, s_hi) = (_mm256_set1_epi16(sc_lo as i16), _mm256_set1_epi16(sc_hi as i16));
            for j in 0..N {
                let aj = a[j];
                msum[j] +=
                    m_lo * (aj.bsums[4 * c] as i32 + aj.bsums[4 * c + 1] as i32) + m_hi * (aj.bsums[4 * c + 2] as i32 + aj.bsums[4 * c + 3] as i32);
                let ap = aj.qs.as_ptr();
                let a_lo = _mm256_loadu_si256(ap.add(64 * c) as *const __m256i);
                let a_hi = _mm256_loadu_si256(ap.add(64 * c + 32) as *const __m256i);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), s_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), s_hi);
                sums[j] = _mm256_add_epi32(sums[j], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for j in 0..N {
            let isum = hsum_i32(sums[j]);
            acc[j] = (d * a[j].d).mul_add(isum as f32, acc[j]);
            mins[j] = (dmin * a[j].d).mul_add(msum[j] as f32, mins[j]);
        }
    }
    for j in 0..N {
        acc[j] -= mins[j];
    }
    acc
}

/// w row (K) Q6_K, x (K/256) -> the dot product.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds `x.len()` Q6_K blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6_k_q8k(w: &[u8], x: &[BlockQ8K]) -> f32 {
    q6_k_rows::<1>(w, [x])[0]
}

/// [`dot_q6_k_q8k`] of one row against 4 tokens, each super-block unpacked once for the 4.
///
/// # Safety
/// As [`dot_q6_k_q8k`], for every `x[j]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot4_q6_k_q8k(w: &[u8], x: [&[BlockQ8K]; 4]) -> [f32; 4] {
    q6_k_rows::<4>(w, x)
}

/// A Q6_K row against N tokens: per token the same integer sums and float operations whatever N.
#[inline(always)]
unsafe fn q6_k_rows<const N: usize>(w: &[u8], x: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [0.0f32; N];
    let nibbles = _mm256_set1_epi8(0x0F);
    let high = _mm256_set1_epi8(0x30);
    for (i, b) in w.chunks_exact(Q6_K_BYTES).enumerate() {
        let d = read_f16(b, 208);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        let (ql, qh) = (b.as_ptr(), b.as_ptr().add(128));
        let a = x.map(|x| x.get_unchecked(i));
        let mut sums = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let l0 = _mm256_loadu_si256(ql.add(64 * h) as *const __m256i);
            let l1 = _mm256_loadu_si256(ql.add(64 * h + 32) as *const __m256i);
            let hb = _mm256_loadu_si256(qh.add(32 * h) as *const __m256i);
            // Values 128h + 32k + l: low 4 bits from the nibbles, bits 4-5 from bits 2k of qh[l]
            // (shifted into place within each byte; the 16-bit shifts' spill-over is masked off).
            let q = [
                _mm256_or_si256(_mm256_and_si256(l0, nibbles), _mm256_and_si256(_mm256_slli_epi16(hb, 4), high)),
                _mm256_or_si256(_mm256_and_si256(l1, nibbles), _mm256_and_si256(_mm256_slli_epi16(hb, 2), high)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), nibbles), _mm256_and_si256(hb, high)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), nibbles), _mm256_and_si256(_mm256_srli_epi16(hb, 2), high)),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let s = 8 * h + 2 * k; // the sub-blocks of values 0..16 and 16..32 of this register
                let scale = _mm256_set_m128i(_mm_set1_epi16(sc[s + 1] as i16), _mm_set1_epi16(sc[s] as i16));
                for j in 0..N {
                    let av = _mm256_loadu_si256(a[j].qs.as_ptr().add(128 * h + 32 * k) as *const __m256i);
                    sums[j] = _mm256_add_epi32(sums[j], _mm256_madd_epi16(_mm256_maddubs_epi16(qk, av), scale));
                }
            }
        }
        for j in 0..N {
            let offset: i32 = (0..16).map(|s| sc[s] as i32 * a[j].bsums[s] as i32).sum();
            let isum = hsum_i32(sums[j]) - 32 * offset;
            acc[j] = (d * a[j].d).mul_add(isum as f32, acc[j]);
        }
    }
    acc
}

/// [`dot_k_q8k`] against 4 tokens: one pass over the row for Q4_K and Q6_K, four for the others.
///
/// # Safety
/// As [`dot_k_q8k`], for every `x[j]`.
#[inline(always)]
pub unsafe fn dot4_k_q8k(format: crate::Format, w: &[u8], x: [&[BlockQ8K]; 4]) -> [f32; 4] {
    match format {
        crate::Format::Q4_K => dot4_q4_k_q8k(w, x),
        crate::Format::Q6_K => dot4_q6_k_q8k(w, x),
        _ => x.map(|x| dot_k_q8k(format, w, x)),
    }
}

/// `w`'s row dot product for a K-quant `format` at AVX2: Q4_K and Q6_K here, the others on the
/// reference (compiled for AVX2 where the caller is).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds `x.len()` blocks of `format`.
#[inline(always)]
pub unsafe fn dot_k_q8k(format: crate::Format, w: &[u8], x: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(w.len(), x.len() * format.block_bytes());
    match format {
        crate::Format::Q4_K => dot_q4_k_q8k(w, x),
        crate::Format::Q6_K => dot_q6_k_q8k(w, x),
        _ => crate::kquants::dot_k_q8k(format, w, x),
    }
}
