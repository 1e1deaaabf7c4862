//! Times the quantized matrix products on the shapes of SmolLM2-135M, for one token (decode) and
//! a few tokens at once (batched decode), at the machine's best kernel level and at AVX2:
//!
//!     cargo run --release -p kernels --example matmul_bench [-- THREADS [REPS]]
//!
//! Prints microseconds per call and per token. A tool for comparing kernel variants on one
//! machine in one run, not a test.

use kernels::matmul::{matmul, pack_for, Level, SumOrder};
use kernels::quant::{quantize_row, quantize_row_q8};
use kernels::{BlockQ8, Format, MatRef, ThreadPool, QK};
use std::time::Instant;

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let threads = args.first().copied().unwrap_or(2);
    let reps = args.get(1).copied().unwrap_or(200);
    // Weights come from memory in a decode step (the model is larger than the caches): with
    // `cold` in the arguments, 64 MB are read between calls to push the weights out of the caches.
    let cold = std::env::args().any(|a| a == "cold");
    let flush = vec![1u8; if cold { 64 << 20 } else { 0 }];
    let pool = ThreadPool::new(threads);
    let shapes = [
        ("gate 1536x576", Format::Q4_1, 1536, 576),
        ("Q8_0 768x576", Format::Q8_0, 768, 576),
        ("Q4_1 768x576", Format::Q4_1, 768, 576),
        ("down 576x1536", Format::Q4_1, 576, 1536),
        ("head 49152x576", Format::Q8_0, 49152, 576),
    ];
    let mut levels = vec![Level::best_available()];
    if levels[0] != Level::Avx2 && Level::all_available().contains(&Level::Avx2) {
        levels.push(Level::Avx2);
    }
    println!("{threads} threads, {reps} reps (median){}", if cold { ", weights from memory" } else { "" });
    if std::env::args().any(|a| a == "stream") {
        return stream(&pool, threads);
    }
    for (name, format, n, k) in shapes {
        let wf = pseudo_random(n * k, 1);
        let rb = format.row_bytes(k).unwrap();
        let mut data = vec![0u8; n * rb];
        for r in 0..n {
            quantize_row(format, &wf[r * k..(r + 1) * k], &mut data[r * rb..(r + 1) * rb]);
        }
        for &level in &levels {
            let packed = pack_for(level, format, &data, n, k);
            let w = MatRef { format, data: &data, rows: n, cols: k, packed: packed.as_deref(), order: SumOrder::from_env() };
            for t in [1, 2, 4, 8] {
                let x = pseudo_random(t * k, 2);
                let mut xq = vec![BlockQ8::default(); t * k / QK];
                quantize_row_q8(&x, &mut xq);
                let mut y = vec![0f32; t * n];
                let reps = if n > 10000 { reps / 10 } else { reps }.max(3);
                let mut times: Vec<f64> = (0..reps)
                    .map(|_| {
                        if cold {
                            std::hint::black_box(flush.iter().step_by(64).map(|&b| b as u64).sum::<u64>());
                        }
                        let start = Instant::now();
                        matmul(&pool, level, &w, &x, &xq, t, &mut y);
                        start.elapsed().as_secs_f64() * 1e6
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                let us = times[times.len() / 2];
                println!("{name:16} {level:?} T={t}: {us:8.1} us/call {:8.1} us/token", us / t as f64);
            }
        }
    }
}

/// Many distinct gate-sized matrices one after another, as the layers of a model are: the
/// weights stream from memory with the prefetchers running, as in a decode step.
fn stream(pool: &ThreadPool, threads: usize) {
    let (format, n, k, copies) = (Format::Q4_1, 1536, 576, 64);
    let level = Level::best_available();
    let rb = format.row_bytes(k).unwrap();
    let mats: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..copies)
        .map(|c| {
            let wf = pseudo_random(n * k, c as u64 + 10);
            let mut data = vec![0u8; n * rb];
            for r in 0..n {
                quantize_row(format, &wf[r * k..(r + 1) * k], &mut data[r * rb..(r + 1) * rb]);
            }
            let packed = pack_for(level, format, &data, n, k);
            (data, packed)
        })
        .collect();
    println!("{copies} distinct {n}x{k} {format:?} matrices ({:.0} MB) in turn, {threads} threads", (copies * n * rb) as f64 / 1e6);
    for t in [1, 2, 4, 8] {
        let x = pseudo_random(t * k, 2);
        let mut xq = vec![BlockQ8::default(); t * k / QK];
        quantize_row_q8(&x, &mut xq);
        let mut y = vec![0f32; t * n];
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let start = Instant::now();
                for (data, packed) in &mats {
                    let w = MatRef { format, data, rows: n, cols: k, packed: packed.as_deref(), order: SumOrder::from_env() };
                    matmul(pool, level, &w, &x, &xq, t, &mut y);
                }
                start.elapsed().as_secs_f64() * 1e6 / copies as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let us = times[3];
        println!("stream {level:?} T={t}: {us:8.1} us/matrix {:8.1} us/token", us / t as f64);
    }
}
