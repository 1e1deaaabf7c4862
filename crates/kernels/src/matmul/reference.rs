//! The scalar references: one dot product per weight format and summation order, and the row
//! loop that runs them (also used by the AVX2 row kernels, with their own dot products). Every
//! faster kernel gives these results bit for bit.

use super::{MatRef, Out, SumOrder};
use crate::kquants::{dot_k_q8k, quantize_row_q8k, unpack_5bit, BlockQ8K, Q5_0_BYTES, Q5_1_BYTES, QK_K};
use crate::quant::{read_f16, Activations, BlockQ8, Format, Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK};
use half::{bf16, f16};

/// Lanes of the per-row accumulator: each block's 32 integer products are summed in 8 groups of
/// 4 consecutive elements, and group i is added into lane i with a fused multiply-add by the
/// block's scale. The lanes are reduced at the end of the row in a fixed tree order.
///
/// This is the exact order of the peers' x86 kernels (an 8-wide float accumulator). Float
/// rounding, amplified by the int8 rounding of activations, moves logits by ~0.17 on average after
/// 30 layers between two correct summation orders, enough to flip greedy choices at near-ties;
/// keeping the same order keeps us token-exact with them.
const LANES: usize = 8;

/// Sums the 8 lanes as `((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))`.
#[inline(always)]
fn reduce_lanes(acc: &[f32; LANES]) -> f32 {
    let r = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// w block values (32, element order) times activation block, accumulated into the lanes.
#[inline(always)]
fn accumulate_block(acc: &mut [f32; LANES], scale: f32, w: &[i32; QK], a: &[i8; QK]) {
    for (lane, acc) in acc.iter_mut().enumerate() {
        let mut sum = 0i32;
        for e in 4 * lane..4 * lane + 4 {
            sum += w[e] * a[e] as i32;
        }
        *acc = scale.mul_add(sum as f32, *acc);
    }
}

/// Unpacks 16 bytes of nibbles into 32 values in element order (low nibbles first), minus `offset`.
#[inline(always)]
fn unpack_nibbles(qs: &[u8], offset: i32) -> [i32; QK] {
    let mut w = [0i32; QK];
    for j in 0..QK / 2 {
        w[j] = (qs[j] & 0x0F) as i32 - offset;
        w[j + QK / 2] = (qs[j] >> 4) as i32 - offset;
    }
    w
}

/// w row (K) q4_0, x (K/32) q8 blocks -> dot product.
#[inline(always)]
pub fn dot_q4_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    for (b, a) in w.chunks_exact(Q4_0_BYTES).zip(x) {
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &unpack_nibbles(&b[2..Q4_0_BYTES], 8), &a.qs);
    }
    reduce_lanes(&acc)
}

/// w row (K) q4_1, x (K/32) q8 blocks -> dot product. The weight minimum `m` meets the block sum
/// `s` of the activations: sum_j (d q_j + m) a_j = d * sum_j q_j a_j + m * s; the `m * s` terms
/// are summed separately and added last.
#[inline(always)]
pub fn dot_q4_1_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut mins = 0.0f32;
    for (b, a) in w.chunks_exact(Q4_1_BYTES).zip(x) {
        mins += read_f16(b, 2) * a.s;
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &unpack_nibbles(&b[4..Q4_1_BYTES], 0), &a.qs);
    }
    reduce_lanes(&acc) + mins
}

/// w row (K) q8_0, x (K/32) q8 blocks -> dot product.
#[inline(always)]
pub fn dot_q8_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    for (b, a) in w.chunks_exact(Q8_0_BYTES).zip(x) {
        let mut q = [0i32; QK];
        for (q, &v) in q.iter_mut().zip(&b[2..Q8_0_BYTES]) {
            *q = v as i8 as i32;
        }
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &q, &a.qs);
    }
    reduce_lanes(&acc)
}

/// w row (K) q5_0, x (K/32) q8 blocks -> dot product (the peers' x86 order, as Q4_0's).
#[inline(always)]
pub fn dot_q5_0_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    for (b, a) in w.chunks_exact(Q5_0_BYTES).zip(x) {
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &unpack_5bit(&b[2..6], &b[6..22]).map(|q| q - 16), &a.qs);
    }
    reduce_lanes(&acc)
}

/// w row (K) q5_1, x (K/32) q8 blocks -> dot product (the peers' x86 order, as Q4_1's).
#[inline(always)]
pub fn dot_q5_1_q8(w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut mins = 0.0f32;
    for (b, a) in w.chunks_exact(Q5_1_BYTES).zip(x) {
        mins += read_f16(b, 2) * a.s;
        accumulate_block(&mut acc, read_f16(b, 0) * a.d, &unpack_5bit(&b[4..8], &b[8..24]), &a.qs);
    }
    reduce_lanes(&acc) + mins
}

