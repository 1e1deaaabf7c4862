//! The 5-bit and K-quant formats against the peer and against their definitions:
//! - dequantization bit for bit against gguf-py's (`tests/fixtures/kquants.json`, made by
//!   `tools/make_kquant_fixture.py`);
//! - the simple quantizers: their blocks dequantize to within a step of the input;
//! - Q8_K activations: the peers' rule;
//! - products: the integer dot of the reference equals the f64 dot of the dequantized weights
//!   and dequantized activations (so no scale, minimum or bit is misplaced), at every level and
//!   in both summation orders, with several threads and token counts.

use kernels::kquants::{quantize_row_q8k, BlockQ8K, QK_K};
use kernels::matmul::{matmul, pack_for, Level, SumOrder};
use kernels::quant::{dequantize_row, quantize_row, quantize_row_q8, Activations};
use kernels::{BlockQ8, Format, MatRef, ThreadPool, QK};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn format_named(name: &str) -> Format {
    match name {
        "Q5_0" => Format::Q5_0,
        "Q5_1" => Format::Q5_1,
        "Q2_K" => Format::Q2_K,
        "Q3_K" => Format::Q3_K,
        "Q4_K" => Format::Q4_K,
        "Q5_K" => Format::Q5_K,
        "Q6_K" => Format::Q6_K,
        other => panic!("unknown format {other} in the fixture"),
    }
}

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kquants.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let entries = doc["formats"].as_array().unwrap();
    assert_eq!(entries.len(), 7, "every 5-bit and K-quant weight format");
    for e in entries {
        let format = format_named(e["format"].as_str().unwrap());
        let (rows, cols) = (e["rows"].as_u64().unwrap() as usize, e["cols"].as_u64().unwrap() as usize);
        let bytes = hex(e["bytes_hex"].as_str().unwrap());
        let want: Vec<u32> =
            hex(e["values_f32le_hex"].as_str().unwrap()).chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let rb = format.row_bytes(cols).unwrap();
        assert_eq!(bytes.len(), rows * rb, "{format:?}: row bytes");
        let mut got = vec![0f32; cols];
        for r in 0..rows {
            dequantize_row(format, &bytes[r * rb..(r + 1) * rb], &mut got);
            for (i, (g, &w)) in got.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                assert_eq!(g.to_bits(), w, "{format:?} row {r} value {i}: {g} vs {}", f32::from_bits(w));
            }
        }
    }
}

const NEW_FORMATS: [Format; 8] = [Format::Q5_0, Format::Q5_1, Format::Q2_K, Format::Q3_K, Format::Q4_K, Format::Q5_K, Format::Q6_K, Format::Q8_K];

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn quantized(format: Format, w: &[f32], n: usize, k: usize) -> Vec<u8> {
    let rb = format.row_bytes(k).unwrap();
    let mut bytes = vec![0u8; n * rb];
    for r in 0..n {
        quantize_row(format, &w[r * k..(r + 1) * k], &mut bytes[r * rb..(r + 1) * rb]);
    }
    bytes
}

#[test]
fn simple_quantizers_round_trip_within_a_step() {
    let k = 1024;
    let w = pseudo_random(k, 3);
    // The largest error per format: about half a step of its value grid, with f16 scales and
    // quantized sub-block scales (the values lie in [-1, 1]); a whole step for Q5_0, whose
    // largest magnitude maps to -16 so that its opposite clamps at 15.
    for (format, tol) in [
        (Format::Q5_0, 0.07),
        (Format::Q5_1, 0.04),
        (Format::Q2_K, 0.45),
        (Format::Q3_K, 0.3),
        (Format::Q4_K, 0.08),
        (Format::Q5_K, 0.04),
        (Format::Q6_K, 0.04),
        (Format::Q8_K, 0.005),
    ] {
        let bytes = quantized(format, &w, 1, k);
        let mut back = vec![0f32; k];
        dequantize_row(format, &bytes, &mut back);
        let worst = w.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= tol, "{format:?}: worst error {worst} > {tol}");
    }
}

