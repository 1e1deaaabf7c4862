//! GGUF block formats: their byte layouts, dequantization, and the 8-bit activation blocks that
//! quantized matrix products use.
//!
//! Layouts (little-endian, `f16` = IEEE half), one block of `QK` weights each:
//! ```text
//! Q4_0  18 B: f16 d; u8 qs[16]          w = d * (q - 8)
//! Q4_1  20 B: f16 d; f16 m; u8 qs[16]   w = d * q + m
//! Q8_0  34 B: f16 d; i8 qs[32]          w = d * q
//! ```
//! In the 4-bit formats the low nibble of `qs[j]` is element `j` and the high nibble element `j+16`.
//! The 5-bit formats and the K-quants (super-blocks of 256) are in [`crate::kquants`].

use crate::kquants::{Q2_K_BYTES, Q3_K_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_K_BYTES, QK_K};
use half::{bf16, f16};

/// Weights per block in the Q4_0, Q4_1 and Q8_0 formats (and in [`BlockQ8`] activations).
pub const QK: usize = 32;
/// Bytes per Q4_0 block.
pub const Q4_0_BYTES: usize = 18;
/// Bytes per Q4_1 block.
pub const Q4_1_BYTES: usize = 20;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = 34;

/// The weight formats the kernels know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)] // the names GGUF gives them
pub enum Format {
    /// 32-bit floats.
    F32,
    /// IEEE half floats.
    F16,
    /// bfloat16.
    Bf16,
    /// 4-bit symmetric blocks of 32 (offset 8).
    Q4_0,
    /// 4-bit blocks of 32 with scale and minimum.
    Q4_1,
    /// 8-bit symmetric blocks of 32.
    Q8_0,
    /// 5-bit symmetric blocks of 32 (offset 16).
    Q5_0,
    /// 5-bit blocks of 32 with scale and minimum.
    Q5_1,
    /// 2-bit super-blocks of 256: 16 sub-blocks with 4-bit scales and minimums.
    Q2_K,
    /// 3-bit super-blocks of 256: 16 sub-blocks with 6-bit scales.
    Q3_K,
    /// 4-bit super-blocks of 256: 8 sub-blocks with 6-bit scales and minimums.
    Q4_K,
    /// 5-bit super-blocks of 256: 8 sub-blocks with 6-bit scales and minimums.
    Q5_K,
    /// 6-bit super-blocks of 256: 16 sub-blocks with 8-bit scales.
    Q6_K,
    /// 8-bit super-blocks of 256 with an f32 scale.
    Q8_K,
}

/// The activations a product with a weight format reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activations {
    /// The f32 values (float weights).
    F32,
    /// 8-bit blocks of 32 ([`BlockQ8`]), quantized by the caller (often fused into a norm).
    Q8,
    /// 8-bit super-blocks of 256 ([`BlockQ8K`](crate::kquants::BlockQ8K)), quantized by the
    /// product itself from the f32 values.
    Q8K,
}

impl Format {
    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            Format::F32 | Format::F16 | Format::Bf16 => 1,
            Format::Q4_0 | Format::Q4_1 | Format::Q8_0 | Format::Q5_0 | Format::Q5_1 => QK,
            Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K | Format::Q8_K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::F32 => 4,
            Format::F16 | Format::Bf16 => 2,
            Format::Q4_0 => Q4_0_BYTES,
            Format::Q4_1 => Q4_1_BYTES,
            Format::Q8_0 => Q8_0_BYTES,
            Format::Q5_0 => Q5_0_BYTES,
            Format::Q5_1 => Q5_1_BYTES,
            Format::Q2_K => Q2_K_BYTES,
            Format::Q3_K => Q3_K_BYTES,
            Format::Q4_K => Q4_K_BYTES,
            Format::Q5_K => Q5_K_BYTES,
            Format::Q6_K => Q6_K_BYTES,
            Format::Q8_K => Q8_K_BYTES,
        }
    }

    /// Bytes of one row of `k` elements; `None` if `k` is not a whole number of blocks.
    pub fn row_bytes(self, k: usize) -> Option<usize> {
        k.is_multiple_of(self.block_size()).then(|| k / self.block_size() * self.block_bytes())
    }

    /// Whether products with this format use 8-bit quantized activations in blocks of 32 ([`BlockQ8`]).
    pub fn uses_q8_activations(self) -> bool {
        self.activations() == Activations::Q8
    }

    /// The activations products with this format read.
    pub fn activations(self) -> Activations {
        match self {
            Format::F32 | Format::F16 | Format::Bf16 => Activations::F32,
            Format::Q4_0 | Format::Q4_1 | Format::Q8_0 | Format::Q5_0 | Format::Q5_1 => Activations::Q8,
            Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K | Format::Q8_K => Activations::Q8K,
        }
    }
}

