//! AVX-512 VNNI kernels that compute 16 weight rows per instruction (x86-64 only).
//!
//! Weights are repacked at load time into groups of 16 rows ([`pack`], the layout of
//! [`crate::groups`] with 64-byte chunks: one register in which lane r, a 32-bit lane, holds four
//! elements of row r; Q8_0 values stored plus 128).
//!
//! The low nibbles of a 4-bit chunk k are elements 4k..4k+4 of each row, the high nibbles
//! elements 16+4k..16+4k+4. So after unpacking, register l (l = 0..8) holds element group l
//! (elements 4l..4l+4) of all 16 rows, and one `vpdpbusd` against those four activation bytes
//! broadcast gives the 16 rows' exact integer sums of group l: lane l of each row's accumulator
//! in the reference order (`matmul/reference.rs`). The float work is then the reference's, 16 rows at a
//! time: convert, fused multiply-add with the block scale into accumulator l, and at the end the
//! same tree over the 8 accumulators. The results are bit-identical to the reference (tested).
//!
//! The instruction multiplies unsigned by signed bytes. 4-bit values are unsigned; Q4_0's
//! offset of 8 and Q8_0's stored offset of 128 are taken out by starting each integer sum at
//! `-offset * (sum of the four activation bytes)`.

#![cfg(target_arch = "x86_64")]

pub use crate::groups::Kind;
use crate::quant::BlockQ8;
use std::arch::x86_64::*;

/// How far ahead of the kernels' weight reads a prefetch is issued. Decode streams ~100 MB of
/// weights per token; asking for them ahead of use keeps more loads in flight than the hardware
/// prefetcher does (measured on Zen 4 with the earlier two-row kernels: 155 -> 195 tokens/s with
/// 2 threads, 99 -> 123 with 1).
pub const PREFETCH_BYTES: usize = 1024;

/// Repeats a block once per listed value of `$i`.
macro_rules! unroll {
    ($i:ident in [$($v:literal),*] $body:block) => {
        $( { let $i: usize = $v; $body } )*
    };
}

/// Rows per group of the interleaved layout.
pub const GROUP_ROWS: usize = 16;

/// Whether this CPU runs the kernels of this module.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// What is subtracted from each stored value to get the quantized value (Q8_0 is stored plus
/// 128, see [`pack`]).
const fn offset(kind: Kind) -> i32 {
    match kind {
        Kind::Q4_1 => 0,
        Kind::Q4_0 => 8,
        Kind::Q8_0 => 128,
    }
}

/// Repacks a matrix (N, K) into groups of 16 rows, Q8_0 values stored plus 128 (see
/// [`crate::groups`]).
pub fn pack(kind: Kind, w: &[u8], rows: usize, kb: usize) -> Vec<u8> {
    crate::groups::pack_groups(kind, GROUP_ROWS, true, w, rows, kb)
}

/// What both orders do at the start of block i of a row group (at `p`): prefetch the bytes
/// `ahead` of it (none when 0), the scales d_w * d_x of each token, for Q4_1 `mins += m * s` (one
/// rounding for the product and one for the sum, as the reference), and for the formats with an
/// offset each token's sums of the 8 groups of four activation bytes (zeros for Q4_1).
#[inline(always)]
unsafe fn block_start<const N: usize>(
    kind: Kind,
    p: *const u8,
    ahead: usize,
    i: usize,
    x: &[&[BlockQ8]; N],
    mins: &mut [__m512; N],
) -> ([__m512; N], [[i32; 8]; N]) {
    if ahead != 0 {
        for line in (0..kind.group_bytes(GROUP_ROWS)).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead + line) as *const i8);
        }
    }
    let d = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
    let mut scale = [_mm512_setzero_ps(); N];
    let mut sums = [[0i32; 8]; N];
    for j in 0..N {
        let a = x[j].get_unchecked(i);
        scale[j] = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
        if kind == Kind::Q4_1 {
            let m = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * GROUP_ROWS) as *const __m256i));
            mins[j] = _mm512_add_ps(mins[j], _mm512_mul_ps(m, _mm512_set1_ps(a.s)));
        } else {
            let y = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let group_sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), y);
            _mm256_storeu_si256(sums[j].as_mut_ptr() as *mut __m256i, group_sums);
        }
    }
    (scale, sums)
}

