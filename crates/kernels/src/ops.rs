//! Element-wise and row-wise operations of a transformer block: norms, RoPE, activations, argmax.
//!
//! Softmax is not here. The one softmax of a row of logits is `generate::sampler::softmax_inplace`
//! (stable: the maximum is subtracted first; an all-masked row, every logit -inf, comes out
//! uniform); attention's is fused into its kernels (`attention`), whose rows always hold the
//! token's own position, so they are never all masked.
//!
//! Those with SIMD kernels run at [`Level::current`] (the machine's best, capped by
//! `FERROLM_KERNELS`); their `_at` variants take the level, for tests that compare levels.

use crate::matmul::Level;

/// x (D) -> out (D): `x / sqrt(mean(x^2) + eps) * weight`.
///
/// The sum of squares is accumulated in f64: a 576-wide row of large activations loses bits in
/// f32, and the peers accumulate in double here too.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert!(x.len() == weight.len() && x.len() == out.len());
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = (v * scale) * w;
    }
}

/// x (T, D) -> xn (T, D) = rms_norm(x) * weight, and xq (T, D/32) its 8-bit blocks: the input
/// of every matrix product of a block, in one pass (tokens split over the pool when many).
pub fn rms_norm_quantize(pool: &crate::ThreadPool, x: &[f32], weight: &[f32], eps: f32, xn: &mut [f32], xq: &mut [crate::BlockQ8], t: usize) {
    let d = weight.len();
    let kb = d / crate::QK;
    let rows = |x: &[f32], xn: &mut [f32], xq: &mut [crate::BlockQ8]| {
        for ((xr, nr), qr) in x.chunks_exact(d).zip(xn.chunks_exact_mut(d)).zip(xq.chunks_exact_mut(kb)) {
            rms_norm(xr, weight, eps, nr);
            crate::quant::quantize_row_q8(nr, qr);
        }
    };
    if t < crate::quant::PARALLEL_MIN_TOKENS || pool.n_threads() == 1 {
        return rows(x, xn, xq);
    }
    let (xn_out, xq_out) = (crate::pool::SharedMut::new(xn), crate::pool::SharedMut::new(xq));
    pool.run(&|i, nt| {
        let r = crate::pool::split_range(t, i, nt);
        // SAFETY: thread i owns the rows of its tokens in both outputs.
        let (nr, qr) = unsafe { (xn_out.slice(r.start * d, r.len() * d), xq_out.slice(r.start * kb, r.len() * kb)) };
        rows(&x[r.start * d..r.end * d], nr, qr);
    });
}

/// The rotation angles of RoPE for one position: cos_sin (Dh/2 pairs) of `pos * base^(-2i/Dh)`.
///
/// The angle is advanced by repeated multiplication with `base^(-2/Dh)`, which is how the peers
/// compute it; recomputing `powf` per pair gives slightly different last bits.
pub fn rope_angles(pos: usize, base: f32, head_dim: usize, cos_sin: &mut [(f32, f32)]) {
    debug_assert_eq!(cos_sin.len(), head_dim / 2);
    let theta_scale = base.powf(-2.0 / head_dim as f32);
    let mut theta = pos as f32;
    for cs in cos_sin.iter_mut() {
        *cs = (theta.cos(), theta.sin());
        theta *= theta_scale;
    }
}

/// x (heads, Dh) in place: rotate each adjacent pair `(x[2i], x[2i+1])` of every head by angle i
/// ("normal" RoPE, the layout of GGUF llama Q/K weights). The products are fused as the peers'
/// compiled C fuses them (`a*c - b*s` as `fma(a, c, -(b*s))`).
pub fn rope_inplace(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    rope_inplace_at(Level::current(), x, head_dim, cos_sin)
}