/// Reads the little-endian f16 at `bytes[at..at + 2]` as f32.
#[inline(always)]
pub fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Rounds an f32 to the nearest f16 and back (the precision of a stored scale).
#[inline(always)]
pub fn round_to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// One block of 32 activations quantized to 8 bits: `x[j] ~= d * qs[j]`.
///
/// `d` and `s = d * sum(qs)` are kept rounded to f16 precision, as the peers store them, so that
/// products agree with theirs; `s` lets a Q4_1 product add the weight minimum in one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(16))]
pub struct BlockQ8 {
    /// Scale (f16-rounded).
    pub d: f32,
    /// `d * sum(qs)` (f16-rounded).
    pub s: f32,
    /// Quantized values.
    pub qs: [i8; QK],
    /// The exact sum of `qs` (kernels that store weights with an offset take it out with this).
    pub sum: i32,
}

/// Quantizes activations to 8-bit blocks: x (K) f32 -> out (K/32) blocks. `K % 32 == 0`.
///
/// Scale `d = amax / 127`; values are `round(x * 127 / amax)`, ties to even (what the x86 SIMD
/// paths of the peers do). A block whose largest value is so small that `127 / amax` overflows
/// (below ~3.7e-37) quantizes to zeros. Runs at [`Level::current`](crate::Level::current)
/// (AVX-512 or AVX2 kernels; the portable `round_ties_even` is a library call); every level
/// gives the same bits.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    quantize_row_q8_at(crate::Level::current(), x, out)
}

/// [`quantize_row_q8`] at `level` (at most the machine's best).
pub fn quantize_row_q8_at(level: crate::Level, x: &[f32], out: &mut [BlockQ8]) {
    debug_assert!(level <= crate::Level::best_available());
    #[cfg(target_arch = "x86_64")]
    {
        if level == crate::Level::Avx512Vnni {
            // SAFETY: this level implies AVX-512 F and BW and F16C.
            return unsafe { quantize_row_q8_avx512(x, out) };
        }
        if level >= crate::Level::Avx2 {
            // SAFETY: this level implies AVX2, FMA and F16C.
            return unsafe { quantize_row_q8_avx2(x, out) };
        }
    }
    let _ = level;
    quantize_row_q8_generic(x, out)
}

/// Tokens below which a row-wise pass runs on the calling thread alone: waking the pool costs
/// more than it saves.
pub const PARALLEL_MIN_TOKENS: usize = 8;

/// x (T, K) f32 -> xq (T, K/32) blocks, tokens split over the pool when there are many.
pub fn quantize_rows_q8(pool: &crate::ThreadPool, x: &[f32], xq: &mut [BlockQ8], t: usize) {
    if t < PARALLEL_MIN_TOKENS || pool.n_threads() == 1 {
        return quantize_row_q8(x, xq);
    }
    let (k, kb) = (x.len() / t, xq.len() / t);
    let out = crate::pool::SharedMut::new(xq);
    pool.run(&|i, nt| {
        let rows = crate::pool::split_range(t, i, nt);
        // SAFETY: thread i owns the blocks of its tokens.
        let dst = unsafe { out.slice(rows.start * kb, rows.len() * kb) };
        quantize_row_q8(&x[rows.start * k..rows.end * k], dst);
    });
}

