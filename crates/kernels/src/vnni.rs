//! AVX-512 VNNI kernels that compute two weight rows per instruction (x86-64 only).
//!
//! A 512-bit register holds one 32-element block of row A in its low half and the same block of
//! row B in its high half; one `vpdpbusd` against the activation block (broadcast to both
//! halves) gives both rows' 8 lane sums of 4 products, and one fused multiply-add with the
//! per-half scales accumulates both. Each half is exactly the 8-lane accumulator of the
//! reference order (`matmul.rs`), so results stay bit-identical to it.
//!
//! Q4_1 and Q4_0 rows are repacked in pairs at load time ([`pack_q4_1_pairs`],
//! [`pack_q4_0_pairs`]) so that one AND and one shift unpack both rows: byte j of a packed block
//! holds element j of row A in its low nibble and element j of row B in its high nibble,
//! followed by the f16 scales (dA, dB) and, for Q4_1, minimums (mA, mB): the size of the two
//! original blocks. Q8_0 rows need no repacking: two rows' blocks are loaded side by side.

#![cfg(target_arch = "x86_64")]

use crate::quant::{BlockQ8, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK};
use std::arch::x86_64::*;

/// How far ahead of the kernels' weight reads a prefetch is issued. Decode streams ~100 MB of
/// weights per token; asking for them ahead of use keeps more loads in flight than the hardware
/// prefetcher does (measured on Zen 4: 155 -> 195 tokens/s with 2 threads, 99 -> 123 with 1).
const PREFETCH_BYTES: usize = 1024;

/// Bytes of one packed Q4_1 row-pair block.
pub const PAIR_Q4_1_BYTES: usize = 40;
/// Bytes of one packed Q4_0 row-pair block.
pub const PAIR_Q4_0_BYTES: usize = 36;

/// Whether this CPU runs the kernels of this module.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Repacks a Q4_1 matrix of `rows` (even) rows of `kb` blocks into row pairs (see the module
/// doc): w (N, K) q4_1 -> (N/2, K/32) packed blocks of [`PAIR_Q4_1_BYTES`].
pub fn pack_q4_1_pairs(w: &[u8], rows: usize, kb: usize) -> Vec<u8> {
    pack_nibble_pairs(w, rows, kb, Q4_1_BYTES, 4)
}

/// Repacks a Q4_0 matrix the same way, without minimums: blocks of [`PAIR_Q4_0_BYTES`].
pub fn pack_q4_0_pairs(w: &[u8], rows: usize, kb: usize) -> Vec<u8> {
    pack_nibble_pairs(w, rows, kb, Q4_0_BYTES, 2)
}

/// Row pairs of a 4-bit format whose blocks are `header` bytes of f16 fields (d, and m for Q4_1)
/// and 16 bytes of nibbles: 32 bytes of paired nibbles, then each header field for A and B.
fn pack_nibble_pairs(w: &[u8], rows: usize, kb: usize, block: usize, header: usize) -> Vec<u8> {
    debug_assert!(rows.is_multiple_of(2) && w.len() == rows * kb * block);
    let pair_block = QK + 2 * header;
    let mut out = vec![0u8; rows / 2 * kb * pair_block];
    for (p, pair) in out.chunks_exact_mut(kb * pair_block).enumerate() {
        let row = |r: usize| &w[r * kb * block..(r + 1) * kb * block];
        let (a, b) = (row(2 * p), row(2 * p + 1));
        for (i, dst) in pair.chunks_exact_mut(pair_block).enumerate() {
            let (ba, bb) = (&a[i * block..][..block], &b[i * block..][..block]);
            let element = |blk: &[u8], j: usize| if j < QK / 2 { blk[header + j] & 0x0F } else { blk[header + j - QK / 2] >> 4 };
            for (j, d) in dst[..QK].iter_mut().enumerate() {
                *d = element(ba, j) | (element(bb, j) << 4);
            }
            for f in 0..header / 2 {
                // Field f (d, then m) of A, then of B.
                dst[QK + 4 * f..QK + 4 * f + 2].copy_from_slice(&ba[2 * f..2 * f + 2]);
                dst[QK + 4 * f + 2..QK + 4 * f + 4].copy_from_slice(&bb[2 * f..2 * f + 2]);
            }
        }
    }
    out
}

/// Two f16 at `p` -> a register whose low 8 lanes are the first and high 8 lanes the second.
#[inline(always)]
unsafe fn pair_scales(p: *const u8) -> __m512 {
    let two = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32)));
    _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), _mm512_castps128_ps512(two))
}

/// The activation block's 32 values in both halves.
#[inline(always)]
unsafe fn activation(a: &BlockQ8) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(a.qs.as_ptr() as *const __m256i))
}

/// Reduces each half as `reduce_lanes` does: (row A, row B).
#[inline(always)]
unsafe fn reduce_halves(acc: __m512) -> [f32; 2] {
    let half = |h: __m256| {
        let r = _mm_add_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
    };
    [half(_mm512_castps512_ps256(acc)), half(_mm512_extractf32x8_ps(acc, 1))]
}

