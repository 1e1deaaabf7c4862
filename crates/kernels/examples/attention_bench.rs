//! Times one decode step's attention for a batch of sequences on SmolLM2-135M's shape (9 query
//! heads over 3 KV heads of 64): each sequence has one new token that sees `n` positions.
//!
//!     cargo run --release -p kernels --example attention_bench [-- THREADS SEQS POSITIONS [LAYERS]]
//!
//! With LAYERS > 1 each step runs that many layers, each with its own keys and values, and reads
//! 3 MB of other memory between layers (as a decode step reads a layer's weights): the keys and
//! values then come from memory as in a model, not from the caches.
//!
//! With `prefill` in the arguments, one sequence processes a prompt of POSITIONS tokens instead
//! (each token sees the positions up to its own), as prompt processing does; `prefill DEPTH`
//! puts DEPTH positions before the prompt (its first token sees DEPTH earlier positions), as
//! a prompt that continues a long conversation does.
//!
//!     attention_bench 2 1 512 1 prefill 8000    (pp512 at depth 8000, two threads)
//!
//! Prints microseconds per step (per layer) and per token. A tool for comparing kernel variants
//! on one machine in one run, not a test.

use half::f16;
use kernels::attention::{attention_scratch_per_thread, attention_segments, AttentionSegment, Heads, KvView};
use kernels::{Level, ThreadPool};
use std::time::Instant;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let prefill_at = raw.iter().position(|a| a == "prefill");
    // The number after `prefill` is its depth, not one of the counts.
    let depth = prefill_at.and_then(|i| raw.get(i + 1)).and_then(|a| a.parse().ok()).unwrap_or(0);
    let args: Vec<usize> =
        raw.iter().enumerate().filter(|&(i, _)| prefill_at.is_none_or(|p| i != p + 1)).filter_map(|(_, a)| a.parse().ok()).collect();
    let threads = args.first().copied().unwrap_or(2);
    let seqs = args.get(1).copied().unwrap_or(8);
    let n = args.get(2).copied().unwrap_or(100);
    let layers = args.get(3).copied().unwrap_or(1).max(1);
    let heads = Heads { n_head: 9, n_head_kv: 3, head_dim: 64 };
    let (kv_dim, block) = (heads.n_head_kv * heads.head_dim, 32);
    let blocks_per_seq = (depth + n).div_ceil(block);
    let total_blocks = seqs * blocks_per_seq;
    let values = |len: usize, seed: u32| -> Vec<f16> {
        (0..len).map(|i| f16::from_f32((((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32 / 100.0 - 1.0)).collect()
    };
    // On huge pages, as the model's KV pool (and weights) are: otherwise TLB misses dominate.
    let huge = |v: Vec<f16>| -> memmap2::MmapMut {
        let mut map = memmap2::MmapMut::map_anon(v.len() * 2).expect("memory for the bench");
        let _ = map.advise(memmap2::Advice::HugePage);
        map.copy_from_slice(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) });
        map
    };
    let (keys_map, vals_map) = (huge(values(layers * total_blocks * block * kv_dim, 1)), huge(values(layers * total_blocks * block * kv_dim, 2)));
    // SAFETY: the maps hold f16 values and are page-aligned.
    let as_f16 = |m: &memmap2::MmapMut| unsafe { std::slice::from_raw_parts(m.as_ptr() as *const f16, m.len() / 2) };
    let (keys, vals) = (as_f16(&keys_map), as_f16(&vals_map));
    let weights = huge(vec![f16::ONE; if layers > 1 { 32 << 20 } else { 0 }]);
    let mut at = 0;
    // Sequences' blocks interleaved through the pool, as a batch that grew together.
    let tables: Vec<Vec<u32>> = (0..seqs).map(|s| (0..blocks_per_seq).map(|b| (b * seqs + s) as u32).collect()).collect();
    let prefill = prefill_at.is_some();
    let segments: Vec<AttentionSegment> = if prefill {
        vec![AttentionSegment { first_token: 0, n_tokens: n, start: depth, table: &tables[0] }]
    } else {
        tables.iter().enumerate().map(|(i, t)| AttentionSegment { first_token: i, n_tokens: 1, start: n - 1, table: t }).collect()
    };
    let tokens: usize = segments.iter().map(|s| s.n_tokens).sum();
    let q: Vec<f32> = values(tokens * heads.n_head * heads.head_dim, 3).iter().map(|v| v.to_f32()).collect();
    let mut out = vec![0f32; q.len()];
    let pool = ThreadPool::new(threads);
    let mut scratch = vec![0f32; threads * attention_scratch_per_thread(depth + n, heads.head_dim)];
    let level = Level::detect();
    let sums = kernels::SumOrder::from_env();
    // Prompts: 20 runs of a prompt of 512 at depth 8000 (about 4M (token, position) pairs), fewer
    // of longer ones, at least 3.
    let reps = if prefill { (20 * 4_200_000 / (n * (n / 2 + depth)).max(1)).clamp(3, 20) } else { 2000 / layers };
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let mut t = 0.0;
            for l in 0..layers {
                if layers > 1 {
                    // A layer's weights pass through the caches.
                    let chunk = &weights[at..at + (3 << 20)];
                    std::hint::black_box(chunk.iter().step_by(64).map(|&b| b as u64).sum::<u64>());
                    at = (at + (3 << 20)) % (weights.len() - (3 << 20));
                }
                // Head-major blocks holding every layer, as the model's pool (see `KvView`).
                let first = l * block * kv_dim;
                let dh = heads.head_dim;
                let layer = KvView {
                    keys: &keys[first..],
                    values: &vals[first..],
                    table: &tables[0],
                    block_size: block,
                    kv_dim,
                    block_stride: layers * block * kv_dim,
                    pos_stride: dh,
                    head_stride: block * dh,
                };
                let start = Instant::now();
                attention_segments(&pool, level, sums, heads, layer, &segments, &q, &mut out, &mut scratch, false);
                t += start.elapsed().as_secs_f64() * 1e6;
            }
            t / layers as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (us, fastest) = (times[reps / 2], times[0]);
    let what = if prefill { format!("a prompt of {n} tokens at depth {depth}") } else { format!("{seqs} sequences at {n} positions") };
    println!(
        "{level:?}, {sums:?} order, {threads} threads, {what}, {layers} layers: {us:.1} us/step (fastest {fastest:.1}), {:.2} us/token",
        us / tokens as f64
    );
}