/// [`rope_inplace`] at `level` (at most the machine's best); every level gives the same bits.
pub fn rope_inplace_at(level: Level, x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    debug_assert!(level <= Level::best_available());
    #[cfg(target_arch = "x86_64")]
    {
        if level == Level::Avx512Vnni && head_dim.is_multiple_of(16) && cos_sin.len() * 2 >= head_dim {
            // SAFETY: the level implies AVX-512F; heads are whole registers and every pair has its angle.
            return unsafe { rope_avx512(x, head_dim, cos_sin) };
        }
        if level >= Level::Avx2 && head_dim.is_multiple_of(8) && cos_sin.len() * 2 >= head_dim {
            // SAFETY: the level implies AVX2 and FMA; heads are whole registers and every pair has its angle.
            return unsafe { rope_avx2(x, head_dim, cos_sin) };
        }
        if level >= Level::Avx2 {
            // SAFETY: the level implies FMA.
            return unsafe { rope_fma(x, head_dim, cos_sin) };
        }
    }
    rope_generic(x, head_dim, cos_sin)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rope_fma(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    rope_generic(x, head_dim, cos_sin)
}

/// [`rope_avx512`] on 4 pairs at a time. Dh % 8 == 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rope_avx2(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    use std::arch::x86_64::*;
    debug_assert!(x.len().is_multiple_of(head_dim) && cos_sin.len() * 2 >= head_dim);
    const ODD: i32 = 0b1010_1010; // the b lanes
    let sign = _mm256_set1_ps(-0.0);
    let angles = cos_sin.as_ptr() as *const f32;
    for head in x.chunks_exact_mut(head_dim) {
        for i in (0..head_dim).step_by(8) {
            let p = head.as_mut_ptr().add(i);
            let (v, t) = (_mm256_loadu_ps(p), _mm256_loadu_ps(angles.add(i)));
            let (a, b) = (_mm256_moveldup_ps(v), _mm256_movehdup_ps(v)); // each pair's a, b twice
            let (c, s) = (_mm256_moveldup_ps(t), _mm256_movehdup_ps(t));
            let minus_bs = _mm256_xor_ps(_mm256_mul_ps(b, s), sign);
            let addend = _mm256_blend_ps::<ODD>(minus_bs, _mm256_mul_ps(b, c));
            _mm256_storeu_ps(p, _mm256_fmadd_ps(a, _mm256_blend_ps::<ODD>(c, s), addend));
        }
    }
}

// The AVX-512 kernel reads the angle pairs as interleaved floats [c0, s0, c1, s1, ...].
#[cfg(target_arch = "x86_64")]
const _: () = assert!(std::mem::size_of::<(f32, f32)>() == 8 && std::mem::offset_of!((f32, f32), 0) == 0 && std::mem::offset_of!((f32, f32), 1) == 4);

/// [`rope_generic`] 8 pairs at a time with the same operations per element: for the pair (a, b)
/// and the angle (c, s), a' = fma(a, c, -(b * s)) and b' = fma(a, s, b * c). Dh % 16 == 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn rope_avx512(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    use std::arch::x86_64::*;
    debug_assert!(x.len().is_multiple_of(head_dim) && cos_sin.len() * 2 >= head_dim);
    const ODD: __mmask16 = 0xAAAA; // the b lanes
    let sign = _mm512_set1_epi32(i32::MIN);
    let angles = cos_sin.as_ptr() as *const f32;
    for head in x.chunks_exact_mut(head_dim) {
        for i in (0..head_dim).step_by(16) {
            let p = head.as_mut_ptr().add(i);
            let (v, t) = (_mm512_loadu_ps(p), _mm512_loadu_ps(angles.add(i)));
            let (a, b) = (_mm512_moveldup_ps(v), _mm512_movehdup_ps(v)); // each pair's a, b twice
            let (c, s) = (_mm512_moveldup_ps(t), _mm512_movehdup_ps(t));
            let minus_bs = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_mul_ps(b, s)), sign));
            let addend = _mm512_mask_blend_ps(ODD, minus_bs, _mm512_mul_ps(b, c));
            _mm512_storeu_ps(p, _mm512_fmadd_ps(a, _mm512_mask_blend_ps(ODD, c, s), addend));
        }
    }
}

/// src -> dst rounded to f16 (to nearest, ties to even), 16 at a time on AVX-512 and 8 on AVX2.
pub fn f32_to_f16(src: &[f32], dst: &mut [half::f16]) {
    f32_to_f16_at(Level::current(), src, dst)
}