/// w row (K) in a block format, x (K/32) q8 blocks -> dot product in the [`SumOrder::Blocks`]
/// order: acc = fma(d_w * d_x, sum of the block's integer products, acc), block after block;
/// for Q4_1 and Q5_1 the minimum's terms `m * s` are summed separately and added last, as in
/// [`dot_q4_1_q8`].
#[inline(always)]
pub fn dot_blocks_q8(format: Format, w: &[u8], x: &[BlockQ8]) -> f32 {
    let mut acc = 0.0f32;
    let mut mins = 0.0f32;
    for (b, a) in w.chunks_exact(format.block_bytes()).zip(x) {
        let dot = |values: &[i32; QK]| values.iter().zip(&a.qs).map(|(&v, &q)| v * q as i32).sum::<i32>();
        let sum = match format {
            Format::Q4_0 => dot(&unpack_nibbles(&b[2..Q4_0_BYTES], 8)),
            Format::Q4_1 => {
                mins += read_f16(b, 2) * a.s;
                dot(&unpack_nibbles(&b[4..Q4_1_BYTES], 0))
            }
            Format::Q8_0 => b[2..Q8_0_BYTES].iter().zip(&a.qs).map(|(&v, &q)| v as i8 as i32 * q as i32).sum(),
            Format::Q5_0 => dot(&unpack_5bit(&b[2..6], &b[6..22]).map(|q| q - 16)),
            Format::Q5_1 => {
                mins += read_f16(b, 2) * a.s;
                dot(&unpack_5bit(&b[4..8], &b[8..24]))
            }
            other => unreachable!("dot_blocks_q8 called with {other:?}, whose products do not read 32-wide blocks"),
        };
        acc = (read_f16(b, 0) * a.d).mul_add(sum as f32, acc);
    }
    if matches!(format, Format::Q4_1 | Format::Q5_1) {
        acc + mins
    } else {
        acc
    }
}

/// w row (K) f32/f16/bf16 bytes, x (K) f32 -> dot product, accumulated in f32 in order.
#[inline(always)]
pub fn dot_float(format: Format, w: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    match format {
        Format::F32 => {
            for (b, v) in w.chunks_exact(4).zip(x) {
                sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * v;
            }
        }
        Format::F16 => {
            for (b, v) in w.chunks_exact(2).zip(x) {
                sum += f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32() * v;
            }
        }
        Format::Bf16 => {
            for (b, v) in w.chunks_exact(2).zip(x) {
                sum += bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32() * v;
            }
        }
        other => unreachable!("dot_float called with the block format {other:?}"),
    }
    sum
}

/// Rows `rows` of a block-format `w` against all T quantized activation rows, writing y (T, N):
/// `dot4` takes four tokens at a time (each weight row is read once per four tokens), `dot` the
/// rest.
#[inline(always)]
pub(super) fn quantized_rows(
    w: &MatRef,
    xq: &[BlockQ8],
    t: usize,
    rows: std::ops::Range<usize>,
    y: Out,
    dot: impl Fn(&[u8], &[BlockQ8]) -> f32,
    dot4: impl Fn(&[u8], [&[BlockQ8]; 4]) -> [f32; 4],
) {
    let (n, kb) = (w.rows, w.cols / QK);
    let act = |ti: usize| &xq[ti * kb..(ti + 1) * kb];
    // Tokens in tiles whose activations stay in L1 (64 tokens x 18 blocks x 48 B = 55 KB for
    // D = 576 is too much; 32 tokens is 27 KB) while the thread's weight rows stream through.
    let tile = (L1_ACTIVATION_BYTES / (kb * std::mem::size_of::<BlockQ8>()).max(1)).clamp(4, 256) / 4 * 4;
    for t0 in (0..t).step_by(tile) {
        let t1 = (t0 + tile).min(t);
        for r in rows.clone() {
            let row = w.row(r);
            let mut ti = t0;
            while ti + 4 <= t1 {
                let v = dot4(row, [act(ti), act(ti + 1), act(ti + 2), act(ti + 3)]);
                for (j, v) in v.into_iter().enumerate() {
                    // SAFETY: each thread owns a disjoint set of rows r; (ti + j) * n + r < t * n = y.len().
                    unsafe { y.put((ti + j) * n + r, v) };
                }
                ti += 4;
            }
            for ti in ti..t1 {
                // SAFETY: as above.
                unsafe { y.put(ti * n + r, dot(row, act(ti))) };
            }
        }
    }
}

