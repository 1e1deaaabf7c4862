//! Matrix products against plain references, every kernel level against the scalar reference,
//! and the fused variants against their unfused parts.

use super::*;
use crate::quant::{dequantize_row, quantize_row, quantize_row_q8, Q4_1_BYTES};
use half::f16;

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn make_weights(format: Format, n: usize, k: usize, seed: u64) -> Vec<u8> {
    let w = pseudo_random(n * k, seed);
    let rb = format.row_bytes(k).unwrap();
    let mut bytes = vec![0u8; n * rb];
    for r in 0..n {
        quantize_row(format, &w[r * k..(r + 1) * k], &mut bytes[r * rb..(r + 1) * rb]);
    }
    bytes
}

/// The plain f32 path: dequantized weights times activations as given.
fn reference_f32(format: Format, data: &[u8], n: usize, k: usize, x: &[f32], t: usize) -> Vec<f32> {
    let rb = format.row_bytes(k).unwrap();
    let mut wrow = vec![0f32; k];
    let mut y = vec![0f32; t * n];
    for r in 0..n {
        dequantize_row(format, &data[r * rb..(r + 1) * rb], &mut wrow);
        for ti in 0..t {
            y[ti * n + r] = wrow.iter().zip(&x[ti * k..(ti + 1) * k]).map(|(a, b)| (a * b) as f64).sum::<f64>() as f32;
        }
    }
    y
}

const FORMATS: [Format; 6] = [Format::F32, Format::F16, Format::Bf16, Format::Q4_0, Format::Q4_1, Format::Q8_0];

#[test]
fn quantized_matmul_matches_dequantized_f32_within_activation_error() {
    // Odd shapes: N not a multiple of the thread count, several tokens, K of 3 blocks.
    let (n, k, t) = (37, 96, 5);
    let x = pseudo_random(t * k, 7);
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let pool = ThreadPool::new(3);
    for format in FORMATS {
        let data = make_weights(format, n, k, 11);
        let w = MatRef { format, data: &data, rows: n, cols: k, packed: None, order: SumOrder::LlamaCpp };
        let mut y = vec![0f32; t * n];
        matmul(&pool, Level::Scalar, &w, &x, &xq, t, &mut y);
        let want = reference_f32(format, &data, n, k, &x, t);
        // 8-bit activations carry a relative error of about 1/254 per element.
        let tol = if format.uses_q8_activations() { 0.05 } else { 1e-4 };
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= tol, "{format:?}: {a} vs {b}");
        }
    }
}

#[test]
fn simd_levels_match_scalar_bit_for_bit() {
    // t = 105 crosses a token tile (100 tokens at K = 160).
    for n in [19, 20, 32, 35] {
        for t in [1, 2, 3, 6, 7, 13, 105] {
            simd_levels_match_scalar_with_rows(n, t);
        }
    }
}

/// Row counts below, at and past a group of 16 (whole row groups and the rows left over),
/// and token counts that take every kernel width (two or four tokens per call, and the rest)
/// and cross a token tile.
fn simd_levels_match_scalar_with_rows(n: usize, t: usize) {
    let k = 160;
    let x = pseudo_random(t * k, 3);
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let pool = ThreadPool::new(1);
    for (format, order) in FORMATS.iter().flat_map(|&f| [(f, SumOrder::LlamaCpp), (f, SumOrder::Blocks)]) {
        let data = make_weights(format, n, k, 5);
        let w = MatRef { format, data: &data, rows: n, cols: k, packed: None, order };
        let mut want = vec![0f32; t * n];
        matmul(&pool, Level::Scalar, &w, &x, &xq, t, &mut want);
        for level in Level::all_available() {
            let packed = pack_for(level, format, &data, n, k);
            let w = MatRef { packed: packed.as_deref(), ..w };
            let mut y = vec![0f32; t * n];
            matmul(&pool, level, &w, &x, &xq, t, &mut y);
            assert_eq!(y, want, "{format:?} in the {order:?} order at {level:?}");
        }
    }
}