#[test]
fn q8k_activations_follow_the_peers_rule() {
    // The largest magnitude maps to -127 (d carries its sign), the rest round to nearest even,
    // bsums are exact, and a zero block is all zeros.
    let mut x = pseudo_random(2 * QK_K, 9);
    x[5] = 3.0;
    x[QK_K..].iter_mut().for_each(|v| *v = 0.0);
    let mut q = vec![BlockQ8K::default(); 2];
    quantize_row_q8k(&x, &mut q);
    let iscale = -127.0f32 / 3.0;
    assert_eq!(q[0].qs[5], -127);
    assert_eq!(q[0].d, 1.0 / iscale);
    for (j, &v) in x[..QK_K].iter().enumerate() {
        assert_eq!(q[0].qs[j] as f32, (v * iscale).round_ties_even(), "value {j}");
    }
    for i in 0..16 {
        assert_eq!(q[0].bsums[i] as i32, q[0].qs[16 * i..16 * i + 16].iter().map(|&v| v as i32).sum::<i32>());
    }
    assert_eq!(q[1], BlockQ8K::default());
}

/// f64 dot products of the dequantized weights with the dequantized activations the format reads.
fn dequantized_product(format: Format, data: &[u8], n: usize, k: usize, x: &[f32], t: usize) -> Vec<f64> {
    let rb = format.row_bytes(k).unwrap();
    let mut xs = vec![0f64; t * k];
    for ti in 0..t {
        let (row, out) = (&x[ti * k..(ti + 1) * k], &mut xs[ti * k..(ti + 1) * k]);
        match format.activations() {
            Activations::Q8 => {
                let mut q = vec![BlockQ8::default(); k / QK];
                quantize_row_q8(row, &mut q);
                for (j, v) in out.iter_mut().enumerate() {
                    *v = q[j / QK].d as f64 * q[j / QK].qs[j % QK] as f64;
                }
            }
            Activations::Q8K => {
                let mut q = vec![BlockQ8K::default(); k / QK_K];
                quantize_row_q8k(row, &mut q);
                for (j, v) in out.iter_mut().enumerate() {
                    *v = q[j / QK_K].d as f64 * q[j / QK_K].qs[j % QK_K] as f64;
                }
            }
            Activations::F32 => unreachable!("only block formats here"),
        }
    }
    let mut w = vec![0f32; k];
    let mut y = vec![0f64; t * n];
    for r in 0..n {
        let row = &data[r * rb..(r + 1) * rb];
        dequantize_row(format, row, &mut w);
        for ti in 0..t {
            y[ti * n + r] = w.iter().zip(&xs[ti * k..(ti + 1) * k]).map(|(&a, &b)| a as f64 * b).sum();
            if format == Format::Q5_1 {
                // The minimum m meets the activations' block sum as the peers store it, rounded
                // to f16 (`s`): add what that rounding changes.
                let mut q = vec![BlockQ8::default(); k / QK];
                quantize_row_q8(&x[ti * k..(ti + 1) * k], &mut q);
                for (b, a) in row.chunks_exact(format.block_bytes()).zip(&q) {
                    let m = half::f16::from_bits(u16::from_le_bytes([b[2], b[3]])).to_f32() as f64;
                    y[ti * n + r] += m * (a.s as f64 - a.d as f64 * a.sum as f64);
                }
            }
        }
    }
    y
}

#[test]
fn products_equal_the_dequantized_definition_at_every_level_and_order() {
    // 21 rows: two whole row groups and 5 rows past them; 1 to 9 tokens take every kernel width.
    let (n, k) = (21, 512);
    let pool = ThreadPool::new(3);
    for t in [1, 2, 3, 4, 5, 8, 9] {
        let x = pseudo_random(t * k, 40 + t as u64);
        let mut xq = vec![BlockQ8::default(); t * k / QK];
        quantize_row_q8(&x, &mut xq);
        for format in NEW_FORMATS {
            let data = quantized(format, &pseudo_random(n * k, 7), n, k);
            let want = dequantized_product(format, &data, n, k, &x, t);
            for order in [SumOrder::Blocks, SumOrder::LlamaCpp] {
                let mut first: Option<Vec<f32>> = None;
                for level in Level::all_available() {
                    let packed = pack_for(level, format, &data, n, k);
                    let w = MatRef { format, data: &data, rows: n, cols: k, packed: packed.as_deref(), order };
                    let mut y = vec![0f32; t * n];
                    matmul(&pool, level, &w, &x, &xq, t, &mut y);
                    // Integer sums are exact: only the float roundings of the scales and of the
                    // accumulation remain (relative 1e-6 of the sum of magnitudes, at most ~K).
                    for (i, (&g, &r)) in y.iter().zip(&want).enumerate() {
                        assert!((g as f64 - r).abs() <= 2e-6 * k as f64, "{format:?} {order:?} {level:?} t={t} output {i}: {g} vs {r}");
                    }
                    // Every level gives the same bits in each order (Q5_0 runs on the Q8_0
                    // row-group kernels, the others on the reference).
                    match &first {
                        None => first = Some(y),
                        Some(f) => assert_eq!(&y, f, "{format:?} in the {order:?} order at {level:?}"),
                    }
                }
            }
        }
    }
}

