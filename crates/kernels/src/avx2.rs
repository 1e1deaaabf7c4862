//! AVX2 kernels that compute 8 weight rows per instruction (x86-64 only), in the
//! [`SumOrder::Blocks`](crate::matmul::SumOrder) order (the default) and in llama.cpp's x86
//! order ([`group_dot_lanes`]).
//!
//! Weights are repacked at load time into groups of 8 rows ([`pack`]: the layout of
//! [`crate::groups`] with 32-byte chunks, one register in which lane r, a 32-bit lane, holds
//! four elements of row r). Register l then holds element group l (elements 4l..4l+4) of the 8
//! rows, and `vpmaddubsw` against those four activation bytes broadcast gives each row's two
//! pair sums of the group.
//!
//! The block order needs one integer sum per row and block, so the pair sums are added in
//! integers across the block's 8 element groups (16-bit lanes for 4-bit weights: at most
//! 8 x 2 x 15 x 127 = 30480, no overflow; 32-bit lanes for Q8_0), folded to one 32-bit sum per
//! row with `vpmaddwd`, converted once, and fused-multiply-added with the block scale into one
//! accumulator register per token: per 256 multiply-adds of one token, 8 `vpmaddubsw`, 8 adds
//! and 3 float operations. llama.cpp's x86 order needs a conversion and a fused multiply-add per
//! element group (16 more operations), which is why the block order is the default.
//!
//! The instruction multiplies unsigned by signed bytes. 4-bit values are unsigned; Q4_0's offset
//! of 8 is taken out of the block's sum as `8 * sum(activations)` ([`BlockQ8::sum`]). Q8_0
//! values are signed: the sign moves onto the activation (`|w| * (a * sign w)`).
//!
//! Integer sums are exact in any order and the float operations are the reference's
//! ([`dot_blocks_q8`](crate::matmul::dot_blocks_q8)) in its order, so the results are
//! bit-identical to it (tested in `matmul/tests.rs`).
//!
//! Each kernel also comes in an AVX-VNNI copy (`VNNI = true`, the [`Level::AvxVnni`](crate::Level)
//! level: Intel Alder Lake and later, AMD Zen 5): the 256-bit `vpdpbusd` adds four products
//! into each 32-bit lane in one instruction where AVX2 takes `vpmaddubsw`, `vpmaddwd` and an add
//! ([`dot4`]). Its sums are the same integers (no pair sum here saturates 16 bits), so it gives the
//! same bits.

#![cfg(target_arch = "x86_64")]

use crate::groups::Kind;
use crate::quant::BlockQ8;
use std::arch::x86_64::*;

/// Rows per group of the interleaved layout.
pub const GROUP_ROWS: usize = 8;

/// How far ahead of the kernels' weight reads a prefetch is issued when a row group is read once
/// (decode).
pub const PREFETCH_BYTES: usize = 1024;

/// Repacks a matrix (N, K) of `kind` blocks into groups of 8 rows (see [`crate::groups`]).
pub fn pack(kind: Kind, w: &[u8], rows: usize, kb: usize) -> Vec<u8> {
    crate::groups::pack_groups(kind, GROUP_ROWS, false, w, rows, kb)
}

/// Repeats a block once per listed value of `$i`.
macro_rules! unroll {
    ($i:ident in [$($v:literal),*] $body:block) => {
        $( { let $i: usize = $v; $body } )*
    };
}

/// Asks for the `bytes` at `ahead` past `p` (nothing when `ahead` is 0).
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8, ahead: usize, bytes: usize) {
    if ahead != 0 {
        for line in (0..bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead + line) as *const i8);
        }
    }
}

/// acc + the four products w * y (unsigned times signed bytes) of each 32-bit lane: one
/// `vpdpbusd` with AVX-VNNI, else `vpmaddubsw` (pair sums in 16 bits: at most 2 x 128 x 127 for
/// the values here, never saturated), `vpmaddwd` with ones and an add. The same integers.
#[inline(always)]
unsafe fn dot4<const VNNI: bool>(acc: __m256i, w: __m256i, y: __m256i) -> __m256i {
    if VNNI {
        _mm256_dpbusd_avx_epi32(acc, w, y)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, y), _mm256_set1_epi16(1)))
    }
}