/// [`f32_to_f16`] at `level` (at most the machine's best); every level gives the same bits.
pub fn f32_to_f16_at(level: Level, src: &[f32], dst: &mut [half::f16]) {
    debug_assert!(src.len() == dst.len() && level <= Level::best_available());
    #[cfg(target_arch = "x86_64")]
    {
        if level == Level::Avx512Vnni {
            // SAFETY: the level implies AVX-512F.
            return unsafe { f32_to_f16_avx512(src, dst) };
        }
        if level >= Level::Avx2 {
            // SAFETY: the level implies F16C.
            return unsafe { f32_to_f16_f16c(src, dst) };
        }
    }
    let _ = level;
    dst.iter_mut().zip(src).for_each(|(o, &v)| *o = half::f16::from_f32(v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f32_to_f16_f16c(src: &[f32], dst: &mut [half::f16]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
        _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        i += 8;
    }
    dst[i..n].iter_mut().zip(&src[i..n]).for_each(|(o, &v)| *o = half::f16::from_f32(v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f32_to_f16_avx512(src: &[f32], dst: &mut [half::f16]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 16 <= n {
        let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_loadu_ps(src.as_ptr().add(i)));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
        i += 16;
    }
    dst[i..n].iter_mut().zip(&src[i..n]).for_each(|(o, &v)| *o = half::f16::from_f32(v));
}

/// x (heads, Dh) -> out (heads, Dh) f16: [`rope_inplace`] and the rounding to f16 in one pass
/// (the keys on their way into the KV cache).
pub fn rope_to_f16(x: &[f32], head_dim: usize, cos_sin: &[(f32, f32)], out: &mut [half::f16]) {
    debug_assert_eq!(x.len(), out.len());
    // One head at a time through a buffer on the stack: the rotation is `rope_inplace`'s, so both
    // give the same bits.
    const CHUNK: usize = 256;
    let store = |dst: &mut [half::f16], src: &[f32]| f32_to_f16(src, dst);
    if head_dim <= CHUNK {
        let step = head_dim * (CHUNK / head_dim); // whole heads
        let mut buf = [0f32; CHUNK];
        for (src, dst) in x.chunks(step).zip(out.chunks_mut(step)) {
            let b = &mut buf[..src.len()];
            b.copy_from_slice(src);
            rope_inplace(b, head_dim, cos_sin);
            store(dst, b);
        }
    } else {
        for (i, (src, dst)) in x.chunks_exact(2).zip(out.chunks_exact_mut(2)).enumerate() {
            let mut two = [src[0], src[1]];
            rope_inplace(&mut two, 2, &cos_sin[i % (head_dim / 2)..][..1]);
            store(dst, &two);
        }
    }
}

/// x (heads, Dh) in place: rotate each pair `(x[i], x[i + Dh/2])` of every head by angle i
/// (the NeoX layout of Gemma's and Hugging Face's Q/K weights), with the fused operations of
/// [`rope_inplace`].
pub fn rope_neox_inplace(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    debug_assert!(x.len().is_multiple_of(head_dim) && cos_sin.len() * 2 >= head_dim);
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for ((a, b), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(cos_sin) {
            let (x0, x1) = (*a, *b);
            *a = x0.mul_add(c, -(x1 * s));
            *b = x0.mul_add(s, x1 * c);
        }
    }
}

/// [`rope_to_f16`] in the NeoX layout ([`rope_neox_inplace`]), one head at a time.
pub fn rope_neox_to_f16(x: &[f32], head_dim: usize, cos_sin: &[(f32, f32)], out: &mut [half::f16]) {
    debug_assert_eq!(x.len(), out.len());
    const STACK: usize = 512;
    let mut stack = [0f32; STACK];
    let mut heap = Vec::new();
    let buf = if head_dim <= STACK {
        &mut stack[..head_dim]
    } else {
        heap.resize(head_dim, 0.0);
        &mut heap[..]
    };
    for (src, dst) in x.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)) {
        buf.copy_from_slice(src);
        rope_neox_inplace(buf, head_dim, cos_sin);
        f32_to_f16(buf, dst);
    }
}

#[inline(always)]
fn rope_generic(x: &mut [f32], head_dim: usize, cos_sin: &[(f32, f32)]) {
    debug_assert_eq!(x.len() % head_dim, 0);
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cos_sin) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a.mul_add(c, -(b * s));
            pair[1] = a.mul_add(s, b * c);
        }
    }
}

