//! The 5-bit formats (blocks of 32) and the K-quants (super-blocks of 256): their byte layouts,
//! dequantization, simple quantizers, the 8-bit activation super-blocks ([`BlockQ8K`]) that
//! K-quant products use, and the scalar reference dot products.
//!
//! Layouts (little-endian, `f16` = IEEE half), as GGUF stores them:
//! ```text
//! Q5_0   22 B / 32:  f16 d; u8 qh[4]; u8 qs[16]                    w = d * (q - 16)
//! Q5_1   24 B / 32:  f16 d, m; u8 qh[4]; u8 qs[16]                 w = d * q + m
//! Q2_K   84 B / 256: u8 scales[16]; u8 qs[64]; f16 d, dmin         16 x 16: scale, min 4 bits each
//! Q3_K  110 B / 256: u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d 16 x 16: 6-bit scales - 32
//! Q4_K  144 B / 256: f16 d, dmin; u8 scales[12]; u8 qs[128]        8 x 32: 6-bit scale and min
//! Q5_K  176 B / 256: f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
//! Q6_K  210 B / 256: u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d   16 x 16: q - 32
//! Q8_K  292 B / 256: f32 d; i8 qs[256]; i16 bsums[16]
//! ```
//! Q5_0/Q5_1: the low nibble of `qs[j]` is element j, the high nibble element j+16, and bit e
//! of `qh` (a u32) is the fifth bit of element e.
//!
//! Every K-quant block is read through one shape, [`Unpacked`]: 256 small integers `q`, a scale
//! and a minimum per 16 elements, and two f16 super-scales, with `w = (d * scale) * q - dmin * min`
//! (the order of the peers' dequantizers, bit for bit). A product with activations quantized to
//! [`BlockQ8K`] is then exact in integers per super-block:
//! `isum = sum_i scale_i * sum_{e in i} q_e a_e` and `msum = sum_i min_i * bsum_i`, and
//! `acc = fma(d * d_a, isum, acc)`, `mins = fma(dmin * d_a, msum, mins)`, result `acc - mins`
//! (`acc` alone in the formats without minimums). `kquants_avx2.rs` has the AVX2 kernels of
//! Q4_K and Q6_K, bit-identical to these.

use crate::quant::{read_f16, round_to_f16, Format, QK};
use half::f16;

/// Elements per K-quant super-block (and per [`BlockQ8K`]).
pub const QK_K: usize = 256;
/// Bytes per Q5_0 block.
pub const Q5_0_BYTES: usize = 22;
/// Bytes per Q5_1 block.
pub const Q5_1_BYTES: usize = 24;
/// Bytes per Q2_K super-block.
pub const Q2_K_BYTES: usize = 84;
/// Bytes per Q3_K super-block.
pub const Q3_K_BYTES: usize = 110;
/// Bytes per Q4_K super-block.
pub const Q4_K_BYTES: usize = 144;
/// Bytes per Q5_K super-block.
pub const Q5_K_BYTES: usize = 176;
/// Bytes per Q6_K super-block.
pub const Q6_K_BYTES: usize = 210;
/// Bytes per Q8_K super-block.
pub const Q8_K_BYTES: usize = 292;

/// 256 activations quantized to 8 bits, as the peers quantize the input of a K-quant product:
/// `x[j] ~= d * qs[j]`, `d` a full f32 (not rounded to f16), and `bsums[i]` the sum of
/// `qs[16i..16i+16]` (what a weight minimum multiplies).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(32))]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Quantized values.
    pub qs: [i8; QK_K],
    /// Sums of each 16 values.
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