/// A row group (K/32 group blocks of `kind`) against N activation rows -> N x 16 dot products,
/// each in the reference order: lane l of row r's reference accumulator is lane r of
/// accumulator register l here.
///
/// # Safety
/// [`available`] is true; `packed` is whole group blocks of `kind` and every `x[j]` has one
/// block per group block.
#[inline(always)]
unsafe fn group_dot<const N: usize>(kind: Kind, packed: &[u8], ahead: usize, x: [&[BlockQ8]; N]) -> [[f32; GROUP_ROWS]; N] {
    let mut acc = [[_mm512_setzero_ps(); 8]; N];
    let mut mins = [_mm512_setzero_ps(); N];
    let nibble_mask = _mm512_set1_epi8(0x0F);
    let values_at = GROUP_ROWS * kind.header();
    for (i, blk) in packed.chunks_exact(kind.group_bytes(GROUP_ROWS)).enumerate() {
        let p = blk.as_ptr();
        let (scale, offset_sums) = block_start(kind, p, ahead, i, &x, &mut mins);
        // Each token's integer sums of element group l start at -offset * (the sum of the
        // group's four activation bytes).
        let mut start = [[0i32; 8]; N];
        for j in 0..N {
            start[j] = offset_sums[j].map(|sum| -offset(kind) * sum);
        }
        // Written out lane by lane (no loop): with a constant lane index every accumulator stays
        // in a register; a loop the compiler does not unroll keeps them in memory.
        if kind == Kind::Q8_0 {
            unroll!(l in [0, 1, 2, 3, 4, 5, 6, 7] {
                let w = _mm512_loadu_si512(p.add(values_at + 64 * l) as *const _);
                element_group(kind, l, w, i, &x, &scale, &start, &mut acc);
            });
        } else {
            unroll!(k in [0, 1, 2, 3] {
                let q = _mm512_loadu_si512(p.add(values_at + 64 * k) as *const _);
                element_group(kind, k, _mm512_and_si512(q, nibble_mask), i, &x, &scale, &start, &mut acc);
                element_group(kind, k + 4, _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble_mask), i, &x, &scale, &start, &mut acc);
            });
        }
    }
    let mut out = [[0.0f32; GROUP_ROWS]; N];
    for j in 0..N {
        // The reference's lane tree: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), then + mins.
        let a = &acc[j];
        let (r0, r1, r2, r3) = (_mm512_add_ps(a[0], a[4]), _mm512_add_ps(a[1], a[5]), _mm512_add_ps(a[2], a[6]), _mm512_add_ps(a[3], a[7]));
        let mut sum = _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
        if kind == Kind::Q4_1 {
            sum = _mm512_add_ps(sum, mins[j]);
        }
        _mm512_storeu_ps(out[j].as_mut_ptr(), sum);
    }
    out
}

/// Element group l of block i of the 16 rows (`w`) against the four activation bytes of group l
/// of each token, into accumulator l.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn element_group<const N: usize>(
    kind: Kind,
    l: usize,
    w: __m512i,
    i: usize,
    x: &[&[BlockQ8]; N],
    scale: &[__m512; N],
    start: &[[i32; 8]; N],
    acc: &mut [[__m512; 8]; N],
) {
    for j in 0..N {
        let ys = x[j].get_unchecked(i).qs.as_ptr();
        let y = _mm512_set1_epi32(std::ptr::read_unaligned(ys.add(4 * l) as *const i32));
        let init = if kind == Kind::Q4_1 { _mm512_setzero_si512() } else { _mm512_set1_epi32(start[j][l]) };
        let sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, w, y));
        acc[j][l] = _mm512_fmadd_ps(scale[j], sums, acc[j][l]);
    }
}