/// Four activation bytes at `qs[at..at + 4]` in every 32-bit lane.
#[inline(always)]
unsafe fn broadcast4(qs: &[i8; 32], at: usize) -> __m256i {
    _mm256_set1_epi32(std::ptr::read_unaligned(qs.as_ptr().add(at) as *const i32))
}

/// A row group (K/32 group blocks of `kind`) against N activation rows -> N x 8 dot products in
/// the block order: acc = fma(d_w * d_x, the block's integer sum, acc), block after block, and
/// for Q4_1 the minimum's terms `m * s` summed separately and added last. Each block prefetches
/// the bytes `ahead` of it (none when 0).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-VNNI when `VNNI`); `packed` is whole group blocks of
/// `kind` and every `x[j]` has one block per group block.
#[inline(always)]
unsafe fn group_dot_blocks<const N: usize, const VNNI: bool>(kind: Kind, packed: &[u8], ahead: usize, x: [&[BlockQ8]; N]) -> [[f32; GROUP_ROWS]; N] {
    let group_bytes = kind.group_bytes(GROUP_ROWS);
    let values_at = GROUP_ROWS * kind.header();
    let mut acc = [_mm256_setzero_ps(); N];
    let mut mins = [_mm256_setzero_ps(); N];
    let nibble_mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (i, blk) in packed.chunks_exact(group_bytes).enumerate() {
        let p = blk.as_ptr();
        prefetch_ahead(p, ahead, group_bytes);
        let a: [&BlockQ8; N] = std::array::from_fn(|j| x[j].get_unchecked(i));
        let mut sum = [_mm256_setzero_si256(); N];
        // Written out chunk by chunk (no loop): with constant offsets every sum stays in a register.
        if kind == Kind::Q8_0 {
            unroll!(l in [0, 1, 2, 3, 4, 5, 6, 7] {
                let w = _mm256_loadu_si256(p.add(values_at + 32 * l) as *const __m256i);
                let magnitude = _mm256_sign_epi8(w, w);
                for j in 0..N {
                    let y = _mm256_sign_epi8(broadcast4(&a[j].qs, 4 * l), w);
                    // |pair sum| <= 2 * 128 * 127: no saturation; two of them could overflow 16 bits.
                    sum[j] = dot4::<VNNI>(sum[j], magnitude, y);
                }
            });
        } else {
            unroll!(k in [0, 1, 2, 3] {
                let q = _mm256_loadu_si256(p.add(values_at + 32 * k) as *const __m256i);
                let (lo, hi) = (_mm256_and_si256(q, nibble_mask), _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble_mask));
                for j in 0..N {
                    if VNNI {
                        sum[j] = _mm256_dpbusd_avx_epi32(sum[j], lo, broadcast4(&a[j].qs, 4 * k));
                        sum[j] = _mm256_dpbusd_avx_epi32(sum[j], hi, broadcast4(&a[j].qs, 16 + 4 * k));
                    } else {
                        // 16-bit pair sums added across the block (at most 30480), folded below.
                        sum[j] = _mm256_add_epi16(sum[j], _mm256_maddubs_epi16(lo, broadcast4(&a[j].qs, 4 * k)));
                        sum[j] = _mm256_add_epi16(sum[j], _mm256_maddubs_epi16(hi, broadcast4(&a[j].qs, 16 + 4 * k)));
                    }
                }
            });
            for j in 0..N {
                if !VNNI {
                    sum[j] = _mm256_madd_epi16(sum[j], ones);
                }
                if kind == Kind::Q4_0 {
                    sum[j] = _mm256_sub_epi32(sum[j], _mm256_set1_epi32(8 * a[j].sum));
                }
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        for j in 0..N {
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(a[j].d));
            acc[j] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum[j]), acc[j]);
        }
    }
    // Q4_1's minimums in a pass of their own over the (cached) group: their accumulators would
    // take registers from the loop above.
    if kind == Kind::Q4_1 {
        for (i, blk) in packed.chunks_exact(group_bytes).enumerate() {
            let m = _mm256_cvtph_ps(_mm_loadu_si128(blk.as_ptr().add(2 * GROUP_ROWS) as *const __m128i));
            for j in 0..N {
                mins[j] = _mm256_add_ps(mins[j], _mm256_mul_ps(m, _mm256_set1_ps(x[j].get_unchecked(i).s)));
            }
        }
    }
    let mut out = [[0.0f32; GROUP_ROWS]; N];
    for j in 0..N {
        let sum = if kind == Kind::Q4_1 { _mm256_add_ps(acc[j], mins[j]) } else { acc[j] };
        _mm256_storeu_ps(out[j].as_mut_ptr(), sum);
    }
    out
}