/// e^x by range reduction to `2^n * e^b` with |b| <= ln2/2 and a degree-5 minimax polynomial
/// for e^b, about 1.5 ulp from the exact value.
///
/// This is the vector exponential of the ARM optimized-routines family that the peers evaluate
/// in their softmax and SiLU; computing the same polynomial with the same fused operations keeps
/// our attention probabilities and activations bit-identical to theirs (libm's `expf` differs in
/// the last bit often enough to flip greedy choices at near-ties). Below -103.97 it flushes to
/// zero, above 88.38 to infinity.
#[inline(always)]
pub fn exp_poly(x: f32) -> f32 {
    let (n, j) = exp_poly_parts(x);
    if n.abs() > 192.0 || n.is_nan() {
        return if n > 0.0 {
            f32::INFINITY
        } else if n <= 0.0 {
            0.0
        } else {
            f32::NAN
        };
    }
    // j * 2^n with one rounding: exact in f64 (|n| <= 192 keeps 2^n normal there), then to f32.
    let two_n = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (j as f64 * two_n) as f32
}

/// The range reduction and polynomial of [`exp_poly`]: `e^x = j * 2^n`, returned as (n, j) with
/// n an integer and j in [0.7, 1.42], for callers that scale by 2^n themselves (branch-free
/// kernels that keep x in range). Meaningless (but harmless) for x outside [-104, 89].
#[inline(always)]
pub(crate) fn exp_poly_parts(x: f32) -> (f32, f32) {
    const SHIFT: f32 = 12582912.0; // 1.5 * 2^23: adding it rounds to an integer
    let log2e = f32::from_bits(0x3fb8_aa3b);
    let ln2_hi = f32::from_bits(0x3f31_7200);
    let ln2_lo = f32::from_bits(0x35bf_be8e);
    let c = [
        f32::from_bits(0x3f7f_fff6), // ~1
        f32::from_bits(0x3eff_fedb), // ~1/2
        f32::from_bits(0x3e2a_af33), // ~1/6
        f32::from_bits(0x3d2b_9f17), // ~1/24
        f32::from_bits(0x3c07_2010), // ~1/120
    ];
    let z = x.mul_add(log2e, SHIFT);
    let n = z - SHIFT; // round(x / ln2)
    let b = (-n).mul_add(ln2_lo, (-n).mul_add(ln2_hi, x)); // x - n ln2, in two parts
    let u = b * b;
    let j = c[4].mul_add(b, c[3]).mul_add(u, c[2].mul_add(b, c[1])).mul_add(u, c[0].mul_add(b, 1.0));
    (n, j)
}

/// [`exp_poly_parts`] with n as an integer, read from the bits of the rounding step rather than
/// converted from a float: z = n + 1.5 * 2^23 holds n + 2^22 in its low mantissa bits (exactly
/// while |n| < 2^22). No saturating conversion, so the scaling by 2^n vectorizes on every level.
/// For NaN x, n is meaningless and j is NaN.
#[inline(always)]
pub(crate) fn exp_poly_parts_int(x: f32) -> (i32, f32) {
    const SHIFT: f32 = 12582912.0;
    let (n, j) = exp_poly_parts(x);
    let z = n + SHIFT; // exact: the z of exp_poly_parts
    ((z.to_bits() as i32) - (SHIFT.to_bits() as i32), j)
}

/// SiLU, `x * sigmoid(x)`, as `x / (1 + e^-x)` with [`exp_poly`].
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_poly(-x))
}

/// gate (F), up (F) -> gate (F) in place: `silu(gate) * up` (SwiGLU).
///
/// On AVX2, 8 values at a time with [`exp_poly`]'s operations on 8 lanes (the attention's `exp8`):
/// the same bits as the scalar loop (tested), which does not vectorize (its exponent scaling
/// branches), and took 6% of a 16-client serving run.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if Level::current() >= Level::Avx2 {
            // SAFETY: the level implies AVX2 and FMA.
            return unsafe { swiglu_fma(gate, up) };
        }
    }
    swiglu_generic(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_fma(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(gate.len(), up.len());
    let main = gate.len() / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for i in (0..main).step_by(8) {
        let (gp, up) = (gate.as_mut_ptr().add(i), up.as_ptr().add(i));
        let x = _mm256_loadu_ps(gp);
        // silu(x) * u = x / (1 + e^-x) * u, each operation as in `silu` (-x exact).
        let e = crate::attention::avx2::exp8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0)));
        let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gp, _mm256_mul_ps(s, _mm256_loadu_ps(up)));
    }
    swiglu_generic(&mut gate[main..], &up[main..])
}