/// [`quantize_row_q8_generic`] 32 values at a time in four AVX2 registers, with the operations of
/// the AVX-512 kernel below (the same bits: tested).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_avx2(x: &[f32], out: &mut [BlockQ8]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(x.len(), out.len() * QK);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let mut v = [_mm256_setzero_ps(); 4];
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = _mm256_loadu_ps(xs.as_ptr().add(8 * i));
        }
        // max(v, acc) keeps acc when v is NaN, as f32::max does; the lanes are never NaN, so
        // their maximum is the same in any order.
        let mut m = _mm256_setzero_ps();
        for vi in v {
            m = _mm256_max_ps(_mm256_and_ps(vi, abs_mask), m);
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(inverse_scale(amax));
        let q: [__m256i; 4] = v.map(|vi| {
            let p = _mm256_mul_ps(vi, id);
            // MXCSR rounding: nearest, ties to even; a NaN product gives 0 as `as i32` does.
            _mm256_and_si256(_mm256_cvtps_epi32(p), _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(p, p)))
        });
        // |q| <= 127: the saturating packs are exact; they interleave 128-bit lanes, which the
        // permutation undoes.
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(block.qs.as_mut_ptr() as *mut __m256i, bytes);
        let s8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(_mm256_extracti128_si256(s8, 1), _mm256_castsi256_si128(s8));
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 1)));
        block.d = round_to_f16(d);
        block.s = round_to_f16(d * sum as f32);
        block.sum = sum;
    }
}

/// [`quantize_row_q8_generic`] 32 values at a time: the same scale, the same quotient (a true
/// division, not a reciprocal estimate), rounding to nearest even, and an exact integer sum, so
/// the same bits. A NaN product (a NaN input, or an infinite one times 0) quantizes to 0 as
/// `as i32` makes it (the instruction would give i32::MIN); the maximum skips NaN as `f32::max`
/// does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn quantize_row_q8_avx512(x: &[f32], out: &mut [BlockQ8]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(x.len(), out.len() * QK);
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (a, b) = (_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(xs.as_ptr().add(16)));
        // max(v, acc) keeps acc when v is NaN, as f32::max does.
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(b), _mm512_max_ps(_mm512_abs_ps(a), _mm512_setzero_ps())));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(inverse_scale(amax));
        let round = |v: __m512| {
            let p = _mm512_mul_ps(v, id);
            let q = _mm512_cvtps_epi32(p); // MXCSR rounding: nearest, ties to even
            _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p), q)
        };
        let (qa, qb) = (round(a), round(b));
        _mm_storeu_si128(block.qs.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(block.qs.as_mut_ptr().add(16) as *mut __m128i, _mm512_cvtepi32_epi8(qb));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
        block.d = round_to_f16(d);
        block.s = round_to_f16(d * sum as f32);
        block.sum = sum;
    }
}

/// `127 / amax`, or 0 for a zero block and for one so small that the quotient overflows (its
/// values would all round to +-inf, beyond an i8).
#[inline(always)]
fn inverse_scale(amax: f32) -> f32 {
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    if id.is_finite() {
        id
    } else {
        0.0
    }
}

#[inline(always)]
fn quantize_row_q8_generic(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse_scale(amax);
        let mut sum = 0i32;
        for (q, &v) in block.qs.iter_mut().zip(xs) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        block.d = round_to_f16(d);
        block.s = round_to_f16(d * sum as f32);
        block.sum = sum;
    }
}