/// Bytes of quantized activations a token tile of the prefill loop may occupy (most of a 32 KB L1).
pub(super) const L1_ACTIVATION_BYTES: usize = 24 << 10;

/// Four single dot products: the reference for `dot4`.
#[inline(always)]
fn four(dot: impl Fn(&[u8], &[BlockQ8]) -> f32) -> impl Fn(&[u8], [&[BlockQ8]; 4]) -> [f32; 4] {
    move |row, xs| xs.map(|x| dot(row, x))
}

/// Rows `rows` of w against all T activation rows, writing y (T, N): the reference.
#[inline(always)]
pub(super) fn matmul_rows(w: &MatRef, x: &[f32], xq: &[BlockQ8], t: usize, rows: std::ops::Range<usize>, y: Out) {
    if w.format.activations() == Activations::Q8K {
        return k_quant_rows(w, x, t, rows, y, dot_k_q8k, |f, r, a| a.map(|a| dot_k_q8k(f, r, a)));
    }
    if w.order == SumOrder::Blocks && w.format.uses_q8_activations() {
        let dot = |r: &[u8], a: &[BlockQ8]| dot_blocks_q8(w.format, r, a);
        return quantized_rows(w, xq, t, rows, y, dot, four(dot));
    }
    match w.format {
        Format::Q4_0 => quantized_rows(w, xq, t, rows, y, dot_q4_0_q8, four(dot_q4_0_q8)),
        Format::Q4_1 => quantized_rows(w, xq, t, rows, y, dot_q4_1_q8, four(dot_q4_1_q8)),
        Format::Q8_0 => quantized_rows(w, xq, t, rows, y, dot_q8_0_q8, four(dot_q8_0_q8)),
        Format::Q5_0 => quantized_rows(w, xq, t, rows, y, dot_q5_0_q8, four(dot_q5_0_q8)),
        Format::Q5_1 => quantized_rows(w, xq, t, rows, y, dot_q5_1_q8, four(dot_q5_1_q8)),
        f => {
            let (n, k) = (w.rows, w.cols);
            for r in rows {
                for ti in 0..t {
                    // SAFETY: as above.
                    unsafe { y.put(ti * n + r, dot_float(f, w.row(r), &x[ti * k..(ti + 1) * k])) };
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's K-quant activations: every thread quantizes all T tokens for the rows it
    /// owns (T x K work against its T x K x N/threads products), so no barrier is needed.
    static Q8K_ACTIVATIONS: std::cell::RefCell<Vec<BlockQ8K>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Rows `rows` of a K-quant `w` against all T tokens of x (T, K) f32, writing y (T, N) with the
/// row dot product `dot`, and `dot4` for four tokens at once (the same bits as four `dot`s): x is
/// quantized to [`BlockQ8K`] (into a buffer per thread, grown once), then each row is read once
/// per token tile.
#[inline(always)]
pub(super) fn k_quant_rows(
    w: &MatRef,
    x: &[f32],
    t: usize,
    rows: std::ops::Range<usize>,
    y: Out,
    dot: impl Fn(Format, &[u8], &[BlockQ8K]) -> f32,
    dot4: impl Fn(Format, &[u8], [&[BlockQ8K]; 4]) -> [f32; 4],
) {
    let (n, k) = (w.rows, w.cols);
    let kb = k / QK_K;
    Q8K_ACTIVATIONS.with_borrow_mut(|xq| {
        if xq.len() < t * kb {
            xq.resize(t * kb, BlockQ8K::default());
        }
        quantize_row_q8k(&x[..t * k], &mut xq[..t * kb]);
        let tile = (L1_ACTIVATION_BYTES / (kb * std::mem::size_of::<BlockQ8K>()).max(1)).clamp(1, 256);
        for t0 in (0..t).step_by(tile) {
            let t1 = (t0 + tile).min(t);
            for r in rows.clone() {
                let row = w.row(r);
                let a = |ti: usize| &xq[ti * kb..(ti + 1) * kb];
                let mut ti = t0;
                while ti + 4 <= t1 {
                    let v = dot4(w.format, row, [a(ti), a(ti + 1), a(ti + 2), a(ti + 3)]);
                    for (j, v) in v.into_iter().enumerate() {
                        // SAFETY: each thread owns a disjoint set of rows r; (ti + j) * n + r < t * n = y.len().
                        unsafe { y.put((ti + j) * n + r, v) };
                    }
                    ti += 4;
                }
                for ti in ti..t1 {
                    let v = dot(w.format, row, a(ti));
                    // SAFETY: as above.
                    unsafe { y.put(ti * n + r, v) };
                }
            }
        }
    });
}
