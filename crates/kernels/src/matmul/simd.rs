//! The x86 kernels' drivers: rows on the per-row AVX2 dot products (`crate::x86`), and row groups
//! of repacked weights on the grouped kernels of AVX2 (`crate::avx2`, 8 rows) and AVX-512 VNNI
//! (`crate::vnni`, 16 rows).

use super::reference::{matmul_rows, quantized_rows, L1_ACTIVATION_BYTES};
use super::{MatRef, Out, SumOrder};
use crate::quant::{BlockQ8, Format, QK};

/// The same rows with the hand-written AVX2 dot products (float formats: the reference code,
/// compiled for AVX2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matmul_rows_avx2(w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, rows: std::ops::Range<usize>, y: Out) {
    use crate::x86;
    if w.format.activations() == crate::quant::Activations::Q8K {
        // SAFETY: as below.
        return super::reference::k_quant_rows(
            w,
            x,
            t,
            rows,
            y,
            |f, r, a| unsafe { crate::kquants_avx2::dot_k_q8k(f, r, a) },
            |f, r, a| unsafe { crate::kquants_avx2::dot4_k_q8k(f, r, a) },
        );
    }
    if w.order == SumOrder::Blocks {
        // The reference, compiled for AVX2 (its integer block sums vectorize).
        return matmul_rows(w, x, xq, t, rows, y);
    }
    // SAFETY (all three): this function only runs on CPUs with AVX2, FMA and F16C, and row and
    // activation lengths match by construction of MatRef and the checks in `matmul`.
    match w.format {
        Format::Q4_0 => quantized_rows(w, xq, t, rows, y, |r, a| unsafe { x86::dot_q4_0_q8(r, a) }, |r, a| unsafe { x86::dot4_q4_0_q8(r, a) }),
        Format::Q4_1 => quantized_rows(w, xq, t, rows, y, |r, a| unsafe { x86::dot_q4_1_q8(r, a) }, |r, a| unsafe { x86::dot4_q4_1_q8(r, a) }),
        Format::Q8_0 => quantized_rows(w, xq, t, rows, y, |r, a| unsafe { x86::dot_q8_0_q8(r, a) }, |r, a| unsafe { x86::dot4_q8_0_q8(r, a) }),
        _ => matmul_rows(w, x, xq, t, rows, y),
    }
}

/// The row-group layout of a block format, if it has one.
#[cfg(target_arch = "x86_64")]
pub(super) fn group_kind(format: Format) -> Option<crate::groups::Kind> {
    match format {
        Format::Q4_1 => Some(crate::groups::Kind::Q4_1),
        Format::Q4_0 => Some(crate::groups::Kind::Q4_0),
        // Repacked as Q8_0 blocks (see `pack_for`).
        Format::Q8_0 | Format::Q5_0 => Some(crate::groups::Kind::Q8_0),
        Format::F32 | Format::F16 | Format::Bf16 | Format::Q5_1 => None,
        Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K | Format::Q8_K => None,
    }
}

/// The grouped kernels a product runs on: AVX-512 VNNI (16 rows), AVX2 or AVX-VNNI (8 rows), both
/// orders.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Grouped {
    Vnni,
    Avx2,
    AvxVnni,
}

#[cfg(target_arch = "x86_64")]
impl Grouped {
    /// Rows per group of its layout.
    pub(super) const fn rows(self) -> usize {
        match self {
            Grouped::Vnni => crate::vnni::GROUP_ROWS,
            Grouped::Avx2 | Grouped::AvxVnni => crate::avx2::GROUP_ROWS,
        }
    }

    /// How far ahead its kernels prefetch when a row group is read once.
    const fn prefetch_bytes(self) -> usize {
        match self {
            Grouped::Vnni => crate::vnni::PREFETCH_BYTES,
            Grouped::Avx2 | Grouped::AvxVnni => crate::avx2::PREFETCH_BYTES,
        }
    }
}