#[test]
fn both_sum_orders_agree_within_float_rounding() {
    // The orders differ only in where float roundings fall: the same value to ~1e-6 of the
    // sum of the terms' magnitudes (at most K here: weights and activations lie in [-1, 1]),
    // and exactly the same for float formats.
    let (n, k, t) = (40, 1536, 3);
    let x = pseudo_random(t * k, 61);
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let pool = ThreadPool::new(2);
    for format in FORMATS {
        let data = make_weights(format, n, k, 62);
        let packed = pack_for(Level::detect(), format, &data, n, k);
        let w = MatRef { format, data: &data, rows: n, cols: k, packed: packed.as_deref(), order: SumOrder::LlamaCpp };
        let (mut a, mut b) = (vec![0f32; t * n], vec![0f32; t * n]);
        matmul(&pool, Level::detect(), &w, &x, &xq, t, &mut a);
        matmul(&pool, Level::detect(), &MatRef { order: SumOrder::Blocks, ..w }, &x, &xq, t, &mut b);
        let want = reference_f32(format, &data, n, k, &x, t);
        for ((a, b), r) in a.iter().zip(&b).zip(&want) {
            assert!((a - b).abs() <= 1e-6 * k as f32, "{format:?}: {a} vs {b} (reference {r})");
            if !format.uses_q8_activations() {
                assert_eq!(a, b, "{format:?}: float formats have one order");
            }
        }
    }
}

#[test]
fn every_level_is_exact_at_extreme_values() {
    // Stored values at their limits (Q8_0 bytes -128 and 127, nibbles 0 and 15) against
    // activations of +-127: where an offset or sign mistake in the grouped kernels would show.
    let (n, k, t) = (35, 96, 3);
    let x: Vec<f32> = (0..t * k).map(|i| if (i * 7) % 3 == 0 { -1.0 } else { 1.0 }).collect();
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let pool = ThreadPool::new(2);
    for format in [Format::Q4_0, Format::Q4_1, Format::Q8_0] {
        let block = format.block_bytes();
        let header = if format == Format::Q4_1 { 4 } else { 2 };
        let mut data = vec![0u8; n * k / QK * block];
        for (b, blk) in data.chunks_exact_mut(block).enumerate() {
            blk[0..2].copy_from_slice(&f16::from_f32(0.25 + b as f32 * 1e-3).to_bits().to_le_bytes());
            if format == Format::Q4_1 {
                blk[2..4].copy_from_slice(&f16::from_f32(-0.5).to_bits().to_le_bytes());
            }
            for (j, v) in blk[header..].iter_mut().enumerate() {
                *v = match (format, (b + j) % 3) {
                    (Format::Q8_0, 0) => 0x80,
                    (Format::Q8_0, 1) => 0x7F,
                    (_, 0) => 0x00,
                    (_, 1) => 0xFF,
                    _ => 0x0F,
                };
            }
        }
        for order in [SumOrder::LlamaCpp, SumOrder::Blocks] {
            let w = MatRef { format, data: &data, rows: n, cols: k, packed: None, order };
            let mut want = vec![0f32; t * n];
            matmul(&pool, Level::Scalar, &w, &x, &xq, t, &mut want);
            for level in Level::all_available() {
                let packed = pack_for(level, format, &data, n, k);
                let w = MatRef { packed: packed.as_deref(), ..w };
                let mut y = vec![0f32; t * n];
                matmul(&pool, level, &w, &x, &xq, t, &mut y);
                assert_eq!(y, want, "{format:?} in the {order:?} order at {level:?}");
            }
        }
    }
}

