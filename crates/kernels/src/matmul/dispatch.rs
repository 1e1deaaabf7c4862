//! Which kernels compute which rows: the load-time repacking for a level, the rows each thread of
//! the pool owns, and the kernels they run on at each [`Level`].

use super::reference::matmul_rows;
#[cfg(target_arch = "x86_64")]
use super::simd::{group_kind, matmul_groups_avx2, matmul_groups_avxvnni, matmul_groups_vnni, matmul_rows_avx2, Grouped};
use super::{Level, MatRef, Out};
use crate::pool::split_range;
#[cfg(target_arch = "x86_64")]
use crate::quant::QK;
use crate::quant::{BlockQ8, Format};

/// The load-time repacking of a weight matrix for `level`, if that level has one for its format:
/// w (N, K) -> packed bytes for [`MatRef::packed`].
pub fn pack_for(level: Level, format: Format, data: &[u8], rows: usize, cols: usize) -> Option<Vec<u8>> {
    #[cfg(target_arch = "x86_64")]
    {
        // Q5_0's values (q - 16, in [-16, 15]) are Q8_0 values with the same scale: its blocks
        // become Q8_0 blocks and run on the Q8_0 kernels, which compute its reference's exact
        // integer sums and float operations in both orders (the same bits).
        if format == Format::Q5_0 && level.wants_row_groups() {
            return pack_for(level, Format::Q8_0, &crate::kquants::q5_0_as_q8_0(data), rows, cols);
        }
        if let (Some(kind), true) = (group_kind(format), cols.is_multiple_of(QK)) {
            match level {
                Level::Avx512Vnni if rows >= crate::vnni::GROUP_ROWS => return Some(crate::vnni::pack(kind, data, rows, cols / QK)),
                Level::Avx2 | Level::AvxVnni if rows >= crate::avx2::GROUP_ROWS => return Some(crate::avx2::pack(kind, data, rows, cols / QK)),
                _ => {}
            }
        }
    }
    let _ = (level, format, data, rows, cols);
    None
}

/// The grouped kernels and row-group layout `w` runs on at `level`, if any (its weights were
/// packed for it).
#[cfg(target_arch = "x86_64")]
fn groups_of(level: Level, w: &MatRef) -> Option<(Grouped, crate::groups::Kind)> {
    let kernels = match level {
        Level::Avx512Vnni => Grouped::Vnni,
        Level::Avx2 => Grouped::Avx2,
        Level::AvxVnni => Grouped::AvxVnni,
        _ => return None,
    };
    if w.packed.is_some() {
        group_kind(w.format).map(|kind| (kernels, kind))
    } else {
        None
    }
}

/// Rows per unit of work at `level`: a row group on the grouped kernels, else one row.
fn row_unit(level: Level, w: &MatRef) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some((kernels, _)) = groups_of(level, w) {
        return kernels.rows();
    }
    let _ = (level, w);
    1
}

/// The rows of `w` thread i of nt computes at `level`: whole row groups on the grouped kernels
/// (the rows after the last whole group go to the last thread, as the second range), else an
/// even split.
pub(super) fn owned_rows(level: Level, w: &MatRef, i: usize, nt: usize) -> [std::ops::Range<usize>; 2] {
    let unit = row_unit(level, w);
    let units = split_range(w.rows / unit, i, nt);
    let rest = if i + 1 == nt { w.rows / unit * unit..w.rows } else { 0..0 };
    [unit * units.start..unit * units.end, rest]
}

/// Thread i's share of `w` against the activations, written into `y`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_share(level: Level, w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, y: Out, i: usize, nt: usize) {
    let [main, rest] = owned_rows(level, w, i, nt);
    #[cfg(target_arch = "x86_64")]
    if let Some((kernels, kind)) = groups_of(level, w) {
        let g = kernels.rows();
        // SAFETY: Level::Avx512Vnni is only chosen when the CPU has the features of `vnni` (and
        // so AVX2, FMA and F16C), Level::AvxVnni when it has AVX2, FMA, F16C and AVX-VNNI,
        // Level::Avx2 when it has AVX2, FMA and F16C.
        unsafe {
            match kernels {
                Grouped::Vnni => matmul_groups_vnni(w, kind, xq, t, main.start / g..main.end / g, y),
                Grouped::Avx2 => matmul_groups_avx2(w, kind, xq, t, main.start / g..main.end / g, y),
                Grouped::AvxVnni => matmul_groups_avxvnni(w, kind, xq, t, main.start / g..main.end / g, y),
            }
            matmul_rows_avx2(w, x, xq, t, rest, y);
        }
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: these levels are only chosen when the CPU has AVX2, FMA and F16C.
        Level::Avx2 | Level::AvxVnni | Level::Avx512Vnni => unsafe { matmul_rows_avx2(w, x, xq, t, main, y) },
        _ => matmul_rows(w, x, xq, t, main, y),
    }
}