/// Quantizes activations to 8-bit super-blocks: x (K) f32 -> out (K/256). `K % 256 == 0`.
///
/// The peers' rule: the value of largest magnitude (the first of equals) is `max`; `iscale =
/// -127 / max`; `q = min(127, round(iscale * x))`, ties to even; `d = 1 / iscale`. So the largest
/// value maps to -127 and `d` carries its sign. A block of zeros gets d = 0. A NaN quantizes to 0.
pub fn quantize_row_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if crate::Level::current() >= crate::Level::Avx2 {
        // SAFETY: the level implies AVX2 (and SSE4.1, whose rounding instruction replaces the
        // library call of `round_ties_even`; the same function, the same bits).
        return unsafe { quantize_row_q8k_avx2(x, out) };
    }
    quantize_row_q8k_generic(x, out)
}

/// [`quantize_row_q8k_generic`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,sse4.1")]
unsafe fn quantize_row_q8k_avx2(x: &[f32], out: &mut [BlockQ8K]) {
    quantize_row_q8k_generic(x, out)
}

#[inline(always)]
fn quantize_row_q8k_generic(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (block, xs) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *block = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in block.qs.iter_mut().zip(xs) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (s, qs) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        block.d = 1.0 / iscale;
    }
}

/// One K-quant super-block in the common shape: `w[e] = (d * scale[e/16]) * q[e] - dmin * min[e/16]`.
#[derive(Clone, Copy, Debug)]
pub struct Unpacked {
    /// The integer values, scale not applied.
    pub q: [i8; QK_K],
    /// The integer scale of each 16 values.
    pub scale: [i16; 16],
    /// The integer minimum of each 16 values (0 in the formats without one).
    pub min: [i16; 16],
    /// The super-block scale.
    pub d: f32,
    /// The super-block scale of the minimums (0 in the formats without one).
    pub dmin: f32,
}

/// Sub-block j's 6-bit scale and minimum of Q4_K/Q5_K (8 of each packed into 12 bytes): j < 4 in
/// the low 6 bits of bytes j and j+4; j >= 4 in the nibbles of byte j+4, their top 2 bits in the
/// top bits of bytes j-4 (scale) and j (minimum).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// The inverse of [`scale_min_k4`]: 8 six-bit scales and minimums -> 12 bytes.
fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    s
}

/// Q3_K's scale j (of 16): 4 low bits in a nibble of bytes 0..8, 2 high bits in bytes 8..12, minus 32.
#[inline(always)]
fn scale_k3(j: usize, s: &[u8]) -> i16 {
    let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i16 - 32
}