/// [`group_dot`] in the [`SumOrder::Blocks`](crate::matmul::SumOrder) order: the 8 element
/// groups' integer sums of a block are added in integers (two chains, exact in any order),
/// converted once, and fused-multiply-added with the block scale into one accumulator per row.
#[inline(always)]
unsafe fn group_dot_blocks<const N: usize>(kind: Kind, packed: &[u8], ahead: usize, x: [&[BlockQ8]; N]) -> [[f32; GROUP_ROWS]; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut mins = [_mm512_setzero_ps(); N];
    let nibble_mask = _mm512_set1_epi8(0x0F);
    let values_at = GROUP_ROWS * kind.header();
    for (i, blk) in packed.chunks_exact(kind.group_bytes(GROUP_ROWS)).enumerate() {
        let p = blk.as_ptr();
        let (scale, offset_sums) = block_start(kind, p, ahead, i, &x, &mut mins);
        // Two partial integer sums per token (element groups 0, 2, 4, 6 and 1, 3, 5, 7): two
        // short dependency chains instead of one of eight. The block's sum starts at
        // -offset * (the sum of its activation bytes).
        let mut part = [[_mm512_setzero_si512(); 2]; N];
        for j in 0..N {
            part[j][0] = _mm512_set1_epi32(-offset(kind) * offset_sums[j].iter().sum::<i32>());
        }
        if kind == Kind::Q8_0 {
            unroll!(l in [0, 1, 2, 3, 4, 5, 6, 7] {
                let w = _mm512_loadu_si512(p.add(values_at + 64 * l) as *const _);
                element_group_sum(l, w, i, &x, &mut part);
            });
        } else {
            unroll!(k in [0, 1, 2, 3] {
                let q = _mm512_loadu_si512(p.add(values_at + 64 * k) as *const _);
                element_group_sum(k, _mm512_and_si512(q, nibble_mask), i, &x, &mut part);
                element_group_sum(k + 4, _mm512_and_si512(_mm512_srli_epi16(q, 4), nibble_mask), i, &x, &mut part);
            });
        }
        for j in 0..N {
            let sums = _mm512_cvtepi32_ps(_mm512_add_epi32(part[j][0], part[j][1]));
            acc[j] = _mm512_fmadd_ps(scale[j], sums, acc[j]);
        }
    }
    let mut out = [[0.0f32; GROUP_ROWS]; N];
    for j in 0..N {
        let sum = if kind == Kind::Q4_1 { _mm512_add_ps(acc[j], mins[j]) } else { acc[j] };
        _mm512_storeu_ps(out[j].as_mut_ptr(), sum);
    }
    out
}

/// Element group l of block i of the 16 rows (`w`) against the four activation bytes of group l
/// of each token, into partial sum l % 2.
#[inline(always)]
unsafe fn element_group_sum<const N: usize>(l: usize, w: __m512i, i: usize, x: &[&[BlockQ8]; N], part: &mut [[__m512i; 2]; N]) {
    for j in 0..N {
        let ys = x[j].get_unchecked(i).qs.as_ptr();
        let y = _mm512_set1_epi32(std::ptr::read_unaligned(ys.add(4 * l) as *const i32));
        part[j][l % 2] = _mm512_dpbusd_epi32(part[j][l % 2], w, y);
    }
}

/// A row group of `kind` against N activation rows -> N x 16 dot products, in the
/// [`SumOrder::Blocks`](crate::matmul::SumOrder) order when `blocks` (see [`group_dot_blocks`]),
/// else in the reference lane order (see [`group_dot`]). Each block prefetches the bytes `ahead`
/// of it ([`PREFETCH_BYTES`] when the group is read once; 0 for none).
///
/// # Safety
/// [`available`] is true; `packed` is whole group blocks of `kind` and every `x[j]` has one
/// block per group block.
#[inline(always)]
pub unsafe fn group<const N: usize>(kind: Kind, blocks: bool, packed: &[u8], ahead: usize, x: [&[BlockQ8]; N]) -> [[f32; GROUP_ROWS]; N] {
    debug_assert!(x.iter().all(|x| x.len() * kind.group_bytes(GROUP_ROWS) >= packed.len()));
    match (kind, blocks) {
        (Kind::Q4_1, false) => group_q4_1::<N>(packed, ahead, x),
        (Kind::Q4_0, false) => group_q4_0::<N>(packed, ahead, x),
        (Kind::Q8_0, false) => group_q8_0::<N>(packed, ahead, x),
        (Kind::Q4_1, true) => group_q4_1_blocks::<N>(packed, ahead, x),
        (Kind::Q4_0, true) => group_q4_0_blocks::<N>(packed, ahead, x),
        (Kind::Q8_0, true) => group_q8_0_blocks::<N>(packed, ahead, x),
    }
}

macro_rules! group_kernel {
    ($name:ident, $body:ident, $kind:expr) => {
        /// One format's and order's copy of the kernel, so that no test is left in its loop.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
        unsafe fn $name<const N: usize>(packed: &[u8], ahead: usize, x: [&[BlockQ8]; N]) -> [[f32; GROUP_ROWS]; N] {
            $body::<N>($kind, packed, ahead, x)
        }
    };
}

group_kernel!(group_q4_1, group_dot, Kind::Q4_1);
group_kernel!(group_q4_0, group_dot, Kind::Q4_0);
group_kernel!(group_q8_0, group_dot, Kind::Q8_0);
group_kernel!(group_q4_1_blocks, group_dot_blocks, Kind::Q4_1);
group_kernel!(group_q4_0_blocks, group_dot_blocks, Kind::Q4_0);
group_kernel!(group_q8_0_blocks, group_dot_blocks, Kind::Q8_0);