#[inline(always)]
fn swiglu_generic(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// Sums 16 lanes as a tree: lanes l and l+8, then l and l+4, then (0+2) + (1+3): the order of
/// `_mm512_reduce_add_ps` (as GCC's headers write it), in which llama.cpp's AVX-512 build reduces
/// its f32 and f16 dot products (attention's orders, and the LoRA products of `model::lora`).
#[inline(always)]
pub fn reduce16(v: &[f32]) -> f32 {
    let mut t8 = [0f32; 8];
    for l in 0..8 {
        t8[l] = v[l + 8] + v[l];
    }
    let t4 = [t8[4] + t8[0], t8[5] + t8[1], t8[6] + t8[2], t8[7] + t8[3]];
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// x (n) += y (n).
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The index of the largest value; ties go to the lowest index, NaN is ignored (the first non-NaN
/// value wins even when it is -inf). Returns 0 when every value is NaN or `x` is empty.
///
/// Two passes that vectorize: the maximum over 16 lanes (a NaN never replaces a lane), then the
/// first position holding it. Each step of the scalar loop would depend on the one before.
pub fn argmax(x: &[f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if Level::current() >= Level::Avx2 {
            // SAFETY: the level implies AVX2.
            return unsafe { argmax_avx2(x) };
        }
    }
    argmax_generic(x)
}

/// [`argmax_generic`] compiled for AVX2: the lane maxima and the search run 8 floats per
/// instruction (the comparisons are the same, so the result is).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn argmax_avx2(x: &[f32]) -> usize {
    argmax_generic(x)
}

#[inline(always)]
fn argmax_generic(x: &[f32]) -> usize {
    const W: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; W];
    let chunks = x.chunks_exact(W);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            // `v > m` is false for NaN: the lane keeps its value.
            *m = if v > *m { v } else { *m };
        }
    }
    for &v in tail {
        lanes[0] = if v > lanes[0] { v } else { lanes[0] };
    }
    let max = lanes.iter().copied().fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m });
    // The first chunk holding the maximum, then its place there. When every value is -inf or
    // NaN the maximum is -inf, found at the first non-NaN value; all NaN finds nothing: 0.
    x.chunks(W)
        .enumerate()
        .find(|(_, chunk)| chunk.iter().fold(false, |hit, &v| hit | (v == max)))
        .and_then(|(c, chunk)| chunk.iter().position(|&v| v == max).map(|i| c * W + i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_constant_row_is_the_weight() {
        let x = [3.0f32; 8];
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut out = [0f32; 8];
        rms_norm(&x, &w, 0.0, &mut out);
        for (o, w) in out.iter().zip(&w) {
            assert!((o - w).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_rotates_adjacent_pairs_and_keeps_norms() {
        let head_dim = 8;
        let mut cs = vec![(0.0, 0.0); head_dim / 2];
        rope_angles(3, 10000.0, head_dim, &mut cs);
        let x0: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 - 1.0).collect();
        let mut x = x0.clone();
        rope_inplace(&mut x, head_dim, &cs);
        for (a, b) in x.chunks_exact(2).zip(x0.chunks_exact(2)) {
            let (na, nb) = (a[0].hypot(a[1]), b[0].hypot(b[1]));
            assert!((na - nb).abs() < 1e-5);
        }
        // The first pair turns by exactly `pos` radians.
        let (c, s) = (3.0f32.cos(), 3.0f32.sin());
        assert!((x[0] - (x0[0] * c - x0[1] * s)).abs() < 1e-6);
        assert!((x[1] - (x0[0] * s + x0[1] * c)).abs() < 1e-6);
    }

    #[test]
    fn rope_to_f16_equals_rope_then_rounding() {
        for head_dim in [8, 64, 96, 512] {
            let heads = 3;
            let mut cs = vec![(0.0, 0.0); head_dim / 2];
            rope_angles(17, 10000.0, head_dim, &mut cs);
            let x: Vec<f32> = (0..heads * head_dim).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut want = x.clone();
            rope_inplace(&mut want, head_dim, &cs);
            let mut got = vec![half::f16::ZERO; x.len()];
            rope_to_f16(&x, head_dim, &cs, &mut got);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(*g, half::f16::from_f32(*w), "head_dim {head_dim}");
            }
        }
    }

    #[test]
    fn rope_kernels_equal_the_generic_rotation_bit_for_bit() {
        // Positions far apart give angles of every size; values span signs, zeros, tiny and
        // large magnitudes.
        for head_dim in [8, 16, 24, 64, 128] {
            for pos in [0, 1, 17, 1000, 100_000] {
                let mut cs = vec![(0.0, 0.0); head_dim / 2];
                rope_angles(pos, 10000.0, head_dim, &mut cs);
                let special = [0.0f32, -0.0, 1e-40, -3e38, 65504.0, f32::MIN_POSITIVE];
                let x: Vec<f32> = (0..4 * head_dim)
                    .map(|i| if i % 7 == 0 { special[i / 7 % special.len()] } else { ((i as f32) * 0.731).sin() * 10f32.powi(i as i32 % 9 - 4) })
                    .collect();
                let mut want = x.clone();
                rope_generic(&mut want, head_dim, &cs);
                for level in Level::all_available() {
                    let mut got = x.clone();
                    rope_inplace_at(level, &mut got, head_dim, &cs);
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(g.to_bits(), w.to_bits(), "head_dim {head_dim} pos {pos} at {level:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn rope_with_fewer_angles_than_pairs_rotates_only_those() {
        // A short angle list (a caller's mistake) must not make the vector kernel read past it:
        // the pairs without an angle stay as they are, as in the generic kernel.
        let mut cs = vec![(0.0, 0.0); 3];
        rope_angles(5, 10000.0, 6, &mut cs);
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 7.5).collect();
        let mut want = x.clone();
        rope_generic(&mut want, 16, &cs);
        for level in Level::all_available() {
            let mut got = x.clone();
            rope_inplace_at(level, &mut got, 16, &cs);
            assert_eq!(got, want);
            assert_eq!(got[6..16], x[6..16]);
        }
    }

    #[test]
    fn f32_to_f16_rounds_as_half_does() {
        // Ties, overflow to infinity, subnormals, signed zeros, NaN (a NaN stays a NaN; its
        // payload is not specified) and a tail past the last register.
        let special = [0.0f32, -0.0, 65504.0, 65520.0, -1e9, 1e-8, 5.96e-8, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0, f32::INFINITY, f32::NAN];
        let x: Vec<f32> = (0..53)
            .map(|i| {
                if i < special.len() {
                    special[i]
                } else if i == 52 {
                    f32::NAN
                } else {
                    ((i as f32) * 1.37).sin() * 300.0
                }
            })
            .collect();
        for level in Level::all_available() {
            let mut got = vec![half::f16::ZERO; x.len()];
            f32_to_f16_at(level, &x, &mut got);
            for (g, v) in got.iter().zip(&x) {
                if v.is_nan() {
                    assert!(g.is_nan(), "{level:?}");
                } else {
                    assert_eq!(g.to_bits(), half::f16::from_f32(*v).to_bits(), "{v} at {level:?}");
                }
            }
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let mut cs = vec![(0.0, 0.0); 4];
        rope_angles(0, 10000.0, 8, &mut cs);
        let x0: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut x = x0.clone();
        rope_inplace(&mut x, 8, &cs);
        assert_eq!(x, x0);
    }

    #[test]
    fn exp_poly_is_within_two_ulp_of_exp_and_saturates() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_poly(x), (x as f64).exp());
            assert!(((got as f64 - want) / want).abs() < 2.5e-7, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert_eq!(exp_poly(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_poly(-200.0), 0.0);
        assert_eq!(exp_poly(200.0), f32::INFINITY);
        assert_eq!(exp_poly(0.0), 1.0);
    }

    #[test]
    fn swiglu_gives_the_scalar_bits_at_every_level() {
        // Ordinary values, the ends of exp's range (|x| near 88 and 104, where e^-x is
        // subnormal or overflows), zeros, infinities and NaN, in a length with a tail.
        let mut x: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.061).collect();
        x.extend([0.0, -0.0, 87.3, 88.5, -88.5, -87.4, 103.9, -103.9, 150.0, -150.0, 1e-30, -1e-30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        let up: Vec<f32> = x.iter().enumerate().map(|(i, _)| ((i * 7919) % 201) as f32 * 0.01 - 1.0).collect();
        let mut want = x.clone();
        swiglu_generic(&mut want, &up);
        #[cfg(target_arch = "x86_64")]
        if Level::best_available() >= Level::Avx2 {
            let mut got = x.clone();
            // SAFETY: the machine has AVX2 and FMA.
            unsafe { swiglu_fma(&mut got, &up) };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "x = {}: {a} vs {b}", x[i]);
            }
        }
    }

    #[test]
    fn swiglu_matches_definition() {
        let mut g = [-2.0f32, 0.0, 1.5];
        swiglu_inplace(&mut g, &[2.0, 3.0, -1.0]);
        let want = [-2.0 / (1.0 + 2.0f32.exp()) * 2.0, 0.0, -(1.5 / (1.0 + (-1.5f32).exp()))];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn argmax_takes_first_of_ties_and_ignores_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[f32::NAN; 40]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn argmax_equals_the_sequential_scan() {
        // The sequential definition: strict `>` keeps the first maximum, NaN is skipped, the
        // first non-NaN value counts even when it is -inf.
        fn scan(x: &[f32]) -> usize {
            let (mut best, mut value, mut found) = (0, f32::NEG_INFINITY, false);
            for (i, &v) in x.iter().enumerate() {
                if v > value || (!found && !v.is_nan()) {
                    (best, value, found) = (i, v, true);
                }
            }
            best
        }
        let mut seed = 7u64;
        for len in [1, 15, 16, 17, 33, 100, 1000] {
            for case in 0..50 {
                let x: Vec<f32> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        match (seed >> 60, case % 3) {
                            (0, _) => f32::NAN,
                            (1, _) => f32::NEG_INFINITY,
                            (_, 0) => ((seed >> 40) % 5) as f32, // many ties
                            (_, 1) => f32::NEG_INFINITY,
                            _ => ((seed >> 33) as f32).sin(),
                        }
                    })
                    .collect();
                assert_eq!(argmax(&x), scan(&x), "{x:?}");
                assert_eq!(argmax_generic(&x), scan(&x), "{x:?}");
            }
        }
    }

    #[test]
    fn neox_rope_is_adjacent_rope_on_interleaved_halves() {
        // Rotating (x[i], x[i + Dh/2]) equals rotating adjacent pairs of the interleaved head
        // (x[0], x[Dh/2], x[1], x[Dh/2 + 1], ...), value for value, bit for bit.
        let dh = 16;
        let x: Vec<f32> = (0..2 * dh).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let mut cs = vec![(0f32, 0f32); dh / 2];
        rope_angles(7, 10000.0, dh, &mut cs);
        let mut neox = x.clone();
        rope_neox_inplace(&mut neox, dh, &cs);
        for head in 0..2 {
            let h = &x[head * dh..(head + 1) * dh];
            let mut inter: Vec<f32> = (0..dh).map(|j| if j % 2 == 0 { h[j / 2] } else { h[dh / 2 + j / 2] }).collect();
            rope_generic(&mut inter, dh, &cs);
            for i in 0..dh / 2 {
                assert_eq!(neox[head * dh + i].to_bits(), inter[2 * i].to_bits());
                assert_eq!(neox[head * dh + dh / 2 + i].to_bits(), inter[2 * i + 1].to_bits());
            }
        }
        // The f16 variant rounds the same values.
        let mut out = vec![half::f16::ZERO; 2 * dh];
        rope_neox_to_f16(&x, dh, &cs, &mut out);
        assert!(out.iter().zip(&neox).all(|(o, &v)| *o == half::f16::from_f32(v)));
    }
}
