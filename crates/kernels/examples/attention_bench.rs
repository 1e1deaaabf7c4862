//! Times one decode step's attention for a batch of sequences on SmolLM2-135M's shape (9 query
//! heads over 3 KV heads of 64): each sequence has one new token that sees `n` positions.
//!
//!     cargo run --release -p kernels --example attention_bench [-- THREADS SEQS POSITIONS]
//!
//! Prints microseconds per step and per token. A tool for comparing kernel variants on one
//! machine in one run, not a test.

use half::f16;
use kernels::attention::{attention_scratch_per_thread, attention_segments, AttentionSegment, Heads, KvView};
use kernels::{Level, ThreadPool};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let threads = args.first().copied().unwrap_or(2);
    let seqs = args.get(1).copied().unwrap_or(8);
    let n = args.get(2).copied().unwrap_or(100);
    let heads = Heads { n_head: 9, n_head_kv: 3, head_dim: 64 };
    let (kv_dim, block) = (heads.n_head_kv * heads.head_dim, 32);
    let blocks_per_seq = n.div_ceil(block);
    let total_blocks = seqs * blocks_per_seq;
    let values = |len: usize, seed: u32| -> Vec<f16> {
        (0..len).map(|i| f16::from_f32((((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0)).collect()
    };
    let (keys, vals) = (values(total_blocks * block * kv_dim, 1), values(total_blocks * block * kv_dim, 2));
    // Sequences' blocks interleaved through the pool, as a batch that grew together.
    let tables: Vec<Vec<u32>> = (0..seqs).map(|s| (0..blocks_per_seq).map(|b| (b * seqs + s) as u32).collect()).collect();
    let segments: Vec<AttentionSegment> = tables.iter().enumerate().map(|(i, t)| AttentionSegment { first_token: i, n_tokens: 1, start: n - 1, table: t }).collect();
    let layer = KvView { keys: &keys, values: &vals, table: &tables[0], block_size: block, kv_dim };
    let q: Vec<f32> = values(seqs * heads.n_head * heads.head_dim, 3).iter().map(|v| v.to_f32()).collect();
    let mut out = vec![0f32; q.len()];
    let pool = ThreadPool::new(threads);
    let mut scratch = vec![0f32; threads * attention_scratch_per_thread(n, heads.head_dim)];
    let level = Level::detect();
    let reps = 2000;
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            attention_segments(&pool, level, heads, layer, &segments, &q, &mut out, &mut scratch, false);
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let us = times[reps / 2];
    println!("{level:?}, {threads} threads, {seqs} sequences at {n} positions: {us:.1} us/step, {:.2} us/token", us / seqs as f64);
}