/// A row group against one activation row in llama.cpp's x86 order: lane l of row r's
/// reference accumulator (`matmul/reference.rs`, 8 lanes of 4 consecutive products) is lane r of
/// accumulator register l here. Per element group: the 8 rows' exact integer sums (`vpmaddubsw`,
/// `vpmaddwd`; Q4_0's offset taken out as 8 times the group's activation sum, Q8_0's sign moved
/// onto the activation), converted, and fused-multiply-added with the block scale into
/// accumulator l; at the end the reference's lane tree over the 8 accumulators, then + mins.
/// The same bits as the reference (tested). One token per call: its 8 accumulators fill half the
/// registers.
///
/// # Safety
/// As [`group_dot_blocks`].
#[inline(always)]
unsafe fn group_dot_lanes<const VNNI: bool>(kind: Kind, packed: &[u8], ahead: usize, x: &[BlockQ8]) -> [f32; GROUP_ROWS] {
    let group_bytes = kind.group_bytes(GROUP_ROWS);
    let values_at = GROUP_ROWS * kind.header();
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut mins = _mm256_setzero_ps();
    let nibble_mask = _mm256_set1_epi8(0x0F);
    for (i, blk) in packed.chunks_exact(group_bytes).enumerate() {
        let p = blk.as_ptr();
        prefetch_ahead(p, ahead, group_bytes);
        let a = x.get_unchecked(i);
        let scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)), _mm256_set1_ps(a.d));
        // Q4_0: each element group's sum starts at -8 * (the sum of its four activation bytes).
        let mut offsets = [0i32; 8];
        if kind == Kind::Q4_0 {
            let y = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let group_sums = dot4::<VNNI>(_mm256_setzero_si256(), _mm256_set1_epi8(8), y);
            _mm256_storeu_si256(offsets.as_mut_ptr() as *mut __m256i, group_sums);
        }
        // (A function, not a closure: intrinsics in a closure may not be inlined into the AVX2
        // function that holds it.)
        let offset = |l: usize| if kind == Kind::Q4_0 { offsets[l] } else { 0 };
        if kind == Kind::Q8_0 {
            unroll!(l in [0, 1, 2, 3, 4, 5, 6, 7] {
                let w = _mm256_loadu_si256(p.add(values_at + 32 * l) as *const __m256i);
                acc[l] = lane_fma::<VNNI>(acc[l], scale, _mm256_sign_epi8(w, w), _mm256_sign_epi8(broadcast4(&a.qs, 4 * l), w), 0);
            });
        } else {
            unroll!(k in [0, 1, 2, 3] {
                let q = _mm256_loadu_si256(p.add(values_at + 32 * k) as *const __m256i);
                acc[k] = lane_fma::<VNNI>(acc[k], scale, _mm256_and_si256(q, nibble_mask), broadcast4(&a.qs, 4 * k), offset(k));
                acc[k + 4] = lane_fma::<VNNI>(acc[k + 4], scale, _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble_mask), broadcast4(&a.qs, 16 + 4 * k), offset(k + 4));
            });
        }
        if kind == Kind::Q4_1 {
            let m = _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * GROUP_ROWS) as *const __m128i));
            mins = _mm256_add_ps(mins, _mm256_mul_ps(m, _mm256_set1_ps(a.s)));
        }
    }
    // The reference's lane tree: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), then + mins.
    let (r0, r1, r2, r3) =
        (_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[2], acc[6]), _mm256_add_ps(acc[3], acc[7]));
    let mut sum = _mm256_add_ps(_mm256_add_ps(r0, r2), _mm256_add_ps(r1, r3));
    if kind == Kind::Q4_1 {
        sum = _mm256_add_ps(sum, mins);
    }
    let mut out = [0.0f32; GROUP_ROWS];
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out
}

/// acc + scale * (the 8 rows' integer sums of one element group - offset): `w` unsigned, `y` signed.
#[inline(always)]
unsafe fn lane_fma<const VNNI: bool>(acc: __m256, scale: __m256, w: __m256i, y: __m256i, offset: i32) -> __m256 {
    let sums = dot4::<VNNI>(_mm256_set1_epi32(-offset), w, y);
    _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc)
}