/// Reads one super-block of a K-quant `format` into the common shape.
///
/// # Panics
/// If `format` is not a K-quant or `b` is shorter than its block.
pub fn unpack_k(format: Format, b: &[u8]) -> Unpacked {
    let mut u = Unpacked { q: [0; QK_K], scale: [0; 16], min: [0; 16], d: 0.0, dmin: 0.0 };
    match format {
        Format::Q2_K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            (u.d, u.dmin) = (read_f16(b, 80), read_f16(b, 82));
            for (i, &s) in scales.iter().enumerate() {
                (u.scale[i], u.min[i]) = ((s & 0x0F) as i16, (s >> 4) as i16);
            }
            // Half h of 128 values reads qs[32h..32h+32]: value 128h + 32g + l is bits 2g of qs[32h + l].
            for h in 0..2 {
                for g in 0..4 {
                    for l in 0..32 {
                        u.q[128 * h + 32 * g + l] = ((qs[32 * h + l] >> (2 * g)) & 3) as i8;
                    }
                }
            }
        }
        Format::Q3_K => {
            let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
            u.d = read_f16(b, 108);
            for (i, s) in u.scale.iter_mut().enumerate() {
                *s = scale_k3(i, scales);
            }
            // As Q2_K, minus 4 where the value's bit (4h + g) of hmask[l] is clear.
            for h in 0..2 {
                for g in 0..4 {
                    for l in 0..32 {
                        let low = ((qs[32 * h + l] >> (2 * g)) & 3) as i8;
                        let high_clear = hmask[l] & (1 << (4 * h + g)) == 0;
                        u.q[128 * h + 32 * g + l] = low - if high_clear { 4 } else { 0 };
                    }
                }
            }
        }
        Format::Q4_K | Format::Q5_K => {
            (u.d, u.dmin) = (read_f16(b, 0), read_f16(b, 2));
            let scales = &b[4..16];
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, scales);
                (u.scale[2 * j], u.scale[2 * j + 1]) = (sc as i16, sc as i16);
                (u.min[2 * j], u.min[2 * j + 1]) = (m as i16, m as i16);
            }
            let (qh, qs) = if format == Format::Q5_K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            // Chunk c of 64 values reads qs[32c..32c+32]: low nibbles are sub-block 2c, high
            // nibbles sub-block 2c+1; Q5_K's fifth bits are bits 2c and 2c+1 of qh[l].
            for c in 0..4 {
                for l in 0..32 {
                    let v = qs[32 * c + l];
                    let (mut lo, mut hi) = ((v & 0x0F) as i8, (v >> 4) as i8);
                    if let Some(qh) = qh {
                        lo += (((qh[l] >> (2 * c)) & 1) << 4) as i8;
                        hi += (((qh[l] >> (2 * c + 1)) & 1) << 4) as i8;
                    }
                    (u.q[64 * c + l], u.q[64 * c + 32 + l]) = (lo, hi);
                }
            }
        }
        Format::Q6_K => {
            let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
            u.d = read_f16(b, 208);
            for (s, &v) in u.scale.iter_mut().zip(scales) {
                *s = v as i8 as i16;
            }
            // Half h (ql[64h..], qh[32h..]): values 128h + 32k + l for k = 0..4 take the low
            // nibble of ql[l] / ql[l+32], then the high nibbles, and bits 2k of qh[l].
            for h in 0..2 {
                let (ql, qh) = (&ql[64 * h..], &qh[32 * h..]);
                for l in 0..32 {
                    let high = |k: usize| ((qh[l] >> (2 * k)) & 3) << 4;
                    let out = &mut u.q[128 * h..];
                    out[l] = ((ql[l] & 0x0F) | high(0)) as i8 - 32;
                    out[l + 32] = ((ql[l + 32] & 0x0F) | high(1)) as i8 - 32;
                    out[l + 64] = ((ql[l] >> 4) | high(2)) as i8 - 32;
                    out[l + 96] = ((ql[l + 32] >> 4) | high(3)) as i8 - 32;
                }
            }
        }
        Format::Q8_K => {
            u.d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            u.scale = [1; 16];
            for (q, &v) in u.q.iter_mut().zip(&b[4..4 + QK_K]) {
                *q = v as i8;
            }
        }
        other => panic!("unpack_k: {other:?} is not a K-quant"),
    }
    u
}

/// Dequantizes K-quant super-blocks: src (K/256 blocks) -> dst (K).
pub(crate) fn dequantize_k(format: Format, src: &[u8], dst: &mut [f32]) {
    for (out, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(format.block_bytes())) {
        let u = unpack_k(format, b);
        for (i, out) in out.chunks_exact_mut(16).enumerate() {
            let (dl, ml) = (u.d * u.scale[i] as f32, u.dmin * u.min[i] as f32);
            for (o, &q) in out.iter_mut().zip(&u.q[16 * i..16 * i + 16]) {
                *o = dl * q as f32 - ml;
            }
        }
    }
}

/// The 32 values of a Q5_0/Q5_1 block (element order), offset not applied: `qs` 16 bytes of
/// nibbles, `qh` the fifth bits.
#[inline(always)]
pub fn unpack_5bit(qh: &[u8], qs: &[u8]) -> [i32; QK] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut w = [0i32; QK];
    for j in 0..QK / 2 {
        w[j] = ((qs[j] & 0x0F) as u32 | ((high >> j) & 1) << 4) as i32;
        w[j + QK / 2] = ((qs[j] >> 4) as u32 | ((high >> (j + 16)) & 1) << 4) as i32;
    }
    w
}