/// A packed Q4_1 row pair (K/32 packed blocks) against N activation rows -> N x (row A, row B).
///
/// # Safety
/// [`available`] is true; every `x[j]` has one block per packed block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn q4_1_pair<const N: usize>(packed: &[u8], x: [&[BlockQ8]; N]) -> [[f32; 2]; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut mins = [_mm_setzero_ps(); N]; // lanes 0, 1: rows A, B
    let mask = _mm256_set1_epi8(0x0F);
    for (i, blk) in packed.chunks_exact(PAIR_Q4_1_BYTES).enumerate() {
        let p = blk.as_ptr();
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8);
        let q = _mm256_loadu_si256(p as *const __m256i);
        let lo = _mm256_and_si256(q, mask); // row A, 32 elements in order
        let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask); // row B
        let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let d = pair_scales(p.add(32));
        let m = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p.add(36) as *const i32)));
        for j in 0..N {
            let a = x[j].get_unchecked(i);
            // mins += m * s, one rounding for the product and one for the sum, as the reference.
            mins[j] = _mm_add_ps(mins[j], _mm_mul_ps(m, _mm_set1_ps(a.s)));
            let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, activation(a)));
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.d)), sums, acc[j]);
        }
    }
    let mut out = [[0.0f32; 2]; N];
    for j in 0..N {
        let [ra, rb] = reduce_halves(acc[j]);
        let mut m = [0f32; 4];
        _mm_storeu_ps(m.as_mut_ptr(), mins[j]);
        out[j] = [ra + m[0], rb + m[1]];
    }
    out
}

/// A packed Q4_0 row pair against N activation rows -> N x (row A, row B). The weights are
/// `q - 8`: the exact integer sums are `sum(q y) - 8 sum(y)` per lane, two VNNI products.
///
/// # Safety
/// [`available`] is true; every `x[j]` has one block per packed block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn q4_0_pair<const N: usize>(packed: &[u8], x: [&[BlockQ8]; N]) -> [[f32; 2]; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mask = _mm256_set1_epi8(0x0F);
    let eights = _mm512_set1_epi8(8);
    for (i, blk) in packed.chunks_exact(PAIR_Q4_0_BYTES).enumerate() {
        let p = blk.as_ptr();
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8);
        let q = _mm256_loadu_si256(p as *const __m256i);
        let lo = _mm256_and_si256(q, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
        let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let d = pair_scales(p.add(32));
        for j in 0..N {
            let a = x[j].get_unchecked(i);
            let y = activation(a);
            let qy = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, y);
            let offset = _mm512_dpbusd_epi32(_mm512_setzero_si512(), eights, y);
            let sums = _mm512_cvtepi32_ps(_mm512_sub_epi32(qy, offset));
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.d)), sums, acc[j]);
        }
    }
    let mut out = [[0.0f32; 2]; N];
    for j in 0..N {
        out[j] = reduce_halves(acc[j]);
    }
    out
}

/// Two Q8_0 rows (K/32 blocks each) against N activation rows -> N x (row A, row B).
///
/// # Safety
/// [`available`] is true; rows and every `x[j]` have the same number of blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub unsafe fn q8_0_pair<const N: usize>(row_a: &[u8], row_b: &[u8], x: [&[BlockQ8]; N]) -> [[f32; 2]; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    for (i, (ba, bb)) in row_a.chunks_exact(Q8_0_BYTES).zip(row_b.chunks_exact(Q8_0_BYTES)).enumerate() {
        _mm_prefetch::<_MM_HINT_T0>(ba.as_ptr().wrapping_add(PREFETCH_BYTES) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(bb.as_ptr().wrapping_add(PREFETCH_BYTES) as *const i8);
        let wa = _mm256_loadu_si256(ba.as_ptr().add(2) as *const __m256i);
        let wb = _mm256_loadu_si256(bb.as_ptr().add(2) as *const __m256i);
        let w = _mm512_inserti64x4(_mm512_castsi256_si512(wa), wb, 1);
        // Signed x signed through the unsigned x signed instruction: |w| * (y with w's sign).
        let negative = _mm512_movepi8_mask(w);
        let abs_w = _mm512_abs_epi8(w);
        let scales = [ba.as_ptr(), bb.as_ptr()].map(|p| std::ptr::read_unaligned(p as *const u16));
        let d = pair_scales((&((scales[0] as u32) | ((scales[1] as u32) << 16)) as *const u32) as *const u8);
        for j in 0..N {
            let a = x[j].get_unchecked(i);
            let y = activation(a);
            let signed_y = _mm512_mask_sub_epi8(y, negative, _mm512_setzero_si512(), y);
            let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), abs_w, signed_y));
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.d)), sums, acc[j]);
        }
    }
    let mut out = [[0.0f32; 2]; N];
    for j in 0..N {
        out[j] = reduce_halves(acc[j]);
    }
    out
}
