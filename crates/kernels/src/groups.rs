//! The row-group layout of block-format weights that the x86 kernels read (repacked at load time).
//!
//! A matrix of N rows is cut into groups of R rows (R = 16 for AVX-512 VNNI, 8 for AVX2: one
//! register of 32-bit lanes). For each group and each block of 32 elements, the group block holds
//! the R rows' scales (f16), for Q4_1 their minimums (f16), then the quantized values interleaved
//! four bytes at a time: chunk c is 4R bytes, four bytes of each of the R rows in row order. One
//! chunk is one register in which lane r (a 32-bit lane) holds four elements of row r.
//!
//! ```text
//!             R = 16                               R = 8
//! Q4_1  320 B: d[16], m[16], 4 chunks of 64 B      160 B: d[8], m[8], 4 chunks of 32 B
//! Q4_0  288 B: d[16],        4 chunks of 64 B      144 B: d[8],       4 chunks of 32 B
//! Q8_0  544 B: d[16],        8 chunks of 64 B      272 B: d[8],       8 chunks of 32 B
//! ```
//!
//! The low nibbles of a 4-bit chunk k are elements 4k..4k+4 of each row, the high nibbles
//! elements 16+4k..16+4k+4 (chunk k holds bytes 4k..4k+4 of each row's 16 bytes of nibbles). So
//! after unpacking, register l (l = 0..8) holds element group l (elements 4l..4l+4) of all R
//! rows, and one multiply-add against those four activation bytes broadcast gives the R rows'
//! integer sums of group l at once. Q8_0 chunk l is element group l directly.

use crate::quant::{Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES};

/// The block formats with a grouped layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 4-bit values with scale and minimum.
    Q4_1,
    /// 4-bit values with scale, offset 8.
    Q4_0,
    /// 8-bit signed values with scale.
    Q8_0,
}

impl Kind {
    /// Bytes of one original block.
    pub const fn source_bytes(self) -> usize {
        match self {
            Kind::Q4_1 => Q4_1_BYTES,
            Kind::Q4_0 => Q4_0_BYTES,
            Kind::Q8_0 => Q8_0_BYTES,
        }
    }

    /// Bytes of one group block of `rows` rows (that many original blocks, repacked).
    pub const fn group_bytes(self, rows: usize) -> usize {
        rows * self.source_bytes()
    }

    /// Bytes of f16 fields per original block (d, and m for Q4_1) before the values.
    pub const fn header(self) -> usize {
        match self {
            Kind::Q4_1 => 4,
            Kind::Q4_0 | Kind::Q8_0 => 2,
        }
    }
}

/// Repacks the first `rows / group * group` rows of a matrix (N, K) of `kind` blocks into groups
/// of `group` rows (see the module doc): w (N, K) -> (N/group, K/32) group blocks of
/// [`Kind::group_bytes`]. With `q8_unsigned`, Q8_0 values are stored plus 128 (for kernels that
/// multiply unsigned by signed bytes).
pub fn pack_groups(kind: Kind, group: usize, q8_unsigned: bool, w: &[u8], rows: usize, kb: usize) -> Vec<u8> {
    let (src_bytes, header, group_bytes) = (kind.source_bytes(), kind.header(), kind.group_bytes(group));
    debug_assert_eq!(w.len(), rows * kb * src_bytes);
    let groups = rows / group;
    let mut out = vec![0u8; groups * kb * group_bytes];
    let values_at = group * header; // the chunks follow the f16 fields
    let flip = if kind == Kind::Q8_0 && q8_unsigned { 0x80 } else { 0 };
    for (g, dst_group) in out.chunks_exact_mut(kb * group_bytes).enumerate() {
        for (i, dst) in dst_group.chunks_exact_mut(group_bytes).enumerate() {
            for r in 0..group {
                let src = &w[((g * group + r) * kb + i) * src_bytes..][..src_bytes];
                for f in 0..header / 2 {
                    // Field f (d, then m) of the rows, one after another.
                    dst[f * 2 * group + 2 * r..][..2].copy_from_slice(&src[2 * f..2 * f + 2]);
                }
                let values = &src[header..];
                for (c, four) in values.chunks_exact(4).enumerate() {
                    let at = values_at + c * 4 * group + 4 * r;
                    for (e, &b) in four.iter().enumerate() {
                        dst[at + e] = b ^ flip;
                    }
                }
            }
        }
    }
    out
}