/// Q5_0 blocks as Q8_0 blocks of the same values: the same f16 scale, and `q - 16` as i8.
pub fn q5_0_as_q8_0(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / Q5_0_BYTES * crate::quant::Q8_0_BYTES);
    for b in src.chunks_exact(Q5_0_BYTES) {
        out.extend_from_slice(&b[0..2]);
        out.extend(unpack_5bit(&b[2..6], &b[6..22]).map(|q| (q - 16) as i8 as u8));
    }
    out
}

/// Dequantizes Q5_0/Q5_1 blocks: src (K/32 blocks) -> dst (K).
pub(crate) fn dequantize_5bit(format: Format, src: &[u8], dst: &mut [f32]) {
    for (out, b) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(format.block_bytes())) {
        let d = read_f16(b, 0);
        if format == Format::Q5_0 {
            for (o, q) in out.iter_mut().zip(unpack_5bit(&b[2..6], &b[6..22])) {
                *o = (q - 16) as f32 * d;
            }
        } else {
            let m = read_f16(b, 2);
            for (o, q) in out.iter_mut().zip(unpack_5bit(&b[4..8], &b[8..24])) {
                *o = q as f32 * d + m;
            }
        }
    }
}

/// w row (K) of a K-quant `format`, x (K/256) -> the dot product (see the module doc for the order).
pub fn dot_k_q8k(format: Format, w: &[u8], x: &[BlockQ8K]) -> f32 {
    let has_min = matches!(format, Format::Q2_K | Format::Q4_K | Format::Q5_K);
    let (mut acc, mut mins) = (0.0f32, 0.0f32);
    for (b, a) in w.chunks_exact(format.block_bytes()).zip(x) {
        let u = unpack_k(format, b);
        let mut isum = 0i32;
        let mut msum = 0i32;
        for i in 0..16 {
            let sub: i32 = u.q[16 * i..16 * i + 16].iter().zip(&a.qs[16 * i..16 * i + 16]).map(|(&q, &v)| q as i32 * v as i32).sum();
            isum += u.scale[i] as i32 * sub;
            msum += u.min[i] as i32 * a.bsums[i] as i32;
        }
        acc = (u.d * a.d).mul_add(isum as f32, acc);
        if has_min {
            mins = (u.dmin * a.d).mul_add(msum as f32, mins);
        }
    }
    if has_min {
        acc - mins
    } else {
        acc
    }
}