/// Row groups `groups` of a packed `w` against all T tokens with the grouped kernels of
/// `kernels`, several tokens per call (the weight registers of a block stay live across them), in
/// L1-sized token tiles as [`quantized_rows`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn matmul_groups(kernels: Grouped, w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    let kb = w.cols / QK;
    let rows = kernels.rows();
    let group_bytes = kb * kind.group_bytes(rows);
    // Tokens per kernel call. VNNI in llama.cpp's order needs 8 accumulators per token (two
    // tokens fit in the 32 registers), in the block order 4 (four tokens fit); AVX2 keeps one
    // accumulator and one integer sum per token in its 16 registers in the block order, and
    // takes a call's tokens one after another in llama.cpp's order (8 accumulators each).
    const STEP: usize = 4;
    // AVX2 in the block order keeps an integer sum per token and the two unpacked weight
    // registers; 8 tokens per pass (measured: 4 -> 8 made the gate product 14% faster per token).
    const AVX2_STEP: usize = 8;
    let step = match (kernels, w.order) {
        (Grouped::Vnni, SumOrder::LlamaCpp) => 2,
        // Q8_0 needs two more registers per element group (the weights' magnitudes and signs):
        // 8 tokens spill (measured on the output head: 0.6 -> 0.75 ms per token).
        (Grouped::Avx2 | Grouped::AvxVnni, SumOrder::Blocks) if kind != crate::groups::Kind::Q8_0 => AVX2_STEP,
        _ => 4,
    };
    let tile = (L1_ACTIVATION_BYTES / (kb * std::mem::size_of::<BlockQ8>()).max(1)).clamp(STEP, 256) / STEP * STEP;
    // One row group against G tokens starting at `ti`; writes the rows x G outputs.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn call<const G: usize>(
        kernels: Grouped,
        w: &MatRef,
        kind: crate::groups::Kind,
        group_bytes: usize,
        g: usize,
        ti: usize,
        ahead: usize,
        xq: &[BlockQ8],
        y: Out,
    ) {
        let kb = w.cols / QK;
        let xs: [&[BlockQ8]; G] = std::array::from_fn(|j| &xq[(ti + j) * kb..(ti + j + 1) * kb]);
        let packed = &w.packed.unwrap_or(&[])[g * group_bytes..(g + 1) * group_bytes];
        // SAFETY: the caller checked the CPU features; shapes match by construction.
        unsafe {
            match kernels {
                Grouped::Vnni => put_group(crate::vnni::group::<G>(kind, w.order == SumOrder::Blocks, packed, ahead, xs), w, g, ti, y),
                Grouped::Avx2 => put_group(crate::avx2::group::<G, false>(kind, w.order == SumOrder::Blocks, packed, ahead, xs), w, g, ti, y),
                Grouped::AvxVnni => put_group(crate::avx2::group::<G, true>(kind, w.order == SumOrder::Blocks, packed, ahead, xs), w, g, ti, y),
            }
        }
    }
    for t0 in (0..t).step_by(tile) {
        let t1 = (t0 + tile).min(t);
        // Prefetch distance of pass k (1-based) over a row group. One pass streams the group a
        // short way ahead. With P passes only the first would read memory, which then sits idle
        // while the others run from L1; so pass k asks for the bytes k/P of a row group ahead:
        // by the last pass the next group has been requested, spread evenly over the passes
        // (measured on batched decoding of 8 sequences, one thread, VNNI: +6% in llama.cpp's
        // order, 4 passes; +9% in the block order, 2 passes).
        let passes = (t1 - t0).div_ceil(step);
        let ahead = |k: usize| if passes == 1 { kernels.prefetch_bytes() } else { group_bytes * k / passes };
        for g in groups.clone() {
            let (mut ti, mut k) = (t0, 1);
            while ti + step <= t1 {
                match step {
                    8 => call::<8>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                    4 => call::<4>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                    _ => call::<2>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                }
                ti += step;
                k += 1;
            }
            if t1 - ti >= 4 {
                call::<4>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y);
                ti += 4;
            }
            match t1 - ti {
                0 => {}
                1 => call::<1>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                2 => call::<2>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
                _ => call::<3>(kernels, w, kind, group_bytes, g, ti, ahead(k), xq, y),
            }
        }
    }
}

/// Writes a row group's results for G tokens from `ti`: v (G, R) into y (T, N).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn put_group<const R: usize, const G: usize>(v: [[f32; R]; G], w: &MatRef, g: usize, ti: usize, y: Out) {
    for (j, rows) in v.iter().enumerate() {
        for (r, &value) in rows.iter().enumerate() {
            // SAFETY: each thread owns whole row groups; indices are inside y (T, N).
            unsafe { y.put((ti + j) * w.rows + g * R + r, value) };
        }
    }
}

/// [`matmul_groups`] with the VNNI kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")]
pub(super) unsafe fn matmul_groups_vnni(w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    unsafe { matmul_groups(Grouped::Vnni, w, kind, xq, t, groups, y) }
}

/// [`matmul_groups`] with the AVX2 kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matmul_groups_avx2(w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    unsafe { matmul_groups(Grouped::Avx2, w, kind, xq, t, groups, y) }
}

/// [`matmul_groups`] with the AVX-VNNI kernels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(super) unsafe fn matmul_groups_avxvnni(w: &MatRef, kind: crate::groups::Kind, xq: &[BlockQ8], t: usize, groups: std::ops::Range<usize>, y: Out) {
    unsafe { matmul_groups(Grouped::AvxVnni, w, kind, xq, t, groups, y) }
}