/// Dequantizes one row: src (row bytes) in `format` -> dst (K) f32.
pub fn dequantize_row(format: Format, src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(Some(src.len()), format.row_bytes(dst.len()));
    match format {
        Format::F32 => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Format::F16 => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        Format::Bf16 => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        Format::Q4_0 => {
            for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q4_0_BYTES)) {
                let d = read_f16(b, 0);
                for j in 0..QK / 2 {
                    let q = b[2 + j];
                    out[j] = d * ((q & 0x0F) as i32 - 8) as f32;
                    out[j + QK / 2] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
        }
        Format::Q4_1 => {
            for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q4_1_BYTES)) {
                let (d, m) = (read_f16(b, 0), read_f16(b, 2));
                for j in 0..QK / 2 {
                    let q = b[4 + j];
                    out[j] = d * (q & 0x0F) as f32 + m;
                    out[j + QK / 2] = d * (q >> 4) as f32 + m;
                }
            }
        }
        Format::Q8_0 => {
            for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(Q8_0_BYTES)) {
                let d = read_f16(b, 0);
                for j in 0..QK {
                    out[j] = d * (b[2 + j] as i8) as f32;
                }
            }
        }
        Format::Q5_0 | Format::Q5_1 => crate::kquants::dequantize_5bit(format, src, dst),
        Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K | Format::Q8_K => crate::kquants::dequantize_k(format, src, dst),
    }
}

