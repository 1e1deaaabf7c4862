//! Hand-written AVX2 kernels for the quantized dot products (x86-64 only).
//!
//! Each computes exactly what its scalar twin in `matmul/reference.rs` computes, in the same order: per
//! block, the 32 integer products are summed in 8 lanes of 4 consecutive elements (one
//! `maddubs` + `madd` pair, or one VNNI `vpdpbusd`), converted to f32 and fused-multiply-added
//! with the block's scale into an 8-lane accumulator; the lanes are reduced at the end of the row
//! in the tree of `reduce_lanes`. Integer sums are exact, so the results are bit-identical to the
//! scalar reference (tested in `matmul/tests.rs`).

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

/// How a weight block is read: its 32 values as bytes in element order, and its scale and minimum.
#[derive(Clone, Copy)]
enum Block {
    /// 20 bytes: f16 d, f16 m, 16 bytes of nibbles (unsigned 0..15).
    Q4_1,
    /// 18 bytes: f16 d, 16 bytes of nibbles, offset 8 (signed -8..7).
    Q4_0,
    /// 34 bytes: f16 d, 32 signed bytes.
    Q8_0,
}

impl Block {
    const fn bytes(self) -> usize {
        match self {
            Block::Q4_1 => Q4_1_BYTES,
            Block::Q4_0 => Q4_0_BYTES,
            Block::Q8_0 => Q8_0_BYTES,
        }
    }
}

/// One weight row against N activation rows: N dot products, each in the reference order. The
/// weight block is unpacked once and used for all N (the point of N > 1, in prefill).
#[inline(always)]
unsafe fn dot_rows<const N: usize>(kind: Block, w: &[u8], x: [&[BlockQ8]; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [0.0f32; N];
    for (i, b) in w.chunks_exact(kind.bytes()).enumerate() {
        let p = b.as_ptr();
        // Decode streams ~100 MB of weights per token; asking for them ahead of use lets more
        // loads be in flight than the hardware prefetcher keeps (measured: +20-25% tokens/s).
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(1024) as *const i8);
        let d = f16_at(p);
        for j in 0..N {
            let a = x[j].get_unchecked(i);
            let y = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let xy = match kind {
                Block::Q4_1 => {
                    mins[j] += f16_at(p.add(2)) * a.s;
                    sum4_u8_i8(nibbles(p.add(4)), y)
                }
                Block::Q4_0 => sum4_i8_i8(_mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)), y),
                Block::Q8_0 => sum4_i8_i8(_mm256_loadu_si256(p.add(2) as *const __m256i), y),
            };
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), xy, acc[j]);
        }
    }
    let mut out = [0.0f32; N];
    for j in 0..N {
        out[j] = reduce8(acc[j]) + if matches!(kind, Block::Q4_1) { mins[j] } else { 0.0 };
    }
    out
}

/// Tokens per call of the multi-row kernels in prefill.
pub const ROWS: usize = 4;

macro_rules! dot_kernels {
    ($one:ident, $many:ident, $kind:expr, $doc:literal) => {
        #[doc = concat!("w row ", $doc, " (K), x (K/32) blocks -> dot product.\n\n# Safety\nThe CPU has AVX2, FMA and F16C; `x` has one block per weight block.")]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(w: &[u8], x: &[BlockQ8]) -> f32 {
            dot_rows::<1>($kind, w, [x])[0]
        }

        #[doc = concat!("w row ", $doc, " (K), 4 activation rows -> 4 dot products.\n\n# Safety\nAs for the single-row kernel, for each row.")]
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $many(w: &[u8], x: [&[BlockQ8]; ROWS]) -> [f32; ROWS] {
            dot_rows::<ROWS>($kind, w, x)
        }
    };
}

dot_kernels!(dot_q4_1_q8, dot4_q4_1_q8, Block::Q4_1, "q4_1");
dot_kernels!(dot_q4_0_q8, dot4_q4_0_q8, Block::Q4_0, "q4_0");
dot_kernels!(dot_q8_0_q8, dot4_q8_0_q8, Block::Q8_0, "q8_0");