/// Random bytes in every field (so every scale, minimum and bit pattern occurs), with finite f16
/// super-scales, for `rows` rows of `k` values.
fn random_blocks(format: Format, rows: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let bytes_per = format.block_bytes();
    let mut data: Vec<u8> = (0..rows * format.row_bytes(k).unwrap()).map(|_| next() as u8).collect();
    // Offsets of the f16 scale fields of each format's block.
    let f16_fields: &[usize] = match format {
        Format::Q4_K | Format::Q5_K => &[0, 2],
        Format::Q6_K => &[208],
        Format::Q3_K => &[108],
        Format::Q2_K => &[80, 82],
        _ => &[],
    };
    for block in data.chunks_exact_mut(bytes_per) {
        for &at in f16_fields {
            let v = half::f16::from_f32((next() % 1000) as f32 / 1000.0 * if next() % 2 == 0 { 0.05 } else { -0.05 });
            block[at..at + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    data
}

#[test]
fn k_quant_kernels_equal_the_reference_on_every_bit_pattern() {
    // Activations at +-127 (each block's largest value exactly) and random ones; 7 tokens: one
    // pass of the four-token kernels and three single ones.
    let (n, k, t) = (13, 768, 7);
    let mut x = pseudo_random(t * k, 77);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 7 == 0 {
            *v = if i % 14 == 0 { 1.0 } else { -1.0 };
        }
    }
    let pool = ThreadPool::new(2);
    for format in [Format::Q2_K, Format::Q3_K, Format::Q4_K, Format::Q5_K, Format::Q6_K] {
        for seed in 0..4 {
            let data = random_blocks(format, n, k, seed);
            let w = MatRef { format, data: &data, rows: n, cols: k, packed: None, order: SumOrder::Blocks };
            let mut want = vec![0f32; t * n];
            matmul(&pool, Level::Scalar, &w, &x, &[], t, &mut want);
            let exact = dequantized_product(format, &data, n, k, &x, t);
            for (g, r) in want.iter().zip(&exact) {
                assert!((*g as f64 - r).abs() <= 2e-6 * k as f64 * r.abs().max(1.0), "{format:?} seed {seed}: {g} vs {r}");
            }
            for level in Level::all_available() {
                let mut y = vec![0f32; t * n];
                matmul(&pool, level, &w, &x, &[], t, &mut y);
                assert_eq!(y, want, "{format:?} seed {seed} at {level:?}");
            }
        }
    }
}

#[test]
fn quantizers_match_llama_quantize_bit_for_bit() {
    // Rows of SmolLM2's weights and the bytes llama-quantize makes of them
    // (tests/fixtures/quantize.json, made by tools/make_quantize_fixture.py).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/quantize.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let format = match c["format"].as_str().unwrap() {
            "Q8_0" => Format::Q8_0,
            "Q4_0" => Format::Q4_0,
            "Q4_1" => Format::Q4_1,
            other => format_named(other),
        };
        let cols = c["cols"].as_u64().unwrap() as usize;
        let src: Vec<f32> =
            hex(c["source_f32le_hex"].as_str().unwrap()).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let want = hex(c["bytes_hex"].as_str().unwrap());
        let rb = format.row_bytes(cols).unwrap();
        assert_eq!(want.len(), src.len() / cols * rb, "{format:?}");
        for (r, (row, want)) in src.chunks_exact(cols).zip(want.chunks_exact(rb)).enumerate() {
            let mut got = vec![0u8; rb];
            quantize_row(format, row, &mut got);
            assert!(got == want, "{format:?} row {r} of {}: first differing byte {:?}", c["tensor"], got.iter().zip(want).position(|(a, b)| a != b));
        }
    }
}