/// Quantizes f32 weights to a block format (used by tests and by tools that write model files):
/// x (K) f32 -> dst (row bytes). Round to nearest, as the peers' reference quantizers do.
pub fn quantize_row(format: Format, x: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(Some(dst.len()), format.row_bytes(x.len()));
    let put_f16 = |dst: &mut [u8], at: usize, v: f32| {
        dst[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    };
    match format {
        Format::F32 => {
            for (b, v) in dst.chunks_exact_mut(4).zip(x) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        }
        Format::F16 => {
            for (b, v) in dst.chunks_exact_mut(2).zip(x) {
                b.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        Format::Bf16 => {
            for (b, v) in dst.chunks_exact_mut(2).zip(x) {
                b.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        Format::Q4_0 => {
            for (b, xs) in dst.chunks_exact_mut(Q4_0_BYTES).zip(x.chunks_exact(QK)) {
                // The value of largest magnitude maps to -8, so the full range [-8, 7] is used.
                let max = xs.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_f16(b, 0, d);
                for j in 0..QK / 2 {
                    let q0 = ((xs[j] * id + 8.5) as i32).clamp(0, 15) as u8;
                    let q1 = ((xs[j + QK / 2] * id + 8.5) as i32).clamp(0, 15) as u8;
                    b[2 + j] = q0 | (q1 << 4);
                }
            }
        }
        Format::Q4_1 => {
            for (b, xs) in dst.chunks_exact_mut(Q4_1_BYTES).zip(x.chunks_exact(QK)) {
                let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
                let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_f16(b, 0, d);
                put_f16(b, 2, min);
                for j in 0..QK / 2 {
                    let q0 = (((xs[j] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                    let q1 = (((xs[j + QK / 2] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                    b[4 + j] = q0 | (q1 << 4);
                }
            }
        }
        Format::Q8_0 => {
            for (b, xs) in dst.chunks_exact_mut(Q8_0_BYTES).zip(x.chunks_exact(QK)) {
                let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                put_f16(b, 0, d);
                for j in 0..QK {
                    b[2 + j] = ((xs[j] * id).round() as i8) as u8;
                }
            }
        }
        Format::Q5_0 | Format::Q5_1 | Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K | Format::Q8_K => {
            crate::kquants::quantize_simple(format, x, dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(k: usize) -> Vec<f32> {
        (0..k).map(|i| ((i * 7919 % 113) as f32 - 56.0) / 17.0).collect()
    }

    #[test]
    fn every_quantizer_path_matches_the_generic_one_bit_for_bit() {
        // Random blocks, ties (k + 0.5 after scaling), zeros of both signs, subnormals, and the
        // non-finite values whose handling differs between instructions and `as i32`.
        let mut x: Vec<f32> = (0..32 * 64).map(|i| ((i as u32).wrapping_mul(2654435761) >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0).collect();
        let specials = [0.5, -0.5, 1.5, 2.5, -2.5, 127.0, -0.0, 0.0, 1e-40, -1e-40, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0e38];
        // A block whose largest value is tiny: 127 / amax overflows (it quantizes to zeros).
        let tiny: Vec<f32> = (0..32).map(|i| [1e-37, 0.0, -3e-38, 2e-38][i % 4]).collect();
        x.extend(tiny);
        for (b, chunk) in x.chunks_mut(32).enumerate().skip(1) {
            chunk[b % 32] = specials[b % specials.len()];
            if b % 5 == 0 {
                chunk.iter_mut().enumerate().for_each(|(i, v)| *v = (i as f32 - 15.5) / 2.0);
                // exact ties
            }
        }
        let mut want = vec![BlockQ8::default(); x.len() / 32];
        quantize_row_q8_generic(&x, &mut want);
        let mut got = vec![BlockQ8::default(); x.len() / 32];
        quantize_row_q8(&x, &mut got);
        let same = |got: &[BlockQ8], path: &str| {
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!((g.d.to_bits(), g.s.to_bits(), g.qs, g.sum), (w.d.to_bits(), w.s.to_bits(), w.qs, w.sum), "{path}, block {i}");
            }
        };
        same(&got, "best");
        for level in crate::Level::all_available() {
            quantize_row_q8_at(level, &x, &mut got);
            same(&got, &format!("{level:?}"));
        }
    }

    #[test]
    fn quantize_then_dequantize_is_close_for_every_format() {
        let x = ramp(96);
        for (format, tol) in
            [(Format::F32, 0.0), (Format::F16, 2e-3), (Format::Bf16, 2e-2), (Format::Q8_0, 0.02), (Format::Q4_0, 0.45), (Format::Q4_1, 0.25)]
        {
            let mut bytes = vec![0u8; format.row_bytes(x.len()).unwrap()];
            quantize_row(format, &x, &mut bytes);
            let mut back = vec![0f32; x.len()];
            dequantize_row(format, &bytes, &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() <= tol, "{format:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn q4_nibble_order_low_is_first_half() {
        // One Q4_0 block, d = 1: qs[0] = 0x91 -> element 0 = 1-8, element 16 = 9-8.
        let mut b = vec![0u8; Q4_0_BYTES];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        b[2] = 0x91;
        let mut out = [0f32; QK];
        dequantize_row(Format::Q4_0, &b, &mut out);
        assert_eq!(out[0], -7.0);
        assert_eq!(out[16], 1.0);
        assert_eq!(out[1], -8.0);
    }

    #[test]
    fn q8_activation_blocks_store_scale_and_sum() {
        let x = ramp(64);
        let mut q = vec![BlockQ8::default(); 2];
        quantize_row_q8(&x, &mut q);
        for (b, xs) in q.iter().zip(x.chunks_exact(QK)) {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(b.d, round_to_f16(amax / 127.0));
            assert_eq!(b.qs.iter().map(|&v| v.unsigned_abs()).max(), Some(127));
            let sum: i32 = b.qs.iter().map(|&v| v as i32).sum();
            assert_eq!(b.s, round_to_f16(amax / 127.0 * sum as f32));
            assert_eq!(b.sum, sum);
            for (v, &q) in xs.iter().zip(&b.qs) {
                assert!((v - b.d * q as f32).abs() <= b.d * 0.51 + 1e-3);
            }
        }
    }

    #[test]
    fn zero_block_quantizes_to_zero_without_nan() {
        let mut q = vec![BlockQ8::default(); 1];
        quantize_row_q8(&[0.0; QK], &mut q);
        assert_eq!(q[0].d, 0.0);
        assert!(q[0].qs.iter().all(|&v| v == 0));
    }
}