/// A row group of `kind` against N activation rows -> N x 8 dot products, in the block order
/// when `blocks` (see [`group_dot_blocks`]), else in llama.cpp's x86 order one token at a time
/// (see [`group_dot_lanes`]); each block prefetches the bytes `ahead` of it ([`PREFETCH_BYTES`]
/// when the group is read once; 0 for none).
///
/// With `VNNI`, the AVX-VNNI copies (the same bits).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and AVX-VNNI when `VNNI` ([`vnni_available`]); `packed` is
/// whole group blocks of `kind` and every `x[j]` has one block per group block.
#[inline(always)]
pub unsafe fn group<const N: usize, const VNNI: bool>(
    kind: Kind,
    blocks: bool,
    packed: &[u8],
    ahead: usize,
    x: [&[BlockQ8]; N],
) -> [[f32; GROUP_ROWS]; N] {
    debug_assert!(x.iter().all(|x| x.len() * kind.group_bytes(GROUP_ROWS) >= packed.len()));
    if !blocks {
        // Each token's pass reads the group from L1 after the first.
        return x.map(|x| match (kind, VNNI) {
            (Kind::Q4_1, false) => group_q4_1_lanes(packed, ahead, x),
            (Kind::Q4_0, false) => group_q4_0_lanes(packed, ahead, x),
            (Kind::Q8_0, false) => group_q8_0_lanes(packed, ahead, x),
            (Kind::Q4_1, true) => group_q4_1_lanes_vnni(packed, ahead, x),
            (Kind::Q4_0, true) => group_q4_0_lanes_vnni(packed, ahead, x),
            (Kind::Q8_0, true) => group_q8_0_lanes_vnni(packed, ahead, x),
        });
    }
    match (kind, VNNI) {
        (Kind::Q4_1, false) => group_q4_1::<N>(packed, ahead, x),
        (Kind::Q4_0, false) => group_q4_0::<N>(packed, ahead, x),
        (Kind::Q8_0, false) => group_q8_0::<N>(packed, ahead, x),
        (Kind::Q4_1, true) => group_q4_1_vnni::<N>(packed, ahead, x),
        (Kind::Q4_0, true) => group_q4_0_vnni::<N>(packed, ahead, x),
        (Kind::Q8_0, true) => group_q8_0_vnni::<N>(packed, ahead, x),
    }
}

/// Whether the CPU has what the AVX-VNNI copies need: AVX2, FMA, F16C and AVX-VNNI.
pub fn vnni_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") && is_x86_feature_detected!("avxvnni")
}

macro_rules! group_kernel {
    ($features:literal, $vnni:literal, $name:ident, $lanes:ident, $kind:expr) => {
        /// One format's (and instruction set's) copy of the kernel, so that no test is left in its loop.
        #[target_feature(enable = $features)]
        unsafe fn $name<const N: usize>(packed: &[u8], ahead: usize, x: [&[BlockQ8]; N]) -> [[f32; GROUP_ROWS]; N] {
            group_dot_blocks::<N, $vnni>($kind, packed, ahead, x)
        }

        /// One format's copy of the kernel in llama.cpp's order.
        #[target_feature(enable = $features)]
        unsafe fn $lanes(packed: &[u8], ahead: usize, x: &[BlockQ8]) -> [f32; GROUP_ROWS] {
            group_dot_lanes::<$vnni>($kind, packed, ahead, x)
        }
    };
}

group_kernel!("avx2,fma,f16c", false, group_q4_1, group_q4_1_lanes, Kind::Q4_1);
group_kernel!("avx2,fma,f16c", false, group_q4_0, group_q4_0_lanes, Kind::Q4_0);
group_kernel!("avx2,fma,f16c", false, group_q8_0, group_q8_0_lanes, Kind::Q8_0);
group_kernel!("avx2,fma,f16c,avxvnni", true, group_q4_1_vnni, group_q4_1_lanes_vnni, Kind::Q4_1);
group_kernel!("avx2,fma,f16c,avxvnni", true, group_q4_0_vnni, group_q4_0_lanes_vnni, Kind::Q4_0);
group_kernel!("avx2,fma,f16c,avxvnni", true, group_q8_0_vnni, group_q8_0_lanes_vnni, Kind::Q8_0);