#[test]
fn fused_swiglu_equals_products_then_swiglu() {
    // Gate and up in one format and in two (row groups against single rows split the rows
    // over the threads differently: the fused activation must still see finished rows), 50
    // rows (an uneven split) and 96 (whole blocks of 32: the quantization is checked too),
    // on 1 to 3 threads: the same bits as two products, SwiGLU and a quantization pass.
    let (k, t) = (64, 3);
    let x = pseudo_random(t * k, 41);
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let pairs = [(Format::Q4_1, Format::F32), (Format::F16, Format::Q8_0), (Format::Q4_1, Format::Q4_1), (Format::Q8_0, Format::F32)];
    // The last case's pool runs every job on the caller alone, as under contention: the fused
    // and unfused paths are chosen for the threads a job ran on, not the pool's size.
    for (n, threads, solo) in [(50, 3, false), (96, 1, false), (96, 2, false), (96, 3, false), (50, 3, true), (96, 3, true)] {
        let pool = ThreadPool::new(threads);
        pool.force_solo(solo);
        for (fg, fu) in pairs {
            let (dg, du) = (make_weights(fg, n, k, 42), make_weights(fu, n, k, 43));
            for level in Level::all_available() {
                let (pg, pu) = (pack_for(level, fg, &dg, n, k), pack_for(level, fu, &du, n, k));
                let wg = MatRef { format: fg, data: &dg, rows: n, cols: k, packed: pg.as_deref(), order: SumOrder::LlamaCpp };
                let wu = MatRef { format: fu, data: &du, rows: n, cols: k, packed: pu.as_deref(), order: SumOrder::LlamaCpp };
                let (mut want, mut up) = (vec![0f32; t * n], vec![0f32; t * n]);
                matmul(&pool, level, &wg, &x, &xq, t, &mut want);
                matmul(&pool, level, &wu, &x, &xq, t, &mut up);
                crate::ops::swiglu_inplace(&mut want, &up);
                let case = format!("{fg:?}/{fu:?}, {n} rows at {level:?}, {threads} threads, solo {solo}");
                let (mut gate, mut scratch) = (vec![0f32; t * n], vec![0f32; t * n]);
                matmul_swiglu(&pool, level, &wg, &wu, &x, &xq, t, &mut gate, &mut scratch);
                assert_eq!(gate, want, "{case}");
                if n.is_multiple_of(QK) {
                    let mut want_q = vec![BlockQ8::default(); t * n / QK];
                    quantize_row_q8(&want, &mut want_q);
                    let (mut gate, mut gate_q) = (vec![0f32; t * n], vec![BlockQ8::default(); t * n / QK]);
                    matmul_swiglu_q8(&pool, level, &wg, &wu, &x, &xq, t, &mut gate, &mut scratch, &mut gate_q);
                    assert_eq!((&gate, &gate_q), (&want, &want_q), "{case}, with quantization");
                }
            }
        }
    }
}

#[test]
fn one_thread_and_many_threads_agree_exactly() {
    let (n, k, t) = (101, 64, 4);
    let x = pseudo_random(t * k, 9);
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let data = make_weights(Format::Q4_1, n, k, 13);
    let w = MatRef { format: Format::Q4_1, data: &data, rows: n, cols: k, packed: None, order: SumOrder::LlamaCpp };
    let mut one = vec![0f32; t * n];
    matmul(&ThreadPool::new(1), Level::detect(), &w, &x, &xq, t, &mut one);
    for threads in [2, 3, 4] {
        let mut many = vec![0f32; t * n];
        matmul(&ThreadPool::new(threads), Level::detect(), &w, &x, &xq, t, &mut many);
        assert_eq!(one, many, "{threads} threads");
    }
}