/// Quantizes f32 weights to a 5-bit or K-quant format: x (K) -> dst (row bytes). Q4_K and Q6_K
/// by the peers' reference quantizers (an error-minimizing search per sub-block, see
/// [`quantize_block_q4_k`]); Q5_0 and Q5_1 by theirs too (round to nearest on the block's
/// extremes); Q2_K, Q3_K and Q5_K by a simple rule of the same kind (round to nearest on
/// per-sub-block maxima and minima), not the peers' search.
pub(crate) fn quantize_simple(format: Format, x: &[f32], dst: &mut [u8]) {
    let put_f16 = |dst: &mut [u8], at: usize, v: f32| dst[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
    let lo_hi = |xs: &[f32]| xs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let inv = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
    match format {
        Format::Q5_0 | Format::Q5_1 => {
            for (b, xs) in dst.chunks_exact_mut(format.block_bytes()).zip(x.chunks_exact(QK)) {
                let (values_at, q): (usize, [u32; QK]) = if format == Format::Q5_0 {
                    // The value of largest magnitude maps to -16: the range [-16, 15] is used.
                    let max = xs.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -16.0;
                    put_f16(b, 0, d);
                    let id = inv(d);
                    (2, std::array::from_fn(|j| ((xs[j] * id + 16.5) as i32).clamp(0, 31) as u32))
                } else {
                    let (min, max) = lo_hi(xs);
                    let d = (max - min) / 31.0;
                    put_f16(b, 0, d);
                    put_f16(b, 2, min);
                    let id = inv(d);
                    (4, std::array::from_fn(|j| (((xs[j] - min) * id + 0.5) as i32).clamp(0, 31) as u32))
                };
                let mut high = 0u32;
                for j in 0..QK / 2 {
                    b[values_at + 4 + j] = ((q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4)) as u8;
                    high |= ((q[j] >> 4) << j) | ((q[j + QK / 2] >> 4) << (j + 16));
                }
                b[values_at..values_at + 4].copy_from_slice(&high.to_le_bytes());
            }
        }
        Format::Q4_K => {
            for (b, xs) in dst.chunks_exact_mut(Q4_K_BYTES).zip(x.chunks_exact(QK_K)) {
                quantize_block_q4_k(xs, b);
            }
        }
        Format::Q6_K => {
            for (b, xs) in dst.chunks_exact_mut(Q6_K_BYTES).zip(x.chunks_exact(QK_K)) {
                quantize_block_q6_k(xs, b);
            }
        }
        Format::Q5_K => {
            let top = 31.0;
            for (b, xs) in dst.chunks_exact_mut(format.block_bytes()).zip(x.chunks_exact(QK_K)) {
                // Per sub-block of 32: w = scale * q - min, min = -(smallest value, at most 0).
                let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
                for (j, sub) in xs.chunks_exact(32).enumerate() {
                    let (lo, hi) = lo_hi(sub);
                    mins[j] = -lo.min(0.0);
                    scales[j] = (hi + mins[j]) / top;
                }
                let d = round_to_f16(scales.iter().fold(0.0f32, |m, &v| m.max(v)) / 63.0);
                let dmin = round_to_f16(mins.iter().fold(0.0f32, |m, &v| m.max(v)) / 63.0);
                let sc: [u8; 8] = std::array::from_fn(|j| ((scales[j] * inv(d)).round() as i32).clamp(0, 63) as u8);
                let m: [u8; 8] = std::array::from_fn(|j| ((mins[j] * inv(dmin)).round() as i32).clamp(0, 63) as u8);
                put_f16(b, 0, d);
                put_f16(b, 2, dmin);
                b[4..16].copy_from_slice(&pack_scale_min_k4(&sc, &m));
                let q: [u8; QK_K] = std::array::from_fn(|e| {
                    let (s, mn) = (d * sc[e / 32] as f32, dmin * m[e / 32] as f32);
                    (((xs[e] + mn) * inv(s)).round() as i32).clamp(0, top as i32) as u8
                });
                let qs_at = 48;
                for c in 0..4 {
                    for l in 0..32 {
                        let (lo, hi) = (q[64 * c + l], q[64 * c + 32 + l]);
                        b[qs_at + 32 * c + l] = (lo & 0x0F) | ((hi & 0x0F) << 4);
                        if c == 0 {
                            b[16 + l] = 0;
                        }
                        b[16 + l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
                    }
                }
            }
        }
        Format::Q3_K => {
            // Signed values per 16 in [-4, 3] with 6-bit scales.
            let (qmax, smax) = (4.0, 31.0);
            for (b, xs) in dst.chunks_exact_mut(format.block_bytes()).zip(x.chunks_exact(QK_K)) {
                let scales: [f32; 16] = std::array::from_fn(|i| {
                    let max = xs[16 * i..16 * i + 16].iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    max / -qmax
                });
                let d = round_to_f16(scales.iter().fold(0.0f32, |m, &v| m.max(v.abs())) / smax);
                let sc: [i32; 16] = std::array::from_fn(|i| ((scales[i] * inv(d)).round() as i32).clamp(-(smax as i32) - 1, smax as i32));
                let q: [i32; QK_K] =
                    std::array::from_fn(|e| ((xs[e] * inv(d * sc[e / 16] as f32)).round() as i32).clamp(-(qmax as i32), qmax as i32 - 1));
                b.fill(0);
                for h in 0..2 {
                    for g in 0..4 {
                        for l in 0..32 {
                            let v = q[128 * h + 32 * g + l] + 4; // 0..8: bit 2 is the high bit
                            b[32 + 32 * h + l] |= ((v & 3) as u8) << (2 * g);
                            if v & 4 != 0 {
                                b[l] |= 1 << (4 * h + g);
                            }
                        }
                    }
                }
                for (j, &s) in sc.iter().enumerate() {
                    let s = (s + 32) as u8;
                    if j < 8 {
                        b[96 + j] |= s & 0x0F;
                    } else {
                        b[96 + j - 8] |= (s & 0x0F) << 4;
                    }
                    b[96 + 8 + j % 4] |= (s >> 4) << (2 * (j / 4));
                }
                put_f16(b, 108, d);
            }
        }
        Format::Q2_K => {
            for (b, xs) in dst.chunks_exact_mut(Q2_K_BYTES).zip(x.chunks_exact(QK_K)) {
                let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
                for (i, sub) in xs.chunks_exact(16).enumerate() {
                    let (lo, hi) = lo_hi(sub);
                    mins[i] = -lo.min(0.0);
                    scales[i] = (hi + mins[i]) / 3.0;
                }
                let d = round_to_f16(scales.iter().fold(0.0f32, |m, &v| m.max(v)) / 15.0);
                let dmin = round_to_f16(mins.iter().fold(0.0f32, |m, &v| m.max(v)) / 15.0);
                let sc: [u8; 16] = std::array::from_fn(|i| ((scales[i] * inv(d)).round() as i32).clamp(0, 15) as u8);
                let m: [u8; 16] = std::array::from_fn(|i| ((mins[i] * inv(dmin)).round() as i32).clamp(0, 15) as u8);
                b.fill(0);
                for i in 0..16 {
                    b[i] = sc[i] | (m[i] << 4);
                }
                for h in 0..2 {
                    for g in 0..4 {
                        for l in 0..32 {
                            let e = 128 * h + 32 * g + l;
                            let (s, mn) = (d * sc[e / 16] as f32, dmin * m[e / 16] as f32);
                            let v = (((xs[e] + mn) * inv(s)).round() as i32).clamp(0, 3) as u8;
                            b[16 + 32 * h + l] |= v << (2 * g);
                        }
                    }
                }
                put_f16(b, 80, d);
                put_f16(b, 82, dmin);
            }
        }
        Format::Q8_K => {
            for (b, xs) in dst.chunks_exact_mut(Q8_K_BYTES).zip(x.chunks_exact(QK_K)) {
                let mut block = [BlockQ8K::default()];
                quantize_row_q8k(xs, &mut block);
                b[0..4].copy_from_slice(&block[0].d.to_le_bytes());
                for (o, &q) in b[4..4 + QK_K].iter_mut().zip(&block[0].qs) {
                    *o = q as u8;
                }
                for (o, s) in b[4 + QK_K..].chunks_exact_mut(2).zip(block[0].bsums) {
                    o.copy_from_slice(&s.to_le_bytes());
                }
            }
        }
        other => panic!("quantize_simple: {other:?} is not a 5-bit or K-quant format"),
    }
}

/// Round to nearest, ties to even (the peers' `nearest_int`, for the magnitudes that occur here).
#[inline(always)]
fn nearest(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// The peers' weighted search for an affine quantization `x ~= scale * L - min` of `x` with
/// `L` in `0..=nmax`: start from the extremes, then try `nstep + 1` scales around `nmax /
/// (max - min)` (from `rmin` by `rdelta`), each solved by weighted least squares for scale and
/// minimum, keeping the one of least weighted squared error. Returns (scale, minimum as a
/// positive offset); `L` holds the chosen values.
#[allow(clippy::too_many_arguments)]
fn search_affine(x: &[f32], weights: &[f32], nmax: i32, rmin: f32, rdelta: f32, nstep: usize, l: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let (mut sum_w, mut sum_x) = (weights[0], weights[0] * x[0]);
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        l[i] = nearest(iscale * (x[i] - min)).clamp(0, nmax) as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    let mut aux = [0u8; 32];
    for step in 0..=nstep {
        iscale = (rmin + rdelta * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                error += weights[i] * diff * diff;
            }
            if error < best_error {
                l[..n].copy_from_slice(&aux[..n]);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The peers' search for a signed quantization `x ~= scale * (L - nmax)` with `L - nmax` in
/// `-nmax..nmax`, weighted by x^2: the value of largest magnitude first, then 18 nearby scales.
/// Returns the scale; `l` holds `L`.
fn search_signed(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let weighted = |iscale: f32| -> (f32, f32) {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = nearest(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, l: &mut [i8]| {
        for (o, &v) in l.iter_mut().zip(x) {
            *o = (nmax + nearest(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    fill(iscale, l);
    let (sumlx, suml2) = weighted(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in -9..=9 {
        if step == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * step as f32) / max;
        let (sumlx, suml2) = weighted(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// One Q4_K super-block by the peers' reference quantizer: per sub-block of 32, the weighted
/// affine search (weights `sqrt(mean x^2) + |x|`); scales and minimums to 6 bits against the
/// largest of each; then every value re-rounded against its sub-block's stored scale.
fn quantize_block_q4_k(x: &[f32], b: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let sub = &x[32 * j..32 * j + 32];
        let av = (sub.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av + sub[i].abs());
        (scales[j], mins[j]) = search_affine(sub, &weights, 15, -1.0, 0.1, 20, &mut l[32 * j..32 * j + 32]);
    }
    let max_scale = scales.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc: [u8; 8] = std::array::from_fn(|j| (nearest(inv_scale * scales[j]) as u8).min(63));
    let m: [u8; 8] = std::array::from_fn(|j| (nearest(inv_min * mins[j]) as u8).min(63));
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    b[0..2].copy_from_slice(&d.to_bits().to_le_bytes());
    b[2..4].copy_from_slice(&dmin.to_bits().to_le_bytes());
    b[4..16].copy_from_slice(&pack_scale_min_k4(&sc, &m));
    for j in 0..8 {
        let (s, mn) = scale_min_k4(j, &b[4..16]);
        let dj = d.to_f32() * s as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * mn as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest((x[32 * j + i] + dm) / dj).clamp(0, 15) as u8;
        }
    }
    for c in 0..4 {
        for i in 0..32 {
            b[16 + 32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

/// One Q6_K super-block by the peers' reference quantizer: the signed search per 16 values, the
/// 16 scales to i8 against the largest in magnitude, then every value re-rounded against its
/// stored scale.
fn quantize_block_q6_k(x: &[f32], b: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0.0f32, 0.0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = search_signed(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = *s;
        }
    }
    b.fill(0);
    if max_abs < 1e-15 {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    b[208..210].copy_from_slice(&d.to_bits().to_le_bytes());
    let sc: [i8; 16] = std::array::from_fn(|ib| nearest(iscale * scales[ib]).min(127) as i8);
    for (o, &s) in b[192..208].iter_mut().zip(&sc) {
        *o = s as u8;
    }
    for j in 0..16 {
        let dj = d.to_f32() * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest(x[16 * j + i] / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    for h in 0..2 {
        for i in 0..32 {
            let v = |k: usize| l[128 * h + 32 * k + i] as u8;
            b[64 * h + i] = (v(0) & 0x0F) | ((v(2) & 0x0F) << 4);
            b[64 * h + i + 32] = (v(1) & 0x0F) | ((v(3) & 0x0F) << 4);
            b[128 + 32 * h + i] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
        }
    }
}