#[test]
fn matmul_add_equals_product_then_add() {
    let (n, k, t) = (20, 64, 9);
    let x = pseudo_random(t * k, 21);
    let mut xq = vec![BlockQ8::default(); t * k / QK];
    quantize_row_q8(&x, &mut xq);
    let pool = ThreadPool::new(2);
    for format in FORMATS {
        let data = make_weights(format, n, k, 22);
        for level in Level::all_available() {
            let packed = pack_for(level, format, &data, n, k);
            let w = MatRef { format, data: &data, rows: n, cols: k, packed: packed.as_deref(), order: SumOrder::LlamaCpp };
            let base = pseudo_random(t * n, 23);
            let mut want = vec![0f32; t * n];
            matmul(&pool, level, &w, &x, &xq, t, &mut want);
            want.iter_mut().zip(&base).for_each(|(w, b)| *w += b);
            let mut got = base.clone();
            matmul_add(&pool, level, &w, &x, &xq, t, &mut got);
            assert_eq!(got, want, "{format:?} at {level:?}");
        }
    }
}

#[test]
fn fused_argmax_equals_argmax_of_the_product() {
    let (n, k) = (203, 64);
    let x = pseudo_random(k, 31);
    let mut xq = vec![BlockQ8::default(); k / QK];
    quantize_row_q8(&x, &mut xq);
    for threads in [1, 2, 3] {
        let pool = ThreadPool::new(threads);
        let mut best = vec![(0.0, 0); threads];
        for format in FORMATS {
            let data = make_weights(format, n, k, 32 + threads as u64);
            for level in Level::all_available() {
                let packed = pack_for(level, format, &data, n, k);
                let w = MatRef { format, data: &data, rows: n, cols: k, packed: packed.as_deref(), order: SumOrder::LlamaCpp };
                let mut want = vec![0f32; n];
                matmul(&pool, level, &w, &x, &xq, 1, &mut want);
                let mut got = vec![0f32; n];
                let id = matmul_argmax(&pool, level, &w, &x, &xq, &mut got, &mut best);
                assert_eq!(got, want);
                assert_eq!(id as usize, crate::ops::argmax(&want), "{format:?} {level:?} {threads} threads");
            }
        }
    }
}

#[test]
fn fused_argmax_reads_only_the_threads_that_ran() {
    // A pool of 3 whose slots hold a previous call's maxima (for other activations, 100 times
    // larger), then a call run on the caller alone, as under contention: only slot 0 is current,
    // and the answer must not come from the stale ones.
    let (n, k) = (203, 64);
    let x = pseudo_random(k, 51);
    let big: Vec<f32> = pseudo_random(k, 50).iter().map(|v| v * 100.0).collect();
    let (mut xq, mut big_q) = (vec![BlockQ8::default(); k / QK], vec![BlockQ8::default(); k / QK]);
    quantize_row_q8(&x, &mut xq);
    quantize_row_q8(&big, &mut big_q);
    let pool = ThreadPool::new(3);
    for format in FORMATS {
        let data = make_weights(format, n, k, 52);
        for level in Level::all_available() {
            let packed = pack_for(level, format, &data, n, k);
            let w = MatRef { format, data: &data, rows: n, cols: k, packed: packed.as_deref(), order: SumOrder::LlamaCpp };
            let (mut want, mut got, mut best) = (vec![0f32; n], vec![0f32; n], vec![(0.0, 0); 3]);
            matmul(&pool, level, &w, &x, &xq, 1, &mut want);
            let stale = matmul_argmax(&pool, level, &w, &big, &big_q, &mut got, &mut best);
            pool.force_solo(true);
            let id = matmul_argmax(&pool, level, &w, &x, &xq, &mut got, &mut best);
            pool.force_solo(false);
            assert_eq!(got, want, "{format:?} {level:?}");
            assert_eq!(id as usize, crate::ops::argmax(&want), "{format:?} {level:?} (the stale answer was {stale})");
        }
    }
}

#[test]
fn q4_1_product_uses_the_block_minimum() {
    // A block of weights all equal to m (d = 0) against activations all 1: the product is 32 m.
    let mut w = vec![0u8; Q4_1_BYTES];
    w[2..4].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    let mut xq = vec![BlockQ8::default(); 1];
    quantize_row_q8(&[1.0; QK], &mut xq);
    assert_eq!(dot_q4_1_q8(&w, &xq), 16.0);
}
